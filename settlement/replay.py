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
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from exchange.domain import accounts as money
from exchange.domain import market as matching
from exchange.domain.accounts import Accounts
from exchange.domain.catalogue import Catalogue, to_utc_ms
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    AnyEvent,
    Event,
    EventStamp,
    decode_event,
    event_from_dict,
)
from exchange.snapshots import Snapshot
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


class ExchangeState:
    """Accounts and books as of the last event applied."""

    def __init__(self, catalogue: Catalogue, *, journal: bool = False) -> None:
        self.catalogue = catalogue
        self.accounts = Accounts(catalogue.rules, journal=journal)
        self.market = MarketStage(catalogue, replica=True)
        self.position = 0
        self.ts: int | None = None
        self.applied = 0

    def apply(self, stored: StoredEvent) -> AnyEvent:
        """Fold one stored event; returns it decoded."""
        event = event_from_dict(stored.data)
        self.apply_event(event, stored.position)
        return event

    def apply_event(self, event: AnyEvent, position: int) -> None:
        """Fold one decoded event stored at `position`."""
        self.accounts.apply(event)
        if type(event) not in _BOOK_INPUTS:
            self.pass_time(event.ts, position)
            return
        # The matching stage's inputs rebuild the books; its outputs are already stored.
        self.market.replay(event, EventStamp("replay", 0, position, event.ts))
        self.position = position
        self.ts = event.ts if self.ts is None else max(self.ts, event.ts)
        self.applied += 1

    def pass_time(self, ts: int, position: int) -> None:
        """Fold an event stored at `position` that neither moves money nor acts on the books
        (not in `FOLDED_TYPES`): all it does is move the books' log time to its `ts`."""
        market = self.market
        if market.due(ts):
            market.idle(EventStamp("replay", 0, position, ts))
        else:
            market.engine.advance(ts)
        self.position = position
        self.ts = ts if self.ts is None or ts > self.ts else self.ts
        self.applied += 1

    def apply_compact(self, row: CompactEvent) -> None:
        """Fold one event as `EventStore.read_compact` returns it (with `FOLDED_TYPES`)."""
        position, _, ts, data = row
        if data is None:
            self.pass_time(ts, position)
        else:
            self.apply_event(decode_event(data), position)

    def accounts_hash(self) -> str:
        """SHA-256 of every balance, position and hold."""
        hasher = hashlib.sha256()
        self.accounts.digest(hasher)
        return hasher.hexdigest()

    def state_hash(self) -> str:
        """SHA-256 of the accounts and every book."""
        return hashlib.sha256(
            f"accounts:{self.accounts_hash()}\nbooks:{self.market.state_hash()}\n".encode()
        ).hexdigest()

    def history_hash(self) -> str:
        """SHA-256 of the accounts and every book, with each resting order's time priority
        as its rank in its own book (and each block's in its family) instead of the number
        the replaying engine gave it.

        `state_hash` counts one sequence over every book, so its numbers depend on how the
        partitions' histories interleave: by arrival in one store, by log time when shards
        are merged. Priority only ever compares orders of one book, so this hash is the same
        for every interleaving that keeps each partition's order: one store's and the shards'
        merged history hash alike (docs/DESIGN.md, "Settlement in shards")."""
        snapshot = self.market.snapshot()
        engine = snapshot["engine"]
        for book in engine["books"]:
            _rank(book["orders"])
        families: dict[str, list[list[Any]]] = {}
        for block in engine["blocks"]:
            families.setdefault(block[BLOCK_FAMILY_AT], []).append(block)
        for blocks in families.values():
            _rank(blocks)
        engine["seq"] = None
        books = hashlib.sha256(
            json.dumps(snapshot, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        return hashlib.sha256(
            f"accounts:{self.accounts_hash()}\nbooks:{books}\n".encode()
        ).hexdigest()

    def snapshot(self) -> dict[str, Any]:
        """The whole state, JSON-ready."""
        return {
            "accounts": self.accounts.snapshot(),
            "market": self.market.snapshot(),
            "position": self.position,
            "ts": self.ts,
            "applied": self.applied,
        }

    @classmethod
    def restore(cls, catalogue: Catalogue, data: dict[str, Any]) -> ExchangeState:
        """The state a snapshot describes."""
        state = cls(catalogue)
        state.accounts = Accounts.restore(data["accounts"], catalogue.rules)
        state.market = MarketStage.restore(catalogue, data["market"], replica=True)
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
    catalogue: Catalogue, snapshot: Snapshot, checkpoint: str | None
) -> ExchangeState:
    """The state a stored snapshot of settlement describes, once it is proved to be the state
    the live system had there: it must hash to the state hash stored with it and to the
    checkpoint recorded at its position, if one is. SnapshotRefused says why not."""
    where = f"the snapshot at position {snapshot.input_offset}"
    try:
        state = ExchangeState.restore(catalogue, snapshot.data)
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
    start: ExchangeState | None = None,
) -> ReplayResult:
    """Fold stored events from the start, or from the state `start` (restored from a checked
    snapshot, see `restore_checked`), up to a position or a log time (inclusive).

    A time cut takes every event whose log time is at or before it, in stored order; a `start`
    must hold no event past the cut.

    `checkpoints` maps positions to state hashes the live system recorded; each one passed is
    compared with the replayed state there, unless a time cut left out an event before it.
    Those at or before `start` were checked when it was restored.
    """
    state = ExchangeState(catalogue) if start is None else start
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
                for position, _, ts, data in batch[first : first + YIELD_EVERY]:
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
                        state.pass_time(ts, position)
                    else:
                        state.apply_event(decode_event(data), position)
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


def parse_time(value: str) -> int:
    """An ISO 8601 time with its UTC offset, in ms since the epoch."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"time {value!r} needs a UTC offset, e.g. 2027-12-01T02:00+08:00")
    return to_utc_ms(moment)
