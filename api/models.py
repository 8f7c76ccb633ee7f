"""Request and response bodies of the API, with the examples the OpenAPI document shows.

Money and prices are integer fen (0.01 CNY); quantities are integer units of a contract.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    create_model,
    model_validator,
)

from api.keys import Role
from exchange.domain.messages import (
    GroupId,
    Identifier,
    PlaceOrder,
    PositiveInt,
    exchange_order_id,
)

GZ0 = "H100-80G.GZ.20271201T00"
ORDER_ID = "o-3f0c2a9b8e7d6c5b4a3928171615141312111009"

Symbol = Annotated[str, Field(min_length=1, max_length=64, examples=[GZ0])]


def _order_request() -> type[BaseModel]:
    # Every field of the PlaceOrder command but its id (the API chooses it, or derives it from
    # the client order id) and the account (taken from the API key), so each order type the
    # exchange accepts is accepted here too without a second definition.
    fields: dict[str, Any] = {
        "account_id": (
            Identifier | None,
            Field(
                default=None,
                description="Optional; if given it must be the API key's account.",
            ),
        )
    }
    for name, info in PlaceOrder.model_fields.items():
        if name not in {"type", "v", "order_id", "account_id"}:
            fields[name] = (info.annotation, info)
    model: type[BaseModel] = create_model(
        "OrderRequest",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra={
                "examples": [
                    {
                        "symbol": GZ0,
                        "side": "buy",
                        "price": 1850,
                        "quantity": 8,
                        "client_order_id": "my-order-1",
                    }
                ]
            },
        ),
        __doc__=(
            "An order. `price` is integer fen on the contract's tick; `quantity` is units. "
            "A `client_order_id` makes the request idempotent: a retry returns the original "
            "answer and never places a second order."
        ),
        **fields,
    )
    return model


OrderRequest = _order_request()


class AmendRequest(BaseModel):
    """A new price and/or remaining quantity for an open order."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"price": 1790, "quantity": 6}]}
    )

    price: PositiveInt | None = None
    quantity: PositiveInt | None = Field(
        default=None, description="The new remaining quantity (default: what remains now)."
    )

    @model_validator(mode="after")
    def _something_to_change(self) -> AmendRequest:
        # An empty amend would answer "amended" and log an amend that changes nothing.
        if self.price is None and self.quantity is None:
            raise ValueError("改单须给出新价格或新数量 an amend needs a new price or quantity")
        return self


class CashDeposit(BaseModel):
    """Credit cash, in fen."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"kind": "cash", "amount": 500000}]}
    )

    kind: Literal["cash"]
    amount: PositiveInt
    deposit_id: Identifier | None = None


class CapacityDeposit(BaseModel):
    """Make capacity in one contract sellable, in units (providers only)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"kind": "capacity", "symbol": GZ0, "quantity": 8}]},
    )

    kind: Literal["capacity"]
    symbol: Annotated[str, Field(min_length=1, max_length=64)]
    quantity: PositiveInt
    deposit_id: Identifier | None = None


DepositRequest = Annotated[CashDeposit | CapacityDeposit, Field(discriminator="kind")]


class KeyRequest(BaseModel):
    """A new API key for an account."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"account_id": "sme-hangzhou-1", "role": "buyer", "label": "laptop"}]
        },
    )

    account_id: Identifier
    role: Role
    label: Annotated[str, Field(max_length=200)] | None = None


STALL_EXAMPLE: dict[str, Any] = {
    "resource_class": "H100-80G-INT",
    "region": "GZ",
    "hours": [0, 1, 2, 3, 4, 5],
    "sla_tier": "standard",
    "max_interruptions": 2,
    "network": "roce",
    "description": "Night capacity of our training cluster, recallable with 15 minutes' notice",
}


class StallRequest(BaseModel):
    """What a provider offers of one contract family, in the standard specification."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [STALL_EXAMPLE]})

    resource_class: Annotated[str, Field(min_length=1, max_length=32)]
    region: Annotated[str, Field(min_length=1, max_length=16)]
    hours: Annotated[
        list[Annotated[StrictInt, Field(ge=0, le=23)]],
        Field(
            min_length=1,
            max_length=24,
            description="Delivery hours of the day served (China Standard Time, 0-23)",
        ),
    ]
    sla_tier: Literal["standard", "premium"] = "standard"
    max_interruptions: StrictInt = Field(
        default=0,
        ge=0,
        le=24,
        description="Recalls a day at most; only interruptible (-INT) classes may be recalled",
    )
    network: Literal["ethernet", "roce", "infiniband"] | None = None
    description: Annotated[str, Field(max_length=500)] = ""


class StallOut(BaseModel):
    """A provider's stall."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "stall_id": "gz-night",
                    "account_id": "idc-gz-1",
                    **STALL_EXAMPLE,
                    "updated_at": "2026-11-26T16:00:00+08:00",
                }
            ]
        }
    )

    stall_id: str
    account_id: str
    resource_class: str
    region: str
    hours: list[int]
    sla_tier: str
    max_interruptions: int
    network: str | None
    description: str
    updated_at: str


def _example(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


class ResultFill(BaseModel):
    """One trade of an order as matching made it."""

    trade_id: str
    price: int
    quantity: int


class OrderResult(BaseModel):
    """What matching decided about a new order: it rests (`open`, with `remaining` units in
    the book), `filled`, or `cancelled` (`reason`: an IOC's or FOK's unfilled rest, ...)."""

    status: Literal["open", "filled", "cancelled"]
    filled: int
    remaining: int
    reason: str | None = None
    fills: list[ResultFill]


class OrderAnswer(BaseModel):
    """The exchange's decision on an order (or `pending` if it took longer than 5 s)."""

    model_config = _example(
        {"order_id": ORDER_ID, "client_order_id": "my-order-1", "status": "accepted"}
    )

    order_id: str
    client_order_id: str | None = None
    status: Literal["accepted", "pending"]
    result: OrderResult | None = Field(
        default=None,
        description="With `answer=result`: what matching decided (null if not within 5 s)",
    )


