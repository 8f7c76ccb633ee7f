"""Tables of the event store: events, consumer offsets (and settlement's stalled partitions).

The projections, the snapshots and the API keep their tables in MetaData of their own; the
wiring combines them all for the migrations (`cx/migrations`), which alone make the schema.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Identity,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

metadata = MetaData()
"""The event store's tables (`settlement.stalled` adds the stalled partitions)."""


class utc_now(FunctionElement[Any]):
    """The current time in UTC, as the column default of `recorded_at`."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(utc_now)
def _utc_now_default(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utc_now, "postgresql")
def _utc_now_postgresql(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "now()"


@compiles(utc_now, "sqlite")
def _utc_now_sqlite(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    # CURRENT_TIMESTAMP has whole seconds and no zone; this text has milliseconds and an
    # explicit offset, so datetime.fromisoformat reads it back as an aware UTC time.
    return "(strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))"


JsonDocument = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

events = Table(
    "events",
    metadata,
    # INTEGER (not BIGINT) on SQLite so the column aliases the rowid; AUTOINCREMENT there never
    # hands out a position again, so positions only grow.
    Column(
        "position",
        BigInteger().with_variant(Integer(), "sqlite"),
        Identity(always=False),
        primary_key=True,
    ),
    Column("stream_id", Text, nullable=False),
    Column("stream_version", BigInteger, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("data", JsonDocument, nullable=False),
    Column("metadata", JsonDocument, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=utc_now()),
    # The unique index on (stream_id, stream_version) also serves lookups by stream_id alone
    # (its leading column), so a separate stream_id index would only slow every insert.
    UniqueConstraint("stream_id", "stream_version", name="events_stream_version_key"),
    UniqueConstraint("event_id", name="events_event_id_key"),
    sqlite_autoincrement=True,
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("consumer", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("next_offset", BigInteger, nullable=False),
    PrimaryKeyConstraint("consumer", "topic", "partition", name="consumer_offsets_pkey"),
)

market_rules = Table(
    "market_rules",
    metadata,
    Column("setting", Text, primary_key=True),
    # JSON text: a setting that is off (no gate closure, no day-ahead auction) is `null`,
    # which a JSON column would keep as SQL's NULL on one database and JSON's on the other.
    Column("value", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=utc_now()),
)
"""The market rules the history was made under, one row per setting
(`Catalogue.rules_record`): written when a setting is first met, never changed after
(`settlement.rules`)."""
