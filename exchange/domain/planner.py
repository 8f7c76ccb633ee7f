"""Need-based orders: the cheapest block order that meets a buyer's need, from the live asks.

A buyer states a need instead of a contract: so many standard card-hours (or cards in every
hour), of at least a minimum grade, for `hours` consecutive hours that start no earlier than
`earliest_start_ms` and end by `deadline_ms`, in one of several regions, each with an optional
adder in fen per standard card-hour (a latency preference: it counts when ranking, nobody pays
it), for at most `max_total` fen.

`plan` prices every **alternative** of two kinds (each says which, `Alternative.what`):

- an **hourly block**: a family (`CLASS.REGION`) of an accepted class and region and a start
  hour such that all `hours` consecutive hours are listed inside the window, bought as one block
  order (so only for a need of at most `MAX_BLOCK_HOURS`, 24). Every hour's asks are walked for
  the cards needed;
- a **strip** (docs/DESIGN.md, "Strips and the cascade") of an accepted family, listed, all of
  whose hours lie inside the window and which delivers the need's hours: a week or a month
  (consecutive hours) with at least `hours` of them; a nights strip (8 hours a night) only if
  the need says it accepts night hours (`nights`) and asks at most its 56. The strip's asks
  (fen per card-hour) are walked for the cards needed and every hour of it is paid: a strip
  wins only when the whole of it costs less than the hours the need uses bought hourly. It is
  placed as one limit order on the strip, fill-or-kill at the dearest ask walked: a need is
  all or nothing, like the block (a part of its cards would not run the job, and would leave
  capacity to resell), and nothing rests to hold the buyer's cash or fill later unplanned.

A class is accepted if the need names it in `classes`, or, when it names none, if it is a firm
card class: an interruptible (`-INT`) class, whose units a provider may recall before delivery,
is a different product (docs/DESIGN.md), bought only when named (`INTERRUPTIBLE_NOT_NAMED`), and
its alternatives say they are interruptible (`Alternative.what`, their `detail`).

A need may last up to `MAX_HOURS` (744, the longest month); one longer than 24 hours has only
strips to serve it, and when none does the plan says so (`NO_STRIP_SERVES_LONG_NEED`). The
cheapest feasible alternative wins; every other one is reported with its price or the reason it
cannot be done, so the choice can be explained.

Arithmetic is exact (integers, and `Fraction` for performance factors). Rounding, all of it
against the buyer's favour being understated:

- cards per hour for a need in standard card-hours: ceil(quantity / (factor x hours)), so the
  block delivers at least what was asked;
- the region adder: ceil(adder x the standard card-hours the need uses, its cards in each of its
  `hours`) fen; a strip's hours beyond the need's do not count, the adder weighing where the
  work runs;
- the block's average price limit: ceil(cost / (cards x hours)), then up to the contract's tick
  (a block's price must be on the tick); the block then fills at the planned cost if the books
  have not moved, and the limit x cards x hours must stay within `max_total`, so however the
  books move before the block reaches them, the buyer never pays more than `max_total`.

With a compute voucher, each alternative the buyer's grant covers is priced after it too: its
voucher part (`Grant.voucher_for` of its cost over its hours, as the risk stage reserves it for
the block) is taken off what it costs the buyer, so a covered family can win against a cheaper
one the voucher does not cover. The block's limit and `max_total` stay gross: the voucher is
known only as the block fills.

Ties are broken deterministically, in this order: lower ranked total (cost after the voucher +
adder), lower cost after the voucher (what is actually paid), earlier start, family name, then
first symbol (an hour's sorts before a strip's).

For the day-ahead auction, `auction_bid` turns a plan into one exclusive group instead of one
block: the plan's alternatives in its order (feasible ones best first, then those the books
cannot fill yet or only over budget, which the auction still may), those of the first one's
cards per hour and within one CST day that can pay a tick, at most `most` of them, each at its
own average price limit: the most a card-hour there may cost for its cost plus its region
adder to stay within `max_total` (rounded down to the tick), so the auction, which maximises
the sum of limits less costs, weighs each alternative at what it is worth to the buyer. The
auction, not the ranking, picks among them: the one that adds most to the market's welfare;
whichever it takes costs at most `max_total` (less its adder).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

from exchange.domain.catalogue import (
    REGIONS,
    RESOURCE_CLASSES,
    TERM_MONTH,
    TERM_NIGHTS,
    TERM_WEEK,
    ContractSpec,
    cst_day_start_ms,
    strip_hours,
    to_utc_ms,
)
from exchange.domain.performance import PerformanceTable, decimal_text

HOUR_MS = 3_600_000
STANDARD_CARD_HOURS = "standard_card_hours"
"""`quantity` is standard card-hours in total (see exchange/domain/performance.py)."""
CARDS = "cards"
"""`quantity` is cards in every hour."""
UNITS = (STANDARD_CARD_HOURS, CARDS)
GRADE_SCALE = 10_000
"""A minimum grade is given in ten-thousandths of the base card's throughput (10000 = the base
card), so it stays an integer; factors are shown with four decimals for the same reason."""
MAX_BLOCK_HOURS = 24
"""A block order spans at most 24 hours (PlaceBlockOrder): a longer need only a strip serves."""
MAX_HOURS = 31 * 24
"""A need lasts at most the hours of the longest month, 744: the longest strip that can serve."""
HOURLY_BLOCK = "hourly_block"
"""An alternative bought as one block order of consecutive hourly contracts."""
STRIP = "strip"
"""An alternative bought as one fill-or-kill order on a week, nights or month strip."""
TERM_NAMES = {TERM_WEEK: "week", TERM_NIGHTS: "nights", TERM_MONTH: "month"}
MAX_REGIONS = len(REGIONS)
MAX_QUANTITY = 10**9

# Why an alternative or a family cannot serve the need, and why a whole plan found nothing.
NOT_A_CARD = "not_a_card"
CLASS_NOT_ACCEPTED = "class_not_accepted"
INTERRUPTIBLE_NOT_NAMED = "interruptible_not_named"
"""An interruptible (`-INT`, recallable) class, which a need takes only by naming it in
`classes`: recallable capacity is a different product, never bought unasked."""
BELOW_MIN_GRADE = "below_min_grade"
REGION_NOT_ACCEPTED = "region_not_accepted"
INSUFFICIENT_DEPTH = "insufficient_depth"
OVER_MAX_TOTAL = "over_max_total"
NO_ACCEPTABLE_CONTRACT = "no_acceptable_contract"
NO_LISTED_HOURS_IN_WINDOW = "no_listed_hours_in_window"
NO_STRIP_SERVES_LONG_NEED = "no_strip_serves_long_need"
"""A need longer than a block's 24 hours, and no listed strip lies in its window and delivers
its hours (a week or month strip for consecutive hours, a nights strip only for a night need)."""


class NeedError(ValueError):
    """A need that cannot be planned as stated: names the field and what is wrong."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True, slots=True)
