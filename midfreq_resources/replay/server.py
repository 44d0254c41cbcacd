"""Offline stand-in for DefiLlama and the Binance archive, with fault injection.

Serves a directory laid out like the live URL paths (see `recorded/README.md`) so the real HTTP
clients run unchanged in tests, demos and reproducible research (`midfreq replay ROOT`).

URL -> file mapping (ROOT is the served directory):

- `/defillama/yields/pools` -> `ROOT/defillama/yields/pools.json`
- `/defillama/yields/chart/<uuid>` -> `ROOT/defillama/yields/chart/<uuid>.json`; a well-formed but
  unrecorded uuid answers 200 `{"status":"success","data":[]}`, a malformed one HTTP 400 with the
  JSON string `"invalid configID!"` (both as the live API does).
- `/defillama/coins/chart/<coins>?<query>` -> `ROOT/defillama/coins/chart/<name>` with `<name>` from
  `coins_chart_filename(coins, query)`: the coins string percent-encoded with nothing kept safe
  (`:` -> `%3A`, `,` -> `%2C`), then, if there is a query, `__` plus the percent-encoded query with
  its parameters sorted, then `.json`. The query-specific file wins; without it the query-less
  file is served; without both, 200 `{"coins":{}}` (what the live API answers for unknown coins).
- `/binance/<path>` -> `ROOT/binance/<path>` (zips and `.CHECKSUM`s); missing -> 404 with an
  S3-style `NoSuchKey` XML body.
- `/defillama/pro/<key>/yields/chartLendBorrow/<uuid>` -> `ROOT/defillama/pro/yields/chartLendBorrow/<uuid>.json`
  (unrecorded uuid: 200 empty data, malformed: 400, as `/chart`), `/defillama/pro/<key>/yields/poolsBorrow`
  -> `ROOT/defillama/pro/yields/poolsBorrow.json` (DefiLlama's paid API); a key other than the
  server's `pro_api_key` answers 401. The free host's `/defillama/yields/chartLendBorrow/...` and
  `/defillama/yields/poolsBorrow` answer 402 (plain text), as the live free API does.
- any other `/defillama/<path>` -> `ROOT/defillama/<path>.json` or the file itself if it exists.
- anything else -> 404.

Faults: `FaultConfig` draws random faults per request (latency, 429/5xx, HTML error pages,
truncated bodies, bodies dripped a few bytes at a time). With a `seed`, the draw for the n-th
request of a path depends only on (seed, path, n), so runs are reproducible even with concurrent
clients. Targeted faults (`force`, `corrupt`, `truncate`, `slow`, `drip`, `oversize`,
`payment_required`) take precedence over random ones;
the first matching rule with requests left wins, patterns are `re.search`ed against the URL path
(without the query string).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import posixpath
import random
import re
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from midfreq_assets.domain.ingest.pool_ids import is_pool_uuid

__all__ = [
    "FaultConfig",
    "ForcedRule",
    "ReplayServer",
    "RequestRecord",
    "Response",
    "coins_chart_filename",
    "is_pool_uuid",
]

JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
XML_TYPE = "application/xml"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
#: The API key the replay server's paid endpoints accept (a placeholder, not a secret).
REPLAY_PRO_API_KEY = "replay-key"
PRO_PREFIX = "/defillama/pro/"
PAID_ON_FREE_HOST = re.compile(r"^/defillama/yields/(chartLendBorrow/|poolsBorrow$)")
PAYMENT_REQUIRED_BODY = (
    "Payment Required: this endpoint needs a DefiLlama API plan (https://defillama.com/subscription)"
)


def coins_chart_filename(coins: str, query: str | Mapping[str, Any] = "") -> str:
    """File name of a recorded `/chart/<coins>?<query>` answer; shared by server and recorder.

    Deterministic and file-safe on every OS: `quote(coins, safe="")` (`:` -> `%3A`, `,` -> `%2C`),
    plus `__<quote(sorted query)>` when there is a query, plus `.json`.
    """
    pairs = (
        sorted(query.items())
        if isinstance(query, Mapping)
        else sorted(parse_qsl(query, keep_blank_values=True))
    )
    name = quote(coins, safe="")
    if pairs:
        name += "__" + quote(urlencode([(str(k), str(v)) for k, v in pairs]), safe="")
    return name + ".json"


@dataclass(frozen=True)
class FaultConfig:
    """Random faults applied to every request; all zero means a faithful replay.

    `error_rate` and `html_error_rate` are disjoint shares of requests (their sum must be <= 1);
    `truncate_rate` is the share of the remaining 200 answers whose body is cut in half:
    `truncate_mode="short"` sends a matching Content-Length (client sees invalid JSON / a bad zip),
    `"close"` announces the full length and drops the connection mid-body (client sees an
    incomplete read).
    """

    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_codes: tuple[int, ...] = (429, 500, 502, 503)
    retry_after_s: int = 1
    truncate_rate: float = 0.0
    truncate_mode: Literal["short", "close"] = "short"
    html_error_rate: float = 0.0
    html_error_codes: tuple[int, ...] = (200, 502)
    drip_rate: float = 0.0
    drip_interval_ms: float = 1000.0
    drip_bytes: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.drip_interval_ms < 0 or self.drip_bytes < 1:
            raise ValueError("drip_interval_ms must be >= 0 and drip_bytes >= 1")
        for name in ("error_rate", "truncate_rate", "html_error_rate", "drip_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.error_rate + self.html_error_rate > 1.0:
            raise ValueError(
                f"error rate ({self.error_rate:g}) + HTML error rate ({self.html_error_rate:g}) "
                "must be <= 1: they are disjoint shares of the requests"
            )
        if self.latency_ms < 0 or self.retry_after_s < 0:
            raise ValueError("latency_ms and retry_after_s must be >= 0")
        if self.truncate_mode not in ("short", "close"):
            raise ValueError(f"truncate_mode must be 'short' or 'close', got {self.truncate_mode!r}")
        if self.error_rate and not self.error_codes:
            raise ValueError("error_rate > 0 needs at least one error code")
        if self.html_error_rate and not self.html_error_codes:
            raise ValueError("html_error_rate > 0 needs at least one html error code")
        object.__setattr__(self, "error_codes", tuple(int(c) for c in self.error_codes))
        object.__setattr__(self, "html_error_codes", tuple(int(c) for c in self.html_error_codes))


class RequestRecord(NamedTuple):
    """One access-log line; `path` is the request target as sent (query string included)."""

    method: str
    path: str
    status: int


@dataclass
class Response:
    """An answer before faults are applied to it."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


