"""Unified social credit codes (统一社会信用代码, GB 32100-2015): the identity an enterprise
registers with, checked character by character and by its check character."""

from __future__ import annotations

CHARACTERS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The code's characters in order of their code value (0-30): digits and capitals without
I, O, Z, S and V."""
WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
"""The weight of each of the first 17 positions: 3^(i-1) mod 31."""
LENGTH = 18


def check_character(first_17: str) -> str:
    """The check character of the first 17 characters: 31 - (sum of value x weight mod 31),
    with 31 written as 0."""
    total = sum(CHARACTERS.index(c) * w for c, w in zip(first_17, WEIGHTS, strict=True))
    return CHARACTERS[(31 - total % 31) % 31]


def uscc_problem(code: str) -> str:
    """What is wrong with a unified social credit code ("" if it is valid)."""
    if len(code) != LENGTH:
        return f"a unified social credit code has {LENGTH} characters, {code!r} has {len(code)}"
    for position, character in enumerate(code, start=1):
        if character not in CHARACTERS:
            return (
                f"bad character {character!r} at position {position} of {code!r}: only 0-9 "
                "and A-Z without I, O, S, V, Z"
            )
    for position in range(3, 9):
        if not code[position - 1].isdigit():
            return (
                f"bad character {code[position - 1]!r} at position {position} of {code!r}: "
                "positions 3-8 are the administrative division code (digits)"
            )
    expected = check_character(code[:17])
    if code[17] != expected:
        return f"wrong check character {code[17]!r} in {code!r}: expected {expected!r}"
    return ""


def with_check_character(first_17: str) -> str:
    """The whole code of its first 17 characters."""
    return first_17 + check_character(first_17)
