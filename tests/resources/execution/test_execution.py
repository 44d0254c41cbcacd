"""The execution client against the local execution server: the idempotency key in a header, bounded
retries with the same key, a ledger of revisions so a recomputed day sends only the difference,
write-ahead entries (an order sent without an answer is re-sent first), the cash guard, the
migration of flat ledgers, dry run; and the server's own answers and command-line errors."""

from __future__ import annotations

import datetime as dt
import json
import time

import httpx
import orjson
import pandas as pd
import pytest
from upath import UPath

from midfreq_assets.cli import main
from midfreq_assets.domain.portfolio.execution_ledger import HELD_NO_CASH, PositionsBasis, revision_key
from midfreq_assets.domain.portfolio.orders import idempotency_key
from midfreq_resources.clients.execution import DRY_RUN, FAILED, ExecutionClient
from midfreq_resources.clients.http_retry import RetryPolicy
from midfreq_resources.execution.server import ExecutionBehaviour

POLICY = RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05, request_deadline_s=5)
P1, P2, P3 = (
    "f981a304-bb6c-45b8-b0c5-fd2f515ad23a",
    "aa70268e-4b52-42bf-a116-608b370f9501",
    "4438dabc-7f0c-430b-8136-2722711ae663",
)
DAY = dt.date(2025, 6, 5)
#: positions read at the end of the day, before any order of the day executed
BASIS = PositionsBasis(10_000.0, pd.Timestamp("2025-06-05T23:50:00Z"))


def order(pool: str, side: str = "deposit", amount: float = 1000.0) -> dict:
    return {
        "vault": "v",
        "date": DAY.isoformat(),
        "pool": pool,
        "side": side,
        "amount_usd": amount,
        "idempotency_key": idempotency_key("v", DAY, pool),
    }


def run(client, ticket, ledger, url=None, basis=BASIS, **kw):
    return client.execute_day("v", DAY, ticket, url or client.endpoint(None), ledger, basis, POLICY, 5, **kw)


def by_pool(result) -> dict:
    return {(r.pool, r.revision): r for r in result.rows}