class CancelAnswer(BaseModel):
    """A cancelled order and how much of it never filled."""

    model_config = _example({"order_id": ORDER_ID, "status": "cancelled", "remaining": 2})

    order_id: str
    status: Literal["cancelled", "pending"]
    remaining: int | None = None


class AmendAnswer(BaseModel):
    """An amended order, in place: its price and open quantity now, and whether it kept its
    time priority (only a smaller quantity at the same price does)."""

    model_config = _example(
        {
            "order_id": ORDER_ID,
            "status": "amended",
            "price": 1790,
            "remaining": 6,
            "kept_priority": False,
        }
    )

    order_id: str
    status: Literal["amended", "pending"]
    price: int | None = None
    remaining: int | None = None
    kept_priority: bool | None = None


class BlockRequest(BaseModel):
    """The same quantity in every one of consecutive delivery hours of one family, all or none,
    at most (buy) or at least (sell) `price` per unit on average."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "symbols": ["H100-80G.GZ.20271201T00", "H100-80G.GZ.20271201T01"],
                    "side": "buy",
                    "price": 1850,
                    "quantity": 8,
                }
            ]
        },
    )

    symbols: Annotated[
        list[Annotated[str, Field(max_length=64)]], Field(min_length=1, max_length=24)
    ]
    side: Literal["buy", "sell"]
    price: PositiveInt
    quantity: PositiveInt
    client_order_id: Identifier | None = Field(
        default=None,
        description="Names the block (one name with the account's orders): a retry with the "
        "same name returns the first answer and never places a second block.",
    )
    voucher: Identifier | None = Field(
        default=None,
        description="A buy block's compute-voucher programme: the voucher part of the whole "
        "block is reserved from the account's grant and each hour's fill uses it; what is not "
        "used returns to the grant when the block ends (docs/MONEY.md).",
    )
    day_ahead: StrictBool = Field(
        default=False,
        description="For the day-ahead auction of its hours (all in one CST day): refused "
        "(`already_auctioned`) once that auction's gate has passed, and (`no_day_ahead_auction`) "
        "on an exchange that runs none.",
    )


class BlockAnswer(BaseModel):
    """A block order accepted (held across its hours and sent to matching) or `pending`."""

    order_id: str
    client_order_id: str | None = None
    status: Literal["accepted", "pending"]
    symbols: list[str]


class CancelAllAnswer(BaseModel):
    """The kill switch: every open order of the account is being cancelled."""

    account_id: str
    status: Literal["requested", "pending"]
    symbols: list[str] = []


class ControlRequest(BaseModel):
    """Why an operator acts; recorded in the log beside who did it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "provider outage in Guizhou"}]},
    )

    reason: Annotated[str, Field(min_length=1, max_length=500)]
    at: Annotated[StrictInt | None, Field(ge=0, description="schedule_auction: log time, ms")] = (
        None
    )
    symbols: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=24)] = []
    band: Annotated[
        StrictInt | None,
        Field(ge=0, le=10**15, description="set_band: fen from the reference; 0: none"),
    ] = None


class MarketControlRequest(BaseModel):
    """Why an operator halts or resumes the whole market."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "settlement database failover"}]},
    )

    reason: Annotated[str, Field(min_length=1, max_length=500)]


class LimitsRequest(BaseModel):
    """A participant's limits (null: none) and why they are set."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"max_open_quantity": 500, "max_open_notional": 1_000_000, "reason": "new member"}
            ]
        },
    )

    max_open_quantity: Annotated[
        StrictInt | None, Field(ge=0, le=10**15, description="units of all open orders together")
    ] = None
    max_open_notional: Annotated[
        StrictInt | None,
        Field(ge=0, le=10**15, description="fen of price x quantity of open orders"),
    ] = None
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class LimitsAnswer(BaseModel):
    """An account's limits as set (`set`), or `pending` if the risk stage has not answered."""

    account_id: str
    max_open_quantity: int | None
    max_open_notional: int | None
    status: Literal["set", "pending"]
    operator_id: str


class ControlAnswer(BaseModel):
    """An operator's market command: carried out by matching (`applied`, a control of one
    contract or family), passed to every matching partition (`requested`, a control of the
    whole market), or not answered in time (`pending`). A command matching refuses is
    answered 422 with the reason."""

    symbol: str
    action: str
    status: Literal["applied", "requested", "pending"]
    operator_id: str
    state: Literal["pre_open", "continuous", "halted", "closed", "delivered"] | None = Field(
        default=None,
        description="A halt, resume, list or delist carried out: the contract's state after "
        "it (`pre_open`: halted before its auction and resumed, it collects orders for that "
        "auction again).",
    )


class DepositAnswer(BaseModel):
    """A deposit credited (or `pending`)."""

    model_config = _example({"deposit_id": "d-1", "status": "deposited"})

    deposit_id: str
    status: Literal["deposited", "pending"]


