"""The books' data structures and the vocabulary of orders.

`Order` (a resting order, or one being matched), `Level` (the orders at one price, oldest
first), `Side` (the levels of one side, best first), `Book` (one contract's two sides,
parameters and lifecycle state), `Block` (a block order waiting for its family's auction),
`AccountOrders` (an account's resting orders, for the kill switch) and `OrderIndex` (every
resting order by id); and the names orders are entered with: sides, time in force, self-trade
prevention modes.

The classes are slotted and hold no logic beyond reading themselves and keeping their own
lists (`Level` its queue, `AccountOrders` its list, `OrderIndex` its dicts): the engine
(`matching/engine.py` and the modules its class is built from) changes them in place, on its
hot path mostly inline. Compiled (`matching/__init__.py`), they are native classes with typed
attributes, and a call of one of their methods is a direct call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

from matching.outputs import PRE_OPEN, ContractState
from matching.outputs import Side as OrderSide

BUY: Final = "buy"
SELL: Final = "sell"

# Final, so that the compiled engine holds them as constants where it reads them (on its hot
# path, and as the defaults of `submit`) instead of looking each up in a module's globals.
GTC: Final = "GTC"
GTD: Final = "GTD"
DAY: Final = "DAY"
IOC: Final = "IOC"
FOK: Final = "FOK"
TIME_IN_FORCE: Final = (GTC, GTD, DAY, IOC, FOK)

CANCEL_RESTING: Final = "cancel_resting"
CANCEL_INCOMING: Final = "cancel_incoming"
CANCEL_BOTH: Final = "cancel_both"
DECREMENT: Final = "decrement"
STP_MODES: Final = (CANCEL_RESTING, CANCEL_INCOMING, CANCEL_BOTH, DECREMENT)

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
CST_DAY_OFFSET_MS: Final = 16 * HOUR_MS
"""A trading day ends at midnight China Standard Time, 16:00 UTC."""

INFINITY: Final = 1 << 61
"""Beyond any price key and any log time: no limit, no band, no deadline. Below 2**62, so the
compiled engine holds it, and every deadline, band and limit compared with it, as a machine
integer: at 2**62 each such comparison (one on every command) took the slow path of Python's
arbitrary-precision integers."""


class Order:
    """A resting order (or one being matched)."""

    __slots__ = (
        "account",
        "aon",
        "book",
        "group",
        "level",
        "order_id",
        "owner",
        "position",
        "post_only",
        "price",
        "remaining",
        "seq",
        "side",
        "slot",
        "stp_mode",
    )

    def __init__(
        self,
        order_id: str,
        account: str,
        side: OrderSide,
        price: int,
        remaining: int,
        group: str,
        stp_mode: str,
        seq: int,
        book: Book,
        level: Level,
        owner: AccountOrders,
        aon: bool,
        post_only: bool,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price = price
        self.remaining = remaining
        self.group = group
        self.stp_mode = stp_mode
        self.seq = seq
        self.book = book
        self.level = level
        """The level it rests at: a cancel finds it without a lookup by price."""
        self.aon = aon
        self.post_only = post_only
        self.owner = owner
        """Its account's resting orders, where it is listed at `slot` while it rests."""
        self.slot = 0
        self.position = 0
        """Where it is in its level's queue (`Level.orders`)."""


LEVEL_SLACK: Final = 8
"""Entries a level's list holds beyond twice its resting orders before it is cleared."""


