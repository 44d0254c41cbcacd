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


def replace_optional(column: Column) -> Column:
    """``column``, absent from some frames (a column another asset's schema requires)."""
    return Column(column.name, column.kind, column.unit, column.description, True)


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

# --------------------------------------------------------------------------- universe screen, lending
#: ``pool_rankings`` and ``universe_exclusions`` name the vault whose screen the row belongs to.
VAULT = _c("vault", "string", "", "the vault whose universe screen the row belongs to")

POOL_RANKINGS = Schema(
    "pool_rankings",
    (
        VAULT,
        DATE,
        POOL,
        _c("symbol", "string", "", "the pool's token symbol(s)"),
        _c("project", "string", "", "protocol (DefiLlama project slug)"),
        _c("chain", "string", "", "chain the pool lives on"),
        _c(
            "value",
            "number",
            APY,
            "the day's yield the vault ranks on (its top_pools.column: apy or apy_base); empty when "
            "the pool reported none",
        ),
        _c(
            "rank",
            "number",
            "",
            "the pool's rank that day among the pools passing the vault's other rules (1: highest "
            "value, ties share the better rank; empty without a value)",
        ),
        _c(
            "days_in_top",
            "number",
            "days",
            "days ranked <= top_n over the window before the day (empty: the window reaches before the data)",
        ),
        _c("picked", "bool", "", "the ranking picks the pool for the day (a complete window, enough days)"),
        _c("complete", "bool", "", "the window before the day is fully covered by data"),
        _c("window_start", "datetime", "day, UTC", "first day of the ranking window (day - window_days)"),
        _c("window_end", "datetime", "day, UTC", "last day of the ranking window (the day before)"),
    ),
)

UNIVERSE_EXCLUSIONS = Schema(
    "universe_exclusions",
    (
        VAULT,
        DATE,
        POOL,
        _c("chain", "string", "", "chain the pool lives on"),
        _c("project", "string", "", "protocol (DefiLlama project slug)"),
        _c("symbol", "string", "", "the pool's token symbol(s)"),
        _c("tvl_usd", "number", USD, "the pool's TVL that day (empty: none reported)"),
        _c("reason", "string", "", "the first rule of the vault's screen the pool fails that day"),
    ),
)

POOL_LEND_BORROW = Schema(
    "pool_lend_borrow",
    (
        DATE,
        POOL,
        _c("total_supply_usd", "number", USD, "lending market's supply S"),
        _c("total_borrow_usd", "number", USD, "lending market's borrows B"),
        _c("debt_ceiling_usd", "number", USD, "the market's debt ceiling (empty for most markets)"),
        _c("apy_base_borrow", "number", APY, "borrow APY"),
        _c("apy_reward_borrow", "number", APY, "reward APY paid to borrowers (empty for most markets)"),
        _c("apy_base", "number", APY, "supply APY paid in the pool's own tokens"),
        _c("utilization", "number", FRACTION, "borrows / supply (empty without supply)"),
        _c(
            "flag",
            "string",
            "",
            "why the row is not usable (non-finite, borrows above supply, implausible APY), empty when it is",
        ),
    ),
)

# --------------------------------------------------------------------------- Binance, coins API
#: Unit of a kline's prices and quote volumes: the symbol's quote asset (USDT for BTCUSDT).
QUOTE = "quote asset"
_BAR_TIMES = (
    _c("symbol", "string", "", "Binance symbol (e.g. BTCUSDT)"),
    _c("interval", "string", "", "bar interval (1d, 1h, ...)"),
    _c("open_time", "datetime", "UTC", "the bar's open time"),
    _c("close_time", "datetime", "UTC", "the bar's close time (Binance: the last millisecond of the bar)"),
)
_VOLUMES = (
    _c("volume", "number", "base asset", "traded volume"),
    _c("quote_volume", "number", QUOTE, "traded volume in the quote asset"),
    _c("taker_buy_volume", "number", "base asset", "volume bought by takers"),
    _c("taker_buy_quote_volume", "number", QUOTE, "volume bought by takers, in the quote asset"),
    _c("count", "integer", "", "number of trades"),
)
BAR_DATE = _c("date", "datetime", "day, UTC", "the day the bar opens")