class Contract(BaseModel):
    """A listed contract with its best prices, gross and net of vouchers, and per standard
    card-hour (one hour of the base card, H100-80G; see GET /v1/performance)."""

    model_config = _example(
        {
            "symbol": "A100-80G.NMG.20271201T00",
            "resource_class": "A100-80G",
            "description": "NVIDIA A100 80 GB",
            "region": "NMG",
            "region_name": "Inner Mongolia",
            "delivery_start": "2027-12-01T00:00:00+08:00",
            "unit": "card-hour",
            "tick_size": 10,
            "performance_factor": "0.3153",
            "best_bid": 1090,
            "best_ask": 1100,
            "best_bid_per_std": 3457,
            "best_ask_per_std": 3488,
            "best_ask_net": 1100,
            "best_ask_net_per_std": 3488,
            "last": 1100,
            "volume_24h": 42,
            "seq": 17,
            "sellers": ["idc-nmg-1"],
            "state": "continuous",
            "state_name": "交易中 trading",
            "band": 0,
        }
    )

    symbol: str
    resource_class: str
    description: str
    region: str
    region_name: str
    delivery_start: str
    unit: str
    tick_size: int
    performance_factor: str | None = Field(
        description="Standard card-hours in one unit (decimal text); null if not a card"
    )
    best_bid: int | None
    best_ask: int | None
    best_bid_per_std: int | None
    best_ask_per_std: int | None
    best_ask_net: int | None = Field(
        description="One unit at the best ask less what the caller's best voucher grant would "
        "pay of it now (rate, per-contract cap and what is left of the grant); equal to "
        "best_ask without a key or an eligible grant"
    )
    best_ask_net_per_std: int | None
    last: int | None
    volume_24h: int
    seq: int
    sellers: list[str] = Field(
        default_factory=list,
        description="Providers with a stall covering this contract (see GET /v1/stalls)",
    )
    state: Literal["pre_open", "continuous", "halted", "closed", "delivered"] | None = Field(
        default=None,
        description="The contract's lifecycle state: pre_open (collecting orders for an "
        "opening or day-ahead auction), continuous, halted, closed (past its gate) or "
        "delivered; the state it was listed in until matching announces another",
    )
    state_name: str | None = Field(
        default=None, description="The state in words, Chinese first (未开盘 pre-open, ...)"
    )
    band: int = Field(
        default=0,
        description="The price band (fen): a trade further than this from the last price "
        "halts the contract; 0: none. Set by an operator (`set_band`), on the contract or its "
        "family, else the market rules'",
    )
    term: Literal["H", "D", "W", "N", "M"] = Field(
        default="H",
        description="H: one delivery hour; W: a week (Monday 00:00 to Monday 00:00 CST); N: "
        "the nights (00:00-08:00 CST) of a week; M: a calendar month; D: a day (token "
        "bundles). A week, nights or month of cards or cores is a strip: priced per card-hour "
        "(or core-hour), bought in cards, the same number in each of its hours",
    )
    term_name: str = Field(
        default="单个交付小时 one delivery hour", description="The term in words, Chinese first"
    )
    hours: int = Field(
        default=1,
        description="The hourly contracts the contract covers: a strip's amount is price x "
        "quantity x hours",
    )
    delivery_end: str | None = Field(
        default=None, description="The end of the last delivery hour (CST)"
    )
    cascades_at: str | None = Field(
        default=None,
        description="A strip's cascade (CST): its book closes and its positions become "
        "positions in each of its hourly contracts; once it has cascaded, when it did (earlier "
        "than planned if an operator delisted it); null for any other contract",
    )


class Book(BaseModel):
    """Depth of a book: `[price, quantity]` levels, best first; `seq` as in the stream."""

    model_config = _example(
        {"symbol": GZ0, "seq": 12, "bids": [[1790, 4], [1780, 10]], "asks": [[1800, 2]]}
    )

    symbol: str
    seq: int
    bids: list[list[int]]
    asks: list[list[int]]


class PublicTrade(BaseModel):
    """A settled trade, without who traded."""

    model_config = _example(
        {
            "trade_id": f"{GZ0}:1",
            "symbol": GZ0,
            "price": 1800,
            "price_per_std": 1800,
            "quantity": 4,
            "aggressor": "buy",
            "ts": 1764547200000,
        }
    )

    trade_id: str
    symbol: str
    price: int
    price_per_std: int | None
    quantity: int
    aggressor: str | None
    ts: int


class ReportTrade(PublicTrade):
    """A settled trade with its orders and counterparties (operators and administrators)."""

    buy_order_id: str
    sell_order_id: str
    buyer_id: str
    seller_id: str
    amount: int = Field(description="price x quantity, fen")


class HistoryPoint(BaseModel):
    """A product's trading in one hour or day (China Standard Time), over every delivery hour
    of its family: low, high, volume (unit-hours: a strip's cards x its hours), turnover
    (fen), trades and the volume-weighted average price per unit-hour (turnover / volume,
    rounded half up), also per standard card-hour (null without trades or for non-cards)."""

    model_config = _example(
        {
            "start": 1764518400000,
            "low": 1790,
            "high": 1820,
            "volume": 25,
            "turnover": 45200,
            "trades": 6,
            "vwap": 1808,
            "vwap_per_std": 1808,
        }
    )

    start: int
    low: int
    high: int
    volume: int
    turnover: int
    trades: int
    vwap: int | None
    vwap_per_std: int | None


class CandleOut(BaseModel):
    """One interval's open, high, low, close, volume (unit-hours: a strip's cards x its hours)
    and turnover (fen)."""

    model_config = _example(
        {
            "start": 1764547200000,
            "open": 1800,
            "high": 1820,
            "low": 1790,
            "close": 1810,
            "volume": 25,
            "turnover": 45200,
            "trades": 6,
        }
    )

    start: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    turnover: int
    trades: int


class Stats(BaseModel):
    """24 hours of log time up to `window_end` (the latest event's time): volume in
    unit-hours (a strip's cards x its hours), turnover in fen, and the volume-weighted average
    price per unit-hour, turnover / volume rounded half up."""

    model_config = _example(
        {
            "symbol": GZ0,
            "window_end": 1764550800000,
            "open": 1800,
            "high": 1820,
            "low": 1790,
            "last": 1810,
            "change": 10,
            "volume": 25,
            "turnover": 45200,
            "trades": 6,
            "vwap": 1808,
            "last_per_std": 1810,
            "vwap_per_std": 1808,
        }
    )

    symbol: str
    window_end: int
    open: int | None
    high: int | None
    low: int | None
    last: int | None
    change: int | None
    volume: int
    turnover: int
    trades: int
    vwap: int | None
    last_per_std: int | None
    vwap_per_std: int | None


class CardOut(BaseModel):
    """A card's published throughput and its factor."""

    code: str
    name: str
    dense_tflops: str
    factor: str
    source: str
    url: str
    confidence: str


class PerformanceOut(BaseModel):
    """The table of standard card-hours: one hour of `base` is 1."""

    model_config = _example(
        {
            "base": "H100-80G",
            "metric": "dense FP16/BF16 tensor TFLOPS",
            "about": "...",
            "cards": [
                {
                    "code": "A100-80G",
                    "name": "NVIDIA A100 80 GB",
                    "dense_tflops": "312",
                    "factor": "0.3153",
                    "source": "NVIDIA A100 datasheet",
                    "url": "https://www.nvidia.com/",
                    "confidence": "vendor datasheet",
                }
            ],
        }
    )

    base: str
    metric: str
    about: str
    cards: list[CardOut]


