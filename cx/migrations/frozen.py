"""What the revisions share, frozen as it was when they were written (so a later change of the
application's tables cannot change what an old revision does)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql


def now() -> sa.TextClause:
    """The server default of a time column: the current time in UTC (`settlement.schema`'s
    `utc_now` as each database spells it; SQLite's keeps milliseconds and an offset)."""
    if op.get_bind().dialect.name == "postgresql":
        return sa.text("now()")
    return sa.text("(strftime('%Y-%m-%d %H:%M:%f+00:00', 'now'))")


def json_document() -> sa.types.TypeEngine[Any]:
    """JSON on SQLite, JSONB on PostgreSQL."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def has_table(name: str) -> bool:
    """Whether the database has the table `name`."""
    return sa.inspect(op.get_bind()).has_table(name)
