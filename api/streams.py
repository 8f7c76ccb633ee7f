"""The market data streams: a WebSocket (`/v1/stream`) and Server-Sent Events (`/v1/stream/sse`).

Both carry the same JSON messages (docs/API.md lists them). Public channels per contract:
`quote`, `depth` (a `depth_snapshot`, then `depth` increments whose `seq` grows by one: a
client that sees a jump has missed one and asks for a snapshot), `trades`, `candles`, `stats`,
`day_ahead` (the contract's day-ahead clearing price and volume, when its auction clears).
Private channels of the key's account: `orders`, `fills`, `balances`, `obligations`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.auth import Gate, client_address
from api.keys import KeyRing, Principal
from api.marketdata import (
    DEFAULT_CHANNELS,
    PRIVATE_CHANNELS,
    PUBLIC_CHANNELS,
    MarketData,
    Subscriber,
    encode_message,
)
from api.problems import Problem, duplicate_key, duplicate_key_detail

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
"""A client that accepts nothing for this long is disconnected."""
HEARTBEAT_S = 15.0
CLOSE_TOO_SLOW = 1013
CLOSE_POLICY = 1008
CLOSE_UNSUPPORTED = 1003

Channel = Literal[
    "quote",
    "depth",
    "trades",
    "candles",
    "stats",
    "day_ahead",
    "orders",
    "fills",
    "balances",
    "obligations",
]


class StreamRequest(BaseModel):
    """A client's message on the WebSocket."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["subscribe", "unsubscribe", "snapshot", "auth", "ping"]
    symbols: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=100)] = []
    channels: Annotated[list[Channel], Field(max_length=20)] | None = None
    key: Annotated[str, Field(max_length=200)] | None = None


KEY_REVOKED = "the API key was revoked: its private channels are closed"
KEY_UNCHECKED = (
    "the API key could not be checked while the database is down: its private channels are "
    "closed; authenticate again once the database is back"
)

_encode = encode_message


