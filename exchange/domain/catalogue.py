"""Standard contracts: resource class x region x delivery hour, the symbol grammar, and which
contracts are listed when.

A symbol is `CLASS.REGION.YYYYMMDDTHH`, e.g. `H100-80G.GZ.20271201T02`: one card-hour of an
H100 80 GB in the Guizhou hub, delivered in the hour starting 02:00 (UTC+8, China Standard
Time) on 1 December 2027. The family `CLASS.REGION` groups every delivery hour of one class in
one region; a family is never split across partitions.

A catalogue lists two kinds of contract. Static contracts are listed for their whole life
(until their gate closes, as every contract's does). Rolled contracts come from listing rules:
a rule names families and a horizon of `days_ahead` days, and a rolled contract of such a family
is listed at log time t when

    lists_at <= t < retires_at, where
    lists_at   = 00:00 CST of its delivery day, minus days_ahead days
    retires_at = its delivery start minus the gate closure (the delivery start without one)

so on any day the hours of that day and of the next `days_ahead` days are listed, and each
leaves the list when its trading closes. Listing depends only on the log time, so the risk and
matching stages, a replay and an audit all agree on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")

REGIONS: dict[str, str] = {
    "JJJ": "Beijing-Tianjin-Hebei",
    "YRD": "Yangtze River Delta",
    "GBA": "Guangdong-Hong Kong-Macao",
    "CY": "Chengdu-Chongqing",
    "NMG": "Inner Mongolia",
    "GZ": "Guizhou",
    "GS": "Gansu",
    "NX": "Ningxia",
}

UNIT_CARD_HOUR = "card-hour"
UNIT_CORE_HOUR = "core-hour"
UNIT_MILLION_TOKENS = "million-tokens"


@dataclass(frozen=True, slots=True)
class ResourceClass:
    """A kind of compute sold in one unit, e.g. one H100-80G for one hour."""

    code: str
    description: str
    unit: str
    tick_size: int
    """Smallest price step, in fen (0.01 CNY)."""
    firm_class: str | None = None
    """For an interruptible class, the firm class it is the recallable twin of."""


INTERRUPTIBLE_SUFFIX = "-INT"
"""Appended to a card class's code to name its interruptible twin, e.g. `H100-80G-INT`."""

_FIRM_CARDS = (
    ResourceClass("H100-80G", "NVIDIA H100 80 GB", UNIT_CARD_HOUR, 10),
    ResourceClass("A100-80G", "NVIDIA A100 80 GB", UNIT_CARD_HOUR, 10),
    ResourceClass("A800", "NVIDIA A800 80 GB", UNIT_CARD_HOUR, 10),
    ResourceClass("H20", "NVIDIA H20 96 GB", UNIT_CARD_HOUR, 10),
    ResourceClass("L40S", "NVIDIA L40S 48 GB", UNIT_CARD_HOUR, 5),
    ResourceClass("RTX4090", "NVIDIA GeForce RTX 4090 24 GB", UNIT_CARD_HOUR, 5),
    ResourceClass("910B", "Huawei Ascend 910B 64 GB", UNIT_CARD_HOUR, 10),
)

# Recallable deposits are a different product (cheaper, may be taken back with notice), so
# they trade in books of their own rather than beside firm capacity at the same price.
_INTERRUPTIBLE_CARDS = tuple(
    ResourceClass(
        card.code + INTERRUPTIBLE_SUFFIX,
        f"{card.description}, interruptible (recallable with notice)",
        card.unit,
        card.tick_size,
        firm_class=card.code,
    )
    for card in _FIRM_CARDS
)

# Inference is sold by the million tokens of one model family; prices run from a few tenths
# of a yuan to a few yuan per million tokens, so the tick is one fen.
_TOKENS = (
    ResourceClass("TOK-QWEN", "Qwen (Alibaba) model inference", UNIT_MILLION_TOKENS, 1),
    ResourceClass("TOK-DEEPSEEK", "DeepSeek model inference", UNIT_MILLION_TOKENS, 1),
    ResourceClass("TOK-GLM", "GLM (Zhipu) model inference", UNIT_MILLION_TOKENS, 1),
)

