"""What the matching engine reports: its output records, and the reasons and states they carry.

An output is a plain tuple whose first item, a string literal, names its kind: a tuple costs a
fifth of a class instance to build, and the engine builds one or more for every command. The
type of each kind below names its fields in order; `Output`, their union, is a tagged union that
mypy narrows on the kind, so a consumer reads the fields by pattern and each is checked where
it is read:

    match output:
        case (mo.TRADE, symbol, number, price, quantity, taker, maker, *accounts, aggressor):
            ...

A block order's outputs use its family as the symbol, except its trades, which name the hour;
its `remaining` is the total over its hours.

The reasons and states are defined here only: the exchange's messages use `CancelReason` as
their own, take the engine's values of `RejectReason` from `RefusalReason`, and report
`ContractState`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

Side = Literal["buy", "sell"]

ContractState = Literal["pre_open", "continuous", "halted", "closed", "delivered"]
"""A contract's lifecycle state (docs/MATCHING.md, "Contract lifecycle")."""

PRE_OPEN: Final = "pre_open"
CONTINUOUS: Final = "continuous"
HALTED: Final = "halted"
CLOSED: Final = "closed"
DELIVERED: Final = "delivered"


class CancelReason(StrEnum):
    """Why an order left the book without filling completely."""

    REQUESTED = "requested"
    CONTRACT_NOT_TRADING = "contract_not_trading"
    """The contract has no book: not listed yet, or delivered and forgotten."""
    KILL_SWITCH = "kill_switch"
    SELF_TRADE = "self_trade"
    UNFILLED_IOC = "unfilled_ioc"
    FOK_NOT_FILLED = "fok_not_filled"
    AON_NOT_FILLED = "aon_not_filled"
    MIN_QUANTITY_NOT_MET = "min_quantity_not_met"
    MARKET_PROTECTION = "market_protection"
    GOOD_TILL_DATE = "good_till_date"
    """Expired: the order's GTD time came."""
    END_OF_DAY = "end_of_day"
    """Expired: a DAY order at midnight China Standard Time."""
    GATE_CLOSURE = "gate_closure"
    """Expired: the contract's gate closed before delivery."""
    POST_ONLY_WOULD_TAKE = "post_only_would_take"
    INVALID_ORDER = "invalid_order"
    INVALID_EXPIRY = "invalid_expiry"
    INVALID_PRICE = "invalid_price"
    INVALID_QUANTITY = "invalid_quantity"
    PRICE_NOT_ON_TICK = "price_not_on_tick"
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    CONTRACT_CLOSED = "contract_closed"
    NOT_CONTINUOUS = "not_continuous"
    INVALID_BLOCK = "invalid_block"
    BLOCK_NOT_FILLED = "block_not_filled"
    """A block met too little in some hour to fill in every hour at once."""
    BLOCK_PRICE = "block_price"
    """Filling a block in every hour would break its average price limit."""
    BLOCK_NOT_ACCEPTED = "block_not_accepted"
    """A call auction rejected the block whole."""
    DELISTED = "delisted"
    """An operator delisted the contract: its resting orders are cancelled."""
    OBLIGATION_SETTLED = "obligation_settled"
    """A resale of an entitlement whose delivery obligation settled (a dispute resolved, a
    recall): what it sold is no longer the seller's to sell."""
    BUNDLE_TOKENS_USED = "bundle_tokens_used"
    """A resale of a token bundle's units that its holder's tokens were drawn into since risk
    approved it (a metering report reached matching first): only wholly unused units are
    resold, so a buyer never pays full price for tokens already used."""


class RefusalReason(StrEnum):
    """Why the engine refused to amend or cancel an order, or an operator's command."""

    UNKNOWN_ORDER = "unknown_order"
    NOT_ORDER_OWNER = "not_order_owner"
    NOT_AMENDABLE = "not_amendable"
    INVALID_PRICE = "invalid_price"
    INVALID_QUANTITY = "invalid_quantity"
    POST_ONLY_WOULD_TAKE = "post_only_would_take"
    UNKNOWN_CONTRACT = "unknown_contract"
    NOT_CONTINUOUS = "not_continuous"
    NOT_HALTED = "not_halted"
    CONTRACT_CLOSED = "contract_closed"
    ALREADY_LISTED = "already_listed"
    NOT_PRE_OPEN = "not_pre_open"
    """An auction was scheduled over a contract not collecting orders in pre-open: it would
    take nothing of it."""
    IN_AUCTION = "in_auction"
    """The order was collected for the day-ahead auction, whose result is not in yet (or the
    contract is in a day-ahead or intraday auction, so an operator cannot halt or resume it)."""


