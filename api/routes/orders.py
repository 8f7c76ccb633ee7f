"""A participant's own orders: place, list, read, cancel, amend, cancel all, and blocks.

An order is validated here for a fast, specific answer, sent through the log, and answered
once the risk stage has decided (`api.services.Commands`); a named order (client order id or
`Idempotency-Key`) is answered once (`api.idempotency.Idempotent`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.auth import Reader, Trader, account_of
from api.deps import (
    CommandsDep,
    IdempotencyKey,
    IdempotentDep,
    LedgerDep,
    MarketDep,
    listed_or_422,
)
from api.idempotency import Answer, Named, fingerprint, own_name, problem_body, respond
from api.keys import Principal, Role
from api.marketdata import MarketData, OrderState, Outcome, cancel_all_key, order_key
from api.models import (
    AcceptedOrder,
    AmendAnswer,
    AmendRequest,
    BlockAnswer,
    BlockRequest,
    CancelAllAnswer,
    CancelAnswer,
    OrderAnswer,
    OrderRequest,
    OrderRow,
)
from api.ports import Ledger
from api.problems import Problem, database_unavailable, problem_title, problems
from api.services import Commands
from exchange.domain.catalogue import ContractSpec, SymbolError, parse_symbol
from exchange.domain.messages import (
    AmendOrder,
    AmendRejected,
    CancelAllOrders,
    CancelAllRequested,
    CancelOrder,
    CancelReason,
    CancelRejected,
    Identifier,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderRejected,
    PlaceBlockOrder,
    PlaceOrder,
    RejectReason,
    exchange_order_id,
)

SETTLE_WAIT_S = 5.0
"""How long a retry of an order the exchange already accepted waits to find it settled."""

router = APIRouter(prefix="/v1", tags=["orders"], responses=problems(401, 403, 429))

_NOT_THE_ACCOUNTS_OPEN_ORDER = frozenset(
    {RejectReason.UNKNOWN_ORDER, RejectReason.NOT_ORDER_OWNER, RejectReason.ORDER_NOT_OPEN}
)


async def place(
    commands: Commands, ledger: Ledger, command: PlaceOrder, named: bool, result: bool = False
) -> Answer:
    """Send an order and answer what the risk stage decided (with `result`, also what matching
    did with it); a named order that is settled already is answered from the ledger."""
    order_id = exchange_order_id(command.account_id, command.order_id)
    if named:
        settled = await ledger.order(order_id)
        if settled is not None:
            return _answer_from_row(settled)
    if result:
        decision = commands.market.expect_decision(order_id)
        try:
            answer = await _place_and_wait(commands, ledger, command, named)
            if answer.status_code == 201:
                answer.body["result"] = await _decided(decision.done)
            return answer
        finally:
            commands.market.forget_decision(order_id)
    return await _place_and_wait(commands, ledger, command, named)


async def _decided(done: asyncio.Future[dict[str, Any]]) -> dict[str, Any] | None:
    """Matching's decision on an accepted order, or None if it did not come in time."""
    try:
        return await asyncio.wait_for(asyncio.shield(done), SETTLE_WAIT_S)
    except TimeoutError:
        return None


