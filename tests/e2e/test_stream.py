"""The WebSocket stream: best bid/ask and trades of the subscribed contracts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.e2e.harness import running_exchange, settings_for

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
YRD0 = "H100-80G.YRD.20271201T00"


async def _next(socket: Any, kind: str) -> dict[str, Any]:
    """The next message of one type (quotes and trades interleave)."""
    async with asyncio.timeout(10):
        while True:
            message = json.loads(await socket.recv())
            if message["type"] == kind:
                return dict(message)


async def test_subscribers_get_quotes_and_trades_of_their_contracts_only(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        buyer = await exchange.as_("b")
        seller = await exchange.as_("s", "provider")
        await buyer.post("/v1/accounts/b/deposits", json={"kind": "cash", "amount": 100_000})
        await seller.post(
            "/v1/accounts/s/deposits", json={"kind": "capacity", "symbol": GZ0, "quantity": 9}
        )
        url = exchange.base_url.replace("http", "ws") + "/v1/stream"
        async with websockets.connect(url) as socket:
            await socket.send(json.dumps({"op": "subscribe", "symbols": [GZ0, "NOPE"]}))
            snapshot = await _next(socket, "quote")
            assert snapshot == {
                "type": "quote",
                "symbol": GZ0,
                "seq": 0,
                "bid": None,
                "ask": None,
                "bid_per_std": None,
                "ask_per_std": None,
                "ts": None,
            }
            subscribed = await _next(socket, "subscribed")
            assert subscribed == {
                "type": "subscribed",
                "symbols": [GZ0],
                "unknown": ["NOPE"],
                "private": [],
            }

            order = {"account_id": "s", "symbol": GZ0, "side": "sell", "price": 1800, "quantity": 5}
            assert (await seller.post("/v1/orders", json=order)).status_code == 201
            quote = await _next(socket, "quote")
            assert quote["ask"] == {"price": 1800, "quantity": 5}
            assert quote["bid"] is None
            assert quote["seq"] == 1

            bid = {"account_id": "b", "symbol": GZ0, "side": "buy", "price": 1800, "quantity": 2}
            assert (await buyer.post("/v1/orders", json=bid)).status_code == 201
            trade = await _next(socket, "trade")
            assert (trade["symbol"], trade["price"], trade["quantity"]) == (GZ0, 1800, 2)
            assert trade["aggressor"] == "buy"
            quote = await _next(socket, "quote")
            assert quote["ask"] == {"price": 1800, "quantity": 3}

            await socket.send(json.dumps({"op": "subscribe", "symbols": "not a list"}))
            error = await _next(socket, "error")
            assert error["message"] == "symbols: Input should be a valid array"

            await socket.send(json.dumps({"op": "unsubscribe", "symbols": [GZ0]}))
            assert (await _next(socket, "unsubscribed"))["symbols"] == [GZ0]
            other = {"account_id": "b", "symbol": YRD0, "side": "buy", "price": 1700, "quantity": 1}
            assert (await buyer.post("/v1/orders", json=other)).status_code == 201
            another = {**bid, "quantity": 1}
            assert (await buyer.post("/v1/orders", json=another)).status_code == 201
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await socket.recv()
