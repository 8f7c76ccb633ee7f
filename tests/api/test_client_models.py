"""The client's models mirror the API's: each is checked against the component schema of the
OpenAPI document it copies, so a field added, dropped, renamed or retyped on either side fails
here, naming the model and the field."""

from __future__ import annotations

import inspect
import types
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from cx_client import models
from pydantic import BaseModel

from tests.api.openapi_document import build_served_api

MIRRORS = {
    "Account": "AccountOut",
    "AmendAnswer": "AmendAnswer",
    "Alternative": "AlternativeOut",
    "BlockAnswer": "BlockAnswer",
    "Book": "Book",
    "CancelAllAnswer": "CancelAllAnswer",
    "CancelAnswer": "CancelAnswer",
    "Candle": "CandleOut",
    "Capacity": "CapacityOut",
    "Card": "CardOut",
    "Cash": "CashOut",
    "Contract": "Contract",
    "DayAheadAuction": "DayAheadAuctionOut",
    "DayAheadContract": "DayAheadContractOut",
    "DayAheadFill": "DayAheadFillOut",
    "DayAheadHour": "DayAheadHourOut",
    "DayAheadOrderResult": "DayAheadOrderResultOut",
    "DayAheadRegion": "DayAheadRegionOut",
    "DayAheadResults": "DayAheadResultsOut",
    "DayAheadSummary": "DayAheadSummaryOut",
    "DeadLetter": "DeadLetterOut",
    "Delivery": "Delivery",
    "DepositAnswer": "DepositAnswer",
    "Enterprise": "Enterprise",
    "Exclusion": "ExclusionOut",
    "ExclusiveGroupAnswer": "ExclusiveGroupAnswer",
    "Fill": "Fill",
    "GrantApplication": "GrantApplication",
    "IntradayAuctions": "IntradayAuctionsOut",
    "GroupAlternative": "GroupAlternativeOut",
    "Health": "Health",
    "KeyInfo": "KeyOut",
    "Me": "Me",
    "Need": "NeedOut",
    "NeedAlternative": "NeedAlternativeOut",
    "NeedGroup": "NeedGroupOut",
    "NeedOrder": "NeedOrderOut",
    "NeedRecall": "NeedRecallOut",
    "NewKey": "NewKeyOut",
    "Obligation": "Obligation",
    "Order": "OrderRow",
    "OrderAnswer": "OrderAnswer",
    "OrderResult": "OrderResult",
    "Performance": "PerformanceOut",
    "PipelineStatus": "PipelineStatusOut",
    "Plan": "PlanOut",
    "Position": "PositionOut",
    "RefusedAsk": "RefusedAsk",
    "ReportTrade": "ReportTrade",
    "RequestAnswer": "RequestAnswer",
    "ResultFill": "ResultFill",
    "ScheduledDeposit": "ScheduledDeposit",
    "SetAside": "SetAsideAnswer",
    "Stall": "StallOut",
    "StageProgress": "StageProgress",
    "StalledStage": "StalledStage",
    "Stats": "Stats",
    "StoredEvent": "StoredEventOut",
    "Trade": "PublicTrade",
}
"""Each client model and the component schema it mirrors."""

UNDOCUMENTED = {
    "Model": "the base of every model",
    "Invoice": "GET /v1/accounts/{id}/invoices is documented as a free-form object",
    "InvoiceLine": "part of an invoice, see Invoice",
    "InvoiceTotal": "part of an invoice, see Invoice",
    "Invoices": "GET /v1/accounts/{id}/invoices is documented as a free-form object",
    "ProgrammeReport": "GET /v1/programmes/{id}/report is documented without a schema",
    "CostSplit": "part of a statement, see Statement",
    "BundleDrawdown": "part of a statement, see Statement",
    "Statement": "GET /v1/statements is documented as a free-form object",
    "OrderStatement": "GET /v1/orders/{id}/statement is documented as a free-form object",
    "VatInvoice": "GET /v1/orders/{id}/invoice is documented without a schema",
}
"""Client models with no component schema to mirror, and why."""


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    components: dict[str, Any] = build_served_api().document["components"]["schemas"]
    return components


