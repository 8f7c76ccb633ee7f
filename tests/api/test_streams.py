"""The streams end to end: private channels, Server-Sent Events, and clients that fall behind,
lose their connection or miss a message, and come back in step with the exchange."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from cx_client import ExchangeClient, MarketStream

from api.keys import Role, create_key
from api.marketdata import MAX_RESYNCS
from api.streams import KEY_REVOKED
from exchange.domain.messages import BookChanged
from tests.e2e.harness import RunningExchange, running_exchange, settings_for

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
YRD0 = "H100-80G.YRD.20271201T00"


async def _next(socket: Any, kind: str, timeout_s: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            message = json.loads(await socket.recv())
            if message["type"] == kind:
                return dict(message)


async def _setup(exchange: RunningExchange) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    buyer = await exchange.as_("buyer")
    provider = await exchange.as_("provider", "provider")
    await buyer.post("/v1/accounts/buyer/deposits", json={"kind": "cash", "amount": 100_000})
    await provider.post(
        "/v1/accounts/provider/deposits", json={"kind": "capacity", "symbol": GZ0, "quantity": 9}
    )
    return buyer, provider


async def test_private_channels_carry_only_the_accounts_own_updates(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        buyer, provider = await _setup(exchange)
        url = exchange.base_url.replace("http", "ws") + "/v1/stream"
        buyer_key = await exchange.key_for("buyer")
        headers = {"Authorization": f"Bearer {await exchange.key_for('provider')}"}
        async with (
            websockets.connect(url) as mine,
            websockets.connect(url, additional_headers=headers) as theirs,
        ):
            await mine.send(json.dumps({"op": "subscribe", "channels": ["orders", "fills"]}))
            refused = await _next(mine, "error")
            assert "need an API key" in refused["message"]
            await mine.send(json.dumps({"op": "auth", "key": buyer_key}))
            assert (await _next(mine, "authenticated"))["account_id"] == "buyer"
            private = ["orders", "fills", "balances", "obligations"]
            await mine.send(json.dumps({"op": "subscribe", "channels": private}))
            await theirs.send(json.dumps({"op": "subscribe", "channels": private}))
            snapshot = await _next(mine, "account_snapshot")
            assert snapshot["cash"] == {"available": 100_000, "held": 0}
            assert (await _next(theirs, "account_snapshot"))["capacity"] == [
                {"symbol": GZ0, "available": 9, "held": 0}
            ]

            ask = {"symbol": GZ0, "side": "sell", "price": 1800, "quantity": 5}
            assert (await provider.post("/v1/orders", json=ask)).status_code == 201
            opened = await _next(theirs, "order")
            assert (opened["side"], opened["status"], opened["filled"]) == ("sell", "open", 0)

            bid = {"symbol": GZ0, "side": "buy", "price": 1850, "quantity": 2}
            assert (await buyer.post("/v1/orders", json=bid)).status_code == 201
            own = await _next(mine, "order")
            assert (own["side"], own["status"]) == ("buy", "open"), "never the provider's order"
            fill = await _next(mine, "fill")
            assert (fill["side"], fill["price"], fill["quantity"], fill["liquidity"]) == (
                "buy",
                1800,
                2,
                "taker",
            )
            assert (await _next(mine, "order"))["status"] == "filled"
            balance = await _next(mine, "balance")
            assert balance["cash"] == {"available": 100_000 - 3600, "held": 0}

            sold = await _next(theirs, "fill")
            assert (sold["side"], sold["liquidity"]) == ("sell", "maker")
            obligation = await _next(theirs, "obligation")
            assert (obligation["quantity"], obligation["payout"]) == (2, 3600)
            assert obligation["delivery_start"] == "2027-12-01T00:00:00+08:00"


async def test_server_sent_events_stream_the_same_messages(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        buyer, provider = await _setup(exchange)
        anonymous = exchange.anonymous
        refused = await anonymous.get("/v1/stream/sse", params={"private": "orders"})
        assert refused.status_code == 401
        unknown = await anonymous.get("/v1/stream/sse", params={"symbols": "NOPE"})
        assert unknown.status_code == 404

        async def read(lines: AsyncIterator[str], wanted: int) -> list[tuple[str, dict[str, Any]]]:
            got: list[tuple[str, dict[str, Any]]] = []
            event = ""
            async for line in lines:
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: "):
                    got.append((event, json.loads(line[len("data: ") :])))
                    if len(got) == wanted:
                        return got
            return got

        params = {"symbols": GZ0, "channels": "quote,depth"}
        headers = {"Authorization": f"Bearer {await exchange.key_for('buyer')}"}
        async with (
            anonymous.stream("GET", "/v1/stream/sse", params=params) as public,
            anonymous.stream(
                "GET", "/v1/stream/sse", params={"private": "orders"}, headers=headers
            ) as private,
        ):
            assert public.headers["content-type"].startswith("text/event-stream")
            public_lines, private_lines = public.aiter_lines(), private.aiter_lines()
            first = await asyncio.wait_for(read(public_lines, 2), 10)
            assert [e for e, _ in first] == ["quote", "depth_snapshot"]
            assert (await asyncio.wait_for(read(private_lines, 1), 10))[0][0] == "account_snapshot"
            ask = {"symbol": GZ0, "side": "sell", "price": 1800, "quantity": 5}
            assert (await provider.post("/v1/orders", json=ask)).status_code == 201
            bid = {"symbol": GZ0, "side": "buy", "price": 1700, "quantity": 1}
            assert (await buyer.post("/v1/orders", json=bid)).status_code == 201
            updates = await asyncio.wait_for(read(public_lines, 4), 10)
            depth = [m for e, m in updates if e == "depth"]
            assert [m["seq"] for m in depth] == [1, 2]
            assert depth[0]["asks"] == [[1800, 5]]
            mine = await asyncio.wait_for(read(private_lines, 1), 10)
            assert mine[0][1]["side"] == "buy", "only the key's own orders"


@pytest.fixture
async def busy_exchange(tmp_path: Path) -> AsyncIterator[RunningExchange]:
    """An exchange whose stream outboxes hold only a few messages."""
    async with running_exchange(settings_for(tmp_path)) as exchange:
        exchange.market.queue_size = 8
        yield exchange


class Burst:
    """Book changes injected into the API's market data, as if matching had been very busy."""

    def __init__(self, exchange: RunningExchange) -> None:
        self.market = exchange.market
        self.offset = 0

    def __call__(self, count: int) -> None:
        view = self.market.views[YRD0]
        for _ in range(count):
            self.offset += 1
            price = 1000 + self.offset % 50 * 10
            event = BookChanged(
                event_id=f"synthetic.orders:0:{self.offset}:0",
                ts=1_795_000_000_000 + self.offset,
                symbol=YRD0,
                seq=view.seq + 1,
                bids=[(price, self.offset % 7)],
                asks=[],
            )
            self.market.apply(event, 99)