async def _place_and_wait(
    commands: Commands, ledger: Ledger, command: PlaceOrder, named: bool
) -> Answer:
    order_id = exchange_order_id(command.account_id, command.order_id)
    client_order_id = command.client_order_id
    outcome = await commands.submit_and_wait(command, order_key(command.account_id, order_id))
    if outcome is None:
        return _pending(order_id, client_order_id)
    if isinstance(outcome, OrderRejected):
        if named and outcome.reason is RejectReason.DUPLICATE_ORDER_ID:
            # The account's own name, reserved for this request: an earlier send of it was
            # accepted before this process could answer it.
            settled = await _eventually_settled(ledger, order_id)
            return (
                _pending(order_id, client_order_id)
                if settled is None
                else _answer_from_row(settled)
            )
        return Answer(
            422, problem_body(422, outcome.reason.value, outcome.message, order_id=order_id)
        )
    if not isinstance(outcome, OrderAccepted | OrderCancelled):
        raise Problem(409, "unexpected-outcome", f"order {order_id!r}: {outcome.type}")
    return Answer(201, _accepted(order_id, client_order_id))


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderAnswer,
    summary="Place an order",
    description="Answers once the risk stage has decided: 201 accepted, or the rejection "
    "as a problem (`insufficient_funds`, `insufficient_capacity`, ...); options that "
    "contradict each other are refused before anything is logged (`expiry_required`, "
    "`expiry_needs_gtd`, `post_only_conflict`, ... with `field`); 202 pending if "
    "that takes more than 5 s. A `client_order_id` or an `Idempotency-Key` header makes "
    "a retry return the first answer (header `Idempotent-Replayed: true`); the same name "
    "with a different order is refused (`idempotency-key-reused`), even while the first "
    "is pending. With `answer=result` an accepted order is answered once matching has acted "
    "on it too: `result` says whether it rests, filled or was cancelled, with its fills.",
    responses={
        202: {"model": OrderAnswer, "description": "Not decided within 5 s; retry to learn"},
        **problems(422),
    },
)
async def place_order(
    request: OrderRequest,  # type: ignore[valid-type]
    principal: Trader,
    market: MarketDep,
    ledger: LedgerDep,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    idempotency_key: IdempotencyKey = None,
    answer: Annotated[
        Literal["ack", "result"],
        Query(
            description="`ack` (default): once the risk stage decided; `result`: also "
            "what matching did (fills, resting or cancelled)"
        ),
    ] = "ack",
) -> JSONResponse:
    body: dict[str, Any] = request.model_dump()  # type: ignore[attr-defined]
    account = account_of(principal, body.pop("account_id"))
    client_order_id = body.get("client_order_id")
    # Not a day-ahead order: the body an order had before the day-ahead auction existed, so a
    # retry of an order sent before it still matches its first answer.
    day_ahead = body.pop("day_ahead")
    print_ = fingerprint("POST", "/v1/orders", {**body, "day_ahead": True} if day_ahead else body)
    name, named = order_name("o", client_order_id, idempotency_key, print_)
    refused = _refusal(body, market)
    if refused is not None:
        if named is not None:
            await idempotent.refuse_reused(account, named)
        raise refused
    command = PlaceOrder(order_id=name, account_id=account, day_ahead=day_ahead, **body)
    result = answer == "result"
    if named is None:
        return respond(await place(commands, ledger, command, False, result), replayed=False)
    return await idempotent.run(
        account, named, lambda: place(commands, ledger, command, True, result)
    )


def _refusal(order: dict[str, Any], market: MarketData) -> Problem | None:
    """The problem of an order the API refuses for its body alone, or None."""
    symbol = order["symbol"]
    spec = market.spec(symbol)
    if spec is None:
        return Problem(422, "unknown_contract", f"contract {symbol!r} is not listed")
    refused = _conflicting_options(order, market.now_ms)
    if refused is not None:
        return refused
    price = order.get("price")
    if isinstance(price, int) and price % spec.tick_size:
        return Problem(
            422,
            RejectReason.PRICE_NOT_ON_TICK.value,
            f"price {price} is not a multiple of the tick size "
            f"{spec.tick_size} fen of {spec.symbol}",
        )
    return None


