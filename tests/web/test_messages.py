"""The page's words come from its message catalogues (api/web/i18n): both languages have the
same messages, every message the code names exists, and no Chinese text sits in the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

WEB = Path(__file__).resolve().parents[2] / "api" / "web"
CODE = [WEB / "index.html", WEB / "app.js", *sorted((WEB / "views").glob("*.js"))]
CHINESE = re.compile(r"[\u4e00-\u9fff]")


def _keys(messages: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, value in messages.items():
        keys |= _keys(value, f"{prefix}{name}.") if isinstance(value, dict) else {prefix + name}
    return keys


def _catalogue(language: str) -> set[str]:
    return _keys(json.loads((WEB / "i18n" / f"{language}.json").read_text()))


def test_both_languages_have_the_same_messages() -> None:
    chinese, english = _catalogue("zh-CN"), _catalogue("en")
    assert chinese == english, chinese ^ english


def test_every_message_the_code_names_is_in_the_catalogue() -> None:
    known = _catalogue("zh-CN")
    named = set()
    for path in CODE:
        text = path.read_text()
        named |= set(re.findall(r"""t\(["']([a-z-]+\.[a-zA-Z0-9-]+)["']""", text))
        named |= set(re.findall(r'data-i18n(?:-placeholder|-label)?="([^"]+)"', text))
        named |= set(re.findall(r"""\["([a-z-]+\.[a-z0-9-]+)", "[a-z-]+\.""", text))
    named = {key for key in named if not key.endswith("-")}  # a prefix, completed at run time
    assert len(named) > 100, "the patterns find the messages the code names"
    assert named - known == set()


def test_no_chinese_text_is_written_in_the_code() -> None:
    for path in CODE:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("//", 1)[0] if path.suffix == ".js" else line
            assert not CHINESE.search(code), f"{path.name}:{number}: {line.strip()}"
