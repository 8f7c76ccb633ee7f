"""Shared fixtures: real Kafka and PostgreSQL come from the environment.

`make test` starts both and exports KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL. A test that needs
one of them fails under CI=true when it is missing, and is skipped only on a developer's machine
that runs pytest by hand without them.
"""

from __future__ import annotations

import os

import pytest


def _require(variable: str, what: str) -> str:
    value = os.environ.get(variable, "").strip()
    if value:
        return value
    message = f"{what} is required: set {variable} (make test starts one and sets it)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of a running Kafka broker."""
    return _require("KAFKA_BOOTSTRAP_SERVERS", "a real Kafka broker")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL (postgresql+asyncpg://...) of a running PostgreSQL server."""
    return _require("DATABASE_URL", "a real PostgreSQL server")
