"""Research assets through Dagster: features per partition == full history, models see only the
past, predictions use the latest model fitted at or before the day."""

import contextlib
import datetime as dt
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, materialize
from upath import UPath

from midfreq_assets.assets.defillama import defillama_assets
from midfreq_assets.assets.research import build_research_assets
from midfreq_assets.definitions import build_resources
from midfreq_assets.domain.research import engine as research
from midfreq_assets.domain.config.vault import load_vault_configs
from midfreq_assets.domain.research.features import FeatureMapConfig
from midfreq_assets.domain.research.labels import LabelMapConfig
from midfreq_resources.io.lake import read_parquet, write_parquet
from midfreq_resources.io.model_io_manager import load_path

FIRST, LAST = "2024-06-06", "2024-07-31"
WEEK = "2024-07-15"  # a fitted_models partition (Monday): as_of


def range_tags(start: str, end: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}


def small_vault():
    """usd_lending with short windows and horizons, so models train within two months of data."""
    v = load_vault_configs()["usd_lending"]
    fmap = FeatureMapConfig.model_validate({
        "apy": {"transform": "as_is", "expansions": {"level": True, "ewma": {"windows": [3, 7], "norm_mult": 2},
                                                     "min": [7]}},
        "tvl_usd": {"transform": "log", "expansions": {"ewma": {"windows": [3], "norm_mult": 2}}},
    })
    labels = LabelMapConfig.model_validate({"apy": {"kind": "forward_mean", "horizons": [3, 7]}})
    models = v.models.model_copy(update={"cv": v.models.cv.model_copy(update={"min_train": 7, "n_splits": 2})})
    return v.model_copy(update={"feature_map": fmap, "label_map": labels, "models": models})


class Pipeline:
    """A tmp lake with pool_history/pool_metadata FIRST..LAST and the vault's research assets."""

    def __init__(self, lake: Path, resources: dict, vault) -> None:
        self.lake, self.resources, self.vault = lake, resources, vault
        self.instance = DagsterInstance.ephemeral()
        self.research = build_research_assets(vault)
        self.all = [*defillama_assets, *self.research]

    def run(self, assets, selection, start: str, end: str | None = None, extra=()):
        tags = range_tags(start, end) if end else {}
        kw = {} if end else {"partition_key": start}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = materialize([*self.all, *extra], selection=selection, resources=self.resources,
                                 instance=self.instance, tags=tags, **kw)
        assert result.success
        return result

    def frame(self, *key: str, partition: str) -> pd.DataFrame:
        return read_parquet(self.lake.joinpath(*key, f"{partition}.parquet"))


def build_pipeline(lake: Path, vault=None) -> Pipeline:
    resources = build_resources()
    p = Pipeline(lake, resources, vault or small_vault())
    p.run(defillama_assets, defillama_assets, FIRST, LAST)
    return p


@contextlib.contextmanager
def pipeline_env(tmp_path_factory, replay_server):
    """A pipeline on a fresh lake with the MIDFREQ_* variables pointing at the replay server."""
    lake = tmp_path_factory.mktemp("lake")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in replay_server.env().items():
            mp.setenv(name, value)
        mp.setenv("MIDFREQ_DATA_LAKE", str(lake))
        replay_server.reset()
        yield build_pipeline(lake)
        replay_server.reset()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, replay_server):
    with pipeline_env(tmp_path_factory, replay_server) as p:
        features, models, _ = p.research
        p.run(p.research, [features], FIRST, LAST)
        p.run(p.research, [models], "2024-06-24", "2024-07-29")
        yield p


def history(lake: Path) -> pd.DataFrame:
    return pd.concat([read_parquet(f) for f in sorted((Path(lake) / "pool_history").glob("*.parquet"))],
                     ignore_index=True)


def test_features_per_partition_equal_full_history(pipe):
    full = research.build_features(history(pipe.lake), pipe.vault.feature_map)
    cols = research.feature_columns(full)
    ranged = pipe.frame("usd_lending", "features", partition="2024-07-20")
    pipe.run(pipe.research, [pipe.research[0]], "2024-07-20")  # the same day alone
    alone = pipe.frame("usd_lending", "features", partition="2024-07-20")
    expected = full[full["date"] == pd.Timestamp("2024-07-20")].reset_index(drop=True)
    assert len(alone) == len(expected) > 20 and (alone["date"] == pd.Timestamp("2024-07-20")).all()
    for got in (alone, ranged):
        np.testing.assert_allclose(got[cols].to_numpy(float), expected[cols].to_numpy(float), rtol=1e-5, atol=1e-12)
        assert list(got["instrument"]) == list(expected["instrument"])


