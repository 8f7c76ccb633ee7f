"""`cx bench matching`: replay a seeded, realistic order flow through the engine alone.

The flow (about 58% passive limit orders around a moving mid, 24% cancels of live orders, 13%
aggressive orders, 5% other types: market, FOK, post-only, all-or-none, GTD, minimum quantity,
amend, kill switch) is generated up front while a simple book simulates it, so cancels pick
orders that are really open. The same flow is then replayed, in one process, through
`MatchingEngine` and through the straightforward `SimpleExchange`, taking turns: the fastest of
three untimed passes measures throughput, then one pass each times every command. The clock is
injected (matching reads no clock of its own); the result is one JSON line.
"""

from __future__ import annotations

import gc
import json
import resource
from collections.abc import Callable
from typing import Any

from matching import COMPILED
from matching.book import CANCEL_RESTING, FOK, GTC, GTD, IOC
from matching.engine import MatchingEngine
from matching.reference import SimpleExchange

Clock = Callable[[], int]
Command = tuple[int, tuple[Any, ...]]

SUBMIT, CANCEL, AMEND, CANCEL_ALL = range(4)
FAMILY = "H100-80G.GZ"
HOURS = 8
TICK = 10
REFERENCE_PRICE = 1800
ACCOUNTS = 2000
CHUNK = 4096


