"""What every family of messages shares: ids and field types, the reasons of rejections, the
`Message` and `Event` bases, the rejections any family may answer with, and event stamps."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, StrictInt

from matching.outputs import RefusalReason

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
LEDGER_SEPARATOR = ":"
"""Joins the parts of a ledger account's name: `grant:PROGRAMME:ACCOUNT`."""
LedgerPart = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="letters, digits, '_', '.' and '-': not ':', which separates the parts of "
        "the ledger accounts named after it",
    ),
]
"""The id of a programme or a concession, which a ledger account's name holds before an account
id (`grant:PROGRAMME:ACCOUNT`): without `:`, the name splits one way only (`split(":", 2)`),
whatever the account id holds. Events keep `Identifier`: histories from before decode as they
were written."""

SCOPE = "/"
"""Joins an owner to a name in `scoped`: no `Identifier` contains it."""


def scoped(owner: str, name: str) -> str:
    """A name in its owner's scope (`owner/name`): since neither contains `/`, two owners'
    names never meet, and a scoped name is never a bare one."""
    return f"{owner}{SCOPE}{name}"


def exchange_order_id(account_id: str, order_id: str) -> str:
    """The exchange's id of the order (or block) `account_id` placed as `order_id`.

    The risk stage gives every order this id, derived from the account and the id its sender
    chose, so two accounts can never name one order, whatever either sends: the events, the
    books, the ledger and the API all know the order by it. 42 characters:
    `o-` and the first 40 hex digits of SHA-256 of `order`, the account and the order id, each
    followed by a newline but the last.
    """
    digest = hashlib.sha256(f"order\n{account_id}\n{order_id}".encode()).hexdigest()
    return f"o-{digest[:40]}"


Symbol = Annotated[str, Field(min_length=1, max_length=64)]
PositiveInt = Annotated[StrictInt, Field(gt=0, le=10**15)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0, le=10**15)]
Side = Literal["buy", "sell"]
TimeInForce = Literal["GTC", "GTD", "DAY", "IOC", "FOK"]
OrderType = Literal["limit", "market"]
StpMode = Literal["cancel_resting", "cancel_incoming", "cancel_both", "decrement"]
LimitBasis = Literal["gross", "net"]
Backing = Literal["capacity", "entitlement"]
EnterpriseKind = Literal["sme", "opc", "large", "lab"]


