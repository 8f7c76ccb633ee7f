"""Cash, capacity, positions and holds: the one place the money rules live.

The risk stage uses these rules to decide what may trade; settlement applies the same rules to
the same events to keep its ledger projection, so the two can never disagree on arithmetic.

Rules, all in integer fen and units:
- A buy order holds price x quantity of the buyer's cash; a sell order holds quantity of the
  seller's capacity in that contract.
- A trade of q at p against a buy order limited at P releases P x q of the buyer's hold, pays
  p x q to the seller and returns (P - p) x q to the buyer; it moves q units of the seller's held
  capacity into the buyer's position (the entitlement to receive the compute).
- A cancel releases what is still held for the order's unfilled remainder.
- An amend that needs more (a buy's higher price x quantity, a sell's larger quantity) holds the
  difference up front (`extra`); when matching amends the order its hold becomes exactly the
  new price x open quantity (or open quantity) and the extra is settled; a refused amend
  returns its extra. Self-trade prevention's decrement releases what it took off.
- A block holds average price x quantity x hours of cash (buy) or quantity of capacity in each
  of its hours (sell); its trades settle per hour like any order's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from exchange.domain.messages import (
    AmendRejected,
    AmendRequested,
    BlockAccepted,
    CapacityDeposited,
    FundsDeposited,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    Side,
    TradeExecuted,
)


def _everyone(_: str) -> bool:
    return True


class Hasher(Protocol):
    """What a digest needs of a hashlib object."""

    def update(self, data: bytes, /) -> None:
        """Feed bytes."""


@dataclass(slots=True)
class Balance:
    """What an account may use now and what is held for its open orders."""

    available: int = 0
    held: int = 0


@dataclass(slots=True)
class OpenOrder:
    """An accepted order that is not finished, with what is still held for it."""

    order_id: str
    account_id: str
    symbol: str
    side: Side
    price: int
    remaining: int
    extra: int = 0
    """Held on top of the order's own hold for amends not yet decided by matching."""
    hours: tuple[str, ...] = ()
    """A block order's contracts (its `symbol` is then the family, `remaining` the total)."""


