"""Shared HTTP behaviour for every data source: timeouts, bounded retries, bounded bodies, clear errors.

Transient failures (429 honouring ``Retry-After``, 5xx, timeouts, dropped connections, and bodies
that cannot be decoded: truncated JSON, an HTML/XML error page served with status 200) are
retried with exponential backoff a bounded number of times; everything else raises a
``SourceError`` subclass whose message names the URL and what was wrong.

Every request streams its body under two bounds: a maximum size per endpoint (``max_bytes``:
``ResponseTooLargeError``, never retried, memory stays at most that) and an overall deadline
(``RetryPolicy.request_deadline_s``): a server dripping a byte every few seconds never trips the
per-read timeout, so the deadline is checked after every chunk. And one deadline for the whole
request, its retries and backoffs included (``RetryPolicy.total_deadline_s``, :class:`Budget`):
each attempt gets at most the time left (its deadline and timeouts are cut to it) and no retry
starts whose backoff would end past it, so a drip-fed source costs at most ``total_deadline_s``
plus one read timeout per request, whatever ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import httpx
import orjson
from dagster import ConfigurableResource
from pydantic import Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from midfreq_resources.settings import env_or

T = TypeVar("T")
K = TypeVar("K")


class SourceError(RuntimeError):
    """A data source answered something we cannot use."""

    def __init__(self, message: str, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class TransientSourceError(SourceError):
    """Worth retrying: 429, 5xx, timeouts, dropped connections."""

    def __init__(
        self,
        message: str,
        url: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, url, status)
        self.retry_after = retry_after


class InvalidRequestError(SourceError):
    """HTTP 400: the request itself is wrong (e.g. DefiLlama's ``"invalid configID!"``)."""


class PaymentRequiredError(SourceError):
    """HTTP 402: a paid endpoint on the free host."""


class NotFoundError(SourceError):
    """HTTP 404: the resource does not exist (yet)."""


class MalformedResponseError(SourceError):
    """The body is not what the source promises: HTML instead of JSON, truncated, bad schema."""


class UndecodableBodyError(MalformedResponseError, TransientSourceError):
    """A body that is not JSON at all (truncated, an HTML/XML error page with status 200): what
    overloaded CDNs and proxies send, so it is retried like a 5xx."""


class ResponseTooLargeError(SourceError):
    """The body exceeds the endpoint's size limit: refused (not retried), nothing buffered beyond it."""


class DeadlineExceededError(TransientSourceError):
    """The whole answer did not arrive within the request deadline (a slow-drip server)."""


#: Default size limit of one answer (per endpoint, clients pass their own).
MIB = 2**20
DEFAULT_MAX_BYTES = 64 * MIB


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_cap_s: float = 60.0
    request_deadline_s: float = 120.0
    #: one request with all its attempts and backoffs (None: only max_attempts bounds it)
    total_deadline_s: float | None = 300.0


class Budget:
    """The time one request has left, across its attempts and the backoffs between them."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started = time.monotonic()
        total = policy.total_deadline_s
        self.end = self.started + total if total is not None else float("inf")
        self.attempts = 0

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def attempt_deadline_s(self, url: str) -> float:
        """The deadline of the next attempt: the request deadline, cut to the time left."""
        self.attempts += 1
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceededError(
                f"{url}: no time left of the request's total deadline ({self.policy.total_deadline_s:g} s)",
                url,
            )
        return min(self.policy.request_deadline_s, left)

    def stop(self, state: RetryCallState) -> bool:
        """Tenacity stop: attempts used up, or the next backoff would end past the total deadline."""
        return (
            state.attempt_number >= self.policy.max_attempts
            or (state.upcoming_sleep or 0.0) >= self.remaining()
        )

    def annotate(self, exc: SourceError) -> None:
        """Say in ``exc`` (the last attempt's error) that the total deadline ended the retries."""
        if (
            self.policy.total_deadline_s is None
            or self.attempts >= self.policy.max_attempts
            or not isinstance(exc, TransientSourceError)
        ):
            return
        elapsed = time.monotonic() - self.started
        exc.args = (
            f"{exc}; gave up after {self.attempts} attempt(s) in {elapsed:.1f} s: the request's total "
            f"deadline is {self.policy.total_deadline_s:g} s, retries included",
            *exc.args[1:],
        )


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _snippet(body: bytes | str, limit: int = 120) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def raise_for_response(response: httpx.Response) -> None:
    """Map an HTTP status to the right ``SourceError``; return quietly for 2xx."""
    status = response.status_code
    url = str(response.request.url)
    if 200 <= status < 300:
        return
    body = _snippet(response.content)
    if status == 429:
        raise TransientSourceError(
            f"HTTP 429 rate limited by {url}",
            url,
            status,
            parse_retry_after(response.headers.get("Retry-After")),
        )
    if status >= 500 or status == 408:
        raise TransientSourceError(
            f"HTTP {status} from {url}: {body}",
            url,
            status,
            parse_retry_after(response.headers.get("Retry-After")),
        )
    if status == 400:
        raise InvalidRequestError(f"HTTP 400 bad request {url}: {body}", url, status)
    if status == 402:
        raise PaymentRequiredError(
            f"HTTP 402 payment required for {url} (paid endpoint): {body}", url, status
        )
    if status == 404:
        raise NotFoundError(f"HTTP 404 not found: {url}", url, status)
    raise SourceError(f"HTTP {status} from {url}: {body}", url, status)


def parse_json(response: httpx.Response) -> Any:
    """Decode a JSON body, calling HTML pages and truncated bodies what they are."""
    url = str(response.request.url)
    content = response.content
    head = content.lstrip()[:15].lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        raise UndecodableBodyError(
            f"expected JSON from {url}, got an HTML/XML page: {_snippet(content)}", url, response.status_code
        )
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        kind = "truncated" if exc.pos >= len(content) - 1 else "invalid"
        raise UndecodableBodyError(
            f"{kind} JSON from {url} ({len(content)} bytes, error at byte {exc.pos}: {exc.msg})",
            url,
            response.status_code,
        ) from None


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    exponential = wait_exponential(multiplier=policy.backoff_base_s, max=policy.backoff_max_s)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(retry_after, policy.retry_after_cap_s)
        return exponential(state)

    return wait


def _transport_error(exc: httpx.TransportError, url: str) -> TransientSourceError:
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
    return TransientSourceError(f"{kind} talking to {url}: {exc}", url)


def _retrying_kwargs(policy: RetryPolicy, budget: Budget | None = None) -> dict[str, Any]:
    return dict(
        stop=budget.stop if budget is not None else stop_after_attempt(policy.max_attempts),
        wait=_wait(policy),
        retry=retry_if_exception_type(TransientSourceError),
        reraise=True,
    )


_DROPPED_HEADERS = {"content-encoding", "content-length", "transfer-encoding"}
#: The only compressions asked for (and decoded, under the size limit): a gzip bomb inflates no
#: further than ``max_bytes``.
ACCEPT_ENCODING = {"Accept-Encoding": "gzip, deflate"}
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class _BodyReader:
    """Accumulates a streamed body under the size limit and the deadline of one attempt, inflating
    gzip/deflate itself so that the *decoded* size is what the limit bounds."""

    def __init__(self, response: httpx.Response, url: str, max_bytes: int, deadline_s: float, started: float):
        self.response, self.url, self.max_bytes = response, url, max_bytes
        self.deadline_s, self.started = deadline_s, started
        self.chunks: list[bytes] = []
        self.size = 0
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
        if encoding not in (*_WBITS, "identity"):
            raise MalformedResponseError(
                f"{url}: unsupported Content-Encoding {encoding!r} (asked for gzip or deflate)",
                url,
                response.status_code,
            )
        self.inflater = zlib.decompressobj(_WBITS[encoding]) if encoding in _WBITS else None
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise ResponseTooLargeError(
                f"{url}: answer announces {int(declared):,} bytes, above this endpoint's limit of "
                f"{max_bytes:,} bytes; refused",
                url,
                response.status_code,
            )

    def feed(self, raw: bytes) -> None:
        """One chunk as it came off the wire (still compressed when the answer is)."""
        if self.inflater is None:
            self.add(raw)
            return
        try:
            data = raw
            while data:
                self.add(self.inflater.decompress(data, self.max_bytes - self.size + 1))
                data = self.inflater.unconsumed_tail
        except zlib.error as exc:
            raise UndecodableBodyError(
                f"{self.url}: corrupt compressed body ({exc})", self.url, self.response.status_code
            ) from None

    def finish(self) -> None:
        if self.inflater is not None:
            self.add(self.inflater.flush())

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise ResponseTooLargeError(
                f"{self.url}: answer exceeds this endpoint's limit of {self.max_bytes:,} bytes; refused "
                "after reading that much",
                self.url,
                self.response.status_code,
            )
        elapsed = time.monotonic() - self.started
        if elapsed > self.deadline_s:
            raise DeadlineExceededError(
                f"{self.url}: answer not complete after {elapsed:.1f} s (deadline {self.deadline_s:g} s, "
                f"{self.size:,} bytes so far); abandoned",
                self.url,
                self.response.status_code,
            )
        self.chunks.append(chunk)

    def response_with_body(self) -> httpx.Response:
        """The answer with its (decoded) body in memory, as ``client.get`` would have returned it."""
        headers = [
            (k, v) for k, v in self.response.headers.multi_items() if k.lower() not in _DROPPED_HEADERS
        ]
        return httpx.Response(
            self.response.status_code,
            headers=headers,
            content=b"".join(self.chunks),
            request=self.response.request,
        )


def request_once(
    client: httpx.Client,
    method: str,
    url: str,
    max_bytes: int,
    deadline_s: float,
    *,
    params: dict[str, Any] | None = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request whose answer is read under ``max_bytes`` and ``deadline_s`` (no retry, no status check)."""
    started = time.monotonic()
    try:
        with client.stream(
            method,
            url,
            params=params,
            content=content,
            timeout=_cut(client.timeout, deadline_s),
            headers={**ACCEPT_ENCODING, **(headers or {})},
        ) as response:
            reader = _BodyReader(response, url, max_bytes, deadline_s, started)
            for chunk in response.iter_raw():
                reader.feed(chunk)
            reader.finish()
    except httpx.TransportError as exc:
        raise _transport_error(exc, url) from exc
    return reader.response_with_body()


def _cut(timeout: httpx.Timeout, deadline_s: float) -> httpx.Timeout:
    """The client's timeouts, none longer than the attempt's deadline."""
    cut = lambda t: deadline_s if t is None else min(t, deadline_s)  # noqa: E731
    return httpx.Timeout(
        connect=cut(timeout.connect), read=cut(timeout.read), write=cut(timeout.write), pool=cut(timeout.pool)
    )


def _get_once(
    client: httpx.Client, url: str, params: dict[str, Any] | None, max_bytes: int, deadline_s: float
) -> httpx.Response:
    return request_once(client, "GET", url, max_bytes, deadline_s, params=params)


async def _aget_once(
    client: httpx.AsyncClient, url: str, params: dict[str, Any] | None, max_bytes: int, deadline_s: float
) -> httpx.Response:
    started = time.monotonic()
    try:
        async with client.stream(
            "GET", url, params=params, headers=ACCEPT_ENCODING, timeout=_cut(client.timeout, deadline_s)
        ) as response:
            reader = _BodyReader(response, url, max_bytes, deadline_s, started)
            async for chunk in response.aiter_raw():
                reader.feed(chunk)
            reader.finish()
    except httpx.TransportError as exc:
        raise _transport_error(exc, url) from exc
    return reader.response_with_body()


def get_with_retries(
    client: httpx.Client,
    url: str,
    policy: RetryPolicy,
    params: dict[str, Any] | None = None,
    parse: Callable[[httpx.Response], T] = parse_json,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> T:
    """GET ``url`` and ``parse`` the answer, retrying transient failures (sync), body bounded in
    size (``max_bytes``) and time (``policy.request_deadline_s`` per attempt, ``total_deadline_s`` in all)."""
    budget = Budget(policy)
    try:
        for attempt in Retrying(**_retrying_kwargs(policy, budget)):
            with attempt:
                response = _get_once(client, url, params, max_bytes, budget.attempt_deadline_s(url))
                raise_for_response(response)
                return parse(response)
    except SourceError as exc:
        budget.annotate(exc)
        raise
    raise AssertionError("unreachable")


async def aget_with_retries(
    client: httpx.AsyncClient,
    url: str,
    policy: RetryPolicy,
    params: dict[str, Any] | None = None,
    parse: Callable[[httpx.Response], T] = parse_json,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> T:
    """GET ``url`` and ``parse`` the answer, retrying transient failures (async); same bounds."""
    budget = Budget(policy)
    try:
        async for attempt in AsyncRetrying(**_retrying_kwargs(policy, budget)):
            with attempt:
                response = await _aget_once(client, url, params, max_bytes, budget.attempt_deadline_s(url))
                raise_for_response(response)
                return parse(response)
    except SourceError as exc:
        budget.annotate(exc)
        raise
    raise AssertionError("unreachable")


@dataclass
class BatchResult(Generic[K, T]):
    """Per-key outcome of a batch of fetches: one failure never sinks the others."""

    ok: dict[K, T] = field(default_factory=dict)
    failed: dict[K, str] = field(default_factory=dict)


def map_bounded(keys: Iterable[K], fetch: Callable[[K], T], concurrency: int) -> BatchResult[K, T]:
    """Run ``fetch`` for every key on at most ``concurrency`` threads; collect failures per key.

    Threads over one pooled ``httpx.Client`` cost less CPU per request than asyncio here (measured:
    500 charts at 50 ms latency, 3.3 s vs 4.7 s), and the waiting happens outside the GIL.
    """
    result: BatchResult[K, T] = BatchResult()

    def one(key: K) -> None:
        try:
            result.ok[key] = fetch(key)
        except (SourceError, ValueError) as exc:
            result.failed[key] = f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="midfreq-fetch") as pool:
        list(pool.map(one, keys))
    return result


async def gather_bounded(
    keys: Iterable[K], fetch: Callable[[K], Awaitable[T]], concurrency: int
) -> BatchResult[K, T]:
    """Run ``fetch`` for every key with at most ``concurrency`` in flight; collect failures."""
    semaphore = asyncio.Semaphore(concurrency)
    result: BatchResult[K, T] = BatchResult()

    async def one(key: K) -> None:
        async with semaphore:
            try:
                result.ok[key] = await fetch(key)
            except (SourceError, ValueError) as exc:
                result.failed[key] = f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(one(k) for k in keys))
    return result


class HttpSourceResource(ConfigurableResource):
    """Settings every HTTP data source shares: where it is, how long to wait, how often to retry.

    ``base_url`` empty means the source's environment variable, read when a run uses it (so
    pointing midfreq at a replay server needs no reload), else the live service.
    """

    ENV_VAR: ClassVar[str]
    LIVE_URL: ClassVar[str]

    base_url: str = Field(
        default="",
        description="service root; empty: the source's MIDFREQ_*_URL "
        "environment variable at run time, else the live service",
    )
    timeout_s: float = Field(default=30.0, gt=0, description="connect / per-read timeout")
    request_deadline_s: float = Field(
        default=120.0,
        gt=0,
        description="a whole answer must arrive within "
        "this (checked per chunk: one attempt lasts at most this + timeout_s)",
    )
    total_deadline_s: float = Field(
        default=300.0,
        gt=0,
        description="one request with all its retries and "
        "backoffs: no attempt runs past it (the call lasts at most this + timeout_s)",
    )
    max_attempts: int = Field(default=5, ge=1, le=10)
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    @property
    def root_url(self) -> str:
        return (self.base_url or env_or(self.ENV_VAR, self.LIVE_URL)).rstrip("/")

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.max_attempts,
            self.backoff_base_s,
            self.backoff_max_s,
            request_deadline_s=self.request_deadline_s,
            total_deadline_s=self.total_deadline_s,
        )
