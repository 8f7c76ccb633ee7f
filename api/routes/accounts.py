"""An account's own state and money: who the key is, fills, balances, cash and capacity
deposits, and what it sold. (Withdrawals, capacity schedules and invoices are `api.bank`'s.)"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from api.auth import Reader, account_acted_on, account_of, authenticated
from api.deps import (
    CommandsDep,
    IdempotencyKey,
    IdempotentDep,
    KeysDep,
    LedgerDep,
    MarketDep,
    listed_or_422,
)
from api.idempotency import Answer, Named, derived_id, fingerprint, problem_body, respond
from api.keys import Principal, Role
from api.marketdata import deposit_key
from api.models import (
    AccountOut,
    CapacityDeposit,
    CashDeposit,
    DepositAnswer,
    DepositRequest,
    Fill,
    Me,
    Obligation,
)
from api.problems import Problem, problems
from api.services import Commands
from exchange.domain.messages import (
    CapacityDeposited,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    FundsDeposited,
    Identifier,
    RejectReason,
)

identity = APIRouter(prefix="/v1", tags=["accounts"], responses=problems(401, 403, 429))
"""`/v1/me`, a router of its own: the OpenAPI document has always listed it before the orders
and the rest of the accounts' endpoints after them, and clients generated from it keep that."""
router = APIRouter(prefix="/v1", tags=["accounts"], responses=problems(401, 403, 429))


@identity.get("/me", summary="The account and role of the presented key")
async def me(principal: Annotated[Principal, Depends(authenticated)]) -> Me:
    return Me(key_id=principal.key_id, account_id=principal.account_id, role=principal.role)


@router.get("/fills", summary="The account's fills, newest first")
async def fills(
    principal: Reader,
    market: MarketDep,
    ledger: LedgerDep,
    account_id: Annotated[Identifier | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Fill]:
    account = account_of(principal, account_id)
    rows = await ledger.account_fills(account, limit)
    return [Fill(**r, price_per_std=market.per_std(r["symbol"], r["price"])) for r in rows]


@router.get(
    "/accounts/{account_id}",
    summary="Cash, capacity and positions of the account",
    responses=problems(404),
)
async def account(
    account_id: Identifier, principal: Reader, ledger: LedgerDep, market: MarketDep
) -> AccountOut:
    account_of(principal, account_id)
    found = await ledger.account_summary(account_id)
    if found is None:
        raise Problem(404, "unknown-account", f"account {account_id!r} has no settled history")
    # Unsold capacity stays on the books after its gate, but can then be neither sold nor
    # withdrawn: each row says which, at the latest log time.
    capacity = [{**row, **market.capacity_state(row["symbol"])} for row in found["capacity"]]
    return AccountOut(**{**found, "capacity": capacity})


async def deposit(
    commands: Commands, command: DepositFunds | DepositCapacity, named: bool
) -> Answer:
    """Send a deposit and answer what the risk stage decided."""
    key = deposit_key(command.account_id, command.deposit_id)
    outcome = await commands.submit_and_wait(command, key)
    if outcome is None:
        body = {"deposit_id": command.deposit_id, "status": "pending"}
        return Answer(202, body, pending=True)
    if isinstance(outcome, DepositRejected):
        if named and outcome.reason is RejectReason.DUPLICATE_DEPOSIT_ID:
            # The account's own name, reserved for this request: an earlier send of it was
            # credited.
            body = {"deposit_id": command.deposit_id, "status": "deposited"}
            return Answer(201, body, replayed=True)
        body = problem_body(
            422, outcome.reason.value, outcome.message, deposit_id=command.deposit_id
        )
        return Answer(422, body)
    if not isinstance(outcome, FundsDeposited | CapacityDeposited):
        raise Problem(409, "unexpected-outcome", f"deposit {command.deposit_id!r}: {outcome.type}")
    return Answer(201, {"deposit_id": command.deposit_id, "status": "deposited"})


@router.post(
    "/accounts/{account_id}/deposits",
    status_code=201,
    response_model=DepositAnswer,
    summary="Deposit cash (fen) or sellable capacity (units of a contract)",
    description="Participants deposit into their own account; only providers deposit "
    "capacity. A `deposit_id` or an `Idempotency-Key` header makes a retry return the "
    "first answer; the same name with a different deposit is refused "
    "(`idempotency-key-reused`), even while the first is pending.",
    responses=problems(404, 422),
)
async def post_deposit(
    account_id: Identifier,
    request: DepositRequest,
    principal: Reader,
    market: MarketDep,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    keys: KeysDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    account = await account_acted_on(principal, account_id, keys)
    if isinstance(request, CapacityDeposit) and principal.role not in (
        Role.PROVIDER,
        Role.OPERATOR,
    ):
        raise Problem(403, "forbidden", "only providers deposit capacity")
    if request.deposit_id is not None:
        deposit_id = request.deposit_id
    elif idempotency_key is not None:
        deposit_id = derived_id("deposit", account, idempotency_key)
    else:
        deposit_id = f"d-{uuid.uuid4().hex}"
    named: Named | None = None
    if idempotency_key is not None or request.deposit_id is not None:
        names = [f"deposit-id:{deposit_id}"]
        if idempotency_key is not None:
            names.append(f"deposit-key:{idempotency_key}")
        named = Named(
            tuple(names),
            fingerprint("POST", f"/v1/accounts/{account}/deposits", request.model_dump()),
            # Where earlier versions of the API kept answers of deposits named by a key.
            legacy=() if idempotency_key is None else (f"deposit:{idempotency_key}",),
        )
    if isinstance(request, CapacityDeposit):
        symbol = request.symbol
        await idempotent.checked(account, named, lambda: listed_or_422(market, symbol))
    command: DepositFunds | DepositCapacity
    if isinstance(request, CashDeposit):
        command = DepositFunds(deposit_id=deposit_id, account_id=account, amount=request.amount)
    else:
        command = DepositCapacity(
            deposit_id=deposit_id,
            account_id=account,
            symbol=request.symbol,
            quantity=request.quantity,
        )
    if named is None:
        return respond(await deposit(commands, command, named=False), replayed=False)
    return await idempotent.run(account, named, lambda: deposit(commands, command, named=True))


@router.get(
    "/obligations",
    summary="What the account sold per contract: units to deliver and payouts",
)
async def obligations(
    principal: Reader,
    market: MarketDep,
    ledger: LedgerDep,
    account_id: Annotated[Identifier | None, Query()] = None,
) -> list[Obligation]:
    account = account_of(principal, account_id)
    result = []
    for row in await ledger.sold(account):
        spec = market.spec(row["symbol"])
        start = None if spec is None else spec.delivery_start.isoformat()
        result.append(Obligation(delivery_start=start, **row))
    return result
