"""Ids a participant chooses belong to its account: the same name in two accounts names two
things, and only a true retry of one account's request is answered "already done".

Accounts are picked so that some share a commands partition (one risk partition sees both)
and some do not (no risk partition sees both): both cases broke in different ways.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

import api.models
import api.services
from cx.runtime import ExchangeRuntime
from cx.settings import Settings
from exchange.domain.messages import CancelOrder, PlaceOrder, exchange_order_id
from settlement import projections as tables
from settlement.audit import audit, audit_ledger
from settlement.schema import events
from tests.e2e.harness import RunningExchange, eventually, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
GZ0_GATE = "2027-11-30T23:00:00+08:00"
"""When GZ0's trading closes, an hour before its delivery (China Standard Time)."""
GZ1 = "H100-80G.GZ.20271201T01"
NIGHT = {
    "resource_class": "H100-80G",
    "region": "GZ",
    "quantity": 2,
    "first_day": "2027-12-01",
    "from_hour": 0,
    "to_hour": 1,
    "deposit_id": "night-1",
}


def _three_accounts(runtime: ExchangeRuntime, prefix: str) -> tuple[str, str, str]:
    """Accounts a, b, c: a and c share a commands partition, b is on another one."""
    by_partition: dict[int, list[str]] = {}
    for n in range(100):
        name = f"{prefix}-{n}"
        by_partition.setdefault(runtime.topics.command_partition(name), []).append(name)
    shared = next(names for names in by_partition.values() if len(names) >= 2)
    other = next(
        names[0]
        for partition, names in by_partition.items()
        if partition != runtime.topics.command_partition(shared[0])
    )
    return shared[0], other, shared[1]


async def _count(exchange: RunningExchange, event_type: str) -> int:
    query = select(func.count()).select_from(events).where(events.c.type == event_type)
    async with exchange.runtime.store.engine.connect() as connection:
        count: int = (await connection.execute(query)).scalar_one()
        return count


async def _order_row(exchange: RunningExchange, order_id: str) -> Any:
    query = select(tables.orders).where(tables.orders.c.order_id == order_id)
    async with exchange.runtime.store.engine.connect() as connection:
        return (await connection.execute(query)).one()


async def _funded(exchange: RunningExchange, account: str, role: str = "buyer") -> Any:
    client = await exchange.as_(account, role)
    deposit = {"kind": "cash", "amount": 1_000_000}
    answer = await client.post(f"/v1/accounts/{account}/deposits", json=deposit)
    assert answer.status_code == 201, answer.text
    return client


async def _assert_audits_clean(exchange: RunningExchange) -> None:
    store, catalogue = exchange.runtime.store, exchange.runtime.catalogue
    assert (
        await audit(store, catalogue, exchange.runtime.topics.market_partitions)
    ).discrepancies == []
    assert (
        await audit_ledger(store, catalogue, exchange.runtime.topics.market_partitions)
    ).discrepancies == []


