"""The state hash's canonical text is `json.dumps(..., sort_keys=True, separators=(",", ":"))`
to the byte, whichever encoder makes it: every stored checkpoint and release fixture relies on
it."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from matching.snapshot import canonical_json


def _definition(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


# Every character a text in the state may hold: control characters, DEL, past ASCII, past the
# basic plane, and surrogates left out (neither encoder takes them).
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_INTEGERS = st.integers(min_value=-(2**70), max_value=2**70)
_SCALARS = st.none() | st.booleans() | _INTEGERS | _TEXT
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(_TEXT, inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None)
@given(_VALUES)
def test_every_value_of_the_state_s_kinds_is_encoded_as_its_definition_says(value: Any) -> None:
    assert canonical_json(value) == _definition(value)


def test_the_texts_and_numbers_orjson_writes_otherwise_are_written_as_json_writes_them() -> None:
    for value in (
        {"a\x7fb": "DEL"},
        ["算力", "卡时"],
        {"é": 1},
        "\u2028",
        "😀",
        2**64,
        -(2**63) - 1,
        {"nested": [[2**100]]},
        {2: "keys that are numbers", 1: "json writes as text"},
        [1, {"b": 2, "a": 1}],
    ):
        assert canonical_json(value) == _definition(value), value


def test_a_kept_text_holds_no_more_memory_than_its_length() -> None:
    """An orderless book's text is kept between hashes, for every book of a long listing
    horizon: orjson's own bytes keep its 4 KiB buffer (the soak's memory per order went from
    4.8 to 17 KB when they did)."""
    book = {"symbol": "H100-80G.GZ.20271201T00", "bids": [], "asks": [], "trades": 0}
    tracemalloc.start()
    try:
        kept = [canonical_json(book) for _ in range(1_000)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < len(kept) * (len(kept[0]) + 512), f"{held / len(kept):.0f} B a text"
