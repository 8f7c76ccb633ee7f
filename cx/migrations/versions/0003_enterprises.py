"""Registered enterprises: the buyer's name and tax id (USCC) on invoices

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from cx.migrations.frozen import has_table

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    """Registered enterprises"""
    if has_table("enterprises"):
        return
    op.create_table(
        "enterprises",
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("uscc", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=True),
        sa.Column("city", sa.Text(), nullable=False),
        sa.Column("registered_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
