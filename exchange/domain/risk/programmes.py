"""Compute-voucher programmes: administrators create them within the voucher policy and
approve enterprises' applications, carving grants out of each calendar year's budget; the
platform operator funds their discount pools."""

from __future__ import annotations

from exchange.domain.catalogue import REGIONS, RESOURCE_CLASSES
from exchange.domain.enterprises import cst_year
from exchange.domain.messages import (
    LEDGER_SEPARATOR,
    ApproveGrant,
    CreateProgramme,
    DiscountPoolFunded,
    Event,
    EventStamp,
    FundDiscountPool,
    GrantApproved,
    ProgrammeCreated,
    RejectReason,
)
from exchange.domain.risk.applications import ineligible, pending_application
from exchange.domain.risk.ceilings import money_past_ceiling
from exchange.domain.risk.requests import (
    decide_signed_request,
    request_rejected,
    separator_in_id,
)
from exchange.domain.risk.state import RiskState, own


def create_programme(state: RiskState, command: CreateProgramme, stamp: EventStamp) -> Event:
    """Create a programme with its budget and rules."""
    return decide_signed_request(state, command, stamp, _create_programme)


def approve_grant(state: RiskState, command: ApproveGrant, stamp: EventStamp) -> Event:
    """Carve an enterprise's grant out of a programme's budget. The application's status, not
    a spent id, keeps it from being granted twice: approving it again is refused as not
    pending."""
    return decide_signed_request(state, command, stamp, _approve_grant, spends_id=False)


def fund_discount_pool(state: RiskState, command: FundDiscountPool, stamp: EventStamp) -> Event:
    """Set the platform's money aside for a programme's grant holders."""
    return decide_signed_request(state, command, stamp, _fund_discount_pool)


def _fund_discount_pool(state: RiskState, command: FundDiscountPool, stamp: EventStamp) -> Event:
    if past := money_past_ceiling(state, "a discount pool", command.budget):
        return request_rejected(command, stamp, RejectReason.CEILING_EXCEEDED, past)
    programme = state.accounts.programmes.get(command.programme_id)
    if programme is None:
        return request_rejected(
            command, stamp, RejectReason.UNKNOWN_PROGRAMME, f"no programme {command.programme_id!r}"
        )
    problem = ""
    if programme.pool_bps and command.discount_bps != programme.pool_bps:
        problem = (
            f"programme {programme.programme_id}'s pool discounts {programme.pool_bps} bps: "
            "funding again adds to it at that rate"
        )
    elif command.discount_bps + programme.rate_bps > 10_000:
        problem = (
            f"the voucher pays {programme.rate_bps} bps of a purchase: the platform's discount "
            f"may be at most {10_000 - programme.rate_bps} bps"
        )
    elif not stamp.ts < programme.valid_until:
        problem = f"programme {programme.programme_id} has ended"
    if problem:
        return request_rejected(command, stamp, RejectReason.INVALID_PROGRAMME, problem)
    funded = DiscountPoolFunded(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        **command.model_dump(exclude={"type", "v", "signature"}),
    )
    state.accounts.apply(funded, own)
    return funded


def _create_programme(state: RiskState, command: CreateProgramme, stamp: EventStamp) -> Event:
    if past := money_past_ceiling(state, "a programme budget", command.budget):
        return request_rejected(command, stamp, RejectReason.CEILING_EXCEEDED, past)
    problem = ""
    if LEDGER_SEPARATOR in command.programme_id:
        problem = separator_in_id("programme", command.programme_id)
    elif command.programme_id in state.accounts.programmes:
        problem = f"programme {command.programme_id!r} exists"
    elif command.valid_until <= command.valid_from:
        problem = "valid_until must come after valid_from"
    elif command.cap_per_enterprise > command.budget:
        problem = "the cap per enterprise exceeds the budget"
    elif unknown := [c for c in command.classes if c not in RESOURCE_CLASSES]:
        problem = f"unknown resource class {unknown[0]!r}"
    elif unknown := [r for r in command.regions if r not in REGIONS]:
        problem = f"unknown region {unknown[0]!r}"
    if problem:
        return request_rejected(command, stamp, RejectReason.INVALID_PROGRAMME, problem)
    if past := state.policy().excess(
        command.rate_bps, command.cap_per_enterprise, list(command.kinds), command.cities
    ):
        return request_rejected(command, stamp, RejectReason.ABOVE_VOUCHER_POLICY, past)
    created = ProgrammeCreated(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        **command.model_dump(exclude={"type", "v", "signature"}),
    )
    state.accounts.apply(created, own)
    return created


def _approve_grant(state: RiskState, command: ApproveGrant, stamp: EventStamp) -> Event:
    application, reason, problem = pending_application(state, command, command.admin_id, "pending")
    programme = state.accounts.programmes.get(command.programme_id)
    if application is None or programme is None:
        return request_rejected(command, stamp, reason, problem)
    reason = RejectReason.NOT_ELIGIBLE
    year = cst_year(stamp.ts)
    renewed = 0
    if command.limit > application.amount:
        reason = RejectReason.ABOVE_AMOUNT_APPLIED
        problem = (
            f"a grant of {command.limit} fen is above the {application.amount} fen "
            f"{application.account_id} applied for"
        )
    elif why := ineligible(state, programme.programme_id, application.kind, application.city):
        problem = why
    elif not stamp.ts < programme.valid_until:
        problem = f"programme {programme.programme_id} has ended"
    else:
        # A new calendar year starts with the whole budget: what earlier years granted is
        # pledged again, what they left lapses.
        if programme.budget_year and year > programme.budget_year:
            renewed = programme.budget - programme.unallocated
        left = programme.unallocated + renewed
        if command.limit > left:
            reason = RejectReason.BUDGET_EXHAUSTED
            problem = (
                f"programme {programme.programme_id} has {left} fen of its {year} budget "
                f"left to grant, the grant asks {command.limit} fen"
            )
    if problem:
        return request_rejected(command, stamp, reason, problem)
    discount = programme.pool_part(command.limit)
    approved = GrantApproved(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        application_id=command.application_id,
        programme_id=programme.programme_id,
        admin_id=command.admin_id,
        account_id=application.account_id,
        limit=command.limit,
        kind=application.kind,
        city=application.city,
        related_accounts=command.related_accounts,
        rate_bps=programme.rate_bps,
        cap_per_contract=programme.cap_per_contract,
        classes=programme.classes,
        regions=programme.regions,
        valid_from=programme.valid_from,
        valid_until=programme.valid_until,
        discount_limit=discount,
        discount_bps=programme.pool_bps if discount else 0,
        renewed=renewed,
        budget_year=year,
    )
    application.status = "approved"
    # Only the programme's side here: the enterprise's is applied where its account lives,
    # when matching feeds the grant back (see `outcomes.apply_outcome`).
    state.accounts.apply(approved, lambda key: key.startswith("programme:"))
    return approved
