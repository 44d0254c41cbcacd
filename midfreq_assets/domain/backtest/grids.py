"""Hyperparameter grids: dotted-key overrides of a vault config, one backtest per point.

``configs/grids/<grid>.yaml``::

    description: cost and buffer sensitivity
    parameters:                         # dotted key -> list of values (a scalar = one value)
      strategy.cost: [0.0005, 0.002]
      strategy.base_buffer: [0.0, 0.05]
      label_map.apy.horizons: [7, 30]   # each value is one point (7 means horizons [7])
      models.apy.ewm_predictor.halflife: [3d, 14d]
      backtest.rebalance_every_days: [1, 7]   # keys under backtest. override BacktestConfig

Keys use the YAML shape of the vault file (``models.<family>.<estimator>.<param>``, not pydantic's
internal ``families``/``estimators``/``params``). Every point gets a stable readable name made of
its values only, keys sorted (``cost-0.0005_halflife-3d``), valid as a Dagster partition key and a file name:
the same point in two grid files is the same partition, and adding a point renames nothing.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midfreq_assets.domain.backtest.engine import BacktestConfig
from midfreq_assets.domain.config.base import ConfigError, config_dir, read_yaml, validate_model
from midfreq_assets.domain.config.vault import VaultConfig

_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
MAX_NAME_LEN = 200


@dataclass(frozen=True)
class GridPoint:
    """One point: its overrides (dotted key -> value, in grid order) and its name."""

    name: str
    overrides: tuple[tuple[str, Any], ...]
    grid: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.overrides)


@dataclass(frozen=True)
class Grid:
    name: str
    path: Path
    parameters: dict[str, list[Any]]
    description: str = ""

    def points(self) -> list[GridPoint]:
        """Cartesian product, in the file's key order."""
        keys = list(self.parameters)
        shorts = short_names(keys)
        out = []
        for values in itertools.product(*(self.parameters[k] for k in keys)):
            overrides = tuple(zip(keys, values, strict=True))
            name = point_name(
                sorted((shorts[k], v) for k, v in overrides)
            )  # key order in the file is irrelevant
            out.append(GridPoint(name, overrides, self.name))
        dup = {p.name for p in out if sum(q.name == p.name for q in out) > 1}
        if dup:
            raise ConfigError(
                f"{self.path}: grid points with the same name {sorted(dup)[:3]} (duplicate values?)"
            )
        return out


def grids_dir() -> Path:
    return config_dir() / "grids"


