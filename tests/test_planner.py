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
    INSUFFICIENT_DEPTH,
    NO_ACCEPTABLE_CONTRACT,
    NO_LISTED_HOURS_IN_WINDOW,
    NOT_A_CARD,
    OVER_MAX_TOTAL,
    REGION_NOT_ACCEPTED,
    STANDARD_CARD_HOURS,
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
    assert "next H100-80G.GZ" in result.explanation


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
    assert result.alternatives[0].detail.startswith("costs 7200 fen")
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
        ({"hours": 25}, "hours"),
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
        f"H100-80G.GZ from {sym('H100-80G.GZ', 0)} for 2 h: 8000 fen at the asks - 2000 voucher "
        "+ 0 fen region adder = 6000, the lowest of 2 feasible alternative(s); next H100-80G.YRD"
    )
