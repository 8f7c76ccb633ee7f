"""Continuous matching: an incoming order against the opposite side of one book.

Price, then time priority; every trade is at the resting (maker) order's price. A resting
all-or-none order is taken only when the incoming order can fill all of it, otherwise passed
by. Self-trade prevention compares ownership groups (default: the account), and the incoming
order's mode decides: cancel the resting order (default), cancel the incoming, cancel both, or
decrement both by the smaller quantity without a trade. The price band: an incoming order may
only trade within `band` of the reference price as it was at its arrival; reaching a level
outside halts the contract (the circuit breaker). FOK, all-or-none and minimum-quantity orders
first walk the book without changing it (`_fillable`, a dry run with the same rules).

`ContinuousMatching` adds these methods to the engine's state and snapshots (`matching/state.py`
says why the engine is built from one class per concern, in one chain). `_match` is on the hot
path of every order that crosses: it binds what its loops read to locals, updates the book's
trade counter once per call and, on a level without all-or-none orders, the level's quantity
once per level.
"""

from __future__ import annotations

from typing import Final

from matching.book import (
    CANCEL_INCOMING,
    CANCEL_RESTING,
    DECREMENT,
    INFINITY,
    Book,
    Level,
    Order,
    Side,
)
from matching.outputs import (
    CANCELLED,
    REDUCED,
    TRADE,
    CancelReason,
    StateReason,
)
from matching.outputs import Side as OrderSide
from matching.snapshot import Snapshots

# Read as a global: an enum member's attribute read costs some 60 ns more, on every self-trade.
_SELF_TRADE: Final = CancelReason.SELF_TRADE


