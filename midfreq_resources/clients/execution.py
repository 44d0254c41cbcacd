"""The execution endpoint client: send a day's orders as the difference to its target, never twice.

- One ``POST {url}/orders`` per order, JSON body, header ``Idempotency-Key``; transient failures
  (429, 5xx, timeouts, dropped connections) are retried **with the same key** within one deadline
  for the order (``RetryPolicy.total_deadline_s``), so an endpoint honouring it executes the order
  at most once even when an answer was lost.
- The ledger (``<lake>/<vault>/execution_ledger/<day>/``, :class:`LedgerStore`) holds the day's
  revisions (``revision-<r>.json``: the ticket's digest, its orders, the target and what had
  executed before it) and one file per order key (``<key>.json``): written *before* the POST
  (``sent_at``, write-ahead) and rewritten with the answer (``outcome``, ``answered_at``,
  ``executed_at``) before the next order is sent. What a run sends is decided by
  ``domain.portfolio.execution_ledger``: unknown orders (sent, no answer) re-sent first with their
  own key and body; the same ticket answered from the ledger; a changed ticket a new revision of
  ``target - executed``; withdrawals first, deposits only within the cash (``held_no_cash``).
- A ledger of flat ``execution_ledger/<key>.json`` files (before revisions) is moved, once and
  unchanged but for added fields, into the per-day folders (their orders carry their day).
- No URL (neither the vault's ``execution.url`` nor ``$MIDFREQ_EXECUTION_URL``), or
  ``execution.dry_run``: nothing is sent, nothing is written, every order is ``dry_run``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx
import orjson
from dagster import ConfigurableResource
from pydantic import Field
from tenacity import Retrying
from upath import UPath

from midfreq_assets.domain.portfolio.execution_ledger import (
    DRY_RUN,
    FAILED,
    Answer,
    CashGuard,
    DayExecution,
    ExecutionRow,
    LedgerEntry,
    LedgerOrder,
    PositionsBasis,
    Revision,
    first_revision,
    held_row,
    ledger_row,
    plan_day,
)
from midfreq_resources.clients.http_retry import (
    MIB,
    Budget,
    MalformedResponseError,
    RetryPolicy,
    SourceError,
    TransientSourceError,
    _retrying_kwargs,
    parse_json,
    parse_retry_after,
    request_once,
)
from midfreq_resources.io.lake import list_names, write_bytes_atomic
from midfreq_resources.settings import env_or

EXECUTION_URL_ENV = "MIDFREQ_EXECUTION_URL"
KEY_HEADER = "Idempotency-Key"
#: Largest answer read for one order (an answer is a few hundred bytes).
MAX_ANSWER_BYTES = MIB
REVISION_PREFIX = "revision-"

__all__ = ["DRY_RUN", "EXECUTION_URL_ENV", "FAILED", "ExecutionClient", "LedgerStore"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class LedgerStore:
    """A vault's execution ledger in the lake: ``<root>/<day>/revision-<r>.json`` and ``<root>/<day>/<key>.json``."""

    def __init__(self, root: UPath) -> None:
        self.root = root

    def day_folder(self, day: dt.date) -> UPath:
        return self.root / day.isoformat()

    def migrate_flat(self) -> int:
        """Move flat ``<root>/<key>.json`` entries (written before revisions) into their day's folder,
        content kept (``migrated_from``, ``key``, ``revision`` 0, ``answered_at`` added); returns how many."""
        moved = 0
        for name in list_names(self.root):
            if not name.endswith(".json"):
                continue
            flat = self.root / name
            record = orjson.loads(flat.read_bytes())
            day = str((record.get("order") or {}).get("date") or "")[:10]
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                continue  # not an order entry of ours: left where it is
            key = str(record.get("outcome", {}).get("idempotency_key") or name.removesuffix(".json"))
            target = self.root / day / f"{key}.json"
            if not target.exists():
                record |= {
                    "key": key,
                    "revision": 0,
                    "migrated_from": f"execution_ledger/{name}",
                    "answered_at": record.get("recorded_at"),
                    "executed_at": record.get("recorded_at"),
                    "sent_at": None,
                }
                write_bytes_atomic(target, orjson.dumps(record, option=orjson.OPT_INDENT_2))
            flat.unlink()
            moved += 1
        return moved

    def load_day(self, day: dt.date) -> tuple[list[Revision], dict[str, LedgerEntry]]:
        folder = self.day_folder(day)
        revisions, entries = [], {}
        for name in list_names(folder):
            if not name.endswith(".json"):
                continue
            data = orjson.loads((folder / name).read_bytes())
            if name.startswith(REVISION_PREFIX):
                revisions.append(Revision.from_json(data))
            else:
                entry = LedgerEntry.from_json(data)
                entries[entry.order.key] = entry
        return sorted(revisions, key=lambda r: r.revision), entries

    def write_revision(self, day: dt.date, revision: Revision) -> None:
        path = self.day_folder(day) / f"{REVISION_PREFIX}{revision.revision}.json"
        write_bytes_atomic(path, orjson.dumps(revision.to_json(), option=orjson.OPT_INDENT_2))

    def write_entry(self, day: dt.date, entry: LedgerEntry) -> None:
        path = self.day_folder(day) / f"{entry.order.key}.json"
        write_bytes_atomic(path, orjson.dumps(entry.to_json(), option=orjson.OPT_INDENT_2))


