"""SQL adapters of the event store port: SQLite (aiosqlite) and PostgreSQL (asyncpg).

Both run the same SQLAlchemy Core statements; the subclasses differ only in how a writer takes
the store's single write lock and how a list of strings is passed as one parameter. Batches of
rows are written as `settlement.bulk` writes them on each database.
"""

from __future__ import annotations

import asyncio
import os
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ClassVar

import asyncpg
import orjson
from sqlalchemy import (
    ARRAY,
    JSON,
    URL,
    BigInteger,
    Integer,
    TableValuedAlias,
    Text,
    bindparam,
    case,
    cast,
    event,
    func,
    make_url,
    null,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from settlement.bulk import BatchInsert, driven
from settlement.schema import consumer_offsets, events
from settlement.store import (
    CompactEvent,
    ConcurrencyError,
    EventStore,
    NewEvent,
    OffsetKey,
    Projector,
    StoredEvent,
)

__all__ = [
    "PostgresEventStore",
    "SqlEventStore",
    "SqliteEventStore",
    "open_event_store",
    "writing",
]

# In the order of StoredEvent's fields, so a row unpacks straight into one.
_EVENT_COLUMNS = (
    events.c.position,
    events.c.stream_id,
    events.c.stream_version,
    events.c.event_id,
    events.c.type,
    events.c.schema_version,
    events.c.data,
    events.c.metadata,
    events.c.recorded_at,
)

_READ_STREAM = (
    select(*_EVENT_COLUMNS)
    .where(events.c.stream_id == bindparam("stream_id"))
    .where(events.c.stream_version >= bindparam("from_version"))
    .order_by(events.c.stream_version)
)
_READ_ALL = (
    select(*_EVENT_COLUMNS)
    .where(events.c.position > bindparam("after"))
    .order_by(events.c.position)
    .limit(bindparam("limit"))
)
_READ_COMPACT = (
    select(
        events.c.position,
        events.c.type,
        cast(events.c.data["ts"].as_string(), BigInteger),
        case(
            (events.c.type.in_(bindparam("types", expanding=True)), cast(events.c.data, Text)),
            else_=null(),
        ),
        cast(events.c.metadata["partition"].as_string(), Integer),
    )
    .where(events.c.position > bindparam("after"))
    .order_by(events.c.position)
    .limit(bindparam("limit"))
)
_READ_COMPACT_PG = (
    "SELECT position, type, (data ->> 'ts')::bigint,"
    " CASE WHEN type = ANY($3::text[]) THEN data::text END, (metadata ->> 'partition')::int"
    " FROM events WHERE position > $1 ORDER BY position LIMIT $2"
)
"""`_READ_COMPACT` in PostgreSQL's own words, for asyncpg."""
_STREAM_VERSION = select(func.coalesce(func.max(events.c.stream_version), 0)).where(
    events.c.stream_id == bindparam("stream_id")
)
_CONSUMER_OFFSETS = select(
    consumer_offsets.c.topic, consumer_offsets.c.partition, consumer_offsets.c.next_offset
).where(consumer_offsets.c.consumer == bindparam("consumer"))
# RETURNING rows come back in no promised order, so they are matched to the batch by event id.
# SQLite's; PostgreSQL's are written by COPY (`PostgresEventStore._write_events`).
_INSERT_EVENTS = BatchInsert(
    events, returning=(events.c.event_id, events.c.position, events.c.recorded_at)
)
_UPSERT_OFFSETS = BatchInsert(consumer_offsets, on_conflict="update")
_LAST_POSITION = select(func.coalesce(func.max(events.c.position), 0))
_TAKE_POSITIONS = (
    "SELECT setval(pg_get_serial_sequence('events', 'position'),"
    " nextval(pg_get_serial_sequence('events', 'position')) + $1 - 1), now()"
)
"""The next $1 positions, as the last of them, and the transaction's time (PostgreSQL)."""
_COPIED_COLUMNS = [c.name for c in _EVENT_COLUMNS if c is not events.c.recorded_at]
"""The columns settlement's COPY writes: recorded_at is left to its default, now()."""
_COPY_EVENTS = f"COPY events ({', '.join(_COPIED_COLUMNS)}) FROM STDIN"
"""The events' COPY, as errors name it."""


def _json_dumps(value: Any) -> str:
    # The drivers' JSON codecs take text; orjson keeps ints as ints and is fast.
    return orjson.dumps(value).decode()


async def _read_all(
    connection: AsyncConnection, after_position: int, limit: int
) -> list[StoredEvent]:
    """`read_all` on a given connection."""
    result = await connection.execute(_READ_ALL, {"after": after_position, "limit": limit})
    return [StoredEvent(*row) for row in result]


async def _read_compact(
    connection: AsyncConnection, after_position: int, limit: int, with_data: Collection[str]
) -> list[CompactEvent]:
    """`read_compact` on a given connection."""
    if connection.dialect.name == "postgresql":
        # Straight from asyncpg, inside the connection's transaction if it has begun one: its
        # records unpack as the tuples do, and SQLAlchemy's rows cost a replay about as much
        # CPU again as the driver's own reading.
        driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
        records: list[Any] = await driver.fetch(
            _READ_COMPACT_PG, after_position, limit, list(with_data)
        )
        return records
    result = await connection.execute(
        _READ_COMPACT, {"after": after_position, "limit": limit, "types": list(with_data)}
    )
    return [tuple(row) for row in result]


class StoreView:
    """The store as of one point of its history: every event up to `position` and the
    projection rows written with them, read in one read-only transaction, so a writer that
    commits meanwhile changes nothing this view shows."""

    def __init__(self, connection: AsyncConnection, position: int) -> None:
        self.connection = connection
        """Reads the projection tables as of the same point (only inside the `view()` block)."""
        self.position = position
        """The last event stored at that point (0: none)."""

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Up to `limit` events with position greater than `after_position`, in global order."""
        return await _read_all(self.connection, after_position, limit)

    async def read_compact(
        self, after_position: int, limit: int, with_data: Collection[str]
    ) -> list[CompactEvent]:
        """As `SqlEventStore.read_compact`, as of this view."""
        return await _read_compact(self.connection, after_position, limit, with_data)


class SqlEventStore(EventStore):
    """The event store on one SQL database through an async SQLAlchemy engine."""

    _write_options: ClassVar[dict[str, Any]] = {}
    _view_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        ids = self._string_list("ids")
        self._select_stored_ids = select(events.c.event_id).where(
            events.c.event_id.in_(select(ids.c.value))
        )
        streams = self._string_list("streams")
        # A correlated max() per stream is one descent of the (stream_id, stream_version) index;
        # GROUP BY over an IN list would scan every event of each stream.
        self._select_versions = select(
            streams.c.value,
            select(func.max(events.c.stream_version))
            .where(events.c.stream_id == streams.c.value)
            .scalar_subquery(),
        )

    @property
    def engine(self) -> AsyncEngine:
        """The engine, for projections that read their own tables."""
        return self._engine

    @abstractmethod
    def _string_list(self, name: str) -> TableValuedAlias:
        """A FROM clause with one column `value` listing the strings bound to `name`."""

    async def _serialise_writers(self, connection: AsyncConnection) -> None:
        """Wait, inside the new write transaction, until no other writer holds the store."""

    @asynccontextmanager
    async def _write_transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as connection:
            await connection.execution_options(**self._write_options)
            async with connection.begin():
                await self._serialise_writers(connection)
                yield connection

    @asynccontextmanager
    async def write_transaction(self) -> AsyncIterator[AsyncConnection]:
        """A transaction holding the store's write lock, so no append runs beside it: for work
        on the projections as a whole, such as rebuilding them."""
        async with self._write_transaction() as connection:
            yield connection

    @asynccontextmanager
    async def view(self) -> AsyncIterator[StoreView]:
        """One consistent point of the history, for audits and replays of a live store: what
        the view reads, events and projections alike, is as of the last commit before it
        began, whatever writers commit while it is open."""
        async with self._engine.connect() as connection:
            await connection.execution_options(**self._view_options)
            async with connection.begin():
                # The first read fixes the transaction's snapshot (SQLite and PostgreSQL).
                position = (await connection.execute(_LAST_POSITION)).scalar_one()
                yield StoreView(connection, int(position))

    async def initialise(self, migrate: Callable[[Connection], None]) -> None:
        """Bring the database to the schema `migrate` makes (the wiring's migrations), in one
        transaction under the store's write lock."""
        # Under the write lock (an advisory lock on PostgreSQL, BEGIN IMMEDIATE on SQLite), so
        # processes starting at once migrate one after another: the later ones find the schema
        # current. Both databases change their schema inside a transaction, so a failed
        # migration leaves nothing half done.
        async with self._write_transaction() as connection:
            await connection.run_sync(migrate)

    async def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected_versions: Mapping[str, int] | None = None,
        offsets: Mapping[OffsetKey, int] | None = None,
        projector: Projector | None = None,
    ) -> list[StoredEvent]:
        """Append in one transaction and return the events newly stored.

        A stream whose events in this batch were all stored already is a retried append that
        committed before: its expected version is not checked again, so the retry is a no-op.
        """
        if not events and not offsets and not expected_versions:
            return []
        expected = expected_versions or {}
        async with self._write_transaction() as connection:
            fresh = await self._drop_stored(connection, events)
            fresh_streams = {e.stream_id for e in fresh}
            retried = {e.stream_id for e in events} - fresh_streams
            checked = {s: v for s, v in expected.items() if s not in retried}
            versions = await self._versions(connection, fresh_streams | checked.keys())
            self._check_expected(checked, versions)
            stored = await self._insert_events(connection, fresh, versions)
            if offsets:
                await _UPSERT_OFFSETS.execute(
                    connection,
                    [
                        {"consumer": c, "topic": t, "partition": p, "next_offset": n}
                        for (c, t, p), n in offsets.items()
                    ],
                )
            if projector is not None and stored:
                await projector(connection, stored)
        return stored

    async def _drop_stored(
        self, connection: AsyncConnection, batch: Sequence[NewEvent]
    ) -> list[NewEvent]:
        """The batch without events already stored, and without repeats of an id within it."""
        first: dict[str, NewEvent] = {}
        for e in batch:
            first.setdefault(e.event_id, e)
        unique = list(first.values())
        if not unique:
            return unique
        result = await connection.execute(
            self._select_stored_ids, {"ids": [e.event_id for e in unique]}
        )
        stored = set(result.scalars())
        if not stored:
            return unique
        return [e for e in unique if e.event_id not in stored]

    async def _versions(self, connection: AsyncConnection, streams: set[str]) -> dict[str, int]:
        if not streams:
            return {}
        result = await connection.execute(self._select_versions, {"streams": list(streams)})
        return {stream: version or 0 for stream, version in result}

    @staticmethod
    def _check_expected(expected: Mapping[str, int], versions: Mapping[str, int]) -> None:
        mismatches = [
            f"stream {stream!r} is at version {versions[stream]}, expected {version}"
            for stream, version in sorted(expected.items())
            if versions[stream] != version
        ]
        if mismatches:
            raise ConcurrencyError("; ".join(mismatches))

    async def _insert_events(
        self, connection: AsyncConnection, fresh: list[NewEvent], versions: dict[str, int]
    ) -> list[StoredEvent]:
        if not fresh:
            return []
        numbered = []
        for e in fresh:
            version = versions[e.stream_id] + 1
            versions[e.stream_id] = version
            numbered.append(version)
        placed = await self._write_events(connection, fresh, numbered)
        stored = []
        last = 0
        for e, version, (position, recorded_at) in zip(fresh, numbered, placed, strict=True):
            # A stream must read back in the order of its versions: refuse (and roll back)
            # positions out of batch order rather than store that.
            if position <= last:
                raise RuntimeError(f"positions not in batch order at event {e.event_id!r}")
            last = position
            stored.append(
                StoredEvent(
                    position,
                    e.stream_id,
                    version,
                    e.event_id,
                    e.type,
                    e.schema_version,
                    e.data,
                    e.metadata,
                    recorded_at,
                )
            )
        return stored

    async def _write_events(
        self, connection: AsyncConnection, fresh: list[NewEvent], versions: list[int]
    ) -> list[tuple[int, datetime]]:
        """Insert the events with their stream versions; each one's position and recorded
        time, in batch order."""
        rows = [
            {
                "stream_id": e.stream_id,
                "stream_version": version,
                "event_id": e.event_id,
                "type": e.type,
                "schema_version": e.schema_version,
                "data": e.data,
                "metadata": e.metadata,
            }
            for e, version in zip(fresh, versions, strict=True)
        ]
        result = await _INSERT_EVENTS.execute(connection, rows)
        if result is None:
            raise RuntimeError("the events insert returned no positions")
        # SQLite numbers the rows of a multi-row INSERT in VALUES order, which no document
        # promises: `_insert_events` refuses positions out of that order.
        returned = {row.event_id: (row.position, row.recorded_at) for row in result}
        return [returned[e.event_id] for e in fresh]

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[StoredEvent]:
        """Events of one stream from `from_version` on, in version order."""
        async with self._engine.connect() as connection:
            result = await connection.execute(
                _READ_STREAM, {"stream_id": stream_id, "from_version": from_version}
            )
            return [StoredEvent(*row) for row in result]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Up to `limit` events with position greater than `after_position`, in global order."""
        # Writers hold the store's write lock from taking their positions until they commit,
        # so rows become visible in position order and a tailing reader never skips one.
        async with self._engine.connect() as connection:
            return await _read_all(connection, after_position, limit)

    async def read_compact(
        self, after_position: int, limit: int, with_data: Collection[str]
    ) -> list[CompactEvent]:
        """Like `read_all`, but each event as (position, type, ts, data, partition): its JSON
        text for the types in `with_data`, else None, and the events-topic partition it was
        read from. The database extracts the log time and leaves the other rows' JSON unsent."""
        async with self._engine.connect() as connection:
            return await _read_compact(connection, after_position, limit, with_data)

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version, 0 if it has no events."""
        async with self._engine.connect() as connection:
            result = await connection.execute(_STREAM_VERSION, {"stream_id": stream_id})
            return int(result.scalar_one())

    async def consumer_offsets(self, consumer: str) -> dict[tuple[str, int], int]:
        """The stored next offset per (topic, partition) for `consumer`."""
        async with self._engine.connect() as connection:
            result = await connection.execute(_CONSUMER_OFFSETS, {"consumer": consumer})
            return {(topic, partition): offset for topic, partition, offset in result}

    async def close(self) -> None:
        """Release connections."""
        await self._engine.dispose()


_SQLITE_BEGIN = "sqlite_begin"


def _sqlite_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    # The driver's own transaction handling never emits BEGIN before a SELECT and cannot take
    # the write lock up front; switch it off and let _sqlite_begin emit BEGIN instead
    # (SQLAlchemy's documented SQLite transaction recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL: readers see the last commit without blocking the writer, nor it them.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql(connection.get_execution_options().get(_SQLITE_BEGIN, "BEGIN"))


@asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that writes tables beside the events (not the events themselves): on
    SQLite it takes the write lock as it begins, so it waits for another process's writer
    instead of failing when it first writes after reading."""
    async with engine.connect() as connection:
        await connection.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})
        async with connection.begin():
            yield connection


