"""Unit tests of the contract catalogue and the symbol grammar."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    DAY_MS,
    HOUR_MS,
    REGIONS,
    RESOURCE_CLASSES,
    UNIT_CARD_HOUR,
    UNIT_CORE_HOUR,
    UNIT_MILLION_TOKENS,
    Catalogue,
    ListingRule,
    MarketRules,
    SymbolError,
    cst_day_start_ms,
    default_catalogue,
    family_of,
    parse_symbol,
    to_utc_ms,
)

DEFAULT_SYMBOLS = [
    "A100-80G.NMG.20271201T00",
    "A100-80G.NMG.20271201T01",
    "CPU.GZ.20271201T00",
    "CPU.GZ.20271201T01",
    "H100-80G.GZ.20271201T00",
    "H100-80G.GZ.20271201T01",
    "H100-80G.YRD.20271201T00",
    "H100-80G.YRD.20271201T01",
]


def _symbol(cls: str, region: str, day: date, hour: int) -> str:
    # Explicit zero padding: strftime's %Y does not pad years below 1000 on glibc.
    return f"{cls}.{region}.{day.year:04d}{day.month:02d}{day.day:02d}T{hour:02d}"


def test_parse_symbol_reads_every_part() -> None:
    spec = parse_symbol("H100-80G.GZ.20271201T02")

    assert spec.resource_class is RESOURCE_CLASSES["H100-80G"]
    assert spec.region == "GZ"
    assert spec.delivery_start == datetime(2027, 12, 1, 2, tzinfo=CHINA_STANDARD_TIME)
    assert spec.delivery_start.utcoffset() == timedelta(hours=8)
    assert spec.symbol == "H100-80G.GZ.20271201T02"
    assert spec.family == "H100-80G.GZ"
    assert spec.tick_size == 10
    assert spec.unit == UNIT_CARD_HOUR


@pytest.mark.parametrize(
    ("symbol", "family", "tick_size", "unit"),
    [
        ("CPU.NX.20270101T23", "CPU.NX", 1, UNIT_CORE_HOUR),
        ("L40S.CY.20261231T00", "L40S.CY", 5, UNIT_CARD_HOUR),
        ("RTX4090.GBA.20260615T12", "RTX4090.GBA", 5, UNIT_CARD_HOUR),
        ("910B.JJJ.20260228T07", "910B.JJJ", 10, UNIT_CARD_HOUR),
    ],
)
def test_family_tick_size_and_unit_come_from_the_class(
    symbol: str, family: str, tick_size: int, unit: str
) -> None:
    spec = parse_symbol(symbol)

    assert spec.family == family
    assert family_of(symbol) == family
    assert spec.tick_size == tick_size
    assert spec.unit == unit


@pytest.mark.parametrize("symbol", DEFAULT_SYMBOLS)
def test_every_default_contract_round_trips(symbol: str) -> None:
    spec = default_catalogue().get(symbol)

    assert spec is not None
    assert parse_symbol(symbol).symbol == symbol
    assert parse_symbol(symbol) == spec


@given(
    cls=st.sampled_from(sorted(RESOURCE_CLASSES)),
    region=st.sampled_from(sorted(REGIONS)),
    day=st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)),
    hour=st.integers(min_value=0, max_value=23),
)
def test_any_valid_symbol_round_trips(cls: str, region: str, day: date, hour: int) -> None:
    symbol = _symbol(cls, region, day, hour)

    spec = parse_symbol(symbol)

    assert spec.symbol == symbol
    assert spec.family == f"{cls}.{region}"
    assert spec.tick_size == RESOURCE_CLASSES[cls].tick_size
    assert spec.unit == RESOURCE_CLASSES[cls].unit
    assert spec.delivery_start == datetime(
        day.year, day.month, day.day, hour, tzinfo=CHINA_STANDARD_TIME
    )


def test_symbol_with_a_year_below_1000_round_trips() -> None:
    assert parse_symbol("CPU.GZ.09991201T00").symbol == "CPU.GZ.09991201T00"


@pytest.mark.parametrize(
    ("symbol", "message"),
    [
        (
            "h100-80g.gz.20271201T02",
            "symbol 'h100-80g.gz.20271201T02' does not match CLASS.REGION.YYYYMMDDTHH (an hour)"
            " nor a term's "
            "CLASS.REGION.DYYYYMMDD (a day), .WYYYYMMDD (a week from a Monday), .NYYYYMMDD "
            "(its nights) or .MYYYYMM (a month)",
        ),
        (
            "H100-80G.GZ.2026120T02",
            "symbol 'H100-80G.GZ.2026120T02' does not match CLASS.REGION.YYYYMMDDTHH (an hour)"
            " nor a term's "
            "CLASS.REGION.DYYYYMMDD (a day), .WYYYYMMDD (a week from a Monday), .NYYYYMMDD "
            "(its nights) or .MYYYYMM (a month)",
        ),
        (
            "H100-80G.GZ.20271201",
            "symbol 'H100-80G.GZ.20271201' does not match CLASS.REGION.YYYYMMDDTHH (an hour)"
            " nor a term's "
            "CLASS.REGION.DYYYYMMDD (a day), .WYYYYMMDD (a week from a Monday), .NYYYYMMDD "
            "(its nights) or .MYYYYMM (a month)",
        ),
        (
            "B200.GZ.20271201T02",
            "unknown resource class 'B200' in symbol 'B200.GZ.20271201T02'",
        ),
        (
            "H100-80G.XJ.20271201T02",
            "unknown region 'XJ' in symbol 'H100-80G.XJ.20271201T02'",
        ),
        (
            "H100-80G.GZ.20261301T02",
            "invalid delivery day '20261301' in symbol 'H100-80G.GZ.20261301T02'",
        ),
        (
            "H100-80G.GZ.20260230T02",
            "invalid delivery day '20260230' in symbol 'H100-80G.GZ.20260230T02'",
        ),
        (
            "H100-80G.GZ.20271201T24",
            "invalid delivery hour 24 in symbol 'H100-80G.GZ.20271201T24'",
        ),
        (
            "H100-80G.GZ.W20271207",
            "a week starts on a Monday; 20271207 in 'H100-80G.GZ.W20271207' is not one",
        ),
        (
            "H100-80G.GZ.D20271201",
            "H100-80G (card-hour) is not sold for term D (every hour of one day (00:00-24:00 "
            "CST)); its terms are W, N, M",
        ),
        (
            "TOK-QWEN.YRD.N20271206",
            "TOK-QWEN (million-tokens) is not sold for term N (the night hours (00:00-08:00 CST) "
            "of each day of one week from Monday); its terms are D, W, M",
        ),
        (
            "H100-80G.GZ.M20271201",
            "term M takes a start YYYYMM, not '20271201', in 'H100-80G.GZ.M20271201'",
        ),
    ],
    ids=[
        "lowercase",
        "short-day",
        "no-hour",
        "unknown-class",
        "unknown-region",
        "month-13",
        "february-30",
        "hour-24",
        "week-not-monday",
        "card-day",
        "token-nights",
        "month-with-day",
    ],
)
def test_parse_symbol_says_what_is_wrong(symbol: str, message: str) -> None:
    with pytest.raises(SymbolError, match=f"^{re.escape(message)}$"):
        parse_symbol(symbol)


def test_symbol_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown region 'XJ'"):
        parse_symbol("CPU.XJ.20271201T00")


def test_to_utc_ms_of_a_china_standard_time_hour() -> None:
    # 02:00 CST on 1 December 2026 is 18:00 UTC on 30 November 2026 (`date -u -d ... +%s`).
    assert to_utc_ms(parse_symbol("H100-80G.GZ.20271201T02").delivery_start) == 1_827_597_600_000
    assert to_utc_ms(parse_symbol("H100-80G.GZ.20271201T00").delivery_start) == 1_827_590_400_000


def test_to_utc_ms_is_independent_of_the_offset_written() -> None:
    cst = datetime(1970, 1, 1, 8, tzinfo=CHINA_STANDARD_TIME)
    utc = datetime(1970, 1, 1, 0, 0, 0, 5000, tzinfo=UTC)

    assert to_utc_ms(cst) == 0
    assert to_utc_ms(utc) == 5


def test_default_catalogue_is_fixed() -> None:
    first, second = default_catalogue(), default_catalogue()

    assert first.symbols == DEFAULT_SYMBOLS
    assert second.symbols == DEFAULT_SYMBOLS
    assert [c.symbol for c in first] == [c.symbol for c in second]
    assert len(first) == 8


def test_catalogue_lookup() -> None:
    catalogue = default_catalogue()

    assert "CPU.GZ.20271201T01" in catalogue
    assert "CPU.GZ.20271201T02" not in catalogue
    assert 42 not in catalogue
    assert catalogue.get("CPU.GZ.20271201T02") is None
    cpu = catalogue.get("CPU.GZ.20271201T01")
    assert cpu is not None
    assert cpu.tick_size == 1
    assert cpu.unit == UNIT_CORE_HOUR


def test_catalogue_keeps_one_contract_per_symbol() -> None:
    spec = parse_symbol("H20.NX.20271201T05")

    catalogue = Catalogue([spec, parse_symbol("H20.NX.20271201T05")])

    assert len(catalogue) == 1
    assert catalogue.symbols == ["H20.NX.20271201T05"]


def test_every_card_class_has_an_interruptible_twin_with_its_unit_and_tick() -> None:
    firm_cards = [
        rc for rc in RESOURCE_CLASSES.values() if rc.unit == UNIT_CARD_HOUR and not rc.firm_class
    ]
    assert {rc.code for rc in firm_cards} == {
        "H100-80G",
        "A100-80G",
        "A800",
        "H20",
        "L40S",
        "RTX4090",
        "910B",
    }
    for firm in firm_cards:
        twin = RESOURCE_CLASSES[f"{firm.code}-INT"]
        assert twin.firm_class == firm.code
        assert (twin.unit, twin.tick_size) == (firm.unit, firm.tick_size)
    spec = parse_symbol("H100-80G-INT.GZ.20271201T02")
    assert spec.family == "H100-80G-INT.GZ"
    assert family_of(spec.symbol) == "H100-80G-INT.GZ"


@pytest.mark.parametrize("code", ["TOK-QWEN", "TOK-DEEPSEEK", "TOK-GLM"])
def test_token_contracts_are_sold_by_the_million_tokens(code: str) -> None:
    spec = parse_symbol(f"{code}.YRD.20271201T09")

    assert spec.unit == UNIT_MILLION_TOKENS
    assert spec.tick_size == 1
    assert spec.symbol == f"{code}.YRD.20271201T09"


# 10:00 CST on Thursday 26 November 2026.
NOW = to_utc_ms(datetime(2026, 11, 26, 10, tzinfo=CHINA_STANDARD_TIME))
HOUR = 3_600_000


def _rolling(days_ahead: int = 2, gate_minutes: int | None = 60) -> Catalogue:
    rules = MarketRules(gate_closure_ms=None if gate_minutes is None else gate_minutes * 60_000)
    return default_catalogue(rules, [ListingRule(("H100-80G.GZ", "TOK-QWEN.YRD"), days_ahead)])


@pytest.mark.parametrize(
    ("symbol", "message"),
    [
        ("H100-80G.GZ.20261126T12", None),
        ("H100-80G.GZ.20261128T23", None),
        ("TOK-QWEN.YRD.20261127T00", None),
        (
            "H100-80G.GZ.20261126T11",
            "contract 'H100-80G.GZ.20261126T11' is retired: its trading closed at "
            "2026-11-26T10:00:00+08:00",
        ),
        (
            "H100-80G.GZ.20261129T00",
            "contract 'H100-80G.GZ.20261129T00' is not yet listed: it lists at "
            "2026-11-27T00:00:00+08:00",
        ),
        ("H100-80G.YRD.20261127T00", "contract 'H100-80G.YRD.20261127T00' is not listed"),
        ("H100-80G.GZ.20261127T24", "contract 'H100-80G.GZ.20261127T24' is not listed"),
    ],
    ids=[
        "first-open-hour",
        "last-day",
        "tokens",
        "gate-closed",
        "beyond-horizon",
        "no-rule",
        "bad",
    ],
)
def test_a_rolled_contract_is_listed_from_its_horizon_until_its_gate_closes(
    symbol: str, message: str | None
) -> None:
    catalogue = _rolling()

    listed = catalogue.listed(symbol, NOW)

    if message is None:
        assert listed == parse_symbol(symbol)
    else:
        assert listed is None
        assert catalogue.why_not_listed(symbol, NOW) == message


def test_a_rolled_contract_lists_at_midnight_and_retires_at_its_gate() -> None:
    catalogue = _rolling(days_ahead=2)
    spec = parse_symbol("H100-80G.GZ.20261129T05")
    midnight = to_utc_ms(datetime(2026, 11, 27, tzinfo=CHINA_STANDARD_TIME))
    gate = to_utc_ms(datetime(2026, 11, 29, 4, tzinfo=CHINA_STANDARD_TIME))

    assert catalogue.lists_at(spec) == midnight
    assert catalogue.retires_at(spec) == gate
    assert catalogue.listed(spec.symbol, midnight - 1) is None
    assert catalogue.listed(spec.symbol, midnight) == spec
    assert catalogue.listed(spec.symbol, gate - 1) == spec
    assert catalogue.listed(spec.symbol, gate) is None


def test_without_a_gate_closure_a_rolled_contract_retires_at_delivery() -> None:
    catalogue = _rolling(gate_minutes=None)

    assert catalogue.listed("H100-80G.GZ.20261126T10", NOW) is None
    assert catalogue.listed("H100-80G.GZ.20261126T11", NOW) is not None


def test_rolled_at_lists_today_and_the_days_ahead_in_delivery_order() -> None:
    catalogue = _rolling(days_ahead=2)

    rolled = catalogue.rolled_at(NOW)

    # 12:00 to 23:00 today, then two whole days, for each of the two families.
    assert len(rolled) == 2 * (12 + 48)
    assert rolled[0].symbol == "H100-80G.GZ.20261126T12"
    assert rolled[1].symbol == "TOK-QWEN.YRD.20261126T12"
    assert rolled[-1].symbol == "TOK-QWEN.YRD.20261128T23"
    assert all(catalogue.listed(s.symbol, NOW) == s for s in rolled)
    starts = [s.delivery_start for s in rolled]
    assert starts == sorted(starts)


def test_days_ahead_zero_lists_only_what_is_left_of_today() -> None:
    rolled = _rolling(days_ahead=0).rolled_at(NOW)

    assert {s.delivery_start.day for s in rolled} == {26}
    assert len(rolled) == 2 * 12


def test_listed_at_includes_the_static_contracts() -> None:
    catalogue = _rolling()

    listed = [s.symbol for s in catalogue.listed_at(NOW)]

    assert set(DEFAULT_SYMBOLS) <= set(listed)
    assert listed == sorted(listed)
    assert len(listed) == len(DEFAULT_SYMBOLS) + 120
    assert catalogue.symbols == DEFAULT_SYMBOLS, "iteration stays the static contracts"


def test_get_knows_rolled_contracts_at_any_time() -> None:
    catalogue = _rolling()

    assert catalogue.get("H100-80G.GZ.20300101T00") == parse_symbol("H100-80G.GZ.20300101T00")
    assert "TOK-QWEN.YRD.20300101T00" in catalogue
    assert catalogue.get("H100-80G.YRD.20300101T00") is None
    assert catalogue.get("H100-80G.GZ.2030") is None
    assert catalogue.listed("CPU.GZ.20271201T00", 0) is not None, "static: always listed"


def test_subset_keeps_the_families_asked_for() -> None:
    catalogue = _rolling()

    subset = catalogue.subset(lambda family: family.startswith("H100-80G"))

    assert subset.rolled_families == ["H100-80G.GZ"]
    assert {s.family for s in subset} == {"H100-80G.GZ", "H100-80G.YRD"}
    assert subset.rules == catalogue.rules


@pytest.mark.parametrize(
    ("families", "days_ahead", "message"),
    [
        (("H100-80G",), 1, "family 'H100-80G' does not match CLASS.REGION"),
        (("B200.GZ",), 1, "unknown resource class 'B200' in family 'B200.GZ'"),
        (("CPU.XJ",), 1, "unknown region 'XJ' in family 'CPU.XJ'"),
        (("CPU.GZ",), -1, "days ahead must be from 0 to 31, not -1"),
        (("CPU.GZ",), 32, "days ahead must be from 0 to 31, not 32"),
    ],
)
def test_a_listing_rule_refuses_what_the_grammar_does_not_allow(
    families: tuple[str, ...], days_ahead: int, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ListingRule(families, days_ahead)


@given(
    cls=st.sampled_from(sorted(RESOURCE_CLASSES)),
    region=st.sampled_from(sorted(REGIONS)),
    at=st.integers(min_value=0, max_value=to_utc_ms(datetime(2100, 1, 1, tzinfo=UTC))),
    days_ahead=st.integers(min_value=0, max_value=3),
)
def test_rolled_at_agrees_with_listed(cls: str, region: str, at: int, days_ahead: int) -> None:
    family = f"{cls}.{region}"
    catalogue = Catalogue([], MarketRules(), [ListingRule((family,), days_ahead)])

    rolled = catalogue.rolled_at(at)

    # Every hour from the day before to the day after the horizon: exactly the rolled ones
    # are listed, and each of the others says why not.
    first = cst_day_start_ms(at) - 24 * HOUR
    around = [_symbol_at(family, first + h * HOUR) for h in range((days_ahead + 3) * 24)]
    listed = [s for s in around if catalogue.listed(s, at) is not None]
    assert listed == [spec.symbol for spec in rolled]
    for symbol in set(around) - set(listed):
        assert re.search(r"is (not yet listed|retired)", catalogue.why_not_listed(symbol, at))
    assert all(parse_symbol(spec.symbol) == spec for spec in rolled)


def _symbol_at(family: str, at_ms: int) -> str:
    moment = datetime.fromtimestamp(at_ms // 1000, CHINA_STANDARD_TIME)
    return f"{family}.{moment.year:04d}{moment.month:02d}{moment.day:02d}T{moment.hour:02d}"


def _cst_ms(year: int, month: int, day: int, hour: int = 0) -> int:
    return to_utc_ms(datetime(year, month, day, hour, tzinfo=CHINA_STANDARD_TIME))


@pytest.mark.parametrize(
    ("symbol", "hours", "first", "last"),
    [
        ("H100-80G.GZ.W20271206", 168, "H100-80G.GZ.20271206T00", "H100-80G.GZ.20271212T23"),
        ("H100-80G.GZ.N20271206", 56, "H100-80G.GZ.20271206T00", "H100-80G.GZ.20271212T07"),
        ("CPU.GZ.M202802", 29 * 24, "CPU.GZ.20280201T00", "CPU.GZ.20280229T23"),
        ("TOK-QWEN.YRD.D20271231", 24, "TOK-QWEN.YRD.20271231T00", "TOK-QWEN.YRD.20271231T23"),
        ("TOK-QWEN.YRD.M202712", 31 * 24, "TOK-QWEN.YRD.20271201T00", "TOK-QWEN.YRD.20271231T23"),
    ],
)
def test_a_term_covers_its_hours(symbol: str, hours: int, first: str, last: str) -> None:
    spec = parse_symbol(symbol)
    assert spec.symbol == symbol
    assert spec.is_term
    covered = [hour.symbol for hour in spec.hours()]
    assert (len(covered), covered[0], covered[-1]) == (hours, first, last)
    assert spec.delivery_end == parse_symbol(last).delivery_end
    assert spec.is_bundle == symbol.startswith("TOK-")
    assert spec.is_strip != spec.is_bundle


def test_term_contracts_list_only_where_a_rule_gives_them_a_horizon() -> None:
    rules = MarketRules(gate_closure_ms=HOUR_MS)
    hourly = Catalogue([], rules, [ListingRule(("H100-80G.GZ", "TOK-QWEN.YRD"), 30)])
    assert hourly.get("H100-80G.GZ.W20271206") is None
    assert hourly.get("TOK-QWEN.YRD.M202712") is None
    terms = Catalogue([], rules, [ListingRule(("H100-80G.GZ", "TOK-QWEN.YRD"), 30, 92)])
    assert terms.get("H100-80G.GZ.W20271206") is not None
    assert terms.get("H100-80G.CY.W20271206") is None

    week = parse_symbol("H100-80G.GZ.W20271206")
    # A strip trades from 92 days before its first day until its hours list (30 days before
    # it), when it cascades into them.
    assert terms.lists_at(week) == _cst_ms(2027, 12, 6) - 92 * DAY_MS
    assert terms.retires_at(week) == terms.cascades_at(week) == _cst_ms(2027, 12, 6) - 30 * DAY_MS
    assert terms.cascades_at(week) == terms.lists_at(week.hours()[0])
    # A bundle trades until its last hour's gate: a firm tops up or resells within the month.
    month = parse_symbol("TOK-QWEN.YRD.M202712")
    assert terms.retires_at(month) == _cst_ms(2028, 1, 1) - HOUR_MS
    # A day's bundle lists with the day's hours.
    day = parse_symbol("TOK-QWEN.YRD.D20271215")
    assert terms.lists_at(day) == _cst_ms(2027, 12, 15) - 30 * DAY_MS

    at = _cst_ms(2027, 11, 10, 9)
    listed = {spec.symbol for spec in terms.rolled_at(at) if spec.is_term}
    assert {"H100-80G.GZ.W20271213", "H100-80G.GZ.N20271213", "H100-80G.GZ.M202801"} <= listed
    assert {"TOK-QWEN.YRD.M202711", "TOK-QWEN.YRD.W20271108", "TOK-QWEN.YRD.D20271210"} <= listed
    # Cascaded already (their hours list), or beyond the horizon.
    assert not {"H100-80G.GZ.W20271206", "H100-80G.GZ.M202712", "H100-80G.GZ.W20280214"} & listed
    assert "TOK-QWEN.YRD.D20271211" not in listed
    for symbol in listed:
        spec = parse_symbol(symbol)
        assert terms.lists_at(spec) <= at < terms.retires_at(spec)
        assert terms.listed(symbol, at) == spec


def test_a_term_horizon_beyond_three_months_is_refused() -> None:
    with pytest.raises(ValueError, match="term days must be from 0 to 92, not 93"):
        ListingRule(("H100-80G.GZ",), 30, 93)
