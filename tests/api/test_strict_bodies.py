"""Every request body is strict about numbers and yes/no values, as orders are: an integer
sent as a string ("100") or a float (100.0), or a boolean sent as "true" or 1, is refused with
422, never read as the number it spells. Before, a withdrawal of `"amount": "100"` answered 201
and withdrew 1.00 元 while an order's `"price": "100"` was refused.

The walk starts from the OpenAPI document: for each operation's JSON body, every integer and
boolean field (nested in objects, arrays and unions too) gets a body holding just that field
with the wrong type, validated by the body field the route itself validates with (FastAPI reads
the body as Python, so a model's strictness is what decides). A field that takes the wrong type
has no type error at its place among the body's errors, and fails here naming it."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.app import create_app
from api.marketdata import MarketData
from cx.runtime import ExchangeRuntime
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

Path_ = tuple[str | int, ...]
STRICT_ERRORS = {"integer": "int_type", "boolean": "bool_type"}
WRONG_TYPES: dict[str, tuple[Any, ...]] = {"integer": ("100", 100.0), "boolean": ("true", 1)}


def _api_routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """Every API route with its full path, also inside included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif (included := getattr(route, "original_router", None)) is not None:
            context = getattr(route, "include_context", None)
            yield from _api_routes(
                included.routes, prefix + str(getattr(context, "prefix", "") or "")
            )


def _served() -> tuple[dict[str, Any], dict[tuple[str, str], APIRoute]]:
    """The app's OpenAPI document and its routes by (method, path)."""

    async def build(data_dir: Path) -> tuple[dict[str, Any], dict[tuple[str, str], APIRoute]]:
        runtime = await ExchangeRuntime.open(settings_for(data_dir))
        try:
            app = create_app(runtime, MarketData(runtime.log, runtime.topics, runtime.catalogue))
            routes = {
                (method.lower(), path): route
                for path, route in _api_routes(app.routes)
                for method in route.methods or ()
            }
            return app.openapi(), routes
        finally:
            await runtime.close()

    with tempfile.TemporaryDirectory() as data_dir:
        return asyncio.run(build(Path(data_dir)))


DOCUMENT, ROUTES = _served()


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = DOCUMENT["components"]["schemas"][name]
    return schema


def _fixed(schema: dict[str, Any]) -> tuple[bool, Any]:
    """Whether a property has one possible value (a union's tag, `kind`), and that value."""
    schema = _resolve(schema)
    if "const" in schema:
        return True, schema["const"]
    if len(schema.get("enum", ())) == 1:
        return True, schema["enum"][0]
    return False, None


Tags = dict[Path_, dict[str, Any]]
"""The one-valued properties (a union's tag, `kind`) of each object a leaf is inside."""


def _leaves(schema: dict[str, Any], path: Path_ = ()) -> Iterator[tuple[Path_, str, Tags]]:
    """Each integer or boolean field under `schema`: its path, its type and the tags of the
    objects around it (so the union branch it belongs to is the one validated)."""
    schema = _resolve(schema)
    for branch in (*schema.get("anyOf", ()), *schema.get("oneOf", ()), *schema.get("allOf", ())):
        yield from _leaves(branch, path)
    kind = schema.get("type")
    if kind in STRICT_ERRORS:
        yield path, kind, {}
    elif kind == "array":
        for index, item in enumerate(schema.get("prefixItems", ())):
            yield from _leaves(item, (*path, index))
        if isinstance(schema.get("items"), dict):
            yield from _leaves(schema["items"], (*path, 0))
    properties = schema.get("properties", {})
    tags = {}
    for name, prop in properties.items():
        one_valued, value = _fixed(prop)
        if one_valued:
            tags[name] = value
    for name, prop in properties.items():
        for leaf, leaf_kind, inner in _leaves(prop, (*path, name)):
            yield leaf, leaf_kind, {**inner, path: tags}


