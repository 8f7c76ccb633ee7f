"""The replica keeps each matching partition's own log time (settlement's `ExchangeState`).

Live matching runs one stage per orders partition, each moved only by its own records. The
event store interleaves the partitions' events as settlement read them, so a record of one
partition with a later log time can be stored before a trade another partition made earlier.
Here partition B's record, logged past contract A's gate and delivery, is stored before the
buy partition A matched an hour before A's gate: the replica must still trade it, as live
matching did, and owe the buyer what the stored `DeliveryObligation` says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from cx.migrations import upgrade_to_head
from exchange.domain import market
from exchange.domain.catalogue import default_catalogue, family_of, parse_symbol, to_utc_ms
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    CapacityDeposited,
    DayAheadAuctionCompleted,
    DeliveryObligation,
    Event,
    EventStamp,
    FundsDeposited,
    OrderAccepted,
    TradeExecuted,
    decode_event,
    encode,
)
from exchange.pipeline import partition_for
from settlement.audit import audit
from settlement.projections import LedgerProjection
from settlement.replay import ExchangeState, partition_catalogue
from settlement.service import stream_of
from settlement.sql_store import open_event_store
from settlement.store import NewEvent

CATALOGUE = default_catalogue()
PARTITIONS = 2
A = "H100-80G.GZ.20271201T01"
B = "H100-80G.YRD.20271201T01"
HOUR = 3_600_000
DELIVERY = to_utc_ms(parse_symbol(A).delivery_start)
GATE = DELIVERY - CATALOGUE.rules.gate_closure_ms  # type: ignore[operator]
PART_A = partition_for(family_of(A), PARTITIONS)
PART_B = partition_for(family_of(B), PARTITIONS)


class LiveMatching:
    """One stage per partition, as `MatchingRunner` runs them; what each records, in order."""

    def __init__(self) -> None:
        self.stages = [
            MarketStage(partition_catalogue(CATALOGUE, p, PARTITIONS)) for p in range(PARTITIONS)
        ]
        self.recorded: list[list[Event]] = [[] for _ in range(PARTITIONS)]
        self.offsets = [0] * PARTITIONS

    def read(self, partition: int, event: Event, ts: int) -> None:
        stage = self.stages[partition]
        stamp = EventStamp("orders", partition, self.offsets[partition], ts)
        self.offsets[partition] += 1
        outputs = stage.handle(event, stamp)
        self.recorded[partition] += [stage.recorded(event, ts), *outputs]


def _order(order_id: str, account: str, side: Literal["buy", "sell"], ts: int) -> OrderAccepted:
    return OrderAccepted(
        event_id=f"commands:0:{order_id}",
        ts=ts,
        order_id=order_id,
        account_id=account,
        symbol=A,
        side=side,
        price=2_000,
        quantity=8,
    )


def _live() -> LiveMatching:
    """Partition A: a provider deposits and asks, a buyer takes 8 units an hour before A's
    gate, then a record after A's delivery starts (so its desk owes the buyer). Partition B:
    one record logged after A's delivery starts."""
    assert PART_A != PART_B
    start = GATE - 3 * HOUR
    live = LiveMatching()
    live.read(
        PART_A,
        FundsDeposited(
            event_id="commands:0:f1",
            ts=start,
            deposit_id="f1",
            account_id="b1",
            amount=10**7,
            currency="CNY",
        ),
        start,
    )
    live.read(
        PART_A,
        CapacityDeposited(
            event_id="commands:0:c1",
            ts=start,
            deposit_id="c1",
            account_id="p1",
            symbol=A,
            quantity=8,
        ),
        start,
    )
    live.read(PART_A, _order("s1", "p1", "sell", start + 1), start + 1)
    live.read(PART_A, _order("b1", "b1", "buy", GATE - HOUR), GATE - HOUR)
    late = DELIVERY + 1
    live.read(
        PART_B,
        FundsDeposited(
            event_id="commands:1:f2",
            ts=late,
            deposit_id="f2",
            account_id="b2",
            amount=1,
            currency="CNY",
        ),
        late,
    )
    live.read(
        PART_A,
        FundsDeposited(
            event_id="commands:0:f3",
            ts=late,
            deposit_id="f3",
            account_id="b3",
            amount=1,
            currency="CNY",
        ),
        late,
    )
    return live


