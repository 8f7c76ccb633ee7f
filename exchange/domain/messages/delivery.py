"""Delivery: metering reports, disputes and their resolution, recalls of interruptible
capacity, and the obligations matching's delivery desk keeps and settles."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    model_serializer,
)

from exchange.domain.messages.common import (
    Event,
    Identifier,
    Message,
    NonNegativeInt,
    PositiveInt,
    Symbol,
    omit_defaults,
)


class ReportMetering(Message):
    """A provider reports how many units it delivered to one buyer in one contract."""

    type: Literal["ReportMetering"] = "ReportMetering"
    report_id: Identifier
    account_id: Identifier
    symbol: Symbol
    buyer_id: Identifier
    delivered: NonNegativeInt


class DisputeDelivery(Message):
    """A buyer disputes a provider's metering of one contract within the delivery window."""

    type: Literal["DisputeDelivery"] = "DisputeDelivery"
    dispute_id: Identifier
    account_id: Identifier
    symbol: Symbol
    provider_id: Identifier
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class RecallCapacity(Message):
    """A provider recalls units it sold from a recallable deposit (an interruptible `-INT`
    contract), with at least the exchange's notice before the delivery hour; their holders are
    refunded and compensated from the provider's bond."""

    type: Literal["RecallCapacity"] = "RecallCapacity"
    recall_id: Identifier
    account_id: Identifier
    symbol: Symbol
    quantity: PositiveInt
    reason: Annotated[str, Field(max_length=500)] = ""


class ResolveDispute(Message):
    """An operator settles a disputed delivery at the quantity found delivered."""

    type: Literal["ResolveDispute"] = "ResolveDispute"
    operator_id: Identifier
    symbol: Symbol
    provider_id: Identifier
    buyer_id: Identifier
    delivered: NonNegativeInt
    reason: Annotated[str, Field(max_length=500)] = ""
    signature: Annotated[str, Field(max_length=128)] = ""
    """The API's seal (exchange/domain/operators.py): only the API sends operators' commands."""


