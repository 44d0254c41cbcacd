"""The execution ledger of a vault's day as data: ticket revisions, what the day already executed, the
difference still to send, and the cash guard. Pure (no I/O, no Dagster): the execution client
(``midfreq_resources.clients.execution``) stores it in the lake and talks HTTP.

A day's ticket (``trade_orders``) is a *target*: per pool a signed amount to trade from the day's
positions (deposit +, withdraw -). The first ticket sent for a day is revision 0: its orders are the
ticket's orders (``execution.min_order_usd`` and up), keyed UUID5(vault/day/pool). When the day is
recomputed (a config change, new positions, after a partial fill or a reject):

- the same ticket (same :func:`ticket_digest` as the latest revision) is answered from the ledger;
  orders of that revision never sent (a run that crashed, a deposit held for cash) are sent with
  their own keys;
- a changed ticket is a new revision ``r``: per pool ``target - executed`` (pools only in earlier
  revisions are reversed), orders of at least ``min_order_usd`` (and a cent), keyed
  UUID5(vault/day/pool/r<r>): never a second ticket on top of the first.

What the day executed, per pool, signed (:func:`executed_amount`): ``filled``/``partially_filled``
count their ``filled_usd``; ``rejected``/``conflict`` (any 4xx) nothing; any other definitive answer
(``accepted``, ``pending``) the full amount (it may still fill). An order is counted only if it
executed after the ``as_of`` of the positions the day was decided from (the pool's row, else the
cash row): a fill the positions already show is not counted twice. An order sent without a
definitive answer (retries exhausted, a crash between the POST and the ledger write) is *unknown*:
it is re-sent with its own key and body first, and while one stays unknown nothing new is sent.

The cash guard (:class:`CashGuard`): withdrawals are sent first, then a deposit only while it fits
in the cash of the positions (the ``cash`` row, USD) plus the withdrawals filled since, minus the
deposits executed since (the ledger and this run); a deposit that does not fit is not sent
(``held_no_cash``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd

from midfreq_assets.domain.portfolio.orders import ORDER_NAMESPACE, idempotency_key

DEPOSIT, WITHDRAW = "deposit", "withdraw"
#: Answers whose ``filled_usd`` is what executed.
FILL_STATUSES = ("filled", "partially_filled")
#: Answers that executed nothing (besides any 4xx).
NOTHING_STATUSES = ("rejected", "conflict", "cancelled", "expired", "invalid")
#: Status of an order sent without a definitive answer (retries exhausted): unknown until re-sent.
FAILED = "failed"
#: Status of a deposit not sent because it did not fit in the cash (and the withdrawals filled).
HELD_NO_CASH = "held_no_cash"
DRY_RUN = "dry_run"
#: Differences below this (USD) are rounding, not an order.
MIN_ORDER_FLOOR_USD = 0.01
#: A deposit fits when it exceeds the available cash by at most this (USD): float rounding.
CASH_TOLERANCE_USD = 0.005
#: Amount fields of an order body scaled with its USD amount when a revision resizes it.
_SCALED = ("token_amount", "amount_reference")


def _utc(value: Any) -> pd.Timestamp | None:
    """A UTC timestamp from an ISO string / datetime, None when absent or unreadable."""
    if value is None or value == "":
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    if ts is pd.NaT:
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def signed(side: str, amount: float) -> float:
    return float(amount) if side == DEPOSIT else -float(amount)


def revision_key(vault: str, day: dt.date | pd.Timestamp, pool: str, revision: int) -> str:
    """The idempotency key of ``pool``'s order in ``revision`` of the day (revision 0: the ticket's key)."""
    if revision == 0:
        return idempotency_key(vault, day, pool)
    return str(
        uuid.uuid5(ORDER_NAMESPACE, f"{vault}/{pd.Timestamp(day).date().isoformat()}/{pool}/r{revision}")
    )


def body_digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(dict(body), option=orjson.OPT_SORT_KEYS)).hexdigest()


def ticket_targets(ticket: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per pool the signed USD amount the ticket trades (deposit +, withdraw -)."""
    out: dict[str, float] = {}
    for order in ticket:
        pool = str(order["pool"])
        out[pool] = out.get(pool, 0.0) + signed(str(order["side"]), float(order["amount_usd"]))
    return out


def ticket_digest(ticket: Sequence[Mapping[str, Any]]) -> str:
    """What makes two tickets of a day the same: per pool its signed amount, to the cent."""
    targets = sorted((pool, round(amount, 2)) for pool, amount in ticket_targets(ticket).items())
    return hashlib.sha256(orjson.dumps(targets)).hexdigest()


