"""docker-compose.yml describes the cluster of `CX_SERVICES_MODE=cluster infra/services.sh`:
the same members on the same host ports, the same Kafka settings, the same failover timings,
and the exchange configured for it. No Docker engine runs here: the YAML is read."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parents[1]

# Settings that name this machine's addresses and folders, or the kind of quorum (the image
# formats a static one: docker-compose.yml says why); every other one must match.
PLACE_BOUND = {
    "node.id",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "controller.quorum.bootstrap.servers",
    "controller.quorum.voters",
    "log.dirs",
    "heap.opts",
}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded["services"]


def _layout() -> dict[str, list[str]]:
    """Each member's ports as infra/services.sh's cluster mode has them by default."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CX_CLUSTER_")}
    done = subprocess.run(
        ["bash", str(ROOT / "infra" / "services.sh"), "cluster-layout"],
        env={**environment, "CX_SERVICES_MODE": "cluster"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()}


def _cluster_properties() -> dict[str, str]:
    text = (ROOT / "infra" / "kafka" / "cluster.properties").read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def _kafka_settings(environment: dict[str, Any]) -> dict[str, str]:
    """The apache/kafka image's KAFKA_X_Y variables as the properties x.y they set."""
    return {
        name.removeprefix("KAFKA_").lower().replace("_", "."): str(value)
        for name, value in environment.items()
        if name.startswith("KAFKA_")
    }


def _host_ports(service: dict[str, Any]) -> list[str]:
    return [mapping.split(":")[0] for mapping in service.get("ports", [])]


def test_the_same_kafka_nodes_on_the_same_host_ports() -> None:
    services, layout = _compose(), _layout()
    nodes = sorted(name for name in layout if name.startswith("kafka-"))
    assert nodes == ["kafka-1", "kafka-2", "kafka-3"]
    assert sorted(name for name in services if name.startswith("kafka-")) == nodes
    for name in nodes:
        broker_port = layout[name][0]
        environment = services[name]["environment"]
        assert str(environment["KAFKA_NODE_ID"]) == name.removeprefix("kafka-")
        assert _host_ports(services[name]) == [broker_port]
        assert f"HOST://localhost:{broker_port}" in environment["KAFKA_ADVERTISED_LISTENERS"]


@pytest.mark.parametrize("node", ["kafka-1", "kafka-2", "kafka-3"])
def test_every_kafka_setting_is_the_same(node: str) -> None:
    local = {k: v for k, v in _cluster_properties().items() if k not in PLACE_BOUND}
    composed = {
        k: v
        for k, v in _kafka_settings(_compose()[node]["environment"]).items()
        if k not in PLACE_BOUND
    }
    assert composed == local
    assert local["default.replication.factor"] == "3"
    assert local["min.insync.replicas"] == "2"


def test_the_kafka_image_is_the_version_of_the_local_broker() -> None:
    pom = (ROOT / "infra" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert match is not None
    for node in ("kafka-1", "kafka-2", "kafka-3"):
        assert _compose()[node]["image"] == f"apache/kafka:{match.group(1)}"


def test_the_same_postgres_members_on_the_same_host_ports() -> None:
    services, layout = _compose(), _layout()
    members = sorted(name for name in layout if name.startswith("postgres-"))
    assert members == [f"postgres-{m}" for m in ("monitor", "node1", "node2", "node3", "node4")]
    composed = {name for name in services if name.startswith("postgres-")}
    assert set(members) <= composed
    for member in members:
        service = services[member]
        assert _host_ports(service) == layout[member]
        assert service["image"].startswith("citusdata/pg_auto_failover:v2.0-pg15")
    for node in ("node1", "node2", "node3", "node4"):
        command = " ".join(services[f"postgres-{node}"]["command"])
        assert f"--name {node}" in command
        partition_timeout = layout["network_partition_timeout"][0]
        assert f"timeout.network_partition_timeout {partition_timeout}" in command


def test_each_settlement_shard_is_a_formation_of_its_own() -> None:
    services, layout = _compose(), _layout()
    formations = {name.removeprefix("formation-"): nodes for name, nodes in layout.items()
                  if name.startswith("formation-")}  # fmt: skip
    assert formations == {"default": ["node1", "node2"], "shard1": ["node3", "node4"]}
    for formation, nodes in formations.items():
        for node in nodes:
            command = " ".join(services[f"postgres-{node}"]["command"])
            named = f"--formation {formation}" in command
            # The default formation is pg_autoctl's when none is named.
            assert named if formation != "default" else "--formation" not in command
    created = services["postgres-formation-shard1"]["command"]
    assert created[:3] == ["pg_autoctl", "create", "formation"]
    assert created[created.index("--formation") + 1] == "shard1"
    roles = " ".join(services["postgres-roles"]["command"])
    assert "postgres-node1 postgres-node3" in roles


def test_both_apply_the_same_failover_timings_and_role() -> None:
    script = (ROOT / "infra" / "services-cluster.sh").read_text()
    services = _compose()
    for service, sql in (
        ("postgres-monitor-settings", "monitor-failover.sql"),
        ("postgres-roles", "exchange-role.sql"),
    ):
        assert f"infra/postgres/{sql}" in script
        assert f"/infra/postgres/{sql}" in " ".join(services[service]["command"])
        assert "./infra/postgres:/infra/postgres:ro" in services[service]["volumes"]


def test_the_exchange_is_configured_for_the_cluster() -> None:
    services = _compose()
    environment = services["init"]["environment"]
    for stage in ("risk", "matching", "settlement", "settlement-shard1", "api"):
        assert services[stage]["environment"] == environment
    assert services["settlement"]["command"] == ["run", "settlement", "--shard", "0"]
    assert services["settlement-shard1"]["command"] == ["run", "settlement", "--shard", "1"]
    assert environment["KAFKA_BOOTSTRAP_SERVERS"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    local = _cluster_properties()
    assert str(environment["CX_KAFKA_REPLICATION_FACTOR"]) == local["default.replication.factor"]
    assert str(environment["CX_KAFKA_MIN_INSYNC_REPLICAS"]) == local["min.insync.replicas"]
    url = make_url(environment["DATABASE_URL"])
    assert url.query["host"] == ("postgres-node1:5432", "postgres-node2:5432")
    assert url.query["target_session_attrs"] == "read-write"
    (shard,) = [make_url(u) for u in environment["CX_SETTLEMENT_SHARDS"].split()]
    assert shard.query["host"] == ("postgres-node3:5432", "postgres-node4:5432")
    assert shard.query["target_session_attrs"] == "read-write"
