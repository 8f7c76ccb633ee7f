"""Compute-voucher programmes, enterprises' identities and applications, the grants approved
from them, the platform's voucher policy, and operators' fee concessions."""

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

RegisteredKind = Literal["sme", "opc", "large"]
"""What an enterprise registers as: a small or medium enterprise, a one-person company
(一人公司) or a large enterprise."""
Uscc = Annotated[str, Field(min_length=1, max_length=64)]
"""A unified social credit code as sent: the risk stage checks it (`exchange.domain.uscc`),
so a bad one is refused with what is wrong with it rather than a bare pattern mismatch."""
Text = Annotated[str, Field(min_length=1, max_length=2_000)]


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


class RegisterEnterprise(Message):
    """An account registers the enterprise behind it (again: its registration is replaced)."""

    type: Literal["RegisterEnterprise"] = "RegisterEnterprise"
    account_id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=200)]
    uscc: Uscc
    """Its unified social credit code (统一社会信用代码): one account each."""
    kind: RegisteredKind
    city: Identifier


class ApplyForGrant(Message):
    """A registered enterprise applies to a programme for a grant (算力券申领)."""

    type: Literal["ApplyForGrant"] = "ApplyForGrant"
    application_id: Identifier
    """The application's id in the programme: one application each."""
    account_id: Identifier
    programme_id: Identifier
    amount: PositiveInt
    """Fen asked for."""
    intended_use: Text


class RequestApplicationInfo(Message):
    """A programme administrator asks the applicant a question before deciding."""

    type: Literal["RequestApplicationInfo"] = "RequestApplicationInfo"
    application_id: Identifier
    programme_id: Identifier
    admin_id: Identifier
    question: Text
    signature: Annotated[str, Field(max_length=128)] = ""
    """The API's seal: only the API sends programme administrators' commands."""


class SupplementApplication(Message):
    """The applicant answers the administrator's question; the application is pending again."""

    type: Literal["SupplementApplication"] = "SupplementApplication"
    application_id: Identifier
    programme_id: Identifier
    account_id: Identifier
    answer: Text


class RejectApplication(Message):
    """A programme administrator rejects a pending application, saying why."""

    type: Literal["RejectApplication"] = "RejectApplication"
    application_id: Identifier
    programme_id: Identifier
    admin_id: Identifier
    reason: Text
    signature: Annotated[str, Field(max_length=128)] = ""
    """The API's seal: only the API sends programme administrators' commands."""


class ApproveGrant(Message):
    """A programme administrator approves a pending application: a grant of `limit` fen to the
    enterprise that applied, whose kind and city are those it registered."""

    type: Literal["ApproveGrant"] = "ApproveGrant"
    application_id: Identifier
    """The enterprise's application: one grant each."""
    programme_id: Identifier
    admin_id: Identifier
    limit: PositiveInt
    related_accounts: Annotated[list[Identifier], Field(max_length=100)] = Field(
        default_factory=list
    )
    """Accounts of the enterprise's ownership group: no voucher on trades with them."""
    signature: Annotated[str, Field(max_length=128)] = ""
    """The API's seal: only the API sends programme administrators' commands."""


class SetVoucherPolicy(Message):
    """The platform operator's ceilings on every programme (signed like `ControlMarket`): the
    highest voucher share of a contract amount, the highest cap per enterprise, and which
    kinds of enterprise and which cities programmes may cover (empty cities: any)."""

    type: Literal["SetVoucherPolicy"] = "SetVoucherPolicy"
    operator_id: Identifier
    max_rate_bps: Annotated[StrictInt, Field(gt=0, le=10_000)]
    max_cap_per_enterprise: PositiveInt
    kinds: Annotated[list[RegisteredKind], Field(min_length=1, max_length=3)]
    cities: Annotated[list[Identifier], Field(max_length=64)] = Field(default_factory=list)
    reason: Annotated[str, Field(max_length=500)] = ""
    signature: Annotated[str, Field(max_length=128)] = ""


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


class EnterpriseRegistered(Event):
    """An account's enterprise identity, fed to every risk partition (each decides
    applications and programmes against it)."""

    type: Literal["EnterpriseRegistered"] = "EnterpriseRegistered"
    account_id: str
    name: str
    uscc: str
    kind: str
    city: str


class GrantApplied(Event):
    """An enterprise applied for a grant; it carries the identity it applied with."""

    type: Literal["GrantApplied"] = "GrantApplied"
    application_id: str
    programme_id: str
    account_id: str
    amount: StrictInt
    intended_use: str
    name: str
    uscc: str
    kind: str
    city: str


class ApplicationInfoRequested(Event):
    """The administrator asked the applicant a question; the application waits for the answer."""

    type: Literal["ApplicationInfoRequested"] = "ApplicationInfoRequested"
    application_id: str
    programme_id: str
    admin_id: str
    account_id: str
    question: str


class ApplicationSupplemented(Event):
    """The applicant answered; the application is pending again."""

    type: Literal["ApplicationSupplemented"] = "ApplicationSupplemented"
    application_id: str
    programme_id: str
    account_id: str
    answer: str


class ApplicationRejected(Event):
    """The administrator rejected the application; the enterprise may apply again."""

    type: Literal["ApplicationRejected"] = "ApplicationRejected"
    application_id: str
    programme_id: str
    admin_id: str
    account_id: str
    reason: str


class VoucherPolicySet(Event):
    """The platform's voucher ceilings in force from now, fed to every risk partition."""

    type: Literal["VoucherPolicySet"] = "VoucherPolicySet"
    operator_id: str
    max_rate_bps: StrictInt
    max_cap_per_enterprise: StrictInt
    kinds: list[str]
    cities: list[str]
    reason: str = ""


class GrantApproved(Event):
    """A grant of `limit` fen was carved out of a programme's budget for one enterprise; it
    carries the programme's rules so the enterprise's partition can apply them.

    The first grant of a calendar year (China Standard Time) renews the budget: `renewed` fen,
    what the earlier years granted since the last renewal, are pledged again so the year
    starts with the whole budget (what they left ungranted lapses)."""

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
    renewed: StrictInt = 0
    budget_year: StrictInt = 0
    """The calendar year whose budget the grant counts against (0: before years were kept)."""

    @model_serializer(mode="wrap")
    def _wire(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Fields that keep their defaults stay off the wire: a grant keeps the bytes it had
        # before pools and budget years existed.
        return omit_defaults(
            self,
            handler,
            {"discount_limit": 0, "discount_bps": 0, "renewed": 0, "budget_year": 0},
        )


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