@dataclass(frozen=True)
class LedgerOrder:
    """One order of a revision: its key, pool, side and USD amount, and the exact body POSTed."""

    key: str
    revision: int
    pool: str
    side: str
    amount_usd: float
    body: Mapping[str, Any]

    @property
    def signed(self) -> float:
        return signed(self.side, self.amount_usd)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "revision": self.revision,
            "pool": self.pool,
            "side": self.side,
            "amount_usd": self.amount_usd,
            "body": dict(self.body),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerOrder:
        return cls(
            str(data["key"]),
            int(data["revision"]),
            str(data["pool"]),
            str(data["side"]),
            float(data["amount_usd"]),
            dict(data["body"]),
        )

    @classmethod
    def from_body(cls, body: Mapping[str, Any], revision: int | None = None) -> LedgerOrder:
        rev = int(body.get("revision", 0) if revision is None else revision)
        return cls(
            str(body["idempotency_key"]),
            rev,
            str(body["pool"]),
            str(body["side"]),
            float(body["amount_usd"]),
            dict(body),
        )


@dataclass(frozen=True)
class Answer:
    """The endpoint's definitive answer to one order (2xx or 4xx)."""

    status: str
    http_status: int | None
    filled_usd: float | None
    message: str
    response: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "http_status": self.http_status,
            "filled_usd": self.filled_usd,
            "message": self.message,
            "response": dict(self.response),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Answer:
        filled = data.get("filled_usd")
        return cls(
            str(data["status"]),
            data.get("http_status"),
            None if filled is None else float(filled),
            str(data.get("message", "")),
            dict(data.get("response") or {}),
        )


def executed_amount(answer: Answer, amount_usd: float) -> float:
    """USD executed (unsigned) by an order of ``amount_usd`` that got ``answer``."""
    if answer.status in FILL_STATUSES:
        return amount_usd if answer.filled_usd is None else max(0.0, answer.filled_usd)
    if answer.status in NOTHING_STATUSES or (
        answer.http_status is not None and 400 <= answer.http_status < 500
    ):
        return 0.0
    return amount_usd  # accepted, pending, ...: it may still fill in full


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger knows of one key: the order, when it was sent (written before the POST), and
    the answer once there is one (``answer`` None: unknown, the order must be re-sent)."""

    order: LedgerOrder
    sent_at: str | None
    answer: Answer | None = None
    answered_at: str | None = None
    #: when the order executed: the endpoint's ``filled_at`` when it gives one, else ``answered_at``
    executed_at: str | None = None
    attempts: int = 0

    @property
    def unknown(self) -> bool:
        return self.answer is None

    @property
    def executed_usd(self) -> float:
        """Signed USD executed; an unknown order counts in full (it may have executed)."""
        amount = (
            self.order.amount_usd
            if self.answer is None
            else executed_amount(self.answer, self.order.amount_usd)
        )
        return signed(self.order.side, amount)

    def executed_after(self, as_of: pd.Timestamp | None) -> bool:
        """Did it execute after ``as_of`` (so positions read at ``as_of`` do not show it)? A time that
        is missing or unreadable counts as after: the safe side is to count it."""
        when = _utc(self.executed_at or self.answered_at or self.sent_at)
        return as_of is None or when is None or when > as_of

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.order.key,
            "revision": self.order.revision,
            "order": dict(self.order.body),
            "order_digest": body_digest(self.order.body),
            "sent_at": self.sent_at,
            "outcome": None if self.answer is None else self.answer.to_json(),
            "answered_at": self.answered_at,
            "executed_at": self.executed_at,
            "attempts": self.attempts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerEntry:
        body = data["order"]
        outcome = data.get("outcome")
        answered = data.get("answered_at") or data.get(
            "recorded_at"
        )  # recorded_at: a flat (pre-revision) entry
        return cls(
            LedgerOrder.from_body(body, data.get("revision", body.get("revision", 0))),
            data.get("sent_at"),
            None if outcome is None else Answer.from_json(outcome),
            answered if outcome is not None else None,
            data.get("executed_at") or (answered if outcome is not None else None),
            int((outcome or {}).get("attempts", data.get("attempts", 0)) or 0),
        )


@dataclass(frozen=True)
class Revision:
    """One ticket of the day as sent: its digest, the orders (the difference to what was executed
    before it), and that basis (target and executed per pool)."""

    revision: int
    ticket_digest: str | None  # None: entries written before revisions existed (see plan_day)
    orders: tuple[LedgerOrder, ...]
    created_at: str
    target: Mapping[str, float] = field(default_factory=dict)
    executed_before: Mapping[str, float] = field(default_factory=dict)
    legacy: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "ticket_digest": self.ticket_digest,
            "created_at": self.created_at,
            "legacy": self.legacy,
            "target": dict(self.target),
            "executed_before": dict(self.executed_before),
            "orders": [o.to_json() for o in self.orders],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Revision:
        return cls(
            int(data["revision"]),
            data.get("ticket_digest"),
            tuple(LedgerOrder.from_json(o) for o in data.get("orders", [])),
            str(data.get("created_at", "")),
            dict(data.get("target") or {}),
            dict(data.get("executed_before") or {}),
            bool(data.get("legacy")),
        )


@dataclass(frozen=True)
class PositionsBasis:
    """The positions the day was decided from: the idle cash (USD) and when each row was read."""

    cash_usd: float
    cash_as_of: pd.Timestamp | None
    as_of: Mapping[str, pd.Timestamp] = field(default_factory=dict)

    def pool_as_of(self, pool: str) -> pd.Timestamp | None:
        """A pool's row ``as_of``; a pool without a row: the cash row's (the snapshot's time)."""
        return self.as_of.get(pool, self.cash_as_of)

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, cash_pool: str = "cash") -> PositionsBasis:
        """From a day of ``vault_positions`` (``pool``, ``value_usd``, ``as_of``)."""
        if rows.empty:
            return cls(0.0, None, {})
        as_of = {str(p): _utc(t) for p, t in zip(rows["pool"], rows["as_of"], strict=True)}
        cash = rows["pool"].eq(cash_pool)
        cash_as_of = _utc(rows.loc[cash, "as_of"].max()) if cash.any() else _utc(rows["as_of"].max())
        return cls(
            float(rows.loc[cash, "value_usd"].sum()),
            cash_as_of,
            {p: t for p, t in as_of.items() if p != cash_pool and t is not None},
        )


