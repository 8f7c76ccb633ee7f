"""Commands and events: frozen pydantic models and their versioned JSON wire format.

Every message on every topic is one JSON object with a `type` naming the message and a `v`
giving its schema version, plus the message's fields (see docs/WIRE_FORMAT.md). Commands are
what participants ask for (verb-noun); events are what the exchange decided (past tense) and
carry a globally unique `event_id` and `ts`, the log time in milliseconds of the input that
caused them. Money and prices are integer fen (0.01 CNY); quantities are integer units.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Symbol = Annotated[str, Field(min_length=1, max_length=64)]
PositiveInt = Annotated[StrictInt, Field(gt=0, le=10**15)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0, le=10**15)]
Side = Literal["buy", "sell"]


class RejectReason(StrEnum):
    """Stable, machine-readable reasons for a rejection."""

    MALFORMED = "malformed"
    UNKNOWN_CONTRACT = "unknown_contract"
    PRICE_NOT_ON_TICK = "price_not_on_tick"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INSUFFICIENT_CAPACITY = "insufficient_capacity"
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    DUPLICATE_DEPOSIT_ID = "duplicate_deposit_id"
    UNKNOWN_ORDER = "unknown_order"
    NOT_ORDER_OWNER = "not_order_owner"
    ORDER_NOT_OPEN = "order_not_open"


class CancelReason(StrEnum):
    """Why an order left the book without filling completely."""

    REQUESTED = "requested"
    CONTRACT_NOT_TRADING = "contract_not_trading"


Currency = Literal["CNY"]
"""Quote currencies; amounts are integer minor units (fen)."""


class Message(BaseModel):
    """Base of every command and event: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1


class PlaceOrder(Message):
    """Place a limit order; `order_id` is chosen by the submitter and must be new."""

    type: Literal["PlaceOrder"] = "PlaceOrder"
    order_id: Identifier
    account_id: Identifier
    symbol: Symbol
    side: Side
    price: PositiveInt
    quantity: PositiveInt
    client_order_id: Identifier | None = None


class CancelOrder(Message):
    """Cancel what remains of an open order."""

    type: Literal["CancelOrder"] = "CancelOrder"
    order_id: Identifier
    account_id: Identifier


class DepositFunds(Message):
    """Credit cash to an account, in fen of `currency`."""

    type: Literal["DepositFunds"] = "DepositFunds"
    deposit_id: Identifier
    account_id: Identifier
    amount: PositiveInt
    currency: Currency = "CNY"


class DepositCapacity(Message):
    """Make capacity sellable: `quantity` units of one contract that the provider will deliver."""

    type: Literal["DepositCapacity"] = "DepositCapacity"
    deposit_id: Identifier
    account_id: Identifier
    symbol: Symbol
    quantity: PositiveInt


Command = Annotated[
    PlaceOrder | CancelOrder | DepositFunds | DepositCapacity, Field(discriminator="type")
]


class Event(Message):
    """Base of every event: its id and the log time of the input that caused it."""

    event_id: str
    ts: StrictInt


class FundsDeposited(Event):
    """Cash was credited to an account.

    Version 2 names the currency; version 1 (no `currency`) was always CNY fen.
    """

    v: Literal[2] = 2  # type: ignore[assignment]
    type: Literal["FundsDeposited"] = "FundsDeposited"
    deposit_id: str
    account_id: str
    amount: StrictInt
    currency: Currency


class CapacityDeposited(Event):
    """A provider's capacity in one contract became sellable."""

    type: Literal["CapacityDeposited"] = "CapacityDeposited"
    deposit_id: str
    account_id: str
    symbol: str
    quantity: StrictInt


class DepositRejected(Event):
    """A deposit was refused; nothing changed."""

    type: Literal["DepositRejected"] = "DepositRejected"
    deposit_id: str
    account_id: str
    reason: RejectReason
    message: str


class OrderAccepted(Event):
    """The risk stage held the order's cash or capacity and sent it to matching."""

    type: Literal["OrderAccepted"] = "OrderAccepted"
    order_id: str
    account_id: str
    symbol: str
    side: Side
    price: StrictInt
    quantity: StrictInt
    client_order_id: str | None = None


class OrderRejected(Event):
    """An order was refused; nothing was held."""

    type: Literal["OrderRejected"] = "OrderRejected"
    order_id: str
    account_id: str
    symbol: str
    side: Side
    price: StrictInt
    quantity: StrictInt
    client_order_id: str | None = None
    reason: RejectReason
    message: str


class CancelRequested(Event):
    """The risk stage checked a cancel's ownership and sent it to matching."""

    type: Literal["CancelRequested"] = "CancelRequested"
    order_id: str
    account_id: str
    symbol: str


class CancelRejected(Event):
    """A cancel was refused; the order is unchanged."""

    type: Literal["CancelRejected"] = "CancelRejected"
    order_id: str
    account_id: str
    reason: RejectReason
    message: str


