"""Compute-voucher programmes and their grants, and operators' fee concessions."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    StrictInt,
)

from exchange.domain.messages.common import (
    EnterpriseKind,
    Event,
    Identifier,
    Message,
    NonNegativeInt,
    PositiveInt,
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