class Level:
    """The resting orders at one price, oldest first; `quantity` counts only displayed orders.

    `orders` is a queue: an order resting is appended, and knows its place (`Order.position`);
    an order leaving the level (filled, cancelled) leaves None in its place and lowers `count`,
    so a cancel costs no search and no deletion from a dict keyed by order id, and the order is
    freed there and then. `head` is where the oldest order may be: entries before it are all
    None. The queue is rebuilt without its Nones once it holds more than twice `count` plus
    `LEVEL_SLACK` entries, a constant cost per order. The level is empty when `count` is 0 (it
    then leaves its side).
    """

    __slots__ = ("aon", "count", "head", "orders", "price", "quantity")

    def __init__(self, price: int) -> None:
        self.price = price
        self.quantity = 0
        self.aon = 0
        self.count = 0
        self.head = 0
        self.orders: list[Order | None] = []

    def add(self, order: Order) -> None:
        """Queue an order resting here (its `level` is this one)."""
        orders = self.orders
        order.position = len(orders)
        orders.append(order)
        self.count += 1

    def resting_orders(self) -> list[Order]:
        """The level's resting orders, oldest first."""
        orders = self.orders
        resting = []
        for index in range(self.head, len(orders)):
            order = orders[index]
            if order is not None:
                resting.append(order)
        return resting

    def remove(self, order: Order) -> None:
        """Take out an order leaving the level."""
        orders = self.orders
        orders[order.position] = None
        self.count -= 1
        if len(orders) > 2 * self.count + LEVEL_SLACK:
            self.tidy()

    def tidy(self) -> None:
        """Rebuild the queue without its Nones, once they are more than half of it."""
        orders = self.orders
        if len(orders) > 2 * self.count + LEVEL_SLACK:
            # In place: no list is built, and whoever holds the queue holds it still.
            kept = 0
            for index in range(self.head, len(orders)):
                order = orders[index]
                if order is not None:
                    order.position = kept
                    orders[kept] = order
                    kept += 1
            del orders[kept:]
            self.head = 0