def _stored(live: LiveMatching) -> list[tuple[int, Event]]:
    """The store's order: A's deposits and ask, then B's late record, then the rest of A."""
    a, b = live.recorded[PART_A], live.recorded[PART_B]
    buy = next(n for n, e in enumerate(a) if isinstance(e, OrderAccepted) and e.side == "buy")
    return (
        [(PART_A, e) for e in a[:buy]] + [(PART_B, e) for e in b] + [(PART_A, e) for e in a[buy:]]
    )


def _unnumbered(stage: MarketStage) -> dict[str, object]:
    snapshot = stage.snapshot()
    del snapshot["engine"]["seq"]
    return snapshot


def _fold(stored: list[tuple[int, Event]], partitions: int) -> ExchangeState:
    state = ExchangeState(CATALOGUE, partitions=partitions)
    for position, (partition, event) in enumerate(stored, start=1):
        state.apply_event(decode_event(encode(event)), position, partition)
    return state


def test_the_live_partition_traded_and_owes_the_buyer_8() -> None:
    live = _live()
    a = live.recorded[PART_A]
    assert [e.quantity for e in a if isinstance(e, TradeExecuted)] == [8]
    owed = [e for e in a if isinstance(e, DeliveryObligation)]
    assert [(o.buyer_id, o.quantity) for o in owed] == [("b1", 8)]


def test_the_replica_follows_each_partition_s_log_time() -> None:
    live = _live()
    replica = _fold(_stored(live), PARTITIONS)
    for partition, stage in enumerate(live.stages):
        mirrored = replica.markets[partition]
        assert mirrored.delivery.snapshot() == stage.delivery.snapshot()
        # The replica's stages number orders in one sequence (`ExchangeState`): B's engine
        # carries the shared count, live B's its own (none).
        assert _unnumbered(mirrored) == _unnumbered(stage)
    # Only A numbered orders, so its stage is live A's to the byte.
    assert replica.markets[PART_A].state_hash() == live.stages[PART_A].state_hash()
    desk = replica.markets[PART_A].delivery
    assert {k: o.quantity for k, o in desk.obligations.items()} == {(A, "p1", "b1"): 8}
    # The buyer's position is what the desk owes it.
    assert replica.accounts.positions[("b1", A)] == 8


def test_one_log_time_for_every_partition_missed_the_trade() -> None:
    """The defect this replaces: B's later record closed and delivered A's book before the
    replica folded A's buy, so its desk owed the buyer nothing."""
    old = _fold(_stored(_live()), 1)
    assert old.markets[0].delivery.obligations == {}
    assert old.accounts.positions[("b1", A)] == 8


def test_the_state_hash_is_one_stage_s_where_log_times_agree() -> None:
    """In log-time order (no partition's record ahead of another's), one stage per
    partition hashes, snapshots and history-hashes as one stage for every partition."""
    live = _live()
    in_time = sorted(_stored(live), key=lambda stored: stored[1].ts)
    one, per_partition = _fold(in_time, 1), _fold(in_time, PARTITIONS)
    assert per_partition.state_hash() == one.state_hash()
    assert per_partition.market_snapshot() == one.market_snapshot()
    assert per_partition.history_hash() == one.history_hash()
    assert per_partition.market_snapshot() == one.markets[0].snapshot()


