"""The live loop of a vault: ``vault_positions`` in, ``trade_orders`` out, ``order_executions`` sent.

- ``<vault>/vault_positions`` (daily, only for a vault with a ``positions:`` section): the day's real
  holdings read from the configured source, validated (``domain.portfolio.positions``); a blocking
  check fails on rows that cannot be trusted, and ``rebalance_weights`` refuses them too.
- ``<vault>/trade_orders`` (daily): the ticket of the day (``domain.portfolio.orders``), Parquet in
  the lake plus a JSON ticket file beside it (``<vault>/trade_orders/<day>.json``).
- ``<vault>/order_executions`` (daily): the ticket sent as the difference to what the day already
  executed (a recomputed ticket is a new revision, never a second ticket), withdrawals first and
  deposits within the positions' cash (``domain.portfolio.execution_ledger``,
  ``midfreq_resources.clients.execution``), or dry run; every order of the day and its answer.
- ``<vault>/intraday_moves`` (hourly, schedule off unless ``intraday.enabled``): ``/pools`` re-read
  during the day against the last nightly ``pool_metadata``; writes only its own hourly partitions.
"""

import datetime as dt
from pathlib import Path

import orjson
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    Failure,
    MetadataValue,
    Output,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from midfreq_assets.concurrency import execution_pool
from midfreq_assets.domain.config.tokens import TokenRegistry
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.universe import vault_rows
from midfreq_assets.domain.portfolio.execution_ledger import DRY_RUN, FAILED, HELD_NO_CASH, PositionsBasis
from midfreq_assets.domain.portfolio.intraday import intraday_moves
from midfreq_assets.domain.portfolio.orders import (
    ORDER_COLUMNS,
    build_orders,
    deposit_token_prices,
    order_payloads,
    ticket,
)
from midfreq_assets.domain.portfolio.positions import (
    PositionsError,
    empty_positions,
    parse_positions,
    positions_totals,
    validate_positions,
)
from midfreq_assets.domain.units import percent_to_fraction
from midfreq_assets.metadata import markdown_table
from midfreq_assets.partitions import hourly_from, lookback, window_days, yields_last_day
from midfreq_assets.previews import schema_metadata
from midfreq_resources.clients.http_retry import RetryPolicy, SourceError
from midfreq_resources.io.lake import write_bytes_atomic

ROW_COLUMNS = [
    "idempotency_key",
    "revision",
    "pool",
    "side",
    "amount_usd",
    "status",
    "http_status",
    "filled_usd",
    "message",
    "attempts",
    "from_ledger",
]
EXECUTION_COLUMNS = ["date", *ROW_COLUMNS, "endpoint"]
#: Outcomes a desk must look at (the warning check lists them).
NOT_FILLED = ("rejected", "partially_filled", "conflict")


def _days(context: AssetExecutionContext) -> list[dt.date]:
    first, last = window_days(context.partition_time_window)
    return [d.date() for d in pd.date_range(first, last, freq="D")]


def ticket_table(orders: pd.DataFrame, columns: list[str]) -> MetadataValue:
    """The ticket as a Dagster table (the UI renders it as one)."""
    shown = orders[columns]
    schema = TableSchema(
        columns=[TableColumn(c, "float" if shown[c].dtype.kind == "f" else "string") for c in columns]
    )
    records = [
        TableRecord(
            {
                c: (None if pd.isna(v) else float(v) if isinstance(v, float) else str(v))
                for c, v in row.items()
            }
        )
        for row in shown.to_dict(orient="records")
    ]
    return MetadataValue.table(records, schema)


