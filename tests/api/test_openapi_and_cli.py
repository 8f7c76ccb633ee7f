"""The OpenAPI document describes every endpoint with examples; `cx keys` manages keys."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.keys import KeyRing
from api.sql import SqlKeys
from cx.settings import Settings
from settlement.sql_store import open_event_store
from tests.e2e.harness import running_exchange, settings_for

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.mark.e2e
async def test_the_openapi_document_covers_every_endpoint_with_examples(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        document: dict[str, Any] = (await exchange.client.get("/openapi.json")).json()
    operations = [
        (method, path, spec)
        for path, item in document["paths"].items()
        for method, spec in item.items()
        if method in METHODS
    ]
    assert len(operations) == 73
    assert all(path.startswith("/v1/") for _, path, _ in operations)
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "http",
        "description": schemes["ApiKey"]["description"],
        "scheme": "bearer",
    }
    schemas = document["components"]["schemas"]
    for method, path, spec in operations:
        assert spec.get("summary"), (method, path)
        assert spec.get("tags"), (method, path)
        body = spec.get("requestBody")
        if body is not None:
            ref = body["content"]["application/json"]["schema"]
            names = [r["$ref"].rsplit("/", 1)[1] for r in ref.get("oneOf", [ref])]
            for name in names:
                assert schemas[name].get("examples"), (method, path, name)
        public = path.startswith(("/v1/contracts", "/v1/health", "/v1/performance"))
        if not public and (method, path) != ("get", "/v1/stalls"):
            assert "401" in spec["responses"] or path == "/v1/stream/sse", (method, path)
            assert "429" in spec["responses"], (method, path)
    for name in (
        "OrderAnswer",
        "Contract",
        "Book",
        "Fill",
        "AccountOut",
        "Stats",
        "NeedOut",
        "Delivery",
        "RequestAnswer",
        "ScheduledDeposit",
        "StallOut",
    ):
        assert schemas[name].get("examples"), name


def _cx(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CX_DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.run(
        [sys.executable, "-m", "cx.cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cx_keys_creates_lists_and_revokes_keys(tmp_path: Path) -> None:
    created = _cx(tmp_path, "create", "--account", "sme-1", "--role", "buyer", "--label", "ci")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("cx_")
    assert "\n" not in key
    assert "shown only now" in created.stderr

    listed = _cx(tmp_path, "list")
    key_id = key.split("_")[1]
    assert key_id in listed.stdout
    assert "sme-1" in listed.stdout
    # Created just now, shown in China Standard Time as the operator API shows keys.
    shown = re.search(r" (\d{4}-\d\d-\d\dT\d\d:\d\d\+08:00) ", listed.stdout)
    assert shown, listed.stdout
    created_at = datetime.fromisoformat(shown.group(1))
    assert abs(created_at - datetime.now(UTC)) < timedelta(minutes=2), listed.stdout
    assert key not in listed.stdout, "a listing never shows the key"

    conflict = _cx(tmp_path, "create", "--account", "sme-1", "--role", "provider")
    assert conflict.returncode == 1
    assert "revoke them" in conflict.stderr

    store = open_event_store(Settings(CX_DATA_DIR=tmp_path, DATABASE_URL=None).event_store_url())
    try:
        principal = await KeyRing(SqlKeys(store.engine)).verify(key)
        assert principal is not None
        assert principal.account_id == "sme-1"
        assert _cx(tmp_path, "revoke", key_id).returncode == 0
        assert await KeyRing(SqlKeys(store.engine)).verify(key) is None
        assert _cx(tmp_path, "revoke", "000000000000").returncode == 1
    finally:
        await store.close()
    revoked = _cx(tmp_path, "list", "--all").stdout
    assert re.search(r" 已吊销 revoked \d{4}-\d\d-\d\dT\d\d:\d\d\+08:00", revoked), revoked
