"""The production loop through Dagster, two days: real positions (the execution server's book, read
over HTTP) -> rebalance_weights -> trade_orders (Parquet + JSON ticket) -> order_executions (POSTed
once per key, one order partially filled, one transient 503) -> the next day's positions -> the
reconciliation warning naming the partially filled pool. And bad positions files stop the loop with
clear errors before anything is traded."""

import datetime as dt
import json
import shutil

import pytest
from dagster import AssetCheckSeverity, AssetKey, materialize

from midfreq_assets.defs.vault.live import build_orders_assets, build_positions_asset
from midfreq_assets.defs.vault.rebalance import build_rebalance_assets
from midfreq_assets.domain.ingest.universe import vault_rows
from midfreq_assets.domain.portfolio.execution_ledger import revision_key
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
        p.run(p.all, [features], p.first_month, p.last_month)
        p.run(p.all, [models], "2024-07-08")
        p.run(p.all, [predictions], p.last_month)
        yield p


def live_assets(p, project, positions: PositionsConfig, config_dir, **strategy):
    vault = p.vault.model_copy(
        update={
            "positions": positions,
            "execution": ExecutionConfig(backoff_base_s=0.01, backoff_max_s=0.02),
            "strategy": p.vault.strategy.model_copy(update=strategy),
        }
    )
    days = daily_partitions(project)
    return vault, [
        build_positions_asset(vault, days, config_dir),
        *build_rebalance_assets(vault, days),
        *build_orders_assets(vault, project.tokens, days),
    ]


def run(p, assets, names, day, raise_on_error=True):
    selection = [AssetKey([p.vault.name, n]) for n in names]
    return materialize(
        [*p.all, *assets],
        selection=selection,
        resources=p.resources,
        instance=p.instance,
        partition_key=day,
        raise_on_error=raise_on_error,
    )


def checks(result):
    return {e.check_name: (e.passed, e.severity) for e in result.get_asset_check_evaluations()}


def meta(result, name):
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == name
    )


def test_two_days_of_the_live_loop(research, project, execution_server, tmp_path, monkeypatch):
    p = research
    monkeypatch.setenv("MIDFREQ_EXECUTION_URL", execution_server.base_url)
    universe = vault_rows(p.frame("pool_metadata", partition=D1), p.vault.name)
    held = universe.sort_values("tvl_usd", ascending=False)["pool"].tolist()[:3]
    execution_server.seed_book(
        p.vault.name,
        [*({"pool": q, "amount_usd": SEED} for q in held), {"pool": "cash", "amount_usd": 400_000.0}],
    )
    source = execution_server.base_url + f"/positions/{p.vault.name}?date={{date}}"
    vault, assets = live_assets(
        p, project, PositionsConfig(source=source, live_from=D1, drift_warn=0.002), tmp_path
    )

    # day 1: positions -> weights (the previous day was never simulated: nothing to reconcile yet)
    day1 = run(p, assets, ["vault_positions", "rebalance_weights"], D1)
    positions = p.frame(vault.name, "vault_positions", partition=D1)
    assert (
        positions["problem"].eq("").all() and meta(day1, "vault_positions")["total_usd"].value == 1_000_000.0
    )
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
    assert orders["idempotency_key"].tolist() == [
        idempotency_key(vault.name, dt.date(2024, 7, 10), q) for q in orders["pool"]
    ]
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
    assert execution_server.posts == len(orders) + 1 and set(execution_server.orders) == set(
        orders["idempotency_key"]
    )
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
    assert partial["pool"] in str(evaluation.metadata["drift"].value)  # an inline table
    table = drift_table(
        p.frame(vault.name, "rebalance_weights", partition=D2).reset_index(drop=True)
    ).set_index("pool")
    expected_wealth = table["expected_usd"].sum()
    unfilled = 0.5 * partial["amount_usd"]
    assert table.loc[partial["pool"], "drift_share"] == pytest.approx(-unfilled / expected_wealth, rel=2e-3)
    assert table.loc["cash", "drift_share"] == pytest.approx(unfilled / expected_wealth, rel=0.05)
    others = table.drop(index=[partial["pool"], "cash"])
    assert (others["drift_share"].abs() < 0.002).all()  # fully filled: only a day of yield apart


def _fresh_day(p, execution_server, monkeypatch, book: dict[str, float]) -> str:
    """A clean ledger, the server's book seeded with ``book``; returns the positions URL of the book."""
    monkeypatch.setenv("MIDFREQ_EXECUTION_URL", execution_server.base_url)
    shutil.rmtree(p.lake / p.vault.name / "execution_ledger", ignore_errors=True)
    execution_server.seed_book(p.vault.name, [{"pool": q, "amount_usd": v} for q, v in book.items()])
    return execution_server.base_url + f"/positions/{p.vault.name}?date={{date}}"


