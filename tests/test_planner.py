"""The need planner: the cheapest feasible block across regions, classes and start hours."""

from __future__ import annotations

from datetime import datetime, timedelta
from fractions import Fraction

import pytest

from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    RESOURCE_CLASSES,
    ContractSpec,
    to_utc_ms,
)
from exchange.domain.performance import STANDARD
from exchange.domain.planner import (
    BELOW_MIN_GRADE,
    CARDS,
    CLASS_NOT_ACCEPTED,
    HOUR_MS,
    HOURLY_BLOCK,
    INSUFFICIENT_DEPTH,
    INTERRUPTIBLE_NOT_NAMED,
    NO_ACCEPTABLE_CONTRACT,
    NO_LISTED_HOURS_IN_WINDOW,
    NO_STRIP_SERVES_LONG_NEED,
    NOT_A_CARD,
    OVER_MAX_TOTAL,
    REGION_NOT_ACCEPTED,
    STANDARD_CARD_HOURS,
    STRIP,
    Need,
    NeedError,
    RegionChoice,
    auction_bid,
    plan,
)

DAY = datetime(2027, 12, 1, tzinfo=CHINA_STANDARD_TIME)
T0 = to_utc_ms(DAY)


def listing(*families: str, hours: int = 3) -> list[ContractSpec]:
    """Hours 00..hours-1 of each CLASS.REGION family."""
    specs = []
    for family in families:
        code, region = family.split(".")
        for hour in range(hours):
            specs.append(ContractSpec(RESOURCE_CLASSES[code], region, DAY + timedelta(hours=hour)))
    return specs


def sym(family: str, hour: int) -> str:
    return f"{family}.20271201T{hour:02d}"


def need(**overrides: object) -> Need:
    values: dict[str, object] = {
        "unit": CARDS,
        "quantity": 2,
        "hours": 2,
        "earliest_start_ms": T0,
        "deadline_ms": T0 + 3 * HOUR_MS,
        "regions": (RegionChoice("GZ"), RegionChoice("YRD")),
        "max_total": 1_000_000,
    }
    values.update(overrides)
    return Need(**values)  # type: ignore[arg-type]


def flat(
    families: dict[str, int], quantity: int = 10, hours: int = 3
) -> dict[str, list[tuple[int, int]]]:
    """One ask level of `quantity` at each family's price in every hour."""
    return {
        sym(family, hour): [(price, quantity)]
        for family, price in families.items()
        for hour in range(hours)
    }


def test_the_cheapest_region_wins_and_every_alternative_is_priced() -> None:
    contracts = listing("H100-80G.GZ", "H100-80G.YRD")
    asks = flat({"H100-80G.GZ": 1800, "H100-80G.YRD": 2000})
    result = plan(need(), contracts, asks, STANDARD)
    assert result.chosen is not None
    assert result.chosen.symbols == (sym("H100-80G.GZ", 0), sym("H100-80G.GZ", 1))
    assert (result.chosen.cost, result.chosen.limit_price, result.chosen.cards_per_hour) == (
        2 * 2 * 1800,
        1800,
        2,
    )
    # Two families x two start hours (00 and 01) fit a 2-hour block in a 3-hour window.
    priced = [(a.family, a.start_ms, a.cost) for a in result.alternatives]
    assert priced == [
        ("H100-80G.GZ", T0, 7200),
        ("H100-80G.GZ", T0 + HOUR_MS, 7200),
        ("H100-80G.YRD", T0, 8000),
        ("H100-80G.YRD", T0 + HOUR_MS, 8000),
    ]
    assert result.reason is None
    assert result.families == {"H100-80G.GZ", "H100-80G.YRD"}
    assert "H100-80G.GZ" in result.explanation
    assert "next hourly block H100-80G.GZ" in result.explanation