class StageProgress(BaseModel):
    """Where one stage is in one partition of its input topic."""

    model_config = _example(
        {
            "stage": "settlement",
            "topic": "cx.events",
            "partition": 1,
            "end_offset": 5120,
            "offset": 5118,
            "lag": 2,
            "progressing": True,
            "idle_seconds": 0.0,
        }
    )

    stage: Literal["risk", "matching", "dayahead", "settlement", "market-data"]
    topic: str
    partition: int
    end_offset: int
    offset: int = Field(
        description="Next offset the stage takes: committed (risk, matching, dayahead: the "
        "day-ahead auction's one partition), settled (settlement), folded by this API process "
        "(market-data)"
    )
    lag: int
    progressing: bool = Field(description="Caught up, or moved within the stall time")
    idle_seconds: float = Field(description="How long it has had lag without moving")


class StalledStage(BaseModel):
    """A stage that does not get on in a partition, and why."""

    model_config = _example(
        {
            "stage": "settlement",
            "topic": "cx.events",
            "partition": 1,
            "kind": "cannot_apply",
            "since": "2027-11-30T16:00:00.000+08:00",
            "lag": 57,
            "detail": "IntegrityError: (sqlite3.IntegrityError) UNIQUE constraint failed: ...",
            "offset": 4210,
            "event_id": "cx.orders:1:4183:2",
            "event_type": "TradeExecuted",
            "attempts": 3,
            "set_aside_by": None,
        }
    )

    stage: str
    topic: str
    partition: int
    kind: Literal["cannot_apply", "no_progress", "unreadable"] = Field(
        description="cannot_apply: settlement stopped at an event it cannot apply; "
        "no_progress: lag that has not moved for the stall time; unreadable: where the stage "
        "is could not be read for the stall time"
    )
    since: str = Field(description="When it began (ISO 8601, China Standard Time)")
    lag: int | None
    detail: str
    offset: int | None = Field(description="The offset it stopped at")
    event_id: str | None = None
    event_type: str | None = None
    attempts: int | None = Field(
        default=None, description="cannot_apply: how often the event was tried"
    )
    set_aside_by: str | None = Field(
        default=None, description="cannot_apply: the operator who set the event aside"
    )


class _HealthFields(BaseModel):
    market_data_ready: bool
    log_time: int
    stall_seconds: float = Field(description="CX_STALL_SECONDS: lag unmoved this long stalls")
    stages: list[StageProgress]
    stalls: list[StalledStage]


class Health(_HealthFields):
    """Whether the API is up and caught up with the events topic, and every stage's progress."""

    status: Literal["ok", "starting"]


class HealthProblem(_HealthFields):
    """A stalled stage (503): a problem detail that still lists every stage and stall."""

    type: str
    title: str
    status: int
    detail: str


class PipelineStatusOut(BaseModel):
    """Every stage's progress per partition and every stall, for operators."""

    checked_at: str
    stalled: bool
    stall_seconds: float
    stages: list[StageProgress]
    stalls: list[StalledStage]
    unreadable: list[str] = Field(description="What could not be read just now, and why")


class SetAsideRequest(BaseModel):
    """Set aside the event a stalled partition stopped at: it goes to the dead-letter topic
    and settlement goes on after it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"source": "cx.events:1:4210", "reason": "duplicate trade, ticket 42"}]
        },
    )

    source: Annotated[
        str, Field(min_length=5, max_length=300, description="topic:partition:offset")
    ]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class SetAsideAnswer(BaseModel):
    """The stall an operator asked settlement to set aside; it does so within a second."""

    source: str
    stage: str
    event_id: str | None
    event_type: str | None
    set_aside_by: str
    reason: str
    status: Literal["requested"]


class DeadLetterOut(BaseModel):
    """A record a stage set aside to the dead-letter topic, and who set it aside and why."""

    source: str = Field(description="`topic:partition:offset` of the original record")
    topic: str
    partition: int
    offset: int
    stage: str
    reason: str = Field(description="why the stage set it aside, with any operator's reason")
    logged_at: str = Field(description="log time of the original record")
    value: str = Field(description="the original record, as text (bytes not UTF-8 replaced)")
    event_id: str | None = Field(description="the event's id, when an operator set it aside")
    event_type: str | None
    set_aside_by: str | None = Field(description="the operator; null when the stage did")
    set_aside_reason: str | None
    set_aside_at: str | None = Field(description="when settlement carried the set-aside out")


class Me(BaseModel):
    """The account and role of the presented key."""

    model_config = _example({"key_id": "3fa2c1d0b9e8", "account_id": "buyer-1", "role": "buyer"})

    key_id: str
    account_id: str
    role: Role


class OrderRow(BaseModel):
    """An order as settled."""

    model_config = _example(
        {
            "order_id": ORDER_ID,
            "account_id": "buyer-1",
            "symbol": GZ0,
            "side": "buy",
            "price": 1850,
            "quantity": 8,
            "filled": 4,
            "status": "open",
            "reason": None,
            "client_order_id": "my-order-1",
            "created_ts": 1764547200000,
            "updated_ts": 1764547201000,
            "delivery_start": "2027-12-01T00:00:00+08:00",
            "delivery_end": "2027-12-01T01:00:00+08:00",
        }
    )

    order_id: str
    account_id: str
    symbol: str = Field(description="The contract; a block's or an exclusive group's family")
    side: str
    price: int
    quantity: int = Field(description="Units; a block's (or group's) over all its hours")
    filled: int
    status: str
    reason: str | None
    client_order_id: str | None
    created_ts: int
    updated_ts: int
    symbols: list[str] | None = Field(
        default=None,
        description="A block's hourly contracts (an exclusive group's: its first "
        "alternative's); null for an order of one contract",
    )
    delivery_start: str | None = Field(
        default=None,
        description="When delivery starts, China Standard Time: of the contract, or of a "
        "block's first hour",
    )
    delivery_end: str | None = Field(
        default=None,
        description="When delivery ends, China Standard Time: of the contract, or of a "
        "block's last hour",
    )
    group_id: str | None = Field(
        default=None,
        description="The exclusive group (POST /v1/exclusive-groups) a block is an alternative of",
    )
    alternatives: list[OrderRow] | None = Field(
        default=None,
        description="An exclusive group's alternatives (GET /v1/orders/{id} of a group's id), "
        "each a block with its hours; null for an order or block",
    )


class AcceptedOrder(OrderRow):
    """An order the exchange accepted that settlement has not recorded yet (it is behind or
    stopped): `status` is `accepted`, the rest as the API's market data saw it."""

    model_config = _example(
        {
            "order_id": ORDER_ID,
            "account_id": "buyer-1",
            "symbol": GZ0,
            "side": "buy",
            "price": 1850,
            "quantity": 8,
            "filled": 8,
            "status": "accepted",
            "reason": None,
            "client_order_id": "my-order-1",
            "created_ts": 1764547200000,
            "updated_ts": 1764547201000,
            "delivery_start": "2027-12-01T00:00:00+08:00",
            "delivery_end": "2027-12-01T01:00:00+08:00",
            "settled": False,
            "market_status": "filled",
            "detail": "已受理, 尚未结算 accepted, not yet settled: ...",
        }
    )

    settled: Literal[False] = Field(
        default=False, description="Always false: settlement has not recorded the order yet"
    )
    market_status: Literal["open", "filled", "cancelled"] = Field(
        description="Where the order stands as the API's market data saw it: open, or "
        "filled or cancelled (or expired) since; settlement's record, once it has one, is "
        "what counts"
    )
    detail: str


