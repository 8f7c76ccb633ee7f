"""The whole-system model test on the embedded default and on Kafka and PostgreSQL.

A fixed number of examples, derandomized so every CI run checks the same ones (the budget
below fits `make test`); `make fuzz` runs the same model at random for as long as asked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.system.run import base_settings, fresh_postgres, run_model

EMBEDDED_EXAMPLES = int(os.environ.get("CX_MODEL_EXAMPLES", "12"))
EMBEDDED_STEPS = int(os.environ.get("CX_MODEL_STEPS", "60"))
REAL_EXAMPLES = int(os.environ.get("CX_MODEL_REAL_EXAMPLES", "3"))
REAL_STEPS = int(os.environ.get("CX_MODEL_REAL_STEPS", "40"))

SHRINK = os.environ.get("CX_MODEL_SHRINK", "1") != "0"
"""Shrink a failure to its smallest reproduction (each try restarts an exchange: minutes)."""
CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
"""Under CI the same examples every run; by hand at random, failures kept in .hypothesis/."""

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1200)
def test_every_command_keeps_the_books_on_the_embedded_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = run_model(
        base_settings(tmp_path), EMBEDDED_EXAMPLES, EMBEDDED_STEPS, derandomize=CI, shrink=SHRINK
    )
    with capsys.disabled():
        print(f"\nembedded {ran}")
    assert ran.steps >= EMBEDDED_EXAMPLES


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
    )
    with capsys.disabled():
        print(f"\nkafka+postgres {ran}")
    assert ran.steps >= REAL_EXAMPLES
