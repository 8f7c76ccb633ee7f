"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exchange.settings import Settings
from tests.conftest import fresh_database
from tests.e2e.harness import settings_for


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
