"""`cx bench matching` against the plain book: the engine and `PlainBook` on independent flows.

Two seeded flows of one contract, made here and nowhere else (not the mixed flow of
`matching/bench.py`): limit orders added near the touch, cancels of random resting orders, and
aggressive orders crossing the spread, one account per side (so self-trade prevention never
acts) and no other feature (no band, no expiry, no blocks, no other order type). The *touch*
flow keeps about 5,000 orders resting, the *deep* flow about 200,000. Each flow is a setup, which
builds the book to its depth with passive orders and is not timed, then its messages.

The generator runs the flow through a `PlainBook` as it makes it, so its cancels name orders
really resting and its orders are priced from the real touch.

Both books replay the same flow, alternately in one process: the engine as the matching stage
drives it (`submit` or `cancel` with the record's log time, then `take_events()` after every
command), the plain book through its own methods. Throughput is the best of `repeats` passes
each, with the garbage collector on as `cx run` sets it (the start-up heap frozen, young
collections every 10,000 allocations, full collections as Python schedules them) and with it
off; then one pass each, collector on and then off, times every command. The timed passes also
check that the two did the same work: the same trades, the same traded quantity and the same
orders left resting, and no command refused by the engine; anything else raises
`BenchMismatch`. The clock is passed in: `matching` reads none.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from matching import COMPILED
from matching.bench import Lcg
from matching.book import BUY, IOC, SELL
from matching.engine import MatchingEngine
from matching.outputs import CANCEL_REJECTED, REJECTED, TRADE, Output
from matching.plain_book import PlainBook

T = TypeVar("T")
Clock = Callable[[], int]
Command = tuple[int, tuple[Any, ...]]

LIMIT, TAKE, CANCEL = range(3)
"""Message kinds: a limit order (rests its remainder), an immediate-or-cancel order, a cancel."""

Message = tuple[int, int, bool, int, int]
"""(kind, order number (for a cancel: the order cancelled), is a buy, price, quantity)."""

SYMBOL = "PLAIN-H100.GZ.20270101T00"
FAMILY = "PLAIN-H100.GZ"
START_PRICE = 100_000
"""The flow's first mid, in ticks of 1: far enough from 0 that its random walk stays positive."""
START_TS = 1_800_000_000_000
ACCOUNTS = {True: "buyer", False: "seller"}
ORDERS_PER_SPAN_TICK = 250
"""Passive orders land up to `resting / ORDERS_PER_SPAN_TICK` ticks from the mid (20 for the
touch flow, 800 for the deep one), so a price level holds about as many orders in both."""
AGGRESSIVE_PERCENT = 10
"""Of the messages, aggressive orders; half of them immediate-or-cancel, half limit orders."""
MID_STEP_EVERY = 100
"""Messages between steps of a tick of the mid the flow's passive orders are placed around, on
average (a random walk: the market moves)."""
CANCEL_PERCENTS = (35, 55)
"""Of the other messages, the share of cancels while the book is at or below its target depth,
and above it (the rest add orders): this holds the book at its depth."""


@dataclass(frozen=True)
class Flow:
    """A flow: the untimed setup that builds the book, then the measured messages."""

    name: str
    setup: list[Message]
    messages: list[Message]
    resting_mean: int
    """Orders resting in the generator's book, averaged over the messages."""


