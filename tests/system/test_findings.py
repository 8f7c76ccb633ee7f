"""Regression tests of the defects the whole-system model found (tests/system/machine.py),
each through the public API, each the model's shrunk reproduction made plain."""

from __future__ import annotations

from pathlib import Path

import pytest

from cx.runtime import ExchangeRuntime
from tests.e2e.harness import assert_stages_match_replay, running_exchange, settings_for, settle
from tests.system.machine import HOUR, MIDNIGHT, LogClock, tick_at

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
GATE = "2027-11-30T23:00:00+08:00"
"""GZ0's gate: an hour before its delivery hour, China Standard Time."""


async def test_a_revoked_key_on_a_public_view_is_a_documented_401(tmp_path: Path) -> None:
    """The model revoked a programme administrator's key and read the catalogue with it: 401,
    which the OpenAPI document did not list for public views."""
    async with running_exchange(settings_for(tmp_path)) as exchange:
        operator = await exchange.operator()
        created = await operator.post("/v1/admin/keys", json={"account_id": "c", "role": "buyer"})
        assert created.status_code == 201, created.text
        revoked = await operator.delete(f"/v1/admin/keys/{created.json()['key_id']}")
        assert revoked.status_code == 200, revoked.text
        headers = {"Authorization": f"Bearer {created.json()['key']}"}
        document = (await exchange.anonymous.get("/openapi.json")).json()
        for path in ("/v1/contracts", f"/v1/contracts/{GZ0}/book", "/v1/stalls", "/v1/health"):
            answer = await exchange.anonymous.get(path, headers=headers)
            assert answer.status_code == 401, (path, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
            template = path.replace(GZ0, "{symbol}")
            assert {"401", "429"} <= set(document["paths"][template]["get"]["responses"]), path


async def test_a_capacity_schedule_refused_or_with_a_refused_ask_says_what_it_deposited(
    tmp_path: Path,
) -> None:
    """The model scheduled capacity with a reserve price off the tick: 422, yet the hour's
    capacity was deposited. A provider without the cash for the ask's bond got the same."""
    settings = settings_for(tmp_path, CX_BOND_BPS=1_000)
    async with running_exchange(settings) as exchange:
        provider = await exchange.as_("p1", "provider")
        path = "/v1/accounts/p1/capacity-deposits"
        night = {
            "resource_class": "H100-80G",
            "region": "GZ",
            "quantity": 1,
            "first_day": "2027-12-01",
            "from_hour": 0,
            "to_hour": 1,
        }
        off_tick = await provider.post(path, json={**night, "reserve_price": 12, "deposit_id": "a"})
        assert off_tick.status_code == 422, off_tick.text
        assert off_tick.json()["type"] == "/problems/price_not_on_tick"
        await settle(exchange.runtime)
        assert (await provider.get("/v1/accounts/p1")).status_code == 404, "nothing deposited"

        unbonded = await provider.post(
            path, json={**night, "reserve_price": 1_800, "deposit_id": "b"}
        )
        assert unbonded.status_code == 201, unbonded.text
        answer = unbonded.json()
        assert answer["contracts"] == [GZ0]
        assert answer["asks"] == []
        assert [r["reason"] for r in answer["refused_asks"]] == ["insufficient_funds"]
        # Why, in words a person reads: Chinese first, then the exchange's own.
        assert answer["refused_asks"][0]["detail"].startswith("资金不足: ")
        await settle(exchange.runtime)
        account = (await provider.get("/v1/accounts/p1")).json()
        assert account["capacity"] == [
            {"symbol": GZ0, "available": 1, "held": 0, "state": "open", "gate": GATE}
        ]


async def test_another_order_under_a_used_client_order_id_and_a_new_header_is_refused(
    tmp_path: Path,
) -> None:
    """The model placed an order with client order id "b", then another order (other side,
    price and quantity) with client order id "b" and an Idempotency-Key "c": it was answered
    201 with the first order, replayed, and nothing was placed."""
    async with running_exchange(settings_for(tmp_path)) as exchange:
        buyer = await exchange.as_("b2")
        deposit = {"kind": "cash", "amount": 100_000}
        assert (await buyer.post("/v1/accounts/b2/deposits", json=deposit)).status_code == 201
        first = {
            "symbol": GZ0,
            "side": "buy",
            "price": 1_800,
            "quantity": 4,
            "client_order_id": "b",
        }
        placed = await buyer.post("/v1/orders", json=first)
        assert placed.status_code == 201, placed.text
        other = {**first, "price": 1_700, "quantity": 3}
        reused = await buyer.post("/v1/orders", json=other, headers={"Idempotency-Key": "c"})
        assert reused.status_code == 422, reused.text
        assert reused.json()["type"] == "/problems/idempotency-key-reused"
        again = await buyer.post("/v1/orders", json=first, headers={"Idempotency-Key": "c"})
        assert again.status_code == 201, again.text
        assert again.json() == placed.json()
        assert again.headers["idempotent-replayed"] == "true"


async def test_risk_replays_operators_signed_commands_as_the_live_stage_decided(
    tmp_path: Path,
) -> None:
    """The model set an account's limits; at the end the check that risk equals a replay of
    its topic failed, because the replay verified operators' signatures with no key and
    refused what the live stage had accepted (a defect of the test harness)."""
    settings = settings_for(tmp_path, CX_COMMAND_PARTITIONS=1, CX_MARKET_PARTITIONS=1)
    async with running_exchange(settings) as exchange:
        operator = await exchange.operator()
        buyer = await exchange.as_("p1")
        limits = {"max_open_quantity": None, "max_open_notional": 0, "reason": "model"}
        answer = await operator.put("/v1/admin/accounts/p1/limits", json=limits)
        assert answer.json()["status"] == "set", answer.text
        deposit = {"kind": "cash", "amount": 100_000}
        assert (await buyer.post("/v1/accounts/p1/deposits", json=deposit)).status_code == 201
        bid = {"symbol": GZ0, "side": "buy", "price": 1_800, "quantity": 1}
        refused = await buyer.post("/v1/orders", json=bid)
        assert refused.json()["type"] == "/problems/account_limit_exceeded", refused.text
        await settle(exchange.runtime)
    runtime = await ExchangeRuntime.open(settings)
    try:
        await assert_stages_match_replay(runtime, 1)
    finally:
        await runtime.close()


async def test_capacity_cannot_be_deposited_into_a_contract_past_its_gate(tmp_path: Path) -> None:
    """The model moved the clock past the delivery of a static contract and deposited
    capacity into it: accepted, and then it could neither be sold nor withdrawn."""
    clock = LogClock(MIDNIGHT - 2 * HOUR)
    async with running_exchange(settings_for(tmp_path), clock) as exchange:
        provider = await exchange.as_("p1", "provider")
        capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 2}
        before = await provider.post("/v1/accounts/p1/deposits", json=capacity)
        assert before.status_code == 201, before.text
        for at in (MIDNIGHT - HOUR, MIDNIGHT + 1):
            clock.now_ms = at
            await tick_at(exchange.runtime, at)
            await settle(exchange.runtime)
        late = await provider.post("/v1/accounts/p1/deposits", json=capacity)
        assert late.status_code == 422, late.text
        assert late.json()["type"] == "/problems/gate_closed"
        schedule = {
            "resource_class": "H100-80G",
            "region": "GZ",
            "quantity": 1,
            "first_day": "2027-12-01",
            "from_hour": 0,
            "to_hour": 1,
        }
        refused = await provider.post("/v1/accounts/p1/capacity-deposits", json=schedule)
        assert refused.status_code == 422, refused.text
        await settle(exchange.runtime)
        account = (await provider.get("/v1/accounts/p1")).json()
        # Still on the books, but past its gate: it says it can no longer be sold nor withdrawn.
        assert account["capacity"] == [
            {"symbol": GZ0, "available": 2, "held": 0, "state": "gate_closed", "gate": GATE}
        ]
        withdrawal = {"kind": "capacity", "symbol": GZ0, "quantity": 2}
        refused = await provider.post("/v1/accounts/p1/withdrawals", json=withdrawal)
        assert refused.status_code == 422, refused.text
        assert refused.json()["type"] == "/problems/gate_closed"