class ExecutionClient(ConfigurableResource):
    """POSTs orders to the execution endpoint; ``base_url`` empty: ``$MIDFREQ_EXECUTION_URL`` at run
    time, else no endpoint (dry run). A vault's ``execution.url`` overrides both."""

    ENV_VAR: ClassVar[str] = EXECUTION_URL_ENV
    base_url: str = Field(
        default="", description="execution endpoint; empty: $MIDFREQ_EXECUTION_URL, else dry run"
    )

    def endpoint(self, configured: str | None) -> str | None:
        url = (configured or self.base_url or env_or(EXECUTION_URL_ENV, "")).strip().rstrip("/")
        return url or None

    def execute_day(
        self,
        vault: str,
        day: dt.date,
        ticket: Sequence[Mapping[str, Any]],
        url: str | None,
        ledger: UPath,
        basis: PositionsBasis,
        policy: RetryPolicy,
        timeout_s: float,
        min_order_usd: float = 0.0,
    ) -> DayExecution:
        """Send what the day still needs of ``ticket`` (see the module docstring) and say what became of
        every order of the day. ``basis``: the positions the ticket was decided from."""
        if url is None:
            rev = first_revision(vault, day, ticket, min_order_usd, _now())
            rows = tuple(
                ExecutionRow(
                    o.key,
                    0,
                    o.pool,
                    o.side,
                    o.amount_usd,
                    DRY_RUN,
                    None,
                    None,
                    "dry run: no execution URL",
                    0,
                    False,
                )
                for o in rev.orders
            )
            return DayExecution(rows, None, False, (), {"cash_usd": basis.cash_usd}, rev.target, {})
        store = LedgerStore(ledger)
        migrated = store.migrate_flat()
        revisions, entries = store.load_day(day)
        sent_now: dict[str, str] = {}  # key -> message of this run's attempt
        with httpx.Client(timeout=timeout_s) as client:
            # 1. orders sent without a definitive answer: re-sent first, same key and body
            for key in [k for k, e in entries.items() if e.unknown]:
                entries[key], sent_now[key] = self._send(
                    client, f"{url}/orders", store, day, entries[key].order, policy
                )
            unknown = tuple(k for k, e in entries.items() if e.unknown)
            if unknown:  # nothing new while an order may or may not have executed
                guard = CashGuard.from_ledger(basis, entries.values())
                return DayExecution(
                    _rows(entries, sent_now, revisions),
                    None,
                    False,
                    unknown,
                    guard.summary(),
                    migrated=migrated,
                )
            # 2. the revision to send: the same ticket, or the difference to its target
            plan = plan_day(vault, day, ticket, revisions, entries, basis, min_order_usd, _now())
            for rev in (*plan.to_record, *((plan.revision,) if plan.new else ())):
                store.write_revision(day, rev)
            revisions = [*revisions, *plan.to_record, *((plan.revision,) if plan.new else ())]
            # 3. withdrawals first, deposits within the cash
            guard = CashGuard.from_ledger(basis, entries.values())
            for order in plan.pending:
                if not guard.admit(order):
                    continue
                entry, sent_now[order.key] = self._send(client, f"{url}/orders", store, day, order, policy)
                entries[order.key] = entry
                guard.record(order, entry.answer)
        rows = _rows(entries, sent_now, revisions)
        rows += tuple(held_row(o, guard.available_usd) for o in guard.held)
        return DayExecution(
            rows,
            plan.revision.revision,
            plan.new,
            tuple(k for k, e in entries.items() if e.unknown),
            guard.summary(),
            plan.target,
            plan.executed_before,
            migrated,
        )

    def _send(
        self,
        client: httpx.Client,
        url: str,
        store: LedgerStore,
        day: dt.date,
        order: LedgerOrder,
        policy: RetryPolicy,
    ) -> tuple[LedgerEntry, str]:
        """POST one order: the write-ahead entry first, then the answer (or no answer: unknown)."""
        entry = LedgerEntry(order, _now())
        store.write_entry(day, entry)
        budget = Budget(policy)
        body = orjson.dumps(dict(order.body))
        headers = {KEY_HEADER: order.key, "Content-Type": "application/json"}
        try:
            for attempt in Retrying(**_retrying_kwargs(policy, budget)):
                with attempt:
                    response = _post_once(client, url, body, headers, budget.attempt_deadline_s(url))
        except SourceError as exc:
            budget.annotate(exc)
            message = (
                f"{exc} (after {budget.attempts} attempt(s); no definitive answer: the next run re-sends it "
                "with the same key before anything else)"
            )
            return LedgerEntry(order, entry.sent_at, attempts=budget.attempts), message
        answer = _answer(response)
        answered_at = _now()
        filled_at = answer.response.get("filled_at")
        done = LedgerEntry(
            order,
            entry.sent_at,
            answer,
            answered_at,
            filled_at if isinstance(filled_at, str) and filled_at else answered_at,
            budget.attempts,
        )
        store.write_entry(day, done)
        return done, answer.message


