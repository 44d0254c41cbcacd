"""Feature engine: formulas against direct pandas references, config validation, real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from midfreq_assets.domain.config.vault import VaultConfig, load_vault_config
from midfreq_assets.domain.research.features import FeatureMapConfig, compute_features, required_lookback

ROOT = Path(__file__).resolve().parents[3]


def synthetic_panel(days: int = 200, n: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2024-01-01", periods=days, freq="D")
    rows = []
    for i in range(n):
        apy = 0.05 + 0.01 * rng.standard_normal(days).cumsum() / 10
        rows.append(
            pd.DataFrame(
                {
                    "date": dates,
                    "instrument": f"p{i}",
                    "apy": apy,
                    "tvl_usd": np.exp(15 + rng.normal(0, 0.05, days).cumsum()),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def one(df: pd.DataFrame, inst: str, col: str) -> pd.Series:
    return df[df["instrument"] == inst].set_index("date")[col]


def zscore(s: pd.Series, w: int) -> pd.Series:
    r = s.rolling(w, min_periods=max(2, w // 2))
    return (s - r.mean()) / r.std()


def test_ewma_zscore_cross_and_ladders_match_pandas_reference():
    panel = synthetic_panel()
    fm = FeatureMapConfig.model_validate(
        {
            "apy": {
                "expansions": {
                    "level": True,
                    "ewma": {"windows": [3, 10]},
                    "cross_ewma": True,
                    "min": [5, 20],
                    "max": [5],
                }
            }
        }
    )
    out = compute_features(panel, fm)
    x = one(panel, "p2", "apy")
    e3, e10 = x.ewm(halflife=3, min_periods=3).mean(), x.ewm(halflife=10, min_periods=10).mean()
    pd.testing.assert_series_equal(one(out, "p2", "apy"), x)
    np.testing.assert_allclose(one(out, "p2", "apy__ewma_3"), zscore(e3, 15), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(one(out, "p2", "apy__ewma_10"), zscore(e10, 50), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(one(out, "p2", "apy__xewma_3_10"), zscore(e3 - e10, 50), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(one(out, "p2", "apy__min_0_5"), x.rolling(5, min_periods=1).min())
    np.testing.assert_allclose(one(out, "p2", "apy__min_5_20"), x.shift(5).rolling(15, min_periods=1).min())
    np.testing.assert_allclose(one(out, "p2", "apy__max_0_5"), x.rolling(5, min_periods=1).max())


def test_transforms_weighted_ewma_hvol_and_rank():
    panel = synthetic_panel(days=120, n=3)
    panel["volume"] = 100.0 + np.arange(len(panel)) % 17
    panel["taker_buy_volume"] = panel["volume"] * np.linspace(0.0, 1.0, len(panel))
    fm = FeatureMapConfig.model_validate(
        {
            "apy": {"transform": "compound", "expansions": {"ewma": {"windows": [5], "normalize": "rank"}}},
            "tvl_usd": {
                "transform": "log",
                "expansions": {
                    "level": True,
                    "ewma": {"windows": [4], "weight": "volume", "normalize": "none"},
                    "hvol": {"increments": [2], "halflives": [6]},
                },
            },
            "taker_buy_volume": {"transform": "arctanh", "expansions": {"level": True}},
        }
    )
    out = compute_features(panel, fm)
    tvl, v, apy = one(panel, "p1", "tvl_usd"), one(panel, "p1", "volume"), one(panel, "p1", "apy")
    lt = np.log(tvl)
    np.testing.assert_allclose(one(out, "p1", "tvl_usd__log"), lt)
    ref = (lt * v).ewm(halflife=4, min_periods=4).mean() / v.ewm(halflife=4, min_periods=4).mean()
    np.testing.assert_allclose(one(out, "p1", "tvl_usd__ewma_4"), ref, rtol=1e-10)
    vol = (lt - lt.shift(2)).ewm(halflife=6, min_periods=6).std()
    np.testing.assert_allclose(one(out, "p1", "tvl_usd__hvol_2_6"), zscore(vol, 30), rtol=1e-6, atol=1e-8)
    imb = (2 * one(panel, "p1", "taker_buy_volume") / v - 1).clip(-1 + 1e-8, 1 - 1e-8)
    np.testing.assert_allclose(one(out, "p1", "taker_buy_volume__arctanh"), np.arctanh(imb))
    comp = np.exp((apy / 365).shift(-0).where(apy.index > apy.index[0], 0).cumsum())
    ranked = comp.ewm(halflife=5, min_periods=5).mean().rolling(25, min_periods=12).rank(pct=True)
    np.testing.assert_allclose(one(out, "p1", "apy__ewma_5"), ranked, rtol=1e-9)


def test_log_transform_floors_at_1e_32():
    panel = pd.DataFrame(
        {"date": pd.date_range("2024-01-01", periods=3), "instrument": "a", "apy": [0.0, -1.0, 0.5]}
    )
    out = compute_features(
        panel, FeatureMapConfig.model_validate({"apy": {"transform": "log", "expansions": {"level": True}}})
    )
    np.testing.assert_allclose(out["apy__log"], [np.log(1e-32), np.log(1e-32), np.log(0.5)])


def test_rows_and_order_follow_the_input_on_real_pools(recorded_history):
    hist = recorded_history()
    out = compute_features(hist.sample(frac=1.0, random_state=0), FeatureMapConfig())
    assert len(out) == len(hist)
    assert list(out.columns[:2]) == ["date", "instrument"]
    assert out[["date", "instrument"]].equals(
        out[["date", "instrument"]].sort_values(["date", "instrument"]).reset_index(drop=True)
    )
    feats = out.drop(columns=["date", "instrument"])
    assert list(feats.columns) == FeatureMapConfig().feature_names()
    assert (feats.notna().mean() > 0.4).all()
    assert np.isfinite(feats.to_numpy()[~np.isnan(feats.to_numpy())]).all()
    # each instrument's z-scores stay in a sane range on real data
    assert feats["apy__ewma_7"].abs().quantile(0.99) < 10


def test_duplicate_rows_are_refused():
    panel = pd.DataFrame({"date": pd.to_datetime(["2024-01-01"] * 2), "pool": ["a", "a"], "apy": [0.1, 0.2]})
    with pytest.raises(ValueError, match="duplicate"):
        compute_features(panel, FeatureMapConfig.model_validate({"apy": {"expansions": {"level": True}}}))


def test_config_errors_are_helpful_and_scalars_accepted():
    with pytest.raises(ValidationError, match="extra"):
        FeatureMapConfig.model_validate({"apy": {"expansions": {"ewmaa": {"windows": [3]}}}})
    with pytest.raises(ValidationError, match="strictly increasing"):
        FeatureMapConfig.model_validate({"apy": {"expansions": {"min": [30, 7]}}})
    with pytest.raises(ValidationError, match="first row loaded"):
        FeatureMapConfig.model_validate({"apy": {"transform": "compound", "expansions": {"max": [7]}}})
    fm = FeatureMapConfig.model_validate({"apy": {"expansions": {"ewma": {"windows": 7}}}})
    assert fm.feature_names() == ["apy__ewma_7"]
    with pytest.raises(KeyError, match="tvl_usd"):
        compute_features(synthetic_panel().drop(columns="tvl_usd"), FeatureMapConfig())


def test_vault_config_gets_research_defaults_and_overrides(tmp_path):
    vault = load_vault_config(ROOT / "configs" / "vaults" / "usd_lending.yaml")
    # a vault predicts and earns adjusted yields by default: the default features on adjusted_apy
    assert list(vault.feature_map.columns) == ["adjusted_apy", "tvl_usd"]
    assert vault.feature_map.columns["adjusted_apy"] == FeatureMapConfig().columns["apy"]
    assert vault.label_map.labels()[0].name == "apy_fwd_7"
    assert (
        vault.label_map.labels()[0].target == "adjusted_apy" and vault.backtest.apy_column == "adjusted_apy"
    )
    assert vault.models.families["apy"].primary_name == "ewm_predictor"
    data = vault.model_dump(exclude={"feature_map", "label_map", "models"})
    data["label_map"] = {"apy": {"horizons": 10, "target": "apy"}}
    data["models"] = {"apy": {"ewm_predictor": {"halflife": "3d"}}}
    v2 = VaultConfig.model_validate(data)
    assert [i.name for i in v2.label_map.labels()] == ["apy_fwd_10"]
    assert v2.label_map.labels()[0].target == "apy"  # trading the quote stays one line of config
    assert v2.models.families["apy"].estimators["ewm_predictor"].params == {"halflife": "3d"}


def test_required_lookback_covers_ewm_memory_and_windows():
    fm = FeatureMapConfig.model_validate({"apy": {"expansions": {"ewma": {"windows": [10]}, "max": [40]}}})
    # 2**(-n/10) <= 1e-6 -> n = 200, plus the 5*10 z-score window
    assert required_lookback(fm) == 250
    assert required_lookback(FeatureMapConfig.model_validate({"apy": {"expansions": {"max": [40]}}})) == 40


def test_hvol_weight_by_and_rank_match_references():
    panel = synthetic_panel(days=150, n=2, seed=4)
    rng = np.random.default_rng(9)
    panel["volume"] = rng.uniform(1.0, 50.0, len(panel))
    fm = FeatureMapConfig.model_validate(
        {
            "tvl_usd": {
                "transform": "log",
                "expansions": {
                    "hvol": {
                        "increments": [1, 3],
                        "halflives": [8],
                        "weight_by": "volume",
                        "normalize": "rank",
                        "norm_mult": 4,
                    }
                },
            }
        }
    )
    assert "volume" in fm.raw_columns()
    out = compute_features(panel, fm)
    lt, v = np.log(one(panel, "p1", "tvl_usd")), one(panel, "p1", "volume")
    for k in (1, 3):
        d = lt - lt.shift(k)
        w = v.where(d.notna())
        ew = lambda s: s.ewm(halflife=8, min_periods=8).mean()  # noqa: E731
        vol = np.sqrt((ew(w * d * d) / ew(w) - (ew(w * d) / ew(w)) ** 2).clip(lower=0))
        expected = vol.rolling(32, min_periods=16).rank(pct=True)
        np.testing.assert_allclose(one(out, "p1", f"tvl_usd__hvol_{k}_8"), expected, rtol=1e-7, atol=1e-9)
    ranked = out["tvl_usd__hvol_1_8"].dropna()
    assert ranked.between(0, 1).all() and len(ranked) > 200


def test_hvol_weight_by_follows_the_weighted_bars():
    """Constant weights give the (biased) EWM std; bars with no volume do not move the weighted vol."""
    dates = pd.date_range("2024-01-01", periods=120, freq="D")
    rng = np.random.default_rng(2)
    price = np.exp(np.cumsum(rng.normal(0, 0.01, 120)))
    price[60::2] *= 1.2  # wild jumps on alternate bars ...
    volume = np.ones(120)
    volume[60::2] = 0.0  # ... that traded nothing
    panel = pd.DataFrame({"date": dates, "instrument": "x", "close": price, "volume": volume, "one": 1.0})
    spec = {
        "transform": "log",
        "expansions": {"hvol": {"increments": [1], "halflives": [5], "normalize": "none"}},
    }
    plain = compute_features(panel, FeatureMapConfig.model_validate({"close": spec}))["close__hvol_1_5"]
    const = compute_features(
        panel,
        FeatureMapConfig.model_validate(
            {"close": {**spec, "expansions": {"hvol": {**spec["expansions"]["hvol"], "weight_by": "one"}}}}
        ),
    )["close__hvol_1_5"]
    by_volume = compute_features(
        panel,
        FeatureMapConfig.model_validate(
            {"close": {**spec, "expansions": {"hvol": {**spec["expansions"]["hvol"], "weight_by": "volume"}}}}
        ),
    )["close__hvol_1_5"]
    d = pd.Series(np.log(price)).diff()
    np.testing.assert_allclose(const, d.ewm(halflife=5, min_periods=5).std(bias=True), rtol=1e-7, atol=1e-12)
    assert plain.iloc[-1] > 5 * by_volume.iloc[-1]
    with pytest.raises(KeyError, match="volume"):
        compute_features(
            panel.drop(columns="volume"),
            FeatureMapConfig.model_validate(
                {
                    "close": {
                        **spec,
                        "expansions": {"hvol": {**spec["expansions"]["hvol"], "weight_by": "volume"}},
                    }
                }
            ),
        )


def test_cross_section_flows_deviation_ratio_and_categories_match_references():
    panel = synthetic_panel(days=120, n=5)
    panel["apy_reward"] = np.where(panel["instrument"] == "p0", np.nan, panel["apy"] * 0.3)  # p0: no reward
    panel["eligible"] = ~((panel["instrument"] == "p4") & (panel["date"] < "2024-02-01"))  # p4 joins later
    panel["project"] = panel["instrument"].map({"p0": "aave-v3", "p1": "aave-v3"}).fillna("euler-v2")
    fm = FeatureMapConfig.model_validate(
        {
            "apy": {"expansions": {"level": True, "deviation": [20], "cross_section": ["rank", "zscore"]}},
            "tvl_usd": {"transform": "log", "expansions": {"change": [1, 7]}},
            "reward_share": {
                "source": "apy_reward",
                "transform": "ratio",
                "over": "apy",
                "fill_missing": 0.0,
                "expansions": {"level": True},
            },
            "categories": ["project"],
        }
    )
    out = compute_features(panel, fm)
    assert fm.feature_names() == list(out.columns[2:])
    wide = panel.pivot(index="date", columns="instrument", values="apy")
    member = panel.pivot(index="date", columns="instrument", values="eligible")
    ref_rank = wide.where(member).rank(axis=1, pct=True)
    xs = wide.where(member)
    ref_z = xs.sub(xs.mean(axis=1), axis=0).div(xs.std(axis=1), axis=0)
    for inst in ("p1", "p4"):
        pd.testing.assert_series_equal(one(out, inst, "apy__xs_rank"), ref_rank[inst], check_names=False)
        pd.testing.assert_series_equal(one(out, inst, "apy__xs_z"), ref_z[inst], check_names=False)
    assert one(out, "p4", "apy__xs_rank").loc[:"2024-01-31"].isna().all()  # outside the universe: no rank
    a = one(panel, "p2", "apy")
    pd.testing.assert_series_equal(
        one(out, "p2", "apy__dev_20"), a - a.rolling(20, min_periods=10).mean(), check_names=False
    )
    lt = np.log(one(panel, "p3", "tvl_usd"))
    pd.testing.assert_series_equal(one(out, "p3", "tvl_usd__chg_7"), lt - lt.shift(7), check_names=False)
    assert (one(out, "p0", "reward_share__ratio") == 0.0).all()  # a null reward is no reward
    np.testing.assert_allclose(one(out, "p2", "reward_share__ratio"), 0.3)
    assert set(out["project"]) == {"aave-v3", "euler-v2"}
    assert required_lookback(fm) == 20
    with pytest.raises(KeyError, match="categories"):
        compute_features(panel.drop(columns="project"), fm)
    with pytest.raises(ValidationError, match="ratio"):
        FeatureMapConfig.model_validate({"apy": {"transform": "ratio"}})
    with pytest.raises(ValidationError, match="scale-free"):
        FeatureMapConfig.model_validate(
            {"apy": {"transform": "compound", "expansions": {"cross_section": ["rank"]}}}
        )


def test_yield_study_config_validates_and_is_partition_stable(recorded_history):
    from midfreq_assets.domain.research.yield_study import load_yield_study

    study = load_yield_study(ROOT / "configs" / "research" / "yield_models.yaml")
    vault = study.applied_to(load_vault_config(ROOT / "configs" / "vaults" / "usd_lending.yaml"))
    assert "hist_gb" in vault.models.family("apy").estimators and vault.feature_map.categories == [
        "project",
        "chain",
    ]
    hist = recorded_history(6)
    hist = hist.assign(
        apy_base=hist["apy"] * 0.8, apy_reward=hist["apy"] * 0.2, project="aave-v3", chain="Base"
    )
    full = compute_features(hist, vault.feature_map, instrument_col="pool")
    start = hist["date"].max() - pd.Timedelta(days=30)
    window = hist[hist["date"] >= start - pd.Timedelta(days=required_lookback(vault.feature_map))]
    part = compute_features(window, vault.feature_map, instrument_col="pool")
    got = part[part["date"] >= start].reset_index(drop=True)
    want = full[full["date"] >= start].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-5, atol=1e-6)