BINANCE_KLINES = Schema(
    "binance_klines",
    (
        BAR_DATE,
        *_BAR_TIMES,
        _c("open", "number", QUOTE, "open price"),
        _c("high", "number", QUOTE, "highest price"),
        _c("low", "number", QUOTE, "lowest price"),
        _c("close", "number", QUOTE, "close price"),
        *_VOLUMES,
    ),
)

BINANCE_PREMIUM_INDEX_KLINES = Schema(
    "binance_premium_index_klines",
    (
        BAR_DATE,
        *_BAR_TIMES,
        _c("open", "number", FRACTION, "premium index at the open: (perpetual - index price) / index price"),
        _c("high", "number", FRACTION, "highest premium index"),
        _c("low", "number", FRACTION, "lowest premium index"),
        _c("close", "number", FRACTION, "premium index at the close"),
        *(_c(c.name, c.kind, c.unit, f"{c.description} (Binance writes 0 for an index)") for c in _VOLUMES),
    ),
)

BINANCE_FUNDING_RATES = Schema(
    "binance_funding_rates",
    (
        _c("date", "datetime", "day, UTC", "the day of the funding event"),
        _c("month", "string", "", "the monthly partition holding the row (YYYY-MM-01)"),
        _c("symbol", "string", "", "Binance USD-M perpetual symbol"),
        _c("calc_time", "datetime", "UTC", "when the funding rate was computed and paid"),
        _c("funding_interval_hours", "integer", "h", "hours between funding events"),
        _c(
            "funding_rate",
            "number",
            "fraction per interval",
            "paid by longs to shorts (negative: shorts pay), per funding interval",
        ),
    ),
)

TOKEN_PRICES = Schema(
    "token_prices",
    (
        DATE,
        _c("coin", "string", "", "DefiLlama coins id (coingecko:<id> or <chain>:<address>)"),
        _c("symbol", "string", "", "token symbol"),
        _c("price", "number", USD, "the day's price"),
        _c("confidence", "number", FRACTION, "DefiLlama's confidence in the price (0..1)"),
    ),
)

# --------------------------------------------------------------------------- live vault
VAULT_POSITIONS = Schema(
    "vault_positions",
    (
        DATE,
        POOL,
        _c(
            "amount_usd",
            "number",
            USD,
            "position value the source states in USD (empty when given in tokens)",
        ),
        _c("amount", "number", "token", "position in the pool's token (empty when given in USD)"),
        _c("price_usd", "number", USD, "token price used to value amount (empty when given in USD)"),
        _c("value_usd", "number", USD, "the position's value"),
        _c("as_of", "datetime", "UTC", "when the source valued the position"),
        _c("chain", "string", "", "chain the source states"),
        _c("token", "string", "", "token the source states"),
        _c("source", "string", "", "the positions file or URL the row came from"),
        _c(
            "problem",
            "string",
            "",
            "why the row is not trusted (unknown pool, stale as_of, ...), empty when it is",
        ),
    ),
)

