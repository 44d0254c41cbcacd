"""Where a vault's real positions come from: the user's position service (HTTP GET), a file in the
data lake (``lake:<path>``) or a local file. Every source is read under the same size limit; the
HTTP one with the same timeouts and bounded retries as the data sources (``http_retry``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
from dagster import ConfigurableResource
from pydantic import Field
from upath import UPath

from midfreq_resources.clients.http_retry import RetryPolicy, SourceError, get_with_retries

LAKE_PREFIX = "lake:"


class PositionsSourceError(SourceError):
    """The positions source cannot be read (missing file, too large, the service failed)."""


def _read_file(path: UPath | Path, max_bytes: int, source: str) -> bytes:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PositionsSourceError(f"positions source {source}: no file at {path}", source) from None
    if size > max_bytes:
        raise PositionsSourceError(
            f"positions source {source}: {path} has {size:,} bytes, above the limit of "
            f"{max_bytes:,} (positions.max_bytes)",
            source,
        )
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PositionsSourceError(
            f"positions source {source}: {path} grew above {max_bytes:,} bytes", source
        )
    return data


class PositionsClient(ConfigurableResource):
    """Reads one day's positions as bytes; the vault's ``positions:`` section says from where."""

    timeout_s: float = Field(default=30.0, gt=0)
    request_deadline_s: float = Field(default=60.0, gt=0)
    total_deadline_s: float = Field(
        default=180.0, gt=0, description="one read with all its retries and backoffs"
    )
    max_attempts: int = Field(default=4, ge=1, le=10)
    backoff_base_s: float = 0.5
    backoff_max_s: float = 10.0

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.max_attempts,
            self.backoff_base_s,
            self.backoff_max_s,
            request_deadline_s=self.request_deadline_s,
            total_deadline_s=self.total_deadline_s,
        )

    def resolve(self, source: str, lake: UPath, config_dir: Path) -> UPath | Path | str:
        """The URL, lake path or local path ``source`` names (a relative local path: under ``config_dir``)."""
        if source.startswith(("http://", "https://")):
            return source
        if source.startswith(LAKE_PREFIX):
            return lake.joinpath(*[p for p in source.removeprefix(LAKE_PREFIX).split("/") if p])
        path = Path(source).expanduser()
        return path if path.is_absolute() else (config_dir / path).resolve()

    def read(
        self, source: str, day: dt.date, lake: UPath, config_dir: Path, max_bytes: int, add_date_param: bool
    ) -> tuple[bytes, str]:
        """The bytes of ``source`` for ``day`` and where they came from (URL or path)."""
        where = self.resolve(source, lake, config_dir)
        if isinstance(where, str):
            params = {"date": day.isoformat()} if add_date_param else None
            with httpx.Client(timeout=self.timeout_s, follow_redirects=True) as client:
                data = get_with_retries(
                    client, where, self.policy, params=params, parse=lambda r: r.content, max_bytes=max_bytes
                )
            return data, where
        return _read_file(where, max_bytes, source), str(where)
