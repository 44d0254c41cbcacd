"""The live loop's sections of a vault YAML: ``positions:``, ``execution:`` and ``intraday:``.

``positions`` names where the vault's real holdings come from and how strictly they are checked;
``execution`` where the day's orders go (no URL anywhere: dry run); ``intraday`` the thresholds of
the daytime ``/pools`` re-read. All optional: a vault without ``positions`` is simulated from its
configured wealth, as before.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator, model_validator

from midfreq_assets.domain.config.base import StrictModel

#: The ``pool`` value of the idle-cash row of a positions file.
CASH_POOL = "cash"
#: The placeholder a positions source uses for the partition day (``YYYY-MM-DD``).
DAY_PLACEHOLDER = "{date}"


class PositionsConfig(StrictModel):
    """Where the vault's real holdings come from, one row per pool plus a ``cash`` row."""

    source: str = Field(
        min_length=1,
        description="http(s):// URL of the position service (GET, ?date=YYYY-MM-DD added), lake:<path> (under "
        "the data lake root) or a local path (relative: to the config directory); {date} is replaced by the day",
    )
    format: Literal["csv", "json"] | None = Field(
        default=None, description="csv or json (default: the file suffix; json for a URL)"
    )
    live_from: dt.date | None = Field(
        default=None,
        description="first day decided from real positions (before it: the simulated state); "
        "default: every day",
    )
    max_age_hours: float = Field(
        default=48.0,
        gt=0,
        description="a row whose as_of is older than this before the end of the day is stale",
    )
    drift_warn: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description="reconciliation warns when a pool's |actual - expected| exceeds this share of wealth",
    )
    max_bytes: int = Field(default=16 * 2**20, gt=0, description="largest positions answer or file read")

    @field_validator("source")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _format_known(self) -> PositionsConfig:
        self.file_format()
        return self

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))

    def source_for(self, day: dt.date) -> str:
        return self.source.replace(DAY_PLACEHOLDER, day.isoformat())

    def file_format(self) -> Literal["csv", "json"]:
        if self.format is not None:
            return self.format
        if self.is_url:
            return "json"
        suffix = self.source.rsplit(".", 1)[-1].lower()
        if suffix in ("csv", "json"):
            return suffix  # type: ignore[return-value]
        raise ValueError(f"cannot tell csv from json from the source {self.source!r}: set format")

    def is_live(self, day: dt.date) -> bool:
        return self.live_from is None or day >= self.live_from


class ExecutionConfig(StrictModel):
    """Where ``<vault>/order_executions`` sends the day's orders; no URL here nor in
    ``$MIDFREQ_EXECUTION_URL``: dry run (orders recorded, nothing sent)."""

    url: str | None = Field(
        default=None, description="execution endpoint (POST); null: $MIDFREQ_EXECUTION_URL, else dry run"
    )
    dry_run: bool = Field(default=False, description="true: never send, whatever URL is set")
    max_attempts: int = Field(default=4, ge=1, le=10, description="attempts per order on transient failures")
    backoff_base_s: float = Field(
        default=0.5, gt=0, description="first wait between attempts (doubles each time)"
    )
    backoff_max_s: float = Field(default=10.0, gt=0, description="longest wait between attempts")
    timeout_s: float = Field(default=10.0, gt=0)
    request_deadline_s: float = Field(
        default=30.0, gt=0, description="a whole answer must arrive within this"
    )
    total_deadline_s: float = Field(
        default=90.0,
        gt=0,
        description="one order with all its retries and backoffs: "
        "past it the order is left without a definitive answer (re-sent by the next run)",
    )
    min_order_usd: float = Field(
        default=0.0, ge=0, description="orders below this are not sent (kept in the ticket)"
    )


class IntradayConfig(StrictModel):
    """The daytime re-read of ``/pools``: flag pools of the universe whose APY or TVL moved since the
    nightly snapshot (the nightly partitions are never rewritten)."""

    enabled: bool = Field(default=False, description="run the hourly schedule (off by default)")
    minute_of_hour: int = Field(
        default=15, ge=0, le=59, description="the hourly schedule runs at this minute (UTC)"
    )
    apy_move: float = Field(
        default=0.02, gt=0, description="flag |apy - nightly apy| above this (fraction/yr)"
    )
    tvl_move: float = Field(default=0.25, gt=0, description="flag |tvl / nightly tvl - 1| above this")