async def _until(stream_messages: AsyncIterator[dict[str, Any]], kind: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        async for message in stream_messages:
            if message["type"] == kind:
                return message
    raise AssertionError(f"the stream ended before a {kind!r}")


async def test_a_client_that_falls_behind_is_resynchronised_then_disconnected_and_recovers(
    busy_exchange: RunningExchange,
) -> None:
    exchange = busy_exchange
    burst = Burst(exchange)
    key = await exchange.key_for("watcher")
    async with ExchangeClient(exchange.base_url, key) as client:
        stream = client.stream(symbols=[YRD0], channels=["depth"])
        messages = aiter(stream)
        try:
            await _until(messages, "subscribed")
            assert stream.books[YRD0].seq == 0

            # Once behind: one resync message with the whole book replaces what was missed.
            burst(12)
            resync = await _until(messages, "resync")
            assert "fell behind" in resync["reason"]
            assert stream.resyncs == 1
            await _wait_in_step(stream, messages, exchange)

            # Behind again and again: disconnected with the reason; the client reconnects.
            burst(8 * (MAX_RESYNCS + 2))
            dropped = await _until(messages, "disconnected")
            assert dropped["code"] == 1013
            assert dropped["reason"].startswith("too slow")
            await _until(messages, "depth_snapshot")
            assert stream.connections == 2
            await _wait_in_step(stream, messages, exchange)
            burst(3)
            await _wait_in_step(stream, messages, exchange)
        finally:
            await stream.close()


async def _wait_in_step(
    stream: MarketStream, messages: AsyncIterator[dict[str, Any]], exchange: RunningExchange
) -> None:
    """Let the stream read until its local book equals the exchange's."""
    view = exchange.market.views[YRD0]

    async def consume() -> None:
        async for _ in messages:
            if stream.books[YRD0].seq == view.seq:
                return

    if stream.books[YRD0].seq != view.seq:
        await asyncio.wait_for(consume(), 10)
    book = stream.books[YRD0]
    assert (book.seq, book.bids, book.asks) == (view.seq, view.bids, view.asks)


async def test_the_client_resynchronises_after_a_gap_and_after_a_lost_connection() -> None:
    """Against a scripted server: a missing increment, then a dropped connection."""
    requests: list[dict[str, Any]] = []
    connections = 0

    def snapshot(seq: int, bids: list[list[int]]) -> str:
        return json.dumps(
            {"type": "depth_snapshot", "symbol": "S", "seq": seq, "bids": bids, "asks": []}
        )

    def depth(seq: int, bids: list[list[int]]) -> str:
        return json.dumps({"type": "depth", "symbol": "S", "seq": seq, "bids": bids, "asks": []})

    async def server(socket: Any) -> None:
        nonlocal connections
        connections += 1
        requests.append(json.loads(await socket.recv()))
        if connections == 1:
            await socket.send(snapshot(5, [[100, 1]]))
            await socket.send(depth(6, [[101, 2]]))
            await socket.send(depth(8, [[102, 3]]))  # 7 never arrives
            requests.append(json.loads(await socket.recv()))
            await socket.send(snapshot(9, [[100, 1], [101, 2], [103, 4]]))
            await socket.send(depth(10, [[100, 0]]))
            await socket.close(1011, "restarting")
        else:
            await socket.send(snapshot(12, [[104, 5]]))
            await socket.send(depth(13, [[105, 6]]))
            await socket.wait_closed()

    async with websockets.serve(server, "127.0.0.1", 0) as listening:
        port = next(iter(listening.sockets)).getsockname()[1]
        stream = MarketStream(
            f"ws://127.0.0.1:{port}", symbols=["S"], channels=["depth"], reconnect_delay_s=0.05
        )
        seen: list[tuple[str, int | None]] = []
        async with asyncio.timeout(10):
            async for message in stream:
                seen.append((message["type"], message.get("seq")))
                if stream.books["S"].seq == 13:
                    break
        await stream.close()

    assert requests[0] == {"op": "subscribe", "symbols": ["S"], "channels": ["depth"]}
    assert requests[1] == {"op": "snapshot", "symbols": ["S"]}, "the gap was noticed"
    assert requests[2] == requests[0], "subscribed again after reconnecting"
    assert stream.gaps == 1
    assert stream.connections == 2
    assert ("depth", 8) not in seen, "an increment after a gap is not passed on"
    assert ("disconnected", None) in seen
    assert stream.books["S"].bids == {104: 5, 105: 6}


async def _sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    event = ""
    async for line in lines:
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            yield event, json.loads(line[len("data: ") :])


async def _revoked_stream_sees_nothing_more(
    depositor: httpx.AsyncClient, revoked: Any, watcher: Any, key: str
) -> None:
    """The account's balance changes: a live subscriber sees it, the revoked one does not, and
    the revoked one can neither follow private channels again nor authenticate with the key."""
    cash = {"kind": "cash", "amount": 5}
    assert (await depositor.post("/v1/accounts/buyer/deposits", json=cash)).status_code == 201
    assert (await _next(watcher, "balance"))["cash"]["available"] == 100_005
    await revoked.send(json.dumps({"op": "ping"}))
    async with asyncio.timeout(10):
        while (message := json.loads(await revoked.recv()))["type"] != "pong":
            assert message["type"] not in {"balance", "account_snapshot", "order", "fill"}
    private = {"op": "subscribe", "channels": ["balances"]}
    await revoked.send(json.dumps(private))
    assert "need an API key" in (await _next(revoked, "error"))["message"]
    await revoked.send(json.dumps({"op": "auth", "key": key}))
    assert (await _next(revoked, "error"))["code"] == "unauthorized"


async def test_revoking_a_key_closes_its_private_streams_at_once(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        await _setup(exchange)
        operator = await exchange.operator()
        created = await operator.post(
            "/v1/admin/keys", json={"account_id": "buyer", "role": "buyer"}
        )
        key, key_id = created.json()["key"], created.json()["key_id"]
        url = exchange.base_url.replace("http", "ws") + "/v1/stream"
        headers = {"Authorization": f"Bearer {key}"}
        private = {"op": "subscribe", "channels": ["balances", "orders"]}
        async with (
            websockets.connect(url) as revoked,
            websockets.connect(url) as watcher,
            exchange.anonymous.stream(
                "GET", "/v1/stream/sse", params={"private": "balances"}, headers=headers
            ) as sse,
        ):
            await revoked.send(json.dumps({"op": "auth", "key": key}))
            await _next(revoked, "authenticated")
            await revoked.send(json.dumps(private))
            await _next(revoked, "account_snapshot")
            await watcher.send(json.dumps({"op": "auth", "key": await exchange.key_for("buyer")}))
            await watcher.send(json.dumps(private))
            await _next(watcher, "account_snapshot")
            events = _sse_events(sse.aiter_lines())
            assert (await anext(events))[0] == "account_snapshot"

            assert (await operator.delete(f"/v1/admin/keys/{key_id}")).status_code == 200
            told = await _next(revoked, "error", timeout_s=1)
            assert (told["code"], told["message"]) == ("unauthorized", KEY_REVOKED)
            async with asyncio.timeout(1):
                assert await anext(events) == ("error", {"type": "error", "message": KEY_REVOKED})
                assert [e async for e in events] == [], "the SSE stream ended"
            buyer = await exchange.as_("buyer")
            await _revoked_stream_sees_nothing_more(buyer, revoked, watcher, key)


async def test_a_key_revoked_by_another_process_loses_its_streams_within_the_cache_time(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, CX_KEY_CACHE_SECONDS=0.5)
    async with running_exchange(settings) as exchange:
        await _setup(exchange)
        key = await exchange.key_for("buyer")
        url = exchange.base_url.replace("http", "ws") + "/v1/stream"
        headers = {"Authorization": f"Bearer {key}"}
        async with (
            websockets.connect(url, additional_headers=headers) as revoked,
            websockets.connect(url) as watcher,
        ):
            await revoked.send(json.dumps({"op": "subscribe", "channels": ["balances"]}))
            await _next(revoked, "account_snapshot")
            # The watcher's key is another of the same account, made as `cx keys create` would.
            other = await create_key(exchange.runtime.store.engine, "buyer", Role.BUYER)
            await watcher.send(json.dumps({"op": "auth", "key": other.key}))
            await watcher.send(json.dumps({"op": "subscribe", "channels": ["balances"]}))
            await _next(watcher, "account_snapshot")

            env = {**os.environ, "CX_DATA_DIR": str(tmp_path)}
            env.pop("DATABASE_URL", None)
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cx.cli", "keys", "revoke", key.split("_")[1], env=env
            )
            assert await cli.wait() == 0
            told = await _next(revoked, "error", timeout_s=2)
            assert (told["code"], told["message"]) == ("unauthorized", KEY_REVOKED)
            async with httpx.AsyncClient(
                base_url=exchange.base_url, headers={"Authorization": f"Bearer {other.key}"}
            ) as depositor:
                await _revoked_stream_sees_nothing_more(depositor, revoked, watcher, key)
