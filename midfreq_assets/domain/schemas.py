"""Each stored table's columns, their kind and unit: one declaration per asset.

The Dagster wiring turns a :class:`Schema` into the asset's column schema (the UI's column
descriptions), the Parquet IO manager checks every frame against it before writing (a missing
column or a wrong kind fails naming the asset and the column), and previews format each value by
its unit (``USD`` with separators, ``fraction`` and ``fraction/yr`` as percentages). Units follow
docs/METHOD.md: APYs are fractions per year, amounts are in the vault's reference asset (USD for a
USD vault), weights and shares are fractions of wealth.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Column kinds and the dtypes a frame may hold for them (``numpy`` dtype kinds, plus strings).
KINDS = ("number", "integer", "bool", "datetime", "string", "list", "value")  # value: a number or a flag
#: Units a preview formats specially: amounts, fractions (shown as %), APYs (fraction/yr, shown as %/yr).
USD, FRACTION, APY = "USD", "fraction", "fraction/yr"
#: A column name standing for every column the schema does not name (generated feature columns).
OTHER = "*"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    unit: str = ""
    description: str = ""
    optional: bool = False  # absent from some frames (e.g. only with live positions)

    def text(self) -> str:
        """The description the UI shows: what the column is, then its unit."""
        unit = f" [{self.unit}]" if self.unit else ""
        return f"{self.description}{unit}"


@dataclass(frozen=True)
class Schema:
    asset: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        return next((c for c in self.columns if c.name == OTHER), None)

    def units(self) -> dict[str, str]:
        return {c.name: c.unit for c in self.columns if c.unit}


def _c(name: str, kind: str, unit: str = "", description: str = "", optional: bool = False) -> Column:
    return Column(name, kind, unit, description, optional)


DATE = _c("date", "datetime", "day, UTC", "the day the row describes (data up to its end)")
POOL = _c(
    "pool", "string", "", "DefiLlama pool id (uuid); previews show its symbol, project and chain beside it"
)
_HISTORY_COMMON = (
    _c("tvl_usd", "number", USD, "total value locked in the pool"),
    _c("apy", "number", APY, "total APY DefiLlama reports (base + reward)"),
    _c("apy_base", "number", APY, "APY paid in the pool's own tokens", optional=True),
    _c("apy_reward", "number", APY, "APY paid in reward tokens", optional=True),
)

POOL_HISTORY = Schema(
    "pool_history",
    (
        DATE,
        POOL,
        *_HISTORY_COMMON,
        _c(
            "il7d",
            "number",
            FRACTION,
            "7-day impermanent loss DefiLlama reports (empty for lending pools)",
            True,
        ),
        _c("apy_base7d", "number", APY, "7-day base APY DefiLlama reports (empty for most pools)", True),
        _c(
            "flag",
            "string",
            "",
            "why the row is not usable (non-finite or implausible APY), empty when it is",
            True,
        ),
    ),
)

POOL_METADATA = Schema(
    "pool_metadata",
    (
        DATE,
        POOL,
        _c("chain", "string", "", "chain the pool lives on"),
        _c("project", "string", "", "protocol (DefiLlama project slug)"),
        _c("symbol", "string", "", "the pool's token symbol(s)"),
        *_HISTORY_COMMON,
        _c("underlying_tokens", "list", "", "token addresses the pool holds", True),
        _c("underlying_symbols", "list", "", "lower-case symbols of the tokens the pool holds", True),
        _c("reward_tokens", "list", "", "reward token addresses", True),
        _c("pool_meta", "string", "", "DefiLlama's note on the pool (e.g. a lock-up)", True),
        _c("vaults", "list", "", "the vaults whose universe holds the pool that day"),
        _c(
            "reconstructed",
            "bool",
            "",
            "the day's pool list is rebuilt from histories (no historical /pools)",
        ),
    ),
)

ADJUSTED_YIELDS = Schema(
    "adjusted_yields",
    (
        DATE,
        POOL,
        _c("apy", "number", APY, "reported APY"),
        _c("reward_haircut", "number", APY, "reward APY removed by the reward-token discount"),
        _c("underlying_apy", "number", APY, "yield of the underlying token (e.g. a staking token)"),
        _c("peg_yield", "number", APY, "yield from the peg deviation of the held tokens"),
        _c("il_annual", "number", APY, "annualized impermanent loss"),
        _c(
            "adjusted_apy",
            "number",
            APY,
            "APY after haircut, underlying yield, peg and IL: what the models predict",
        ),
        _c("apy_reward", "number", APY, "reported reward APY", True),
        _c("reward_discount", "number", FRACTION, "share of the reward APY kept", True),
        _c(
            "price_return",
            "number",
            FRACTION,
            "the legs' daily price return against the reference asset",
            True,
        ),
        _c("price_exposed", "bool", "", "the pool holds a token not pegged to the reference asset", True),
        _c("in_universe", "bool", "", "the pool is in the vault's universe that day", True),
        _c("reference_price", "number", "", "price of the reference asset in USD", True),
        _c("tvl_ref", "number", "reference asset", "TVL in the vault's reference asset", True),
        _c(OTHER, "bool", "", "flag_*: an adjustment input is missing or estimated on the row"),
    ),
)

FEATURES = Schema(
    "features",
    (
        DATE,
        _c("instrument", "string", "", "the pool (uuid) the features describe"),
        _c("project", "string", "", "the pool's protocol that day (a category feature)", True),
        _c("chain", "string", "", "the pool's chain that day (a category feature)", True),
        _c(
            OTHER,
            "value",
            "",
            "a feature from the vault's feature_map (<column>__<transform>_<windows>; "
            "z-scored unless the feature map says otherwise)",
        ),
    ),
)

PREDICTIONS = Schema(
    "predictions",
    (
        DATE,
        POOL,
        _c("predicted_apy", "number", APY, "predicted APY over the label's horizon"),
        _c(
            "model",
            "string",
            "",
            "<label>/<estimator> that predicted the row (the weekly refit's selected model)",
        ),
        _c(
            "model_as_of",
            "datetime",
            "day, UTC",
            "the refit's as_of (only rows labelled before it trained it)",
        ),
    ),
)

REBALANCE_WEIGHTS = Schema(
    "rebalance_weights",
    (
        DATE,
        POOL,
        _c("symbol", "string", "", "pool token symbol(s)", True),
        _c("project", "string", "", "protocol", True),
        _c("chain", "string", "", "chain", True),
        _c("in_universe", "bool", "", "the pool is in the universe that day", True),
        _c("reported", "bool", "", "the pool reported data that day", True),
        _c("in_gap", "bool", "", "a holding kept through a data gap", True),
        _c("last_seen", "datetime", "day, UTC", "the last day the pool reported", True),
        _c("tvl_usd", "number", USD, "pool TVL", True),
        _c("current_weight", "number", FRACTION, "weight held before the day's trades (share of wealth)"),
        _c("target_weight", "number", FRACTION, "weight after the day's trades (share of wealth)"),
        _c("trade_usd", "number", USD, "the day's trade (positive: deposit, negative: withdrawal)"),
        _c("predicted_apy", "number", APY, "predicted APY the decision used", True),
        _c("earned_apy", "number", APY, "APY the holding earned that day", True),
        _c("undiluted_apy", "number", APY, "earned APY before the holding's own dilution", True),
        _c("il_apy", "number", APY, "impermanent loss over the day, annualized", True),
        _c("price_return", "number", FRACTION, "price return of the holding's legs that day", True),
        _c(
            "dilution_factor",
            "number",
            "",
            "APY kept after our deposit dilutes the pool (1: no dilution)",
            True,
        ),
        _c("holding_usd", "number", USD, "value held in the pool after the trades", True),
        _c("expected_usd", "number", USD, "yesterday's target after accrual (what should be held)", True),
        _c("wealth", "number", USD, "vault wealth"),
        _c("base_usd", "number", USD, "idle cash", True),
        _c("idle_share", "number", FRACTION, "idle cash as a share of wealth", True),
        _c("solver_status", "string", "", "the optimizer's status (optimal, no_universe, ...)", True),
        _c("cost_usd", "number", USD, "the day's proportional transaction cost", True),
        _c("gas_usd", "number", USD, "the day's gas", True),
        _c("solve_time_s", "number", "s", "optimizer time", True),
        _c("reference_price", "number", "", "price of the reference asset in USD", True),
        _c("positions_source", "string", "", "where the day's starting positions came from", True),
        _c("expected_base_usd", "number", USD, "idle cash expected from yesterday's decision", True),
        _c("observed_base_usd", "number", USD, "idle cash the vault reported", True),
    ),
)

SCHEMAS = {
    s.asset: s
    for s in (POOL_HISTORY, POOL_METADATA, ADJUSTED_YIELDS, FEATURES, PREDICTIONS, REBALANCE_WEIGHTS)
}


def unit_of(name: str, schema: Schema | None = None) -> str:
    """A column's unit: from the schema, else from its name's convention (``*_usd``, ``*apy*``,
    ``*_share``, ``*_weight``)."""
    col = schema.column(name) if schema is not None else None
    if col is not None and col.name != OTHER:
        return col.unit
    low = name.lower()
    if "__" in low:  # a generated feature (<column>__<transform>): scaled, no unit
        return ""
    if low.endswith("_usd") or low in ("usd", "wealth"):
        return USD
    if "apy" in low or low in ("excess", "log_growth"):
        return APY
    if low.endswith(("_share", "_weight", "weight", "coverage", "turnover")) or low in ("drift_share",):
        return FRACTION
    return ""
