"""The risk stage: one dispatch table from each command's type to the handler of its family."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from exchange.domain import accounts as money
from exchange.domain.accounts import Accounts, Owns
from exchange.domain.catalogue import Catalogue, ContractSpec
from exchange.domain.messages import (
    AmendOrder,
    ApplyForGrant,
    ApproveGrant,
    CancelAllOrders,
    CancelOrder,
    Command,
    CommandRejected,
    ControlMarket,
    CreateProgramme,
    DepositCapacity,
    DepositFunds,
    DisputeDelivery,
    Event,
    EventStamp,
    FeeConceded,
    FundDiscountPool,
    GrantConcession,
    Message,
    PlaceBlockOrder,
    PlaceExclusiveGroup,
    PlaceOrder,
    PlatformDiscounted,
    RecallCapacity,
    RegisterEnterprise,
    RejectApplication,
    RejectReason,
    ReportMetering,
    RequestApplicationInfo,
    ResolveDispute,
    SetAccountLimits,
    SetVoucherPolicy,
    SupplementApplication,
    WithdrawCapacity,
    WithdrawFunds,
)
from exchange.domain.operators import OperatorSeal
from exchange.domain.risk import (
    applications,
    blocks,
    concessions,
    controls,
    dayahead,
    delivery_requests,
    funds,
    limits,
    orders,
    outcomes,
    programmes,
)
from exchange.domain.risk.state import RiskState

Handler = Callable[[RiskState, Any, EventStamp], Event]
"""Decides one command of the type it is registered for, moving the state as it decides."""

_Decided = TypeVar("_Decided", bound=Message)


def _handles(
    kind: type[_Decided], handler: Callable[[RiskState, _Decided, EventStamp], Event]
) -> tuple[type[Message], Handler]:
    """An entry of the table, whose handler mypy checks takes commands of `kind`."""
    return kind, handler


def dispatch_table(*entries: tuple[type[Message], Handler]) -> Mapping[type[Message], Handler]:
    """The table of `entries`, refusing a command type given two handlers."""
    table: dict[type[Message], Handler] = {}
    for kind, handler in entries:
        if kind in table:
            raise ValueError(
                f"{kind.__name__} has two handlers: {table[kind].__qualname__} and "
                f"{handler.__qualname__}"
            )
        table[kind] = handler
    return table


HANDLERS = dispatch_table(
    _handles(PlaceOrder, orders.place_order),
    _handles(CancelOrder, orders.cancel_order),
    _handles(AmendOrder, orders.amend_order),
    _handles(CancelAllOrders, orders.cancel_all_orders),
    _handles(PlaceBlockOrder, blocks.place_block_order),
    _handles(PlaceExclusiveGroup, dayahead.place_exclusive_group),
    _handles(DepositFunds, funds.deposit_funds),
    _handles(DepositCapacity, funds.deposit_capacity),
    _handles(WithdrawFunds, funds.withdraw_funds),
    _handles(WithdrawCapacity, funds.withdraw_capacity),
    _handles(CreateProgramme, programmes.create_programme),
    _handles(ApproveGrant, programmes.approve_grant),
    _handles(RegisterEnterprise, applications.register_enterprise),
    _handles(ApplyForGrant, applications.apply_for_grant),
    _handles(RequestApplicationInfo, applications.request_info),
    _handles(SupplementApplication, applications.supplement),
    _handles(RejectApplication, applications.reject_application),
    _handles(SetVoucherPolicy, applications.set_voucher_policy),
    _handles(GrantConcession, concessions.grant_concession),
    _handles(FundDiscountPool, programmes.fund_discount_pool),
    _handles(ReportMetering, delivery_requests.report_metering),
    _handles(DisputeDelivery, delivery_requests.dispute_delivery),
    _handles(ResolveDispute, delivery_requests.resolve_dispute),
    _handles(RecallCapacity, delivery_requests.recall_capacity),
    _handles(ControlMarket, controls.control_market),
    _handles(SetAccountLimits, limits.set_account_limits),
)
"""Every command type, to the one handler that decides it."""


class RiskStage:
    """Accepts or rejects each command of the accounts in its partitions."""

    def __init__(
        self, catalogue: Catalogue, seal: OperatorSeal | None = None, partitions: int = 1
    ) -> None:
        self.state = RiskState.empty(catalogue, seal, partitions)

    @property
    def catalogue(self) -> Catalogue:
        """The contracts and rules the stage decides by."""
        return self.state.catalogue

    @property
    def accounts(self) -> Accounts:
        """The balances, holds and open orders of the partition's accounts."""
        return self.state.accounts

    @property
    def money_in(self) -> int:
        """Fen this partition's decisions brought into the exchange, net."""
        return self.state.money_in

    def listed(self, symbol: str, at_ms: int) -> ContractSpec | None:
        """The contract if it is listed at log time `at_ms` (see `RiskState.listed`)."""
        return self.state.listed(symbol, at_ms)

    def handle(self, command: Command, stamp: EventStamp) -> Event:
        """Decide one command; the returned event goes to the orders topic."""
        state = self.state
        decided = HANDLERS[type(command)](state, command, stamp)
        state.money_in += money.money_brought_in(decided)
        return decided

    def reject_malformed(self, source: str, message: str, stamp: EventStamp) -> CommandRejected:
        """Report a record that is not a valid command; it changes nothing."""
        return CommandRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            reason=RejectReason.MALFORMED,
            message=message,
            source=source,
        )

    def apply_outcome(
        self, event: outcomes.Outcome, owns: Owns, stamp: EventStamp
    ) -> list[FeeConceded | PlatformDiscounted]:
        """Fold a fill, cancel, amend, delivery or grant fed back from matching into the
        balances it owns; returns the fee concessions and platform discounts it decided on the
        way, applied."""
        return outcomes.apply_outcome(self.state, event, owns, stamp)

    def state_hash(self) -> str:
        """SHA-256 of the stage's whole state in a canonical form."""
        return self.state.state_hash()

    def snapshot(self) -> dict[str, Any]:
        """The stage's whole state, JSON-ready."""
        return self.state.snapshot()

    @classmethod
    def restore(
        cls,
        catalogue: Catalogue,
        data: dict[str, Any],
        seal: OperatorSeal | None = None,
        partitions: int = 1,
    ) -> RiskStage:
        """The stage a snapshot describes."""
        stage = cls(catalogue, seal, partitions)
        stage.state = RiskState.restore(catalogue, data, seal, partitions)
        return stage
