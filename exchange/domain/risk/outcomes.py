"""What matching feeds back to risk, folded into the partition's balances and listings."""

from __future__ import annotations

from typing import get_args

from exchange.domain.accounts import Owns
from exchange.domain.enterprises import REGISTRY_KEY
from exchange.domain.messages import (
    AmendRejected,
    BundleDrawn,
    DeliverySettled,
    EnterpriseRegistered,
    EventStamp,
    FeeConceded,
    GrantApproved,
    ListingChanged,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    PlatformDiscounted,
    StripCascaded,
    TradeExecuted,
    VoucherPolicySet,
)
from exchange.domain.risk.applications import learn_enterprise, learn_policy
from exchange.domain.risk.state import RiskState

Outcome = (
    TradeExecuted
    | OrderCancelled
    | OrderAmended
    | OrderReduced
    | AmendRejected
    | DeliverySettled
    | BundleDrawn
    | GrantApproved
    | ListingChanged
    | EnterpriseRegistered
    | VoucherPolicySet
    | StripCascaded
)
"""What matching feeds back to the risk stage: everything that moves a hold or a balance, and
to every partition the listings operators change, enterprises' registrations and the voucher
policy, and every strip's cascade (whoever holds its capacity, entitlements or escrow)."""
OUTCOME_TYPES = get_args(Outcome)


def apply_outcome(
    state: RiskState, event: Outcome, owns: Owns, stamp: EventStamp
) -> list[FeeConceded | PlatformDiscounted]:
    """Fold a fill, cancel, amend, delivery or grant fed back from matching into the balances
    `owns` says are the partition's; returns the fee concessions and platform discounts it
    decided on the way, applied."""
    if isinstance(event, ListingChanged):
        _listing_changed(state, event)
    elif isinstance(event, EnterpriseRegistered | VoucherPolicySet):
        # The registry's partition applied it as it decided; a copy fed back later could
        # undo a newer registration there.
        if not owns(REGISTRY_KEY):
            if isinstance(event, EnterpriseRegistered):
                learn_enterprise(state, event)
            else:
                learn_policy(state, event)
    elif isinstance(event, GrantApproved):
        # The programme's side was applied when this stage approved the grant.
        state.accounts.apply(event, lambda key: not key.startswith("programme:") and owns(key))
    else:
        state.accounts.apply(event, owns)
    decided: list[FeeConceded | PlatformDiscounted] = [
        *_fee_concessions(state, stamp),
        *_platform_discounts(state, stamp),
    ]
    for event_decided in decided:
        state.accounts.apply(event_decided, owns)
    return decided


def _fee_concessions(state: RiskState, stamp: EventStamp) -> list[FeeConceded]:
    due = state.accounts.concessions_due
    if not due:
        return []
    conceded = [
        FeeConceded(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            concession_id=d.concession_id,
            account_id=d.account_id,
            fee=d.fee,
            discount=d.discount,
            charged_in=d.charged_in,
            trade_id=d.trade_id,
        )
        for d in due
    ]
    due.clear()
    return conceded


def _platform_discounts(state: RiskState, stamp: EventStamp) -> list[PlatformDiscounted]:
    due = state.accounts.discounts_due
    if not due:
        return []
    discounted = [
        PlatformDiscounted(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            programme_id=d.programme_id,
            account_id=d.account_id,
            amount=d.amount,
            discount=d.discount,
            trade_id=d.trade_id,
        )
        for d in due
    ]
    due.clear()
    return discounted


def _listing_changed(state: RiskState, event: ListingChanged) -> None:
    """Refuse orders into a contract operators delisted, accept them into one they listed."""
    symbol = event.symbol
    if event.listed:
        state.delisted.pop(symbol, None)
        if state.catalogue.get(symbol) is None:
            state.operator_listed.add(symbol)
    else:
        state.operator_listed.discard(symbol)
        why = f": {event.reason}" if event.reason else ""
        state.delisted[symbol] = f"contract {symbol!r} was delisted by {event.operator_id}{why}"
