"""The API's answers as typed models. Unknown fields are kept, so newer servers do not break."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Base of every answer."""

    model_config = ConfigDict(extra="allow", frozen=True)


class StageProgress(Model):
    """Where one stage (risk, matching, settlement, market-data) is in one partition."""

    stage: str
    topic: str
    partition: int
    end_offset: int
    offset: int
    lag: int
    progressing: bool
    idle_seconds: float


class StalledStage(Model):
    """A stage that does not get on in a partition: `kind` is `cannot_apply` (settlement
    stopped at an event it cannot apply), `no_progress` or `unreadable`."""

    stage: str
    topic: str
    partition: int
    kind: str
    since: str
    lag: int | None
    detail: str
    offset: int | None
    event_id: str | None = None
    event_type: str | None = None
    attempts: int | None = None
    set_aside_by: str | None = None


class Health(Model):
    """Whether the API is up and caught up (`ok`, `starting`), or a stage is `stalled`; and
    every stage's progress per partition."""

    status: str
    market_data_ready: bool
    log_time: int
    stall_seconds: float
    stages: list[StageProgress]
    stalls: list[StalledStage]


class PipelineStatus(Model):
    """Every stage's progress and every stall, for operators."""

    checked_at: str
    stalled: bool
    stall_seconds: float
    stages: list[StageProgress]
    stalls: list[StalledStage]
    unreadable: list[str]


class SetAside(Model):
    """A stalled event an operator asked settlement to set aside."""

    source: str
    stage: str
    event_id: str | None
    event_type: str | None
    set_aside_by: str
    reason: str
    status: str


class DeadLetter(Model):
    """A record a stage set aside to the dead-letter topic; for one an operator set aside, who
    did, why and when."""

    source: str
    """`topic:partition:offset` of the original record."""
    topic: str
    partition: int
    offset: int
    stage: str
    reason: str
    logged_at: str
    """Log time of the original record."""
    value: str
    event_id: str | None
    event_type: str | None
    set_aside_by: str | None
    set_aside_reason: str | None
    set_aside_at: str | None


class Contract(Model):
    """A listed contract with its best prices (fen), gross, net of vouchers and per standard
    card-hour."""

    symbol: str
    resource_class: str
    description: str
    region: str
    region_name: str
    delivery_start: str
    unit: str
    tick_size: int
    performance_factor: str | None
    best_bid: int | None
    best_ask: int | None
    best_bid_per_std: int | None
    best_ask_per_std: int | None
    best_ask_net: int | None
    best_ask_net_per_std: int | None
    last: int | None
    volume_24h: int
    seq: int
    sellers: list[str] = []
    """Providers with a stall covering this contract."""
    state: Literal["pre_open", "continuous", "halted", "closed", "delivered"] | None = None
    """The lifecycle state (the one it was listed in until matching announces another)."""
    state_name: str | None = None
    """The state in words, Chinese first (未开盘 pre-open, 交易中 trading, ...)."""
    band: int = 0
    """The price band (fen; 0: none): the contract's, its family's, or the market rules'."""
    term: str = "H"
    """H: an hour; W: a week; N: a week's nights; M: a month; D: a day (token bundles)."""
    term_name: str = "单个交付小时 one delivery hour"
    hours: int = 1
    """The hourly contracts covered: a strip's amount is price x quantity x hours."""
    delivery_end: str | None = None
    cascades_at: str | None = None
    """When a strip becomes positions in its hourly contracts (null otherwise)."""


class Book(Model):
    """Depth: `[price, quantity]` levels, best first, at `seq`."""

    symbol: str
    seq: int
    bids: list[list[int]]
    asks: list[list[int]]


class Trade(Model):
    """A public trade."""

    trade_id: str
    symbol: str
    price: int
    price_per_std: int | None
    quantity: int
    aggressor: str | None
    ts: int


class ReportTrade(Trade):
    """A trade with its orders and counterparties."""

    buy_order_id: str
    sell_order_id: str
    buyer_id: str
    seller_id: str
    amount: int


class Candle(Model):
    """One interval of trading."""

    start: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    turnover: int
    trades: int


class Stats(Model):
    """24 hours of log time up to `window_end`."""

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


class Card(Model):
    """A card's published throughput and its standard card-hour factor."""

    code: str
    name: str
    dense_tflops: str
    factor: str
    source: str
    url: str
    confidence: str


class Performance(Model):
    """The standard card-hour table."""

    base: str
    metric: str
    about: str
    cards: list[Card]


class Me(Model):
    """The key's account and role."""

    key_id: str
    account_id: str
    role: str


class ResultFill(Model):
    """One trade of a new order."""

    trade_id: str
    price: int
    quantity: int


class OrderResult(Model):
    """What matching decided about a new order: it rests, filled, or was cancelled."""

    status: Literal["open", "filled", "cancelled"]
    filled: int
    remaining: int
    reason: str | None = None
    fills: list[ResultFill]


