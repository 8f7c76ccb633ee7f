"""Replays that restart from settlement's latest stored snapshot instead of position 0.

Settlement stores a snapshot of its `ExchangeState` every SNAPSHOT_EVERY events (with a
checkpoint at the same position) and on each clean stop. `replay_stored` restores the latest
one at or before the wanted point, once `restore_checked` has proved it is the state the live
system had there, and folds only the events after it. With settlement in shards,
`replay_merged_stored` does the same for every shard's history merged, from every shard's
latest checked snapshot put together (`settlement.shard_states`). A snapshot that fails those
checks, or whose fold then differs from a checkpoint recorded after it, is refused with the
reason and the replay starts again from position 0: a snapshot only shortens a replay, it is
never trusted over the events.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from exchange.domain.catalogue import Catalogue
from exchange.snapshots import Snapshot
from settlement.projections import SNAPSHOT_STAGE, SNAPSHOT_TOPIC, checkpoints
from settlement.replay import (
    ExchangeState,
    ReplayResult,
    SnapshotRefused,
    replay,
    restore_checked,
)
from settlement.shard_states import NotCombinable, combine
from settlement.shards import MergedView, shard_of
from settlement.snapshots import snapshots
from settlement.sql_store import StoreView
from settlement.store import CompactReader

log = logging.getLogger(__name__)


@dataclass
class Start:
    """Where a replay starts: a checked stored state, or position 0 (`state` None), with why a
    stored snapshot was refused if one was."""

    state: ExchangeState | None = None
    refused: str | None = None


async def latest_snapshot(
    connection: AsyncConnection,
    catalogue: Catalogue,
    until_position: int | None = None,
    until_ts: int | None = None,
    *,
    partitions: int,
) -> Start:
    """Settlement's latest stored snapshot at or before the point (a position, or a log time:
    then one holding no event logged after it), restored and checked; or position 0."""
    query = select(snapshots.c.input_offset).where(
        snapshots.c.stage == SNAPSHOT_STAGE,
        snapshots.c.topic == SNAPSHOT_TOPIC,
        snapshots.c.partition == 0,
    )
    if until_position is not None:
        query = query.where(snapshots.c.input_offset <= until_position)
    offsets = (await connection.execute(query.order_by(snapshots.c.input_offset.desc()))).all()
    for (offset,) in offsets:
        row = (
            await connection.execute(
                select(snapshots.c.state_hash, snapshots.c.data).where(
                    snapshots.c.stage == SNAPSHOT_STAGE,
                    snapshots.c.topic == SNAPSHOT_TOPIC,
                    snapshots.c.partition == 0,
                    snapshots.c.input_offset == offset,
                )
            )
        ).one()
        snapshot = Snapshot(SNAPSHOT_STAGE, SNAPSHOT_TOPIC, 0, offset, row.state_hash, row.data)
        if until_ts is not None and _logged_after(snapshot, until_ts):
            # It holds events the time cut leaves out: an older one may not.
            continue
        recorded = (
            await connection.execute(
                select(checkpoints.c.state_hash).where(checkpoints.c.position == offset)
            )
        ).scalar_one_or_none()
        try:
            return Start(restore_checked(catalogue, snapshot, recorded, partitions))
        except SnapshotRefused as refusal:
            return Start(refused=str(refusal))
    return Start()


def _logged_after(snapshot: Snapshot, until_ts: int) -> bool:
    ts = snapshot.data.get("ts") if isinstance(snapshot.data, dict) else None
    return not isinstance(ts, int) or ts > until_ts


async def replay_stored(
    reader: CompactReader,
    connection: AsyncConnection,
    catalogue: Catalogue,
    until_position: int | None = None,
    until_ts: int | None = None,
    recorded: Mapping[int, str] | None = None,
    *,
    full: bool = False,
    starting: Callable[[int], Awaitable[None]] | None = None,
    progress: Callable[[int], None] | None = None,
    partitions: int,
) -> ReplayResult:
    """`replay` from the latest stored snapshot at or before the point (from position 0 if
    `full`, if there is none, or if it is refused: `ReplayResult.refused` says why).

    `reader` and `connection` must see the same point of the history (a `StoreView` and its
    connection). `recorded` maps positions to the state hashes the live system recorded: those
    after the snapshot are compared as the replay passes them, and if one differs the snapshot
    is refused and the replay starts again from 0, where any difference is the history's own.
    `starting` is told the position each replay starts from. `partitions`: matching's
    orders partitions (`ExchangeState`).
    """
    start = (
        Start()
        if full
        else await latest_snapshot(
            connection, catalogue, until_position, until_ts, partitions=partitions
        )
    )
    if start.state is not None:
        snapshot_at = start.state.position
        if starting is not None:
            await starting(snapshot_at)
        result = await replay(
            reader,
            catalogue,
            until_position,
            until_ts,
            recorded,
            progress,
            start=start.state,
            partitions=partitions,
        )
        if not result.mismatches:
            if recorded is not None and snapshot_at in recorded:
                # restore_checked compared the state there with the hash stored with it.
                result.checked += 1
            return result
        differs = result.mismatches[0].position
        start = Start(
            refused=f"the replay from the snapshot at position {snapshot_at} differs from the "
            f"checkpoint recorded at position {differs}: the snapshot is stale or corrupt"
        )
    if start.refused is not None:
        log.warning("stored snapshot refused, replaying from position 0: %s", start.refused)
    if starting is not None:
        await starting(0)
    result = await replay(
        reader, catalogue, until_position, until_ts, recorded, progress, partitions=partitions
    )
    result.refused = start.refused
    return result


@dataclass
class MergedReplay:
    """A replay of every shard's history merged: its result, and the positions of the shards'
    snapshots it restarted from (None: it read every shard from position 0)."""

    result: ReplayResult
    snapshots: list[int] | None = None
    read: int = 0
    """How many events it read and folded (the snapshots hold the others)."""


async def replay_merged_stored(
    views: Sequence[StoreView],
    catalogue: Catalogue,
    partitions: int,
    until_position: int | None = None,
    until_ts: int | None = None,
    *,
    full: bool = False,
) -> MergedReplay:
    """`replay` of every shard's history merged (`MergedView`), with `partitions` matching
    partitions (CX_MARKET_PARTITIONS), restarted from the merged state at each shard's latest
    checked stored snapshot (`latest_snapshot`) when every shard has one and their states put
    together (`settlement.shard_states.combine`); from position 0 if `full`, if a position
    cut is asked for (positions are the merged order's, and the shards' snapshots sit at no
    one merged position), or else, saying why in `ReplayResult.refused` when a snapshot was
    refused or the states do not combine.

    After the restart the shards' later events are merged as `MergedView` merges them from
    there, each shard's order kept, so each partition's stage reads the rest of its own
    events on its own log time as in the replay from 0; `history_hash`, which only depends
    on each partition's order, is the full replay's."""
    refused: str | None = None
    if not full and until_position is None:
        starts = [
            await latest_snapshot(v.connection, catalogue, None, until_ts, partitions=partitions)
            for v in views
        ]
        refusals = [f"shard {k}: {s.refused}" for k, s in enumerate(starts) if s.refused]
        states = [start.state for start in starts if start.state is not None]
        if refusals:
            refused = "; ".join(refusals)
        elif len(states) == len(views):
            try:
                combined = combine(
                    [state.snapshot() for state in states],
                    lambda partition: shard_of(partition, len(views)),
                )
                start = ExchangeState.restore(catalogue, combined)
            except NotCombinable as error:
                refused = f"the shards' snapshots do not combine: {error}"
            except (KeyError, IndexError, TypeError, ValueError) as error:
                refused = f"the shards' snapshots put together do not restore: {error!r}"
            else:
                folded = start.applied
                positions = [state.position for state in states]
                merged = MergedView(views, after=positions)
                result = await replay(
                    merged, catalogue, None, until_ts, start=start, partitions=partitions
                )
                return MergedReplay(result, positions, result.state.applied - folded)
    if refused is not None:
        log.warning("shard snapshots refused, replaying from position 0: %s", refused)
    result = await replay(
        MergedView(views), catalogue, until_position, until_ts, partitions=partitions
    )
    result.refused = refused
    return MergedReplay(result, None, result.state.applied)
