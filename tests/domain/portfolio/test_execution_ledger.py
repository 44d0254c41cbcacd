"""The execution ledger's math: revisions as the difference to the target, what the day executed (per
status, after the positions' as_of), unknown orders, the cash guard; property-style over random
tickets and fill outcomes (executed + the new revision's orders = the target, cash never overdrawn)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from midfreq_assets.domain.portfolio.execution_ledger import (
    DEPOSIT,
    MIN_ORDER_FLOOR_USD,
    WITHDRAW,
    Answer,
    CashGuard,
    LedgerEntry,
    PositionsBasis,
    Revision,
    executed_amount,
    executed_since,
    plan_day,
    resized_body,
    revision_key,
    send_order,
    signed,
    ticket_digest,
)
from midfreq_assets.domain.portfolio.orders import idempotency_key

VAULT, DAY = "v", dt.date(2025, 6, 5)
AS_OF = pd.Timestamp("2025-06-05T23:50:00Z")
AFTER, BEFORE = "2025-06-06T00:00:00+00:00", "2025-06-05T20:00:00+00:00"
BASIS = PositionsBasis(cash_usd=100_000.0, cash_as_of=AS_OF, as_of={})
NOW = "2025-06-06T08:00:00+00:00"


def order(pool: str, side: str, amount: float, **extra) -> dict:
    return {
        "vault": VAULT,
        "date": DAY.isoformat(),
        "pool": pool,
        "side": side,
        "amount_usd": amount,
        "token_amount": amount / 2.0,
        "token_price_usd": 2.0,
        "amount_reference": amount,
        "expected_annual_gain_usd": amount * 0.05 * (1 if side == DEPOSIT else -1),
        "gas_usd": 5.0,
        "horizon_gain_usd": amount * 0.05 * 30 / 365 * (1 if side == DEPOSIT else -1),
        "idempotency_key": idempotency_key(VAULT, DAY, pool),
        **extra,
    }


def answered(o, status: str, filled: float | None, when: str = AFTER, http: int = 200) -> LedgerEntry:
    return LedgerEntry(o, NOW, Answer(status, http, filled, ""), when, when, 1)


def test_first_ticket_is_revision_0_with_the_tickets_keys_and_min_order():
    ticket = [order("a", DEPOSIT, 50_000), order("b", WITHDRAW, 20_000), order("c", DEPOSIT, 500)]
    plan = plan_day(VAULT, DAY, ticket, [], {}, BASIS, 1_000.0, NOW)
    assert plan.new and plan.revision.revision == 0 and plan.to_record == ()
    assert [o.key for o in plan.revision.orders] == [idempotency_key(VAULT, DAY, p) for p in ("a", "b")]
    assert all(o.body["revision"] == 0 for o in plan.revision.orders)
    assert [o.pool for o in plan.pending] == ["b", "a"]  # the withdrawal first
    assert plan.revision.target == {"a": 50_000, "b": -20_000, "c": 500}  # the target keeps the small order


def test_the_same_ticket_is_answered_from_the_ledger_and_sends_only_what_was_never_sent():
    ticket = [order("a", DEPOSIT, 50_000), order("b", DEPOSIT, 20_000)]
    rev0 = plan_day(VAULT, DAY, ticket, [], {}, BASIS, 0.0, NOW).revision
    a = rev0.orders[0]
    plan = plan_day(VAULT, DAY, ticket, [rev0], {a.key: answered(a, "filled", 50_000)}, BASIS, 0.0, NOW)
    assert not plan.new and plan.revision is rev0
    assert [o.pool for o in plan.pending] == ["b"]  # "b" was never sent (a crash): sent with its key
    # a recomputed ticket equal to the cent is the same ticket
    again = [order("a", DEPOSIT, 50_000.001), order("b", DEPOSIT, 19_999.999)]
    assert ticket_digest(again) == ticket_digest(ticket)


def test_a_changed_ticket_is_a_revision_of_target_minus_executed():
    first = [order("a", DEPOSIT, 60_000), order("b", DEPOSIT, 30_000), order("c", WITHDRAW, 10_000)]
    rev0 = plan_day(VAULT, DAY, first, [], {}, BASIS, 0.0, NOW).revision
    a, b, c = (next(o for o in rev0.orders if o.pool == p) for p in "abc")
    entries = {
        a.key: answered(a, "filled", 60_000),
        b.key: answered(b, "partially_filled", 12_000),
        c.key: answered(c, "rejected", 0.0, http=422),
    }
    # the concentration limit tightened: "a" 40k, "b" 30k, "d" new 20k, "c" no longer sold
    second = [order("a", DEPOSIT, 40_000), order("b", DEPOSIT, 30_000), order("d", DEPOSIT, 20_000)]
    plan = plan_day(VAULT, DAY, second, [rev0], entries, BASIS, 0.0, NOW)
    assert plan.new and plan.revision.revision == 1
    got = {o.pool: o.signed for o in plan.revision.orders}
    assert got == pytest.approx({"a": -20_000, "b": 18_000, "d": 20_000})  # "c": rejected, nothing to undo
    assert plan.executed_before == pytest.approx({"a": 60_000, "b": 12_000})
    for o in plan.revision.orders:
        assert o.key == revision_key(VAULT, DAY, o.pool, 1) != idempotency_key(VAULT, DAY, o.pool)
        assert (
            o.body["revision"] == 1
            and o.body["idempotency_key"] == o.key
            and o.body["amount_usd"] == o.amount_usd
        )
    assert next(o for o in plan.revision.orders if o.pool == "a").body["side"] == WITHDRAW
    # a pool only in the earlier revision is reversed, from that revision's body
    third = [order("b", DEPOSIT, 30_000)]
    entries |= {o.key: answered(o, "filled", o.amount_usd) for o in plan.revision.orders}
    plan3 = plan_day(VAULT, DAY, third, [rev0, plan.revision], entries, BASIS, 0.0, NOW)
    got3 = {o.pool: o.signed for o in plan3.revision.orders}
    assert plan3.revision.revision == 2 and got3 == pytest.approx({"a": -40_000, "d": -20_000})
    assert next(o for o in plan3.revision.orders if o.pool == "d").body["vault"] == VAULT


def test_executions_the_positions_already_show_are_not_counted_again():
    a = plan_day(VAULT, DAY, [order("a", DEPOSIT, 10_000)], [], {}, BASIS, 0.0, NOW).revision.orders[0]
    filled_before = {a.key: answered(a, "filled", 10_000, when=BEFORE)}
    filled_after = {a.key: answered(a, "filled", 10_000, when=AFTER)}
    assert executed_since(filled_before.values(), BASIS) == {}
    assert executed_since(filled_after.values(), BASIS) == {"a": 10_000}
    # a pool's own row as_of wins over the cash row's; without a row, the cash row's as_of counts
    late_row = PositionsBasis(0.0, AS_OF, {"a": pd.Timestamp("2025-06-06T01:00:00Z")})
    assert executed_since(filled_after.values(), late_row) == {}
    unknown = LedgerEntry(a, AFTER)  # sent, no answer: it may have executed in full
    assert unknown.unknown and executed_since([unknown], BASIS) == {"a": 10_000}


@pytest.mark.parametrize(
    ("status", "http", "filled", "expected"),
    [
        ("filled", 200, 1000.0, 1000.0),
        ("partially_filled", 200, 400.0, 400.0),
        ("filled", 200, None, 1000.0),
        ("accepted", 202, None, 1000.0),
        ("pending", 200, 0.0, 1000.0),
        ("rejected", 422, 0.0, 0.0),
        ("conflict", 409, None, 0.0),
        ("whatever", 400, None, 0.0),
    ],
)
def test_what_an_answer_executed(status, http, filled, expected):
    assert executed_amount(Answer(status, http, filled, ""), 1000.0) == expected


def test_cash_guard_withdrawals_first_and_deposits_only_within_cash():
    ticket = [order("a", DEPOSIT, 70_000), order("b", DEPOSIT, 50_000), order("c", WITHDRAW, 40_000)]
    plan = plan_day(VAULT, DAY, ticket, [], {}, PositionsBasis(60_000.0, AS_OF), 0.0, NOW)
    assert [o.side for o in plan.pending] == [WITHDRAW, DEPOSIT, DEPOSIT]
    guard = CashGuard(60_000.0)
    w, big, small = plan.pending
    assert guard.admit(w)
    guard.record(w, Answer("partially_filled", 200, 15_000.0, ""))  # only 15k came back
    assert guard.available_usd == 75_000.0
    assert guard.admit(big)
    guard.record(big, Answer("filled", 200, 70_000.0, ""))
    assert not guard.admit(small) and guard.held == [small]  # 5k left: the 50k deposit is held
    assert guard.summary()["held_usd"] == 50_000.0
    # the ledger's executions after the positions' as_of count; unknown deposits count in full
    entries = [
        answered(big, "filled", 70_000.0),
        LedgerEntry(small, AFTER),
        answered(w, "filled", 40_000.0, when=BEFORE),
    ]  # filled before the positions: already in cash
    from_ledger = CashGuard.from_ledger(PositionsBasis(60_000.0, AS_OF), entries)
    assert from_ledger.available_usd == 60_000.0 - 70_000.0 - 50_000.0
    assert not from_ledger.admit(big) and from_ledger.admit(w)


def test_entries_round_trip_and_flat_entries_read_as_revision_0():
    o = plan_day(VAULT, DAY, [order("a", DEPOSIT, 1000)], [], {}, BASIS, 0.0, NOW).revision.orders[0]
    e = answered(o, "partially_filled", 400.0)
    assert LedgerEntry.from_json(e.to_json()) == e
    sent = LedgerEntry(o, NOW)
    assert LedgerEntry.from_json(sent.to_json()).unknown
    rev = plan_day(VAULT, DAY, [order("a", DEPOSIT, 1000)], [], {}, BASIS, 0.0, NOW).revision
    assert Revision.from_json(rev.to_json()) == rev
    flat = {
        "order_digest": "x",
        "order": order("a", DEPOSIT, 1000),
        "recorded_at": AFTER,
        "outcome": {
            "idempotency_key": o.key,
            "status": "filled",
            "http_status": 200,
            "filled_usd": 1000.0,
            "message": "",
            "attempts": 1,
            "from_ledger": False,
            "response": {},
        },
    }
    legacy = LedgerEntry.from_json(flat)
    assert legacy.order.revision == 0 and legacy.answered_at == AFTER and legacy.executed_usd == 1000.0


def test_flat_entries_are_adopted_by_the_same_ticket_and_revised_by_another():
    ticket = [order("a", DEPOSIT, 30_000), order("b", DEPOSIT, 10_000)]
    rev0 = plan_day(VAULT, DAY, ticket, [], {}, BASIS, 0.0, NOW).revision
    a = rev0.orders[0]
    body = {k: v for k, v in a.body.items() if k != "revision"}  # as written before revisions existed
    flat = {
        a.key: LedgerEntry.from_json(
            {
                "order": body,
                "recorded_at": AFTER,
                "outcome": {"status": "filled", "http_status": 200, "filled_usd": 30_000.0, "message": ""},
            }
        )
    }
    same = plan_day(VAULT, DAY, ticket, [], flat, BASIS, 0.0, NOW)
    assert same.new and same.revision.revision == 0 and same.to_record == ()
    assert [o.pool for o in same.pending] == ["b"]
    changed = plan_day(VAULT, DAY, [order("a", DEPOSIT, 20_000)], [], flat, BASIS, 0.0, NOW)
    assert changed.revision.revision == 1 and changed.to_record[0].legacy
    assert {o.pool: o.signed for o in changed.revision.orders} == pytest.approx({"a": -10_000})


def test_resized_body_scales_amounts_and_resigns_gains():
    body = order("a", DEPOSIT, 1000)
    out = resized_body(body, "k", 2, WITHDRAW, 250.0)
    assert out["amount_usd"] == 250.0 and out["token_amount"] == pytest.approx(125.0)
    assert out["amount_reference"] == pytest.approx(250.0) and out["side"] == WITHDRAW
    assert out["expected_annual_gain_usd"] == pytest.approx(-250.0 * 0.05)
    assert out["horizon_gain_usd"] == pytest.approx(-250.0 * 0.05 * 30 / 365)
    assert out["gain_over_gas"] == pytest.approx(-250.0 * 0.05 / 5.0)
    assert out["revision"] == 2 and out["idempotency_key"] == "k" and out["reason"].startswith("revision 2")


def _random_ticket(rng, pools) -> list[dict]:
    chosen = rng.choice(pools, size=rng.integers(1, len(pools) + 1), replace=False)
    return [
        order(str(p), DEPOSIT if rng.random() < 0.6 else WITHDRAW, float(rng.uniform(100, 100_000)))
        for p in chosen
    ]


def _answer(rng, o) -> Answer:
    kind = rng.choice(["filled", "partially_filled", "rejected", "accepted"], p=[0.5, 0.25, 0.15, 0.1])
    if kind == "filled":
        return Answer("filled", 200, o.amount_usd, "")
    if kind == "partially_filled":
        return Answer("partially_filled", 200, float(o.amount_usd * rng.uniform(0, 1)), "")
    if kind == "rejected":
        return Answer("rejected", 422, 0.0, "")
    return Answer("accepted", 202, None, "")


@pytest.mark.parametrize("seed", range(40))
def test_property_executed_plus_the_new_revision_is_the_target_and_cash_is_never_overdrawn(seed):
    rng = np.random.default_rng(seed)
    pools = [f"p{i}" for i in range(6)]
    cash = float(rng.uniform(0, 200_000))
    basis = PositionsBasis(cash, AS_OF)
    revisions: list[Revision] = []
    entries: dict[str, LedgerEntry] = {}
    min_order = float(rng.choice([0.0, 50.0]))
    for _ in range(4):  # four recomputations of the day, each with random outcomes
        ticket = _random_ticket(rng, pools)
        plan = plan_day(VAULT, DAY, ticket, revisions, entries, basis, min_order, NOW)
        if plan.new:
            revisions.append(plan.revision)
        executed = executed_since(entries.values(), basis)
        # the revision's orders are exactly what is left of the target (up to the minimum order)
        if plan.revision.revision > 0:
            sent = {o.pool: o.signed for o in plan.revision.orders}
            for pool in set(plan.target) | set(executed):
                residual = plan.target.get(pool, 0.0) - executed.get(pool, 0.0)
                floor = max(min_order, MIN_ORDER_FLOOR_USD)
                if abs(residual) >= floor:
                    assert executed.get(pool, 0.0) + sent[pool] == pytest.approx(plan.target.get(pool, 0.0))
                else:
                    assert pool not in sent
        keys = [o.key for r in revisions for o in r.orders]
        assert len(keys) == len(set(keys))  # a key is never reused across revisions
        guard = CashGuard.from_ledger(basis, entries.values())
        for o in plan.pending:
            if not guard.admit(o):
                continue
            answer = _answer(rng, o)
            entries[o.key] = LedgerEntry(o, NOW, answer, AFTER, AFTER, 1)
            guard.record(o, answer)
        # deposits executed never exceed the cash plus the withdrawals filled
        deposits = sum(
            executed_amount(e.answer, e.order.amount_usd) for e in entries.values() if e.order.side == DEPOSIT
        )
        withdrawn = sum(
            e.answer.filled_usd or 0.0
            for e in entries.values()
            if e.order.side == WITHDRAW and e.answer.status in ("filled", "partially_filled")
        )
        assert deposits <= cash + withdrawn + 0.01
    assert send_order(plan.pending) == list(plan.pending)
    assert signed(WITHDRAW, 5.0) == -5.0