class KeyWatch:
    """Closes the private streams of keys revoked through another process or `cx keys
    revoke` (within the key cache time) and, while the database is down, of keys not confirmed
    within the outage bound."""

    def __init__(self, keyring: KeyRing, market: MarketData) -> None:
        self.keyring = keyring
        self.market = market

    async def run(self, stop: asyncio.Event) -> None:
        """Check the keys of open streams every key cache time, until `stop`."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.keyring.cache_s)
            in_use = self.market.keys_in_use()
            if stop.is_set() or not in_use:
                continue
            try:
                revoked, unchecked = await self.keyring.lapsed(in_use)
            except Exception:
                log.exception("checking the keys of open streams failed; trying again")
                continue
            self.market.revoke(revoked, KEY_REVOKED)
            self.market.revoke(unchecked, KEY_UNCHECKED)


async def websocket_stream(websocket: WebSocket, market: MarketData, gate: Gate) -> None:
    """Serve one WebSocket client until it leaves or is dropped as too slow."""
    principal: Principal | None = None
    header = websocket.headers.get("authorization", "")
    try:
        if header:
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer":
                raise Problem(
                    401,
                    "unauthorized",
                    "send the key as Authorization: Bearer cx_...",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            principal = await gate.authenticate(websocket, key.strip())
        else:
            gate.charge(f"address:{client_address(websocket)}", gate.per_address)
    except Problem as refused:
        # The client sees 403 whatever the reason (the close reason is for logs and proxies):
        # answering the problem through the denial-response extension makes uvicorn's default
        # WebSocket implementation log every refusal as an error (uvicorn PR #3138).
        await websocket.close(CLOSE_POLICY, refused.detail[:120])
        return
    await websocket.accept()
    subscriber = market.subscriber()
    if principal is not None:
        market.authenticate(subscriber, principal)
    sender = asyncio.create_task(_pump(websocket, subscriber))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            text = message.get("text")
            if text is None:
                await websocket.close(
                    CLOSE_UNSUPPORTED, "binary frames are refused: send JSON text"
                )
                return
            repeated = duplicate_key(text)
            if repeated is not None:
                market.offer(
                    subscriber,
                    {
                        "type": "error",
                        "code": "duplicate-key",
                        "message": duplicate_key_detail(repeated),
                    },
                )
                continue
            try:
                request = StreamRequest.model_validate_json(text)
            except ValidationError as error:
                market.offer(subscriber, {"type": "error", "message": _first_error(error)})
                continue
            await _handle(request, subscriber, market, gate, websocket)
    except WebSocketDisconnect:
        pass
    finally:
        market.drop(subscriber)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _handle(
    request: StreamRequest,
    subscriber: Subscriber,
    market: MarketData,
    gate: Gate,
    websocket: WebSocket,
) -> None:
    def error(message: str) -> None:
        market.offer(subscriber, {"type": "error", "message": message})

    if request.op == "ping":
        market.offer(subscriber, {"type": "pong", "log_time": market.now_ms})
        return
    if request.op == "auth":
        if not request.key:
            error("auth needs a key")
            return
        # Charged as a REST call with the key is: a key's request, or a failure of the address.
        try:
            principal = await gate.authenticate(websocket, request.key)
        except Problem as refused:
            market.offer(subscriber, _refusal(refused))
            return
        if subscriber.principal is not None and subscriber.principal != principal:
            error("this connection is already authenticated with another key")
            return
        market.authenticate(subscriber, principal)
        market.offer(
            subscriber,
            {
                "type": "authenticated",
                "account_id": principal.account_id,
                "role": principal.role.value,
            },
        )
        return
    if request.op == "snapshot":
        market.snapshot(subscriber, request.symbols)
        return
    channels: list[str] | None = None if request.channels is None else list(request.channels)
    private = [c for c in channels or () if c in PRIVATE_CHANNELS]
    if request.op == "unsubscribe":
        public = None if channels is None else [c for c in channels if c in PUBLIC_CHANNELS]
        market.unsubscribe(subscriber, request.symbols, public)
        if private:
            market.unsubscribe_private(subscriber, private)
        market.offer(subscriber, {"type": "unsubscribed", "symbols": sorted(request.symbols)})
        return
    if not request.symbols and not private:
        error("subscribe needs symbols, or private channels (orders, fills, balances, obligations)")
        return
    if private and subscriber.principal is None:
        error('private channels need an API key: send {"op":"auth","key":"cx_..."} first')
        return
    public = [c for c in channels or DEFAULT_CHANNELS if c in PUBLIC_CHANNELS]
    unknown = market.subscribe(subscriber, request.symbols, public) if request.symbols else []
    if private:
        market.subscribe_private(subscriber, private)
    market.offer(
        subscriber,
        {
            "type": "subscribed",
            "symbols": sorted(subscriber.symbols),
            "unknown": unknown,
            "private": sorted(subscriber.private),
        },
    )


async def _pump(websocket: WebSocket, subscriber: Subscriber) -> None:
    """Send queued messages; close with the reason if the subscriber was dropped as too slow."""
    queue = subscriber.queue
    while subscriber.dropped_reason is None:
        # asyncio.timeout rather than wait_for: no task per message.
        if queue.empty():
            try:
                async with asyncio.timeout(0.5):
                    message = await queue.get()
            except TimeoutError:
                continue
        else:
            message = queue.get_nowait()
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await websocket.send_text(_encode(message))
    # A close reason is at most 123 bytes.
    await websocket.close(code=CLOSE_TOO_SLOW, reason=subscriber.dropped_reason[:120])


def _refusal(refused: Problem) -> dict[str, object]:
    """A refused request as an `error` message: the problem's code, its words, and when to
    retry if it was over budget."""
    message: dict[str, object] = {
        "type": "error",
        "code": refused.kind,
        "message": refused.detail,
    }
    retry_after = refused.headers.get("Retry-After")
    if retry_after is not None:
        message["retry_after"] = int(retry_after)
    return message


def _first_error(error: ValidationError) -> str:
    item = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in item["loc"]) or "message"
    return f"{where}: {item['msg']}"


def parse_list(text: str | None) -> list[str]:
    """A comma-separated query parameter as a list."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def sse_subscriber(
    market: MarketData,
    principal: Principal | None,
    symbols: list[str],
    channels: list[str],
    private: list[str],
) -> Subscriber:
    """A subscriber for one SSE client, already following what it asked for."""
    bad = [c for c in channels if c not in PUBLIC_CHANNELS]
    if bad:
        raise Problem(422, "invalid-request", f"unknown public channels: {', '.join(bad)}")
    bad = [c for c in private if c not in PRIVATE_CHANNELS]
    if bad:
        raise Problem(422, "invalid-request", f"unknown private channels: {', '.join(bad)}")
    if private and principal is None:
        raise Problem(
            401,
            "unauthorized",
            "private channels need an API key: send Authorization: Bearer cx_...",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not symbols and not private:
        raise Problem(422, "invalid-request", "name symbols, or private channels, to follow")
    unknown = [s for s in symbols if s not in market.views]
    if unknown:
        raise Problem(404, "unknown_contract", f"contracts not listed: {', '.join(unknown)}")
    subscriber = market.subscriber()
    subscriber.ends_without_key = True
    if principal is not None:
        market.authenticate(subscriber, principal)
    if symbols:
        market.subscribe(subscriber, symbols, channels or DEFAULT_CHANNELS)
    if private:
        market.subscribe_private(subscriber, private)
    return subscriber


async def sse_events(market: MarketData, subscriber: Subscriber) -> AsyncIterator[str]:
    """The subscriber's messages as Server-Sent Events, with a heartbeat comment."""
    try:
        yield ": connected\n\n"
        while subscriber.dropped_reason is None:
            try:
                message = await asyncio.wait_for(subscriber.queue.get(), HEARTBEAT_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if subscriber.dropped_reason is not None:
                break  # ended while this waited (its key revoked): say why, send nothing more
            ident = f"id: {message['seq']}\n" if "seq" in message else ""
            yield f"event: {message['type']}\n{ident}data: {_encode(message)}\n\n"
        reason = {"type": "error", "message": subscriber.dropped_reason}
        yield f"event: error\ndata: {_encode(reason)}\n\n"
    finally:
        market.drop(subscriber)