class RegionChoice:
    """An acceptable region and its adder, fen per standard card-hour (0: no preference)."""

    region: str
    adder: int = 0


@dataclass(frozen=True, slots=True)
class Need:
    """What a buyer needs; validated on construction (integers only, no bools)."""

    unit: str
    quantity: int
    hours: int
    earliest_start_ms: int
    deadline_ms: int
    regions: tuple[RegionChoice, ...]
    max_total: int
    min_grade: int = 0
    """Minimum performance factor, in 1/GRADE_SCALE of the base card (0: any card)."""
    classes: tuple[str, ...] = ()
    """Accepted resource classes (empty: every firm card class). An interruptible (`-INT`)
    class is accepted only when named here: its units may be recalled before delivery."""
    nights: bool = False
    """The need's hours may be night hours (00:00-08:00 CST) of the nights in its window rather
    than consecutive hours: only such a need may be served by a nights strip."""

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise NeedError("unit", f"must be one of {', '.join(UNITS)}, not {self.unit!r}")
        _positive("quantity", self.quantity, MAX_QUANTITY)
        _positive("hours", self.hours, MAX_HOURS)
        _positive("max_total", self.max_total, 10**15)
        _non_negative("earliest_start_ms", self.earliest_start_ms)
        _non_negative("deadline_ms", self.deadline_ms)
        _non_negative("min_grade", self.min_grade)
        if type(self.nights) is not bool:
            raise NeedError("nights", f"must be true or false, not {self.nights!r}")
        if self.deadline_ms - self.earliest_start_ms < self.hours * HOUR_MS:
            raise NeedError(
                "deadline_ms",
                f"the window from {self.earliest_start_ms} to {self.deadline_ms} is shorter "
                f"than {self.hours} hour(s)",
            )
        if not self.regions:
            raise NeedError("regions", "name at least one acceptable region")
        seen: set[str] = set()
        for choice in self.regions:
            if choice.region not in REGIONS:
                raise NeedError("regions", f"unknown region {choice.region!r}")
            if choice.region in seen:
                raise NeedError("regions", f"region {choice.region!r} is named twice")
            seen.add(choice.region)
            _non_negative(f"regions.{choice.region}.adder", choice.adder)
        for code in self.classes:
            if code not in RESOURCE_CLASSES:
                raise NeedError("classes", f"unknown resource class {code!r}")
        if len(set(self.classes)) != len(self.classes):
            raise NeedError("classes", "a class is named twice")

    def adder_of(self, region: str) -> int | None:
        """The region's adder, or None if the region is not acceptable."""
        for choice in self.regions:
            if choice.region == region:
                return choice.adder
        return None