class Fill(BaseModel):
    """One of the account's orders traded."""

    model_config = _example(
        {
            "trade_id": f"{GZ0}:1",
            "order_id": ORDER_ID,
            "symbol": GZ0,
            "side": "buy",
            "price": 1800,
            "price_per_std": 1800,
            "quantity": 4,
            "amount": 7200,
            "liquidity": "taker",
            "ts": 1764547200000,
        }
    )

    trade_id: str
    order_id: str
    symbol: str
    side: Literal["buy", "sell"]
    price: int
    price_per_std: int | None
    quantity: int
    amount: int
    liquidity: Literal["maker", "taker", "auction"]
    ts: int


class CashOut(BaseModel):
    """Cash an account may use, and cash held for its open buy orders (fen)."""

    available: int
    held: int


class CapacityOut(BaseModel):
    """Deposited capacity of one contract, unsold: not held (`available`) and held for open
    sell orders (units), and what the provider may still do with it (`state`)."""

    symbol: str
    available: int
    held: int
    state: Literal["open", "gate_closed", "not_listed"] = Field(
        description="`open`: 关闸前可卖出、可撤回 sellable and withdrawable until `gate`; "
        "`gate_closed`: 已关闸: 未售出的容量不能再卖出或撤回, 也不交付、不结算 past its gate: "
        "the unsold units can no longer be sold nor withdrawn, and nothing is owed or paid "
        "for them (the exchange keeps them on the books as deposited); `not_listed`: 合约已不"
        "再挂牌, 不能卖出或撤回 the exchange lists the contract no more: neither"
    )
    gate: str | None = Field(
        description="when the contract's trading closes (or closed), China Standard Time; "
        "null when `not_listed`"
    )


class PositionOut(BaseModel):
    """Units of a contract the account bought and will receive."""

    symbol: str
    quantity: int


class AccountOut(BaseModel):
    """An account's settled balances."""

    model_config = _example(
        {
            "account_id": "buyer-1",
            "cash": {"available": 492800, "held": 0},
            "bonds": 0,
            "capacity": [],
            "positions": [{"symbol": GZ0, "quantity": 4}],
        }
    )

    account_id: str
    cash: CashOut
    bonds: int = Field(
        description="交付保证金 fen a provider posted as delivery bonds behind capacity it sold "
        "and has not yet delivered (ledger account `bond:<account>`), returned less any penalty "
        "when the delivery settles; cash.available + cash.held + bonds is the account's money "
        "on the exchange, a statement's closing balance"
    )
    capacity: list[CapacityOut]
    positions: list[PositionOut]


class Obligation(BaseModel):
    """Capacity a provider sold in a contract: to deliver from `delivery_start`, and paid."""

    model_config = _example(
        {
            "symbol": GZ0,
            "delivery_start": "2027-12-01T00:00:00+08:00",
            "quantity": 4,
            "payout": 7200,
            "trades": 1,
        }
    )

    symbol: str
    delivery_start: str | None
    quantity: int
    payout: int
    trades: int


class KeyOut(BaseModel):
    """An API key as listed (never its secret)."""

    model_config = _example(
        {
            "key_id": "3fa2c1d0b9e8",
            "account_id": "sme-hangzhou-1",
            "role": "buyer",
            "label": "laptop",
            "created_at": "2026-11-26T16:00:00+08:00",
            "revoked_at": None,
        }
    )

    key_id: str
    account_id: str
    role: Role
    label: str | None
    created_at: str
    revoked_at: str | None


class NewKeyOut(KeyOut):
    """A key just created: `key` is shown only in this answer."""

    key: str


class StoredEventOut(BaseModel):
    """An event as stored in the event store."""

    model_config = _example(
        {
            "position": 41,
            "stream_id": f"contract-{GZ0}",
            "stream_version": 7,
            "event_id": "cx.orders:1:20:1",
            "type": "TradeExecuted",
            "schema_version": 1,
            "data": {"type": "TradeExecuted", "trade_id": f"{GZ0}:1", "price": 1800},
            "metadata": {"topic": "cx.events", "partition": 1, "offset": 57},
            "recorded_at": "2026-11-26T16:00:00.123000+08:00",
        }
    )

    shard: int = 0
    """The settlement shard storing it (0: the home shard, the only one unless
    CX_SETTLEMENT_SHARDS names more); `position` is that shard's own."""
    cursor: str | None = None
    """Where `/v1/admin/events?cursor=` goes on after this event (that list only)."""
    position: int
    stream_id: str
    stream_version: int
    event_id: str
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: str


