"""What GET /v1/deliveries shows of a token bundle in its period, embedded and on Kafka and
PostgreSQL (found by the outside trial): a holder's resale moves units of its obligation to the
buyer, so the seller's row keeps only what is left, with its share of the escrow, bond and fee;
units bought after a dispute's resolution settled a pair's obligation are a new obligation,
owed, not the settled one grown. The rows are what `cx projections rebuild` folds again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cx.migrations import upgrade_to_head
from cx.settings import Settings
from exchange.domain.messages import ControlMarket
from settlement import projections as tables
from settlement.snapshots import SqlSnapshotStore
from settlement.sql_store import SqlEventStore, open_event_store
from settlement.store import NewEvent
from tests.e2e.harness import LogClock, RunningExchange, running_exchange, settle
from tests.e2e.test_resale_after_settlement import BUNDLE, CASH, DAY, HOUR, START
from tests.e2e.test_token_bundles import _post

pytestmark = pytest.mark.e2e


async def _rows(exchange: RunningExchange, account: str) -> list[tuple[Any, ...]]:
    client = await exchange.as_(account)
    response = await client.get("/v1/deliveries")
    assert response.status_code == 200, response.text
    return sorted(
        (d["provider_id"], d["buyer_id"], d["quantity"], d["amount"], d["bond"], d["status"])
        for d in response.json()
        if d["symbol"] == BUNDLE
    )


async def _table(store: SqlEventStore) -> list[tuple[Any, ...]]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(tables.deliveries).order_by(tables.deliveries.c.buyer_id)
        )
        return [tuple(row) for row in rows]


async def _rebuilt_equal(exchange: RunningExchange) -> None:
    runtime = exchange.runtime
    live = await _table(runtime.store)
    await tables.rebuild(runtime.store, runtime.catalogue, runtime.topics.market_partitions)
    assert await _table(runtime.store) == live


async def _settled_again_split_at(
    exchange: RunningExchange, path: Path, split: Any
) -> list[tuple[Any, ...]]:
    """The deliveries settlement projects from the exchange's stored events into a new store,
    restarted (its state loaded again) before the first event `split` picks: the input that
    event belongs to is settled partly before the restart, partly after."""
    runtime = exchange.runtime
    history = await runtime.store.read_all(0, 100_000)
    at = next(n for n, stored in enumerate(history) if split(stored))
    store = open_event_store(f"sqlite+aiosqlite:///{path}")
    try:
        await store.initialise(upgrade_to_head)
        for part in (history[:at], history[at:]):
            projection = tables.LedgerProjection(
                runtime.catalogue, partitions=runtime.topics.market_partitions
            )
            await projection.load(store, SqlSnapshotStore(store.engine))
            await store.append(
                [NewEvent(e.event_id, e.stream_id, e.type, e.data, e.metadata) for e in part],
                projector=projection,
            )
        return await _table(store)
    finally:
        await store.close()


def _settings(base: Settings) -> Settings:
    return base.model_copy(
        update={
            "fees": "TOK-QWEN:0:0",
            "bond_bps": 1_000,
            "delivery_window_minutes": 60,
            "listings": "TOK-QWEN.YRD",
            "listing_days": 2,
            "term_days": 40,
        }
    )


async def _in_the_period(exchange: RunningExchange, clock: LogClock) -> None:
    """p2's capacity and the buyers' cash deposited; an hour into the bundle's period."""
    for account, role, body in (
        ("p2", "provider", {"kind": "cash", "amount": CASH}),
        ("p2", "provider", {"kind": "capacity", "symbol": BUNDLE, "quantity": 13}),
        ("b1", "buyer", {"kind": "cash", "amount": CASH}),
        ("b2", "buyer", {"kind": "cash", "amount": CASH}),
        ("b3", "buyer", {"kind": "cash", "amount": CASH}),
    ):
        await _post(exchange, account, role, f"/v1/accounts/{account}/deposits", body)
    clock.now_ms = START + HOUR
    await exchange.runtime.submit(ControlMarket(operator_id="clock", action="tick", symbol=BUNDLE))
    await settle(exchange.runtime)