def _positive(name: str, value: object, most: int) -> None:
    if type(value) is not int or not 0 < value <= most:
        raise NeedError(name, f"must be an integer from 1 to {most}, not {value!r}")


def _non_negative(name: str, value: object) -> None:
    if type(value) is not int or not 0 <= value <= 10**15:
        raise NeedError(name, f"must be a non-negative integer, not {value!r}")


@dataclass(frozen=True, slots=True)
class Alternative:
    """One family and start hour, priced, or the reason it cannot be done."""

    family: str
    resource_class: str
    region: str
    start_ms: int
    symbols: tuple[str, ...]
    cards_per_hour: int
    standard_card_hours: Fraction
    """Standard card-hours the block would deliver (at least the need's, when in those)."""
    cost: int | None
    """Fen paid if the block fills at the walked asks; None when some hour is too thin."""
    adder_cost: int
    limit_price: int | None
    """The block's average price limit, fen per card-hour on the tick; None if infeasible."""
    reason: str | None
    """None when feasible; else INSUFFICIENT_DEPTH or OVER_MAX_TOTAL."""
    detail: str
    voucher: int | None = None
    """The voucher part of `cost` if the buyer's voucher covers this alternative, else None."""
    kind: str = HOURLY_BLOCK
    """HOURLY_BLOCK (`symbols` are its consecutive hours) or STRIP (`symbols` is the strip)."""

    @property
    def hours(self) -> int:
        """The delivery hours bought: the block's, or every hour of the strip."""
        return len(self.symbols) if self.kind == HOURLY_BLOCK else strip_hours(self.symbols[0])

    @property
    def what(self) -> str:
        """What the alternative is, in words: "hourly block ... from HOUR" or "week strip ..."."""
        recallable = ", interruptible: recallable before delivery" if self.interruptible else ""
        if self.kind == HOURLY_BLOCK:
            return (
                f"hourly block {self.family} from {self.symbols[0]} for {self.hours} h{recallable}"
            )
        term = TERM_NAMES[self.symbols[0].rsplit(".", 1)[1][0]]
        return f"{term} strip {self.symbols[0]} ({self.hours} h{recallable})"

    @property
    def interruptible(self) -> bool:
        """Whether the capacity is interruptible: the provider may recall it before delivery."""
        return _interruptible(self.resource_class)

    @property
    def feasible(self) -> bool:
        """True if the block can be placed within the need's budget."""
        return self.reason is None

    @property
    def net_cost(self) -> int | None:
        """What the buyer pays: the cost less the voucher part."""
        return None if self.cost is None else self.cost - (self.voucher or 0)

    @property
    def ranked_total(self) -> int | None:
        """What the choice minimises: the cost after the voucher plus the region adder."""
        net = self.net_cost
        return None if net is None else net + self.adder_cost

    def rank_key(self) -> tuple[int, int, int, str, str]:
        """Ranked total, then net cost, then earlier start, then family, then the first symbol
        (an hour sorts before a strip of the same start: the documented ties)."""
        net = self.net_cost
        if net is None:
            raise ValueError(f"{self.family} from {self.start_ms} has no cost to rank it by")
        return (net + self.adder_cost, net, self.start_ms, self.family, self.symbols[0])


