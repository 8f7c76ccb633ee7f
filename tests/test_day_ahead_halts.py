"""Operators' halts and resumes of contracts waiting for the day-ahead auction, in the matching
stage and in a replay holding every partition's books in one state (settlement's replica, `cx
replay`): a contract halted before its partition's gate is kept out of the auction and opens
through a call auction of its own when resumed; one whose orders the auction took can be
neither halted nor resumed until the result (`in_auction`); the replay, whatever the order in
which the store interleaves the partitions, decides each as the partition did."""

from __future__ import annotations

from exchange.domain.catalogue import HOUR_MS, Catalogue, MarketRules, default_catalogue
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    ContractStateChanged,
    DayAheadBidsCollected,
    Event,
    EventStamp,
    MarketAction,
    MarketControlRejected,
    MarketControlRequested,
    RejectReason,
    TradeExecuted,
)
from tests.test_day_ahead_replay import FAMILIES, GATE, _cleared, _inputs


def _control(action: MarketAction, symbol: str, ts: int) -> MarketControlRequested:
    return MarketControlRequested(
        event_id=f"in:{action}:{symbol}:{ts}",
        ts=ts,
        operator_id="ops",
        action=action,
        symbol=symbol,
        reason="drill",
    )


class _Partition:
    """One matching partition of one family, recording its inputs as the events topic does."""

    def __init__(self, family: str, number: int, catalogue: Catalogue) -> None:
        self.family = family
        self.number = number
        self.stage = MarketStage(catalogue.subset(lambda f: f == family))
        self.offset = 0
        self.recorded: list[Event] = []

    def send(self, event: Event) -> list[Event]:
        self.offset += 1
        outputs = self.stage.handle(event, EventStamp("orders", self.number, self.offset, event.ts))
        self.recorded.append(self.stage.recorded(event, max(event.ts, self.stage.engine.now)))
        collected = [o for o in outputs if isinstance(o, DayAheadBidsCollected)]
        self.recorded += [c.model_copy(update={"partition": self.number}) for c in collected]
        return outputs

    def tick(self, ts: int) -> DayAheadBidsCollected:
        self.offset += 1
        outputs = self.stage.idle(EventStamp("orders", self.number, self.offset, ts))
        (collected,) = [o for o in outputs if isinstance(o, DayAheadBidsCollected)]
        collected = collected.model_copy(update={"partition": self.number})
        self.recorded.append(collected)
        return collected


def _refused(outputs: list[Event]) -> RejectReason | None:
    return next((o.reason for o in outputs if isinstance(o, MarketControlRejected)), None)


def _states(outputs: list[Event]) -> list[tuple[str, str, str]]:
    return [(o.symbol, o.state, o.reason) for o in outputs if isinstance(o, ContractStateChanged)]


def test_halts_around_the_gate_decide_alike_live_and_in_a_replay_of_every_partition() -> None:
    catalogue = default_catalogue(MarketRules(day_ahead_gate_ms=12 * HOUR_MS))
    gz, cpu = (_Partition(f, n, catalogue) for n, f in enumerate(FAMILIES))
    gz_hours = [f"{FAMILIES[0]}.20271201T00", f"{FAMILIES[0]}.20271201T01"]
    cpu_hours = [f"{FAMILIES[1]}.20271201T00", f"{FAMILIES[1]}.20271201T01"]
    for partition in (gz, cpu):
        for event in _inputs(partition.family, GATE - HOUR_MS):
            partition.send(event)
    # GZ's partition passes the gate first: its books' orders are in the auction, so its
    # hours can be neither halted nor resumed, and stay pre-open.
    gz_collected = gz.tick(GATE + 1)
    actions: tuple[MarketAction, ...] = ("halt", "resume")
    for action in actions:
        out = gz.send(_control(action, gz_hours[0], GATE + 2))
        assert _refused(out) is RejectReason.IN_AUCTION
        assert _states(out) == []
    # The CPU partition has not passed it yet (its log time lags): its hours wait for the
    # auction, so a resume of one that is not halted is refused and opens nothing; halting
    # its first hour keeps that hour, and the block over both hours, out of the auction.
    refused_resume = _control("resume", cpu_hours[1], GATE - 2)
    out = cpu.send(refused_resume)
    assert _refused(out) is RejectReason.NOT_HALTED
    assert _states(out) == []
    out = cpu.send(_control("halt", cpu_hours[0], GATE - 1))
    assert _states(out) == [(cpu_hours[0], "halted", "operator")]
    cpu_collected = cpu.tick(GATE + 3)
    assert (cpu_collected.symbols, cpu_collected.withheld) == ([cpu_hours[1]], [cpu_hours[0]])
    assert [b["order_id"] for b in cpu_collected.orders] == [f"{FAMILIES[1]}:s1"]

    gz.send(_cleared(FAMILIES[0], gz_collected, GATE + 4))
    nothing_traded = _cleared(FAMILIES[1], cpu_collected, GATE + 4).model_copy(
        update={"trades": [], "accepted": {}, "prices": {}}
    )
    cpu.send(nothing_traded)
    assert cpu.stage.books[cpu_hours[1]].state == "continuous"
    assert cpu.stage.books[cpu_hours[0]].state == "halted"
    # It missed the auction: resumed, it opens through a call auction of its own (its ask
    # alone: nothing trades), not back into a pre-open no auction will open.
    out = cpu.send(_control("resume", cpu_hours[0], GATE + 5))
    assert _states(out) == [(cpu_hours[0], "continuous", "opened")]
    assert not any(isinstance(o, TradeExecuted) for o in out)

    # The store holds GZ's collection before the CPU partition's halt, which its own log
    # time put before its gate: the replay decides each halt as its partition did.
    stored = [*gz.recorded[:-2], gz.recorded[-2], *cpu.recorded, gz.recorded[-1]]
    replay = MarketStage(catalogue, replica=True)
    for position, event in enumerate(stored):
        replay.replay(event, EventStamp("replay", 0, position, event.ts))
        if event.event_id == refused_resume.event_id:
            # Past GZ's gate in the store's order, but the CPU partition refused it.
            assert replay.books[cpu_hours[1]].state == "pre_open"
    for partition in (gz, cpu):
        for symbol, book in partition.stage.books.items():
            assert replay.books[symbol].state == book.state, symbol
            assert replay.engine.depth(symbol) == partition.stage.engine.depth(symbol), symbol
    assert not replay.engine.halted_pre_open
    assert not replay.engine.day_ahead_books


def test_a_contract_halted_and_resumed_before_the_gate_takes_part_in_the_auction() -> None:
    catalogue = default_catalogue(MarketRules(day_ahead_gate_ms=12 * HOUR_MS))
    gz = _Partition(FAMILIES[0], 0, catalogue)
    hours = [f"{FAMILIES[0]}.20271201T00", f"{FAMILIES[0]}.20271201T01"]
    for event in _inputs(gz.family, GATE - HOUR_MS):
        gz.send(event)
    out = gz.send(_control("halt", hours[0], GATE - 3))
    assert _states(out) == [(hours[0], "halted", "operator")]
    out = gz.send(_control("resume", hours[0], GATE - 2))
    assert _states(out) == [(hours[0], "pre_open", "resumed")]
    # Resuming again a contract that is no longer halted is refused and opens nothing.
    out = gz.send(_control("resume", hours[0], GATE - 1))
    assert _refused(out) is RejectReason.NOT_HALTED
    assert _states(out) == []
    collected = gz.tick(GATE + 1)
    assert (collected.symbols, collected.withheld) == (hours, [])
    assert len(collected.orders) == 3
