"""Query parameters an endpoint does not take are refused, never silently ignored.

An ignored parameter widens the answer: `/v1/admin/history?since=...` (the parameter is
`since_ts`) used to export the whole history. So every HTTP endpoint answers `422
unknown-parameter` to a name it does not take, and `422 repeated-parameter` to a parameter given
twice that takes one value (the last would win). docs/API.md states the rule.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection

from api.problems import Problem

MAX_SQL_INT = 2**63 - 1
"""The largest position, version or time a query may name: a BIGINT (larger ones crashed)."""

_MANY = (list, tuple, set, frozenset)

Known = dict[int, tuple[frozenset[str], frozenset[str]]]
"""Per route of an app (by id: the app keeps its routes): the query parameters it takes, and
those of them that take several values."""


async def refuse_unknown_parameters(connection: HTTPConnection) -> None:
    """Refuse a request naming a query parameter its endpoint does not take, or repeating one
    that takes a single value."""
    route = connection.scope.get("route")
    if connection.scope["type"] != "http" or not isinstance(route, APIRoute):
        return
    names, many = _parameters_of(connection, route)
    given = connection.query_params
    unknown = sorted(set(given) - names)
    if unknown:
        accepted = ", ".join(sorted(names)) or "none"
        raise Problem(
            422,
            "unknown-parameter",
            f"{route.path} takes no query parameter {', '.join(map(repr, unknown))} "
            f"(it takes: {accepted})",
            parameters=unknown,
        )
    repeated = sorted(n for n in names - many if len(given.getlist(n)) > 1)
    if repeated:
        raise Problem(
            422,
            "repeated-parameter",
            f"query parameter {', '.join(map(repr, repeated))} takes one value but was given "
            "more than once",
            parameters=repeated,
        )


def _parameters_of(
    connection: HTTPConnection, route: APIRoute
) -> tuple[frozenset[str], frozenset[str]]:
    state = connection.app.state
    if not hasattr(state, "query_parameters"):
        state.query_parameters = {}
    known: Known = state.query_parameters
    found = known.get(id(route))
    if found is None:
        fields = list(_query_fields(route.dependant))
        found = known[id(route)] = (
            frozenset(field.alias for field in fields),
            frozenset(field.alias for field in fields if _takes_many(field.field_info.annotation)),
        )
    return found


def _query_fields(dependant: Dependant) -> Iterator[Any]:
    """The query parameters of an endpoint and of every dependency it has."""
    yield from dependant.query_params
    for dependency in dependant.dependencies:
        yield from _query_fields(dependency)


def _takes_many(annotation: Any) -> bool:
    """True for a list (or other collection) parameter, possibly optional."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_takes_many(arg) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _takes_many(typing.get_args(annotation)[0])
    return origin in _MANY or annotation in _MANY