def test_a_snapshot_restores_to_the_same_hash_and_goes_on_alike() -> None:
    stored = _stored(_live())
    whole = _fold(stored, PARTITIONS)
    half = _fold(stored[: len(stored) // 2], PARTITIONS)
    restored = ExchangeState.restore(CATALOGUE, half.snapshot())
    assert restored.state_hash() == half.state_hash()
    for position, (partition, event) in enumerate(stored, start=1):
        if position > half.position:
            restored.apply_event(decode_event(encode(event)), position, partition)
    assert restored.state_hash() == whole.state_hash()


def test_the_auction_stage_s_summary_moves_no_partition_s_time() -> None:
    """`DayAheadAuctionCompleted` is written to the events topic by the auction stage: no
    matching partition read it, so it closes no book (it still counts in the log time the
    hash names, as it did)."""
    state = ExchangeState(CATALOGUE, partitions=PARTITIONS)
    summary = DayAheadAuctionCompleted(
        event_id="dayahead:0:1",
        ts=DELIVERY + 1,
        day="2027-12-01",
        prices={},
        volumes={},
        welfare=0,
        bound=0,
        gap_ppm=0,
        status="optimal",
        orders=0,
        accepted=0,
        solve_ms=0,
        partitions=[],
    )
    state.apply_event(summary, 1, 0)
    assert all(market.engine.now == 0 for market in state.markets)
    assert state.books[A].state == "continuous"
    assert state.market_snapshot()["engine"]["now"] == DELIVERY + 1


async def _audited(tmp_path: Path, stored: list[tuple[int, Event]]) -> list[tuple[str, str]]:
    """`cx audit`'s findings on these events stored in this order, each with the partition
    it was read from, by a replica of PARTITIONS partitions."""
    store = open_event_store(f"sqlite+aiosqlite:///{tmp_path / 'events.sqlite3'}")
    try:
        await store.initialise(upgrade_to_head)
        await store.append(
            [
                NewEvent(
                    event_id=event.event_id,
                    stream_id=stream_of(event),
                    type=event.type,  # type: ignore[attr-defined]
                    data=event.model_dump(mode="json"),
                    metadata={"topic": "events", "partition": partition, "offset": offset},
                )
                for offset, (partition, event) in enumerate(stored)
            ],
            projector=LedgerProjection(CATALOGUE, partitions=PARTITIONS),
        )
        report = await audit(store, CATALOGUE, PARTITIONS)
    finally:
        await store.close()
    return [(d.kind, d.message) for d in report.discrepancies]


async def test_the_audit_finds_every_position_covered(tmp_path: Path) -> None:
    """The history the one-clock replica misread: every position is what a desk owes."""
    assert await _audited(tmp_path, _stored(_live())) == []


async def test_the_audit_reports_a_position_no_desk_covers(tmp_path: Path) -> None:
    """A stored trade rewritten to 9 units: the buyer holds one unit no provider owes it."""
    stored = [
        (partition, e.model_copy(update={"quantity": 9}) if isinstance(e, TradeExecuted) else e)
        for partition, e in _stored(_live())
    ]
    found = await _audited(tmp_path, stored)
    assert (
        "position-uncovered",
        f"account b1 holds 9 units of {A}, but the delivery desk's entitlements and "
        "obligations cover 8: 1 units are owed by no provider",
    ) in found, found


def test_the_merged_desk_hashes_its_sells_as_rendered_again_after_each_change() -> None:
    # The merged hash renders each open sell once and reuses it while it stays as it was: it
    # must give the bytes of the whole merged snapshot's repr however the sells change.
    catalogue = default_catalogue()
    stages = [MarketStage(partition_catalogue(catalogue, p, 2), replica=True) for p in range(2)]
    symbol = catalogue.symbols[0]
    first, second = (stage.delivery for stage in stages)
    first._open_sell("acct-2:o-9", [True, 0, 4, "acct-2", symbol])
    first._open_sell("acct-1:o-1", [False, 0, 2, "acct-1", symbol])
    second._open_sell("acct-3:o-5", [True, 0, 7, "acct-3", symbol])
    second.holdings.setdefault(symbol, {})["acct-4"] = 3
    first.holdings.setdefault(symbol, {})["acct-1"] = 5

    def merged_repr() -> str:
        return repr(market._merged_desk(stages))

    assert market._merged_desk_text(stages) == merged_repr()
    first.sells["acct-2:o-9"][2] = 1
    second._close_sell("acct-3:o-5")
    first._open_sell("acct-0:o-4", [True, 0, 6, "acct-0", symbol])
    text = market._merged_desk_text(stages)
    assert text == merged_repr()
    assert "['acct-2:o-9', True, 0, 1, 'acct-2'" in text
    assert "acct-3:o-5" not in text
