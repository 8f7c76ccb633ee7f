"""Rebuild the exchange's state from the event store alone.

`ExchangeState` folds stored events in global order: balances, capacity, positions and holds
by the same money rules the risk stage uses, and every contract's book by feeding the matching
stage's inputs (accepted orders and cancels, which the events topic carries before their
outcomes) through the real matching code. Settlement keeps one live and records its state hash
at checkpoints, and stores snapshots of it; `replay` rebuilds it from position 0 or from such a
snapshot (`restore_checked`), and checks those hashes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from exchange.domain import accounts as money
from exchange.domain import market as matching
from exchange.domain.accounts import Accounts
from exchange.domain.catalogue import Catalogue, family_of, is_family, to_utc_ms
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    ALL_CONTRACTS,
    AnyEvent,
    CancelAllRequested,
    DayAheadAuctionCompleted,
    Event,
    EventStamp,
    MarketControlRequested,
    decode_event,
    event_from_dict,
)
from exchange.pipeline import partition_for
from exchange.snapshots import Snapshot
from matching.book import Book
from matching.snapshot import canonical_json
from settlement.store import CompactEvent, CompactReader, StoredEvent

READ_BATCH = 5000
REPLAY_BATCH = 20000
"""Rows a replay reads a query: fewer round trips than READ_BATCH."""
FIRST_REPLAY_BATCH = 2000
"""Rows of a replay's first query: nothing is folded while it is read, so it is small, and
each next one twice the last, up to REPLAY_BATCH, is read while the last is folded."""
YIELD_EVERY = 500
"""Rows a replay folds between chances for the next batch's read to move on."""

_FOLDED: tuple[type[Event], ...] = tuple(dict.fromkeys(money.FOLDED + matching.INPUTS))
FOLDED_TYPES = frozenset(cls.model_fields["type"].default for cls in _FOLDED)
"""The stored types the fold must decode: those that move money or act on the books. Of the
rest only the log time counts (`ExchangeState.pass_time`)."""
_BOOK_INPUTS: frozenset[type[Event]] = frozenset(matching.INPUTS)
"""`matching.INPUTS` as a set: asked of every decoded event, where `isinstance` would try the
nine classes in turn (no event class has subclasses)."""


REPLICA_VERSION = 2
"""The layout of `ExchangeState.snapshot`. 2: one matching stage per partition, each on its
partition's own log time; a snapshot of version 1 (no `replica` field: one stage for every
partition, on one log time) is refused and the replay starts from position 0."""

UNPARTITIONED_TYPES = frozenset({DayAheadAuctionCompleted.model_fields["type"].default})
"""Stored types no matching partition read (the auction stage writes them to the events
topic itself): they move no partition's log time."""


def partition_catalogue(catalogue: Catalogue, partition: int, partitions: int) -> Catalogue:
    """The contracts and rolled families matching partition `partition` of `partitions` holds
    (as `MatchingRunner` lists them)."""
    if partitions == 1:
        return catalogue
    return catalogue.subset(lambda family: partition_for(family, partitions) == partition)


HOMES_KEPT = 100_000
"""Contracts whose partition a replica remembers at most (`ExchangeState._market`)."""


class PartitionsDiffer(ValueError):
    """The history was made with another number of matching partitions than the replica's."""


def _partitions_differ(event: AnyEvent, partition: int, partitions: int) -> str:
    return (
        f"{event.type} {event.event_id} was read from events partition {partition}, which "
        f"is not where {partitions} matching partitions route it: the history was made with "
        "another CX_MARKET_PARTITIONS; replay with the exchange's"
    )


def stored_partition(stored: StoredEvent) -> int | None:
    """The events-topic partition an event was read from (None: not recorded)."""
    partition = stored.metadata.get("partition")
    return partition if isinstance(partition, int) else None


