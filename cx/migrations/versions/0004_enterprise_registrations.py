"""Every enterprise registration of each account, the replaced ones included

Invoices name the buyer as registered when it bought, not as registered now. The rows are
folded from the `EnterpriseRegistered` events already stored, so a database that settled
registrations under 0003 invoices its past purchases as a rebuild of the projections would.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from cx.migrations.frozen import json_document

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    """Every enterprise registration of each account, the replaced ones included"""
    registrations = op.create_table(
        "enterprise_registrations",
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("uscc", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("city", sa.Text(), nullable=False),
        sa.Column("registered_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "position"),
    )
    op.create_index(
        "enterprise_registrations_ts_idx",
        "enterprise_registrations",
        ["account_id", "registered_ts"],
        unique=False,
    )
    events = sa.table(
        "events",
        sa.column("position", sa.BigInteger()),
        sa.column("type", sa.Text()),
        sa.column("data", json_document()),
    )
    stored = op.get_bind().execute(
        sa.select(events.c.position, events.c.data)
        .where(events.c.type == "EnterpriseRegistered")
        .order_by(events.c.position)
    )
    rows = [
        {
            "account_id": data["account_id"],
            "position": position,
            "name": data["name"],
            "uscc": data["uscc"],
            "kind": data["kind"],
            "city": data["city"],
            "registered_ts": data["ts"],
        }
        for position, data in stored
    ]
    if rows:
        op.bulk_insert(registrations, rows)