def test_a_region_adder_flips_the_choice() -> None:
    contracts = listing("H100-80G.GZ", "H100-80G.YRD")
    asks = flat({"H100-80G.GZ": 1800, "H100-80G.YRD": 2000})
    # GZ saves 4 card-hours x 200 fen = 800 fen; H100 is the base card, so those are 4
    # standard card-hours, and an adder of 201 fen per standard card-hour outweighs the saving.
    far = (RegionChoice("GZ", adder=201), RegionChoice("YRD"))
    result = plan(need(regions=far), contracts, asks, STANDARD)
    assert result.chosen is not None
    assert result.chosen.region == "YRD"
    gz = next(a for a in result.alternatives if a.region == "GZ")
    assert (gz.cost, gz.adder_cost, gz.ranked_total) == (7200, 804, 8004)
    # The adder ranks; it is not paid: the block's limit is the asks' average.
    assert (result.chosen.cost, result.chosen.adder_cost, result.chosen.limit_price) == (
        8000,
        0,
        2000,
    )
    near = (RegionChoice("GZ", adder=199), RegionChoice("YRD"))
    assert plan(need(regions=near), contracts, asks, STANDARD).chosen.region == "GZ"  # type: ignore[union-attr]


def test_a_day_ahead_bid_prices_each_alternative_at_the_budget_less_its_adder() -> None:
    contracts = listing("H100-80G.GZ", "H100-80G.YRD")
    asks = flat({"H100-80G.GZ": 1800, "H100-80G.YRD": 2000})
    # 10,000 fen for 2 cards x 2 hours: 2500 a card-hour, less GZ's adder of 804 fen over the
    # block (201 x 4 standard card-hours): (10,000 - 804) // 4 = 2299, down to the tick (10).
    far = (RegionChoice("GZ", adder=201), RegionChoice("YRD"))
    wanted = need(regions=far, max_total=10_000)
    result = plan(wanted, contracts, asks, STANDARD)
    ticks = {spec.symbol: 10 for spec in contracts}
    bid = auction_bid(result, wanted, ticks, most=12)
    assert bid is not None
    priced = {(a.region, a.start_ms): p for a, p in zip(bid.alternatives, bid.prices, strict=True)}
    assert priced == {("YRD", T0): 2500, ("YRD", T0 + HOUR_MS): 2500,
                      ("GZ", T0): 2290, ("GZ", T0 + HOUR_MS): 2290}  # fmt: skip
    assert (bid.price, bid.own_prices, bid.quantity) == (2500, list(bid.prices), 2)
    # Without an adder every alternative bids the group's one price, as groups did before.
    plain = need(max_total=10_000)
    flat_bid = auction_bid(plan(plain, contracts, asks, STANDARD), plain, ticks, 12)
    assert flat_bid is not None
    assert flat_bid.own_prices is None
    # An alternative whose adder leaves less than a tick a card-hour is left out.
    dear = (RegionChoice("GZ", adder=2_500), RegionChoice("YRD"))
    tight = need(regions=dear, max_total=10_000)
    only = auction_bid(plan(tight, contracts, asks, STANDARD), tight, ticks, 12)
    assert only is not None
    assert {a.region for a in only.alternatives} == {"YRD"}


def test_a_minimum_grade_or_a_class_list_excludes_a_class() -> None:
    contracts = listing("H100-80G.GZ", "A100-80G.GZ", "CPU.GZ")
    asks = flat({"H100-80G.GZ": 1800, "A100-80G.GZ": 500, "CPU.GZ": 10})
    cheap = plan(need(), contracts, asks, STANDARD)
    assert cheap.chosen is not None
    assert cheap.chosen.family == "A100-80G.GZ"
    assert [(e.family, e.reason) for e in cheap.excluded] == [("CPU.GZ", NOT_A_CARD)]
    # A100's factor is 312 / 989.4 = 0.3153...: a minimum of 0.5 of the base card excludes it.
    graded = plan(need(min_grade=5000), contracts, asks, STANDARD)
    assert graded.chosen is not None
    assert graded.chosen.family == "H100-80G.GZ"
    assert ("A100-80G.GZ", BELOW_MIN_GRADE) in [(e.family, e.reason) for e in graded.excluded]
    listed = plan(need(classes=("H100-80G",)), contracts, asks, STANDARD)
    assert listed.chosen is not None
    assert listed.chosen.family == "H100-80G.GZ"
    assert ("A100-80G.GZ", CLASS_NOT_ACCEPTED) in [(e.family, e.reason) for e in listed.excluded]
    only_north = plan(need(regions=(RegionChoice("NMG"),)), contracts, asks, STANDARD)
    assert only_north.reason == NO_ACCEPTABLE_CONTRACT
    assert {e.reason for e in only_north.excluded} == {REGION_NOT_ACCEPTED}