class Lcg:
    """A seeded 64-bit linear congruential generator (Knuth's MMIX constants), high bits out."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = (seed * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF

    def below(self, n: int) -> int:
        """A number in [0, n)."""
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return ((self.state >> 32) * n) >> 32


def symbols() -> list[str]:
    """The contracts of the flow: eight delivery hours of one family."""
    return [f"{FAMILY}.20261201T{hour:02d}" for hour in range(HOURS)]


def make_flow(count: int, seed: int = 1) -> list[Command]:
    """`count` commands (opcode, arguments as `MatchingEngine` takes them)."""
    rng = Lcg(seed)
    below = rng.below
    names = symbols()
    mids = [REFERENCE_PRICE] * HOURS
    accounts = [f"acct-{i}" for i in range(ACCOUNTS)]
    # Related parties: every tenth account shares an ownership group with its neighbour.
    groups = [f"group-{i // 2}" if i % 10 < 2 else "" for i in range(ACCOUNTS)]
    sim = SimpleExchange(names)
    symbol_of = {id(book): symbol for symbol, book in sim.books.items()}
    live: list[str] = []
    where: dict[str, int] = {}
    owner: dict[str, int] = {}
    placed: dict[str, tuple[int, int]] = {}
    flow: list[Command] = []
    ts = 1_800_000_000_000

    def forget(order_id: str) -> None:
        index = where.pop(order_id, None)
        if index is None:
            return
        last = live.pop()
        if last != order_id:
            live[index] = last
            where[last] = index

    def track(order_id: str, account: int) -> None:
        entry = sim.orders.get(order_id)
        if entry is not None and order_id not in where:
            where[order_id] = len(live)
            live.append(order_id)
            owner[order_id] = account
            placed[order_id] = (names.index(symbol_of[id(entry[0])]), entry[1].price)

    for n in range(count):
        ts += below(3)
        h = below(HOURS)
        if below(40) == 0:
            mids[h] += TICK if below(2) else -TICK
        mid = mids[h]
        symbol = names[h]
        a = below(ACCOUNTS)
        account = accounts[a]
        side = "buy" if below(2) else "sell"
        sign = -1 if side == "buy" else 1
        order_id = f"o{n}"
        roll = below(1000)
        args: tuple[Any, ...]
        if roll < 580:
            offset = (1 + below(6) + below(6)) * TICK
            args = (ts, symbol, order_id, account, side, mid + sign * offset, 1 + below(10))
            op = SUBMIT
        elif roll < 820 and live:
            # Participants re-quote: of three open orders, the one furthest from its mid goes.
            order_id = max(
                (live[below(len(live))] for _ in range(3)),
                key=lambda i: abs(placed[i][1] - mids[placed[i][0]]),
            )
            args = (ts, order_id, accounts[owner[order_id]])
            op = CANCEL
        elif roll < 950:
            price = mid - sign * (1 + below(4)) * TICK
            tif = IOC if below(3) == 0 else GTC
            args = (ts, symbol, order_id, account, side, price, 1 + below(30), tif)
            op = SUBMIT
        else:
            op, args = _other(
                below, ts, symbol, order_id, account, groups[a], side, mid, live, accounts, owner
            )
        _simulate(sim, op, args, forget)
        if op == SUBMIT:
            track(order_id, a)
        elif op == AMEND:
            forget(args[1])
            track(args[1], owner[args[1]])
        elif op == CANCEL:
            forget(args[1])
        flow.append((op, args))
    return flow


def _other(
    below: Callable[[int], int],
    ts: int,
    symbol: str,
    order_id: str,
    account: str,
    group: str,
    side: str,
    mid: int,
    live: list[str],
    accounts: list[str],
    owner: dict[str, int],
) -> Command:
    sign = -1 if side == "buy" else 1
    kind = below(50)
    quantity = 1 + below(20)
    passive = mid + sign * (1 + below(8)) * TICK
    through = mid - sign * below(3) * TICK
    if kind < 7:
        return SUBMIT, (
            ts,
            symbol,
            order_id,
            account,
            side,
            0,
            quantity,
            GTC,
            0,
            0,
            False,
            False,
            group,
            CANCEL_RESTING,
            True,
        )
    if kind < 14:
        return SUBMIT, (ts, symbol, order_id, account, side, through, quantity, FOK)
    if kind < 24:
        return SUBMIT, (
            ts,
            symbol,
            order_id,
            account,
            side,
            passive,
            quantity,
            GTC,
            0,
            0,
            False,
            True,
        )
    if kind < 30:
        return SUBMIT, (ts, symbol, order_id, account, side, passive, quantity, GTC, 0, 0, True)
    if kind < 38:
        return SUBMIT, (
            ts,
            symbol,
            order_id,
            account,
            side,
            passive,
            quantity,
            GTD,
            ts + 1000 + below(60_000),
        )
    if kind < 42:
        return SUBMIT, (
            ts,
            symbol,
            order_id,
            account,
            side,
            through,
            quantity,
            GTC,
            0,
            quantity // 2,
            False,
            False,
            group,
            "decrement",
        )
    if kind < 49 and live:
        target = live[below(len(live))]
        new_quantity = 1 + below(10)
        return AMEND, (ts, target, accounts[owner[target]], 0, new_quantity)
    return CANCEL_ALL, (ts, account)


def _simulate(
    sim: SimpleExchange, op: int, args: tuple[Any, ...], forget: Callable[[str], None]
) -> None:
    if op == SUBMIT:
        fills = sim.submit(*args)
    elif op == CANCEL:
        sim.cancel(*args)
        return
    elif op == AMEND:
        fills = sim.amend(*args)
    else:
        # The simple book ignores kill switches; the generator applies them itself, so the
        # flow's later cancels still name orders the engine has open.
        for order_id in [i for i, (_, o) in sim.orders.items() if o.account == args[1]]:
            sim.cancel(args[0], order_id)
            forget(order_id)
        return
    for maker_id, _, _ in fills:
        if maker_id not in sim.orders:
            forget(maker_id)


def _engine() -> tuple[MatchingEngine, list[Callable[..., Any]]]:
    engine = MatchingEngine()
    for hour, symbol in enumerate(symbols()):
        engine.list_contract(
            0,
            symbol,
            FAMILY,
            1_900_000_000_000 + hour * 3_600_000,
            REFERENCE_PRICE,
            tick=TICK,
            band=REFERENCE_PRICE // 5,
            protection=REFERENCE_PRICE // 20,
            open_at=0,
        )
    engine.take_events()
    return engine, [engine.submit, engine.cancel, engine.amend, engine.cancel_all]


def _simple() -> tuple[SimpleExchange, list[Callable[..., Any]]]:
    simple = SimpleExchange(symbols())
    return simple, [simple.submit, simple.cancel, simple.amend, simple.cancel_all]


def _throughput(
    flow: list[Command], handlers: list[Callable[..., Any]], drain: Callable[[], None], clock: Clock
) -> int:
    start = clock()
    for begin in range(0, len(flow), CHUNK):
        for op, args in flow[begin : begin + CHUNK]:
            handlers[op](*args)
        drain()
    return clock() - start


def _latencies(
    flow: list[Command], handlers: list[Callable[..., Any]], drain: Callable[[], None], clock: Clock
) -> list[int]:
    out = [0] * len(flow)
    i = 0
    for begin in range(0, len(flow), CHUNK):
        for op, args in flow[begin : begin + CHUNK]:
            t0 = clock()
            handlers[op](*args)
            out[i] = clock() - t0
            i += 1
        drain()
    out.sort()
    return out


def _percentile(ordered: list[int], fraction: float) -> float:
    index = min(len(ordered) - 1, int(fraction * len(ordered)))
    return round(ordered[index] / 1000, 2)


def _manage_gc() -> None:
    """Keep the collector off the long-lived heap: freeze it, and never run a full collection.

    Neither book makes reference cycles per command (refcounting frees everything they drop),
    so the cyclic collector finds nothing; what costs is its scanning of everything that
    survives. Freezing moves the start-up heap (the flow, the books) out of its sight; young
    collections of at most 10,000 objects stay short; the oldest generation, which would
    rescan every resting order, is only collected after a million younger collections.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 1_000_000)