VoucherOf = Callable[[ContractSpec, int, int], int | None]
"""The voucher part of a block starting with a contract, costing so many fen over so many hours,
or None if the buyer's voucher does not cover it."""


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A listed family that cannot serve the need at all, and why."""

    family: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Plan:
    """Every alternative priced, the winner, and why."""

    chosen: Alternative | None
    alternatives: tuple[Alternative, ...]
    """Feasible ones best first, then the infeasible ones by start and family."""
    excluded: tuple[Exclusion, ...]
    reason: str | None
    """Why nothing is feasible (None when something is)."""
    explanation: str
    families: frozenset[str] = field(default_factory=frozenset)
    """Families whose books this plan read: a change to one of them may change the plan."""


def plan(
    need: Need,
    contracts: Iterable[ContractSpec],
    asks: Mapping[str, Sequence[tuple[int, int]]],
    performance: PerformanceTable,
    voucher_of: VoucherOf | None = None,
) -> Plan:
    """The cheapest feasible block or strip for `need` given the listed `contracts` and each
    symbol's ask levels (price, quantity), best (lowest) first (a missing symbol has no asks),
    after the buyer's voucher where `voucher_of` says it covers an alternative."""
    hours_by_family: dict[str, dict[int, ContractSpec]] = {}
    strips_by_family: dict[str, list[ContractSpec]] = {}
    for spec in contracts:
        if spec.is_strip:
            strips_by_family.setdefault(spec.family, []).append(spec)
        elif not spec.is_term:
            hours_by_family.setdefault(spec.family, {})[to_utc_ms(spec.delivery_start)] = spec
    excluded: list[Exclusion] = []
    alternatives: list[Alternative] = []
    families: set[str] = set()
    for family in sorted(hours_by_family.keys() | strips_by_family.keys()):
        listed = hours_by_family.get(family, {})
        strips = sorted(strips_by_family.get(family, []), key=lambda spec: spec.symbol)
        any_spec = next(iter(listed.values())) if listed else strips[0]
        suited = _suitability(need, any_spec, performance)
        if isinstance(suited, Exclusion):
            excluded.append(suited)
            continue
        families.add(family)
        factor, adder = suited
        for start in sorted(listed) if need.hours <= MAX_BLOCK_HOURS else ():
            window = [start + i * HOUR_MS for i in range(need.hours)]
            if start < need.earliest_start_ms or window[-1] + HOUR_MS > need.deadline_ms:
                continue
            if any(hour not in listed for hour in window):
                continue
            specs = [listed[hour] for hour in window]
            alternatives.append(
                _with_voucher(_price(need, specs, factor, adder, asks), specs[0], voucher_of)
            )
        for strip in strips:
            if _strip_serves(need, strip):
                alternative = _price_strip(need, strip, factor, adder, asks)
                alternatives.append(_with_voucher(alternative, strip, voucher_of))
    feasible = sorted((a for a in alternatives if a.feasible), key=Alternative.rank_key)
    infeasible = sorted(
        (a for a in alternatives if not a.feasible),
        key=lambda a: (a.start_ms, a.family, a.symbols[0]),
    )
    chosen = feasible[0] if feasible else None
    reason = None if chosen else _plan_reason(need, families, alternatives)
    return Plan(
        chosen=chosen,
        alternatives=tuple(feasible + infeasible),
        excluded=tuple(excluded),
        reason=reason,
        explanation=_explain(need, chosen, feasible, infeasible, reason),
        families=frozenset(families),
    )


def _with_voucher(
    alternative: Alternative, first: ContractSpec, voucher_of: VoucherOf | None
) -> Alternative:
    """The alternative with the voucher part the buyer's grant would pay of its cost."""
    if voucher_of is None or alternative.cost is None:
        return alternative
    return replace(alternative, voucher=voucher_of(first, alternative.cost, alternative.hours))


def _strip_serves(need: Need, strip: ContractSpec) -> bool:
    """Whether every hour of `strip` lies in the need's window and the strip delivers the
    need's hours: a week or a month holds `hours` consecutive hours if it has as many; a nights
    strip's hours are not consecutive (8 a night), so it serves only a need that accepts night
    hours, of at most its 56."""
    start = to_utc_ms(strip.delivery_start)
    if start < need.earliest_start_ms or to_utc_ms(strip.delivery_end) > need.deadline_ms:
        return False
    if strip.term == TERM_NIGHTS and not need.nights:
        return False
    return strip_hours(strip.symbol) >= need.hours


