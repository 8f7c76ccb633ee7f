"""Account limits: operators set them (`SetAccountLimits`), orders and amends are held to them."""

from __future__ import annotations

from exchange.domain.catalogue import strip_hours
from exchange.domain.messages import (
    AccountLimitsSet,
    Event,
    EventStamp,
    RejectReason,
    RequestRejected,
    SetAccountLimits,
)
from exchange.domain.risk.state import AccountLimits, RiskState


def set_account_limits(state: RiskState, command: SetAccountLimits, stamp: EventStamp) -> Event:
    """Set (or, with neither limit, lift) an account's limits, if an operator signed it."""
    forged = state.not_operator(command)
    if forged:
        return RequestRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            request=command.type,
            request_id=command.account_id,
            account_id=command.operator_id,
            reason=RejectReason.NOT_OPERATOR,
            message=forged,
        )
    limits = AccountLimits(command.max_open_quantity, command.max_open_notional)
    if limits == AccountLimits(None, None):
        state.limits.pop(command.account_id, None)
    else:
        state.limits[command.account_id] = limits
    return AccountLimitsSet(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        operator_id=command.operator_id,
        account_id=command.account_id,
        max_open_quantity=command.max_open_quantity,
        max_open_notional=command.max_open_notional,
        reason=command.reason,
    )


def over_limit(state: RiskState, account_id: str, quantity: int, notional: int) -> str:
    """Why adding `quantity` units and `notional` fen of open orders would break the account's
    limits ("" if it would not)."""
    limits = state.limits.get(account_id)
    if limits is None:
        return ""
    # Only accounts an operator limited pay for this scan of the open orders.
    mine = [o for o in state.accounts.open_orders.values() if o.account_id == account_id]
    open_quantity = quantity + sum(o.remaining for o in mine)
    open_notional = notional + sum(o.price * o.remaining * strip_hours(o.symbol) for o in mine)
    if limits.max_open_quantity is not None and open_quantity > limits.max_open_quantity:
        return (
            f"open orders of {account_id} would come to {open_quantity} units, over its "
            f"limit of {limits.max_open_quantity}"
        )
    if limits.max_open_notional is not None and open_notional > limits.max_open_notional:
        return (
            f"open orders of {account_id} would come to {open_notional} fen, over its "
            f"limit of {limits.max_open_notional}"
        )
    return ""
