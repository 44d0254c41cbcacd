"""The weekly refit of the research engine on the bundled recording (prints figures; not a unit test).

``weekly_bundles`` is what ``fitted_models`` runs in production and what the backtest replays
(:func:`~midfreq_assets.domain.backtest.engine.prediction_panel`, once per distinct model
configuration of a grid). On the recorded ``usd_lending`` panel (the rows in the vault's universe
each day), every Monday from the first day a model can be trained: each (label, estimator) and the
labels' naive baselines fitted, and the purged walk-forward CV of every label. Prints CPU and wall
seconds, and seconds per refit; then the same for ``prediction_panel`` (one label, its CV and the
predictions of every day).

    .venv/bin/python benchmarks/bench_research.py [--vault configs/vaults/usd_lending.yaml] [--repeat 1]
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
from midfreq_assets.domain.research import engine as research  # noqa: E402
from midfreq_assets.domain.research.bundles import weekly_bundles  # noqa: E402
from midfreq_assets.domain.research.plan import refit_dates, selected_labels, traded_label, warmup_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def timed(fn):
    """``(result, cpu seconds, wall seconds)`` of ``fn()`` (CPU of this process: user + system)."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vault", default=str(REPO / "configs" / "vaults" / "usd_lending.yaml"))
    ap.add_argument(
        "--repeat", type=int, default=1, help="time each step this many times (the best is printed)"
    )
    args = ap.parse_args()
    vault = load_vault_config(args.vault)
    panel = bt.recorded_panel(REPO / "recorded", vault, load_token_registry())
    hist = panel.assign(date=pd.to_datetime(panel["date"]).dt.normalize()).rename(
        columns={"pool": "instrument"}
    )
    # the string columns as fitted_models reads them back from the lake (Parquet: pandas' str dtype)
    feats = research.build_features(hist, vault.feature_map).astype({"instrument": "str"})
    labels = research.build_labels(hist, vault.label_map).astype({"instrument": "str"})
    member = pd.MultiIndex.from_frame(hist.loc[hist["eligible"].astype(bool), ["date", "instrument"]])
    train = feats[pd.MultiIndex.from_arrays([feats["date"], feats["instrument"]]).isin(member)].reset_index(
        drop=True
    )
    days = pd.date_range(feats["date"].min(), feats["date"].max(), freq="D")
    first_fit = (days[0] + pd.Timedelta(days=warmup_rows(vault.label_map, vault.models))).date()
    as_ofs = {
        str(d.date()): d for d in refit_dates(first_fit, days[-1].date(), vault.models.refit_every_weeks)
    }
    cv_labels = selected_labels(vault.label_map, vault.models)
    ests = {f: list(m.estimators) for f, m in vault.models.families.items()}
    print(
        f"{vault.name}: {train['instrument'].nunique()} pools, {len(train)} feature rows in the universe, "
        f"{len(as_ofs)} refits, labels {cv_labels}, estimators {ests} + naive, "
        f"{vault.models.cv.n_splits}-fold {vault.models.cv.scheme} CV per label per refit"
    )

    runs = [
        timed(
            lambda: weekly_bundles(as_ofs, train, labels, vault.models, vault.label_map, cv_labels=cv_labels)
        )
        for _ in range(args.repeat)
    ]
    bundles, cpu, wall = min(runs, key=lambda r: r[1])
    fitted = sum(len(b.models) for b in bundles.values())
    print(
        f"weekly_bundles: cpu {cpu:.2f}s  wall {wall:.2f}s  per refit {cpu / len(as_ofs) * 1000:.0f} ms cpu "
        f"({fitted} fitted models)"
    )

    runs = [timed(lambda: bt.prediction_panel(panel, vault)) for _ in range(args.repeat)]
    _, cpu, wall = min(runs, key=lambda r: r[1])
    print(
        f"prediction_panel: cpu {cpu:.2f}s  wall {wall:.2f}s  (features, labels, {len(as_ofs)} refits of "
        f"{traded_label(vault.label_map)} with its CV, predictions of {len(days)} days)"
    )


if __name__ == "__main__":
    main()
