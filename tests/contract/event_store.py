"""The event store contract: every adapter's test class inherits these tests.

A subclass provides `make_store`: a factory that opens (and initialises) another store on the
test's own empty database, closing every store it opened when the test ends.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Column, MetaData, Table, Text, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cx.migrations import upgrade_to_head
from settlement.sql_store import SqlEventStore
from settlement.store import ConcurrencyError, NewEvent, StoredEvent

StoreFactory = Callable[[], Awaitable[SqlEventStore]]


@asynccontextmanager
async def opened_stores(open_store: Callable[[], SqlEventStore]) -> AsyncIterator[StoreFactory]:
    """A factory of initialised stores from `open_store`, all closed on exit."""
    stores: list[SqlEventStore] = []

    async def make() -> SqlEventStore:
        store = open_store()
        stores.append(store)
        await store.initialise(upgrade_to_head)
        return store

    try:
        yield make
    finally:
        for store in stores:
            await store.close()


def new(event_id: str, stream_id: str, type: str = "Happened", **data: Any) -> NewEvent:
    """A small event for tests."""
    return NewEvent(event_id=event_id, stream_id=stream_id, type=type, data=data)


async def read_everything(store: SqlEventStore, page: int = 1000) -> list[StoredEvent]:
    """Every stored event, in global order, read page by page."""
    everything: list[StoredEvent] = []
    while batch := await store.read_all(everything[-1].position if everything else 0, page):
        everything.extend(batch)
    return everything


projection_metadata = MetaData()
projected = Table(
    "test_projected",
    projection_metadata,
    Column("position", BigInteger, primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
)


async def create_projection_table(store: SqlEventStore) -> None:
    async with store.engine.begin() as connection:
        await connection.run_sync(projection_metadata.create_all)


async def project_amounts(connection: AsyncConnection, events: Sequence[StoredEvent]) -> None:
    """A projector writing one row per event into `test_projected`."""
    await connection.execute(
        insert(projected),
        [
            {"position": e.position, "event_id": e.event_id, "amount": e.data["amount"]}
            for e in events
        ],
    )


async def projected_rows(store: SqlEventStore) -> list[tuple[int, str, int]]:
    async with store.engine.connect() as connection:
        result = await connection.execute(select(projected).order_by(projected.c.position))
        return [tuple(row) for row in result]


class EventStoreContract:
    """Tests every EventStore adapter must pass; subclasses provide `make_store`."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        """Open another initialised store on this test's own database."""
        raise NotImplementedError("an adapter's test class provides make_store")

    @pytest.fixture
    async def store(self, make_store: StoreFactory) -> SqlEventStore:
        return await make_store()

    async def test_a_new_store_is_empty(self, store: SqlEventStore) -> None:
        assert await store.read_all() == []
        assert await store.read_stream("nothing") == []
        assert await store.stream_version("nothing") == 0
        assert await store.consumer_offsets("nobody") == {}

    async def test_initialise_twice_keeps_the_events(self, store: SqlEventStore) -> None:
        await store.append([new("e1", "s")])
        await store.initialise(upgrade_to_head)
        assert [e.event_id for e in await store.read_all()] == ["e1"]

    async def test_append_returns_what_reading_returns(self, store: SqlEventStore) -> None:
        stored = await store.append(
            [
                NewEvent("e1", "account-1", "Deposited", {"amount": 5}, {"causation": "c1"}, 2),
                NewEvent("e2", "account-2", "Deposited", {"amount": 7}),
            ]
        )

        assert stored == await store.read_all()
        first = stored[0]
        assert (first.event_id, first.stream_id, first.stream_version) == ("e1", "account-1", 1)
        assert (first.type, first.schema_version) == ("Deposited", 2)
        assert (first.data, first.metadata) == ({"amount": 5}, {"causation": "c1"})
        assert stored[1].metadata == {}
        assert stored[1].schema_version == 1

    async def test_read_stream_returns_only_that_stream_in_version_order(
        self, store: SqlEventStore
    ) -> None:
        await store.append([new("a1", "a"), new("b1", "b"), new("a2", "a")])
        await store.append([new("b2", "b"), new("a3", "a")])

        assert [(e.event_id, e.stream_version) for e in await store.read_stream("a")] == [
            ("a1", 1),
            ("a2", 2),
            ("a3", 3),
        ]
        assert [e.event_id for e in await store.read_stream("a", from_version=2)] == ["a2", "a3"]
        assert [e.event_id for e in await store.read_stream("b")] == ["b1", "b2"]
        assert await store.read_stream("a", from_version=4) == []

    async def test_read_all_is_in_append_order_with_increasing_positions(
        self, store: SqlEventStore
    ) -> None:
        await store.append([new("a1", "a"), new("b1", "b"), new("a2", "a")])
        await store.append([new("c1", "c")])
        await store.append([new("b2", "b"), new("a3", "a")])

        everything = await store.read_all()

        assert [e.event_id for e in everything] == ["a1", "b1", "a2", "c1", "b2", "a3"]
        positions = [e.position for e in everything]
        assert positions == sorted(set(positions))
        assert positions[0] >= 1

    async def test_stream_versions_start_at_one_and_increase_by_one(
        self, store: SqlEventStore
    ) -> None:
        first = await store.append([new("a1", "a"), new("a2", "a")])
        second = await store.append([new("a3", "a"), new("b1", "b")])

        assert [e.stream_version for e in first + second] == [1, 2, 3, 1]
        assert await store.stream_version("a") == 3
        assert await store.stream_version("b") == 1

    async def test_read_all_pages_with_limit(self, store: SqlEventStore) -> None:
        await store.append([new(f"e{i}", f"s{i % 3}") for i in range(10)])
        everything = await store.read_all()

        first = await store.read_all(limit=4)
        second = await store.read_all(after_position=first[-1].position, limit=4)
        third = await store.read_all(after_position=second[-1].position, limit=4)

        assert [len(first), len(second), len(third)] == [4, 4, 2]
        assert first + second + third == everything
        assert await store.read_all(after_position=everything[-1].position) == []
        assert await read_everything(store, page=3) == everything

    async def test_json_round_trips_exactly(self, store: SqlEventStore) -> None:
        data = {
            "ticks": 2**62 + 1,
            "negative": -(2**40),
            "zero": 0,
            "flag": True,
            "none": None,
            "nested": {"list": [1, "two", [3]], "empty": {}},
            "text": "Grüße, 计算 ✓",
        }
        await store.append([NewEvent("e1", "s", "T", data, {"partition": 3, "offset": 2**40})])

        (read,) = await store.read_stream("s")

        assert read.data == data
        assert type(read.data["ticks"]) is int
        assert read.metadata == {"partition": 3, "offset": 2**40}

    async def test_recorded_at_is_an_aware_current_time(self, store: SqlEventStore) -> None:
        (stored,) = await store.append([new("e1", "s")])
        (read,) = await store.read_all()

        assert read.recorded_at == stored.recorded_at
        assert read.recorded_at.utcoffset() == timedelta(0)

    async def test_matching_expected_versions_append(self, store: SqlEventStore) -> None:
        await store.append([new("a1", "a")], expected_versions={"a": 0})
        stored = await store.append(
            [new("a2", "a"), new("b1", "b")], expected_versions={"a": 1, "b": 0}
        )

        assert [(e.event_id, e.stream_version) for e in stored] == [("a2", 2), ("b1", 1)]

    async def test_expected_version_mismatch_raises_and_stores_nothing(
        self, store: SqlEventStore
    ) -> None:
        await store.append([new("a1", "a"), new("a2", "a")], offsets={("c", "t", 0): 1})
        before = await store.read_all()

        with pytest.raises(ConcurrencyError) as raised:
            await store.append(
                [new("b1", "b"), new("a3", "a")],
                expected_versions={"a": 1, "b": 0},
                offsets={("c", "t", 0): 2, ("c", "t", 1): 9},
            )

        message = str(raised.value)
        assert "'a'" in message
        assert "expected 1" in message
        assert "version 2" in message
        assert await store.read_all() == before
        assert await store.stream_version("b") == 0
        assert await store.consumer_offsets("c") == {("t", 0): 1}

    async def test_expecting_zero_refuses_an_existing_stream(self, store: SqlEventStore) -> None:
        await store.append([new("a1", "a")])

        with pytest.raises(ConcurrencyError, match="'a'"):
            await store.append([new("a2", "a")], expected_versions={"a": 0})

        assert await store.stream_version("a") == 1

    async def test_expected_version_guards_a_stream_not_in_the_batch(
        self, store: SqlEventStore
    ) -> None:
        await store.append([new("a1", "a")])

        with pytest.raises(ConcurrencyError, match="'a'"):
            await store.append([new("b1", "b")], expected_versions={"a": 0})
        stored = await store.append([new("b1", "b")], expected_versions={"a": 1})

        assert [e.event_id for e in stored] == ["b1"]

    async def test_duplicate_ids_in_one_batch_store_the_first(self, store: SqlEventStore) -> None:
        stored = await store.append([new("e1", "s", n=1), new("e2", "s", n=2), new("e1", "s", n=3)])

        assert [(e.event_id, e.stream_version, e.data) for e in stored] == [
            ("e1", 1, {"n": 1}),
            ("e2", 2, {"n": 2}),
        ]
        assert await store.read_all() == stored

    async def test_ids_already_stored_are_dropped(self, store: SqlEventStore) -> None:
        await store.append([new("e1", "s"), new("e2", "s")])

        stored = await store.append([new("e2", "s"), new("e3", "s"), new("e1", "t")])

        assert [(e.event_id, e.stream_version) for e in stored] == [("e3", 3)]
        assert [e.event_id for e in await store.read_all()] == ["e1", "e2", "e3"]
        assert await store.stream_version("t") == 0

    async def test_retrying_a_committed_append_is_a_no_op(self, store: SqlEventStore) -> None:
        batch = [new("e1", "a"), new("e2", "b")]
        expected = {"a": 0, "b": 0}
        offsets = {("c", "t", 0): 10}
        first = await store.append(batch, expected_versions=expected, offsets=offsets)

        retried = await store.append(batch, expected_versions=expected, offsets=offsets)

        assert retried == []
        assert await store.read_all() == first
        assert await store.consumer_offsets("c") == {("t", 0): 10}

    async def test_empty_append_stores_nothing(self, store: SqlEventStore) -> None:
        assert await store.append([]) == []
        assert await store.read_all() == []

    async def test_offsets_are_stored_with_the_batch_and_updated(
        self, store: SqlEventStore
    ) -> None:
        await store.append(
            [new("e1", "s")], offsets={("settle", "fills", 0): 5, ("settle", "fills", 1): 3}
        )
        await store.append([new("e2", "s")], offsets={("risk", "fills", 0): 100})
        assert await store.consumer_offsets("settle") == {("fills", 0): 5, ("fills", 1): 3}

        await store.append(
            [new("e3", "s")], offsets={("settle", "fills", 0): 9, ("settle", "orders", 0): 1}
        )

        assert await store.consumer_offsets("settle") == {
            ("fills", 0): 9,
            ("fills", 1): 3,
            ("orders", 0): 1,
        }
        assert await store.consumer_offsets("risk") == {("fills", 0): 100}

    async def test_offsets_alone_are_stored(self, store: SqlEventStore) -> None:
        await store.append([new("e1", "s")], offsets={("c", "t", 0): 1})

        # A consumed batch that produced only duplicates (or nothing) still moves the offset.
        assert await store.append([new("e1", "s")], offsets={("c", "t", 0): 2}) == []
        assert await store.append([], offsets={("c", "t", 0): 3}) == []

        assert await store.consumer_offsets("c") == {("t", 0): 3}

    async def test_projector_writes_commit_with_the_events(self, store: SqlEventStore) -> None:
        await create_projection_table(store)
        received: list[StoredEvent] = []

        async def projector(connection: AsyncConnection, events: Sequence[StoredEvent]) -> None:
            received.extend(events)
            await project_amounts(connection, events)

        await store.append([new("e0", "s", amount=1)])
        stored = await store.append(
            [new("e1", "s", amount=5), new("e2", "t", amount=7)], projector=projector
        )

        assert received == stored
        assert [e.stream_version for e in received] == [2, 1]
        assert await projected_rows(store) == [
            (e.position, e.event_id, e.data["amount"]) for e in stored
        ]

    async def test_projector_sees_only_new_events(self, store: SqlEventStore) -> None:
        await create_projection_table(store)
        await store.append([new("e1", "s", amount=1)], projector=project_amounts)
        calls: list[list[str]] = []

        async def projector(connection: AsyncConnection, events: Sequence[StoredEvent]) -> None:
            calls.append([e.event_id for e in events])
            await project_amounts(connection, events)

        await store.append(
            [new("e1", "s", amount=1), new("e2", "s", amount=2)], projector=projector
        )
        await store.append([new("e2", "s", amount=2)], projector=projector)

        assert calls == [["e2"]]
        assert [row[1] for row in await projected_rows(store)] == ["e1", "e2"]

    async def test_a_failing_projector_rolls_back_everything(self, store: SqlEventStore) -> None:
        await create_projection_table(store)
        await store.append(
            [new("e1", "s", amount=1)], offsets={("c", "t", 0): 1}, projector=project_amounts
        )
        before = await store.read_all()

        async def failing(connection: AsyncConnection, events: Sequence[StoredEvent]) -> None:
            await project_amounts(connection, events)
            raise RuntimeError("projection failed")

        with pytest.raises(RuntimeError, match="projection failed"):
            await store.append(
                [new("e2", "s", amount=2), new("e3", "u", amount=3)],
                offsets={("c", "t", 0): 2},
                projector=failing,
            )

        assert await store.read_all() == before
        assert await store.stream_version("u") == 0
        assert await store.consumer_offsets("c") == {("t", 0): 1}
        assert [row[1] for row in await projected_rows(store)] == ["e1"]
        # The store is still usable, and the versions the failed batch took are free again.
        stored = await store.append([new("e2", "s", amount=2)], projector=project_amounts)
        assert [(e.event_id, e.stream_version) for e in stored] == [("e2", 2)]

    async def test_a_view_reads_one_point_while_another_store_writes(
        self, make_store: StoreFactory
    ) -> None:
        reader, writer = await make_store(), await make_store()
        await create_projection_table(writer)
        before = await writer.append([new("e1", "s", amount=1)], projector=project_amounts)

        async with reader.view() as view:
            assert view.position == before[-1].position
            # A writer commits while the view is open: it is not kept waiting...
            later = await asyncio.wait_for(
                writer.append([new("e2", "s", amount=2)], projector=project_amounts), 10
            )
            # ...and the view sees neither its events nor the rows written with them.
            assert await view.read_all() == before
            assert [row[0] for row in await view.read_compact(0, 10, ())] == [before[0].position]
            rows = await view.connection.execute(select(projected.c.event_id))
            assert [row.event_id for row in rows] == ["e1"]

        async with reader.view() as view:
            assert view.position == later[-1].position
            assert await view.read_all() == before + later

    async def test_a_reopened_store_sees_everything(self, make_store: StoreFactory) -> None:
        first = await make_store()
        stored = await first.append([new("e1", "a"), new("e2", "b")], offsets={("c", "t", 0): 2})
        stored += await first.append([new("e3", "a")], offsets={("c", "t", 0): 3})
        await first.close()

        reopened = await make_store()

        assert await reopened.read_all() == stored
        assert await reopened.stream_version("a") == 2
        assert await reopened.consumer_offsets("c") == {("t", 0): 3}
        more = await reopened.append([new("e4", "a")], expected_versions={"a": 2})
        assert more[0].position > stored[-1].position

    async def test_a_batch_of_hundreds_appends_in_one_go(self, store: SqlEventStore) -> None:
        batch = [new(f"e{i}", f"account-{i % 50}", amount=i) for i in range(600)]

        stored = await store.append(batch, offsets={("c", "t", 0): 600})

        assert [e.event_id for e in stored] == [e.event_id for e in batch]
        assert await read_everything(store) == stored
        assert await store.stream_version("account-7") == 12

    async def test_concurrent_writers_and_a_tailing_reader(self, make_store: StoreFactory) -> None:
        # Two writer stores stand for two processes; each has its own connection pool, so the
        # writers really run at the same time and meet only at the store's write lock.
        writer_stores = [await make_store(), await make_store()]
        reader = await make_store()
        writers, batches = 8, 50
        writers_done = asyncio.Event()
        rng = random.Random(7)

        async def slow_projector(
            connection: AsyncConnection, events: Sequence[StoredEvent]
        ) -> None:
            # Widens the gap between taking positions and committing, where a reader would
            # skip a row if writers were not serialised.
            await asyncio.sleep(rng.random() / 500)

        async def write(writer: int) -> None:
            store = writer_stores[writer % 2]
            for batch in range(batches):
                await store.append(
                    [
                        new(f"w{writer}-b{batch}-own", f"writer-{writer}", w=writer, b=batch),
                        new(f"w{writer}-b{batch}-shared", "shared", w=writer, b=batch),
                    ],
                    expected_versions={f"writer-{writer}": batch},
                    offsets={("writers", "input", writer): batch + 1},
                    projector=slow_projector,
                )

        seen: list[StoredEvent] = []
        pages_while_writing = 0

        async def tail() -> None:
            nonlocal pages_while_writing
            last = 0
            while True:
                finished = writers_done.is_set()
                page = await reader.read_all(after_position=last, limit=7)
                if page:
                    seen.extend(page)
                    last = page[-1].position
                    pages_while_writing += not finished
                elif finished:
                    return
                else:
                    await asyncio.sleep(0.001)

        async def write_all() -> None:
            await asyncio.gather(*(write(w) for w in range(writers)))
            writers_done.set()

        async with asyncio.timeout(120):
            await asyncio.gather(write_all(), tail())

        everything = await read_everything(reader)
        assert len(everything) == writers * batches * 2
        assert seen == everything
        assert pages_while_writing > 1
        positions = [e.position for e in seen]
        assert positions == sorted(set(positions))
        assert [e.stream_version for e in seen if e.stream_id == "shared"] == list(
            range(1, writers * batches + 1)
        )
        for writer in range(writers):
            own = [e for e in seen if e.stream_id == f"writer-{writer}"]
            assert [e.data["b"] for e in own] == list(range(batches))
            assert [e.stream_version for e in own] == list(range(1, batches + 1))
        assert await reader.consumer_offsets("writers") == {
            ("input", w): batches for w in range(writers)
        }

    async def test_concurrent_appends_to_one_stream_with_expected_versions(
        self, make_store: StoreFactory
    ) -> None:
        stores = [await make_store(), await make_store()]
        attempts = 10

        async def contend(writer: int) -> bool:
            try:
                await stores[writer % 2].append(
                    [new(f"w{writer}", "contended")], expected_versions={"contended": 0}
                )
            except ConcurrencyError:
                return False
            return True

        outcomes = await asyncio.gather(*(contend(w) for w in range(attempts)))

        assert outcomes.count(True) == 1
        assert await stores[0].stream_version("contended") == 1

    @settings(
        max_examples=25,
        deadline=None,
        # The store fixture is fresh per test, not per example: each example prefixes its ids.
        # The same method runs on each adapter's subclass, which Hypothesis sees as two executors.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        batches=st.lists(
            st.tuples(
                st.lists(
                    st.tuples(st.integers(0, 11), st.sampled_from("abc")), min_size=0, max_size=5
                ),
                st.dictionaries(st.sampled_from("abc"), st.integers(0, 4), max_size=2),
            ),
            max_size=8,
        )
    )
    async def test_behaves_like_a_reference_model(
        self,
        store: SqlEventStore,
        batches: list[tuple[list[tuple[int, str]], dict[str, int]]],
    ) -> None:
        # Every example shares the test's database, so its ids and streams carry a fresh prefix.
        prefix = f"{uuid.uuid4().hex[:8]}-"
        model: list[tuple[str, str, int]] = []
        versions: dict[str, int] = {}
        for events, expected_by_letter in batches:
            batch = [new(f"{prefix}e{n}", f"{prefix}{s}") for n, s in events]
            expected = {f"{prefix}{s}": v for s, v in expected_by_letter.items()}

            stored_ids = {event_id for event_id, _, _ in model}
            fresh = []
            for e in batch:
                if e.event_id not in stored_ids and e.event_id not in {f.event_id for f in fresh}:
                    fresh.append(e)
            retried = {e.stream_id for e in batch} - {e.stream_id for e in fresh}
            conflict = any(versions.get(s, 0) != v for s, v in expected.items() if s not in retried)

            if conflict:
                with pytest.raises(ConcurrencyError):
                    await store.append(batch, expected_versions=expected)
                continue
            stored = await store.append(batch, expected_versions=expected)
            added = []
            for e in fresh:
                versions[e.stream_id] = versions.get(e.stream_id, 0) + 1
                added.append((e.event_id, e.stream_id, versions[e.stream_id]))
            model.extend(added)
            assert [(e.event_id, e.stream_id, e.stream_version) for e in stored] == added

        mine = [e for e in await read_everything(store) if e.stream_id.startswith(prefix)]
        assert [(e.event_id, e.stream_id, e.stream_version) for e in mine] == model
        for letter in "abc":
            assert await store.stream_version(f"{prefix}{letter}") == versions.get(
                f"{prefix}{letter}", 0
            )
