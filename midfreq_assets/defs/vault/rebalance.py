"""``<vault>/rebalance_weights``: the nightly rebalance (``domain.portfolio.nightly``, the backtest's accounting).

For day D: start from the holdings of day D-1 (its own previous partition; cash at the vault's
initial wealth when there is none), accrue them to D with D's earned yield (``adjusted_yields``:
IL inside, once), TVL and the legs' price move, then decide on D's predictions and universe; held
pools that left the universe are sold, held pools missing from D's data up to the strategy's
``max_gap_days`` are kept. A range backfill computes its days in order inside one run, starting
from the partition before the range.

``predictions`` and ``adjusted_yields`` are monthly (the month holding D); a month partition is
rewritten as its days arrive, so each day checks that the month's latest materialization covers it
(its ``last_day`` metadata): a month written before D's data arrived fails the day, naming what to
re-materialize, instead of deciding D on no prediction.

The previous day is declared as a self-dependency (``AssetDep`` with ``PREVIOUS_DAY``) for lineage
and backfill ordering, but read directly from the lake: the mapped window of a range run [s, e]
is [s-1, e-1], whose later days are stale outputs of an earlier run (only s-1 is wanted).

A vault with a ``positions:`` section decides each day from ``positions.live_from`` on from its real
holdings (``<vault>/vault_positions`` of the day, read from the lake: a missing partition fails the
day, positions with problems are refused) instead of the carried state; the metadata says which
days started from which (``positions_source``). The ``positions_reconciled`` check (a warning)
compares those positions with yesterday's target after accrual (``domain.portfolio.reconcile``).
"""

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
    Failure,
    MetadataValue,
    Output,
    asset,
)

from midfreq_assets.asset_plots import weight_plots
from midfreq_assets.domain.config.vault import VaultConfig
from midfreq_assets.domain.ingest.pool_history import usable_rows
from midfreq_assets.domain.ingest.universe import vault_rows
from midfreq_assets.domain.portfolio.limits import CAPS_IDLE_WARN, CapsCapacity, caps_capacity
from midfreq_assets.domain.portfolio.nightly import (
    FROM_POSITIONS,
    WEIGHT_TOL,
    CarriedState,
    Observed,
    by_day,
    decide_range,
    trades_table,
    weight_violations,
)
from midfreq_assets.domain.portfolio.positions import PositionsError, observed_holdings
from midfreq_assets.domain.portfolio.reconcile import drift_table, drifted
from midfreq_assets.domain.schemas import USD
from midfreq_assets.domain.yields.response import with_responses
from midfreq_assets.metadata import TOLERATE_GAPS, covered_through, markdown_table, partition_metadata
from midfreq_assets.partitions import PREVIOUS_DAY, daily_from, lookback, window_days, yields_last_day
from midfreq_assets.previews import fmt_number, schema_metadata


def day_figures(out: pd.DataFrame) -> pd.DataFrame:
    """Per day (index ``date``): wealth, invested and idle share, pools held, the predicted APY of the
    holdings, turnover, trades, costs, the solver's status and time, where the day started from."""
    head = out.drop_duplicates("date").set_index("date")
    pools = out[out["pool"].notna()]
    held = pools[pools["target_weight"] > 0]
    weighted = (held["target_weight"] * held["predicted_apy"].fillna(0.0)).groupby(held["date"]).sum()
    weights = held.groupby("date")["target_weight"].sum()
    traded = pools["trade_usd"].fillna(0.0).abs()
    figures = pd.DataFrame(
        {
            "wealth": head["wealth"].astype(float),
            "idle_share": head["idle_share"].astype(float),
            "pools_held": held.groupby("date").size(),
            "predicted_apy": weighted / weights,
            "turnover": traded.groupby(pools["date"]).sum(),
            "n_trades": (traded > 0).groupby(pools["date"]).sum(),
            "cost_usd": head["cost_usd"].astype(float),
            "gas_usd": head["gas_usd"].astype(float),
            "solve_time_s": head["solve_time_s"].astype(float),
            "solver_status": head["solver_status"].astype(str),
            "positions_source": head["positions_source"].astype(str),
        },
        index=head.index,
    )
    figures["turnover"] = (figures["turnover"] / figures["wealth"]).where(figures["wealth"] > 0)
    figures["invested_share"] = 1.0 - figures["idle_share"]
    numeric = ["pools_held", "predicted_apy", "turnover", "n_trades", "solve_time_s"]
    figures[numeric] = figures[numeric].fillna(0.0)
    return figures