class OrderCancelled(Event):
    """An order left the book; `remaining` units were never filled and their hold is released."""

    type: Literal["OrderCancelled"] = "OrderCancelled"
    order_id: str
    account_id: str
    symbol: str
    side: Side
    remaining: StrictInt
    reason: CancelReason


class TradeExecuted(Event):
    """A buy and a sell order matched: `quantity` units at `price`."""

    type: Literal["TradeExecuted"] = "TradeExecuted"
    trade_id: str
    symbol: str
    price: StrictInt
    quantity: StrictInt
    buy_order_id: str
    sell_order_id: str
    buyer_id: str
    seller_id: str
    aggressor: Side


class BookChanged(Event):
    """Aggregate quantities of changed price levels (0: level gone); `seq` counts per contract."""

    type: Literal["BookChanged"] = "BookChanged"
    symbol: str
    seq: StrictInt
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class CommandRejected(Event):
    """A record on the commands topic could not be decoded; it changed nothing."""

    type: Literal["CommandRejected"] = "CommandRejected"
    reason: RejectReason
    message: str
    source: str
    """topic:partition:offset of the record."""


AnyEvent = Annotated[
    FundsDeposited
    | CapacityDeposited
    | DepositRejected
    | OrderAccepted
    | OrderRejected
    | CancelRequested
    | CancelRejected
    | OrderCancelled
    | TradeExecuted
    | BookChanged
    | CommandRejected,
    Field(discriminator="type"),
]

AnyMessage = Annotated[
    PlaceOrder
    | CancelOrder
    | DepositFunds
    | DepositCapacity
    | FundsDeposited
    | CapacityDeposited
    | DepositRejected
    | OrderAccepted
    | OrderRejected
    | CancelRequested
    | CancelRejected
    | OrderCancelled
    | TradeExecuted
    | BookChanged
    | CommandRejected,
    Field(discriminator="type"),
]

_any_message: TypeAdapter[AnyMessage] = TypeAdapter(AnyMessage)
_any_event: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
_command: TypeAdapter[Command] = TypeAdapter(Command)


def encode(message: Message) -> bytes:
    """The message's wire form: compact JSON, fields in declaration order."""
    return message.__pydantic_serializer__.to_json(message)


def _funds_deposited_v1(data: dict[str, Any]) -> dict[str, Any]:
    # Version 1 had no currency field: every cash amount was CNY fen.
    return {**data, "v": 2, "currency": "CNY"}


UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("FundsDeposited", 1): _funds_deposited_v1,
}
"""(type, version) -> the function that rewrites it as the next version."""


def upcast(data: dict[str, Any]) -> dict[str, Any]:
    """Rewrite an older version of a message as the current one (unchanged if current)."""
    while (step := UPCASTERS.get((str(data.get("type")), int(data.get("v", 1))))) is not None:
        data = step(data)
    return data


def _older(data: bytes | str) -> dict[str, Any] | None:
    """The message as a dict if it is an older version an upcaster knows; else None."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    kind, version = parsed.get("type"), parsed.get("v", 1)
    # Anything may arrive on a topic: only a string type and an integer version can name one.
    if not isinstance(kind, str) or type(version) is not int or (kind, version) not in UPCASTERS:
        return None
    return parsed


def decode(data: bytes | str) -> AnyMessage:
    """Decode any command or event, upcasting older versions; raises pydantic.ValidationError."""
    try:
        return _any_message.validate_json(data)
    except ValidationError:
        older = _older(data)
        if older is None:
            raise
        return _any_message.validate_python(upcast(older))


def decode_event(data: bytes | str) -> AnyEvent:
    """Decode an event, upcasting older versions; raises pydantic.ValidationError otherwise."""
    try:
        return _any_event.validate_json(data)
    except ValidationError:
        older = _older(data)
        if older is None:
            raise
        return _any_event.validate_python(upcast(older))


def decode_command(data: bytes | str) -> Command:
    """Decode a command; raises pydantic.ValidationError for anything else."""
    return _command.validate_json(data)


def event_from_dict(data: dict[str, Any]) -> AnyEvent:
    """Rebuild an event from its stored JSON object, upcasting an older version."""
    return _any_event.validate_python(upcast(data))


class EventStamp:
    """Gives the events caused by one input record their ids and the record's log time.

    Ids are `topic:partition:offset:n`, so replaying the same input yields the same ids.
    """

    __slots__ = ("_count", "_prefix", "ts")

    def __init__(self, topic: str, partition: int, offset: int, ts: int) -> None:
        self._prefix = f"{topic}:{partition}:{offset}:"
        self._count = 0
        self.ts = ts

    def next_id(self) -> str:
        """A fresh event id for this input."""
        event_id = f"{self._prefix}{self._count}"
        self._count += 1
        return event_id