NEED_ID = "n-8d2f0c4b6a1e9d7c5b3a29180f7e6d5c4b3a2918"
DAY_START_MS = 1827590400000
"""2027-12-01T00:00+08:00, the first listed hour of the default catalogue, in ms."""


class RegionAdder(BaseModel):
    """An acceptable region, with what it costs in the ranking (not in money): fen per standard
    card-hour, e.g. for the latency of a distant region."""

    model_config = ConfigDict(extra="forbid")

    region: Annotated[str, Field(min_length=1, max_length=16, examples=["GZ"])]
    adder: Annotated[int, Field(ge=0, le=10**9, strict=True)] = 0


class NeedRequest(BaseModel):
    """A need: what to buy, where, when and for how much at most; the exchange plans the
    cheapest block order that meets it from the live books."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "client_need_id": "train-run-7",
                    "unit": "standard_card_hours",
                    "quantity": 16,
                    "hours": 2,
                    "earliest_start": DAY_START_MS,
                    "deadline": DAY_START_MS + 2 * 3_600_000,
                    "regions": [{"region": "GZ"}, {"region": "YRD", "adder": 50}],
                    "min_grade": 3000,
                    "max_total": 40000,
                    "stand": True,
                }
            ]
        },
    )

    client_need_id: Identifier | None = Field(
        default=None,
        description="Names the need: a retry with the same name returns the same need.",
    )
    unit: Literal["standard_card_hours", "cards"] = Field(
        description="`standard_card_hours`: `quantity` in total, converted to cards through each "
        "card's performance factor; `cards`: `quantity` cards in every hour."
    )
    quantity: PositiveInt
    hours: Annotated[int, Field(ge=1, le=744, strict=True)] = Field(
        description="Consecutive delivery hours (night hours, with `nights`). A block order "
        "serves at most 24; a week or month strip wholly inside the window serves up to its "
        '168 or 672-744 when it costs less (docs/DESIGN.md, "Needs and strips").'
    )
    earliest_start: Annotated[int, Field(ge=0, strict=True)] = Field(
        description="The first hour may start at this time or later (ms since the epoch)."
    )
    deadline: Annotated[int, Field(ge=0, strict=True)] = Field(
        description="The last hour must end by this time (ms); a standing need expires then."
    )
    regions: Annotated[list[RegionAdder], Field(min_length=1, max_length=16)]
    classes: Annotated[list[Annotated[str, Field(max_length=32)]], Field(max_length=16)] = Field(
        default_factory=list,
        description="Accepted resource classes (empty: every firm card class; an interruptible "
        "-INT class, recallable before delivery, only when named here).",
    )
    min_grade: Annotated[int, Field(ge=0, le=1_000_000, strict=True)] = Field(
        default=0,
        description="Minimum performance factor in ten-thousandths of the standard card "
        "(10000 = H100-80G; see GET /v1/performance).",
    )
    max_total: PositiveInt = Field(description="The most the block may cost, in fen.")
    stand: StrictBool = Field(
        default=False,
        description="If nothing is feasible now, keep the need until its deadline and place it "
        "when the books allow (otherwise answer 422 `no_feasible_plan`).",
    )
    voucher: Identifier | None = Field(
        default=None,
        description="A compute-voucher programme the account holds a grant of: alternatives "
        "it covers are ranked by what the buyer pays after it, and the chosen block carries "
        "it if it covers that block.",
    )
    nights: StrictBool = Field(
        default=False,
        description="The hours may be night hours (00:00-08:00 CST) of the window's nights "
        "rather than consecutive: only then may a week's nights strip (56 hours) serve the need.",
    )
    day_ahead: StrictBool = Field(
        default=False,
        description="Bid in the day-ahead auction instead of buying from the books now: the "
        "exchange places the planner's best alternatives (at most 12, each in one CST day whose "
        "auction gate has not passed, all of one number of cards an hour) as one exclusive "
        "group at the need's price limit (`max_total` over the card-hours, down to the tick); "
        "the auction buys at most one of them. Past the day's gate, with intraday auctions, "
        "the hours the next intraday auction still takes bid there, as an exclusive group "
        "does; no auction left: `already_auctioned`, saying which closed. Not with `stand`.",
    )


class AlternativeOut(BaseModel):
    """One family and start hour (an hourly block) or one strip the planner priced, or why it
    cannot serve the need."""

    kind: Literal["hourly_block", "strip"] = Field(
        description="`hourly_block`: one block order of the consecutive hours in `symbols`; "
        "`strip`: one fill-or-kill order on the week, nights or month strip in `symbols`."
    )
    hours: int = Field(description="Delivery hours bought: the block's, or all the strip's.")
    family: str
    resource_class: str
    region: str
    delivery_start: str
    symbols: list[str]
    cards_per_hour: int
    standard_card_hours: str = Field(description="Delivered, as decimal text (4 places).")
    cost: int | None = Field(description="Fen at the walked asks; null when depth is short.")
    adder_cost: int = Field(description="The region adder x standard card-hours, rounded up.")
    ranked_total: int | None = Field(
        description="net_cost + adder_cost: what the choice minimises."
    )
    limit_price: int | None = Field(
        description="The block's average price limit, or the strip order's limit (the dearest "
        "ask walked), fen per card-hour."
    )
    feasible: bool
    reason: str | None = None
    detail: str
    voucher: int | None = Field(
        default=None,
        description="What the need's voucher would pay of `cost` (fen); null when the need "
        "names no voucher or its grant does not cover this alternative.",
    )
    net_cost: int | None = Field(
        default=None, description="`cost` less `voucher`: what the buyer would pay (fen)."
    )


class ExclusionOut(BaseModel):
    """A listed family that cannot serve the need at all."""

    family: str
    reason: str
    detail: str


class PlanOut(BaseModel):
    """Every alternative priced (best first), the chosen one and why."""

    chosen: AlternativeOut | None
    alternatives: list[AlternativeOut]
    excluded: list[ExclusionOut]
    reason: str | None = Field(description="Why nothing is feasible, when nothing is.")
    explanation: str


class NeedRecallOut(BaseModel):
    """A provider's recall of units the need's order bought (docs/DESIGN.md, recalls)."""

    symbol: str
    recall_id: str
    quantity: int = Field(description="Units recalled.")
    refund: int = Field(description="Fen refunded to the buyer for them.")
    penalty: int = Field(description="Fen of compensation paid to the buyer from the bond.")
    reason: str


class NeedOrderOut(BaseModel):
    """The block order (or, for a strip, the fill-or-kill order) placed for a need and what
    became of it."""

    order_id: str
    symbols: list[str]
    price: int = Field(description="Average price limit, fen per unit.")
    quantity: int = Field(description="Units in every hour.")
    status: Literal["pending", "open", "filled", "cancelled", "rejected"]
    filled: int = Field(description="Units filled over all hours.")
    paid: int = Field(description="Fen paid for what filled, before any voucher.")
    reason: str | None = None
    voucher: str | None = Field(
        default=None, description="The voucher programme the block carries, if any."
    )
    kind: Literal["hourly_block", "strip"] = Field(
        default="hourly_block",
        description="`strip`: a fill-or-kill order on the strip in `symbols` (its quantity "
        "cards in each of the strip's hours) instead of a block order.",
    )
    recalled: list[NeedRecallOut] = Field(
        default_factory=list,
        description="For an interruptible (-INT) class: the recalls that took back the buyer's "
        "units of these hours before delivery, each refunded and compensated (`paid` stays "
        "what the block paid). Recalls are kept per hour and holder, not per order.",
    )


class NeedAlternativeOut(BaseModel):
    """One alternative of a day-ahead need's exclusive group: a block and what became of it."""

    order_id: str
    symbols: list[str]
    price: int | None = Field(
        default=None,
        description="This alternative's average price limit, fen per unit: the need's "
        "`max_total` less the region adder, per card-hour, to the tick (None: the group's).",
    )
    status: Literal["pending", "open", "filled", "cancelled", "rejected"]
    filled: int = Field(description="Units filled over all hours.")
    paid: int = Field(description="Fen paid for what filled, before any voucher.")
    reason: str | None = None


