"""Market controls and account limits: operators' (and the clock's) commands to contracts,
and the state changes, listings and auctions they lead to."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    model_serializer,
)

from exchange.domain.messages.common import (
    Event,
    Identifier,
    Message,
    NonNegativeInt,
    RejectReason,
    Symbol,
    omit_defaults,
)
from matching.outputs import ContractState

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
        return omit_defaults(self, handler, {"band": None, "signature": ""})


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


class MarketControlRequested(Event):
    """The risk stage passed an operator's or scheduler's `ControlMarket` on to matching.

    A market-wide action goes to every orders partition, one copy each; `contracts` is None as
    risk sends it, and in the copy matching records on the events topic, the contracts it
    acted on there, so a replay over every partition's events acts on each contract at the
    point its own partition did. An action on one contract (or family) is recorded with its
    symbol in `contracts` if matching carried it out, with none if matching refused it (its
    `MarketControlRejected` follows), so the API answers with matching's decision."""

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
        return omit_defaults(self, handler, {"band": None, "contracts": None})


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