class OrderAnswer(Model):
    """The exchange's decision on an order."""

    order_id: str
    client_order_id: str | None = None
    status: Literal["accepted", "pending"]
    result: OrderResult | None = None
    """With `result=True`: what matching decided (None if not within 5 s)."""


class CancelAnswer(Model):
    """A cancelled order."""

    order_id: str
    status: Literal["cancelled", "pending"]
    remaining: int | None = None


class AmendAnswer(Model):
    """An order amended in place; it kept its time priority only if it was only reduced."""

    order_id: str
    status: Literal["amended", "pending"]
    price: int | None = None
    remaining: int | None = None
    kept_priority: bool | None = None


class BlockAnswer(Model):
    """A block order: every listed hour or none."""

    order_id: str
    client_order_id: str | None = None
    status: Literal["accepted", "pending"]
    symbols: list[str]


class Alternative(Model):
    """One family and start hour (an hourly block) or one strip a need's planner priced, or
    why it cannot serve the need."""

    kind: Literal["hourly_block", "strip"]
    hours: int
    family: str
    resource_class: str
    region: str
    delivery_start: str
    symbols: list[str]
    cards_per_hour: int
    standard_card_hours: str
    cost: int | None
    adder_cost: int
    ranked_total: int | None
    limit_price: int | None
    feasible: bool
    reason: str | None = None
    detail: str
    voucher: int | None = None
    net_cost: int | None = None


class Exclusion(Model):
    """A listed family that cannot serve a need at all."""

    family: str
    reason: str
    detail: str


class Plan(Model):
    """Every alternative priced (best first), the chosen one and why."""

    chosen: Alternative | None
    alternatives: list[Alternative]
    excluded: list[Exclusion]
    reason: str | None
    explanation: str


class NeedRecall(Model):
    """A provider's recall of units an interruptible need's order bought: refunded and
    compensated (`penalty`), fen."""

    symbol: str
    recall_id: str
    quantity: int
    refund: int
    penalty: int
    reason: str


class NeedOrder(Model):
    """The block order (or fill-or-kill strip order) placed for a need and its outcome."""

    order_id: str
    symbols: list[str]
    price: int
    quantity: int
    status: Literal["pending", "open", "filled", "cancelled", "rejected"]
    filled: int
    paid: int
    reason: str | None = None
    voucher: str | None = None
    kind: Literal["hourly_block", "strip"] = "hourly_block"
    recalled: list[NeedRecall] = []
    """For an interruptible class: the recalls that took back the buyer's units of its hours."""


class NeedAlternative(Model):
    """One alternative of a day-ahead need's exclusive group and what became of it."""

    order_id: str
    symbols: list[str]
    price: int | None = None
    status: Literal["pending", "open", "filled", "cancelled", "rejected"]
    filled: int
    paid: int
    reason: str | None = None


class NeedGroup(Model):
    """The exclusive group a day-ahead need bids: the auction buys at most one alternative."""

    order_id: str
    price: int
    quantity: int
    voucher: str | None = None
    alternatives: list[NeedAlternative]


class Need(Model):
    """A need: its plan, status and block order (a day-ahead need: its exclusive group)."""

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
    plan: Plan | None
    order: NeedOrder | None
    group: NeedGroup | None = None
    reason: str | None
    created_ms: int
    updated_ms: int


class CancelAllAnswer(Model):
    """The kill switch pulled: every open order of the account is being cancelled."""

    account_id: str
    status: Literal["requested", "pending"]
    symbols: list[str] = []


class DepositAnswer(Model):
    """A deposit."""

    deposit_id: str
    status: Literal["deposited", "pending"]


class Order(Model):
    """An order as settled."""

    order_id: str
    account_id: str
    symbol: str
    side: str
    price: int
    quantity: int
    filled: int
    status: str
    reason: str | None
    client_order_id: str | None
    created_ts: int
    updated_ts: int
    symbols: list[str] | None = None
    """A block's hourly contracts (`symbol` is its family); None for an order of one."""
    delivery_start: str | None = None
    """When delivery starts (China Standard Time, ISO 8601)."""
    delivery_end: str | None = None
    """When delivery ends (China Standard Time, ISO 8601)."""
    group_id: str | None = None
    """The exclusive group a block is an alternative of."""
    alternatives: list[Order] | None = None
    """An exclusive group's alternatives, when the order read is a group."""


class Fill(Model):
    """One side of a trade of the account."""

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


class Cash(Model):
    """Cash available and held (fen)."""

    available: int
    held: int


class Capacity(Model):
    """Deposited capacity of a contract, unsold: not held and held (units); `state` `open`
    until its `gate` (CST), then `gate_closed` (neither sellable nor withdrawable)."""

    symbol: str
    available: int
    held: int
    state: str
    gate: str | None


