"""The compute bank and voucher endpoints: withdrawals, scheduled capacity deposits, delivery
metering and disputes, voucher programmes and grants, invoices and programme reports.

Each request becomes one command (or, for a capacity schedule, one per delivery hour) sent
through the log like any order; the answer waits for the pipeline's decision and turns a
refusal into a problem+json with the stable reason.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from api.auth import Operator, Provider, Reader, account_acted_on, account_of, allow
from api.deps import (
    CommandsDep,
    IdempotencyKey,
    IdempotentDep,
    KeysDep,
    LedgerDep,
    MarketDep,
)
from api.idempotency import (
    Answer,
    Idempotent,
    Named,
    fingerprint,
    own_name,
    problem_body,
    respond,
)
from api.keys import Principal, Role, refuse_unknown_accounts
from api.marketdata import MarketData, Outcome, deposit_key, order_key, request_key
from api.ports import Ledger
from api.problems import Problem, chinese_first, problems
from api.services import Commands
from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    INTERRUPTIBLE_SUFFIX,
    REGIONS,
    RESOURCE_CLASSES,
    Catalogue,
    ContractSpec,
)
from exchange.domain.delivery import bundle_period
from exchange.domain.messages import (
    ApplyForGrant,
    ApproveGrant,
    CreateProgramme,
    DepositCapacity,
    DepositRejected,
    DisputeDelivery,
    EnterpriseKind,
    FundDiscountPool,
    GrantConcession,
    Identifier,
    LedgerPart,
    OrderRejected,
    PlaceOrder,
    RecallCapacity,
    RegisteredKind,
    RegisterEnterprise,
    RejectApplication,
    RejectReason,
    ReportMetering,
    RequestApplicationInfo,
    RequestRejected,
    ResolveDispute,
    SetVoucherPolicy,
    SupplementApplication,
    Symbol,
    WithdrawCapacity,
    WithdrawFunds,
    exchange_order_id,
)
from exchange.domain.risk import Request, request_id, requester
from settlement import documents, reports

ProgrammeAdmin = Annotated[Principal, Depends(allow(Role.PROGRAMME_ADMIN))]
ProgrammeReader = Annotated[Principal, Depends(allow(Role.PROGRAMME_ADMIN, Role.OPERATOR))]
Buyer = Annotated[Principal, Depends(allow(Role.BUYER))]
PositiveInt = Annotated[StrictInt, Field(gt=0, le=10**15)]
Hour = Annotated[StrictInt, Field(ge=0, le=24)]
GZ0 = "H100-80G.GZ.20271201T00"


def _example(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


class Withdrawal(BaseModel):
    """Pay cash out (`amount` fen) or take unsold capacity back (`quantity` of `symbol`)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"kind": "cash", "amount": 50_000}]}
    )

    kind: Literal["cash", "capacity"]
    amount: PositiveInt | None = None
    symbol: Symbol | None = None
    quantity: PositiveInt | None = None
    withdrawal_id: Identifier | None = None


SCHEDULE_NAME_LENGTH = 32
"""The longest name of a capacity schedule: each hour's `NAME:SYMBOL` is an identifier."""


class CapacitySchedule(BaseModel):
    """Idle capacity on a schedule: `quantity` cards of a class in a region, every day from
    `first_day` for `days` days, in the delivery hours from `from_hour` to `to_hour` (China
    Standard Time, `to_hour` exclusive; 0-8 is the night). `recallable` deposits trade in the
    class's interruptible books (`CLASS-INT`). With `reserve_price` each hour also gets a
    standing ask at that price (fen per unit)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "resource_class": "H100-80G",
                    "region": "GZ",
                    "quantity": 8,
                    "first_day": "2027-12-01",
                    "days": 1,
                    "from_hour": 0,
                    "to_hour": 2,
                    "reserve_price": 1_800,
                }
            ]
        },
    )

    resource_class: str
    region: str
    quantity: PositiveInt
    first_day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    days: Annotated[StrictInt, Field(ge=1, le=31)] = 1
    from_hour: Hour = 0
    to_hour: Hour = 8
    recallable: StrictBool = False
    reserve_price: PositiveInt | None = None
    deposit_id: (
        Annotated[
            str,
            Field(min_length=1, max_length=SCHEDULE_NAME_LENGTH, pattern=r"^[A-Za-z0-9_.:-]+$"),
        ]
        | None
    ) = Field(
        default=None,
        description="Names the schedule: a retry returns the first answer. At most 32 "
        "characters, so that each hour's `DEPOSIT_ID:SYMBOL` is an identifier.",
    )


class RefusedAsk(BaseModel):
    """A schedule's standing ask that the risk stage refused, and why."""

    order_id: str
    reason: str
    detail: str


class ScheduledDeposit(BaseModel):
    """What a capacity schedule deposited: one deposit (and ask) per delivery hour. `asks` are
    the order ids of the asks that stand (the risk stage accepted them); `pending` (HTTP 202)
    if the exchange had not decided every deposit and ask within 5 s: `contracts` are then the
    hours sent, some of whose deposits may be undecided yet, and `pending_asks` the asks not
    decided yet, which are not in `asks` (each one's fate: `GET /v1/orders/{order_id}`, or a
    retry of a named schedule)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "deposit_id": "night-1",
                    "contracts": [GZ0],
                    "asks": [exchange_order_id("gz-dc-1", f"night-1:{GZ0}")],
                    "status": "done",
                }
            ]
        }
    )

    deposit_id: str
    contracts: list[str]
    asks: list[str]
    refused_asks: list[RefusedAsk] = []
    """Asks the risk stage refused (the capacity of their hours is deposited all the same)."""
    pending_asks: list[str] = []
    """Asks not decided within the wait: neither standing nor refused yet."""
    status: Literal["done", "pending"] = "done"


class Metering(BaseModel):
    """A provider's report of what it delivered to one buyer in one contract: the units of an
    hour delivered (`delivered`), or the tokens a token bundle's holder used since the last
    report (`tokens`: integer tokens, not millions), paid at once."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"symbol": GZ0, "buyer_id": "sme-1", "delivered": 4},
                {
                    "symbol": "TOK-QWEN.YRD.M202712",
                    "buyer_id": "sme-1",
                    "tokens": 1_250_000,
                    "report_id": "qwen-2027-12-01",
                },
            ]
        },
    )

    symbol: Symbol
    buyer_id: Identifier
    delivered: Annotated[StrictInt | None, Field(ge=0, le=10**15)] = None
    tokens: Annotated[StrictInt | None, Field(ge=0, le=10**15)] = None
    report_id: Identifier | None = None


