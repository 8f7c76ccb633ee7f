"""Every reason the exchange refuses or ends an order with has words a person reads, Chinese
first: on the supermarket page (its i18n files) and in the API's problem titles. A reason
added without them fails here, naming it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from api.problems import problem_title
from exchange.domain.messages import RejectReason
from matching.outputs import CancelReason

WORDS = Path(__file__).resolve().parents[2] / "api" / "web" / "i18n"
CHINESE = re.compile(r"[\u4e00-\u9fff]")


def _section(language: str, section: str) -> dict[str, str]:
    words: dict[str, str] = json.loads((WORDS / f"{language}.json").read_text())[section]
    return words


@pytest.mark.parametrize("reason", list(RejectReason), ids=str)
def test_a_reject_reason_has_chinese_and_english_words(reason: RejectReason) -> None:
    chinese = _section("zh-CN", "problem").get(reason.value, "")
    english = _section("en", "problem").get(reason.value, "")
    assert CHINESE.search(chinese), f"zh-CN.json problem.{reason.value}: {chinese!r}"
    assert english, f"en.json problem.{reason.value}"
    assert not CHINESE.search(english), f"en.json problem.{reason.value}: {english!r}"
    title = problem_title(reason.value)
    assert title == f"{chinese} {english}"
    assert CHINESE.match(title), title


@pytest.mark.parametrize("reason", list(CancelReason), ids=str)
def test_a_reason_an_order_ends_with_has_chinese_and_english_words(reason: CancelReason) -> None:
    chinese = _section("zh-CN", "cancel-reason").get(reason.value, "")
    english = _section("en", "cancel-reason").get(reason.value, "")
    assert CHINESE.search(chinese), f"zh-CN.json cancel-reason.{reason.value}: {chinese!r}"
    assert english, f"en.json cancel-reason.{reason.value}"
    assert not CHINESE.search(english), f"en.json cancel-reason.{reason.value}: {english!r}"


@pytest.mark.parametrize(
    "code",
    [
        "unknown_need",
        "need_not_standing",
        "unexpected-outcome",
        "unknown-account",
        "application_rejected",
    ],
)
def test_the_api_s_own_problems_are_titled_chinese_first(code: str) -> None:
    chinese = _section("zh-CN", "problem").get(code, "")
    english = _section("en", "problem").get(code, "")
    assert CHINESE.search(chinese), f"zh-CN.json problem.{code}: {chinese!r}"
    assert english, f"en.json problem.{code}"
    assert not CHINESE.search(english), f"en.json problem.{code}: {english!r}"
    assert problem_title(code) == f"{chinese} {english}"


def test_a_code_the_page_does_not_word_is_titled_by_its_code() -> None:
    assert problem_title("idempotency-key-reused") == "idempotency key reused"
