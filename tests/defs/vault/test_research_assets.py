"""Research assets through Dagster: features per (monthly) partition == full history, models see only
the past, predictions use the latest model fitted at or before the day."""

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import AssetSpec, DagsterInstance, materialize

from midfreq_assets.defs.vault.research import build_research_assets
from midfreq_assets.domain.ingest.universe import vault_rows
from midfreq_assets.domain.research import engine as research
from midfreq_assets.domain.research.bundles import ModelBundle
from midfreq_assets.domain.research.features import FeatureMapConfig
from midfreq_assets.partitions import daily_from
from midfreq_resources.io.lake import MonthFiles, lake_root, read_daily, read_parquet
from midfreq_resources.io.model_io_manager import load_path
from midfreq_resources.io.parquet_io_manager import ParquetIOManager

FIRST, LAST = "2024-06-06", "2024-07-31"
MONTHS = ("2024-06", "2024-07")
WEEK = "2024-07-15"  # a fitted_models partition (Monday): as_of


@pytest.fixture(scope="module")
def pipe(pipeline_env):
    with pipeline_env() as p:
        features, models, _ = p.research
        p.run(p.research, [features], *MONTHS)
        p.run(p.research, [models], "2024-06-24", "2024-07-29")
        yield p


def history(lake: Path) -> pd.DataFrame:
    return read_daily(lake, "pool_history")


def on_day(frame: pd.DataFrame, day: str) -> pd.DataFrame:
    return frame[frame["date"] == pd.Timestamp(day)].reset_index(drop=True)


def perturb(lake: Path, since: str | None = None, day: str | None = None) -> None:
    """Rewrite pool_history's days from ``since`` on (or ``day`` alone) with other numbers."""
    store = MonthFiles(lake_root(lake) / "pool_history")
    days = sorted(d for d in store.stored_days() if (since and d >= since) or d == day)
    frame = store.read(days)
    frame = frame.assign(apy=frame["apy"] * 3 + 0.05, tvl_usd=frame["tvl_usd"] * (0.5 if since else 1.0))
    store.write({d: on_day(frame, d) for d in days})


def test_features_per_partition_equal_full_history(pipe):
    full = research.build_features(history(pipe.lake), pipe.vault.feature_map)
    cols = research.feature_columns(full)
    ranged = pipe.frame("usd_lending", "features", partition="2024-07")
    pipe.run(pipe.research, [pipe.research[0]], "2024-07")  # the same month alone
    alone = pipe.frame("usd_lending", "features", partition="2024-07")
    expected = (
        full[full["date"] >= pd.Timestamp("2024-07-01")]
        .sort_values(["date", "instrument"])
        .reset_index(drop=True)
    )
    assert len(alone) == len(expected) > 20 * 31 and alone["date"].dt.month.eq(7).all()
    for got in (alone, ranged):
        got = got.sort_values(["date", "instrument"]).reset_index(drop=True)
        np.testing.assert_allclose(
            got[cols].to_numpy(float), expected[cols].to_numpy(float), rtol=1e-5, atol=1e-12
        )
        assert list(got["instrument"]) == list(expected["instrument"])


def _models(lake: Path, week: str) -> ModelBundle:
    return load_path(Path(lake) / "usd_lending" / "fitted_models" / f"{week}.skops")


