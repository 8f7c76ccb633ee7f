"""The API's OpenAPI document, built from the app without serving it."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from api.app import create_app
from api.marketdata import MarketData
from cx.runtime import ExchangeRuntime
from tests.e2e.harness import settings_for


def build_openapi_document() -> dict[str, Any]:
    """The document the app serves at /openapi.json, from an embedded exchange that runs no
    stage (the document depends on the routes only)."""

    async def build(data_dir: Path) -> dict[str, Any]:
        runtime = await ExchangeRuntime.open(settings_for(data_dir))
        try:
            market = MarketData(runtime.log, runtime.topics, runtime.catalogue)
            return create_app(runtime, market).openapi()
        finally:
            await runtime.close()

    with tempfile.TemporaryDirectory() as data_dir:
        return asyncio.run(build(Path(data_dir)))
