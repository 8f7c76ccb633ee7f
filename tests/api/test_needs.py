"""Need-based orders through the API on the embedded default: plan, place, stand, expire."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cx_client import ExchangeClient, ProblemError
from sqlalchemy import update

from api.models import DAY_START_MS
from api.needs import api_needs
from exchange.domain.messages import PlaceBlockOrder, exchange_order_id
from tests.e2e.harness import (
    RunningExchange,
    eventually,
    running_exchange,
    settings_for,
    settle,
)
from tests.system.machine import HOUR, MIDNIGHT, LogClock

pytestmark = pytest.mark.e2e

HOUR_MS = 3_600_000
GZ = ("H100-80G.GZ.20271201T00", "H100-80G.GZ.20271201T01")
YRD = ("H100-80G.YRD.20271201T00", "H100-80G.YRD.20271201T01")


@pytest.fixture
async def exchange(tmp_path: Path) -> AsyncIterator[RunningExchange]:
    async with running_exchange(settings_for(tmp_path)) as running:
        yield running


def need(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "unit": "cards",
        "quantity": 2,
        "hours": 2,
        "earliest_start": DAY_START_MS,
        "deadline": DAY_START_MS + 2 * HOUR_MS,
        "regions": [{"region": "GZ"}, {"region": "YRD"}],
        "max_total": 100_000,
    }
    body.update(overrides)
    return body


async def offer(exchange: RunningExchange, symbols: tuple[str, ...], price: int) -> None:
    provider = await exchange.as_("p", "provider")
    for symbol in symbols:
        capacity = {"kind": "capacity", "symbol": symbol, "quantity": 10}
        assert (await provider.post("/v1/accounts/p/deposits", json=capacity)).status_code == 201
        ask = {"symbol": symbol, "side": "sell", "price": price, "quantity": 5}
        assert (await provider.post("/v1/orders", json=ask)).status_code == 201


async def funded_buyer(exchange: RunningExchange, account: str = "b") -> httpx.AsyncClient:
    buyer = await exchange.as_(account)
    deposit = {"kind": "cash", "amount": 100_000}
    assert (await buyer.post(f"/v1/accounts/{account}/deposits", json=deposit)).status_code == 201
    return buyer


async def test_a_need_fills_in_the_cheaper_region_with_every_alternative_explained(
    exchange: RunningExchange,
) -> None:
    await offer(exchange, GZ, 1900)
    await offer(exchange, YRD, 1800)
    buyer = await funded_buyer(exchange)
    answer = await buyer.post("/v1/needs", json=need(client_need_id="run-1"))
    assert answer.status_code == 201, answer.text
    placed = answer.json()
    assert placed["status"] == "filled"
    plan = placed["plan"]
    assert plan["chosen"]["symbols"] == list(YRD)
    assert [(a["family"], a["cost"], a["feasible"]) for a in plan["alternatives"]] == [
        ("H100-80G.YRD", 4 * 1800, True),
        ("H100-80G.GZ", 4 * 1900, True),
    ]
    assert [(e["family"], e["reason"]) for e in plan["excluded"]] == [
        ("A100-80G.NMG", "region_not_accepted"),
        ("CPU.GZ", "not_a_card"),
    ]
    assert placed["order"] == {
        "order_id": exchange_order_id("b", f"{placed['need_id']}-block"),
        "symbols": list(YRD),
        "price": 1800,
        "quantity": 2,
        "status": "filled",
        "filled": 4,
        "paid": 7200,
        "reason": None,
        "voucher": None,
        "kind": "hourly_block",
        "recalled": [],
    }
    await settle(exchange.runtime)
    account = (await buyer.get("/v1/accounts/b")).json()
    assert account["cash"] == {"available": 100_000 - 7200, "held": 0}
    assert account["positions"] == [{"symbol": s, "quantity": 2} for s in YRD]

    again = await buyer.post("/v1/needs", json=need(client_need_id="run-1"))
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["need_id"] == placed["need_id"]
    different = await buyer.post("/v1/needs", json=need(client_need_id="run-1", quantity=3))
    assert different.status_code == 422
    assert different.json()["type"] == "/problems/idempotency-key-reused"
    assert (await buyer.get(f"/v1/needs/{placed['need_id']}")).json()["status"] == "filled"


async def test_a_needs_plan_is_shown_before_buying_and_places_nothing(
    exchange: RunningExchange,
) -> None:
    await offer(exchange, GZ, 1900)
    await offer(exchange, YRD, 1800)
    buyer = await funded_buyer(exchange)
    answer = await buyer.post("/v1/needs/plan", json=need())
    assert answer.status_code == 200, answer.text
    plan = answer.json()
    assert plan["chosen"]["family"] == "H100-80G.YRD"
    assert plan["chosen"]["cost"] == 2 * 2 * 1800
    assert {a["family"] for a in plan["alternatives"]} >= {"H100-80G.GZ", "H100-80G.YRD"}
    await settle(exchange.runtime)
    assert (await buyer.get("/v1/orders")).json() == []
    assert (await buyer.get("/v1/accounts/b")).json()["cash"]["held"] == 0

    provider = await exchange.as_("p", "provider")
    assert (await provider.post("/v1/needs/plan", json=need())).status_code == 403
    past = need(earliest_start=1_000, deadline=2 * HOUR_MS)
    late = await buyer.post("/v1/needs/plan", json=past)
    assert (late.status_code, late.json()["field"]) == (422, "deadline")
    not_held = await buyer.post("/v1/needs/plan", json=need(voucher="no-such-programme"))
    assert (not_held.status_code, not_held.json()["type"]) == (422, "/problems/not_eligible")


async def test_a_need_nothing_can_fill_is_refused_with_why_and_changes_nothing(
    exchange: RunningExchange,
) -> None:
    await offer(exchange, GZ, 1900)
    buyer = await funded_buyer(exchange)
    too_dear = await buyer.post("/v1/needs", json=need(max_total=7599, client_need_id="x"))
    assert too_dear.status_code == 422
    problem = too_dear.json()
    assert problem["type"] == "/problems/no_feasible_plan"
    assert problem["reason"] == "over_max_total"
    assert problem["plan"]["alternatives"][0]["detail"].startswith("hourly block: costs 7600 fen")
    thin = await buyer.post("/v1/needs", json=need(quantity=6))
    assert thin.json()["reason"] == "insufficient_depth"
    late = await buyer.post(
        "/v1/needs",
        json=need(earliest_start=DAY_START_MS + HOUR_MS, deadline=DAY_START_MS + 9 * HOUR_MS),
    )
    assert late.json()["reason"] == "no_listed_hours_in_window"
    await settle(exchange.runtime)
    account = (await buyer.get("/v1/accounts/b")).json()
    assert account["cash"] == {"available": 100_000, "held": 0}
    assert (await buyer.get("/v1/orders", params={"account_id": "b"})).json() == []


@pytest.mark.parametrize(
    ("change", "kind", "field"),
    [
        ({"regions": [{"region": "MARS"}]}, "invalid_need", "regions"),
        ({"deadline": DAY_START_MS + HOUR_MS}, "invalid_need", "deadline"),
        ({"classes": ["B200"]}, "invalid_need", "classes"),
        ({"deadline": 1_000_000, "earliest_start": 0, "hours": 1}, "invalid_need", "deadline"),
        ({"quantity": 2.5}, "invalid-request", None),
        ({"unit": "gpus"}, "invalid-request", None),
        ({"regions": []}, "invalid-request", None),
    ],
)
async def test_bad_needs_get_specific_problems(
    exchange: RunningExchange, change: dict[str, Any], kind: str, field: str | None
) -> None:
    buyer = await exchange.as_("b")
    refused = await buyer.post("/v1/needs", json=need(**change))
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"] == f"/problems/{kind}"
    if field is not None:
        assert refused.json()["field"] == field


async def test_only_buyers_state_needs_and_only_their_own_are_shown(
    exchange: RunningExchange,
) -> None:
    provider = await exchange.as_("p", "provider")
    assert (await provider.post("/v1/needs", json=need())).status_code == 403
    buyer = await exchange.as_("b")
    standing = (await buyer.post("/v1/needs", json=need(stand=True))).json()
    other = await exchange.as_("c")
    unknown = await other.get(f"/v1/needs/{standing['need_id']}")
    assert unknown.status_code == 404
    assert unknown.json()["title"] == "没有这项需求 no such need"
    assert (await other.delete(f"/v1/needs/{standing['need_id']}")).status_code == 404


async def test_a_standing_need_is_placed_when_the_books_allow_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    async with running_exchange(settings) as exchange:
        buyer = await funded_buyer(exchange)
        answer = await buyer.post("/v1/needs", json=need(stand=True))
        assert answer.status_code == 201, answer.text
        standing = answer.json()
        assert standing["status"] == "standing"
        assert standing["plan"]["reason"] == "insufficient_depth"
        assert standing["order"] is None
        withdrawn = (await buyer.post("/v1/needs", json=need(stand=True, quantity=1))).json()
        gone = await buyer.delete(f"/v1/needs/{withdrawn['need_id']}")
        assert gone.json()["status"] == "withdrawn"
        again = await buyer.delete(f"/v1/needs/{withdrawn['need_id']}")
        assert again.status_code == 409
        assert again.json()["title"] == "需求已不在等待中 the need is no longer standing"
    async with running_exchange(settings) as exchange:
        buyer = await exchange.as_("b")
        await offer(exchange, GZ, 1800)

        async def filled() -> bool:
            shown = (await buyer.get(f"/v1/needs/{standing['need_id']}")).json()
            return shown["status"] == "filled"

        await eventually(filled, "the standing need to fill")
        await settle(exchange.runtime)
        account = (await buyer.get("/v1/accounts/b")).json()
        assert account["positions"] == [{"symbol": s, "quantity": 2} for s in GZ]
        assert account["cash"] == {"available": 100_000 - 7200, "held": 0}
        shown = (await buyer.get(f"/v1/needs/{withdrawn['need_id']}")).json()
        assert (shown["status"], shown["order"]) == ("withdrawn", None)


async def test_a_standing_need_expires_at_its_deadline(exchange: RunningExchange) -> None:
    buyer = await exchange.as_("b")
    deadline = time.time_ns() // 1_000_000 + 1500
    body = need(stand=True, earliest_start=deadline - HOUR_MS, deadline=deadline, hours=1)
    standing = (await buyer.post("/v1/needs", json=body)).json()
    assert standing["plan"]["reason"] == "no_listed_hours_in_window"

    async def expired() -> bool:
        shown = (await buyer.get(f"/v1/needs/{standing['need_id']}")).json()
        return shown["status"] == "expired"

    await eventually(expired, "the need to expire")


async def test_the_typed_client_states_reads_and_withdraws_needs(
    exchange: RunningExchange,
) -> None:
    await offer(exchange, YRD, 1800)
    await funded_buyer(exchange)
    async with ExchangeClient(exchange.base_url, await exchange.key_for("b")) as client:
        with pytest.raises(ProblemError) as refused:
            await client.state_need(
                "cards", 2, 2, DAY_START_MS, DAY_START_MS + 2 * HOUR_MS, {"GZ": 0}, 100_000
            )
        assert refused.value.type == "/problems/no_feasible_plan"
        assert refused.value.body["reason"] == "insufficient_depth"
        standing = await client.state_need(
            "standard_card_hours",
            4,
            2,
            DAY_START_MS,
            DAY_START_MS + 2 * HOUR_MS,
            {"GZ": 0},
            100_000,
            min_grade=10_000,
            stand=True,
        )
        assert standing.status == "standing"
        assert standing.plan is not None
        assert standing.plan.alternatives[0].cards_per_hour == 2
        assert (await client.need(standing.need_id)).status == "standing"
        assert (await client.withdraw_need(standing.need_id)).status == "withdrawn"
        filled = await client.state_need(
            "cards", 1, 2, DAY_START_MS, DAY_START_MS + 2 * HOUR_MS, {"GZ": 0, "YRD": 30}, 5000
        )
        assert filled.status == "filled"
        assert filled.order is not None
        assert (filled.order.paid, filled.plan.chosen.adder_cost) == (3600, 60)  # type: ignore[union-attr]


async def test_a_standing_need_whose_block_misses_stands_again_and_fills_later(
    exchange: RunningExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer = await funded_buyer(exchange)
    await offer(exchange, GZ, 1800)
    await settle(exchange.runtime)
    service = next(
        listener.__self__  # type: ignore[attr-defined]
        for listener in exchange.market.book_listeners
        if type(listener.__self__).__name__ == "NeedService"  # type: ignore[attr-defined]
    )
    submit = service.commands.submit_and_wait
    provider = await exchange.as_("p", "provider")
    raced: list[str] = []

    async def books_move_first(command: Any, key: str) -> Any:
        # The asks are withdrawn between planning and matching, once: the block misses.
        if isinstance(command, PlaceBlockOrder) and not raced:
            raced.append(exchange_order_id(command.account_id, command.order_id))
            assert (await provider.delete("/v1/orders")).status_code == 200
            await settle(exchange.runtime)
        return await submit(command, key)

    monkeypatch.setattr(service.commands, "submit_and_wait", books_move_first)
    placed = await buyer.post("/v1/needs", json=need(stand=True, regions=[{"region": "GZ"}]))
    assert placed.status_code == 201, placed.text
    need_id = placed.json()["need_id"]
    shown = (await buyer.get(f"/v1/needs/{need_id}")).json()
    assert shown["status"] == "standing", shown
    assert shown["reason"].startswith(f"block {raced[0]} missed")

    await offer(exchange, GZ, 1800)

    async def filled() -> bool:
        return bool((await buyer.get(f"/v1/needs/{need_id}")).json()["status"] == "filled")

    await eventually(filled, "the need to fill at its second block")
    shown = (await buyer.get(f"/v1/needs/{need_id}")).json()
    assert shown["order"]["order_id"] == exchange_order_id("b", f"{need_id}-block-2")
    await settle(exchange.runtime)
    account = (await buyer.get("/v1/accounts/b")).json()
    assert account["positions"] == [{"symbol": s, "quantity": 2} for s in GZ]


@pytest.mark.parametrize("scoped", [True, False], ids=["claimed-now", "claimed-before-scoping"])
async def test_a_block_claimed_but_never_sent_is_sent_again(
    exchange: RunningExchange, scoped: bool
) -> None:
    buyer = await funded_buyer(exchange)
    # Standing on Yangtze River Delta hours nobody offers, so no re-plan places a block.
    standing = await buyer.post("/v1/needs", json=need(stand=True, regions=[{"region": "YRD"}]))
    need_id = standing.json()["need_id"]
    await offer(exchange, GZ, 1800)
    await settle(exchange.runtime)
    # As if the API process had claimed the need for this block and died before sending it
    # (or an API process from before order ids were scoped by account, which kept the id the
    # block was to be sent as).
    sent_as = f"{need_id}-block"
    order_id = exchange_order_id("b", sent_as)
    block = {"symbols": list(GZ), "price": 1800, "quantity": 2}
    block |= {"order_id": order_id, "sent_as": sent_as} if scoped else {"order_id": sent_as}
    async with exchange.runtime.store.engine.begin() as connection:
        await connection.execute(
            update(api_needs)
            .where(api_needs.c.need_id == need_id)
            .values(
                status="submitted",
                block=orjson.dumps({**block, "attempt": 1}).decode(),
                updated_ms=time.time_ns() // 1_000_000 - 60_000,
            )
        )

    async def filled() -> bool:
        return bool((await buyer.get(f"/v1/needs/{need_id}")).json()["status"] == "filled")

    await eventually(filled, "the lost block to be sent again and fill")
    shown = (await buyer.get(f"/v1/needs/{need_id}")).json()
    assert (shown["order"]["order_id"], shown["order"]["filled"]) == (order_id, 4)
    await settle(exchange.runtime)
    account = (await buyer.get("/v1/accounts/b")).json()
    assert account["positions"] == [{"symbol": s, "quantity": 2} for s in GZ]


async def test_a_need_buys_interruptible_capacity_only_when_it_names_it_and_shows_its_recall(
    tmp_path: Path,
) -> None:
    """Found trying the exchange from outside: a need naming no class filled on the cheaper
    H100-80G-INT family, recallable capacity that is a different product, and neither its plan
    nor, after the provider recalled the units, the need said so."""
    settings = settings_for(tmp_path, CX_LISTINGS="H100-80G-INT.GZ", CX_BOND_BPS=1_000)
    recallable = "H100-80G-INT.GZ.20271201T00"
    async with running_exchange(settings, LogClock(MIDNIGHT - 3 * HOUR)) as exchange:
        provider = await exchange.as_("p", "provider")
        cash = {"kind": "cash", "amount": 100_000}
        assert (await provider.post("/v1/accounts/p/deposits", json=cash)).status_code == 201
        schedule = {
            "resource_class": "H100-80G", "region": "GZ", "quantity": 2,
            "first_day": "2027-12-01", "from_hour": 0, "to_hour": 1,
            "recallable": True, "reserve_price": 1_250,
        }  # fmt: skip
        placed = await provider.post("/v1/accounts/p/capacity-deposits", json=schedule)
        assert placed.json()["asks"], placed.text
        buyer = await funded_buyer(exchange)
        wanted = need(hours=1, deadline=DAY_START_MS + HOUR_MS, regions=[{"region": "GZ"}])
        unasked = await buyer.post("/v1/needs", json={**wanted, "client_need_id": "n1"})
        assert unasked.status_code == 422, unasked.text
        plan = unasked.json()["plan"]
        assert plan["chosen"] is None
        assert all(a["resource_class"] == "H100-80G" for a in plan["alternatives"]), plan
        assert ("H100-80G-INT.GZ", "interruptible_not_named") in [
            (e["family"], e["reason"]) for e in plan["excluded"]
        ]
        await settle(exchange.runtime)
        assert (await buyer.get("/v1/accounts/b")).json()["positions"] == []

        named = {**wanted, "client_need_id": "n2", "classes": ["H100-80G-INT"]}
        answer = await buyer.post("/v1/needs", json=named)
        assert answer.status_code == 201, answer.text
        filled = answer.json()
        assert filled["status"] == "filled"
        chosen = filled["plan"]["chosen"]
        assert chosen["symbols"] == [recallable]
        assert chosen["detail"].startswith("hourly block of interruptible capacity"), chosen
        assert "interruptible" in filled["plan"]["explanation"]
        assert (filled["order"]["paid"], filled["order"]["recalled"]) == (2 * 1_250, [])
        await settle(exchange.runtime)
        recall = {"symbol": recallable, "quantity": 1, "reason": "maintenance", "recall_id": "r1"}
        recalled = await provider.post("/v1/deliveries/recalls", json=recall)
        assert recalled.json()["status"] == "done", recalled.text
        await settle(exchange.runtime)
        shown = (await buyer.get(f"/v1/needs/{filled['need_id']}")).json()
        assert (shown["status"], shown["order"]["paid"]) == ("filled", 2 * 1_250)
        # Refunded the unit's 12.50 元 and compensated 10% of it from the provider's bond.
        assert shown["order"]["recalled"] == [
            {"symbol": recallable, "recall_id": "r1", "quantity": 1, "refund": 1_250,
             "penalty": 125, "reason": "recalled: maintenance"}
        ]  # fmt: skip
