"""Model IO manager: fitted model bundles as skops files, one per asset partition, atomic.

``{root}/{asset/key/path}/{partition_key}.skops`` (``{root}/{asset/key/path}.skops`` when
unpartitioned). An output covering several partitions (single-run backfill) must be a dict
``{partition_key: ModelBundle}``; loading a partitioned input always returns such a dict (one entry or
many: callers never special-case a single partition). Missing partitions are skipped when the input's metadata carries
``{"allow_missing_partitions": True}``; with ``{"lazy_load": True}`` the dict is a :class:`LazyBundles`,
reading each file when it is first used (and once per process while it is unchanged), and with
``{"without_cv_tables": True}`` too, without the bundles' CV tables (what predicting needs).

Nothing read from the lake is executed. A joblib/pickle file runs whatever its ``__reduce__`` says
when it is loaded, so a file dropped into the lake would run code inside ``predictions``. skops
files are a zip of JSON describing the objects, rebuilt without unpickling; loading accepts only
skops' default-trusted types (builtins, numpy, scikit-learn estimators) plus :data:`TRUSTED_TYPES`,
and anything else (random bytes, a pickle, a skops file naming another type) fails with
:class:`ModelFileError` naming the file. A :class:`ModelBundle` is stored as plain data (its frames
as Parquet bytes, timestamps as ISO strings) around the fitted estimators.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import skops.io as sio
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext
from pydantic import Field
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.tree._tree import Tree
from upath import UPath

from midfreq_assets.domain.research.bundles import ModelBundle
from midfreq_assets.domain.research.models import (
    EWMYieldPredictor,
    FittedModel,
    LastValueBaseline,
    ZeroBaseline,
)
from midfreq_assets.domain.research.selection import Selection
from midfreq_resources.dagster_compat import add_partitions_metadata
from midfreq_resources.io.lake import frame_to_parquet_bytes, lake_root, write_bytes_atomic
from midfreq_resources.settings import DATA_LAKE_ENV, DEFAULT_DATA_LAKE, env_or

SUFFIX = ".skops"
#: Input metadata: load the partitions on first access (:class:`LazyBundles`), not all up front.
LAZY = "lazy_load"
#: Input metadata: the bundles without their CV tables (what predicting needs; with ``lazy_load``).
NO_TABLES = "without_cv_tables"
FORMAT = "midfreq.ModelBundle/1"


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


#: Types a model file may hold beyond skops' defaults: midfreq's own estimators and the tree
#: structures inside scikit-learn's forests and gradient boosting. Nothing else is rebuilt.
TRUSTED_TYPES: tuple[str, ...] = tuple(
    _type_name(c) for c in (EWMYieldPredictor, LastValueBaseline, ZeroBaseline, Tree, TreePredictor)
)


class ModelFileError(ValueError):
    """A model file that is not a midfreq model bundle in skops format; the message names it."""


def _frame_bytes(frame: pd.DataFrame) -> bytes:
    return frame_to_parquet_bytes(frame.reset_index(drop=True)) if len(frame.columns) else b""


def _frame(data: bytes) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(data)).to_pandas() if data else pd.DataFrame()


def _stamp(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None else pd.Timestamp(ts).isoformat()


def _model_state(m: FittedModel) -> dict[str, Any]:
    return {
        "label": m.label,
        "family": m.family,
        "name": m.name,
        "task": m.task,
        "mode": m.mode,
        "feature_columns": list(m.feature_columns),
        "estimators": dict(m.estimators),
        "as_of": _stamp(m.as_of),
        "n_train": int(m.n_train),
        "classes": m.classes,
        "class_names": m.class_names,
        "meta": dict(m.meta),
        "categorical": list(m.categorical),
    }


def _selection_state(sel: Selection) -> dict[str, Any]:
    return {
        "label": sel.label,
        "chosen": sel.chosen,
        "metric": sel.metric,
        "scores": {k: float(v) for k, v in sel.scores.items()},
        "beats_naive": bool(sel.beats_naive),
        "note": sel.note,
    }


def bundle_state(bundle: ModelBundle) -> dict[str, Any]:
    """A bundle as plain data skops can store without pickling."""
    return {
        "format": FORMAT,
        "as_of": _stamp(bundle.as_of),
        "cv_note": bundle.cv_note,
        "cv": _frame_bytes(bundle.cv),
        "importances": _frame_bytes(bundle.importances),
        "folds": _frame_bytes(bundle.folds),
        "selection": {k: _selection_state(v) for k, v in bundle.selection.items()},
        "models": {k: _model_state(m) for k, m in bundle.models.items()},
    }


def bundle_from_state(state: Any, source: str, tables: bool = True) -> ModelBundle:
    """The bundle ``state`` holds; ``tables=False``: without its CV tables (``cv``, ``folds``,
    ``importances`` left empty: a third of the reading, not needed to predict)."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelFileError(f"{source}: not a {FORMAT} file (got {type(state).__name__})")
    models = {}
    for key, m in state["models"].items():
        m = dict(m)
        m["as_of"] = pd.Timestamp(m["as_of"]) if m["as_of"] is not None else None
        models[key] = FittedModel(**m)
    selection = {k: Selection(**v) for k, v in state.get("selection", {}).items()}
    return ModelBundle(
        as_of=pd.Timestamp(state["as_of"]),
        models=models,
        cv=_frame(state["cv"]) if tables else pd.DataFrame(),
        importances=_frame(state["importances"]) if tables else pd.DataFrame(),
        cv_note=state["cv_note"],
        folds=_frame(state.get("folds", b"")) if tables else pd.DataFrame(),
        selection=selection,
    )


