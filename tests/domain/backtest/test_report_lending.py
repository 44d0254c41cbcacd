"""The report's lending-market section: each market's curve, capacity and the dilution the run paid."""

import numpy as np

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest.report import lending_sections
from midfreq_assets.domain.yields.response import responses_of_rows, with_responses
from tests.domain.portfolio.test_book import frames, lending_markets, vault


def test_lending_section_reads_back_the_curves_and_the_dilution_paid():
    v = vault()
    predictions, universe, history, adjusted = frames()
    curved = with_responses(history, lending_markets(), v.yields.rate_curves)
    inputs = bt.BacktestInputs.from_long(bt.with_adjusted_apy(curved, adjusted), v, universe)
    result = bt.run_backtest(
        inputs,
        predictions.pivot(index="date", columns="pool", values="predicted_apy"),
        v.strategy,
        v.backtest,
    )
    panel = bt.with_adjusted_apy(curved, adjusted)
    [(heading, png, table)] = lending_sections(panel, result, "adjusted_apy", {"a": "A", "c": "C"})
    assert "rate curves" in heading and len(png) > 1000
    assert table["pool"].tolist() == ["A", "C"]
    last = curved[curved["pool"] == "a"].sort_values("date").tail(1)
    resp = responses_of_rows(last)
    np.testing.assert_allclose(table.loc[0, "capacity_usd"], resp.capacity(0.1)[0])
    assert table.loc[0, "capacity_usd"] > table.loc[0, "capacity_tvl_share_usd"]  # supply 4e8 vs TVL ~5e7
    held = table["days_held"] > 0
    assert held.any() and (table.loc[held, "dilution_paid_apy"] > 0).all()
    assert lending_sections(bt.with_adjusted_apy(history, adjusted), result, "adjusted_apy", {}) == []