TRADE_ORDERS = Schema(
    "trade_orders",
    (
        DATE,
        _c("vault", "string", "", "the vault that trades"),
        POOL,
        _c("chain", "string", "", "chain of the pool"),
        _c("protocol", "string", "", "protocol (DefiLlama project slug)"),
        _c("symbol", "string", "", "the pool's token symbol(s)"),
        _c("token_symbol", "string", "", "the token deposited or withdrawn"),
        _c("token_address", "string", "", "its address on the chain"),
        _c("side", "string", "", "deposit or withdraw"),
        _c("amount_usd", "number", USD, "the order's size"),
        _c("token_amount", "number", "token", "the order's size in the token"),
        _c("token_price_usd", "number", USD, "token price used for token_amount"),
        _c(
            "amount_reference", "number", "reference asset", "the order's size in the vault's reference asset"
        ),
        _c("predicted_apy", "number", APY, "predicted APY of the pool the decision used"),
        _c("expected_annual_gain_usd", "number", USD, "predicted APY x amount over a year"),
        _c("gas_usd", "number", USD, "gas the order costs"),
        _c("gain_over_gas", "number", "", "expected annual gain / gas"),
        _c("horizon_gain_usd", "number", USD, "expected gain over the label's horizon"),
        _c("reason", "string", "", "rebalance, or exit (the pool left the universe or lost its prediction)"),
        _c("target_weight", "number", FRACTION, "the pool's weight after the trade (share of wealth)"),
        _c(
            "idempotency_key",
            "string",
            "",
            "the order's one key (vault, day, pool): re-sends never double it",
        ),
    ),
)

ORDER_EXECUTIONS = Schema(
    "order_executions",
    (
        DATE,
        _c("idempotency_key", "string", "", "the order's key (trade_orders)"),
        _c("revision", "integer", "", "revision of the day's ticket the row belongs to (0: the first)"),
        POOL,
        _c("side", "string", "", "deposit or withdraw"),
        _c("amount_usd", "number", USD, "amount sent"),
        _c(
            "status", "string", "", "the endpoint's answer: filled, partially_filled, rejected, conflict, ..."
        ),
        _c("http_status", "integer", "", "HTTP status of the answer (empty: none, e.g. a dry run)"),
        _c("filled_usd", "number", USD, "amount the endpoint filled"),
        _c("message", "string", "", "the endpoint's or the dry run's message"),
        _c("attempts", "integer", "", "requests made for the order (retries included)"),
        _c("from_ledger", "bool", "", "the answer came from the write-ahead ledger (sent by an earlier run)"),
        _c("endpoint", "string", "", "the execution endpoint (or dry-run)"),
    ),
)

INTRADAY_MOVES = Schema(
    "intraday_moves",
    (
        _c("fetched_at", "datetime", "UTC", "when /pools was read"),
        _c("nightly_day", "string", "day, UTC", "the nightly pool_metadata the pool is compared with"),
        POOL,
        _c("symbol", "string", "", "the pool's token symbol(s)"),
        _c("project", "string", "", "protocol"),
        _c("chain", "string", "", "chain"),
        _c("nightly_apy", "number", APY, "APY in the nightly snapshot"),
        _c("apy", "number", APY, "APY now (empty: the pool is missing from /pools)"),
        _c("apy_change", "number", APY, "apy - nightly_apy"),
        _c("nightly_tvl_usd", "number", USD, "TVL in the nightly snapshot"),
        _c("tvl_usd", "number", USD, "TVL now"),
        _c("tvl_change", "number", FRACTION, "tvl_usd / nightly_tvl_usd - 1"),
        _c(
            "flag",
            "string",
            "",
            "apy moved, tvl moved, both, or missing from /pools; empty within thresholds",
        ),
    ),
)

