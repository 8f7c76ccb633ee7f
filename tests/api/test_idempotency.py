"""Idempotent retries: a named request placed once, whatever happens to the answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from api import queries
from api.idempotency import derived_id, idempotent_requests
from cx.settings import Settings
from exchange.domain.messages import PlaceBlockOrder, PlaceOrder, exchange_order_id
from settlement import projections as tables
from settlement.schema import events
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
GZ0_GATE = "2027-11-30T23:00:00+08:00"
"""When GZ0's trading closes, an hour before its delivery (China Standard Time)."""
ORDER = {"symbol": GZ0, "side": "buy", "price": 1800, "quantity": 2}


async def _funded(exchange: RunningExchange, account: str = "buyer", cash: int = 100_000) -> Any:
    client = await exchange.as_(account)
    deposit = {"kind": "cash", "amount": cash}
    assert (await client.post(f"/v1/accounts/{account}/deposits", json=deposit)).status_code == 201
    return client


async def _count(exchange: RunningExchange, event_type: str) -> int:
    query = select(func.count()).select_from(events).where(events.c.type == event_type)
    async with exchange.runtime.store.engine.connect() as connection:
        count: int = (await connection.execute(query)).scalar_one()
        return count


async def _orders(exchange: RunningExchange) -> list[Any]:
    async with exchange.runtime.store.engine.connect() as connection:
        return list((await connection.execute(select(tables.orders))).all())


async def test_a_retried_order_returns_the_first_answer_and_places_once(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        client = await _funded(exchange)
        named = {**ORDER, "client_order_id": "my-1"}
        first = await client.post("/v1/orders", json=named)
        again = await client.post("/v1/orders", json=named)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        assert first.json()["order_id"] == derived_id("order", "buyer", "my-1")
        assert "idempotent-replayed" not in first.headers
        assert again.headers["idempotent-replayed"] == "true"

        header = {"Idempotency-Key": "retry-me"}
        by_key = [await client.post("/v1/orders", json=ORDER, headers=header) for _ in range(3)]
        assert len({r.json()["order_id"] for r in by_key}) == 1
        assert [r.status_code for r in by_key] == [201, 201, 201]

        await settle(exchange.runtime)
        assert len(await _orders(exchange)) == 2
        assert await _count(exchange, "OrderAccepted") == 2
        assert await _count(exchange, "OrderRejected") == 0


async def test_concurrent_retries_place_one_order(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        client = await _funded(exchange)
        named = {**ORDER, "client_order_id": "burst"}
        answers = await asyncio.gather(*(client.post("/v1/orders", json=named) for _ in range(8)))
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["order_id"] for a in answers}) == 1
        assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 7
        await settle(exchange.runtime)
        assert len(await _orders(exchange)) == 1


