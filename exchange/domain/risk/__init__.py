"""The risk stage: validates commands and holds funds or capacity before anything trades.

Pure and deterministic: it is a function of the commands topic alone (participants' commands
and the matching stage's fills and cancels fed back into the same partitions), so the order in
which it saw them is recorded by the log itself and a replay decides exactly the same way.

`stage` holds `RiskStage` and its dispatch table (`HANDLERS`: each command type to the one
handler that decides it); `state` the partition's state that every handler shares
(`RiskState`), with its snapshot and hash. The handlers live by family: `orders`, `blocks`,
`funds` (deposits and withdrawals of cash and capacity), `programmes`, `applications`
(enterprises' registrations and applications, and the voucher policy), `concessions`,
`delivery_requests`, `controls` (market controls) and `limits`; `requests` holds
what requests share (their ids, duplicate check and rejection), `ceilings` the exchange's
ceiling, and `outcomes` the fold of what matching feeds back.
"""

from __future__ import annotations

from exchange.domain.risk.outcomes import OUTCOME_TYPES, Outcome
from exchange.domain.risk.requests import (
    Request,
    request_id,
    request_key,
    requester,
    resolution_id,
)
from exchange.domain.risk.stage import HANDLERS, Handler, RiskStage
from exchange.domain.risk.state import AccountLimits, RiskState

__all__ = [
    "HANDLERS",
    "OUTCOME_TYPES",
    "AccountLimits",
    "Handler",
    "Outcome",
    "Request",
    "RiskStage",
    "RiskState",
    "request_id",
    "request_key",
    "requester",
    "resolution_id",
]
