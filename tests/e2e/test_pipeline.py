"""The whole pipeline through the API: on the embedded default and on real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cx.settings import Settings
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import DepositFunds, PlaceOrder, exchange_order_id
from exchange.pipeline import RiskRunner
from settlement import projections as tables
from settlement.audit import audit
from settlement.schema import events
from settlement.service import SettlementRunner
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
GZ0_GATE = "2027-11-30T23:00:00+08:00"
"""When GZ0's trading closes, an hour before its delivery (China Standard Time)."""
GZ1 = "H100-80G.GZ.20271201T01"
YRD0 = "H100-80G.YRD.20271201T00"
CPU0 = "CPU.GZ.20271201T00"


async def _deposit_cash(exchange: RunningExchange, account: str, amount: int) -> None:
    client = await exchange.as_(account)
    response = await client.post(
        f"/v1/accounts/{account}/deposits", json={"kind": "cash", "amount": amount}
    )
    assert response.status_code == 201, response.text


async def _deposit_capacity(exchange: RunningExchange, account: str, symbol: str, qty: int) -> None:
    client = await exchange.as_(account, "provider")
    response = await client.post(
        f"/v1/accounts/{account}/deposits",
        json={"kind": "capacity", "symbol": symbol, "quantity": qty},
    )
    assert response.status_code == 201, response.text


async def _order(
    exchange: RunningExchange, account: str, symbol: str, side: str, price: int, qty: int
) -> Any:
    client = await exchange.as_(account)
    return await client.post(
        "/v1/orders",
        json={
            "account_id": account,
            "symbol": symbol,
            "side": side,
            "price": price,
            "quantity": qty,
        },
    )


async def test_a_crossing_order_trades_and_settles_to_the_fen(exchange_settings: Settings) -> None:
    async with running_exchange(exchange_settings) as exchange:
        await _deposit_cash(exchange, "buyer", 100_000)
        await _deposit_capacity(exchange, "seller", GZ0, 10)
        ask = await _order(exchange, "seller", GZ0, "sell", 1800, 6)
        assert ask.status_code == 201, ask.text
        bid = await _order(exchange, "buyer", GZ0, "buy", 1850, 4)
        assert bid.status_code == 201, bid.text
        await settle(exchange.runtime)

        trades = (await exchange.client.get(f"/v1/contracts/{GZ0}/trades")).json()
        assert [(t["price"], t["quantity"], t["aggressor"]) for t in trades] == [(1800, 4, "buy")]
        book = (await exchange.client.get(f"/v1/contracts/{GZ0}/book")).json()
        assert book["asks"] == [[1800, 2]]
        assert book["bids"] == []

        buyer = (await (await exchange.as_("buyer")).get("/v1/accounts/buyer")).json()
        # Paid 4 x 18.00 at the maker's price; the 0.50 per unit above it came back.
        assert buyer["cash"] == {"available": 100_000 - 7200, "held": 0}
        assert buyer["positions"] == [{"symbol": GZ0, "quantity": 4}]
        seller = (await (await exchange.as_("seller")).get("/v1/accounts/seller")).json()
        # The provider is paid at delivery; until then the 72.00 waits in escrow.
        assert seller["cash"] == {"available": 0, "held": 0}
        assert seller["capacity"] == [
            {"symbol": GZ0, "available": 4, "held": 2, "state": "open", "gate": GZ0_GATE}
        ]

        seller_client = await exchange.as_("seller")
        orders = (await seller_client.get("/v1/orders", params={"account_id": "seller"})).json()
        assert [(o["status"], o["filled"], o["quantity"]) for o in orders] == [("open", 4, 6)]
        cancel = await seller_client.delete(
            f"/v1/orders/{orders[0]['order_id']}", params={"account_id": "seller"}
        )
        assert cancel.json() == {
            "order_id": orders[0]["order_id"],
            "status": "cancelled",
            "remaining": 2,
        }
        await settle(exchange.runtime)
        seller = (await (await exchange.as_("seller")).get("/v1/accounts/seller")).json()
        assert seller["capacity"] == [
            {"symbol": GZ0, "available": 6, "held": 0, "state": "open", "gate": GZ0_GATE}
        ]