class ExchangeState:
    """Accounts and books as of the last event applied.

    The books are those of live matching: one matching stage per orders partition
    (`partitions`, CX_MARKET_PARTITIONS), each holding its partition's families and moved
    only by its partition's records (the events-topic partition each stored event was read
    from), on that partition's own log time. The stages share one order sequence, numbered in
    stored order, so the state hash is the one a single stage for every partition gave
    wherever the partitions' log times did not disagree (docs/DESIGN.md, "The replica")."""

    def __init__(self, catalogue: Catalogue, *, partitions: int, journal: bool = False) -> None:
        if partitions < 1:
            raise ValueError(f"a replica needs at least one matching partition, not {partitions}")
        self.catalogue = catalogue
        self.accounts = Accounts(catalogue.rules, journal=journal)
        self.markets = [
            MarketStage(partition_catalogue(catalogue, p, partitions), replica=True)
            for p in range(partitions)
        ]
        self._single = self.markets[0] if partitions == 1 else None
        """The one stage, when there is one: it keeps the sequence itself."""
        self.seq = 0
        """The order sequence every stage numbers from (see the class), with several."""
        self.unpartitioned_ts = 0
        """The latest log time of an event no partition read (`UNPARTITIONED_TYPES`)."""
        self._homes: dict[str, int] = {}
        """The partition of each contract (or family) an input named, as matching routes it."""
        self.position = 0
        self.ts: int | None = None
        self.applied = 0

    @property
    def partitions(self) -> int:
        """How many matching partitions the replica follows."""
        return len(self.markets)

    @property
    def books(self) -> dict[str, Book]:
        """Every contract's book, by symbol."""
        return {s: b for market in self.markets for s, b in market.books.items()}

    def apply(self, stored: StoredEvent) -> AnyEvent:
        """Fold one stored event; returns it decoded."""
        event = event_from_dict(stored.data)
        self.apply_event(event, stored.position, stored_partition(stored))
        return event

    def apply_event(self, event: AnyEvent, position: int, partition: int | None = None) -> None:
        """Fold one decoded event stored at `position`, read from events-topic `partition`
        (None: unknown, then told by what the event names)."""
        self.accounts.apply(event)
        single = self._single
        if type(event) not in _BOOK_INPUTS:
            if type(event) is DayAheadAuctionCompleted:
                self.pass_time(event.ts, position, None)
            else:
                self.pass_time(
                    event.ts,
                    position,
                    0 if single is not None else self._partition_of(event, partition),
                )
            return
        # The matching stage's inputs rebuild the books; its outputs are already stored.
        stamp = EventStamp("replay", 0, position, event.ts)
        if single is not None:
            single.replay(event, stamp)
        else:
            market = self._market(self._partition_of(event, partition), event)
            engine = market.engine
            engine.seq = self.seq
            market.replay(event, stamp)
            self.seq = engine.seq
        self.position = position
        self.ts = event.ts if self.ts is None else max(self.ts, event.ts)
        self.applied += 1

    def pass_time(self, ts: int, position: int, partition: int | None = 0) -> None:
        """Fold an event stored at `position` that neither moves money nor acts on the books
        (not in `FOLDED_TYPES`): all it does is move the log time of the matching partition
        that read it to its `ts` (None: no partition read it, see `UNPARTITIONED_TYPES`)."""
        market = self._single
        if partition is None:
            if ts > self.unpartitioned_ts:
                self.unpartitioned_ts = ts
        elif market is not None:
            if market.due(ts):
                market.idle(EventStamp("replay", 0, position, ts))
            else:
                market.engine.advance(ts)
        else:
            markets = self.markets
            if partition >= len(markets):
                raise PartitionsDiffer(
                    f"an event at position {position} was read from events partition "
                    f"{partition}, but this replica follows {len(markets)} matching partitions: "
                    "replay with the exchange's CX_MARKET_PARTITIONS"
                )
            market = markets[partition]
            engine = market.engine
            if market.due(ts):
                engine.seq = self.seq
                market.idle(EventStamp("replay", 0, position, ts))
                self.seq = engine.seq
            else:
                engine.advance(ts)
        self.position = position
        self.ts = ts if self.ts is None or ts > self.ts else self.ts
        self.applied += 1

    def apply_compact(self, row: CompactEvent) -> None:
        """Fold one event as `EventStore.read_compact` returns it (with `FOLDED_TYPES`)."""
        position, kind, ts, data, partition = row
        if data is None:
            self.pass_time(ts, position, self.time_partition(kind, partition))
        else:
            self.apply_event(decode_event(data), position, partition)

    def time_partition(self, kind: str, partition: int | None) -> int | None:
        """The partition whose log time an event of type `kind`, stored from events-topic
        `partition` (None: not recorded), moves; None: none (with several partitions, one
        stored without its partition moves none either)."""
        if kind in UNPARTITIONED_TYPES:
            return None
        return 0 if partition is None and self._single is not None else partition

    def _partition_of(self, event: AnyEvent, partition: int | None) -> int | None:
        """The matching partition that read `event`: the one it was stored from, else the
        one its contract, family or partition field names (None: none names it)."""
        partitions = self.partitions
        if partition is not None:
            return partition
        named = getattr(event, "partition", None)
        if isinstance(named, int) and 0 <= named < partitions:
            return named
        key = getattr(event, "family", None) or getattr(event, "symbol", None)
        if isinstance(event, CancelAllRequested) and event.here:
            key = event.here[0]
        if isinstance(key, str) and key != ALL_CONTRACTS:
            return partition_for(key if is_family(key) else family_of(key), partitions)
        copy = event.event_id.rsplit(":", 1)[-1]
        if isinstance(event, MarketControlRequested) and copy.isdigit():
            return int(copy) % partitions
        return None

    def _market(self, partition: int | None, event: AnyEvent) -> MarketStage:
        """The stage of `partition`, which must be where live matching routed `event`."""
        markets = self.markets
        if len(markets) == 1:
            return markets[0]
        if partition is None:
            raise PartitionsDiffer(
                f"{event.type} {event.event_id} names no matching partition: a replica of "
                f"{len(markets)} partitions needs the partition it was stored from"
            )
        if partition >= len(markets):
            raise PartitionsDiffer(_partitions_differ(event, partition, len(markets)))
        symbol = getattr(event, "symbol", None)
        if isinstance(symbol, str) and symbol != ALL_CONTRACTS:
            homes = self._homes
            home = homes.get(symbol)
            if home is None:
                if len(homes) >= HOMES_KEPT:
                    homes.clear()
                family = symbol if is_family(symbol) else family_of(symbol)
                home = homes[symbol] = partition_for(family, len(markets))
            if home != partition:
                raise PartitionsDiffer(_partitions_differ(event, partition, len(markets)))
        return markets[partition]

    def _seq(self) -> int:
        """The last number the stages gave an order or block."""
        return self.seq if self._single is None else self._single.engine.seq

    def _now(self) -> int:
        """The latest log time any stage (or an event no partition read) reached."""
        return max(self.unpartitioned_ts, *(market.engine.now for market in self.markets))

    def accounts_hash(self) -> str:
        """SHA-256 of every balance, position and hold."""
        hasher = hashlib.sha256()
        self.accounts.digest(hasher)
        return hasher.hexdigest()

    def books_hash(self) -> str:
        """SHA-256 of every book and delivery desk, as one stage holding them all hashes
        (`market.merged_state_hash`)."""
        markets = self.markets
        if len(markets) == 1 and markets[0].engine.now >= self.unpartitioned_ts:
            return markets[0].state_hash()
        return matching.merged_state_hash(markets, self._now(), self._seq())

    def state_hash(self) -> str:
        """SHA-256 of the accounts and every book."""
        return hashlib.sha256(
            f"accounts:{self.accounts_hash()}\nbooks:{self.books_hash()}\n".encode()
        ).hexdigest()

    def market_snapshot(self) -> dict[str, Any]:
        """Every book and delivery desk as one stage holding them all would snapshot them."""
        return matching.merged_snapshot(self.markets, self._now(), self._seq())

    def history_hash(self) -> str:
        """SHA-256 of the accounts and every book, with each resting order's time priority
        as its rank in its own book (and each block's in its family) instead of the number
        the replaying engine gave it.

        `state_hash` counts one sequence over every book, so its numbers depend on how the
        partitions' histories interleave: by arrival in one store, by log time when shards
        are merged. Priority only ever compares orders of one book, so this hash is the same
        for every interleaving that keeps each partition's order: one store's and the shards'
        merged history hash alike (docs/DESIGN.md, "Settlement in shards")."""
        snapshot = self.market_snapshot()
        engine = snapshot["engine"]
        for book in engine["books"]:
            _rank(book["orders"])
        families: dict[str, list[list[Any]]] = {}
        for block in engine["blocks"]:
            families.setdefault(block[BLOCK_FAMILY_AT], []).append(block)
        for blocks in families.values():
            _rank(blocks)
        engine["seq"] = None
        books = hashlib.sha256(canonical_json(snapshot)).hexdigest()
        return hashlib.sha256(
            f"accounts:{self.accounts_hash()}\nbooks:{books}\n".encode()
        ).hexdigest()

    def snapshot(self) -> dict[str, Any]:
        """The whole state, JSON-ready."""
        return {
            "replica": REPLICA_VERSION,
            "accounts": self.accounts.snapshot(),
            "markets": [market.snapshot() for market in self.markets],
            "seq": self._seq(),
            "unpartitioned_ts": self.unpartitioned_ts,
            "position": self.position,
            "ts": self.ts,
            "applied": self.applied,
        }

    @classmethod
    def restore(cls, catalogue: Catalogue, data: dict[str, Any]) -> ExchangeState:
        """The state a snapshot describes (ValueError if it is of another layout)."""
        if data.get("replica") != REPLICA_VERSION:
            raise ValueError(
                "it was taken by a replica that kept one log time for every matching "
                "partition (replica version 1); this one keeps each partition's own"
            )
        markets = data["markets"]
        partitions = len(markets)
        state = cls(catalogue, partitions=partitions)
        state.accounts = Accounts.restore(data["accounts"], catalogue.rules)
        state.markets = [
            MarketStage.restore(partition_catalogue(catalogue, p, partitions), saved, replica=True)
            for p, saved in enumerate(markets)
        ]
        state._single = state.markets[0] if partitions == 1 else None
        state.seq = data["seq"]
        state.unpartitioned_ts = data["unpartitioned_ts"]
        state.position = data["position"]
        state.ts = data["ts"]
        state.applied = data["applied"]
        return state


