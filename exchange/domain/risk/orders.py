"""Orders: placing a single order (holding its cash, capacity or entitlement and its voucher),
amending it, cancelling it, and the kill switch."""

from __future__ import annotations

from dataclasses import dataclass, field

from exchange.domain.accounts import BPS, Grant, OpenOrder
from exchange.domain.catalogue import cst_iso, strip_hours, to_utc_ms
from exchange.domain.messages import (
    AmendOrder,
    AmendRejected,
    AmendRequested,
    Backing,
    CancelAllOrders,
    CancelAllRequested,
    CancelOrder,
    CancelRejected,
    CancelRequested,
    Event,
    EventStamp,
    OrderAccepted,
    OrderRejected,
    PlaceBlockOrder,
    PlaceOrder,
    RejectReason,
    exchange_order_id,
    scoped,
)
from exchange.domain.risk.ceilings import order_past_ceiling
from exchange.domain.risk.gates import day_ahead_refusal
from exchange.domain.risk.limits import over_limit
from exchange.domain.risk.state import RiskState, own


@dataclass(slots=True)
class _Terms:
    """What acceptance decides about an order beyond what it asked for."""

    price: int
    backing: Backing = "capacity"
    bond_per_unit: int = 0
    voucher_reserved: int = 0
    voucher_rate_bps: int = 0
    voucher_related: list[str] = field(default_factory=list)


def place_order(state: RiskState, command: PlaceOrder, stamp: EventStamp) -> Event:
    """Accept an order and hold what it needs, or reject it holding nothing."""
    order_id = exchange_order_id(command.account_id, command.order_id)
    terms, reason, message = _check_order(state, command, order_id, stamp.ts)
    if reason is not None:
        return OrderRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=order_id,
            account_id=command.account_id,
            symbol=command.symbol,
            side=command.side,
            price=command.price,
            quantity=command.quantity,
            client_order_id=command.client_order_id,
            reason=reason,
            message=message,
        )
    state.order_ids[order_id] = command.account_id
    accepted = OrderAccepted(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        order_id=order_id,
        account_id=command.account_id,
        symbol=command.symbol,
        side=command.side,
        price=terms.price,
        quantity=command.quantity,
        client_order_id=command.client_order_id,
        time_in_force=command.time_in_force,
        expire_at=command.expire_at,
        order_type=command.order_type,
        min_quantity=command.min_quantity,
        all_or_none=command.all_or_none,
        post_only=command.post_only,
        stp_group=own_group(command),
        stp_mode=command.stp_mode,
        backing=terms.backing,
        bond_per_unit=terms.bond_per_unit,
        voucher=command.voucher,
        voucher_reserved=terms.voucher_reserved,
        voucher_rate_bps=terms.voucher_rate_bps,
        voucher_related=terms.voucher_related,
        net_price=command.price if command.limit_basis == "net" else None,
    )
    state.accounts.apply(accepted, own)
    return accepted


def cancel_order(state: RiskState, command: CancelOrder, stamp: EventStamp) -> Event:
    """Send the cancel of an open order of the account's own to its matching partition."""
    order = _open_order(state, command.account_id, command.order_id)
    if order is None:
        reason, message = _not_open(state, command.order_id, command.account_id)
        return CancelRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=command.order_id,
            account_id=command.account_id,
            reason=reason,
            message=message,
        )
    return CancelRequested(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        order_id=order.order_id,
        account_id=order.account_id,
        # A block is routed by its first hour (its `symbol` is the family).
        symbol=order.hours[0] if order.hours else order.symbol,
    )


