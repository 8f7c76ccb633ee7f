"""Delivery requests: metering reports, disputes, their resolution and recalls. Risk checks
who may send them and passes them on as `DeliveryRequested` to the contract's matching
partition, whose delivery desk keeps the obligations and decides them; their ids are not spent
here (a metering report may be sent again; the delivery desk keeps recall ids)."""

from __future__ import annotations

from exchange.domain.catalogue import ContractSpec, to_utc_ms
from exchange.domain.messages import (
    DeliveryAction,
    DeliveryRequested,
    DisputeDelivery,
    Event,
    EventStamp,
    RecallCapacity,
    RejectReason,
    ReportMetering,
    ResolveDispute,
)
from exchange.domain.risk.requests import (
    decide_request,
    decide_signed_request,
    request_id,
    request_rejected,
)
from exchange.domain.risk.state import RiskState


def report_metering(state: RiskState, command: ReportMetering, stamp: EventStamp) -> Event:
    """A provider's report of what it delivered to one buyer."""
    return decide_request(state, command, stamp, _report_metering, spends_id=False)


def dispute_delivery(state: RiskState, command: DisputeDelivery, stamp: EventStamp) -> Event:
    """A buyer's dispute of a provider's metering."""
    return decide_request(state, command, stamp, _dispute_delivery, spends_id=False)


def resolve_dispute(state: RiskState, command: ResolveDispute, stamp: EventStamp) -> Event:
    """An operator's resolution of a disputed delivery."""
    return decide_signed_request(state, command, stamp, _resolve_dispute, spends_id=False)


def recall_capacity(state: RiskState, command: RecallCapacity, stamp: EventStamp) -> Event:
    """A provider's recall of interruptible capacity it sold, with the exchange's notice."""
    return decide_request(state, command, stamp, _recall_capacity, spends_id=False)


def _report_metering(state: RiskState, command: ReportMetering, stamp: EventStamp) -> Event:
    if command.symbol not in state.catalogue:
        return _unknown_contract(command, stamp)
    return _pass_on(
        command,
        stamp,
        "meter",
        account=command.account_id,
        provider=command.account_id,
        buyer=command.buyer_id,
        delivered=command.delivered,
        reason="",
    )


def _dispute_delivery(state: RiskState, command: DisputeDelivery, stamp: EventStamp) -> Event:
    if command.symbol not in state.catalogue:
        return _unknown_contract(command, stamp)
    return _pass_on(
        command,
        stamp,
        "dispute",
        account=command.account_id,
        provider=command.provider_id,
        buyer=command.account_id,
        delivered=0,
        reason=command.reason,
    )


def _resolve_dispute(state: RiskState, command: ResolveDispute, stamp: EventStamp) -> Event:
    if command.symbol not in state.catalogue:
        return _unknown_contract(command, stamp)
    return _pass_on(
        command,
        stamp,
        "resolve",
        account=command.operator_id,
        provider=command.provider_id,
        buyer=command.buyer_id,
        delivered=command.delivered,
        reason=command.reason,
    )


def _recall_capacity(state: RiskState, command: RecallCapacity, stamp: EventStamp) -> Event:
    contract = state.catalogue.get(command.symbol)
    if contract is None:
        return _unknown_contract(command, stamp)
    refused = _check_recall(state, command, contract, stamp.ts)
    if refused is not None:
        return request_rejected(command, stamp, *refused)
    return _pass_on(
        command,
        stamp,
        "recall",
        account=command.account_id,
        provider=command.account_id,
        buyer="",
        delivered=command.quantity,
        reason=command.reason,
    )


def _check_recall(
    state: RiskState, command: RecallCapacity, contract: ContractSpec, ts: int
) -> tuple[RejectReason, str] | None:
    """Why a recall is refused here (the matching partition checks what was sold)."""
    if contract.resource_class.firm_class is None:
        return (
            RejectReason.NOT_RECALLABLE,
            f"{command.symbol} is firm capacity: only interruptible (-INT) contracts may be "
            "recalled",
        )
    notice = state.catalogue.rules.recall_notice_ms
    if ts > to_utc_ms(contract.delivery_start) - notice:
        return (
            RejectReason.GATE_CLOSED,
            f"a recall of {command.symbol} needs {notice // 60_000} minutes' notice "
            "before its delivery hour",
        )
    return None


def _unknown_contract(
    command: ReportMetering | DisputeDelivery | ResolveDispute | RecallCapacity,
    stamp: EventStamp,
) -> Event:
    return request_rejected(
        command,
        stamp,
        RejectReason.UNKNOWN_CONTRACT,
        f"contract {command.symbol!r} is not listed",
    )


def _pass_on(
    command: ReportMetering | DisputeDelivery | ResolveDispute | RecallCapacity,
    stamp: EventStamp,
    action: DeliveryAction,
    *,
    account: str,
    provider: str,
    buyer: str,
    delivered: int,
    reason: str,
) -> DeliveryRequested:
    return DeliveryRequested(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        action=action,
        request_id=request_id(command),
        account_id=account,
        symbol=command.symbol,
        provider_id=provider,
        buyer_id=buyer,
        delivered=delivered,
        reason=reason,
    )
