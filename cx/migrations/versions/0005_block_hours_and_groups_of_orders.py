"""Each settled block's hourly contracts and the exclusive group it is an alternative of

A block was settled with its family as `symbol` and no hours, and an exclusive group's id named
no row: the API could neither say which hours a block covers nor find a group's alternatives.
The columns are filled from the `BlockAccepted` events already stored, so a database that
settled blocks before shows them as a rebuild of the projections would.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from cx.migrations.frozen import json_document

revision = "0005"
down_revision = "0004"

BATCH = 1_000
"""Blocks updated by one statement."""


def upgrade() -> None:
    """Each settled block's hourly contracts and the exclusive group it is an alternative of"""
    op.add_column("orders", sa.Column("symbols", sa.Text(), nullable=True))
    op.add_column("orders", sa.Column("group_id", sa.Text(), nullable=True))
    op.create_index("orders_group_idx", "orders", ["group_id"], unique=False)
    events = sa.table(
        "events",
        sa.column("position", sa.BigInteger()),
        sa.column("type", sa.Text()),
        sa.column("data", json_document()),
    )
    orders = sa.table(
        "orders",
        sa.column("order_id", sa.Text()),
        sa.column("symbols", sa.Text()),
        sa.column("group_id", sa.Text()),
    )
    update = (
        sa.update(orders)
        .where(orders.c.order_id == sa.bindparam("block_id"))
        .values(symbols=sa.bindparam("block_symbols"), group_id=sa.bindparam("block_group"))
    )
    connection = op.get_bind()
    stored = connection.execute(
        sa.select(events.c.data).where(events.c.type == "BlockAccepted").order_by(events.c.position)
    ).all()
    batch: list[dict[str, str | None]] = []
    for (data,) in stored:
        batch.append(
            {
                "block_id": data["order_id"],
                "block_symbols": ",".join(data["symbols"]),
                "block_group": data.get("group"),
            }
        )
        if len(batch) == BATCH:
            connection.execute(update, batch)
            batch = []
    if batch:
        connection.execute(update, batch)