def build_positions_asset(
    vault: VaultConfig, partitions_def: DailyPartitionsDefinition, config_dir: Path
) -> AssetsDefinition:
    """``<vault>/vault_positions`` with its blocking ``positions_valid`` check."""
    cfg = vault.positions
    key = AssetKey([vault.name, "vault_positions"])
    fmt = cfg.file_format()

    @asset(
        key=key,
        ins={
            "pool_metadata": AssetIn(
                key=AssetKey("pool_metadata"),
                partition_mapping=lookback(vault.strategy.max_gap_days),
                metadata={"allow_missing_partitions": True},
            )
        },
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        metadata=schema_metadata("vault_positions"),
        required_resource_keys={"parquet_io_manager", "positions_client"},
        group_name=vault.name,
        kinds={"python", "parquet"},
        check_specs=[
            AssetCheckSpec(
                "positions_valid",
                asset=key,
                blocking=True,
                description="every row names a pool midfreq follows (or cash), with a value >= 0, an as_of within "
                f"{cfg.max_age_hours:g} h of the end of the day, each pool once",
            )
        ],
        description=f"Vault {vault.name}: its real holdings of the day as read from {cfg.source} ({fmt}): pool, "
        "amount_usd (or amount x price_usd), as_of, the idle cash as pool 'cash'; validated, totals in metadata.",
    )
    def vault_positions(context: AssetExecutionContext, pool_metadata: pd.DataFrame):
        io = context.resources.parquet_io_manager
        client = context.resources.positions_client
        known = set(pool_metadata["pool"]) if len(pool_metadata) else set()
        frames = []
        for day in _days(context):
            if not cfg.is_live(day):  # simulated day: nothing to read (an empty partition says so)
                context.log.info(
                    f"{key.to_user_string()} {day}: before positions.live_from ({cfg.live_from}): "
                    "the vault is simulated, nothing read"
                )
                continue
            try:
                data, where = client.read(
                    cfg.source_for(day),
                    day,
                    io.lake,
                    config_dir,
                    cfg.max_bytes,
                    add_date_param=cfg.is_url and "{date}" not in cfg.source,
                )
                rows = parse_positions(data, fmt, where, day)
            except (PositionsError, SourceError) as exc:
                raise Failure(f"{key.to_user_string()} {day}: {exc}") from None
            frames.append(validate_positions(rows, day, known, cfg))
        if not frames:
            yield Output(
                empty_positions(),
                metadata={
                    "live": False,
                    "note": f"every day before positions.live_from "
                    f"({cfg.live_from}): simulated, nothing read",
                },
            )
            yield AssetCheckResult(check_name="positions_valid", passed=True, metadata={"problems": 0})
            return
        out = pd.concat(frames, ignore_index=True)
        last = out[out["date"] == out["date"].max()]
        totals = positions_totals(last)
        yield Output(
            out,
            metadata={
                **totals,
                "live": True,
                "source": str(last["source"].iloc[0]),
                "day": str(last["date"].iloc[0].date()),
                "positions": markdown_table(last[["pool", "value_usd", "as_of", "problem"]]),
            },
        )
        bad = out[out["problem"].ne("")]
        yield AssetCheckResult(
            check_name="positions_valid",
            passed=bad.empty,
            metadata={
                "problems": len(bad),
                "rows": markdown_table(bad[["date", "pool", "value_usd", "as_of", "problem"]].astype(str)),
            },
        )

    return vault_positions