def run(
    clock: Clock,
    commands: int = 1_000_000,
    seed: int = 1,
    manage_gc: bool = True,
    repeats: int = 3,
) -> str:
    """Run the benchmark; returns its JSON line."""
    flow = make_flow(commands, seed)
    books = {"engine": _engine, "reference": _simple}
    elapsed = dict.fromkeys(books, 1 << 62)
    timings: dict[str, list[int]] = {}
    # The books take turns, so a burst of other work on this shared machine hits both; the
    # fastest of `repeats` untimed passes counts, then one pass each times every command.
    for timed in [False] * repeats + [True]:
        for name, factory in books.items():
            if timed:
                timings[name] = _measure(factory, flow, clock, manage_gc, True)
            else:
                taken = _measure(factory, flow, clock, manage_gc, False)
                elapsed[name] = min(elapsed[name], taken[0])
    results = {
        name: {
            "per_s": round(len(flow) * 1e9 / elapsed[name]),
            "p50": _percentile(timings[name], 0.5),
            "p99": _percentile(timings[name], 0.99),
            "p999": _percentile(timings[name], 0.999),
            "max": round(timings[name][-1] / 1000, 2),
            "stalls": sum(1 for t in timings[name] if t > 1_000_000),
        }
        for name in books
    }
    engine, simple = results["engine"], results["reference"]
    line = {
        "bench": "matching",
        "commands": len(flow),
        "commands_per_s": engine["per_s"],
        "p50_us": engine["p50"],
        "p99_us": engine["p99"],
        "p999_us": engine["p999"],
        "max_us": engine["max"],
        "stalls_over_1ms": engine["stalls"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "reference_commands_per_s": simple["per_s"],
        "reference_p99_us": simple["p99"],
        "reference_max_us": simple["max"],
        "reference_stalls_over_1ms": simple["stalls"],
        "ratio": round(engine["per_s"] / simple["per_s"], 3),
        "gc": "frozen+tuned" if manage_gc else "default",
        "seed": seed,
        "compiled": COMPILED,
    }
    return json.dumps(line)


def _measure(
    factory: Callable[[], tuple[Any, list[Callable[..., Any]]]],
    flow: list[Command],
    clock: Clock,
    manage_gc: bool,
    timed: bool,
) -> list[int]:
    """One pass over the flow on a fresh book: [elapsed ns], or every command's latency."""
    target, handlers = factory()
    drain: Callable[[], None] = (
        target.events.clear if isinstance(target, MatchingEngine) else _nothing
    )
    defaults = gc.get_threshold()
    if manage_gc:
        _manage_gc()
    try:
        if timed:
            return _latencies(flow, handlers, drain, clock)
        return [_throughput(flow, handlers, drain, clock)]
    finally:
        del target, handlers, drain
        gc.unfreeze()
        gc.set_threshold(*defaults)
        gc.collect()


def _nothing() -> None:
    return None
