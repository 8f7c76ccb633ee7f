"""Need-based orders: the cheapest block order that meets a buyer's need, from the live asks.

A buyer states a need instead of a contract: so many standard card-hours (or cards in every
hour), of at least a minimum grade, for `hours` consecutive hours that start no earlier than
`earliest_start_ms` and end by `deadline_ms`, in one of several regions, each with an optional
adder in fen per standard card-hour (a latency preference: it counts when ranking, nobody pays
it), for at most `max_total` fen.

`plan` prices every **alternative**: a family (`CLASS.REGION`) of an accepted class and region
and a start hour such that all `hours` consecutive hours are listed inside the window. For each
it decides the cards per hour, walks the asks of every hour for that many, and prices the block
the exchange would place. The cheapest feasible alternative wins; every other one is reported
with its price or the reason it cannot be done, so the choice can be explained.

Arithmetic is exact (integers, and `Fraction` for performance factors). Rounding, all of it
against the buyer's favour being understated:

- cards per hour for a need in standard card-hours: ceil(quantity / (factor x hours)), so the
  block delivers at least what was asked;
- the region adder: ceil(adder x standard card-hours delivered) fen;
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
adder), lower cost after the voucher (what is actually paid), earlier start, then family name.

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
    ContractSpec,
    cst_day_start_ms,
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
MAX_HOURS = 24
"""A block order spans at most 24 hours (PlaceBlockOrder)."""
MAX_REGIONS = len(REGIONS)
MAX_QUANTITY = 10**9

# Why an alternative or a family cannot serve the need, and why a whole plan found nothing.
NOT_A_CARD = "not_a_card"
CLASS_NOT_ACCEPTED = "class_not_accepted"
BELOW_MIN_GRADE = "below_min_grade"
REGION_NOT_ACCEPTED = "region_not_accepted"
INSUFFICIENT_DEPTH = "insufficient_depth"
OVER_MAX_TOTAL = "over_max_total"
NO_ACCEPTABLE_CONTRACT = "no_acceptable_contract"
NO_LISTED_HOURS_IN_WINDOW = "no_listed_hours_in_window"


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
    """Accepted resource classes (empty: every card class)."""

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise NeedError("unit", f"must be one of {', '.join(UNITS)}, not {self.unit!r}")
        _positive("quantity", self.quantity, MAX_QUANTITY)
        _positive("hours", self.hours, MAX_HOURS)
        _positive("max_total", self.max_total, 10**15)
        _non_negative("earliest_start_ms", self.earliest_start_ms)
        _non_negative("deadline_ms", self.deadline_ms)
        _non_negative("min_grade", self.min_grade)
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

    def rank_key(self) -> tuple[int, int, int, str]:
        """Ranked total, then net cost, then earlier start, then family (the documented ties)."""
        net = self.net_cost
        if net is None:
            raise ValueError(f"{self.family} from {self.start_ms} has no cost to rank it by")
        return (net + self.adder_cost, net, self.start_ms, self.family)


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
    """The cheapest feasible block for `need` given the listed `contracts` and each symbol's
    ask levels (price, quantity), best (lowest) first (a missing symbol has no asks), after the
    buyer's voucher where `voucher_of` says it covers an alternative."""
    hours_by_family: dict[str, dict[int, ContractSpec]] = {}
    for spec in contracts:
        hours_by_family.setdefault(spec.family, {})[to_utc_ms(spec.delivery_start)] = spec
    excluded: list[Exclusion] = []
    alternatives: list[Alternative] = []
    families: set[str] = set()
    for family in sorted(hours_by_family):
        listed = hours_by_family[family]
        any_spec = next(iter(listed.values()))
        suited = _suitability(need, any_spec, performance)
        if isinstance(suited, Exclusion):
            excluded.append(suited)
            continue
        families.add(family)
        factor, adder = suited
        for start in sorted(listed):
            window = [start + i * HOUR_MS for i in range(need.hours)]
            if start < need.earliest_start_ms or window[-1] + HOUR_MS > need.deadline_ms:
                continue
            if any(hour not in listed for hour in window):
                continue
            specs = [listed[hour] for hour in window]
            alternative = _price(need, specs, factor, adder, asks)
            if voucher_of is not None and alternative.cost is not None:
                part = voucher_of(specs[0], alternative.cost, len(specs))
                alternative = replace(alternative, voucher=part)
            alternatives.append(alternative)
    feasible = sorted((a for a in alternatives if a.feasible), key=Alternative.rank_key)
    infeasible = sorted(
        (a for a in alternatives if not a.feasible), key=lambda a: (a.start_ms, a.family)
    )
    chosen = feasible[0] if feasible else None
    reason = None if chosen else _plan_reason(families, alternatives)
    return Plan(
        chosen=chosen,
        alternatives=tuple(feasible + infeasible),
        excluded=tuple(excluded),
        reason=reason,
        explanation=_explain(need, chosen, feasible, infeasible, reason),
        families=frozenset(families),
    )


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
    if need.unit == CARDS:
        cards = need.quantity
    else:
        cards = math.ceil(Fraction(need.quantity) / (factor * hours))
    delivered = cards * hours * factor
    adder_cost = math.ceil(adder * delivered)
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
            detail=detail,
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


def _plan_reason(families: set[str], alternatives: list[Alternative]) -> str:
    if not families:
        return NO_ACCEPTABLE_CONTRACT
    if not alternatives:
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
        f"{chosen.family} from {chosen.symbols[0]} for {len(chosen.symbols)} h: "
        f"{chosen.cost} fen at the asks{_less_voucher(chosen)} + {chosen.adder_cost} fen region "
        f"adder = {chosen.ranked_total}, the lowest of {len(feasible)} feasible alternative(s)"
    )
    if len(feasible) > 1:
        runner_up = feasible[1]
        text += (
            f"; next {runner_up.family} from {runner_up.symbols[0]} at "
            f"{runner_up.ranked_total} ({runner_up.cost}{_less_voucher(runner_up)} + "
            f"{runner_up.adder_cost})"
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