def amend_order(state: RiskState, command: AmendOrder, stamp: EventStamp) -> Event:
    """Hold what an amend adds and send it on, or refuse it leaving the order unchanged."""
    order = _open_order(state, command.account_id, command.order_id)
    reason: RejectReason | None = None
    message = ""
    if order is None:
        reason, message = _not_open(state, command.order_id, command.account_id)
    elif order.hours:
        reason = RejectReason.NOT_AMENDABLE
        message = "a block order cannot be amended: cancel it and place another"
    elif order.voucher is not None:
        reason = RejectReason.NOT_AMENDABLE
        message = "an order with a voucher reservation cannot be amended: cancel and replace it"
    elif order.bond_per_unit and (command.quantity or 0) > order.remaining:
        reason = RejectReason.NOT_AMENDABLE
        message = "a bonded sell cannot grow: place another order for the extra quantity"
    else:
        contract = state.catalogue.get(order.symbol)
        price = command.price or order.price
        quantity = command.quantity or order.remaining
        accounts = state.accounts
        needed = accounts.own_hold(order, price, quantity) - accounts.own_hold(
            order, order.price, order.remaining
        )
        extra = max(0, needed)
        hours = strip_hours(order.symbol)
        over = over_limit(
            state,
            order.account_id,
            quantity - order.remaining,
            (price * quantity - order.price * order.remaining) * hours,
        )
        if contract is not None and price % contract.tick_size:
            reason = RejectReason.PRICE_NOT_ON_TICK
            message = f"price {price} is not a multiple of the tick size {contract.tick_size}"
        elif past := order_past_ceiling(price, quantity * hours):
            reason = RejectReason.CEILING_EXCEEDED
            message = past
        elif uncovered := _bond_uncovered(state, order, price):
            reason = RejectReason.AMEND_ABOVE_BOND
            message = uncovered
        elif over:
            reason = RejectReason.ACCOUNT_LIMIT_EXCEEDED
            message = over
        elif extra and order.side == "buy":
            available = accounts.available_cash(order.account_id)
            if extra > available:
                reason = RejectReason.INSUFFICIENT_FUNDS
                message = f"amend needs {extra} fen more, {available} fen available"
        elif extra and order.backing == "entitlement":
            # An entitlement-backed sell holds no capacity: it cannot grow.
            reason = RejectReason.NOT_AMENDABLE
            message = "a resale cannot grow: place another order for the extra quantity"
        elif extra:
            available = accounts.available_capacity(order.account_id, order.symbol)
            if extra > available:
                reason = RejectReason.INSUFFICIENT_CAPACITY
                message = f"amend needs {extra} units more, {available} available"
    if reason is not None or order is None:
        return AmendRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=command.order_id if order is None else order.order_id,
            account_id=command.account_id,
            reason=reason or RejectReason.UNKNOWN_ORDER,
            message=message,
        )
    requested = AmendRequested(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        order_id=order.order_id,
        account_id=order.account_id,
        symbol=order.symbol,
        price=command.price,
        quantity=command.quantity,
        extra_hold=extra,
    )
    state.accounts.apply(requested, own)
    return requested


def _bond_uncovered(state: RiskState, order: OpenOrder, price: int) -> str:
    """Why a bonded sell cannot be amended up to `price`: its bond per unit, fixed at
    acceptance, is carried in the events the delivery desk and settlement fold, so it cannot
    grow with the price; "" if the order is no bonded sell raised past what its bond covers."""
    if not order.bond_per_unit or price <= order.price:
        return ""
    accounts = state.accounts
    hours = strip_hours(order.symbol)
    needed = accounts.bond_per_unit(price * hours)
    if needed <= order.bond_per_unit:
        return ""
    # A bond of b fen a unit covers the prices whose bond rounds up to at most b.
    covered = order.bond_per_unit * BPS // (accounts.rules.bond_bps * hours)
    return (
        f"有交付保证金的卖单改价不能高于保证金所保的 {covered} 分: 请撤单后按新价格重新下单 "
        f"a bonded sell's delivery bond of {order.bond_per_unit} fen a unit covers prices up "
        f"to {covered} fen, and {price} fen needs {needed} fen a unit: cancel and place a new "
        "order at the new price"
    )


def cancel_all_orders(state: RiskState, command: CancelAllOrders, stamp: EventStamp) -> Event:
    """Send the kill switch to every contract the account has open orders in."""
    symbols = sorted(
        {
            o.hours[0] if o.hours else o.symbol
            for o in state.accounts.open_orders.values()
            if o.account_id == command.account_id
        }
    )
    if not symbols:
        return CancelRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id="*",
            account_id=command.account_id,
            reason=RejectReason.ORDER_NOT_OPEN,
            message=f"account {command.account_id} has no open orders",
        )
    return CancelAllRequested(
        event_id=stamp.next_id(), ts=stamp.ts, account_id=command.account_id, symbols=symbols
    )


def own_group(command: PlaceOrder | PlaceBlockOrder) -> str | None:
    """The self-trade prevention group of an order in its account's scope (None: the account
    itself), so that no account can name another's orders as its own."""
    return None if command.stp_group is None else scoped(command.account_id, command.stp_group)


def order_id_used(state: RiskState, order_id: str, account_id: str, sent_as: str) -> bool:
    """Whether the account used the order id it sent as `sent_as` (the exchange's id
    `order_id`) before; also as the id itself, before ids were scoped by account (by this
    account, or by one a snapshot of that time did not record)."""
    return order_id in state.order_ids or state.order_ids.get(sent_as) in (account_id, "")


