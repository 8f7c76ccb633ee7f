"""Who is calling, what they may do, and their request budget.

A key goes in `Authorization: Bearer cx_...`. Public market data needs none; a call without a
key is budgeted per client address, a call with one per key. Roles:

- `provider`, `buyer`: trade and read their own account only (providers also deposit capacity);
- `operator`: manages keys, reads any account, the event history and the trade reports;
- `programme_admin`: reads the trade reports (voucher programmes build on them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from api.keys import (
    PARTICIPANT_ROLES,
    KeyRing,
    KeyStore,
    Principal,
    Role,
    refuse_unknown_accounts,
)
from api.problems import DATABASE_RETRY_AFTER_S, Problem, chinese_words, database_unavailable
from api.ratelimit import RateLimiter, retry_after_header

PUBLIC_FACTOR = 5
"""Anonymous callers get this many times a key's budget, per client address."""

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key, `cx_...`, sent as `Authorization: Bearer cx_...`. "
    "`cx keys create --account ID --role ROLE` or POST /v1/admin/keys makes one.",
)


@dataclass
class Gate:
    """The key ring and the budgets of one app: per key, per address for anonymous calls, and
    per address for keys that failed to verify."""

    keyring: KeyRing
    per_key: RateLimiter
    per_address: RateLimiter
    failures: RateLimiter

    def charge(self, client: str, limiter: RateLimiter) -> None:
        """Take one request from a budget, or refuse with 429 and Retry-After."""
        wait = limiter.acquire(client)
        if wait is not None:
            raise _rate_limited(
                wait,
                f"more than {limiter.burst} requests at once or {limiter.rate:g} a second on "
                "average",
            )

    async def authenticate(self, connection: HTTPConnection, key: str) -> Principal:
        """The principal of a presented key, charged one request of its budget; 401 for a key
        that does not verify, charged to the address's budget of failures.

        Once that budget is spent, no key from the address is checked until it refills: every
        one is refused 429, so the answer says nothing of whether a guessed key is good.
        """
        address = f"address:{client_address(connection)}"
        wait = self.failures.spent(address)
        if wait is not None:
            raise _rate_limited(
                wait,
                f"more than {self.failures.burst} keys that failed to verify, or "
                f"{self.failures.rate:g} a second on average, came from this address: no key "
                "from it is checked until then",
            )
        try:
            principal = await self.keyring.verify(key)
        except Exception as error:
            if not database_unavailable(error):
                raise
            raise Problem(
                503,
                "database-unavailable",
                "the key could not be checked: the database cannot be reached now and this key "
                "was not verified recently; retry later",
                headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
            ) from error
        if principal is None:
            self.failures.acquire(address)
            raise Problem(
                401,
                "unauthorized",
                "the API key is unknown or revoked",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        self.charge(f"key:{principal.key_id}", self.per_key)
        return principal


def _rate_limited(wait_s: float, why: str) -> Problem:
    retry_after = retry_after_header(wait_s)
    return Problem(
        429,
        "rate-limited",
        f"{why}; retry after {retry_after} s",
        headers={"Retry-After": retry_after},
    )


def gate_of(connection: HTTPConnection) -> Gate:
    """The app's gate."""
    gate: Gate = connection.app.state.gate
    return gate


def client_address(connection: HTTPConnection) -> str:
    """The caller's address, for anonymous budgets."""
    return connection.client.host if connection.client else "unknown"


async def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal | None:
    """The key's principal, or None for an anonymous call; charges the right budget."""
    gate = gate_of(request)
    if credentials is None:
        gate.charge(f"address:{client_address(request)}", gate.per_address)
        return None
    return await gate.authenticate(request, credentials.credentials)


Caller = Annotated[Principal | None, Depends(caller)]


async def authenticated(principal: Caller) -> Principal:
    """A caller with a valid key."""
    if principal is None:
        raise Problem(
            401,
            "unauthorized",
            "this endpoint needs an API key: send Authorization: Bearer cx_...",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


_ROLE_ZH = chinese_words("role")
"""What a person reading a refusal calls each role, in Chinese: as the page does."""


def _article(word: str) -> str:
    """`a` or `an` before `word`, by its first letter."""
    return "an" if word[:1] in "aeiou" else "a"


def allow(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting only keys of these roles."""
    names = ", ".join(sorted(r.value for r in roles))
    names_zh = "、".join(_ROLE_ZH.get(name, name) for name in sorted(r.value for r in roles))

    async def check(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if principal.role not in roles:
            raise Problem(
                403,
                "forbidden",
                f"{_ROLE_ZH.get(principal.role.value, principal.role.value)}密钥无权执行此操作, "
                f"需要以下角色的密钥: {names_zh} / {_article(principal.role.value)} "
                f"{principal.role.value} key may not do this; it needs a key of role {names}",
            )
        return principal

    return check


Trader = Annotated[Principal, Depends(allow(*PARTICIPANT_ROLES))]
Reader = Annotated[Principal, Depends(allow(Role.PROVIDER, Role.BUYER, Role.OPERATOR))]
Operator = Annotated[Principal, Depends(allow(Role.OPERATOR))]
Auditor = Annotated[Principal, Depends(allow(Role.OPERATOR, Role.PROGRAMME_ADMIN))]
Provider = Annotated[Principal, Depends(allow(Role.PROVIDER))]


def account_of(principal: Principal, requested: str | None) -> str:
    """The account a participant acts on: its own; operators may name any account.

    A participant that names another account is refused rather than silently redirected, so a
    client with a wrong key learns it at once.
    """
    if principal.role is Role.OPERATOR:
        if requested is None:
            raise Problem(422, "invalid-request", "an operator must name the account_id")
        return requested
    if requested is not None and requested != principal.account_id:
        raise Problem(
            403,
            "account-mismatch",
            f"此密钥属于账户 {principal.account_id!r}, 不是 {requested!r} / this key belongs to "
            f"account {principal.account_id!r}, not {requested!r}",
        )
    return principal.account_id


async def account_acted_on(principal: Principal, requested: str, keys: KeyStore) -> str:
    """`account_of` for a command that changes the account: an operator's to an account no
    key was ever made for is refused (404 `unknown-account`) instead of acting on nobody."""
    account = account_of(principal, requested)
    if principal.role is Role.OPERATOR:
        await refuse_unknown_accounts(keys, [account])
    return account


def document_optional_keys(document: dict[str, Any]) -> None:
    """Say in the OpenAPI document that public operations take a key but need none.

    FastAPI lists the bearer scheme as required wherever `Caller` reads it; an operation that
    never refuses a caller for its role or account (no 403: public market data, health) gets
    `security: [{}, ApiKey]`, OpenAPI's way of saying "optional", so clients and API tools do
    not think they must send a key. Such operations still document 401: a key that is sent
    must be live.
    """
    for item in document.get("paths", {}).values():
        for spec in item.values():
            if (
                isinstance(spec, dict)
                and spec.get("security")
                and "403" not in spec.get("responses", {})
            ):
                spec["security"] = [{}, *spec["security"]]