def test_fitted_models_see_only_labels_ended_before_as_of(pipe):
    bundle = _models(pipe.lake, WEEK)
    assert bundle.as_of == pd.Timestamp(WEEK)
    ridge = bundle.models["apy_fwd_3/ridge"]
    assert ridge.as_of == pd.Timestamp(WEEK) and ridge.n_train > 50 and ridge.estimators
    assert len(bundle.cv) and set(bundle.cv["estimator"]) == {"ewm_predictor", "ridge"}
    probe = on_day(pipe.frame("usd_lending", "features", partition="2024-07"), "2024-07-20")
    before = ridge.predict(probe)

    # perturb everything from as_of on: the stored model must not change
    perturb(pipe.lake, since=WEEK)
    models_asset = pipe.research[1]
    pipe.run(pipe.research, [models_asset], WEEK)
    again = _models(pipe.lake, WEEK).models["apy_fwd_3/ridge"]
    assert again.n_train == ridge.n_train
    np.testing.assert_allclose(again.predict(probe), before, rtol=1e-12)

    # sanity: a perturbation before as_of does change it (the test above is not vacuous)
    perturb(pipe.lake, day="2024-07-05")
    pipe.run(pipe.research, [models_asset], WEEK)
    changed = _models(pipe.lake, WEEK).models["apy_fwd_3/ridge"]
    assert not np.allclose(changed.predict(probe), before)


