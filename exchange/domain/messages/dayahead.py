"""The day-ahead auction: exclusive groups (needs), the bids each matching partition collects
at the gate, and the auction's result (docs/MATCHING.md, "The day-ahead auction").

    risk: PlaceExclusiveGroup -> ExclusiveGroupAccepted (one BlockAccepted per alternative)
    matching, at the gate: DayAheadBidsCollected (stored, and sent to the auction stage)
    auction stage: DayAheadCleared (to each orders partition) and DayAheadAuctionCompleted
    matching: DayAheadCleared -> trades, blocks not accepted cancelled, books opened
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt

from exchange.domain.messages.common import (
    Event,
    Identifier,
    Message,
    PositiveInt,
    Symbol,
)
from exchange.domain.messages.orders import BlockAccepted

MAX_ALTERNATIVES = 12
"""The most alternatives an exclusive group may offer: each holds its own cash until the
auction, and each is a binary variable of the auction's programme."""

GroupId = Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.:-]+$")]
"""A group's order id: its alternatives are `<id>.<n>`, which must still be an `Identifier`."""


class PlaceExclusiveGroup(Message):
    """Buy `quantity` in every hour of exactly one of `alternatives`, or of none, in the
    day-ahead auction of their hours, at most `price` per unit and hour on average: a need.

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


class DayAheadCleared(Event):
    """The day-ahead auction's result for the orders of one matching partition: trades
    (symbol, buy order, sell order, quantity, price) at each hour's clearing price, what each
    order got, and why each order that got nothing got nothing."""

    type: Literal["DayAheadCleared"] = "DayAheadCleared"
    day: str
    partition: StrictInt
    prices: dict[str, StrictInt]
    trades: list[tuple[str, str, str, StrictInt, StrictInt]]
    accepted: dict[str, StrictInt]
    rejected: dict[str, str]
    families: list[str] | None = None
    """The families whose books of the day the partition opens with this result (None: every
    one it holds). Named, because a replay of every partition in one stage (settlement's)
    must open each partition's books only with that partition's result."""


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
