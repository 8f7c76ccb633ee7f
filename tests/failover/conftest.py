"""The failover suite runs on the local cluster of `CX_SERVICES_MODE=cluster infra/services.sh`
(`make failover` starts it): three Kafka nodes and, under one pg_auto_failover monitor, a
PostgreSQL primary and synchronous standby for each settlement shard. Its tests kill members of
that cluster, so they run on nothing else."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import _require, missing

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "infra" / "services.sh"
MEMBER_TIMEOUT_S = 300


@dataclass(frozen=True)
class Cluster:
    """The running cluster's addresses, and its members' kill and replace commands."""

    kafka: str
    database_url: str
    settlement_shards: list[str]
    """The shards beyond the home one (`database_url`'s), each its own formation's servers."""

    def services(self, *args: str) -> str:
        """Run `infra/services.sh ARGS` in cluster mode; its output."""
        done = subprocess.run(
            ["bash", str(SERVICES), *args],
            env={**os.environ, "CX_SERVICES_MODE": "cluster"},
            capture_output=True,
            text=True,
            timeout=MEMBER_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"infra/services.sh {' '.join(args)}: {done.stderr[-3000:]}")
        return done.stdout.strip()


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    mode = _require("CX_SERVICES_MODE", "the local cluster (make failover)")
    if mode != "cluster":
        missing("the failover suite kills cluster members: run it with make failover")
    return Cluster(
        kafka=_require("KAFKA_BOOTSTRAP_SERVERS", "the cluster's Kafka nodes"),
        database_url=_require("DATABASE_URL", "the cluster's PostgreSQL"),
        settlement_shards=os.environ.get("CX_SETTLEMENT_SHARDS", "").split(),
    )