def _targets(p, day=D1) -> dict[str, float]:
    """The day's ticket as signed USD per pool (what the day should trade from its positions)."""
    orders = p.frame(p.vault.name, "trade_orders", partition=day)
    return {
        q: (a if s == "deposit" else -a)
        for q, s, a in zip(orders["pool"], orders["side"], orders["amount_usd"], strict=True)
    }


def _received(execution_server) -> list[dict]:
    return [
        r.order | {"filled_usd": r.response.get("filled_usd", 0.0)} for r in execution_server.orders.values()
    ]


def _book_is_positions_plus(book, start, targets, tol=0.05):
    """The endpoint's book is the day's positions plus the (latest) ticket: nothing sent twice."""
    for pool in set(start) | set(targets) | {q for q in book if q != "cash"}:
        if pool == "cash":
            continue
        assert book.get(pool, 0.0) == pytest.approx(start.get(pool, 0.0) + targets.get(pool, 0.0), abs=tol), (
            pool
        )
    assert book["cash"] == pytest.approx(start["cash"] - sum(targets.values()), abs=tol * len(book))


def _top_pools(p, n):
    universe = vault_rows(p.frame("pool_metadata", partition=D1), p.vault.name)
    return universe.sort_values("tvl_usd", ascending=False)["pool"].tolist()[:n]


def test_a_recomputed_day_after_a_config_change_sends_only_the_difference(
    research, project, execution_server, tmp_path, monkeypatch
):
    """The issue's case: the day's ticket was sent and filled, concentration_limit goes 0.25 -> 0.15 and the
    day is recomputed: the endpoint receives target - executed under new keys, never a second ticket."""
    p = research
    start = {q: SEED for q in _top_pools(p, 3)} | {"cash": 400_000.0}
    source = _fresh_day(p, execution_server, monkeypatch, start)
    vault, assets = live_assets(
        p, project, PositionsConfig(source=source, live_from=D1), tmp_path, concentration_limit=0.25
    )
    run(p, assets, ["vault_positions", "rebalance_weights", "trade_orders", "order_executions"], D1)
    first = _targets(p)
    _book_is_positions_plus(execution_server.book(vault.name), start, first)
    sent_first = set(execution_server.orders)
    # the config changes; the positions of the day are the same file (read before the fills)
    vault2, assets2 = live_assets(
        p, project, PositionsConfig(source=source, live_from=D1), tmp_path, concentration_limit=0.15
    )
    result = run(p, assets2, ["rebalance_weights", "trade_orders", "order_executions"], D1)
    second = _targets(p)
    assert second != first and max(abs(v) for v in second.values()) > 0
    book = execution_server.book(vault.name)
    _book_is_positions_plus(book, start, second)  # the second ticket, not the first plus the second
    wealth = sum(start.values())
    assert max(v for q, v in book.items() if q != "cash") <= 0.15 * wealth + 1.0  # the new limit holds
    assert book["cash"] >= 0.0
    # what the endpoint received: revision 1 orders under their own keys, net deposits within the cash
    new = [o for o in _received(execution_server) if o["idempotency_key"] not in sent_first]
    assert new and all(o["revision"] == 1 for o in new)
    assert {o["idempotency_key"] for o in new} == {
        revision_key(vault.name, dt.date(2024, 7, 10), o["pool"], 1) for o in new
    }
    filled = sum(o["filled_usd"] * (1 if o["side"] == "deposit" else -1) for o in _received(execution_server))
    assert filled <= start["cash"] + 1e-6
    executions = p.frame(vault.name, "order_executions", partition=D1)
    assert set(executions["revision"]) == {0, 1} and executions["status"].eq("filled").all()
    assert sorted(f.name for f in (p.lake / vault.name / "execution_ledger" / D1).glob("revision-*")) == [
        "revision-0.json",
        "revision-1.json",
    ]
    assert checks(result)["orders_within_cash"][0] and checks(result)["orders_delivered"][0]
    assert meta(result, "order_executions")["revision"].value == 1
    # an unchanged rerun sends nothing
    posts = execution_server.posts
    run(p, assets2, ["trade_orders", "order_executions"], D1)
    assert execution_server.posts == posts


