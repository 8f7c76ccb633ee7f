"""Unit tests of the contract catalogue and the symbol grammar."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    REGIONS,
    RESOURCE_CLASSES,
    UNIT_CARD_HOUR,
    UNIT_CORE_HOUR,
    Catalogue,
    SymbolError,
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
            "symbol 'h100-80g.gz.20271201T02' does not match CLASS.REGION.YYYYMMDDTHH",
        ),
        (
            "H100-80G.GZ.2026120T02",
            "symbol 'H100-80G.GZ.2026120T02' does not match CLASS.REGION.YYYYMMDDTHH",
        ),
        (
            "H100-80G.GZ.20271201",
            "symbol 'H100-80G.GZ.20271201' does not match CLASS.REGION.YYYYMMDDTHH",
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