RuleAction = Literal["respond", "corrupt", "truncate", "delay", "drip", "oversize"]


@dataclass(frozen=True)
class Drip:
    """Send a body ``chunk`` bytes every ``interval_ms`` (a server that never quite stalls)."""

    interval_ms: float
    chunk: int = 1


@dataclass
class ForcedRule:
    """A targeted fault; `remaining=None` means forever. `hits` counts the requests it answered."""

    pattern: re.Pattern[str]
    action: RuleAction
    remaining: int | None = 1
    status: int = 200
    body: bytes = b""
    content_type: str = TEXT_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None
    delay_ms: float = 0.0
    truncate_mode: Literal["short", "close"] = "short"
    drip: Drip | None = None
    size: int = 0
    announce_length: bool = True
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.pattern.search(path) is not None


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _body_bytes(body: bytes | str | Any) -> tuple[bytes, str]:
    """Forced bodies: bytes/str as given (plain text), anything else JSON-encoded."""
    if isinstance(body, bytes):
        return body, TEXT_TYPE
    if isinstance(body, str):
        return body.encode(), TEXT_TYPE
    return _json_bytes(body), JSON_TYPE


def corrupt_bytes(body: bytes) -> bytes:
    """Damage a body without changing its length, the way a bad re-upload does.

    A `.CHECKSUM` line keeps its shape but gets a wrong digest; anything else (zips) gets bytes
    flipped in the middle, which breaks the CRC and usually the deflate stream.
    """
    if not body:
        return body
    text = body[:64]
    if re.fullmatch(rb"[0-9a-fA-F]{64}", text):
        first = body[:1]
        replacement = b"0" if first != b"0" else b"1"
        return replacement + body[1:]
    data = bytearray(body)
    mid = len(data) // 2
    for i in range(max(0, mid - 4), min(len(data), mid + 4)):
        data[i] ^= 0xFF
    return bytes(data)


def _html_page(status: int) -> bytes:
    reason = _REASONS.get(status, "Error") if status != 200 else "Bad gateway"
    return (
        f"<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>"
        f"<body><center><h1>{status} {reason}</h1></center><hr><center>cloudflare</center>"
        f"</body></html>\n"
    ).encode()