async def test_a_schedule_over_a_closed_hour_and_an_open_one_deposits_neither(
    tmp_path: Path,
) -> None:
    """The model scheduled CPU capacity for 00:00-02:00 after the first hour's gate: 422, and
    the second hour deposited all the same."""
    clock = LogClock(MIDNIGHT - 2 * HOUR)
    async with running_exchange(settings_for(tmp_path), clock) as exchange:
        provider = await exchange.as_("p1", "provider")
        clock.now_ms = MIDNIGHT - HOUR + 1
        await tick_at(exchange.runtime, clock.now_ms)
        await settle(exchange.runtime)
        schedule = {
            "resource_class": "CPU",
            "region": "GZ",
            "quantity": 1,
            "first_day": "2027-12-01",
            "from_hour": 0,
            "to_hour": 2,
        }
        refused = await provider.post("/v1/accounts/p1/capacity-deposits", json=schedule)
        assert refused.status_code == 422, refused.text
        assert refused.json()["type"] == "/problems/gate_closed"
        await settle(exchange.runtime)
        assert (await provider.get("/v1/accounts/p1")).status_code == 404, "nothing deposited"


async def test_a_schedule_over_a_delisted_hour_and_a_listed_one_deposits_neither(
    tmp_path: Path,
) -> None:
    """The model scheduled H100-80G capacity in GZ for 00:00-02:00 after an operator delisted
    the first hour: 422 `contract_delisted`, and the second hour deposited all the same."""
    async with running_exchange(settings_for(tmp_path)) as exchange:
        operator = await exchange.operator()
        delisted = await operator.post(
            f"/v1/admin/contracts/{GZ0}/delist", json={"reason": "drill"}
        )
        assert delisted.status_code == 200, delisted.text
        await settle(exchange.runtime)
        provider = await exchange.as_("p1", "provider")
        schedule = {
            "resource_class": "H100-80G",
            "region": "GZ",
            "quantity": 6,
            "first_day": "2027-12-01",
            "from_hour": 0,
            "to_hour": 2,
            "deposit_id": "a",
        }
        refused = await provider.post("/v1/accounts/p1/capacity-deposits", json=schedule)
        assert refused.status_code == 422, refused.text
        assert refused.json()["type"] == "/problems/contract_delisted"
        assert refused.json()["detail"] == f"contract {GZ0!r} was delisted by operator: drill"
        await settle(exchange.runtime)
        assert (await provider.get("/v1/accounts/p1")).status_code == 404, "nothing deposited"