class Dispute(BaseModel):
    """A buyer's dispute of a provider's metering, within the delivery window."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"symbol": GZ0, "provider_id": "gz-dc-1", "reason": "job never ran"}]
        },
    )

    symbol: Symbol
    provider_id: Identifier
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    dispute_id: Identifier | None = None


class Recall(BaseModel):
    """Recall sold units of a recallable deposit (an interruptible `-INT` contract)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"symbol": "H100-80G-INT.GZ.20271201T00", "quantity": 2, "reason": "maintenance"}
            ]
        },
    )

    symbol: Symbol
    quantity: PositiveInt
    reason: Annotated[str, Field(max_length=500)] = ""
    recall_id: Identifier | None = None


class Resolution(BaseModel):
    """An operator's finding on a disputed delivery: how much was delivered, and why."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "symbol": GZ0,
                    "provider_id": "gz-dc-1",
                    "buyer_id": "sme-1",
                    "delivered": 3,
                    "reason": "node logs show 3 card-hours",
                }
            ]
        },
    )

    symbol: Symbol
    provider_id: Identifier
    buyer_id: Identifier
    delivered: Annotated[StrictInt, Field(ge=0, le=10**15)]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class ProgrammeRequest(BaseModel):
    """A compute-voucher programme (see the `CreateProgramme` command)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "programme_id": "hangzhou-2027",
                    "issuer": "Hangzhou",
                    "budget": 25_000_000_000,
                    "rate_bps": 3_000,
                    "cap_per_contract": 1_000_000,
                    "cap_per_enterprise": 20_000_000,
                    "regions": ["YRD"],
                    "kinds": ["sme", "opc"],
                    "cities": ["hangzhou"],
                    "valid_from": 1_798_761_600_000,
                    "valid_until": 1_830_297_600_000,
                }
            ]
        },
    )

    programme_id: LedgerPart
    issuer: Annotated[str, Field(min_length=1, max_length=200)]
    budget: PositiveInt
    rate_bps: Annotated[StrictInt, Field(gt=0, le=10_000)] = 3_000
    cap_per_contract: PositiveInt
    cap_per_enterprise: PositiveInt
    classes: list[Identifier] = Field(default_factory=list, max_length=64)
    regions: list[Identifier] = Field(default_factory=list, max_length=16)
    kinds: list[EnterpriseKind] = Field(default=["sme", "opc"], min_length=1, max_length=4)
    cities: list[Identifier] = Field(default_factory=list, max_length=64)
    valid_from: Annotated[StrictInt, Field(ge=0)]
    valid_until: Annotated[StrictInt, Field(ge=0)]


class GrantRequest(BaseModel):
    """The approval of a pending application: a grant of `limit` fen to the enterprise that
    applied (its kind and city are those it registered)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "application_id": "hz-0001",
                    "limit": 500_000,
                    "related_accounts": ["sme-hangzhou-1-parent"],
                }
            ]
        },
    )

    application_id: Identifier = Field(
        description="The application approved: one grant each (approving it again is refused "
        "as `application_not_pending`)."
    )
    limit: PositiveInt
    related_accounts: list[Identifier] = Field(default_factory=list, max_length=100)
    request_id: Identifier | None = Field(
        default=None, description="Makes the request idempotent: a retry gets the first answer."
    )


class EnterpriseRequest(BaseModel):
    """The enterprise behind the account: its name, unified social credit code (统一社会信用代码),
    kind and city. Registering again replaces the registration."""

    model_config = _example(
        {
            "name": "杭州算力科技有限公司",
            "uscc": "91330100716105852F",
            "kind": "sme",
            "city": "hangzhou",
        }
    )

    name: Annotated[str, Field(min_length=1, max_length=200)]
    uscc: Annotated[str, Field(min_length=1, max_length=64)]
    kind: RegisteredKind
    city: Identifier


class ApplicationRequest(BaseModel):
    """An application for a grant of `amount` fen (算力券申领), by the registered enterprise."""

    model_config = _example(
        {
            "application_id": "hz-0001",
            "amount": 500_000,
            "intended_use": "微调客服模型 / fine-tuning a customer-service model",
        }
    )

    application_id: Identifier | None = Field(
        default=None,
        description="The application's id in the programme (default: a new id); a retry "
        "with the same id applies once.",
    )
    amount: PositiveInt
    intended_use: Annotated[str, Field(min_length=1, max_length=2_000)]


class InfoRequest(BaseModel):
    """The administrator's question to the applicant."""

    model_config = _example({"question": "每月需要多少 GPU 小时 / GPU hours a month?"})

    question: Annotated[str, Field(min_length=1, max_length=2_000)]
    request_id: Identifier | None = Field(
        default=None, description="Makes the request idempotent (one question each)."
    )


class Supplement(BaseModel):
    """The applicant's answer to the administrator's question."""

    model_config = _example({"answer": "约 400 小时 / About 400 hours."})

    answer: Annotated[str, Field(min_length=1, max_length=2_000)]
    request_id: Identifier | None = Field(
        default=None, description="Makes the request idempotent (one answer each)."
    )


class Rejection(BaseModel):
    """Why the administrator rejects the application."""

    model_config = _example({"reason": "注册地不在杭州 / not registered in Hangzhou"})

    reason: Annotated[str, Field(min_length=1, max_length=2_000)]
    request_id: Identifier | None = Field(
        default=None, description="Makes the request idempotent: a retry gets the first answer."
    )


class VoucherPolicyRequest(BaseModel):
    """The platform's ceilings on every programme (see `SetVoucherPolicy`)."""

    model_config = _example(
        {
            "max_rate_bps": 3_000,
            "max_cap_per_enterprise": 500_000_000,
            "kinds": ["sme", "opc"],
            "cities": [],
            "reason": "2027 policy",
        }
    )

    max_rate_bps: Annotated[StrictInt, Field(gt=0, le=10_000)]
    max_cap_per_enterprise: PositiveInt
    kinds: Annotated[list[RegisteredKind], Field(min_length=1, max_length=3)]
    cities: list[Identifier] = Field(default_factory=list, max_length=64)
    reason: Annotated[str, Field(max_length=500)] = ""