def _check_order(
    state: RiskState, command: PlaceOrder, order_id: str, at_ms: int
) -> tuple[_Terms, RejectReason | None, str]:
    terms = _Terms(command.price)
    contract = state.listed(command.symbol, at_ms)
    if contract is None and (closed := _resale_closed(state, command, at_ms)):
        return terms, RejectReason.CONTRACT_CLOSED, closed
    if contract is None:
        return (terms, *state.not_listed(command.symbol, at_ms))
    if command.expire_at is not None and command.time_in_force != "GTD":
        # Matching would ignore it and the order would rest past the time its sender chose.
        return (
            terms,
            RejectReason.EXPIRY_NEEDS_GTD,
            f"只有限期订单 (GTD) 可设到期时间 only a GTD order expires at expire_at; this one "
            f"is {command.time_in_force}: send time_in_force GTD, or leave expire_at out",
        )
    if command.day_ahead and (refused := day_ahead_refusal(state, [command.symbol], at_ms)):
        return (terms, *refused)
    if command.price % contract.tick_size:
        return (
            terms,
            RejectReason.PRICE_NOT_ON_TICK,
            f"price {command.price} is not a multiple of the tick size "
            f"{contract.tick_size} fen of {command.symbol}",
        )
    if order_id_used(state, order_id, command.account_id, command.order_id):
        return (
            terms,
            RejectReason.DUPLICATE_ORDER_ID,
            f"order id {command.order_id!r} was used before by {command.account_id}",
        )
    # A strip's price is per card-hour and its quantity cards in each of its hours.
    hours = strip_hours(command.symbol)
    if past := order_past_ceiling(command.price, command.quantity * hours):
        return terms, RejectReason.CEILING_EXCEEDED, past
    over = over_limit(
        state, command.account_id, command.quantity, command.price * command.quantity * hours
    )
    if over:
        return terms, RejectReason.ACCOUNT_LIMIT_EXCEEDED, over
    if command.side == "sell":
        if command.voucher is not None or command.limit_basis == "net":
            return terms, RejectReason.NOT_ELIGIBLE, "vouchers and net limits are for buys"
        return _check_sell(state, command, terms)
    if command.voucher is None:
        if command.limit_basis == "net":
            return terms, RejectReason.NOT_ELIGIBLE, "a net price limit needs a voucher programme"
    else:
        reason, message = _reserve_voucher(
            state, command, command.voucher, at_ms, terms, contract.tick_size
        )
        if reason is not None:
            return terms, reason, message
    accounts = state.accounts
    if accounts.shortfall(command.account_id, command.symbol, "buy", terms.price, command.quantity):
        needed = accounts.buy_hold(command.symbol, terms.price, command.quantity)
        available = accounts.available_cash(command.account_id)
        return (
            terms,
            RejectReason.INSUFFICIENT_FUNDS,
            f"order needs {needed} fen, account {command.account_id} has {available} fen available",
        )
    return terms, None, ""


def _resale_closed(state: RiskState, command: PlaceOrder, at_ms: int) -> str:
    """Why a resale of an hour the seller holds cannot be placed, once that hour's trading
    closed (it is being delivered, or was): "" if the seller holds none of it, or it is not an
    hour whose gate passed."""
    symbol = command.symbol
    held = state.accounts.positions.get((command.account_id, symbol))
    spec = state.catalogue.get(symbol)
    if command.side != "sell" or held is None or spec is None or spec.is_term:
        return ""
    closed = state.catalogue.retires_at(spec)
    if at_ms < closed:
        return ""
    # Held once and none now: its obligation settled (delivered, a dispute resolved, a
    # recall), or it was resold before the gate.
    holds = (
        f"{command.account_id} holds {held} units of {symbol}, but"
        if held > 0
        else f"{command.account_id} holds none of {symbol} now (what it held settled, or was "
        "resold), and"
    )
    return (
        f"{holds} its trading closed at {cst_iso(closed)} and it is delivered from "
        f"{cst_iso(to_utc_ms(spec.delivery_start))}: an hour already delivered, or about to "
        "be, cannot be resold"
    )