def _models(lake: Path, week: str) -> dict:
    return load_path(Path(lake) / "usd_lending" / "fitted_models" / f"{week}.joblib")


def test_fitted_models_see_only_labels_ended_before_as_of(pipe):
    bundle = _models(pipe.lake, WEEK)
    assert bundle["as_of"] == pd.Timestamp(WEEK)
    ridge = bundle["models"]["apy_fwd_3/ridge"]
    assert ridge.as_of == pd.Timestamp(WEEK) and ridge.n_train > 50 and ridge.estimators
    assert len(bundle["cv"]) and set(bundle["cv"]["estimator"]) == {"ewm_predictor", "ridge"}
    probe = pipe.frame("usd_lending", "features", partition="2024-07-20")
    before = ridge.predict(probe)

    # perturb everything from as_of on: the stored model must not change
    for f in sorted((pipe.lake / "pool_history").glob("*.parquet")):
        if f.stem >= WEEK:
            df = read_parquet(f)
            write_parquet(UPath(f), df.assign(apy=df["apy"] * 3 + 0.05, tvl_usd=df["tvl_usd"] * 0.5))
    models_asset = pipe.research[1]
    pipe.run(pipe.research, [models_asset], WEEK)
    again = _models(pipe.lake, WEEK)["models"]["apy_fwd_3/ridge"]
    assert again.n_train == ridge.n_train
    np.testing.assert_allclose(again.predict(probe), before, rtol=1e-12)

    # sanity: a perturbation before as_of does change it (the test above is not vacuous)
    f = pipe.lake / "pool_history" / "2024-07-05.parquet"
    df = read_parquet(f)
    write_parquet(UPath(f), df.assign(apy=df["apy"] * 3 + 0.05))
    pipe.run(pipe.research, [models_asset], WEEK)
    changed = _models(pipe.lake, WEEK)["models"]["apy_fwd_3/ridge"]
    assert not np.allclose(changed.predict(probe), before)


def test_predictions_use_latest_model_at_or_before_the_day(pipe):
    preds_asset = pipe.research[2]
    result = pipe.run(pipe.research, [preds_asset], "2024-06-20", "2024-07-31")
    frames = [pipe.frame("usd_lending", "predictions", partition=d.strftime("%Y-%m-%d"))
              for d in pd.date_range("2024-06-20", "2024-07-31")]
    out = pd.concat(frames, ignore_index=True)
    assert out[out["date"] < pd.Timestamp("2024-06-24")].empty  # before the first weekly model: nothing
    assert (out["model_as_of"] <= out["date"]).all()
    monday = out["date"] - pd.to_timedelta(out["date"].dt.weekday, unit="D")
    assert (out["model_as_of"] == monday).all()  # the latest weekly model, never a later one
    assert (out["model"] == "apy_fwd_3/ewm_predictor").all()
    # rows are the vault's universe of the day, with finite predictions
    meta = pipe.frame("pool_metadata", partition="2024-07-10")
    day = out[out["date"] == pd.Timestamp("2024-07-10")]
    assert set(day["pool"]) == {p for p, v in zip(meta["pool"], meta["vaults"], strict=True) if "usd_lending" in v}
    assert np.isfinite(day["predicted_apy"]).all()
    # same number as the research engine with that week's model on the full feature history
    feats = pd.concat([pipe.frame("usd_lending", "features", partition=d.strftime("%Y-%m-%d"))
                       for d in pd.date_range(FIRST, "2024-07-10")], ignore_index=True)
    fitted = _models(pipe.lake, "2024-07-08")["models"]["apy_fwd_3/ewm_predictor"]
    expected = research.predict(fitted, feats, date="2024-07-10")
    got = day.set_index("pool")["predicted_apy"]
    np.testing.assert_allclose(got.to_numpy(), expected.reindex(got.index).to_numpy(), rtol=1e-5)
    mat = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    assert mat["usd_lending/predictions"].materialization.metadata["days_without_predictions"].value == 4


def test_weekly_partitions_start_after_warm_up():
    vault = small_vault()
    _, models, _ = build_research_assets(vault)
    first = models.partitions_def.get_first_partition_key()
    start = dt.date.fromisoformat(first)
    assert start.weekday() == 0 and start >= vault.start_date + dt.timedelta(days=7 + 7)
