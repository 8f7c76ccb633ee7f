"""Shared fixtures: real Kafka and PostgreSQL come from the environment.

`make test` starts both and exports KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL. A test that needs
one of them fails under CI=true when it is missing, and is skipped only on a developer's machine
that runs pytest by hand without them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn

import pytest

from cx.settings import Settings
from settlement.scratch import scratch_database
from tests.e2e.harness import settings_for


def missing(message: str) -> NoReturn:
    """A service a test needs is not there: fail under CI, skip by hand."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


def _require(variable: str, what: str) -> str:
    value = os.environ.get(variable, "").strip()
    if value:
        return value
    missing(f"{what} is required: set {variable} (make test starts one and sets it)")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of a running Kafka broker."""
    return _require("KAFKA_BOOTSTRAP_SERVERS", "a real Kafka broker")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL (postgresql+asyncpg://...) of a running PostgreSQL server."""
    return _require("DATABASE_URL", "a real PostgreSQL server")


@asynccontextmanager
async def fresh_database(postgres_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server for the block, dropped afterwards."""
    async with scratch_database(postgres_url, "test") as (url, _):
        yield url


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """URL of a new, empty database on the server, dropped after the test."""
    async with fresh_database(postgres_url) as url:
        yield url


@pytest.fixture(params=["embedded", "kafka+postgres"])
async def exchange_settings(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Settings]:
    """Settings of the embedded default, or of real Kafka and a fresh PostgreSQL database."""
    if request.param == "embedded":
        yield settings_for(tmp_path)
        return
    kafka = request.getfixturevalue("kafka_bootstrap")
    async with fresh_database(request.getfixturevalue("postgres_url")) as database_url:
        yield settings_for(tmp_path, kafka=kafka, database_url=database_url)
