"""Shared HTTP behaviour for every data source: timeouts, bounded retries, clear errors.

Transient failures (429 honouring ``Retry-After``, 5xx, timeouts, dropped connections) are
retried with exponential backoff a bounded number of times; everything else raises a
``SourceError`` subclass whose message names the URL and what was wrong.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
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

    def __init__(self, message: str, url: str | None = None, status: int | None = None,
                 retry_after: float | None = None):
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


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_cap_s: float = 60.0


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
            f"HTTP 429 rate limited by {url}", url, status, parse_retry_after(response.headers.get("Retry-After"))
        )
    if status >= 500 or status == 408:
        raise TransientSourceError(
            f"HTTP {status} from {url}: {body}", url, status, parse_retry_after(response.headers.get("Retry-After"))
        )
    if status == 400:
        raise InvalidRequestError(f"HTTP 400 bad request {url}: {body}", url, status)
    if status == 402:
        raise PaymentRequiredError(f"HTTP 402 payment required for {url} (paid endpoint): {body}", url, status)
    if status == 404:
        raise NotFoundError(f"HTTP 404 not found: {url}", url, status)
    raise SourceError(f"HTTP {status} from {url}: {body}", url, status)


def parse_json(response: httpx.Response) -> Any:
    """Decode a JSON body, calling HTML pages and truncated bodies what they are."""
    url = str(response.request.url)
    content = response.content
    head = content.lstrip()[:15].lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        raise MalformedResponseError(f"expected JSON from {url}, got an HTML/XML page: {_snippet(content)}", url,
                                     response.status_code)
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        kind = "truncated" if exc.pos >= len(content) - 1 else "invalid"
        raise MalformedResponseError(
            f"{kind} JSON from {url} ({len(content)} bytes, error at byte {exc.pos}: {exc.msg})", url,
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


def _retrying_kwargs(policy: RetryPolicy) -> dict[str, Any]:
    return dict(
        stop=stop_after_attempt(policy.max_attempts),
        wait=_wait(policy),
        retry=retry_if_exception_type(TransientSourceError),
        reraise=True,
    )


def get_with_retries(client: httpx.Client, url: str, policy: RetryPolicy,
                     params: dict[str, Any] | None = None,
                     parse: Callable[[httpx.Response], T] = parse_json) -> T:
    """GET ``url`` and ``parse`` the answer, retrying transient failures (sync)."""
    for attempt in Retrying(**_retrying_kwargs(policy)):
        with attempt:
            try:
                response = client.get(url, params=params)
            except httpx.TransportError as exc:
                raise _transport_error(exc, url) from exc
            raise_for_response(response)
            return parse(response)
    raise AssertionError("unreachable")


async def aget_with_retries(client: httpx.AsyncClient, url: str, policy: RetryPolicy,
                            params: dict[str, Any] | None = None,
                            parse: Callable[[httpx.Response], T] = parse_json) -> T:
    """GET ``url`` and ``parse`` the answer, retrying transient failures (async)."""
    async for attempt in AsyncRetrying(**_retrying_kwargs(policy)):
        with attempt:
            try:
                response = await client.get(url, params=params)
            except httpx.TransportError as exc:
                raise _transport_error(exc, url) from exc
            raise_for_response(response)
            return parse(response)
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


async def gather_bounded(keys: Iterable[K], fetch: Callable[[K], Awaitable[T]], concurrency: int) -> BatchResult[K, T]:
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

    base_url: str = Field(default="", description="service root; empty: the source's MIDFREQ_*_URL "
                          "environment variable at run time, else the live service")
    timeout_s: float = 30.0
    max_attempts: int = Field(default=5, ge=1, le=10)
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    @property
    def root_url(self) -> str:
        return (self.base_url or env_or(self.ENV_VAR, self.LIVE_URL)).rstrip("/")

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_base_s, self.backoff_max_s)
