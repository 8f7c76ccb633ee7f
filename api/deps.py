"""What a handler is given, as FastAPI dependencies: the running exchange, the market data
fold, the services and the ports, each taken from the app's state, which `api.app.create_app`
fills (`ApiState`). The caller is `api.auth`'s (`Caller`, `Reader`, `Trader`, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header
from starlette.requests import HTTPConnection

from api.idempotency import Idempotent
from api.keys import KeyRing, KeyStore
from api.marketdata import MarketData
from api.needs import NeedService
from api.ports import Ledger, Runtime
from api.problems import Problem
from api.services import Commands, PipelineHealth
from api.stalls import StallStore


@dataclass(frozen=True, slots=True)
class ApiState:
    """Everything the handlers of one app share."""

    runtime: Runtime
    market: MarketData
    ledger: Ledger
    keys: KeyStore
    keyring: KeyRing
    stalls: StallStore
    commands: Commands
    idempotent: Idempotent
    needs: NeedService
    health: PipelineHealth


def state_of(connection: HTTPConnection) -> ApiState:
    """The app's shared state."""
    state: ApiState = connection.app.state.api
    return state


async def _runtime(connection: HTTPConnection) -> Runtime:
    return state_of(connection).runtime


async def _market(connection: HTTPConnection) -> MarketData:
    return state_of(connection).market


async def _ledger(connection: HTTPConnection) -> Ledger:
    return state_of(connection).ledger


async def _keys(connection: HTTPConnection) -> KeyStore:
    return state_of(connection).keys


async def _keyring(connection: HTTPConnection) -> KeyRing:
    return state_of(connection).keyring


async def _stalls(connection: HTTPConnection) -> StallStore:
    return state_of(connection).stalls


async def _commands(connection: HTTPConnection) -> Commands:
    return state_of(connection).commands


async def _idempotent(connection: HTTPConnection) -> Idempotent:
    return state_of(connection).idempotent


async def _needs(connection: HTTPConnection) -> NeedService:
    return state_of(connection).needs


async def _health(connection: HTTPConnection) -> PipelineHealth:
    return state_of(connection).health


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
MarketDep = Annotated[MarketData, Depends(_market)]
LedgerDep = Annotated[Ledger, Depends(_ledger)]
KeysDep = Annotated[KeyStore, Depends(_keys)]
KeyRingDep = Annotated[KeyRing, Depends(_keyring)]
StallsDep = Annotated[StallStore, Depends(_stalls)]
CommandsDep = Annotated[Commands, Depends(_commands)]
IdempotentDep = Annotated[Idempotent, Depends(_idempotent)]
NeedsDep = Annotated[NeedService, Depends(_needs)]
HealthDep = Annotated[PipelineHealth, Depends(_health)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Makes a POST idempotent: a retry with the same key returns the first answer.",
    ),
]


def listed_or_404(market: MarketData, symbol: str) -> None:
    """Refuse (404 `unknown_contract`, saying why) a path's symbol the market does not list
    now."""
    _require_listed(market, symbol, 404)


def listed_or_422(market: MarketData, symbol: str) -> None:
    """Refuse (422 `unknown_contract`, saying why, as the risk stage would) a body's symbol
    the market does not list now."""
    _require_listed(market, symbol, 422)


def _require_listed(market: MarketData, symbol: str, status: int) -> None:
    if market.view(symbol) is None:
        why = market.catalogue.why_not_listed(symbol, market.now_ms)
        raise Problem(status, "unknown_contract", why)
