"""The day-ahead auction: welfare-maximising clearing of hourly orders, blocks and groups.

`clear` takes the whole book of one auction (every contract-hour of every family at once) and
returns uniform integer prices per contract-hour, the accepted quantities, the reasons the other
orders got nothing, the trades and the welfare with the bound the solver proved. It is pure and
deterministic; docs/MATCHING.md ("Day-ahead auction") is the rule book:

1. A mixed-integer programme (HiGHS through `scipy.optimize.milp`) maximises welfare: a binary
   variable for every block order and every member of an exclusive group, a continuous one for
   every other hourly order, one balance row per contract-hour and one row per group.
2. The block decisions are fixed and each contract-hour's hourly orders are allocated again by
   merit order, in whole units (ties by `seq`, earlier first).
3. Prices: the midpoint of each contract-hour's clearing interval, rounded down to the tick; when
   an accepted block or all-or-none order would lose at those prices, a small integer programme
   moves them as little as possible (in total) to prices where none loses. When no such prices
   exist, the accepted order that loses most per unit and hour at the midpoints is excluded and
   everything is solved again.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import csr_array

BUY = "buy"
SELL = "sell"
SIDES = (BUY, SELL)

OPTIMAL = "optimal"
LIMIT_REACHED = "limit_reached"

DEFAULT_NODE_LIMIT = 2_000
"""Branch-and-bound nodes per welfare programme: the deterministic bound on the search."""
DEFAULT_TIME_LIMIT_S = 20.0
"""Seconds per programme: a safety net only (a result cut by it depends on the machine)."""

PPM = 1_000_000
_HIGHS_NODE_LIMIT = "HiGHS Status 16:"
_HALF = 0.5
_FLOAT_SLACK = 1e-6
"""Relative slack added to a floating-point bound before it is floored to whole fen."""


@dataclass(frozen=True, slots=True)
class DayAheadOrder:
    """One order of the day-ahead auction: hourly (one symbol) or a block (several)."""

    order_id: str
    side: str
    symbols: tuple[str, ...]
    price: int
    quantity: int
    seq: int
    group: str | None = None

    @property
    def hours(self) -> int:
        """How many contract-hours the order covers."""
        return len(self.symbols)

    @property
    def all_or_none(self) -> bool:
        """A block or a member of an exclusive group: accepted whole or not at all."""
        return len(self.symbols) > 1 or self.group is not None


@dataclass(frozen=True, slots=True)
class DayAheadTrade:
    """Units of one contract-hour from a seller to a buyer at the contract-hour's price."""

    symbol: str
    buy_order_id: str
    sell_order_id: str
    quantity: int
    price: int


class Rejection(StrEnum):
    """Why an order got nothing (the values are the wire's)."""

    OUT_OF_THE_MONEY = "out_of_the_money"
    """Its limit is worse than the clearing price (a block: than the average over its hours)."""
    AT_THE_MONEY = "at_the_money"
    """Its limit equals the clearing price(s) and the volume there went to other orders."""
    PARADOXICALLY_REJECTED = "paradoxically_rejected"
    """All-or-none, in the money at the prices, rejected to keep the result feasible."""
    ALTERNATIVE_ACCEPTED = "alternative_accepted"
    """Another order of its exclusive group was accepted."""
    NO_COUNTERPARTY = "no_counterparty"
    """One of its hours has no order of the other side at all."""
    NO_CLEARING_PRICE = "no_clearing_price"
    """One of its hours traded nothing and its hourly orders do not bound a price there."""


@dataclass(frozen=True, slots=True)
class DayAheadResult:
    """The outcome of one day-ahead auction."""

    prices: dict[str, int]
    accepted: dict[str, int]
    rejected: dict[str, Rejection]
    trades: tuple[DayAheadTrade, ...]
    welfare: int
    bound: int
    status: str
    gap_ppm: int


@dataclass(frozen=True, slots=True)
class _Book:
    """Validated orders in `seq` order, with the indexes the programmes are built from."""

    orders: tuple[DayAheadOrder, ...]
    symbols: tuple[str, ...]
    ticks: dict[str, int]
    groups: dict[str, tuple[int, ...]]
    hourly: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    """Per symbol, the divisible orders: buys by price descending then `seq`, sells ascending."""
    sides_present: dict[str, frozenset[str]]


