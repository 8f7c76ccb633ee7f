"""Orders: placing, amending and cancelling single and block orders, and what risk and
matching decide about them (acceptance, rejection, trades, cancels, book changes)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    model_serializer,
)

from exchange.domain.messages.common import (
    Backing,
    Event,
    Identifier,
    LimitBasis,
    Message,
    NonNegativeInt,
    OrderType,
    PositiveInt,
    RejectReason,
    Side,
    StpMode,
    Symbol,
    TimeInForce,
    omit_defaults,
)
from matching.outputs import CancelReason

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
    "day_ahead": False,
}


def _without_default_options(
    message: BaseModel, handler: SerializerFunctionWrapHandler
) -> dict[str, Any]:
    """Leave order options that keep their defaults off the wire (a plain limit order's bytes
    are those of schema version 1 before options existed)."""
    return omit_defaults(message, handler, _ORDER_OPTION_DEFAULTS)


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
    voucher part is reserved from the grant at acceptance, and the buyer's cash is held at the
    gross cost (price x quantity plus the most fee) all the same, since a fill's voucher part
    is known only when it happens (docs/MONEY.md). With `limit_basis` "net", `price` limits
    what the buyer pays per unit after the voucher.
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
    day_ahead: StrictBool = False
    """For the day-ahead auction of its hour: refused once that auction's gate has passed."""

    @model_serializer(mode="wrap")
    def _wire(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_default_options(self, handler)


class CancelOrder(Message):
    """Cancel what remains of an open order."""

    type: Literal["CancelOrder"] = "CancelOrder"
    order_id: Identifier
    account_id: Identifier


class AmendOrder(Message):
    """Change an open order's price and/or open quantity (None: unchanged).

    A smaller quantity at the same price keeps time priority; anything else loses it. Raising
    the price of a buy or the quantity holds more funds or capacity first. A bonded sell
    keeps the bond per unit it was accepted with: it cannot grow, nor rise above the price that
    bond covers.
    """

    type: Literal["AmendOrder"] = "AmendOrder"
    order_id: Identifier
    account_id: Identifier
    price: PositiveInt | None = None
    quantity: PositiveInt | None = None


_BLOCK_OPTION_DEFAULTS: dict[str, Any] = {
    "client_order_id": None,
    "voucher": None,
    "day_ahead": False,
    "group": None,
    "voucher_reserved": 0,
    "voucher_rate_bps": 0,
    "voucher_related": [],
    "bond_per_unit": 0,
    "dropped": [],
}


def _without_default_block_options(
    message: BaseModel, handler: SerializerFunctionWrapHandler
) -> dict[str, Any]:
    """Leave block options that keep their defaults off the wire (a block without a voucher or
    bond has the bytes blocks had before either existed)."""
    return omit_defaults(message, handler, _BLOCK_OPTION_DEFAULTS)


class PlaceBlockOrder(Message):
    """Buy or sell `quantity` in every hour of consecutive delivery hours of one family, filled
    in every hour or in none, at most (buy) or at least (sell) `price` per unit on average.

    A buy may name a compute-voucher programme (`voucher`) as a single `PlaceOrder` may: the
    voucher part of the whole block is reserved from the grant at acceptance and each hour's
    fill uses it as a single order's fill does (docs/MONEY.md).
    """

    type: Literal["PlaceBlockOrder"] = "PlaceBlockOrder"
    order_id: Identifier
    account_id: Identifier
    symbols: Annotated[list[Symbol], Field(min_length=1, max_length=24)]
    side: Side
    price: PositiveInt
    quantity: PositiveInt
    client_order_id: Identifier | None = None
    """The submitter's name for the block, kept with it as a single order's is."""
    stp_group: Identifier | None = None
    stp_mode: StpMode = "cancel_resting"
    voucher: Identifier | None = None
    day_ahead: StrictBool = False
    """For the day-ahead auction of its hours: refused once that auction's gate has passed."""

    @model_serializer(mode="wrap")
    def _wire(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_default_block_options(self, handler)


class CancelAllOrders(Message):
    """Cancel every open order of an account (the kill switch)."""

    type: Literal["CancelAllOrders"] = "CancelAllOrders"
    account_id: Identifier


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
    client_order_id: str | None = None
    stp_group: str | None = None
    stp_mode: StpMode = "cancel_resting"
    bond_per_unit: StrictInt = 0
    """Delivery bond (fen per unit and hour) held from a provider's cash for a sell block."""
    voucher: str | None = None
    voucher_reserved: StrictInt = 0
    """Voucher funds (fen) reserved for the whole buy block from the account's grant."""
    voucher_rate_bps: StrictInt = 0
    voucher_related: list[str] = Field(default_factory=list)
    """The grant's related parties at acceptance: their fills earn no voucher (OrderAccepted)."""
    group: str | None = None
    """The exclusive group (a need) this block is an alternative of: the day-ahead auction
    accepts at most one block of a group."""
    dropped: list[StrictInt] = Field(default_factory=list)
    """The group's alternatives risk dropped, not listed when it took the group (their numbers
    from 1, in the order sent): each alternative says so, so whichever arrives first answers
    the sender truthfully."""

    @model_serializer(mode="wrap")
    def _wire(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_default_block_options(self, handler)


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


OPTIONS_OFF_THE_WIRE: dict[type[Message], dict[str, Any]] = {
    PlaceOrder: _ORDER_OPTION_DEFAULTS,
    OrderAccepted: _ORDER_OPTION_DEFAULTS,
    PlaceBlockOrder: _BLOCK_OPTION_DEFAULTS,
    BlockAccepted: _BLOCK_OPTION_DEFAULTS,
}
"""The order messages whose serializer leaves options that keep their defaults off the wire,
to those defaults: the codec writes their bytes without pydantic's wrap serializer (`encode`)."""
