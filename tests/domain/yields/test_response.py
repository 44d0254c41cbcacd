"""Rate-curve fit and pool responses: recovery, point in time, the recorded market, fallbacks, capacity."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.ingest.lend_borrow import lend_borrow_frame
from midfreq_assets.domain.yields.config import RateCurveConfig
from midfreq_assets.domain.yields.response import (
    CURVE,
    TVL_SHARE,
    KinkedCurve,
    fit_kinked_curve,
    fit_rate_curves,
    pool_responses,
    refit_dates,
    response_frame,
)

REPO = Path(__file__).parents[3]
AAVE_USDC = "aa70268e-4b52-42bf-a116-608b370f9501"
TRUE = KinkedCurve(*(np.array([v]) for v in (0.0, 0.06, 0.6, 0.9, 0.1)))  # Aave-like: kink at 90 %


@pytest.fixture(scope="module")
def recorded() -> pd.DataFrame:
    rows = json.loads((REPO / f"recorded/defillama/pro/yields/chartLendBorrow/{AAVE_USDC}.json").read_text())[
        "data"
    ]
    return lend_borrow_frame({AAVE_USDC: rows})


def synthetic(days: int = 120, seed: int = 0, pool: str = "p") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    u = np.clip(0.85 + 0.05 * rng.standard_normal(days), 0.5, 0.99)
    borrow = TRUE.borrow_rate(u) * (1 + 0.01 * rng.standard_normal(days))
    supply = borrow * u * 0.9
    return pd.DataFrame(
        {
            "date": pd.date_range("2025-01-01", periods=days),
            "pool": pool,
            "utilization": u,
            "total_supply_usd": 1e9,
            "total_borrow_usd": 1e9 * u,
            "apy_base_borrow": borrow,
            "apy_base": supply,
            "flag": None,
        }
    )


def test_fit_recovers_a_known_kinked_curve():
    frame = synthetic()
    fit = fit_kinked_curve(*(frame[c].to_numpy() for c in ("utilization", "apy_base_borrow", "apy_base")))
    assert fit["optimal"] == pytest.approx(0.9, abs=0.02)
    assert fit["reserve_factor"] == pytest.approx(0.1, abs=1e-6)
    assert fit["slope1"] == pytest.approx(0.06, rel=0.1) and fit["slope2"] == pytest.approx(0.6, rel=0.15)
    assert fit["rmse_borrow"] / fit["mean_borrow"] < 0.02


def test_a_fit_reads_only_days_before_its_date():
    frame = synthetic()
    t = pd.Timestamp("2025-03-03")
    fits = fit_rate_curves(frame, pd.DatetimeIndex([t]), RateCurveConfig(window_days=60))
    later = frame.copy()
    later.loc[later["date"] >= t, "apy_base_borrow"] *= 5  # the future changes: the fit must not
    again = fit_rate_curves(later, pd.DatetimeIndex([t]), RateCurveConfig(window_days=60))
    pd.testing.assert_frame_equal(fits, again)
    assert fits["days"].iloc[0] == 60 and fits["ok"].iloc[0]


def test_too_few_days_or_a_poor_fit_falls_back_with_the_reason():
    short = fit_rate_curves(
        synthetic(days=20),
        refit_dates(pd.Timestamp("2025-01-20"), pd.Timestamp("2025-01-26")),
        RateCurveConfig(),
    )
    assert not short["ok"].any() and "usable days" in short["reason"].iloc[0]
    noisy = synthetic()
    noisy["apy_base_borrow"] *= np.random.default_rng(1).uniform(0.3, 1.7, len(noisy))
    poor = fit_rate_curves(noisy, pd.DatetimeIndex([pd.Timestamp("2025-04-28")]), RateCurveConfig())
    assert not poor["ok"].iloc[0] and poor["reason"].iloc[0].startswith("poor fit")
    day = pd.Timestamp("2025-04-29")
    resp = pool_responses(day, np.array(["p", "other"]), np.array([1e8, 5e7]), noisy, poor)
    assert resp.method.tolist() == [TVL_SHARE, TVL_SHARE]
    assert resp.reason[0].startswith("poor fit") and resp.reason[1] == ""  # 'other' is no lending market


def test_the_fitted_curve_predicts_next_weeks_supply_apy_better_than_the_last_value(recorded):
    """Each weekly fit (days before its Monday only) and the week's observed utilization predict that
    week's supply APY; the naive forecast is the last supply APY known before the Monday."""
    fits = fit_rate_curves(
        recorded, refit_dates(recorded["date"].min(), recorded["date"].max()), RateCurveConfig()
    )
    series = recorded.set_index("date")
    curve_err, last_err = [], []
    for _, fit in fits[fits["ok"]].iterrows():
        week = series.loc[fit["fit_date"] : fit["fit_date"] + pd.Timedelta(days=6)]
        before = series.loc[: fit["fit_date"] - pd.Timedelta(days=1), "apy_base"]
        curve = KinkedCurve(
            *(np.array([fit[k]]) for k in ("base", "slope1", "slope2", "optimal", "reserve_factor"))
        )
        curve_err.append(
            np.abs(curve.supply_rate(week["utilization"].to_numpy()) - week["apy_base"].to_numpy())
        )
        last_err.append(np.abs(before.iloc[-1] - week["apy_base"].to_numpy()))
    curve_mae, last_mae = np.concatenate(curve_err).mean(), np.concatenate(last_err).mean()
    assert fits["ok"].sum() >= 80  # most of the ~146 weeks fit
    assert curve_mae < 0.5 * last_mae, (curve_mae, last_mae)
    assert fits.loc[fits["ok"], "reserve_factor"].median() == pytest.approx(
        0.10, abs=0.005
    )  # Aave v3 USDC's RF