RESOURCE_CLASSES: dict[str, ResourceClass] = {
    rc.code: rc
    for rc in (
        *_FIRM_CARDS,
        *_INTERRUPTIBLE_CARDS,
        ResourceClass("CPU", "x86-64 vCPU core", UNIT_CORE_HOUR, 1),
        *_TOKENS,
    )
}

_SYMBOL = re.compile(
    r"^(?P<cls>[A-Z0-9][A-Z0-9-]*)\.(?P<region>[A-Z]+)\.(?P<day>\d{8})T(?P<hour>\d{2})$"
)
_TERM_SYMBOL = re.compile(
    r"^(?P<cls>[A-Z0-9][A-Z0-9-]*)\.(?P<region>[A-Z]+)\.(?P<term>[DWNM])(?P<start>\d{6}|\d{8})$"
)

TERM_HOUR = "H"
TERM_DAY = "D"
TERM_WEEK = "W"
TERM_NIGHTS = "N"
TERM_MONTH = "M"
TERMS: dict[str, str] = {
    TERM_HOUR: "one delivery hour",
    TERM_DAY: "every hour of one day (00:00-24:00 CST)",
    TERM_WEEK: "every hour of one week, Monday 00:00 to Monday 00:00 CST",
    TERM_NIGHTS: "the night hours (00:00-08:00 CST) of each day of one week from Monday",
    TERM_MONTH: "every hour of one calendar month (CST)",
}
TERMS_ZH: dict[str, str] = {
    TERM_HOUR: "单个交付小时",
    TERM_DAY: "一天的每个小时 (北京时间 00:00-24:00)",
    TERM_WEEK: "一周的每个小时 (北京时间周一 00:00 至下周一 00:00)",
    TERM_NIGHTS: "自周一起一周每天的夜间时段 (北京时间 00:00-08:00)",
    TERM_MONTH: "一个自然月的每个小时 (北京时间)",
}


def term_name(term: str) -> str:
    """A term in words as a person reads it: Chinese first, then English."""
    return f"{TERMS_ZH[term]} {TERMS[term]}"


NIGHT_HOURS = range(8)
"""The hours of a night strip each day: 00:00 to 08:00 China Standard Time."""
TOKEN_TERMS = (TERM_DAY, TERM_WEEK, TERM_MONTH)
"""The periods a token bundle may cover: drawn down as metered, whatever the hour."""
CAPACITY_TERMS = (TERM_WEEK, TERM_NIGHTS, TERM_MONTH)
"""The periods a card or core strip may cover: cascaded into its hourly contracts."""


_FAMILY = re.compile(r"^(?P<cls>[A-Z0-9][A-Z0-9-]*)\.(?P<region>[A-Z]+)$")


