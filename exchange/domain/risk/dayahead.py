"""Exclusive groups (needs) for the day-ahead auction: accepted as one block per listed
alternative, each holding its own cash and voucher until the auction; alternatives not listed
are dropped, and each accepted block names them."""

from __future__ import annotations

from exchange.domain.messages import (
    MAX_ALTERNATIVES,
    Event,
    EventStamp,
    ExclusiveGroupAccepted,
    OrderRejected,
    PlaceBlockOrder,
    PlaceExclusiveGroup,
    RejectReason,
    exchange_order_id,
)
from exchange.domain.risk.blocks import BlockTerms, accepted_block, check_block
from exchange.domain.risk.gates import day_ahead_refusal
from exchange.domain.risk.limits import over_limit
from exchange.domain.risk.orders import order_id_used
from exchange.domain.risk.state import RiskState, own


def place_exclusive_group(
    state: RiskState, command: PlaceExclusiveGroup, stamp: EventStamp
) -> Event:
    """Accept a need's listed alternatives, each a buy block holding its own cash and voucher,
    or reject the need holding nothing."""
    group_id = exchange_order_id(command.account_id, command.order_id)
    blocks, reason, message = _check_group(state, command, group_id, stamp.ts)
    if reason is not None:
        return OrderRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=group_id,
            account_id=command.account_id,
            symbol=command.alternatives[0][0],
            side="buy",
            price=command.price,
            quantity=command.quantity * len(command.alternatives[0]),
            reason=reason,
            message=message,
        )
    state.order_ids[group_id] = command.account_id
    held = {block.order_id for block in blocks}
    dropped = [
        n for n in range(1, len(command.alternatives) + 1) if f"{command.order_id}.{n}" not in held
    ]
    accepted = []
    for block in blocks:
        order_id = exchange_order_id(command.account_id, block.order_id)
        terms = BlockTerms()
        # Funds and limits were checked for all alternatives together: this only sets the
        # terms (the voucher part, from what earlier alternatives left of the grant).
        check_block(state, block, order_id, stamp.ts, terms)
        state.order_ids[order_id] = command.account_id
        event = accepted_block(block, order_id, terms, stamp, group=group_id, dropped=dropped)
        state.accounts.apply(event, own)
        accepted.append(event)
    return ExclusiveGroupAccepted(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        order_id=group_id,
        account_id=command.account_id,
        blocks=accepted,
    )


def _check_group(
    state: RiskState, command: PlaceExclusiveGroup, group_id: str, at_ms: int
) -> tuple[list[PlaceBlockOrder], RejectReason | None, str]:
    alternatives = command.alternatives
    if len(alternatives) > MAX_ALTERNATIVES:
        return (
            [],
            RejectReason.TOO_MANY_ALTERNATIVES,
            f"a need offers at most {MAX_ALTERNATIVES} alternatives, this one {len(alternatives)}",
        )
    if order_id_used(state, group_id, command.account_id, command.order_id):
        return (
            [],
            RejectReason.DUPLICATE_ORDER_ID,
            f"order id {command.order_id!r} was used before by {command.account_id}",
        )
    blocks: list[PlaceBlockOrder] = []
    unlisted: tuple[RejectReason, str] | None = None
    for n, symbols in enumerate(alternatives, start=1):
        block = PlaceBlockOrder(
            order_id=f"{command.order_id}.{n}",
            account_id=command.account_id,
            symbols=symbols,
            side="buy",
            price=command.limit_of(n - 1),
            quantity=command.quantity,
            voucher=command.voucher,
        )
        missing = [s for s in symbols if state.listed(s, at_ms) is None]
        if missing:
            unlisted = unlisted or state.not_listed(missing[0], at_ms)
            continue
        # The group's own gate check: past the day-ahead gate, the next intraday auction.
        refused = day_ahead_refusal(state, symbols, at_ms, exclusive=True)
        if refused is None:
            order_id = exchange_order_id(command.account_id, block.order_id)
            refused = _refused(check_block(state, block, order_id, at_ms, BlockTerms()))
        if refused is not None:
            reason, why = refused
            return [], reason, f"alternative {n} ({symbols[0]}, {len(symbols)} h): {why}"
        blocks.append(block)
    if not blocks:
        reason, why = unlisted or (RejectReason.UNKNOWN_CONTRACT, "no alternatives")
        return [], reason, f"none of the need's alternatives is listed: {why}"
    accounts = state.accounts
    units = sum(command.quantity * len(b.symbols) for b in blocks)
    notional = sum(b.price * command.quantity * len(b.symbols) for b in blocks)
    over = over_limit(state, command.account_id, units, notional)
    if over:
        return [], RejectReason.ACCOUNT_LIMIT_EXCEEDED, over
    needed = sum(
        accounts.buy_hold(b.symbols[0], b.price, command.quantity * len(b.symbols)) for b in blocks
    )
    available = accounts.available_cash(command.account_id)
    if needed > available:
        return (
            [],
            RejectReason.INSUFFICIENT_FUNDS,
            f"the need's {len(blocks)} alternatives hold {needed} fen together until the "
            f"auction, account {command.account_id} has {available} fen available",
        )
    return blocks, None, ""


def _refused(decided: tuple[RejectReason | None, str]) -> tuple[RejectReason, str] | None:
    reason, message = decided
    return None if reason is None else (reason, message)
