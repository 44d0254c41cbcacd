"""A small local execution endpoint for tests and demos (``midfreq execution-server``).

It stands where a desk's signer/executor would: it accepts the orders ``<vault>/order_executions``
POSTs, records them, fills, partially fills or rejects them as told, and keeps a book per vault so
that the next day's positions can be read back from it (the loop closes without a chain).

- ``POST /orders`` with header ``Idempotency-Key`` and an order object (``vault, pool, side,
  amount_usd``...): 200 ``{"status": "filled" | "partially_filled", "filled_usd", "filled_at",
  "order_id", ...}``, or 422 ``{"status": "rejected", ...}`` for a pool told to reject. The server's
  clock is its book's calendar: an order of day D (its ``date``) fills at the start of D+1
  (``filled_at`` ``D+1T00:00:00Z``, after that day's positions were read at the end of D), an order
  without a date now. The same key again answers the
  recorded response (header ``Idempotent-Replayed: true``) and executes nothing; the same key with
  a different order answers 409. No key or a body that is not an order: 400.
- ``GET /orders``: every recorded order with its response and how many times its key was posted.
- ``GET /positions/<vault>?date=YYYY-MM-DD``: the vault's book at the end of that day (``pool,
  amount_usd, as_of``; idle cash as ``pool: cash``): the seeded book plus the fills with a
  ``filled_at`` up to ``as_of`` (``<date>T23:59:00Z``), as a positions source.

Behaviour is set per server (``fill_ratio``, ``reject_pools``, ``partial_fills`` per pool);
``fail_next(n)`` answers the next n POSTs with 503 (a transient failure the client retries, nothing
executed), ``lose_answers(n)`` executes the next POSTs but answers 503 n times (an answer lost on
the way back: the order executed, the client does not know it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import sys
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CASH = "cash"
KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
#: Largest order body accepted (an order is a few hundred bytes).
MAX_BODY_BYTES = 64 * 1024
SIDES = ("deposit", "withdraw")


@dataclass
class ExecutionBehaviour:
    """How the server answers: share filled by default, per-pool partial fills, pools rejected."""

    fill_ratio: float = 1.0
    partial_fills: dict[str, float] = field(default_factory=dict)
    reject_pools: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for ratio in (self.fill_ratio, *self.partial_fills.values()):
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"fill ratio must be within [0, 1], got {ratio}")


@dataclass
class RecordedOrder:
    key: str
    order: dict[str, Any]
    digest: str
    status_code: int
    response: dict[str, Any]
    posts: int = 1


def _digest(order: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(order, sort_keys=True, default=str).encode()).hexdigest()


class ExecutionServer:
    """The local execution endpoint; a context manager (thread) or ``serve_forever`` (the CLI)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        behaviour: ExecutionBehaviour | None = None,
        record_path: Path | None = None,
        verbose: bool = False,
    ) -> None:
        self.host, self._requested_port = host, port
        self.behaviour = behaviour or ExecutionBehaviour()
        self.record_path = record_path
        self.verbose = verbose
        self._lock = threading.Lock()
        self._orders: dict[str, RecordedOrder] = {}
        self._books: dict[str, dict[str, float]] = {}
        self._fills: dict[str, list[tuple[dt.datetime, str, float]]] = {}
        self._fail_next = 0
        self._lose_next = 0
        self.posts = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> ExecutionServer:
        if self._httpd is None:
            self._httpd = _Server((self.host, self._requested_port), _Handler)
            self._httpd.execution = self
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="execution-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        if self._httpd is None:
            self._httpd = _Server((self.host, self._requested_port), _Handler)
            self._httpd.execution = self
        self._httpd.serve_forever(poll_interval=0.1)

    def shutdown_from_signal(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()

    def stop(self) -> None:
        if self._httpd is None:
            return
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        self._httpd = None

    def __enter__(self) -> ExecutionServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    def env(self) -> dict[str, str]:
        """``MIDFREQ_EXECUTION_URL`` pointing ``order_executions`` at this server."""
        return {"MIDFREQ_EXECUTION_URL": self.base_url}

    # ----------------------------------------------------------------- control
    def seed_book(self, vault: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Start ``vault``'s book from positions rows (``pool``, ``amount_usd``; ``cash`` for idle)."""
        with self._lock:
            self._books[vault] = {str(r["pool"]).lower(): float(r["amount_usd"]) for r in rows}
            self._fills[vault] = []

    def fail_next(self, n: int) -> None:
        """Answer the next ``n`` order POSTs with 503 (nothing executed)."""
        with self._lock:
            self._fail_next = n

    def lose_answers(self, n: int) -> None:
        """Execute (or replay) the next order POSTs as usual but answer 503 to ``n`` of them."""
        with self._lock:
            self._lose_next = n

    @property
    def orders(self) -> dict[str, RecordedOrder]:
        with self._lock:
            return dict(self._orders)

    def book(self, vault: str, until: dt.datetime | None = None) -> dict[str, float]:
        """The vault's book now, or at ``until``: the seed plus the fills up to that time."""
        with self._lock:
            book = dict(self._books.get(vault, {}))
            for when, pool, amount in self._fills.get(vault, []):
                if until is None or when <= until:
                    book[pool] = book.get(pool, 0.0) + amount
                    book[CASH] = book.get(CASH, 0.0) - amount
            return book

    # ----------------------------------------------------------------- answers
    def _execute(self, key: str, order: dict[str, Any]) -> tuple[int, dict[str, Any], bool]:
        """(status code, body, replayed) for one POST; executes at most once per key."""
        code, body, replayed = self._answer(key, order)
        with self._lock:
            if self._lose_next > 0 and code < 500 and code != 409:
                self._lose_next -= 1
                return 503, {"status": "unavailable", "message": "answer lost"}, False
        return code, body, replayed

    def _answer(self, key: str, order: dict[str, Any]) -> tuple[int, dict[str, Any], bool]:
        digest = _digest(order)
        with self._lock:
            self.posts += 1
            seen = self._orders.get(key)
            if seen is not None:
                seen.posts += 1
                if seen.digest != digest:
                    return (
                        409,
                        {"status": "conflict", "message": f"key {key} was used for a different order"},
                        False,
                    )
                return seen.status_code, seen.response, True
            if self._fail_next > 0:
                self._fail_next -= 1
                return 503, {"status": "unavailable", "message": "try again"}, False
            pool = str(order["pool"]).lower()
            amount = float(order["amount_usd"])
            if pool in self.behaviour.reject_pools:
                code, body = 422, {"status": "rejected", "filled_usd": 0.0, "message": f"pool {pool} refused"}
            else:
                ratio = self.behaviour.partial_fills.get(pool, self.behaviour.fill_ratio)
                filled = amount * ratio
                when = _fill_time(order.get("date"))
                code, body = (
                    200,
                    {
                        "status": "filled" if ratio >= 1.0 else "partially_filled",
                        "filled_usd": filled,
                        "filled_at": when.isoformat().replace("+00:00", "Z"),
                    },
                )
                sign = 1.0 if order["side"] == "deposit" else -1.0
                self._fills.setdefault(str(order["vault"]), []).append((when, pool, sign * filled))
            body |= {"order_id": str(uuid.uuid4()), "idempotency_key": key, "requested_usd": amount}
            self._orders[key] = RecordedOrder(key, order, digest, code, body)
            self._append_record(self._orders[key])
            return code, body, False

    def _append_record(self, rec: RecordedOrder) -> None:
        if self.record_path is None:
            return
        line = json.dumps(
            {"key": rec.key, "order": rec.order, "status_code": rec.status_code, "response": rec.response},
            default=str,
        )
        with self.record_path.open("a") as fh:
            fh.write(line + "\n")

    def _positions(self, vault: str, day: str) -> list[dict[str, Any]]:
        end = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(23, 59), tzinfo=dt.UTC)
        as_of = end.isoformat().replace("+00:00", "Z")
        return [
            {"pool": p, "amount_usd": round(v, 6), "as_of": as_of}
            for p, v in sorted(self.book(vault, until=end).items())
        ]

    def _recorded(self) -> dict[str, Any]:
        return {
            k: {"order": r.order, "status_code": r.status_code, "response": r.response, "posts": r.posts}
            for k, r in self.orders.items()
        }


def _fill_time(day: Any) -> dt.datetime:
    """When an order fills on this server's calendar: the start of the day after its ``date``, else now."""
    try:
        return dt.datetime.combine(
            dt.date.fromisoformat(str(day)[:10]) + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC
        )
    except ValueError:
        return dt.datetime.now(dt.UTC)


def _bad_order(order: Any) -> str | None:
    if not isinstance(order, dict):
        return "expected a JSON object"
    for key in ("vault", "pool", "side", "amount_usd"):
        if key not in order:
            return f"missing {key!r}"
    if order["side"] not in SIDES:
        return f"side must be one of {SIDES}"
    if not isinstance(order["amount_usd"], int | float) or order["amount_usd"] < 0:
        return "amount_usd must be a number >= 0"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    execution: ExecutionServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "midfreq-execution/1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.execution.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _send(self, code: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        parts = [p for p in split.path.split("/") if p]
        if parts == ["orders"]:
            return self._send(200, self.server.execution._recorded())
        if len(parts) == 2 and parts[0] == "positions":
            day = parse_qs(split.query).get("date", [dt.datetime.now(dt.UTC).date().isoformat()])[0]
            try:
                return self._send(200, self.server.execution._positions(parts[1], day))
            except ValueError:
                return self._send(400, {"message": f"date {day!r} is not YYYY-MM-DD"})
        self._send(404, {"message": f"no such path {split.path}"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path.rstrip("/") != "/orders":
            return self._send(404, {"message": f"no such path {self.path}"})
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            return self._send(
                400 if not length.isdigit() else 413, {"message": "Content-Length missing or too large"}
            )
        raw = self.rfile.read(int(length))
        key = self.headers.get(KEY_HEADER, "").strip()
        if not key:
            return self._send(400, {"message": f"missing {KEY_HEADER} header"})
        try:
            order = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._send(400, {"message": "body is not JSON"})
        problem = _bad_order(order)
        if problem:
            return self._send(400, {"message": f"not an order: {problem}"})
        code, body, replayed = self.server.execution._execute(key, order)
        self._send(code, body, {REPLAYED_HEADER: "true"} if replayed else None)