async def test_bad_orders_get_specific_errors_and_change_nothing(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        await _deposit_cash(exchange, "buyer", 10_000)
        await settle(exchange.runtime)
        before = await _event_count(exchange)

        # A body's contract the market does not list: 422 with the risk stage's own code.
        unknown = await _order(exchange, "buyer", "H100-80G.GZ.20991231T00", "buy", 1800, 1)
        assert unknown.status_code == 422
        assert unknown.headers["content-type"] == "application/problem+json"
        assert unknown.json()["type"] == "/problems/unknown_contract"
        assert unknown.json()["detail"] == "contract 'H100-80G.GZ.20991231T00' is not listed"
        buyer_client = await exchange.as_("buyer")
        for path, body in (
            ("/v1/block-orders", {"symbols": ["NOPE"], "side": "buy", "price": 1800,
                                  "quantity": 1}),
            ("/v1/accounts/buyer/withdrawals", {"kind": "capacity", "symbol": "NOPE",
                                                "quantity": 1}),
        ):  # fmt: skip
            refused = await buyer_client.post(path, json=body)
            assert (refused.status_code, refused.json()["type"]) == (
                422,
                "/problems/unknown_contract",
            ), (path, refused.text)
        await _refuse_conflicting_options(exchange)

        fractional = await _order(exchange, "buyer", GZ0, "buy", 1800.5, 1)  # type: ignore[arg-type]
        assert fractional.status_code == 422
        assert fractional.json()["detail"] == "price: Input should be a valid integer"

        off_tick = await _order(exchange, "buyer", GZ0, "buy", 1805, 1)
        assert off_tick.status_code == 422
        assert off_tick.json()["type"] == "/problems/price_not_on_tick"
        assert "not a multiple of the tick size 0.10 元" in off_tick.json()["detail"]

        negative = await _order(exchange, "buyer", GZ0, "buy", 1800, -3)
        assert negative.status_code == 422
        assert negative.json()["detail"] == "quantity: Input should be greater than 0"

        too_big = await _order(exchange, "buyer", GZ0, "buy", 1800, 6)
        assert too_big.status_code == 422
        assert too_big.json()["type"] == "/problems/insufficient_funds"
        assert too_big.json()["detail"] == (
            "order needs 108.00 元, account buyer has 100.00 元 available"
        )

        no_capacity = await _order(exchange, "buyer", GZ0, "sell", 1800, 1)
        assert no_capacity.json()["type"] == "/problems/insufficient_capacity"

        foreign = await buyer_client.delete("/v1/orders/nope", params={"account_id": "buyer"})
        assert foreign.status_code == 404
        assert foreign.json()["type"] == "/problems/unknown_order"

        await settle(exchange.runtime)
        account = (await buyer_client.get("/v1/accounts/buyer")).json()
        assert account["cash"] == {"available": 10_000, "held": 0}
        assert account["positions"] == []
        assert account["capacity"] == []
        # Rejections by the exchange are events (auditable); requests refused at the API are not.
        after = await _event_count(exchange)
        assert after - before == Counter({"OrderRejected": 2, "CancelRejected": 1}).total()
        book = (await exchange.client.get(f"/v1/contracts/{GZ0}/book")).json()
        assert book["bids"] == []
        assert book["asks"] == []

        # A GTD order with its expiry to come rests until then.
        expiring = {"time_in_force": "GTD", "expire_at": 4_102_444_800_000}
        order = {"symbol": GZ0, "side": "buy", "price": 1800, "quantity": 1, **expiring}
        placed = await buyer_client.post("/v1/orders", json=order, params={"answer": "result"})
        assert placed.status_code == 201, placed.text
        assert placed.json()["result"]["status"] == "open", placed.json()


CONFLICTING_OPTIONS: list[tuple[dict[str, Any], str, str, str]] = [
    ({"time_in_force": "GTD"}, "expiry_required", "expire_at", "须给出到期时间"),
    ({"expire_at": 4_102_444_800_000}, "expiry_needs_gtd", "expire_at", "this one is GTC"),
    (
        {"time_in_force": "DAY", "expire_at": 4_102_444_800_000},
        "expiry_needs_gtd",
        "expire_at",
        "this one is DAY",
    ),
    ({"time_in_force": "GTD", "expire_at": 1}, "invalid_expiry", "expire_at", "到期时间已过"),
    (
        {"order_type": "market", "time_in_force": "FOK"},
        "market_time_in_force",
        "time_in_force",
        "not FOK",
    ),
    ({"post_only": True, "time_in_force": "IOC"}, "post_only_conflict", "post_only", "IOC"),
    ({"post_only": True, "time_in_force": "FOK"}, "post_only_conflict", "post_only", "FOK"),
    ({"post_only": True, "min_quantity": 1}, "post_only_conflict", "post_only", "min_quantity"),
    (
        {"min_quantity": 3},
        "min_quantity_above_quantity",
        "min_quantity",
        "min_quantity 3 is more than the order's quantity 2",
    ),
]
"""Options that contradict each other (added to a buy of 2 at 1800), each with the problem
the API answers, the field it names and words of its detail."""


async def _refuse_conflicting_options(exchange: RunningExchange) -> None:
    """Each order whose options contradict each other is refused by name, before it is
    logged: matching would take its hold and then refuse it, or ignore its expiry."""
    buyer = await exchange.as_("buyer")
    for options, kind, field, says in CONFLICTING_OPTIONS:
        order = {"symbol": GZ0, "side": "buy", "price": 1800, "quantity": 2, **options}
        for answer in ("ack", "result"):
            refused = await buyer.post("/v1/orders", json=order, params={"answer": answer})
            assert refused.status_code == 422, (options, refused.text)
            problem = refused.json()
            assert (problem["type"], problem["field"]) == (f"/problems/{kind}", field), problem
            assert says in problem["detail"], problem


async def _event_count(exchange: RunningExchange) -> int:
    async with exchange.runtime.store.engine.connect() as connection:
        count: int = (
            await connection.execute(select(func.count()).select_from(events))
        ).scalar_one()
        return count


async def test_a_malformed_record_is_rejected_and_the_stage_keeps_running(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        runtime = exchange.runtime
        producer = await runtime.log.producer()
        try:
            partition = runtime.topics.command_partition("someone")
            sent = [
                await producer.send_and_wait(runtime.topics.commands, partition, value)
                for value in (
                    b"{not json",
                    b'{"type":"DepositFunds","deposit_id":"d1","account_id":"someone",'
                    b'"amount":1.5}',
                    b'{"type":"TradeExecuted"}',
                )
            ]
        finally:
            await producer.close()
        await _deposit_cash(exchange, "someone", 500)
        await settle(runtime)
        rejected = await _stored(exchange, "CommandRejected")
        messages = [r["message"] for r in rejected]
        assert len(messages) == 3
        assert messages[0].startswith("record: Invalid JSON")
        assert messages[1] == "DepositFunds.amount: Input should be a valid integer"
        assert messages[2].startswith("TradeExecuted.event_id: Field required")
        assert all(r["reason"] == "malformed" for r in rejected)
        # Each names the record it refused.
        assert [r["source"] for r in rejected] == [
            f"{record.topic}:{record.partition}:{record.offset}" for record in sent
        ]
        account = (await (await exchange.as_("someone")).get("/v1/accounts/someone")).json()
        assert account["cash"] == {"available": 500, "held": 0}


async def _stored(exchange: RunningExchange, event_type: str) -> list[dict[str, Any]]:
    query = select(events.c.data).where(events.c.type == event_type).order_by(events.c.position)
    async with exchange.runtime.store.engine.connect() as connection:
        return [row.data for row in await connection.execute(query)]


async def test_conflicting_options_produced_to_the_log_meet_matchings_refusals(
    exchange_settings: Settings,
) -> None:
    """A Kafka client bypasses the API's checks of options: risk holds the order as before
    and matching refuses it with its own reason, releasing the hold, as in the histories
    recorded before the API checked (risk refusing them would change those replays). An
    expiry on an order that is not GTD, which matching ignores rather than refuses, is the
    exception: see the next test."""
    async with running_exchange(exchange_settings) as exchange:
        runtime = exchange.runtime
        await _deposit_cash(exchange, "direct", 100_000)
        refused: dict[str, tuple[dict[str, Any], str]] = {
            "no-expiry": ({"time_in_force": "GTD"}, "invalid_expiry"),
            "post-only-ioc": ({"post_only": True, "time_in_force": "IOC"}, "invalid_order"),
            "min-above": ({"min_quantity": 3}, "invalid_order"),
        }
        for name, (options, _) in refused.items():
            order = PlaceOrder(
                order_id=name,
                account_id="direct",
                symbol=GZ0,
                side="buy",
                price=1800,
                quantity=2,
                **options,
            )
            await runtime.submit(order)
        await settle(runtime)
        cancelled = {e["order_id"]: e["reason"] for e in await _stored(exchange, "OrderCancelled")}
        assert cancelled == {
            exchange_order_id("direct", name): reason for name, (_, reason) in refused.items()
        }
        direct = await exchange.as_("direct")
        account = (await direct.get("/v1/accounts/direct")).json()
        assert account["cash"] == {"available": 100_000, "held": 0}


async def test_an_expiry_on_an_order_that_is_not_gtd_produced_to_the_log_is_refused(
    exchange_settings: Settings,
) -> None:
    """Matching ignores an `expire_at` on a GTC or DAY order, so one produced straight to the
    log (as a Kafka client would, bypassing the API's `expiry_needs_gtd`) rested past the time
    its sender chose: risk refuses it, holding nothing."""
    async with running_exchange(exchange_settings) as exchange:
        runtime = exchange.runtime
        await _deposit_cash(exchange, "direct", 100_000)
        order = (
            '{"type":"PlaceOrder","v":1,"order_id":"%s","account_id":"direct",'
            f'"symbol":"{GZ0}","side":"buy","price":1800,"quantity":2,"expire_at":4102444800000'
        )
        producer = await runtime.log.producer()
        try:
            partition = runtime.topics.command_partition("direct")
            for name, more in (("gtc-until", ""), ("day-until", ',"time_in_force":"DAY"')):
                record = (order % name + more + "}").encode()
                await producer.send_and_wait(runtime.topics.commands, partition, record)
        finally:
            await producer.close()
        await settle(runtime)
        rejected = {e["order_id"]: e for e in await _stored(exchange, "OrderRejected")}
        assert {order_id: e["reason"] for order_id, e in rejected.items()} == {
            exchange_order_id("direct", "gtc-until"): "expiry_needs_gtd",
            exchange_order_id("direct", "day-until"): "expiry_needs_gtd",
        }
        gtc = rejected[exchange_order_id("direct", "gtc-until")]["message"]
        assert gtc.startswith("只有限期订单 (GTD) 可设到期时间"), gtc
        assert "this one is GTC" in gtc, gtc
        assert await _stored(exchange, "OrderAccepted") == []
        direct = await exchange.as_("direct")
        account = (await direct.get("/v1/accounts/direct")).json()
        assert account["cash"] == {"available": 100_000, "held": 0}
        assert (await direct.get(f"/v1/contracts/{GZ0}/book")).json()["bids"] == []


PROVIDERS = ["provider-gz", "provider-yrd", "provider-nmg"]
BUYERS = ["sme-1", "sme-2", "opc-1", "lab-1"]
SYMBOLS = [GZ0, GZ1, YRD0, CPU0]
CASH = 5_000_000
CAPACITY = 400


async def test_many_participants_trade_and_every_fen_and_card_hour_is_conserved(
    exchange_settings: Settings,
) -> None:
    rng = random.Random(20261126)
    async with running_exchange(exchange_settings) as exchange:
        for buyer in BUYERS:
            await _deposit_cash(exchange, buyer, CASH)
        for provider in PROVIDERS:
            for symbol in SYMBOLS:
                await _deposit_capacity(exchange, provider, symbol, CAPACITY)

        placed: list[tuple[str, str]] = []

        async def participant(account: str, side: str, seed: int) -> None:
            own = random.Random(seed)
            for _ in range(30):
                if placed and own.random() < 0.2:
                    mine = [o for o, a in placed if a == account]
                    if mine:
                        order_id = own.choice(mine)
                        client = await exchange.as_(account)
                        response = await client.delete(
                            f"/v1/orders/{order_id}", params={"account_id": account}
                        )
                        assert response.status_code in {200, 404, 409}, response.text
                        continue
                symbol = own.choice(SYMBOLS)
                tick = 1 if symbol == CPU0 else 10
                base = 12 if symbol == CPU0 else 1800
                price = base + own.randint(-5, 5) * tick
                response = await _order(exchange, account, symbol, side, price, own.randint(1, 9))
                assert response.status_code in {201, 422}, response.text
                if response.status_code == 201:
                    placed.append((response.json()["order_id"], account))

        await asyncio.gather(
            *(participant(a, "sell", rng.randrange(10**9)) for a in PROVIDERS),
            *(participant(a, "buy", rng.randrange(10**9)) for a in BUYERS),
        )
        await settle(exchange.runtime)
        await _check_conservation(exchange, expected_orders=len(placed))
        _check_risk_agrees_with_the_ledger(exchange)


def _check_risk_agrees_with_the_ledger(exchange: RunningExchange) -> None:
    """The risk stage's live balances, holds and open orders equal the settled ledger's."""
    risk = exchange.runtime.running["risk"]
    settlement = exchange.runtime.running["settlement"]
    assert isinstance(risk, RiskRunner)
    assert isinstance(settlement, SettlementRunner)
    decided, settled = hashlib.sha256(), hashlib.sha256()
    accounts = risk.accounts()
    accounts.digest(decided)
    settlement.projection.accounts.digest(settled, participants_only=True)
    assert accounts.open_orders == settlement.projection.accounts.open_orders
    assert accounts.cash == settlement.projection.accounts.cash
    assert decided.hexdigest() == settled.hexdigest()


async def _check_conservation(exchange: RunningExchange, expected_orders: int) -> None:
    async with exchange.runtime.store.engine.connect() as connection:
        trade_rows = (await connection.execute(select(tables.trades))).all()
        trade_events = (
            await connection.execute(select(events.c.data).where(events.c.type == "TradeExecuted"))
        ).all()
        event_ids = (await connection.execute(select(events.c.event_id))).scalars().all()
        cash = (await connection.execute(select(tables.cash_balances))).all()
        capacity = (await connection.execute(select(tables.capacity_balances))).all()
        held_positions = (await connection.execute(select(tables.positions))).all()
        ledger = {
            r.account: r.balance for r in await connection.execute(select(tables.ledger_balances))
        }
        order_rows = (await connection.execute(select(tables.orders))).all()

    assert trade_rows, "the market should have traded"
    # Every trade exactly once: one row per trade event, no id twice, no event stored twice.
    assert len(trade_rows) == len(trade_events) == len({t.trade_id for t in trade_rows})
    assert len(event_ids) == len(set(event_ids))
    assert sum(1 for o in order_rows if o.status != "rejected") == expected_orders

    # Cash: nothing created or lost; what buyers paid waits in escrow for the providers.
    escrowed = sum(v for name, v in ledger.items() if name.startswith("escrow:"))
    assert sum(c.available + c.held for c in cash) + escrowed == CASH * len(BUYERS)
    turnover = sum(t.price * t.quantity for t in trade_rows)
    by_account = {c.account_id: c for c in cash}
    assert escrowed == turnover
    assert all(p not in by_account for p in PROVIDERS)
    assert sum(CASH - by_account[b].available - by_account[b].held for b in BUYERS) == turnover

    # Card-hours: what was sold was bought, per contract.
    for symbol in SYMBOLS:
        provided = sum(c.available + c.held for c in capacity if c.symbol == symbol)
        bought = sum(p.quantity for p in held_positions if p.symbol == symbol)
        assert provided + bought == CAPACITY * len(PROVIDERS), symbol
        sold = sum(t.quantity for t in trade_rows if t.symbol == symbol)
        assert bought == sold, symbol

    # No hold outlives its order: what is held is exactly what open orders still need.
    open_orders = [o for o in order_rows if o.status == "open"]
    for account in BUYERS:
        needed = sum(
            o.price * (o.quantity - o.filled)
            for o in open_orders
            if o.account_id == account and o.side == "buy"
        )
        assert by_account[account].held == needed, account
    for row in capacity:
        needed = sum(
            o.quantity - o.filled
            for o in open_orders
            if o.account_id == row.account_id and o.symbol == row.symbol and o.side == "sell"
        )
        assert row.held == needed, (row.account_id, row.symbol)
    for order in order_rows:
        assert 0 <= order.filled <= order.quantity
        assert (order.status == "filled") == (order.filled == order.quantity and order.quantity > 0)


async def test_a_restarted_exchange_resumes_from_its_history(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with running_exchange(settings) as exchange:
        await _deposit_cash(exchange, "buyer", 100_000)
        await _deposit_capacity(exchange, "seller", GZ0, 10)
        assert (await _order(exchange, "seller", GZ0, "sell", 1800, 5)).status_code == 201
        assert (await _order(exchange, "buyer", GZ0, "buy", 1800, 2)).status_code == 201
        await settle(exchange.runtime)

    async with running_exchange(settings) as exchange:
        book = (await exchange.client.get(f"/v1/contracts/{GZ0}/book")).json()
        assert book["asks"] == [[1800, 3]], "the book is rebuilt from the log"
        again = await _order(exchange, "buyer", GZ0, "buy", 1800, 3)
        assert again.status_code == 201, again.text
        await settle(exchange.runtime)
        trades = (await exchange.client.get(f"/v1/contracts/{GZ0}/trades")).json()
        assert [t["trade_id"] for t in trades] == [f"{GZ0}:2", f"{GZ0}:1"]
        buyer = (await (await exchange.as_("buyer")).get("/v1/accounts/buyer")).json()
        assert buyer["cash"] == {"available": 100_000 - 5 * 1800, "held": 0}
        assert buyer["positions"] == [{"symbol": GZ0, "quantity": 5}]
        assert len(await _stored(exchange, "FundsDeposited")) == 1


async def test_an_order_id_refused_then_accepted_on_retry_settles(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        runtime = exchange.runtime
        order = PlaceOrder(
            order_id="same-id",
            account_id="late",
            symbol=GZ0,
            side="buy",
            price=1800,
            quantity=1,
        )
        await runtime.submit(order)  # no funds yet: refused
        await settle(runtime)  # the refusal is stored in a batch of its own
        await runtime.submit(DepositFunds(deposit_id="late-cash", account_id="late", amount=5000))
        await runtime.submit(order)  # the same id again, now covered: accepted
        await settle(runtime)
        order_id = exchange_order_id("late", "same-id")
        decided = [
            (e["type"], e["order_id"])
            for e in await _stored(exchange, "OrderRejected")
            + await _stored(exchange, "OrderAccepted")
            if e["order_id"] == order_id
        ]
        assert decided == [("OrderRejected", order_id), ("OrderAccepted", order_id)]
        orders = (await exchange.client.get("/v1/orders", params={"account_id": "late"})).json()
        assert [(o["order_id"], o["status"]) for o in orders] == [(order_id, "open")]
        report = await audit(runtime.store, default_catalogue(), runtime.topics.market_partitions)
        assert report.discrepancies == []


async def test_a_block_is_listed_with_its_hours_in_china_standard_time(
    exchange_settings: Settings,
) -> None:
    """A block is settled with its family as `symbol` (as clients read it) and shown with its
    hourly contracts and when its delivery starts and ends, China Standard Time; an order of
    one contract with its own delivery times and no hours list."""
    async with running_exchange(exchange_settings) as exchange:
        lab = await exchange.as_("lab")
        cash = {"kind": "cash", "amount": 100_000}
        assert (await lab.post("/v1/accounts/lab/deposits", json=cash)).status_code == 201
        block = {"symbols": [GZ0, GZ1], "side": "buy", "price": 1000, "quantity": 1}
        placed = await lab.post("/v1/block-orders", json=block)
        assert placed.status_code == 201, placed.text
        single = await lab.post(
            "/v1/orders", json={"symbol": YRD0, "side": "buy", "price": 1000, "quantity": 1}
        )
        assert single.status_code == 201, single.text
        await settle(exchange.runtime)
        listed = {o["order_id"]: o for o in (await lab.get("/v1/orders")).json()}
        block_id, single_id = placed.json()["order_id"], single.json()["order_id"]
        shown = listed[block_id]
        assert (shown["symbol"], shown["quantity"]) == ("H100-80G.GZ", 2)
        assert shown["symbols"] == [GZ0, GZ1]
        assert (shown["delivery_start"], shown["delivery_end"]) == (
            "2027-12-01T00:00:00+08:00",
            "2027-12-01T02:00:00+08:00",
        )
        assert (shown["group_id"], shown["alternatives"]) == (None, None)
        assert (await lab.get(f"/v1/orders/{block_id}")).json() == shown
        one = listed[single_id]
        assert (one["symbol"], one["symbols"]) == (YRD0, None)
        assert (one["delivery_start"], one["delivery_end"]) == (
            "2027-12-01T00:00:00+08:00",
            "2027-12-01T01:00:00+08:00",
        )