def build_orders_assets(
    vault: VaultConfig, tokens: TokenRegistry, partitions_def: DailyPartitionsDefinition
) -> list[AssetsDefinition]:
    """``<vault>/trade_orders`` and ``<vault>/order_executions``."""
    orders_key = AssetKey([vault.name, "trade_orders"])
    exec_key = AssetKey([vault.name, "order_executions"])
    positions_key = AssetKey([vault.name, "vault_positions"])
    pegged = tokens.pegged(vault.reference_asset)
    ex = vault.execution

    @asset(
        key=orders_key,
        ins={
            "rebalance_weights": AssetIn(key=AssetKey([vault.name, "rebalance_weights"])),
            "pool_metadata": AssetIn(key=AssetKey("pool_metadata")),
        },
        deps=[AssetDep("token_prices")],
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        metadata=schema_metadata("trade_orders"),
        required_resource_keys={"parquet_io_manager"},
        group_name=vault.name,
        kinds={"python", "parquet"},
        description=f"Vault {vault.name}: the day's transactions, one per pool (chain, protocol, token symbol and "
        "address, deposit/withdraw, USD and token amount, expected annual gain vs gas, idempotency key). Parquet, "
        "plus a JSON ticket beside it for a signer.",
    )
    def trade_orders(
        context: AssetExecutionContext, rebalance_weights: pd.DataFrame, pool_metadata: pd.DataFrame
    ):
        io = context.resources.parquet_io_manager
        frames = []
        for day in _days(context):
            ts = pd.Timestamp(day)
            rows = rebalance_weights[pd.to_datetime(rebalance_weights["date"]) == ts]
            meta = (
                pool_metadata[pd.to_datetime(pool_metadata["date"]) == ts]
                if len(pool_metadata)
                else pool_metadata
            )
            prices = io.daily(["token_prices"]).read([day.isoformat()])
            ref = float(rows["reference_price"].iloc[0]) if len(rows) else 1.0
            orders = build_orders(vault, rows, meta, deposit_token_prices(vault, prices, ref, pegged))
            orders["date"] = pd.to_datetime(orders["date"]).astype("datetime64[ns]")
            path = io.lake.joinpath(*orders_key.path, f"{day.isoformat()}.json")
            write_bytes_atomic(path, orjson.dumps(ticket(vault, day, orders), option=orjson.OPT_INDENT_2))
            frames.append(orders)
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ORDER_COLUMNS)
        last = frames[-1]
        shown = [
            "side",
            "symbol",
            "chain",
            "protocol",
            "token_symbol",
            "amount_usd",
            "token_amount",
            "expected_annual_gain_usd",
            "gas_usd",
            "gain_over_gas",
            "pool",
        ]
        yield Output(
            out,
            metadata={
                "day": str(_days(context)[-1]),
                "n_orders": len(last),
                "deposits_usd": float(last.loc[last["side"] == "deposit", "amount_usd"].sum()),
                "withdrawals_usd": float(last.loc[last["side"] == "withdraw", "amount_usd"].sum()),
                "expected_annual_gain_usd": float(last["expected_annual_gain_usd"].sum()),
                "gas_usd": float(last["gas_usd"].sum()),
                "ticket": ticket_table(last, shown)
                if len(last)
                else MetadataValue.md("_(no order: nothing to trade)_"),
                "ticket_file": MetadataValue.path(str(path)),
            },
        )

    def positions_basis(io, day: dt.date) -> PositionsBasis:
        """The cash and as_of of the positions the day was decided from (the cash guard, the fills they show)."""
        store = io.daily(list(positions_key.path))
        if day.isoformat() not in store.stored_days():
            raise Failure(
                f"{exec_key.to_user_string()} {day}: a live day, but {positions_key.to_user_string()} {day} "
                f"is not materialized (under {store.folder}): the orders are sized against its cash; "
                "materialize it first"
            )
        rows = store.read([day.isoformat()])
        return PositionsBasis.from_rows(rows[pd.to_datetime(rows["date"]) == pd.Timestamp(day)])

    @asset(
        key=exec_key,
        ins={"trade_orders": AssetIn(key=orders_key)},
        deps=[AssetDep(positions_key)] if vault.positions is not None else [],
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        pool=execution_pool(vault.name),
        io_manager_key="parquet_io_manager",
        metadata=schema_metadata("order_executions"),
        required_resource_keys={"parquet_io_manager", "execution_client"},
        group_name=vault.name,
        kinds={"python", "parquet"},
        check_specs=[
            AssetCheckSpec(
                "orders_delivered",
                asset=exec_key,
                blocking=True,
                description="every order sent got a definitive answer (an order sent without one is "
                "re-sent with its key by the next run before anything else)",
            ),
            AssetCheckSpec(
                "orders_within_cash",
                asset=exec_key,
                blocking=True,
                description="no deposit beyond the cash: the positions' cash plus the withdrawals filled "
                "minus the deposits executed since (a deposit that does not fit is held, not sent)",
            ),
            AssetCheckSpec(
                "orders_filled",
                asset=exec_key,
                description="no order rejected or partially filled (a warning: the next day's "
                "positions and reconciliation show the difference)",
            ),
        ],
        description=f"Vault {vault.name}: the day's ticket sent as the difference to what the day already executed "
        "(a recomputed ticket is a new revision of target - executed, never a second ticket), withdrawals first, "
        "deposits within the cash; each order POSTed with its Idempotency-Key (bounded retries, a ledger in the "
        "lake written before each POST) to execution.url or $MIDFREQ_EXECUTION_URL; without either: dry run. Only "
        "days decided from real positions are sent.",
    )
    def order_executions(context: AssetExecutionContext, trade_orders: pd.DataFrame):
        io = context.resources.parquet_io_manager
        client = context.resources.execution_client
        url = None if ex.dry_run else client.endpoint(ex.url)
        policy = RetryPolicy(
            ex.max_attempts,
            ex.backoff_base_s,
            ex.backoff_max_s,
            request_deadline_s=ex.request_deadline_s,
            total_deadline_s=ex.total_deadline_s,
        )
        ledger = io.lake.joinpath(vault.name, "execution_ledger")
        frames, results = [], []
        for day in _days(context):
            orders = (
                trade_orders[pd.to_datetime(trade_orders["date"]) == pd.Timestamp(day)]
                if len(trade_orders)
                else trade_orders
            )
            live = vault.positions is not None and vault.positions.is_live(day)
            why = (
                None
                if live
                else (
                    "the vault has no positions: section (holdings simulated)"
                    if vault.positions is None
                    else f"day before positions.live_from ({vault.positions.live_from})"
                )
            )
            send_to = url if live else None
            basis = positions_basis(io, day) if send_to else PositionsBasis(0.0, None)
            result = client.execute_day(
                vault.name,
                day,
                order_payloads(orders),
                send_to,
                ledger,
                basis,
                policy,
                ex.timeout_s,
                ex.min_order_usd,
            )
            if result.migrated:
                context.log.info(
                    f"{exec_key.to_user_string()}: moved {result.migrated} flat ledger entr(ies) into "
                    "their day's folder"
                )
            frame = pd.DataFrame([vars(r) for r in result.rows], columns=ROW_COLUMNS)
            if why is not None:
                frame["message"] = f"dry run: {why}"
            frame.insert(0, "date", pd.Timestamp(day))
            frame["endpoint"] = send_to or DRY_RUN
            frames.append(frame[EXECUTION_COLUMNS])
            results.append(result)
        out = pd.concat(frames, ignore_index=True)
        out["date"] = pd.to_datetime(out["date"]).astype("datetime64[ns]")
        out["revision"] = out["revision"].astype("int64")
        out["http_status"] = out["http_status"].astype("Int64")
        out["filled_usd"] = out["filled_usd"].astype(float)
        out["amount_usd"] = out["amount_usd"].astype(float)
        last, last_result = frames[-1], results[-1]
        counts = out["status"].value_counts().to_dict()
        pools = sorted(set(last_result.target) | set(last_result.executed_before))
        basis_table = pd.DataFrame(
            {
                "pool": pools,
                "target_usd": [last_result.target.get(q, 0.0) for q in pools],
                "executed_before_usd": [last_result.executed_before.get(q, 0.0) for q in pools],
            }
        )
        yield Output(
            out,
            metadata={
                "endpoint": str(last["endpoint"].iloc[0]) if len(last) else (url or DRY_RUN),
                "statuses": MetadataValue.json({str(k): int(v) for k, v in counts.items()}),
                "sent_now": int(out["attempts"].gt(0).sum()),
                "from_ledger": int(out["from_ledger"].sum()),
                "revision": -1 if last_result.revision is None else last_result.revision,
                "new_revision": last_result.new_revision,
                "cash": MetadataValue.json({k: float(v) for k, v in last_result.cash.items()}),
                "target_vs_executed": markdown_table(basis_table),
                "outcomes": markdown_table(
                    last[["revision", "side", "amount_usd", "status", "filled_usd", "attempts", "pool"]]
                ),
            },
        )
        undelivered = out[out["status"].eq(FAILED)]
        yield AssetCheckResult(
            check_name="orders_delivered",
            passed=undelivered.empty,
            metadata={
                "undelivered": len(undelivered),
                "orders": markdown_table(
                    undelivered[["date", "revision", "pool", "idempotency_key", "status", "message"]].astype(
                        str
                    )
                ),
            },
        )
        held = out[out["status"].eq(HELD_NO_CASH)]
        yield AssetCheckResult(
            check_name="orders_within_cash",
            passed=held.empty,
            metadata={
                "held": len(held),
                "held_usd": float(held["amount_usd"].sum()),
                "cash": MetadataValue.json({k: float(v) for k, v in last_result.cash.items()}),
                "orders": markdown_table(
                    held[["date", "revision", "pool", "side", "amount_usd", "message"]].astype(str)
                ),
            },
        )
        unfilled = out[out["status"].isin(NOT_FILLED)]
        yield AssetCheckResult(
            check_name="orders_filled",
            passed=unfilled.empty,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "not_filled": len(unfilled),
                "orders": markdown_table(
                    unfilled[["date", "revision", "pool", "side", "amount_usd", "status", "filled_usd"]]
                ),
            },
        )

    return [trade_orders, order_executions]