def test_a_need_naming_no_class_never_buys_interruptible_capacity() -> None:
    """Recallable capacity is a different product: cheaper, but a need that names no class
    takes the firm cards, and the -INT family is excluded saying why."""
    contracts = listing("H100-80G.GZ", "H100-80G-INT.GZ")
    asks = flat({"H100-80G.GZ": 1800, "H100-80G-INT.GZ": 900})
    firm = plan(need(), contracts, asks, STANDARD)
    assert firm.chosen is not None
    assert firm.chosen.family == "H100-80G.GZ"
    assert firm.chosen.cost == 2 * 2 * 1800
    assert [(e.family, e.reason) for e in firm.excluded] == [
        ("H100-80G-INT.GZ", INTERRUPTIBLE_NOT_NAMED)
    ]
    assert "interruptible" not in firm.explanation
    # Only interruptible capacity listed: nothing to buy unless the need names it.
    only_recallable = plan(need(), listing("H100-80G-INT.GZ"), asks, STANDARD)
    assert only_recallable.chosen is None
    assert only_recallable.reason == NO_ACCEPTABLE_CONTRACT


def test_a_need_naming_an_interruptible_class_buys_it_and_says_so() -> None:
    contracts = listing("H100-80G.GZ", "H100-80G-INT.GZ")
    asks = flat({"H100-80G.GZ": 1800, "H100-80G-INT.GZ": 900})
    named = plan(need(classes=("H100-80G", "H100-80G-INT")), contracts, asks, STANDARD)
    assert named.chosen is not None
    assert named.chosen.family == "H100-80G-INT.GZ"
    assert named.chosen.interruptible
    assert named.chosen.cost == 2 * 2 * 900
    assert named.chosen.detail.startswith(
        "hourly block of interruptible capacity (recallable before delivery): "
    )
    assert named.explanation.startswith(
        "hourly block H100-80G-INT.GZ from H100-80G-INT.GZ.20271201T00 for 2 h, "
        "interruptible: recallable before delivery: 3600 fen"
    )
    firm = next(a for a in named.alternatives if a.family == "H100-80G.GZ")
    assert not firm.interruptible
    assert firm.detail.startswith("hourly block: ")


def test_standard_card_hours_convert_to_cards_through_the_factor() -> None:
    contracts = listing("H100-80G.GZ", "A100-80G.GZ")
    asks = flat({"H100-80G.GZ": 1800, "A100-80G.GZ": 600}, quantity=100)
    wanted = need(unit=STANDARD_CARD_HOURS, quantity=10)
    result = plan(wanted, contracts, asks, STANDARD)
    by_family = {a.family: a for a in result.alternatives if a.start_ms == T0}
    h100, a100 = by_family["H100-80G.GZ"], by_family["A100-80G.GZ"]
    # H100 is the base card: 10 standard card-hours over 2 hours is 5 cards an hour.
    assert (h100.cards_per_hour, h100.standard_card_hours, h100.cost) == (5, 10, 18_000)
    # A100: factor 312 / 989.4; 10 / (2 x 0.31534...) = 15.85..., so 16 cards an hour.
    factor = Fraction(3120, 9894)
    assert a100.cards_per_hour == 16
    assert a100.standard_card_hours == 32 * factor
    assert a100.standard_card_hours >= Fraction(10)
    assert a100.cost == 32 * 600
    assert result.chosen is not None
    assert result.chosen.family == "H100-80G.GZ"


def test_too_little_depth_in_any_hour_makes_an_alternative_infeasible() -> None:
    contracts = listing("H100-80G.GZ")
    asks = flat({"H100-80G.GZ": 1800}, quantity=5)
    asks[sym("H100-80G.GZ", 1)] = [(1800, 1), (1900, 1)]
    result = plan(need(quantity=3), contracts, asks, STANDARD)
    assert result.chosen is None
    assert result.reason == INSUFFICIENT_DEPTH
    assert [(a.start_ms, a.reason) for a in result.alternatives] == [
        (T0, INSUFFICIENT_DEPTH),
        (T0 + HOUR_MS, INSUFFICIENT_DEPTH),
    ]
    assert "offers 2 of the 3 cards" in result.alternatives[0].detail


