"""The HTTP and WebSocket API (FastAPI), versioned under /v1.

Commands are validated here for a fast, specific answer, appended to the commands topic, and
the API waits briefly for the exchange's decision so a client learns whether its order was
accepted. The risk stage validates everything again: any Kafka client may send commands.
Errors are RFC 9457 problem details (application/problem+json).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import queries
from api.marketdata import MarketData, Outcome, Subscriber, trade_message
from exchange.domain.messages import (
    CancelOrder,
    CancelRejected,
    CapacityDeposited,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    FundsDeposited,
    Identifier,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    PlaceOrder,
    PositiveInt,
    RejectReason,
    Side,
)
from exchange.runtime import ExchangeRuntime, ParticipantCommand

OUTCOME_TIMEOUT_S = 5.0
MAX_DEPTH = 50
PROBLEM = "application/problem+json"


class Problem(Exception):
    """An error answered as problem+json with a stable type."""

    def __init__(self, status: int, kind: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.extra = extra


class OrderRequest(BaseModel):
    """A limit order. Prices are integer fen (0.01 CNY) on the contract's tick; quantities units."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "account_id": "buyer-1",
                    "symbol": "H100-80G.GZ.20261201T00",
                    "side": "buy",
                    "price": 1850,
                    "quantity": 8,
                }
            ]
        },
    )

    account_id: Identifier
    symbol: Annotated[str, Field(min_length=1, max_length=64)]
    side: Side
    price: PositiveInt
    quantity: PositiveInt
    client_order_id: Identifier | None = None


class CashDeposit(BaseModel):
    """Credit cash, in fen."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["cash"]
    amount: PositiveInt
    deposit_id: Identifier | None = None


class CapacityDeposit(BaseModel):
    """Make capacity in one contract sellable, in units."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["capacity"]
    symbol: Annotated[str, Field(min_length=1, max_length=64)]
    quantity: PositiveInt
    deposit_id: Identifier | None = None


DepositRequest = Annotated[CashDeposit | CapacityDeposit, Field(discriminator="kind")]


