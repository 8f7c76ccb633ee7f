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
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from settlement.sql_store import SqlEventStore, StoreView
from settlement.store import CompactEvent, StoredEvent

MERGE_BATCH = 5000
"""Events read from each shard at a time while the shards' histories are merged."""


def shard_of(partition: int, shards: int) -> int:
    """The shard that settles an events-topic partition."""
    return partition % shards


def partitions_of(shard: int, shards: int, partitions: int) -> list[int]:
    """The events-topic partitions a shard settles."""
    return [p for p in range(partitions) if shard_of(p, shards) == shard]


class _Cursor:
    """One shard's history read forwards a batch at a time."""

    def __init__(self, view: StoreView, shard: int, with_data: Collection[str] | None) -> None:
        self.view = view
        self.shard = shard
        self.with_data = with_data
        self.after = 0
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


def _ts(row: CompactEvent | StoredEvent) -> int:
    if isinstance(row, StoredEvent):
        ts = row.data.get("ts", 0)
        return ts if isinstance(ts, int) else 0
    return row[2]


class MergedView:
    """Every shard's history as one, as of one consistent point of each shard, read forwards
    only (each call continues after the position the previous one returned last).

    Positions are the merged order's, from 1; `origin` says which shard and position each
    one came from, for reports that name events."""

    def __init__(self, views: Sequence[StoreView]) -> None:
        self.views = list(views)
        self.position = sum(view.position for view in views)
        """How many events the shards hold together: the merged history's last position."""
        self.origin: dict[int, tuple[int, int]] = {}
        self._cursors: list[_Cursor] | None = None
        self._merged = 0

    async def _next_rows(
        self, after: int, limit: int, with_data: Collection[str] | None
    ) -> list[tuple[int, CompactEvent | StoredEvent]]:
        if self._cursors is None:
            self._cursors = [_Cursor(v, k, with_data) for k, v in enumerate(self.views)]
        if after != self._merged:
            raise ValueError(f"the merged history reads forwards: at {self._merged}, not {after}")
        taken: list[tuple[int, CompactEvent | StoredEvent]] = []
        while len(taken) < limit:
            best: tuple[int, int] | None = None
            chosen: _Cursor | None = None
            for cursor in self._cursors:
                row = await cursor.head()
                if row is not None and (best is None or (_ts(row), cursor.shard) < best):
                    best, chosen = (_ts(row), cursor.shard), cursor
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