SEQ_AT = 7
"""Where an order's (and a block's) sequence number is in the engine's snapshot of it
(`matching.snapshot`, version 1)."""
BLOCK_FAMILY_AT = 3


def _rank(entries: list[list[Any]]) -> None:
    """Replace each entry's sequence number by its rank among `entries`."""
    for rank, entry in enumerate(sorted(entries, key=lambda e: e[SEQ_AT])):
        entry[SEQ_AT] = rank


@dataclass
class Mismatch:
    """A recorded hash the replay did not reproduce."""

    position: int
    recorded: str
    replayed: str


@dataclass
class ReplayResult:
    """The state at the stopping point, and what verification found on the way."""

    state: ExchangeState
    checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    not_comparable: int = 0
    """Recorded hashes a time cut passed after leaving out an earlier event: the live state
    there included it, so they cannot be compared."""
    started_from: int = 0
    """The position of the stored snapshot the replay started from (0: the beginning)."""
    refused: str | None = None
    """Why a stored snapshot was not used, if one was refused (the replay then starts at 0)."""


class SnapshotRefused(Exception):
    """A stored snapshot that must not be restarted from: it does not restore, or it is not the
    state its recorded hashes say."""


def restore_checked(
    catalogue: Catalogue, snapshot: Snapshot, checkpoint: str | None, partitions: int
) -> ExchangeState:
    """The state a stored snapshot of settlement describes, once it is proved to be the state
    the live system had there: it must be of this replica's layout and `partitions` matching
    partitions, and hash to the state hash stored with it and to the checkpoint recorded at
    its position, if one is. SnapshotRefused says why not."""
    where = f"the snapshot at position {snapshot.input_offset}"
    data = snapshot.data
    if not isinstance(data, dict) or data.get("replica") != REPLICA_VERSION:
        raise SnapshotRefused(
            f"{where} was taken by a replica that kept one log time for every matching "
            "partition (before replica version 2, which keeps each partition's own)"
        )
    if not isinstance(data.get("markets"), list) or len(data["markets"]) != partitions:
        raise SnapshotRefused(
            f"{where} holds {len(data.get('markets') or [])} matching partitions, not the "
            f"{partitions} of this exchange (CX_MARKET_PARTITIONS)"
        )
    try:
        state = ExchangeState.restore(catalogue, data)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise SnapshotRefused(f"{where} does not restore: {error!r}") from error
    if state.position != snapshot.input_offset:
        raise SnapshotRefused(f"{where} holds the state at position {state.position}")
    replayed = state.state_hash()
    if replayed != snapshot.state_hash:
        raise SnapshotRefused(
            f"{where} hashes to {replayed[:16]}, not to the {snapshot.state_hash[:16]} "
            "stored with it: it is corrupt"
        )
    if checkpoint is not None and checkpoint != replayed:
        raise SnapshotRefused(
            f"{where} hashes to {replayed[:16]}, but the checkpoint recorded there is "
            f"{checkpoint[:16]}: it is stale or does not belong to this history"
        )
    return state