def test_predictions_use_latest_model_at_or_before_the_day(pipe):
    preds_asset = pipe.research[2]
    result = pipe.run(pipe.research, [preds_asset], *MONTHS)
    out = pd.concat(
        [pipe.frame("usd_lending", "predictions", partition=m) for m in MONTHS], ignore_index=True
    )
    assert out[out["date"] < pd.Timestamp("2024-06-24")].empty  # before the first weekly model: nothing
    assert (out["model_as_of"] <= out["date"]).all()
    monday = out["date"] - pd.to_timedelta(out["date"].dt.weekday, unit="D")
    assert (out["model_as_of"] == monday).all()  # the latest weekly model, never a later one
    for week, rows in out.groupby("model_as_of"):  # each week trades the model its CV selected
        bundle = _models(pipe.lake, week.strftime("%Y-%m-%d"))
        sel = bundle.selection["apy_fwd_3"]
        assert set(rows["model"]) == {bundle.model_key("apy_fwd_3")} == {sel.model_key}
        assert sel.chosen == "naive" or sel.beats_naive
    # rows are the vault's universe of the day, with finite predictions
    meta = pipe.frame("pool_metadata", partition="2024-07-10")
    day = out[out["date"] == pd.Timestamp("2024-07-10")]
    assert set(day["pool"]) == {
        p for p, v in zip(meta["pool"], meta["vaults"], strict=True) if "usd_lending" in v
    }
    assert np.isfinite(day["predicted_apy"]).all()
    # same number as the research engine with that week's model on the full feature history
    feats = pd.concat([pipe.frame("usd_lending", "features", partition=m) for m in MONTHS], ignore_index=True)
    feats = (
        feats[feats["date"] <= pd.Timestamp("2024-07-10")]
        .sort_values(["date", "instrument"])
        .reset_index(drop=True)
    )
    week = _models(pipe.lake, "2024-07-08")
    fitted = week.models[week.model_key("apy_fwd_3")]
    expected = research.predict(fitted, feats, date="2024-07-10")
    got = day.set_index("pool")["predicted_apy"]
    np.testing.assert_allclose(got.to_numpy(), expected.reindex(got.index).to_numpy(), rtol=1e-5)
    meta_by_month = {
        e.materialization.partition: e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert set(meta_by_month) == set(MONTHS)  # each month its own numbers; the run's on the last one
    assert meta_by_month["2024-07"]["last_day"].value == "2024-07-31"
    assert meta_by_month["2024-06"]["last_day"].value == "2024-06-30"
    assert meta_by_month["2024-07"]["run_days_without_predictions"].value == 18  # 06-06..06-23: no model yet
    assert meta_by_month["2024-06"]["dagster/row_count"].value == int(out["date"].dt.month.eq(6).sum())


def test_weekly_partitions_start_after_warm_up(small_vault):
    vault = small_vault
    _, models, _ = build_research_assets(vault)
    first = models.partitions_def.get_first_partition_key()
    start = dt.date.fromisoformat(first)
    assert start.weekday() == 0 and start >= vault.start_date + dt.timedelta(days=7 + 7)


def test_cross_section_features_rank_within_the_vaults_universe(pipe, tmp_path):
    """Features reading the universe or pool_metadata get them from pool_metadata, as of each day."""
    lake = tmp_path / "lake"
    for key in ("pool_history", "pool_metadata"):
        shutil.copytree(pipe.lake / key, lake / key)
    fmap = FeatureMapConfig.model_validate(
        {
            "apy": {"expansions": {"level": True, "cross_section": ["rank"]}},
            "categories": ["project", "chain"],
        }
    )
    vault = pipe.vault.model_copy(update={"feature_map": fmap})
    features = build_research_assets(vault)[0]
    day = "2024-07-10"
    upstream = [
        AssetSpec(k, partitions_def=daily_from(vault.start_date)).with_io_manager_key("parquet_io_manager")
        for k in ("pool_history", "pool_metadata")
    ]
    result = materialize(
        [*upstream, features],
        selection=[features],
        partition_key="2024-07",
        resources={"parquet_io_manager": ParquetIOManager(root=str(lake))},
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    out = on_day(read_parquet(lake / "usd_lending" / "features" / "2024-07.parquet"), day)
    meta = read_daily(lake, "pool_metadata", days=[day])
    members = set(vault_rows(meta, "usd_lending")["pool"])
    inside = out["instrument"].isin(members)
    assert inside.sum() > 10 and (~inside).sum() > 0  # pool_history holds pools of other universes too
    assert out.loc[~inside, "apy__xs_rank"].isna().all()
    expected = out.loc[inside, "apy"].rank(pct=True)
    np.testing.assert_allclose(out.loc[inside, "apy__xs_rank"], expected)
    by_pool = meta.drop_duplicates("pool").set_index("pool")
    assert (
        out.loc[inside, "project"].to_numpy()
        == by_pool.loc[out.loc[inside, "instrument"], "project"].to_numpy()
    ).all()


def test_backtest_predictions_are_the_production_predictions(pipe):
    """The backtest replays production's weekly refits: same model chosen each week, same numbers."""
    from midfreq_assets.domain.backtest import engine as bt

    features, models, predictions = pipe.research
    # the whole chain from the lake's pool_history as it is now (another test perturbs it)
    pipe.run(pipe.research, [features], *MONTHS)
    pipe.run(pipe.research, [models], "2024-06-24", "2024-07-29")
    pipe.run(pipe.research, [predictions], "2024-07")
    prod = pipe.frame("usd_lending", "predictions", partition="2024-07")
    meta = read_daily(pipe.lake, "pool_metadata")
    panel = bt.vault_panel(history(pipe.lake), meta, pipe.vault)
    backtest = bt.prediction_panel(panel, pipe.vault).stack().rename("backtest")
    got = prod.set_index(["date", "pool"])["predicted_apy"].to_frame().join(backtest, how="inner")
    assert len(got) == len(prod) > 300
    np.testing.assert_allclose(got["predicted_apy"], got["backtest"], rtol=1e-5, atol=1e-9)


def test_features_fail_loudly_on_a_missing_pool_history_day(pipeline_env):
    from dagster import materialize

    from midfreq_assets.defs.vault.research import build_research_assets

    with pipeline_env() as p:
        MonthFiles(lake_root(p.lake) / "pool_history").remove(["2024-07-10"])
        strict = build_research_assets(p.vault)[0]
        result = materialize(
            [*p.ingest, strict],
            selection=[strict],
            resources=p.resources,
            instance=p.instance,
            partition_key="2024-07",
            raise_on_error=False,
        )
        assert not result.success
        error = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error
        assert "2024-07-10" in error.message + str(error.cause) and "not materialized" in error.message + str(
            error.cause
        )
        tolerant = build_research_assets(p.vault.model_copy(update={"on_missing_upstream_days": "tolerate"}))[
            0
        ]
        ok = materialize(
            [*p.ingest, tolerant],
            selection=[tolerant],
            resources=p.resources,
            instance=p.instance,
            partition_key="2024-07",
        )
        assert ok.success