# --------------------------------------------------------------------------- backtests
BACKTEST_PANEL = Schema(
    "backtest_panel",
    (
        *POOL_HISTORY.columns,
        _c("response_method", "string", "", "how our deposit dilutes the pool: curve or tvl_share", True),
        _c("response_reason", "string", "", "why the pool has no fitted rate curve that day", True),
        _c("size_base_usd", "number", USD, "the base a position's share is measured against", True),
        _c("dilution_depth_usd", "number", USD, "the depth our deposit dilutes (idle TVL or supply)", True),
        _c("total_supply_usd", "number", USD, "lending market's supply (pool_lend_borrow)", True),
        _c("total_borrow_usd", "number", USD, "lending market's borrows (pool_lend_borrow)", True),
        _c("curve_base", "number", APY, "fitted rate curve: borrow APY at zero utilization", True),
        _c("curve_slope1", "number", APY, "fitted rate curve: slope below the kink", True),
        _c("curve_slope2", "number", APY, "fitted rate curve: slope above the kink", True),
        _c("curve_optimal", "number", FRACTION, "fitted rate curve: the kink's utilization", True),
        _c("curve_reserve_factor", "number", FRACTION, "fitted rate curve: share of interest kept", True),
        _c("curve_u_min", "number", FRACTION, "lowest utilization the fit saw", True),
        *(
            replace_optional(c)
            for c in ADJUSTED_YIELDS.columns
            if c.name
            in (
                "adjusted_apy",
                "underlying_apy",
                "peg_yield",
                "il_annual",
                "price_return",
                "price_exposed",
                "reference_price",
            )
        ),
        _c("flag_il_missing", "bool", "", "the IL estimate is missing on the row (adjusted_yields)", True),
        _c("eligible", "bool", "", "the pool is in the vault's universe that day"),
        _c("project", "string", "", "protocol"),
        _c("chain", "string", "", "chain"),
        _c("symbol", "string", "", "the pool's token symbol(s)", True),
    ),
)

BACKTEST_RUNS = Schema(
    "backtest_runs",
    (
        _c("point", "string", "", "the grid point (partition) the row belongs to"),
        _c("date", "datetime", "day, UTC", "the decision day"),
        _c("date_end", "datetime", "day, UTC", "the day the step accrues to"),
        _c("wealth_start", "number", "reference asset", "wealth before the day's trades"),
        _c("cost_usd", "number", "reference asset", "the day's proportional transaction cost"),
        _c("gas_usd", "number", "reference asset", "the day's gas"),
        _c("n_trades", "integer", "", "trades that day"),
        _c("forced_sales", "integer", "", "sales forced by a pool leaving the universe or a cap"),
        _c("turnover", "number", FRACTION, "traded value / wealth"),
        _c("invested", "number", FRACTION, "share of wealth invested after the trades"),
        _c("n_held", "integer", "", "pools held"),
        _c("n_eligible", "integer", "", "pools in the universe that day"),
        _c("n_held_in_gap", "integer", "", "pools held through a data gap"),
        _c("n_held_il_missing", "integer", "", "pools held without an IL estimate"),
        _c("entropy", "number", "", "normalized entropy of the weights (0: one pool, 1: even)"),
        _c("predicted_apy", "number", APY, "the portfolio's predicted APY"),
        _c("realized_apy", "number", APY, "the portfolio's APY earned over the step"),
        _c("dilution", "number", "", "APY kept after our own deposits dilute the pools (1: none)"),
        _c("il_usd", "number", "reference asset", "impermanent loss over the step"),
        _c("price_pnl_usd", "number", "reference asset", "price gain/loss of non-pegged legs over the step"),
        _c("missing_apy", "integer", "", "held pools without an APY that day (accrue nothing)"),
        _c("status", "string", "", "the optimizer's status"),
        _c("solver", "string", "", "the solver that decided"),
        _c("wealth", "number", "reference asset", "wealth at date_end"),
        _c("tracking_error", "number", APY, "predicted - realized APY"),
        _c("params", "string", "", "the point's parameter overrides (JSON)"),
        _c("initial_wealth", "number", "reference asset", "wealth at the start"),
        _c("base_rate", "number", APY, "the base rate excess returns are measured over"),
        _c(OTHER, "number", FRACTION, "w__<pool>: the weight held in the pool that day (share of wealth)"),
    ),
)

