"""docs/API.md's endpoint table lists exactly what the API serves: every operation of the OpenAPI
document (and the WebSocket) has a row, and every row names an operation the API has."""

from __future__ import annotations

import re
from pathlib import Path

from tests.api.openapi_document import build_served_api

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "API.md"
TABLE_HEADER = "| method and path | who | what |"
METHODS = {"get", "post", "put", "patch", "delete"}
WEBSOCKET = " (WebSocket)"


def _documented() -> set[tuple[str, str]]:
    """(METHOD, path) of every row of the endpoint table, `{...}` parameters as `{}`.

    A row may name several paths after one method (`GET /a`, `/b`); a WebSocket's row says
    so after its path, and is read as method WEBSOCKET."""
    lines = API_DOC.read_text().splitlines()
    start = lines.index(TABLE_HEADER) + 2
    found: set[tuple[str, str]] = set()
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        first_cell = line.split(" | ", 1)[0].removeprefix("| ")
        method = ""
        for code in re.findall(r"`([^`]+)`", first_cell):
            if " " in code:
                method, code = code.split(" ", 1)
            if WEBSOCKET in first_cell:
                method = "WEBSOCKET"
            found.add((method, _shape(code)))
    return found


def _shape(path: str) -> str:
    """A path without its query, each parameter (`{symbol}`, `{halt,resume}`) as `{}`."""
    return re.sub(r"\{[^}]*\}", "{}", path.split("?", 1)[0])


def test_the_endpoint_table_matches_what_the_api_serves() -> None:
    served = build_served_api()
    operations = {
        (method.upper(), _shape(path))
        for path, item in served.document["paths"].items()
        for method in item
        if method in METHODS
    }
    operations |= {("WEBSOCKET", _shape(path)) for path in served.websocket_paths}
    documented = _documented()

    assert len(documented) > 40, "the endpoint table was not found or not read"
    undocumented = sorted(operations - documented)
    assert not undocumented, f"served but not in docs/API.md's endpoint table: {undocumented}"
    unserved = sorted(documented - operations)
    assert not unserved, f"in docs/API.md's endpoint table but not served: {unserved}"
