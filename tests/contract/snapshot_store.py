"""The snapshot store contract: every adapter's test class inherits these tests.

A subclass provides `snapshots`: a store on the test's own empty database.
"""

from __future__ import annotations

import pytest

from exchange.snapshots import Snapshot, SnapshotStore


def taken(offset: int, partition: int = 0, stage: str = "risk", topic: str = "t") -> Snapshot:
    """A snapshot of `stage` at `offset` whose data and hash name where it was taken."""
    return Snapshot(
        stage, topic, partition, offset, f"hash-{offset}", {"at": [stage, partition, offset]}
    )


class SnapshotStoreContract:
    """Tests every SnapshotStore adapter must pass; subclasses provide `snapshots`."""

    @pytest.fixture
    def snapshots(self) -> SnapshotStore:
        """A store on this test's own empty database."""
        raise NotImplementedError("an adapter's test class provides snapshots")

    async def test_a_partition_never_saved_has_no_snapshot(self, snapshots: SnapshotStore) -> None:
        assert await snapshots.latest("risk", "t", 0) is None

    async def test_latest_returns_what_was_saved(self, snapshots: SnapshotStore) -> None:
        saved = Snapshot("matching", "cx.orders", 3, 120, "abc", {"books": [[1, "x"]], "n": None})
        await snapshots.save(saved)
        assert await snapshots.latest("matching", "cx.orders", 3) == saved

    async def test_latest_is_the_highest_offset_not_past_at_most(
        self, snapshots: SnapshotStore
    ) -> None:
        for offset in (20, 10, 30):
            await snapshots.save(taken(offset))
        assert await snapshots.latest("risk", "t", 0) == taken(30)
        assert await snapshots.latest("risk", "t", 0, at_most=29) == taken(20)
        assert await snapshots.latest("risk", "t", 0, at_most=20) == taken(20)
        assert await snapshots.latest("risk", "t", 0, at_most=9) is None

    async def test_a_second_save_at_the_same_offset_is_kept_once(
        self, snapshots: SnapshotStore
    ) -> None:
        await snapshots.save(taken(10))
        await snapshots.save(taken(10))
        assert await snapshots.latest("risk", "t", 0) == taken(10)
        assert await snapshots.latest("risk", "t", 0, at_most=9) is None

    async def test_stages_topics_and_partitions_are_kept_apart(
        self, snapshots: SnapshotStore
    ) -> None:
        await snapshots.save(taken(10, partition=0))
        await snapshots.save(taken(20, partition=1))
        await snapshots.save(taken(30, stage="matching"))
        await snapshots.save(taken(40, topic="other"))
        assert await snapshots.latest("risk", "t", 0) == taken(10, partition=0)
        assert await snapshots.latest("risk", "t", 1) == taken(20, partition=1)
        assert await snapshots.latest("matching", "t", 0) == taken(30, stage="matching")
        assert await snapshots.latest("risk", "other", 0) == taken(40, topic="other")
        assert await snapshots.latest("settlement", "t", 0) is None

    async def test_the_newest_survive_many_saves(self, snapshots: SnapshotStore) -> None:
        for offset in range(1, 21):
            await snapshots.save(taken(offset))
        assert await snapshots.latest("risk", "t", 0) == taken(20)
        assert await snapshots.latest("risk", "t", 0, at_most=19) == taken(19)
