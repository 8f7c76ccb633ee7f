"""`cx bench auction`: clear a seeded, realistic day-ahead auction with `matching.dayahead`.

The day: 7 hubs x 2 classes (an H100 card-hour, tick 10 fen, and a CPU core-hour, tick 1) x 24
delivery hours = 336 contract-hours. The orders (10,000 by default): 2,000 free-standing blocks
of 2-8 consecutive hours, 1,000 exclusive groups of 2-5 alternative buy blocks (the same job in
different hubs or starting hours), and hourly orders for the rest, priced around a daily
profile that differs by hub. The clock is injected (matching reads no clock of its own); the
result is one JSON line with the solver's figures and, as the baseline of the same run, the LP
relaxation's bound and solve time.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from matching.bench import Lcg
from matching.dayahead import (
    DEFAULT_NODE_LIMIT,
    DEFAULT_TIME_LIMIT_S,
    DayAheadOrder,
    clear,
    lp_relaxation,
    verify,
)

Clock = Callable[[], int]

HUBS = ("JJJ", "YRD", "GBA", "CY", "NMG", "GZ", "NX")
CLASSES = {"H100-80G": (10, 1800), "CPU": (1, 30)}
"""Class -> (tick, typical price per unit and hour in fen)."""
DAY = "20271201"
HOURS = 24
HUB_DISCOUNT = {"JJJ": 6, "YRD": 6, "GBA": 5, "CY": 2, "NMG": -4, "GZ": -3, "NX": -4}
"""Per cent above (or below) the class's typical price: eastern demand hubs pay more."""
DAILY_SHAPE = (
    -12, -14, -15, -16, -16, -14, -10, -4, 2, 6, 8, 9, 7, 6, 8, 9, 10, 12, 14, 12, 8, 3, -3, -8,
)  # fmt: skip
"""Per cent above the hub's price, by delivery hour (China Standard Time)."""


def symbol(resource_class: str, hub: str, hour: int) -> str:
    """`CLASS.HUB.YYYYMMDDTHH`, the exchange's contract grammar."""
    return f"{resource_class}.{hub}.{DAY}T{hour:02d}"


def fair_price(resource_class: str, hub: str, hour: int) -> int:
    """The price around which the flow quotes one contract-hour."""
    base = CLASSES[resource_class][1]
    return base * (100 + HUB_DISCOUNT[hub]) * (100 + DAILY_SHAPE[hour]) // 10_000


def make_day(orders: int = 10_000, seed: int = 1) -> list[DayAheadOrder]:
    """The auction's orders: a fifth free blocks, a tenth as many groups, the rest hourly."""
    rng = Lcg(seed)
    below = rng.below
    classes = sorted(CLASSES)
    book: list[DayAheadOrder] = []
    blocks, groups = orders // 5, orders // 10

    def quantity(resource_class: str) -> int:
        return 1 + below(8 if resource_class == "H100-80G" else 64)

    def block_price(resource_class: str, hub: str, start: int, length: int, side: str) -> int:
        average = sum(fair_price(resource_class, hub, h) for h in range(start, start + length))
        average //= length
        skew = below(25) - (4 if side == "buy" else 20)  # per cent: buys mostly above fair
        return max(1, average * (100 + skew) // 100)

    for number in range(blocks):
        resource_class, hub = classes[below(2)], HUBS[below(len(HUBS))]
        length = 2 + below(7)
        start = below(HOURS - length + 1)
        side = "buy" if below(2) else "sell"
        book.append(
            DayAheadOrder(
                order_id=f"blk{number:05d}",
                side=side,
                symbols=tuple(symbol(resource_class, hub, h) for h in range(start, start + length)),
                price=block_price(resource_class, hub, start, length, side),
                quantity=quantity(resource_class),
                seq=len(book),
            )
        )
    for number in range(groups):
        if len(book) >= orders:
            break
        resource_class = classes[below(2)]
        length = 2 + below(7)
        members = min(2 + below(4), orders - len(book))
        size = quantity(resource_class)
        for member in range(members):
            hub = HUBS[below(len(HUBS))]
            start = below(HOURS - length + 1)
            book.append(
                DayAheadOrder(
                    order_id=f"grp{number:04d}-{member}",
                    side="buy",
                    symbols=tuple(
                        symbol(resource_class, hub, h) for h in range(start, start + length)
                    ),
                    price=block_price(resource_class, hub, start, length, "buy"),
                    quantity=size,
                    seq=len(book),
                    group=f"grp{number:04d}",
                )
            )
    number = 0
    while len(book) < orders:
        resource_class, hub, hour = classes[below(2)], HUBS[below(len(HUBS))], below(HOURS)
        tick, _ = CLASSES[resource_class]
        side = "buy" if below(2) else "sell"
        skew = below(31) - 15  # per cent around fair, both sides
        price = max(tick, fair_price(resource_class, hub, hour) * (100 + skew) // 100)
        book.append(
            DayAheadOrder(
                order_id=f"hr{number:05d}",
                side=side,
                symbols=(symbol(resource_class, hub, hour),),
                price=price // tick * tick or tick,
                quantity=quantity(resource_class) * 12,
                seq=len(book),
            )
        )
        number += 1
    return book


def ticks() -> dict[str, int]:
    """Every contract-hour's tick."""
    return {
        symbol(resource_class, hub, hour): tick
        for resource_class, (tick, _) in CLASSES.items()
        for hub in HUBS
        for hour in range(HOURS)
    }


def run(clock: Clock, orders: int = 10_000, seed: int = 1, node_limit: int | None = None) -> str:
    """Clear one seeded day (with the solver's default limits unless `node_limit` is given)
    and the LP relaxation of the same orders; one JSON line."""
    node_limit = DEFAULT_NODE_LIMIT if node_limit is None else node_limit
    book = make_day(orders, seed)
    tick_of = ticks()
    started = clock()
    bound = lp_relaxation(book)
    lp_s = (clock() - started) / 1e9
    started = clock()
    result = clear(book, tick_of, node_limit=node_limit)
    solve_s = (clock() - started) / 1e9
    problems = verify(book, result, tick_of)
    lp_bound = int(bound)
    figures = {
        "bench": "auction",
        "orders": len(book),
        "hourly": sum(1 for order in book if len(order.symbols) == 1),
        "blocks": sum(1 for order in book if len(order.symbols) > 1 and order.group is None),
        "groups": len({order.group for order in book if order.group is not None}),
        "group_members": sum(1 for order in book if order.group is not None),
        "symbols": len({s for order in book for s in order.symbols}),
        "node_limit": node_limit,
        "time_limit_s": DEFAULT_TIME_LIMIT_S,
        "solve_s": round(solve_s, 3),
        "status": result.status,
        "welfare": result.welfare,
        "bound": result.bound,
        "gap_ppm": result.gap_ppm,
        "accepted": len(result.accepted),
        "accepted_blocks": sum(
            1 for order in book if len(order.symbols) > 1 and order.order_id in result.accepted
        ),
        "paradoxically_rejected": sum(
            1 for reason in result.rejected.values() if reason == "paradoxically_rejected"
        ),
        "trades": len(result.trades),
        "valid": not problems,
        "lp_bound": lp_bound,
        "lp_s": round(lp_s, 3),
        "ratio": round(result.welfare / max(1, lp_bound), 6),
        "seed": seed,
    }
    return json.dumps(figures)