class Enterprise(BaseModel):
    """A registered enterprise."""

    account_id: str
    name: str
    uscc: str
    kind: str
    city: str
    registered_ts: int


class GrantApplication(BaseModel):
    """An application for a grant and where it stands: `pending`, `info_requested` (see
    `question`), `approved` (`granted` fen) or `rejected` (see `reason`)."""

    programme_id: str
    application_id: str
    account_id: str
    name: str
    uscc: str
    kind: str
    city: str
    amount: int
    intended_use: str
    status: str
    question: str | None
    answer: str | None
    reason: str | None
    granted: int | None
    submitted_ts: int
    updated_ts: int


class ConcessionRequest(BaseModel):
    """A fee concession for a class of participants: each account named gets its own budget."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "concession_id": "sme-2027",
                    "account_ids": ["sme-hangzhou-1", "opc-ningbo-7"],
                    "discount_bps": 5_000,
                    "budget_per_account": 100_000,
                    "valid_from": 1_798_761_600_000,
                    "valid_until": 1_830_297_600_000,
                    "reason": "SME fee relief, 2027",
                }
            ]
        },
    )

    concession_id: LedgerPart
    account_ids: Annotated[list[Identifier], Field(min_length=1, max_length=200)]
    discount_bps: Annotated[StrictInt, Field(gt=0, le=10_000)]
    budget_per_account: PositiveInt
    valid_from: Annotated[StrictInt, Field(ge=0, le=10**15)]
    valid_until: Annotated[StrictInt, Field(ge=0, le=10**15)]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class DiscountPoolRequest(BaseModel):
    """Money the platform sets aside for a programme's grant holders: its share of their bill."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"pool_id": "hz-2027-platform", "discount_bps": 500, "budget": 5_000_000}]
        },
    )

    pool_id: Identifier
    discount_bps: Annotated[StrictInt, Field(gt=0, le=10_000)]
    budget: PositiveInt


class RequestAnswer(BaseModel):
    """The pipeline accepted the request."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"request": "WithdrawFunds", "id": "w-1", "status": "done"}]
        }
    )

    request: str
    id: str
    status: Literal["done", "pending"]


class Delivery(BaseModel):
    """A delivery obligation provider -> buyer and where it stands."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "symbol": GZ0,
                    "provider_id": "gz-dc-1",
                    "buyer_id": "sme-1",
                    "quantity": 4,
                    "amount": 7_200,
                    "bond": 720,
                    "fee": 0,
                    "window_ends": 1_827_604_800_000,
                    "status": "settled",
                    "delivered": 3,
                    "paid": 5_400,
                    "refund": 1_800,
                    "penalty": 180,
                    "resolved_by": None,
                    "updated_ts": 1_827_604_800_001,
                }
            ]
        }
    )

    symbol: Symbol
    provider_id: str
    buyer_id: str
    quantity: int
    amount: int
    bond: int
    fee: int
    window_ends: int
    status: Literal["owed", "metered", "drawing", "disputed", "settled", "recalled"]
    """`drawing`: a token bundle being drawn down by metering."""
    delivered: int | None
    """Units delivered; of a token bundle, tokens used."""
    paid: int | None
    refund: int | None
    penalty: int | None
    resolved_by: str | None
    updated_ts: int
    recall_id: str | None = None
    """The provider's recall that took these units back before their delivery hour."""


def _recalled(row: Mapping[str, Any]) -> Delivery:
    """A recall's settlement of one holder's units as a delivery: nothing delivered, the
    escrow refunded (`amount` = `refund`) and `penalty` the compensation from the bond."""
    return Delivery(
        symbol=row["symbol"],
        provider_id=row["provider_id"],
        buyer_id=row["buyer_id"],
        quantity=row["quantity"],
        amount=row["refund"],
        bond=row["bond"],
        fee=0,
        window_ends=row["updated_ts"],
        status="recalled",
        delivered=0,
        paid=0,
        refund=row["refund"],
        penalty=row["penalty"],
        resolved_by=None,
        updated_ts=row["updated_ts"],
        recall_id=row["recall_id"],
    )


router = APIRouter(prefix="/v1", responses=problems(401, 403, 429))
"""The bank's and the vouchers' endpoints; operators' and programme administrators' commands
go out under the API's seal, which the risk stage verifies."""


async def decision(commands: Commands, command: Request, named: bool) -> Answer:
    """Send a request and answer what the exchange decided (`pending` after 5 s)."""
    kind, sent_as = command.type, request_id(command)
    outcome = await commands.submit_and_wait(
        command, request_key(kind, requester(command), sent_as)
    )
    done = {"request": kind, "id": sent_as, "status": "done"}
    if outcome is None:
        return Answer(201, {**done, "status": "pending"}, pending=True)
    if isinstance(outcome, RequestRejected):
        if named and outcome.reason is RejectReason.DUPLICATE_ID:
            # The sender's own id, reserved for this request: an earlier send was done.
            return Answer(201, done, replayed=True)
        body = problem_body(422, outcome.reason.value, outcome.message, request_id=sent_as)
        return Answer(422, body)
    return Answer(201, done)


async def decide(
    commands: Commands,
    idempotent: Idempotent,
    command: Request,
    given: bool = False,
    path: str = "",
    request: BaseModel | None = None,
    name: str = "",
    idempotency_key: str | None = None,
) -> JSONResponse:
    """Answer a request; one the sender `given` a name (its own id, or an `Idempotency-Key`
    the id is made from: `own_name`) is idempotent: a retry gets the first answer, and the
    same name for a different request is refused. `name` names it when its command's id does
    not (a step an application may take more than once)."""
    if not given or request is None:
        return respond(await decision(commands, command, named=False), replayed=False)
    # One name for both kinds of withdrawal: an id names one withdrawal.
    kind = "withdrawal" if isinstance(command, WithdrawFunds | WithdrawCapacity) else command.type
    named = request_named(kind, request_id(command), path, request, name, idempotency_key)
    return await idempotent.run(
        requester(command), named, lambda: decision(commands, command, named=True)
    )


