"""The per-step accounting's fast paths give exactly what the plain numpy expressions give: NaN and
infinities cleaned as ``np.nan_to_num``, the accrual on NaN-carrying rows, the book's accrual on its
pre-cleaned panels, and the optimizer's group membership by normalized label."""

from __future__ import annotations

import numpy as np
import pytest

from midfreq_assets.domain.config.base import normalize_slug
from midfreq_assets.domain.portfolio.book import BookPanels, BookSeed, VaultBook
from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer
from midfreq_assets.domain.portfolio.step import accrue_step, finite_or
from midfreq_assets.domain.portfolio.strategy import StrategyConfig


@pytest.mark.parametrize(
    "values",
    [
        np.array([0.1, -0.2, 3.0]),
        np.array([0.1, np.nan, 3.0]),
        np.array([np.inf, np.nan, -np.inf, 0.5]),
        np.array([np.nan, np.nan]),
        np.zeros(0),
    ],
)
@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_finite_or_is_nan_to_num(values, fill):
    got = finite_or(values, fill)
    want = np.nan_to_num(values, nan=fill)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype


def _accrue_reference(h, base, apy, tvl, dt, u_next, il_next, r_next, base_rate):
    """accrue_step as it was written before its fast paths (np.nan_to_num on every optional row)."""

    def fin(v):
        return np.zeros(len(h)) if v is None else np.nan_to_num(np.asarray(v, dtype=float), nan=0.0)

    held = h > 0
    missing = held & ~np.isfinite(apy)
    u = np.where(np.isfinite(apy), fin(u_next), 0.0)
    tvl_ok = np.isfinite(tvl) & (tvl > 0)
    dil = np.where(tvl_ok, 1.0 / (1.0 + h / np.where(tvl_ok, tvl, 1.0)), 1.0)
    r = np.where(np.isfinite(apy), (apy - u) * dil + u, 0.0)
    grown = h * np.exp(r * dt)
    il = np.where(np.isfinite(apy), np.minimum(fin(il_next), 0.0), 0.0)
    il_usd = float((h * np.exp((r - il) * dt) - grown).sum()) if il_next is not None else 0.0
    moved = grown * np.exp(fin(r_next))
    base_next = base * float(np.exp(base_rate * dt)) if base > 0 else base
    earned = np.where(np.isfinite(apy), apy, 0.0)
    return moved, base_next, dil, earned, il_usd, float((moved - grown).sum()), int(missing.sum())


@pytest.mark.parametrize("optional", [True, False])
def test_accrue_step_equals_the_plain_expressions(optional):
    rng = np.random.default_rng(3)
    n = 40
    h = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(1e3, 1e6, n))
    apy = np.where(rng.random(n) < 0.15, np.nan, rng.uniform(-0.02, 0.3, n))
    tvl = np.where(rng.random(n) < 0.1, np.nan, rng.uniform(1e5, 1e9, n))
    u = np.where(rng.random(n) < 0.3, np.nan, rng.uniform(0, 0.05, n)) if optional else None
    il = np.where(rng.random(n) < 0.3, np.nan, rng.uniform(-0.05, 0, n)) if optional else None
    r = np.where(rng.random(n) < 0.3, np.nan, rng.normal(0, 0.01, n)) if optional else None
    if optional:
        u[0] = np.inf  # an infinity takes nan_to_num's path
    got = accrue_step(
        h, 1e4, apy, tvl, 1 / 365, undiluted_next=u, il_next=il, price_return_next=r, base_rate=0.04
    )
    want = _accrue_reference(h, 1e4, apy, tvl, 1 / 365, u, il, r, 0.04)
    for a, b in zip(
        (
            got.holdings,
            got.base,
            got.dilutor,
            got.realized_apy,
            got.il_usd,
            got.price_pnl_usd,
            got.missing_apy,
        ),
        want,
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_the_books_accrual_on_cleaned_panels_is_accrue_step_on_the_raw_rows():
    rng = np.random.default_rng(5)
    T, n = 12, 9
    reported = rng.random((T, n)) > 0.2
    earned = np.where(reported, rng.uniform(0, 0.2, (T, n)), np.nan)
    panels = BookPanels(
        pools=tuple(f"p{i}" for i in range(n)),
        day=np.arange(T, dtype=float),
        dt_years=np.full(T, 1 / 365),
        earned=earned,
        tvl=np.where(reported, rng.uniform(1e6, 1e8, (T, n)), np.nan),
        eligible=reported,
        reported=reported,
        undiluted=np.where(rng.random((T, n)) < 0.4, np.nan, rng.uniform(0, 0.03, (T, n))),
        il=np.where(rng.random((T, n)) < 0.4, np.nan, rng.uniform(-0.02, 0, (T, n))),
        price_return=np.where(rng.random((T, n)) < 0.4, np.nan, rng.normal(0, 0.01, (T, n))),
    )
    book = VaultBook(panels, StrategyConfig(max_gap_days=2), seed=BookSeed.cash(n, 1e6), base_rate=0.03)
    h = rng.uniform(0, 1e5, n)
    g = book.gaps
    for t in range(T):
        got = book.accrual(t, h, 5e3)
        want = accrue_step(
            h,
            5e3,
            g.earned[t],
            g.tvl_accrue[t],
            float(panels.dt_years[t]),
            undiluted_next=g.undiluted[t],
            il_next=g.il[t],
            price_return_next=panels.price_return[t],
            base_rate=0.03,
        )
        np.testing.assert_array_equal(got.holdings, want.holdings)
        assert (got.base, got.il_usd, got.price_pnl_usd) == (want.base, want.il_usd, want.price_pnl_usd)


def test_group_membership_by_normalized_label():
    labels = ["Aave V3", "aave-v3", " Euler  V2", "euler-v2", "morpho", "AAVE V3 "]
    strat = StrategyConfig(protocol_caps={"Aave V3": 0.4, "euler-v2": 0.3, "absent": 0.1})
    opt = VaultOptimizer([f"p{i}" for i in range(len(labels))], strat, protocols=labels)
    want = [
        [float(normalize_slug(lbl) == normalize_slug(g)) for lbl in labels]
        for g in strat.protocol_caps
        if any(normalize_slug(lbl) == normalize_slug(g) for lbl in labels)
    ]
    np.testing.assert_array_equal(opt.group_matrix, np.array(want))
    assert opt.group_names == ["protocol:Aave V3", "protocol:euler-v2"]
    np.testing.assert_array_equal(opt.group_caps, [0.4, 0.3])