def _rows(
    entries: Mapping[str, LedgerEntry], sent_now: Mapping[str, str], revisions: Sequence[Revision]
) -> tuple[ExecutionRow, ...]:
    """Every order of the day in the ledger, by revision and in the order sent."""
    order = {o.key: (r.revision, i) for r in revisions for i, o in enumerate(r.orders)}
    ranked = sorted(
        entries.values(),
        key=lambda e: (e.order.revision, e.sent_at or e.answered_at or "", order.get(e.order.key, (0, 0))[1]),
    )
    return tuple(ledger_row(e, e.order.key in sent_now, sent_now.get(e.order.key, "")) for e in ranked)


def _post_once(
    client: httpx.Client, url: str, body: bytes, headers: dict[str, str], deadline_s: float
) -> httpx.Response:
    """One POST, its answer read under the size limit and the deadline; transient answers raise."""
    response = request_once(client, "POST", url, MAX_ANSWER_BYTES, deadline_s, content=body, headers=headers)
    status = response.status_code
    if status in (408, 429) or status >= 500:
        raise TransientSourceError(
            f"HTTP {status} from {url}", url, status, parse_retry_after(response.headers.get("Retry-After"))
        )
    return response


def _answer(response: httpx.Response) -> Answer:
    """The definitive answer to one order (2xx or 4xx)."""
    status = response.status_code
    try:
        body = parse_json(response)
    except MalformedResponseError as exc:
        body = {"message": str(exc)}
    if not isinstance(body, dict):
        body = {"message": f"answer is a {type(body).__name__}, not an object"}
    default = "accepted" if 200 <= status < 300 else "conflict" if status == 409 else "rejected"
    filled = body.get("filled_usd")
    return Answer(
        str(body.get("status") or default),
        status,
        float(filled) if isinstance(filled, int | float) else None,
        str(body.get("message", "")),
        body,
    )
