"""The previous release's database (7f22bc2), as recorded: its schema and a history it settled.

`tests/fixtures/release-7f22bc2/` holds what that release's `create_all` made (its DDL for
PostgreSQL and SQLite, printed from its MetaData) and every row of a database it made and
settled through its own API and pipeline (two accounts, a trade, an order resting, a stall, API
keys), with the embedded log it ran on (topics `recorded.*`), so the upgrade path is tested on
what the release really wrote and the exchange goes on from where it stopped.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "release-7f22bc2"
PREFIX = "recorded"
"""The topic prefix the recorded history ran under."""


def copy_recorded_log(data_dir: Path) -> None:
    """Put the log the previous release ran on where an embedded exchange in `data_dir` finds
    it."""
    shutil.copytree(FIXTURES / "log", data_dir / "log")


def ddl(dialect: str) -> list[str]:
    """The statements the previous release's `create_all` ran on an empty database."""
    script = (FIXTURES / f"schema.{dialect}.sql").read_text()
    return [statement.strip() for statement in script.split(";") if statement.strip()]


def recorded_rows() -> dict[str, list[dict[str, Any]]]:
    """Every table's rows, as the previous release left them."""
    rows: dict[str, list[dict[str, Any]]] = json.loads((FIXTURES / "history.json").read_text())
    return rows


def _fill(connection: Connection) -> None:
    tables = MetaData()
    tables.reflect(connection)
    for name, rows in recorded_rows().items():
        if not rows:
            continue
        table = tables.tables[name]
        times = {c.name for c in table.columns if isinstance(c.type, DateTime)}
        connection.execute(
            table.insert(),
            [
                {k: datetime.fromisoformat(v) if k in times and v else v for k, v in row.items()}
                for row in rows
            ],
        )
    if connection.dialect.name == "postgresql":
        # Rows written with their positions leave the identity where it was; the release's
        # own appends had moved it past them.
        connection.execute(
            text(
                "SELECT setval(pg_get_serial_sequence('events', 'position'), "
                "(SELECT max(position) FROM events))"
            )
        )


async def create_previous_release(url: str, *, with_history: bool = True) -> None:
    """Make the previous release's schema at `url` (and, by default, fill it with the
    recorded history)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in ddl(engine.dialect.name):
                await connection.exec_driver_sql(statement)
            if with_history:
                await connection.run_sync(_fill)
    finally:
        await engine.dispose()


def schema_of(connection: Connection) -> dict[str, Any]:
    """What a database's tables are, as reflection sees them, to compare two databases."""
    inspector = inspect(connection)
    found: dict[str, Any] = {}
    for name in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        found[name] = {
            "columns": [
                (
                    c["name"],
                    str(c["type"]),
                    c["nullable"],
                    str(c.get("default")),
                    str(c.get("identity")),
                )
                for c in inspector.get_columns(name)
            ],
            "primary key": inspector.get_pk_constraint(name),
            "unique": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(name)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), i["unique"])
                for i in inspector.get_indexes(name)
            ),
        }
        if connection.dialect.name == "sqlite":
            sql = connection.execute(
                text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
                {"name": name},
            ).scalar_one()
            found[name]["sql"] = " ".join(sql.split())
    return found
