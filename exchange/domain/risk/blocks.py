"""Block orders: one quantity in every hour of consecutive delivery hours of one family, held
and accepted whole or not at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from exchange.domain.messages import (
    BlockAccepted,
    Event,
    EventStamp,
    OrderRejected,
    PlaceBlockOrder,
    RejectReason,
    exchange_order_id,
)
from exchange.domain.risk.ceilings import order_past_ceiling
from exchange.domain.risk.gates import day_ahead_refusal
from exchange.domain.risk.limits import over_limit
from exchange.domain.risk.orders import eligible_grant, order_id_used, own_group
from exchange.domain.risk.state import RiskState, own


def place_block_order(state: RiskState, command: PlaceBlockOrder, stamp: EventStamp) -> Event:
    """Accept a block and hold its cash or each hour's capacity, or reject it holding nothing."""
    order_id = exchange_order_id(command.account_id, command.order_id)
    terms = BlockTerms()
    reason, message = check_block(state, command, order_id, stamp.ts, terms)
    if reason is not None:
        return OrderRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=order_id,
            account_id=command.account_id,
            symbol=command.symbols[0],
            side=command.side,
            price=command.price,
            quantity=command.quantity * len(command.symbols),
            client_order_id=command.client_order_id,
            reason=reason,
            message=message,
        )
    state.order_ids[order_id] = command.account_id
    accepted = accepted_block(command, order_id, terms, stamp)
    state.accounts.apply(accepted, own)
    return accepted


def accepted_block(
    command: PlaceBlockOrder,
    order_id: str,
    terms: BlockTerms,
    stamp: EventStamp,
    group: str | None = None,
    dropped: list[int] | None = None,
) -> BlockAccepted:
    """The acceptance of a checked block on `terms` (an alternative of exclusive `group`,
    which dropped the alternatives `dropped`)."""
    return BlockAccepted(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        order_id=order_id,
        account_id=command.account_id,
        symbol=command.symbols[0],
        family=command.symbols[0].rsplit(".", 1)[0],
        symbols=command.symbols,
        side=command.side,
        price=command.price,
        quantity=command.quantity,
        client_order_id=command.client_order_id,
        stp_group=own_group(command),
        stp_mode=command.stp_mode,
        bond_per_unit=terms.bond_per_unit,
        voucher=command.voucher,
        voucher_reserved=terms.voucher_reserved,
        voucher_rate_bps=terms.voucher_rate_bps,
        voucher_related=terms.voucher_related,
        group=group,
        dropped=dropped or [],
    )


@dataclass(slots=True)
class BlockTerms:
    """What acceptance decides about a block beyond what it asked for."""

    bond_per_unit: int = 0
    voucher_reserved: int = 0
    voucher_rate_bps: int = 0
    voucher_related: list[str] = field(default_factory=list)


def check_block(
    state: RiskState, command: PlaceBlockOrder, order_id: str, at_ms: int, terms: BlockTerms
) -> tuple[RejectReason | None, str]:
    specs = [state.listed(s, at_ms) for s in command.symbols]
    missing = [s for s, spec in zip(command.symbols, specs, strict=True) if spec is None]
    if missing:
        return state.not_listed(missing[0], at_ms)
    listed = [spec for spec in specs if spec is not None]
    terms_in_block = [spec.symbol for spec in listed if spec.is_term]
    if terms_in_block:
        return (
            RejectReason.INVALID_BLOCK,
            f"a block is of hourly contracts; {terms_in_block[0]} covers a term and trades as "
            "an order of its own",
        )
    first = listed[0]
    if command.day_ahead and (refused := day_ahead_refusal(state, command.symbols, at_ms)):
        return refused
    consecutive = all(
        spec.family == first.family
        and spec.delivery_start == first.delivery_start + timedelta(hours=i)
        for i, spec in enumerate(listed)
    )
    if not consecutive:
        return (
            RejectReason.INVALID_BLOCK,
            "a block's contracts must be consecutive delivery hours of one family",
        )
    if command.price % first.tick_size:
        return (
            RejectReason.PRICE_NOT_ON_TICK,
            f"price {command.price} is not a multiple of the tick size {first.tick_size}",
        )
    if order_id_used(state, order_id, command.account_id, command.order_id):
        return (
            RejectReason.DUPLICATE_ORDER_ID,
            f"order id {command.order_id!r} was used before by {command.account_id}",
        )
    units = command.quantity * len(listed)
    over = over_limit(state, command.account_id, units, command.price * units)
    if over:
        return RejectReason.ACCOUNT_LIMIT_EXCEEDED, over
    if past := order_past_ceiling(command.price, units):
        return RejectReason.CEILING_EXCEEDED, past
    accounts = state.accounts
    if command.side == "buy":
        if command.voucher is not None:
            grant, why = eligible_grant(
                state, command.account_id, command.voucher, command.symbols[0], at_ms
            )
            if grant is None:
                return RejectReason.NOT_ELIGIBLE, why
            terms.voucher_reserved = grant.voucher_for(command.price * units, len(listed))
            terms.voucher_rate_bps = grant.rate_bps
            terms.voucher_related = list(grant.related)
        needed = accounts.buy_hold(command.symbols[0], command.price, units)
        available = accounts.available_cash(command.account_id)
        if needed > available:
            return (
                RejectReason.INSUFFICIENT_FUNDS,
                f"block needs {needed} fen, account has {available} fen available",
            )
        return None, ""
    if command.voucher is not None:
        return RejectReason.NOT_ELIGIBLE, "vouchers are for buys"
    for symbol in command.symbols:
        available = accounts.available_capacity(command.account_id, symbol)
        if command.quantity > available:
            return (
                RejectReason.INSUFFICIENT_CAPACITY,
                f"block sells {command.quantity} units of {symbol}, {available} available",
            )
    # A sell block is backed by deposited capacity: it posts a provider's delivery bond.
    terms.bond_per_unit = accounts.bond_per_unit(command.price)
    bond = terms.bond_per_unit * units
    available = accounts.available_cash(command.account_id)
    if bond > available:
        return (
            RejectReason.INSUFFICIENT_FUNDS,
            f"selling {units} units of deposited capacity needs a delivery bond of {bond} fen, "
            f"account {command.account_id} has {available} fen available",
        )
    return None, ""