BACKTEST_REPORT = Schema(
    "backtest_report",
    (
        _c("grid", "string", "", "the grid file (partition)"),
        _c("name", "string", "", "the row: walk_forward, a grid point or a benchmark rule"),
        _c("kind", "string", "", "walk_forward, grid_point or benchmark"),
        _c("role", "string", "", "what the row is in the evaluation (walk-forward, the bar, ...)"),
        _c(
            "benchmark_set", "string", "", "the grid configuration a benchmark ran under (empty: the vault's)"
        ),
        _c("period_start", "datetime", "day, UTC", "first out-of-sample day every row covers", True),
        _c("period_end", "datetime", "day, UTC", "last out-of-sample day", True),
        _c("log_growth", "number", APY, "mean log growth of wealth per year"),
        _c("base_rate", "number", APY, "the base rate"),
        _c("excess_log_growth", "number", APY, "log growth over the base rate"),
        _c("invested_share", "number", FRACTION, "mean share of wealth invested"),
        _c("volatility", "number", "per year", "volatility of daily log returns, annualized"),
        _c("excess_sharpe", "number", "", "Sharpe ratio of returns over the base rate"),
        _c("excess_sortino", "number", "", "Sortino ratio of returns over the base rate"),
        _c("max_drawdown", "number", FRACTION, "largest fall from a running peak"),
        _c("excess_calmar", "number", "", "excess log growth / max drawdown"),
        _c("turnover", "number", "per year", "traded value / wealth, per year"),
        _c("cost_drag", "number", APY, "proportional costs and gas as a yield lost"),
        _c("gas_usd", "number", "reference asset", "gas paid"),
        _c("il_drag", "number", APY, "impermanent loss as a yield lost"),
        _c("price_pnl", "number", APY, "price gain/loss of non-pegged legs as a yield"),
        _c("il_data_missing_share", "number", FRACTION, "share of held pool-days without an IL estimate"),
        _c("gap_pool_days", "number", "pool-days", "pool-days held through a data gap"),
        _c("empty_universe_days", "number", "days", "days with no pool in the universe"),
        _c("entropy", "number", "", "mean normalized entropy of the weights"),
        _c("tracking_error", "number", APY, "mean predicted - realized APY"),
        _c("final_wealth", "number", "reference asset", "wealth at the end"),
        _c("years", "number", "years", "length of the period"),
        _c("solver_failures", "number", "days", "days the optimizer failed"),
        _c("excess_over_bar", "number", APY, "log growth over the bar's (the strongest benchmark)"),
        _c("pbo", "number", FRACTION, "probability of backtest overfitting of the grid (CSCV)"),
        _c("deflated_sharpe", "number", FRACTION, "deflated Sharpe ratio (probability), walk-forward row"),
        _c("deflated_sharpe_excess", "number", FRACTION, "deflated Sharpe of the excess over the bar"),
        _c("excess_vs_benchmark", "number", APY, "walk-forward's mean excess over the bar"),
        _c("excess_ci_low", "number", APY, "bootstrap interval of that excess: low end"),
        _c("excess_ci_high", "number", APY, "bootstrap interval of that excess: high end"),
        _c(OTHER, "string", "", "a grid parameter (dotted key of the vault config), its value as text"),
    ),
)

TOP_POOLS = Schema(
    "top_pools",
    (
        _c(
            "rank", "integer", "", "position in the ranking: picked first, then by days in the top, best rank"
        ),
        POOL,
        _c("picked", "bool", "", "the ranking picks the pool from as_of on"),
        _c("days_in_top", "integer", "days", "days ranked <= top_n over the window"),
        _c("best_rank", "number", "", "the pool's best daily rank over the window"),
        _c("days_eligible", "integer", "days", "days of the window the pool passed the vault's other rules"),
        _c("mean_apy", "number", APY, "mean daily APY over the window (top_pools.column: apy)", True),
        _c(
            "mean_apy_base",
            "number",
            APY,
            "mean daily base APY over the window (top_pools.column: apy_base)",
            True,
        ),
        _c("symbol", "string", "", "the pool's token symbol(s) on its last day in the window", True),
        _c("project", "string", "", "protocol", True),
        _c("chain", "string", "", "chain", True),
        _c("last_tvl_usd", "number", USD, "the pool's TVL on its last day in the window", True),
        _c("window_start", "datetime", "day, UTC", "first day of the window"),
        _c("window_end", "datetime", "day, UTC", "last day of the window (the day before as_of)"),
        _c(
            "as_of",
            "datetime",
            "day, UTC",
            "the first day the picks may be used (the day after the last ranked day)",
        ),
    ),
)

