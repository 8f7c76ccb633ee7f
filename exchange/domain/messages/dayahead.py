"""The day-ahead auction: exclusive groups (needs), the bids each matching partition collects
at the gate, and the auction's result (docs/MATCHING.md, "The day-ahead auction").

    risk: PlaceExclusiveGroup -> ExclusiveGroupAccepted (one BlockAccepted per alternative)
    matching, at the gate: DayAheadBidsCollected (stored, and sent to the auction stage)
    auction stage: DayAheadCleared (to each orders partition) and DayAheadAuctionCompleted
    matching: DayAheadCleared -> trades, blocks not accepted cancelled, books opened
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    model_serializer,
    model_validator,
)

from exchange.domain.messages.common import (
    Event,
    Identifier,
    Message,
    PositiveInt,
    Symbol,
    omit_defaults,
)
from exchange.domain.messages.orders import BlockAccepted

MAX_ALTERNATIVES = 12
"""The most alternatives an exclusive group may offer: each holds its own cash until the
auction, and each is a binary variable of the auction's programme."""

GroupId = Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.:-]+$")]
"""A group's order id: its alternatives are `<id>.<n>`, which must still be an `Identifier`."""


class PlaceExclusiveGroup(Message):
    """Buy `quantity` in every hour of exactly one of `alternatives`, or of none, in the
    day-ahead auction of their hours, at most `price` per unit and hour on average (or, with
    `prices`, at most its own price for each alternative): a need.

    Each alternative is a block (consecutive delivery hours of one family); the auction takes
    the one that adds most to the market's welfare. Every alternative holds its own cash (and
    voucher) until the auction, which releases all but the accepted one's.
    """

    type: Literal["PlaceExclusiveGroup"] = "PlaceExclusiveGroup"
    order_id: GroupId
    account_id: Identifier
    alternatives: Annotated[
        list[Annotated[list[Symbol], Field(min_length=1, max_length=24)]],
        Field(min_length=1, max_length=64),
    ]
    price: PositiveInt
    quantity: PositiveInt
    voucher: Identifier | None = None
    prices: list[PositiveInt] | None = None
    """Each alternative's own limit, none above `price` (what an alternative is worth to the
    buyer can differ: a far region's latency costs it more), so the auction weighs each at its
    worth; None: every alternative at `price`."""

    @model_validator(mode="after")
    def _one_price_per_alternative(self) -> PlaceExclusiveGroup:
        prices = self.prices
        if prices is None:
            return self
        if len(prices) != len(self.alternatives):
            raise ValueError(
                f"prices: one per alternative, {len(self.alternatives)}, not {len(prices)}"
            )
        if max(prices) > self.price:
            raise ValueError(f"prices: none above the need's price {self.price}")
        return self

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A group without its own prices keeps the bytes groups had before they existed.
        return omit_defaults(self, handler, {"prices": None})

    def limit_of(self, alternative: int) -> int:
        """The price limit of alternative number `alternative` (from 0)."""
        return self.price if self.prices is None else self.prices[alternative]


class ExclusiveGroupAccepted(Event):
    """The risk stage accepted an exclusive group: one `BlockAccepted` per alternative, each
    with `group` set, sent to its family's matching partition."""

    type: Literal["ExclusiveGroupAccepted"] = "ExclusiveGroupAccepted"
    order_id: str
    account_id: str
    blocks: list[BlockAccepted]


class DayAheadBidsCollected(Event):
    """What one matching partition brings to the day-ahead auction of `day` (CST date): the
    orders and blocks resting in that day's books at the gate, in the auction's wire form
    (`matching.dayahead.order_to_wire`)."""

    type: Literal["DayAheadBidsCollected"] = "DayAheadBidsCollected"
    day: str
    partition: StrictInt
    orders: list[dict[str, Any]]
    symbols: list[str]
    """The partition's books of the day: the result opens them."""
    withheld: list[str] = []
    """The partition's books of the day an operator halted before the gate, kept out of the
    auction: a resume opens them through a call auction of their own."""


class DayAheadCleared(Event):
    """The day-ahead auction's result for the orders of one matching partition: trades
    (symbol, buy order, sell order, quantity, price) at each hour's clearing price, what each
    order got, and why each order that got nothing got nothing."""

    type: Literal["DayAheadCleared"] = "DayAheadCleared"
    day: str
    partition: StrictInt
    symbols: list[str]
    """The partition's books of the day, which open for continuous trading."""
    prices: dict[str, StrictInt]
    trades: list[tuple[str, str, str, StrictInt, StrictInt]]
    accepted: dict[str, StrictInt]
    rejected: dict[str, str]
    contracts: list[str] | None = None
    """The day's books the partition opened with the result, as matching recorded it (None
    as the auction stage sends it): a replay holding every partition's books in one state
    opens only these, as the partition did."""
    groups: list[str] = []
    """Every exclusive group the auction decided (any partition's): an alternative of one
    that reached its book after the gate is cancelled, never left for a later auction."""

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A result deciding no group keeps the bytes results had before `groups` existed.
        return omit_defaults(self, handler, {"groups": []})


class DayAheadAuctionCompleted(Event):
    """The day-ahead auction of `day` was solved: one clearing price per contract-hour, the
    welfare it reached, the bound proved on the best (equal when `status` is optimal) and the
    gap between them in parts per million."""

    type: Literal["DayAheadAuctionCompleted"] = "DayAheadAuctionCompleted"
    day: str
    prices: dict[str, StrictInt]
    volumes: dict[str, StrictInt]
    welfare: StrictInt
    bound: StrictInt
    gap_ppm: StrictInt
    status: str
    orders: StrictInt
    accepted: StrictInt
    solve_ms: StrictInt
    partitions: list[StrictInt]
    """The matching partitions whose bids the auction cleared."""
