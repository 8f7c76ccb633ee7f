"""Unit tests of the API's pure parts: the standard card-hour, budgets, ids, local books."""

from __future__ import annotations

from fractions import Fraction

import pytest
from cx_client.stream import LocalBook

from api.idempotency import derived_id, fingerprint
from api.ratelimit import RateLimiter, retry_after_header
from exchange.domain.catalogue import RESOURCE_CLASSES
from exchange.domain.performance import STANDARD, decimal_text, parse_table


def test_the_base_card_is_one_standard_card_hour_and_every_card_has_a_source() -> None:
    assert STANDARD.base == "H100-80G"
    assert STANDARD.factor("H100-80G") == 1
    for card in STANDARD.cards.values():
        assert card.source
        assert card.url.startswith("https://")
        assert 0 < card.factor <= 1
    # Every firm card class of the catalogue has a published figure; core-hours and tokens are
    # not card-hours.
    card_classes = [rc for rc in RESOURCE_CLASSES.values() if rc.unit == "card-hour"]
    assert {rc.code for rc in card_classes if rc.firm_class is None} == set(STANDARD.cards)
    # An interruptible twin is an hour of the same card: the same factor as its firm class.
    for rc in card_classes:
        assert STANDARD.factor(rc.code) == STANDARD.factor(rc.firm_class or rc.code) is not None
    assert STANDARD.factor("A100-80G-INT") == STANDARD.factor("A100-80G")
    assert STANDARD.price_per_standard(1100, "A100-80G-INT") == 3488
    for not_a_card in ("CPU", "TOK-QWEN", "TOK-DEEPSEEK", "TOK-GLM"):
        assert STANDARD.factor(not_a_card) is None
        assert STANDARD.price_per_standard(12, not_a_card) is None


def test_prices_per_standard_card_hour_are_exact_integer_fen() -> None:
    # A100: 312 / 989.4 of an H100, so 11.00 CNY a card-hour is 34.88 a standard card-hour.
    assert STANDARD.factor("A100-80G") == Fraction(312) / Fraction("989.4")
    assert STANDARD.price_per_standard(1100, "A100-80G") == 3488
    assert STANDARD.price_per_standard(1800, "H100-80G") == 1800
    assert decimal_text(STANDARD.factor("A100-80G") or Fraction(0)) == "0.3153"


def test_a_table_without_its_base_card_is_refused() -> None:
    text = '{"base": "X", "metric": "m", "about": "a", "cards": []}'
    with pytest.raises(ValueError, match="base card"):
        parse_table(text)


def test_a_budget_allows_a_burst_then_the_average_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(3)] == [None, None, None]
    wait = limiter.acquire("k")
    assert wait == pytest.approx(0.5)
    assert retry_after_header(wait or 0) == "1"
    assert limiter.acquire("other") is None, "budgets are per client"
    now[0] = 0.5
    assert limiter.acquire("k") is None
    assert limiter.acquire("k") == pytest.approx(0.5)
    now[0] = 100.0
    assert [limiter.acquire("k") for _ in range(3)] == [None, None, None]
    assert limiter.acquire("k") is not None, "a refilled bucket holds at most the burst"


def test_derived_ids_are_stable_per_account_and_name() -> None:
    first = derived_id("order", "buyer-1", "my-1")
    assert first == derived_id("order", "buyer-1", "my-1")
    assert first != derived_id("order", "buyer-2", "my-1")
    assert first != derived_id("deposit", "buyer-1", "my-1")
    assert first.startswith("o-")
    assert len(first) == 42
    assert fingerprint("POST", "/v1/orders", {"a": 1, "b": 2}) == fingerprint(
        "POST", "/v1/orders", {"b": 2, "a": 1}
    )


def test_a_local_book_applies_increments_in_sequence_and_detects_a_gap() -> None:
    book = LocalBook("S")
    assert book.apply_increment({"seq": 1, "bids": [[100, 1]], "asks": []}), "ignored: no snapshot"
    assert book.bids == {}
    book.apply_snapshot({"seq": 4, "bids": [[100, 2]], "asks": [[110, 1]]})
    assert book.apply_increment({"seq": 5, "bids": [[100, 0], [99, 3]], "asks": []})
    assert book.best_bid() == (99, 3)
    assert book.apply_increment({"seq": 5, "bids": [[98, 1]], "asks": []}), "a repeat is ignored"
    assert book.bids == {99: 3}
    assert not book.apply_increment({"seq": 7, "bids": [], "asks": []}), "6 is missing"
    assert book.seq is None
    book.apply_snapshot({"seq": 7, "bids": [], "asks": [[105, 2]]})
    assert book.depth() == {"bids": [], "asks": [[105, 2]]}
