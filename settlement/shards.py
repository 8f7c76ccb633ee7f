"""Settlement in shards: the events topic's partitions split over several event stores.

A shard is a set of events-topic partitions with a database of its own: its events, its
ledger projection, its checkpoints and snapshots. Partition P settles in shard P mod N, so a
contract family (hashed to one partition) settles in one shard, and so does every event of
an account-level partition (deposits, withdrawals, concessions) hashed by the account.

Every journal entry balances within its event, so each shard's journal balances on its own;
what an account holds is the sum of its parts in every shard (a part may be negative: buys
in one shard, the deposit paying for them in another). The whole history is the shards'
histories merged (`MergedView`): each shard's stored order is kept, which keeps every
partition's order, and the shards interleave by log time, ties by shard number.
(docs/DESIGN.md, "Settlement in shards".)
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Row, case, cast, null, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from exchange.pipeline import partition_for
from settlement.schema import events
from settlement.sql_store import SqlEventStore, StoreView
from settlement.store import CompactEvent, StoredEvent

MERGE_BATCH = 5000
"""Events read from each shard at a time while the shards' histories are merged."""


def shard_of(partition: int, shards: int) -> int:
    """The shard that settles an events-topic partition."""
    return partition % shards


def shard_of_family(partitions: int, shards: int) -> Callable[[str], int]:
    """The shard settling each family `CLASS.REGION`, with `partitions` events partitions."""
    return lambda family: shard_of(partition_for(family, partitions), shards)


def partitions_of(shard: int, shards: int, partitions: int) -> list[int]:
    """The events-topic partitions a shard settles."""
    return [p for p in range(partitions) if shard_of(p, shards) == shard]


class _Cursor:
    """One shard's history read forwards a batch at a time."""

    def __init__(
        self, view: StoreView, shard: int, with_data: Collection[str] | None, after: int
    ) -> None:
        self.view = view
        self.shard = shard
        self.with_data = with_data
        self.after = after
        self.rows: list[CompactEvent] | list[StoredEvent] = []
        self.at = 0

    async def head(self) -> CompactEvent | StoredEvent | None:
        if self.at == len(self.rows):
            if self.with_data is None:
                self.rows = await self.view.read_all(self.after, MERGE_BATCH)
            else:
                self.rows = await self.view.read_compact(self.after, MERGE_BATCH, self.with_data)
            self.at = 0
            if not self.rows:
                return None
            last = self.rows[-1]
            self.after = last.position if isinstance(last, StoredEvent) else last[0]
        return self.rows[self.at]


def merge_key(ts: int | None, shard: int) -> tuple[int, int]:
    """What the shards' next events are compared by when their histories are merged: the
    smallest is taken next (log time, ties by shard number; an event without a log time
    counts as logged at 0). Each shard's own order is kept whatever the log times."""
    return (ts or 0, shard)


def _ts(row: CompactEvent | StoredEvent) -> int:
    if isinstance(row, StoredEvent):
        ts = row.data.get("ts", 0)
        return ts if isinstance(ts, int) else 0
    return row[2]


class MergedView:
    """Every shard's history as one, as of one consistent point of each shard, read forwards
    only (each call continues after the position the previous one returned last).

    Positions are the merged order's, from 1; `origin` says which shard and position each
    one came from, for reports that name events. Given `after` (each shard's last position
    already folded, as a restart from the shards' snapshots has), the history goes on from
    there, its positions counting on from their sum."""

    def __init__(self, views: Sequence[StoreView], after: Sequence[int] | None = None) -> None:
        self.views = list(views)
        self.position = sum(view.position for view in views)
        """How many events the shards hold together: the merged history's last position."""
        self.origin: dict[int, tuple[int, int]] = {}
        self._cursors: list[_Cursor] | None = None
        self._after = list(after) if after is not None else [0] * len(self.views)
        self._merged = sum(self._after)

    async def _next_rows(
        self, after: int, limit: int, with_data: Collection[str] | None
    ) -> list[tuple[int, CompactEvent | StoredEvent]]:
        if self._cursors is None:
            self._cursors = [
                _Cursor(view, k, with_data, self._after[k]) for k, view in enumerate(self.views)
            ]
        if after != self._merged:
            raise ValueError(f"the merged history reads forwards: at {self._merged}, not {after}")
        taken: list[tuple[int, CompactEvent | StoredEvent]] = []
        while len(taken) < limit:
            best: tuple[int, int] | None = None
            chosen: _Cursor | None = None
            for cursor in self._cursors:
                row = await cursor.head()
                if row is not None and (best is None or merge_key(_ts(row), cursor.shard) < best):
                    best, chosen = merge_key(_ts(row), cursor.shard), cursor
            if chosen is None:
                break
            row = chosen.rows[chosen.at]
            chosen.at += 1
            self._merged += 1
            own = row.position if isinstance(row, StoredEvent) else row[0]
            self.origin[self._merged] = (chosen.shard, own)
            taken.append((self._merged, row))
        return taken

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """The next events of the merged history, renumbered in its order."""
        rows = await self._next_rows(after_position, limit, None)
        return [
            dataclasses.replace(row, position=position)
            for position, row in rows
            if isinstance(row, StoredEvent)
        ]

    async def read_compact(
        self, after_position: int, limit: int, with_data: Collection[str]
    ) -> list[CompactEvent]:
        """As `read_all`, in the compact form a replay reads."""
        rows = await self._next_rows(after_position, limit, with_data)
        return [
            (position, row[1], row[2], row[3], row[4])
            for position, row in rows
            if not isinstance(row, StoredEvent)
        ]


