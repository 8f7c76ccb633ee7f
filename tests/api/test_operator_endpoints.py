"""Operators' controls through the API, on the embedded default and on Kafka and PostgreSQL:
delist and list, the whole market halted and resumed, bands, account limits; a forged
operator command appended to the log directly is refused."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from cx.settings import Settings
from exchange.domain.messages import ControlMarket
from exchange.domain.operators import OperatorSeal
from settlement.schema import events
from tests.e2e.harness import RunningExchange, running_exchange, settle

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
GZ1 = "H100-80G.GZ.20271201T01"
YRD0 = "H100-80G.YRD.20271201T00"


async def _stored(exchange: RunningExchange, event_type: str) -> list[dict[str, Any]]:
    async with exchange.runtime.store.engine.connect() as connection:
        rows = await connection.execute(
            select(events.c.data).where(events.c.type == event_type).order_by(events.c.position)
        )
        return [dict(r.data) for r in rows]


async def _bands(exchange: RunningExchange, *symbols: str) -> list[int]:
    """The price band GET /v1/contracts shows for each contract named."""
    listed = (await exchange.anonymous.get("/v1/contracts")).json()
    bands = {contract["symbol"]: contract["band"] for contract in listed}
    return [bands[symbol] for symbol in symbols]


async def test_operator_controls_through_the_api(exchange_settings: Settings) -> None:
    async with running_exchange(exchange_settings) as exchange:
        operator = await exchange.operator()
        buyer = await exchange.as_("b")
        deposit = {"kind": "cash", "amount": 1_000_000}
        assert (await buyer.post("/v1/accounts/b/deposits", json=deposit)).status_code == 201
        for path, body in (
            ("/v1/admin/market/halt", {"reason": "not mine"}),
            (f"/v1/admin/contracts/{GZ0}/delist", {"reason": "not mine"}),
        ):
            refused = await buyer.post(path, json=body)
            assert refused.status_code == 403
            assert refused.headers["content-type"].startswith("application/problem+json")
        refused = await buyer.put("/v1/admin/accounts/b/limits", json={"reason": "x"})
        assert refused.status_code == 403

        order = {"symbol": GZ0, "side": "buy", "price": 1700, "quantity": 2}
        resting = (await buyer.post("/v1/orders", json=order)).json()["order_id"]
        delisted = await operator.post(
            f"/v1/admin/contracts/{GZ0}/delist", json={"reason": "provider outage"}
        )
        assert delisted.status_code == 200, delisted.text
        await settle(exchange.runtime)
        cancelled = (await buyer.get(f"/v1/orders/{resting}")).json()
        assert (cancelled["status"], cancelled["reason"]) == ("cancelled", "delisted")
        refused = await buyer.post("/v1/orders", json=order)
        assert refused.status_code == 422
        assert refused.json()["type"] == "/problems/contract_delisted"
        listed = await operator.post(
            f"/v1/admin/contracts/{GZ0}/list", json={"reason": "provider back"}
        )
        assert listed.status_code == 200, listed.text
        await settle(exchange.runtime)
        assert (await buyer.post("/v1/orders", json=order)).status_code == 201

        halted = await operator.post("/v1/admin/market/halt", json={"reason": "incident"})
        assert halted.json()["status"] == "requested", halted.text
        await settle(exchange.runtime)
        halted_contracts = {
            e["symbol"] for e in await _stored(exchange, "ContractStateChanged")
            if e["state"] == "halted"
        }  # fmt: skip
        assert {GZ0, YRD0} <= halted_contracts
        resumed = await operator.post("/v1/admin/market/resume", json={"reason": "resolved"})
        assert resumed.status_code == 200

        assert await _bands(exchange, GZ0, GZ1, YRD0) == [0, 0, 0]
        band = await operator.post(
            "/v1/admin/contracts/H100-80G.GZ/set_band", json={"reason": "volatile", "band": 100}
        )
        assert band.status_code == 200, band.text
        await settle(exchange.runtime)
        # A family's band goes to the family's matching partition, which knows its contracts.
        refused_bands = [
            e for e in await _stored(exchange, "MarketControlRejected")
            if e["action"] == "set_band"
        ]  # fmt: skip
        assert refused_bands == []
        assert await _bands(exchange, GZ0, GZ1, YRD0) == [100, 100, 0]
        # A contract's own band, until its family's band replaces it as it does in matching.
        for target, width in ((GZ0, 50), ("H100-80G.GZ", 80)):
            answer = await operator.post(
                f"/v1/admin/contracts/{target}/set_band", json={"reason": "x", "band": width}
            )
            assert answer.status_code == 200, answer.text
            await settle(exchange.runtime)
            if target == GZ0:
                assert await _bands(exchange, GZ0, GZ1) == [50, 100]
        assert await _bands(exchange, GZ0, GZ1, YRD0) == [80, 80, 0]
        one = (await exchange.anonymous.get(f"/v1/contracts/{GZ0}")).json()
        assert one["band"] == 80
        no_band = await operator.post(f"/v1/admin/contracts/{GZ0}/set_band", json={"reason": "x"})
        assert no_band.status_code == 422

        limits = await operator.put(
            "/v1/admin/accounts/b/limits", json={"max_open_quantity": 3, "reason": "review"}
        )
        assert limits.json()["status"] == "set", limits.text
        over = await buyer.post("/v1/orders", json={**order, "quantity": 5})
        assert over.status_code == 422
        assert over.json()["type"] == "/problems/account_limit_exceeded"

        # Straight onto the commands topic, past the API: no signature, so refused.
        await exchange.runtime.submit(
            ControlMarket(operator_id="intruder", action="halt_market", symbol="*", reason="x")
        )
        await settle(exchange.runtime)
        forged = [
            e for e in await _stored(exchange, "MarketControlRejected")
            if e["operator_id"] == "intruder"
        ]  # fmt: skip
        assert [e["reason"] for e in forged] == ["not_operator"]
        recorded = [
            (e["action"], e["reason"]) for e in await _stored(exchange, "MarketControlRequested")
        ]
        assert ("delist", "provider outage") in recorded
        assert ("list", "provider back") in recorded
        # One copy per matching partition, each stored once.
        partitions = exchange_settings.market_partitions
        assert recorded.count(("halt_market", "incident")) == partitions
        limits_set = await _stored(exchange, "AccountLimitsSet")
        assert [(e["account_id"], e["max_open_quantity"], e["reason"]) for e in limits_set] == [
            ("b", 3, "review")
        ]
        audited = await operator.get("/v1/admin/audit")
        assert audited.json()["discrepancies"] == []


async def test_a_contract_an_operator_lists_is_shown_with_every_other(
    exchange_settings: Settings,
) -> None:
    # An hour the catalogue does not list, listed by an operator: the market views show it
    # like any other contract rather than refusing the whole list.
    extra = "A100-80G.GZ.20271201T05"
    async with running_exchange(exchange_settings) as exchange:
        operator = await exchange.operator()
        listed = await operator.post(f"/v1/admin/contracts/{extra}/list", json={"reason": "new"})
        assert listed.status_code == 200, listed.text
        await settle(exchange.runtime)
        contracts = await exchange.anonymous.get("/v1/contracts")
        assert contracts.status_code == 200, contracts.text
        assert extra in [contract["symbol"] for contract in contracts.json()]
        one = await exchange.anonymous.get(f"/v1/contracts/{extra}")
        assert one.status_code == 200, one.text
        assert one.json()["unit"] == "card-hour"


async def test_a_control_matching_refuses_or_the_api_cannot_take_is_422_and_changes_nothing(
    exchange_settings: Settings,
) -> None:
    """Every control of a contract answers with matching's decision: a refused one is 422 with
    matching's reason (worded Chinese first) and leaves the contract as it was; an auction
    with no time, or a past one, is refused by the API before anything is logged."""
    retired = "H100-80G.GZ.20200101T00"
    async with running_exchange(exchange_settings) as exchange:
        operator = await exchange.operator()

        async def control(symbol: str, action: str, **body: Any) -> Any:
            path = f"/v1/admin/contracts/{symbol}/{action}"
            return await operator.post(path, json={"reason": f"{action} drill", **body})

        async def state(symbol: str) -> str | None:
            answer = await exchange.anonymous.get(f"/v1/contracts/{symbol}")
            found: str | None = answer.json()["state"]
            return found

        def refused(answer: Any, reason: str) -> None:
            assert answer.status_code == 422, answer.text
            problem = answer.json()
            assert problem["type"] == f"/problems/{reason}", problem
            assert re.match(r"[\u4e00-\u9fff]", problem["title"]), problem

        before = await state(GZ0)
        refused(await control(GZ0, "list"), "already_listed")
        refused(await control(retired, "list"), "contract_closed")
        refused(await control(GZ0, "schedule_auction", at=exchange.market.now_ms + 60_000),
                "not_pre_open")  # fmt: skip
        refused(await control("A100-80G.GZ", "set_band", band=100), "unknown_contract")
        for body in ({}, {"at": 1}):
            early = await control(GZ0, "schedule_auction", **body)
            assert early.status_code == 422, early.text
            assert early.json()["type"] == "/problems/invalid-request"
            assert [e["field"] for e in early.json()["errors"]] == ["at"]
            assert re.match(r"[\u4e00-\u9fff]", early.json()["detail"]), early.json()
        await settle(exchange.runtime)
        assert await state(GZ0) == before
        assert await _stored(exchange, "ListingChanged") == []
        assert await _bands(exchange, GZ0, GZ1) == [0, 0]
        # Sorted: each contract's partition settles on its own, so partitions' rejections may
        # be stored in either order.
        rejected = sorted((e["action"], e["symbol"], e["reason"])
                          for e in await _stored(exchange, "MarketControlRejected"))  # fmt: skip
        assert rejected == [
            ("list", retired, "contract_closed"),
            ("list", GZ0, "already_listed"),
            ("schedule_auction", GZ0, "not_pre_open"),
            ("set_band", "A100-80G.GZ", "unknown_contract"),
        ]
        # The API refused the auctions with no time or a past one before logging them.
        recorded = [e["action"] for e in await _stored(exchange, "MarketControlRequested")]
        assert recorded.count("schedule_auction") == 1

        # Accepted, a control answers with what matching did, as a halt does.
        delisted = await control(GZ0, "delist")
        assert delisted.status_code == 200, delisted.text
        assert (delisted.json()["status"], delisted.json()["state"]) == ("applied", "closed")
        refused(await control(GZ0, "delist"), "contract_delisted")
        listed = await control(GZ0, "list")
        assert listed.status_code == 200, listed.text
        assert (listed.json()["status"], listed.json()["state"]) == ("applied", "continuous")
        band = await control(GZ0, "set_band", band=50)
        assert (band.status_code, band.json()["status"]) == (200, "applied"), band.text
        await settle(exchange.runtime)
        assert await state(GZ0) == "continuous"
        assert await _bands(exchange, GZ0, GZ1) == [50, 0]


async def test_controls_risk_refuses_are_422_with_its_reason(exchange_settings: Settings) -> None:
    """The API signing with a key the risk stage does not hold (a rotation gone wrong): every
    control, account limits too, is 422 `not_operator`, not `pending`, and sets nothing."""
    async with running_exchange(exchange_settings) as exchange:
        operator = await exchange.operator()
        await exchange.key_for("b")
        exchange.runtime.seal = OperatorSeal([b"a key the risk stage does not hold"])
        limits = await operator.put(
            "/v1/admin/accounts/b/limits", json={"max_open_quantity": 3, "reason": "review"}
        )
        halted = await operator.post(f"/v1/admin/contracts/{GZ0}/halt", json={"reason": "x"})
        for refused in (limits, halted):
            assert refused.status_code == 422, refused.text
            assert refused.json()["type"] == "/problems/not_operator"
        await settle(exchange.runtime)
        assert await _stored(exchange, "AccountLimitsSet") == []
        assert await _stored(exchange, "ContractStateChanged") == []


async def test_an_operator_command_to_an_account_never_given_a_key_is_refused_changing_nothing(
    exchange_settings: Settings,
) -> None:
    """Limits, a concession or a deposit under an account id no key was ever made for (a typo)
    is refused as `unknown-account`, worded Chinese first, and nothing is logged for it; the
    same commands to an account with a key (a revoked one too) are carried out."""
    async with running_exchange(exchange_settings) as exchange:
        operator = await exchange.operator()
        await exchange.key_for("b")
        revoked = await exchange.key_for("gone")
        gone_key_id = revoked.split("_")[1]
        assert (await operator.delete(f"/v1/admin/keys/{gone_key_id}")).status_code == 200

        def unknown(answer: Any, status: int) -> None:
            assert answer.status_code == status, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            problem = answer.json()
            assert problem["type"] == "/problems/unknown-account", problem
            assert problem["title"] == "没有这个账户 no such account", problem
            assert problem["detail"].startswith("没有账户 'nobody'"), problem

        limits = {"max_open_quantity": 3, "reason": "review"}
        unknown(await operator.put("/v1/admin/accounts/nobody/limits", json=limits), 404)
        relief = {
            "concession_id": "relief", "account_ids": ["b", "nobody"], "discount_bps": 5_000,
            "budget_per_account": 10, "valid_from": 0, "valid_until": 1_830_297_600_000,
            "reason": "fee relief",
        }  # fmt: skip
        refused = await operator.post("/v1/admin/concessions", json=relief)
        unknown(refused, 422)
        assert refused.json()["field"] == "account_ids"
        cash = {"kind": "cash", "amount": 1_000}
        unknown(await operator.post("/v1/accounts/nobody/deposits", json=cash), 404)
        withdrawal = {"kind": "cash", "amount": 1}
        unknown(await operator.post("/v1/accounts/nobody/withdrawals", json=withdrawal), 404)
        await settle(exchange.runtime)
        assert await _stored(exchange, "AccountLimitsSet") == []
        assert await _stored(exchange, "ConcessionGranted") == []
        assert await _stored(exchange, "FundsDeposited") == []
        assert await _stored(exchange, "RequestRejected") == []

        for account in ("b", "gone"):
            answer = await operator.put(f"/v1/admin/accounts/{account}/limits", json=limits)
            assert answer.json()["status"] == "set", answer.text
        only_b = {**relief, "account_ids": ["b"]}
        granted = await operator.post("/v1/admin/concessions", json=only_b)
        assert granted.status_code == 201, granted.text
        await settle(exchange.runtime)
        limited = [e["account_id"] for e in await _stored(exchange, "AccountLimitsSet")]
        assert sorted(limited) == ["b", "gone"]
        assert [e["account_id"] for e in await _stored(exchange, "ConcessionGranted")] == ["b"]