def create_app(runtime: ExchangeRuntime, market: MarketData) -> FastAPI:
    """The API of one running exchange."""
    app = FastAPI(
        title="Compute exchange",
        version="1",
        description=(
            "Standardized compute contracts (card-hours, core-hours) traded on a continuous "
            "limit order book. Prices and money are integer fen (0.01 CNY)."
        ),
    )
    catalogue = runtime.catalogue
    engine = runtime.store.engine

    @app.exception_handler(Problem)
    async def _problem(_: Request, error: Problem) -> JSONResponse:
        return _problem_response(error.status, error.kind, error.detail, error.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "message": e["msg"]}
            for e in error.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return _problem_response(422, "invalid-request", detail, {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return _problem_response(error.status_code, "http-error", str(error.detail), {})

    async def submit_and_wait(command: ParticipantCommand, key: str) -> Outcome | None:
        future = market.expect(key)
        try:
            await runtime.submit(command)
            return await asyncio.wait_for(asyncio.shield(future), OUTCOME_TIMEOUT_S)
        except TimeoutError:
            return None
        finally:
            market.forget(key, future)

    def contract_or_404(symbol: str) -> None:
        if symbol not in catalogue:
            raise Problem(404, "unknown-contract", f"contract {symbol!r} is not listed")

    @app.get("/v1/contracts", summary="List the listed contracts with their best prices")
    async def list_contracts() -> list[dict[str, Any]]:
        listed = []
        for spec in catalogue:
            view = market.views[spec.symbol]
            bid, ask = view.best_bid(), view.best_ask()
            listed.append(
                {
                    "symbol": spec.symbol,
                    "resource_class": spec.resource_class.code,
                    "description": spec.resource_class.description,
                    "region": spec.region,
                    "delivery_start": spec.delivery_start.isoformat(),
                    "unit": spec.unit,
                    "tick_size": spec.tick_size,
                    "best_bid": None if bid is None else bid[0],
                    "best_ask": None if ask is None else ask[0],
                }
            )
        return listed

    @app.get("/v1/contracts/{symbol}/book", summary="Depth of a contract's order book")
    async def book(
        symbol: str, depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 10
    ) -> dict[str, Any]:
        contract_or_404(symbol)
        view = market.views[symbol]
        return {"symbol": symbol, "seq": view.seq, **view.depth(depth)}

    @app.get("/v1/contracts/{symbol}/trades", summary="Settled trades of a contract, newest first")
    async def contract_trades(
        symbol: str, limit: Annotated[int, Query(ge=1, le=1000)] = 50
    ) -> list[dict[str, Any]]:
        contract_or_404(symbol)
        return await queries.contract_trades(engine, symbol, limit)

    @app.post("/v1/orders", status_code=201, summary="Place a limit order")
    async def place_order(request: OrderRequest) -> JSONResponse:
        spec = catalogue.get(request.symbol)
        if spec is None:
            raise Problem(404, "unknown-contract", f"contract {request.symbol!r} is not listed")
        if request.price % spec.tick_size:
            raise Problem(
                422,
                RejectReason.PRICE_NOT_ON_TICK.value,
                f"price {request.price} is not a multiple of the tick size "
                f"{spec.tick_size} fen of {spec.symbol}",
            )
        order_id = uuid.uuid4().hex
        command = PlaceOrder(order_id=order_id, **request.model_dump())
        outcome = await submit_and_wait(command, order_id)
        if outcome is None:
            return JSONResponse({"order_id": order_id, "status": "pending"}, status_code=202)
        if isinstance(outcome, OrderRejected):
            raise Problem(422, outcome.reason.value, outcome.message, order_id=order_id)
        assert isinstance(outcome, OrderAccepted | OrderCancelled)
        return JSONResponse({"order_id": order_id, "status": "accepted"}, status_code=201)

    @app.delete("/v1/orders/{order_id}", summary="Cancel what remains of an open order")
    async def cancel_order(
        order_id: Identifier, account_id: Annotated[Identifier, Query()]
    ) -> dict[str, Any]:
        outcome = await submit_and_wait(
            CancelOrder(order_id=order_id, account_id=account_id), order_id
        )
        if outcome is None:
            return {"order_id": order_id, "status": "pending"}
        if isinstance(outcome, CancelRejected):
            status = 409 if outcome.reason is RejectReason.ORDER_NOT_OPEN else 404
            raise Problem(status, outcome.reason.value, outcome.message, order_id=order_id)
        if isinstance(outcome, OrderCancelled):
            return {"order_id": order_id, "status": "cancelled", "remaining": outcome.remaining}
        raise Problem(409, "unexpected-outcome", f"order {order_id!r}: {outcome.type}")

    @app.get("/v1/orders", summary="Orders of an account, newest first")
    async def list_orders(
        account_id: Annotated[Identifier, Query()],
        status: Annotated[
            Literal["open", "filled", "cancelled", "rejected"] | None, Query()
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return await queries.account_orders(engine, account_id, status, limit)

    @app.get("/v1/accounts/{account_id}", summary="Cash, capacity and positions of an account")
    async def account(account_id: Identifier) -> dict[str, Any]:
        found = await queries.account_summary(engine, account_id)
        if found is None:
            raise Problem(404, "unknown-account", f"account {account_id!r} has no settled history")
        return found

    @app.post(
        "/v1/accounts/{account_id}/deposits",
        status_code=201,
        summary="Deposit cash (fen) or sellable capacity (units of a contract)",
    )
    async def deposit(account_id: Identifier, request: DepositRequest) -> dict[str, Any]:
        deposit_id = request.deposit_id or uuid.uuid4().hex
        command: DepositFunds | DepositCapacity
        if isinstance(request, CashDeposit):
            command = DepositFunds(
                deposit_id=deposit_id, account_id=account_id, amount=request.amount
            )
        else:
            contract_or_404(request.symbol)
            command = DepositCapacity(
                deposit_id=deposit_id,
                account_id=account_id,
                symbol=request.symbol,
                quantity=request.quantity,
            )
        outcome = await submit_and_wait(command, deposit_id)
        if outcome is None:
            return {"deposit_id": deposit_id, "status": "pending"}
        if isinstance(outcome, DepositRejected):
            raise Problem(422, outcome.reason.value, outcome.message, deposit_id=deposit_id)
        assert isinstance(outcome, FundsDeposited | CapacityDeposited)
        return {"deposit_id": deposit_id, "status": "deposited"}

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        subscriber = Subscriber()
        sender = asyncio.create_task(_pump(websocket, subscriber))
        try:
            while True:
                try:
                    request = SubscribeRequest.model_validate_json(await websocket.receive_text())
                except ValidationError as error:
                    await websocket.send_json({"type": "error", "message": _first_error(error)})
                    continue
                if request.op == "subscribe":
                    unknown = market.subscribe(subscriber, request.symbols)
                    for symbol in request.symbols:
                        if symbol in market.views:
                            for trade in list(market.views[symbol].trades)[-10:]:
                                await subscriber.queue.put(trade_message(trade))
                    await subscriber.queue.put(
                        {
                            "type": "subscribed",
                            "symbols": sorted(subscriber.symbols),
                            "unknown": unknown,
                        }
                    )
                else:
                    subscriber.symbols.difference_update(request.symbols)
                    await subscriber.queue.put(
                        {"type": "unsubscribed", "symbols": sorted(request.symbols)}
                    )
        except WebSocketDisconnect:
            pass
        finally:
            market.subscribers.discard(subscriber)
            sender.cancel()

    return app


class SubscribeRequest(BaseModel):
    """A stream request: follow or stop following contracts."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["subscribe", "unsubscribe"]
    symbols: Annotated[
        list[Annotated[str, Field(max_length=64)]], Field(min_length=1, max_length=100)
    ]


async def _pump(websocket: WebSocket, subscriber: Subscriber) -> None:
    """Send queued messages; close with a reason if the subscriber was dropped as too slow."""
    while subscriber.dropped_reason is None:
        try:
            message = await asyncio.wait_for(subscriber.queue.get(), 1.0)
        except TimeoutError:
            continue
        await websocket.send_json(message)
    await websocket.close(code=1013, reason=subscriber.dropped_reason)


def _first_error(error: ValidationError) -> str:
    item = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in item["loc"]) or "message"
    return f"{where}: {item['msg']}"


def _problem_response(status: int, kind: str, detail: str, extra: dict[str, Any]) -> JSONResponse:
    body = {
        "type": f"/problems/{kind}",
        "title": kind.replace("-", " ").replace("_", " "),
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM)