def test_a_recomputed_day_after_new_positions_counts_only_fills_they_do_not_show(
    research, project, execution_server, tmp_path, monkeypatch
):
    """The day's orders filled, then positions are read again (as_of after the fills: they show them) and the
    day recomputed: the fills are in the starting holdings, not counted again; nothing is reversed."""
    p = research
    start = {q: SEED for q in _top_pools(p, 3)} | {"cash": 400_000.0}
    source = _fresh_day(p, execution_server, monkeypatch, start)
    vault, assets = live_assets(p, project, PositionsConfig(source=source, live_from=D1), tmp_path)
    run(p, assets, ["vault_positions", "rebalance_weights", "trade_orders", "order_executions"], D1)
    after_fills = execution_server.book(vault.name)
    folder = tmp_path / "positions"
    folder.mkdir()
    as_of = "2024-07-11T00:30:00Z"  # the server filled the day's orders at 2024-07-11T00:00
    (folder / f"{D1}.csv").write_text(
        "pool,amount_usd,as_of\n" + "".join(f"{q},{v},{as_of}\n" for q, v in after_fills.items())
    )
    vault2, assets2 = live_assets(
        p, project, PositionsConfig(source="positions/{date}.csv", live_from=D1), tmp_path
    )
    result = run(p, assets2, ["vault_positions", "rebalance_weights", "trade_orders", "order_executions"], D1)
    again = _targets(p)
    assert meta(result, "order_executions")["revision"].value == 1  # a new ticket (from the new positions)
    posts = [o for o in _received(execution_server) if o["revision"] == 1]
    assert sum(o["amount_usd"] for o in posts) == pytest.approx(
        sum(abs(v) for v in again.values() if abs(v) >= 0.01)
    )
    executions = p.frame(vault.name, "order_executions", partition=D1)
    revision1 = executions[executions["revision"] == 1]
    assert {
        q: (a if s == "deposit" else -a)
        for q, s, a in zip(revision1["pool"], revision1["side"], revision1["amount_usd"], strict=True)
    } == pytest.approx(
        {q: v for q, v in again.items() if abs(v) >= 0.01}
    )  # the new ticket as is: nothing executed after as_of
    _book_is_positions_plus(execution_server.book(vault.name), after_fills, again)
    assert sum(abs(v) for v in again.values()) < 0.05 * sum(after_fills.values())  # already at the target


def test_a_recomputed_day_after_a_partial_fill_and_a_reject_sends_the_rest(
    research, project, execution_server, tmp_path, monkeypatch
):
    """First ticket: the largest deposit half filled, another deposit rejected; the day is recomputed with
    another limit: each pool gets its new target minus what really executed (the rejected one in full)."""
    p = research
    start = {q: SEED for q in _top_pools(p, 3)} | {"cash": 400_000.0}
    source = _fresh_day(p, execution_server, monkeypatch, start)
    vault, assets = live_assets(p, project, PositionsConfig(source=source, live_from=D1), tmp_path)
    run(p, assets, ["vault_positions", "rebalance_weights", "trade_orders"], D1)
    orders = p.frame(vault.name, "trade_orders", partition=D1)
    deposits = orders[orders["side"] == "deposit"]
    partial, rejected = deposits["pool"].iloc[0], deposits["pool"].iloc[1]
    execution_server.behaviour.partial_fills[partial] = 0.5
    execution_server.behaviour.reject_pools.add(rejected)
    first = run(p, assets, ["order_executions"], D1)
    assert checks(first)["orders_filled"] == (False, AssetCheckSeverity.WARN)
    assert execution_server.book(vault.name).get(rejected, 0.0) == start.get(rejected, 0.0)
    execution_server.behaviour.partial_fills.clear()
    execution_server.behaviour.reject_pools.clear()
    vault2, assets2 = live_assets(
        p, project, PositionsConfig(source=source, live_from=D1), tmp_path, concentration_limit=0.2
    )
    run(p, assets2, ["rebalance_weights", "trade_orders", "order_executions"], D1)
    second = _targets(p)
    _book_is_positions_plus(execution_server.book(vault.name), start, second)
    executions = p.frame(vault.name, "order_executions", partition=D1).set_index(["pool", "revision"])
    first_amount = float(deposits.set_index("pool").loc[partial, "amount_usd"])
    assert executions.loc[(partial, 0), "status"] == "partially_filled"
    assert executions.loc[(rejected, 0), "status"] == "rejected"
    if abs(second.get(rejected, 0.0)) >= 0.01:
        assert executions.loc[(rejected, 1), "amount_usd"] == pytest.approx(abs(second[rejected]))
    rest = second.get(partial, 0.0) - 0.5 * first_amount
    assert executions.loc[(partial, 1), "amount_usd"] == pytest.approx(abs(rest))


