"""The risk stage: validates commands and holds funds or capacity before anything trades.

Pure and deterministic: it is a function of the commands topic alone (participants' commands
and the matching stage's fills and cancels fed back into the same partitions), so the order in
which it saw them is recorded by the log itself and a replay decides exactly the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from exchange.domain.accounts import Accounts
from exchange.domain.catalogue import Catalogue
from exchange.domain.messages import (
    CancelOrder,
    CancelRejected,
    CancelRequested,
    CapacityDeposited,
    Command,
    CommandRejected,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    Event,
    EventStamp,
    FundsDeposited,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    PlaceOrder,
    RejectReason,
    TradeExecuted,
)


class RiskStage:
    """Accepts or rejects each command of the accounts in its partitions."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.accounts = Accounts()
        self._order_ids: set[str] = set()
        self._deposit_ids: set[str] = set()

    def handle(self, command: Command, stamp: EventStamp) -> Event:
        """Decide one command; the returned event goes to the orders topic."""
        if isinstance(command, PlaceOrder):
            return self._place(command, stamp)
        if isinstance(command, CancelOrder):
            return self._cancel(command, stamp)
        return self._deposit(command, stamp)

    def _place(self, command: PlaceOrder, stamp: EventStamp) -> Event:
        reason, message = self._check_order(command)
        if reason is not None:
            return OrderRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                order_id=command.order_id,
                account_id=command.account_id,
                symbol=command.symbol,
                side=command.side,
                price=command.price,
                quantity=command.quantity,
                client_order_id=command.client_order_id,
                reason=reason,
                message=message,
            )
        self._order_ids.add(command.order_id)
        accepted = OrderAccepted(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=command.order_id,
            account_id=command.account_id,
            symbol=command.symbol,
            side=command.side,
            price=command.price,
            quantity=command.quantity,
            client_order_id=command.client_order_id,
        )
        self.accounts.hold(accepted)
        return accepted

    def _check_order(self, command: PlaceOrder) -> tuple[RejectReason | None, str]:
        contract = self.catalogue.get(command.symbol)
        if contract is None:
            return RejectReason.UNKNOWN_CONTRACT, f"contract {command.symbol!r} is not listed"
        if command.price % contract.tick_size:
            return (
                RejectReason.PRICE_NOT_ON_TICK,
                f"price {command.price} is not a multiple of the tick size "
                f"{contract.tick_size} fen of {command.symbol}",
            )
        if command.order_id in self._order_ids:
            return RejectReason.DUPLICATE_ORDER_ID, f"order id {command.order_id!r} was used before"
        lacking = self.accounts.shortfall(
            command.account_id, command.symbol, command.side, command.price, command.quantity
        )
        if lacking and command.side == "buy":
            available = self.accounts.available_cash(command.account_id)
            return (
                RejectReason.INSUFFICIENT_FUNDS,
                f"order needs {command.price * command.quantity} fen, "
                f"account {command.account_id} has {available} fen available",
            )
        if lacking:
            available = self.accounts.available_capacity(command.account_id, command.symbol)
            return (
                RejectReason.INSUFFICIENT_CAPACITY,
                f"order sells {command.quantity} units of {command.symbol}, "
                f"account {command.account_id} has {available} available",
            )
        return None, ""

    def _cancel(self, command: CancelOrder, stamp: EventStamp) -> Event:
        order = self.accounts.open_orders.get(command.order_id)
        if order is None or order.account_id != command.account_id:
            reason = RejectReason.UNKNOWN_ORDER if order is None else RejectReason.NOT_ORDER_OWNER
            return CancelRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                order_id=command.order_id,
                account_id=command.account_id,
                reason=reason,
                message=f"account {command.account_id} has no open order {command.order_id!r}",
            )
        return CancelRequested(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=order.order_id,
            account_id=order.account_id,
            symbol=order.symbol,
        )

    def _deposit(self, command: DepositFunds | DepositCapacity, stamp: EventStamp) -> Event:
        if command.deposit_id in self._deposit_ids:
            return self._deposit_rejected(
                command,
                stamp,
                RejectReason.DUPLICATE_DEPOSIT_ID,
                f"deposit id {command.deposit_id!r} was used before",
            )
        deposited: FundsDeposited | CapacityDeposited
        if isinstance(command, DepositFunds):
            deposited = FundsDeposited(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                deposit_id=command.deposit_id,
                account_id=command.account_id,
                amount=command.amount,
                currency=command.currency,
            )
        else:
            if command.symbol not in self.catalogue:
                return self._deposit_rejected(
                    command,
                    stamp,
                    RejectReason.UNKNOWN_CONTRACT,
                    f"contract {command.symbol!r} is not listed",
                )
            deposited = CapacityDeposited(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                deposit_id=command.deposit_id,
                account_id=command.account_id,
                symbol=command.symbol,
                quantity=command.quantity,
            )
        self._deposit_ids.add(command.deposit_id)
        self.accounts.apply_deposit(deposited)
        return deposited

    @staticmethod
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

    def reject_malformed(self, source: str, message: str, stamp: EventStamp) -> CommandRejected:
        """Report a record that is not a valid command; it changes nothing."""
        return CommandRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            reason=RejectReason.MALFORMED,
            message=message,
            source=source,
        )

    def apply_outcome(
        self, event: TradeExecuted | OrderCancelled, owns: Callable[[str], bool]
    ) -> None:
        """Fold a fill or cancel fed back from matching into the balances of accounts it owns."""
        if isinstance(event, TradeExecuted):
            self.accounts.apply_trade(event, owns)
        else:
            self.accounts.release(event)

    def state_hash(self) -> str:
        """SHA-256 of the stage's whole state in a canonical form."""
        hasher = hashlib.sha256()
        self.accounts.digest(hasher)
        for order_id in sorted(self._order_ids):
            hasher.update(f"id|{order_id}\n".encode())
        for deposit_id in sorted(self._deposit_ids):
            hasher.update(f"d|{deposit_id}\n".encode())
        return hasher.hexdigest()

    def snapshot(self) -> dict[str, Any]:
        """The stage's whole state, JSON-ready."""
        return {
            "accounts": self.accounts.snapshot(),
            "order_ids": sorted(self._order_ids),
            "deposit_ids": sorted(self._deposit_ids),
        }

    @classmethod
    def restore(cls, catalogue: Catalogue, data: dict[str, Any]) -> RiskStage:
        """The stage a snapshot describes."""
        stage = cls(catalogue)
        stage.accounts = Accounts.restore(data["accounts"])
        stage._order_ids = set(data["order_ids"])
        stage._deposit_ids = set(data["deposit_ids"])
        return stage
