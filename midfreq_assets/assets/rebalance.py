"""Nightly rebalance as an asset (thin layer over ``domain.rebalance``, the backtest's accounting).

``<vault>/rebalance_weights`` (daily, single-run backfills): for day D,

1. start from the holdings of day D-1 (its own previous partition; cash = the backtest's initial
   wealth when there is none) and accrue them to D with :func:`rebalance.accrue_step` using D's
   realized APY, TVL and IL from ``pool_history`` (the backtest's accounting, step t-1 -> t);
2. decide with :func:`rebalance.rebalance_step` on D's predictions and the universe of D
   (``pool_metadata``: TVL, project, chain for the group caps); held pools that left the universe
   are sold. The :class:`VaultOptimizer` is built once per universe and reused while it is unchanged.

A range backfill computes the days in order inside one run, starting from the partition before the
range. One row per (date, pool) of the universe or held: ``current_weight`` (after accrual),
``target_weight``, ``trade_usd``, ``predicted_apy``, ``dilution_factor``, ``holding_usd`` (after the
trade) and vault-level ``wealth`` (W before the trade), ``base_usd`` (idle after the trade, costs
paid), ``idle_share``, ``solver_status``.

The previous day is declared as a self-dependency (``AssetDep`` with
``TimeWindowPartitionMapping(-1, -1)``) for lineage and backfill ordering, but read directly from
the lake: the mapped window of a range run [s, e] is [s-1, e-1], whose later days are the stale
outputs of an earlier run (only s-1 is wanted), and the Parquet IO manager refuses a window whose
partitions are all missing (a first run that does not start at the calendar's first day).
"""

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    asset,
)

from midfreq_assets.domain.backtest.engine import DAYS_PER_YEAR, BacktestConfig
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.portfolio.optimizer import VaultOptimizer, optimizer_for_vault
from midfreq_assets.domain.portfolio.step import StepDecision, accrue_step, rebalance_step
from midfreq_assets.metadata import markdown_table
from midfreq_assets.partitions import daily_partitions, window_days
from midfreq_resources.io.lake import read_parquet

#: Starting wealth (USD) of a vault with no previous partition: the backtest's default.
INITIAL_WEALTH = BacktestConfig().initial_wealth
WEIGHT_TOL = 1e-6
VAULT_COLUMNS = ["wealth", "base_usd", "idle_share", "solver_status", "cost_usd", "gas_usd", "solve_time_s"]
COLUMNS = ["date", "pool", "symbol", "project", "chain", "in_universe", "tvl_usd", "current_weight",
           "target_weight", "trade_usd", "predicted_apy", "dilution_factor", "holding_usd", *VAULT_COLUMNS]
PREVIOUS_DAY = TimeWindowPartitionMapping(start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True)


class OptimizerCache:
    """One :class:`VaultOptimizer` per universe (pools + their project/chain), rebuilt on change."""

    def __init__(self, vault: VaultConfig) -> None:
        self.vault = vault
        self.key: tuple | None = None
        self.optimizer: VaultOptimizer | None = None
        self.builds = 0

    def get(self, pools: pd.DataFrame) -> VaultOptimizer:
        key = tuple(map(tuple, pools[["pool", "project", "chain"]].astype(str).to_numpy()))
        if key != self.key or self.optimizer is None:
            self.optimizer = optimizer_for_vault(pools, self.vault.strategy)
            self.key = key
            self.builds += 1
        return self.optimizer


def carried_state(previous: pd.DataFrame | None) -> tuple[dict[str, float], float, dict[str, float]] | None:
    """(holdings by pool, idle base, last TVL by pool) after day D-1's trade; None without a previous day."""
    if previous is None or previous.empty:
        return None
    rows = previous[previous["pool"].notna()]
    held = rows[rows["holding_usd"] > 0]
    tvl = rows.dropna(subset=["tvl_usd"])
    return (dict(zip(held["pool"], held["holding_usd"].astype(float), strict=True)),
            float(previous["base_usd"].iloc[0]), dict(zip(tvl["pool"], tvl["tvl_usd"].astype(float), strict=True)))


