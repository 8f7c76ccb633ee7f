"""The API as served: its OpenAPI document and WebSocket paths, from the app without serving it."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute

from api.app import create_app
from api.marketdata import MarketData
from cx.runtime import ExchangeRuntime
from tests.e2e.harness import settings_for


@dataclass(frozen=True)
class ServedApi:
    """What the app serves: the document at /openapi.json and the WebSocket paths it omits."""

    document: dict[str, Any]
    websocket_paths: frozenset[str]


def build_served_api() -> ServedApi:
    """The app of an embedded exchange that runs no stage (what it serves depends on its
    routes only)."""

    async def build(data_dir: Path) -> ServedApi:
        runtime = await ExchangeRuntime.open(settings_for(data_dir))
        try:
            app = create_app(runtime, MarketData(runtime.log, runtime.topics, runtime.catalogue))
            sockets = frozenset(_websocket_paths(app.routes))
            return ServedApi(app.openapi(), sockets)
        finally:
            await runtime.close()

    with tempfile.TemporaryDirectory() as data_dir:
        return asyncio.run(build(Path(data_dir)))


def _websocket_paths(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[str]:
    """The WebSocket paths among `routes`, also inside included routers (FastAPI keeps an
    included router as one route that wraps the router's own, with the prefix it was given)."""
    for route in routes:
        if isinstance(route, WebSocketRoute):
            yield prefix + route.path
        elif (included := getattr(route, "original_router", None)) is not None:
            context = getattr(route, "include_context", None)
            yield from _websocket_paths(
                included.routes, prefix + str(getattr(context, "prefix", "") or "")
            )