async def replay(
    store: CompactReader,
    catalogue: Catalogue,
    until_position: int | None = None,
    until_ts: int | None = None,
    checkpoints: Mapping[int, str] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    start: ExchangeState | None = None,
    partitions: int,
) -> ReplayResult:
    """Fold stored events from the start, or from the state `start` (restored from a checked
    snapshot, see `restore_checked`), up to a position or a log time (inclusive).

    A time cut takes every event whose log time is at or before it, in stored order; a `start`
    must hold no event past the cut.

    `checkpoints` maps positions to state hashes the live system recorded; each one passed is
    compared with the replayed state there, unless a time cut left out an event before it.
    Those at or before `start` were checked when it was restored.

    `partitions`: how many orders partitions matching ran (CX_MARKET_PARTITIONS); the books
    follow each one's own log time (`ExchangeState`); a `start` must follow as many.
    """
    if start is not None and start.partitions != partitions:
        raise PartitionsDiffer(
            f"the state to start from follows {start.partitions} matching partitions, not "
            f"the {partitions} asked for (CX_MARKET_PARTITIONS)"
        )
    state = ExchangeState(catalogue, partitions=partitions) if start is None else start
    result = ReplayResult(state, started_from=state.position)
    pending = {p: h for p, h in sorted((checkpoints or {}).items()) if p > state.position}
    left_out = False
    reading: asyncio.Task[list[CompactEvent]] | None = None
    if until_position is None or until_position > state.position:
        reading = _read_after(store, state.position, FIRST_REPLAY_BATCH)
    try:
        while reading is not None and (batch := await reading):
            last = batch[-1][0]
            # The database reads the next batch (on the other core) while this one is folded;
            # none is read past the position the replay stops at.
            stops_here = until_position is not None and last >= until_position
            limit = min(2 * len(batch), REPLAY_BATCH)
            reading = None if stops_here else _read_after(store, last, limit)
            for first in range(0, len(batch), YIELD_EVERY):
                # Lets the driver send the next query and take in its rows as they come.
                await asyncio.sleep(0)
                for position, kind, ts, data, partition in batch[first : first + YIELD_EVERY]:
                    if until_position is not None and position > until_position:
                        return result
                    if until_ts is not None and ts > until_ts:
                        # Log time grows within a partition, not across the global order:
                        # events logged by T are each partition's prefix up to T, wherever
                        # they were stored.
                        left_out = True
                        if pending.pop(position, None) is not None:
                            result.not_comparable += 1
                        continue
                    if data is None:
                        state.pass_time(ts, position, state.time_partition(kind, partition))
                    else:
                        state.apply_event(decode_event(data), position, partition)
                    if pending and (recorded := pending.pop(position, None)) is not None:
                        if left_out:
                            result.not_comparable += 1
                        else:
                            result.checked += 1
                            replayed = state.state_hash()
                            if replayed != recorded:
                                result.mismatches.append(Mismatch(position, recorded, replayed))
            if progress is not None:
                progress(len(batch))
    finally:
        if reading is not None:
            reading.cancel()
    return result


def _read_after(
    store: CompactReader, position: int, limit: int
) -> asyncio.Task[list[CompactEvent]]:
    """Start reading the replay's next batch."""
    return asyncio.ensure_future(store.read_compact(position, limit, FOLDED_TYPES))


def parse_until(value: str) -> tuple[int | None, int | None]:
    """`--until`: a position (digits) or a time (ISO 8601); returns (position, ts in ms)."""
    if value.isdigit():
        return int(value), None
    return None, parse_time(value)


TIME_EXAMPLE = "2026-12-05T09:00+08:00"
"""A time as `parse_time` reads it, for messages saying what is expected."""


def parse_time(value: str) -> int:
    """An ISO 8601 time with its UTC offset, in ms since the epoch. A ValueError says, Chinese
    first, what is expected (not Python's "Invalid isoformat string")."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"时间 {value[:80]!r} 不是带时区的 ISO 8601 时间, 应如 {TIME_EXAMPLE} "
            f"not an ISO 8601 time with offset; expected e.g. {TIME_EXAMPLE}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(
            f"时间 {value[:80]!r} 缺少时区, 应如 {TIME_EXAMPLE} needs a UTC offset, "
            f"e.g. {TIME_EXAMPLE}"
        )
    return to_utc_ms(moment)
