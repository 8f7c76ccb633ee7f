"""The risk stage: validates commands and holds funds or capacity before anything trades.

Pure and deterministic: it is a function of the commands topic alone (participants' commands
and the matching stage's fills and cancels fed back into the same partitions), so the order in
which it saw them is recorded by the log itself and a replay decides exactly the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from exchange.domain.accounts import Accounts
from exchange.domain.catalogue import Catalogue
from exchange.domain.messages import (
    AmendOrder,
    AmendRejected,
    AmendRequested,
    BlockAccepted,
    CancelAllOrders,
    CancelAllRequested,
    CancelOrder,
    CancelRejected,
    CancelRequested,
    CapacityDeposited,
    Command,
    CommandRejected,
    ControlMarket,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    Event,
    EventStamp,
    FundsDeposited,
    MarketControlRejected,
    MarketControlRequested,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    OrderRejected,
    PlaceBlockOrder,
    PlaceOrder,
    RejectReason,
    TradeExecuted,
)

Outcome = TradeExecuted | OrderCancelled | OrderAmended | OrderReduced | AmendRejected
"""What matching feeds back to the risk stage: everything that moves a hold."""


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
        if isinstance(command, AmendOrder):
            return self._amend(command, stamp)
        if isinstance(command, ControlMarket):
            return self._control(command, stamp)
        if isinstance(command, CancelAllOrders):
            return self._cancel_all(command, stamp)
        if isinstance(command, PlaceBlockOrder):
            return self._block(command, stamp)
        return self._deposit(command, stamp)

    def _place(self, command: PlaceOrder, stamp: EventStamp) -> Event:
        reason, message = self._check_order(command, stamp.ts)
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
            time_in_force=command.time_in_force,
            expire_at=command.expire_at,
            order_type=command.order_type,
            min_quantity=command.min_quantity,
            all_or_none=command.all_or_none,
            post_only=command.post_only,
            stp_group=command.stp_group,
            stp_mode=command.stp_mode,
        )
        self.accounts.hold(accepted)
        return accepted

    def _check_order(self, command: PlaceOrder, at_ms: int) -> tuple[RejectReason | None, str]:
        contract = self.catalogue.listed(command.symbol, at_ms)
        if contract is None:
            return RejectReason.UNKNOWN_CONTRACT, self.catalogue.why_not_listed(
                command.symbol, at_ms
            )
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
            # A block is routed by its first hour (its `symbol` is the family).
            symbol=order.hours[0] if order.hours else order.symbol,
        )

    def _amend(self, command: AmendOrder, stamp: EventStamp) -> Event:
        order = self.accounts.open_orders.get(command.order_id)
        reason: RejectReason | None = None
        message = ""
        if order is None or order.account_id != command.account_id:
            reason = RejectReason.UNKNOWN_ORDER if order is None else RejectReason.NOT_ORDER_OWNER
            message = f"account {command.account_id} has no open order {command.order_id!r}"
        elif order.hours:
            reason = RejectReason.NOT_AMENDABLE
            message = "a block order cannot be amended: cancel it and place another"
        else:
            contract = self.catalogue.get(order.symbol)
            price = command.price or order.price
            quantity = command.quantity or order.remaining
            needed = self.accounts.own_hold(order.side, price, quantity) - (
                self.accounts.own_hold(order.side, order.price, order.remaining)
            )
            extra = max(0, needed)
            if contract is not None and price % contract.tick_size:
                reason = RejectReason.PRICE_NOT_ON_TICK
                message = f"price {price} is not a multiple of the tick size {contract.tick_size}"
            elif extra and order.side == "buy":
                available = self.accounts.available_cash(order.account_id)
                if extra > available:
                    reason = RejectReason.INSUFFICIENT_FUNDS
                    message = f"amend needs {extra} fen more, {available} fen available"
            elif extra:
                available = self.accounts.available_capacity(order.account_id, order.symbol)
                if extra > available:
                    reason = RejectReason.INSUFFICIENT_CAPACITY
                    message = f"amend needs {extra} units more, {available} available"
        if reason is not None or order is None:
            return AmendRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                order_id=command.order_id,
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
        self.accounts.hold_for_amend(requested)
        return requested

    def _block(self, command: PlaceBlockOrder, stamp: EventStamp) -> Event:
        reason, message = self._check_block(command, stamp.ts)
        if reason is not None:
            return OrderRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                order_id=command.order_id,
                account_id=command.account_id,
                symbol=command.symbols[0],
                side=command.side,
                price=command.price,
                quantity=command.quantity * len(command.symbols),
                reason=reason,
                message=message,
            )
        self._order_ids.add(command.order_id)
        accepted = BlockAccepted(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=command.order_id,
            account_id=command.account_id,
            symbol=command.symbols[0],
            family=command.symbols[0].rsplit(".", 1)[0],
            symbols=command.symbols,
            side=command.side,
            price=command.price,
            quantity=command.quantity,
            stp_group=command.stp_group,
            stp_mode=command.stp_mode,
        )
        self.accounts.hold_block(accepted)
        return accepted

    def _check_block(self, command: PlaceBlockOrder, at_ms: int) -> tuple[RejectReason | None, str]:
        specs = [self.catalogue.listed(s, at_ms) for s in command.symbols]
        missing = [s for s, spec in zip(command.symbols, specs, strict=True) if spec is None]
        if missing:
            return RejectReason.UNKNOWN_CONTRACT, self.catalogue.why_not_listed(missing[0], at_ms)
        listed = [spec for spec in specs if spec is not None]
        first = listed[0]
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
        if command.order_id in self._order_ids:
            return RejectReason.DUPLICATE_ORDER_ID, f"order id {command.order_id!r} was used before"
        if command.side == "buy":
            needed = command.price * command.quantity * len(listed)
            available = self.accounts.available_cash(command.account_id)
            if needed > available:
                return (
                    RejectReason.INSUFFICIENT_FUNDS,
                    f"block needs {needed} fen, account has {available} fen available",
                )
            return None, ""
        for symbol in command.symbols:
            available = self.accounts.available_capacity(command.account_id, symbol)
            if command.quantity > available:
                return (
                    RejectReason.INSUFFICIENT_CAPACITY,
                    f"block sells {command.quantity} units of {symbol}, {available} available",
                )
        return None, ""

    def _cancel_all(self, command: CancelAllOrders, stamp: EventStamp) -> Event:
        symbols = sorted(
            {
                o.hours[0] if o.hours else o.symbol
                for o in self.accounts.open_orders.values()
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

    def _control(self, command: ControlMarket, stamp: EventStamp) -> Event:
        unknown = [
            s
            for s in (command.symbol, *command.symbols)
            if self.catalogue.listed(s, stamp.ts) is None
        ]
        if unknown:
            return MarketControlRejected(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                operator_id=command.operator_id,
                action=command.action,
                symbol=command.symbol,
                reason=RejectReason.UNKNOWN_CONTRACT,
                message=self.catalogue.why_not_listed(unknown[0], stamp.ts),
            )
        return MarketControlRequested(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            operator_id=command.operator_id,
            action=command.action,
            symbol=command.symbol,
            at=command.at,
            symbols=command.symbols,
            reason=command.reason,
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
            if self.catalogue.listed(command.symbol, stamp.ts) is None:
                return self._deposit_rejected(
                    command,
                    stamp,
                    RejectReason.UNKNOWN_CONTRACT,
                    self.catalogue.why_not_listed(command.symbol, stamp.ts),
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

    def apply_outcome(self, event: Outcome, owns: Callable[[str], bool]) -> None:
        """Fold a fill, cancel or amend fed back from matching into the balances it owns."""
        if isinstance(event, TradeExecuted):
            self.accounts.apply_trade(event, owns)
        elif isinstance(event, OrderCancelled):
            self.accounts.release(event)
        elif isinstance(event, OrderAmended):
            self.accounts.apply_amended(event)
        elif isinstance(event, OrderReduced):
            self.accounts.apply_reduced(event)
        else:
            self.accounts.release_amend(event)

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
