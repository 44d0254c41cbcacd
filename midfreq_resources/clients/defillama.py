"""DefiLlama yields API client: ``/pools`` (today's snapshot) and ``/chart/{uuid}`` (history).

Records are validated by pydantic models that tolerate the extra keys and nulls the live API
returns but reject what we cannot use (a record without ``apy``), naming pool and field.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, ClassVar, Required

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from midfreq_assets.domain.ingest.pool_history import chart_problem
from midfreq_assets.domain.ingest.pool_ids import validate_pool_id
from midfreq_resources.clients.http_retry import (
    MIB,
    BatchResult,
    HttpSourceResource,
    MalformedResponseError,
    get_with_retries,
    map_bounded,
)
from midfreq_resources.settings import DEFILLAMA_YIELDS_URL_ENV, LIVE_DEFILLAMA_YIELDS_URL


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class PoolRecord(_Lenient):
    """One row of ``GET /pools``."""

    pool: str
    chain: str
    project: str
    symbol: str
    tvl_usd: float = Field(alias="tvlUsd")
    apy: float
    apy_base: float | None = Field(default=None, alias="apyBase")
    apy_reward: float | None = Field(default=None, alias="apyReward")
    reward_tokens: list[str] | None = Field(default=None, alias="rewardTokens")
    underlying_tokens: list[str] | None = Field(default=None, alias="underlyingTokens")
    pool_meta: str | None = Field(default=None, alias="poolMeta")
    stablecoin: bool | None = None
    il_risk: str | None = Field(default=None, alias="ilRisk")
    exposure: str | None = None
    il7d: float | None = None
    apy_base7d: float | None = Field(default=None, alias="apyBase7d")
    apy_mean_30d: float | None = Field(default=None, alias="apyMean30d")


class ChartRecord(TypedDict, total=False):
    """One day of ``GET /chart/{uuid}`` (percentages, as the API reports them).

    A TypedDict, not a model: validating ~365 rows x hundreds of pools must stay cheap, and the
    rows are framed column-wise afterwards. Extra keys are allowed (the API adds some).
    """

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]

    timestamp: Required[str]
    tvlUsd: Required[float]
    apy: Required[float]
    apyBase: float | None
    apyReward: float | None
    il7d: float | None
    apyBase7d: float | None


def _envelope_data(body: Any, url: str) -> list[Any]:
    if not isinstance(body, dict):
        raise MalformedResponseError(
            f"{url}: expected a JSON object envelope, got {type(body).__name__}", url
        )
    if "data" not in body:
        raise MalformedResponseError(f"{url}: envelope has no 'data' key (keys: {sorted(body)[:8]})", url)
    data = body["data"]
    if not isinstance(data, list):
        raise MalformedResponseError(f"{url}: 'data' is {type(data).__name__}, expected a list", url)
    status = body.get("status")
    if status not in (None, "success"):
        raise MalformedResponseError(f"{url}: status is {status!r}", url)
    return data


@functools.cache
def _list_adapter(model: type) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def _validate_records(model: type, rows: list[Any], where: str) -> list[Any]:
    """Validate all rows in one pass (pydantic-core); errors name the record and the field."""
    try:
        return _list_adapter(model).validate_python(rows)
    except ValidationError as exc:
        problems = "; ".join(
            f"record {e['loc'][0]}: {'.'.join(str(p) for p in e['loc'][1:]) or 'record'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        raise MalformedResponseError(f"{where}: {exc.error_count()} invalid record(s): {problems}") from None


def parse_pools(body: Any, url: str) -> list[PoolRecord]:
    """Validate a ``/pools`` body. Invalid rows are errors (a broken snapshot is not trusted)."""
    return _validate_records(PoolRecord, _envelope_data(body, url), f"/pools ({url})")


def parse_chart(body: Any, pool_id: str, url: str) -> list[dict[str, Any]]:
    """Validate a ``/chart`` body; return the raw rows (cheap to frame) once they are known good.

    One impossible record (a timestamp that is not a date, a negative TVL) fails this pool, with
    the pool, the URL and the record in the message; the other pools of the night go on."""
    rows = _envelope_data(body, url)
    where = f"pool {pool_id} /chart ({url})"
    _validate_records(ChartRecord, rows, where)
    problem = chart_problem(rows)
    if problem:
        raise MalformedResponseError(f"{where}: {problem}", url)
    return rows


class DefiLlamaClient(HttpSourceResource):
    """DefiLlama yields API with timeouts, bounded retries and bounded concurrency."""

    ENV_VAR: ClassVar[str] = DEFILLAMA_YIELDS_URL_ENV
    LIVE_URL: ClassVar[str] = LIVE_DEFILLAMA_YIELDS_URL
    max_concurrency: int = Field(default=10, ge=1, le=64)
    max_pools_mb: float = Field(
        default=200.0, gt=0, description="size limit of a /pools answer (live: ~20 MB)"
    )
    max_chart_mb: float = Field(
        default=32.0,
        gt=0,
        description="size limit of one /chart answer (years of daily rows are well under 1 MB)",
    )

    def _url(self, path: str) -> str:
        return self.root_url + path

    def _chart_url(self, pool_id: str) -> str:
        return self._url(f"/chart/{validate_pool_id(pool_id)}")

    def pools(self) -> list[PoolRecord]:
        url = self._url("/pools")
        with httpx.Client(timeout=self.timeout_s, follow_redirects=True) as client:
            body = get_with_retries(client, url, self.policy, max_bytes=int(self.max_pools_mb * MIB))
        return parse_pools(body, url)

    def chart(self, pool_id: str) -> list[dict[str, Any]]:
        url = self._chart_url(pool_id)
        with httpx.Client(timeout=self.timeout_s, follow_redirects=True) as client:
            body = get_with_retries(client, url, self.policy, max_bytes=int(self.max_chart_mb * MIB))
        return parse_chart(body, pool_id, url)

    def charts(self, pool_ids: Iterable[str]) -> BatchResult[str, list[dict[str, Any]]]:
        """Fetch many histories concurrently; each pool either succeeds or is reported failed."""
        ids = list(dict.fromkeys(pool_ids))
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        with httpx.Client(timeout=self.timeout_s, limits=limits, follow_redirects=True) as client:

            def fetch(pool_id: str) -> list[dict[str, Any]]:
                url = self._chart_url(pool_id)
                body = get_with_retries(client, url, self.policy, max_bytes=int(self.max_chart_mb * MIB))
                return parse_chart(body, pool_id, url)

            return map_bounded(ids, fetch, self.max_concurrency)
