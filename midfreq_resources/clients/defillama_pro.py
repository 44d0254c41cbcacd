"""DefiLlama's paid API (``https://pro-api.llama.fi/<key>``): lending markets' borrow side.

``/yields/poolsBorrow`` (today's lending markets) and ``/yields/chartLendBorrow/<uuid>`` (one
market's daily supply, borrows and rates). The key sits in the URL path, so it is a secret every
message must hide: errors, retries' reasons and httpx's request log say ``<key>`` instead (and
the key comes from ``MIDFREQ_DEFILLAMA_PRO_API_KEY``, a Dagster ``EnvVar`` in the deployments).
Without a key :attr:`DefiLlamaProClient.has_key` is False and nothing is requested.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any, ClassVar, Required

import httpx
from pydantic import ConfigDict, Field
from typing_extensions import TypedDict

from midfreq_assets.domain.ingest.lend_borrow import lend_borrow_problem
from midfreq_assets.domain.ingest.pool_ids import validate_pool_id
from midfreq_resources.clients.defillama import _envelope_data, _validate_records
from midfreq_resources.clients.http_retry import (
    MIB,
    BatchResult,
    HttpSourceResource,
    MalformedResponseError,
    SourceError,
    get_with_retries,
    map_bounded,
)
from midfreq_resources.settings import (
    DEFILLAMA_PRO_API_KEY_ENV,
    DEFILLAMA_PRO_URL_ENV,
    LIVE_DEFILLAMA_PRO_URL,
    env_or,
)

HIDDEN = "<key>"


class LendBorrowRecord(TypedDict, total=False):
    """One day of ``chartLendBorrow`` (percent APYs, USD amounts, as the API reports them)."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    timestamp: Required[str]
    totalSupplyUsd: Required[float | None]
    totalBorrowUsd: Required[float | None]
    debtCeilingUsd: float | None
    apyBaseBorrow: float | None
    apyRewardBorrow: float | None
    apyBase: float | None


class BorrowPoolRecord(TypedDict, total=False):
    """One row of ``poolsBorrow``: a ``/pools`` row plus the borrow side."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    pool: Required[str]
    totalSupplyUsd: float | None
    totalBorrowUsd: float | None
    apyBaseBorrow: float | None


class _Redact(logging.Filter):
    """Replaces every registered key in httpx's log records (it logs each request's URL)."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()
        self.lock = threading.Lock()

    def add(self, key: str) -> None:
        with self.lock:
            self.keys.add(key)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.keys:
            text = record.getMessage()
            if any(k in text for k in self.keys):
                record.msg, record.args = redact(text, self.keys), None
        return True


_REDACT = _Redact()
logging.getLogger("httpx").addFilter(_REDACT)


def redact(text: str, keys: Iterable[str]) -> str:
    for key in keys:
        if key:
            text = text.replace(key, HIDDEN)
    return text


def parse_lend_borrow(body: Any, pool_id: str, url: str) -> list[dict[str, Any]]:
    """Validate a ``chartLendBorrow`` body; return its raw rows once they are known good."""
    rows = _envelope_data(body, url)
    where = f"pool {pool_id} /yields/chartLendBorrow ({url})"
    _validate_records(LendBorrowRecord, rows, where)
    problem = lend_borrow_problem(rows)
    if problem:
        raise MalformedResponseError(f"{where}: {problem}", url)
    return rows


def parse_pools_borrow(body: Any, url: str) -> list[dict[str, Any]]:
    rows = _envelope_data(body, url)
    _validate_records(BorrowPoolRecord, rows, f"/yields/poolsBorrow ({url})")
    return rows


class DefiLlamaProClient(HttpSourceResource):
    """DefiLlama Pro yields endpoints, with the shared timeouts, retries and bounds.

    ``api_key`` empty means ``$MIDFREQ_DEFILLAMA_PRO_API_KEY`` at run time; neither set: no key
    (:attr:`has_key` False), the lending assets say so and the rest of midfreq runs as without them.
    """

    ENV_VAR: ClassVar[str] = DEFILLAMA_PRO_URL_ENV
    LIVE_URL: ClassVar[str] = LIVE_DEFILLAMA_PRO_URL
    api_key: str = Field(
        default="",
        description="DefiLlama API key (secret; use an EnvVar); empty: "
        f"${DEFILLAMA_PRO_API_KEY_ENV} at run time, else none",
    )
    key_from_env: bool = Field(
        default=True,
        description=f"without api_key, read ${DEFILLAMA_PRO_API_KEY_ENV} at "
        "run time (False: a replay corpus without the paid endpoints runs keyless)",
    )
    max_concurrency: int = Field(default=4, ge=1, le=64)
    max_chart_mb: float = Field(default=32.0, gt=0, description="size limit of one chartLendBorrow answer")
    max_pools_mb: float = Field(default=100.0, gt=0, description="size limit of the poolsBorrow answer")

    @property
    def key(self) -> str:
        fallback = env_or(DEFILLAMA_PRO_API_KEY_ENV, "") if self.key_from_env else ""
        return (self.api_key or fallback).strip()

    @property
    def has_key(self) -> bool:
        return bool(self.key)

    def _url(self, path: str) -> str:
        key = self.key
        if not key:
            raise SourceError(
                f"no DefiLlama API key (set {DEFILLAMA_PRO_API_KEY_ENV}): {path} is a paid endpoint"
            )
        if "/" in key or "?" in key or "#" in key:
            raise SourceError(f"{DEFILLAMA_PRO_API_KEY_ENV} is not a valid key (it holds '/', '?' or '#')")
        _REDACT.add(key)
        return f"{self.root_url}/{key}{path}"

    def _get(self, client: httpx.Client, url: str, max_mb: float) -> Any:
        """GET with the key hidden in any error (message and ``url``)."""
        try:
            return get_with_retries(client, url, self.policy, max_bytes=int(max_mb * MIB))
        except SourceError as exc:  # the causes (httpx errors, their requests) hold the URL: dropped
            exc.args = (redact(str(exc), [self.key]),)
            exc.url = redact(url, [self.key])
            raise exc from None

    def pools_borrow(self) -> list[dict[str, Any]]:
        """Today's lending markets (``/yields/poolsBorrow``)."""
        url = self._url("/yields/poolsBorrow")
        with httpx.Client(timeout=self.timeout_s, follow_redirects=True) as client:
            body = self._get(client, url, self.max_pools_mb)
        return parse_pools_borrow(body, redact(url, [self.key]))

    def lend_borrow_charts(self, pool_ids: Iterable[str]) -> BatchResult[str, list[dict[str, Any]]]:
        """Each market's daily history, fetched concurrently; a pool either succeeds or is reported."""
        ids = list(dict.fromkeys(pool_ids))
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        with httpx.Client(timeout=self.timeout_s, limits=limits, follow_redirects=True) as client:

            def fetch(pool_id: str) -> list[dict[str, Any]]:
                url = self._url(f"/yields/chartLendBorrow/{validate_pool_id(pool_id)}")
                body = self._get(client, url, self.max_chart_mb)
                return parse_lend_borrow(body, pool_id, redact(url, [self.key]))

            return map_bounded(ids, fetch, self.max_concurrency)