def test_walking_several_levels_sets_the_limit_to_the_average_rounded_up_to_the_tick() -> None:
    contracts = listing("H100-80G.GZ")
    asks = {
        sym("H100-80G.GZ", 0): [(1800, 1), (1830, 5)],
        sym("H100-80G.GZ", 1): [(1810, 5)],
    }
    result = plan(need(hours=2, deadline_ms=T0 + 2 * HOUR_MS), contracts, asks, STANDARD)
    assert result.chosen is not None
    # 1800 + 1830 + 2 x 1810 = 7250 for 4 card-hours: 1812.5, up to 1813, up to the 10 fen tick.
    assert (result.chosen.cost, result.chosen.limit_price) == (7250, 1820)
    # The limit x 4 = 7280: a budget of 7279 fits the cost but not the limit.
    tight = plan(
        need(hours=2, deadline_ms=T0 + 2 * HOUR_MS, max_total=7279), contracts, asks, STANDARD
    )
    assert tight.chosen is None
    assert tight.reason == OVER_MAX_TOTAL
    assert "tick" in tight.alternatives[0].detail


def test_a_window_too_short_for_the_listed_hours_has_no_alternative() -> None:
    contracts = listing("H100-80G.GZ", hours=2)
    asks = flat({"H100-80G.GZ": 1800}, hours=2)
    late = need(hours=2, earliest_start_ms=T0 + HOUR_MS, deadline_ms=T0 + 4 * HOUR_MS)
    result = plan(late, contracts, asks, STANDARD)
    assert (result.chosen, result.alternatives, result.reason) == (
        None,
        (),
        NO_LISTED_HOURS_IN_WINDOW,
    )
    with pytest.raises(NeedError) as shorter:
        need(hours=3, deadline_ms=T0 + 2 * HOUR_MS)
    assert shorter.value.field == "deadline_ms"


def test_over_the_maximum_total_is_infeasible_with_the_cost_stated() -> None:
    contracts = listing("H100-80G.GZ")
    asks = flat({"H100-80G.GZ": 1800})
    result = plan(need(max_total=7199), contracts, asks, STANDARD)
    assert result.chosen is None
    assert result.reason == OVER_MAX_TOTAL
    assert result.alternatives[0].detail.startswith("hourly block: costs 7200 fen")
    exactly = plan(need(max_total=7200), contracts, asks, STANDARD)
    assert exactly.chosen is not None
    assert exactly.chosen.limit_price == 1800


def test_ties_break_by_cost_then_earlier_start_then_family_name() -> None:
    contracts = listing("H100-80G.YRD", "H100-80G.GZ")
    asks = flat({"H100-80G.GZ": 1800, "H100-80G.YRD": 1800})
    result = plan(need(), contracts, asks, STANDARD)
    order = [(a.family, a.start_ms) for a in result.alternatives]
    assert order == [
        ("H100-80G.GZ", T0),
        ("H100-80G.YRD", T0),
        ("H100-80G.GZ", T0 + HOUR_MS),
        ("H100-80G.YRD", T0 + HOUR_MS),
    ]
    # Same ranked total, lower cost wins: GZ pays 7200 + 120 adder, YRD pays 7320.
    asks = flat({"H100-80G.GZ": 1800, "H100-80G.YRD": 1830})
    adder = (RegionChoice("GZ", adder=30), RegionChoice("YRD"))
    tied = plan(need(regions=adder), contracts, asks, STANDARD)
    assert tied.chosen is not None
    assert tied.chosen.ranked_total == 7320
    assert tied.chosen.family == "H100-80G.GZ"
    assert plan(need(regions=adder), list(reversed(contracts)), asks, STANDARD) == tied


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"unit": "gpus"}, "unit"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": 2.0}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"hours": 745}, "hours"),
        ({"max_total": -1}, "max_total"),
        ({"regions": ()}, "regions"),
        ({"regions": (RegionChoice("MARS"),)}, "regions"),
        ({"regions": (RegionChoice("GZ"), RegionChoice("GZ", 5))}, "regions"),
        ({"regions": (RegionChoice("GZ", -1),)}, "regions.GZ.adder"),
        ({"classes": ("B200",)}, "classes"),
        ({"min_grade": -5}, "min_grade"),
    ],
)
def test_a_need_is_validated_field_by_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(NeedError) as refused:
        need(**overrides)
    assert refused.value.field == field


