"""Enterprises' registrations, their applications for grants and the administrator's questions
and rejections, and the platform's voucher policy. Approval is in `programmes`."""

from __future__ import annotations

from exchange.domain.enterprises import OPEN, Application, Enterprise, VoucherPolicy
from exchange.domain.messages import (
    ApplicationInfoRequested,
    ApplicationRejected,
    ApplicationSupplemented,
    ApplyForGrant,
    ApproveGrant,
    EnterpriseRegistered,
    Event,
    EventStamp,
    GrantApplied,
    RegisterEnterprise,
    RejectApplication,
    RejectReason,
    RequestApplicationInfo,
    SetVoucherPolicy,
    SupplementApplication,
    VoucherPolicySet,
    scoped,
)
from exchange.domain.risk.requests import decide_request, decide_signed_request, request_rejected
from exchange.domain.risk.state import RiskState
from exchange.domain.uscc import uscc_problem


def register_enterprise(state: RiskState, command: RegisterEnterprise, stamp: EventStamp) -> Event:
    """Register (or register again) the enterprise behind an account."""
    return decide_request(state, command, stamp, _register, spends_id=False)


def set_voucher_policy(state: RiskState, command: SetVoucherPolicy, stamp: EventStamp) -> Event:
    """Put the operator's voucher policy in force."""
    return decide_signed_request(state, command, stamp, _set_policy, spends_id=False)


def apply_for_grant(state: RiskState, command: ApplyForGrant, stamp: EventStamp) -> Event:
    """Take a registered enterprise's application to a programme (its id spent: a resend is
    a `duplicate_id`, which the API answers as done)."""
    return decide_request(state, command, stamp, _apply)


def request_info(state: RiskState, command: RequestApplicationInfo, stamp: EventStamp) -> Event:
    """Ask the applicant of a pending application a question."""
    return decide_signed_request(state, command, stamp, _request_info, spends_id=False)


def supplement(state: RiskState, command: SupplementApplication, stamp: EventStamp) -> Event:
    """Take the applicant's answer: the application is pending again."""
    return decide_request(state, command, stamp, _supplement, spends_id=False)


def reject_application(state: RiskState, command: RejectApplication, stamp: EventStamp) -> Event:
    """Reject a pending application."""
    return decide_signed_request(state, command, stamp, _reject, spends_id=False)


def learn_enterprise(state: RiskState, registered: EnterpriseRegistered) -> None:
    """Keep an enterprise's registration (every partition)."""
    state.enterprises[registered.account_id] = Enterprise(
        registered.account_id,
        registered.name,
        registered.uscc,
        registered.kind,
        registered.city,
        registered.ts,
    )


def learn_policy(state: RiskState, policy: VoucherPolicySet) -> None:
    """Keep the voucher policy in force (every partition)."""
    state.voucher_policy = VoucherPolicy(
        policy.max_rate_bps,
        policy.max_cap_per_enterprise,
        tuple(policy.kinds),
        tuple(policy.cities),
    )


def _register(state: RiskState, command: RegisterEnterprise, stamp: EventStamp) -> Event:
    if problem := uscc_problem(command.uscc):
        return request_rejected(command, stamp, RejectReason.INVALID_USCC, problem)
    holder = state.holder_of(command.uscc)
    if holder is not None and holder != command.account_id:
        return request_rejected(
            command,
            stamp,
            RejectReason.USCC_REGISTERED,
            f"unified social credit code {command.uscc} is registered by another account",
        )
    registered = EnterpriseRegistered(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        **command.model_dump(exclude={"type", "v"}),
    )
    learn_enterprise(state, registered)
    return registered


def _set_policy(state: RiskState, command: SetVoucherPolicy, stamp: EventStamp) -> Event:
    policy_set = VoucherPolicySet(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        **command.model_dump(exclude={"type", "v", "signature"}),
    )
    learn_policy(state, policy_set)
    return policy_set