class SqliteEventStore(SqlEventStore):
    """The event store in one SQLite file, through aiosqlite, in WAL mode."""

    # BEGIN IMMEDIATE takes SQLite's single write lock when the transaction starts: writers in
    # other processes wait there (busy timeout) and positions are taken in commit order. A
    # view's plain BEGIN is a read transaction: in WAL mode it reads the database as of its
    # first SELECT until it ends, without blocking writers.
    _write_options: ClassVar[dict[str, Any]] = {_SQLITE_BEGIN: "BEGIN IMMEDIATE"}

    def __init__(
        self, url_or_path: str | os.PathLike[str], *, busy_timeout: float = 30.0, **engine: Any
    ) -> None:
        text_url = os.fspath(url_or_path)
        if text_url.startswith(("sqlite:", "sqlite+")):
            url = make_url(text_url).set(drivername="sqlite+aiosqlite")
        else:
            url = URL.create("sqlite+aiosqlite", database=text_url)
        async_engine = create_async_engine(
            url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={"timeout": busy_timeout},
            **engine,
        )
        event.listen(async_engine.sync_engine, "connect", _sqlite_connect)
        event.listen(async_engine.sync_engine, "begin", _sqlite_begin)
        # Writers of this process queue here instead of polling SQLite's busy handler.
        self._writer_lock = asyncio.Lock()
        super().__init__(async_engine)

    def _string_list(self, name: str) -> TableValuedAlias:
        return func.json_each(bindparam(name, type_=JSON)).table_valued("value")

    @asynccontextmanager
    async def _write_transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._writer_lock, super()._write_transaction() as connection:
            yield connection