async def test_three_providers_each_deposit_and_sell_under_the_same_deposit_id(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        providers = _three_accounts(exchange.runtime, "gz-dc")
        asks: dict[str, list[str]] = {}
        for n, provider in enumerate(providers):
            client = await _funded(exchange, provider, "provider")
            schedule = {**NIGHT, "reserve_price": 1_800 + 100 * n}
            answer = await client.post(f"/v1/accounts/{provider}/capacity-deposits", json=schedule)
            assert answer.status_code == 201, answer.text
            assert answer.json()["contracts"] == [GZ0]
            assert answer.json()["status"] == "done"
            asks[provider] = answer.json()["asks"]
        assert len({ask for placed in asks.values() for ask in placed}) == 3
        await settle(exchange.runtime)
        assert await _count(exchange, "CapacityDeposited") == 3
        assert await _count(exchange, "DepositRejected") == 0
        for provider in providers:
            (ask,) = asks[provider]
            row = await _order_row(exchange, ask)
            assert (row.account_id, row.status, row.quantity) == (provider, "open", 2)

        buyer = await _funded(exchange, "buyer")
        bid = {"symbol": GZ0, "side": "buy", "price": 2_000, "quantity": 6}
        assert (await buyer.post("/v1/orders", json=bid)).status_code == 201
        await settle(exchange.runtime)
        for provider in providers:
            row = await _order_row(exchange, asks[provider][0])
            assert (row.account_id, row.status, row.filled) == (provider, "filled", 2)
            account = (await exchange.client.get(f"/v1/accounts/{provider}")).json()
            assert account["capacity"] == [
                {"symbol": GZ0, "available": 0, "held": 0, "state": "open", "gate": GZ0_GATE}
            ]
        await _assert_audits_clean(exchange)

        # A true retry is answered with the first answer; the same name for another
        # schedule is refused, and nothing is deposited again.
        first = providers[0]
        client = await exchange.as_(first, "provider")
        path = f"/v1/accounts/{first}/capacity-deposits"
        again = await client.post(path, json={**NIGHT, "reserve_price": 1_800})
        assert again.status_code == 201
        assert again.json()["asks"] == asks[first]
        assert again.headers["idempotent-replayed"] == "true"
        other = await client.post(path, json={**NIGHT, "reserve_price": 1_700})
        assert other.status_code == 422
        assert other.json()["type"] == "/problems/idempotency-key-reused"
        await settle(exchange.runtime)
        assert await _count(exchange, "CapacityDeposited") == 3


async def test_cash_deposit_ids_belong_to_each_account(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        accounts = _three_accounts(exchange.runtime, "buyer")
        for n, account in enumerate(accounts):
            client = await exchange.as_(account)
            deposit = {"kind": "cash", "amount": 1_000 * (n + 1), "deposit_id": "wire-1"}
            answer = await client.post(f"/v1/accounts/{account}/deposits", json=deposit)
            assert answer.status_code == 201, answer.text
            assert answer.json() == {"deposit_id": "wire-1", "status": "deposited"}
        client = await exchange.as_(accounts[0])
        path = f"/v1/accounts/{accounts[0]}/deposits"
        retry = await client.post(
            path, json={"kind": "cash", "amount": 1_000, "deposit_id": "wire-1"}
        )
        assert retry.status_code == 201
        assert retry.headers["idempotent-replayed"] == "true"
        reused = await client.post(
            path, json={"kind": "cash", "amount": 5_000, "deposit_id": "wire-1"}
        )
        assert reused.status_code == 422
        assert reused.json()["type"] == "/problems/idempotency-key-reused"
        await settle(exchange.runtime)
        for n, account in enumerate(accounts):
            cash = (await exchange.client.get(f"/v1/accounts/{account}")).json()["cash"]
            assert cash == {"available": 1_000 * (n + 1), "held": 0}
        assert await _count(exchange, "FundsDeposited") == 3
        assert await _count(exchange, "DepositRejected") == 0
        await _assert_audits_clean(exchange)


async def test_one_client_order_id_in_two_accounts_names_two_orders(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        accounts = _three_accounts(exchange.runtime, "trader")
        placed = {}
        for n, account in enumerate(accounts):
            client = await _funded(exchange, account)
            order = {
                "symbol": GZ0,
                "side": "buy",
                "price": 1_700 + 10 * n,
                "quantity": 1 + n,
                "client_order_id": "mine",
            }
            answer = await client.post("/v1/orders", json=order)
            assert answer.status_code == 201, answer.text
            assert "idempotent-replayed" not in answer.headers
            placed[account] = answer.json()["order_id"]
        assert len(set(placed.values())) == 3
        first, _, last = accounts
        client = await exchange.as_(first)
        cancelled = await client.delete(f"/v1/orders/{placed[first]}")
        assert cancelled.json()["status"] == "cancelled"
        await settle(exchange.runtime)
        for n, account in enumerate(accounts):
            row = await _order_row(exchange, placed[account])
            assert (row.account_id, row.client_order_id, row.quantity) == (account, "mine", 1 + n)
            assert row.status == ("cancelled" if account == first else "open")
        # Another account cannot reach the order through its id.
        foreign = await client.delete(f"/v1/orders/{placed[last]}")
        assert foreign.status_code == 404
        assert (await _order_row(exchange, placed[last])).status == "open"
        await _assert_audits_clean(exchange)


async def test_a_raw_command_reusing_another_accounts_order_id_places_its_own_order(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        owner, intruder, neighbour = _three_accounts(exchange.runtime, "acct")
        client = await _funded(exchange, owner)
        first = {
            "symbol": GZ0,
            "side": "buy",
            "price": 1_700,
            "quantity": 2,
            "client_order_id": "x",
        }
        answer = await client.post("/v1/orders", json=first)
        assert answer.status_code == 201, answer.text
        taken = answer.json()["order_id"]
        await settle(exchange.runtime)

        # Accounts in another partition and in the owner's own send the owner's order id
        # straight to the commands topic: each places an order of its own.
        for account in (intruder, neighbour):
            await _funded(exchange, account)
            await exchange.runtime.submit(
                PlaceOrder(
                    order_id=taken,
                    account_id=account,
                    symbol=GZ0,
                    side="buy",
                    price=1_750,
                    quantity=1,
                )
            )
            # ... and a cancel naming the owner's order leaves it open.
            await exchange.runtime.submit(CancelOrder(order_id=taken, account_id=account))
        await settle(exchange.runtime)
        row = await _order_row(exchange, taken)
        assert (row.account_id, row.status, row.price, row.quantity) == (owner, "open", 1_700, 2)
        for account in (intruder, neighbour):
            own = await _order_row(exchange, exchange_order_id(account, taken))
            assert (own.account_id, own.status, own.price) == (account, "cancelled", 1_750)

        provider = await _funded(exchange, "seller", "provider")
        capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 2}
        assert (
            await provider.post("/v1/accounts/seller/deposits", json=capacity)
        ).status_code == 201
        ask = {"symbol": GZ0, "side": "sell", "price": 1_700, "quantity": 2}
        assert (await provider.post("/v1/orders", json=ask)).status_code == 201
        await settle(exchange.runtime)
        row = await _order_row(exchange, taken)
        assert (row.account_id, row.status, row.filled) == (owner, "filled", 2)
        await _assert_audits_clean(exchange)


async def test_stalls_withdrawals_blocks_and_needs_take_the_same_ids_in_two_accounts(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        first, second, neighbour = _three_accounts(exchange.runtime, "p")
        stall = {"resource_class": "H100-80G", "region": "GZ", "hours": [0, 1, 2]}
        for account in (first, neighbour):
            client = await _funded(exchange, account, "provider")
            answer = await client.put("/v1/stalls/gpu-1", json=stall)
            assert answer.status_code == 201, answer.text
            assert answer.json()["account_id"] == account
        mine = await (await exchange.as_(first)).put(
            "/v1/stalls/gpu-1", json={**stall, "hours": [3]}
        )
        assert mine.status_code == 200
        listed = (await exchange.anonymous.get("/v1/stalls")).json()
        assert sorted((s["account_id"], s["stall_id"], s["hours"]) for s in listed) == sorted(
            [(first, "gpu-1", [3]), (neighbour, "gpu-1", [0, 1, 2])]
        )
        taken_down = await (await exchange.as_(neighbour)).delete("/v1/stalls/gpu-1")
        assert taken_down.status_code == 204
        listed = (await exchange.anonymous.get("/v1/stalls")).json()
        assert [(s["account_id"], s["stall_id"]) for s in listed] == [(first, "gpu-1")]

        for n, account in enumerate((first, neighbour)):
            client = await exchange.as_(account)
            withdrawal = {"kind": "cash", "amount": 100 * (n + 1), "withdrawal_id": "w-1"}
            path = f"/v1/accounts/{account}/withdrawals"
            answer = await client.post(path, json=withdrawal)
            assert answer.status_code == 201, answer.text
            assert answer.json()["status"] == "done"
            again = await client.post(path, json=withdrawal)
            assert again.status_code == 201
            assert again.headers["idempotent-replayed"] == "true"
            reused = await client.post(path, json={**withdrawal, "amount": 1})
            assert reused.status_code == 422
            assert reused.json()["type"] == "/problems/idempotency-key-reused"
        await settle(exchange.runtime)
        for n, account in enumerate((first, neighbour)):
            cash = (await exchange.client.get(f"/v1/accounts/{account}")).json()["cash"]
            assert cash["available"] == 1_000_000 - 100 * (n + 1)
        assert await _count(exchange, "FundsWithdrawn") == 2

        blocks = {}
        for account in (second, neighbour):
            buyer = await _funded(exchange, f"{account}-buyer")
            block = {
                "symbols": [GZ0, GZ1],
                "side": "buy",
                "price": 1_000,
                "quantity": 1,
                "client_order_id": "blk-1",
            }
            answer = await buyer.post("/v1/block-orders", json=block)
            assert answer.status_code == 201, answer.text
            again = await buyer.post("/v1/block-orders", json=block)
            assert again.json() == answer.json()
            assert again.headers["idempotent-replayed"] == "true"
            changed = await buyer.post("/v1/block-orders", json={**block, "price": 1_100})
            assert changed.json()["type"] == "/problems/idempotency-key-reused"
            blocks[account] = answer.json()["order_id"]
        assert len(set(blocks.values())) == 2
        await settle(exchange.runtime)
        assert await _count(exchange, "BlockAccepted") == 2

        needs = set()
        for account in (second, neighbour):
            buyer = await exchange.as_(f"{account}-buyer")
            need = {
                "client_need_id": "run-1",
                "unit": "cards",
                "quantity": 1,
                "hours": 1,
                "earliest_start": api.models.DAY_START_MS,
                "deadline": api.models.DAY_START_MS + 3_600_000,
                "regions": [{"region": "GZ"}],
                "max_total": 10_000,
                "stand": True,
            }
            answer = await buyer.post("/v1/needs", json=need)
            assert answer.status_code == 201, answer.text
            assert answer.json()["client_need_id"] == "run-1"
            needs.add(answer.json()["need_id"])
        assert len(needs) == 2
        await _assert_audits_clean(exchange)


@asynccontextmanager
async def _risk_stalled(runtime: ExchangeRuntime) -> AsyncIterator[None]:
    """Hold the risk stage between two batches: commands wait in the log, undecided."""
    async with runtime.running["risk"]._busy:  # type: ignore[attr-defined]
        yield


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(path, json=body)


async def test_a_changed_body_after_a_pending_answer_is_refused_even_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.services, "OUTCOME_TIMEOUT_S", 0.3)
    settings = settings_for(tmp_path)
    order = {"symbol": GZ0, "side": "buy", "price": 1_800, "quantity": 2, "client_order_id": "x"}
    changed_order = {**order, "price": 1_900, "quantity": 3}
    cases = [
        ("buyer", "/v1/orders", order, changed_order),
        (
            "buyer",
            "/v1/accounts/buyer/deposits",
            {"kind": "cash", "amount": 700, "deposit_id": "wire-7"},
            {"kind": "cash", "amount": 900, "deposit_id": "wire-7"},
        ),
        (
            "buyer",
            "/v1/accounts/buyer/withdrawals",
            {"kind": "cash", "amount": 100, "withdrawal_id": "w-7"},
            {"kind": "cash", "amount": 200, "withdrawal_id": "w-7"},
        ),
        (
            "gz-dc",
            "/v1/accounts/gz-dc/capacity-deposits",
            NIGHT,
            {**NIGHT, "quantity": 3},
        ),
    ]
    async with running_exchange(settings) as exchange:
        await _funded(exchange, "buyer")
        await _funded(exchange, "gz-dc", "provider")
        await settle(exchange.runtime)
        async with _risk_stalled(exchange.runtime):
            for account, path, body, changed in cases:
                client = await exchange.as_(account, _role(account))
                pending = await _post(client, path, body)
                assert pending.status_code in (201, 202), pending.text
                assert pending.json()["status"] == "pending", pending.text
                refused = await _post(client, path, changed)
                assert refused.status_code == 422, refused.text
                assert refused.json()["type"] == "/problems/idempotency-key-reused"
                # The first body is still its own request, still pending.
                again = await _post(client, path, body)
                assert again.json()["status"] == "pending", again.text

    # Another API process (here: the same exchange started again) knows the names too.
    async with running_exchange(settings) as exchange:
        await settle(exchange.runtime)
        for account, path, body, changed in cases:
            client = await exchange.as_(account, _role(account))
            refused = await _post(client, path, changed)
            assert refused.status_code == 422, refused.text
            assert refused.json()["type"] == "/problems/idempotency-key-reused"
            done = await _post(client, path, body)
            assert done.status_code == 201, done.text
            assert done.json()["status"] in ("accepted", "deposited", "done")
        await settle(exchange.runtime)
        placed = await eventually(
            lambda: _row_or_none(exchange, exchange_order_id("buyer", "x")), "the order"
        )
        assert (placed.price, placed.quantity, placed.status) == (1_800, 2, "open")
        assert await _count(exchange, "OrderAccepted") == 1
        cash = (await exchange.client.get("/v1/accounts/buyer")).json()["cash"]
        assert cash["available"] + cash["held"] == 1_000_000 + 700 - 100
        assert await _count(exchange, "CapacityDeposited") == 1
        await _assert_audits_clean(exchange)


async def test_a_schedule_not_decided_in_time_answers_202_and_presents_no_ask_as_standing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capacity schedule the risk stage has not decided within the wait answers 202 pending,
    as an order and a deposit do, and lists its asks as pending, not among those that stand;
    once decided, its retry answers 201 with them standing."""
    monkeypatch.setattr(api.services, "OUTCOME_TIMEOUT_S", 0.3)
    schedule = {**NIGHT, "to_hour": 2, "reserve_price": 1_800}
    asks = [exchange_order_id("gz-dc", f"night-1:{symbol}") for symbol in (GZ0, GZ1)]
    path = "/v1/accounts/gz-dc/capacity-deposits"
    async with running_exchange(settings_for(tmp_path)) as exchange:
        provider = await _funded(exchange, "gz-dc", "provider")
        await settle(exchange.runtime)
        async with _risk_stalled(exchange.runtime):
            pending = await provider.post(path, json=schedule)
            cash = await provider.post(
                "/v1/accounts/gz-dc/deposits",
                json={"kind": "cash", "amount": 700, "deposit_id": "wire-8"},
            )

        assert (cash.status_code, cash.json()["status"]) == (202, "pending"), cash.text
        assert pending.status_code == 202, pending.text
        assert pending.json() == {
            "deposit_id": "night-1",
            "contracts": [GZ0, GZ1],
            "asks": [],
            "refused_asks": [],
            "pending_asks": asks,
            "status": "pending",
        }
        await settle(exchange.runtime)
        done = await provider.post(path, json=schedule)
        assert done.status_code == 201, done.text
        assert done.json() == {
            "deposit_id": "night-1",
            "contracts": [GZ0, GZ1],
            "asks": asks,
            "refused_asks": [],
            "pending_asks": [],
            "status": "done",
        }
        for order_id in asks:
            row = (await provider.get(f"/v1/orders/{order_id}")).json()
            assert (row["status"], row["price"], row["quantity"]) == ("open", 1_800, 2)
        assert await _count(exchange, "OrderAccepted") == 2
        assert await _count(exchange, "CapacityDeposited") == 2


def _role(account: str) -> str:
    return "provider" if account == "gz-dc" else "buyer"


async def _row_or_none(exchange: RunningExchange, order_id: str) -> Any:
    query = select(tables.orders).where(tables.orders.c.order_id == order_id)
    async with exchange.runtime.store.engine.connect() as connection:
        return (await connection.execute(query)).first()


async def test_a_self_trade_group_names_only_its_accounts_orders(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        victim, intruder, _ = _three_accounts(exchange.runtime, "desk")
        provider = await _funded(exchange, victim, "provider")
        capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 4}
        path = f"/v1/accounts/{victim}/deposits"
        assert (await provider.post(path, json=capacity)).status_code == 201
        ask = {"symbol": GZ0, "side": "sell", "price": 1_800, "quantity": 4, "stp_group": "desk"}
        resting = (await provider.post("/v1/orders", json=ask)).json()["order_id"]
        buyer = await _funded(exchange, intruder)
        # Naming the victim's group, or the victim itself (its default group), cancels none of
        # its orders: the buys trade with it.
        for group in ("desk", victim):
            bid = {
                "symbol": GZ0,
                "side": "buy",
                "price": 1_800,
                "quantity": 1,
                "stp_group": group,
                "stp_mode": "cancel_resting",
            }
            assert (await buyer.post("/v1/orders", json=bid)).status_code == 201
        await settle(exchange.runtime)
        row = await _order_row(exchange, resting)
        assert (row.status, row.filled) == ("open", 2)
        fills = (await buyer.get("/v1/fills")).json()
        assert sum(f["quantity"] for f in fills) == 2
        await _assert_audits_clean(exchange)
