"""Walk-forward selection: window geometry, causal choices, continuation from the previous window's
holdings, and the whole evaluation on corpora where the right answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.backtest import engine as bt
from midfreq_assets.domain.backtest.benchmarks import run_benchmarks
from midfreq_assets.domain.backtest.config import BacktestConfig, WalkForwardConfig
from midfreq_assets.domain.backtest.evaluation import evaluate_grid, grid_pbo
from midfreq_assets.domain.backtest.grids import Grid, PointRunner, run_point
from midfreq_assets.domain.backtest.walk_forward import (
    GridPaths,
    plan_windows,
    slice_result,
    train_scores,
    walk_forward,
)
from midfreq_assets.domain.config.vault import load_vault_config

VAULT = load_vault_config("configs/vaults/usd_lending.yaml")
DAYS = pd.date_range("2024-01-01", periods=400, freq="D")


def path_result(
    name: str,
    returns: np.ndarray,
    start: int = 0,
    end: int | None = None,
    wealth: float = 1.0,
    invested: float = 1.0,
) -> bt.BacktestResult:
    """A stored path with the given daily log returns on days ``start..end`` (steps only)."""
    r = returns[start:end]
    dates = DAYS[start : start + len(r)]
    w = wealth * np.exp(np.cumsum(r))
    steps = pd.DataFrame(
        {
            "date": dates,
            "date_end": dates + pd.Timedelta(days=1),
            "wealth_start": [wealth, *w[:-1]],
            "wealth": w,
            "invested": invested,
        }
    )
    state = bt.PortfolioState(("x",), np.array([w[-1]]), 0.0)
    return bt.BacktestResult(name, steps, pd.DataFrame(columns=["date", "pool", "weight"]), wealth, state)


def fake_runner(matrix: dict[str, np.ndarray], calls: list | None = None):
    """Re-simulating a point = its stored returns on the window, from the wealth the state carries."""

    def run(name, start, end, state):
        a, b = DAYS.searchsorted(start), DAYS.searchsorted(end)
        if calls is not None:
            calls.append((name, start, end, state))
        return path_result(name, matrix[name], a, b, wealth=state.wealth if state is not None else 1.0)

    return run


def test_windows_expanding_and_rolling_geometry():
    cfg = WalkForwardConfig(test_days=60, min_train_days=90)
    w = plan_windows(DAYS, 10, cfg)
    assert [(x.train_start, x.test_start, x.test_end) for x in w] == [
        (10, 100, 160),
        (10, 160, 220),
        (10, 220, 280),
        (10, 280, 340),
        (10, 340, 400),
    ]
    rolling = plan_windows(
        DAYS, 10, WalkForwardConfig(test_days=60, min_train_days=90, train="rolling", train_days=30)
    )
    assert [(x.train_start, x.test_start) for x in rolling][:2] == [(70, 100), (130, 160)]
    assert plan_windows(DAYS[:50], 0, cfg) == []
    with pytest.raises(ValueError, match="train_days"):
        WalkForwardConfig(train="rolling")


def test_train_scores_are_each_points_growth_before_the_window():
    rng = np.random.default_rng(0)
    m = {f"p{i}": rng.normal(0.0002, 0.001, 400) for i in range(5)}
    paths = GridPaths.from_results({k: path_result(k, v) for k, v in m.items()})
    windows = plan_windows(DAYS, 0, WalkForwardConfig(test_days=100, min_train_days=100))
    scores = train_scores(paths, windows, "log_growth")
    for w, row in zip(windows, scores, strict=True):
        expect = [
            m[k][w.train_start : w.test_start].sum() / ((w.test_start - w.train_start) / 365) for k in m
        ]
        np.testing.assert_allclose(row, expect)
    sharpe = train_scores(paths, windows, "sharpe")
    x = m["p2"][: windows[1].test_start]
    assert sharpe[1, 2] == pytest.approx(x.mean() / x.std(ddof=1))


def test_choices_are_causal_and_holdings_carry_over():
    rng = np.random.default_rng(1)
    m = {f"p{i}": rng.normal(0.0, 0.001, 400) for i in range(4)}
    m["p1"][:200] += 0.001  # p1 is best in the first half, p3 in the second
    m["p3"][200:] += 0.001
    cfg = WalkForwardConfig(test_days=50, min_train_days=100, train="rolling", train_days=100)
    paths = GridPaths.from_results({k: path_result(k, v) for k, v in m.items()})
    calls: list = []
    res = walk_forward(paths, cfg, fake_runner(m, calls))
    chosen = list(res.windows["point"])
    assert chosen[:2] == ["p1", "p1"] and chosen[-2:] == ["p3", "p3"]
    assert (res.windows["train_end"] < res.windows["test_start"]).all()
    # each window starts from the wealth the previous one left, and the path is continuous
    assert calls[0][3] is None
    for (_, _, end, _), (_, start, _, state), prev in zip(
        calls[:-1], calls[1:], res.windows["test_end"][:-1], strict=True
    ):
        assert start == end == prev and state is not None
    s = res.result.steps
    np.testing.assert_allclose(s["wealth_start"].to_numpy()[1:], s["wealth"].to_numpy()[:-1])
    # changing what happens after a window starts cannot change its choice
    future = {k: v.copy() for k, v in m.items()}
    cut = DAYS.get_loc(res.windows["test_start"].iloc[2])
    future["p0"][cut:] += 0.01
    again = walk_forward(
        GridPaths.from_results({k: path_result(k, v) for k, v in future.items()}), cfg, fake_runner(future)
    )
    assert list(again.windows["point"])[:3] == chosen[:3]


def test_noise_grid_pbo_is_one_half_on_average_through_stored_paths():
    config = BacktestConfig()
    pbos = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        results = {f"p{i}": path_result(f"p{i}", rng.normal(0.0002, 0.001, 400)) for i in range(16)}
        pbo, _ = grid_pbo(GridPaths.from_results(results), config)
        pbos.append(pbo.pbo)
    assert abs(np.mean(pbos) - 0.5) < 0.1


def synthetic_grid(tmp_path: Path, parameters: dict) -> Grid:
    return Grid("synthetic", tmp_path / "synthetic.yaml", parameters)


@pytest.fixture(scope="module")
def positive_yield_panel():
    """Five pools paying 4-9%/yr (noisy, never below 2%): holding more of them always earns more."""
    rng = np.random.default_rng(7)
    dates = pd.date_range("2024-01-01", periods=320, freq="D")
    rows = []
    for i in range(5):
        apy = 0.04 + 0.01 * i + rng.normal(0.0, 0.003, len(dates))
        paid = np.clip(
            apy, 0.02, None
        )  # no adjustment on synthetic pools: adjusted_apy (what the vault earns) = apy
        rows.append(
            pd.DataFrame(
                {
                    "date": dates,
                    "pool": f"p{i}",
                    "apy": paid,
                    "adjusted_apy": paid,
                    "tvl_usd": 5e8 * np.exp(rng.normal(0, 0.01, len(dates)).cumsum()),
                }
            )
        )
    return bt.vault_panel(pd.concat(rows, ignore_index=True), None, VAULT)


def run_grid(panel: pd.DataFrame, grid: Grid) -> tuple[dict, PointRunner]:
    results = {}
    for p in grid.points():
        frame, _ = run_point(panel, VAULT, p)
        results[p.name] = bt.result_from_frame(frame, p.name, float(frame["initial_wealth"].iloc[0]))
    return results, PointRunner(panel, VAULT, {p.name: p for p in grid.points()})


def benchmarks_of(panel: pd.DataFrame):
    inputs = bt.inputs_from_panel(panel, VAULT)

    def run(start, end):
        return run_benchmarks(inputs, VAULT.strategy, BacktestConfig(start=start.date(), end=end.date()))

    return run


def test_walk_forward_picks_the_truly_better_point_and_pbo_is_low(positive_yield_panel, tmp_path):
    # idling part of the book in a base earning 0 is strictly worse when every pool pays >= 2%
    grid = synthetic_grid(
        tmp_path, {"strategy.base_buffer": [0.0, 0.2, 0.4, 0.6], "backtest.rebalance_every_days": [7]}
    )
    results, runner = run_grid(positive_yield_panel, grid)
    config = VAULT.backtest.model_copy(
        update={
            "walk_forward": WalkForwardConfig(test_days=30, min_train_days=60),
            "evaluation": VAULT.backtest.evaluation.model_copy(update={"pbo_splits": 8}),
        }
    )
    ev = evaluate_grid(results, runner, benchmarks_of(positive_yield_panel), config)
    best = next(n for n in results if n.startswith("base_buffer-0_"))
    assert set(ev.walk_forward.windows["point"]) == {best}
    assert ev.pbo is not None and ev.pbo.pbo < 0.1 and ev.pbo.n_splits == 8
    # the out-of-sample rows cover the same days
    assert (
        ev.walk_forward.start
        == ev.points[best].steps["date"].iloc[0]
        == ev.benchmarks["equal_weight"].steps["date"].iloc[0]
    )
    stats = ev.stats()
    assert stats["excess_ci_low"] <= stats["excess_vs_benchmark"] <= stats["excess_ci_high"]
    assert stats["excess_over"] in VAULT.backtest.benchmarks and 0.0 <= stats["deflated_sharpe"] <= 1.0


def test_one_point_walk_forward_is_the_continuous_backtest(positive_yield_panel, tmp_path):
    """Re-simulating window by window from the holdings left equals one run from the same day."""
    grid = synthetic_grid(tmp_path, {"strategy.base_buffer": [0.1], "backtest.rebalance_every_days": [5]})
    results, runner = run_grid(positive_yield_panel, grid)
    (name,) = results
    paths = GridPaths.from_results(results)
    res = walk_forward(
        paths, WalkForwardConfig(test_days=23, min_train_days=40), runner
    )  # 23: not a multiple of 5
    assert len(res.windows) > 5
    whole = runner(name, res.start, res.end, None)
    cols = ["date", "wealth_start", "wealth", "cost_usd", "gas_usd", "n_trades", "turnover", "invested"]
    pd.testing.assert_frame_equal(res.result.steps[cols], whole.steps[cols])
    # and it is the stored path itself from that day on, but started from cash
    stored = slice_result(results[name], res.start)
    assert stored.steps["date"].equals(res.result.steps["date"])
