"""From the previous release to this one: recalls, stalled partitions, stalls per provider,
auction trades without an aggressor

Each step checks what it changes first, so a database made by a build between the two
releases (by `create_all`, with some of these tables already current) is brought up too.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from cx.migrations.frozen import has_table, now

revision = "0002"
down_revision = "0001"

STALL_COLUMNS = (
    "account_id, stall_id, resource_class, region, hours, sla_tier, max_interruptions, "
    "network, description, updated_at"
)


def upgrade() -> None:
    """From the previous release to this one"""
    _delivery_recalls()
    _stalled_partitions()
    _stalls_per_provider()
    _auction_trades_without_aggressor()


def _delivery_recalls() -> None:
    """Recalled units per holder, apart from the pair's obligation row in `deliveries`."""
    if has_table("delivery_recalls"):
        return
    op.create_table(
        "delivery_recalls",
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("provider_id", sa.Text(), nullable=False),
        sa.Column("buyer_id", sa.Text(), nullable=False),
        sa.Column("recall_id", sa.Text(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("refund", sa.BigInteger(), nullable=False),
        sa.Column("bond", sa.BigInteger(), nullable=False),
        sa.Column("penalty", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("symbol", "provider_id", "buyer_id", "recall_id"),
    )
    op.create_index("delivery_recalls_buyer_idx", "delivery_recalls", ["buyer_id", "symbol"])


def _stalled_partitions() -> None:
    """Where settlement stopped at an event it cannot apply."""
    if has_table("stalled_partitions"):
        return
    op.create_table(
        "stalled_partitions",
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=True),
        sa.Column("event_type", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("since_ms", sa.BigInteger(), nullable=False),
        sa.Column("retried_ms", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("set_aside_by", sa.Text(), nullable=True),
        sa.Column("set_aside_reason", sa.Text(), nullable=True),
        sa.Column("resolved_ms", sa.BigInteger(), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint(
            "stage", "topic", "partition", "offset", name="stalled_partitions_pkey"
        ),
    )


def _stalls_per_provider() -> None:
    """`provider_stalls`, keyed by (provider, stall id), takes over the rows of `stalls`,
    keyed by the stall id alone (which let one provider's id shut every other one out)."""
    if not has_table("provider_stalls"):
        op.create_table(
            "provider_stalls",
            sa.Column("account_id", sa.Text(), nullable=False),
            sa.Column("stall_id", sa.Text(), nullable=False),
            sa.Column("resource_class", sa.Text(), nullable=False),
            sa.Column("region", sa.Text(), nullable=False),
            sa.Column("hours", sa.JSON(), nullable=False),
            sa.Column("sla_tier", sa.Text(), nullable=False),
            sa.Column("max_interruptions", sa.Integer(), nullable=False),
            sa.Column("network", sa.Text(), nullable=True),
            sa.Column("description", sa.Text(), nullable=False),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=now(), nullable=False
            ),
            sa.PrimaryKeyConstraint("account_id", "stall_id"),
        )
        op.create_index(
            "provider_stalls_family_idx", "provider_stalls", ["resource_class", "region"]
        )
    if has_table("stalls"):
        op.execute(
            f"INSERT INTO provider_stalls ({STALL_COLUMNS}) SELECT {STALL_COLUMNS} FROM stalls"
        )
        op.drop_table("stalls")


def _auction_trades_without_aggressor() -> None:
    """`trades.aggressor` nullable: a call auction's trades have no aggressor (settlement
    stopped at the first of them)."""
    columns = sa.inspect(op.get_bind()).get_columns("trades")
    if next(c for c in columns if c["name"] == "aggressor")["nullable"]:
        return
    # On SQLite the batch rebuilds the table (and its index), the only way it changes a column.
    with op.batch_alter_table("trades") as batch:
        batch.alter_column("aggressor", existing_type=sa.Text(), nullable=True)