# Key of the transaction-level advisory lock every writer of a database takes ("cxevents").
ADVISORY_LOCK_KEY = 0x6378_6576_656E_7473


class PostgresEventStore(SqlEventStore):
    """The event store in PostgreSQL, through asyncpg."""

    # A view reads one snapshot, taken at its first statement, for the whole transaction.
    _view_options: ClassVar[dict[str, Any]] = {
        "isolation_level": "REPEATABLE READ",
        "postgresql_readonly": True,
    }

    def __init__(self, url: str | URL, **engine: Any) -> None:
        async_engine = create_async_engine(
            make_url(url).set(drivername="postgresql+asyncpg"),
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            **engine,
        )
        self._lock = text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
        super().__init__(async_engine)

    def _string_list(self, name: str) -> TableValuedAlias:
        return (
            func.unnest(bindparam(name, type_=ARRAY(Text))).table_valued("value").render_derived()
        )

    async def _write_events(
        self, connection: AsyncConnection, fresh: list[NewEvent], versions: list[int]
    ) -> list[tuple[int, datetime]]:
        # The batch's positions are taken from the identity's sequence in one step, in batch
        # order, and the rows go in by COPY with them: it costs settlement about a third of
        # the CPU of an INSERT reading arrays and returning the positions. Writers hold the
        # advisory lock (`_serialise_writers`), so no other takes a number meanwhile (were
        # one to, a position taken twice fails the COPY on the primary key). recorded_at is
        # left to the column's default, the transaction's now(), which is also the time read
        # with the positions: encoding one timestamp a row cost about 4% of settlement's CPU.
        async with driven(connection, _COPY_EVENTS) as driver:
            last, recorded_at = await driver.fetchrow(_TAKE_POSITIONS, len(fresh))
            first = last - len(fresh) + 1
            records = [
                (
                    first + n,
                    e.stream_id,
                    version,
                    e.event_id,
                    e.type,
                    e.schema_version,
                    _json_dumps(e.data) if e.data_json is None else e.data_json,
                    _json_dumps(e.metadata),
                )
                for n, (e, version) in enumerate(zip(fresh, versions, strict=True))
            ]
            await driver.copy_records_to_table(
                events.name, records=records, columns=_COPIED_COLUMNS
            )
        return [(first + n, recorded_at) for n in range(len(fresh))]

    async def _serialise_writers(self, connection: AsyncConnection) -> None:
        # The known BIGSERIAL trap: identity values are taken at INSERT but become visible at
        # COMMIT, so with concurrent writers position 11 can commit before position 10, and a
        # reader that has seen 11 asks for "position > 11" and skips 10 for ever. One writer at
        # a time, holding this lock from before its INSERT until its COMMIT (a transaction-level
        # lock is released only after the commit is visible), makes positions visible in order.
        await connection.execute(self._lock)


def open_event_store(database_url: str) -> SqlEventStore:
    """Open the store for a sqlite+aiosqlite:/// or postgresql+asyncpg:// URL (not initialised)."""
    url = make_url(database_url)
    if url.drivername in {"sqlite", "sqlite+aiosqlite"}:
        return SqliteEventStore(database_url)
    if url.drivername in {"postgresql", "postgresql+asyncpg"}:
        return PostgresEventStore(url)
    raise ValueError(
        f"unsupported event store URL {url.render_as_string()!r}: "
        "use sqlite+aiosqlite:///path or postgresql+asyncpg://..."
    )