class Position(Model):
    """Units bought of a contract."""

    symbol: str
    quantity: int


class Account(Model):
    """Settled balances of an account."""

    account_id: str
    cash: Cash
    bonds: int
    """Delivery bonds posted (fen): cash available + held + bonds is the statement's closing."""
    capacity: list[Capacity]
    positions: list[Position]


class Obligation(Model):
    """What a provider sold of a contract, must deliver, and is paid."""

    symbol: str
    delivery_start: str | None
    quantity: int
    payout: int
    trades: int


class Stall(Model):
    """What a provider offers of one contract family, in the standard specification."""

    stall_id: str
    account_id: str
    resource_class: str
    region: str
    hours: list[int]
    """Delivery hours of the day served (China Standard Time, 0-23)."""
    sla_tier: str
    max_interruptions: int
    network: str | None
    description: str
    updated_at: str


class KeyInfo(Model):
    """An API key as listed."""

    key_id: str
    account_id: str
    role: str
    label: str | None
    created_at: str
    revoked_at: str | None


class NewKey(KeyInfo):
    """A key just created; `key` is shown only once."""

    key: str


class StoredEvent(Model):
    """An event of the event store: with settlement in shards, `position` is the `shard`'s
    own; `cursor` (in `events` lists) is where the next page starts."""

    shard: int = 0
    cursor: str | None = None
    position: int
    stream_id: str
    stream_version: int
    event_id: str
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: str


class RequestAnswer(Model):
    """A bank or voucher request the exchange accepted (`pending`: not decided within 5 s)."""

    request: str
    id: str
    status: Literal["done", "pending"]


class RefusedAsk(Model):
    """A schedule's standing ask the exchange refused (its hour is deposited all the same)."""

    order_id: str
    reason: str
    detail: str


class ScheduledDeposit(Model):
    """The hourly contracts a capacity schedule deposited, the asks it placed and those the
    exchange refused."""

    deposit_id: str
    contracts: list[str]
    asks: list[str]
    refused_asks: list[RefusedAsk] = []
    pending_asks: list[str] = []
    """`pending`: the asks not decided yet, which are not in `asks` (the asks that stand)."""
    status: Literal["done", "pending"] = "done"


class Delivery(Model):
    """A delivery obligation provider -> buyer: owed, metered, disputed or settled; or units
    the provider recalled before their hour, refunded and compensated (fen)."""

    symbol: str
    provider_id: str
    buyer_id: str
    quantity: int
    amount: int
    bond: int
    fee: int
    window_ends: int
    status: Literal["owed", "metered", "drawing", "disputed", "settled", "recalled"]
    """`drawing`: a token bundle being drawn down by metering."""
    delivered: int | None
    """Units delivered; of a token bundle, tokens used."""
    paid: int | None
    refund: int | None
    penalty: int | None
    resolved_by: str | None
    updated_ts: int
    recall_id: str | None = None


class InvoiceLine(Model):
    """What one contract of a purchase cost and who paid it (fen), its quantity in `unit`
    (卡时, 核时 or 百万tokens; a strip's cards count each of its hours)."""

    symbol: str
    unit: str
    quantity: int
    gross: int
    voucher: int
    fee: int
    concession: int
    paid: int


class InvoiceTotal(Model):
    """Invoice lines added up: money in fen, quantities by unit (units do not add)."""

    quantity: dict[str, int]
    gross: int
    voucher: int
    fee: int
    concession: int
    paid: int


class Invoice(Model):
    """One buy order's invoice: per contract and in total."""

    order_id: str
    issued_ts: int
    programme_id: str | None
    contracts: list[InvoiceLine]
    total: InvoiceTotal


class Invoices(Model):
    """An account's invoices, their total, and the voucher clawed back since."""

    account_id: str
    invoices: list[Invoice]
    total: InvoiceTotal
    voucher_clawed_back: int


class CostSplit(Model):
    """The cost of the compute bought (fen) and who bore it: the government's vouchers net of
    clawbacks, the platform's concessions, rebates and discounts, the firm the rest; shares in
    basis points summing to 10,000 (None when a part is negative or all are zero)."""

    cost: int
    government: int
    platform: int
    firm: int
    shares_bps: dict[str, int] | None


class BundleDrawdown(Model):
    """A token bundle in a month's statement and its draw-down: millions of tokens bought, the
    amount escrowed, tokens used, paid to providers (net of their fee) and refunded, in fen;
    for a holder, the vouchers on its purchases and the part returned with the refund."""

    symbol: str
    role: Literal["holder", "provider"]
    from_ts: int
    until_ts: int
    counterparties: list[str]
    bought: int
    amount: int
    used_tokens: int
    paid: int
    refunded: int
    settled: bool
    voucher: int = 0
    voucher_returned: int = 0