def _apply(state: RiskState, command: ApplyForGrant, stamp: EventStamp) -> Event:
    key = scoped(command.programme_id, command.application_id)
    programme = state.accounts.programmes.get(command.programme_id)
    enterprise = state.enterprises.get(command.account_id)
    if key in state.applications:
        return request_rejected(
            command,
            stamp,
            RejectReason.DUPLICATE_APPLICATION,
            f"application {command.application_id!r} to programme {command.programme_id} exists",
        )
    if programme is None:
        return request_rejected(
            command, stamp, RejectReason.UNKNOWN_PROGRAMME, f"no programme {command.programme_id!r}"
        )
    if enterprise is None:
        return request_rejected(
            command,
            stamp,
            RejectReason.NOT_REGISTERED,
            f"account {command.account_id} has registered no enterprise: register it first",
        )
    if problem := ineligible(state, programme.programme_id, enterprise.kind, enterprise.city):
        return request_rejected(command, stamp, RejectReason.NOT_ELIGIBLE, problem)
    if not stamp.ts < programme.valid_until:
        return request_rejected(
            command,
            stamp,
            RejectReason.NOT_ELIGIBLE,
            f"programme {programme.programme_id} has ended",
        )
    if command.amount > programme.cap_per_enterprise:
        return request_rejected(
            command,
            stamp,
            RejectReason.NOT_ELIGIBLE,
            f"{command.amount} fen is above programme {programme.programme_id}'s cap per "
            f"enterprise of {programme.cap_per_enterprise} fen",
        )
    earlier = next(
        (
            a
            for a in state.applications.values()
            if a.programme_id == command.programme_id
            and (a.account_id == command.account_id or a.uscc == enterprise.uscc)
            and (a.status in OPEN or a.status == "approved")
        ),
        None,
    )
    if earlier is not None:
        return request_rejected(
            command,
            stamp,
            RejectReason.DUPLICATE_APPLICATION,
            (
                f"account {command.account_id}"
                if earlier.account_id == command.account_id
                else f"enterprise {enterprise.uscc} (through account {earlier.account_id})"
            )
            + f" already has application {earlier.application_id!r} ({earlier.status}) to "
            f"programme {command.programme_id}",
        )
    applied = GrantApplied(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        application_id=command.application_id,
        programme_id=command.programme_id,
        account_id=command.account_id,
        amount=command.amount,
        intended_use=command.intended_use,
        name=enterprise.name,
        uscc=enterprise.uscc,
        kind=enterprise.kind,
        city=enterprise.city,
    )
    state.applications[key] = Application(
        command.application_id,
        command.programme_id,
        command.account_id,
        command.amount,
        enterprise.kind,
        enterprise.city,
        uscc=enterprise.uscc,
    )
    return applied


def ineligible(state: RiskState, programme_id: str, kind: str, city: str) -> str:
    """Why an enterprise of `kind` in `city` may not have a grant of the programme now."""
    programme = state.accounts.programmes[programme_id]
    policy = state.policy()
    if kind not in programme.kinds:
        return f"programme {programme_id} is for {', '.join(programme.kinds)} only, not {kind}"
    if programme.cities and city not in programme.cities:
        return f"programme {programme_id} is for enterprises of {', '.join(programme.cities)}"
    if kind not in policy.kinds:
        return f"the voucher policy covers {', '.join(policy.kinds)} only, not {kind}"
    if policy.cities and city not in policy.cities:
        return f"the voucher policy covers enterprises of {', '.join(policy.cities)} only"
    return ""


def pending_application(
    state: RiskState,
    command: RequestApplicationInfo | RejectApplication | SupplementApplication | ApproveGrant,
    admin_id: str | None,
    status: str,
) -> tuple[Application | None, RejectReason, str]:
    """The application a step acts on if it is in `status`, else why the step is refused."""
    application = state.applications.get(scoped(command.programme_id, command.application_id))
    programme = state.accounts.programmes.get(command.programme_id)
    named = f"application {command.application_id!r} to programme {command.programme_id}"
    if programme is None:
        return None, RejectReason.UNKNOWN_PROGRAMME, f"no programme {command.programme_id!r}"
    if admin_id is not None and admin_id != programme.admin_id:
        return (
            None,
            RejectReason.NOT_PROGRAMME_ADMIN,
            f"programme {programme.programme_id} is administered by {programme.admin_id}",
        )
    applicant = command.account_id if isinstance(command, SupplementApplication) else None
    if application is None or (applicant is not None and application.account_id != applicant):
        return None, RejectReason.UNKNOWN_APPLICATION, f"no {named}"
    if application.status != status:
        return (
            None,
            RejectReason.APPLICATION_NOT_PENDING,
            f"{named} is {application.status}, not {status}",
        )
    return application, RejectReason.UNKNOWN_APPLICATION, ""


def _request_info(state: RiskState, command: RequestApplicationInfo, stamp: EventStamp) -> Event:
    application, reason, problem = pending_application(state, command, command.admin_id, "pending")
    if application is None:
        return request_rejected(command, stamp, reason, problem)
    application.status = "info_requested"
    return ApplicationInfoRequested(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        application_id=command.application_id,
        programme_id=command.programme_id,
        admin_id=command.admin_id,
        account_id=application.account_id,
        question=command.question,
    )


def _supplement(state: RiskState, command: SupplementApplication, stamp: EventStamp) -> Event:
    application, reason, problem = pending_application(state, command, None, "info_requested")
    if application is None:
        return request_rejected(command, stamp, reason, problem)
    application.status = "pending"
    return ApplicationSupplemented(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        application_id=command.application_id,
        programme_id=command.programme_id,
        account_id=command.account_id,
        answer=command.answer,
    )


def _reject(state: RiskState, command: RejectApplication, stamp: EventStamp) -> Event:
    application, reason, problem = pending_application(state, command, command.admin_id, "pending")
    if application is None:
        return request_rejected(command, stamp, reason, problem)
    application.status = "rejected"
    return ApplicationRejected(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        application_id=command.application_id,
        programme_id=command.programme_id,
        admin_id=command.admin_id,
        account_id=application.account_id,
        reason=command.reason,
    )