def executed_since(entries: Iterable[LedgerEntry], basis: PositionsBasis) -> dict[str, float]:
    """Per pool, signed USD the day's orders executed after the positions were read."""
    out: dict[str, float] = {}
    for e in entries:
        if e.executed_after(basis.pool_as_of(e.order.pool)):
            amount = e.executed_usd
            if amount:
                out[e.order.pool] = out.get(e.order.pool, 0.0) + amount
    return out


def resized_body(
    template: Mapping[str, Any], key: str, revision: int, side: str, amount_usd: float
) -> dict[str, Any]:
    """``template`` (the ticket's order for the pool, or an earlier revision's) as an order of
    ``amount_usd`` on ``side``: token and reference amounts scaled, the gains re-signed."""
    body = dict(template)
    old = float(template.get("amount_usd") or 0.0)
    ratio = amount_usd / old if old > 0 else math.nan
    for name in _SCALED:
        value = template.get(name)
        body[name] = value * ratio if isinstance(value, int | float) and math.isfinite(ratio) else None
    gain = template.get("expected_annual_gain_usd")
    if isinstance(gain, int | float) and old > 0:  # deposit A (apy - b), withdraw A (b - apy)
        per_usd = gain / old * (1.0 if template.get("side") == DEPOSIT else -1.0)
        new_gain = amount_usd * per_usd * (1.0 if side == DEPOSIT else -1.0)
        body["expected_annual_gain_usd"] = new_gain
        horizon = template.get("horizon_gain_usd")
        if isinstance(horizon, int | float) and gain:
            body["horizon_gain_usd"] = horizon / gain * new_gain
        gas = template.get("gas_usd")
        if isinstance(gas, int | float):
            body["gain_over_gas"] = new_gain / gas if gas > 0 else None
    body.update({"side": side, "amount_usd": amount_usd, "idempotency_key": key, "revision": revision})
    if revision > 0:
        body["reason"] = f"revision {revision}: the day's target minus what its earlier orders executed"
    return body


def first_revision(
    vault: str, day: dt.date, ticket: Sequence[Mapping[str, Any]], min_order_usd: float, created_at: str
) -> Revision:
    """Revision 0: the ticket's orders of ``min_order_usd`` and up, with the ticket's keys."""
    orders = []
    for order in ticket:
        if float(order["amount_usd"]) < max(min_order_usd, MIN_ORDER_FLOOR_USD):
            continue
        key = revision_key(vault, day, str(order["pool"]), 0)
        body = dict(order) | {"idempotency_key": key, "revision": 0}
        orders.append(
            LedgerOrder(key, 0, str(order["pool"]), str(order["side"]), float(order["amount_usd"]), body)
        )
    return Revision(0, ticket_digest(ticket), tuple(orders), created_at, ticket_targets(ticket), {})


