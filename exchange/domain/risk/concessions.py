"""Fee concessions: an operator pays part of one participant's trading fees back to it."""

from __future__ import annotations

from exchange.domain.messages import (
    LEDGER_SEPARATOR,
    ConcessionGranted,
    Event,
    EventStamp,
    GrantConcession,
    RejectReason,
)
from exchange.domain.risk.ceilings import money_past_ceiling
from exchange.domain.risk.requests import (
    decide_signed_request,
    request_rejected,
    separator_in_id,
)
from exchange.domain.risk.state import RiskState, own


def grant_concession(state: RiskState, command: GrantConcession, stamp: EventStamp) -> Event:
    """Put a concession in force for one participant, with its budget."""
    return decide_signed_request(state, command, stamp, _grant_concession)


def _grant_concession(state: RiskState, command: GrantConcession, stamp: EventStamp) -> Event:
    if past := money_past_ceiling(state, "a concession budget", command.budget):
        return request_rejected(command, stamp, RejectReason.CEILING_EXCEEDED, past)
    if LEDGER_SEPARATOR in command.concession_id:
        return request_rejected(
            command,
            stamp,
            RejectReason.INVALID_PROGRAMME,
            separator_in_id("concession", command.concession_id),
        )
    if command.valid_until <= command.valid_from:
        return request_rejected(
            command,
            stamp,
            RejectReason.INVALID_PROGRAMME,
            "valid_until must come after valid_from",
        )
    granted = ConcessionGranted(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        **command.model_dump(exclude={"type", "v", "signature"}),
    )
    state.accounts.apply(granted, own)
    return granted
