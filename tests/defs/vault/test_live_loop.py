"""The production loop through Dagster, two days: real positions (the execution server's book, read
over HTTP) -> rebalance_weights -> trade_orders (Parquet + JSON ticket) -> order_executions (POSTed
once per key, one order partially filled, one transient 503) -> the next day's positions -> the
reconciliation warning naming the partially filled pool. And bad positions files stop the loop with
clear errors before anything is traded."""

import datetime as dt
import json

import pytest
from dagster import AssetCheckSeverity, AssetKey, materialize

from midfreq_assets.defs.vault.live import build_orders_assets, build_positions_asset
from midfreq_assets.defs.vault.rebalance import build_rebalance_assets
from midfreq_assets.domain.ingest.universe import vault_rows
from midfreq_assets.domain.portfolio.live_config import ExecutionConfig, PositionsConfig
from midfreq_assets.domain.portfolio.orders import idempotency_key
from midfreq_assets.domain.portfolio.reconcile import drift_table
from midfreq_assets.partitions import daily_partitions

D1, D2 = "2024-07-10", "2024-07-11"
SEED = 200_000.0


@pytest.fixture(scope="module")
def research(pipeline_env):
    with pipeline_env() as p:
        features, models, predictions = p.research
        p.run(p.all, [features], p.first, D2)
        p.run(p.all, [models], "2024-07-08")
        p.run(p.all, [predictions], D1, D2)
        yield p


def live_assets(p, project, positions: PositionsConfig, config_dir):
    vault = p.vault.model_copy(update={"positions": positions,
                                       "execution": ExecutionConfig(backoff_base_s=0.01, backoff_max_s=0.02)})
    days = daily_partitions(project)
    return vault, [build_positions_asset(vault, days, config_dir), *build_rebalance_assets(vault, days),
                   *build_orders_assets(vault, project.tokens, days)]


def run(p, assets, names, day, raise_on_error=True):
    selection = [AssetKey([p.vault.name, n]) for n in names]
    return materialize([*p.all, *assets], selection=selection, resources=p.resources, instance=p.instance,
                       partition_key=day, raise_on_error=raise_on_error)


def checks(result):
    return {e.check_name: (e.passed, e.severity) for e in result.get_asset_check_evaluations()}


def meta(result, name):
    return next(e.materialization.metadata for e in result.get_asset_materialization_events()
                if e.asset_key.path[-1] == name)