def build_intraday_assets(vault: VaultConfig, start: dt.date) -> tuple[AssetsDefinition, list, list]:
    """``<vault>/intraday_moves`` (hourly to the end of the yield calendar), its job and its schedule (the code
    location builds them only where ``intraday.enabled``)."""
    cfg = vault.intraday
    key = AssetKey([vault.name, "intraday_moves"])
    hours = hourly_from(start, yields_last_day())

    @asset(
        key=key,
        partitions_def=hours,
        io_manager_key="parquet_io_manager",
        metadata=schema_metadata("intraday_moves"),
        required_resource_keys={"parquet_io_manager", "defillama"},
        deps=[AssetDep("pool_metadata")],
        group_name=f"{vault.name}_intraday",
        kinds={"python", "parquet"},
        check_specs=[
            AssetCheckSpec(
                "no_large_intraday_moves",
                asset=key,
                description=f"no pool of the universe moved more than {cfg.apy_move:g}/yr APY "
                f"or {cfg.tvl_move:.0%} TVL since the nightly snapshot",
            )
        ],
        description=f"Vault {vault.name}: /pools re-read during the day; pools of the last nightly universe whose "
        f"APY moved more than {cfg.apy_move:g}/yr or TVL more than {cfg.tvl_move:.0%} are flagged. Hourly "
        "partitions of its own: the nightly partitions are never rewritten.",
    )
    def intraday_moves_asset(context: AssetExecutionContext):
        io = context.resources.parquet_io_manager
        hour = context.partition_time_window.start
        metadata = io.daily(["pool_metadata"])
        nightly_days = sorted(d for d in metadata.stored_days() if d < hour.date().isoformat())
        if not nightly_days:
            raise Failure(f"{key.to_user_string()}: no nightly pool_metadata before {hour.date()}")
        nightly = vault_rows(metadata.read([nightly_days[-1]]), vault.name)
        records = context.resources.defillama.pools()
        snap = pd.DataFrame(
            {
                "pool": [r.pool for r in records],
                "apy": [r.apy for r in records],
                "tvl_usd": [r.tvl_usd for r in records],
            }
        )
        snap["apy"] = percent_to_fraction(snap["apy"])
        moves = intraday_moves(nightly, snap, cfg)
        moves.insert(0, "nightly_day", nightly_days[-1])
        moves.insert(0, "fetched_at", pd.Timestamp.now(tz="UTC"))
        flagged = moves[moves["flag"].ne("")]
        yield Output(
            moves,
            metadata={
                "nightly_day": nightly_days[-1],
                "pools": len(moves),
                "flagged": len(flagged),
                "moves": markdown_table(flagged.drop(columns=["fetched_at", "nightly_day"])),
            },
        )
        yield AssetCheckResult(
            check_name="no_large_intraday_moves",
            passed=flagged.empty,
            severity=AssetCheckSeverity.WARN,
            metadata={"flagged": len(flagged)},
        )

    job = define_asset_job(
        f"{vault.name}_intraday",
        selection=[key],
        partitions_def=hours,
        description="Re-read /pools and flag pools that moved since the nightly snapshot.",
    )
    schedule = build_schedule_from_partitioned_job(
        job,
        name=f"{vault.name}_intraday_schedule",
        minute_of_hour=cfg.minute_of_hour,
        default_status=DefaultScheduleStatus.RUNNING if cfg.enabled else DefaultScheduleStatus.STOPPED,
    )
    return intraday_moves_asset, [job], [schedule]