class SymbolError(ValueError):
    """A symbol does not follow the grammar or names an unknown class or region."""


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """One listed contract: a resource class in a region for one delivery hour, or for the
    hours of a longer term (a day, a week, the nights of a week, a month)."""

    resource_class: ResourceClass
    region: str
    delivery_start: datetime
    """Start of the (first) delivery hour, timezone-aware (China Standard Time)."""
    term: str = TERM_HOUR
    """`TERM_HOUR`, or the longer term the contract covers (`TERMS`)."""

    @property
    def symbol(self) -> str:
        """The contract's symbol: `CLASS.REGION.YYYYMMDDTHH` for an hour, `CLASS.REGION.`
        then `DYYYYMMDD`, `WYYYYMMDD`, `NYYYYMMDD` (from a Monday) or `MYYYYMM` for a term."""
        start = self.delivery_start
        # Explicit widths: strftime's %Y does not pad years below 1000 on every platform.
        day = f"{start.year:04d}{start.month:02d}{start.day:02d}"
        if self.term == TERM_HOUR:
            return f"{self.family}.{day}T{start.hour:02d}"
        if self.term == TERM_MONTH:
            return f"{self.family}.M{day[:6]}"
        return f"{self.family}.{self.term}{day}"

    @property
    def family(self) -> str:
        """`CLASS.REGION`: every contract of one class in one region, hours and terms."""
        return f"{self.resource_class.code}.{self.region}"

    @property
    def tick_size(self) -> int:
        """Smallest price step, in fen."""
        return self.resource_class.tick_size

    @property
    def unit(self) -> str:
        """The unit one quantity step buys."""
        return self.resource_class.unit

    @property
    def is_term(self) -> bool:
        """Whether the contract covers a term longer than one hour."""
        return self.term != TERM_HOUR

    @property
    def is_bundle(self) -> bool:
        """A token contract for a term: millions of tokens drawn down as the provider meters
        use, within the term."""
        return self.is_term and self.resource_class.unit == UNIT_MILLION_TOKENS

    @property
    def is_strip(self) -> bool:
        """A card or core contract for a term: the same quantity in each of its hours,
        cascaded into the hourly contracts when they list."""
        return self.is_term and self.resource_class.unit != UNIT_MILLION_TOKENS

    @property
    def delivery_end(self) -> datetime:
        """The end of the last delivery hour."""
        start = self.delivery_start
        if self.term == TERM_HOUR:
            return start + timedelta(hours=1)
        if self.term == TERM_DAY:
            return start + timedelta(days=1)
        if self.term == TERM_WEEK:
            return start + timedelta(days=7)
        if self.term == TERM_NIGHTS:
            return start + timedelta(days=6, hours=NIGHT_HOURS.stop)
        following = start.replace(day=28) + timedelta(days=4)
        return following.replace(day=1)

    def hours(self) -> list[ContractSpec]:
        """The hourly contracts the term covers, in delivery order (itself for an hour)."""
        if self.term == TERM_HOUR:
            return [self]
        hours = []
        moment = self.delivery_start
        end = self.delivery_end
        while moment < end:
            if self.term != TERM_NIGHTS or moment.hour in NIGHT_HOURS:
                hours.append(ContractSpec(self.resource_class, self.region, moment))
            moment += timedelta(hours=1)
        return hours


def parse_symbol(symbol: str) -> ContractSpec:
    """Parse a symbol into its contract spec, or raise SymbolError saying what is wrong."""
    match = _SYMBOL.match(symbol)
    if match is None:
        return _parse_term(symbol)
    resource_class, region = _class_and_region(match["cls"], match["region"], f"symbol {symbol!r}")
    day = _date(match["day"], symbol)
    hour = int(match["hour"])
    if hour > 23:
        raise SymbolError(f"invalid delivery hour {hour:02d} in symbol {symbol!r}")
    start = day.replace(hour=hour, tzinfo=CHINA_STANDARD_TIME)
    return ContractSpec(resource_class, region, start)


@lru_cache(maxsize=4096)
def strip_hours(symbol: str) -> int:
    """How many hours one unit of a contract delivers: a strip's hours (its price is per
    card-hour, its quantity cards in each hour, so its notional is price x quantity x this),
    1 for an hour or any other contract. Asked on every order and trade, so remembered."""
    if not _TERM_SYMBOL.match(symbol):
        return 1
    try:
        spec = _parse_term(symbol)
    except SymbolError:
        return 1
    return len(spec.hours()) if spec.is_strip else 1