class Side:
    """One side of a book; `keys` is ascending and holds price * sign, so index 0 is best."""

    __slots__ = ("before", "keys", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []
        self.before: dict[int, int] = {}
        """price -> displayed quantity, as it was when changes were last taken, of each level
        changed since (`take_changes`): what changed costs the levels changed, not the side."""

    def iter_levels(self) -> Iterable[Level]:
        """Levels best first."""
        sign = self.sign
        levels = self.levels
        return [levels[key * sign] for key in self.keys]

    def depth(self, limit: int | None = None) -> list[tuple[int, int]]:
        """Displayed (price, quantity) levels, best first (at most `limit`)."""
        shown = [(lv.price, lv.quantity) for lv in self.iter_levels() if lv.quantity]
        return shown if limit is None else shown[:limit]

    def take_changes(self) -> list[tuple[int, int]]:
        """(price, displayed quantity now) of every level whose displayed quantity differs
        from when changes were last taken, ascending by price (0: the level is gone or
        hidden); from now on changes count from here."""
        before = self.before
        if not before:
            return []
        levels = self.levels
        changes = []
        for price, then in before.items():
            level = levels.get(price)
            now = 0 if level is None else level.quantity
            if now != then:
                changes.append((price, now))
        before.clear()
        changes.sort()
        return changes


class Book:
    """The book, parameters and lifecycle state of one contract."""

    __slots__ = (
        "asks",
        "band",
        "bids",
        "close_at",
        "delivery_at",
        "family",
        "protection",
        "reference",
        "reopen_at",
        "state",
        "symbol",
        "tick",
        "trades",
    )

    def __init__(
        self,
        symbol: str,
        family: str,
        delivery_at: int,
        reference: int,
        tick: int,
        band: int,
        protection: int,
        close_at: int,
    ) -> None:
        self.symbol = symbol
        self.family = family
        self.delivery_at = delivery_at
        self.reference = reference
        self.tick = tick
        self.band = band
        self.protection = protection
        self.close_at = close_at
        self.state: ContractState = PRE_OPEN
        self.reopen_at = 0
        self.trades = 0
        self.bids = Side(-1)
        self.asks = Side(1)

    @property
    def orders(self) -> dict[str, Order]:
        """Resting orders of this book by id (built on each call; for audits and queries)."""
        return {o.order_id: o for side in (self.bids, self.asks) for o in side_orders(side)}

    def best_bid(self) -> int | None:
        """Highest displayed buy price."""
        shown = self.bids.depth(1)
        return shown[0][0] if shown else None

    def best_ask(self) -> int | None:
        """Lowest displayed sell price."""
        shown = self.asks.depth(1)
        return shown[0][0] if shown else None


class Block:
    """A block order waiting for its family's auction."""

    __slots__ = ("account", "block_id", "family", "group", "price", "quantity", "seq", "side")

    def __init__(
        self,
        block_id: str,
        account: str,
        side: OrderSide,
        family: str,
        price: int,
        quantity: int,
        group: str,
        seq: int,
    ) -> None:
        self.block_id = block_id
        self.account = account
        self.side = side
        self.family = family
        self.price = price
        self.quantity = quantity
        self.group = group
        self.seq = seq


class AccountOrders:
    """An account's resting orders, for the kill switch, in no particular order.

    Each order knows its place in the list (`Order.slot`), so one leaving its book is taken out
    by moving the last order into its place: no search, and no deletion from a dict keyed by
    order id as large as the book, on every cancel and fill.
    """

    __slots__ = ("orders",)

    def __init__(self) -> None:
        self.orders: list[Order] = []

    def add(self, order: Order) -> None:
        """List an order that has just rested (its `owner` is this list)."""
        orders = self.orders
        order.slot = len(orders)
        orders.append(order)

    def discard(self, order: Order) -> None:
        """Take out an order that has left its book."""
        orders = self.orders
        last = orders.pop()
        if last is not order:
            slot = order.slot
            orders[slot] = last
            last.slot = slot


INDEX_SHARDS: Final = 16
"""The dicts `OrderIndex` spreads its orders over (a power of two: a shard is chosen by the low
bits of the id's last character, see `_shard`)."""


def _hashed_dict() -> dict[str, Order]:
    """An empty dict for orders by id that keeps each key's hash beside it.

    CPython lays out a dict whose keys are all strings without their hashes, so every probe
    that meets another key reads that string's hash from the string itself: in an index of
    200,000 orders, a cache miss on each probe, on every add (the id must be new), cancel and
    fill. A dict that has held a key of another type keeps the general layout, hashes
    included, through every later resize, so its probes read no key but the one they find.
    """
    index: dict[Any, Any] = {None: None}
    del index[None]
    return index


def _shard(order_id: str) -> int:
    """The shard of an id: the low bits of its last character, which varies most between ids
    (the empty id goes to the first)."""
    return ord(order_id[-1]) & (INDEX_SHARDS - 1) if order_id else 0


class OrderIndex:
    """The resting orders by id, spread over `INDEX_SHARDS` dicts by the id's last character.

    A dict grows (or, after many deletions, rebuilds) its table in one go, on the insert that
    finds it full: with 200,000 orders, one command in about half a million paid some 11 ms
    for that (a table of a million slots, rebuilt from three times as many entries as orders).
    Spread over 16 dicts, each rebuild is a sixteenth of that, and falls on its own command.
    It answers as a dict does: `in`, `[]`, `get`, `len` and iteration over the ids (shard by
    shard: in no particular order).
    """

    __slots__ = ("shards",)

    def __init__(self) -> None:
        self.shards: list[dict[str, Order]] = [_hashed_dict() for _ in range(INDEX_SHARDS)]

    def get(self, order_id: str) -> Order | None:
        """The order with this id (None if none rests)."""
        return self.shards[_shard(order_id)].get(order_id)

    def add(self, order_id: str, order: Order) -> None:
        """Index an order that has just rested."""
        self.shards[_shard(order_id)][order_id] = order

    def remove(self, order_id: str) -> None:
        """Forget an order that has left its book."""
        del self.shards[_shard(order_id)][order_id]

    def pop(self, order_id: str) -> Order | None:
        """Forget the order with this id and return it (None if none rests)."""
        shard = self.shards[_shard(order_id)]
        order = shard.get(order_id)
        if order is not None:
            del shard[order_id]
        return order

    def __contains__(self, order_id: str) -> bool:
        return order_id in self.shards[_shard(order_id)]

    def __getitem__(self, order_id: str) -> Order:
        return self.shards[_shard(order_id)][order_id]

    def __len__(self) -> int:
        return sum([len(shard) for shard in self.shards])

    def __iter__(self) -> Iterator[str]:
        return iter([order_id for shard in self.shards for order_id in shard])


def side_orders(side: Side) -> Iterable[Order]:
    """The orders of one side in priority order (best price, then oldest first)."""
    for level in side.iter_levels():
        yield from level.resting_orders()


def by_seq(item: Order | Block) -> int:
    """Sort key: arrival order (the sequence number an order or block got when it rested)."""
    return item.seq
