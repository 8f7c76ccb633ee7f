"""The streams: market data and private updates over a WebSocket or Server-Sent Events
(`api.streams` holds their protocol)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from fastapi.responses import StreamingResponse

from api.auth import Caller, gate_of
from api.deps import MarketDep, state_of
from api.problems import problems
from api.streams import parse_list, sse_events, sse_subscriber, websocket_stream

router = APIRouter(prefix="/v1", tags=["streams"])


@router.get(
    "/stream/sse",
    summary="Market data and private updates as Server-Sent Events",
    description="`symbols` and `channels` (quote, depth, trades, candles, stats, day_ahead; "
    "default quote,trades) are comma-separated; `private` (orders, fills, balances, obligations) "
    "needs an API key. Messages are the WebSocket's; `event:` is their type.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The event stream"},
        **problems(401, 404, 422, 429),
    },
)
async def sse(
    principal: Caller,
    market: MarketDep,
    symbols: Annotated[str | None, Query(max_length=6500)] = None,
    channels: Annotated[str | None, Query(max_length=200)] = None,
    private: Annotated[str | None, Query(max_length=200)] = None,
) -> StreamingResponse:
    subscriber = sse_subscriber(
        market, principal, parse_list(symbols), parse_list(channels), parse_list(private)
    )
    return StreamingResponse(
        sse_events(market, subscriber),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


websockets = APIRouter()
"""The WebSocket stream, included at the app's root (it authenticates in its own protocol)."""


@websockets.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    await websocket_stream(websocket, state_of(websocket).market, gate_of(websocket))