def decide_day(vault: VaultConfig, day: pd.Timestamp, state, cache: OptimizerCache, predictions: pd.DataFrame,
               universe: pd.DataFrame, history: pd.DataFrame) -> tuple[pd.DataFrame, StepDecision | None]:
    """Accrue ``state`` (from D-1) to ``day`` and rebalance; returns the day's rows and the decision."""
    holdings, base, last_tvl = state if state is not None else ({}, INITIAL_WEALTH, {})
    hist = history.set_index("pool") if len(history) else pd.DataFrame(columns=["apy", "tvl_usd", "il7d"])
    if holdings:
        pools_h = list(holdings)
        h = np.array([holdings[p] for p in pools_h])
        apy = hist["apy"].reindex(pools_h).to_numpy(dtype=float)
        tvl = hist["tvl_usd"].reindex(pools_h).to_numpy(dtype=float)
        tvl = np.where(np.isfinite(tvl), tvl, [last_tvl.get(p, np.nan) for p in pools_h])
        il = hist["il7d"].reindex(pools_h).abs().to_numpy(dtype=float) * 52.0 if "il7d" in hist else None
        acc = accrue_step(h, base, apy, tvl, 1.0 / DAYS_PER_YEAR, il_next=il)
        holdings, base = dict(zip(pools_h, acc.holdings, strict=True)), acc.base
    uni = universe.drop_duplicates("pool").set_index("pool")
    pools = sorted(set(uni.index) | set(holdings))
    frame = pd.DataFrame({"pool": pools})
    for col in ("symbol", "project", "chain"):
        frame[col] = frame["pool"].map(uni[col]) if col in uni else None
        if col != "symbol":
            frame[col] = frame[col].fillna("")
    frame["in_universe"] = frame["pool"].isin(uni.index)
    tvl_uni = frame["pool"].map(uni["tvl_usd"]) if "tvl_usd" in uni else pd.Series(np.nan, index=frame.index)
    tvl_hist = frame["pool"].map(hist["tvl_usd"]) if len(hist) else np.nan
    tvl_last = frame["pool"].map(last_tvl)
    frame["tvl_usd"] = tvl_uni.fillna(tvl_hist).fillna(tvl_last).astype(float)
    pred = predictions.drop_duplicates("pool").set_index("pool")["predicted_apy"] if len(predictions) else pd.Series(
        dtype=float)
    wealth = sum(holdings.values()) + base
    if not pools:
        row = {c: np.nan for c in COLUMNS} | {"date": day, "pool": None, "wealth": wealth, "base_usd": base,
                                                "idle_share": 1.0, "solver_status": "no_universe",
                                                "cost_usd": 0.0, "gas_usd": 0.0, "solve_time_s": 0.0}
        return pd.DataFrame([row])[COLUMNS], None
    optimizer = cache.get(frame)
    h = np.array([holdings.get(p, 0.0) for p in pools])
    dec = rebalance_step(optimizer, frame["pool"].map(pred).to_numpy(dtype=float), frame["tvl_usd"].to_numpy(),
                         wealth, h, eligible=frame["in_universe"].to_numpy(), base=base)
    rows = dec.to_frame()
    out = frame.join(rows.drop(columns="pool"))
    out.insert(0, "date", day)
    out["wealth"] = dec.wealth_before
    out["base_usd"] = dec.base_after
    out["idle_share"] = dec.base_after / dec.wealth_before
    out["solver_status"] = dec.status
    out["cost_usd"] = dec.cost_usd
    out["gas_usd"] = dec.gas_usd
    out["solve_time_s"] = dec.result.solve_time_s if dec.result is not None else 0.0
    return out[COLUMNS], dec


def trades_table(day_rows: pd.DataFrame) -> pd.DataFrame:
    """What a desk executes: one line per trade, largest first."""
    t = day_rows[day_rows["trade_usd"].fillna(0).abs() > 0]
    t = t.assign(side=np.where(t["trade_usd"] > 0, "buy", "sell"), usd=t["trade_usd"].abs().round(2),
                 target_weight=t["target_weight"].round(4))
    return t.sort_values("usd", ascending=False)[["symbol", "project", "chain", "side", "usd", "target_weight", "pool"]]


def weight_violations(rows: pd.DataFrame, vault: VaultConfig) -> pd.DataFrame:
    """Days whose weights leave [0, concentration_limit] or whose sum exceeds 1 - base_buffer."""
    s = vault.strategy
    r = rows[rows["pool"].notna()]
    bad_pool = r[(r["target_weight"] < -WEIGHT_TOL) | (r["target_weight"] > s.concentration_limit + WEIGHT_TOL)]
    sums = r.groupby("date")["target_weight"].sum()
    bad_sum = sums[sums > 1 - s.base_buffer + WEIGHT_TOL]
    out = [bad_pool[["date", "pool", "target_weight"]].assign(problem="weight out of bounds")]
    if len(bad_sum):
        out.append(pd.DataFrame({"date": bad_sum.index, "pool": None, "target_weight": bad_sum.to_numpy(),
                                 "problem": "sum above 1 - base_buffer"}))
    return pd.concat(out, ignore_index=True)