def test_orders_are_sent_once_with_their_key_and_recorded(execution_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MIDFREQ_EXECUTION_URL", execution_server.base_url)
    execution_server.behaviour = ExecutionBehaviour(partial_fills={P2: 0.4}, reject_pools={P3})
    execution_server.seed_book("v", [{"pool": "cash", "amount_usd": 10_000.0}])
    client = ExecutionClient()
    assert client.endpoint(None) == execution_server.base_url
    ledger = UPath(tmp_path / "ledger")
    execution_server.fail_next(2)  # two 503s: retried with the same key
    orders = [order(P1), order(P2), order(P3, "withdraw", 50.0)]
    out = run(client, orders, ledger)
    rows = by_pool(out)
    assert out.rows[0].pool == P3  # the withdrawal first
    assert [rows[(p, 0)].status for p in (P1, P2, P3)] == ["filled", "partially_filled", "rejected"]
    assert rows[(P3, 0)].attempts == 3 and rows[(P1, 0)].attempts == 1  # the first POST met both 503s
    assert rows[(P2, 0)].filled_usd == pytest.approx(400.0) and rows[(P3, 0)].http_status == 422
    assert set(execution_server.orders) == {o["idempotency_key"] for o in orders}
    assert all(r.order["revision"] == 0 for r in execution_server.orders.values())
    assert execution_server.book("v") == pytest.approx({"cash": 10_000 - 1400.0, P1: 1000.0, P2: 400.0})
    assert out.revision == 0 and out.new_revision
    day = tmp_path / "ledger" / DAY.isoformat()
    revision = json.loads((day / "revision-0.json").read_text())
    assert [o["key"] for o in revision["orders"]] == [o["idempotency_key"] for o in orders]
    entry = json.loads((day / f"{orders[0]['idempotency_key']}.json").read_text())
    assert entry["sent_at"] <= entry["answered_at"] and entry["executed_at"] == "2025-06-06T00:00:00Z"
    posts = execution_server.posts
    # a rerun: everything comes from the ledger, nothing is POSTed again
    again = run(client, orders, ledger)
    assert execution_server.posts == posts and not again.new_revision
    assert all(r.from_ledger and r.attempts == 0 for r in again.rows)
    assert [by_pool(again)[(p, 0)].status for p in (P1, P2, P3)] == ["filled", "partially_filled", "rejected"]


def test_a_recomputed_ticket_sends_only_the_difference_under_new_keys(execution_server, tmp_path):
    client = ExecutionClient(base_url=execution_server.base_url)
    execution_server.seed_book(
        "v", [{"pool": "cash", "amount_usd": 10_000.0}, {"pool": P3, "amount_usd": 5000.0}]
    )
    execution_server.behaviour = ExecutionBehaviour(partial_fills={P2: 0.5})
    ledger = UPath(tmp_path / "ledger")
    first = [order(P1, amount=4000.0), order(P2, amount=4000.0), order(P3, "withdraw", 1000.0)]
    run(client, first, ledger)
    assert execution_server.book("v") == pytest.approx({"cash": 5000.0, P1: 4000.0, P2: 2000.0, P3: 4000.0})
    execution_server.behaviour = ExecutionBehaviour()
    # recomputed with a tighter limit: P1 3000, P2 3000, P3 no longer sold
    second = [order(P1, amount=3000.0), order(P2, amount=3000.0)]
    out = run(client, second, ledger)
    assert out.revision == 1 and out.new_revision
    received = execution_server.orders
    new = {k: r.order for k, r in received.items() if r.order["revision"] == 1}
    assert {o["pool"]: (o["side"], round(o["amount_usd"], 6)) for o in new.values()} == {
        P1: ("withdraw", 1000.0),
        P2: ("deposit", 1000.0),
        P3: ("deposit", 1000.0),
    }
    assert set(new) == {revision_key("v", DAY, p, 1) for p in (P1, P2, P3)}
    # the book holds the second ticket, not both: the positions plus the target
    assert execution_server.book("v") == pytest.approx({"cash": 4000.0, P1: 3000.0, P2: 3000.0, P3: 5000.0})
    assert {(r.pool, r.revision) for r in out.rows} == {(P1, 0), (P2, 0), (P3, 0), (P1, 1), (P2, 1), (P3, 1)}
    assert sorted(p.name for p in (tmp_path / "ledger" / DAY.isoformat()).glob("revision-*")) == [
        "revision-0.json",
        "revision-1.json",
    ]
    posts = execution_server.posts
    assert (
        not run(client, second, ledger).new_revision and execution_server.posts == posts
    )  # unchanged: nothing


def test_an_order_without_an_answer_is_resent_first_and_blocks_anything_new(execution_server, tmp_path):
    client = ExecutionClient(base_url=execution_server.base_url)
    execution_server.seed_book("v", [{"pool": "cash", "amount_usd": 10_000.0}])
    ledger = UPath(tmp_path / "ledger")
    execution_server.lose_answers(100)  # executed, but every answer is lost on the way back
    out = run(client, [order(P1, amount=2000.0)], ledger)
    assert out.rows[0].status == FAILED and out.unknown == (idempotency_key("v", DAY, P1),)
    assert execution_server.book("v")[P1] == 2000.0  # the endpoint did execute it
    entry = json.loads((tmp_path / "ledger" / DAY.isoformat() / f"{out.unknown[0]}.json").read_text())
    assert entry["sent_at"] and entry["outcome"] is None  # the write-ahead entry stays
    # still unknown, and the ticket changed: nothing new is sent
    blocked = run(client, [order(P1, amount=2000.0), order(P2, amount=3000.0)], ledger)
    assert blocked.revision is None and blocked.unknown == out.unknown
    assert set(execution_server.orders) == {out.unknown[0]}
    # the endpoint answers again: the unknown order is re-sent with its key (executed once), then the difference
    execution_server.lose_answers(0)
    done = run(client, [order(P1, amount=2000.0), order(P2, amount=3000.0)], ledger)
    assert done.unknown == () and done.revision == 1
    assert execution_server.book("v") == pytest.approx({"cash": 5000.0, P1: 2000.0, P2: 3000.0})
    assert execution_server.orders[out.unknown[0]].posts > 1  # replayed, not executed twice


def test_deposits_beyond_the_cash_are_held(execution_server, tmp_path):
    client = ExecutionClient(base_url=execution_server.base_url)
    execution_server.seed_book(
        "v", [{"pool": "cash", "amount_usd": 1000.0}, {"pool": P3, "amount_usd": 5000.0}]
    )
    execution_server.behaviour = ExecutionBehaviour(reject_pools={P3})
    ledger = UPath(tmp_path / "ledger")
    ticket = [order(P1, amount=2500.0), order(P2, amount=800.0), order(P3, "withdraw", 3000.0)]
    out = run(client, ticket, ledger, basis=PositionsBasis(1000.0, BASIS.cash_as_of))
    rows = by_pool(out)
    assert rows[(P3, 0)].status == "rejected"  # the withdrawal that was to fund P1 did not happen
    assert rows[(P1, 0)].status == HELD_NO_CASH and "cash available" in rows[(P1, 0)].message
    assert rows[(P2, 0)].status == "filled"  # the smaller deposit fits in the 1000 of cash
    assert out.cash["held_usd"] == 2500.0 and out.cash["available_usd"] == pytest.approx(200.0)
    assert P1 not in execution_server.book("v") and execution_server.book("v")["cash"] >= 0
    # the held deposit is not in the ledger: the same ticket tries it again (and holds it again)
    again = run(client, ticket, ledger, basis=PositionsBasis(1000.0, BASIS.cash_as_of))
    assert by_pool(again)[(P1, 0)].status == HELD_NO_CASH and P1 not in execution_server.book("v")


def test_a_flat_ledger_is_moved_into_day_folders_without_resending(execution_server, tmp_path):
    client = ExecutionClient(base_url=execution_server.base_url)
    root = tmp_path / "ledger"
    root.mkdir()
    orders = [order(P1), order(P2)]
    # the layout before revisions: one file per key, only P1 was answered
    key = orders[0]["idempotency_key"]
    flat = {
        "order_digest": "d",
        "order": orders[0],
        "recorded_at": "2025-06-06T01:00:00+00:00",
        "outcome": {
            "idempotency_key": key,
            "status": "filled",
            "http_status": 200,
            "filled_usd": 1000.0,
            "message": "",
            "attempts": 1,
            "from_ledger": False,
            "response": {"order_id": "x"},
        },
    }
    (root / f"{key}.json").write_bytes(orjson.dumps(flat))
    (root / "notes.txt").write_text("kept")
    out = run(client, orders, UPath(root))
    assert out.migrated == 1 and not (root / f"{key}.json").exists() and (root / "notes.txt").exists()
    moved = json.loads((root / DAY.isoformat() / f"{key}.json").read_text())
    assert {k: moved[k] for k in flat} == flat and moved["migrated_from"] == f"execution_ledger/{key}.json"
    assert set(execution_server.orders) == {orders[1]["idempotency_key"]}  # only the unanswered one is sent
    assert by_pool(out)[(P1, 0)].from_ledger and out.revision == 0


def test_the_server_answers_a_replayed_key_without_executing_twice(execution_server):
    url = execution_server.base_url + "/orders"
    body = order(P1)
    first = httpx.post(url, json=body, headers={"Idempotency-Key": "k1"})
    second = httpx.post(url, json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true" and second.json() == first.json()
    assert execution_server.book("v")[P1] == 1000.0  # executed once
    assert httpx.post(url, json=order(P1, amount=5.0), headers={"Idempotency-Key": "k1"}).status_code == 409
    assert httpx.post(url, json=body).status_code == 400  # no key
    assert httpx.post(url, json={"pool": P1}, headers={"Idempotency-Key": "k2"}).status_code == 400
    assert httpx.post(url, content=b"{", headers={"Idempotency-Key": "k3"}).status_code == 400
    recorded = httpx.get(execution_server.base_url + "/orders").json()
    assert recorded["k1"]["posts"] == 3
    positions = httpx.get(execution_server.base_url + "/positions/v", params={"date": "2025-06-06"}).json()
    assert {r["pool"]: r["amount_usd"] for r in positions} == {P1: 1000.0, "cash": -1000.0}
    assert positions[0]["as_of"] == "2025-06-06T23:59:00Z"
    # the order of 2025-06-05 filled at the start of 2025-06-06: the book at the end of the 5th is without it
    assert first.json()["filled_at"] == "2025-06-06T00:00:00Z"
    before = httpx.get(execution_server.base_url + "/positions/v", params={"date": "2025-06-05"}).json()
    assert {r["pool"]: r["amount_usd"] for r in before} == {}


def test_exhausted_retries_leave_an_unknown_entry_that_the_next_run_sends_again(execution_server, tmp_path):
    ledger = UPath(tmp_path / "ledger")
    client = ExecutionClient(base_url=execution_server.base_url)
    execution_server.fail_next(5)
    out = run(client, [order(P1)], ledger)
    assert out.rows[0].status == FAILED and out.rows[0].attempts == 3 and "re-sends it" in out.rows[0].message
    execution_server.fail_next(0)
    again = run(client, [order(P1)], ledger)
    assert again.rows[0].status == "filled" and again.rows[0].attempts == 1


def test_without_a_url_nothing_is_sent(execution_server, tmp_path, monkeypatch):
    monkeypatch.delenv("MIDFREQ_EXECUTION_URL", raising=False)
    client = ExecutionClient()
    assert client.endpoint(None) is None
    out = client.execute_day("v", DAY, [order(P1)], None, UPath(tmp_path / "l"), BASIS, POLICY, 5)
    assert out.rows[0].status == DRY_RUN and execution_server.posts == 0 and not (tmp_path / "l").exists()
    assert client.endpoint("http://desk.example/") == "http://desk.example"  # the vault's url wins


def test_an_unreachable_endpoint_fails_within_the_retry_bound(tmp_path):
    client = ExecutionClient(base_url="http://127.0.0.1:9")  # discard port: connection refused
    out = run(client, [order(P1)], UPath(tmp_path))
    assert out.rows[0].status == FAILED and out.rows[0].attempts == 3


def test_one_order_costs_at_most_its_total_deadline_whatever_max_attempts(tmp_path):
    """A server that accepts the connection and never answers: each attempt is cut to the time left."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        client = ExecutionClient(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}")
        policy = RetryPolicy(
            max_attempts=10,
            backoff_base_s=0.01,
            backoff_max_s=0.05,
            request_deadline_s=1.0,
            total_deadline_s=1.5,
        )
        started = time.monotonic()
        out = client.execute_day(
            "v", DAY, [order(P1)], client.endpoint(None), UPath(tmp_path), BASIS, policy, 5
        )
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for sock in held:
            sock.close()
        listener.close()
    assert out.rows[0].status == FAILED and "total deadline is 1.5 s" in out.rows[0].message
    assert out.rows[0].attempts < 10 and elapsed < 1.5 + 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fill-ratio", "1.5"], "must be within [0, 1]"),
        (["--partial", "nopool"], "POOL=RATIO expected"),
        (["--port", "70000"], "port must be within 0..65535"),
    ],
)
def test_execution_server_bad_flags_are_one_line_errors(args, message, capsys):
    with pytest.raises(SystemExit) as err:
        main(["execution-server", *args])
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_execution_server_bad_book_file(tmp_path, capsys):
    bad = tmp_path / "book.json"
    bad.write_text("{not json")
    assert main(["execution-server", "--port", "0", "--book", f"v={bad}"]) == 2
    assert f"--book v={bad}" in capsys.readouterr().out