def _conflicting_options(order: dict[str, Any], now_ms: int) -> Problem | None:
    """The problem of options that contradict each other, or None.

    Matching would take such an order's hold and then refuse it (`invalid_order`,
    `invalid_expiry`), or ignore an `expire_at` a GTC order cannot use: refused here first,
    by name, nothing logged. A command produced straight to the log still meets matching's
    refusals, which old histories replay with."""
    tif = order["time_in_force"]
    expire_at = order["expire_at"]
    if tif == "GTD" and expire_at is None:
        return Problem(
            422,
            "expiry_required",
            "限期订单 (GTD) 须给出到期时间 expire_at: a good-till-date order needs expire_at, "
            "the time it expires (ms since the epoch)",
            field="expire_at",
        )
    if tif != "GTD" and expire_at is not None:
        return Problem(
            422,
            "expiry_needs_gtd",
            f"只有限期订单 (GTD) 可设到期时间 only a GTD order expires at expire_at; this one is "
            f"{tif}: send time_in_force GTD, or leave expire_at out",
            field="expire_at",
        )
    if tif == "GTD" and expire_at <= now_ms:
        return Problem(
            422,
            CancelReason.INVALID_EXPIRY.value,
            f"到期时间已过 expire_at {expire_at} is not after the exchange's time now "
            f"({now_ms} ms): a GTD order must expire in the future",
            field="expire_at",
        )
    if order["order_type"] == "market" and tif not in ("GTC", "IOC"):
        return Problem(
            422,
            "market_time_in_force",
            f"市价单只可为 GTC 或 IOC a market order trades at once: time_in_force GTC or IOC, "
            f"not {tif}",
            field="time_in_force",
        )
    conflict = _post_only_conflict(order) if order["post_only"] else None
    if conflict is not None:
        return Problem(
            422,
            "post_only_conflict",
            f"只挂单 (post_only) 不可与 {conflict} 同用 post_only cannot go with {conflict}: "
            "a post-only order only rests in the book, without conditions on trading; drop "
            "one of them",
            field="post_only",
        )
    if order["min_quantity"] > order["quantity"]:
        return Problem(
            422,
            "min_quantity_above_quantity",
            f"最小成交量大于订单数量 min_quantity {order['min_quantity']} is more than the "
            f"order's quantity {order['quantity']}",
            field="min_quantity",
        )
    return None


def _post_only_conflict(order: dict[str, Any]) -> str | None:
    """The option a post-only order cannot have (matching refuses each), or None."""
    if order["order_type"] == "market":
        return "order_type market"
    if order["time_in_force"] in ("IOC", "FOK"):
        return f"time_in_force {order['time_in_force']}"
    if order["all_or_none"]:
        return "all_or_none"
    if order["min_quantity"]:
        return "min_quantity"
    return None