def _check_sell(
    state: RiskState, command: PlaceOrder, terms: _Terms
) -> tuple[_Terms, RejectReason | None, str]:
    """Back a sell by deposited capacity (with its bond) or else by an entitlement."""
    accounts = state.accounts
    account, symbol, quantity = command.account_id, command.symbol, command.quantity
    if not accounts.shortfall(account, symbol, "sell", command.price, quantity):
        # A unit of a strip is a card in each of its hours: its bond is that many hours'.
        terms.bond_per_unit = accounts.bond_per_unit(command.price * strip_hours(symbol))
        bond = terms.bond_per_unit * quantity
        available = accounts.available_cash(account)
        if bond > available:
            return (
                terms,
                RejectReason.INSUFFICIENT_FUNDS,
                f"selling {quantity} units of deposited capacity needs a delivery bond of "
                f"{bond} fen, account {account} has {available} fen available",
            )
        return terms, None, ""
    entitlement = accounts.available_entitlement(account, symbol)
    if entitlement >= quantity:
        terms.backing = "entitlement"
        return terms, None, ""
    capacity = accounts.available_capacity(account, symbol)
    settled = accounts.settled_in_period.get((account, symbol), 0)
    if settled:
        return (
            terms,
            RejectReason.OBLIGATION_SETTLED,
            f"order sells {quantity} units of {symbol}, but {settled} units {account} held of "
            "it settled when its dispute was resolved (the unused rest refunded): they are not "
            f"its to resell; it may resell {max(entitlement, 0)} units and has {capacity} of "
            "deposited capacity",
        )
    return (
        terms,
        RejectReason.INSUFFICIENT_CAPACITY,
        f"order sells {quantity} units of {symbol}, account {account} has {capacity} "
        f"available of deposited capacity and {entitlement} of entitlements to resell",
    )


def _reserve_voucher(
    state: RiskState, command: PlaceOrder, voucher: str, ts: int, terms: _Terms, tick: int
) -> tuple[RejectReason | None, str]:
    """The voucher part to reserve from the account's grant of programme `voucher`, and for a
    net limit the gross limit it allows."""
    grant, why = eligible_grant(state, command.account_id, voucher, command.symbol, ts)
    if grant is None:
        return RejectReason.NOT_ELIGIBLE, why
    if command.order_type != "limit":
        return RejectReason.NOT_ELIGIBLE, "a voucher applies to limit orders only"
    # The voucher applies to a strip's whole amount, capped once per hourly contract.
    hours = strip_hours(command.symbol)
    quantity = command.quantity * hours
    price = command.price
    if command.limit_basis == "net":
        # The highest gross price on the tick whose cost after the voucher stays within
        # the net limit: cost less voucher only grows with the price, so bisect.
        low, high = command.price // tick, command.price * BPS // tick + 1
        while high - low > 1:
            middle = (low + high) // 2
            gross = middle * tick
            gross_amount = gross * quantity
            if gross_amount - grant.voucher_for(gross_amount, hours) <= command.price * quantity:
                low = middle
            else:
                high = middle
        price = low * tick
    terms.price = price
    terms.voucher_reserved = grant.voucher_for(price * quantity, hours)
    terms.voucher_rate_bps = grant.rate_bps
    terms.voucher_related = list(grant.related)
    return None, ""


def eligible_grant(
    state: RiskState, account_id: str, voucher: str, symbol: str, ts: int
) -> tuple[Grant | None, str]:
    """The account's grant of programme `voucher` if a buy of `symbol` at log time `ts` may use
    it, else None and why not."""
    grant = state.accounts.grants.get((voucher, account_id))
    if grant is None:
        return None, f"account {account_id} holds no grant of programme {voucher!r}"
    why = grant.eligible(symbol, ts)
    return (None, why) if why else (grant, "")


def _open_order(state: RiskState, account_id: str, order_id: str) -> OpenOrder | None:
    """The account's open order that a cancel or amend names, by the exchange's id or by
    the id the account placed it as."""
    orders = state.accounts.open_orders
    for candidate in (order_id, exchange_order_id(account_id, order_id)):
        order = orders.get(candidate)
        if order is not None and order.account_id == account_id:
            return order
    return None


def _not_open(state: RiskState, order_id: str, account_id: str) -> tuple[RejectReason, str]:
    """Why the account cannot change `order_id`, which names no open order of its own.

    Another account's order is refused as `not_order_owner` with the words of an unknown
    one, so the API can answer both alike and reveal nothing.
    """
    order = state.accounts.open_orders.get(order_id)
    owner = order.account_id if order is not None else state.order_ids.get(order_id)
    if owner == account_id or exchange_order_id(account_id, order_id) in state.order_ids:
        return (
            RejectReason.ORDER_NOT_OPEN,
            f"order {order_id!r} of account {account_id} has already filled, been "
            "cancelled or expired",
        )
    # No owner: never accepted, or accepted before owners were kept (see `RiskState.restore`).
    reason = RejectReason.NOT_ORDER_OWNER if owner else RejectReason.UNKNOWN_ORDER
    return reason, f"account {account_id} has no open order {order_id!r}"