class NeedGroupOut(BaseModel):
    """The exclusive group placed for a day-ahead need: the auction buys at most one of its
    alternatives."""

    order_id: str = Field(description="The group's order id.")
    price: int = Field(
        description="The highest average price limit of any alternative, fen per unit."
    )
    quantity: int = Field(description="Units in every hour.")
    voucher: str | None = None
    alternatives: list[NeedAlternativeOut]


class NeedOut(BaseModel):
    """A need, its plan (the one submitted, or for a standing need the current one), its status
    and its block order's outcome (for a day-ahead need, its exclusive group's)."""

    model_config = _example(
        {
            "need_id": NEED_ID,
            "client_need_id": "train-run-7",
            "status": "filled",
            "need": NeedRequest.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
            "plan": None,
            "order": {
                "order_id": exchange_order_id("sme-1", f"{NEED_ID}-block"),
                "symbols": [GZ0, "H100-80G.GZ.20271201T01"],
                "price": 1800,
                "quantity": 8,
                "status": "filled",
                "filled": 16,
                "paid": 28800,
                "reason": None,
            },
            "reason": None,
            "created_ms": 1767225600000,
            "updated_ms": 1767225600150,
        }
    )

    need_id: str
    client_need_id: str | None
    status: Literal[
        "standing",
        "submitted",
        "filled",
        "partially_filled",
        "not_filled",
        "expired",
        "withdrawn",
        "rejected",
    ]
    need: dict[str, Any]
    plan: PlanOut | None
    order: NeedOrderOut | None
    group: NeedGroupOut | None = Field(
        default=None, description="A day-ahead need's exclusive group (null otherwise)."
    )
    reason: str | None = Field(description="Why the need ended, when it did without filling.")
    created_ms: int
    updated_ms: int


class ExclusiveGroupRequest(BaseModel):
    """Buy `quantity` in every hour of at most one of `alternatives` in the day-ahead auction,
    at most `price` per unit and hour on average: an exclusive group (a need's alternatives)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "alternatives": [
                        ["H100-80G.GZ.20271201T09", "H100-80G.GZ.20271201T10"],
                        ["H100-80G.NM.20271201T09", "H100-80G.NM.20271201T10"],
                    ],
                    "price": 1800,
                    "quantity": 4,
                    "client_order_id": "train-run-8",
                }
            ]
        },
    )

    alternatives: Annotated[
        list[
            Annotated[
                list[Annotated[str, Field(min_length=1, max_length=64)]],
                Field(min_length=1, max_length=24),
            ]
        ],
        Field(min_length=1, max_length=64),
    ] = Field(
        description="Each a block: consecutive delivery hours of one family, in one CST day. "
        "At most 12 (`too_many_alternatives`); alternatives not listed are left out."
    )
    price: PositiveInt
    quantity: PositiveInt
    prices: list[PositiveInt] | None = Field(
        default=None,
        description="Each alternative's own average price limit, in the order of "
        "`alternatives`, none above `price` (a far region is worth less to a buyer whose "
        "latency costs more there): the auction weighs each at its own. Omitted: every "
        "alternative at `price`.",
    )
    voucher: Identifier | None = Field(
        default=None,
        description="A compute-voucher programme of the account's grant, reserved by each "
        "alternative until the auction.",
    )
    client_order_id: GroupId | None = Field(
        default=None,
        description="Names the group: a retry with the same name returns the first answer and "
        "never places a second group (its alternatives are `<id>.1`, `<id>.2`, ...).",
    )

    @model_validator(mode="after")
    def _one_price_per_alternative(self) -> ExclusiveGroupRequest:
        prices = self.prices
        if prices is not None and len(prices) != len(self.alternatives):
            raise ValueError(
                f"prices: one per alternative, {len(self.alternatives)}, not {len(prices)}"
            )
        if prices is not None and max(prices) > self.price:
            raise ValueError(f"prices: none above the group's price {self.price}")
        return self


class GroupAlternativeOut(BaseModel):
    """One alternative of an exclusive group: its block's order id and hours."""

    order_id: str
    symbols: list[str]