def difference_revision(
    vault: str,
    day: dt.date,
    revision: int,
    ticket: Sequence[Mapping[str, Any]],
    executed: Mapping[str, float],
    min_order_usd: float,
    created_at: str,
    templates: Mapping[str, Mapping[str, Any]],
) -> Revision:
    """Revision ``revision``: per pool ``target - executed``, orders of ``min_order_usd`` and up.
    ``templates``: an earlier body per pool, for pools the ticket no longer trades (reversed)."""
    target = ticket_targets(ticket)
    by_pool = {str(o["pool"]): o for o in ticket}
    floor = max(min_order_usd, MIN_ORDER_FLOOR_USD)
    orders = []
    for pool in sorted(set(target) | set(executed)):
        diff = target.get(pool, 0.0) - executed.get(pool, 0.0)
        if abs(diff) < floor:
            continue
        side = DEPOSIT if diff > 0 else WITHDRAW
        key = revision_key(vault, day, pool, revision)
        template = (
            by_pool.get(pool)
            or templates.get(pool)
            or {"pool": pool, "vault": vault, "date": day.isoformat()}
        )
        orders.append(
            LedgerOrder(
                key, revision, pool, side, abs(diff), resized_body(template, key, revision, side, abs(diff))
            )
        )
    orders.sort(key=lambda o: -o.amount_usd)
    return Revision(revision, ticket_digest(ticket), tuple(orders), created_at, target, dict(executed))


def legacy_revision(entries: Iterable[LedgerEntry]) -> Revision | None:
    """Entries written before revisions existed (one flat file per key): revision 0, digest unknown."""
    orders = tuple(e.order for e in entries if e.order.revision == 0)
    if not orders:
        return None
    return Revision(
        0,
        None,
        orders,
        "",
        ticket_targets([{"pool": o.pool, "side": o.side, "amount_usd": o.amount_usd} for o in orders]),
        {},
        legacy=True,
    )


def _same_orders(legacy: Revision, ticket_rev: Revision) -> bool:
    """Every legacy order is the ticket's order for its key (same pool, side and amount to the cent)."""
    mine = {o.key: o for o in ticket_rev.orders}
    return all(
        o.key in mine
        and mine[o.key].pool == o.pool
        and mine[o.key].side == o.side
        and round(mine[o.key].amount_usd, 2) == round(o.amount_usd, 2)
        for o in legacy.orders
    )


@dataclass(frozen=True)
class DayPlan:
    """What a run does for the day: the revision it works on, whether it is new (written before any
    order of it is sent), the revisions to record first (a legacy revision 0), and its orders not yet
    in the ledger (withdrawals first, then deposits, largest first)."""

    revision: Revision
    new: bool
    to_record: tuple[Revision, ...]
    pending: tuple[LedgerOrder, ...]
    executed_before: Mapping[str, float]
    target: Mapping[str, float]


def send_order(orders: Iterable[LedgerOrder]) -> list[LedgerOrder]:
    """Withdrawals first (they fund the deposits), then deposits; largest first within each."""
    return sorted(orders, key=lambda o: (o.side != WITHDRAW, -o.amount_usd, o.pool))


def plan_day(
    vault: str,
    day: dt.date,
    ticket: Sequence[Mapping[str, Any]],
    revisions: Sequence[Revision],
    entries: Mapping[str, LedgerEntry],
    basis: PositionsBasis,
    min_order_usd: float,
    created_at: str,
) -> DayPlan:
    """The revision to send for ``ticket`` given the day's ledger (``revisions`` in order, ``entries``
    by key, none unknown) and the positions the ticket was decided from."""
    records: list[Revision] = []
    latest = revisions[-1] if revisions else legacy_revision(entries.values())
    digest = ticket_digest(ticket)
    executed = executed_since(entries.values(), basis)
    if latest is None:
        current, new = first_revision(vault, day, ticket, min_order_usd, created_at), True
    elif latest.ticket_digest == digest:
        current, new = latest, False
    else:
        adopted = first_revision(vault, day, ticket, min_order_usd, created_at)
        if latest.legacy and _same_orders(latest, adopted):
            current, new = adopted, True  # the flat entries were this ticket's: carry on with it
        else:
            if latest.legacy:
                records.append(latest)
            templates: dict[str, Mapping[str, Any]] = {}
            for rev in [*revisions, *records]:
                templates |= {o.pool: o.body for o in rev.orders}
            current = difference_revision(
                vault, day, latest.revision + 1, ticket, executed, min_order_usd, created_at, templates
            )
            new = True
    pending = tuple(send_order(o for o in current.orders if o.key not in entries))
    return DayPlan(current, new, tuple(records), pending, executed, ticket_targets(ticket))


