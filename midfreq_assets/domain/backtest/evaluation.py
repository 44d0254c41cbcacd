"""Honest evaluation of one grid: the walk-forward result, the benchmarks on the same days, and how
sure we are (PBO, deflated Sharpe, a bootstrap interval of the excess over the strongest benchmark).

The bar is the strongest constrained benchmark (highest log growth on the walk-forward's days among
the rules run under the vault's limits; ``*_unconstrained`` rows are shown, never the bar). The
deflated Sharpe is computed twice: on the daily returns over the base rate (plain) and on the daily
excess over the bar, among the grid points' excesses over the same bar (the one that says whether
the policy beats the rule by skill rather than by the number of trials).

Everything is computed from the grid's stored per-point paths plus the re-simulation of the
chosen points on their test windows; the in-sample best point is kept only as an upper bound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from midfreq_assets.domain.backtest.benchmarks import (
    benchmark_sets,
    is_constrained,
    run_benchmark_sets,
)
from midfreq_assets.domain.backtest.bootstrap import MeanInterval, bootstrap_mean_interval
from midfreq_assets.domain.backtest.config import BacktestConfig
from midfreq_assets.domain.backtest.engine import BacktestResult
from midfreq_assets.domain.backtest.grids import GridPoint, PointRunner
from midfreq_assets.domain.backtest.metrics import backtest_metrics
from midfreq_assets.domain.backtest.overfitting import (
    DeflatedSharpe,
    PBOResult,
    deflated_sharpe,
    pbo_cscv,
    sharpe_per_period,
)
from midfreq_assets.domain.backtest.walk_forward import (
    GridPaths,
    RunWindow,
    WalkForwardResult,
    slice_result,
    walk_forward,
)
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.units import DAYS_PER_YEAR

#: Runs the benchmarks from cash on decision days ``start`` .. the day before ``end``.
RunBenchmarks = Callable[[pd.Timestamp, pd.Timestamp], dict[str, BacktestResult]]


@dataclass
class GridEvaluation:
    """What the report leads with. ``points`` and ``benchmarks`` cover the walk-forward's days."""

    walk_forward: WalkForwardResult | None
    points: dict[str, BacktestResult]
    benchmarks: dict[str, BacktestResult]
    pbo: PBOResult | None
    deflated: DeflatedSharpe | None
    excess: MeanInterval | None
    excess_over: str | None
    notes: list[str] = field(default_factory=list)
    deflated_excess: DeflatedSharpe | None = None  # on the daily excess over ``excess_over``

    @property
    def period(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        return (self.walk_forward.start, self.walk_forward.end) if self.walk_forward else None

    def stats(self) -> dict[str, float | int | str]:
        """The statistics as flat values (report columns, asset metadata, the demo's summary)."""
        out: dict[str, float | int | str] = {}
        if self.pbo is not None:
            out.update(
                pbo=self.pbo.pbo,
                pbo_splits=self.pbo.n_splits,
                pbo_combinations=self.pbo.n_combinations,
                pbo_points=self.pbo.n_points,
                pbo_days=self.pbo.n_rows,
            )
        if self.deflated is not None:
            out.update(
                deflated_sharpe=self.deflated.deflated_sharpe,
                daily_sharpe=self.deflated.sharpe,
                expected_max_daily_sharpe=self.deflated.expected_max_sharpe,
                dsr_trials=self.deflated.n_trials,
            )
        if self.deflated_excess is not None:
            out.update(
                deflated_sharpe_excess=self.deflated_excess.deflated_sharpe,
                daily_sharpe_excess=self.deflated_excess.sharpe,
                expected_max_daily_sharpe_excess=self.deflated_excess.expected_max_sharpe,
            )
        if self.excess is not None and self.excess_over is not None:
            out.update(
                excess_over=self.excess_over,
                bar_candidates=sum(map(is_constrained, self.benchmarks)),
                excess_vs_benchmark=self.excess.estimate,
                excess_ci_low=self.excess.low,
                excess_ci_high=self.excess.high,
                excess_confidence=self.excess.confidence,
            )
        if self.walk_forward is not None:
            out.update(
                oos_start=str(self.walk_forward.start.date()),
                oos_end=str(self.walk_forward.end.date()),
                windows=len(self.walk_forward.windows),
            )
        return out


def daily_returns(result: BacktestResult) -> pd.Series:
    """log(W_{t+1} / W_t) per decision day."""
    s = result.steps
    return pd.Series(
        np.log(s["wealth"].to_numpy(float) / s["wealth_start"].to_numpy(float)),
        index=pd.DatetimeIndex(s["date"]),
        name=result.name,
    )


def strongest_benchmark(benchmarks: Mapping[str, BacktestResult]) -> str | None:
    """The constrained benchmark with the highest log growth (the bar the policy must clear);
    ``*_unconstrained`` rows never are."""
    growth = {k: backtest_metrics(r)["log_growth"] for k, r in benchmarks.items() if is_constrained(k)}
    growth = {k: v for k, v in growth.items() if np.isfinite(v)}
    return max(growth, key=lambda k: growth[k]) if growth else None


def grid_pbo(paths: GridPaths, config: BacktestConfig) -> tuple[PBOResult | None, str]:
    """PBO over the days from the first invested day on, where every point has a return."""
    r = paths.returns.iloc[paths.first_active() :].dropna()
    splits = config.evaluation.pbo_splits
    if paths.returns.shape[1] < 2:
        return None, "PBO needs at least 2 grid points"
    if len(r) < 2 * splits:
        return None, f"PBO needs at least {2 * splits} common days for {splits} splits, the grid has {len(r)}"
    return pbo_cscv(r.to_numpy(), splits, config.walk_forward.objective), ""


def evaluate_grid(
    results: Mapping[str, BacktestResult],
    run_window: RunWindow,
    run_benchmarks: RunBenchmarks,
    config: BacktestConfig,
) -> GridEvaluation:
    """Walk-forward selection over the grid's stored paths, benchmarks run over the same days, PBO
    of the grid, deflated Sharpe of the walk-forward path (over the base rate, and on its daily
    excess over the bar) and the bootstrap interval of its excess daily log growth over the bar,
    the strongest constrained benchmark."""
    paths = GridPaths.from_results(results)
    notes: list[str] = []
    pbo, why = grid_pbo(paths, config)
    if why:
        notes.append(why)
    wf = walk_forward(paths, config.walk_forward, run_window, risk_free=config.base_rate)
    if wf is None:
        notes.append(
            f"no walk-forward window: the history holds less than min_train_days="
            f"{config.walk_forward.min_train_days} after the first invested day"
        )
        return GridEvaluation(
            None,
            dict(results),
            run_benchmarks(paths.returns.index[0], paths.ends[-1]),
            pbo,
            None,
            None,
            None,
            notes,
        )
    points = {k: slice_result(r, wf.start) for k, r in results.items()}
    benches = run_benchmarks(wf.start, wf.end)
    wf_r = daily_returns(wf.result)
    years = (pd.DatetimeIndex(wf.result.steps["date_end"]) - wf_r.index).days.to_numpy(float) / DAYS_PER_YEAR
    excess_base = wf_r.to_numpy() - config.base_rate * years
    oos = paths.returns.loc[wf_r.index]
    trial = sharpe_per_period(oos.to_numpy() - config.base_rate * years[:, None])
    dsr = deflated_sharpe(excess_base, len(paths.points), trial)
    over = strongest_benchmark(benches)
    excess = dsr_excess = None
    if over is not None:
        bar = daily_returns(benches[over]).reindex(wf_r.index)
        diff = wf_r - bar
        same = diff.notna().to_numpy()
        ev = config.evaluation
        excess = bootstrap_mean_interval(
            diff.to_numpy()[same],
            mean_block=ev.bootstrap_block_days,
            n_resamples=ev.bootstrap_resamples,
            confidence=ev.confidence,
            seed=ev.seed,
            scale=1.0 / float(np.mean(years[same])),
        )
        trial_excess = sharpe_per_period(oos.to_numpy()[same] - bar.to_numpy()[same, None])
        dsr_excess = deflated_sharpe(diff.to_numpy()[same], len(paths.points), trial_excess)
    return GridEvaluation(wf, points, benches, pbo, dsr, excess, over, notes, dsr_excess)


def evaluate_vault_grid(
    panel: pd.DataFrame,
    vault: VaultConfig,
    points: list[GridPoint],
    results: Mapping[str, BacktestResult],
    stored_models: Mapping[str, object] | None = None,
) -> GridEvaluation:
    """:func:`evaluate_grid` of a vault's grid: chosen points re-simulated by :class:`PointRunner`,
    benchmarks under each point's own constraints, costs, gas and cadence (one set per distinct
    strategy/backtest configuration, :func:`benchmarks.benchmark_sets`), from cash on the same days.
    ``stored_models``: the vault's ``fitted_models`` bundles (the points with its own research
    settings are re-simulated on them, :class:`PointRunner`)."""
    chosen = [p for p in points if p.name in results]
    runner = PointRunner(panel, vault, {p.name: p for p in chosen}, stored_models=dict(stored_models or {}))
    sets = benchmark_sets(vault, chosen)

    def benchmarks(start: pd.Timestamp, end: pd.Timestamp) -> dict[str, BacktestResult]:
        window = {"start": start.date(), "end": end.date()}
        windowed = [replace(s, config=s.config.model_copy(update=window)) for s in sets]
        return {name: r for name, (r, _) in run_benchmark_sets(panel, windowed).items()}

    return evaluate_grid(results, runner, benchmarks, vault.backtest)