def test_two_days_of_the_live_loop(research, project, execution_server, tmp_path, monkeypatch):
    p = research
    monkeypatch.setenv("MIDFREQ_EXECUTION_URL", execution_server.base_url)
    universe = vault_rows(p.frame("pool_metadata", partition=D1), p.vault.name)
    held = universe.sort_values("tvl_usd", ascending=False)["pool"].tolist()[:3]
    execution_server.seed_book(p.vault.name, [*({"pool": q, "amount_usd": SEED} for q in held),
                                              {"pool": "cash", "amount_usd": 400_000.0}])
    source = execution_server.base_url + f"/positions/{p.vault.name}?date={{date}}"
    vault, assets = live_assets(p, project, PositionsConfig(source=source, live_from=D1, drift_warn=0.002), tmp_path)

    # day 1: positions -> weights (the previous day was never simulated: nothing to reconcile yet)
    day1 = run(p, assets, ["vault_positions", "rebalance_weights"], D1)
    positions = p.frame(vault.name, "vault_positions", partition=D1)
    assert positions["problem"].eq("").all() and meta(day1, "vault_positions")["total_usd"].value == 1_000_000.0
    weights = p.frame(vault.name, "rebalance_weights", partition=D1).set_index("pool")
    assert (weights["positions_source"] == "vault_positions").all()
    assert weights["wealth"].iloc[0] == pytest.approx(1_000_000.0)
    assert (weights.loc[held, "current_weight"] * 1_000_000.0).to_numpy() == pytest.approx([SEED] * 3)
    assert checks(day1)["positions_reconciled"][0]

    # orders: one per traded pool, Parquet + JSON ticket, idempotency key per (vault, day, pool)
    orders_run = run(p, assets, ["trade_orders"], D1)
    orders = p.frame(vault.name, "trade_orders", partition=D1)
    traded = weights[weights["trade_usd"].abs() > 0]
    assert set(orders["pool"]) == set(traded.index) and len(orders) >= 2
    assert orders["idempotency_key"].tolist() == [idempotency_key(vault.name, dt.date(2024, 7, 10), q)
                                                  for q in orders["pool"]]
    ticket = json.loads((p.lake / vault.name / "trade_orders" / f"{D1}.json").read_text())
    assert ticket["n_orders"] == len(orders) and {o["pool"] for o in ticket["orders"]} == set(orders["pool"])
    assert meta(orders_run, "trade_orders")["ticket"].value.records  # a table in the UI

    # POST: the largest deposit is half filled; the first POST meets a 503 and is retried, same key
    deposits = orders[orders["side"] == "deposit"]
    partial = deposits.iloc[0]
    execution_server.behaviour.partial_fills[partial["pool"]] = 0.5
    execution_server.fail_next(1)
    sent = run(p, assets, ["order_executions"], D1)
    executions = p.frame(vault.name, "order_executions", partition=D1).set_index("pool")
    assert executions.loc[partial["pool"], "status"] == "partially_filled"
    assert (executions.drop(partial["pool"])["status"] == "filled").all()
    assert execution_server.posts == len(orders) + 1 and set(execution_server.orders) == set(orders["idempotency_key"])
    assert checks(sent)["orders_delivered"][0]
    assert checks(sent)["orders_filled"] == (False, AssetCheckSeverity.WARN)
    # a rerun of the day sends nothing: every answer comes from the ledger
    run(p, assets, ["order_executions"], D1)
    assert execution_server.posts == len(orders) + 1
    assert p.frame(vault.name, "order_executions", partition=D1)["from_ledger"].all()

    # day 2: the book after the fills is the new positions; the unfilled half shows as drift
    day2 = run(p, assets, ["vault_positions", "rebalance_weights"], D2)
    book = execution_server.book(vault.name)
    weights2 = p.frame(vault.name, "rebalance_weights", partition=D2).set_index("pool")
    wealth2 = weights2["wealth"].iloc[0]
    assert wealth2 == pytest.approx(sum(book.values()))
    for pool, amount in book.items():
        if pool != "cash" and amount > 0:
            assert weights2.loc[pool, "current_weight"] * wealth2 == pytest.approx(amount)
    passed, severity = checks(day2)["positions_reconciled"]
    assert not passed and severity == AssetCheckSeverity.WARN
    evaluation = next(e for e in day2.get_asset_check_evaluations() if e.check_name == "positions_reconciled")
    assert evaluation.metadata["pools_over_threshold"].value == 2  # the half-filled pool and the cash
    assert partial["pool"] in evaluation.metadata["drift"].value
    table = drift_table(p.frame(vault.name, "rebalance_weights", partition=D2).reset_index(drop=True)).set_index("pool")
    expected_wealth = table["expected_usd"].sum()
    unfilled = 0.5 * partial["amount_usd"]
    assert table.loc[partial["pool"], "drift_share"] == pytest.approx(-unfilled / expected_wealth, rel=2e-3)
    assert table.loc["cash", "drift_share"] == pytest.approx(unfilled / expected_wealth, rel=0.05)
    others = table.drop(index=[partial["pool"], "cash"])
    assert (others["drift_share"].abs() < 0.002).all()  # fully filled: only a day of yield apart