def _parse_term(symbol: str) -> ContractSpec:
    match = _TERM_SYMBOL.match(symbol)
    if match is None:
        raise SymbolError(
            f"symbol {symbol!r} does not match CLASS.REGION.YYYYMMDDTHH (an hour) nor a term's "
            "CLASS.REGION.DYYYYMMDD (a day), .WYYYYMMDD (a week from a Monday), .NYYYYMMDD "
            "(its nights) or .MYYYYMM (a month)"
        )
    resource_class, region = _class_and_region(match["cls"], match["region"], f"symbol {symbol!r}")
    term, start = match["term"], match["start"]
    if (term == TERM_MONTH) != (len(start) == 6):
        shape = "YYYYMM" if term == TERM_MONTH else "YYYYMMDD"
        raise SymbolError(f"term {term} takes a start {shape}, not {start!r}, in {symbol!r}")
    day = _date(start + "01" if term == TERM_MONTH else start, symbol)
    if term in (TERM_WEEK, TERM_NIGHTS) and day.weekday() != 0:
        raise SymbolError(f"a week starts on a Monday; {start} in {symbol!r} is not one")
    allowed = TOKEN_TERMS if resource_class.unit == UNIT_MILLION_TOKENS else CAPACITY_TERMS
    if term not in allowed:
        raise SymbolError(
            f"{resource_class.code} ({resource_class.unit}) is not sold for term {term} "
            f"({TERMS[term]}); its terms are {', '.join(allowed)}"
        )
    return ContractSpec(resource_class, region, day.replace(tzinfo=CHINA_STANDARD_TIME), term)


def _date(digits: str, symbol: str) -> datetime:
    try:
        return datetime.strptime(digits, "%Y%m%d")
    except ValueError:
        raise SymbolError(f"invalid delivery day {digits!r} in symbol {symbol!r}") from None


def parse_family(family: str) -> tuple[ResourceClass, str]:
    """The resource class and region of a family `CLASS.REGION`, or raise SymbolError."""
    match = _FAMILY.match(family)
    if match is None:
        raise SymbolError(f"family {family!r} does not match CLASS.REGION")
    return _class_and_region(match["cls"], match["region"], f"family {family!r}")


def is_family(name: str) -> bool:
    """Whether a name is a family `CLASS.REGION` (rather than a contract or anything else)."""
    try:
        parse_family(name)
    except SymbolError:
        return False
    return True


def _class_and_region(code: str, region: str, where: str) -> tuple[ResourceClass, str]:
    resource_class = RESOURCE_CLASSES.get(code)
    if resource_class is None:
        raise SymbolError(f"unknown resource class {code!r} in {where}")
    if region not in REGIONS:
        raise SymbolError(f"unknown region {region!r} in {where}")
    return resource_class, region


def family_of(symbol: str) -> str:
    """The family (`CLASS.REGION`) of a symbol, without validating it."""
    return symbol.rsplit(".", 1)[0]


