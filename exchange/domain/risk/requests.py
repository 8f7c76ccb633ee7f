"""What requests share: the ids they are known by, who sent them, their duplicate check and
their rejection. Requests are the commands answered with a `RequestRejected` when refused:
withdrawals, delivery requests, programme administration and fee concessions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from exchange.domain.messages import (
    LEDGER_SEPARATOR,
    ApplyForGrant,
    ApproveGrant,
    CreateProgramme,
    DisputeDelivery,
    Event,
    EventStamp,
    FundDiscountPool,
    GrantConcession,
    RecallCapacity,
    RegisterEnterprise,
    RejectApplication,
    RejectReason,
    ReportMetering,
    RequestApplicationInfo,
    RequestRejected,
    ResolveDispute,
    SetVoucherPolicy,
    SupplementApplication,
    WithdrawCapacity,
    WithdrawFunds,
    scoped,
)
from exchange.domain.risk.state import RiskState

Request = (
    WithdrawFunds
    | WithdrawCapacity
    | ReportMetering
    | DisputeDelivery
    | ResolveDispute
    | RecallCapacity
    | CreateProgramme
    | ApproveGrant
    | GrantConcession
    | FundDiscountPool
    | RegisterEnterprise
    | ApplyForGrant
    | RequestApplicationInfo
    | SupplementApplication
    | RejectApplication
    | SetVoucherPolicy
)
"""Commands answered with a `RequestRejected` when refused."""

ApplicationStep = (
    ApplyForGrant
    | RequestApplicationInfo
    | SupplementApplication
    | RejectApplication
    | ApproveGrant
)
"""Commands about one application, known by `PROGRAMME/APPLICATION`."""

VOUCHER_POLICY = "voucher-policy"
"""The id of `SetVoucherPolicy`: there is one policy."""

AnyRequest = TypeVar("AnyRequest", bound=Request)
SignedRequest = TypeVar(
    "SignedRequest",
    bound=ResolveDispute
    | CreateProgramme
    | ApproveGrant
    | RequestApplicationInfo
    | RejectApplication
    | GrantConcession
    | SetVoucherPolicy
    | FundDiscountPool,
)


def decide_request(
    state: RiskState,
    command: AnyRequest,
    stamp: EventStamp,
    rule: Callable[[RiskState, AnyRequest, EventStamp], Event],
    *,
    spends_id: bool = True,
) -> Event:
    """Refuse a request whose id its sender used before, else decide it by `rule` (which
    applies what it accepts); an accepted request spends its id if `spends_id`."""
    key = request_key(command)
    if key in state.request_ids or _legacy_request_key(command) in state.request_ids:
        return request_rejected(
            command,
            stamp,
            RejectReason.DUPLICATE_ID,
            f"{command.type} id {request_id(command)!r} was used before by {requester(command)}",
        )
    decided = rule(state, command, stamp)
    if spends_id and not isinstance(decided, RequestRejected):
        state.request_ids.add(key)
    return decided


def decide_signed_request(
    state: RiskState,
    command: SignedRequest,
    stamp: EventStamp,
    rule: Callable[[RiskState, SignedRequest, EventStamp], Event],
    *,
    spends_id: bool = True,
) -> Event:
    """`decide_request` for a request only an operator or a programme administrator may
    send: refused first unless the API's seal verifies."""
    forged = state.not_operator(command)
    if forged:
        return request_rejected(command, stamp, RejectReason.NOT_OPERATOR, forged)
    return decide_request(state, command, stamp, rule, spends_id=spends_id)


def request_rejected(
    command: Request, stamp: EventStamp, reason: RejectReason, message: str
) -> RequestRejected:
    """The refusal of a request, which changes nothing."""
    return RequestRejected(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        request=command.type,
        request_id=request_id(command),
        account_id=requester(command),
        reason=reason,
        message=message,
    )


def separator_in_id(kind: str, identifier: str) -> str:
    """Why a programme's or concession's id holding the ledger's separator is refused."""
    return (
        f"{kind} 编号不可含 '{LEDGER_SEPARATOR}': the {kind} id {identifier!r} holds "
        f"'{LEDGER_SEPARATOR}', which separates the parts of the ledger accounts named after "
        "it, so they could be another's; use letters, digits, '_', '.' and '-'"
    )


def request_key(command: Request) -> str:
    """What identifies a request among all requests: its type and its id in the scope of who
    sent it, so two participants' ids never meet. Operators' requests name objects of the
    whole exchange (a dispute, an account's concession): their ids alone."""
    if isinstance(command, ResolveDispute | GrantConcession | SetVoucherPolicy | FundDiscountPool):
        return f"{command.type}:{request_id(command)}"
    return f"{command.type}:{scoped(requester(command), request_id(command))}"


def _legacy_request_key(command: Request) -> str:
    """The key a request was known by before ids were scoped by their sender."""
    legacy_id = command.application_id if isinstance(command, ApproveGrant) else request_id(command)
    return f"{command.type}:{legacy_id}"


def request_id(command: Request) -> str:
    """The id a request is known by (a grant's: its application in the programme's scope)."""
    if isinstance(command, WithdrawFunds | WithdrawCapacity):
        return command.withdrawal_id
    if isinstance(command, ReportMetering):
        return command.report_id
    if isinstance(command, DisputeDelivery):
        return command.dispute_id
    if isinstance(command, RecallCapacity):
        return command.recall_id
    if isinstance(command, GrantConcession):
        return f"{command.concession_id}:{command.account_id}"
    if isinstance(command, FundDiscountPool):
        return scoped(command.programme_id, command.pool_id)
    if isinstance(command, ResolveDispute):
        return resolution_id(command.symbol, command.provider_id, command.buyer_id)
    if isinstance(command, ApplicationStep):
        return scoped(command.programme_id, command.application_id)
    if isinstance(command, RegisterEnterprise):
        return command.account_id
    if isinstance(command, SetVoucherPolicy):
        return VOUCHER_POLICY
    return command.programme_id


def resolution_id(symbol: str, provider_id: str, buyer_id: str) -> str:
    """The id of an operator's resolution of the dispute over what `provider_id` owes
    `buyer_id` in `symbol`: `SYMBOL/PROVIDER/BUYER`. Account ids may hold `:` but never `/`,
    so the last two `/` split it one way only and two disputes never share it (joined by `:`,
    provider `a:b` and buyer `c` read as provider `a` and buyer `b:c`). Resolutions refused
    before carry the `:`-joined id in their `RequestRejected`, as they were written."""
    return scoped(scoped(symbol, provider_id), buyer_id)


def requester(command: Request) -> str:
    """Who sent a request: the account, operator or programme administrator."""
    if isinstance(command, ResolveDispute | GrantConcession | SetVoucherPolicy | FundDiscountPool):
        return command.operator_id
    if isinstance(
        command, CreateProgramme | ApproveGrant | RequestApplicationInfo | RejectApplication
    ):
        return command.admin_id
    return command.account_id
