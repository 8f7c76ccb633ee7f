"""Unified social credit codes: published codes pass, each kind of mistake is named."""

from __future__ import annotations

import pytest

from exchange.domain.uscc import WEIGHTS, check_character, uscc_problem

# Codes as published on business licences, with their check characters worked by hand.
# 91350100M000100Y4: values 9 1 3 5 0 1 0 0 21(M) 0 0 0 1 0 0 30(Y) 4, weighted
# 9 + 3 + 27 + 135 + 26 + 420 + 8 + 900 + 112 = 1640; 1640 mod 31 = 28; 31 - 28 = 3.
FUJIAN = "91350100M000100Y43"
# 91330100716105852: 9 + 3 + 27 + 81 + 0 + 26 + 0 + 0 + 140 + 29 + 150 + 13 + 0 + 120
# + 80 + 150 + 56 = 884; 884 mod 31 = 16; 31 - 16 = 15, written F.
HANGZHOU = "91330100716105852F"


def test_weights_are_powers_of_three_mod_31() -> None:
    assert tuple(3**i % 31 for i in range(17)) == WEIGHTS


@pytest.mark.parametrize("code", [FUJIAN, HANGZHOU])
def test_published_codes_are_valid(code: str) -> None:
    assert uscc_problem(code) == ""


def test_check_characters_worked_by_hand() -> None:
    assert check_character(FUJIAN[:17]) == "3"
    assert check_character(HANGZHOU[:17]) == "F"


def test_a_sum_divisible_by_31_checks_with_0() -> None:
    # 31 - 0 = 31, which the standard writes as 0: 3 at position 1 (weight 1) and 1 at
    # position 17 (weight 28) sum to 31.
    first = "30000000000000001"
    assert check_character(first) == "0"
    assert uscc_problem(first + "0") == ""


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        (FUJIAN[:17], "has 18 characters, '91350100M000100Y4' has 17"),
        (FUJIAN + "0", "has 19"),
        ("91350100M0001I0Y43", "bad character 'I' at position 14"),
        ("91350100M0001O0Y43", "bad character 'O' at position 14"),
        ("S1350100M000100Y43", "bad character 'S' at position 1"),
        ("913501V0M000100Y43", "bad character 'V' at position 7"),
        ("91350100M000100Y4z", "bad character 'z' at position 18"),
        ("9135A100M000100Y43", "bad character 'A' at position 5 of '9135A100M000100Y43': "
         "positions 3-8 are the administrative division code"),
        ("91350100M000100Y44", "wrong check character '4' in '91350100M000100Y44': "
         "expected '3'"),
        ("91330100716105852E", "expected 'F'"),
    ],
)  # fmt: skip
def test_each_mistake_is_named(code: str, problem: str) -> None:
    assert problem in uscc_problem(code)