def _body(leaf: Path_, value: Any, tags: Tags) -> Any:
    """A body holding just `value` at `leaf`, in objects carrying their tags."""

    def build(at: Path_, rest: Path_) -> Any:
        if not rest:
            return value
        key, *more = rest
        inner = build((*at, key), tuple(more))
        if isinstance(key, int):
            return [inner] if key == 0 else [None] * key + [inner]
        return {**tags.get(at, {}), key: inner}

    return build((), leaf)


def _cases() -> Iterator[Any]:
    for path, methods in DOCUMENT["paths"].items():
        for method, operation in methods.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            seen: set[str] = set()
            for leaf, kind, tags in _leaves(content["application/json"]["schema"]):
                for wrong in WRONG_TYPES[kind]:
                    name = f"{method.upper()} {path} {'.'.join(map(str, leaf))}={wrong!r}"
                    if tags.get((), {}):
                        name += f" {tags[()]}"
                    if name not in seen:
                        seen.add(name)
                        yield pytest.param(method, path, leaf, kind, wrong, tags, id=name)


CASES = list(_cases())


def test_the_walk_finds_the_bodies_and_their_numbers() -> None:
    """The walk reaches every body the API takes and the fields the defect was in."""
    bodies = {
        (method, path)
        for path, methods in DOCUMENT["paths"].items()
        for method, operation in methods.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    }
    # Every route that reads a body documents it as JSON, so the walk misses none.
    assert bodies == {key for key, route in ROUTES.items() if route.body_field is not None}
    assert len(bodies) >= 29
    walked = {(case.values[0], case.values[1], case.values[2]) for case in CASES}
    for expected in (
        ("post", "/v1/accounts/{account_id}/withdrawals", ("amount",)),
        ("post", "/v1/accounts/{account_id}/deposits", ("amount",)),
        ("post", "/v1/orders", ("price",)),
        ("post", "/v1/accounts/{account_id}/capacity-deposits", ("recallable",)),
    ):
        assert expected in walked, expected


@pytest.mark.parametrize(("method", "path", "leaf", "kind", "wrong", "tags"), CASES)
def test_a_number_or_yes_no_of_the_wrong_type_is_refused(
    method: str,
    path: str,
    leaf: Path_,
    kind: str,
    wrong: Any,
    tags: Tags,
) -> None:
    route = ROUTES[(method, path)]
    assert route.body_field is not None
    _, errors = route.body_field.validate(_body(leaf, wrong, tags), loc=("body",))
    at_leaf = [e for e in errors if e["loc"][-1] == leaf[-1] and _within(leaf, e["loc"])]
    assert any(e["type"] == STRICT_ERRORS[kind] for e in at_leaf), (leaf, wrong, errors)


def _within(leaf: Path_, loc: tuple[Any, ...]) -> bool:
    """Whether the error's place is the leaf's: its keys in order (a union may add a tag)."""
    keys = iter(loc)
    return all(any(step == key for key in keys) for step in leaf)


@pytest.fixture
async def exchange(tmp_path: Path) -> Any:
    async with running_exchange(settings_for(tmp_path)) as running:
        yield running


@pytest.mark.e2e
async def test_a_withdrawal_of_an_amount_sent_as_a_string_is_refused_and_withdraws_nothing(
    exchange: RunningExchange,
) -> None:
    buyer: httpx.AsyncClient = await exchange.as_("b")
    deposit = {"kind": "cash", "amount": 10_000}
    assert (await buyer.post("/v1/accounts/b/deposits", json=deposit)).status_code == 201
    for body in (
        {"kind": "cash", "amount": "100"},
        {"kind": "cash", "amount": 100.0},
    ):
        refused = await buyer.post("/v1/accounts/b/withdrawals", json=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["type"] == "/problems/invalid-request"
        assert refused.json()["errors"] == [
            {"field": "amount", "message": "Input should be a valid integer"}
        ]
    string_deposit = {"kind": "cash", "amount": "100"}
    refused = await buyer.post("/v1/accounts/b/deposits", json=string_deposit)
    assert refused.status_code == 422, refused.text
    await settle(exchange.runtime)
    account = (await buyer.get("/v1/accounts/b")).json()
    assert account["cash"] == {"available": 10_000, "held": 0}