@dataclass(frozen=True, slots=True)
class MarketRules:
    """How listed contracts trade: the matching stage's rules, the same live and in replay."""

    gate_closure_ms: int | None = 60 * 60_000
    """Trading closes this long before delivery (None: never); resting orders expire."""
    band: int = 0
    """A trade further than this (fen) from the last price halts the contract (0: no band)."""
    protection: int = 0
    """A market order trades at most this far (fen) from the reference price (0: no limit)."""
    halt_ms: int = 60_000
    """A halted contract reopens through a call auction after this long."""
    pre_open: bool = False
    """Contracts collect orders until an opening auction instead of trading at once."""
    fees: tuple[tuple[str, int, int], ...] = ()
    """(resource class, maker bps, taker bps) per class; unlisted classes trade free. A
    negative maker fee is a rebate."""
    bond_bps: int = 0
    """A provider's delivery bond per unit sold from deposited capacity, in basis points of
    its sell order's limit price (rounded up to the fen)."""
    delivery_window_ms: int = 2 * 60 * 60_000
    """After a delivery hour ends, how long providers may report metering and buyers dispute
    before undisputed obligations settle."""
    recall_notice_ms: int = 2 * 60 * 60_000
    """A recallable deposit's sold units may be recalled until this long before delivery."""
    recall_compensation_bps: int = 1_000
    """A recalled unit's holder is refunded and compensated this share (basis points) of the
    refund, out of the provider's bond behind the unit."""
    voucher_max_rate_bps: int = 3_000
    """The highest voucher share of a contract amount a programme may pay, until an operator
    sets a voucher policy (`SetVoucherPolicy`)."""
    voucher_max_cap_per_enterprise: int = 500_000_000
    """The highest cap per enterprise a programme may have (fen: 5,000,000 yuan)."""
    voucher_kinds: tuple[str, ...] = ("sme", "opc")
    """The kinds of enterprise programmes may cover."""
    voucher_cities: tuple[str, ...] = ()
    """The cities programmes may cover (empty: any)."""
    day_ahead_gate_ms: int | None = None
    """The day-ahead auction's gate, as time after 00:00 CST of the day before delivery (None:
    no day-ahead auction). With it, a day's contracts collect orders until their auction."""

    intraday_every_ms: int | None = None
    """Time between intraday auctions, from 00:00 CST (None: none). Each takes the hours
    trading continuously at least `INTRADAY_GUARD_MS` before their gate closure out of
    continuous trading, clears them with the exclusive groups waiting for it, and reopens
    them."""

    def day_ahead_gate(self, delivery_ms: int) -> int | None:
        """The log time of the day-ahead gate of the day holding `delivery_ms` (None: none)."""
        if self.day_ahead_gate_ms is None:
            return None
        return cst_day_start_ms(delivery_ms) - DAY_MS + self.day_ahead_gate_ms

    def auction_gate(self, key: str) -> int:
        """The log time of the gate of the auction named `key` (a CST date: the day-ahead
        auction of that day; a CST time: the intraday auction then): auctions run in this
        order. ValueError when `key` names neither."""
        if is_intraday_key(key):
            moment = datetime.strptime(key, INTRADAY_KEY_FORMAT)
            return int(moment.replace(tzinfo=CHINA_STANDARD_TIME).timestamp() * 1000)
        day = cst_day_of(key)
        return day - DAY_MS + (self.day_ahead_gate_ms or 0)

    def intraday_auction_after(self, at_ms: int) -> int | None:
        """The log time of the first intraday auction after `at_ms` (None: none)."""
        every = self.intraday_every_ms
        if every is None:
            return None
        day = cst_day_start_ms(at_ms)
        return day + ((at_ms - day) // every + 1) * every


HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
INTRADAY_GUARD_MS = 15 * 60_000
"""An intraday auction takes only hours whose gate closure is at least this far off: its
result (which closes none of them early) is expected well within it."""
_CST_OFFSET_MS = 8 * HOUR_MS
MAX_LISTING_DAYS = 31
"""The longest horizon a listing rule may have: every listed hour is a book in memory."""
MAX_TERM_DAYS = 92
"""The longest horizon of term contracts (weeks, nights, months, token days): three months."""


def cst_day_start_ms(at_ms: int) -> int:
    """00:00 China Standard Time of the day that contains `at_ms` (ms since the epoch)."""
    return (at_ms + _CST_OFFSET_MS) // DAY_MS * DAY_MS - _CST_OFFSET_MS


def cst_date(day_start_ms: int) -> str:
    """The China Standard Time date (YYYY-MM-DD) of the day containing `day_start_ms`."""
    return datetime.fromtimestamp(day_start_ms / 1000, CHINA_STANDARD_TIME).date().isoformat()


INTRADAY_KEY_FORMAT = "%Y-%m-%dT%H:%M"


def intraday_key(gate_ms: int) -> str:
    """The name of the intraday auction at `gate_ms`: its CST time, YYYY-MM-DDTHH:MM (a
    day-ahead auction's is its delivery day's CST date)."""
    return datetime.fromtimestamp(gate_ms / 1000, CHINA_STANDARD_TIME).strftime(INTRADAY_KEY_FORMAT)


def is_intraday_key(key: str) -> bool:
    """Whether an auction's name is an intraday auction's (a time) rather than a day's."""
    return "T" in key


def cst_day_of(date: str) -> int:
    """00:00 China Standard Time of a date YYYY-MM-DD (ms since the epoch); ValueError when
    `date` is not one."""
    day = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=CHINA_STANDARD_TIME)
    return int(day.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ListingRule:
    """Rolling listings: every delivery hour of `families` from today to `days_ahead` days on,
    and their term contracts starting up to `term_days` days on (0: none)."""

    families: tuple[str, ...]
    days_ahead: int
    term_days: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.days_ahead <= MAX_LISTING_DAYS:
            raise ValueError(
                f"days ahead must be from 0 to {MAX_LISTING_DAYS}, not {self.days_ahead}"
            )
        if not 0 <= self.term_days <= MAX_TERM_DAYS:
            raise ValueError(f"term days must be from 0 to {MAX_TERM_DAYS}, not {self.term_days}")
        for family in self.families:
            parse_family(family)


class Catalogue:
    """The listed contracts and the rules they trade under.

    Static contracts are given; rolled contracts follow from the listing rules and the log time
    (see the module's description). `get` and `in` answer whether a symbol is a contract of this
    catalogue at any time; `listed` whether it is listed at a given log time. Iteration and
    `symbols` cover the static contracts only, which are the same at every time.
    """

    def __init__(
        self,
        contracts: Iterable[ContractSpec],
        rules: MarketRules | None = None,
        listings: Iterable[ListingRule] = (),
    ) -> None:
        self._contracts = {c.symbol: c for c in contracts}
        self.rules = rules or MarketRules()
        self.listings = tuple(listings)
        # A family named by two rules lists as far ahead as the longer one says.
        self._days_ahead: dict[str, int] = {}
        self._term_days: dict[str, int] = {}
        for rule in self.listings:
            for family in rule.families:
                self._days_ahead[family] = max(rule.days_ahead, self._days_ahead.get(family, 0))
                self._term_days[family] = max(rule.term_days, self._term_days.get(family, 0))
        gate = self.rules.gate_closure_ms or 0
        for family, term_days in self._term_days.items():
            capacity = parse_family(family)[0].unit != UNIT_MILLION_TOKENS
            if term_days and capacity and self._days_ahead[family] * DAY_MS <= gate:
                # A strip cascades into its hours when the first lists; an hour whose gate
                # closes before its day's hours list would never have a book, and the
                # positions cascaded into it would never be delivered nor refunded.
                raise ValueError(
                    f"{family}'s strips need its hours listed more than the gate closure "
                    f"({gate // 60_000} minutes) ahead: with {self._days_ahead[family]} days "
                    "ahead the first hours of each day never list; list a day ahead or more "
                    "(CX_LISTING_DAYS), or no term contracts (CX_TERM_DAYS=0)"
                )

    def get(self, symbol: str) -> ContractSpec | None:
        """The contract with this symbol if the catalogue lists it at any time, else None."""
        static = self._contracts.get(symbol)
        if static is not None or family_of(symbol) not in self._days_ahead:
            return static
        try:
            spec = parse_symbol(symbol)
        except SymbolError:
            return None
        return None if spec.is_term and not self._term_days[spec.family] else spec

    def listed(self, symbol: str, at_ms: int) -> ContractSpec | None:
        """The contract with this symbol if it is listed at log time `at_ms`, else None."""
        static = self._contracts.get(symbol)
        if static is not None:
            return static
        spec = self.get(symbol)
        if spec is None or not self.lists_at(spec) <= at_ms < self.retires_at(spec):
            return None
        return spec

    def why_not_listed(self, symbol: str, at_ms: int) -> str:
        """Why `listed(symbol, at_ms)` is None: not listed at all, not yet, or retired."""
        spec = self.get(symbol)
        if spec is None:
            return f"contract {symbol!r} is not listed"
        if at_ms < self.lists_at(spec):
            return (
                f"contract {symbol!r} is not yet listed: it lists at {cst_iso(self.lists_at(spec))}"
            )
        if spec.is_strip and at_ms >= self.cascades_at(spec):
            hours = spec.hours()
            return (
                f"contract {symbol!r} is retired: it cascaded at {cst_iso(self.cascades_at(spec))} "
                f"into its {len(hours)} hourly contracts {hours[0].symbol} to {hours[-1].symbol}"
                "; trade those"
            )
        closed = cst_iso(self.retires_at(spec))
        return f"contract {symbol!r} is retired: its trading closed at {closed}"

    def lists_at(self, spec: ContractSpec) -> int:
        """The log time (ms) from which a rolled contract is listed."""
        # A day's bundle lists with the day's hours; longer terms as far ahead as their rule.
        ahead = self._days_ahead if spec.term in (TERM_HOUR, TERM_DAY) else self._term_days
        return cst_day_start_ms(to_utc_ms(spec.delivery_start)) - ahead[spec.family] * DAY_MS

    def retires_at(self, spec: ContractSpec) -> int:
        """The log time (ms) at which a contract's trading closes: an hour's gate closure; a
        bundle's, of its last hour; a strip's cascade, unless its first hour closes first."""
        gate = self.rules.gate_closure_ms or 0
        if spec.is_bundle:
            return to_utc_ms(spec.delivery_end) - gate
        delivery = to_utc_ms(spec.delivery_start)
        closes = delivery - gate
        return min(closes, self.cascades_at(spec)) if spec.is_strip else closes

    def cascades_at(self, spec: ContractSpec) -> int:
        """The log time at which a strip becomes positions in its hourly contracts: when the
        first of them lists."""
        return self.lists_at(ContractSpec(spec.resource_class, spec.region, spec.delivery_start))

    def rolled_at(self, at_ms: int) -> list[ContractSpec]:
        """The rolled contracts listed at log time `at_ms`, by delivery hour, then family (a
        term by its first hour, before the hour)."""
        today = cst_day_start_ms(at_ms)
        midnight = (_EPOCH + timedelta(milliseconds=today)).astimezone(CHINA_STANDARD_TIME)
        # An hour retires at its gate closure (`retires_at`): the first hour still listed is
        # the first whose delivery starts more than the gate closure after `at_ms`. Counted
        # rather than asked of each hour, since a month's horizon is thousands of hours.
        still_trading = max(0, (at_ms + (self.rules.gate_closure_ms or 0) - today) // HOUR_MS + 1)
        listed: list[ContractSpec] = []
        for family in sorted(self._days_ahead):
            resource_class, region = parse_family(family)
            listed += (
                ContractSpec(resource_class, region, midnight + timedelta(hours=hour))
                for hour in range(still_trading, (self._days_ahead[family] + 1) * 24)
            )
            if self._term_days[family]:
                listed += (
                    spec
                    for spec in self._terms(resource_class, region, today)
                    if self.lists_at(spec) <= at_ms < self.retires_at(spec)
                )
        listed.sort(key=lambda spec: (spec.delivery_start, spec.is_term, spec.family, spec.term))
        return listed

    def _terms(self, resource_class: ResourceClass, region: str, today: int) -> list[ContractSpec]:
        """Every term contract of a family that may be listed on the day starting `today`:
        starting from the month before it to its term horizon."""
        family = f"{resource_class.code}.{region}"
        first = (_EPOCH + timedelta(milliseconds=today)).astimezone(CHINA_STANDARD_TIME)
        last = first + timedelta(days=self._term_days[family])
        terms = TOKEN_TERMS if resource_class.unit == UNIT_MILLION_TOKENS else CAPACITY_TERMS
        specs = []
        day = first.replace(day=1) - timedelta(days=31)
        while day <= last:
            for term in terms:
                starts = (
                    term == TERM_DAY
                    or (term in (TERM_WEEK, TERM_NIGHTS) and day.weekday() == 0)
                    or (term == TERM_MONTH and day.day == 1)
                )
                if starts:
                    specs.append(ContractSpec(resource_class, region, day, term))
            day += timedelta(days=1)
        return specs

    def listed_at(self, at_ms: int) -> list[ContractSpec]:
        """Every contract listed at log time `at_ms`, static and rolled, by symbol."""
        listed = {spec.symbol: spec for spec in self.rolled_at(at_ms)}
        listed.update(self._contracts)
        return [listed[symbol] for symbol in sorted(listed)]

    @property
    def rolled_families(self) -> list[str]:
        """The families listing rules roll, sorted."""
        return sorted(self._days_ahead)

    def rules_record(self) -> dict[str, Any]:
        """Every setting that shapes what the stages compute, JSON-ready, by name: each field
        of `MarketRules`, which families roll and how far ahead their hours and terms list,
        and the static contracts. A history is only consistent under the rules it was made
        with (matching's snapshots keep each book's closing time, risk and a replay take
        them from here), so the exchange records this with the history and refuses to go on
        under another (`rule_changes`; docs/DESIGN.md, "Market rules are part of the
        history")."""
        record = {
            field.name: _json_ready(getattr(self.rules, field.name))
            for field in fields(MarketRules)
        }
        record["listed_families"] = sorted(self._days_ahead)
        record["listing_days"] = dict(sorted(self._days_ahead.items()))
        record["term_days"] = dict(sorted(self._term_days.items()))
        record["static_contracts"] = sorted(self._contracts)
        return record

    def subset(self, keep_family: Callable[[str], bool]) -> Catalogue:
        """The same catalogue restricted to the families `keep_family` accepts."""
        return Catalogue(
            [c for c in self._contracts.values() if keep_family(c.family)],
            self.rules,
            [
                ListingRule(kept, rule.days_ahead, rule.term_days)
                for rule in self.listings
                if (kept := tuple(f for f in rule.families if keep_family(f)))
            ],
        )

    def is_static(self, symbol: str) -> bool:
        """Whether `symbol` is one of the static contracts (listed for their whole life)."""
        return symbol in self._contracts

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and self.get(symbol) is not None

    def __iter__(self) -> Iterator[ContractSpec]:
        return iter(self._contracts.values())

    def __len__(self) -> int:
        return len(self._contracts)

    @property
    def symbols(self) -> list[str]:
        """Every static symbol, sorted."""
        return sorted(self._contracts)


def _json_ready(value: Any) -> Any:
    """A rule's value as JSON reads it back: tuples as lists, at any depth."""
    if isinstance(value, tuple | list):
        return [_json_ready(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class RuleChange:
    """A setting whose value differs from the one recorded with the history."""

    setting: str
    """Its name in `Catalogue.rules_record`."""
    recorded: Any
    now: Any


def rule_changes(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[RuleChange]:
    """The settings whose value `now` differs from the one `recorded`, in `now`'s order. A
    setting only one of them has is no change: a history recorded before a setting existed
    takes it as it is now, and one a later release dropped shapes nothing any more."""
    return [
        RuleChange(setting, recorded[setting], value)
        for setting, value in now.items()
        if setting in recorded and recorded[setting] != value
    ]


def default_catalogue(
    rules: MarketRules | None = None, listings: Iterable[ListingRule] = ()
) -> Catalogue:
    """The contracts listed by default: two night hours of four class-and-region families,
    plus whatever `listings` roll.

    The static contracts are fixed rather than relative to today so that every run and every
    replay lists the same contracts, and far enough ahead that their gate does not close soon.
    """
    start = datetime(2027, 12, 1, 0, tzinfo=CHINA_STANDARD_TIME)
    contracts = [
        ContractSpec(RESOURCE_CLASSES[cls], region, start + timedelta(hours=hour))
        for cls, region in (
            ("H100-80G", "GZ"),
            ("H100-80G", "YRD"),
            ("A100-80G", "NMG"),
            ("CPU", "GZ"),
        )
        for hour in range(2)
    ]
    return Catalogue(contracts, rules, listings)


def cst_iso(at_ms: int) -> str:
    """A log time (ms) as an ISO 8601 time in China Standard Time, for messages."""
    return (_EPOCH + timedelta(milliseconds=at_ms)).astimezone(CHINA_STANDARD_TIME).isoformat()


def to_utc_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