def build_rebalance_assets(vault: VaultConfig, partitions_def: DailyPartitionsDefinition = daily_partitions
                           ) -> list[AssetsDefinition]:
    """``[<vault>/rebalance_weights]`` with its weight-bounds check."""
    key = AssetKey([vault.name, "rebalance_weights"])
    s = vault.strategy

    @asset(
        key=key,
        ins={
            "predictions": AssetIn(key=AssetKey([vault.name, "predictions"])),
            "pool_metadata": AssetIn(key=AssetKey("pool_metadata")),
            "pool_history": AssetIn(key=AssetKey("pool_history")),
        },
        deps=[AssetDep(key, partition_mapping=PREVIOUS_DAY)],
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        required_resource_keys={"parquet_io_manager"},
        group_name=vault.name,
        kinds={"python", "parquet"},
        check_specs=[AssetCheckSpec(
            "weights_within_limits", asset=key, blocking=True,
            description=f"0 <= weight <= concentration_limit ({s.concentration_limit}) and "
            f"sum <= 1 - base_buffer ({1 - s.base_buffer:g}), tolerance {WEIGHT_TOL}")],
        description=f"Vault {vault.name}: the day's rebalance per pool (current/target weight, trade USD, predicted "
        "APY, dilution, holding USD) and vault wealth, idle share and solver status. Holdings carry over from the "
        "previous day, accrued with pool_history's realized APY (the backtest's accounting).",
    )
    def rebalance_weights(context: AssetExecutionContext, predictions: pd.DataFrame, pool_metadata: pd.DataFrame,
                          pool_history: pd.DataFrame):
        first, last = window_days(context.partition_time_window)
        io = context.resources.parquet_io_manager
        before = (pd.Timestamp(first) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
        path = io.partition_path(list(key.path), before)
        state = carried_state(read_parquet(path)) if path.exists() else None
        if state is None:
            context.log.info(f"{key.to_user_string()}: no partition {before}: starting from cash "
                             f"({INITIAL_WEALTH:,.0f})")
        from_cash = state is None
        cache = OptimizerCache(vault)
        member = pool_metadata["vaults"].map(lambda v: v is not None and not isinstance(v, float)
                                             and vault.name in list(v)) if len(pool_metadata) else None
        universe_day = _by_day(pool_metadata[member] if member is not None else pool_metadata)
        pred_day, hist_day = _by_day(predictions), _by_day(pool_history)
        frames, decisions = [], []
        for day in pd.date_range(first, last, freq="D"):
            empty = pd.DataFrame()
            rows, dec = decide_day(vault, day, state, cache, pred_day.get(day, empty), universe_day.get(day, empty),
                                   hist_day.get(day, empty))
            frames.append(rows)
            decisions.append(dec)
            state = carried_state(rows)
        out = pd.concat(frames, ignore_index=True)
        out["date"] = pd.to_datetime(out["date"]).astype("datetime64[ns]")
        last_rows = frames[-1]
        last_dec = decisions[-1]
        trades = trades_table(last_rows)
        statuses = out.drop_duplicates("date")["solver_status"].value_counts().to_dict()
        yield Output(out, metadata={
            "dagster/row_count": len(out),
            "day": str(last),
            "wealth": float(last_rows["wealth"].iloc[0]),
            "idle_share": float(last_rows["idle_share"].iloc[0]),
            "solver_status": str(last_rows["solver_status"].iloc[0]),
            "solve_time_s": float(last_rows["solve_time_s"].iloc[0]),
            "solver_message": last_dec.result.message if last_dec is not None and last_dec.result else "",
            "trades": markdown_table(trades, max_rows=30),
            "n_trades": len(trades),
            "statuses": MetadataValue.json({str(k): int(v) for k, v in statuses.items()}),
            "optimizer_builds": cache.builds,
            "started_from_cash": from_cash,
        })
        bad = weight_violations(out, vault)
        yield AssetCheckResult(check_name="weights_within_limits", passed=bad.empty,
                               metadata={"violations": len(bad), "examples": markdown_table(bad.astype(str))})

    return [rebalance_weights]


def _by_day(frame: pd.DataFrame) -> dict[pd.Timestamp, pd.DataFrame]:
    if frame is None or frame.empty:
        return {}
    day = pd.to_datetime(frame["date"]).dt.normalize()
    return {pd.Timestamp(d): g for d, g in frame.groupby(day.to_numpy())}
