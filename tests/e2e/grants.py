"""Registering enterprises and taking applications to a grant through the API, for tests."""

from __future__ import annotations

import hashlib
from typing import Any

from exchange.domain.uscc import with_check_character
from tests.e2e.harness import RunningExchange


def uscc_of(account: str, division: str = "330100") -> str:
    """A valid unified social credit code of the account's own (an enterprise, 91, of
    `division`), its organisation code derived from the account id."""
    serial = f"{int(hashlib.sha256(account.encode()).hexdigest(), 16) % 10**9:09d}"
    return with_check_character(f"91{division}{serial}")


async def register(
    exchange: RunningExchange, account: str, kind: str = "sme", city: str = "hangzhou"
) -> None:
    """Register the account's enterprise."""
    client = await exchange.as_(account)
    body = {"name": f"{account} 科技有限公司", "uscc": uscc_of(account), "kind": kind, "city": city}
    answer = await client.post(f"/v1/accounts/{account}/enterprise", json=body)
    assert answer.status_code == 201, answer.text


async def apply(
    exchange: RunningExchange, account: str, programme: str, amount: int, application_id: str
) -> Any:
    """The answer to the account's application."""
    client = await exchange.as_(account)
    body = {"application_id": application_id, "amount": amount, "intended_use": "推理 / inference"}
    return await client.post(f"/v1/programmes/{programme}/applications", json=body)


async def granted(
    exchange: RunningExchange,
    admin: str,
    programme: str,
    account: str,
    limit: int,
    *,
    kind: str = "sme",
    city: str = "hangzhou",
    related: tuple[str, ...] = (),
) -> None:
    """Register the account, apply for `limit` and have the administrator approve it."""
    await register(exchange, account, kind, city)
    application_id = f"{account}-{programme}"
    answer = await apply(exchange, account, programme, limit, application_id)
    assert answer.status_code == 201, answer.text
    approval = {"application_id": application_id, "limit": limit, "related_accounts": list(related)}
    client = await exchange.as_(admin, "programme_admin")
    approved = await client.post(f"/v1/programmes/{programme}/grants", json=approval)
    assert approved.status_code == 201, approved.text
