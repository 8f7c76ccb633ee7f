"""Idempotent requests: a retried POST returns the original answer instead of acting twice.

A request names itself with a client id (`client_order_id`, `deposit_id`, `withdrawal_id`, ...)
or an `Idempotency-Key` header. Names belong to the account that sends them. Three things
make a retry safe:

1. Every id the exchange knows the request's objects by is derived from (account, name): the
   risk stage scopes every order id and every deposit and request id by its account, so a
   retry sends the same ids and is refused as a duplicate if the first send was accepted (no
   second order, even after an API restart or from another API process), and two accounts'
   names never meet.
2. Before anything is sent, the request's names are reserved in the `idempotent_requests`
   table (the API's, in the event store's database) with the request's fingerprint: every name
   the request carries, and every name the API derives from them (an order's, each hourly
   deposit of a capacity schedule, ...). A name reserved by a different request of the
   account is refused (`idempotency-key-reused`), also while the first is still pending, across
   API processes and restarts. So a duplicate refusal from the exchange can only answer a
   true retry of the same request, and is answered "already done".
3. The first final answer is kept on the reserved names and a retry gets it back, with the
   header `Idempotent-Replayed: true`. A refusal whose cause passes with time (metering before
   the delivery hour, ... `PASSES_WITH_TIME`) is not final: a retry is decided afresh. A
   request still in flight in this process is awaited rather than sent again; a pending one
   (the exchange had not decided in time) is sent again by its retry, which the exchange then
   refuses as a duplicate or decides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from fastapi.responses import JSONResponse
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
)

from api.problems import PROBLEM, Problem, problem_title
from api.schema import metadata
from settlement.statements import in_yuan

REPLAYED = "Idempotent-Replayed"
IDENTIFIER_LENGTH = 64
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]+")
"""What `exchange.domain.messages.Identifier` allows."""
UNANSWERED = 202
"""The status of a reserved name whose request has no final answer yet."""
Checked = TypeVar("Checked")

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
"""One row per name an account reserved: the fingerprint of the request it names and, once
there is one, the request's final answer (status UNANSWERED until then)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A response to give again: its status, JSON body and the request it answered."""

    status_code: int
    body: dict[str, Any]
    fingerprint: str = ""
    replayed: bool = False
    """True when the answer describes what a previous request did."""
    pending: bool = False
    """True when the exchange had not decided yet: not a final answer, so not kept."""

    @property
    def final(self) -> bool:
        """True for the answer a retry gets back: decided, and not a refusal whose cause
        passes with time (`PASSES_WITH_TIME`)."""
        return not self.pending and not passes_with_time(self.status_code, self.body)


PASSES_WITH_TIME = frozenset(
    {
        "no_obligation",  # before the delivery hour: the obligation exists from its start
        "bundle_not_started",  # before the token bundle's period
        "gate_closed",  # decided by the time it was sent: a retry is decided by its own
        "in_auction",  # until the auction's result is applied
    }
)
"""The refusals whose cause is the moment the request came, not the request: such an answer
is not kept under the request's names, so a retry (the same body, once the hour began or the
auction ended) is decided afresh. The names stay reserved for the request all the same: the
name with another body is still refused."""


def passes_with_time(status_code: int, body: dict[str, Any]) -> bool:
    """True for a refusal whose cause passes with time (`PASSES_WITH_TIME`)."""
    code = str(body.get("type", "")).removeprefix("/problems/")
    return status_code == 422 and code in PASSES_WITH_TIME


@dataclass(frozen=True, slots=True)
class Named:
    """A request's names in its account's scope and what it asks for.

    The first name stands for the request (concurrent retries in one process wait for it);
    `legacy` are names an earlier version of the API kept answers under, read but never
    written."""

    names: tuple[str, ...]
    fingerprint: str
    legacy: tuple[str, ...] = ()


class NameReused(Exception):
    """A name of the request is reserved for a different request of the account."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def derived_id(kind: str, account_id: str, name: str) -> str:
    """The wire id (deposit, need) of a request an account named `name`: stable, 42 chars."""
    digest = hashlib.sha256(f"{kind}\n{account_id}\n{name}".encode()).hexdigest()
    return f"{kind[0]}-{digest[:40]}"


def key_name(idempotency_key: str, length: int = IDENTIFIER_LENGTH) -> str:
    """The id (an `Identifier` of at most `length` characters) a request named by an
    `Idempotency-Key` is sent as: `key:KEY`, or `key:` and up to 40 hex digits of the key's
    SHA-256 for a key no such identifier can hold."""
    name = f"key:{idempotency_key}"
    if len(name) <= length and _IDENTIFIER.fullmatch(name):
        return name
    digits = min(40, length - len("key:"))
    return f"key:{hashlib.sha256(idempotency_key.encode()).hexdigest()[:digits]}"


def own_name(
    own_id: str | None, idempotency_key: str | None, length: int = IDENTIFIER_LENGTH
) -> str | None:
    """The name the sender gave a request: its own id, else its `Idempotency-Key`'s
    (`key_name`); None if it gave neither (the request is not idempotent)."""
    if own_id is not None:
        return own_id
    if idempotency_key is not None:
        return key_name(idempotency_key, length)
    return None


def fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    """A digest of what a request asks for, to tell a retry from a different request."""
    canonical = orjson.dumps(
        {"method": method, "path": path, "body": body}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()


def problem_body(status: int, kind: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The problem+json document of an answer to keep."""
    return {
        "type": f"/problems/{kind}",
        "title": problem_title(kind),
        "status": status,
        "detail": in_yuan(detail),
        **extra,
    }


