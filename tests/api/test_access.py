"""Authorisation boundaries: keys, roles, and a participant seeing and changing only its own."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from api.keys import api_keys
from cx.cli import main as cx
from exchange.domain.accounts import SYSTEM_ACCOUNTS
from tests.conftest import fresh_database
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
PROBLEM = "application/problem+json"


@pytest.fixture(params=["embedded", "kafka+postgres"])
async def exchange(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RunningExchange]:
    """A running exchange with a buyer and a provider that have traded with each other."""
    if request.param == "embedded":
        settings = settings_for(tmp_path)
        async with running_exchange(settings) as running:
            await _trade(running)
            yield running
        return
    kafka = request.getfixturevalue("kafka_bootstrap")
    async with fresh_database(request.getfixturevalue("postgres_url")) as database_url:
        settings = settings_for(tmp_path, kafka=kafka, database_url=database_url)
        async with running_exchange(settings) as running:
            await _trade(running)
            yield running


async def _trade(exchange: RunningExchange) -> None:
    buyer = await exchange.as_("buyer-a")
    other = await exchange.as_("buyer-b")
    provider = await exchange.as_("provider-p", "provider")
    for client, account in ((buyer, "buyer-a"), (other, "buyer-b")):
        deposit = {"kind": "cash", "amount": 100_000}
        assert (
            await client.post(f"/v1/accounts/{account}/deposits", json=deposit)
        ).status_code == 201
    capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 10}
    assert (
        await provider.post("/v1/accounts/provider-p/deposits", json=capacity)
    ).status_code == 201
    ask = {"symbol": GZ0, "side": "sell", "price": 1800, "quantity": 5}
    assert (await provider.post("/v1/orders", json=ask)).status_code == 201
    bid = {"symbol": GZ0, "side": "buy", "price": 1800, "quantity": 2}
    assert (await buyer.post("/v1/orders", json=bid)).status_code == 201
    resting = {"symbol": GZ0, "side": "buy", "price": 1700, "quantity": 1}
    assert (await other.post("/v1/orders", json=resting)).status_code == 201
    await settle(exchange.runtime)


async def test_public_market_data_needs_no_key_and_private_data_does(
    exchange: RunningExchange,
) -> None:
    anonymous = exchange.anonymous
    for path in (
        "/v1/health",
        "/v1/contracts",
        f"/v1/contracts/{GZ0}",
        f"/v1/contracts/{GZ0}/book",
        f"/v1/contracts/{GZ0}/trades",
        f"/v1/contracts/{GZ0}/candles",
        f"/v1/contracts/{GZ0}/stats",
        "/v1/performance",
        "/",
    ):
        assert (await anonymous.get(path)).status_code == 200, path
    trades = (await anonymous.get(f"/v1/contracts/{GZ0}/trades")).json()
    assert trades
    assert not {"buyer_id", "seller_id", "buy_order_id"} & set(trades[0]), "no counterparties"
    for method, path in (
        ("GET", "/v1/me"),
        ("GET", "/v1/orders"),
        ("POST", "/v1/orders"),
        ("GET", "/v1/fills"),
        ("GET", "/v1/accounts/buyer-a"),
        ("GET", "/v1/obligations"),
        ("GET", "/v1/admin/keys"),
        ("GET", "/v1/reports/trades"),
    ):
        response = await anonymous.request(method, path, json={} if method == "POST" else None)
        assert response.status_code == 401, (method, path)
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "/problems/unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    wrong = await anonymous.get("/v1/me", headers={"Authorization": "Bearer cx_000000000000_nope"})
    assert wrong.status_code == 401


async def test_a_participant_sees_only_its_own_account(exchange: RunningExchange) -> None:
    buyer = await exchange.as_("buyer-a")
    me = (await buyer.get("/v1/me")).json()
    assert (me["account_id"], me["role"]) == ("buyer-a", "buyer")

    own = (await buyer.get("/v1/accounts/buyer-a")).json()
    assert own["positions"] == [{"symbol": GZ0, "quantity": 2}]
    # Every role learns who its key is, programme administrators too (the page signs them in so).
    admin = await exchange.as_("city-admin", "programme_admin")
    me = (await admin.get("/v1/me")).json()
    assert (me["account_id"], me["role"]) == ("city-admin", "programme_admin")
    for path in ("/v1/accounts/buyer-b", "/v1/accounts/provider-p"):
        refused = await buyer.get(path)
        assert refused.status_code == 403
        assert refused.json()["type"] == "/problems/account-mismatch"
    refused = await buyer.get("/v1/orders", params={"account_id": "buyer-b"})
    assert refused.status_code == 403
    assert (await buyer.get("/v1/fills", params={"account_id": "provider-p"})).status_code == 403

    orders = (await buyer.get("/v1/orders")).json()
    assert {o["account_id"] for o in orders} == {"buyer-a"}
    fills = (await buyer.get("/v1/fills")).json()
    assert [(f["side"], f["quantity"], f["price"]) for f in fills] == [("buy", 2, 1800)]

    other = await exchange.as_("buyer-b")
    theirs = (await other.get("/v1/orders")).json()
    assert len(theirs) == 1
    order_id = theirs[0]["order_id"]
    assert (await buyer.get(f"/v1/orders/{order_id}")).status_code == 404
    assert (await other.get(f"/v1/orders/{order_id}")).status_code == 200


async def test_a_participant_changes_only_its_own_orders_and_balances(
    exchange: RunningExchange,
) -> None:
    buyer = await exchange.as_("buyer-a")
    other = await exchange.as_("buyer-b")
    order_id = (await other.get("/v1/orders", params={"status": "open"})).json()[0]["order_id"]

    cancel = await buyer.delete(f"/v1/orders/{order_id}")
    assert cancel.status_code == 404
    assert cancel.json()["type"] == "/problems/unknown_order", "not revealed as another's"
    amend = await buyer.patch(f"/v1/orders/{order_id}", json={"price": 1710})
    assert amend.status_code == 404
    assert amend.json()["type"] == "/problems/unknown_order"
    named = await buyer.post(
        "/v1/orders",
        json={"account_id": "buyer-b", "symbol": GZ0, "side": "buy", "price": 1800, "quantity": 1},
    )
    assert named.status_code == 403
    assert named.json()["type"] == "/problems/account-mismatch"
    deposit = await buyer.post("/v1/accounts/buyer-b/deposits", json={"kind": "cash", "amount": 1})
    assert deposit.status_code == 403
    capacity = await buyer.post(
        "/v1/accounts/buyer-a/deposits", json={"kind": "capacity", "symbol": GZ0, "quantity": 1}
    )
    assert capacity.status_code == 403, "only providers deposit capacity"

    await settle(exchange.runtime)
    still = (await other.get(f"/v1/orders/{order_id}")).json()
    assert still["status"] == "open"
    assert (await other.get("/v1/accounts/buyer-b")).json()["cash"] == {
        "available": 100_000 - 1700,
        "held": 1700,
    }


async def test_operator_and_administrator_endpoints_refuse_everyone_else(
    exchange: RunningExchange,
) -> None:
    buyer = await exchange.as_("buyer-a")
    provider = await exchange.as_("provider-p", "provider")
    admin = await exchange.as_("city-agency", "programme_admin")
    operator = await exchange.operator()

    for client in (buyer, provider, admin):
        for method, path in (
            ("GET", "/v1/admin/keys"),
            ("POST", "/v1/admin/keys"),
            ("DELETE", "/v1/admin/keys/abc"),
            ("GET", "/v1/admin/events"),
            ("GET", f"/v1/admin/streams/contract-{GZ0}"),
            ("GET", "/v1/admin/history"),
            ("GET", "/v1/admin/replay"),
            ("GET", "/v1/admin/audit"),
        ):
            body = {"account_id": "x", "role": "operator"} if method == "POST" else None
            response = await client.request(method, path, json=body)
            assert response.status_code == 403, (method, path)
            assert response.json()["type"] == "/problems/forbidden"
    for client in (buyer, provider):
        assert (await client.get("/v1/reports/trades")).status_code == 403
    # Said in words, Chinese first, and with the right article.
    refused = (await admin.get("/v1/admin/keys")).json()
    assert refused["title"] == "当前角色无权操作 this role may not do that"
    assert refused["detail"] == (
        "算力券项目管理员密钥无权执行此操作, 需要以下角色的密钥: 运营 / a programme_admin key may "
        "not do this; it needs a key of role operator"
    )
    refused = (await operator.post("/v1/orders", json={"symbol": GZ0})).json()
    assert refused["detail"].startswith(
        "运营密钥无权执行此操作, 需要以下角色的密钥: 买方、算力供应商"
    )
    assert "/ an operator key may not do this" in refused["detail"]
    report = (await admin.get("/v1/reports/trades")).json()
    assert [(t["buyer_id"], t["seller_id"], t["amount"]) for t in report] == [
        ("buyer-a", "provider-p", 3600)
    ]
    assert (await operator.get("/v1/reports/trades")).status_code == 200
    events = (await operator.get("/v1/admin/events", params={"limit": 1000})).json()
    assert "TradeExecuted" in {e["type"] for e in events}
    stream = (await operator.get(f"/v1/admin/streams/contract-{GZ0}")).json()
    assert [e["stream_version"] for e in stream] == list(range(1, len(stream) + 1))

    # Operators read any account but do not trade; administrators neither.
    assert (await operator.get("/v1/accounts/buyer-a")).status_code == 200
    assert (await operator.get("/v1/orders", params={"account_id": "buyer-b"})).status_code == 200
    order = {"symbol": GZ0, "side": "buy", "price": 1800, "quantity": 1}
    for client in (operator, admin):
        assert (await client.post("/v1/orders", json=order)).status_code == 403
    assert (await admin.get("/v1/accounts/buyer-a")).status_code == 403


async def test_no_key_is_made_for_an_account_named_as_the_exchange_s_own(
    exchange: RunningExchange,
) -> None:
    # `platform`'s registered enterprise is the seller on every invoice: a participant
    # holding a key for it could register itself as the exchange.
    operator = await exchange.operator()
    for reserved in sorted(SYSTEM_ACCOUNTS):
        refused = await operator.post(
            "/v1/admin/keys", json={"account_id": reserved, "role": "buyer"}
        )
        assert refused.status_code == 422, refused.text
        problem = refused.json()
        assert problem["type"] == "/problems/reserved-account", problem
        assert problem["title"] == "账户名为交易所保留 account id reserved", problem
        assert problem["detail"].startswith(f"账户名 {reserved!r} 为交易所保留"), problem
        assert problem["field"] == "account_id", problem
    listed = (await operator.get("/v1/admin/keys", params={"include_revoked": True})).json()
    assert not {k["account_id"] for k in listed} & SYSTEM_ACCOUNTS
    # A name that only starts like one is an ordinary account.
    made = await operator.post(
        "/v1/admin/keys", json={"account_id": "platform-ops", "role": "buyer"}
    )
    assert made.status_code == 201, made.text


def test_cx_keys_create_refuses_an_account_named_as_the_exchange_s_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert cx(["keys", "create", "--account", "platform", "--role", "operator"]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no key printed
    assert err.startswith("cx keys: 账户名 'platform' 为交易所保留"), err
    assert cx(["keys", "list", "--all"]) == 0
    assert capsys.readouterr().out == ""


async def test_keys_are_shown_once_stored_hashed_and_revocable(exchange: RunningExchange) -> None:
    operator = await exchange.operator()
    created = await operator.post(
        "/v1/admin/keys", json={"account_id": "sme-9", "role": "buyer", "label": "laptop"}
    )
    assert created.status_code == 201
    key = created.json()["key"]
    key_id = created.json()["key_id"]
    assert key.startswith(f"cx_{key_id}_")

    listed = (await operator.get("/v1/admin/keys", params={"account_id": "sme-9"})).json()
    assert [(k["key_id"], k["role"], k["label"]) for k in listed] == [(key_id, "buyer", "laptop")]
    assert "key" not in listed[0]
    async with exchange.runtime.store.engine.connect() as connection:
        rows = (await connection.execute(select(api_keys))).all()
    assert all(key not in str(tuple(row)) for row in rows), "only a hash is stored"

    headers = {"Authorization": f"Bearer {key}"}
    assert (await exchange.anonymous.get("/v1/me", headers=headers)).status_code == 200
    conflict = await operator.post(
        "/v1/admin/keys", json={"account_id": "sme-9", "role": "provider"}
    )
    assert conflict.status_code == 409
    assert conflict.json()["type"] == "/problems/role-conflict"

    revoked = await operator.delete(f"/v1/admin/keys/{key_id}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    refused = await exchange.anonymous.get("/v1/me", headers=headers)
    assert refused.status_code == 401
    assert (await operator.delete("/v1/admin/keys/000000000000")).status_code == 404
    assert (await operator.get("/v1/admin/keys", params={"account_id": "sme-9"})).json() == []


async def test_operators_query_export_replay_and_audit_the_history(
    exchange: RunningExchange,
) -> None:
    operator = await exchange.operator()
    exported = await operator.get("/v1/admin/history", params={"account_id": "buyer-a"})
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert {"FundsDeposited", "OrderAccepted", "TradeExecuted"} <= {e["type"] for e in lines}
    for event in lines:
        data = event["data"]
        assert "buyer-a" in (data.get("account_id"), data.get("buyer_id"), data.get("seller_id"))
    trade = next(e for e in lines if e["type"] == "TradeExecuted")["data"]
    by_order = await operator.get("/v1/admin/history", params={"order_id": trade["sell_order_id"]})
    assert [json.loads(line)["type"] for line in by_order.text.splitlines()][:2] == [
        "OrderAccepted",
        "TradeExecuted",
    ]
    as_csv = await operator.get(
        "/v1/admin/history", params={"contract": GZ0, "format": "csv", "until_ts": trade["ts"]}
    )
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert rows[0] == ["position", "event_id", "stream_id", "type", "schema_version", "ts", "data"]
    assert all(int(row[5]) <= trade["ts"] for row in rows[1:])

    whole = (await operator.get("/v1/admin/replay")).json()
    positions = [e["position"] for e in lines]
    earlier = (
        await operator.get(
            "/v1/admin/replay", params={"until": str(positions[0]), "account_id": "buyer-a"}
        )
    ).json()
    assert earlier["position"] == positions[0]
    assert earlier["state_hash"] != whole["state_hash"]
    assert list(earlier["accounts"]) == ["buyer-a"]
    assert whole["accounts"]["buyer-a"]["positions"] == {GZ0: 2}
    bad = await operator.get("/v1/admin/replay", params={"until": "yesterday"})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == PROBLEM
    problem = bad.json()
    assert problem["title"] == "时间格式有误 invalid time"
    assert problem["detail"].startswith(
        "参数 until: 时间 'yesterday' 不是带时区的 ISO 8601 时间, 应如 2026-12-05T09:00+08:00"
    ), problem
    assert "Invalid isoformat" not in problem["detail"]
    assert [error["field"] for error in problem["errors"]] == ["until"]

    audited = (await operator.get("/v1/admin/audit")).json()
    assert audited["discrepancies"] == []
    assert audited["trades"] == 1
    assert audited["state_hash"] == whole["state_hash"]
