"""Commands and events: frozen pydantic models and their versioned JSON wire format.

Every message on every topic is one JSON object with a `type` naming the message and a `v`
giving its schema version, plus the message's fields (see docs/WIRE_FORMAT.md). Commands are
what participants ask for (verb-noun); events are what the exchange decided (past tense) and
carry a globally unique `event_id` and `ts`, the log time in milliseconds of the input that
caused them. Money and prices are integer fen (0.01 CNY); quantities are integer units.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    model_serializer,
)

from matching.outputs import CancelReason as CancelReason
from matching.outputs import ContractState as ContractState
from matching.outputs import RefusalReason

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
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
    CONTRACT_CLOSED = RefusalReason.CONTRACT_CLOSED.value
    ACCOUNT_LIMIT_EXCEEDED = "account_limit_exceeded"
    """The order would take the account past a limit an operator set (`SetAccountLimits`)."""
    CEILING_EXCEEDED = "ceiling_exceeded"
    """An amount would pass the exchange's ceiling (`accounts.CEILING`): the money inside the
    exchange, an account's capacity in one contract, or one order's price x quantity."""


Currency = Literal["CNY"]
"""Quote currencies; amounts are integer minor units (fen)."""


class Message(BaseModel):
    """Base of every command and event: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1


_ORDER_OPTION_DEFAULTS: dict[str, Any] = {
    "time_in_force": "GTC",
    "expire_at": None,
    "order_type": "limit",
    "min_quantity": 0,
    "all_or_none": False,
    "post_only": False,
    "stp_group": None,
    "stp_mode": "cancel_resting",
    "voucher": None,
    "limit_basis": "gross",
    "backing": "capacity",
    "bond_per_unit": 0,
    "voucher_reserved": 0,
    "voucher_rate_bps": 0,
    "voucher_related": [],
    "net_price": None,
}


def _without_unset(
    message: BaseModel, handler: SerializerFunctionWrapHandler, defaults: dict[str, Any]
) -> dict[str, Any]:
    """Leave fields that keep their defaults off the wire, so messages written before those
    fields existed keep their bytes."""
    data: dict[str, Any] = handler(message)
    for name, default in defaults.items():
        if name in data and data[name] == default:
            del data[name]
    return data


def _without_default_options(
    message: BaseModel, handler: SerializerFunctionWrapHandler
) -> dict[str, Any]:
    """Leave order options that keep their defaults off the wire (a plain limit order's bytes
    are those of schema version 1 before options existed)."""
    return _without_unset(message, handler, _ORDER_OPTION_DEFAULTS)