@router.get("/orders", summary="The account's settled orders, newest first")
async def list_orders(
    principal: Reader,
    ledger: LedgerDep,
    account_id: Annotated[Identifier | None, Query()] = None,
    status: Annotated[Literal["open", "filled", "cancelled", "rejected"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[OrderRow]:
    account = account_of(principal, account_id)
    return [order_out(r) for r in await ledger.account_orders(account, status, limit)]


def order_out(row: dict[str, Any]) -> OrderRow:
    """A settled order as the API shows it: a block with its hourly contracts, and each with
    when its delivery starts and ends, China Standard Time."""
    joined = row.pop("symbols", None)
    hours = joined.split(",") if joined else None
    first: ContractSpec | None
    last: ContractSpec | None
    try:
        first = parse_symbol(hours[0] if hours else row["symbol"])
        last = parse_symbol(hours[-1]) if hours else first
    except SymbolError:
        # The family of a block rejected before it was settled with its hours.
        first = last = None
    return OrderRow(
        **row,
        symbols=hours,
        delivery_start=None if first is None else first.delivery_start.isoformat(),
        delivery_end=None if last is None else last.delivery_end.isoformat(),
    )


def group_out(group_id: str, alternatives: list[OrderRow]) -> OrderRow:
    """An exclusive group read by its id: its alternatives, and as one order the
    terms of its first (by delivery) and where the group stands: open while an
    alternative is open, filled once the auction filled one, else as its first ended."""
    ordered = sorted(alternatives, key=lambda a: (a.delivery_start or "", a.symbol))
    first = ordered[0]
    statuses = {a.status for a in ordered}
    status = next((s for s in ("open", "filled") if s in statuses), first.status)
    return first.model_copy(
        update={
            "order_id": group_id,
            "filled": sum(a.filled for a in ordered),
            "status": status,
            "reason": None if status in ("open", "filled") else first.reason,
            "created_ts": min(a.created_ts for a in ordered),
            "updated_ts": max(a.updated_ts for a in ordered),
            "group_id": None,
            "alternatives": ordered,
        }
    )


def _unknown_order(principal: Principal, order_id: str) -> Problem:
    return Problem(
        404, "unknown_order", f"account {principal.account_id} has no order {order_id!r}"
    )


def _readable(principal: Principal, row: dict[str, Any]) -> bool:
    return principal.role is Role.OPERATOR or row["account_id"] == principal.account_id


async def own_order(ledger: Ledger, principal: Principal, order_id: str) -> dict[str, Any]:
    """A settled order of the caller's account (operators may read any), else 404."""
    row = await ledger.order(order_id)
    if row is None or not _readable(principal, row):
        raise _unknown_order(principal, order_id)
    return row


@router.get(
    "/orders/{order_id}",
    summary="One order of the account, as settled (or an exclusive group, by its id)",
    description="A block shows its hourly contracts (`symbols`) and, like every order, when "
    "its delivery starts and ends (China Standard Time). The id POST /v1/exclusive-groups "
    "answers names the group: read by it, the group shows its `alternatives`, and as one "
    "order the terms of its first and where the group stands (`open` while an alternative "
    "is, `filled` once the auction filled one). An order the exchange accepted that "
    "settlement has not recorded yet (it is behind or stopped) is answered with `status` "
    "`accepted`, `settled` false, and `market_status` (open, filled or cancelled) as the "
    "API's market data saw it.",
    response_model=AcceptedOrder | OrderRow,
    responses=problems(404),
)
async def get_order(
    order_id: Identifier, principal: Reader, ledger: LedgerDep, market: MarketDep
) -> OrderRow:
    row = await ledger.order(order_id)
    if row is not None:
        if not _readable(principal, row):
            raise _unknown_order(principal, order_id)
        return order_out(row)
    alternatives = [r for r in await ledger.group_orders(order_id) if _readable(principal, r)]
    if alternatives:
        return group_out(order_id, [order_out(r) for r in alternatives])
    # Not settled (yet): the API's own fold of the log may have seen the risk stage accept it.
    seen = market.accepted_order(order_id)
    if seen is not None and _readable(principal, {"account_id": seen.account_id}):
        return accepted_out(seen)
    raise _unknown_order(principal, order_id)


_MARKET_STATUS_ZH = {"open": "挂单中", "filled": "已成交", "cancelled": "已撤销或已过期"}


def accepted_out(seen: OrderState) -> AcceptedOrder:
    """An order the exchange accepted that settlement has not recorded, as the API's market
    data saw it."""
    row = {
        "order_id": seen.order_id,
        "account_id": seen.account_id,
        "symbol": seen.symbol,
        "side": seen.side,
        "price": seen.price,
        "quantity": seen.quantity,
        "filled": seen.filled,
        "status": "accepted",
        "reason": seen.reason,
        "client_order_id": seen.client_order_id,
        "created_ts": seen.accepted_ts,
        "updated_ts": seen.ts,
    }
    status = seen.status
    return AcceptedOrder(
        **order_out(row).model_dump(),
        market_status=status,
        detail=f"订单已受理, 尚未结算; 行情所见: {_MARKET_STATUS_ZH.get(status, status)} / the "
        f"exchange accepted the order and settlement has not recorded it yet; market data saw "
        f"it {status}. Once settled, this answers the settled order",
    )


def _cancel_answer(outcome: Outcome) -> bool:
    """What answers a cancel: the order's cancellation or the cancel's refusal, never an amend
    of the same order sent beside it."""
    return isinstance(outcome, OrderCancelled | CancelRejected)


def _amend_answer(price: int | None, quantity: int | None) -> Callable[[Outcome], bool]:
    """What answers an amend: a refusal, or the order amended to this amend's own price and
    open quantity (matching sets both as asked), never another amend or a cancel sent beside
    it."""

    def answers(outcome: Outcome) -> bool:
        if isinstance(outcome, AmendRejected):
            return True
        return (
            isinstance(outcome, OrderAmended)
            and price in (None, outcome.price)
            and quantity in (None, outcome.remaining)
        )

    return answers


async def cancel(commands: Commands, account: str, order_id: str) -> OrderCancelled | None:
    """Cancel an open order of the account; None if the risk stage did not decide in time."""
    outcome = await commands.submit_and_wait(
        CancelOrder(order_id=order_id, account_id=account),
        order_key(account, order_id),
        _cancel_answer,
    )
    if outcome is None:
        return None
    if isinstance(outcome, CancelRejected):
        raise _not_changed(outcome)
    if isinstance(outcome, OrderCancelled):
        return outcome
    raise Problem(409, "unexpected-outcome", f"order {order_id!r}: {outcome.type}")


@router.delete(
    "/orders/{order_id}",
    summary="Cancel what remains of an open order",
    responses=problems(404, 409),
)
async def cancel_order(
    order_id: Identifier,
    principal: Trader,
    commands: CommandsDep,
    ledger: LedgerDep,
    account_id: Annotated[Identifier | None, Query()] = None,
) -> CancelAnswer:
    account = account_of(principal, account_id)
    try:
        cancelled = await cancel(commands, account, order_id)
    except Problem as refused:
        raise await _unless_unsettled(ledger, account, order_id, refused) from None
    if cancelled is None:
        return CancelAnswer(order_id=order_id, status="pending")
    return CancelAnswer(order_id=order_id, status="cancelled", remaining=cancelled.remaining)


@router.patch(
    "/orders/{order_id}",
    summary="Amend an open order's price or open quantity, in place",
    description="A smaller quantity at the same price keeps the order's time priority; a "
    "new price or a larger quantity loses it. Raising a buy's price or an order's quantity "
    "holds the extra first; a provider's bonded sell neither grows (`not_amendable`) nor rises "
    "above the price its delivery bond covers (`amend_above_bond`); a refused amend leaves the "
    "order as it was.",
    responses=problems(404, 409, 422),
)
async def amend_order(
    order_id: Identifier,
    amendment: AmendRequest,
    principal: Trader,
    market: MarketDep,
    commands: CommandsDep,
    ledger: LedgerDep,
) -> AmendAnswer:
    account = principal.account_id
    live = market.orders.get(order_id)
    if live is not None and live.account_id != account:
        raise Problem(404, "unknown_order", f"account {account} has no open order {order_id!r}")
    # An order not open here may have closed, or not reached this process yet: the risk
    # stage tells a closed order of the account (409) from an unknown one (404).
    spec = None if live is None else market.spec(live.symbol)
    if amendment.price is not None and spec is not None and amendment.price % spec.tick_size:
        raise Problem(
            422,
            RejectReason.PRICE_NOT_ON_TICK.value,
            f"price {amendment.price} is not a multiple of the tick size {spec.tick_size} fen",
        )
    command = AmendOrder(
        order_id=order_id,
        account_id=account,
        price=amendment.price,
        quantity=amendment.quantity,
    )
    outcome = await commands.submit_and_wait(
        command, order_key(account, order_id), _amend_answer(amendment.price, amendment.quantity)
    )
    if outcome is None:
        return AmendAnswer(order_id=order_id, status="pending")
    if isinstance(outcome, AmendRejected):
        if outcome.reason in _NOT_THE_ACCOUNTS_OPEN_ORDER:
            raise await _unless_unsettled(ledger, account, order_id, _not_changed(outcome))
        raise Problem(422, outcome.reason.value, outcome.message, order_id=order_id)
    if isinstance(outcome, OrderAmended):
        return AmendAnswer(
            order_id=order_id,
            status="amended",
            price=outcome.price,
            remaining=outcome.remaining,
            kept_priority=outcome.kept_priority,
        )
    raise Problem(409, "order_not_open", f"order {order_id!r} is no longer open")


@router.delete(
    "/orders",
    summary="Cancel every open order of the account (the kill switch)",
)
async def cancel_all_orders(principal: Trader, commands: CommandsDep) -> CancelAllAnswer:
    account = principal.account_id
    outcome = await commands.submit_and_wait(
        CancelAllOrders(account_id=account), cancel_all_key(account)
    )
    if isinstance(outcome, CancelRejected):
        # Nothing open: nothing to cancel, at once.
        return CancelAllAnswer(account_id=account, status="requested", symbols=[])
    if not isinstance(outcome, CancelAllRequested):
        return CancelAllAnswer(account_id=account, status="pending")
    return CancelAllAnswer(account_id=account, status="requested", symbols=outcome.symbols)


@router.post(
    "/block-orders",
    status_code=201,
    summary="Place a block order: every listed hour or none, limited by an average price",
    description="A `client_order_id` (one name with the account's orders) or an "
    "`Idempotency-Key` header makes a retry return the first answer; the same name with a "
    "different block is refused (`idempotency-key-reused`). With `day_ahead` the block waits "
    "for the day-ahead auction of its hours instead of the books (docs/MATCHING.md).",
    response_model=BlockAnswer,
    responses=problems(422),
)
async def place_block(
    block: BlockRequest,
    principal: Trader,
    market: MarketDep,
    commands: CommandsDep,
    ledger: LedgerDep,
    idempotent: IdempotentDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    account = principal.account_id
    # Without a voucher (or the day-ahead flag), the body a block had before vouchers (or the
    # day-ahead auction) existed: a retry of a block sent before them still matches its first
    # answer.
    unset = {name for name in ("voucher", "day_ahead") if not getattr(block, name)}
    body = block.model_dump(exclude=unset)
    print_ = fingerprint("POST", "/v1/block-orders", body)
    name, named = order_name("b", block.client_order_id, idempotency_key, print_)
    try:
        for symbol in block.symbols:
            listed_or_422(market, symbol)
    except Problem:
        if named is not None:
            await idempotent.refuse_reused(account, named)
        raise
    command = PlaceBlockOrder(
        order_id=name,
        account_id=account,
        symbols=block.symbols,
        side=block.side,
        price=block.price,
        quantity=block.quantity,
        client_order_id=block.client_order_id,
        voucher=block.voucher,
        day_ahead=block.day_ahead,
    )
    order_id = exchange_order_id(account, name)
    accepted = {
        "order_id": order_id,
        "client_order_id": block.client_order_id,
        "status": "accepted",
        "symbols": block.symbols,
    }
    pending = Answer(201, {**accepted, "status": "pending"}, pending=True)

    async def send() -> Answer:
        outcome = await commands.submit_and_wait(command, order_key(account, order_id))
        if outcome is None:
            return pending
        if isinstance(outcome, OrderRejected):
            if named is not None and outcome.reason is RejectReason.DUPLICATE_ORDER_ID:
                # The account's own name, reserved for this request: an earlier send of it was
                # accepted before this process could answer it. As for a single order, the
                # answer is the block as settled.
                settled = await _eventually_settled(ledger, order_id)
                if settled is None:
                    return pending
                return Answer(
                    201, {**accepted, "client_order_id": settled["client_order_id"]}, replayed=True
                )
            body = problem_body(422, outcome.reason.value, outcome.message, order_id=order_id)
            return Answer(422, body)
        return Answer(201, accepted)

    if named is None:
        return respond(await send(), replayed=False)
    return await idempotent.run(account, named, send)


async def _eventually_settled(ledger: Ledger, order_id: str) -> dict[str, Any] | None:
    deadline = asyncio.get_running_loop().time() + SETTLE_WAIT_S
    while True:
        row = await ledger.order(order_id)
        if row is not None or asyncio.get_running_loop().time() > deadline:
            return row
        await asyncio.sleep(0.05)


def order_name(
    prefix: str, client_order_id: str | None, idempotency_key: str | None, print_: str
) -> tuple[str, Named | None]:
    """The id to send an order (`o`), block (`b`) or exclusive group (`g`) as, and its names
    if the caller named it:
    the client order id, else the `Idempotency-Key`'s (`key_name`), else a new id."""
    name = own_name(client_order_id, idempotency_key)
    if name is None:
        return f"{prefix}-{uuid.uuid4().hex}", None
    names = [f"order:{name}"]
    legacy = []
    if idempotency_key is not None:
        names.append(f"{prefix}-key:{idempotency_key}")
    if prefix == "o":
        # Where earlier versions of the API kept answers of named orders (blocks had none).
        legacy = [f"key:{idempotency_key}"] if idempotency_key is not None else []
        legacy += [f"coid:{client_order_id}"] if client_order_id is not None else []
    return name, Named(tuple(names), print_, tuple(legacy))


def _accepted(order_id: str, client_order_id: str | None) -> dict[str, Any]:
    return {"order_id": order_id, "client_order_id": client_order_id, "status": "accepted"}


def _pending(order_id: str, client_order_id: str | None) -> Answer:
    body = {"order_id": order_id, "client_order_id": client_order_id, "status": "pending"}
    return Answer(202, body, pending=True)


def _answer_from_row(row: dict[str, Any]) -> Answer:
    if row["status"] == "rejected":
        body = problem_body(
            422,
            row["reason"] or "rejected",
            f"订单 {row['order_id']!r} 已被拒绝 was rejected: "
            f"{problem_title(row['reason'] or 'rejected')}",
            order_id=row["order_id"],
        )
        return Answer(422, body, replayed=True)
    return Answer(201, _accepted(row["order_id"], row["client_order_id"]), replayed=True)


async def _unless_unsettled(
    ledger: Ledger, account: str, order_id: str, refused: Problem
) -> Problem:
    """`refused`, or for an order no longer open (`order_not_open`) that settlement has not
    recorded closed yet (it is behind or stopped), 409 `order_not_settled`: the risk stage
    knows the order closed, GET /v1/orders/{id} still answers it `accepted` (or `open`)."""
    if refused.kind != RejectReason.ORDER_NOT_OPEN.value:
        return refused
    try:
        # Named as the exchange knows it, or as the account placed it.
        rows = [await ledger.order(order_id)]
        rows.append(await ledger.order(exchange_order_id(account, order_id)))
    except Exception as error:
        if database_unavailable(error):
            return refused  # the risk stage's answer stands without the ledger's
        raise
    if any(row is not None and row["status"] != "open" for row in rows):
        return refused
    return Problem(
        409,
        "order_not_settled",
        f"订单 {order_id!r} 已不在挂单中 (已成交、已撤销或已过期), 结算尚未记录 / order "
        f"{order_id!r} of account {account} is no longer open (it filled, was cancelled or "
        f"expired) and settlement has not recorded it yet: GET /v1/orders/{order_id} shows "
        "it as accepted until it has; nothing was changed",
        order_id=order_id,
    )


def _not_changed(refused: CancelRejected | AmendRejected) -> Problem:
    """The problem of a cancel or amend refused because the order is not open: 409 for a
    closed order of the account; 404 `unknown_order` alike for an id never used and for
    another account's order, so the answer reveals nothing of other accounts."""
    if refused.reason is RejectReason.ORDER_NOT_OPEN:
        return Problem(409, refused.reason.value, refused.message, order_id=refused.order_id)
    if refused.reason in _NOT_THE_ACCOUNTS_OPEN_ORDER:
        return Problem(
            404,
            RejectReason.UNKNOWN_ORDER.value,
            f"account {refused.account_id} has no open order {refused.order_id!r}",
            order_id=refused.order_id,
        )
    return Problem(422, refused.reason.value, refused.message, order_id=refused.order_id)