def test_responses_on_the_recorded_market(recorded):
    day = pd.Timestamp("2025-06-05")
    fits = fit_rate_curves(recorded, refit_dates(day - pd.Timedelta(days=7), day), RateCurveConfig())
    tvl = np.array([242_996_044.0, 242_996_044.0])  # /pools TVL that day: supply - borrow
    resp = pool_responses(day, np.array([AAVE_USDC, "not-lending"]), tvl, recorded, fits)
    assert resp.method.tolist() == [CURVE, TVL_SHARE]
    assert resp.supply[0] == pytest.approx(2_459_911_534) and resp.size_base()[0] == resp.supply[0]
    x = np.array([1e8, 1e8])
    s, b = resp.supply[0], resp.borrow[0]
    u = b / (s + x[0])
    expected = resp.curve.borrow_rate(np.array([u]))[0] * u * (1 - resp.curve.reserve_factor[0])
    assert resp.curve_supply_apy(x)[0] == pytest.approx(expected)
    assert resp.base_factor(0.0)[0] == pytest.approx(1.0) and resp.base_factor(x)[0] < 1.0
    assert resp.base_factor(x)[1] == pytest.approx(1 / (1 + 1e8 / tvl[1]))  # today's TVL-share rule
    assert resp.reward_factor(x)[0] == pytest.approx(s / (s + 1e8))
    assert resp.apy_after(np.array([0.04, 0.04]), np.array([0.01, 0.0]), x)[0] == pytest.approx(
        0.04 * resp.base_factor(x)[0] + 0.01 * s / (s + 1e8)
    )
    cap = resp.capacity(0.1)
    assert cap[0] > 3 * cap[1]  # the curve's capacity is several times the TVL-share rule's (S >> S - B)
    assert resp.extrapolated(cap)[0] == (b / (s + cap[0]) < resp.u_min[0]) and not resp.extrapolated(0.0)[0]
    assert resp.base_factor(cap)[0] == pytest.approx(0.9, abs=1e-6)
    assert cap[1] == pytest.approx(tvl[1] / 9)
    assert np.all(np.diff([resp.base_factor(d)[0] for d in (0.0, 1e7, 1e8, 1e9)]) < 0)


def test_no_lend_borrow_data_is_todays_rule():
    resp = pool_responses(pd.Timestamp("2025-01-01"), np.array(["a"]), np.array([1e6]), None, None)
    assert resp.method.tolist() == [TVL_SHARE] and resp.reason.tolist() == [""]
    assert resp.apy_after(np.array([0.05]), np.array([0.01]), 1e6)[0] == pytest.approx(0.03)
    with pytest.raises(ValueError, match="within"):
        resp.capacity(1.0)


def test_a_stale_supply_row_falls_back():
    frame = synthetic()
    fits = fit_rate_curves(
        frame, pd.DatetimeIndex([pd.Timestamp("2025-03-03")]), RateCurveConfig(window_days=60)
    )
    resp = pool_responses(
        pd.Timestamp("2025-06-01"),
        np.array(["p"]),
        np.array([1e8]),
        frame[frame["date"] < "2025-03-05"],
        fits,
    )
    assert resp.method.tolist() == [TVL_SHARE] and "no usable supply/borrow row" in resp.reason[0]


def test_dilution_depth_is_the_first_order_response_and_close_at_capacity(recorded):
    day = pd.Timestamp("2025-06-05")
    fits = fit_rate_curves(recorded, refit_dates(day - pd.Timedelta(days=7), day), RateCurveConfig())
    resp = pool_responses(day, np.array([AAVE_USDC, "x"]), np.array([242_996_044.0, 1e8]), recorded, fits)
    depth = resp.dilution_depth()
    assert depth[1] == 1e8  # TVL share: the TVL itself
    eps = 1e3  # the slope at 0: base_factor'(0) = -1 / D
    assert (1 - resp.base_factor(np.array([eps, eps]))[0]) / eps == pytest.approx(1 / depth[0], rel=1e-3)
    cap = resp.capacity(0.1)[0]
    assert 1 / (1 + cap / depth[0]) == pytest.approx(0.9, abs=0.005)  # the hyperbola within 0.5 % at capacity


def test_response_frame_over_days_matches_each_days_responses(recorded):
    days = pd.date_range("2025-05-01", "2025-06-05")
    fits = fit_rate_curves(recorded, refit_dates(days[0] - pd.Timedelta(days=7), days[-1]), RateCurveConfig())
    rows = pd.DataFrame({"date": np.repeat(days, 2), "pool": [AAVE_USDC, "x"] * len(days), "tvl_usd": 2.4e8})
    frame = response_frame(rows, recorded, fits)
    assert len(frame) == len(rows) and (frame.loc[frame["pool"] == "x", "method"] == TVL_SHARE).all()
    one = pool_responses(days[10], np.array([AAVE_USDC, "x"]), np.array([2.4e8, 2.4e8]), recorded, fits)
    got = frame[frame["date"] == days[10]]
    np.testing.assert_allclose(got["dilution_depth_usd"], one.dilution_depth())
    np.testing.assert_allclose(got["size_base_usd"], one.size_base())
    np.testing.assert_allclose(got["capacity_usd"], one.capacity(0.1))
