"""Which yield predictor wins out of sample on the bundled recording (prints figures; not a unit test).

Candidates: the EWM predictor, a pooled ``HistGradientBoostingRegressor`` on cross-sectional features
(rank and z-score of APY in the day's universe, TVL flows, reward share, base and reward trends,
distance from the 90-day mean, protocol and chain as categories: ``configs/research/yield_models.yaml``)
and the naive last value. One purged walk-forward CV of the vault (``models.cv``), trained on the
pools in the universe each day (as ``fitted_models`` does); every candidate scored on the same rows.
Prints MAE per fold and overall, each candidate's coverage, the winner and its margin over naive.

    .venv/bin/python benchmarks/bench_yield_models.py [--study configs/research/yield_models.yaml]

The gradient-boosting fits run on ``models.threads`` OpenMP threads (1 by default).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import pandas as pd

warnings.filterwarnings("ignore")

from midfreq_assets.domain.backtest import engine as bt  # noqa: E402
from midfreq_assets.domain.config.tokens import load_token_registry  # noqa: E402
from midfreq_assets.domain.config.vault import load_vault_config  # noqa: E402
from midfreq_assets.domain.ingest.universe import select_universe  # noqa: E402
from midfreq_assets.domain.research import engine as research  # noqa: E402
from midfreq_assets.domain.research.models import NAIVE  # noqa: E402
from midfreq_assets.domain.research.selection import select_model  # noqa: E402
from midfreq_assets.domain.research.yield_study import load_yield_study  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default=str(REPO / "configs" / "research" / "yield_models.yaml"))
    ap.add_argument("--vault", default=str(REPO / "configs" / "vaults" / "usd_lending.yaml"))
    args = ap.parse_args()
    vault = load_yield_study(args.study).applied_to(load_vault_config(args.vault))
    hist, snap = bt.load_recorded(REPO / "recorded")
    members, _ = select_universe(hist, snap, {vault.name: vault}, load_token_registry())
    panel = bt.vault_panel(hist, members, vault).rename(columns={"pool": "instrument"})
    t0 = time.perf_counter()
    feats = research.build_features(panel, vault.feature_map)
    labels = research.build_labels(panel, vault.label_map)
    member = pd.MultiIndex.from_frame(panel.loc[panel["eligible"], ["date", "instrument"]])
    train = feats[pd.MultiIndex.from_arrays([feats["date"], feats["instrument"]]).isin(member)].reset_index(
        drop=True
    )
    print(
        f"bundled recording: {panel['instrument'].nunique()} pools, {panel['date'].min().date()}.."
        f"{panel['date'].max().date()}, {len(train)} pool-days in the universe; features "
        f"{time.perf_counter() - t0:.2f}s ({len(research.feature_columns(feats))} columns)"
    )
    metric = vault.models.selection.regression_metric
    for label in [i.name for i in vault.label_map.labels() if i.family == "apy"]:
        t0 = time.perf_counter()
        cv = research.cross_validate(
            train, labels, vault.models, label=label, label_map=vault.label_map, per_instrument=False
        )
        seconds = time.perf_counter() - t0
        f = cv.folds[cv.folds["metric"] == metric]
        table = f.pivot(index="fold", columns="estimator", values="score")
        cover = f[f["fold"] == "all"].set_index("estimator")["coverage"]
        rows = f[f["fold"] == "all"].set_index("estimator")["n"]
        print(
            f"\n== {label}: out-of-sample {metric} per fold (rows every candidate predicts), CV {seconds:.1f}s"
        )
        print(table.to_string(float_format=lambda v: f"{v:.5f}"))
        naive = table.loc["all", NAIVE]
        for est in table.columns:
            rel = (table.loc["all", est] / naive - 1) * 100
            print(
                f"  {est:<14} {metric} {table.loc['all', est]:.5f}  vs naive {rel:+.1f}%  "
                f"coverage {cover[est]:.0%}  rows {rows[est]}"
            )
        sel = select_model(cv.folds, label, "regression", vault.models.selection)
        print(f"  selected: {sel.chosen} -- {sel.note}")


if __name__ == "__main__":
    main()