def _s3_not_found(key: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
        f"<Key>{key}</Key><RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()


class _HTTPServer(ThreadingHTTPServer):
    """Thread per connection (daemon), big backlog, no reverse DNS on bind."""

    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True
    replay: ReplayServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-answer (refusing an oversize body, a deadline) is not an error here."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, which can stall on machines without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    server_version = "midfreq-replay/1"
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid 40 ms stalls
    timeout = 120  # idle keep-alive connections eventually free their thread
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.replay._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.replay._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.replay.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _serve(self, head: bool) -> None:
        replay = self.server.replay
        method = "HEAD" if head else "GET"
        split = urlsplit(self.path)
        path = unquote(split.path)
        status = 0
        self._logged = False
        try:
            status = replay._answer(self, method, path, split.query, head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if not self._logged:
                replay._log(RequestRecord(method, self.path, status))

    def send_oversize(self, size: int, announce_length: bool, head: bool) -> int:
        """200 with a ``size``-byte JSON-looking body streamed from a small buffer (never held whole);
        without ``announce_length`` the body is close-delimited (no Content-Length)."""
        self.send_response(200, "OK")
        self.send_header("Content-Type", JSON_TYPE)
        if announce_length:
            self.send_header("Content-Length", str(size))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.server.replay._log(RequestRecord("HEAD" if head else "GET", self.path, 200))
        self._logged = True
        self.end_headers()
        if head:
            return 200
        prefix = b'{"status":"success","data":['
        block = b" " * 65536
        self.wfile.write(prefix)
        sent = len(prefix)
        stop = self.server.replay._stopping
        while sent < size and not stop.is_set():
            piece = block[: min(len(block), size - sent)]
            self.wfile.write(piece)
            sent += len(piece)
        return 200

    def send_answer(
        self,
        resp: Response,
        head: bool,
        truncate: Literal["short", "close"] | None = None,
        drip: Drip | None = None,
    ) -> int:
        body = resp.body
        length = len(body)
        if truncate == "short":
            body = body[: len(body) // 2]
            length = len(body)
        elif truncate == "close":
            body = body[: len(body) // 2]
            self.close_connection = True
        self.send_response(resp.status, _REASONS.get(resp.status))
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(length))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if truncate == "close":
            self.send_header("Connection", "close")
        # Headers and body in one write: one segment per small answer, fewer client wake-ups.
        self._headers_buffer.append(b"\r\n")  # what end_headers() adds before flushing
        payload = b"".join(self._headers_buffer)
        self._headers_buffer = []
        # Logged before the bytes leave, so a client that got its answer always finds it logged.
        self.server.replay._log(RequestRecord("HEAD" if head else "GET", self.path, resp.status))
        self._logged = True
        if drip is not None and not head:
            self.wfile.write(payload)
            self.wfile.flush()
            stop = self.server.replay._stopping
            for i in range(0, len(body), drip.chunk):
                if stop.wait(drip.interval_ms / 1000.0):
                    break
                self.wfile.write(body[i : i + drip.chunk])
                self.wfile.flush()
            return resp.status
        self.wfile.write(payload if head else payload + body)
        if truncate == "close":
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
        return resp.status


class ReplayServer:
    """HTTP replay of a recorded directory; usable as a context manager or via `midfreq replay`.

    >>> with ReplayServer("recorded") as srv:  # doctest: +SKIP
    ...     srv.force(r"/chart/", 429, headers={"Retry-After": "0"}, times=2)
    ...     httpx.get(srv.base_url + "/defillama/yields/pools")
    """

    def __init__(
        self,
        root: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultConfig | None = None,
        verbose: bool = False,
        pro_api_key: str = REPLAY_PRO_API_KEY,
    ) -> None:
        self.root = Path(root).resolve()
        self.pro_api_key = pro_api_key
        if not self.root.is_dir():
            raise FileNotFoundError(f"replay root {self.root} is not a directory")
        self.host = host
        self._requested_port = port
        self._initial_faults = faults or FaultConfig()
        self._faults = self._initial_faults
        self.verbose = verbose
        self._lock = threading.Lock()
        self._rules: list[ForcedRule] = []
        self._log_entries: list[RequestRecord] = []
        self._path_counts: Counter[str] = Counter()
        self._conns: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()  # ends dripped / oversize bodies at stop()

    # ----------------------------------------------------------------- lifecycle
    def bind(self) -> ReplayServer:
        """Open the listening socket (so `base_url` is known) without serving yet."""
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self._requested_port), _Handler)
            self._httpd.replay = self
        return self

    def start(self) -> ReplayServer:
        """Serve from a daemon thread; returns self."""
        self.bind()
        if self._thread is None:
            assert self._httpd is not None
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="replay-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the CLI); returns after `stop()` from another thread."""
        self.bind()
        assert self._httpd is not None
        self._httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        """Stop accepting, drop open keep-alive connections, release the port."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        if self._thread is not None:
            httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd = None
        self._stopping.clear()

    def shutdown_from_signal(self) -> None:
        """Make a foreground `serve_forever` return; safe to call from another thread."""
        if self._httpd is not None:
            self._httpd.shutdown()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def env(self) -> dict[str, str]:
        """The MIDFREQ_* variables that point midfreq's clients at this server."""
        return {
            "MIDFREQ_DEFILLAMA_YIELDS_URL": f"{self.base_url}/defillama/yields",
            "MIDFREQ_DEFILLAMA_COINS_URL": f"{self.base_url}/defillama/coins",
            "MIDFREQ_BINANCE_ARCHIVE_URL": f"{self.base_url}/binance",
            "MIDFREQ_DEFILLAMA_PRO_URL": f"{self.base_url}/defillama/pro",
            # the key only where the corpus recorded the paid endpoints: elsewhere midfreq runs keyless
            **(
                {"MIDFREQ_DEFILLAMA_PRO_API_KEY": self.pro_api_key}
                if (self.root / "defillama" / "pro").is_dir()
                else {}
            ),
        }

    # ----------------------------------------------------------------- request log
    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of the access log, oldest first."""
        with self._lock:
            return list(self._log_entries)

    def count(self, pattern: str = "", status: int | None = None, method: str | None = None) -> int:
        """Number of logged requests whose target matches `pattern` (re.search)."""
        rx = re.compile(pattern)
        return sum(
            1
            for r in self.requests
            if rx.search(r.path)
            and (status is None or r.status == status)
            and (method is None or r.method == method)
        )

    def clear_requests(self) -> None:
        with self._lock:
            self._log_entries.clear()

    # ----------------------------------------------------------------- faults
    @property
    def faults(self) -> FaultConfig:
        return self._faults

    def set_faults(self, faults: FaultConfig | None = None, **changes: Any) -> FaultConfig:
        """Replace the random-fault config (whole, or some fields); returns the new config."""
        base = faults if faults is not None else self._faults
        new = dataclasses.replace(base, **changes) if changes else base
        with self._lock:
            self._faults = new
            self._path_counts.clear()
        return new

    @contextlib.contextmanager
    def faulted(self, faults: FaultConfig | None = None, **changes: Any) -> Iterator[ReplayServer]:
        """Random faults for the duration of a with-block, then back to the previous config."""
        previous = self._faults
        self.set_faults(faults, **changes)
        try:
            yield self
        finally:
            self.set_faults(previous)

    def reset(self) -> None:
        """Back to the constructor's faults; drop forced rules and the request log."""
        with self._lock:
            self._faults = self._initial_faults
            self._rules.clear()
            self._log_entries.clear()
            self._path_counts.clear()

    def _add_rule(self, rule: ForcedRule) -> ForcedRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def force(
        self,
        pattern: str,
        status: int,
        body: bytes | str | Any = b"",
        headers: Mapping[str, str] | None = None,
        times: int | None = 1,
        content_type: str | None = None,
        method: str | None = None,
    ) -> ForcedRule:
        """Answer the next `times` requests matching `pattern` with this status/body/headers.

        `body`: bytes/str are sent as text/plain, other values JSON-encoded; `times=None` = forever.
        """
        data, default_type = _body_bytes(body)
        return self._add_rule(
            ForcedRule(
                pattern=re.compile(pattern),
                action="respond",
                remaining=times,
                status=status,
                body=data,
                content_type=content_type or default_type,
                headers=dict(headers or {}),
                method=method,
            )
        )

    def payment_required(
        self, pattern: str, times: int | None = None, body: str = PAYMENT_REQUIRED_BODY
    ) -> ForcedRule:
        """HTTP 402 with a plain-text body, like DefiLlama's paid endpoints on the free host."""
        return self.force(pattern, 402, body=body, times=times, content_type=TEXT_TYPE)

    def corrupt(self, pattern: str, times: int | None = None) -> ForcedRule:
        """Serve damaged bytes (same length) for matching files: flipped zip bytes, wrong checksum."""
        return self._add_rule(ForcedRule(pattern=re.compile(pattern), action="corrupt", remaining=times))

    def truncate(
        self, pattern: str, times: int | None = 1, mode: Literal["short", "close"] = "short"
    ) -> ForcedRule:
        """Cut matching 200 bodies in half (see `FaultConfig` for the two modes)."""
        return self._add_rule(
            ForcedRule(pattern=re.compile(pattern), action="truncate", remaining=times, truncate_mode=mode)
        )

    def slow(self, pattern: str, delay_ms: float, times: int | None = None) -> ForcedRule:
        """Extra latency for matching requests (client timeout tests)."""
        return self._add_rule(
            ForcedRule(pattern=re.compile(pattern), action="delay", remaining=times, delay_ms=delay_ms)
        )

    def drip(
        self, pattern: str, interval_ms: float, chunk_bytes: int = 1, times: int | None = None
    ) -> ForcedRule:
        """Send matching 200 bodies ``chunk_bytes`` at a time, one chunk every ``interval_ms``: each
        read gets data (no read timeout fires), the whole answer takes ages (deadline tests)."""
        return self._add_rule(
            ForcedRule(
                pattern=re.compile(pattern),
                action="drip",
                remaining=times,
                drip=Drip(interval_ms, chunk_bytes),
            )
        )

    def oversize(
        self, pattern: str, size_bytes: int, announce_length: bool = True, times: int | None = None
    ) -> ForcedRule:
        """Answer matching requests with a 200 body of ``size_bytes`` (streamed, never in memory here);
        ``announce_length=False`` sends no Content-Length (the client only finds out by reading)."""
        return self._add_rule(
            ForcedRule(
                pattern=re.compile(pattern),
                action="oversize",
                remaining=times,
                size=size_bytes,
                announce_length=announce_length,
            )
        )

    # ----------------------------------------------------------------- internals
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._log_entries.append(record)

    def _take(self, method: str, path: str) -> tuple[ForcedRule | None, FaultConfig, random.Random]:
        """Claim the first matching rule and a per-request RNG, atomically."""
        with self._lock:
            rule = next((r for r in self._rules if r.matches(method, path)), None)
            if rule is not None:
                rule.hits += 1
                if rule.remaining is not None:
                    rule.remaining -= 1
            faults = self._faults
            n = self._path_counts[path]
            self._path_counts[path] = n + 1
        rng = random.Random(f"{faults.seed}:{path}:{n}") if faults.seed is not None else random.Random()
        return rule, faults, rng

    def _answer(self, handler: _Handler, method: str, path: str, query: str, head: bool) -> int:
        rule, faults, rng = self._take(method, path)
        delay_ms = faults.latency_ms + (rule.delay_ms if rule is not None and rule.action == "delay" else 0.0)
        if delay_ms > 0:
            time.sleep(delay_ms / 1000.0)  # per request, in this connection's thread
        if rule is not None and rule.action == "respond":
            return handler.send_answer(
                Response(rule.status, rule.body, rule.content_type, dict(rule.headers)), head
            )
        if rule is not None and rule.action == "oversize":
            return handler.send_oversize(rule.size, rule.announce_length, head)

        draw = rng.random()
        if draw < faults.error_rate:
            code = rng.choice(faults.error_codes)
            headers = {"Retry-After": str(faults.retry_after_s)} if code == 429 else {}
            body = f"{code} {_REASONS.get(code, 'Error')}\n".encode()
            return handler.send_answer(Response(code, body, TEXT_TYPE, headers), head)
        if draw < faults.error_rate + faults.html_error_rate:
            code = rng.choice(faults.html_error_codes)
            return handler.send_answer(Response(code, _html_page(code), HTML_TYPE), head)

        resp = self.resolve(path, query)
        truncate: Literal["short", "close"] | None = None
        drip: Drip | None = None
        if resp.status == 200:
            if rule is not None and rule.action == "corrupt":
                resp.body = corrupt_bytes(resp.body)
            elif rule is not None and rule.action == "truncate":
                truncate = rule.truncate_mode
            elif rule is not None and rule.action == "drip":
                drip = rule.drip
            elif faults.truncate_rate and rng.random() < faults.truncate_rate:
                truncate = faults.truncate_mode
            elif faults.drip_rate and rng.random() < faults.drip_rate:
                drip = Drip(faults.drip_interval_ms, faults.drip_bytes)
        return handler.send_answer(resp, head, truncate, drip)

    def _file(self, *parts: str) -> Path | None:
        """The file at ROOT/parts if it exists and stays inside ROOT (no `..` escapes)."""
        rel = posixpath.normpath("/".join(parts)).lstrip("/")
        if rel.startswith("..") or not rel or rel == ".":
            return None
        try:
            candidate = (self.root / rel).resolve()
            if not candidate.is_relative_to(self.root) or not candidate.is_file():
                return None
        except OSError:  # e.g. a name longer than the filesystem allows: nothing recorded there
            return None
        return candidate

    def resolve(self, path: str, query: str = "") -> Response:
        """The fault-free answer for a URL path (see the module docstring for the mapping)."""
        if ".." in path.split("/"):
            return Response(404, b"Not Found\n", TEXT_TYPE)
        if path in ("", "/"):
            lines = [f"midfreq replay server for {self.root}", *(f"{k}={v}" for k, v in self.env().items())]
            return Response(200, ("\n".join(lines) + "\n").encode(), TEXT_TYPE)

        chart_prefix = "/defillama/yields/chart/"
        if path.startswith(chart_prefix):
            pool_id = path[len(chart_prefix) :]
            if not is_pool_uuid(pool_id):
                return Response(400, _json_bytes("invalid configID!"), JSON_TYPE)
            found = self._file("defillama/yields/chart", pool_id + ".json")
            if found is None:
                return Response(200, _json_bytes({"status": "success", "data": []}), JSON_TYPE)
            return Response(200, found.read_bytes(), JSON_TYPE)

        if path.startswith(PRO_PREFIX):
            return self._resolve_pro(path[len(PRO_PREFIX) :])
        if PAID_ON_FREE_HOST.search(path):
            return Response(402, PAYMENT_REQUIRED_BODY.encode(), TEXT_TYPE)

        coins_prefix = "/defillama/coins/chart/"
        if path.startswith(coins_prefix):
            coins = path[len(coins_prefix) :]
            if not coins or "/" in coins:
                return Response(404, b"Not Found\n", TEXT_TYPE)
            for name in (coins_chart_filename(coins, query), coins_chart_filename(coins)):
                found = self._file("defillama/coins/chart", name)
                if found is not None:
                    return Response(200, found.read_bytes(), JSON_TYPE)
            return Response(200, _json_bytes({"coins": {}}), JSON_TYPE)

        if path.startswith("/binance/"):
            key = path[len("/binance/") :]
            found = self._file("binance", key)
            if found is None:
                return Response(404, _s3_not_found(key), XML_TYPE)
            if found.name.endswith(".zip"):
                ctype = "application/zip"
            elif found.name.endswith(".CHECKSUM"):
                ctype = TEXT_TYPE
            else:
                ctype = "application/octet-stream"
            return Response(200, found.read_bytes(), ctype)

        if path.startswith("/defillama/"):
            found = self._file(path + ".json") or self._file(path)
            if found is not None:
                ctype = JSON_TYPE if found.suffix == ".json" else "application/octet-stream"
                if found.suffix == ".csv":
                    ctype = "text/csv; charset=utf-8"
                return Response(200, found.read_bytes(), ctype)
        return Response(404, b"Not Found\n", TEXT_TYPE)

    def _resolve_pro(self, rest: str) -> Response:
        """``<key>/yields/...`` of DefiLlama's paid API (see the module docstring)."""
        key, _, endpoint = rest.partition("/")
        if key != self.pro_api_key:
            return Response(401, b"Unauthorized: invalid API key\n", TEXT_TYPE)
        lend_borrow = "yields/chartLendBorrow/"
        if endpoint.startswith(lend_borrow):
            pool_id = endpoint[len(lend_borrow) :]
            if not is_pool_uuid(pool_id):
                return Response(400, _json_bytes("invalid configID!"), JSON_TYPE)
            found = self._file("defillama/pro/yields/chartLendBorrow", pool_id + ".json")
            if found is None:
                return Response(200, _json_bytes({"status": "success", "data": []}), JSON_TYPE)
            return Response(200, found.read_bytes(), JSON_TYPE)
        if endpoint == "yields/poolsBorrow":
            found = self._file("defillama/pro/yields/poolsBorrow.json")
            if found is not None:
                return Response(200, found.read_bytes(), JSON_TYPE)
        return Response(404, b"Not Found\n", TEXT_TYPE)
