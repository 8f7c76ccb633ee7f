"""API keys: one or more per participant account, each with a role; only a hash is stored.

A key reads `cx_<key id>_<secret>`: the key id names the key in listings and revocations, the
secret is 32 random bytes (URL-safe base64). The table keeps the SHA-256 of the whole key, which
is enough for a secret of that entropy (a slow password hash protects guessable secrets, which
these are not); a presented key is checked by looking up its id and comparing hashes in constant
time. The key itself is shown once, when it is created, and never logged.

The table is on the API's metadata (`api/schema.py`), in the event store's database; the
migrations create it on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Column, DateTime, Index, Row, Table, Text, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from api.problems import DatabaseUnavailable, Problem, database_unavailable
from api.schema import metadata
from exchange.domain.accounts import SYSTEM_ACCOUNTS
from settlement.schema import utc_now

log = logging.getLogger(__name__)

KEY_PREFIX = "cx_"
AUTH_CACHE_S = 5.0
"""How long a verified key is trusted without asking the database again (a key revoked by
another process, e.g. `cx keys revoke`, stops working within this time)."""
AUTH_OUTAGE_S = 60.0
"""How long after its last check a key is still trusted while the database cannot be asked
(a key revoked elsewhere just before an outage works at most this long)."""
KEY_CHECK_TIMEOUT_S = 2.0
"""How long a key check waits for the database before treating it as unavailable."""
LAPSED_BATCH = 500
"""Keys asked about in one query when checking the keys of open streams."""
DOWN_RETRY_S = 1.0
"""After the database failed a key check, how long checks use what is cached without asking
it again (so an outage does not cost every request a failed connection)."""

_KEY = re.compile(r"^cx_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")


class Role(StrEnum):
    """What a key may do."""

    PROVIDER = "provider"
    BUYER = "buyer"
    OPERATOR = "operator"
    PROGRAMME_ADMIN = "programme_admin"


PARTICIPANT_ROLES = frozenset({Role.PROVIDER, Role.BUYER})

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("key_hash", Text, nullable=False),
    Column("account_id", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("label", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=utc_now()),
    Column("revoked_at", DateTime(timezone=True)),
    Index("api_keys_account_idx", "account_id"),
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified key speaks for."""

    key_id: str
    account_id: str
    role: Role


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listed: everything but the secret."""

    key_id: str
    account_id: str
    role: Role
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created; `key` is shown this once."""

    key: str
    info: KeyInfo


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key as stored: whose it is, its role, its secret's digest and whether it is revoked."""

    key_id: str
    account_id: str
    role: str
    key_hash: str
    revoked: bool


class RoleConflict(Exception):
    """The account already has live keys of another role."""


class ReservedAccount(Exception):
    """The account id names one of the exchange's own ledger accounts (`SYSTEM_ACCOUNTS`)."""

    def __init__(self, account_id: str) -> None:
        super().__init__(
            f"账户名 {account_id!r} 为交易所保留 (系统账户 {', '.join(sorted(SYSTEM_ACCOUNTS))}), "
            f"请另选账户名 the account id {account_id!r} is reserved for the exchange's own "
            "ledger; choose another"
        )


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@asynccontextmanager
async def writing_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    # On SQLite take the write lock when the transaction starts (the event store's own
    # execution option, see settlement.sql_store): a deferred transaction that reads and then
    # writes could fail at once instead of waiting for another process's writer.
    async with engine.connect() as connection:
        await connection.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        async with connection.begin():
            yield connection


