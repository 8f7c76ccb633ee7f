"""The exchange's database schema, made and changed only by these Alembic migrations.

Each owner keeps its tables in MetaData of its own: the event store (`settlement.schema`, with
settlement's stalled partitions), the projections (`settlement.projections`), the snapshots
(`settlement.snapshots`) and the API (`api.schema`). They share one database, so the wiring
combines them here, the one layer that may import both the API and settlement; the revisions in
`versions/` take a database from the previous release's schema (the baseline) to what the
combined MetaData describes, and a test checks that autogenerate finds nothing left to do.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, inspect
from sqlalchemy.engine import Connection

SCRIPT_LOCATION = Path(__file__).resolve().parent
BASELINE = "0001"
"""The revision whose schema is the one the previous release (7f22bc2) created."""

TABLE_MODULES = (
    "settlement.schema",
    "settlement.stalled",
    "settlement.projections",
    "settlement.snapshots",
    "api.keys",
    "api.idempotency",
    "api.needs",
    "api.stalls",
)
"""Every module that defines tables: importing them fills the MetaData below."""

OWNERS = (
    "settlement.schema",
    "settlement.projections",
    "settlement.snapshots",
    "api.schema",
)
"""The modules whose `metadata` is one owner's tables."""


def combined_metadata() -> list[MetaData]:
    """The MetaData of every owner, each holding all its tables."""
    for name in TABLE_MODULES:
        importlib.import_module(name)
    return [importlib.import_module(name).metadata for name in OWNERS]


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for these migrations, running on `connection` when given."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision: the schema of this release."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:
        raise RuntimeError(f"no migrations in {SCRIPT_LOCATION / 'versions'}")
    return revision


def made_by_previous_release(connection: Connection) -> bool:
    """Whether the database holds the previous release's schema without Alembic's record of
    it: that release made the event store's tables and the rest in one `create_all`, and
    never an `alembic_version` table."""
    tables = set(inspect(connection).get_table_names())
    return "events" in tables and "alembic_version" not in tables


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None when no migration ever ran on it)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(connection: Connection) -> None:
    """Migrate the database on `connection` to head, within the caller's transaction; a
    database the previous release made is first stamped at the baseline it already has."""
    config = alembic_config(connection)
    if made_by_previous_release(connection):
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")


def write_revision(message: str) -> None:
    """Write a new revision with what autogenerate finds between the tables and a scratch
    SQLite database migrated to head (read and edit it before committing)."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{Path(scratch) / 'head.sqlite3'}")
        try:
            with engine.begin() as connection:
                upgrade_to_head(connection)
            with engine.begin() as connection:
                command.revision(
                    alembic_config(connection),
                    message,
                    autogenerate=True,
                    rev_id=f"{int(head()) + 1:04d}",
                )
        finally:
            engine.dispose()