class ExclusiveGroupAnswer(BaseModel):
    """An exclusive group accepted (every listed alternative held until the auction), or
    `pending`."""

    order_id: str = Field(description="The group's order id.")
    status: Literal["accepted", "pending"]
    alternatives: list[GroupAlternativeOut] = Field(
        description="The alternatives held until the auction (`pending`: every one sent)."
    )
    skipped: list[list[str]] = Field(
        default_factory=list,
        description="Alternatives not listed when the group was accepted (a delisted hour): "
        "dropped, holding nothing.",
    )


class DayAheadContractOut(BaseModel):
    """One contract-hour's result of a day-ahead auction."""

    symbol: str
    resource_class: str
    price: int | None = Field(description="The clearing price, fen per unit (null: none).")
    volume: int = Field(description="Units traded in the auction.")


class DayAheadHourOut(BaseModel):
    """One delivery hour of a region: each class's contract."""

    hour: str = Field(description="The delivery hour's start, `HH:00` CST.")
    delivery_start: str
    contracts: list[DayAheadContractOut]


class DayAheadRegionOut(BaseModel):
    """One region's clearing prices and volumes, hour by hour."""

    region: str
    hours: list[DayAheadHourOut]


class DayAheadSummaryOut(BaseModel):
    """What the auction's solver reached."""

    welfare: int = Field(description="Buyers' and sellers' surplus at the result, fen.")
    bound: int = Field(description="The most welfare proved possible, fen.")
    gap_ppm: int = Field(description="(bound - welfare) / bound, parts per million.")
    solver_status: str = Field(description="`optimal`, or `limit_reached` (see gap_ppm).")
    orders: int
    accepted: int
    solve_ms: int
    cleared_at: str = Field(description="When the result was written (log time, CST).")


class IntradayAuctionsOut(BaseModel):
    """The intraday auctions next to now, named by their CST time YYYY-MM-DDTHH:MM."""

    previous: str = Field(description="The last one whose gate has passed.")
    next: str = Field(description="The next one to come.")


class DayAheadAuctionOut(BaseModel):
    """A delivery day's day-ahead auction: `collecting` orders until its gate, `clearing` past
    it, `cleared` with its result."""

    model_config = _example(
        {
            "date": "2027-12-01",
            "status": "cleared",
            "gate": "2027-11-30T12:00:00+08:00",
            "gate_ms": 1827547200000,
            "result": {
                "welfare": 12800,
                "bound": 12800,
                "gap_ppm": 0,
                "solver_status": "optimal",
                "orders": 5,
                "accepted": 3,
                "solve_ms": 12,
                "cleared_at": "2027-11-30T12:00:00.400+08:00",
            },
            "regions": [
                {
                    "region": "GZ",
                    "hours": [
                        {
                            "hour": "09:00",
                            "delivery_start": "2027-12-01T09:00:00+08:00",
                            "contracts": [
                                {
                                    "symbol": "H100-80G.GZ.20271201T09",
                                    "resource_class": "H100-80G",
                                    "price": 1700,
                                    "volume": 4,
                                }
                            ],
                        }
                    ],
                }
            ],
        }
    )

    date: str
    status: Literal["collecting", "clearing", "cleared", "not_held"] = Field(
        description="`collecting` until the gate, `clearing` once it passed and until the "
        "result is stored, `cleared` with it; `not_held`: no bids were collected for it, 10 "
        "minutes of log time past its gate (its gate passed before the exchange started, or "
        "before it ran day-ahead auctions), so it never ran."
    )
    gate: str
    gate_ms: int
    result: DayAheadSummaryOut | None
    regions: list[DayAheadRegionOut] = Field(
        description="Per region, per hour, per class: clearing price and volume (empty before "
        "the result)."
    )
    intraday: IntradayAuctionsOut | None = Field(
        default=None,
        description="The intraday auctions around the log time now, by name (null when the "
        "exchange runs none): read each at `/v1/day-ahead/{name}`.",
    )


class DayAheadFillOut(BaseModel):
    """What an order got in one contract-hour."""

    symbol: str
    price: int
    quantity: int


class DayAheadOrderResultOut(BaseModel):
    """One order of the account in a day-ahead or intraday auction: accepted (with what it
    got per hour), or why it got nothing and whether it was dropped or rests in its book."""

    order_id: str
    group: str | None = Field(description="The exclusive group (need) it is an alternative of.")
    side: Literal["buy", "sell"]
    symbols: list[str]
    price: int = Field(description="Its limit, fen per unit (a block's: the average).")
    quantity: int = Field(description="Units asked in every hour.")
    status: Literal["pending", "accepted", "rejected", "resting"] = Field(
        description="`pending` until the auction's result is stored; then `accepted` if it got "
        "units, else `rejected` (a block or an alternative, dropped) or `resting` (an hourly "
        "order, which stays in its book and trades on)."
    )
    accepted: int = Field(description="Units accepted in every hour (0 when it got none).")
    reason: str | None = Field(
        description="Why it got nothing: out_of_the_money, at_the_money, paradoxically_rejected, "
        "alternative_accepted, no_counterparty, no_clearing_price (one of its hours got no "
        "price; a bid the hours that did clear already price out reads out_of_the_money)."
    )
    fills: list[DayAheadFillOut]
    amount: int = Field(description="Fen over its fills (price x quantity).")


class DayAheadResultsOut(BaseModel):
    """An account's orders in a day's auction, once it has cleared."""

    date: str
    account_id: str
    status: Literal["collecting", "clearing", "cleared", "not_held"] = Field(
        description="`collecting` until the gate, `clearing` once it passed and until the "
        "result is stored, `cleared` with it; `not_held`: no bids were collected for it, 10 "
        "minutes of log time past its gate (its gate passed before the exchange started, or "
        "before it ran day-ahead auctions), so it never ran."
    )
    orders: list[DayAheadOrderResultOut]