def request_named(
    kind: str,
    sent_as: str,
    path: str,
    request: BaseModel,
    name: str = "",
    idempotency_key: str | None = None,
) -> Named:
    """The names a request the sender named reserves (`KIND:ID`, or `name`), and what it asks
    for. The key is reserved too when the sender's own id names the request: the key can then
    name no other request of the account."""
    by_key = () if idempotency_key is None else (f"{kind}-key:{idempotency_key}",)
    return Named(
        (name or f"{kind}:{sent_as}", *by_key), fingerprint("POST", path, request.model_dump())
    )


@router.post(
    "/accounts/{account_id}/withdrawals",
    status_code=201,
    tags=["accounts"],
    summary="Withdraw cash, or unsold capacity until its gate closes",
    description="Only what is available: cash held for open orders and capacity held "
    "for asks stay. A `withdrawal_id` or an `Idempotency-Key` header makes the request "
    "idempotent: a retry returns the first answer and never withdraws twice; the same name "
    "for a different withdrawal is refused (`idempotency-key-reused`).",
    response_model=RequestAnswer,
    responses=problems(404, 422),
)
async def withdraw(
    account_id: Identifier,
    request: Withdrawal,
    principal: Reader,
    market: MarketDep,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    keys: KeysDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    account = await account_acted_on(principal, account_id, keys)
    named = own_name(request.withdrawal_id, idempotency_key)
    withdrawal_id = named or f"w-{uuid.uuid4().hex}"
    path = f"/v1/accounts/{account}/withdrawals"
    given = named is not None
    names = (
        request_named("withdrawal", withdrawal_id, path, request, "", idempotency_key)
        if given
        else None
    )
    command = await idempotent.checked(
        account, names, lambda: _withdrawal(request, account, withdrawal_id, market)
    )
    return await decide(
        commands, idempotent, command, given, path, request, idempotency_key=idempotency_key
    )


def _withdrawal(
    request: Withdrawal, account: str, withdrawal_id: str, market: MarketData
) -> WithdrawFunds | WithdrawCapacity:
    """The command a withdrawal request asks for, or the problem with its body."""
    if request.kind == "cash":
        if request.amount is None or request.symbol is not None:
            raise Problem(422, "invalid-request", "a cash withdrawal takes an amount only")
        return WithdrawFunds(withdrawal_id=withdrawal_id, account_id=account, amount=request.amount)
    if request.symbol is None or request.quantity is None:
        raise Problem(422, "invalid-request", "a capacity withdrawal takes a symbol and a quantity")
    if request.symbol not in market.catalogue:
        raise Problem(422, "unknown_contract", f"contract {request.symbol!r} is not listed")
    return WithdrawCapacity(
        withdrawal_id=withdrawal_id,
        account_id=account,
        symbol=request.symbol,
        quantity=request.quantity,
    )


@router.post(
    "/accounts/{account_id}/capacity-deposits",
    status_code=201,
    tags=["accounts"],
    summary="Deposit idle capacity on a schedule, optionally with a standing ask",
    description="One deposit per delivery hour of the schedule (and one ask at the "
    "reserve price), each with an id derived from `deposit_id`. A `deposit_id` or an "
    "`Idempotency-Key` header makes the request idempotent: a retry returns the first answer "
    "and deposits nothing twice; the same name for a different schedule is refused "
    "(`idempotency-key-reused`). Every hour "
    "must be listed now: a schedule reaching past the listing horizon is refused whole. "
    "`status` is `pending` (HTTP 202) if the exchange had not decided every deposit and ask "
    "in 5 s: `asks` then lists only the asks that stand, `pending_asks` those not decided yet.",
    response_model=ScheduledDeposit,
    responses={
        202: {
            "model": ScheduledDeposit,
            "description": "Not decided within 5 s (`status` `pending`); retry to learn",
        },
        **problems(404, 422),
    },
)
async def deposit_schedule(
    account_id: Identifier,
    request: CapacitySchedule,
    principal: Provider,
    market: MarketDep,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    keys: KeysDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    account = await account_acted_on(principal, account_id, keys)
    given_name = own_name(request.deposit_id, idempotency_key, SCHEDULE_NAME_LENGTH)
    deposit_id = given_name or f"cap-{uuid.uuid4().hex[:16]}"
    path = f"/v1/accounts/{account}/capacity-deposits"
    by_key = () if idempotency_key is None else (f"capacity-key:{idempotency_key}",)
    print_ = fingerprint("POST", path, request.model_dump())
    # Checked before anything is deposited: a bad request changes nothing. A refused body's
    # hours are not known, so a reused name is found by the schedule's own names.
    contracts = await idempotent.checked(
        account,
        None if given_name is None else Named((f"capacity:{deposit_id}", *by_key), print_),
        lambda: _schedule_on_tick(request, market),
    )
    # Each hour's deposit and ask is named `DEPOSIT_ID:SYMBOL` in the account's scope.
    hours = [(f"{deposit_id}:{spec.symbol}", spec.symbol) for spec in contracts]
    priced = request.reserve_price is not None
    named = given_name is not None

    async def send() -> Answer:
        deposits = [
            DepositCapacity(
                deposit_id=name, account_id=account, symbol=symbol, quantity=request.quantity
            )
            for name, symbol in hours
        ]
        outcomes: list[Outcome | None] = list(
            await asyncio.gather(
                *(commands.submit_and_wait(d, deposit_key(account, d.deposit_id)) for d in deposits)
            )
        )
        refused = _refusal(outcomes, named)
        if refused is not None:
            return refused
        asks: list[str] = []
        refused_asks: list[RefusedAsk] = []
        pending_asks: list[str] = []
        if request.reserve_price is not None:
            orders = [
                PlaceOrder(
                    order_id=name,
                    account_id=account,
                    symbol=symbol,
                    side="sell",
                    price=request.reserve_price,
                    quantity=request.quantity,
                )
                for name, symbol in hours
            ]
            asks = [exchange_order_id(account, order.order_id) for order in orders]
            placed = await asyncio.gather(
                *(
                    commands.submit_and_wait(o, order_key(account, a))
                    for o, a in zip(orders, asks, strict=True)
                )
            )
            # The hours' capacity is deposited whatever becomes of their asks: an ask the
            # risk stage refused is listed with its reason, not answered as a 422.
            refused_asks = _refused_asks(asks, placed, named)
            # An ask not decided within the wait is not presented as standing: it may yet be
            # refused (its bond, a limit, the contract delisted meanwhile).
            pending_asks = [a for a, outcome in zip(asks, placed, strict=True) if outcome is None]
            undecided_or_refused = {r.order_id for r in refused_asks} | set(pending_asks)
            asks = [a for a in asks if a not in undecided_or_refused]
            outcomes += placed
        pending = any(outcome is None for outcome in outcomes)
        answer = ScheduledDeposit(
            deposit_id=deposit_id,
            contracts=[symbol for _, symbol in hours],
            asks=asks,
            refused_asks=refused_asks,
            pending_asks=pending_asks,
            status="pending" if pending else "done",
        )
        # Not decided within the wait: 202, as an order's or a deposit's pending answer.
        return Answer(202 if pending else 201, answer.model_dump(), pending=pending)

    if not named:
        return respond(await send(), replayed=False)
    names = (
        f"capacity:{deposit_id}",
        *(f"deposit-id:{name}" for name, _ in hours),
        *(f"order:{name}" for name, _ in hours if priced),
        *by_key,
    )
    return await idempotent.run(account, Named(names, print_), send)


def _schedule_on_tick(request: CapacitySchedule, market: MarketData) -> list[ContractSpec]:
    """The hourly contracts a schedule covers (`_scheduled_contracts`), its reserve price on
    the tick of each; else the problem with the schedule."""
    contracts = _scheduled_contracts(
        request, market.catalogue, market.now_ms, market.operator_delisted
    )
    reserve = request.reserve_price
    for spec in contracts:
        if reserve is not None and reserve % spec.tick_size:
            raise Problem(
                422,
                "price_not_on_tick",
                f"reserve price {reserve} is not a multiple of the tick size "
                f"{spec.tick_size} fen of {spec.symbol}",
            )
    return contracts


@router.post(
    "/deliveries/metering",
    status_code=201,
    tags=["delivery"],
    summary="Report what was delivered to one buyer in one contract",
    description="Accepted from the delivery hour until the delivery window ends; more "
    "than was sold is refused (`metering_exceeds_obligation`). A token bundle is metered in "
    "`tokens` used since the last report, during its period, each report paying the provider "
    "at once (`bundle_not_started`, `bundle_period_over`, `metering_exceeds_bundle`: beyond "
    "the tokens bought). A `report_id` or an `Idempotency-Key` header makes "
    "the request idempotent (a bundle's report draws down once).",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def report_metering(
    request: Metering,
    principal: Provider,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    named = own_name(request.report_id, idempotency_key)
    report_id = named or f"m-{uuid.uuid4().hex}"
    path = "/v1/deliveries/metering"
    given = named is not None
    names = (
        request_named("ReportMetering", report_id, path, request, "", idempotency_key)
        if given
        else None
    )
    command = ReportMetering(
        report_id=report_id,
        account_id=principal.account_id,
        symbol=request.symbol,
        buyer_id=request.buyer_id,
        delivered=await idempotent.checked(principal.account_id, names, lambda: _metered(request)),
    )
    return await decide(
        commands, idempotent, command, given, path, request, idempotency_key=idempotency_key
    )


def _metered(request: Metering) -> int:
    """What a metering request reports: tokens for a token bundle, units for an hour."""
    if bundle_period(request.symbol) is not None:
        if request.tokens is None or request.delivered is not None:
            raise Problem(
                422,
                "bundle-metering-in-tokens",
                f"{request.symbol} is a token bundle: report the tokens used since the last "
                "report as `tokens` (integer tokens), not `delivered`",
            )
        return request.tokens
    if request.delivered is None or request.tokens is not None:
        raise Problem(
            422,
            "hour-metering-in-units",
            f"{request.symbol} is delivered by the hour: report the units delivered as "
            "`delivered`; `tokens` is for token bundles",
        )
    return request.delivered


@router.post(
    "/deliveries/disputes",
    status_code=201,
    tags=["delivery"],
    summary="Dispute a provider's metering within the delivery window",
    description="A `dispute_id` or an `Idempotency-Key` header makes the request idempotent.",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def dispute(
    request: Dispute,
    principal: Buyer,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    named = own_name(request.dispute_id, idempotency_key)
    command = DisputeDelivery(
        dispute_id=named or f"x-{uuid.uuid4().hex}",
        account_id=principal.account_id,
        symbol=request.symbol,
        provider_id=request.provider_id,
        reason=request.reason,
    )
    given = named is not None
    return await decide(
        commands,
        idempotent,
        command,
        given,
        "/v1/deliveries/disputes",
        request,
        idempotency_key=idempotency_key,
    )


@router.post(
    "/deliveries/recalls",
    status_code=201,
    tags=["delivery"],
    summary="Recall sold units of a recallable deposit, with notice",
    description="Only interruptible (`-INT`) contracts, until the recall notice before "
    "delivery (`CX_RECALL_NOTICE_MINUTES`). Holders, in account order, get their escrow "
    "back and `CX_RECALL_COMPENSATION_BPS` of it from the provider's bond. A "
    "`recall_id` or an `Idempotency-Key` header makes the request idempotent.",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def recall(
    request: Recall,
    principal: Provider,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    named = own_name(request.recall_id, idempotency_key)
    command = RecallCapacity(
        recall_id=named or f"r-{uuid.uuid4().hex}",
        account_id=principal.account_id,
        symbol=request.symbol,
        quantity=request.quantity,
        reason=request.reason,
    )
    given = named is not None
    return await decide(
        commands,
        idempotent,
        command,
        given,
        "/v1/deliveries/recalls",
        request,
        idempotency_key=idempotency_key,
    )


@router.post(
    "/admin/deliveries/resolve",
    status_code=201,
    tags=["operator"],
    summary="Settle a disputed delivery at the quantity found delivered",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def resolve(
    request: Resolution, principal: Operator, commands: CommandsDep, idempotent: IdempotentDep
) -> JSONResponse:
    command = ResolveDispute(operator_id=principal.account_id, **request.model_dump())
    return await decide(commands, idempotent, commands.sign(command))


@router.get(
    "/deliveries",
    tags=["delivery"],
    summary="The account's delivery obligations, as provider or as buyer",
)
async def deliveries(
    principal: Reader,
    ledger: LedgerDep,
    account_id: Annotated[Identifier | None, Query()] = None,
) -> list[Delivery]:
    obligations, recalls = await ledger.deliveries(account_of(principal, account_id))
    return [Delivery(**row) for row in obligations] + [_recalled(row) for row in recalls]


@router.get(
    "/accounts/{account_id}/invoices",
    tags=["accounts"],
    summary="Invoices: what each purchase cost and who paid it",
    description="Per buy order and contract: the gross amount, the government voucher, "
    "the platform's fee and concession, and what the enterprise paid; the totals, and "
    "the voucher clawed back on refunded deliveries.",
)
async def invoices(account_id: Identifier, principal: Reader, ledger: LedgerDep) -> dict[str, Any]:
    return await ledger.invoices(account_of(principal, account_id))


@router.post(
    "/admin/concessions",
    status_code=201,
    tags=["operator"],
    summary="Grant a fee concession to each participant of a class, with its own budget",
    description="Each account named gets `discount_bps` of its trading fees back (at the "
    "trade; a provider's at delivery) from a budget of `budget_per_account`, while the log "
    "time is in the validity window. The invoice shows it as the platform's concession. "
    "An account no key was ever made for is refused (`unknown-account`) before any is "
    "granted.",
    response_model=list[RequestAnswer],
    responses=problems(422),
)
async def grant_concessions(
    request: ConcessionRequest, principal: Operator, commands: CommandsDep, keys: KeysDep
) -> JSONResponse:
    await refuse_unknown_accounts(keys, request.account_ids, status=422, field="account_ids")
    answers = []
    for account_id in sorted(set(request.account_ids)):
        command = GrantConcession(
            concession_id=request.concession_id,
            operator_id=principal.account_id,
            account_id=account_id,
            discount_bps=request.discount_bps,
            budget=request.budget_per_account,
            valid_from=request.valid_from,
            valid_until=request.valid_until,
            reason=request.reason,
        )
        answer = await decision(commands, commands.sign(command), named=False)
        if answer.status_code >= 400:
            return respond(answer, replayed=False)
        answers.append(answer.body)
    return JSONResponse(answers, 201)


@router.post(
    "/programmes/{programme_id}/discount-pools",
    status_code=201,
    tags=["vouchers"],
    summary="Fund a programme's discount pool: the platform's share of holders' bills",
    description="Each grant approved afterwards carries a part of the pool in the proportion "
    "of `discount_bps` to the programme's voucher rate, and each purchase paid with the "
    "voucher is discounted `discount_bps` of its amount from that part. Funding again adds "
    "to the pool at the same rate. Idempotent by `pool_id`; the answer's `id` is "
    "`PROGRAMME/POOL`.",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def fund_discount_pool(
    programme_id: Identifier,
    request: DiscountPoolRequest,
    principal: Operator,
    commands: CommandsDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    command = commands.sign(
        FundDiscountPool(
            operator_id=principal.account_id, programme_id=programme_id, **request.model_dump()
        )
    )
    path = f"/v1/programmes/{programme_id}/discount-pools"
    return await decide(commands, idempotent, command, True, path, request)


@router.post(
    "/programmes",
    status_code=201,
    tags=["vouchers"],
    summary="Create a compute-voucher programme",
    description="Idempotent: a retry by the same administrator returns the first answer; "
    "the same `programme_id` for a different programme is refused "
    "(`idempotency-key-reused`, or `invalid_programme` if another administrator's).",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def create_programme(
    request: ProgrammeRequest,
    principal: ProgrammeAdmin,
    commands: CommandsDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    command = commands.sign(CreateProgramme(admin_id=principal.account_id, **request.model_dump()))
    return await decide(commands, idempotent, command, True, "/v1/programmes", request)


@router.post(
    "/programmes/{programme_id}/grants",
    status_code=201,
    tags=["vouchers"],
    summary="Approve a pending application: a grant carved out of this year's budget",
    description="A `request_id` or an `Idempotency-Key` header makes the request "
    "idempotent; without one, a resend of a "
    "done approval is refused `application_not_pending` and grants nothing twice. The "
    "answer's `id` is `PROGRAMME/APPLICATION`. Refused: `unknown_application`, "
    "`application_not_pending`, "
    "`not_eligible` (the registered kind or city, the programme ended, the cap per "
    "enterprise), `budget_exhausted` (more than is left of this calendar year's budget).",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def approve_grant(
    programme_id: Identifier,
    request: GrantRequest,
    principal: ProgrammeAdmin,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    command = ApproveGrant(
        programme_id=programme_id,
        admin_id=principal.account_id,
        **request.model_dump(exclude={"request_id"}),
    )
    path = f"/v1/programmes/{programme_id}/grants"
    step = own_name(request.request_id, idempotency_key)
    name = f"{command.type}:{request_id(command)}:{step}"
    given = step is not None
    return await decide(
        commands, idempotent, commands.sign(command), given, path, request, name, idempotency_key
    )


@router.post(
    "/accounts/{account_id}/enterprise",
    status_code=201,
    tags=["vouchers"],
    summary="Register the enterprise behind the account (统一社会信用代码)",
    description="Registering again replaces the registration; a unified social credit code "
    "another account registered is refused (`uscc_registered`), a code that is not one "
    "(`invalid_uscc`) says what is wrong: its length, the bad character and its position, or "
    "the check character expected. Idempotent: the same registration again changes nothing.",
    response_model=RequestAnswer,
    responses=problems(404, 422),
)
async def register_enterprise(
    account_id: Identifier,
    request: EnterpriseRequest,
    principal: Reader,
    commands: CommandsDep,
    keys: KeysDep,
) -> JSONResponse:
    account = await account_acted_on(principal, account_id, keys)
    command = RegisterEnterprise(account_id=account, **request.model_dump())
    return respond(await decision(commands, command, named=False), replayed=False)


@router.get(
    "/accounts/{account_id}/enterprise",
    tags=["vouchers"],
    summary="The enterprise the account registered",
    response_model=Enterprise,
    responses=problems(404),
)
async def enterprise(account_id: Identifier, principal: Reader, ledger: LedgerDep) -> Any:
    account = account_of(principal, account_id)
    found = await ledger.enterprise(account)
    if found is None:
        raise Problem(404, "not-registered", f"account {account} has registered no enterprise")
    return found


@router.post(
    "/programmes/{programme_id}/applications",
    status_code=201,
    tags=["vouchers"],
    summary="Apply for a grant (算力券申领) as the registered enterprise",
    description="The application carries the enterprise's registered identity. An "
    "`application_id` or an `Idempotency-Key` header makes the request idempotent; the "
    "answer's `id` is "
    "`PROGRAMME/APPLICATION`. Refused: `not_registered`, `unknown_programme`, "
    "`not_eligible` (kind, city, ended, above the cap per enterprise), "
    "`duplicate_application` (an open or approved application of the account in the "
    "programme, or the id taken). Applying again under the id of an application the "
    "administrator has since rejected answers that rejection (`application_rejected`, with "
    "the reason), not the first answer: a rejected application is applied for again under a "
    "new id.",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def apply_for_grant(
    programme_id: Identifier,
    request: ApplicationRequest,
    principal: Reader,
    commands: CommandsDep,
    ledger: LedgerDep,
    idempotent: IdempotentDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    named = own_name(request.application_id, idempotency_key)
    account = account_of(principal, None)
    command = ApplyForGrant(
        application_id=named or f"a-{uuid.uuid4().hex}",
        account_id=account,
        programme_id=programme_id,
        amount=request.amount,
        intended_use=request.intended_use,
    )
    path = f"/v1/programmes/{programme_id}/applications"
    given = named is not None
    if given:
        # The name's first answer ("done") says the application was taken; once rejected,
        # giving it back would tell the sender its application stands. A changed request is
        # told first that it reused the name.
        names = request_named(command.type, request_id(command), path, request, "", idempotency_key)
        await idempotent.refuse_reused(account, names)
        rejected = await _rejected_application(ledger, account, programme_id, command)
        if rejected is not None:
            return respond(rejected, replayed=True)
    return await decide(
        commands, idempotent, command, given, path, request, idempotency_key=idempotency_key
    )


async def _rejected_application(
    ledger: Ledger, account: str, programme_id: str, command: ApplyForGrant
) -> Answer | None:
    """The rejection of the account's application under the command's id, if its programme's
    administrator rejected it (as settled)."""
    for application in await ledger.grant_applications(account_id=account):
        if (
            application["programme_id"] == programme_id
            and application["application_id"] == command.application_id
            and application["status"] == "rejected"
        ):
            body = problem_body(
                422,
                "application_rejected",
                f"申请 {command.application_id!r} 已被项目 {programme_id} 的管理员驳回: "
                f"{application['reason']}; 请以新的申请编号重新申请 / application "
                f"{command.application_id!r} to programme {programme_id} was rejected by its "
                "administrator; apply again under a new application_id",
                request_id=request_id(command),
            )
            return Answer(422, body)
    return None


@router.get(
    "/programmes/{programme_id}/applications",
    tags=["vouchers"],
    summary="A programme's applications, oldest first (its administrator)",
    response_model=list[GrantApplication],
    responses=problems(404),
)
async def programme_applications(
    programme_id: Identifier, principal: ProgrammeReader, ledger: LedgerDep
) -> Any:
    found = await ledger.programme_report(programme_id)
    if found is None:
        raise Problem(404, "unknown-programme", f"no programme {programme_id!r}")
    if principal.role is Role.PROGRAMME_ADMIN and found["admin_id"] != principal.account_id:
        raise Problem(
            403, "forbidden", f"programme {programme_id} is administered by another account"
        )
    return await ledger.grant_applications(programme_id=programme_id)


@router.get(
    "/applications",
    tags=["vouchers"],
    summary="The calling enterprise's applications, oldest first",
    response_model=list[GrantApplication],
)
async def own_applications(principal: Reader, ledger: LedgerDep) -> Any:
    return await ledger.grant_applications(account_id=account_of(principal, None))


@router.post(
    "/programmes/{programme_id}/applications/{application_id}/info-requests",
    status_code=201,
    tags=["vouchers"],
    summary="Ask the applicant a question (the application waits for the answer)",
    description="Only of a pending application (`application_not_pending`). A "
    "`request_id` or an `Idempotency-Key` header makes the request idempotent.",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def request_application_info(
    programme_id: Identifier,
    application_id: Identifier,
    request: InfoRequest,
    principal: ProgrammeAdmin,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    command = RequestApplicationInfo(
        application_id=application_id,
        programme_id=programme_id,
        admin_id=principal.account_id,
        question=request.question,
    )
    path = f"/v1/programmes/{programme_id}/applications/{application_id}/info-requests"
    step = own_name(request.request_id, idempotency_key)
    name = f"{command.type}:{request_id(command)}:{step}"
    given = step is not None
    return await decide(
        commands, idempotent, commands.sign(command), given, path, request, name, idempotency_key
    )


@router.post(
    "/programmes/{programme_id}/applications/{application_id}/supplements",
    status_code=201,
    tags=["vouchers"],
    summary="Answer the administrator's question: the application is pending again",
    description="Only of the account's own application waiting for an answer "
    "(`unknown_application`, `application_not_pending`). A `request_id` or an "
    "`Idempotency-Key` header makes the request idempotent.",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def supplement_application(
    programme_id: Identifier,
    application_id: Identifier,
    request: Supplement,
    principal: Reader,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    command = SupplementApplication(
        application_id=application_id,
        programme_id=programme_id,
        account_id=account_of(principal, None),
        answer=request.answer,
    )
    path = f"/v1/programmes/{programme_id}/applications/{application_id}/supplements"
    step = own_name(request.request_id, idempotency_key)
    name = f"{command.type}:{request_id(command)}:{step}"
    given = step is not None
    return await decide(commands, idempotent, command, given, path, request, name, idempotency_key)


@router.post(
    "/programmes/{programme_id}/applications/{application_id}/rejection",
    status_code=201,
    tags=["vouchers"],
    summary="Reject a pending application, saying why",
    description="Only of a pending application (`application_not_pending`); the enterprise "
    "may then apply again. A `request_id` or an "
    "`Idempotency-Key` header makes the request idempotent.",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def reject_application(
    programme_id: Identifier,
    application_id: Identifier,
    request: Rejection,
    principal: ProgrammeAdmin,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    command = RejectApplication(
        application_id=application_id,
        programme_id=programme_id,
        admin_id=principal.account_id,
        reason=request.reason,
    )
    path = f"/v1/programmes/{programme_id}/applications/{application_id}/rejection"
    step = own_name(request.request_id, idempotency_key)
    name = f"{command.type}:{request_id(command)}:{step}"
    given = step is not None
    return await decide(
        commands, idempotent, commands.sign(command), given, path, request, name, idempotency_key
    )


@router.post(
    "/admin/voucher-policy",
    status_code=201,
    tags=["vouchers"],
    summary="Set the platform's voucher ceilings (operators)",
    description="The highest voucher share of a contract amount, the highest cap per "
    "enterprise, and the kinds and cities programmes may cover; a programme asking for more "
    "is refused (`above_voucher_policy`). Until set, the market rules' defaults hold (30%, "
    "5,000,000 yuan, sme and opc, any city).",
    response_model=RequestAnswer,
    responses=problems(422),
)
async def set_voucher_policy(
    request: VoucherPolicyRequest, principal: Operator, commands: CommandsDep
) -> JSONResponse:
    command = SetVoucherPolicy(operator_id=principal.account_id, **request.model_dump())
    return respond(await decision(commands, commands.sign(command), named=False), replayed=False)


@router.get(
    "/programmes/{programme_id}/report",
    tags=["vouchers"],
    summary="A programme's budget, usage, burn-down and subsidised purchases",
    description="`format=csv` answers text/csv; `format=png` the burn-down chart; "
    "`format=pdf` the report for the city (use over time, compute per 元 of voucher, the "
    "spread across enterprises, holders' prices against others').",
    responses={
        **problems(404),
        200: {"content": {"text/csv": {}, "image/png": {}, "application/pdf": {}}},
    },
)
async def programme_report(
    programme_id: Identifier,
    principal: ProgrammeReader,
    ledger: LedgerDep,
    format: Annotated[Literal["json", "csv", "png", "pdf"], Query()] = "json",
) -> Any:
    found = await ledger.programme_report(programme_id)
    if found is None:
        raise Problem(404, "unknown-programme", f"no programme {programme_id!r}")
    if principal.role is Role.PROGRAMME_ADMIN and found["admin_id"] != principal.account_id:
        raise Problem(
            403, "forbidden", f"programme {programme_id} is administered by another account"
        )
    if format == "csv":
        return Response(reports.report_csv(found), media_type="text/csv")
    if format == "png":
        return Response(await asyncio.to_thread(_png, found), media_type="image/png")
    if format == "pdf":
        pdf = await asyncio.to_thread(documents.programme_pdf, found)
        return Response(pdf, media_type="application/pdf")
    return found


def _refusal(outcomes: list[Outcome | None], named: bool) -> Answer | None:
    """The first refusal of a schedule's deposits or asks as an answer, if any. A named
    schedule's ids are its own, reserved for it: a duplicate means an earlier send of this
    same request did that hour, which counts as done."""
    for outcome in outcomes:
        if not isinstance(outcome, DepositRejected | OrderRejected):
            continue
        duplicate = outcome.reason in (
            RejectReason.DUPLICATE_DEPOSIT_ID,
            RejectReason.DUPLICATE_ORDER_ID,
        )
        if named and duplicate:
            continue
        return Answer(422, problem_body(422, outcome.reason.value, outcome.message))
    return None


def _refused_asks(asks: list[str], outcomes: list[Outcome | None], named: bool) -> list[RefusedAsk]:
    """The schedule's asks the risk stage refused, with why (a named schedule's duplicate is
    an earlier send of this same request: that ask stands)."""
    refused = []
    for order_id, outcome in zip(asks, outcomes, strict=True):
        if not isinstance(outcome, OrderRejected):
            continue
        if named and outcome.reason is RejectReason.DUPLICATE_ORDER_ID:
            continue
        reason = outcome.reason.value
        refused.append(RefusedAsk(order_id=order_id, reason=reason,
                                  detail=chinese_first(reason, outcome.message)))  # fmt: skip
    return refused


def _png(report: dict[str, Any]) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "burn-down.png"
        reports.burn_down_png(report, path)
        return path.read_bytes()


def _scheduled_contracts(
    request: CapacitySchedule, catalogue: Catalogue, now_ms: int, delisted: Mapping[str, str]
) -> list[ContractSpec]:
    """The hourly contracts a schedule covers, each listed now and not delisted by an operator
    (`delisted`: symbol -> why), or a problem saying which."""
    if request.resource_class not in RESOURCE_CLASSES:
        raise Problem(
            422, "unknown-resource-class", f"unknown resource class {request.resource_class!r}"
        )
    if request.region not in REGIONS:
        raise Problem(422, "unknown-region", f"unknown region {request.region!r}")
    code = request.resource_class
    if request.recallable:
        code = f"{code}{INTERRUPTIBLE_SUFFIX}"
        if code not in RESOURCE_CLASSES:
            raise Problem(
                422,
                "not-interruptible",
                f"{request.resource_class} has no interruptible class to deposit into",
            )
    if request.from_hour == request.to_hour or request.to_hour > 24 or request.from_hour > 23:
        raise Problem(422, "invalid-request", "from_hour must differ from to_hour (0-24)")
    try:
        first = datetime.strptime(request.first_day, "%Y-%m-%d").replace(tzinfo=CHINA_STANDARD_TIME)
    except ValueError:
        raise Problem(
            422,
            "invalid-request",
            f"参数 first_day: 没有这一天 {request.first_day!r}, 应如 2026-12-05 no such day",
            field="first_day",
        ) from None
    hours = (request.to_hour - request.from_hour) % 24 or 24
    contracts = []
    for day in range(request.days):
        start = first + timedelta(days=day, hours=request.from_hour)
        for hour in range(hours):
            moment = start + timedelta(hours=hour)
            symbol = (
                f"{code}.{request.region}.{moment.year:04d}{moment.month:02d}{moment.day:02d}"
                f"T{moment.hour:02d}"
            )
            spec = catalogue.listed(symbol, now_ms)
            if spec is None:
                raise Problem(422, "unknown_contract", catalogue.why_not_listed(symbol, now_ms))
            if now_ms >= catalogue.retires_at(spec):
                # A static contract stays listed past its gate, where risk refuses deposits:
                # refuse the whole schedule here, before any hour of it is deposited.
                raise Problem(
                    422,
                    "gate_closed",
                    f"the gate of {symbol} has closed: capacity can no longer be deposited into it",
                )
            if symbol in delisted:
                # Risk refuses a delisted hour's deposit but not the others': refuse the whole
                # schedule here, so that a refused schedule deposits nothing.
                raise Problem(422, "contract_delisted", delisted[symbol])
            contracts.append(spec)
    return contracts