def _book(orders: Sequence[DayAheadOrder], ticks: Mapping[str, int] | None) -> _Book:
    """Validate the orders (ValueError naming the first problem) and index them."""
    ids: set[str] = set()
    seqs: set[int] = set()
    for order in orders:
        _check_order(order, ids, seqs)
    ordered = tuple(sorted(orders, key=lambda order: order.seq))
    symbols = tuple(sorted({symbol for order in ordered for symbol in order.symbols}))
    tick_of: dict[str, int] = {}
    for symbol in symbols:
        tick = 1 if ticks is None else ticks.get(symbol, 1)
        if isinstance(tick, bool) or not isinstance(tick, int) or tick <= 0:
            raise ValueError(f"the tick of {symbol} must be a positive integer, not {tick!r}")
        tick_of[symbol] = tick
    for order in ordered:
        tick = tick_of[order.symbols[0]]
        if order.hours == 1 and order.price % tick:
            raise ValueError(
                f"order {order.order_id}: price {order.price} is not on the tick {tick} of "
                f"{order.symbols[0]}"
            )
    members: dict[str, list[int]] = defaultdict(list)
    buys: dict[str, list[int]] = defaultdict(list)
    sells: dict[str, list[int]] = defaultdict(list)
    present: dict[str, set[str]] = defaultdict(set)
    for index, order in enumerate(ordered):
        if order.group is not None:
            members[order.group].append(index)
        for symbol in order.symbols:
            present[symbol].add(order.side)
        if not order.all_or_none:
            (buys if order.side == BUY else sells)[order.symbols[0]].append(index)
    hourly = {
        symbol: (
            tuple(sorted(buys[symbol], key=lambda i: (-ordered[i].price, ordered[i].seq))),
            tuple(sorted(sells[symbol], key=lambda i: (ordered[i].price, ordered[i].seq))),
        )
        for symbol in symbols
    }
    return _Book(
        orders=ordered,
        symbols=symbols,
        ticks=tick_of,
        groups={group: tuple(members[group]) for group in sorted(members)},
        hourly=hourly,
        sides_present={symbol: frozenset(present[symbol]) for symbol in symbols},
    )