async def test_a_name_reused_for_another_request_is_refused(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        client = await _funded(exchange)
        assert (
            await client.post("/v1/orders", json={**ORDER, "client_order_id": "x"})
        ).status_code == 201
        other = await client.post(
            "/v1/orders", json={**ORDER, "quantity": 3, "client_order_id": "x"}
        )
        assert other.status_code == 422
        assert other.json()["type"] == "/problems/idempotency-key-reused"
        # Names belong to an account: another account's "x" is its own order.
        someone = await _funded(exchange, "buyer-2")
        elsewhere = await someone.post("/v1/orders", json={**ORDER, "client_order_id": "x"})
        assert elsewhere.status_code == 201
        assert elsewhere.json()["order_id"] != derived_id("order", "buyer", "x")


async def test_a_reused_name_is_told_before_the_body_s_own_refusals(
    exchange_settings: Settings,
) -> None:
    # Found by the whole-system model: a changed retry whose body the API also refuses (a
    # market order good till a date) was answered for its body, not for the name it reused.
    async with running_exchange(exchange_settings) as exchange:
        client = await _funded(exchange)
        first = await client.post("/v1/orders", json={**ORDER, "client_order_id": "x"})
        assert first.status_code == 201, first.text
        market_gtd = {
            **ORDER, "order_type": "market", "time_in_force": "GTD", "expire_at": 1_900_000_000_000,
            "client_order_id": "x",
        }  # fmt: skip
        other = await client.post("/v1/orders", json=market_gtd)
        assert other.status_code == 422, other.text
        assert other.json()["type"] == "/problems/idempotency-key-reused"
        # A block shares its names with orders: one naming "x" over an hour not listed.
        block = {
            "symbols": ["H100-80G.GZ.20271201T00", "H100-80G.GZ.20271131T01"], "side": "buy",
            "price": 1_800, "quantity": 1, "client_order_id": "x",
        }  # fmt: skip
        other = await client.post("/v1/block-orders", json=block)
        assert other.status_code == 422, other.text
        assert other.json()["type"] == "/problems/idempotency-key-reused"
        # A body refused for itself reserves nothing: the same name then places the order
        # it was meant to be.
        refused = await client.post("/v1/orders", json={**market_gtd, "client_order_id": "y"})
        assert refused.json()["type"] == "/problems/market_time_in_force", refused.text
        mended = await client.post("/v1/orders", json={**ORDER, "client_order_id": "y"})
        assert mended.status_code == 201, mended.text
        assert mended.json()["order_id"] == derived_id("order", "buyer", "y")
        await settle(exchange.runtime)
        assert await _count(exchange, "OrderAccepted") == 2


async def test_a_bank_request_reusing_its_name_is_told_so_before_its_body_s_refusal(
    exchange_settings: Settings,
) -> None:
    """Withdrawals, deposits, capacity schedules and metering reports: a changed retry whose
    body the API also refuses is answered for the name it reused, by its own id or its
    Idempotency-Key, as orders are; a body refused for itself reserves no name."""
    async with running_exchange(exchange_settings) as exchange:
        buyer = await _funded(exchange)
        provider = await exchange.as_("dc", "provider")
        schedule = {
            "resource_class": "H100-80G", "region": "GZ", "quantity": 1,
            "first_day": "2027-12-01", "from_hour": 0, "to_hour": 1,
        }  # fmt: skip
        metering = {"symbol": GZ0, "buyer_id": "buyer", "delivered": 1}
        # (client, path, the first body, a changed body the API refuses for itself, and the
        # problem it is refused with when it reuses no name)
        cases = [
            (buyer, "/v1/accounts/buyer/withdrawals", {"kind": "cash", "amount": 100},
             {"kind": "cash", "amount": 100, "symbol": GZ0}, "invalid-request"),
            (buyer, "/v1/accounts/buyer/withdrawals", {"kind": "cash", "amount": 100},
             {"kind": "capacity", "symbol": "H100-80G.GZ.20271131T01", "quantity": 1},
             "unknown_contract"),
            (provider, "/v1/accounts/dc/deposits", {"kind": "cash", "amount": 100},
             {"kind": "capacity", "symbol": "H100-80G.GZ.20271131T01", "quantity": 1},
             "unknown_contract"),
            (provider, "/v1/accounts/dc/capacity-deposits", schedule,
             {**schedule, "region": "XX"}, "unknown-region"),
            (provider, "/v1/accounts/dc/capacity-deposits", schedule,
             {**schedule, "reserve_price": 1_801}, "price_not_on_tick"),
            (provider, "/v1/deliveries/metering", metering,
             {**metering, "delivered": None, "tokens": 5}, "hour-metering-in-units"),
        ]  # fmt: skip
        own_ids = {
            "withdrawals": "withdrawal_id", "deposits": "deposit_id",
            "capacity-deposits": "deposit_id", "metering": "report_id",
        }  # fmt: skip
        for number, (client, path, body, refused, kind) in enumerate(cases):
            own_id = own_ids[path.rsplit("/", 1)[1]]
            by_own_id = f"n-{number}"
            by_key = {"Idempotency-Key": f"k-{number}"}
            for named, headers in (({own_id: by_own_id}, {}), ({}, by_key)):
                answer = await client.post(path, json={**body, **named}, headers=headers)
                assert answer.status_code in (201, 422), answer.text
                assert answer.json().get("type") != "/problems/idempotency-key-reused"
                again = await client.post(path, json={**refused, **named}, headers=headers)
                assert again.status_code == 422, (path, named, again.text)
                assert again.json()["type"] == "/problems/idempotency-key-reused", (
                    path, named, again.text,
                )  # fmt: skip
            # A body refused for itself reserves nothing: its name then does what it should.
            fresh = {own_id: f"fresh-{number}"}
            alone = await client.post(path, json={**refused, **fresh})
            assert alone.json()["type"] == f"/problems/{kind}", (path, alone.text)
            mended = await client.post(path, json={**body, **fresh})
            assert mended.status_code in (201, 422), mended.text
            assert mended.json().get("type") != "/problems/idempotency-key-reused", mended.text
        await settle(exchange.runtime)
        # What the first requests did, once: three withdrawals of 100 (the two names of each
        # withdrawal case and its mended one) of each case, and the deposits of 100 likewise.
        cash = (await buyer.get("/v1/accounts/buyer")).json()["cash"]
        assert cash == {"available": 100_000 - 6 * 100, "held": 0}


async def test_a_retried_rejection_is_the_same_rejection(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        client = await _funded(exchange, cash=1000)
        named = {**ORDER, "client_order_id": "too-big"}
        first = await client.post("/v1/orders", json=named)
        assert first.status_code == 422
        assert first.json()["type"] == "/problems/insufficient_funds"
        # Even after the account could afford it, the retry answers what the first got.
        await client.post("/v1/accounts/buyer/deposits", json={"kind": "cash", "amount": 99_000})
        again = await client.post("/v1/orders", json=named)
        assert again.status_code == 422
        assert again.json() == first.json()
        assert again.headers["content-type"] == "application/problem+json"
        await settle(exchange.runtime)
        assert await _count(exchange, "OrderRejected") == 1
        assert await _count(exchange, "OrderAccepted") == 0


async def test_a_retry_after_a_restart_that_lost_the_answer_places_nothing_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path)
    async with running_exchange(settings) as exchange:
        client = await _funded(exchange)
        first = await client.post("/v1/orders", json={**ORDER, "client_order_id": "durable"})
        assert first.status_code == 201
        # An earlier API process sent this one and stopped before it could answer or keep it.
        lost = PlaceOrder(order_id="lost", client_order_id="lost", account_id="buyer", **ORDER)
        await exchange.runtime.submit(lost)
        await settle(exchange.runtime)

    async with running_exchange(settings) as exchange:
        async with exchange.runtime.store.engine.begin() as connection:
            await connection.execute(delete(idempotent_requests))
        client = await exchange.as_("buyer")
        again = await client.post("/v1/orders", json={**ORDER, "client_order_id": "durable"})
        assert again.status_code == 201
        assert again.json()["order_id"] == first.json()["order_id"]

        # Not settled yet as far as the API can see: it sends again, the risk stage refuses
        # the duplicate id, and the API answers with the order it then finds settled.
        real_order = queries.order
        misses = {"left": 1}

        async def not_yet(engine: Any, order_id: str) -> Any:
            if misses["left"]:
                misses["left"] -= 1
                return None
            return await real_order(engine, order_id)

        monkeypatch.setattr(queries, "order", not_yet)
        retried = await client.post("/v1/orders", json={**ORDER, "client_order_id": "lost"})
        assert retried.status_code == 201, retried.text
        assert retried.json()["order_id"] == exchange_order_id("buyer", "lost")
        await settle(exchange.runtime)
        assert await _count(exchange, "OrderAccepted") == 2
        rejected = await _count(exchange, "OrderRejected")
        assert rejected == 1, "the resend was refused as a duplicate, placing nothing"


BLOCK = {
    "symbols": [GZ0, "H100-80G.GZ.20271201T01"],
    "side": "buy",
    "price": 1800,
    "quantity": 2,
}


async def test_a_named_block_keeps_its_client_order_id_and_retries_like_an_order(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        client = await _funded(exchange)
        named = {**BLOCK, "client_order_id": "night-run"}
        first = await client.post("/v1/block-orders", json=named)
        again = await client.post("/v1/block-orders", json=named)
        assert first.status_code == again.status_code == 201, first.text
        order_id = exchange_order_id("buyer", "night-run")
        assert first.json() == {
            "order_id": order_id,
            "client_order_id": "night-run",
            "status": "accepted",
            "symbols": BLOCK["symbols"],
        }
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        await settle(exchange.runtime)
        stored = (await client.get(f"/v1/orders/{order_id}")).json()
        assert stored["client_order_id"] == "night-run", stored

        # An earlier API process sent this one and stopped before it could answer or keep it:
        # the resend is refused as a duplicate, and the API answers with the block as settled.
        lost = PlaceBlockOrder(
            order_id="lost-block", client_order_id="lost-block", account_id="buyer", **BLOCK
        )
        await exchange.runtime.submit(lost)
        await settle(exchange.runtime)
        retried = await client.post(
            "/v1/block-orders", json={**BLOCK, "client_order_id": "lost-block"}
        )
        assert retried.status_code == 201, retried.text
        assert retried.json() == {
            "order_id": exchange_order_id("buyer", "lost-block"),
            "client_order_id": "lost-block",
            "status": "accepted",
            "symbols": BLOCK["symbols"],
        }
        assert retried.headers["idempotent-replayed"] == "true"
        await settle(exchange.runtime)
        assert await _count(exchange, "BlockAccepted") == 2
        assert await _count(exchange, "OrderRejected") == 1, "the resend placed nothing"


async def test_a_retried_deposit_credits_once(exchange_settings: Settings) -> None:
    async with running_exchange(exchange_settings) as exchange:
        client = await exchange.as_("buyer")
        headers = {"Idempotency-Key": "wire-2026-11-26-001"}
        deposit = {"kind": "cash", "amount": 5000}
        answers = [
            await client.post("/v1/accounts/buyer/deposits", json=deposit, headers=headers)
            for _ in range(3)
        ]
        # A first answer may be `pending` (202) if the exchange is slow to decide (a Kafka
        # rebalance); it is not kept, so the retries learn the outcome.
        assert {a.status_code for a in answers[:-1]} <= {201, 202}
        assert answers[-1].status_code == 201
        assert len({a.json()["deposit_id"] for a in answers}) == 1
        await settle(exchange.runtime)
        account = (await client.get("/v1/accounts/buyer")).json()
        assert account["cash"] == {"available": 5000, "held": 0}
        assert await _count(exchange, "FundsDeposited") == 1


async def test_answers_kept_before_names_were_reserved_still_answer_retries(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        client = await _funded(exchange)
        named = {**ORDER, "client_order_id": "kept-long-ago"}
        # An earlier version of the API kept its answer under "coid:NAME" and sent the order
        # as the id the exchange now derives from the name.
        first = await client.post("/v1/orders", json=named)
        assert first.status_code == 201
        async with exchange.runtime.store.engine.begin() as connection:
            await connection.execute(
                update(idempotent_requests)
                .where(idempotent_requests.c.request_key == "order:kept-long-ago")
                .values(request_key="coid:kept-long-ago")
            )

        again = await client.post("/v1/orders", json=named)
        other = await client.post("/v1/orders", json={**named, "quantity": 1})

        assert again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert other.status_code == 422
        assert other.json()["type"] == "/problems/idempotency-key-reused"
        await settle(exchange.runtime)
        assert await _count(exchange, "OrderAccepted") == 1


async def test_a_withdrawal_retried_under_a_key_withdraws_once(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        first = await _funded(exchange, "buyer", cash=100_000)
        second = await _funded(exchange, "buyer-2", cash=100_000)
        headers = {"Idempotency-Key": "wk"}
        cash = {"kind": "cash", "amount": 500}
        sent = await first.post("/v1/accounts/buyer/withdrawals", json=cash, headers=headers)
        again = await first.post("/v1/accounts/buyer/withdrawals", json=cash, headers=headers)
        changed = await first.post(
            "/v1/accounts/buyer/withdrawals", json={**cash, "amount": 600}, headers=headers
        )
        # The same key in another account names another withdrawal.
        other = await second.post("/v1/accounts/buyer-2/withdrawals", json=cash, headers=headers)

        assert (sent.status_code, sent.json()["status"]) == (201, "done"), sent.text
        assert "idempotent-replayed" not in sent.headers
        assert again.status_code == 201
        assert again.json()["id"] == sent.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert changed.status_code == 422
        assert changed.json()["type"] == "/problems/idempotency-key-reused"
        assert (other.status_code, other.json()["status"]) == (201, "done"), other.text
        assert "idempotent-replayed" not in other.headers
        await settle(exchange.runtime)
        for account in ("buyer", "buyer-2"):
            found = (await exchange.client.get(f"/v1/accounts/{account}")).json()
            assert found["cash"] == {"available": 99_500, "held": 0}
        assert await _count(exchange, "FundsWithdrawn") == 2


async def test_a_capacity_schedule_retried_under_a_key_deposits_once(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        first = await exchange.as_("gz-dc-1", "provider")
        second = await exchange.as_("gz-dc-2", "provider")
        headers = {"Idempotency-Key": "sk"}
        schedule = {
            "resource_class": "H100-80G",
            "region": "GZ",
            "quantity": 1,
            "first_day": "2027-12-01",
            "from_hour": 0,
            "to_hour": 1,
        }
        path = "/v1/accounts/{}/capacity-deposits"
        sent = await first.post(path.format("gz-dc-1"), json=schedule, headers=headers)
        again = await first.post(path.format("gz-dc-1"), json=schedule, headers=headers)
        changed = await first.post(
            path.format("gz-dc-1"), json={**schedule, "quantity": 2}, headers=headers
        )
        other = await second.post(path.format("gz-dc-2"), json=schedule, headers=headers)

        assert (sent.status_code, sent.json()["status"]) == (201, "done"), sent.text
        assert sent.json()["contracts"] == [GZ0]
        assert "idempotent-replayed" not in sent.headers
        assert again.status_code == 201
        assert again.json() == sent.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert changed.status_code == 422
        assert changed.json()["type"] == "/problems/idempotency-key-reused"
        assert (other.status_code, other.json()["status"]) == (201, "done"), other.text
        assert "idempotent-replayed" not in other.headers
        await settle(exchange.runtime)
        for account in ("gz-dc-1", "gz-dc-2"):
            found = (await exchange.client.get(f"/v1/accounts/{account}")).json()
            assert found["capacity"] == [
                {"symbol": GZ0, "available": 1, "held": 0, "state": "open", "gate": GZ0_GATE}
            ]
        assert await _count(exchange, "CapacityDeposited") == 2


TAKE_THE_KEY = {
    "/v1/orders",
    "/v1/block-orders",
    "/v1/exclusive-groups",
    "/v1/accounts/{account_id}/deposits",
    "/v1/accounts/{account_id}/capacity-deposits",
    "/v1/accounts/{account_id}/withdrawals",
    "/v1/needs",
    "/v1/deliveries/metering",
    "/v1/deliveries/disputes",
    "/v1/deliveries/recalls",
    "/v1/programmes/{programme_id}/applications",
    "/v1/programmes/{programme_id}/grants",
    "/v1/programmes/{programme_id}/applications/{application_id}/info-requests",
    "/v1/programmes/{programme_id}/applications/{application_id}/supplements",
    "/v1/programmes/{programme_id}/applications/{application_id}/rejection",
}
"""Every POST that creates something an account may send twice by a retry."""
NEED_NO_KEY = {
    # Named by a required id the exchange refuses twice, or setting a state that a retry
    # sets again to the same (no second anything).
    "/v1/programmes",
    "/v1/programmes/{programme_id}/discount-pools",
    "/v1/admin/concessions",
    "/v1/admin/voucher-policy",
    "/v1/accounts/{account_id}/enterprise",
    "/v1/admin/deliveries/resolve",
    "/v1/admin/set-aside",
    "/v1/admin/contracts/{symbol}/{action}",
    "/v1/admin/market/{action}",
    # Answers without keeping anything.
    "/v1/needs/plan",
    # An operator's API key: the secret is shown once, so a retry could not be answered
    # with it again.
    "/v1/admin/keys",
}


async def test_every_post_that_creates_something_takes_an_idempotency_key(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        document = (await exchange.client.get("/openapi.json")).json()
    posts = {path: item["post"] for path, item in document["paths"].items() if "post" in item}
    taking = {
        path
        for path, operation in posts.items()
        if any(
            (parameter["in"], parameter["name"]) == ("header", "Idempotency-Key")
            for parameter in operation.get("parameters", [])
        )
    }
    assert taking == TAKE_THE_KEY
    assert set(posts) == TAKE_THE_KEY | NEED_NO_KEY, "a new POST: does a retry act twice?"