def _client_models() -> dict[str, type[BaseModel]]:
    return {
        name: value
        for name, value in vars(models).items()
        if inspect.isclass(value)
        and issubclass(value, BaseModel)
        and value.__module__ == models.__name__
    }


def test_every_client_model_mirrors_a_schema_or_says_why_not(schemas: dict[str, Any]) -> None:
    unaccounted = set(_client_models()) - set(MIRRORS) - set(UNDOCUMENTED)
    assert not unaccounted, f"say which schema these client models mirror: {sorted(unaccounted)}"
    stale = (set(MIRRORS) | set(UNDOCUMENTED)) - set(_client_models())
    assert not stale, f"no such client models: {sorted(stale)}"
    missing = {name for name in MIRRORS.values() if name not in schemas}
    assert not missing, f"no such schemas in the OpenAPI document: {sorted(missing)}"


@pytest.mark.parametrize("client_name", sorted(MIRRORS))
def test_the_client_model_matches_its_schema(client_name: str, schemas: dict[str, Any]) -> None:
    model = _client_models()[client_name]
    schema_name = MIRRORS[client_name]
    schema = schemas[schema_name]
    where = f"client model {client_name} (schema {schema_name})"
    properties: dict[str, Any] = schema.get("properties", {})
    fields = model.model_fields
    assert set(fields) == set(properties), (
        f"{where}: fields only in the client {sorted(set(fields) - set(properties))}, "
        f"only in the API {sorted(set(properties) - set(fields))}"
    )
    required = set(schema.get("required", []))
    problems = []
    for name, info in fields.items():
        if info.is_required() != (name in required):
            problems.append(
                f"{where}.{name}: the client "
                + ("requires it but the API may omit it" if info.is_required() else "")
                + ("" if info.is_required() else "has a default but the API always sends it")
            )
        client_type = _client_shape(info.annotation)
        api_type = _schema_shape(properties[name], schemas)
        if not _compatible(client_type, api_type):
            problems.append(
                f"{where}.{name}: the client reads {client_type}, the API sends {api_type}"
            )
    assert not problems, "\n".join(problems)


# A shape is a comparable description of a type: "integer", "string", "number", "boolean",
# "any", "object", ("enum", values), ("array", item), ("optional", inner) or ("model", schema).


def _client_shape(annotation: Any) -> Any:
    if annotation is Any:
        return "any"
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        (inner,) = members
        return ("optional", _client_shape(inner))
    if origin is Literal:
        return ("enum", frozenset(get_args(annotation)))
    if origin is list:
        (item,) = get_args(annotation)
        return ("array", _client_shape(item))
    if origin is dict:
        return "object"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return ("model", MIRRORS.get(annotation.__name__, annotation.__name__))
    simple = {int: "integer", str: "string", float: "number", bool: "boolean"}
    return simple[annotation]


def _schema_shape(schema: dict[str, Any], schemas: dict[str, Any]) -> Any:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        target = schemas[name]
        if "enum" in target:
            return ("enum", frozenset(target["enum"]))
        return ("model", name)
    if "anyOf" in schema:
        members = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(members) < len(schema["anyOf"]) and len(members) == 1:
            return ("optional", _schema_shape(members[0], schemas))
        return ("union", tuple(_schema_shape(s, schemas) for s in members))
    if "const" in schema:
        return ("enum", frozenset([schema["const"]]))
    if "enum" in schema:
        return ("enum", frozenset(schema["enum"]))
    kind = schema.get("type")
    if kind == "array":
        return ("array", _schema_shape(schema.get("items", {}), schemas))
    if kind is None:
        return "any"
    return kind


def _compatible(client: Any, api: Any) -> bool:
    """Whether the client reads everything the API may send as this type."""
    if client == api or client == "any":
        return True
    if client == "object":
        return api in ("object", "any") or (isinstance(api, tuple) and api[0] == "model")
    if client == "number":
        return api == "integer"
    if client == "string":
        # The client may read an enumeration's values as plain text.
        return isinstance(api, tuple) and api[0] == "enum"
    if isinstance(client, tuple) and isinstance(api, tuple) and client[0] == api[0]:
        return client[0] in ("optional", "array") and _compatible(client[1], api[1])
    return False
