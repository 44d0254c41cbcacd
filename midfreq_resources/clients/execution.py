"""The execution endpoint client: POST each order once, with its idempotency key, and remember it.

- One ``POST {url}/orders`` per order, JSON body, header ``Idempotency-Key``; transient failures
  (429, 5xx, timeouts, dropped connections) are retried a bounded number of times **with the same
  key**, so an endpoint honouring it executes the order at most once even when an answer was lost.
- Every definitive answer (2xx, or a 4xx: rejected, conflict, invalid) is written to a ledger in
  the lake (``<vault>/execution_ledger/<key>.json``, atomically) before the next order is sent; an
  order whose key is in the ledger is never POSTed again: its recorded answer is reused (a rerun of
  the day, a retry of the run). An order whose key was recorded with a different body is not sent
  (``ledger_conflict``). Retries exhausted: ``failed`` and no ledger entry, so a later run sends it
  again with the same key.
- No URL (neither the vault's ``execution.url`` nor ``$MIDFREQ_EXECUTION_URL``), or
  ``execution.dry_run``: nothing is sent, every order is ``dry_run``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import httpx
import orjson
from dagster import ConfigurableResource
from pydantic import Field
from tenacity import Retrying
from upath import UPath

from midfreq_resources.clients.http_retry import (
    MIB,
    MalformedResponseError,
    RetryPolicy,
    SourceError,
    TransientSourceError,
    _retrying_kwargs,
    parse_json,
    parse_retry_after,
    request_once,
)
from midfreq_resources.io.lake import write_bytes_atomic
from midfreq_resources.settings import env_or

EXECUTION_URL_ENV = "MIDFREQ_EXECUTION_URL"
KEY_HEADER = "Idempotency-Key"
#: Largest answer read for one order (an answer is a few hundred bytes).
MAX_ANSWER_BYTES = MIB
DRY_RUN, FAILED, LEDGER_CONFLICT = "dry_run", "failed", "ledger_conflict"


def order_digest(order: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(order, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class OrderOutcome:
    """What became of one order: its status, the HTTP status and answer, and how it was obtained."""

    idempotency_key: str
    status: str  # the endpoint's status (filled, partially_filled, rejected, ...), or dry_run / failed / ...
    http_status: int | None
    filled_usd: float | None
    message: str
    attempts: int  # POSTs made in this run (0: dry run or from the ledger)
    from_ledger: bool  # the answer was recorded by an earlier run: nothing sent now
    response: dict[str, Any]


class ExecutionClient(ConfigurableResource):
    """POSTs orders to the execution endpoint; ``base_url`` empty: ``$MIDFREQ_EXECUTION_URL`` at run
    time, else no endpoint (dry run). A vault's ``execution.url`` overrides both."""

    ENV_VAR: ClassVar[str] = EXECUTION_URL_ENV
    base_url: str = Field(default="", description="execution endpoint; empty: $MIDFREQ_EXECUTION_URL, else dry run")

    def endpoint(self, configured: str | None) -> str | None:
        url = (configured or self.base_url or env_or(EXECUTION_URL_ENV, "")).strip().rstrip("/")
        return url or None

    def submit(self, orders: Sequence[dict[str, Any]], url: str | None, ledger: UPath, policy: RetryPolicy,
               timeout_s: float) -> list[OrderOutcome]:
        """Send each order (or not: dry run, ledger) and return its outcome, in order."""
        if url is None:
            return [OrderOutcome(o["idempotency_key"], DRY_RUN, None, None, "dry run: no execution URL", 0, False, {})
                    for o in orders]
        out = []
        with httpx.Client(timeout=timeout_s) as client:
            for order in orders:
                out.append(self._one(client, f"{url}/orders", order, ledger, policy))
        return out

    def _one(self, client: httpx.Client, url: str, order: dict[str, Any], ledger: UPath,
             policy: RetryPolicy) -> OrderOutcome:
        key = order["idempotency_key"]
        digest = order_digest(order)
        entry = ledger / f"{key}.json"
        if entry.exists():
            recorded = orjson.loads(entry.read_bytes())
            if recorded["order_digest"] != digest:
                return OrderOutcome(key, LEDGER_CONFLICT, None, None, f"key already sent with a different order "
                                    f"({entry}); not sent", 0, True, recorded["outcome"]["response"])
            return OrderOutcome(**(recorded["outcome"] | {"attempts": 0, "from_ledger": True}))
        attempts = 0
        body = orjson.dumps(order)
        headers = {KEY_HEADER: key, "Content-Type": "application/json"}
        try:
            for attempt in Retrying(**_retrying_kwargs(policy)):
                with attempt:
                    attempts += 1
                    response = _post_once(client, url, body, headers, policy.request_deadline_s)
        except SourceError as exc:
            return OrderOutcome(key, FAILED, exc.status, None, f"{exc} (after {attempts} attempt(s); not recorded: "
                                "a later run sends it again with the same key)", attempts, False, {})
        outcome = _outcome(key, response, attempts)
        record = {"order_digest": digest, "order": order, "recorded_at": dt.datetime.now(dt.UTC).isoformat(),
                  "outcome": asdict(outcome) | {"attempts": attempts}}
        write_bytes_atomic(entry, orjson.dumps(record, option=orjson.OPT_INDENT_2))
        return outcome


def _post_once(client: httpx.Client, url: str, body: bytes, headers: dict[str, str],
               deadline_s: float) -> httpx.Response:
    """One POST, its answer read under the size limit and the deadline; transient answers raise."""
    response = request_once(client, "POST", url, MAX_ANSWER_BYTES, deadline_s, content=body, headers=headers)
    status = response.status_code
    if status in (408, 429) or status >= 500:
        raise TransientSourceError(f"HTTP {status} from {url}", url, status,
                                   parse_retry_after(response.headers.get("Retry-After")))
    return response


def _outcome(key: str, response: httpx.Response, attempts: int) -> OrderOutcome:
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
    return OrderOutcome(key, str(body.get("status") or default), status,
                        float(filled) if isinstance(filled, int | float) else None,
                        str(body.get("message", "")), attempts, False, body)
