"""The execution client against the local execution server: the idempotency key in a header, bounded
retries with the same key, a ledger so a key is never POSTed twice, rejections, partial fills,
conflicts, dry run; and the server's own answers and command-line errors."""

from __future__ import annotations

import httpx
import pytest
from upath import UPath

from midfreq_assets.cli import main
from midfreq_resources.clients.execution import DRY_RUN, FAILED, LEDGER_CONFLICT, ExecutionClient
from midfreq_resources.clients.http_retry import RetryPolicy
from midfreq_resources.execution.server import ExecutionBehaviour

POLICY = RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05, request_deadline_s=5)
P1, P2, P3 = ("f981a304-bb6c-45b8-b0c5-fd2f515ad23a", "aa70268e-4b52-42bf-a116-608b370f9501",
              "4438dabc-7f0c-430b-8136-2722711ae663")


def order(pool: str, side: str = "deposit", amount: float = 1000.0, key: str | None = None) -> dict:
    return {"vault": "v", "date": "2025-06-05", "pool": pool, "side": side, "amount_usd": amount,
            "idempotency_key": key or f"key-{pool[:8]}-{side}"}


def test_orders_are_sent_once_with_their_key_and_recorded(execution_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MIDFREQ_EXECUTION_URL", execution_server.base_url)
    execution_server.behaviour = ExecutionBehaviour(partial_fills={P2: 0.4}, reject_pools={P3})
    execution_server.seed_book("v", [{"pool": "cash", "amount_usd": 10_000.0}])
    client = ExecutionClient()
    url = client.endpoint(None)
    assert url == execution_server.base_url
    ledger = UPath(tmp_path / "ledger")
    execution_server.fail_next(2)  # two 503s: retried with the same key
    orders = [order(P1), order(P2), order(P3, "withdraw", 50.0)]
    out = client.submit(orders, url, ledger, POLICY, timeout_s=5)
    assert [o.status for o in out] == ["filled", "partially_filled", "rejected"]
    assert [o.attempts for o in out] == [3, 1, 1]
    assert out[1].filled_usd == pytest.approx(400.0) and out[2].http_status == 422
    assert set(execution_server.orders) == {o["idempotency_key"] for o in orders}
    assert execution_server.book("v") == pytest.approx({"cash": 10_000 - 1400.0, P1: 1000.0, P2: 400.0})
    posts = execution_server.posts
    # a rerun: everything comes from the ledger, nothing is POSTed again
    again = client.submit(orders, url, ledger, POLICY, timeout_s=5)
    assert execution_server.posts == posts
    assert all(o.from_ledger and o.attempts == 0 for o in again)
    assert [o.status for o in again] == ["filled", "partially_filled", "rejected"]
    # the same key for a different order is never sent
    changed = client.submit([order(P1, amount=999.0)], url, ledger, POLICY, timeout_s=5)
    assert changed[0].status == LEDGER_CONFLICT and execution_server.posts == posts


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


def test_exhausted_retries_are_failed_and_not_recorded_so_a_rerun_sends_them(execution_server, tmp_path):
    ledger = UPath(tmp_path / "ledger")
    client = ExecutionClient(base_url=execution_server.base_url)
    execution_server.fail_next(5)
    out = client.submit([order(P1)], client.endpoint(None), ledger, POLICY, timeout_s=5)
    assert out[0].status == FAILED and out[0].attempts == 3 and "not recorded" in out[0].message
    assert not list((tmp_path / "ledger").glob("*.json"))
    execution_server.fail_next(0)
    assert client.submit([order(P1)], client.endpoint(None), ledger, POLICY, timeout_s=5)[0].status == "filled"


def test_without_a_url_nothing_is_sent(execution_server, tmp_path, monkeypatch):
    monkeypatch.delenv("MIDFREQ_EXECUTION_URL", raising=False)
    client = ExecutionClient()
    assert client.endpoint(None) is None
    out = client.submit([order(P1)], None, UPath(tmp_path), POLICY, timeout_s=5)
    assert out[0].status == DRY_RUN and execution_server.posts == 0
    assert client.endpoint("http://desk.example/") == "http://desk.example"  # the vault's url wins


def test_an_unreachable_endpoint_fails_within_the_retry_bound(tmp_path):
    client = ExecutionClient(base_url="http://127.0.0.1:9")  # discard port: connection refused
    out = client.submit([order(P1)], client.endpoint(None), UPath(tmp_path), POLICY, timeout_s=1)
    assert out[0].status == FAILED and out[0].attempts == 3


@pytest.mark.parametrize(("args", "message"), [
    (["--fill-ratio", "1.5"], "must be within [0, 1]"),
    (["--partial", "nopool"], "POOL=RATIO expected"),
    (["--port", "70000"], "port must be within 0..65535"),
])
def test_execution_server_bad_flags_are_one_line_errors(args, message, capsys):
    with pytest.raises(SystemExit) as err:
        main(["execution-server", *args])
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_execution_server_bad_book_file(tmp_path, capsys):
    bad = tmp_path / "book.json"
    bad.write_text("{not json")
    assert main(["execution-server", "--port", "0", "--book", f"v={bad}"]) == 2
    assert f"--book v={bad}" in capsys.readouterr().out