async def test_a_recalled_unit_shows_in_the_deliveries_of_its_holder(tmp_path: Path) -> None:
    """The model's capacity check found a recalled unit gone from every view: neither the
    provider's nor the holder's GET /v1/deliveries listed it, though its escrow was refunded
    and compensated. A recall and the obligation the same pair still owes at the delivery hour
    are both listed."""
    settings = settings_for(tmp_path, CX_LISTINGS="H100-80G-INT.GZ", CX_BOND_BPS=1_000)
    clock = LogClock(MIDNIGHT - 3 * HOUR)
    recallable = "H100-80G-INT.GZ.20271201T00"
    async with running_exchange(settings, clock) as exchange:
        provider = await exchange.as_("p1", "provider")
        buyer = await exchange.as_("b1")
        for client, account in ((provider, "p1"), (buyer, "b1")):
            cash = {"kind": "cash", "amount": 100_000}
            assert (await client.post(f"/v1/accounts/{account}/deposits", json=cash)).status_code
        schedule = {
            "resource_class": "H100-80G",
            "region": "GZ",
            "quantity": 2,
            "first_day": "2027-12-01",
            "from_hour": 0,
            "to_hour": 1,
            "recallable": True,
            "reserve_price": 1_250,
        }
        placed = await provider.post("/v1/accounts/p1/capacity-deposits", json=schedule)
        assert placed.json()["asks"], placed.text
        bid = {"symbol": recallable, "side": "buy", "price": 1_250, "quantity": 2}
        assert (await buyer.post("/v1/orders", json=bid)).status_code == 201
        await settle(exchange.runtime)
        recall = {"symbol": recallable, "quantity": 1, "reason": "maintenance", "recall_id": "r1"}
        recalled = await provider.post("/v1/deliveries/recalls", json=recall)
        assert recalled.json()["status"] == "done", recalled.text
        await settle(exchange.runtime)
        positions = (await buyer.get("/v1/accounts/b1")).json()["positions"]
        assert sum(p["quantity"] for p in positions) == 1, positions
        shown = (await buyer.get("/v1/deliveries")).json()
        assert [(d["quantity"], d["status"], d["recall_id"]) for d in shown] == [
            (1, "recalled", "r1")
        ]
        assert shown[0]["refund"] == 1_250, shown
        assert shown[0]["penalty"] > 0, shown
        assert (await provider.get("/v1/deliveries")).json() == shown
        clock.now_ms = MIDNIGHT + 1
        await tick_at(exchange.runtime, clock.now_ms)
        await settle(exchange.runtime)
        shown = (await buyer.get("/v1/deliveries")).json()
        assert sorted((d["quantity"], d["status"], d["recall_id"]) for d in shown) == [
            (1, "owed", None),
            (1, "recalled", "r1"),
        ]