def test_bad_positions_files_stop_the_loop_with_clear_errors(research, project, tmp_path):
    p = research
    folder = tmp_path / "positions"
    folder.mkdir()
    universe = vault_rows(p.frame("pool_metadata", partition=D1), p.vault.name)
    known = universe["pool"].iloc[0]
    unknown = "0b4b2b7e-0000-4000-8000-000000000000"
    (folder / f"{D1}.csv").write_text(f"pool,amount_usd,as_of\n{known},1000,{D1}T23:00:00Z\n"
                                      f"{unknown},50,{D1}T23:00:00Z\n{known},-3,{D1}T23:00:00Z\ncash,10,{D1}\n")
    (folder / f"{D2}.csv").write_text(f"pool,amount_usd,as_of\n{known},12O0,{D2}T23:00:00Z\n")
    vault, assets = live_assets(p, project, PositionsConfig(source="positions/{date}.csv", live_from=D1), tmp_path)
    # parses, but cannot be trusted: recorded, the blocking check fails naming the rows, nothing is decided
    result = run(p, assets, ["vault_positions", "rebalance_weights"], D1, raise_on_error=False)
    assert not result.success
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "positions_valid")
    assert not evaluation.passed and evaluation.metadata["problems"].value == 3
    text = evaluation.metadata["rows"].value
    assert "unknown pool" in text and "negative amount" in text and "pool listed twice" in text
    assert [e.asset_key.path[-1] for e in result.get_asset_materialization_events()] == ["vault_positions"]
    # a later run of rebalance_weights alone refuses the flagged positions too
    refused = run(p, assets, ["rebalance_weights"], D1, raise_on_error=False)
    assert not refused.success and "failed validation" in _failure(refused)
    # does not parse: the run fails naming the file, the row and the column
    broken = run(p, assets, ["vault_positions"], D2, raise_on_error=False)
    assert not broken.success
    message = _failure(broken)
    assert f"{folder / D2}.csv" in message and "row 0: amount_usd: not a number ('12O0')" in message
    missing = run(p, assets, ["vault_positions"], "2024-07-12", raise_on_error=False)
    assert "no file at" in _failure(missing)
    # a day before live_from is simulated: nothing is read, the partition is empty and says so
    before = run(p, assets, ["vault_positions"], "2024-07-09")
    assert meta(before, "vault_positions")["live"].value is False
    assert p.frame(vault.name, "vault_positions", partition="2024-07-09").empty


def _failure(result) -> str:
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = event.event_specific_data.error
    texts = []
    while error is not None:
        texts.append(error.message)
        error = error.cause
    return " | ".join(texts) + " | " + str(getattr(event.event_specific_data, "user_failure_data", ""))


def test_intraday_refresh_flags_moves_and_never_rewrites_nightly_partitions(research, project):
    p = research
    from midfreq_assets.defs.vault.live import build_intraday_assets

    asset, jobs, schedules = build_intraday_assets(p.vault, project.earliest_start)
    assert schedules[0].default_status.value == "STOPPED"  # off by default
    nightly = p.lake / "pool_metadata" / "2024-07-31.parquet"
    before = nightly.read_bytes()
    result = materialize([*p.all, asset], selection=[asset.key], resources=p.resources, instance=p.instance,
                         partition_key="2024-08-01-10:00")
    moves = p.frame(p.vault.name, "intraday_moves", partition="2024-08-01-10:00")
    universe = vault_rows(p.frame("pool_metadata", partition="2024-07-31"), p.vault.name)
    assert set(moves["pool"]) == set(universe["pool"]) and (moves["nightly_day"] == "2024-07-31").all()
    # /pools of the recording (2025) against the nightly snapshot of 2024-07-31: APYs moved
    over = (moves["apy_change"].abs() > p.vault.intraday.apy_move) | (moves["tvl_change"].abs() > p.vault.intraday.tvl_move)
    assert (moves["flag"].ne("") == (over | moves["apy"].isna())).all() and over.any()
    assert checks(result)["no_large_intraday_moves"] == (False, AssetCheckSeverity.WARN)
    assert nightly.read_bytes() == before