def _interruptible(code: str) -> bool:
    """Whether a resource class is the recallable twin of a firm one."""
    return RESOURCE_CLASSES[code].firm_class is not None


def _suitability(
    need: Need, spec: ContractSpec, performance: PerformanceTable
) -> Exclusion | tuple[Fraction, int]:
    """Why `spec`'s family cannot serve the need, or its card factor and region adder."""
    code = spec.resource_class.code
    factor = performance.factor(code)
    adder = need.adder_of(spec.region)
    if adder is None:
        return Exclusion(spec.family, REGION_NOT_ACCEPTED, f"region {spec.region} not accepted")
    if factor is None:
        return Exclusion(spec.family, NOT_A_CARD, f"{code} is sold in {spec.unit}s, not cards")
    if need.classes and code not in need.classes:
        return Exclusion(spec.family, CLASS_NOT_ACCEPTED, f"class {code} not accepted")
    if not need.classes and _interruptible(code):
        return Exclusion(
            spec.family,
            INTERRUPTIBLE_NOT_NAMED,
            f"{code} is interruptible (its units may be recalled before delivery): "
            "name it in classes to accept it",
        )
    if factor * GRADE_SCALE < need.min_grade:
        return Exclusion(
            spec.family,
            BELOW_MIN_GRADE,
            f"{code}'s factor {decimal_text(factor)} is below the minimum "
            f"{decimal_text(Fraction(need.min_grade, GRADE_SCALE))}",
        )
    return factor, adder


