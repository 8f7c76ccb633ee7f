"""Scratch databases for benchmarks and tests: created empty on the configured server, dropped
after."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import URL, make_url

DROP_ATTEMPTS = 60
"""Seconds to wait at most for autovacuum to leave a scratch database."""


def asyncpg_dsn(url: URL) -> str:
    """asyncpg's own DSN for a SQLAlchemy URL. SQLAlchemy names several servers (a primary and
    its standbys) as `?host=H1:P1&host=H2:P2`; asyncpg, like libpq, as `H1:P1,H2:P2` in place
    of the one host. Other query options (target_session_attrs) carry over."""
    plain = url.set(drivername="postgresql")
    hosts = url.query.get("host")
    if not isinstance(hosts, tuple):
        return plain.render_as_string(hide_password=False)
    text = plain.difference_update_query(["host"]).render_as_string(hide_password=False)
    scheme, _, rest = text.partition("://")
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority}{','.join(hosts)}{slash}{path}"


@asynccontextmanager
async def scratch_database(
    database_url: str, prefix: str = "bench"
) -> AsyncIterator[tuple[str, str]]:
    """A new, empty database named `PREFIX_...` on the server of `database_url`, as
    (SQLAlchemy URL, asyncpg DSN); dropped on the way out."""
    server = make_url(database_url)
    # asyncpg's own DSN has no "+asyncpg"; it runs each statement outside a transaction, as
    # CREATE and DROP DATABASE need.
    admin_dsn = asyncpg_dsn(server)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield (
            server.set(database=name).render_as_string(hide_password=False),
            asyncpg_dsn(server.set(database=name)),
        )
    finally:
        await _drop(admin_dsn, name)


async def _drop(admin_dsn: str, name: str) -> None:
    """Drop the database and end its sessions. An autovacuum worker may be busy with the
    tables a bench just loaded, and only a superuser may end one: wait until it is done."""
    for attempt in range(DROP_ATTEMPTS):
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except asyncpg.InsufficientPrivilegeError:
            if attempt == DROP_ATTEMPTS - 1:
                raise
        finally:
            await admin.close()
        await asyncio.sleep(1)
