"""Idempotent requests: a retried POST returns the original answer instead of acting twice.

A request names itself with a client order id, a `deposit_id` or an `Idempotency-Key` header.
Two things make a retry safe:

1. The command's id on the wire is derived from (account, client's name), so a retry sends the
   same `order_id` and the risk stage refuses it as a duplicate if the first one was accepted:
   no second order, even after an API restart or from another API process.
2. The first answer is kept in the `idempotent_requests` table (registered on the event store's
   metadata) and a retry gets it back, with the header `Idempotent-Replayed: true`. A request
   that is still in flight in this process is awaited rather than sent again. When no answer
   was kept (the API stopped between sending and answering), the API answers from the settled
   order or from the duplicate refusal.

Reusing a name for a different request is refused (`idempotency-key-reused`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import BigInteger, Column, Integer, PrimaryKeyConstraint, Table, Text, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from settlement.schema import metadata

idempotent_requests = Table(
    "idempotent_requests",
    metadata,
    Column("account_id", Text, nullable=False),
    Column("request_key", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("account_id", "request_key", name="idempotent_requests_pkey"),
)


@dataclass(frozen=True, slots=True)
class Answer:
    """A response to give again: its status, JSON body and the request it answered."""

    status_code: int
    body: dict[str, Any]
    fingerprint: str = ""
    replayed: bool = False
    """True when the answer describes an order a previous request placed."""


def derived_id(kind: str, account_id: str, name: str) -> str:
    """The wire id (order or deposit) of a request an account named `name`: stable, 42 chars."""
    digest = hashlib.sha256(f"{kind}\n{account_id}\n{name}".encode()).hexdigest()
    return f"{kind[0]}-{digest[:40]}"


def fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    """A digest of what a request asks for, to tell a retry from a different request."""
    canonical = orjson.dumps(
        {"method": method, "path": path, "body": body}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()


async def recall(engine: AsyncEngine, account_id: str, request_key: str) -> Answer | None:
    """The kept answer to a named request, if any."""
    query = select(idempotent_requests).where(
        (idempotent_requests.c.account_id == account_id)
        & (idempotent_requests.c.request_key == request_key)
    )
    async with engine.connect() as connection:
        row = (await connection.execute(query)).first()
    if row is None:
        return None
    return Answer(row.status_code, orjson.loads(row.body), row.fingerprint)


async def remember(
    engine: AsyncEngine, account_id: str, request_key: str, answer: Answer, now_ms: int
) -> None:
    """Keep an answer; the first one kept for a name wins."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(idempotent_requests)
        .values(
            account_id=account_id,
            request_key=request_key,
            fingerprint=answer.fingerprint,
            status_code=answer.status_code,
            body=orjson.dumps(answer.body).decode(),
            created_ms=now_ms,
        )
        .on_conflict_do_nothing()
    )
    async with engine.connect() as connection:
        await connection.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        async with connection.begin():
            await connection.execute(statement)