# --------------------------------------------------------------------------- price research (klines)
_BAR_KEYS = (
    _c("open_time", "datetime", "UTC", "the bar's open time"),
    _c("date", "datetime", "day, UTC", "the day the bar opens"),
    _c("instrument", "string", "", "Binance symbol of the bar (e.g. BTCUSDT)"),
)

#: ``price_research/<interval>/features`` (the vaults' ``features`` is :data:`FEATURES`).
PRICE_FEATURES = Schema(
    "price_research/features",
    (
        *_BAR_KEYS,
        _c(
            OTHER,
            "value",
            "",
            "a feature from the interval's feature_map (<column>__<transform>_<windows>, or a raw column "
            "such as close_premium); empty while its lookback is not yet covered",
        ),
    ),
)

#: ``price_research/<interval>/predictions`` (the vaults' ``predictions`` is :data:`PREDICTIONS`).
PRICE_PREDICTIONS = Schema(
    "price_research/predictions",
    (
        *_BAR_KEYS,
        _c("model_as_of", "datetime", "day, UTC", "as_of of the weekly model that predicted the row"),
        _c(
            OTHER,
            "number",
            "",
            "<label>/<estimator>: predicted forward log return (regression); <label>/<estimator>:p_<class>: "
            "the class probability (classification); empty where that model did not predict the bar",
        ),
    ),
)

SIGNAL_REPORT = Schema(
    "signal_report",
    (
        _c("model", "string", "", "<label>/<estimator> traded as a signal"),
        _c("fold", "string", "", "the weekly model's as_of (one walk-forward fold), or all"),
        _c("instrument", "string", "", "Binance symbol traded"),
        _c("bars", "integer", "bars", "bars with a signal and a known forward return"),
        _c("annual_return", "number", APY, "mean log P&L net of costs, annualized"),
        _c("sortino", "number", "", "annual return / annualized downside deviation (empty: no loss)"),
        _c("max_drawdown", "number", "log return", "largest fall of the cumulative log P&L"),
        _c(
            "hit_ratio",
            "number",
            FRACTION,
            "share of bars in a position whose sign was right (empty: never in)",
        ),
        _c("exposure", "number", FRACTION, "share of bars in a position"),
        _c(
            OTHER,
            "number",
            "",
            "signal_pNN: the signal's NN% quantile (class value or sigma units); return_bK: mean forward "
            "log return of the bars in signal quantile bucket K (1: weakest; empty: no bar in it)",
        ),
    ),
)

SCHEMAS = {
    s.asset: s
    for s in (
        POOL_HISTORY,
        POOL_METADATA,
        ADJUSTED_YIELDS,
        FEATURES,
        PREDICTIONS,
        REBALANCE_WEIGHTS,
        BINANCE_KLINES,
        BINANCE_PREMIUM_INDEX_KLINES,
        BINANCE_FUNDING_RATES,
        TOKEN_PRICES,
        POOL_RANKINGS,
        UNIVERSE_EXCLUSIONS,
        POOL_LEND_BORROW,
        TOP_POOLS,
        PRICE_FEATURES,
        PRICE_PREDICTIONS,
        SIGNAL_REPORT,
        VAULT_POSITIONS,
        TRADE_ORDERS,
        ORDER_EXECUTIONS,
        INTRADAY_MOVES,
        BACKTEST_PANEL,
        BACKTEST_RUNS,
        BACKTEST_REPORT,
    )
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
