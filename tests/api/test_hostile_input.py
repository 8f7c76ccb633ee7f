"""Oversized bodies, deep JSON, invalid UTF-8 and malformed WebSocket frames are refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn

import pytest
import websockets

import api.parameters
import api.problems
import api.queries
from api.problems import MAX_BODY_BYTES
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


@pytest.fixture
async def exchange(tmp_path: Path) -> AsyncIterator[RunningExchange]:
    async with running_exchange(settings_for(tmp_path)) as running:
        yield running


async def test_hostile_bodies_get_problems_and_change_nothing(exchange: RunningExchange) -> None:
    buyer = await exchange.as_("b")
    deposit = {"kind": "cash", "amount": 1000}
    assert (await buyer.post("/v1/accounts/b/deposits", json=deposit)).status_code == 201
    json_body = {"content-type": "application/json"}
    oversized = b'{"symbol":"' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    cases = {
        "oversized": (oversized, 413, "/problems/body-too-large"),
        "deep": (b"[" * 100_000 + b"]" * 100_000, 400, None),
        "invalid utf-8": (b'{"symbol":"\xff\xfe"}', 400, None),
        "not json": (b"{symbol:", 422, "/problems/invalid-request"),
    }
    for name, (body, status, kind) in cases.items():
        response = await buyer.post("/v1/orders", content=body, headers=json_body)
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"] == PROBLEM, name
        if kind is not None:
            assert response.json()["type"] == kind
    await settle(exchange.runtime)
    account = (await buyer.get("/v1/accounts/b")).json()
    assert account["cash"] == {"available": 1000, "held": 0}
    assert (await buyer.get("/v1/orders", params={"account_id": "b"})).json() == []


async def test_malformed_websocket_messages_get_errors_and_binary_frames_a_clean_close(
    exchange: RunningExchange,
) -> None:
    url = exchange.base_url.replace("http", "ws") + "/v1/stream"
    async with websockets.connect(url) as socket:
        for text in ("not json", "{" * 50_000, json.dumps({"op": "dance"})):
            await socket.send(text)
            answer = json.loads(await asyncio.wait_for(socket.recv(), 5))
            assert answer["type"] == "error", text[:20]
        too_many = {"op": "subscribe", "symbols": ["x" * 60] * 200}
        await socket.send(json.dumps(too_many))
        answer = json.loads(await asyncio.wait_for(socket.recv(), 5))
        assert answer["message"].startswith("symbols: List should have at most 100 items")
        # Still serving after all that.
        await socket.send(json.dumps({"op": "ping"}))
        assert json.loads(await asyncio.wait_for(socket.recv(), 5))["type"] != "error"
    async with websockets.connect(url) as socket:
        await socket.send(b"\x00\x01binary")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1003
        assert "binary frames are refused" in closed.value.rcvd.reason


async def test_json_that_names_a_key_twice_is_refused_not_read_as_its_last_value(
    exchange: RunningExchange,
) -> None:
    buyer = await exchange.as_("b")
    operator = await exchange.operator()
    deposit = {"kind": "cash", "amount": 100_000}
    assert (await buyer.post("/v1/accounts/b/deposits", json=deposit)).status_code == 201
    gz0 = "H100-80G.GZ.20271201T00"
    cases = [
        (
            buyer,
            "/v1/orders",
            b'{"symbol":"%s","side":"buy","price":1800,"quantity":1,"quantity":2}' % gz0.encode(),
            "quantity",
        ),
        (buyer, "/v1/accounts/b/deposits", b'{"kind":"cash","amount":1,"amount":9}', "amount"),
        (
            buyer,
            "/v1/needs",
            b'{"quantity":4,"hours":1,"earliest_start":1,"deadline":2,'
            b'"regions":[{"region":"GZ","adder":0,"adder":50}]}',
            "adder",
        ),
        (operator, "/v1/admin/keys", b'{"account_id":"x","role":"buyer","role":"admin"}', "role"),
    ]
    for client, path, body, key in cases:
        for content_type in ("application/json", "application/json; charset=utf-8"):
            response = await client.post(path, content=body, headers={"content-type": content_type})
            assert response.status_code == 422, (path, response.text)
            assert response.headers["content-type"] == PROBLEM
            problem = response.json()
            assert (problem["type"], problem["key"]) == ("/problems/duplicate-key", key), path
            assert repr(key) in problem["detail"]
    # The same keys once each are fine, and the refusals placed and credited nothing.
    assert (await buyer.post("/v1/accounts/b/deposits", json=deposit)).status_code == 201
    await settle(exchange.runtime)
    assert (await buyer.get("/v1/accounts/b")).json()["cash"] == {
        "available": 200_000,
        "held": 0,
    }
    assert (await buyer.get("/v1/orders")).json() == []
    assert [k["account_id"] for k in (await operator.get("/v1/admin/keys")).json()] == [
        "b",
        "operator",
    ]

    url = exchange.base_url.replace("http", "ws") + "/v1/stream"
    async with websockets.connect(url) as socket:
        await socket.send('{"op":"subscribe","symbols":["' + gz0 + '"],"op":"ping"}')
        answer = json.loads(await asyncio.wait_for(socket.recv(), 5))
        assert (answer["type"], answer["code"]) == ("error", "duplicate-key")
        assert "'op'" in answer["message"]
        await socket.send(json.dumps({"op": "ping"}))
        assert json.loads(await asyncio.wait_for(socket.recv(), 5))["type"] == "pong"


async def test_query_parameters_an_endpoint_does_not_take_are_refused_not_ignored(
    exchange: RunningExchange,
) -> None:
    buyer = await exchange.as_("b")
    operator = await exchange.operator()
    deposit = {"kind": "cash", "amount": 1000}
    assert (await buyer.post("/v1/accounts/b/deposits", json=deposit)).status_code == 201
    await settle(exchange.runtime)
    too_big = "99999999999999999999"
    unknown = [
        # The issue's own request: `since` is not a parameter (since_ts is), and was ignored.
        (operator, "/v1/admin/history", {"since": too_big}, ["since"]),
        (operator, "/v1/admin/history", {"account": "b", "format": "csv"}, ["account"]),
        (operator, "/v1/admin/replay", {"position": "1"}, ["position"]),
        (operator, "/v1/admin/audit", {"until": "1"}, ["until"]),
        (operator, "/v1/admin/events", {"from": "5", "limit": "1"}, ["from"]),
        (operator, "/v1/admin/streams/account-b", {"version": "2"}, ["version"]),
        (operator, "/v1/admin/keys", {"all": "true"}, ["all"]),
        (operator, "/v1/reports/trades", {"since": "1", "until": "2"}, ["since", "until"]),
        (buyer, "/v1/orders", {"state": "open"}, ["state"]),
        (buyer, "/v1/contracts", {"limit": "1"}, ["limit"]),
    ]
    for client, path, params, names in unknown:
        response = await client.get(path, params=params)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["type"] == "/problems/unknown-parameter", path
        assert problem["parameters"] == names, path
    out_of_range = [
        ("/v1/admin/history", {"since_ts": too_big}, "since_ts"),
        ("/v1/admin/history", {"until_ts": "-1"}, "until_ts"),
        ("/v1/admin/replay", {"until": too_big}, "until"),
        ("/v1/admin/events", {"after": too_big}, "after"),
        ("/v1/admin/streams/account-b", {"from_version": "0"}, "from_version"),
        ("/v1/reports/trades", {"since_ts": too_big}, "since_ts"),
        ("/v1/reports/trades", {"limit": "5001"}, "limit"),
    ]
    for path, params, field in out_of_range:
        response = await operator.get(path, params=params)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "/problems/invalid-request", path
        assert [e["field"] for e in response.json()["errors"]] == [field], path
    twice = await operator.get("/v1/admin/history", params=[("since_ts", "1"), ("since_ts", "0")])
    assert twice.status_code == 422
    assert (twice.json()["type"], twice.json()["parameters"]) == (
        "/problems/repeated-parameter",
        ["since_ts"],
    )
    # What the endpoints do take still works.
    exported = await operator.get("/v1/admin/history", params={"since_ts": 0, "account_id": "b"})
    assert exported.status_code == 200
    assert [json.loads(line)["type"] for line in exported.text.splitlines()] == ["FundsDeposited"]
    assert (await operator.get("/v1/admin/replay", params={"until": "1"})).status_code == 200


async def test_an_unexpected_fault_anywhere_is_answered_as_a_500_problem(
    exchange: RunningExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = await exchange.as_("b")
    assert (await buyer.get("/v1/orders")).status_code == 200

    def fault(*_: object, **__: object) -> NoReturn:
        raise RuntimeError("a fault no handler expects")

    faults = [
        (api.queries, "account_orders", "GET", "/v1/orders"),  # in an endpoint
        (exchange.market, "stats", "GET", "/v1/contracts/H100-80G.GZ.20271201T00/stats"),
        (api.problems, "duplicate_key", "POST", "/v1/orders"),  # in a middleware
        (api.parameters, "_parameters_of", "GET", "/v1/me"),  # in a dependency of every route
    ]
    for owner, name, method, path in faults:
        with monkeypatch.context() as patched:
            patched.setattr(owner, name, fault)
            answer = await buyer.request(method, path, json={} if method == "POST" else None)
        assert answer.status_code == 500, (name, answer.text)
        assert answer.headers["content-type"] == PROBLEM, name
        problem = answer.json()
        assert (problem["type"], problem["status"]) == ("/problems/internal-error", 500)
        assert "a fault no handler expects" not in problem["detail"], "no internals shown"
    assert (await buyer.get("/v1/orders")).status_code == 200
