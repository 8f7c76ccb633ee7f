"""Under CI=true a test that needs Kafka or PostgreSQL fails when they are missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NEEDS_KAFKA = (
    "tests/test_command_log_kafka.py::TestKafkaLog::"
    "test_create_topic_is_idempotent_and_partitions_reports_the_count"
)
NEEDS_POSTGRES = (
    "tests/test_event_store_postgres.py::TestPostgresEventStore::test_a_new_store_is_empty"
)


def _run(test: str, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "CI"}
    }
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("test", [NEEDS_KAFKA, NEEDS_POSTGRES])
def test_a_missing_service_fails_under_ci(test: str) -> None:
    result = _run(test, ci=True)
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout or "1 failed" in result.stdout, result.stdout
    assert "is required: set" in result.stdout


@pytest.mark.parametrize("test", [NEEDS_KAFKA, NEEDS_POSTGRES])
def test_a_missing_service_skips_outside_ci(test: str) -> None:
    result = _run(test, ci=False)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout, result.stdout