class Statement(Model):
    """An account's statement for a month in China Standard Time: every line in fen."""

    account_id: str
    month: str
    from_ts: int
    until_ts: int
    opening: int
    lines: dict[str, int]
    net_change: int
    closing: int
    split: CostSplit
    entries: list[dict[str, Any]]
    cascades: list[dict[str, Any]] = []
    """Strips the account held or sold that became positions in their hourly contracts."""
    bundles: list[BundleDrawdown] = []
    """The token bundles whose period overlaps the month."""


class OrderStatement(Model):
    """A buy order's statement: its fills, lines in fen and the cost split."""

    order_id: str
    account_id: str
    symbols: list[str]
    fills: list[dict[str, Any]]
    lines: dict[str, int]
    net_change: int
    split: CostSplit
    entries: list[dict[str, Any]]


class VatInvoice(Model):
    """A buy order's VAT invoice data (增值税发票): parties, items, amount, tax and total in
    fen."""

    order_id: str
    seller: dict[str, Any]
    buyer: dict[str, Any]
    items: list[dict[str, Any]]
    tax_rate_bps: int
    amount: int
    tax: int
    total: int
    voucher: int
    firm_paid: int
    remarks: str


class Enterprise(Model):
    """The enterprise an account registered (统一社会信用代码 `uscc`)."""

    account_id: str
    name: str
    uscc: str
    kind: str
    city: str
    registered_ts: int


class GrantApplication(Model):
    """An application for a grant and where it stands: pending, info_requested (see
    `question`), approved (`granted` fen) or rejected (see `reason`)."""

    programme_id: str
    application_id: str
    account_id: str
    name: str
    uscc: str
    kind: str
    city: str
    amount: int
    intended_use: str
    status: str
    question: str | None
    answer: str | None
    reason: str | None
    granted: int | None
    submitted_ts: int
    updated_ts: int


class ProgrammeReport(Model):
    """A voucher programme's budget and usage (fen), burn-down by day and breakdowns."""

    programme_id: str
    issuer: str | None
    admin_id: str | None
    budget: int
    granted: int
    reserved: int
    committed: int
    clawed_back: int
    remaining: int
    burn_down: list[dict[str, Any]]
    by_enterprise: list[dict[str, Any]]
    by_region: list[dict[str, Any]]
    by_class: list[dict[str, Any]]


class GroupAlternative(Model):
    """One alternative of an exclusive group: its block's order id and hours."""

    order_id: str
    symbols: list[str]


class ExclusiveGroupAnswer(Model):
    """An exclusive group of the day-ahead auction, accepted or `pending`."""

    order_id: str
    status: Literal["accepted", "pending"]
    alternatives: list[GroupAlternative]
    skipped: list[list[str]] = []


class DayAheadContract(Model):
    """One contract-hour's clearing price (fen per unit) and volume in a day-ahead auction."""

    symbol: str
    resource_class: str
    price: int | None
    volume: int


class DayAheadHour(Model):
    """One delivery hour (`HH:00` CST) of a region."""

    hour: str
    delivery_start: str
    contracts: list[DayAheadContract]


class DayAheadRegion(Model):
    """One region's clearing prices, hour by hour."""

    region: str
    hours: list[DayAheadHour]


class DayAheadSummary(Model):
    """What the auction's solver reached: welfare, the bound it proved, the gap between."""

    welfare: int
    bound: int
    gap_ppm: int
    solver_status: str
    orders: int
    accepted: int
    solve_ms: int
    cleared_at: str


class IntradayAuctions(Model):
    """The intraday auctions next to now, named by their CST time YYYY-MM-DDTHH:MM."""

    previous: str
    next: str


class DayAheadAuction(Model):
    """A delivery day's day-ahead auction: `collecting`, `clearing`, `cleared` or `not_held`."""

    date: str
    status: Literal["collecting", "clearing", "cleared", "not_held"]
    gate: str
    gate_ms: int
    result: DayAheadSummary | None
    regions: list[DayAheadRegion]
    intraday: IntradayAuctions | None = None


class DayAheadFill(Model):
    """What an order got in one contract-hour."""

    symbol: str
    price: int
    quantity: int


class DayAheadOrderResult(Model):
    """One order of the account in a day-ahead auction and what it got."""

    order_id: str
    group: str | None
    side: Literal["buy", "sell"]
    symbols: list[str]
    price: int
    quantity: int
    status: Literal["pending", "accepted", "rejected", "resting"]
    accepted: int
    reason: str | None
    fills: list[DayAheadFill]
    amount: int


class DayAheadResults(Model):
    """An account's orders in a day's auction."""

    date: str
    account_id: str
    status: Literal["collecting", "clearing", "cleared", "not_held"]
    orders: list[DayAheadOrderResult]