class PlaceOrder(Message):
    """Place an order; `order_id` is chosen by the submitter and must be new to its account
    (the exchange knows the order by `exchange_order_id` of the two).

    Options (see docs/MATCHING.md): `time_in_force` GTC, GTD (until `expire_at`, a log time in
    ms), DAY, IOC or FOK; `order_type` market trades like IOC within the contract's protection
    band, and its `price` is the cap the buyer's funds are held at; `min_quantity` must trade on
    arrival; `all_or_none` trades only in full; `post_only` is refused if it would take;
    self-trade prevention by `stp_group` (a group of the account's own orders; default:
    the account) in `stp_mode`.

    A buy may name a compute-voucher programme (`voucher`) the account holds a grant of: the
    voucher part is reserved at acceptance and only the rest of the cost is held. With
    `limit_basis` "net", `price` limits what the buyer pays per unit after the voucher.
    """

    type: Literal["PlaceOrder"] = "PlaceOrder"
    order_id: Identifier
    account_id: Identifier
    symbol: Symbol
    side: Side
    price: PositiveInt
    quantity: PositiveInt
    client_order_id: Identifier | None = None
    time_in_force: TimeInForce = "GTC"
    expire_at: NonNegativeInt | None = None
    order_type: OrderType = "limit"
    min_quantity: NonNegativeInt = 0
    all_or_none: StrictBool = False
    post_only: StrictBool = False
    stp_group: Identifier | None = None
    stp_mode: StpMode = "cancel_resting"
    voucher: Identifier | None = None
    limit_basis: LimitBasis = "gross"

    @model_serializer(mode="wrap")
    def _wire(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_default_options(self, handler)


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


class WithdrawFunds(Message):
    """Pay cash out of an account; only available cash, never what is held."""

    type: Literal["WithdrawFunds"] = "WithdrawFunds"
    withdrawal_id: Identifier
    account_id: Identifier
    amount: PositiveInt
    currency: Currency = "CNY"


class WithdrawCapacity(Message):
    """Take unsold deposited capacity of one contract back, until its gate closes."""

    type: Literal["WithdrawCapacity"] = "WithdrawCapacity"
    withdrawal_id: Identifier
    account_id: Identifier
    symbol: Symbol
    quantity: PositiveInt


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


class AmendOrder(Message):
    """Change an open order's price and/or open quantity (None: unchanged).

    A smaller quantity at the same price keeps time priority; anything else loses it. Raising
    the price of a buy or the quantity holds more funds or capacity first.
    """

    type: Literal["AmendOrder"] = "AmendOrder"
    order_id: Identifier
    account_id: Identifier
    price: PositiveInt | None = None
    quantity: PositiveInt | None = None


class PlaceBlockOrder(Message):
    """Buy or sell `quantity` in every hour of consecutive delivery hours of one family, filled
    in every hour or in none, at most (buy) or at least (sell) `price` per unit on average."""

    type: Literal["PlaceBlockOrder"] = "PlaceBlockOrder"
    order_id: Identifier
    account_id: Identifier
    symbols: Annotated[list[Symbol], Field(min_length=1, max_length=24)]
    side: Side
    price: PositiveInt
    quantity: PositiveInt
    stp_group: Identifier | None = None
    stp_mode: StpMode = "cancel_resting"


class CancelAllOrders(Message):
    """Cancel every open order of an account (the kill switch)."""

    type: Literal["CancelAllOrders"] = "CancelAllOrders"
    account_id: Identifier


MarketAction = Literal[
    "halt",
    "resume",
    "schedule_auction",
    "tick",
    "delist",
    "list",
    "set_band",
    "halt_market",
    "resume_market",
]
OPERATOR_ACTIONS: frozenset[str] = frozenset(
    ("halt", "resume", "schedule_auction", "delist", "list", "set_band", "halt_market",
     "resume_market")
)  # fmt: skip
"""Actions only an operator may take; `tick` only moves a partition's log time, so the clock
scheduler sends it unsigned."""
MARKET_WIDE_ACTIONS: frozenset[str] = frozenset(("halt_market", "resume_market"))
ALL_CONTRACTS = "*"
"""The `symbol` of a market-wide action: every contract of every partition."""


class ControlMarket(Message):
    """An operator's (or the clock scheduler's) command to one contract's partition.

    `halt` and `resume` a contract; `schedule_auction` a call auction at log time `at` over
    `symbols` of the contract's family; `tick` only advances the partition's log time, so
    expiries, gate closures and auctions fall due without waiting for an order. `delist`
    closes a contract early (its resting orders cancelled as `delisted`); `list` re-opens a
    delisted contract or lists one of the catalogue's grammar that is not listed; `set_band`
    sets the price band (`band` fen, 0: none) of a contract, or of every contract of a family
    when `symbol` is a family `CLASS.REGION`; `halt_market` and `resume_market` (`symbol` "*")
    act on every contract of every partition.

    Every action but `tick` must carry the API's `signature` (exchange.domain.operators): the
    risk stage refuses an unsigned one as `not_operator`.
    """

    type: Literal["ControlMarket"] = "ControlMarket"
    operator_id: Identifier
    action: MarketAction
    symbol: Symbol
    at: NonNegativeInt | None = None
    symbols: list[Symbol] = Field(default_factory=list)
    reason: Annotated[str, Field(max_length=500)] = ""
    """Why the operator acts; kept in the log with who did it."""
    band: NonNegativeInt | None = None
    signature: Annotated[str, Field(max_length=128)] = ""

    @model_serializer(mode="wrap")
    def _wire(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_unset(self, handler, {"band": None, "signature": ""})


class SetAccountLimits(Message):
    """An operator sets a participant's limits, enforced by the risk stage of its partition.

    `max_open_quantity` bounds the units of all its open orders together, `max_open_notional`
    their price x quantity in fen (None: no limit). Signed like `ControlMarket`.
    """

    type: Literal["SetAccountLimits"] = "SetAccountLimits"
    operator_id: Identifier
    account_id: Identifier
    max_open_quantity: NonNegativeInt | None = None
    max_open_notional: NonNegativeInt | None = None
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


Command = Annotated[
    PlaceOrder
    | CancelOrder
    | DepositFunds
    | DepositCapacity
    | AmendOrder
    | CancelAllOrders
    | ControlMarket
    | PlaceBlockOrder
    | WithdrawFunds
    | WithdrawCapacity
    | ReportMetering
    | DisputeDelivery
    | ResolveDispute
    | RecallCapacity
    | CreateProgramme
    | ApproveGrant
    | SetAccountLimits
    | GrantConcession,
    Field(discriminator="type"),
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
    time_in_force: TimeInForce = "GTC"
    expire_at: StrictInt | None = None
    order_type: OrderType = "limit"
    min_quantity: StrictInt = 0
    all_or_none: StrictBool = False
    post_only: StrictBool = False
    stp_group: str | None = None
    stp_mode: StpMode = "cancel_resting"
    backing: Backing = "capacity"
    """What a sell delivers: deposited capacity, or an entitlement bought earlier (resale)."""
    bond_per_unit: StrictInt = 0
    """Delivery bond (fen per unit) held from a provider's cash for a capacity-backed sell."""
    voucher: str | None = None
    voucher_reserved: StrictInt = 0
    """Voucher funds (fen) reserved for this buy from the account's grant of `voucher`."""
    voucher_rate_bps: StrictInt = 0
    voucher_related: list[str] = Field(default_factory=list)
    """The grant's related parties when the buy was accepted: their fills earn no voucher.
    Carried on the order so that whoever settles its fills decides them from the order alone,
    whichever partition's grant approval it reads first."""
    net_price: StrictInt | None = None
    """The net limit the buyer gave; `price` is then the gross limit it allows."""

    @model_serializer(mode="wrap")
    def _wire(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_default_options(self, handler)


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
    aggressor: Side | None
    """The taker's side; None for a trade of a call auction."""


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


class BlockAccepted(Event):
    """The risk stage held a block's cash (price x quantity x hours) or capacity (quantity in
    each hour) and sent it to matching; `symbol` is its first hour."""

    type: Literal["BlockAccepted"] = "BlockAccepted"
    order_id: str
    account_id: str
    symbol: str
    family: str
    symbols: list[str]
    side: Side
    price: StrictInt
    quantity: StrictInt
    stp_group: str | None = None
    stp_mode: StpMode = "cancel_resting"


class CancelAllRequested(Event):
    """The risk stage sent an account's kill switch to every partition with its open orders."""

    type: Literal["CancelAllRequested"] = "CancelAllRequested"
    account_id: str
    symbols: list[str]
    """The contracts the account has open orders in, when the kill switch was pulled."""
    here: list[str] = Field(default_factory=list)
    """Those of `symbols` on the orders partition this copy was sent to: each partition gets
    its own copy (empty, in copies stored before there was one per partition: all)."""


class AmendRequested(Event):
    """The risk stage checked an amend (and held `extra_hold` more for it) and sent it on."""

    type: Literal["AmendRequested"] = "AmendRequested"
    order_id: str
    account_id: str
    symbol: str
    price: StrictInt | None
    quantity: StrictInt | None
    extra_hold: StrictInt
    """Cash (buy, fen) or capacity (sell, units) held on top of the order's hold until the
    amend is decided."""


class AmendRejected(Event):
    """An amend was refused; the order is unchanged and the amend's extra hold is released."""

    type: Literal["AmendRejected"] = "AmendRejected"
    order_id: str
    account_id: str
    reason: RejectReason
    message: str
    symbol: str | None = None
    extra_hold: StrictInt = 0


class OrderAmended(Event):
    """An order now rests (or traded) at `price` with `remaining` open; its hold follows."""

    type: Literal["OrderAmended"] = "OrderAmended"
    order_id: str
    account_id: str
    symbol: str
    side: Side
    price: StrictInt
    remaining: StrictInt
    kept_priority: StrictBool
    extra_hold: StrictInt = 0
    """The extra hold its amend request took, now settled into the order's hold."""


class OrderReduced(Event):
    """Self-trade prevention (decrement) took `quantity` off an order without a trade."""

    type: Literal["OrderReduced"] = "OrderReduced"
    order_id: str
    account_id: str
    symbol: str
    side: Side
    quantity: StrictInt
    remaining: StrictInt
    reason: CancelReason


class MarketControlRequested(Event):
    """The risk stage passed an operator's or scheduler's `ControlMarket` on to matching.

    A market-wide action goes to every orders partition, one copy each; `contracts` is None as
    risk sends it, and in the copy matching records on the events topic, the contracts it
    acted on there, so a replay over every partition's events acts on each contract at the
    point its own partition did."""

    type: Literal["MarketControlRequested"] = "MarketControlRequested"
    operator_id: str
    action: MarketAction
    symbol: str
    at: StrictInt | None = None
    symbols: list[str] = Field(default_factory=list)
    reason: str = ""
    band: StrictInt | None = None
    contracts: list[str] | None = None

    @model_serializer(mode="wrap")
    def _wire(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_unset(self, handler, {"band": None, "contracts": None})


class MarketControlRejected(Event):
    """Matching refused an operator command (e.g. halting a contract that is not trading)."""

    type: Literal["MarketControlRejected"] = "MarketControlRejected"
    operator_id: str
    action: MarketAction
    symbol: str
    reason: RejectReason
    message: str


class ContractStateChanged(Event):
    """A contract entered a lifecycle state: listed (pre-open), opened, halted, resumed, closed,
    delivered; `reason` says why (e.g. price_band, operator, gate_closure)."""

    type: Literal["ContractStateChanged"] = "ContractStateChanged"
    symbol: str
    state: ContractState
    reason: str


class ListingChanged(Event):
    """An operator delisted (`listed` false) or listed a contract, and matching did it.

    Matching writes it back to every commands partition: the risk stage is partitioned by
    account, and each partition must refuse orders into a delisted contract and accept them
    into one an operator listed."""

    type: Literal["ListingChanged"] = "ListingChanged"
    symbol: str
    listed: StrictBool
    operator_id: str
    reason: str


class AccountLimitsSet(Event):
    """An operator set an account's limits (None: no limit)."""

    type: Literal["AccountLimitsSet"] = "AccountLimitsSet"
    operator_id: str
    account_id: str
    max_open_quantity: StrictInt | None
    max_open_notional: StrictInt | None
    reason: str


class AuctionCompleted(Event):
    """A call auction's result: one clearing price, the volume it executed and the imbalance
    (buy minus sell quantity at that price); `price` None when nothing could execute."""

    type: Literal["AuctionCompleted"] = "AuctionCompleted"
    symbol: str
    price: StrictInt | None
    volume: StrictInt
    imbalance: StrictInt


class FundsWithdrawn(Event):
    """Cash was paid out of an account."""

    type: Literal["FundsWithdrawn"] = "FundsWithdrawn"
    withdrawal_id: str
    account_id: str
    amount: StrictInt
    currency: Currency = "CNY"


class CapacityWithdrawn(Event):
    """Unsold capacity of one contract was taken back by its provider."""

    type: Literal["CapacityWithdrawn"] = "CapacityWithdrawn"
    withdrawal_id: str
    account_id: str
    symbol: str
    quantity: StrictInt


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
    resolved a dispute."""

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
    | CommandRejected
    | BlockAccepted
    | CancelAllRequested
    | AmendRequested
    | AmendRejected
    | OrderAmended
    | OrderReduced
    | MarketControlRequested
    | MarketControlRejected
    | ContractStateChanged
    | AuctionCompleted
    | FundsWithdrawn
    | CapacityWithdrawn
    | RequestRejected
    | DeliveryObligation
    | DeliveryRequested
    | CapacityRecalled
    | MeteringReported
    | DeliveryDisputed
    | DeliverySettled
    | ProgrammeCreated
    | GrantApproved
    | ListingChanged
    | AccountLimitsSet
    | ConcessionGranted
    | FeeConceded,
    Field(discriminator="type"),
]

AnyMessage = Annotated[
    PlaceOrder
    | CancelOrder
    | DepositFunds
    | DepositCapacity
    | AmendOrder
    | CancelAllOrders
    | ControlMarket
    | PlaceBlockOrder
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
    | CommandRejected
    | BlockAccepted
    | CancelAllRequested
    | AmendRequested
    | AmendRejected
    | OrderAmended
    | OrderReduced
    | MarketControlRequested
    | MarketControlRejected
    | ContractStateChanged
    | AuctionCompleted
    | WithdrawFunds
    | WithdrawCapacity
    | ReportMetering
    | DisputeDelivery
    | ResolveDispute
    | RecallCapacity
    | CreateProgramme
    | ApproveGrant
    | FundsWithdrawn
    | CapacityWithdrawn
    | RequestRejected
    | DeliveryObligation
    | DeliveryRequested
    | CapacityRecalled
    | MeteringReported
    | DeliveryDisputed
    | DeliverySettled
    | ProgrammeCreated
    | GrantApproved
    | SetAccountLimits
    | GrantConcession
    | ListingChanged
    | AccountLimitsSet
    | ConcessionGranted
    | FeeConceded,
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
