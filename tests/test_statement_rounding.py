"""How statements and invoices round: cost shares in basis points that always sum to 10,000,
and VAT taken out of tax-inclusive totals so amount and tax add up to the fen."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from settlement.statements import month_bounds, shares_bps, tax_of, yuan_in_capitals


@given(st.lists(st.integers(min_value=0, max_value=10**15), min_size=3, max_size=3))
def test_shares_sum_to_ten_thousand_and_each_is_within_a_basis_point(parts: list[int]) -> None:
    named = dict(zip(("government", "platform", "firm"), parts, strict=True))
    shares = shares_bps(named)
    total = sum(parts)
    if total == 0:
        assert shares is None
        return
    assert shares is not None
    assert sum(shares.values()) == 10_000
    for name, amount in named.items():
        assert amount * 10_000 // total <= shares[name] <= amount * 10_000 // total + 1


def test_the_leftover_basis_point_goes_to_the_largest_remainder_then_in_order() -> None:
    assert shares_bps({"government": 1_350, "platform": 5, "firm": 3_151}) == {
        "government": 2_996, "platform": 11, "firm": 6_993,
    }  # fmt: skip
    # Three equal thirds: 3,333 each and one left over, to the first named.
    assert shares_bps({"government": 1, "platform": 1, "firm": 1}) == {
        "government": 3_334, "platform": 3_333, "firm": 3_333,
    }  # fmt: skip


def test_a_negative_part_has_no_shares() -> None:
    assert shares_bps({"government": -450, "platform": 0, "firm": -1_050}) is None


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_amount_and_tax_add_up_and_the_amount_is_the_nearest_fen(total: int) -> None:
    amount, tax = tax_of(total)
    assert amount + tax == total
    # |amount - total / 1.06| <= 1/2, in integers: |106 amount - 100 total| <= 53.
    assert abs(106 * amount - 100 * total) <= 53
    assert tax_of(-total) == (-amount, -tax)


def test_worked_tax_figures() -> None:
    assert [tax_of(t) for t in (6_000, -1_500, 6, -5, 53)] == [
        (5_660, 340), (-1_415, -85), (6, 0), (-5, 0), (50, 3),
    ]  # fmt: skip


def test_a_month_is_its_calendar_month_in_china_standard_time() -> None:
    # 2027-12-01 00:00 CST is 2027-11-30 16:00 UTC; 2028-01-01 00:00 CST 2027-12-31 16:00.
    assert month_bounds("2027-12") == (1_827_590_400_000, 1_830_268_800_000)


@pytest.mark.parametrize(
    ("fen", "words"),
    [
        (679_398, "陆仟柒佰玖拾叁元玖角捌分"),
        (100_500, "壹仟零伍元整"),
        (10_005, "壹佰元零伍分"),
        (101_000, "壹仟零壹拾元整"),
        (1_500, "壹拾伍元整"),
        (10_000_500, "壹拾万零伍元整"),
        (10_000_000_500, "壹亿零伍元整"),
        (100_001_000_000, "壹拾亿零壹万元整"),
        (168_032, "壹仟陆佰捌拾元叁角贰分"),
        (50, "伍角"),
        (5, "伍分"),
        (0, "零元整"),
        (-12_345, "负壹佰贰拾叁元肆角伍分"),
    ],
)
def test_an_amount_in_capitals_follows_the_rules_for_invoices(fen: int, words: str) -> None:
    assert yuan_in_capitals(fen) == words
