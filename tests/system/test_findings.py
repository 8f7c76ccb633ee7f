"""Regression tests of the defects the whole-system model found (tests/system/machine.py),
each through the public API, each the model's shrunk reproduction made plain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_exchange, settings_for

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"


async def test_a_revoked_key_on_a_public_view_is_a_documented_401(tmp_path: Path) -> None:
    """The model revoked a programme administrator's key and read the catalogue with it: 401,
    which the OpenAPI document did not list for public views."""
    async with running_exchange(settings_for(tmp_path)) as exchange:
        operator = await exchange.operator()
        created = await operator.post("/v1/admin/keys", json={"account_id": "c", "role": "buyer"})
        assert created.status_code == 201, created.text
        revoked = await operator.delete(f"/v1/admin/keys/{created.json()['key_id']}")
        assert revoked.status_code == 200, revoked.text
        headers = {"Authorization": f"Bearer {created.json()['key']}"}
        document = (await exchange.anonymous.get("/openapi.json")).json()
        for path in ("/v1/contracts", f"/v1/contracts/{GZ0}/book", "/v1/stalls", "/v1/health"):
            answer = await exchange.anonymous.get(path, headers=headers)
            assert answer.status_code == 401, (path, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
            template = path.replace(GZ0, "{symbol}")
            assert {"401", "429"} <= set(document["paths"][template]["get"]["responses"]), path
