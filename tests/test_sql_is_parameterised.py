"""No SQL is built from strings: every statement is SQLAlchemy Core with bound parameters.

Looks through the product's source for a call of `text`, `execute`, `exec_driver_sql` or
`executescript` whose statement is an f-string, a `%` or `+` expression or a `.format` call.
The only ones allowed format values that never come from a user (named below); anything else
fails the test, so a new one must be parameterised or argued for here.
tests/api/test_sql_injection.py attacks the running API and CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("exchange", "matching", "settlement", "api", "simulations", "client/cx_client")
SQL_CALLS = {"text", "execute", "exec_driver_sql", "executescript"}
# file -> the names it may format into SQL, and why they are safe.
ALLOWED = {
    # The advisory lock's key: a module constant.
    "settlement/sql_store.py": {"ADVISORY_LOCK_KEY"},
    # CREATE/DROP DATABASE of the scratch databases of benchmarks and tests, named from a
    # prefix the calling code fixes and uuid4().
    "settlement/scratch.py": {"name"},
}


def _formatted_names(node: ast.expr) -> set[str] | None:
    """The names a string-building expression puts into its text; None if it builds none."""
    if isinstance(node, ast.JoinedStr):
        return {ast.unparse(v.value) for v in node.values if isinstance(v, ast.FormattedValue)}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return {ast.unparse(node)}
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
    ):
        return {ast.unparse(node)}
    return None


def _sql_built_from_strings() -> list[tuple[str, int, set[str]]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name not in SQL_CALLS:
                    continue
                names = _formatted_names(node.args[0])
                if names is not None:
                    found.append((str(path.relative_to(ROOT)), node.lineno, names))
    return found


def test_no_sql_is_built_from_strings() -> None:
    found = _sql_built_from_strings()
    unexpected = [
        (path, line, names) for path, line, names in found if not names <= ALLOWED.get(path, set())
    ]
    assert unexpected == [], "SQL built from strings; bind parameters instead"
    # The search finds what it looks for (the allowed ones are there).
    assert {path for path, _, _ in found} == set(ALLOWED)


def test_the_search_catches_formatted_sql() -> None:
    statement = ast.parse('connection.execute(text(f"SELECT * FROM t WHERE a = {user}"))')
    call = statement.body[0].value  # type: ignore[attr-defined]
    inner = call.args[0]
    assert _formatted_names(inner.args[0]) == {"user"}
    assert _formatted_names(ast.parse('"a" + b', mode="eval").body) == {"'a' + b"}
    assert _formatted_names(ast.parse('"a = {}".format(b)', mode="eval").body) is not None
    assert _formatted_names(ast.parse('"SELECT 1"', mode="eval").body) is None
