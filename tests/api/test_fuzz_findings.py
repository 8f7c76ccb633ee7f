"""Regressions of what Schemathesis (tests/api/test_schemathesis.py) found in the API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from api.problems import PROBLEM
from tests.e2e.harness import running_exchange, settings_for

pytestmark = pytest.mark.e2e


async def test_fuzzing_findings_stay_fixed(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        buyer = await exchange.as_("fz-buyer")

        # The kill switch of an account with nothing open answered "pending" after 5 s: the
        # risk stage's refusal was never matched to the waiting request.
        began = time.monotonic()
        answer = await buyer.delete("/v1/orders")
        assert answer.status_code == 200
        assert answer.json() == {"account_id": "fz-buyer", "status": "requested", "symbols": []}
        assert time.monotonic() - began < 2

        # A body FastAPI cannot parse was a generic `http-error`, and undocumented.
        response = await buyer.post(
            "/v1/orders",
            content=b'{"symbol":"\xff\xfe"}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "/problems/malformed-body"

        # A position or time past a BIGINT was a 500 (the database's integer overflowed).
        operator = await exchange.operator()
        huge = str(2**64)
        for path, params in (
            ("/v1/admin/events", {"after": huge}),
            ("/v1/admin/streams/exchange", {"from_version": huge}),
            ("/v1/admin/history", {"since_ts": huge}),
            ("/v1/reports/trades", {"until_ts": huge}),
        ):
            response = await operator.get(path, params=params)
            assert response.status_code == 422, (path, response.text)
            assert response.json()["type"] == "/problems/invalid-request"

        document: dict[str, Any] = (await exchange.anonymous.get("/openapi.json")).json()
    # Errors were documented as application/json (FastAPI's 422 as HTTPValidationError); the
    # API answers problem+json.
    post = document["paths"]["/v1/orders"]["post"]
    for status in ("400", "401", "403", "413", "422", "429"):
        assert list(post["responses"][status]["content"]) == [PROBLEM], status
    book = document["paths"]["/v1/contracts/{symbol}/book"]["get"]
    schema = book["responses"]["422"]["content"][PROBLEM]["schema"]
    assert schema == {"$ref": "#/components/schemas/ProblemDetail"}
    # Public market data takes a key but needs none; private operations need one.
    assert book["security"] == [{}, {"ApiKey": []}]
    assert post["security"] == [{"ApiKey": []}]
