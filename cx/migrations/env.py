"""Alembic's environment: the combined MetaData of every owner, on the connection given."""

from __future__ import annotations

from alembic import context

from cx.migrations import combined_metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the migrations run on a connection the exchange gives them: use `cx init` "
        "(or `make migration MESSAGE=...` to write a new revision), not the alembic command"
    )
context.configure(
    connection=connection,
    target_metadata=combined_metadata(),
    # SQLite changes a column only by rebuilding its table, which batch operations do.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