def _info(row: Row[Any]) -> KeyInfo:
    return KeyInfo(
        key_id=row.key_id,
        account_id=row.account_id,
        role=Role(row.role),
        label=row.label,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


async def create_key(
    engine: AsyncEngine, account_id: str, role: Role, label: str | None = None
) -> NewKey:
    """Create a key for an account; raises ReservedAccount for one of the exchange's own
    accounts, RoleConflict if its live keys have another role."""
    if account_id in SYSTEM_ACCOUNTS:
        raise ReservedAccount(account_id)
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    async with writing_transaction(engine) as connection:
        roles = (
            await connection.execute(
                select(api_keys.c.role)
                .where(api_keys.c.account_id == account_id)
                .where(api_keys.c.revoked_at.is_(None))
                .distinct()
            )
        ).scalars()
        other = sorted(set(roles) - {role.value})
        if other:
            raise RoleConflict(
                f"account {account_id!r} has live keys of role {other[0]!r}; "
                f"revoke them before giving it role {role.value!r}"
            )
        await connection.execute(
            api_keys.insert().values(
                key_id=key_id,
                key_hash=_hash(key),
                account_id=account_id,
                role=role.value,
                label=label,
            )
        )
        row = (await connection.execute(select(api_keys).where(api_keys.c.key_id == key_id))).one()
    return NewKey(key, _info(row))


async def revoke_key(engine: AsyncEngine, key_id: str) -> KeyInfo | None:
    """Revoke a key (idempotent); None if there is no such key."""
    async with writing_transaction(engine) as connection:
        await connection.execute(
            update(api_keys)
            .where(api_keys.c.key_id == key_id)
            .where(api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utc_now())
        )
        row = (
            await connection.execute(select(api_keys).where(api_keys.c.key_id == key_id))
        ).first()
    return None if row is None else _info(row)


def _stored(row: Row[Any]) -> StoredKey:
    return StoredKey(row.key_id, row.account_id, row.role, row.key_hash, row.revoked_at is not None)


async def stored_keys(
    engine: AsyncEngine, key_ids: Sequence[str], live_only: bool = False
) -> list[StoredKey]:
    """The stored keys of these ids (only the unrevoked with `live_only`)."""
    query = select(api_keys).where(api_keys.c.key_id.in_(key_ids))
    if live_only:
        query = query.where(api_keys.c.revoked_at.is_(None))
    async with engine.connect() as connection:
        return [_stored(row) for row in await connection.execute(query)]


async def list_keys(
    engine: AsyncEngine, account_id: str | None = None, include_revoked: bool = False
) -> list[KeyInfo]:
    """Keys, oldest first, optionally of one account."""
    query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
    if account_id is not None:
        query = query.where(api_keys.c.account_id == account_id)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    async with engine.connect() as connection:
        return [_info(row) for row in await connection.execute(query)]


@dataclass(frozen=True, slots=True)
class _Verified:
    """A key the database confirmed live, and when (monotonic seconds)."""

    at: float
    key_hash: str
    principal: Principal


class KeyStore(Protocol):
    """The API keys: created, listed and revoked by operators, read to verify callers."""

    async def create_key(self, account_id: str, role: Role, label: str | None) -> NewKey:
        """A new key; RoleConflict if the account's live keys have another role."""

    async def list_keys(self, account_id: str | None, include_revoked: bool) -> list[KeyInfo]:
        """Keys, oldest first, optionally of one account."""

    async def revoke_key(self, key_id: str) -> KeyInfo | None:
        """Revoke a key (idempotent); None if there is no such key."""

    async def stored_keys(self, key_ids: Sequence[str], live_only: bool) -> list[StoredKey]:
        """The stored keys of these ids (only the unrevoked with `live_only`)."""


async def refuse_unknown_accounts(
    keys: KeyStore, account_ids: Collection[str], status: int = 404, field: str | None = None
) -> None:
    """Refuse (`unknown-account`) an operator's command to accounts the exchange never gave a
    key: an account exists once a key is made for it (a revoked key's account still does), so
    limits, concessions or deposits under a mistyped id would land on nobody and the operator
    would be told they were done."""
    for account_id in sorted(set(account_ids)):
        if not await keys.list_keys(account_id, include_revoked=True):
            extra: dict[str, Any] = {} if field is None else {"field": field}
            raise Problem(
                status,
                "unknown-account",
                f"没有账户 {account_id!r}, 从未为它创建 API 密钥 / there is no account "
                f"{account_id!r} (no API key was ever made for it); nothing was changed",
                **extra,
            )


class KeyRing:
    """Verifies presented keys, remembering good ones for a few seconds, and for longer while
    the database cannot be asked."""

    def __init__(
        self, keys: KeyStore, cache_s: float = AUTH_CACHE_S, outage_s: float = AUTH_OUTAGE_S
    ) -> None:
        self.keys = keys
        self.cache_s = cache_s
        self.outage_s = max(outage_s, cache_s)
        self._cache: dict[str, _Verified] = {}
        self._down_until = 0.0

    async def verify(self, key: str) -> Principal | None:
        """The principal of a live key; None for a malformed, unknown or revoked one.

        While the database cannot be asked, a key confirmed within `outage_s` still verifies;
        any other raises DatabaseUnavailable (or the database's own error).
        """
        match = _KEY.match(key)
        if match is None:
            return None
        key_id, presented = match["key_id"], _hash(key)
        cached = self._cache.get(key_id)
        now = time.monotonic()
        if cached is not None and now - cached.at < self.cache_s:
            return cached.principal if hmac.compare_digest(cached.key_hash, presented) else None
        try:
            row = await self._row(key_id, now)
        except Exception as error:
            if not database_unavailable(error):
                raise
            if cached is None or now - cached.at >= self.outage_s:
                raise
            if not hmac.compare_digest(cached.key_hash, presented):
                return None
            return cached.principal
        if row is None or row.revoked:
            self._cache.pop(key_id, None)
            return None
        if not hmac.compare_digest(row.key_hash, presented):
            return None
        principal = Principal(key_id, row.account_id, Role(row.role))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = _Verified(now, row.key_hash, principal)
        return principal

    async def lapsed(self, key_ids: Collection[str]) -> tuple[set[str], set[str]]:
        """Of `key_ids`, those revoked (or deleted) in the database, and, while it cannot be
        asked, those not confirmed within `outage_s`; the others count as confirmed now."""
        now = time.monotonic()
        wanted = sorted(key_ids)
        rows: list[StoredKey] = []
        try:
            for start in range(0, len(wanted), LAPSED_BATCH):
                rows.extend(await self._rows(wanted[start : start + LAPSED_BATCH], True, now))
        except Exception as error:
            if not database_unavailable(error):
                raise
            unconfirmed = {
                key_id
                for key_id in wanted
                if (cached := self._cache.get(key_id)) is None or now - cached.at >= self.outage_s
            }
            return set(), unconfirmed
        for row in rows:
            principal = Principal(row.key_id, row.account_id, Role(row.role))
            self._cache[row.key_id] = _Verified(now, row.key_hash, principal)
        revoked = set(wanted) - {row.key_id for row in rows}
        for key_id in revoked:
            self._cache.pop(key_id, None)
        return revoked, set()

    async def _row(self, key_id: str, now: float) -> StoredKey | None:
        """The stored key; DatabaseUnavailable (or the database's error) if it cannot be read."""
        rows = await self._rows([key_id], False, now)
        return rows[0] if rows else None

    async def _rows(self, key_ids: list[str], live_only: bool, now: float) -> list[StoredKey]:
        """The stored keys of these ids, or DatabaseUnavailable (or the database's error);
        after a failure the database is not asked for DOWN_RETRY_S."""
        if now < self._down_until:
            raise DatabaseUnavailable("the database failed a key check a moment ago")
        try:
            async with asyncio.timeout(KEY_CHECK_TIMEOUT_S):
                return await self.keys.stored_keys(key_ids, live_only)
        except Exception as error:
            if database_unavailable(error):
                self._down_until = time.monotonic() + DOWN_RETRY_S
                log.warning("key check: the database is unavailable: %s", error)
            raise

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache (after revoking it in this process)."""
        self._cache.pop(key_id, None)
