"""Grids: cartesian points, stable names, dotted overrides, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from midfreq_assets.domain.backtest.engine import prediction_panel
from midfreq_assets.domain.backtest.grids import (
    apply_overrides,
    find_point,
    find_points,
    load_grid,
    load_grids,
    validate_grid,
)
from midfreq_assets.domain.config.base import ConfigError
from midfreq_assets.domain.config.vault import load_vault_config

VAULT = load_vault_config("configs/vaults/usd_lending.yaml")


def write(path, params):
    path.write_text(yaml.safe_dump({"parameters": params}))
    return path


def test_points_names_and_stability(tmp_path):
    g = load_grid(
        write(
            tmp_path / "g.yaml",
            {"strategy.cost": [0.0005, 0.001], "models.apy.ewm_predictor.halflife": ["3d", "14d"]},
        )
    )
    pts = validate_grid(g, VAULT)
    assert len(pts) == 4 and pts[0].name == "cost-0.0005_halflife-3d"
    assert all(re.fullmatch(r"[A-Za-z0-9_.+-]+", p.name) and "..." not in p.name for p in pts)
    g2 = load_grid(
        write(
            tmp_path / "g.yaml",
            {"strategy.cost": [0.0005, 0.001, 0.002], "models.apy.ewm_predictor.halflife": ["3d", "14d"]},
        )
    )
    assert {p.name for p in pts} < {p.name for p in g2.points()}  # adding a value renames nothing
    assert find_point("cost-0.002_halflife-14d", tmp_path).params["strategy.cost"] == 0.002


def test_overrides_apply():
    v, b = apply_overrides(
        VAULT,
        {
            "strategy.base_buffer": 0.1,
            "label_map.apy.horizons": 10,
            "models.apy.ewm_predictor.halflife": "3d",
            "backtest.rebalance_every_days": 7,
        },
    )
    assert v.strategy.base_buffer == 0.1 and v.label_map.families["apy"].horizons == [10]
    assert v.models.families["apy"].estimators["ewm_predictor"].params["halflife"] == "3d"
    assert b.rebalance_every_days == 7 and VAULT.strategy.base_buffer == 0.02  # original untouched


def test_typo_names_grid_file_and_key(tmp_path):
    g = load_grid(write(tmp_path / "bad.yaml", {"strategy.costt": [0.1]}))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*strategy\.costt.*valid here: .*cost"):
        validate_grid(g, VAULT)
    g = load_grid(write(tmp_path / "bad2.yaml", {"strategy.cost": [-1.0]}))
    with pytest.raises(ConfigError, match=r"bad2\.yaml.*strategy\.cost"):
        validate_grid(g, VAULT)


def test_shipped_grids_valid():
    grids = load_grids()
    assert {"default", "cost_sensitivity"} <= set(grids)
    default = validate_grid(grids["default"], VAULT)
    assert len(default) >= 16  # PBO (CSCV) means something on the demo's grid
    assert (
        len({p.params.get("models.apy.ewm_predictor.halflife") for p in default}) <= 2
    )  # research stays cheap
    assert len(validate_grid(grids["cost_sensitivity"], VAULT)) == 64


def test_grid_keys_change_predictions(synthetic_history):
    hist = synthetic_history(days=150)
    a = prediction_panel(
        hist,
        apply_overrides(VAULT, {"models.apy.ewm_predictor.halflife": "3d"})[0],
        estimator="ewm_predictor",
    )
    b = prediction_panel(
        hist,
        apply_overrides(VAULT, {"models.apy.ewm_predictor.halflife": "14d"})[0],
        estimator="ewm_predictor",
    )
    assert not a.equals(b)
    r7 = prediction_panel(hist, apply_overrides(VAULT, {"label_map.apy.horizons": 7})[0], estimator="ridge")
    r30 = prediction_panel(hist, apply_overrides(VAULT, {"label_map.apy.horizons": 30})[0], estimator="ridge")
    assert r7.notna().sum().sum() > 0 and not r7.equals(r30)


def test_find_points_reads_the_grid_files_once_and_names_what_is_missing(tmp_path):
    write(tmp_path / "g.yaml", {"strategy.cost": [0.0005, 0.001]})
    names = [p.name for p in load_grid(tmp_path / "g.yaml").points()]
    assert [p.name for p in find_points(names[::-1], tmp_path)] == names[::-1]
    with pytest.raises(KeyError, match="nope"):
        find_points([names[0], "nope"], tmp_path)


def test_a_run_of_points_sharing_inputs_and_predictions_gives_each_point_its_plain_result(synthetic_history):
    """backtest_runs shares one PointRunner (inputs, predictions, the panel's hash) over its points:
    every point, in any order and repeated, equals the point run alone."""
    import pandas as pd

    from midfreq_assets.domain.backtest import engine as bt
    from midfreq_assets.domain.backtest.grids import Grid, PointRunner, run_point

    panel = bt.vault_panel(synthetic_history(days=90, pools=6, seed=5), None, VAULT)
    grid = Grid(
        "g",
        Path("g.yaml"),
        {
            "strategy.base_buffer": [0.0, 0.1],
            "strategy.concentration_limit": [0.3, 1.0],
            "models.apy.ewm_predictor.halflife": ["3d", "14d"],
        },
    )
    points = grid.points()
    runner = PointRunner(panel, VAULT, {p.name: p for p in points})
    shared = [run_point(panel, VAULT, p, runner=runner) for p in [*points, *points[::-1]]]
    for i, p in enumerate(points):
        alone, alone_metrics = run_point(panel, VAULT, p)
        for frame, metrics in (shared[i], shared[-1 - i]):
            pd.testing.assert_frame_equal(frame, alone)
            assert metrics == pytest.approx(alone_metrics, nan_ok=True)
    assert len({float(f["wealth"].iloc[-1]) for f, _ in shared}) > 1  # the points differ


def _production_bundles(panel, vault):
    """The weekly bundles as ``fitted_models`` fits them (every label and estimator, CV of every
    label): the features of the pools in the universe that day, on production's calendar."""
    import pandas as pd

    from midfreq_assets.domain.research import engine as research
    from midfreq_assets.domain.research.bundles import weekly_bundles
    from midfreq_assets.domain.research.plan import first_fit_day, refit_as_of, selected_labels

    hist = panel.assign(date=pd.to_datetime(panel["date"]).dt.normalize()).rename(
        columns={"pool": "instrument"}
    )
    feats = research.build_features(hist, vault.feature_map)
    member = pd.MultiIndex.from_frame(hist.loc[hist["eligible"].astype(bool), ["date", "instrument"]])
    train = feats[pd.MultiIndex.from_arrays([feats["date"], feats["instrument"]]).isin(member)]
    first = first_fit_day(vault)
    weeks = pd.date_range(pd.Timestamp(first) - pd.Timedelta(days=6), hist["date"].max(), freq="W-MON")
    as_ofs = {str(w.date()): refit_as_of(w.date(), first, vault.models.refit_every_weeks) for w in weeks}
    labels = research.build_labels(hist, vault.label_map)
    cv = selected_labels(vault.label_map, vault.models)
    return weekly_bundles(as_ofs, train.reset_index(drop=True), labels, vault.models, vault.label_map, cv)


def test_points_with_the_vaults_research_use_the_stored_refits_and_equal_the_replay(synthetic_history):
    """PointRunner(stored_models=...): a point whose research settings are the vault's own is predicted
    with production's stored weekly bundles (no refit) and its frame is the replay's, exactly; a point
    with another halflife, or stored bundles that are not the replay's refits (a week missing, a model
    trained on other rows), replays."""
    import dataclasses

    import pandas as pd

    from midfreq_assets.domain.backtest import engine as bt
    from midfreq_assets.domain.backtest.grids import Grid, PointRunner, run_point

    panel = bt.vault_panel(synthetic_history(days=150, pools=6, seed=3), None, VAULT)
    stored = _production_bundles(panel, VAULT)
    grid = Grid(
        "g",
        Path("g.yaml"),
        {
            "strategy.base_buffer": [0.0, 0.1],
            "models.apy.ewm_predictor.halflife": ["7d", "3d"],  # 7d: the vault's own
            "backtest.estimator": [None, "ridge"],
        },
    )
    points = grid.points()
    runner = PointRunner(panel, VAULT, {p.name: p for p in points}, stored_models=stored)
    reused = {p.name: run_point(panel, VAULT, p, runner=runner)[0] for p in points}
    assert runner.on_stored == 4 and len(runner.replayed) == 2 and runner.stored_note == ""
    bt._PREDICTIONS.clear()
    for p in points:
        replayed, _ = run_point(panel, VAULT, p)
        assert replayed["invested"].max() > 0.5
        pd.testing.assert_frame_equal(reused[p.name], replayed, check_exact=True)

    own = points[0]
    assert "halflife-7d" in own.name
    v, _ = apply_overrides(VAULT, own.overrides)
    fewer = {k: b for k, b in stored.items() if k != sorted(stored)[3]}  # a week missing
    week = [k for k, b in stored.items() if b.model_key("apy_fwd_7")][2]
    bad = stored[week]
    model = bad.models[bad.model_key("apy_fwd_7")]
    key = f"{model.label}/{model.name}"
    other = dataclasses.replace(
        bad, models={**bad.models, key: dataclasses.replace(model, n_train=model.n_train - 1)}
    )
    for wrong, reason in ((fewer, "no stored model bundle"), ({**stored, week: other}, "trained on")):
        with pytest.raises(bt.StoredModelsMismatch, match=reason):
            bt.prediction_panel(panel, v, stored=wrong)
        fallback = PointRunner(panel, VAULT, {own.name: own}, stored_models=wrong)
        frame, _ = run_point(panel, VAULT, own, runner=fallback)
        assert fallback.on_stored == 0 and reason in fallback.stored_note
        pd.testing.assert_frame_equal(frame, reused[own.name], check_exact=True)
    # features reading pool_metadata (categories, cross sections): fitted_models computed them from it as
    # known each day, the backtest from its panel; not the same models, so it refits
    fmap = v.feature_map.model_copy(update={"categories": ["project"]})
    with pytest.raises(bt.StoredModelsMismatch, match="pool_metadata"):
        bt.prediction_panel(
            panel.assign(project="aave-v3"), v.model_copy(update={"feature_map": fmap}), stored=stored
        )


def test_a_run_groups_its_points_by_research_so_each_model_series_is_fitted_once(
    synthetic_history, monkeypatch
):
    """run_points: points of three research settings, interleaved, with a prediction cache of one: each
    series of weekly models is fitted once, and every point gets its own (plain) result, in order."""
    import pandas as pd

    from midfreq_assets.domain.backtest import engine as bt
    from midfreq_assets.domain.backtest.grids import Grid, PointRunner, run_point, run_points

    panel = bt.vault_panel(synthetic_history(days=90, pools=4, seed=2), None, VAULT)
    points = Grid(
        "g",
        Path("g.yaml"),
        {"strategy.base_buffer": [0.0, 0.1], "models.apy.ewm_predictor.halflife": ["3d", "7d", "14d"]},
    ).points()
    assert [p.params["models.apy.ewm_predictor.halflife"] for p in points[:3]] == ["3d", "7d", "14d"]
    plain = [run_point(panel, VAULT, p)[0] for p in points]
    calls = []
    fit = bt.prediction_panel
    monkeypatch.setattr(bt, "prediction_panel", lambda *a, **k: calls.append(a[1]) or fit(*a, **k))
    monkeypatch.setattr(bt, "PREDICTION_CACHE_SIZE", 1)
    bt._PREDICTIONS.clear()
    got = run_points(panel, VAULT, points, PointRunner(panel, VAULT, {p.name: p for p in points}))
    assert len(calls) == 3  # not 6: the halflives alternate in the points' order
    for (frame, _), alone in zip(got, plain, strict=True):
        pd.testing.assert_frame_equal(frame, alone)
