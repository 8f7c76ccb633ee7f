"""The whole-system model test on Kafka and PostgreSQL: the tour and the random examples of
`test_model.py`, whose docstring says what they check and why they reach what they do."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.run import base_settings, fresh_postgres, run_model
from tests.system.test_model import (
    CI,
    REAL_EXAMPLES,
    REAL_MUST_REACH,
    REAL_MUST_REACH_AT_EDGE,
    REAL_STEPS,
    SHRINK,
    assert_reached,
)
from tests.system.tour import tour

pytestmark = pytest.mark.e2e


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_a_tour_of_every_command_family_keeps_the_books_on_kafka_and_postgres(
    tmp_path: Path,
    kafka_bootstrap: str,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ran = tour(base_settings(tmp_path, kafka=kafka_bootstrap), prepare=fresh_postgres(postgres_url))
    with capsys.disabled():
        print(f"\nkafka+postgres tour {ran}")


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.timeout(1200)
def test_every_command_keeps_the_books_on_kafka_and_postgres(
    tmp_path: Path,
    kafka_bootstrap: str,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ran = run_model(
        base_settings(tmp_path, kafka=kafka_bootstrap),
        REAL_EXAMPLES,
        REAL_STEPS,
        prepare=fresh_postgres(postgres_url),
        derandomize=CI,
        shrink=SHRINK,
        # Its few examples keep their reach of programme administration; the auctions run on
        # Kafka and PostgreSQL in the tour and the end-to-end tests.
        auctions=False,
    )
    with capsys.disabled():
        print(f"\nkafka+postgres {ran}")
    assert ran.steps >= REAL_EXAMPLES
    assert_reached(
        ran,
        REAL_MUST_REACH,
        REAL_MUST_REACH_AT_EDGE,
        "CX_MODEL_REAL_EXAMPLES",
        "CX_MODEL_REAL_STEPS",
    )