class StateReason(StrEnum):
    """Why a contract entered its state."""

    LISTED = "listed"
    """Listed, in pre-open or straight into continuous trading."""
    OPENED = "opened"
    """An opening call auction ran."""
    REOPENED = "reopened"
    """A reopening call auction ended a halt."""
    RELISTED = "relisted"
    """An operator listed a delisted contract again."""
    RESUMED = "resumed"
    """An operator resumed a contract halted in pre-open before its auction: it collects
    orders for that auction again (pre-open)."""
    PRICE_BAND = "price_band"
    """The circuit breaker: matching reached a price outside the band."""
    OPERATOR = "operator"
    """An operator halted the contract."""
    GATE_CLOSURE = "gate_closure"
    DELISTED = "delisted"
    DELIVERY = "delivery"
    INTRADAY_AUCTION = "intraday_auction"
    """Out of continuous trading for an intraday auction (pre-open), or back in after it."""


OperatorAction = Literal["list", "schedule", "halt", "resume", "delist", "set_band"]
"""The operator command an `OperatorRejected` refuses (`schedule`: an auction)."""

ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"
TRADE: Final = "trade"
CANCELLED: Final = "cancelled"
EXPIRED: Final = "expired"
REDUCED: Final = "reduced"
AMENDED: Final = "amended"
AMEND_REJECTED: Final = "amend_rejected"
CANCEL_REJECTED: Final = "cancel_rejected"
CANCELLED_ALL: Final = "cancelled_all"
STATE: Final = "state"
AUCTION: Final = "auction"
OPERATOR_REJECTED: Final = "operator_rejected"

Accepted = tuple[Literal["accepted"], str, str]
"""(kind, symbol, order id): an order or block entered the book."""

Rejected = tuple[Literal["rejected"], str, str, CancelReason]
"""(kind, symbol, order id, reason): an order or block refused before anything changed."""

Trade = tuple[Literal["trade"], str, int, int, int, str, str, str, str, Side | None]
"""(kind, symbol, trade number in the contract, price, quantity, taker order id, maker order id,
taker account, maker account, aggressor): the aggressor is the taker's side; None for an
auction trade, whose "taker" is the buy order and "maker" the sell order."""

Cancelled = tuple[Literal["cancelled"], str, str, str, Side, int, CancelReason]
"""(kind, symbol, order id, account, side, remaining, reason): what remained of an order is
cancelled."""

Expired = tuple[Literal["expired"], str, str, str, Side, int, CancelReason]
"""(kind, symbol, order id, account, side, remaining, reason): what remained of an order
expired (GTD, DAY, gate closure, delisting)."""

Reduced = tuple[Literal["reduced"], str, str, str, Side, int, int, CancelReason]
"""(kind, symbol, order id, account, side, cut, remaining, reason): self-trade prevention
(decrement) took `cut` off an order that still rests or trades."""

Amended = tuple[Literal["amended"], str, str, str, Side, int, int, bool]
"""(kind, symbol, order id, account, side, price, remaining, kept priority)."""

AmendRejected = tuple[Literal["amend_rejected"], str, str, RefusalReason]
"""(kind, symbol or "" when the order is unknown, order id, reason)."""

CancelRejected = tuple[Literal["cancel_rejected"], str, str, RefusalReason]
"""(kind, symbol or "" when the order is unknown, order id, reason)."""

CancelledAll = tuple[Literal["cancelled_all"], str, int]
"""(kind, account, count): the kill switch cancelled `count` orders and blocks."""

StateChanged = tuple[Literal["state"], str, ContractState, StateReason]
"""(kind, symbol, state, reason): a contract entered a lifecycle state."""

Auction = tuple[Literal["auction"], str, int | None, int, int]
"""(kind, symbol, price, volume, imbalance): a call auction's result; price None and volume 0
when nothing could execute."""

OperatorRejected = tuple[Literal["operator_rejected"], str, OperatorAction, RefusalReason]
"""(kind, symbol, action, reason): an operator's command refused."""

Output = (
    Accepted
    | Rejected
    | Trade
    | Cancelled
    | Expired
    | Reduced
    | Amended
    | AmendRejected
    | CancelRejected
    | CancelledAll
    | StateChanged
    | Auction
    | OperatorRejected
)
"""Anything the engine reports."""