@dataclass
class CashGuard:
    """Cash a deposit may use: the positions' cash plus withdrawals filled minus deposits executed
    since the positions were read (the ledger's, then this run's)."""

    cash_usd: float
    withdrawals_filled_usd: float = 0.0
    deposits_executed_usd: float = 0.0
    held: list[LedgerOrder] = field(default_factory=list)

    @classmethod
    def from_ledger(cls, basis: PositionsBasis, entries: Iterable[LedgerEntry]) -> CashGuard:
        guard = cls(basis.cash_usd)
        for e in entries:
            if e.executed_after(basis.cash_as_of):
                guard.record(e.order, e.answer)
        return guard

    @property
    def available_usd(self) -> float:
        return self.cash_usd + self.withdrawals_filled_usd - self.deposits_executed_usd

    def admit(self, order: LedgerOrder) -> bool:
        """May ``order`` be sent? Withdrawals always; a deposit only if it fits (else it is held)."""
        if order.side == WITHDRAW or order.amount_usd <= self.available_usd + CASH_TOLERANCE_USD:
            return True
        self.held.append(order)
        return False

    def record(self, order: LedgerOrder, answer: Answer | None) -> None:
        """Account an order sent (``answer`` None: no definitive answer, the worst case is assumed)."""
        if order.side == WITHDRAW:
            if answer is not None and answer.status in FILL_STATUSES:
                self.withdrawals_filled_usd += executed_amount(answer, order.amount_usd)
        else:
            self.deposits_executed_usd += (
                order.amount_usd if answer is None else executed_amount(answer, order.amount_usd)
            )

    def summary(self) -> dict[str, float | int]:
        return {
            "cash_usd": self.cash_usd,
            "withdrawals_filled_usd": self.withdrawals_filled_usd,
            "deposits_executed_usd": self.deposits_executed_usd,
            "available_usd": self.available_usd,
            "held": len(self.held),
            "held_usd": float(sum(o.amount_usd for o in self.held)),
        }


@dataclass(frozen=True)
class ExecutionRow:
    """One line of ``order_executions``: an order of the day and what became of it."""

    idempotency_key: str
    revision: int
    pool: str
    side: str
    amount_usd: float
    status: str
    http_status: int | None
    filled_usd: float | None
    message: str
    attempts: int  # POSTs made in this run (0: dry run, held, or answered by an earlier run)
    from_ledger: bool


def ledger_row(entry: LedgerEntry, sent_now: bool, message: str = "") -> ExecutionRow:
    o, a = entry.order, entry.answer
    if a is None:
        return ExecutionRow(
            o.key,
            o.revision,
            o.pool,
            o.side,
            o.amount_usd,
            FAILED,
            None,
            None,
            message or "sent without a definitive answer: re-sent with its key by the next run",
            entry.attempts if sent_now else 0,
            not sent_now,
        )
    return ExecutionRow(
        o.key,
        o.revision,
        o.pool,
        o.side,
        o.amount_usd,
        a.status,
        a.http_status,
        a.filled_usd,
        a.message,
        entry.attempts if sent_now else 0,
        not sent_now,
    )


def held_row(order: LedgerOrder, available_usd: float) -> ExecutionRow:
    return ExecutionRow(
        order.key,
        order.revision,
        order.pool,
        order.side,
        order.amount_usd,
        HELD_NO_CASH,
        None,
        None,
        f"not sent: the deposit exceeds the cash available ({available_usd:,.2f} USD: the "
        "positions' cash plus withdrawals filled minus deposits executed)",
        0,
        False,
    )


@dataclass(frozen=True)
class DayExecution:
    """What ``order_executions`` did for one day."""

    rows: tuple[ExecutionRow, ...]
    revision: int | None  # the revision worked on (None: dry run, or blocked by unknown orders)
    new_revision: bool
    unknown: tuple[str, ...]  # keys still without a definitive answer (nothing new was sent)
    cash: Mapping[str, float | int]
    target: Mapping[str, float] = field(default_factory=dict)
    executed_before: Mapping[str, float] = field(default_factory=dict)
    migrated: int = 0