def load_grid(path: Path | str) -> Grid:
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("parameters"), dict) or not raw["parameters"]:
        raise ConfigError(
            f"{path}: expected a mapping with a non-empty `parameters:` mapping (dotted key -> values)"
        )
    unknown = sorted(set(raw) - {"parameters", "description"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level key(s) {unknown} (typo?); expected parameters, description"
        )
    params: dict[str, list[Any]] = {}
    for key, values in raw["parameters"].items():
        vals = values if isinstance(values, list) else [values]
        if not vals:
            raise ConfigError(f"{path}: parameters.{key}: empty list of values")
        params[str(key)] = vals
    return Grid(path.stem, path, params, str(raw.get("description") or ""))


def load_grids(directory: Path | str | None = None) -> dict[str, Grid]:
    """Every ``*.yaml`` grid, keyed by file stem (sorted: stable partitions)."""
    directory = Path(directory) if directory else grids_dir()
    return {g.name: g for g in (load_grid(p) for p in sorted(directory.glob("*.yaml")))}


def grid_file_names(directory: Path | str | None = None) -> list[str]:
    directory = Path(directory) if directory else grids_dir()
    return sorted(p.stem for p in directory.glob("*.yaml"))


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def short_names(keys: list[str]) -> dict[str, str]:
    """Shortest unique dotted suffix per key (``strategy.cost`` -> ``cost``)."""
    out: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            cand = "_".join(parts[-n:])
            if sum(k.split(".")[-n:] == parts[-n:] for k in keys) == 1 or n == len(parts):
                out[key] = cand
                break
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "+".join(_fmt(v) for v in value)
    if value is None:
        return "none"
    return str(value)


def point_name(pairs: list[tuple[str, Any]]) -> str:
    """``name-value`` pairs joined by ``_``; only ``[A-Za-z0-9_.+-]`` (partition keys, file names)."""
    name = "_".join(f"{_NAME_SAFE.sub('-', k)}-{_NAME_SAFE.sub('-', _fmt(v))}" for k, v in pairs)
    name = name.replace("...", "-")
    if len(name) > MAX_NAME_LEN:
        raise ConfigError(f"grid point name longer than {MAX_NAME_LEN} characters: {name[:60]}...")
    return name


# --------------------------------------------------------------------------------------------
# Applying overrides
# --------------------------------------------------------------------------------------------


def vault_yaml_shape(vault: VaultConfig) -> dict[str, Any]:
    """The vault as the nested dict its YAML file would be (the shape dotted keys address)."""
    d = vault.model_dump(mode="python")
    d["feature_map"] = d["feature_map"]["columns"]
    d["label_map"] = d["label_map"]["families"]
    models = d["models"]
    fams = {}
    for fam, fm in models.pop("families").items():
        entry: dict[str, Any] = {"primary": fm["primary"]} if fm["primary"] else {}
        for est, spec in fm["estimators"].items():
            params = spec.pop("params")
            entry[est] = {**spec, **params}
        fams[fam] = entry
    d["models"] = {**models, **fams}
    return d


def _set_dotted(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: {key}: {'.'.join(parts[:i])} is a value, not a section")
        last = i == len(parts) - 1
        free_form = "estimator" in node or parts[i - 1].endswith("_caps") if i else False
        if part not in node and not (last and free_form):
            valid = ", ".join(sorted(map(str, node))) or "(none)"
            raise ConfigError(
                f"{source}: unknown key {here!r} in grid parameter {key!r} (typo?); valid here: {valid}"
            )
        if last:
            node[part] = copy.deepcopy(value)
        else:
            node = node[part]


def apply_overrides(
    vault: VaultConfig,
    overrides: dict[str, Any] | tuple[tuple[str, Any], ...],
    backtest: BacktestConfig | None = None,
    *,
    source: str = "grid",
) -> tuple[VaultConfig, BacktestConfig]:
    """New (vault, backtest) configs with the overrides applied and validated.

    ``source`` (the grid file) is named in every error, with the dotted key."""
    items = list(overrides.items()) if isinstance(overrides, dict) else list(overrides)
    vdata = vault_yaml_shape(vault)
    bdata = (backtest or vault.backtest).model_dump(mode="python")
    for key, value in items:
        if key.startswith("backtest."):
            _set_dotted(bdata, key.removeprefix("backtest."), value, source)
        else:
            _set_dotted(vdata, key, value, source)
    label = f"{source} (overrides {', '.join(k for k, _ in items)})"
    return validate_model(VaultConfig, vdata, label), validate_model(BacktestConfig, bdata, label)


def validate_grid(grid: Grid, vault: VaultConfig) -> list[GridPoint]:
    """All points, each applied once to ``vault`` (fails early on a typo'd key or a bad value)."""
    points = grid.points()
    for p in points:
        apply_overrides(vault, p.overrides, source=str(grid.path))
    return points


def grid_point_names(vault: VaultConfig, directory: Path | str | None = None) -> list[str]:
    """Every point of every grid file, validated against ``vault`` (deduplicated, sorted)."""
    return sorted({p.name for g in load_grids(directory).values() for p in validate_grid(g, vault)})


def find_point(name: str, directory: Path | str | None = None) -> GridPoint:
    """The point called ``name`` in any grid file (partition key -> overrides)."""
    for grid in load_grids(directory).values():
        for p in grid.points():
            if p.name == name:
                return p
    raise KeyError(f"no grid point named {name!r} in {directory or grids_dir()}")


def find_points(names: list[str], directory: Path | str | None = None) -> list[GridPoint]:
    """:func:`find_point` of many names, reading the grid files once (a run of many points)."""
    known: dict[str, GridPoint] = {}
    for grid in load_grids(directory).values():
        for p in grid.points():
            known.setdefault(p.name, p)
    missing = [n for n in names if n not in known]
    if missing:
        raise KeyError(
            f"no grid point named {missing[0]!r} in {directory or grids_dir()}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    return [known[n] for n in names]


# --------------------------------------------------------------------------------------------
# Running points
# --------------------------------------------------------------------------------------------


def point_result(
    panel: Any,
    vault: VaultConfig,
    point: GridPoint,
    backtest: BacktestConfig | None = None,
    runner: PointRunner | None = None,
) -> tuple[Any, BacktestConfig]:
    """One grid point's backtest (overrides -> causal predictions -> backtest) and its config;
    the result keeps the per-pool predicted and realized APYs the stored frame drops.
    ``runner``: a :class:`PointRunner` over the same panel and vault, sharing the panel's inputs and
    predictions with the other points it runs (the same result)."""
    import pandas as pd

    from midfreq_assets.domain.backtest import engine as bt

    v, cfg = apply_overrides(vault, point.overrides, backtest, source=point.grid)
    if panel.empty:  # no pool ever in the universe: the vault holds cash
        return bt.BacktestResult(
            point.name,
            pd.DataFrame(columns=["date", "date_end", "wealth"]),
            pd.DataFrame(columns=["date", "pool", "weight"]),
            cfg.initial_wealth,
        ), cfg
    runner = runner or PointRunner(panel, vault, {})
    inputs, preds = runner.inputs(v, cfg), runner.predictions(v, cfg)
    return bt.run_backtest(inputs, preds, v.strategy, cfg, name=point.name), cfg


def run_point(
    panel: Any,
    vault: VaultConfig,
    point: GridPoint,
    backtest: BacktestConfig | None = None,
    runner: PointRunner | None = None,
) -> tuple[Any, dict[str, float]]:
    """One grid point: overrides -> causal predictions -> backtest -> metrics.

    ``panel`` is a :func:`backtest.vault_panel` frame. Returns (stored frame, metrics). An empty panel
    (no pool ever in the universe) gives an empty frame and NaN metrics: the vault holds cash.
    ``runner``: shares inputs and predictions across the points of a run (:func:`point_result`)."""
    import json

    from midfreq_assets.domain.backtest import engine as bt
    from midfreq_assets.domain.backtest.metrics import backtest_metrics

    result, cfg = point_result(panel, vault, point, backtest, runner)
    metrics = backtest_metrics(result, cfg.base_rate)
    frame = bt.result_frame(result)
    frame.insert(0, "point", point.name)
    frame["params"] = json.dumps({k: v for k, v in point.overrides}, default=str)
    frame["initial_wealth"] = cfg.initial_wealth
    frame["base_rate"] = cfg.base_rate
    return frame, metrics


def run_points(
    panel: Any, vault: VaultConfig, points: list[GridPoint], runner: PointRunner
) -> list[tuple[Any, dict[str, float]]]:
    """:func:`run_point` of each of ``points`` (in their order), computed grouped by research settings
    (:meth:`PointRunner.research_key`): the points that share a series of weekly models follow each other,
    so each series is fitted (or read from the stored models) once per run however many there are (the
    prediction cache keeps the last :data:`~midfreq_assets.domain.backtest.engine.PREDICTION_CACHE_SIZE`)."""
    order = sorted(range(len(points)), key=lambda i: runner.research_key(points[i]))
    done = {i: run_point(panel, vault, points[i], runner=runner) for i in order}
    return [done[i] for i in range(len(points))]


class PointRunner:
    """Trades a grid point's policy over a window from given holdings: the walk-forward's
    re-simulation through the same engine as ``run_point``. Each point's configuration, inputs and
    predictions are built once (predictions through the engine's per-process cache: the points that
    share research settings share one prediction panel, their weekly refits fitted once).

    ``stored_models``: the vault's own weekly bundles as ``fitted_models`` stored them (partition key ->
    bundle). A point whose research settings are the vault's own
    (:func:`~midfreq_assets.domain.backtest.engine.research_settings`) is predicted with them instead
    of refitting them, when they are the refits the replay would fit
    (:func:`~midfreq_assets.domain.backtest.engine.stored_refits`); otherwise it replays, and
    ``stored_note`` says why."""

    def __init__(
        self,
        panel: Any,
        vault: VaultConfig,
        points: dict[str, GridPoint],
        backtest: BacktestConfig | None = None,
        stored_models: Mapping[str, Any] | None = None,
    ) -> None:
        self.panel, self.vault, self.points, self.backtest = panel, vault, points, backtest
        self.stored_models = stored_models or None
        self.stored_note = "" if stored_models else "no stored fitted_models"
        self.on_stored = 0  # predictions served from the stored models
        self.replayed: set[str] = set()  # research settings (and estimator, label) refitted here
        self._prepared: dict[str, tuple[Any, ...]] = {}
        self._inputs: dict[tuple[Any, ...], Any] = {}
        self._digest: str | None = None
        self._own: str | None = None

    def inputs(self, v: VaultConfig, cfg: BacktestConfig) -> Any:
        """The panel's :class:`~midfreq_assets.domain.backtest.engine.BacktestInputs` for a point's vault
        ``v``: built once per earned column and reference asset (what they depend on; never on a
        strategy or model override), shared by every point (they are never modified)."""
        from midfreq_assets.domain.backtest import engine as bt

        key = (v.name, v.reference_asset, v.min_pool_tvl_usd, cfg.apy_column or v.backtest.apy_column)
        if key not in self._inputs:
            self._inputs[key] = bt.inputs_from_panel(self.panel, v, cfg.apy_column)
        return self._inputs[key]

    def predictions(self, v: VaultConfig, cfg: BacktestConfig) -> Any:
        """The point's causal predictions (the engine's per-process cache, the panel hashed once)."""
        from midfreq_assets.domain.backtest import engine as bt

        if self._digest is None:
            self._digest = bt.history_digest(self.panel)
        settings = bt.research_settings(v)
        if self.stored_models is not None:
            self._own = self._own or bt.research_settings(self.vault)
            if settings == self._own:
                try:
                    preds = bt.cached_prediction_panel(
                        self.panel,
                        v,
                        estimator=cfg.estimator,
                        label=cfg.label,
                        digest_of_history=self._digest,
                        stored=self.stored_models,
                    )
                    self.on_stored += 1
                    return preds
                except bt.StoredModelsMismatch as exc:  # not production's refits of this panel: replay
                    self.stored_note = f"stored fitted_models not used: {exc}"
                    self.stored_models = None
        self.replayed.add(f"{settings}|{cfg.estimator}|{cfg.label}")
        return bt.cached_prediction_panel(
            self.panel, v, estimator=cfg.estimator, label=cfg.label, digest_of_history=self._digest
        )

    def research_key(self, point: GridPoint) -> str:
        """What the point's predictions depend on besides the panel: its research settings, and the
        estimator and label it trades."""
        from midfreq_assets.domain.backtest import engine as bt

        v, cfg = apply_overrides(self.vault, point.overrides, self.backtest, source=point.grid)
        return f"{bt.research_settings(v)}|{cfg.estimator}|{cfg.label}"

    def prepared(self, name: str) -> tuple[Any, ...]:
        """(vault, backtest config, inputs, predictions) of point ``name``."""
        if name not in self._prepared:
            point = self.points[name]
            v, cfg = apply_overrides(self.vault, point.overrides, self.backtest, source=point.grid)
            self._prepared[name] = (v, cfg, self.inputs(v, cfg), self.predictions(v, cfg))
        return self._prepared[name]

    def __call__(self, name: str, start: Any, end: Any, state: Any) -> Any:
        from midfreq_assets.domain.backtest import engine as bt

        v, cfg, inputs, preds = self.prepared(name)
        own_first = inputs.window(cfg.start, cfg.end).dates[0]
        offset = int(inputs.dates.searchsorted(start) - inputs.dates.searchsorted(own_first))
        window = cfg.model_copy(update={"start": start.date(), "end": end.date()})
        return bt.run_backtest(
            inputs, preds, v.strategy, window, name=name, start_state=state, step_offset=offset
        )
