"""Funds and capacity: deposits and withdrawals of cash and of sellable capacity."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    StrictInt,
)

from exchange.domain.messages.common import (
    Currency,
    Event,
    Identifier,
    Message,
    PositiveInt,
    RejectReason,
    Symbol,
)


class DepositFunds(Message):
    """Credit cash to an account, in fen of `currency`."""

    type: Literal["DepositFunds"] = "DepositFunds"
    deposit_id: Identifier
    account_id: Identifier
    amount: PositiveInt
    currency: Currency = "CNY"


class DepositCapacity(Message):
    """Make capacity sellable: `quantity` units of one contract that the provider will deliver."""

    type: Literal["DepositCapacity"] = "DepositCapacity"
    deposit_id: Identifier
    account_id: Identifier
    symbol: Symbol
    quantity: PositiveInt


class WithdrawFunds(Message):
    """Pay cash out of an account; only available cash, never what is held."""

    type: Literal["WithdrawFunds"] = "WithdrawFunds"
    withdrawal_id: Identifier
    account_id: Identifier
    amount: PositiveInt
    currency: Currency = "CNY"


class WithdrawCapacity(Message):
    """Take unsold deposited capacity of one contract back, until its gate closes."""

    type: Literal["WithdrawCapacity"] = "WithdrawCapacity"
    withdrawal_id: Identifier
    account_id: Identifier
    symbol: Symbol
    quantity: PositiveInt


class FundsDeposited(Event):
    """Cash was credited to an account.

    Version 2 names the currency; version 1 (no `currency`) was always CNY fen.
    """

    # Narrows the base's schema version to this event's; mypy sees a changed field type.
    v: Literal[2] = 2  # type: ignore[assignment]
    type: Literal["FundsDeposited"] = "FundsDeposited"
    deposit_id: str
    account_id: str
    amount: StrictInt
    currency: Currency


class CapacityDeposited(Event):
    """A provider's capacity in one contract became sellable."""

    type: Literal["CapacityDeposited"] = "CapacityDeposited"
    deposit_id: str
    account_id: str
    symbol: str
    quantity: StrictInt


class DepositRejected(Event):
    """A deposit was refused; nothing changed."""

    type: Literal["DepositRejected"] = "DepositRejected"
    deposit_id: str
    account_id: str
    reason: RejectReason
    message: str


class FundsWithdrawn(Event):
    """Cash was paid out of an account."""

    type: Literal["FundsWithdrawn"] = "FundsWithdrawn"
    withdrawal_id: str
    account_id: str
    amount: StrictInt
    currency: Currency = "CNY"


class CapacityWithdrawn(Event):
    """Unsold capacity of one contract was taken back by its provider."""

    type: Literal["CapacityWithdrawn"] = "CapacityWithdrawn"
    withdrawal_id: str
    account_id: str
    symbol: str
    quantity: StrictInt
