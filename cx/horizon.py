"""`cx bench horizon`: what a listing horizon costs, against the 2-day baseline, in one run.

A rolled family lists every delivery hour from today to `days_ahead` days on (and, with
`term_days`, its term contracts), so the matching stage holds a book for each, the first
record of a start-up lists them all at once, and every snapshot, state hash and replay carries
them. For each horizon (the baseline of 2 days, 30 days of hours, 30 days of hours with 92
days of terms) over the same families, the bench measures

- `books`: the books the matching stage holds after the first record, and `listed_events`, the
  `listed` state changes that record publishes;
- `burst_ms`: the latency of that first record (at 10:00 CST, a start-up mid-morning), which
  lists them all; `next_day_ms`: the first record of the following day, which lists one more
  day (the steady state);
- `stage_bytes`: the matching stage's memory after the burst (tracemalloc, in a second stage
  built the same way); `views_bytes`: the market data's (the API's) views of the contracts
  those events announce, one `ContractView` each as `MarketData.apply` makes them;
- `first_state_hash_ms` and `state_hash_ms`: the stage's first state hash, which encodes every
  book, and a later one (as settlement's at each checkpoint), which reuses the JSON of the
  books that did not change; `canonical_hash_ms`: the matching engine's part of it computed
  as its definition says (`json.dumps` of the whole snapshot), as it was before that reuse;
  `snapshot_bytes`, `snapshot_ms` and `restore_ms`: the stage's snapshot as JSON and its
  restore; `full_collection_ms`: a full collection of Python's cyclic garbage collector with
  the stage alive (it walks every book's containers);
- `replay_*`: a stored history of `replay_days` days (funding, then a sell and a crossing buy
  every `ORDER_EVERY_MS` on hours within two days, so every horizon accepts the same orders),
  made by the pure risk and matching stages and folded as `cx replay` folds it (the folded
  types decoded from their stored JSON, the others only moving the log time) with the state
  hash checked every `CHECKPOINT_EVERY` events as settlement records it.

`ratios` divides each horizon's figures by the baseline's. Memory comes from tracemalloc,
which slows what it traces, so the times are measured in runs without it; each time is the
median of `REPEAT` runs (but the first state hash, which happens once), and the collector is
left as Python sets it, as in `cx replay`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from api.marketdata import ContractView
from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    DAY_MS,
    HOUR_MS,
    REGIONS,
    RESOURCE_CLASSES,
    Catalogue,
    ListingRule,
    MarketRules,
    default_catalogue,
    parse_symbol,
    to_utc_ms,
)
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    ContractStateChanged,
    DepositCapacity,
    DepositFunds,
    Event,
    EventStamp,
    OrderCancelled,
    PlaceOrder,
    TradeExecuted,
    decode_event,
    encode,
)
from exchange.domain.risk import RiskStage
from settlement.projections import CHECKPOINT_EVERY
from settlement.replay import FOLDED_TYPES, ExchangeState
from simulations.engine import FAMILIES as SIMULATED_FAMILIES

START_MS = to_utc_ms(datetime(2027, 11, 3, 10, tzinfo=CHINA_STANDARD_TIME))
"""The first record's log time: a Wednesday mid-morning, past the day's first hours."""
BASELINE = ("baseline", 2, 0)
HORIZONS = (BASELINE, ("hours_30d", 30, 0), ("terms_92d", 30, 92))
"""(name, days_ahead, term_days) of each horizon measured."""
EVERY_FAMILY = tuple(f"{code}.{region}" for code in RESOURCE_CLASSES for region in REGIONS)
SCOPES: dict[str, tuple[str, ...]] = {
    "simulation": SIMULATED_FAMILIES,
    "catalogue": EVERY_FAMILY,
}
"""The families measured: the simulation's (`cx simulate` rolls them), or every family of the
catalogue (every class in every region)."""
ORDER_EVERY_MS = 2 * 60_000
PARTIES = 8
REPEAT = 3
"""Times are the median of this many runs."""


def catalogue_for(families: tuple[str, ...], days_ahead: int, term_days: int) -> Catalogue:
    """The default catalogue rolling `families` over the horizon."""
    return default_catalogue(MarketRules(), [ListingRule(families, days_ahead, term_days)])


def _first_record(stage: MarketStage, at_ms: int, offset: int) -> list[Event]:
    return stage.idle(EventStamp("horizon.orders", 0, offset, at_ms))


def _elapsed_ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def _median_ms(action: Callable[[], object], repeat: int = REPEAT) -> float:
    """The median of `repeat` timings of `action` (the machine may be shared)."""
    return statistics.median(_elapsed_ms(action) for _ in range(repeat))


def _canonical_digest(snapshot: dict[str, Any]) -> str:
    """The engine's state hash as its definition computes it, encoding every book afresh."""
    text = json.dumps(snapshot, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _traced_bytes(build: Callable[[], object]) -> tuple[int, object]:
    """The memory what `build` returns holds (tracemalloc), and it."""
    gc.collect()
    tracemalloc.start()
    try:
        built = build()
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return held, built


def make_history(catalogue: Catalogue, days: int, seed: int) -> list[Event]:
    """The events a market stores over `days` days from `START_MS`: deposits, then a sell and
    a buy crossing it every `ORDER_EVERY_MS` on a rolled hour within two days, and the
    listings the log time brings."""
    rng = random.Random(seed)
    risk = RiskStage(catalogue)
    market = MarketStage(catalogue)
    families = [family for rule in catalogue.listings for family in rule.families]
    history: list[Event] = []
    offset = 0
    deposited: set[tuple[str, str]] = set()

    def run(command: Any, at_ms: int) -> None:
        nonlocal offset
        offset += 1
        stamp = EventStamp("horizon.commands", 0, offset, at_ms)
        decided = risk.handle(command, stamp)
        outcomes = market.handle(decided, EventStamp("horizon.orders", 0, offset, at_ms))
        history.append(market.recorded(decided, at_ms))
        history.extend(outcomes)
        for outcome in outcomes:
            if isinstance(outcome, TradeExecuted | OrderCancelled):
                risk.apply_outcome(outcome, lambda _: True, stamp)

    for party in range(PARTIES):
        run(
            DepositFunds(deposit_id=f"f{party}", account_id=f"buyer{party}", amount=10**12),
            START_MS,
        )
    at_ms = START_MS
    number = 0
    while at_ms < START_MS + days * DAY_MS:
        number += 1
        family = families[number % len(families)]
        # An hour 2 to 26 hours on: listed at every horizon, not yet at its gate.
        hour = (at_ms // HOUR_MS + 2 + rng.randrange(24)) * HOUR_MS
        delivery = datetime.fromtimestamp(hour / 1000, CHINA_STANDARD_TIME)
        symbol = f"{family}.{delivery:%Y%m%dT%H}"
        seller, buyer = f"seller{rng.randrange(PARTIES)}", f"buyer{rng.randrange(PARTIES)}"
        if (seller, symbol) not in deposited:
            deposited.add((seller, symbol))
            run(
                DepositCapacity(
                    deposit_id=f"c{number}", account_id=seller, symbol=symbol, quantity=10**6
                ),
                at_ms,
            )
        tick = parse_symbol(symbol).tick_size
        price = (1000 + rng.randint(-20, 20)) * tick
        quantity = rng.randint(1, 10)
        bid = price + rng.randint(0, 2) * tick
        for side, account, limit in (("sell", seller, price), ("buy", buyer, bid)):
            order = PlaceOrder(
                order_id=f"{side}{number}",
                account_id=account,
                symbol=symbol,
                side=side,
                price=limit,
                quantity=quantity,
            )
            run(order, at_ms)
        at_ms += ORDER_EVERY_MS
    return history


def replay_history(catalogue: Catalogue, stored: list[tuple[str, bytes]]) -> ExchangeState:
    """Fold stored events (type, JSON) as `cx replay` does, hashing the state at every
    checkpoint position as a verifying replay does (`make_history` runs one matching stage:
    one partition)."""
    state = ExchangeState(catalogue, partitions=1)
    for position, (kind, data) in enumerate(stored, start=1):
        if kind in FOLDED_TYPES:
            state.apply_event(decode_event(data), position)
        else:
            state.pass_time(orjson.loads(data)["ts"], position)
        if position % CHECKPOINT_EVERY == 0:
            state.state_hash()
    return state


def _stage_figures(catalogue: Catalogue) -> dict[str, Any]:
    """What the listed books cost the matching stage and the market data's views."""
    next_day = START_MS - START_MS % DAY_MS + DAY_MS + 16 * HOUR_MS  # 00:00 CST next day
    bursts, next_days = [], []
    for _ in range(REPEAT):
        stage = MarketStage(catalogue)
        started = time.perf_counter()
        listed = _first_record(stage, START_MS, 1)
        bursts.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        _first_record(stage, next_day, 2)
        next_days.append((time.perf_counter() - started) * 1000)
    stage = MarketStage(catalogue)
    listed = _first_record(stage, START_MS, 1)
    announced = [e.symbol for e in listed if isinstance(e, ContractStateChanged)]
    # The first hash encodes every book; later ones (as at each checkpoint) reuse what stayed.
    first_hash_ms = _elapsed_ms(stage.state_hash)
    state_hash_ms = _median_ms(stage.state_hash)
    engine = stage.engine
    canonical_hash_ms = _median_ms(lambda: _canonical_digest(engine.snapshot()))
    text = orjson.dumps(stage.snapshot())
    snapshot_ms = _median_ms(lambda: orjson.dumps(stage.snapshot()))
    restore_ms = _median_ms(lambda: MarketStage.restore(catalogue, orjson.loads(text)))
    # A full collection walks every container alive: the books' are the horizon's share.
    gc.collect()
    full_collection_ms = _median_ms(gc.collect)

    def listed_stage() -> MarketStage:
        fresh = MarketStage(catalogue)
        _first_record(fresh, START_MS, 1)
        return fresh

    stage_bytes, _ = _traced_bytes(listed_stage)
    views_bytes, _ = _traced_bytes(lambda: {symbol: ContractView() for symbol in announced})
    return {
        "books": len(stage.books),
        "listed_events": len(announced),
        "burst_ms": round(statistics.median(bursts), 1),
        "next_day_ms": round(statistics.median(next_days), 1),
        "stage_bytes": stage_bytes,
        "views_bytes": views_bytes,
        "first_state_hash_ms": round(first_hash_ms, 2),
        "state_hash_ms": round(state_hash_ms, 2),
        "canonical_hash_ms": round(canonical_hash_ms, 2),
        "snapshot_bytes": len(text),
        "snapshot_ms": round(snapshot_ms, 1),
        "restore_ms": round(restore_ms, 1),
        "full_collection_ms": round(full_collection_ms, 1),
    }


def measure(
    families: tuple[str, ...], days_ahead: int, term_days: int, replay_days: int, seed: int
) -> dict[str, Any]:
    """The figures of one horizon (see the module)."""
    catalogue = catalogue_for(families, days_ahead, term_days)
    figures = {"days_ahead": days_ahead, "term_days": term_days, **_stage_figures(catalogue)}
    gc.collect()
    history = make_history(catalogue, replay_days, seed)
    stored = [(type(event).__name__, encode(event)) for event in history]
    del history
    replayed: list[ExchangeState] = []

    def replay() -> None:
        # Only the last run's state stays alive: an earlier one's books would slow the next.
        replayed.clear()
        replayed.append(replay_history(catalogue, stored))

    replay_ms = _median_ms(replay)
    return {
        **figures,
        "replay_events": len(stored),
        "replay_ms": round(replay_ms, 1),
        "replay_events_per_s": round(len(stored) / (replay_ms / 1000)),
        "replay_state_hash": replayed[0].state_hash(),
    }


RATIO_KEYS = (
    "books",
    "listed_events",
    "burst_ms",
    "next_day_ms",
    "stage_bytes",
    "views_bytes",
    "first_state_hash_ms",
    "state_hash_ms",
    "canonical_hash_ms",
    "snapshot_bytes",
    "snapshot_ms",
    "restore_ms",
    "full_collection_ms",
    "replay_events",
    "replay_ms",
)


def bench_horizon(scope: str, replay_days: int, seed: int) -> dict[str, Any]:
    """Every horizon's figures over the scope's families, and their ratios to the baseline."""
    families = SCOPES[scope]
    figures = {
        name: measure(families, days_ahead, term_days, replay_days, seed)
        for name, days_ahead, term_days in HORIZONS
    }
    baseline = figures[BASELINE[0]]
    ratios = {
        name: {
            key: round(figures[name][key] / baseline[key], 2) if baseline[key] else None
            for key in RATIO_KEYS
        }
        for name, _, _ in HORIZONS
        if name != BASELINE[0]
    }
    return {
        "bench": "horizon",
        "scope": scope,
        "families": len(families),
        "replay_days": replay_days,
        "checkpoint_every": CHECKPOINT_EVERY,
        **figures,
        "ratios": ratios,
    }


def run(scope: str, replay_days: int, seed: int) -> str:
    """Run the bench and return its JSON line."""
    return json.dumps(bench_horizon(scope, replay_days, seed))