@asynccontextmanager
async def viewing(stores: Sequence[SqlEventStore]) -> AsyncIterator[list[StoreView]]:
    """A consistent view of each shard (each as of its own last commit: the shards commit
    independently, so no one instant is common to all of them)."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(store.view()) for store in stores]


def format_cursor(positions: Sequence[int]) -> str:
    """A place in the merged history, as `read_merged` takes it back: each shard's last
    position read, the home shard's first, separated by commas (one shard: its position)."""
    return ",".join(str(position) for position in positions)


def parse_cursor(text: str, shards: int, largest: int) -> tuple[int, ...]:
    """The positions a cursor (`format_cursor`) names; ValueError saying what is wrong."""
    parts = text.split(",")
    if len(parts) != shards or not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError(
            f"cursor {text[:80]!r} is not {shards} position(s) separated by commas (one per "
            "settlement shard, the home shard first), as an event's `cursor` gives"
        )
    positions = tuple(int(part) for part in parts)
    if max(positions) > largest:
        raise ValueError(f"cursor {text[:80]!r} names a position past {largest}")
    return positions


@dataclasses.dataclass(frozen=True, slots=True)
class ShardEvent:
    """An event of the merged history: the shard that stores it, the event (its position is
    that shard's own), and the cursor to read on after it."""

    shard: int
    event: StoredEvent
    cursor: tuple[int, ...]


def _scan(condition: ColumnElement[bool] | None) -> Any:
    """A shard's events after a position, each with its log time for the merge and whether it
    matches `condition`; the JSON of those that do not is left unsent."""
    matched: ColumnElement[bool] = true() if condition is None else condition
    data: Any = events.c.data
    metadata: Any = events.c.metadata
    if condition is not None:
        data = case((condition, events.c.data), else_=null()).label("data")
        metadata = case((condition, events.c.metadata), else_=null()).label("metadata")
    return select(
        events.c.position,
        events.c.stream_id,
        events.c.stream_version,
        events.c.event_id,
        events.c.type,
        events.c.schema_version,
        data,
        metadata,
        events.c.recorded_at,
        # As a replay reads it (`SqlEventStore.read_compact`), so the order is the same.
        cast(events.c.data["ts"].as_string(), BigInteger).label("merge_ts"),
        matched.label("matched"),
    ).order_by(events.c.position)


async def read_merged(
    engines: Sequence[AsyncEngine],
    after: Sequence[int],
    condition: ColumnElement[bool] | None = None,
    limit: int | None = None,
    batch: int = MERGE_BATCH,
) -> AsyncIterator[ShardEvent]:
    """Every shard's events after `after` (each shard's last position read, as a cursor
    names it), merged in `MergedView`'s order: those matching `condition` (all without
    one), at most `limit`.

    The shards' unmatched events are read too (their positions and log times only): which
    shard goes next depends on every shard's next event, so filtering a shard before the
    merge could change the order. Each batch is read as the shard stands then: its writers
    commit in position order, so nothing a cursor passed is stored later behind it."""
    query = _scan(condition)
    positions = list(after)
    rows: list[Sequence[Row[Any]]] = [() for _ in engines]
    at = [0 for _ in engines]
    finished = [False for _ in engines]
    taken = 0
    while limit is None or taken < limit:
        best: tuple[int, int] | None = None
        chosen = -1
        for shard, engine in enumerate(engines):
            if finished[shard]:
                continue
            if at[shard] == len(rows[shard]):
                async with engine.connect() as connection:
                    rows[shard] = (
                        await connection.execute(
                            query.where(events.c.position > positions[shard]).limit(batch)
                        )
                    ).all()
                at[shard] = 0
                if not rows[shard]:
                    finished[shard] = True
                    continue
            key = merge_key(rows[shard][at[shard]].merge_ts, shard)
            if best is None or key < best:
                best, chosen = key, shard
        if chosen < 0:
            return
        row = rows[chosen][at[chosen]]
        at[chosen] += 1
        positions[chosen] = row.position
        if row.matched:
            taken += 1
            event = StoredEvent(
                row.position,
                row.stream_id,
                row.stream_version,
                row.event_id,
                row.type,
                row.schema_version,
                row.data,
                row.metadata,
                row.recorded_at,
            )
            yield ShardEvent(chosen, event, tuple(positions))
