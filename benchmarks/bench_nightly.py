"""Nightly decisions over a year on the bundled recording (usd_lending: 51 pools, 2024-06-06..2025-06-05).

``decide_range`` is what ``<vault>/rebalance_weights`` runs for a range of days. Timed:

1. before: the per-day pandas implementation it replaced (``benchmarks/nightly_before.py``, a frozen
   copy of ``domain/portfolio/nightly.py`` before the vault book), skipped with ``--skip-before``;
2. after: the vault book (``domain/portfolio/book.py``) driven by the daily frames; its rows are
   compared with the ones before (identical, bar the solver's wall time);
3. the backtest (``engine.run_backtest``) over the same days, predictions and data.

Target: a year of nightly decisions in about the time of a backtest, well under 2 s.
Predictions: the naive last value (the day's earned yield) by default, ``--model`` for the
vault's research (``engine.prediction_panel``: production's weekly refits, a few seconds more).

    .venv/bin/python benchmarks/bench_nightly.py [--vault usd_lending] [--skip-before] [--model] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import pandas as pd  # noqa: E402

from midfreq_assets.domain.backtest import engine as bt  # noqa: E402
from midfreq_assets.domain.config.tokens import load_token_registry  # noqa: E402
from midfreq_assets.domain.config.vault import load_vault_config  # noqa: E402
from midfreq_assets.domain.ingest.pool_history import usable_rows  # noqa: E402
from midfreq_assets.domain.ingest.universe import METADATA_COLUMNS, select_universe, vault_rows  # noqa: E402
from midfreq_assets.domain.portfolio import nightly  # noqa: E402
from midfreq_assets.domain.yields.adjusted import reference_pricing, vault_adjusted_yields  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
TARGET_S = 2.0


def recorded_frames(vault_name: str):
    """What rebalance_weights receives over the recording: the vault's rows of pool_metadata, usable
    pool_history, adjusted_yields, and the backtest panel of the same data."""
    vault = load_vault_config(REPO / "configs" / "vaults" / f"{vault_name}.yaml")
    tokens = load_token_registry()
    history, snapshot = bt.load_recorded(REPO / "recorded")
    members, _ = select_universe(history.assign(reconstructed=True), snapshot, {vault.name: vault}, tokens)
    members = members[METADATA_COLUMNS]
    days = pd.date_range(history["date"].min(), history["date"].max(), freq="D")
    adjusted, _ = vault_adjusted_yields(
        history,
        members,
        bt.load_recorded_prices(REPO / "recorded"),
        vault.name,
        vault.yields,
        days,
        reference_pricing(vault, tokens),
    )
    panel = bt.vault_panel(bt.with_adjusted_apy(history, adjusted), members, vault)
    return vault, days, vault_rows(members, vault.name), usable_rows(history), adjusted, panel


def predictions(vault, panel: pd.DataFrame, universe: pd.DataFrame, model: bool) -> pd.DataFrame:
    """Long predictions (date, pool, predicted_apy) of the pools in the universe each day."""
    if model:
        wide = bt.prediction_panel(panel, vault)
        long = wide.stack().rename("predicted_apy").reset_index()
    else:  # naive: the last value, the day's earned yield
        long = panel[["date", "pool", vault.backtest.apy_column]].rename(
            columns={vault.backtest.apy_column: "predicted_apy"}
        )
    keys = pd.MultiIndex.from_frame(universe[["date", "pool"]])
    return long[pd.MultiIndex.from_frame(long[["date", "pool"]]).isin(keys)].dropna().reset_index(drop=True)


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vault", default="usd_lending")
    ap.add_argument(
        "--skip-before", action="store_true", help="skip the (slow, ~1 min) implementation before the book"
    )
    ap.add_argument(
        "--model", action="store_true", help="the vault's research predictions instead of the naive ones"
    )
    ap.add_argument("--repeat", type=int, default=3, help="best of N for the fast timings")
    args = ap.parse_args()

    t0 = time.perf_counter()
    vault, days, universe, history, adjusted, panel = recorded_frames(args.vault)
    preds = predictions(vault, panel, universe, args.model)
    print(
        f"{args.vault}: {panel['pool'].nunique()} pools ever in the universe, {len(days)} days "
        f"({days[0].date()}..{days[-1].date()}), predictions {'model' if args.model else 'naive'}; "
        f"loading {time.perf_counter() - t0:.1f}s"
    )

    frames = (preds, universe, history, adjusted)
    after, (rows, _, optimizers) = timed(
        lambda: nightly.decide_range(vault, days, None, *frames), args.repeat
    )
    panels_s, _ = timed(lambda: nightly.nightly_panels(vault, days, None, *frames, {}), args.repeat)
    inputs = bt.inputs_from_panel(panel, vault)
    wide = preds.pivot(index="date", columns="pool", values="predicted_apy")
    backtest_s, result = timed(
        lambda: bt.run_backtest(inputs, wide, vault.strategy, vault.backtest), args.repeat
    )
    if not args.skip_before:
        import nightly_before

        t0 = time.perf_counter()
        old, _, _ = nightly_before.decide_range(vault, days, None, *frames)
        before = time.perf_counter() - t0
        cols = [c for c in nightly.COLUMNS if c != "solve_time_s"]
        try:
            pd.testing.assert_frame_equal(rows[cols], old[cols], check_exact=True)
            same = "identical"
        except AssertionError as exc:
            same = f"DIFFERENT: {str(exc).splitlines()[0]}"
        print(
            f"decide_range before (pandas per day):        {before:7.2f}s ({1e3 * before / len(days):6.1f} ms/day)"
        )
    print(
        f"decide_range after (the vault book):          {after:7.2f}s ({1e3 * after / len(days):6.2f} ms/day; "
        f"panels {panels_s:.2f}s, {optimizers.builds} optimizer builds, {len(rows)} rows)"
    )
    if not args.skip_before:
        print(f"  speed-up x{before / after:.0f}; rows {same} to before (bar solve_time_s)")
    print(
        f"backtest over the same days (run_backtest):   {backtest_s:7.2f}s ({1e3 * backtest_s / len(days):6.2f} ms/day), "
        f"final wealth {result.wealth.iloc[-1]:,.0f} vs nightly {rows['wealth'].iloc[-1]:,.0f}"
    )
    ok = after < TARGET_S
    print(
        f"target: a year of nightly decisions < {TARGET_S:.0f}s and about a backtest ({after / backtest_s:.2f}x): "
        f"{'OK' if ok else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