def drift_sentence(
    worst: pd.DataFrame, drift: pd.DataFrame, threshold: float, sources: pd.Series | None = None
) -> str:
    """The ``positions_reconciled`` result in one sentence: the largest drift (day, pool, actual vs
    expected, share of wealth), how many lines and days exceed the threshold, and where to look; on
    the first day decided from real positions (``sources``: each day's ``positions_source``, the
    day before simulated) the target compared with was simulated, never traded, so drift is expected."""
    if worst.empty:
        days = int(drift["date"].nunique()) if len(drift) else 0
        return f"every holding is within {threshold:.0%} of wealth of yesterday's target after accrual ({days} day(s))"
    top = worst.iloc[0]
    return (
        f"On {pd.Timestamp(top['date']):%Y-%m-%d} {top['symbol']} held {fmt_number(top['actual_usd'], USD)} USD where "
        f"{fmt_number(top['expected_usd'], USD)} were expected (drift {top['drift_share']:+.1%} of wealth, threshold "
        f"{threshold:.0%}); {len(worst)} line(s) over it on {worst['date'].nunique()} day(s): a partial fill or "
        "rejection shows on the pool and the cash line, a deposit or withdrawal on the cash line alone, so check "
        "that day's order_executions" + _first_live_note(pd.Timestamp(top["date"]), sources) + "."
    )


def _first_live_note(day: pd.Timestamp, sources: pd.Series | None) -> str:
    before = day - pd.Timedelta(days=1)
    if sources is None or before not in sources.index or sources[before] == FROM_POSITIONS:
        return ""
    return (
        f" (expected here: {day:%Y-%m-%d} is the first day decided from real positions, and the target it is "
        f"compared with comes from the simulated {before:%Y-%m-%d}, whose orders were never sent)"
    )


