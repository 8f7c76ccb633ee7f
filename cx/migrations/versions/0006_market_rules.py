"""The market rules recorded with the history

A history is only consistent under the rules it was made with, so the first start records
them, one row per setting, and every later start, replay and audit compares its own with them
(`settlement.rules`). A database from before has no rows: its next start records the rules it
starts with, and says so.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from cx.migrations.frozen import now

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    """The market rules recorded with the history"""
    op.create_table(
        "market_rules",
        sa.Column("setting", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=now(), nullable=False),
        sa.PrimaryKeyConstraint("setting"),
    )