def respond(answer: Answer, replayed: bool) -> JSONResponse:
    """The HTTP response of an answer (problem+json for an error)."""
    headers = {REPLAYED: "true"} if replayed else {}
    media = PROBLEM if answer.status_code >= 400 else "application/json"
    return JSONResponse(answer.body, answer.status_code, headers=headers, media_type=media)


def _reused(name: str) -> Problem:
    return Problem(
        422,
        "idempotency-key-reused",
        f"{name.partition(':')[2]!r} already named a different request of this account; use "
        "a new name (client id or Idempotency-Key)",
    )


class RequestStore(Protocol):
    """The names idempotent requests reserved, and their kept answers."""

    async def reserve(self, account_id: str, request: Named, now_ms: int) -> Answer | None:
        """Reserve the request's names; the final answer a retry finds kept, or None to go
        ahead; NameReused if a name names another request of the account."""

    async def reused(self, account_id: str, request: Named) -> str | None:
        """A name of the request that another request of the account holds, or None (reading
        only)."""

    async def keep(self, account_id: str, request: Named, answer: Answer) -> None:
        """Keep a final answer on the request's names; the first one kept wins (over none,
        or a refusal that passes with time, kept by an earlier version of the API)."""


class Idempotent:
    """Runs a named request at most once per account; retries get the first answer."""

    def __init__(self, requests: RequestStore) -> None:
        self.requests = requests
        self._inflight: dict[tuple[str, str], tuple[str, asyncio.Future[Answer]]] = {}

    async def refuse_reused(self, account_id: str, request: Named) -> None:
        """Raise the `idempotency-key-reused` problem if a name of the request names another
        request of the account. A route asks this before it refuses a named request for its
        body, so a changed retry is told it reused a name; it only reads, so the refused
        request reserves nothing (and a request the body does not refuse meets the same check
        in `run`, without this read)."""
        inflight = self._inflight.get((account_id, request.names[0]))
        if inflight is not None and inflight[0] != request.fingerprint:
            raise _reused(request.names[0])
        taken = await self.requests.reused(account_id, request)
        if taken is not None:
            raise _reused(taken)

    async def checked(
        self, account_id: str, request: Named | None, check: Callable[[], Checked]
    ) -> Checked:
        """What `check` makes of a request's body. When it refuses the body (a `Problem`), a
        named `request` one of whose names another request of the account holds is refused
        for that first (`refuse_reused`): a changed retry learns it reused a name, whatever
        else is wrong with it. Only a refused body costs the read: a request that passes
        meets the same check when `run` reserves its names."""
        try:
            return check()
        except Problem:
            if request is not None:
                await self.refuse_reused(account_id, request)
            raise

    async def run(
        self, account_id: str, request: Named, action: Callable[[], Awaitable[Answer]]
    ) -> JSONResponse:
        """Answer the request: from a kept answer, by waiting for the same request in flight
        here, or by acting (once its names are reserved)."""
        first_name = request.names[0]
        inflight = self._inflight.get((account_id, first_name))
        if inflight is not None:
            first_print, first = inflight
            if first_print != request.fingerprint:
                raise _reused(first_name)
            return respond(await asyncio.shield(first), replayed=True)
        # Registered before the first await, so a concurrent retry waits for this one.
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._inflight[(account_id, first_name)] = (request.fingerprint, future)
        try:
            try:
                kept = await self.requests.reserve(account_id, request, _now_ms())
            except NameReused as reused:
                raise _reused(reused.name) from None
            if kept is not None and kept.final:
                future.set_result(kept)
                return respond(kept, replayed=True)
            # New, undecided, or refused for a cause that passes with time (kept so by an
            # earlier version of the API): decided now.
            answer = dataclasses.replace(await action(), fingerprint=request.fingerprint)
            if answer.final:
                await self.requests.keep(account_id, request, answer)
            future.set_result(answer)
            return respond(answer, replayed=answer.replayed)
        except BaseException as error:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._inflight[(account_id, first_name)]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