def test_a_voucher_ranks_the_alternatives_it_covers_by_what_the_buyer_pays_after_it() -> None:
    contracts = listing("H100-80G.GZ", "H100-80G.YRD")
    asks = flat({"H100-80G.GZ": 2000, "H100-80G.YRD": 1800})
    covered: list[tuple[str, int, int]] = []

    def gz_only(first: ContractSpec, cost: int, hours: int) -> int | None:
        """30% of a GZ block, at most 1,000 an hour; YRD not covered."""
        if first.region != "GZ":
            return None
        covered.append((first.symbol, cost, hours))
        return min(cost * 3 // 10, 1_000 * hours)

    without = plan(need(hours=2, deadline_ms=T0 + 2 * HOUR_MS), contracts, asks, STANDARD)
    assert without.chosen is not None
    assert without.chosen.region == "YRD"
    result = plan(need(hours=2, deadline_ms=T0 + 2 * HOUR_MS), contracts, asks, STANDARD, gz_only)
    assert covered == [(sym("H100-80G.GZ", 0), 8_000, 2)]
    assert [
        (a.region, a.cost, a.voucher, a.net_cost, a.ranked_total) for a in result.alternatives
    ] == [
        ("GZ", 8_000, 2_000, 6_000, 6_000),
        ("YRD", 7_200, None, 7_200, 7_200),
    ]
    chosen = result.chosen
    assert chosen is not None
    assert (chosen.region, chosen.limit_price) == ("GZ", 2_000)
    assert result.explanation.startswith(
        f"hourly block H100-80G.GZ from {sym('H100-80G.GZ', 0)} for 2 h: 8000 fen at the asks - "
        "2000 voucher + 0 fen region adder = 6000, the lowest of 2 feasible alternative(s); "
        "next hourly block H100-80G.YRD"
    )


# Strips: a week (or a month, or a week's nights) bought whole, against the hourly blocks.

WEEK_START = datetime(2027, 12, 6, tzinfo=CHINA_STANDARD_TIME)
"""A Monday: its week strip is H100-80G.GZ.W20271206, 168 hours to 2027-12-13 00:00."""
W0 = to_utc_ms(WEEK_START)
WEEK_MS = 168 * HOUR_MS
GZ_WEEK = "H100-80G.GZ.W20271206"
GZ_NIGHTS = "H100-80G.GZ.N20271206"
GZ_MONTH = "H100-80G.GZ.M202712"


def week_listing(hours: int = 24) -> list[ContractSpec]:
    """The first `hours` hours of the week in GZ, and its week, nights and month strips."""
    h100 = RESOURCE_CLASSES["H100-80G"]
    specs = [ContractSpec(h100, "GZ", WEEK_START + timedelta(hours=h)) for h in range(hours)]
    specs.append(ContractSpec(h100, "GZ", WEEK_START, "W"))
    specs.append(ContractSpec(h100, "GZ", WEEK_START, "N"))
    specs.append(ContractSpec(h100, "GZ", datetime(2027, 12, 1, tzinfo=CHINA_STANDARD_TIME), "M"))
    return specs


def week_asks(
    strip: list[tuple[int, int]], hourly: int = 1_000
) -> dict[str, list[tuple[int, int]]]:
    """10 cards at `hourly` fen in each of the week's first 24 hours; `strip` on every strip."""
    asks = {f"H100-80G.GZ.202712{6 + h // 24:02d}T{h % 24:02d}": [(hourly, 10)] for h in range(24)}
    for symbol in (GZ_WEEK, GZ_NIGHTS, GZ_MONTH):
        asks[symbol] = list(strip)
    return asks


def week_need(**overrides: object) -> Need:
    """2 cards for 24 hours, any time in the week, in GZ."""
    values: dict[str, object] = {
        "hours": 24,
        "earliest_start_ms": W0,
        "deadline_ms": W0 + WEEK_MS,
        "regions": (RegionChoice("GZ"),),
    }
    values.update(overrides)
    return need(**values)


def test_a_week_strip_cheaper_than_the_hourly_block_wins_and_is_placed_at_its_dearest_ask() -> None:
    # 2 cards for 24 h bought hourly: 2 x 24 x 1000 = 48,000 fen. The week's asks, per
    # card-hour: 1 card at 140 and 5 at 142, so 2 cards of every one of its 168 hours cost
    # (140 + 142) x 168 = 47,376 fen: less, though it delivers 7 times the hours.
    result = plan(week_need(), week_listing(), week_asks([(140, 1), (142, 5)]), STANDARD)
    chosen = result.chosen
    assert chosen is not None
    assert (chosen.kind, chosen.symbols, chosen.hours) == (STRIP, (GZ_WEEK,), 168)
    assert (chosen.cards_per_hour, chosen.cost, chosen.ranked_total) == (2, 47_376, 47_376)
    # The limit is the dearest ask taken: 142 x 2 x 168 = 47,712 fen at the most.
    assert chosen.limit_price == 142
    assert chosen.standard_card_hours == 336
    # Neither the nights strip (the need does not accept night hours) nor the month (its hours
    # are outside the window) is an alternative; the one hourly block is.
    assert [(a.kind, a.symbols[0], a.cost) for a in result.alternatives] == [
        (STRIP, GZ_WEEK, 47_376),
        (HOURLY_BLOCK, "H100-80G.GZ.20271206T00", 48_000),
    ]
    assert result.explanation == (
        f"week strip {GZ_WEEK} (168 h): 47376 fen at the asks + 0 fen region adder = 47376, "
        "the lowest of 2 feasible alternative(s); next hourly block H100-80G.GZ from "
        "H100-80G.GZ.20271206T00 for 24 h at 48000 (48000 + 0)"
    )
    assert chosen.detail == (
        "week strip: 2 cards x 168 h for 47376 fen at the asks + 0 fen region adder = 47376; "
        "fill-or-kill limit 142 fen a card-hour"
    )
    # A budget the walked asks fit but the limit does not: the strip cannot be placed safely.
    tight = plan(
        week_need(max_total=47_500), week_listing(), week_asks([(140, 1), (142, 5)]), STANDARD
    )
    week = next(a for a in tight.alternatives if a.kind == STRIP)
    assert (week.reason, week.cost, week.limit_price) == (OVER_MAX_TOTAL, 47_376, None)
    assert (tight.chosen, tight.reason) == (None, OVER_MAX_TOTAL)
    assert week.detail == (
        "week strip: costs 47376 fen, but its limit 142 fen a card-hour (the dearest ask taken) "
        "could cost 47712 fen, over the maximum total 47500 fen"
    )


def test_a_week_strip_dearer_than_the_hourly_block_loses() -> None:
    # 143 fen a card-hour: 2 x 168 x 143 = 48,048 fen, 48 more than the block.
    result = plan(week_need(), week_listing(), week_asks([(143, 10)]), STANDARD)
    chosen = result.chosen
    assert chosen is not None
    assert (chosen.kind, chosen.cost, chosen.limit_price) == (HOURLY_BLOCK, 48_000, 1_000)
    runner_up = result.alternatives[1]
    assert (runner_up.kind, runner_up.symbols, runner_up.cost) == (STRIP, (GZ_WEEK,), 48_048)
    assert runner_up.feasible
    assert "next week strip H100-80G.GZ.W20271206 (168 h) at 48048" in result.explanation


def test_a_voucher_on_the_strip_makes_it_win() -> None:
    # The week at 150 fen: 2 x 168 x 150 = 50,400 fen, dearer than the block's 48,000; a
    # voucher of 30% capped at 100 fen per hourly contract pays min(15,120, 16,800) = 15,120 of
    # it, so the buyer pays 35,280 for the week.
    asks = week_asks([(150, 10)])
    calls: list[tuple[str, int, int]] = []

    def strips_only(first: ContractSpec, cost: int, hours: int) -> int | None:
        if not first.is_strip:
            return None
        calls.append((first.symbol, cost, hours))
        return min(cost * 3 // 10, 100 * hours)

    without = plan(week_need(), week_listing(), asks, STANDARD)
    assert without.chosen is not None
    assert without.chosen.kind == HOURLY_BLOCK
    result = plan(week_need(), week_listing(), asks, STANDARD, strips_only)
    chosen = result.chosen
    assert chosen is not None
    assert calls == [(GZ_WEEK, 50_400, 168)]
    assert (chosen.kind, chosen.cost, chosen.voucher, chosen.net_cost, chosen.ranked_total) == (
        STRIP,
        50_400,
        15_120,
        35_280,
        35_280,
    )
    # The limit stays gross: the voucher is known only as the order fills.
    assert chosen.limit_price == 150
    assert result.explanation.startswith(
        f"week strip {GZ_WEEK} (168 h): 50400 fen at the asks - 15120 voucher + 0 fen region "
        "adder = 35280"
    )


def test_a_need_longer_than_a_block_is_served_by_a_week_strip_only() -> None:
    # 1,000 standard card-hours over 100 hours of H100 (factor 1): 10 cards an hour. No block
    # spans 100 hours; the week does, at 150 fen: 10 x 168 x 150 = 252,000 fen. A GZ adder of
    # 2 fen counts the 1,000 standard card-hours the need uses, not the 1,680 the week delivers.
    long_need = week_need(
        unit=STANDARD_CARD_HOURS,
        quantity=1_000,
        hours=100,
        regions=(RegionChoice("GZ", adder=2),),
    )
    asks = week_asks([(150, 10)])
    result = plan(long_need, week_listing(hours=168), asks, STANDARD)
    chosen = result.chosen
    assert chosen is not None
    assert [a.symbols[0] for a in result.alternatives] == [GZ_WEEK]
    assert (chosen.kind, chosen.cards_per_hour, chosen.cost, chosen.adder_cost) == (
        STRIP,
        10,
        252_000,
        2_000,
    )
    assert (chosen.ranked_total, chosen.limit_price, chosen.standard_card_hours) == (
        254_000,
        150,
        Fraction(1_680),
    )
    # The week's depth short of 10 cards: nothing serves it, and the plan says why.
    thin = plan(long_need, week_listing(hours=168), week_asks([(150, 9)]), STANDARD)
    assert (thin.chosen, thin.reason) == (None, INSUFFICIENT_DEPTH)
    assert thin.alternatives[0].detail == (f"week strip: {GZ_WEEK} offers 9 of the 10 cards needed")


def test_a_nights_strip_serves_only_a_need_that_accepts_night_hours() -> None:
    # 50 hours of 1 card: more than a block, fewer than the nights' 56 hours.
    asks = week_asks([(150, 10)])
    asks[GZ_WEEK] = [(400, 10)]
    days = week_need(quantity=1, hours=50)
    nights = week_need(quantity=1, hours=50, nights=True)
    by_day = plan(days, week_listing(), asks, STANDARD)
    assert by_day.chosen is not None
    assert [a.symbols[0] for a in by_day.alternatives] == [GZ_WEEK]
    at_night = plan(nights, week_listing(), asks, STANDARD)
    assert at_night.chosen is not None
    # 1 x 56 x 150 = 8,400 fen for the nights, against 1 x 168 x 400 = 67,200 for the week.
    assert [(a.symbols[0], a.cost) for a in at_night.alternatives] == [
        (GZ_NIGHTS, 8_400),
        (GZ_WEEK, 67_200),
    ]
    assert at_night.explanation.startswith(f"nights strip {GZ_NIGHTS} (56 h): 8400 fen")


def test_a_long_need_no_strip_serves_gets_its_own_reason() -> None:
    # 200 hours in ten days from the Monday: the week is too short, and the month's hours are
    # not all inside the window.
    ten_days = W0 + 240 * HOUR_MS
    long_need = week_need(hours=200, deadline_ms=ten_days)
    result = plan(long_need, week_listing(), week_asks([(150, 10)]), STANDARD)
    assert (result.chosen, result.alternatives, result.reason) == (
        None,
        (),
        NO_STRIP_SERVES_LONG_NEED,
    )
    assert result.explanation == (
        f"a need of 200 h is longer than a block's 24 h, and no listed strip of an accepted "
        f"family lies between {W0} and {ten_days} with at least 200 h: a week or a month "
        "strip (a nights strip serves only a need that accepts night hours)"
    )
    # The month serves when the window holds all of December.
    month = week_need(
        hours=200,
        earliest_start_ms=to_utc_ms(datetime(2027, 12, 1, tzinfo=CHINA_STANDARD_TIME)),
        deadline_ms=to_utc_ms(datetime(2028, 1, 1, tzinfo=CHINA_STANDARD_TIME)),
    )
    served = plan(month, week_listing(), week_asks([(150, 10)]), STANDARD)
    assert served.chosen is not None
    # December: 744 hours x 2 cards x 150 fen.
    assert (served.chosen.symbols, served.chosen.hours, served.chosen.cost) == (
        (GZ_MONTH,),
        744,
        223_200,
    )