class RejectReason(StrEnum):
    """Stable, machine-readable reasons for a rejection."""

    # The values matching refuses with are the engine's (`RefusalReason`), so they cannot drift.
    MALFORMED = "malformed"
    UNKNOWN_CONTRACT = RefusalReason.UNKNOWN_CONTRACT.value
    PRICE_NOT_ON_TICK = "price_not_on_tick"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INSUFFICIENT_CAPACITY = "insufficient_capacity"
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    DUPLICATE_DEPOSIT_ID = "duplicate_deposit_id"
    UNKNOWN_ORDER = RefusalReason.UNKNOWN_ORDER.value
    NOT_ORDER_OWNER = RefusalReason.NOT_ORDER_OWNER.value
    ORDER_NOT_OPEN = "order_not_open"
    NOT_AMENDABLE = RefusalReason.NOT_AMENDABLE.value
    INVALID_PRICE = RefusalReason.INVALID_PRICE.value
    INVALID_QUANTITY = RefusalReason.INVALID_QUANTITY.value
    POST_ONLY_WOULD_TAKE = RefusalReason.POST_ONLY_WOULD_TAKE.value
    NOT_CONTINUOUS = RefusalReason.NOT_CONTINUOUS.value
    NOT_HALTED = RefusalReason.NOT_HALTED.value
    INVALID_BLOCK = "invalid_block"
    DUPLICATE_ID = "duplicate_id"
    GATE_CLOSED = "gate_closed"
    NO_OBLIGATION = "no_obligation"
    METERING_EXCEEDS_OBLIGATION = "metering_exceeds_obligation"
    DELIVERY_WINDOW_CLOSED = "delivery_window_closed"
    METERING_EXCEEDS_BUNDLE = "metering_exceeds_bundle"
    """A token bundle's metering whose total would pass the tokens the holder bought of it."""
    BUNDLE_PERIOD_OVER = "bundle_period_over"
    """A token bundle's metering after its period ended: nothing is drawn down after it."""
    BUNDLE_NOT_STARTED = "bundle_not_started"
    """A token bundle's metering before its period started: nothing is owed yet."""
    BUNDLE_OFFERED_FOR_RESALE = "bundle_offered_for_resale"
    """A token bundle's metering that would draw into units its holder offers for resale."""
    OBLIGATION_SETTLED = "obligation_settled"
    """A resale of units whose delivery obligation already settled (a token bundle's dispute
    resolved in its period): refunded to the holder, they are not its to sell (matching
    cancels a resting resale of them with the same reason)."""
    NOT_DISPUTED = "not_disputed"
    INVALID_PROGRAMME = "invalid_programme"
    UNKNOWN_PROGRAMME = "unknown_programme"
    NOT_ELIGIBLE = "not_eligible"
    BUDGET_EXHAUSTED = "budget_exhausted"
    NOT_RECALLABLE = "not_recallable"
    NOT_PROGRAMME_ADMIN = "not_programme_admin"
    RECALL_EXCEEDS_SOLD = "recall_exceeds_sold"
    NOT_OPERATOR = "not_operator"
    """An operator command without a valid signature of the API's operator key."""
    CONTRACT_DELISTED = "contract_delisted"
    ALREADY_LISTED = RefusalReason.ALREADY_LISTED.value
    NOT_PRE_OPEN = RefusalReason.NOT_PRE_OPEN.value
    IN_AUCTION = RefusalReason.IN_AUCTION.value
    CONTRACT_CLOSED = RefusalReason.CONTRACT_CLOSED.value
    ACCOUNT_LIMIT_EXCEEDED = "account_limit_exceeded"
    """The order would take the account past a limit an operator set (`SetAccountLimits`)."""
    INVALID_USCC = "invalid_uscc"
    """A unified social credit code that is not one (length, character or check character)."""
    USCC_REGISTERED = "uscc_registered"
    """Another account registered the unified social credit code."""
    NOT_REGISTERED = "not_registered"
    """The account has registered no enterprise."""
    DUPLICATE_APPLICATION = "duplicate_application"
    UNKNOWN_APPLICATION = "unknown_application"
    APPLICATION_NOT_PENDING = "application_not_pending"
    ABOVE_AMOUNT_APPLIED = "above_amount_applied"
    """An approval grants more than the enterprise applied for."""
    ABOVE_VOUCHER_POLICY = "above_voucher_policy"
    """A programme asks for more than the platform's voucher policy allows."""
    NO_DAY_AHEAD_AUCTION = "no_day_ahead_auction"
    """A day-ahead order on an exchange that runs no day-ahead auction (`CX_DAY_AHEAD_GATE`)."""
    ALREADY_AUCTIONED = "already_auctioned"
    """A day-ahead order for an hour whose day-ahead auction has passed its gate."""
    TOO_MANY_ALTERNATIVES = "too_many_alternatives"
    """An exclusive group (a need) of more alternatives than an auction takes."""
    EXPIRY_NEEDS_GTD = "expiry_needs_gtd"
    """An `expire_at` on an order that is not GTD, which would never expire by it. The API
    refuses it by the same code; risk refuses one produced straight to the log. Orders
    accepted before risk checked keep their `expire_at` in their events, which matching
    ignores as it always did, so their histories replay unchanged."""
    CEILING_EXCEEDED = "ceiling_exceeded"
    """An amount would pass the exchange's ceiling (`accounts.CEILING`): the money inside the
    exchange, an account's capacity in one contract, or one order's price x quantity."""
    AMEND_ABOVE_BOND = "amend_above_bond"
    """An amend raising a bonded sell's price above what its delivery bond covers: the bond
    per unit is fixed at acceptance and carried in the events the delivery desk and settlement
    read, so the seller cancels and places a new order at the new price. Amends that risk
    accepted before it checked are in their histories as `AmendRequested`, which matching and
    every fold apply as they always did, so those histories replay unchanged."""


Currency = Literal["CNY"]
"""Quote currencies; amounts are integer minor units (fen)."""


class Message(BaseModel):
    """Base of every command and event: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1


def omit_defaults(
    message: BaseModel, handler: SerializerFunctionWrapHandler, defaults: dict[str, Any]
) -> dict[str, Any]:
    """Leave fields that keep their defaults off the wire, so messages written before those
    fields existed keep their bytes."""
    data: dict[str, Any] = handler(message)
    for name, default in defaults.items():
        if name in data and data[name] == default:
            del data[name]
    return data


class Event(Message):
    """Base of every event: its id and the log time of the input that caused it."""

    event_id: str
    ts: StrictInt


class CommandRejected(Event):
    """A record on the commands topic could not be decoded; it changed nothing."""

    type: Literal["CommandRejected"] = "CommandRejected"
    reason: RejectReason
    message: str
    source: str
    """topic:partition:offset of the record."""


class RequestRejected(Event):
    """A withdrawal, metering report, dispute or programme command was refused; nothing changed.

    `request` names the command type and `request_id` its id (withdrawal, report, dispute,
    programme or grant)."""

    type: Literal["RequestRejected"] = "RequestRejected"
    request: str
    request_id: str
    account_id: str
    reason: RejectReason
    message: str


class EventStamp:
    """Gives the events caused by one input record their ids and the record's log time.

    Ids are `topic:partition:offset:n`, so replaying the same input yields the same ids.
    """

    __slots__ = ("_count", "_prefix", "_record", "ts")

    def __init__(self, topic: str, partition: int, offset: int, ts: int) -> None:
        self._record = (topic, partition, offset)
        self._prefix: str | None = None
        """Made at the first id: a replay stamps every order it folds and asks for none."""
        self._count = 0
        self.ts = ts

    def next_id(self) -> str:
        """A fresh event id for this input."""
        prefix = self._prefix
        if prefix is None:
            topic, partition, offset = self._record
            prefix = self._prefix = f"{topic}:{partition}:{offset}:"
        event_id = f"{prefix}{self._count}"
        self._count += 1
        return event_id