async def test_a_resale_in_the_period_moves_units_out_of_the_seller_s_row(
    exchange_settings: Settings, tmp_path: Path
) -> None:
    clock = LogClock(START - DAY)
    async with running_exchange(_settings(exchange_settings), clock) as exchange:
        await _in_the_period(exchange, clock)
        ask = {"symbol": BUNDLE, "side": "sell", "price": 400, "quantity": 10}
        await _post(exchange, "p2", "provider", "/v1/orders", ask)
        for buyer, quantity in (("b3", 6), ("b2", 4)):
            bid = {"symbol": BUNDLE, "side": "buy", "price": 400, "quantity": quantity}
            await _post(exchange, buyer, "buyer", "/v1/orders", bid)
        await settle(exchange.runtime)
        # The bond is 10% of the price: 40 fen a unit.
        assert await _rows(exchange, "p2") == [
            ("p2", "b2", 4, 1_600, 160, "owed"),
            ("p2", "b3", 6, 2_400, 240, "owed"),
        ]

        # b1's one bid takes 4 of b3's resale and 1 of b2's: two trades of one order, each
        # moving units of its seller's obligation.
        for seller, price, quantity in (("b3", 420, 4), ("b2", 430, 2)):
            resale = {"symbol": BUNDLE, "side": "sell", "price": price, "quantity": quantity}
            await _post(exchange, seller, "buyer", "/v1/orders", resale)
        await settle(exchange.runtime)
        bid = {"symbol": BUNDLE, "side": "buy", "price": 430, "quantity": 5}
        await _post(exchange, "b1", "buyer", "/v1/orders", bid)
        await settle(exchange.runtime)
        # Escrow, bond and fee move in proportion: b3's 4 of 6 take 1,600 of 2,400 fen and 160
        # of the 240 bond, b2's 1 of 4 take 400 of 1,600 and 40 of 160.
        assert await _rows(exchange, "p2") == [
            ("p2", "b1", 5, 2_000, 200, "owed"),
            ("p2", "b2", 3, 1_200, 120, "owed"),
            ("p2", "b3", 2, 800, 80, "owed"),
        ]
        assert await _rows(exchange, "b3") == [("p2", "b3", 2, 800, 80, "owed")]
        await _rebuilt_equal(exchange)
        # Settlement restarted between b1's trades and the obligations they moved reads the
        # trades back from the store: the same rows.
        moved_to_b1 = await _settled_again_split_at(
            exchange,
            tmp_path / "restarted.db",
            lambda e: e.type == "DeliveryObligation" and e.data["buyer_id"] == "b1",
        )
        assert moved_to_b1 == await _table(exchange.runtime.store)


async def test_units_bought_after_a_resolution_are_owed_afresh(
    exchange_settings: Settings,
) -> None:
    clock = LogClock(START - DAY)
    async with running_exchange(_settings(exchange_settings), clock) as exchange:
        await _in_the_period(exchange, clock)
        ask = {"symbol": BUNDLE, "side": "sell", "price": 400, "quantity": 2}
        await _post(exchange, "p2", "provider", "/v1/orders", ask)
        bid = {"symbol": BUNDLE, "side": "buy", "price": 400, "quantity": 2}
        await _post(exchange, "b3", "buyer", "/v1/orders", bid)
        await settle(exchange.runtime)
        # b3's obligation is metered, disputed and resolved: settled, the rest refunded.
        metering = {"symbol": BUNDLE, "buyer_id": "b3", "tokens": 100_000, "report_id": "m1"}
        await _post(exchange, "p2", "provider", "/v1/deliveries/metering", metering)
        dispute = {"symbol": BUNDLE, "provider_id": "p2", "reason": "用量不符", "dispute_id": "d1"}
        await _post(exchange, "b3", "buyer", "/v1/deliveries/disputes", dispute)
        await settle(exchange.runtime)
        operator = await exchange.operator()
        # The operator's figure is the tokens used in all: above the 2 million bought it is
        # refused, saying so with the figures as they are.
        resolution = {
            "symbol": BUNDLE, "provider_id": "p2", "buyer_id": "b3", "delivered": 2_000_001,
            "reason": "as metered",
        }  # fmt: skip
        beyond = await operator.post("/v1/admin/deliveries/resolve", json=resolution)
        assert beyond.status_code == 422, beyond.text
        assert beyond.json()["type"] == "/problems/metering_exceeds_bundle"
        assert beyond.json()["detail"] == (
            "裁定的总用量 2000001 tokens 超过所购的 2000000 tokens (2 百万 tokens, 已用 100000): "
            "the resolution's 2000001 tokens used in all are beyond the 2000000 tokens (2 million) "
            f"b3 bought of {BUNDLE} from p2, 100000 of them drawn down so far"
        )
        resolved = await operator.post(
            "/v1/admin/deliveries/resolve", json={**resolution, "delivered": 100_000}
        )
        assert resolved.status_code in (200, 201), resolved.text
        await settle(exchange.runtime)
        assert await _rows(exchange, "b3") == [("p2", "b3", 2, 800, 80, "settled")]

        # b3 buys 3 more from p2's capacity: a new obligation, owed, none of the settled one's
        # refund or resolution carried over.
        ask = {"symbol": BUNDLE, "side": "sell", "price": 400, "quantity": 3}
        await _post(exchange, "p2", "provider", "/v1/orders", ask)
        bid = {"symbol": BUNDLE, "side": "buy", "price": 400, "quantity": 3}
        await _post(exchange, "b3", "buyer", "/v1/orders", bid)
        await settle(exchange.runtime)
        client = await exchange.as_("b3")
        (row,) = [d for d in (await client.get("/v1/deliveries")).json() if d["symbol"] == BUNDLE]
        assert (row["quantity"], row["amount"], row["bond"], row["status"]) == (
            3,
            1_200,
            120,
            "owed",
        )
        assert (row["delivered"], row["refund"], row["resolved_by"]) == (None, None, None)
        await _rebuilt_equal(exchange)
