"""Compute-voucher programmes and their grants, and operators' fee concessions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    model_serializer,
)

from exchange.domain.messages.common import (
    EnterpriseKind,
    Event,
    Identifier,
    Message,
    NonNegativeInt,
    PositiveInt,
    omit_defaults,
)


def _small_enterprises() -> list[EnterpriseKind]:
    return ["sme", "opc"]


class CreateProgramme(Message):
    """A programme administrator creates a compute-voucher programme.

    The voucher part of a buyer's fill is the least of `rate_bps` of the amount paid, what is
    left of the per-order cap `cap_per_contract`, and what is left of the enterprise's grant
    (grants are carved out of `budget`, and `cap_per_enterprise` bounds each grant).
    """

    type: Literal["CreateProgramme"] = "CreateProgramme"
    programme_id: Identifier
    admin_id: Identifier
    issuer: Annotated[str, Field(min_length=1, max_length=200)]
    budget: PositiveInt
    rate_bps: Annotated[StrictInt, Field(gt=0, le=10_000)] = 3_000
    cap_per_contract: PositiveInt
    cap_per_enterprise: PositiveInt
    classes: Annotated[list[Identifier], Field(max_length=64)] = Field(default_factory=list)
    """Eligible resource classes (empty: all)."""
    regions: Annotated[list[Identifier], Field(max_length=16)] = Field(default_factory=list)
    """Eligible regions (empty: all)."""
    kinds: Annotated[list[EnterpriseKind], Field(min_length=1, max_length=4)] = Field(
        default_factory=_small_enterprises
    )
    cities: Annotated[list[Identifier], Field(max_length=64)] = Field(default_factory=list)
    """Cities whose registered enterprises are eligible (empty: any)."""
    valid_from: NonNegativeInt
    valid_until: NonNegativeInt
    signature: Annotated[str, Field(max_length=128)] = ""
    """The API's seal: only the API sends programme administrators' commands."""


class ApproveGrant(Message):
    """A programme administrator approves an enterprise's application: a grant of `limit`."""

    type: Literal["ApproveGrant"] = "ApproveGrant"
    application_id: Identifier
    """The enterprise's application: one grant each."""
    programme_id: Identifier
    admin_id: Identifier
    account_id: Identifier
    limit: PositiveInt
    kind: EnterpriseKind
    city: Identifier
    related_accounts: Annotated[list[Identifier], Field(max_length=100)] = Field(
        default_factory=list
    )
    """Accounts of the enterprise's ownership group: no voucher on trades with them."""
    signature: Annotated[str, Field(max_length=128)] = ""
    """The API's seal: only the API sends programme administrators' commands."""


class GrantConcession(Message):
    """An operator's fee concession to one participant (e.g. each SME of a class): `discount_bps`
    of its trading fees are paid back to it, from a `budget` the platform sets aside, while
    the log time is in [`valid_from`, `valid_until`). Signed like `ControlMarket`."""

    type: Literal["GrantConcession"] = "GrantConcession"
    concession_id: Identifier
    operator_id: Identifier
    account_id: Identifier
    discount_bps: Annotated[StrictInt, Field(gt=0, le=10_000)]
    budget: PositiveInt
    valid_from: NonNegativeInt
    valid_until: NonNegativeInt
    reason: Annotated[str, Field(max_length=500)] = ""
    signature: Annotated[str, Field(max_length=128)] = ""


class FundDiscountPool(Message):
    """The platform operator sets money aside for a programme's grant holders: the platform's
    share of the cost, beside the government's voucher. Each grant approved afterwards carries
    a part of the pool in proportion to the grant (`discount_bps` against the programme's
    voucher rate), and each purchase paid with the voucher is discounted `discount_bps` of its
    amount from that part. Funding again adds to the pool at the same rate. Signed like
    `ControlMarket`."""

    type: Literal["FundDiscountPool"] = "FundDiscountPool"
    pool_id: Identifier
    """The funding's own id: a retry of the same funding is refused as a duplicate."""
    operator_id: Identifier
    programme_id: Identifier
    discount_bps: Annotated[StrictInt, Field(gt=0, le=10_000)]
    budget: PositiveInt
    signature: Annotated[str, Field(max_length=128)] = ""


class ProgrammeCreated(Event):
    """A compute-voucher programme exists with its budget and rules."""

    type: Literal["ProgrammeCreated"] = "ProgrammeCreated"
    programme_id: str
    admin_id: str
    issuer: str
    budget: StrictInt
    rate_bps: StrictInt
    cap_per_contract: StrictInt
    cap_per_enterprise: StrictInt
    classes: list[str]
    regions: list[str]
    kinds: list[str]
    cities: list[str]
    valid_from: StrictInt
    valid_until: StrictInt


class GrantApproved(Event):
    """A grant of `limit` fen was carved out of a programme's budget for one enterprise; it
    carries the programme's rules so the enterprise's partition can apply them."""

    type: Literal["GrantApproved"] = "GrantApproved"
    application_id: str
    programme_id: str
    admin_id: str
    account_id: str
    limit: StrictInt
    kind: str
    city: str
    related_accounts: list[str]
    rate_bps: StrictInt
    cap_per_contract: StrictInt
    classes: list[str]
    regions: list[str]
    valid_from: StrictInt
    valid_until: StrictInt
    discount_limit: StrictInt = 0
    """The platform's part for this enterprise, carved out of the programme's discount pool."""
    discount_bps: StrictInt = 0
    """The platform's discount on each purchase paid with the voucher (0: no pool)."""

    @model_serializer(mode="wrap")
    def _wire(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A grant without the platform's part keeps the bytes it had before pools existed.
        return omit_defaults(self, handler, {"discount_limit": 0, "discount_bps": 0})


class DiscountPoolFunded(Event):
    """The operator funded a programme's discount pool from the platform's money."""

    type: Literal["DiscountPoolFunded"] = "DiscountPoolFunded"
    pool_id: str
    operator_id: str
    programme_id: str
    discount_bps: StrictInt
    budget: StrictInt


class PlatformDiscounted(Event):
    """The risk stage gave a grant holder the platform's discount on a purchase paid with the
    voucher, from the holder's part of the programme's pool. Decided in the buyer's order, like
    `FeeConceded`, so settlement spends the part exactly as risk did."""

    type: Literal["PlatformDiscounted"] = "PlatformDiscounted"
    programme_id: str
    account_id: str
    amount: StrictInt
    """The purchase's gross amount the discount is a share of."""
    discount: StrictInt
    trade_id: str


class ConcessionGranted(Event):
    """A fee concession is in force for one participant, with its budget."""

    type: Literal["ConcessionGranted"] = "ConcessionGranted"
    concession_id: str
    operator_id: str
    account_id: str
    discount_bps: StrictInt
    budget: StrictInt
    valid_from: StrictInt
    valid_until: StrictInt
    reason: str = ""


class FeeConceded(Event):
    """The risk stage paid an account back part of a fee it was charged, from its concession.

    Risk decides it as the account's fee is charged (a fill, or a provider's delivery), in the
    account's own order, and settlement applies it as it comes: the concession's budget is then
    spent the same way whatever order settlement reads the partitions in. `charged_in` is the
    journal entry that charged the fee; `trade_id` the fill's trade (None at delivery)."""

    type: Literal["FeeConceded"] = "FeeConceded"
    concession_id: str
    account_id: str
    fee: StrictInt
    discount: StrictInt
    charged_in: str
    trade_id: str | None = None