class Accounts:
    """Balances of cash (fen) and capacity (units per contract), positions and open orders."""

    def __init__(self) -> None:
        self.cash: dict[str, Balance] = {}
        self.capacity: dict[tuple[str, str], Balance] = {}
        self.positions: dict[tuple[str, str], int] = {}
        self.open_orders: dict[str, OpenOrder] = {}

    def cash_of(self, account_id: str) -> Balance:
        """The account's cash balance (created empty on first use)."""
        balance = self.cash.get(account_id)
        if balance is None:
            balance = self.cash[account_id] = Balance()
        return balance

    def capacity_of(self, account_id: str, symbol: str) -> Balance:
        """The account's sellable capacity in one contract (created empty on first use)."""
        key = (account_id, symbol)
        balance = self.capacity.get(key)
        if balance is None:
            balance = self.capacity[key] = Balance()
        return balance

    def apply_deposit(self, event: FundsDeposited | CapacityDeposited) -> None:
        """Credit a deposit."""
        if isinstance(event, FundsDeposited):
            self.cash_of(event.account_id).available += event.amount
        else:
            self.capacity_of(event.account_id, event.symbol).available += event.quantity

    def available_cash(self, account_id: str) -> int:
        """Cash the account may use now (0 if unseen), without creating a balance."""
        balance = self.cash.get(account_id)
        return 0 if balance is None else balance.available

    def available_capacity(self, account_id: str, symbol: str) -> int:
        """Capacity the account may sell now (0 if unseen), without creating a balance."""
        balance = self.capacity.get((account_id, symbol))
        return 0 if balance is None else balance.available

    def shortfall(self, account_id: str, symbol: str, side: Side, price: int, quantity: int) -> int:
        """How much cash (buy) or capacity (sell) the order lacks; 0 if it can be held."""
        if side == "buy":
            return max(0, price * quantity - self.available_cash(account_id))
        return max(0, quantity - self.available_capacity(account_id, symbol))

    def hold(self, order: OrderAccepted) -> None:
        """Hold cash or capacity for an accepted order and track it as open."""
        if order.side == "buy":
            balance = self.cash_of(order.account_id)
            amount = order.price * order.quantity
        else:
            balance = self.capacity_of(order.account_id, order.symbol)
            amount = order.quantity
        balance.available -= amount
        balance.held += amount
        self.open_orders[order.order_id] = OpenOrder(
            order.order_id, order.account_id, order.symbol, order.side, order.price, order.quantity
        )

    def hold_block(self, block: BlockAccepted) -> None:
        """Hold a block's cash (average price x quantity x hours) or its capacity in each hour."""
        total = block.quantity * len(block.symbols)
        if block.side == "buy":
            balance = self.cash_of(block.account_id)
            balance.available -= block.price * total
            balance.held += block.price * total
        else:
            for symbol in block.symbols:
                balance = self.capacity_of(block.account_id, symbol)
                balance.available -= block.quantity
                balance.held += block.quantity
        self.open_orders[block.order_id] = OpenOrder(
            block.order_id,
            block.account_id,
            block.family,
            block.side,
            block.price,
            total,
            0,
            tuple(block.symbols),
        )

    def apply_trade(self, trade: TradeExecuted, owns: Callable[[str], bool] = _everyone) -> None:
        """Settle the sides of a trade whose orders this instance tracks and whose account it owns.

        A risk stage running several partitions reads the trade once in each partition of the
        two accounts; `owns` makes each read settle only its own account's side.
        """
        buy = self.open_orders.get(trade.buy_order_id)
        if buy is not None and owns(buy.account_id):
            cash = self.cash_of(buy.account_id)
            cash.held -= buy.price * trade.quantity
            cash.available += (buy.price - trade.price) * trade.quantity
            key = (buy.account_id, trade.symbol)
            self.positions[key] = self.positions.get(key, 0) + trade.quantity
            self._reduce(buy, trade.quantity)
        sell = self.open_orders.get(trade.sell_order_id)
        if sell is not None and owns(sell.account_id):
            self.capacity_of(sell.account_id, trade.symbol).held -= trade.quantity
            self.cash_of(sell.account_id).available += trade.price * trade.quantity
            self._reduce(sell, trade.quantity)

    def _reduce(self, order: OpenOrder, quantity: int) -> None:
        order.remaining -= quantity
        if not order.remaining:
            del self.open_orders[order.order_id]
            self._move(order, -order.extra)

    def _balance(self, order: OpenOrder) -> Balance:
        if order.side == "buy":
            return self.cash_of(order.account_id)
        return self.capacity_of(order.account_id, order.symbol)

    def _move(self, order: OpenOrder, amount: int) -> None:
        """Hold `amount` more for an order (release it when negative)."""
        if amount:
            balance = self._balance(order)
            balance.available -= amount
            balance.held += amount

    @staticmethod
    def own_hold(side: Side, price: int, quantity: int) -> int:
        """What an order's open quantity holds: cash (buy) or capacity units (sell)."""
        return price * quantity if side == "buy" else quantity

    def hold_for_amend(self, amend: AmendRequested) -> None:
        """Hold an amend's extra cash or capacity until matching decides it."""
        order = self.open_orders.get(amend.order_id)
        if order is not None and amend.extra_hold:
            self._move(order, amend.extra_hold)
            order.extra += amend.extra_hold

    def apply_amended(self, amended: OrderAmended) -> None:
        """An order's new price and open quantity: its hold becomes theirs, the extra returns."""
        order = self.open_orders.get(amended.order_id)
        if order is None:
            return
        extra = min(amended.extra_hold, order.extra)
        before = self.own_hold(order.side, order.price, order.remaining) + extra
        after = self.own_hold(order.side, amended.price, amended.remaining)
        order.extra -= extra
        order.price = amended.price
        order.remaining = amended.remaining
        self._move(order, after - before)
        if not order.remaining:
            del self.open_orders[order.order_id]
            self._move(order, -order.extra)

    def release_amend(self, rejected: AmendRejected) -> None:
        """Return the extra hold of an amend that matching refused."""
        order = self.open_orders.get(rejected.order_id)
        if order is not None and rejected.extra_hold:
            extra = min(rejected.extra_hold, order.extra)
            order.extra -= extra
            self._move(order, -extra)

    def apply_reduced(self, reduced: OrderReduced) -> None:
        """Release what self-trade prevention took off an order without a trade."""
        order = self.open_orders.get(reduced.order_id)
        if order is None:
            return
        self._move(order, -self.own_hold(order.side, order.price, reduced.quantity))
        self._reduce(order, reduced.quantity)

    def release(self, cancelled: OrderCancelled) -> None:
        """Release the hold of a cancelled order's remainder, if this instance tracks it."""
        order = self.open_orders.pop(cancelled.order_id, None)
        if order is None:
            return
        if order.side == "sell" and order.hours:
            # A block trades in every hour or none: what remains is the same in each hour.
            each = order.remaining // len(order.hours)
            for symbol in order.hours:
                balance = self.capacity_of(order.account_id, symbol)
                balance.held -= each
                balance.available += each
            return
        if order.side == "buy":
            balance = self.cash_of(order.account_id)
            amount = order.price * order.remaining
        else:
            balance = self.capacity_of(order.account_id, order.symbol)
            amount = order.remaining
        amount += order.extra
        balance.held -= amount
        balance.available += amount

    def digest(self, hasher: Hasher) -> None:
        """Feed a canonical rendering of every balance, position and open order to `hasher`."""
        for account_id in sorted(self.cash):
            b = self.cash[account_id]
            hasher.update(f"c|{account_id}|{b.available}|{b.held}\n".encode())
        for account_id, symbol in sorted(self.capacity):
            b = self.capacity[(account_id, symbol)]
            hasher.update(f"k|{account_id}|{symbol}|{b.available}|{b.held}\n".encode())
        for account_id, symbol in sorted(self.positions):
            quantity = self.positions[(account_id, symbol)]
            hasher.update(f"p|{account_id}|{symbol}|{quantity}\n".encode())
        for order_id in sorted(self.open_orders):
            o = self.open_orders[order_id]
            extra = f"|x{o.extra}" if o.extra else ""
            if o.hours:
                extra += "|h" + ",".join(o.hours)
            hasher.update(
                f"o|{o.order_id}|{o.account_id}|{o.symbol}|{o.side}|{o.price}|{o.remaining}"
                f"{extra}\n".encode()
            )

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-ready lists in a canonical order."""
        return {
            "cash": [[a, b.available, b.held] for a, b in sorted(self.cash.items())],
            "capacity": [
                [a, s, b.available, b.held] for (a, s), b in sorted(self.capacity.items())
            ],
            "positions": [[a, s, q] for (a, s), q in sorted(self.positions.items())],
            "open_orders": [
                [o.order_id, o.account_id, o.symbol, o.side, o.price, o.remaining]
                + ([o.extra] if o.extra or o.hours else [])
                + ([list(o.hours)] if o.hours else [])
                for _, o in sorted(self.open_orders.items())
            ],
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> Accounts:
        """The accounts a snapshot describes."""
        accounts = cls()
        accounts.cash = {a: Balance(available, held) for a, available, held in data["cash"]}
        accounts.capacity = {
            (a, s): Balance(available, held) for a, s, available, held in data["capacity"]
        }
        accounts.positions = {(a, s): q for a, s, q in data["positions"]}
        accounts.open_orders = {
            entry[0]: OpenOrder(*entry[:7], *(tuple(h) for h in entry[7:]))
            for entry in data["open_orders"]
        }
        return accounts