class DeliveryObligation(Event):
    """At delivery, `quantity` units of a contract a provider sold are owed to one holder.

    `amount` is the escrowed payment for them, `bond` the provider's bond standing behind them,
    `fee` the provider's trading fee on them (charged only on what is delivered); metering and
    disputes are accepted until `window_ends` (log time, ms)."""

    type: Literal["DeliveryObligation"] = "DeliveryObligation"
    symbol: str
    provider_id: str
    buyer_id: str
    quantity: StrictInt
    amount: StrictInt
    bond: StrictInt
    fee: StrictInt
    window_ends: StrictInt
    moved_from: str | None = None
    """A token bundle's obligation in its period: the holder whose obligation of the same
    provider a resale moved these units out of, with their shares of its escrow, bond and fee;
    "" for units newly owed (the allocation at the period's start, a top-up from the provider's
    capacity). None: an hour's obligation, or a bundle's stored before the desk said where its
    units came from (settlement's deliveries projection then infers it)."""

    @model_serializer(mode="wrap")
    def _wire(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Obligations of hours, and every obligation written before bundles said where their
        # units came from, keep their bytes.
        return omit_defaults(self, handler, {"moved_from": None})


DeliveryAction = Literal["meter", "dispute", "resolve", "recall"]


class DeliveryRequested(Event):
    """The risk stage passed a metering report, dispute or resolution on to the contract's
    matching partition, which keeps the obligations and decides it."""

    type: Literal["DeliveryRequested"] = "DeliveryRequested"
    action: DeliveryAction
    request_id: str
    account_id: str
    """Who asked: the provider (meter), the buyer (dispute) or the operator (resolve)."""
    symbol: str
    provider_id: str
    buyer_id: str
    delivered: StrictInt = 0
    """Units delivered (meter, resolve) or recalled (recall)."""
    reason: str = ""


class CapacityRecalled(Event):
    """A provider recalled `quantity` sold units of an interruptible contract; each holder's
    share settles as a `DeliverySettled` with nothing delivered."""

    type: Literal["CapacityRecalled"] = "CapacityRecalled"
    recall_id: str
    symbol: str
    provider_id: str
    quantity: StrictInt
    reason: str = ""


class MeteringReported(Event):
    """A provider reported what it delivered on one obligation."""

    type: Literal["MeteringReported"] = "MeteringReported"
    report_id: str
    symbol: str
    provider_id: str
    buyer_id: str
    delivered: StrictInt


class DeliveryDisputed(Event):
    """A buyer disputed an obligation's metering; it settles when an operator resolves it."""

    type: Literal["DeliveryDisputed"] = "DeliveryDisputed"
    dispute_id: str
    symbol: str
    provider_id: str
    buyer_id: str
    reason: str


class DeliverySettled(Event):
    """An obligation settled: `delivered` of `quantity` units.

    The provider receives `paid` (the delivered share of the escrow) less `fee`, and its bond
    back less `penalty`; the buyer receives `refund` (the undelivered share of the escrow) and
    `penalty` (the undelivered share of the bond). `resolved_by` names the operator who
    resolved a dispute; `recall_id` the recall that took the units back, if one did."""

    type: Literal["DeliverySettled"] = "DeliverySettled"
    symbol: str
    provider_id: str
    buyer_id: str
    quantity: StrictInt
    delivered: StrictInt
    paid: StrictInt
    fee: StrictInt
    refund: StrictInt
    bond: StrictInt
    penalty: StrictInt
    resolved_by: str | None = None
    reason: str = ""
    recall_id: str | None = None
    """The provider's recall that settled these units before their delivery hour (None: an
    obligation settled at or after it)."""
    used: StrictInt | None = None
    """A token bundle's tokens drawn down in all (None: an hour, settled by units). The
    provider was paid for them as they were metered (`BundleDrawn`); `paid` and `fee` are
    what a resolved dispute adds, `refund` the unused rest of the escrow, `penalty` 0."""

    @model_serializer(mode="wrap")
    def _wire(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Settlements written before recalls and bundles keep their bytes.
        return omit_defaults(self, handler, {"recall_id": None, "used": None})


class StripPosition(BaseModel):
    """One account's part of a strip as it cascades: an entitlement of `units` in every hour,
    or what it sold from deposited capacity (`units` in every hour, the escrow `amount`, the
    `bond` behind them and its `fee`, strip totals that split over the hours)."""

    account_id: str
    units: StrictInt
    amount: StrictInt = 0
    bond: StrictInt = 0
    fee: StrictInt = 0

    model_config = ConfigDict(frozen=True, extra="forbid")


class StripCascaded(Event):
    """A strip (a week, its nights, a month of a card or core class) became positions in its
    hourly contracts when the first of them listed; its book had closed.

    Each holder's entitlement becomes the same entitlement in every hour of `hours`; each
    provider's sale becomes a provision in every hour, its escrow, bond and fee split over the
    hours by cumulative rounding (`split_over_hours`); `escrow` is what moves from the strip's
    escrow to each hour's, in the order of `hours`. Deposited capacity left unsold becomes the
    same capacity in every hour (each account's own risk partition moves what it holds)."""

    type: Literal["StripCascaded"] = "StripCascaded"
    symbol: str
    hours: list[str]
    holders: list[StripPosition] = []
    providers: list[StripPosition] = []
    escrow: list[StrictInt] = []


def split_over_hours(total: int, hours: int) -> list[int]:
    """`total` in `hours` parts that add up to it exactly (cumulative rounding: part i is
    total x (i + 1) // hours - total x i // hours)."""
    return [total * (i + 1) // hours - total * i // hours for i in range(hours)]


class BundleDrawn(Event):
    """A provider's metering report drew a token bundle down by `tokens` (integer tokens, not
    millions), to `used` in all, and was paid for them at once: `paid` out of the escrow, less
    `fee`, its trading fee's share. Cumulative rounding: the paid so far is the obligation's
    amount x used // (quantity x 1,000,000), so the reports' parts add up to the fen."""

    type: Literal["BundleDrawn"] = "BundleDrawn"
    report_id: str
    symbol: str
    provider_id: str
    buyer_id: str
    tokens: StrictInt
    used: StrictInt
    paid: StrictInt
    fee: StrictInt