def build_rebalance_assets(
    vault: VaultConfig, partitions_def: DailyPartitionsDefinition | None = None
) -> list[AssetsDefinition]:
    """``[<vault>/rebalance_weights]`` with its weight-bounds check."""
    partitions_def = partitions_def or daily_from(vault.start_date, yields_last_day())
    key = AssetKey([vault.name, "rebalance_weights"])
    s = vault.strategy
    live = vault.positions
    positions_key = AssetKey([vault.name, "vault_positions"])
    checks = [
        AssetCheckSpec(
            "weights_within_limits",
            asset=key,
            blocking=True,
            description=f"0 <= weight <= concentration_limit ({s.concentration_limit}; a holding kept through a "
            f"data gap may drift above it) and sum <= 1 - base_buffer ({1 - s.base_buffer:g}), tolerance {WEIGHT_TOL}",
        ),
        AssetCheckSpec(
            "caps_leave_budget_idle",
            asset=key,
            description="the caps (concentration_limit, max_pool_tvl_share, chain_caps, protocol_caps) allow the "
            f"budget 1 - base_buffer on the day's universe, within {CAPS_IDLE_WARN:g} of wealth (a warning naming "
            "the binding caps)",
        ),
    ]
    if live is not None:
        checks.append(
            AssetCheckSpec(
                "positions_reconciled",
                asset=key,
                description=f"on days decided from vault_positions: every pool's |actual - expected| (yesterday's "
                f"target after accrual) is at most {live.drift_warn:g} of wealth (a warning)",
            )
        )

    def check_coverage(context: AssetExecutionContext, first, last) -> None:
        """Each day of the range is covered by its month of predictions and adjusted yields."""
        for name in ("predictions", "adjusted_yields"):
            upstream = AssetKey([vault.name, name])
            for month in sorted({f"{d:%Y-%m}" for d in pd.date_range(first, last, freq="D")}):
                through = covered_through(context.instance, upstream, month)
                needed = min(pd.Timestamp(last), pd.Timestamp(month) + pd.offsets.MonthEnd(0)).date()
                if through is None or through < needed:
                    raise Failure(
                        f"{key.to_user_string()} {needed}: {upstream.to_user_string()} {month} covers "
                        f"{'no day' if through is None else f'the days through {through}'}; materialize "
                        f"{upstream.to_user_string()} for {month} first (a month is rewritten as its days "
                        "arrive)"
                    )

    def observed_days(io, first, last) -> dict[pd.Timestamp, Observed]:
        """Real holdings per live day of the range, from the lake (a missing day fails the run)."""
        if live is None:
            return {}
        out = {}
        store = io.daily(list(positions_key.path))
        stored = store.stored_days()
        for day in pd.date_range(first, last, freq="D"):
            if not live.is_live(day.date()):
                continue
            name = day.strftime("%Y-%m-%d")
            if name not in stored:
                raise Failure(
                    f"{key.to_user_string()} {day.date()}: decided from real positions (positions.live_from "
                    f"{live.live_from or 'every day'}) but {positions_key.to_user_string()} {day.date()} is "
                    f"not materialized (under {store.folder})"
                )
            try:
                out[day] = observed_holdings(store.read([name], stored=stored))
            except PositionsError as exc:
                raise Failure(f"{key.to_user_string()} {day.date()}: {exc}") from None
        return out

    @asset(
        key=key,
        ins={
            "predictions": AssetIn(key=AssetKey([vault.name, "predictions"])),
            "pool_metadata": AssetIn(key=AssetKey("pool_metadata")),
            "pool_history": AssetIn(key=AssetKey("pool_history")),
            "adjusted_yields": AssetIn(key=AssetKey([vault.name, "adjusted_yields"])),
            # lending markets' supply and borrows over the rate-curve fit window (none without an API key)
            "pool_lend_borrow": AssetIn(
                key=AssetKey("pool_lend_borrow"),
                partition_mapping=lookback(vault.yields.rate_curves.window_days + 7),
                metadata={**TOLERATE_GAPS, "optional": True},
            ),
        },
        deps=[AssetDep(key, partition_mapping=PREVIOUS_DAY), *([AssetDep(positions_key)] if live else [])],
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        io_manager_key="parquet_io_manager",
        required_resource_keys={"parquet_io_manager"},
        group_name=vault.name,
        kinds={"python", "parquet"},
        metadata=schema_metadata("rebalance_weights"),
        check_specs=checks,
        description=f"Vault {vault.name}: the day's rebalance per pool (current/target weight, trade, predicted "
        f"and earned {vault.backtest.apy_column}, dilution, holding, data-gap flags) and vault wealth, idle share "
        "and solver status, in the vault's reference asset. Holdings carry over from the previous day, accrued "
        "with the backtest's accounting"
        + (
            f"; from {live.live_from or 'the first day'} on, the day starts from {vault.name}/vault_positions."
            if live
            else "."
        ),
    )
    def rebalance_weights(
        context: AssetExecutionContext,
        predictions: pd.DataFrame,
        pool_metadata: pd.DataFrame,
        pool_history: pd.DataFrame,
        adjusted_yields: pd.DataFrame,
        pool_lend_borrow: pd.DataFrame,
    ):
        first, last = window_days(context.partition_time_window)
        check_coverage(context, first, last)
        before = (pd.Timestamp(first) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
        own = context.resources.parquet_io_manager.daily(list(key.path))
        path = own.path_of(before)
        state = CarriedState.from_rows(own.read([before])) if before in own.stored_days() else None
        first_day = partitions_def.start.date()
        observed = observed_days(context.resources.parquet_io_manager, first, last)
        from_positions = pd.Timestamp(first) in observed
        if (
            state is None
            and first > first_day
            and vault.on_missing_upstream_days == "fail"
            and not from_positions
        ):
            raise Failure(
                f"{key.to_user_string()}: the previous day {before} is not in the lake ({path}), so "
                f"{first} has no holdings to start from; materialize from the first missing day, or set "
                "on_missing_upstream_days: tolerate in the vault config to restart from cash"
            )
        if state is None and not from_positions:
            log = context.log.warning if first > first_day else context.log.info
            log(
                f"{key.to_user_string()}: no partition {before}: starting from cash ({vault.backtest.initial_wealth:,.0f})"
            )
        history = with_responses(usable_rows(pool_history), pool_lend_borrow, vault.yields.rate_curves)
        out, decisions, cache = decide_range(
            vault,
            pd.date_range(first, last, freq="D"),
            state,
            predictions,
            vault_rows(pool_metadata, vault.name),
            history,
            adjusted_yields,
            observed,
        )
        statuses = out.drop_duplicates("date")["solver_status"].value_counts().to_dict()
        open_days = set(
            out.loc[out["in_universe"].fillna(False).astype(bool), "date"]
        )  # days caps could bind
        budget = CapsCapacity(1.0 - s.base_buffer, 1.0 - s.base_buffer, 0)
        capacity = {
            day: caps_capacity(s, rows) if day in open_days else budget for day, rows in by_day(out).items()
        }
        last_caps = capacity[max(capacity)]
        messages = {
            pd.Timestamp(d): (dec.result.message if dec is not None and dec.result else "")
            for d, dec in zip(pd.date_range(first, last, freq="D"), decisions, strict=True)
        }

        daily = day_figures(out)  # every day's numbers at once (a year of days: one groupby, not 365)

        def summary(rows: pd.DataFrame, _key: str | None) -> dict:
            """The day's own decision: wealth, invested share, pools held, predicted APY, turnover, trades
            (numbers the UI plots across days); what binds or fails only when it does (every entry of
            every day's event costs: a year of days is 365 events)."""
            if rows.empty:
                return {"dagster/row_count": 0}
            day = pd.Timestamp(rows["date"].iloc[0]).normalize()
            fig = daily.loc[day]
            caps = capacity.get(day)
            message = "; ".join(m for m in (messages.get(day, ""), caps.message if caps else "") if m)
            meta = {
                "dagster/row_count": len(rows),
                **{k: float(fig[k]) for k in ("wealth", "invested_share", "predicted_apy", "turnover")},
                "pools_held": int(fig["pools_held"]),
                "n_trades": int(fig["n_trades"]),
                "solver_status": str(fig["solver_status"]),
                "positions_source": str(fig["positions_source"]),
            }
            if fig["n_trades"]:
                meta.update(
                    cost_usd=float(fig["cost_usd"]),
                    gas_usd=float(fig["gas_usd"]),
                    trades=markdown_table(trades_table(rows), max_rows=15),
                )
            if message:
                meta["solver_message"] = message
            if caps is not None and caps.forced_idle > 0:
                meta.update(
                    caps_idle_share=caps.forced_idle,
                    caps_capacity=caps.capacity,
                    binding_caps=", ".join(caps.binding),
                )
            return meta

        yield Output(
            out,
            metadata=partition_metadata(
                context,
                out,
                summary,
                {
                    "statuses": MetadataValue.json({str(k): int(v) for k, v in statuses.items()}),
                    "optimizer_builds": cache.builds,
                    "started_from_cash": state is None and not from_positions,
                    "days_from_positions": len(observed),
                    "days_simulated": int(out["date"].nunique()) - len(observed),
                    "days_without_universe": int(statuses.get("no_universe", 0)),
                    "held_pool_days_in_gap": int(out["in_gap"].fillna(False).astype(bool).sum()),
                    **response_metadata(history),
                    **weight_plots(out),
                },
            ),
        )
        bad = weight_violations(out, vault)
        yield AssetCheckResult(
            check_name="weights_within_limits",
            passed=bad.empty,
            metadata={"violations": len(bad), "examples": markdown_table(bad.astype(str))},
        )
        idle = pd.DataFrame(
            [
                {
                    "date": str(d.date()),
                    "caps_idle_share": c.forced_idle,
                    "capacity": c.capacity,
                    "pools": c.pools,
                    "binding": ", ".join(c.binding),
                }
                for d, c in capacity.items()
                if c.forced_idle > CAPS_IDLE_WARN
            ]
        )
        yield AssetCheckResult(
            check_name="caps_leave_budget_idle",
            passed=idle.empty,
            severity=AssetCheckSeverity.WARN,
            description=last_caps.message or None,
            metadata={
                "days_over_threshold": len(idle),
                "threshold": CAPS_IDLE_WARN,
                "max_caps_idle_share": max((c.forced_idle for c in capacity.values()), default=0.0),
                "binding_caps": ", ".join(last_caps.binding),
                "days": markdown_table(idle, max_rows=30),
            },
        )
        if live is not None:
            drift = pd.concat([drift_table(rows) for rows in by_day(out).values()], ignore_index=True)
            over = drifted(drift, live.drift_warn)
            worst = over.reindex(over["drift_share"].abs().sort_values(ascending=False).index)
            yield AssetCheckResult(
                check_name="positions_reconciled",
                passed=over.empty,
                severity=AssetCheckSeverity.WARN,
                description=drift_sentence(worst, drift, live.drift_warn, daily["positions_source"]),
                metadata={
                    "days_reconciled": int(drift["date"].nunique()) if len(drift) else 0,
                    "threshold": live.drift_warn,
                    "pools_over_threshold": len(over),
                    "max_abs_drift_share": float(drift["drift_share"].abs().max()) if len(drift) else 0.0,
                    "top_offenders": markdown_table(worst, max_rows=10),
                    "drift": markdown_table(drift, max_rows=30),
                },
            )

    return [rebalance_weights]


def response_metadata(history: pd.DataFrame) -> dict[str, object]:
    """How the range's pools were diluted: pool-days on their lending curve, and the lending pools
    that fell back to the TVL-share rule with the reason (none of it without lending data)."""
    if "response_method" not in history:
        return {"rate_curves": "no lending data (pool_lend_borrow empty): TVL-share dilution"}
    curve = history["response_method"] == "curve"
    fallback = history.loc[~curve & (history["response_reason"] != ""), ["pool", "response_reason"]]
    reasons = fallback.drop_duplicates("pool", keep="last")
    return {
        "rate_curve_pool_days": int(curve.sum()),
        "rate_curve_pools": int(history.loc[curve, "pool"].nunique()),
        "rate_curve_fallbacks": markdown_table(reasons.rename(columns={"response_reason": "reason"})),
    }