def _check_order(order: DayAheadOrder, ids: set[str], seqs: set[int]) -> None:
    """Raise ValueError if one order is malformed or repeats an id or `seq` already seen."""
    name = f"order {order.order_id!r}"
    if not isinstance(order.order_id, str) or not order.order_id:
        raise ValueError(f"{name}: the order id must be a non-empty string")
    if order.order_id in ids:
        raise ValueError(f"{name}: duplicate order id")
    if order.side not in SIDES:
        raise ValueError(f"{name}: unknown side {order.side!r} (buy or sell)")
    if not order.symbols:
        raise ValueError(f"{name}: no symbols")
    if len(set(order.symbols)) != len(order.symbols):
        raise ValueError(f"{name}: a symbol is repeated")
    for field in ("price", "quantity", "seq"):
        value = getattr(order, field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: {field} must be an integer, not {value!r}")
    if order.price <= 0:
        raise ValueError(f"{name}: the price must be positive, not {order.price}")
    if order.quantity <= 0:
        raise ValueError(f"{name}: the quantity must be positive, not {order.quantity}")
    if order.seq in seqs:
        raise ValueError(f"{name}: duplicate seq {order.seq}")
    if order.group is not None and (not isinstance(order.group, str) or not order.group):
        raise ValueError(f"{name}: the group must be a non-empty string or None")
    ids.add(order.order_id)
    seqs.add(order.seq)


def _sign(order: DayAheadOrder) -> int:
    return 1 if order.side == BUY else -1


def _value(order: DayAheadOrder, quantity: int) -> int:
    """The order's limit value of `quantity` units per hour over all its hours, in fen."""
    return order.price * quantity * order.hours


@dataclass(frozen=True, slots=True)
class _Programme:
    """The welfare programme's matrices (rows: symbols in order, then groups in order)."""

    objective: np.ndarray[Any, np.dtype[np.float64]]
    balance: csr_array
    group_rows: csr_array | None


def _programme(book: _Book) -> _Programme:
    """Build the welfare programme of the book: maximise welfare, balance every contract-hour."""
    row_of = {symbol: row for row, symbol in enumerate(book.symbols)}
    rows: list[int] = []
    cols: list[int] = []
    data: list[float] = []
    objective = np.zeros(len(book.orders))
    for index, order in enumerate(book.orders):
        objective[index] = -_sign(order) * _value(order, order.quantity)
        for symbol in order.symbols:
            rows.append(row_of[symbol])
            cols.append(index)
            data.append(float(_sign(order) * order.quantity))
    shape = (len(book.symbols), len(book.orders))
    balance = csr_array((data, (rows, cols)), shape=shape)
    group_rows = None
    if book.groups:
        g_rows = [row for row, members in enumerate(book.groups.values()) for _ in members]
        g_cols = [index for members in book.groups.values() for index in members]
        group_rows = csr_array(
            ([1.0] * len(g_cols), (g_rows, g_cols)), shape=(len(book.groups), len(book.orders))
        )
    return _Programme(objective, balance, group_rows)


@dataclass(frozen=True, slots=True)
class _Selection:
    """The all-or-none orders one welfare programme accepted, and what the search proved."""

    accepted: frozenset[int]
    limit_reached: bool
    upper_bound: float | None
    """An upper bound on welfare from the search when it stopped at a limit (None: optimal)."""


def _solve_welfare(
    book: _Book,
    programme: _Programme,
    fixed: Mapping[int, bool],
    node_limit: int,
    time_limit_s: float,
) -> _Selection:
    """Solve the welfare programme with the `fixed` all-or-none orders held accepted (True) or
    rejected (False)."""
    if not book.orders:
        return _Selection(frozenset(), limit_reached=False, upper_bound=None)
    integrality = np.array([1 if order.all_or_none else 0 for order in book.orders])
    lower = np.zeros(len(book.orders))
    upper = np.ones(len(book.orders))
    for index, accept in fixed.items():
        lower[index] = upper[index] = 1.0 if accept else 0.0
    constraints = [LinearConstraint(programme.balance, 0.0, 0.0)]
    if programme.group_rows is not None:
        constraints.append(LinearConstraint(programme.group_rows, -np.inf, 1.0))
    result = milp(
        programme.objective,
        integrality=integrality,
        bounds=Bounds(lower, upper),
        constraints=constraints,
        options={
            "node_limit": node_limit,
            "time_limit": time_limit_s,
            "mip_rel_gap": 0.0,
            "presolve": True,
        },
    )
    accepted: frozenset[int] = frozenset()
    if result.x is not None:
        accepted = frozenset(
            index
            for index, order in enumerate(book.orders)
            if order.all_or_none and result.x[index] > _HALF
        )
    if result.status == 0:
        return _Selection(accepted, limit_reached=False, upper_bound=None)
    # scipy reports a time limit as status 1; HiGHS ends at the node limit with its "solution
    # limit" status, which scipy does not name (status 4, the HiGHS code in the message).
    if result.status != 1 and _HIGHS_NODE_LIMIT not in result.message:
        raise RuntimeError(f"the welfare programme failed: {result.message}")
    bound = result.mip_dual_bound
    finite = bound is not None and math.isfinite(bound)
    return _Selection(accepted, limit_reached=True, upper_bound=-bound if finite else None)


def _allocate(book: _Book, accepted: frozenset[int]) -> dict[int, int] | None:
    """Accepted units per hour of every order: the all-or-none ones given, the rest by merit
    (None: the hourly orders cannot balance what the all-or-none ones buy and sell)."""
    fills = {index: book.orders[index].quantity for index in accepted}
    net: dict[str, int] = defaultdict(int)
    for index in accepted:
        order = book.orders[index]
        for symbol in order.symbols:
            net[symbol] += _sign(order) * order.quantity
    for symbol in book.symbols:
        buys, sells = book.hourly[symbol]
        hourly = _merit_order(book, buys, sells, net[symbol])
        if hourly is None:
            return None
        fills.update(hourly)
    return fills


def _merit_order(
    book: _Book, buys: tuple[int, ...], sells: tuple[int, ...], block_net: int
) -> dict[int, int] | None:
    """Fill one contract-hour's divisible orders: first what the blocks' net needs, then while
    the next buy's limit is at or above the next sell's (the most volume of the most welfare)."""
    fills: dict[int, int] = {}
    orders = book.orders
    b = s = 0
    buy_left = orders[buys[0]].quantity if buys else 0
    sell_left = orders[sells[0]].quantity if sells else 0

    def take_buy(units: int) -> None:
        nonlocal b, buy_left
        fills[buys[b]] = fills.get(buys[b], 0) + units
        buy_left -= units
        if buy_left == 0:
            b += 1
            buy_left = orders[buys[b]].quantity if b < len(buys) else 0

    def take_sell(units: int) -> None:
        nonlocal s, sell_left
        fills[sells[s]] = fills.get(sells[s], 0) + units
        sell_left -= units
        if sell_left == 0:
            s += 1
            sell_left = orders[sells[s]].quantity if s < len(sells) else 0

    need = block_net
    while need > 0:
        if s >= len(sells):
            return None
        units = min(need, sell_left)
        take_sell(units)
        need -= units
    while need < 0:
        if b >= len(buys):
            return None
        units = min(-need, buy_left)
        take_buy(units)
        need += units
    while b < len(buys) and s < len(sells) and orders[buys[b]].price >= orders[sells[s]].price:
        units = min(buy_left, sell_left)
        take_buy(units)
        take_sell(units)
    return fills


def _floor_tick(value: int, tick: int) -> int:
    return (value // tick) * tick


def _ceil_tick(value: int, tick: int) -> int:
    return -((-value) // tick) * tick


@dataclass(frozen=True, slots=True)
class _Interval:
    """Where one contract-hour's price may lie for its divisible orders (None: unbounded)."""

    low: int | None
    high: int | None


def _intervals(book: _Book, fills: Mapping[int, int]) -> dict[str, _Interval]:
    """Each contract-hour's clearing interval from its divisible orders' fills."""
    intervals = {}
    for symbol in book.symbols:
        lows: list[int] = []
        highs: list[int] = []
        buys, sells = book.hourly[symbol]
        for index in buys:
            order, filled = book.orders[index], fills.get(index, 0)
            if filled > 0:
                highs.append(order.price)
            if filled < order.quantity:
                lows.append(order.price)
        for index in sells:
            order, filled = book.orders[index], fills.get(index, 0)
            if filled > 0:
                lows.append(order.price)
            if filled < order.quantity:
                highs.append(order.price)
        intervals[symbol] = _Interval(max(lows, default=None), min(highs, default=None))
    return intervals


def _loss(order: DayAheadOrder, prices: Mapping[str, int]) -> int:
    """What an all-or-none order loses per unit over its hours at the prices (<= 0: none)."""
    total = sum(prices[symbol] for symbol in order.symbols)
    limit = order.price * order.hours
    return total - limit if order.side == BUY else limit - total


def _anchors(
    book: _Book,
    accepted: frozenset[int],
    fills: Mapping[int, int],
    intervals: Mapping[str, _Interval],
) -> dict[str, int]:
    """The midpoint prices: every contract-hour with volume, or bounded on both sides."""
    traded = {symbol for index in fills if fills[index] for symbol in book.orders[index].symbols}
    block_low: dict[str, int] = {}
    block_high: dict[str, int] = {}
    for index in sorted(accepted):
        order = book.orders[index]
        for symbol in order.symbols:
            if order.side == SELL:
                block_low[symbol] = max(block_low.get(symbol, order.price), order.price)
            else:
                block_high[symbol] = min(block_high.get(symbol, order.price), order.price)
    anchors = {}
    for symbol in book.symbols:
        tick = book.ticks[symbol]
        interval = intervals[symbol]
        if symbol not in traded and (interval.low is None or interval.high is None):
            continue
        low = interval.low if interval.low is not None else block_low.get(symbol)
        high = interval.high if interval.high is not None else block_high.get(symbol)
        if low is not None and high is not None:
            anchor = _floor_tick(max(0, (low + high) // 2), tick)
        elif low is not None:
            anchor = _ceil_tick(low, tick)
        elif high is not None:
            anchor = _floor_tick(high, tick)
        else:
            continue
        if interval.low is not None:
            anchor = max(anchor, interval.low)
        if interval.high is not None:
            anchor = min(anchor, interval.high)
        anchors[symbol] = anchor
    return anchors


def _prices(
    book: _Book,
    accepted: frozenset[int],
    intervals: Mapping[str, _Interval],
    anchors: Mapping[str, int],
    time_limit_s: float,
) -> tuple[dict[str, int], list[int], set[str]]:
    """The prices (the anchors, moved where an accepted all-or-none order would lose there), the
    orders to exclude (of every set of hours linked by accepted all-or-none orders that no
    prices support, the one losing most per unit and hour at the anchors) and those hours."""
    prices = dict(anchors)
    exclude = []
    failed_hours: set[str] = set()
    for component in _components(book, accepted):
        if all(_loss(book.orders[index], anchors) <= 0 for index in component):
            continue
        moved = _supporting_prices(book, component, intervals, anchors, time_limit_s)
        if moved is None:
            exclude.append(_to_exclude(book, component, anchors))
            failed_hours.update(s for index in component for s in book.orders[index].symbols)
        else:
            prices.update(moved)
    return prices, exclude, failed_hours


def _components(book: _Book, accepted: frozenset[int]) -> list[list[int]]:
    """The accepted all-or-none orders in groups linked by shared hours, each in `seq` order."""
    parent: dict[str, str] = {}

    def root(symbol: str) -> str:
        while parent.setdefault(symbol, symbol) != symbol:
            parent[symbol] = parent[parent[symbol]]
            symbol = parent[symbol]
        return symbol

    for index in sorted(accepted):
        first, *rest = book.orders[index].symbols
        for symbol in rest:
            parent[root(symbol)] = root(first)
    components: dict[str, list[int]] = defaultdict(list)
    for index in sorted(accepted):
        components[root(book.orders[index].symbols[0])].append(index)
    return [components[key] for key in sorted(components)]


def _supporting_prices(
    book: _Book,
    accepted: list[int],
    intervals: Mapping[str, _Interval],
    anchors: Mapping[str, int],
    time_limit_s: float,
) -> dict[str, int] | None:
    """Prices of the hours of `accepted` on tick, within every interval, at which none of them
    loses, nearest the anchors in total (None: there are none)."""
    hours = sorted({symbol for index in accepted for symbol in book.orders[index].symbols})
    column = {symbol: position for position, symbol in enumerate(hours)}
    n = len(hours)
    ticks = np.array([float(book.ticks[symbol]) for symbol in hours])
    lower = np.zeros(2 * n)
    upper = np.full(2 * n, np.inf)
    for position, symbol in enumerate(hours):
        interval, tick = intervals[symbol], book.ticks[symbol]
        if interval.low is not None:
            lower[position] = interval.low // tick
        if interval.high is not None:
            upper[position] = interval.high // tick
    rows: list[int] = []
    cols: list[int] = []
    data: list[float] = []
    low_side: list[float] = []
    high_side: list[float] = []
    for position, symbol in enumerate(hours):
        # deviation >= |tick * k - anchor|, as two rows
        for row_sign in (1.0, -1.0):
            row = len(low_side)
            rows += [row, row]
            cols += [n + position, position]
            data += [1.0, -row_sign * ticks[position]]
            low_side.append(-row_sign * anchors[symbol])
            high_side.append(np.inf)
    for index in sorted(accepted):
        order = book.orders[index]
        row = len(low_side)
        for symbol in order.symbols:
            rows.append(row)
            cols.append(column[symbol])
            data.append(ticks[column[symbol]])
        limit = float(order.price * order.hours)
        low_side.append(-np.inf if order.side == BUY else limit)
        high_side.append(limit if order.side == BUY else np.inf)
    matrix = csr_array((data, (rows, cols)), shape=(len(low_side), 2 * n))
    result = milp(
        np.concatenate([np.zeros(n), np.ones(n)]),
        integrality=np.concatenate([np.ones(n), np.zeros(n)]),
        bounds=Bounds(lower, upper),
        constraints=[LinearConstraint(matrix, np.array(low_side), np.array(high_side))],
        options={"time_limit": time_limit_s, "mip_rel_gap": 0.0},
    )
    if result.x is None:
        return None
    prices = {}
    for position, symbol in enumerate(hours):
        prices[symbol] = round(result.x[position]) * book.ticks[symbol]
    if any(_loss(book.orders[index], prices) > 0 for index in accepted):
        return None
    for symbol in hours:
        interval = intervals[symbol]
        if interval.low is not None and prices[symbol] < interval.low:
            return None
        if interval.high is not None and prices[symbol] > interval.high:
            return None
    return prices


def _to_exclude(book: _Book, accepted: list[int], anchors: Mapping[str, int]) -> int:
    """The accepted all-or-none order losing most per unit and hour at the anchors (the latest
    `seq` of equals)."""
    return max(
        (index for index in accepted if _loss(book.orders[index], anchors) > 0),
        key=lambda index: (
            Fraction(_loss(book.orders[index], anchors), book.orders[index].hours),
            book.orders[index].seq,
        ),
    )


def clear(
    orders: Sequence[DayAheadOrder],
    ticks: Mapping[str, int] | None = None,
    *,
    node_limit: int = DEFAULT_NODE_LIMIT,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
) -> DayAheadResult:
    """Clear one day-ahead auction (docs/MATCHING.md, "Day-ahead auction")."""
    book = _book(orders, ticks)
    programme = _programme(book)
    fixed: dict[int, bool] = {}
    limit_reached = False
    carried: frozenset[int] = frozenset()
    first: int | None = None
    while True:
        selection = _solve_welfare(book, programme, fixed, node_limit, time_limit_s)
        limit_reached = limit_reached or selection.limit_reached
        excluded = frozenset(index for index, accept in fixed.items() if not accept)
        accepted, fills = _better(book, selection.accepted, carried - excluded)
        if first is None:
            first = _proven_bound(book, selection, _welfare(book, fills))
        intervals = _intervals(book, fills)
        anchors = _anchors(book, accepted, fills, intervals)
        prices, exclude, failed_hours = _prices(book, accepted, intervals, anchors, time_limit_s)
        if not exclude:
            break
        fixed = _settle(book, accepted, failed_hours)
        fixed.update(dict.fromkeys(excluded | set(exclude), False))
        carried = accepted
    welfare = _welfare(book, fills)
    bound = max(welfare, first)
    return DayAheadResult(
        prices={symbol: prices[symbol] for symbol in sorted(prices)},
        accepted={
            book.orders[i].order_id: q
            for i, q in sorted(fills.items(), key=lambda item: book.orders[item[0]].order_id)
            if q > 0
        },
        rejected=_rejections(book, fills, prices),
        trades=_trades(book, fills, prices),
        welfare=welfare,
        bound=bound,
        status=OPTIMAL if not limit_reached and welfare == bound else LIMIT_REACHED,
        gap_ppm=_gap_ppm(welfare, bound),
    )


def _proven_bound(book: _Book, selection: _Selection, welfare: int) -> int:
    """The bound the first welfare programme proved, in whole fen: its optimum when it finished
    (the welfare of its selection), else its search's bound floored, never above the exact LP
    bound (the search's is a floating-point figure)."""
    if not selection.limit_reached:
        return welfare
    bound = math.floor(lp_relaxation(book.orders))
    if selection.upper_bound is not None:
        slack = _FLOAT_SLACK * max(1.0, abs(selection.upper_bound))
        bound = min(bound, math.floor(selection.upper_bound + slack))
    return max(welfare, bound)


def _settle(book: _Book, accepted: frozenset[int], open_hours: set[str]) -> dict[int, bool]:
    """Every all-or-none order none of whose hours is open, held as it is for the next round."""
    return {
        index: index in accepted
        for index, order in enumerate(book.orders)
        if order.all_or_none and open_hours.isdisjoint(order.symbols)
    }


def _welfare(book: _Book, fills: Mapping[int, int]) -> int:
    return sum(_sign(book.orders[i]) * _value(book.orders[i], q) for i, q in fills.items())


def _better(
    book: _Book, solved: frozenset[int], carried: frozenset[int]
) -> tuple[frozenset[int], dict[int, int]]:
    """Of the programme's selection and the previous round's less its exclusions (a search cut
    short may find worse), the one of more welfare whose hourly orders balance; the programme's
    on a tie."""
    fills = _allocate(book, solved)
    if fills is None:
        raise RuntimeError("the welfare programme chose blocks the hourly orders cannot balance")
    if carried and carried != solved:
        carried_fills = _allocate(book, carried)
        if carried_fills is not None and _welfare(book, carried_fills) > _welfare(book, fills):
            return carried, carried_fills
    return solved, fills


def _gap_ppm(welfare: int, bound: int) -> int:
    return (bound - welfare) * PPM // max(1, abs(bound))


def _rejections(
    book: _Book, fills: Mapping[int, int], prices: Mapping[str, int]
) -> dict[str, Rejection]:
    """The reason of every order that got nothing."""
    group_taken = {book.orders[index].group for index, filled in fills.items() if filled > 0} - {
        None
    }
    reasons = {}
    for index, order in enumerate(book.orders):
        if fills.get(index, 0) > 0:
            continue
        other = SELL if order.side == BUY else BUY
        if order.group in group_taken:
            reason = Rejection.ALTERNATIVE_ACCEPTED
        elif any(other not in book.sides_present[symbol] for symbol in order.symbols):
            reason = Rejection.NO_COUNTERPARTY
        elif any(symbol not in prices for symbol in order.symbols):
            reason = Rejection.NO_CLEARING_PRICE
        else:
            loss = _loss(order, prices)
            if loss > 0:
                reason = Rejection.OUT_OF_THE_MONEY
            elif loss == 0:
                reason = Rejection.AT_THE_MONEY
            else:
                reason = Rejection.PARADOXICALLY_REJECTED
        reasons[order.order_id] = reason
    return {order_id: reasons[order_id] for order_id in sorted(reasons)}


def _trades(
    book: _Book, fills: Mapping[int, int], prices: Mapping[str, int]
) -> tuple[DayAheadTrade, ...]:
    """Per symbol in order, buys paired with sells: all-or-none orders first by `seq`, then the
    hourly ones by price priority (buys highest first, sells lowest first), then `seq`."""
    legs: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for index, filled in fills.items():
        if filled > 0:
            order = book.orders[index]
            for symbol in order.symbols:
                legs[symbol][0 if order.side == BUY else 1].append(index)
    trades: list[DayAheadTrade] = []
    for symbol in sorted(legs):
        buys, sells = legs[symbol]
        buys.sort(key=lambda i: _pairing_key(book.orders[i], -1))
        sells.sort(key=lambda i: _pairing_key(book.orders[i], 1))
        b = s = 0
        buy_left, sell_left = fills[buys[0]], fills[sells[0]]
        while True:
            units = min(buy_left, sell_left)
            trades.append(
                DayAheadTrade(
                    symbol,
                    book.orders[buys[b]].order_id,
                    book.orders[sells[s]].order_id,
                    units,
                    prices[symbol],
                )
            )
            buy_left -= units
            sell_left -= units
            if buy_left == 0:
                b += 1
                if b == len(buys):
                    break
                buy_left = fills[buys[b]]
            if sell_left == 0:
                s += 1
                sell_left = fills[sells[s]]
    return tuple(trades)


def _pairing_key(order: DayAheadOrder, price_sign: int) -> tuple[int, int, int]:
    if order.all_or_none:
        return (0, 0, order.seq)
    return (1, price_sign * order.price, order.seq)


def lp_relaxation(orders: Sequence[DayAheadOrder]) -> Fraction:
    """An upper bound on the welfare of any clearing: the LP relaxation (blocks fractional,
    groups as sums <= 1), made exact as the Lagrangian bound at the LP's dual prices."""
    book = _book(orders, None)
    if not book.orders:
        return Fraction(0)
    programme = _programme(book)
    result = linprog(
        programme.objective,
        A_ub=programme.group_rows,
        b_ub=np.ones(len(book.groups)) if book.groups else None,
        A_eq=programme.balance,
        b_eq=np.zeros(len(book.symbols)),
        bounds=(0.0, 1.0),
        method="highs",
    )
    if result.status != 0:
        raise RuntimeError(f"the LP relaxation failed: {result.message}")
    balance_duals = [Fraction(float(y)) for y in result.eqlin.marginals]
    group_duals = (
        [Fraction(max(0.0, -float(z))) for z in result.ineqlin.marginals] if book.groups else []
    )
    return min(
        _lagrangian_bound(book, [sign * y for y in balance_duals], group_duals) for sign in (1, -1)
    )


def _lagrangian_bound(book: _Book, balance: list[Fraction], groups: list[Fraction]) -> Fraction:
    """max over x in [0,1] of welfare - balance . (A x) - groups . (G x - 1): at least the
    LP's value for any balance multipliers and non-negative group multipliers."""
    row_of = {symbol: row for row, symbol in enumerate(book.symbols)}
    group_row = {group: row for row, group in enumerate(book.groups)}
    total = sum(groups, Fraction(0))
    for order in book.orders:
        reduced = Fraction(_sign(order) * _value(order, order.quantity))
        for symbol in order.symbols:
            reduced -= balance[row_of[symbol]] * _sign(order) * order.quantity
        if order.group is not None:
            reduced -= groups[group_row[order.group]]
        total += max(Fraction(0), reduced)
    return total


def verify(
    orders: Sequence[DayAheadOrder], result: DayAheadResult, ticks: Mapping[str, int] | None = None
) -> list[str]:
    """Every problem that keeps `result` from being a valid clearing of `orders` (empty: none)."""
    book = _book(orders, ticks)
    problems: list[str] = []
    by_id = {order.order_id: order for order in book.orders}
    for order_id in result.accepted.keys() & result.rejected.keys():
        problems.append(f"{order_id} is both accepted and rejected")
    for order_id in (result.accepted.keys() | result.rejected.keys()) - by_id.keys():
        problems.append(f"{order_id} is not an order of the auction")
    for order_id in by_id.keys() - result.accepted.keys() - result.rejected.keys():
        problems.append(f"{order_id} is neither accepted nor rejected")
    for symbol, price in result.prices.items():
        if symbol not in book.ticks:
            problems.append(f"price for {symbol}, which no order names")
        elif price < 0 or price % book.ticks[symbol]:
            problems.append(f"{symbol}: price {price} is negative or off the tick")
    prices = result.prices
    volume: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    welfare = 0
    group_accepted: dict[str, list[str]] = defaultdict(list)
    for order in book.orders:
        filled = result.accepted.get(order.order_id, 0)
        if order.order_id in result.accepted and filled <= 0:
            problems.append(f"{order.order_id}: accepted quantity {filled} is not positive")
        if filled > order.quantity:
            problems.append(f"{order.order_id}: accepted {filled} > quantity {order.quantity}")
        if order.all_or_none and filled not in (0, order.quantity):
            problems.append(f"{order.order_id}: all-or-none but accepted {filled}")
        for symbol in order.symbols:
            volume[symbol][0 if order.side == BUY else 1] += filled
        welfare += _sign(order) * _value(order, filled)
        if filled > 0 and order.group is not None:
            group_accepted[order.group].append(order.order_id)
        problems.extend(_price_problems(order, filled, prices))
    for group, accepted in sorted(group_accepted.items()):
        if len(accepted) > 1:
            problems.append(f"group {group}: {len(accepted)} orders accepted")
    for symbol in book.symbols:
        bought, sold = volume[symbol]
        if bought != sold:
            problems.append(f"{symbol}: {bought} bought but {sold} sold")
        if bought and symbol not in prices:
            problems.append(f"{symbol}: traded without a price")
    for order_id, reason in result.rejected.items():
        rejected = by_id.get(order_id)
        if reason == Rejection.ALTERNATIVE_ACCEPTED and (
            rejected is None or rejected.group not in group_accepted
        ):
            problems.append(f"{order_id}: alternative_accepted, but none of its group was")
        if (
            rejected is not None
            and reason == Rejection.OUT_OF_THE_MONEY
            and all(symbol in prices for symbol in rejected.symbols)
            and _loss(rejected, prices) <= 0
        ):
            problems.append(f"{order_id}: out_of_the_money, but it is not at the prices")
    problems.extend(_trade_problems(book, result))
    if welfare != result.welfare:
        problems.append(f"welfare {result.welfare} but the accepted orders make {welfare}")
    if result.bound < result.welfare:
        problems.append(f"bound {result.bound} < welfare {result.welfare}")
    if result.status not in (OPTIMAL, LIMIT_REACHED):
        problems.append(f"unknown status {result.status!r}")
    if result.status == OPTIMAL and result.bound != result.welfare:
        problems.append(f"optimal, but bound {result.bound} != welfare {result.welfare}")
    if result.gap_ppm != _gap_ppm(result.welfare, result.bound):
        problems.append(f"gap {result.gap_ppm} ppm does not follow from welfare and bound")
    return problems


def _price_problems(order: DayAheadOrder, filled: int, prices: Mapping[str, int]) -> list[str]:
    """The ways one order's acceptance disagrees with the prices."""
    if any(symbol not in prices for symbol in order.symbols):
        return []
    loss = _loss(order, prices)
    if filled > 0 and loss > 0:
        return [f"{order.order_id}: accepted at a loss of {loss} per unit at the prices"]
    if order.all_or_none:
        return []
    if loss < 0 and filled < order.quantity:
        return [f"{order.order_id}: in the money but accepted {filled} of {order.quantity}"]
    return []


def _trade_problems(book: _Book, result: DayAheadResult) -> list[str]:
    """The ways the trades disagree with the accepted quantities and prices."""
    problems = []
    traded: dict[tuple[str, str], int] = defaultdict(int)
    by_id = {order.order_id: order for order in book.orders}
    for trade in result.trades:
        buy, sell = by_id.get(trade.buy_order_id), by_id.get(trade.sell_order_id)
        if buy is None or sell is None or buy.side != BUY or sell.side != SELL:
            problems.append(f"trade {trade} does not pair a buy order with a sell order")
            continue
        if trade.symbol not in buy.symbols or trade.symbol not in sell.symbols:
            problems.append(f"trade {trade} is in a symbol one of its orders does not name")
        if trade.quantity <= 0:
            problems.append(f"trade {trade} has no quantity")
        if trade.price != result.prices.get(trade.symbol):
            problems.append(f"trade {trade} is not at the price of {trade.symbol}")
        traded[trade.buy_order_id, trade.symbol] += trade.quantity
        traded[trade.sell_order_id, trade.symbol] += trade.quantity
    for order in book.orders:
        for symbol in order.symbols:
            expected = result.accepted.get(order.order_id, 0)
            if traded.get((order.order_id, symbol), 0) != expected:
                problems.append(
                    f"{order.order_id}: trades in {symbol} sum to "
                    f"{traded.get((order.order_id, symbol), 0)}, accepted {expected}"
                )
    return problems


def order_to_wire(order: DayAheadOrder) -> dict[str, Any]:
    """The order as canonical JSON-able data (`group` left off when None)."""
    wire: dict[str, Any] = {
        "order_id": order.order_id,
        "side": order.side,
        "symbols": list(order.symbols),
        "price": order.price,
        "quantity": order.quantity,
        "seq": order.seq,
    }
    if order.group is not None:
        wire["group"] = order.group
    return wire


_ORDER_KEYS = frozenset({"order_id", "side", "symbols", "price", "quantity", "seq", "group"})
_RESULT_KEYS = frozenset(
    {"prices", "accepted", "rejected", "trades", "welfare", "bound", "status", "gap_ppm"}
)
_TRADE_KEYS = ("symbol", "buy_order_id", "sell_order_id", "quantity", "price")


def order_from_wire(wire: Mapping[str, Any]) -> DayAheadOrder:
    """The order `order_to_wire` wrote (ValueError if the data is not one)."""
    _check_keys("order", wire, _ORDER_KEYS, _ORDER_KEYS - {"group"})
    symbols = wire["symbols"]
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        raise ValueError("order: symbols must be a list of strings")
    return DayAheadOrder(
        order_id=_typed(wire, "order_id", str),
        side=_typed(wire, "side", str),
        symbols=tuple(symbols),
        price=_typed(wire, "price", int),
        quantity=_typed(wire, "quantity", int),
        seq=_typed(wire, "seq", int),
        group=_typed(wire, "group", str) if "group" in wire else None,
    )


def result_to_wire(result: DayAheadResult) -> dict[str, Any]:
    """The result as canonical JSON-able data (maps in key order, trades as objects)."""
    return {
        "prices": dict(result.prices),
        "accepted": dict(result.accepted),
        "rejected": {order_id: str(reason) for order_id, reason in result.rejected.items()},
        "trades": [{key: getattr(trade, key) for key in _TRADE_KEYS} for trade in result.trades],
        "welfare": result.welfare,
        "bound": result.bound,
        "status": result.status,
        "gap_ppm": result.gap_ppm,
    }


def result_from_wire(wire: Mapping[str, Any]) -> DayAheadResult:
    """The result `result_to_wire` wrote (ValueError if the data is not one)."""
    _check_keys("result", wire, _RESULT_KEYS, _RESULT_KEYS)
    trades = []
    for item in _typed(wire, "trades", list):
        if not isinstance(item, Mapping):
            raise ValueError("result: every trade must be an object")
        _check_keys("trade", item, frozenset(_TRADE_KEYS), frozenset(_TRADE_KEYS))
        trades.append(
            DayAheadTrade(
                symbol=_typed(item, "symbol", str),
                buy_order_id=_typed(item, "buy_order_id", str),
                sell_order_id=_typed(item, "sell_order_id", str),
                quantity=_typed(item, "quantity", int),
                price=_typed(item, "price", int),
            )
        )
    status = _typed(wire, "status", str)
    if status not in (OPTIMAL, LIMIT_REACHED):
        raise ValueError(f"result: unknown status {status!r}")
    try:
        rejected = {
            str(order_id): Rejection(reason)
            for order_id, reason in _typed(wire, "rejected", dict).items()
        }
    except ValueError as error:
        raise ValueError(f"result: {error}") from None
    return DayAheadResult(
        prices=_int_map(wire, "prices"),
        accepted=_int_map(wire, "accepted"),
        rejected=rejected,
        trades=tuple(trades),
        welfare=_typed(wire, "welfare", int),
        bound=_typed(wire, "bound", int),
        status=status,
        gap_ppm=_typed(wire, "gap_ppm", int),
    )


def _check_keys(
    what: str, wire: Mapping[str, Any], allowed: frozenset[str], required: frozenset[str]
) -> None:
    if not isinstance(wire, Mapping):
        raise ValueError(f"{what}: must be an object")
    if missing := sorted(required - wire.keys()):
        raise ValueError(f"{what}: missing {', '.join(missing)}")
    if unknown := sorted(wire.keys() - allowed):
        raise ValueError(f"{what}: unknown {', '.join(unknown)}")


def _typed(wire: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    value = wire[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{key} must be {kind.__name__}, not {value!r}")
    return value


def _int_map(wire: Mapping[str, Any], key: str) -> dict[str, int]:
    value = _typed(wire, key, dict)
    if not all(isinstance(k, str) and type(v) is int for k, v in value.items()):
        raise ValueError(f"{key} must map strings to integers")
    return dict(value)
