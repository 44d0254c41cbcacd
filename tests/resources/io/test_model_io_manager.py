"""Model files: skops, never pickle. A bundle round-trips; random bytes, a crafted pickle or a skops file
naming an untrusted type are refused with the file's name, and nothing in them runs."""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from dagster import (
    AllPartitionMapping,
    AssetIn,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    WeeklyPartitionsDefinition,
    asset,
    materialize,
    mem_io_manager,
)
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from midfreq_assets.domain.research.bundles import ModelBundle
from midfreq_assets.domain.research.models import EWMYieldPredictor, FittedModel
from midfreq_assets.domain.research.selection import Selection
from midfreq_resources.io.model_io_manager import (
    _LOADED,
    LAZY,
    NO_TABLES,
    ModelFileError,
    ModelIOManager,
    dump_bytes,
    load_bytes,
    load_cached,
)

WEEKS = WeeklyPartitionsDefinition(start_date="2024-07-01", end_date="2024-07-29", day_offset=1)
WEEK = "2024-07-15"


class _Payload:
    """What an attacker drops into the lake: unpickling it would create the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bundle() -> ModelBundle:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b", "c"])
    y = X.sum(axis=1).to_numpy()
    ridge = Pipeline([("scale", StandardScaler()), ("model", Ridge())]).fit(X, y)
    forest = RandomForestRegressor(n_estimators=3, random_state=0).fit(X, y)
    hgb = HistGradientBoostingRegressor(max_iter=5).fit(X, y)
    models = {
        "apy_fwd_3/ridge": FittedModel(
            "apy_fwd_3",
            "apy",
            "ridge",
            "regression",
            "pooled",
            ["a", "b", "c"],
            {"all": ridge},
            pd.Timestamp(WEEK),
            80,
        ),
        "apy_fwd_3/rf": FittedModel(
            "apy_fwd_3",
            "apy",
            "rf",
            "regression",
            "per_instrument",
            ["a", "b", "c"],
            {"p0": forest},
            pd.Timestamp(WEEK),
            80,
        ),
        "apy_fwd_3/hgb": FittedModel(
            "apy_fwd_3",
            "apy",
            "hgb",
            "regression",
            "pooled",
            ["a", "b", "c"],
            {"all": hgb},
            pd.Timestamp(WEEK),
            80,
            categorical=["c"],
        ),
        "apy_fwd_3/ewm": FittedModel(
            "apy_fwd_3",
            "apy",
            "ewm",
            "regression",
            "pooled",
            [],
            {"all": EWMYieldPredictor(halflife="3d").fit(X)},
            pd.Timestamp(WEEK),
            80,
        ),
    }
    cv = pd.DataFrame(
        {
            "label": ["apy_fwd_3"],
            "estimator": ["ridge"],
            "metric": ["mae"],
            "model": [0.1],
            "baseline": [0.2],
            "n": [40],
        }
    )
    folds = pd.DataFrame(
        {"label": ["apy_fwd_3"] * 2, "fold": [0, 1], "candidate": ["ridge", "naive"], "score": [0.1, 0.2]}
    )
    selection = {
        "apy_fwd_3": Selection("apy_fwd_3", "ridge", "mae", {"ridge": 0.1, "naive": 0.2}, True, "cv")
    }
    return ModelBundle(pd.Timestamp(WEEK), models, cv, pd.DataFrame(), "note", folds, selection)


def test_bundle_round_trips_with_identical_predictions():
    original = bundle()
    loaded = load_bytes(dump_bytes(original), "x.skops")
    assert loaded.as_of == original.as_of and loaded.cv_note == "note"
    pd.testing.assert_frame_equal(loaded.cv, original.cv)
    X = pd.DataFrame(np.random.default_rng(1).normal(size=(5, 3)), columns=["a", "b", "c"]).assign(
        instrument="p0"
    )
    # the traded model's evidence survives the round trip: production trades what the CV selected
    assert loaded.selection == original.selection and loaded.model_key("apy_fwd_3") == "apy_fwd_3/ridge"
    pd.testing.assert_frame_equal(loaded.folds, original.folds)
    assert loaded.models["apy_fwd_3/hgb"].categorical == ["c"]
    for key in ("apy_fwd_3/ridge", "apy_fwd_3/rf", "apy_fwd_3/hgb"):
        np.testing.assert_array_equal(loaded.models[key].predict(X), original.models[key].predict(X))
    assert isinstance(loaded.models["apy_fwd_3/ewm"].estimators["all"], EWMYieldPredictor)


@asset(partitions_def=WEEKS, io_manager_key="models")
def fitted() -> ModelBundle:
    return bundle()


@asset(partitions_def=WEEKS, ins={"fitted": AssetIn(key=AssetKey("fitted"), input_manager_key="models")})
def consumer(fitted) -> int:
    return len(fitted[WEEK].models)  # partitioned inputs load as {partition_key: bundle}


def _plant(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize(
    "kind",
    ["crafted_pickle", "joblib_style_pickle", "random_bytes", "untrusted_skops", "truncated_skops", "empty"],
)
def test_planted_file_is_refused_naming_it_and_nothing_runs(tmp_path: Path, kind: str):
    marker = tmp_path / "pwned"
    io = ModelIOManager(root=str(tmp_path / "lake"))
    target = Path(io.partition_path(["fitted"], WEEK).path)
    data = {
        "crafted_pickle": lambda: pickle.dumps(_Payload(str(marker))),
        "joblib_style_pickle": lambda: pickle.dumps({"bundle": _Payload(str(marker))}, protocol=2),
        "random_bytes": lambda: np.random.default_rng(0).bytes(4096),
        "untrusted_skops": lambda: sio.dumps({"format": "midfreq.ModelBundle/1", "x": _Payload(str(marker))}),
        "truncated_skops": lambda: dump_bytes(bundle())[:500],
        "empty": lambda: b"",
    }[kind]()
    _plant(target, data)
    result = materialize(
        [AssetSpec("fitted", partitions_def=WEEKS), consumer],
        partition_key=WEEK,
        resources={"models": io},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error
    text = failure.message + "".join(c.message for c in [failure.cause] if c is not None)
    assert str(target) in text and "ModelFileError" in text
    assert not marker.exists()  # nothing from the lake was executed


def test_written_by_the_asset_and_read_back(tmp_path: Path):
    io = ModelIOManager(root=str(tmp_path / "lake"))
    result = materialize(
        [fitted, consumer], partition_key=WEEK, resources={"models": io, "io_manager": mem_io_manager}
    )
    assert result.success and result.output_for_node("consumer") == len(bundle().models)
    assert (
        Path(io.partition_path(["fitted"], WEEK).path).read_bytes()[:2] == b"PK"
    )  # a zip of JSON, not a pickle


def test_only_bundles_are_stored():
    with pytest.raises(TypeError, match="ModelBundle"):
        dump_bytes({"anything": 1})
    with pytest.raises(ModelFileError, match="not a midfreq.ModelBundle/1 file"):
        load_bytes(sio.dumps({"format": "other"}), "y.skops")


@asset(partitions_def=WEEKS, io_manager_key="models", backfill_policy=BackfillPolicy.single_run())
def fitted_range(context) -> dict:
    return {key: bundle() for key in context.partition_keys}


def test_a_range_run_gives_each_week_its_own_file_and_the_run_size_to_the_last(tmp_path: Path):
    io = ModelIOManager(root=str(tmp_path / "lake"))
    tags = {
        "dagster/asset_partition_range_start": "2024-07-01",
        "dagster/asset_partition_range_end": "2024-07-22",
    }
    result = materialize([fitted_range], tags=tags, resources={"models": io})
    assert result.success
    events = {
        e.materialization.partition: e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert sorted(events) == ["2024-07-01", "2024-07-08", "2024-07-15", "2024-07-22"]
    for week, meta in events.items():
        assert meta["path"].value == str(
            io.partition_path(["fitted_range"], week)
        )  # its own file, not the first
        assert meta["format"].value == "skops"
        assert ("run_partitions" in meta) == (week == "2024-07-22")  # the run's size on its last week only
    assert events["2024-07-22"]["run_partitions"].value == 4


@asset(
    ins={
        "fitted_range": AssetIn(
            partition_mapping=AllPartitionMapping(),
            metadata={"allow_missing_partitions": True, LAZY: True, NO_TABLES: True},
        )
    }
)
def lazy_reader(fitted_range: Mapping) -> list:
    """Reads one week of the lazily loaded weekly bundles (without CV tables); says which were read."""
    loaded_before = set(_LOADED)
    first = fitted_range["2024-07-08"]
    tables = [len(first.cv), len(first.folds)]
    return [sorted(fitted_range), len(first.models), tables, sorted(set(_LOADED) - loaded_before)]


def test_a_lazy_input_reads_only_the_weeks_used_and_once_per_process_while_unchanged(tmp_path: Path):
    io = ModelIOManager(root=str(tmp_path / "lake"))
    tags = {
        "dagster/asset_partition_range_start": "2024-07-01",
        "dagster/asset_partition_range_end": "2024-07-15",
    }
    assert materialize([fitted_range], tags=tags, resources={"models": io}).success  # 2024-07-22: missing
    _LOADED.clear()
    week = io.partition_path(["fitted_range"], "2024-07-08").path
    result = materialize(
        [fitted_range, lazy_reader],
        selection=[lazy_reader],
        resources={"models": io, "io_manager": mem_io_manager},
    )
    keys, n_models, tables, read = result.output_for_node("lazy_reader")
    assert keys == ["2024-07-01", "2024-07-08", "2024-07-15"] and n_models == len(bundle().models)
    assert read == [(week, False)] and tables == [0, 0]  # only the week used was read, without its tables
    cached = load_cached(io.partition_path(["fitted_range"], "2024-07-08"))  # with them: another entry
    assert len(cached.cv) == len(bundle().cv) > 0 and len(cached.folds) == len(bundle().folds)
    assert load_cached(io.partition_path(["fitted_range"], "2024-07-08")) is cached  # read once
    Path(week).write_bytes(dump_bytes(ModelBundle.empty(pd.Timestamp("2024-07-08"), "refit")))
    again = load_cached(io.partition_path(["fitted_range"], "2024-07-08"))  # rewritten: read again
    assert again is not cached and again.cv_note == "refit"
