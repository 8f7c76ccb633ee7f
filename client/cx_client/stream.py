"""A market data stream that reconnects and keeps local order books in step with the exchange.

Depth comes as a `depth_snapshot` followed by `depth` increments whose `seq` grows by one per
contract. The stream applies them to a `LocalBook` per contract; an increment whose `seq` is not
the next one means something was missed, so the book is marked stale and a fresh snapshot is
requested (increments are ignored until it arrives). When the connection drops, for any reason
(including the server disconnecting a client that fell behind), the stream reconnects with
backoff, authenticates and subscribes again, and the server's snapshots rebuild every book.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

StreamMessage = dict[str, Any]


@dataclass
class LocalBook:
    """A contract's book as the stream rebuilt it: price -> quantity, at `seq`."""

    symbol: str
    seq: int | None = None
    """None while waiting for a snapshot."""
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)

    def apply_snapshot(self, message: StreamMessage) -> None:
        """Replace the book by a `depth_snapshot`."""
        self.bids = {int(p): int(q) for p, q in message["bids"]}
        self.asks = {int(p): int(q) for p, q in message["asks"]}
        self.seq = int(message["seq"])

    def apply_increment(self, message: StreamMessage) -> bool:
        """Apply a `depth` increment; False if one was missed (the book is then stale)."""
        seq = int(message["seq"])
        if self.seq is None or seq <= self.seq:
            return True
        if seq != self.seq + 1:
            self.seq = None
            return False
        for side, levels in ((self.bids, message["bids"]), (self.asks, message["asks"])):
            for price, quantity in levels:
                if quantity:
                    side[int(price)] = int(quantity)
                else:
                    side.pop(int(price), None)
        self.seq = seq
        return True

    def best_bid(self) -> tuple[int, int] | None:
        """(price, quantity) of the best bid."""
        if not self.bids:
            return None
        price = max(self.bids)
        return price, self.bids[price]

    def best_ask(self) -> tuple[int, int] | None:
        """(price, quantity) of the best ask."""
        if not self.asks:
            return None
        price = min(self.asks)
        return price, self.asks[price]

    def depth(self, levels: int = 10) -> dict[str, list[list[int]]]:
        """Up to `levels` levels a side, best first."""
        return {
            "bids": [[p, q] for p, q in sorted(self.bids.items(), reverse=True)[:levels]],
            "asks": [[p, q] for p, q in sorted(self.asks.items())[:levels]],
        }


class MarketStream:
    """Follows contracts and private channels over the WebSocket, reconnecting as needed.

    Iterate it to receive every message (dicts, see docs/API.md); `books` holds the local books
    of the contracts followed with the `depth` channel. Between connections the iterator yields
    `{"type": "disconnected", "code": ..., "reason": ...}`. Leave the loop or call `close()` to
    stop.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        symbols: Sequence[str] = (),
        channels: Sequence[str] = ("quote", "trades"),
        private: Sequence[str] = (),
        reconnect_delay_s: float = 0.2,
        max_reconnect_delay_s: float = 5.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.symbols = list(symbols)
        self.channels = list(channels)
        self.private = list(private)
        self.reconnect_delay_s = reconnect_delay_s
        self.max_reconnect_delay_s = max_reconnect_delay_s
        self.open_timeout_s = open_timeout_s
        self.books: dict[str, LocalBook] = (
            {s: LocalBook(s) for s in self.symbols} if "depth" in self.channels else {}
        )
        self.connections = 0
        self.gaps = 0
        """Increments found missing (each one answered by a snapshot request)."""
        self.resyncs = 0
        """Times the server replaced missed messages by snapshots (this client was slow)."""
        self._connection: ClientConnection | None = None
        self._closed = False

    async def __aenter__(self) -> MarketStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop: close the connection and end the iteration."""
        self._closed = True
        if self._connection is not None:
            await self._connection.close()

    async def send(self, message: StreamMessage) -> None:
        """Send a request (e.g. another subscribe) on the current connection."""
        if self._connection is not None:
            await self._connection.send(json.dumps(message))

    def __aiter__(self) -> AsyncIterator[StreamMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[StreamMessage]:
        delay = self.reconnect_delay_s
        while not self._closed:
            try:
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
                async with websockets.connect(
                    self.url, additional_headers=headers, open_timeout=self.open_timeout_s
                ) as connection:
                    self._connection = connection
                    self.connections += 1
                    for book in self.books.values():
                        book.seq = None
                    await self._subscribe(connection)
                    delay = self.reconnect_delay_s
                    async for raw in connection:
                        message: StreamMessage = json.loads(raw)
                        if await self._fold(connection, message):
                            yield message
                    code, reason = _close_of(connection)
            except websockets.exceptions.ConnectionClosed as closed:
                received = closed.rcvd
                code = None if received is None else received.code
                reason = str(closed) if received is None else received.reason
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as error:
                code, reason = None, f"{type(error).__name__}: {error}"
            finally:
                self._connection = None
            if self._closed:
                return
            yield {"type": "disconnected", "code": code, "reason": reason}
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_reconnect_delay_s)

    async def _subscribe(self, connection: ClientConnection) -> None:
        if self.symbols:
            await connection.send(
                json.dumps({"op": "subscribe", "symbols": self.symbols, "channels": self.channels})
            )
        if self.private:
            await connection.send(json.dumps({"op": "subscribe", "channels": self.private}))

    async def _fold(self, connection: ClientConnection, message: StreamMessage) -> bool:
        """Keep the books; True if the message is to be yielded."""
        kind = message.get("type")
        if kind == "depth_snapshot":
            self.books.setdefault(message["symbol"], LocalBook(message["symbol"])).apply_snapshot(
                message
            )
        elif kind == "depth":
            book = self.books.get(message["symbol"])
            if book is None:
                return True
            if book.seq is None:
                return False
            if not book.apply_increment(message):
                self.gaps += 1
                await connection.send(json.dumps({"op": "snapshot", "symbols": [book.symbol]}))
                return False
        elif kind == "resync":
            self.resyncs += 1
            for snapshot in message.get("snapshots", ()):
                await self._fold(connection, snapshot)
        return True


def _close_of(connection: ClientConnection) -> tuple[int | None, str]:
    with contextlib.suppress(AttributeError):
        if connection.close_code is not None:
            return connection.close_code, connection.close_reason or ""
    return None, "closed"