def dump_bytes(bundle: ModelBundle) -> bytes:
    if not isinstance(bundle, ModelBundle):
        raise TypeError(f"ModelIOManager stores ModelBundle objects, got {type(bundle).__name__}")
    return sio.dumps(bundle_state(bundle))


def load_bytes(data: bytes, source: str, tables: bool = True) -> ModelBundle:
    """A bundle from skops bytes; refuses (without executing anything) whatever is not one.
    ``tables``: see :func:`bundle_from_state`."""
    try:
        untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(
            f"{source}: not a skops model file ({len(data):,} bytes; {type(exc).__name__}: "
            f"{exc}); nothing was loaded. Re-materialize this partition."
        ) from None
    if untrusted:
        raise ModelFileError(
            f"{source}: holds types outside the trusted list {untrusted}; refused, nothing "
            "was loaded (a model file from elsewhere, or a new estimator: add it to "
            "midfreq_resources.io.model_io_manager.TRUSTED_TYPES)"
        )
    try:
        state = sio.loads(data, trusted=[*TRUSTED_TYPES])
    except Exception as exc:  # skops raises many kinds on a damaged file; none of them runs code
        raise ModelFileError(f"{source}: damaged skops model file ({type(exc).__name__}: {exc})") from None
    return bundle_from_state(state, source, tables)


def load_path(path: UPath, tables: bool = True) -> ModelBundle:
    with path.open("rb") as fh:
        return load_bytes(fh.read(), str(path), tables)


#: Bundles this process loaded from local files: (path, tables) -> ((mtime_ns, size), bundle). A worker
#: that runs many runs reading the same weeks (grid points) reads each file once; a rewritten file is
#: read again.
_LOADED: dict[tuple[str, bool], tuple[tuple[int, int], ModelBundle]] = {}
LOADED_CACHE_SIZE = 4096


def load_cached(path: UPath, tables: bool = True) -> ModelBundle:
    """:func:`load_path`, kept per process for a local file while it is unchanged (bundles are never
    modified by their readers)."""
    if path.protocol not in ("", "file"):
        return load_path(path, tables)
    st = os.stat(path.path)
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _LOADED.get((path.path, tables))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    bundle = load_path(path, tables)
    _LOADED[(path.path, tables)] = (stamp, bundle)
    while len(_LOADED) > LOADED_CACHE_SIZE:
        _LOADED.pop(next(iter(_LOADED)))
    return bundle


class LazyBundles(Mapping[str, ModelBundle]):
    """Stored bundles by partition key, each read on first access (:func:`load_cached`): an input that
    needs them only sometimes (``backtest_runs``: points with the vault's own research) costs nothing
    otherwise. ``tables=False``: without their CV tables (:func:`bundle_from_state`)."""

    def __init__(self, paths: Mapping[str, UPath], tables: bool = True) -> None:
        self._paths, self._tables = dict(paths), tables

    def __getitem__(self, key: str) -> ModelBundle:
        return load_cached(self._paths[key], self._tables)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


class ModelIOManager(ConfigurableIOManager):
    """Stores fitted :class:`ModelBundle` objects as skops files under ``root`` (never pickle)."""

    root: str = Field(
        default="",
        description="lake root: a folder or an fsspec URL (s3://...); "
        "empty: $MIDFREQ_DATA_LAKE at run time, else data_lake/",
    )

    @property
    def lake(self) -> UPath:
        return lake_root(self.root or env_or(DATA_LAKE_ENV, DEFAULT_DATA_LAKE))

    def partition_path(self, asset_path: list[str], partition_key: str | None) -> UPath:
        base = self.lake.joinpath(*asset_path)
        if partition_key is None:
            return base.with_name(base.name + SUFFIX)
        return base / f"{partition_key}{SUFFIX}"

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            return
        path = list(context.asset_key.path)
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
            if len(keys) == 1:
                parts = {keys[0]: obj}
            else:
                if not isinstance(obj, dict) or set(obj) - set(keys):
                    raise TypeError(
                        f"{context.asset_key.to_user_string()}: an output covering {len(keys)} "
                        "partitions must be a dict {partition_key: object} of those partitions"
                    )
                parts = dict(obj)
        else:
            parts = {None: obj}
        for key, value in parts.items():
            write_bytes_atomic(self.partition_path(path, key), dump_bytes(value))
        first = next(iter(parts), None)
        if len(parts) > 1:  # each partition names its own file; the run's size on its last partition only
            own: dict[str, dict[str, Any]] = {
                key: {"path": MetadataValue.path(str(self.partition_path(path, key))), "format": "skops"}
                for key in parts
            }
            own[list(parts)[-1]]["run_partitions"] = len(parts)
            add_partitions_metadata(context, context.asset_key, own)
            return
        context.add_output_metadata(
            {"path": MetadataValue.path(str(self.partition_path(path, first))), "format": "skops"}
        )

    def load_input(self, context: InputContext) -> Any:
        path = list(context.asset_key.path)
        if not context.has_asset_partitions:
            return load_path(self.partition_path(path, None))
        keys = list(context.asset_partition_keys)
        found = {k: self.partition_path(path, k) for k in keys}
        missing = [k for k, p in found.items() if not p.exists()]
        meta = context.definition_metadata or {}
        if missing and not meta.get("allow_missing_partitions", False):
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()}: partitions not materialized: "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}"
            )
        if meta.get(LAZY, False):
            return LazyBundles({k: p for k, p in found.items() if k not in missing}, not meta.get(NO_TABLES))
        return {k: load_path(p) for k, p in found.items() if k not in missing}
