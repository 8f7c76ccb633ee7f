"""Every reason the exchange refuses or ends an order with has words a person reads, Chinese
first: on the supermarket page (its i18n files) and in the API's problem titles. A reason
added without them fails here, naming it."""

from __future__ import annotations

import ast
import functools
import json
import re
from pathlib import Path

import pytest

from api.problems import _HTTP_KINDS, problem_title
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
    assert problem_title("no-such-code_anywhere") == "no such code anywhere"


API = Path(__file__).resolve().parents[2] / "api"
_MAKERS = {"Problem", "problem_body", "problem_response"}
_ENUMS = {"RejectReason": RejectReason, "CancelReason": CancelReason}


def _code(node: ast.expr) -> str | None:
    """The problem code an argument names: a string, or `RejectReason.X.value` /
    `CancelReason.X.value`; None for a code only known at run time (an outcome's reason,
    which the enum tests above cover)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if (
        isinstance(node, ast.Attribute)
        and node.attr == "value"
        and isinstance(node.value, ast.Attribute)
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id in _ENUMS
    ):
        return str(_ENUMS[node.value.value.id][node.value.attr].value)
    return None


@functools.cache
def _api_problem_codes() -> dict[str, str]:
    """Every problem code the API's source names where it makes a problem (`Problem`,
    `problem_body`, `problem_response`, a literal `/problems/...` type, `_HTTP_KINDS`), with
    where: found by reading the source, so a code added anywhere is found without a list."""
    codes: dict[str, str] = {}
    for path in sorted(API.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = str(path.relative_to(API.parent))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else None
                if name is None and isinstance(node.func, ast.Attribute):
                    name = node.func.attr
                if name in _MAKERS and len(node.args) >= 2:
                    code = _code(node.args[1])
                    if code is not None:
                        codes.setdefault(code, f"{where}:{node.lineno}")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("/problems/")
                and node.value != "/problems/"
            ):
                codes.setdefault(node.value.removeprefix("/problems/"), where)
    codes.update(dict.fromkeys(_HTTP_KINDS.values(), "api/problems.py _HTTP_KINDS"))
    return codes


def test_the_source_is_read_for_codes() -> None:
    codes = _api_problem_codes()
    # A few the reading must find, of each way a code is named, or it finds nothing at all.
    for code in ("unknown-parameter", "stalled", "body-too-large", "not-found", "invalid_expiry"):
        assert code in codes, code


@pytest.mark.parametrize("code", sorted(_api_problem_codes()))
def test_every_problem_the_api_can_answer_is_titled_chinese_first(code: str) -> None:
    chinese = _section("zh-CN", "problem").get(code, "")
    english = _section("en", "problem").get(code, "")
    where = _api_problem_codes()[code]
    assert CHINESE.search(chinese), f"zh-CN.json problem.{code} ({where}): {chinese!r}"
    assert english, f"en.json problem.{code} ({where})"
    assert not CHINESE.search(english), f"en.json problem.{code} ({where}): {english!r}"
    assert problem_title(code) == f"{chinese} {english}"
    assert CHINESE.match(problem_title(code))
