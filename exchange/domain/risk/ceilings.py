"""The exchange's ceiling (`accounts.CEILING`) as risk holds it: why accepting a command would
take an amount past it ("" if it would not)."""

from __future__ import annotations

from exchange.domain import accounts as money
from exchange.domain.risk.state import RiskState


def money_past_ceiling(state: RiskState, what: str, amount: int) -> str:
    """The money brought into the exchange, of which each commands partition may bring in
    its equal share: `what` (a deposit, a budget) would bring in `amount` fen."""
    total = state.money_in + amount
    share = money.CEILING // state.partitions
    if total > share:
        return (
            f"{what} of {amount} fen would take the money brought into the exchange "
            f"through this risk partition to {total} fen, past its share of the "
            f"exchange's ceiling ({share} fen of {money.CEILING} fen, over {state.partitions} "
            "partitions)"
        )
    return ""


def capacity_past_ceiling(state: RiskState, account_id: str, symbol: str, quantity: int) -> str:
    """An account's capacity in one contract, were `quantity` units deposited."""
    held = state.accounts.capacity.get((account_id, symbol))
    total = quantity + (0 if held is None else held.available + held.held)
    if total > money.CEILING:
        return (
            f"account {account_id} would hold {total} units of "
            f"{symbol}, past the ceiling of {money.CEILING} units in one contract"
        )
    return ""


def order_past_ceiling(price: int, units: int) -> str:
    """One order's price x quantity (a block's over all its hours)."""
    if price * units > money.CEILING:
        return (
            f"an order of {units} units at {price} fen comes to {price * units} fen, "
            f"past the ceiling of {money.CEILING} fen for one order"
        )
    return ""