def make_flow(name: str, messages: int, resting: int, span: int, seed: int) -> Flow:
    """A seeded flow keeping about `resting` orders in the book; passive orders land up to `span`
    ticks behind a mid that walks at random (denser near it), never crossing the touch."""
    below = Lcg(seed).below
    book = PlainBook()
    orders = book.orders
    live: list[int] = []
    """Order numbers that rested; the filled and cancelled ones are dropped when drawn."""
    number = 0
    mid = START_PRICE

    def touch() -> tuple[int, int]:
        """The best bid and ask; an empty side is a tick beyond the other side, or the mid."""
        bid = book.best_bid
        ask = book.best_ask if book.asks else 0
        if not bid:
            bid = (ask or mid + 1) - 1
        if not ask:
            ask = bid + 1
        return bid, ask

    def passive(out: list[Message]) -> None:
        nonlocal number
        buy = below(2) == 0
        bid, ask = touch()
        offset = below(1 + below(span))
        price = min(mid - offset, ask - 1) if buy else max(mid + 1 + offset, bid + 1)
        quantity = 1 + below(10)
        out.append((LIMIT, number, buy, price, quantity))
        book.limit(number, buy, price, quantity)
        live.append(number)
        number += 1

    setup: list[Message] = []
    for _ in range(resting):
        passive(setup)
    flow: list[Message] = []
    resting_total = 0
    for _ in range(messages):
        resting_total += len(orders)
        if not below(MID_STEP_EVERY):
            mid += 1 if below(2) else -1
        if below(100) < AGGRESSIVE_PERCENT and book.bids and book.asks:
            buy = below(2) == 0
            bid, ask = touch()
            price = ask + below(3) if buy else bid - below(3)
            quantity = 1 + below(20)
            if below(2):
                flow.append((TAKE, number, buy, price, quantity))
                book.take(buy, price, quantity)
            else:
                flow.append((LIMIT, number, buy, price, quantity))
                book.limit(number, buy, price, quantity)
                if number in orders:
                    live.append(number)
            number += 1
        elif below(100) < CANCEL_PERCENTS[len(orders) > resting]:
            target = _draw_resting(below, live, orders)
            if target < 0:
                passive(flow)
            else:
                flow.append((CANCEL, target, bool(orders[target][3]), 0, 0))
                book.cancel(target)
        else:
            passive(flow)
    return Flow(name, setup, flow, resting_total // max(1, messages))


def _draw_resting(below: Callable[[int], int], live: list[int], orders: dict[int, Any]) -> int:
    """A random resting order's number (-1 if none), taken out of `live`."""
    while live:
        index = below(len(live))
        number = live[index]
        last = live.pop()
        if index < len(live):
            live[index] = last
        if number in orders:
            return number
    return -1


def engine_commands(messages: Sequence[Message], ids: list[str], first_ts: int) -> list[Command]:
    """The messages as `MatchingEngine.submit` and `cancel` take them (opcodes 0 and 1)."""
    commands: list[Command] = []
    append = commands.append
    for ts, (kind, number, buy, price, quantity) in enumerate(messages, first_ts):
        account = ACCOUNTS[buy]
        if kind == CANCEL:
            append((1, (ts, ids[number], account)))
            continue
        side = BUY if buy else SELL
        args = (ts, SYMBOL, ids[number], account, side, price, quantity)
        append((0, (*args, IOC) if kind == TAKE else args))
    return commands


def plain_commands(messages: Sequence[Message]) -> list[Command]:
    """The messages as `PlainBook.limit`, `take` and `cancel` take them (opcodes LIMIT...)."""
    commands: list[Command] = []
    append = commands.append
    for kind, number, buy, price, quantity in messages:
        if kind == LIMIT:
            append((LIMIT, (number, buy, price, quantity)))
        elif kind == TAKE:
            append((TAKE, (buy, price, quantity)))
        else:
            append((CANCEL, (number,)))
    return commands


class BenchMismatch(RuntimeError):
    """The engine and the plain book did not do the same work on a flow."""


def new_engine() -> MatchingEngine:
    """An engine with the flow's one contract, in continuous trading, with no band."""
    engine = MatchingEngine()
    engine.list_contract(
        0, SYMBOL, FAMILY, START_TS + 1_000_000_000_000, START_PRICE, tick=1, continuous=True
    )
    engine.take_events()
    return engine


@dataclass
class Replayed:
    """What one timed pass of a book over a flow measured and did."""

    latencies: list[int]
    """Every message's time, ns, sorted."""
    trades: int
    traded: int
    resting: int


class _Tally:
    """The engine's trades, traded quantity and refusals, counted from its outputs."""

    __slots__ = ("refused", "traded", "trades")

    def __init__(self) -> None:
        self.trades = self.traded = self.refused = 0

    def add(self, events: list[Output]) -> None:
        for event in events:
            if event[0] == TRADE:
                self.trades += 1
                self.traded += event[4]
            elif event[0] == REJECTED or event[0] == CANCEL_REJECTED:
                self.refused += 1


def replay_engine(setup: list[Command], commands: list[Command], clock: Clock) -> Replayed:
    """Run the setup, then time every command with its `take_events()`; count the trades."""
    engine = new_engine()
    handlers: list[Callable[..., Any]] = [engine.submit, engine.cancel]
    take = engine.take_events
    tally = _Tally()
    for op, args in setup:
        handlers[op](*args)
        tally.add(take())
    gc.collect()
    latencies = [0] * len(commands)
    for index, (op, args) in enumerate(commands):
        start = clock()
        handlers[op](*args)
        events = take()
        latencies[index] = clock() - start
        tally.add(events)
    if tally.refused:
        raise BenchMismatch(f"the engine refused {tally.refused} commands of the flow")
    latencies.sort()
    return Replayed(latencies, tally.trades, tally.traded, len(engine.orders))


def replay_plain(setup: list[Command], commands: list[Command], clock: Clock) -> Replayed:
    """Run the setup, then time every command."""
    book = PlainBook()
    handlers: list[Callable[..., Any]] = [book.limit, book.take, book.cancel]
    for op, args in setup:
        handlers[op](*args)
    gc.collect()
    latencies = [0] * len(commands)
    for index, (op, args) in enumerate(commands):
        start = clock()
        handlers[op](*args)
        latencies[index] = clock() - start
    latencies.sort()
    return Replayed(latencies, book.trades, book.traded, len(book.orders))


def check_same_work(flow: str, engine: Replayed, plain: Replayed) -> None:
    """Raise `BenchMismatch` unless both books traded and left resting the same."""
    mine = (engine.trades, engine.traded, engine.resting)
    theirs = (plain.trades, plain.traded, plain.resting)
    if mine != theirs:
        raise BenchMismatch(
            f"{flow} flow: the engine made {mine[0]} trades of {mine[1]} units leaving {mine[2]} "
            f"resting, the plain book {theirs[0]} of {theirs[1]} leaving {theirs[2]}"
        )


def _throughput_engine(setup: list[Command], commands: list[Command], clock: Clock) -> int:
    """One untimed setup, then the commands as fast as they go: ns taken."""
    engine = new_engine()
    handlers: list[Callable[..., Any]] = [engine.submit, engine.cancel]
    take = engine.take_events
    for op, args in setup:
        handlers[op](*args)
        take()
    gc.collect()
    start = clock()
    for op, args in commands:
        handlers[op](*args)
        take()
    return clock() - start


def _throughput_plain(setup: list[Command], commands: list[Command], clock: Clock) -> int:
    """One untimed setup, then the commands as fast as they go: ns taken."""
    book = PlainBook()
    handlers: list[Callable[..., Any]] = [book.limit, book.take, book.cancel]
    for op, args in setup:
        handlers[op](*args)
    gc.collect()
    start = clock()
    for op, args in commands:
        handlers[op](*args)
    return clock() - start


def _with_collector(collector: bool, young_threshold: int, work: Callable[[], T]) -> T:
    """Run `work` with the collector as `cx run` sets it, or off; collect its garbage after (the
    engine's orders and books refer to each other)."""
    saved = gc.get_threshold()
    if collector:
        gc.set_threshold(young_threshold, 10, 10)
    else:
        gc.disable()
    try:
        return work()
    finally:
        gc.enable()
        gc.set_threshold(*saved)
        gc.collect()


def _percentile(ordered: list[int], fraction: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000, 2)


def measure(
    flow: Flow, clock: Clock, repeats: int, young_threshold: int, seed: int
) -> dict[str, Any]:
    """Both books over one flow: throughput with the collector on and off, latency, the check."""
    ids = [f"p{n}" for n in range(len(flow.setup) + len(flow.messages))]
    engine_setup = engine_commands(flow.setup, ids, START_TS)
    engine_flow = engine_commands(flow.messages, ids, START_TS + len(flow.setup))
    plain_setup = plain_commands(flow.setup)
    plain_flow = plain_commands(flow.messages)
    best = dict.fromkeys(("engine_on", "plain_on", "engine_off", "plain_off"), 1 << 62)
    # What exists now (the flow, the modules) is out of the collector's sight, as `cx run`
    # freezes its start-up heap: it sees what the books allocate.
    gc.collect()
    gc.freeze()
    try:
        # The books take turns, so a burst of other work on this shared machine hits both.
        for _ in range(repeats):
            for collector, mode in ((True, "on"), (False, "off")):
                taken = _with_collector(
                    collector,
                    young_threshold,
                    lambda: _throughput_engine(engine_setup, engine_flow, clock),
                )
                best["engine_" + mode] = min(best["engine_" + mode], taken)
                taken = _with_collector(
                    collector,
                    young_threshold,
                    lambda: _throughput_plain(plain_setup, plain_flow, clock),
                )
                best["plain_" + mode] = min(best["plain_" + mode], taken)
        # Then every command timed, collector on and off: each pass is checked as it ends.
        timed: dict[bool, tuple[Replayed, Replayed]] = {}
        for collector in (True, False):
            engine = _with_collector(
                collector, young_threshold, lambda: replay_engine(engine_setup, engine_flow, clock)
            )
            plain = _with_collector(
                collector, young_threshold, lambda: replay_plain(plain_setup, plain_flow, clock)
            )
            check_same_work(flow.name, engine, plain)
            timed[collector] = engine, plain
    finally:
        gc.unfreeze()
    engine, plain = timed[True]
    count = len(flow.messages)
    per_s = {key: round(count * 1e9 / taken) for key, taken in best.items()}
    figures: dict[str, Any] = {
        "bench": "matching",
        "flow": flow.name,
        "yardstick": "plain_book",
        "compiled": COMPILED,
        "messages": count,
        "resting_mean": flow.resting_mean,
        "trades": engine.trades,
        "traded": engine.traded,
        "commands_per_s": per_s["engine_on"],
        "plain_commands_per_s": per_s["plain_on"],
        "ratio": round(per_s["engine_on"] / per_s["plain_on"], 3),
        "commands_per_s_gc_off": per_s["engine_off"],
        "plain_commands_per_s_gc_off": per_s["plain_off"],
        "ratio_gc_off": round(per_s["engine_off"] / per_s["plain_off"], 3),
    }
    for prefix, replayed in (("", engine), ("plain_", plain)):
        ordered = replayed.latencies
        figures[prefix + "p50_us"] = _percentile(ordered, 0.5)
        figures[prefix + "p99_us"] = _percentile(ordered, 0.99)
        figures[prefix + "p999_us"] = _percentile(ordered, 0.999)
        figures[prefix + "max_us"] = round(ordered[-1] / 1000, 2)
        figures[prefix + "stalls_over_1ms"] = sum(1 for t in ordered if t > 1_000_000)
    figures["p99_ratio"] = round(figures["p99_us"] / figures["plain_p99_us"], 3)
    figures["max_ratio"] = round(figures["max_us"] / figures["plain_max_us"], 3)
    for prefix, replayed in zip(("", "plain_"), timed[False], strict=True):
        figures[prefix + "p99_us_gc_off"] = _percentile(replayed.latencies, 0.99)
        figures[prefix + "max_us_gc_off"] = round(replayed.latencies[-1] / 1000, 2)
    figures["gc"] = f"cx run's: start-up heap frozen, thresholds ({young_threshold}, 10, 10)"
    figures["seed"] = seed
    return figures


def run(
    clock: Clock,
    young_threshold: int,
    messages: int = 1_000_000,
    touch_resting: int = 5_000,
    deep_resting: int = 200_000,
    seed: int = 1,
    repeats: int = 3,
) -> Iterator[str]:
    """The touch flow's JSON line, then the deep flow's, each as soon as it is measured."""
    for name, resting in (("touch", touch_resting), ("deep", deep_resting)):
        began = clock()
        span = max(1, resting // ORDERS_PER_SPAN_TICK)
        figures = measure(
            make_flow(name, messages, resting, span, seed), clock, repeats, young_threshold, seed
        )
        figures["seconds"] = round((clock() - began) / 1e9, 1)
        yield json.dumps(figures)