def _price(
    need: Need,
    specs: list[ContractSpec],
    factor: Fraction,
    adder: int,
    asks: Mapping[str, Sequence[tuple[int, int]]],
) -> Alternative:
    first = specs[0]
    hours = len(specs)
    cards = _cards(need, factor)
    delivered = cards * hours * factor
    adder_cost = _adder_cost(need, cards, factor, adder)
    symbols = tuple(spec.symbol for spec in specs)

    def alternative(
        cost: int | None, limit: int | None, reason: str | None, detail: str
    ) -> Alternative:
        return Alternative(
            family=first.family,
            resource_class=first.resource_class.code,
            region=first.region,
            start_ms=to_utc_ms(first.delivery_start),
            symbols=symbols,
            cards_per_hour=cards,
            standard_card_hours=delivered,
            cost=cost,
            adder_cost=adder_cost,
            limit_price=limit,
            reason=reason,
            detail=f"hourly block{_recallable(first)}: {detail}",
        )

    cost = 0
    for symbol in symbols:
        hour_cost, available = _walk(asks.get(symbol, ()), cards)
        if available < cards:
            detail = f"{symbol} offers {available} of the {cards} cards needed"
            return alternative(None, None, INSUFFICIENT_DEPTH, detail)
        cost += hour_cost
    units = cards * hours
    if cost > need.max_total:
        detail = f"costs {cost} fen at the asks, over the maximum total {need.max_total} fen"
        return alternative(cost, None, OVER_MAX_TOTAL, detail)
    tick = first.tick_size
    limit = -(-cost // units)
    limit = -(-limit // tick) * tick
    if limit * units > need.max_total:
        detail = (
            f"costs {cost} fen, but the block's limit {limit} fen a card-hour (the average "
            f"rounded up to the {tick} fen tick) could cost {limit * units} fen, over the "
            f"maximum total {need.max_total} fen"
        )
        return alternative(cost, None, OVER_MAX_TOTAL, detail)
    detail = (
        f"{cards} cards x {hours} h for {cost} fen at the asks + {adder_cost} fen region adder "
        f"= {cost + adder_cost}; block limit {limit} fen a card-hour"
    )
    return alternative(cost, limit, None, detail)


def _recallable(spec: ContractSpec) -> str:
    """The words an alternative's detail carries when its capacity is interruptible."""
    if not _interruptible(spec.resource_class.code):
        return ""
    return " of interruptible capacity (recallable before delivery)"


def _cards(need: Need, factor: Fraction) -> int:
    """Cards in every hour: the need's, or enough for its standard card-hours over its hours
    (rounded up, so at least what was asked is delivered)."""
    if need.unit == CARDS:
        return need.quantity
    return math.ceil(Fraction(need.quantity) / (factor * need.hours))


def _adder_cost(need: Need, cards: int, factor: Fraction, adder: int) -> int:
    """The region adder on the standard card-hours the need uses, `cards` in each of its
    hours, rounded up: the same for a block and a longer strip in one region, since the adder
    weighs where the work runs, not hours bought beyond it."""
    return math.ceil(adder * cards * need.hours * factor)


def _price_strip(
    need: Need,
    strip: ContractSpec,
    factor: Fraction,
    adder: int,
    asks: Mapping[str, Sequence[tuple[int, int]]],
) -> Alternative:
    """A strip priced by walking its asks (fen per card-hour) for the cards needed, every hour
    of it paid: cost = the walked prices x cards x the strip's hours. Its limit is the dearest
    ask level walked (one order fills at each level's own price, so unmoved books fill it at
    the cost), and that limit x cards x hours must stay within `max_total`."""
    hours = strip_hours(strip.symbol)
    cards = _cards(need, factor)

    def alternative(
        cost: int | None, limit: int | None, reason: str | None, detail: str
    ) -> Alternative:
        return Alternative(
            family=strip.family,
            resource_class=strip.resource_class.code,
            region=strip.region,
            start_ms=to_utc_ms(strip.delivery_start),
            symbols=(strip.symbol,),
            cards_per_hour=cards,
            standard_card_hours=cards * hours * factor,
            cost=cost,
            adder_cost=_adder_cost(need, cards, factor, adder),
            limit_price=limit,
            reason=reason,
            detail=f"{TERM_NAMES[strip.term]} strip{_recallable(strip)}: {detail}",
            kind=STRIP,
        )

    levels = asks.get(strip.symbol, ())
    per_hour, available = _walk(levels, cards)
    if available < cards:
        detail = f"{strip.symbol} offers {available} of the {cards} cards needed"
        return alternative(None, None, INSUFFICIENT_DEPTH, detail)
    cost = per_hour * hours
    if cost > need.max_total:
        detail = f"costs {cost} fen at the asks, over the maximum total {need.max_total} fen"
        return alternative(cost, None, OVER_MAX_TOTAL, detail)
    limit = _dearest_walked(levels, cards)
    if limit * cards * hours > need.max_total:
        detail = (
            f"costs {cost} fen, but its limit {limit} fen a card-hour (the dearest ask taken) "
            f"could cost {limit * cards * hours} fen, over the maximum total {need.max_total} fen"
        )
        return alternative(cost, None, OVER_MAX_TOTAL, detail)
    adder_cost = _adder_cost(need, cards, factor, adder)
    detail = (
        f"{cards} cards x {hours} h for {cost} fen at the asks + {adder_cost} fen region adder "
        f"= {cost + adder_cost}; fill-or-kill limit {limit} fen a card-hour"
    )
    return alternative(cost, limit, None, detail)


def _dearest_walked(levels: Sequence[tuple[int, int]], wanted: int) -> int:
    """The price of the last ask level taking `wanted` reaches (levels best first)."""
    taken = 0
    for price, quantity in levels:
        taken += quantity
        if taken >= wanted:
            return price
    raise ValueError(f"the asks hold fewer than {wanted}")


def _walk(levels: Sequence[tuple[int, int]], wanted: int) -> tuple[int, int]:
    """(cost, quantity) of taking up to `wanted` from ask levels, best first."""
    cost = taken = 0
    for price, quantity in levels:
        take = min(quantity, wanted - taken)
        cost += price * take
        taken += take
        if taken == wanted:
            break
    return cost, taken


def _plan_reason(need: Need, families: set[str], alternatives: list[Alternative]) -> str:
    if not families:
        return NO_ACCEPTABLE_CONTRACT
    if not alternatives:
        if need.hours > MAX_BLOCK_HOURS:
            return NO_STRIP_SERVES_LONG_NEED
        return NO_LISTED_HOURS_IN_WINDOW
    # Budget is the binding constraint if any alternative had the depth.
    if any(a.reason == OVER_MAX_TOTAL for a in alternatives):
        return OVER_MAX_TOTAL
    return INSUFFICIENT_DEPTH


def _explain(
    need: Need,
    chosen: Alternative | None,
    feasible: list[Alternative],
    infeasible: list[Alternative],
    reason: str | None,
) -> str:
    if chosen is None:
        if reason == NO_ACCEPTABLE_CONTRACT:
            return "no listed family has an accepted class and region of the minimum grade"
        if reason == NO_STRIP_SERVES_LONG_NEED:
            nights = "or, for this night need, a nights strip" if need.nights else (
                "(a nights strip serves only a need that accepts night hours)")  # fmt: skip
            return (
                f"a need of {need.hours} h is longer than a block's {MAX_BLOCK_HOURS} h, and no "
                f"listed strip of an accepted family lies between {need.earliest_start_ms} and "
                f"{need.deadline_ms} with at least {need.hours} h: a week or a month strip "
                f"{nights}"
            )
        if reason == NO_LISTED_HOURS_IN_WINDOW:
            return (
                f"no accepted family lists {need.hours} consecutive hour(s) between "
                f"{need.earliest_start_ms} and {need.deadline_ms}"
            )
        thin = sum(a.reason == INSUFFICIENT_DEPTH for a in infeasible)
        dear = sum(a.reason == OVER_MAX_TOTAL for a in infeasible)
        return (
            f"none of {len(infeasible)} alternatives is feasible: {thin} lack depth, "
            f"{dear} exceed the maximum total {need.max_total} fen"
        )
    text = (
        f"{chosen.what}: {chosen.cost} fen at the asks{_less_voucher(chosen)} + "
        f"{chosen.adder_cost} fen region adder = {chosen.ranked_total}, the lowest of "
        f"{len(feasible)} feasible alternative(s)"
    )
    if len(feasible) > 1:
        runner_up = feasible[1]
        text += (
            f"; next {runner_up.what} at {runner_up.ranked_total} ({runner_up.cost}"
            f"{_less_voucher(runner_up)} + {runner_up.adder_cost})"
        )
    if infeasible:
        text += f"; {len(infeasible)} infeasible"
    return text


def _less_voucher(alternative: Alternative) -> str:
    """The explanation's words for what a voucher pays of an alternative (none: nothing)."""
    return f" - {alternative.voucher} voucher" if alternative.voucher else ""


@dataclass(frozen=True, slots=True)
class AuctionBid:
    """A need as an exclusive group of the day-ahead auction: blocks of `quantity` cards in
    each hour, each at most its price in `prices` per card-hour on average (`price`, the
    highest of them, for the group); the auction buys one or none."""

    alternatives: tuple[Alternative, ...]
    prices: tuple[int, ...]
    quantity: int

    @property
    def price(self) -> int:
        """The highest price limit of any alternative: the group's."""
        return max(self.prices)

    @property
    def own_prices(self) -> list[int] | None:
        """The alternatives' prices where they differ (a region adder), else None."""
        return None if len(set(self.prices)) == 1 else list(self.prices)


def auction_bid(
    result: Plan,
    need: Need,
    ticks: Mapping[str, int],
    most: int,
    eligible: Callable[[Alternative], bool] = lambda _: True,
) -> AuctionBid | None:
    """The exclusive group a planned need bids in the day-ahead auction (module docstring), of
    the alternatives `eligible` accepts; None if none fits or `max_total` buys not one tick
    per card-hour. `ticks` gives each symbol's tick."""
    fitting = [
        a
        for a in result.alternatives
        if eligible(a)
        and a.kind == HOURLY_BLOCK
        and cst_day_start_ms(a.start_ms)
        == cst_day_start_ms(a.start_ms + (len(a.symbols) - 1) * HOUR_MS)
    ]
    if not fitting:
        return None
    cards = fitting[0].cards_per_hour
    priced = [
        (a, (need.max_total - a.adder_cost) // (cards * need.hours))
        for a in fitting
        if a.cards_per_hour == cards
    ]
    tick = math.lcm(*(ticks.get(a.symbols[0], 1) for a, _ in priced))
    same = [(a, worth // tick * tick) for a, worth in priced if worth >= tick][:most]
    if not same:
        return None
    return AuctionBid(tuple(a for a, _ in same), tuple(p for _, p in same), cards)
