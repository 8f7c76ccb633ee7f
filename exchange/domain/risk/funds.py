"""Funds and capacity: deposits of cash and of sellable capacity, and their withdrawals."""

from __future__ import annotations

from exchange.domain.messages import (
    CapacityDeposited,
    CapacityWithdrawn,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    Event,
    EventStamp,
    FundsDeposited,
    FundsWithdrawn,
    RejectReason,
    WithdrawCapacity,
    WithdrawFunds,
    scoped,
)
from exchange.domain.risk.ceilings import capacity_past_ceiling, money_past_ceiling
from exchange.domain.risk.requests import decide_request, request_rejected
from exchange.domain.risk.state import RiskState, own


def deposit_funds(state: RiskState, command: DepositFunds, stamp: EventStamp) -> Event:
    """Credit cash, unless the deposit's id was used or it would pass the ceiling."""
    if _deposit_id_used(state, command):
        return _duplicate_deposit(command, stamp)
    if past := money_past_ceiling(state, "a deposit", command.amount):
        return _deposit_rejected(command, stamp, RejectReason.CEILING_EXCEEDED, past)
    deposited = FundsDeposited(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        deposit_id=command.deposit_id,
        account_id=command.account_id,
        amount=command.amount,
        currency=command.currency,
    )
    return _credit(state, command, deposited)


def deposit_capacity(state: RiskState, command: DepositCapacity, stamp: EventStamp) -> Event:
    """Make capacity of a listed contract sellable, unless the deposit's id was used or it
    would pass the ceiling."""
    if _deposit_id_used(state, command):
        return _duplicate_deposit(command, stamp)
    if past := capacity_past_ceiling(state, command.account_id, command.symbol, command.quantity):
        return _deposit_rejected(command, stamp, RejectReason.CEILING_EXCEEDED, past)
    if state.listed(command.symbol, stamp.ts) is None:
        return _deposit_rejected(command, stamp, *state.not_listed(command.symbol, stamp.ts))
    deposited = CapacityDeposited(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        deposit_id=command.deposit_id,
        account_id=command.account_id,
        symbol=command.symbol,
        quantity=command.quantity,
    )
    return _credit(state, command, deposited)


def withdraw_funds(state: RiskState, command: WithdrawFunds, stamp: EventStamp) -> Event:
    """Pay out available cash, never what is held."""
    return decide_request(state, command, stamp, _withdraw_funds)


def withdraw_capacity(state: RiskState, command: WithdrawCapacity, stamp: EventStamp) -> Event:
    """Take back unsold capacity until its contract's gate closes."""
    return decide_request(state, command, stamp, _withdraw_capacity)


def _deposit_id_used(state: RiskState, command: DepositFunds | DepositCapacity) -> bool:
    key = scoped(command.account_id, command.deposit_id)
    return key in state.deposit_ids or command.deposit_id in state.deposit_ids


def _duplicate_deposit(command: DepositFunds | DepositCapacity, stamp: EventStamp) -> Event:
    return _deposit_rejected(
        command,
        stamp,
        RejectReason.DUPLICATE_DEPOSIT_ID,
        f"deposit id {command.deposit_id!r} was used before by {command.account_id}",
    )


def _credit(
    state: RiskState,
    command: DepositFunds | DepositCapacity,
    deposited: FundsDeposited | CapacityDeposited,
) -> Event:
    state.deposit_ids.add(scoped(command.account_id, command.deposit_id))
    state.accounts.apply(deposited, own)
    return deposited


def _deposit_rejected(
    command: DepositFunds | DepositCapacity,
    stamp: EventStamp,
    reason: RejectReason,
    message: str,
) -> DepositRejected:
    return DepositRejected(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        deposit_id=command.deposit_id,
        account_id=command.account_id,
        reason=reason,
        message=message,
    )


def _withdraw_funds(state: RiskState, command: WithdrawFunds, stamp: EventStamp) -> Event:
    balance = state.accounts.cash.get(command.account_id)
    available = 0 if balance is None else balance.available
    if command.amount > available:
        held = 0 if balance is None else balance.held
        return request_rejected(
            command,
            stamp,
            RejectReason.INSUFFICIENT_FUNDS,
            f"withdrawal of {command.amount} fen exceeds the {available} fen available "
            f"(another {held} fen is held for open orders and cannot be withdrawn)",
        )
    withdrawn = FundsWithdrawn(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        withdrawal_id=command.withdrawal_id,
        account_id=command.account_id,
        amount=command.amount,
        currency=command.currency,
    )
    state.accounts.apply(withdrawn, own)
    return withdrawn


def _withdraw_capacity(state: RiskState, command: WithdrawCapacity, stamp: EventStamp) -> Event:
    contract = state.catalogue.get(command.symbol)
    if contract is None:
        return request_rejected(
            command,
            stamp,
            RejectReason.UNKNOWN_CONTRACT,
            f"contract {command.symbol!r} is not listed",
        )
    if stamp.ts >= state.catalogue.retires_at(contract):
        return request_rejected(
            command,
            stamp,
            RejectReason.GATE_CLOSED,
            f"the gate of {command.symbol} has closed: its capacity is due for delivery",
        )
    available = state.accounts.available_capacity(command.account_id, command.symbol)
    if command.quantity > available:
        return request_rejected(
            command,
            stamp,
            RejectReason.INSUFFICIENT_CAPACITY,
            f"withdrawal of {command.quantity} units of {command.symbol} exceeds the "
            f"{available} unsold units available",
        )
    withdrawn = CapacityWithdrawn(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        withdrawal_id=command.withdrawal_id,
        account_id=command.account_id,
        symbol=command.symbol,
        quantity=command.quantity,
    )
    state.accounts.apply(withdrawn, own)
    return withdrawn
