"""The HTTP and WebSocket API (FastAPI), versioned under /v1, and the supermarket page at /.

Commands are validated here for a fast, specific answer, appended to the commands topic, and
the API waits briefly for the exchange's decision so a client learns whether its order was
accepted. The risk stage validates everything again: any Kafka client may send commands.
Errors are RFC 9457 problem details (application/problem+json). docs/API.md describes keys,
roles, idempotency, rate limits and the streams.

This module only assembles the app: its state (`api.deps.ApiState`: the services and the
database behind the ports of `api.ports`), middleware, problem handlers and the routers, in
the order the OpenAPI document lists them. docs/DESIGN.md says where each concern lives.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from api import bank
from api.auth import Gate, document_optional_keys
from api.deps import ApiState
from api.idempotency import Idempotent
from api.keys import KeyRing
from api.marketdata import MarketData
from api.needs import NeedService
from api.parameters import refuse_unknown_parameters
from api.ports import Runtime
from api.problems import (
    BodyLimit,
    RefuseDuplicateKeys,
    RefuseNul,
    amend_openapi,
    document_problems,
    install_handlers,
)
from api.ratelimit import RateLimiter
from api.routes import (
    accounts,
    dayahead,
    health,
    market,
    needs,
    operator,
    orders,
    reports,
    stalls,
    statements,
    streams,
    web,
)
from api.services import Commands, PipelineHealth
from api.sql import ShardedLedger, SqlKeys, SqlLedger, SqlNeeds, SqlRequests, SqlStalls
from api.streams import KeyWatch
from settlement.pipeline_status import LogOffsets, StatusMonitor

TAGS = [
    {"name": "market data", "description": "Public: no key needed."},
    {"name": "orders", "description": "A participant's own orders (provider and buyer keys)."},
    {"name": "accounts", "description": "Balances, deposits, fills and delivery obligations."},
    {"name": "streams", "description": "WebSocket and Server-Sent Events; see docs/API.md."},
    {
        "name": "needs",
        "description": "State a need; the exchange places the cheapest fitting block (buyer keys).",
    },
    {
        "name": "day-ahead auction",
        "description": "Exclusive groups, a day's auction and the account's results in it.",
    },
    {"name": "operator", "description": "Keys and the event history (operator keys)."},
    {"name": "reports", "description": "Trade reports (operator and programme_admin keys)."},
    {"name": "stalls", "description": "What providers offer, in the standard specification."},
]

ROUTERS = (
    streams.websockets,
    health.router,
    market.router,
    accounts.identity,
    orders.router,
    statements.router,
    accounts.router,
    needs.router,
    dayahead.router,
    bank.router,
    operator.router,
    reports.router,
    streams.router,
    stalls.router,
    web.router,
)
"""Every router, in the order of the paths in the OpenAPI document."""


def create_app(runtime: Runtime, market: MarketData) -> FastAPI:
    """The API of one running exchange."""
    settings = runtime.settings
    app = FastAPI(
        title="Compute exchange",
        version="1",
        description=(
            "Standardized compute contracts (card-hours, core-hours) traded on a continuous "
            "limit order book. Prices and money are integer fen (0.01 CNY); quantities are "
            "integer units. Authenticate with `Authorization: Bearer cx_...` (an API key); "
            "public market data needs none. Errors are RFC 9457 problem details."
        ),
        openapi_tags=TAGS,
        dependencies=[Depends(refuse_unknown_parameters)],
    )
    install_handlers(app)
    amend_openapi(app, document_problems, document_optional_keys)
    app.add_middleware(RefuseDuplicateKeys)
    app.add_middleware(RefuseNul)
    app.add_middleware(BodyLimit)  # outermost: RefuseNul reads at most MAX_BODY_BYTES
    # The one place the API hands the engine out: to the SQL implementations of its ports.
    engine = runtime.store.engine
    keys = SqlKeys(engine)
    ledger = (
        SqlLedger(engine)
        if len(runtime.shards) == 1
        else ShardedLedger([shard.engine for shard in runtime.shards])
    )
    keyring = KeyRing(keys, settings.key_cache_seconds, settings.key_outage_seconds)
    commands = Commands(runtime, market)
    need_service = NeedService(ledger, SqlNeeds(engine), runtime.catalogue, market, commands)
    monitor = StatusMonitor(
        LogOffsets(runtime.log),
        runtime.topics,
        runtime.store,
        settings.stall_seconds,
        folded=lambda: market.positions,
        shards=runtime.shards,
    )
    app.state.api = ApiState(
        runtime=runtime,
        market=market,
        ledger=ledger,
        keys=keys,
        keyring=keyring,
        stalls=SqlStalls(engine),
        commands=commands,
        idempotent=Idempotent(SqlRequests(engine)),
        needs=need_service,
        health=PipelineHealth(monitor),
    )
    app.state.gate = Gate(
        keyring,
        RateLimiter(settings.api_rate, settings.api_burst),
        RateLimiter(settings.api_rate * 5, settings.api_burst * 5),
        RateLimiter(settings.api_rate, settings.api_burst),
    )
    # The node (`cx.node`) runs these three's loops beside the server.
    app.state.key_watch = KeyWatch(keyring, market)
    app.state.needs = need_service
    app.state.status_monitor = monitor
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/web", StaticFiles(directory=str(web.WEB)), name="web")
    return app