async def test_a_provider_s_account_adds_up_to_its_statement_with_the_bonds_it_posted(
    tmp_path: Path,
) -> None:
    """The outside trial read a provider's account, available 69,771 + held 460 fen, 2,360 fen
    short of its statement's closing 72,591: the delivery bonds behind what it sold, which the
    account never showed. Its unsold capacity said nothing of its gate either."""
    clock = LogClock(MIDNIGHT - 3 * HOUR)
    async with running_exchange(settings_for(tmp_path, CX_BOND_BPS=1_000), clock) as exchange:
        provider = await exchange.as_("p1", "provider")
        buyer = await exchange.as_("b1", "buyer")
        for client, account, body in (
            (provider, "p1", {"kind": "cash", "amount": 10_000}),
            (provider, "p1", {"kind": "capacity", "symbol": GZ0, "quantity": 5}),
            (buyer, "b1", {"kind": "cash", "amount": 20_000}),
        ):
            answer = await client.post(f"/v1/accounts/{account}/deposits", json=body)
            assert answer.status_code == 201, answer.text
        ask = {"symbol": GZ0, "side": "sell", "price": 1_500, "quantity": 5}
        assert (await provider.post("/v1/orders", json=ask)).status_code == 201
        bid = {"symbol": GZ0, "side": "buy", "price": 1_500, "quantity": 3}
        assert (await buyer.post("/v1/orders", json=bid)).status_code == 201
        await settle(exchange.runtime)

        account = (await provider.get("/v1/accounts/p1")).json()
        # 10% of 15.00 元: 150 fen of bond a unit, posted for the 3 sold, held for the 2 offered.
        assert account["bonds"] == 3 * 150
        assert account["cash"]["held"] == 2 * 150
        assert account["capacity"] == [
            {"symbol": GZ0, "available": 0, "held": 2, "state": "open", "gate": GATE}
        ]
        statement = (await provider.get("/v1/statements", params={"month": "2027-11"})).json()
        cash = account["cash"]
        assert cash["available"] + cash["held"] + account["bonds"] == statement["closing"]
        assert statement["closing"] == 10_000, "no money has left or come in yet"

        # Delivered and settled: the bonds are back, and the account still adds up.
        for at in (MIDNIGHT - HOUR, MIDNIGHT + HOUR + 1, MIDNIGHT + 3 * HOUR):
            clock.now_ms = at
            await tick_at(exchange.runtime, at)
            await settle(exchange.runtime)
        metering = {"symbol": GZ0, "buyer_id": "b1", "delivered": 3}
        assert (await provider.post("/v1/deliveries/metering", json=metering)).status_code == 201
        clock.now_ms = MIDNIGHT + 6 * HOUR
        await tick_at(exchange.runtime, clock.now_ms)
        await settle(exchange.runtime)
        account = (await provider.get("/v1/accounts/p1")).json()
        december = (await provider.get("/v1/statements", params={"month": "2027-12"})).json()
        assert account["bonds"] == 0
        assert account["cash"]["held"] == 0
        assert account["cash"]["available"] == december["closing"]
        # The 2 unsold units expired with their sell at the gate: on the books, not for sale.
        assert account["capacity"] == [
            {"symbol": GZ0, "available": 2, "held": 0, "state": "gate_closed", "gate": GATE}
        ]


async def test_a_deposit_past_a_rolled_contract_s_gate_says_it_is_retired_as_documented(
    tmp_path: Path,
) -> None:
    """The outside trial deposited capacity into a rolled hour after its gate: 422
    `unknown_contract`, "... is retired: its trading closed at ...", where docs/API.md promised
    `gate_closed`. A rolled contract is listed only until its gate, so the answer is the one an
    order gets; a fixed contract, listed after its gate, is refused `gate_closed` (above). The
    docs now say both."""
    hour = "H100-80G.GZ.20271201T10"
    clock = LogClock(MIDNIGHT)
    settings = settings_for(tmp_path, CX_LISTINGS="H100-80G.GZ", CX_LISTING_DAYS=1)
    async with running_exchange(settings, clock) as exchange:
        # The exchange's log time starts at the first event: before it the API lists today's.
        await tick_at(exchange.runtime, MIDNIGHT)
        await settle(exchange.runtime)
        provider = await exchange.as_("p1", "provider")
        capacity = {"kind": "capacity", "symbol": hour, "quantity": 1}
        before = await provider.post("/v1/accounts/p1/deposits", json=capacity)
        assert before.status_code == 201, before.text
        clock.now_ms = MIDNIGHT + 9 * HOUR
        await tick_at(exchange.runtime, clock.now_ms)
        await settle(exchange.runtime)
        late = await provider.post("/v1/accounts/p1/deposits", json=capacity)
        assert late.status_code == 422, late.text
        assert late.json()["type"] == "/problems/unknown_contract"
        assert late.json()["detail"] == (
            f"contract '{hour}' is retired: its trading closed at 2027-12-01T09:00:00+08:00"
        )
    reasons = next(
        line
        for line in (Path(__file__).parents[2] / "docs" / "API.md").read_text().splitlines()
        if line.startswith("| the exchange's reasons:")
    )
    assert "a rolled contract retires at its gate" in reasons
    assert "is `unknown_contract`" in reasons