class ContinuousMatching(Snapshots):
    """Matching incoming orders against the books, and dry runs of it."""

    def _match(
        self,
        book: Book,
        opposite: Side,
        limit: int,
        band_key: int,
        remaining: int,
        order_id: str,
        account: str,
        side: OrderSide,
        group: str,
        stp_mode: str,
    ) -> int:
        """Trade an incoming order against `opposite`; returns what is left of it.

        Sets `_stop` to SELF_TRADE when self-trade prevention cancelled the incoming order and
        to PRICE_BAND when the book halted.
        """
        self._stop = ""
        keys = opposite.keys
        levels = opposite.levels
        before = opposite.before
        sign = opposite.sign
        low_key = band_key - 2 * book.band if band_key < INFINITY else -INFINITY
        orders = self.orders
        events = self.events
        symbol = book.symbol
        trades = book.trades
        index = 0
        last_price = 0
        while remaining and index < len(keys):
            key = keys[index]
            if key > limit:
                break
            if key > band_key or key < low_key:
                self._halt(book, StateReason.PRICE_BAND)
                self._stop = StateReason.PRICE_BAND
                break
            price = key * sign
            level = levels[price]
            # Trades and self-trade prevention take from this level from here on.
            before.setdefault(price, level.quantity)
            if not level.aon:
                # The common case: take makers from the front until the order is done.
                filled = 0
                queue = level.orders
                head = level.head
                while remaining and level.count:
                    maker = queue[head]
                    if maker is None:
                        head += 1
                        continue
                    if maker.group == group:
                        level.head = head
                        remaining = self._prevent_self_trade(
                            book, level, maker, remaining, order_id, account, side, stp_mode
                        )
                        queue = level.orders
                        head = level.head
                        if self._stop:
                            break
                        continue
                    maker_left = maker.remaining
                    trades += 1
                    if remaining < maker_left:
                        events.append(
                            (
                                TRADE,
                                symbol,
                                trades,
                                price,
                                remaining,
                                order_id,
                                maker.order_id,
                                account,
                                maker.account,
                                side,
                            )
                        )
                        maker.remaining = maker_left - remaining
                        filled += remaining
                        remaining = 0
                        break
                    events.append(
                        (
                            TRADE,
                            symbol,
                            trades,
                            price,
                            maker_left,
                            order_id,
                            maker.order_id,
                            account,
                            maker.account,
                            side,
                        )
                    )
                    filled += maker_left
                    remaining -= maker_left
                    orders.remove(maker.order_id)
                    maker.owner.discard(maker)
                    queue[head] = None
                    level.count -= 1
                    head += 1
                level.head = head
                if filled:
                    level.quantity -= filled
                    last_price = price
            else:
                # All-or-none makers that this order cannot fill completely are passed by.
                for maker in level.resting_orders():
                    if not remaining:
                        break
                    maker_left = maker.remaining
                    if maker.aon and maker_left > remaining:
                        continue
                    if maker.group == group:
                        remaining = self._prevent_self_trade(
                            book, level, maker, remaining, order_id, account, side, stp_mode
                        )
                        if self._stop:
                            break
                        continue
                    traded = remaining if remaining < maker_left else maker_left
                    trades += 1
                    events.append(
                        (
                            TRADE,
                            symbol,
                            trades,
                            price,
                            traded,
                            order_id,
                            maker.order_id,
                            account,
                            maker.account,
                            side,
                        )
                    )
                    remaining -= traded
                    last_price = price
                    if maker.aon:
                        level.aon -= 1
                    else:
                        level.quantity -= traded
                    if traded == maker_left:
                        orders.remove(maker.order_id)
                        maker.owner.discard(maker)
                        level.orders[maker.position] = None
                        level.count -= 1
                    else:
                        maker.remaining = maker_left - traded
            if not level.count:
                del levels[price]
                del keys[index]
            else:
                level.tidy()
                index += 1
            if self._stop:
                break
        book.trades = trades
        if last_price:
            book.reference = last_price
        return remaining

    def _prevent_self_trade(
        self,
        book: Book,
        level: Level,
        maker: Order,
        remaining: int,
        order_id: str,
        account: str,
        side: OrderSide,
        stp_mode: str,
    ) -> int:
        events = self.events
        symbol = book.symbol
        if stp_mode == DECREMENT:
            cut = min(remaining, maker.remaining)
            if cut == maker.remaining:
                self._drop_maker(level, maker)
                events.append(
                    (CANCELLED, symbol, maker.order_id, maker.account, maker.side, cut, _SELF_TRADE)
                )
            else:
                maker.remaining -= cut
                if not maker.aon:
                    level.quantity -= cut
                events.append(
                    (
                        REDUCED,
                        symbol,
                        maker.order_id,
                        maker.account,
                        maker.side,
                        cut,
                        maker.remaining,
                        _SELF_TRADE,
                    )
                )
            remaining -= cut
            if remaining:
                events.append(
                    (REDUCED, symbol, order_id, account, side, cut, remaining, _SELF_TRADE)
                )
            else:
                events.append((CANCELLED, symbol, order_id, account, side, cut, _SELF_TRADE))
                self._stop = _SELF_TRADE
            return remaining
        if stp_mode != CANCEL_INCOMING:
            self._drop_maker(level, maker)
            events.append(
                (
                    CANCELLED,
                    symbol,
                    maker.order_id,
                    maker.account,
                    maker.side,
                    maker.remaining,
                    _SELF_TRADE,
                )
            )
        if stp_mode != CANCEL_RESTING:
            events.append((CANCELLED, symbol, order_id, account, side, remaining, _SELF_TRADE))
            self._stop = _SELF_TRADE
        return remaining

    def _drop_maker(self, level: Level, maker: Order) -> None:
        """Remove a maker from its level and the indexes, leaving an empty level in place."""
        maker.owner.discard(maker)
        if maker.aon:
            level.aon -= 1
        else:
            level.quantity -= maker.remaining
        level.remove(maker)
        self.orders.remove(maker.order_id)

    def _fillable(
        self,
        book: Book,
        opposite: Side,
        limit: int,
        band_key: int,
        quantity: int,
        group: str,
        stp_mode: str,
        costs: list[int] | None = None,
    ) -> int:
        """How much of `quantity` would trade now (a dry run of `_match` inside the band).

        A maker of the same group is passed by when the mode cancels resting orders, and ends
        the dry run otherwise. The cost of what would trade is added to `costs[0]`.
        """
        remaining = quantity
        sign = opposite.sign
        low_key = band_key - 2 * book.band if band_key < INFINITY else -INFINITY
        cost = 0
        for key in opposite.keys:
            if key > limit or key > band_key or key < low_key or not remaining:
                break
            price = key * sign
            for maker in opposite.levels[price].resting_orders():
                if maker.aon and maker.remaining > remaining:
                    continue
                if maker.group == group:
                    if stp_mode == CANCEL_RESTING:
                        continue
                    remaining = -remaining
                    break
                traded = min(remaining, maker.remaining)
                remaining -= traded
                cost += traded * price
                if not remaining:
                    break
            if remaining < 0:
                remaining = -remaining
                break
        if costs is not None:
            costs[0] += cost
        return quantity - remaining

    def _would_take(self, opposite: Side, limit: int, quantity: int) -> bool:
        sign = opposite.sign
        for key in opposite.keys:
            if key > limit:
                return False
            level = opposite.levels[key * sign]
            if level.aon < level.count:
                return True
            if any(o.remaining <= quantity for o in level.resting_orders()):
                return True
        return False