def test_deposits_that_the_cash_cannot_fund_are_held_and_fail_the_blocking_check(
    research, project, execution_server, tmp_path, monkeypatch
):
    """Over-weight pools must be sold to fund the deposits; the largest sale is rejected: the deposits it was
    to fund are not sent (held_no_cash), the blocking check orders_within_cash fails, the cash never goes below 0."""
    p = research
    a, b, c = _top_pools(p, 3)
    start = {a: 450_000.0, b: 300_000.0, c: 200_000.0, "cash": 50_000.0}
    source = _fresh_day(p, execution_server, monkeypatch, start)
    execution_server.behaviour.reject_pools.add(a)
    vault, assets = live_assets(
        p, project, PositionsConfig(source=source, live_from=D1), tmp_path, concentration_limit=0.25
    )
    run(p, assets, ["vault_positions", "rebalance_weights", "trade_orders"], D1)
    ticket = _targets(p)
    assert ticket[a] < 0 and sum(v for v in ticket.values() if v > 0) > start["cash"] - ticket.get(b, 0.0)
    result = run(p, assets, ["order_executions"], D1, raise_on_error=False)
    assert not result.success
    passed = checks(result)["orders_within_cash"][0]
    assert passed is False
    executions = p.frame(vault.name, "order_executions", partition=D1)
    held = executions[executions["status"] == "held_no_cash"]
    assert len(held) >= 1 and (held["side"] == "deposit").all()
    received = _received(execution_server)
    assert all(o["pool"] not in set(held["pool"]) for o in received)
    deposits = sum(o["filled_usd"] for o in received if o["side"] == "deposit")
    withdrawn = sum(o["filled_usd"] for o in received if o["side"] == "withdraw")
    assert deposits <= start["cash"] + withdrawn + 1e-6
    assert execution_server.book(vault.name)["cash"] >= -1e-6


def test_bad_positions_files_stop_the_loop_with_clear_errors(research, project, tmp_path):
    p = research
    folder = tmp_path / "positions"
    folder.mkdir()
    universe = vault_rows(p.frame("pool_metadata", partition=D1), p.vault.name)
    known = universe["pool"].iloc[0]
    unknown = "0b4b2b7e-0000-4000-8000-000000000000"
    (folder / f"{D1}.csv").write_text(
        f"pool,amount_usd,as_of\n{known},1000,{D1}T23:00:00Z\n"
        f"{unknown},50,{D1}T23:00:00Z\n{known},-3,{D1}T23:00:00Z\ncash,10,{D1}\n"
    )
    (folder / f"{D2}.csv").write_text(f"pool,amount_usd,as_of\n{known},12O0,{D2}T23:00:00Z\n")
    vault, assets = live_assets(
        p, project, PositionsConfig(source="positions/{date}.csv", live_from=D1), tmp_path
    )
    # parses, but cannot be trusted: recorded, the blocking check fails naming the rows, nothing is decided
    result = run(p, assets, ["vault_positions", "rebalance_weights"], D1, raise_on_error=False)
    assert not result.success
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "positions_valid")
    assert not evaluation.passed and evaluation.metadata["problems"].value == 3
    text = str(evaluation.metadata["rows"].value)  # an inline table
    assert "unknown pool" in text and "negative amount" in text and "pool listed twice" in text
    assert [e.asset_key.path[-1] for e in result.get_asset_materialization_events()] == ["vault_positions"]
    # a later run of rebalance_weights alone refuses the flagged positions too
    refused = run(p, assets, ["rebalance_weights"], D1, raise_on_error=False)
    assert not refused.success and "failed validation" in _failure(refused)
    # does not parse: the run fails naming the file, the row and the column
    broken = run(p, assets, ["vault_positions"], D2, raise_on_error=False)
    assert not broken.success
    message = _failure(broken)
    assert f"{folder / D2}.csv" in message and "line 2: amount_usd: not a number ('12O0')" in message
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
    nightly = p.lake / "pool_metadata" / "2024-07.parquet"  # the nightly month file
    before = nightly.read_bytes()
    result = materialize(
        [*p.all, asset],
        selection=[asset.key],
        resources=p.resources,
        instance=p.instance,
        partition_key="2024-08-01-10:00",
    )
    moves = p.frame(p.vault.name, "intraday_moves", partition="2024-08-01-10:00")
    universe = vault_rows(p.frame("pool_metadata", partition="2024-07-31"), p.vault.name)
    assert set(moves["pool"]) == set(universe["pool"]) and (moves["nightly_day"] == "2024-07-31").all()
    # /pools of the recording (2025) against the nightly snapshot of 2024-07-31: APYs moved
    over = (moves["apy_change"].abs() > p.vault.intraday.apy_move) | (
        moves["tvl_change"].abs() > p.vault.intraday.tvl_move
    )
    assert (moves["flag"].ne("") == (over | moves["apy"].isna())).all() and over.any()
    assert checks(result)["no_large_intraday_moves"] == (False, AssetCheckSeverity.WARN)
    assert nightly.read_bytes() == before
