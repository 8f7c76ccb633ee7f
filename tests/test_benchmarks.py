"""Every benchmark runs and prints one JSON line with its keys (at small sizes here)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cx.bench import local_listeners
from exchange.domain.catalogue import default_catalogue
from tests.conftest import missing
from tests.e2e.harness import free_port
from tests.e2e.private_postgres import BIN, private_postgres

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "cx.cli", "bench", *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    document: dict[str, object] = json.loads(line)
    return document


@pytest.mark.kafka
@pytest.mark.postgres
def test_the_e2e_bench_measures_the_pipeline_against_both_raw_limits(
    kafka_bootstrap: str, postgres_url: str
) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DATABASE_URL": postgres_url}
    figures = _bench("e2e", "--commands", "400", "--rate", "100", env=env)
    assert figures["bench"] == "e2e"
    assert figures["settled"] == 400
    for key in ("commands_per_s", "p50_ms", "p99_ms", "p999_ms", "raw_kafka_per_s", "ratio"):
        assert isinstance(figures[key], int | float), key
    # Against the slower raw limit, both measured in the same run. Whether it stays under 1 is
    # timing (another test process can slow the raw runs), which tests do not assert.
    slower = min(float(figures[k]) for k in ("raw_kafka_per_s", "raw_postgres_commands_per_s"))  # type: ignore[arg-type]
    ratio = float(figures["ratio"])  # type: ignore[arg-type]
    assert ratio > 0
    assert abs(ratio - float(figures["commands_per_s"]) / slower) <= 0.02 * ratio  # type: ignore[arg-type]
    cpu = figures["cpu_us_per_command"]
    assert isinstance(cpu, dict)
    assert set(cpu) == {"risk", "matching", "settlement", "postgres", "kafka", "total"}
    stages = [cpu[k] for k in ("risk", "matching", "settlement", "postgres")]
    assert all(isinstance(v, int) and v >= 0 for v in stages)
    if local_listeners(kafka_bootstrap):
        # The broker serving the bench runs here: its CPU is read and counted in the total.
        assert isinstance(cpu["kafka"], int)
        assert cpu["kafka"] > 0
        assert cpu["total"] == sum(stages) + cpu["kafka"]
    else:
        assert cpu["kafka"] is None
        assert cpu["total"] is None
    assert figures["goal_cpu_us_per_command"] == 200


@pytest.mark.kafka
@pytest.mark.postgres
def test_the_e2e_bench_settles_one_history_into_one_shard_and_into_two_servers(
    kafka_bootstrap: str, postgres_url: str
) -> None:
    if not (BIN / "initdb").exists() or (os.geteuid() == 0 and shutil.which("runuser") is None):
        missing(
            f"a second PostgreSQL server needs initdb and pg_ctl in {BIN} (and runuser as root)"
        )
    with private_postgres(free_port()) as second:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "DATABASE_URL": postgres_url,
            "CX_SETTLEMENT_SHARDS": second.url,
        }
        done = subprocess.run(
            [sys.executable, "-m", "cx.cli", "bench", "e2e", "--shards", "2", "--commands", "600"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    one, two = (json.loads(line) for line in done.stdout.splitlines())
    assert (one["shards"], two["shards"]) == (1, 2)
    # The same history settled twice: every event, 600 orders' and the deposits'.
    assert one["events"] == two["events"] >= 600
    for figures in (one, two):
        assert figures["bench"] == "e2e-shards"
        assert figures["settled_events_per_s"] > 0
        assert figures["cpu_ms_per_command"] > 0
    assert len(two["settlement_cpu_ms_per_command"]) == 2
    # Without a second server it says what is missing.
    env.pop("CX_SETTLEMENT_SHARDS")
    refused = subprocess.run(
        [sys.executable, "-m", "cx.cli", "bench", "e2e", "--shards", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "needs 1 more PostgreSQL servers in CX_SETTLEMENT_SHARDS" in refused.stderr


@pytest.mark.postgres
def test_the_replay_bench_rebuilds_a_history_from_postgresql(postgres_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": postgres_url, "KAFKA_BOOTSTRAP_SERVERS": "unused:1"}
    figures = _bench("replay", "--commands", "3000", env=env)
    assert figures["bench"] == "replay"
    assert int(figures["events"]) >= 3000  # type: ignore[call-overload]  # whole commands: a few over
    assert float(figures["events_per_s"]) > 0  # type: ignore[arg-type]
    assert float(figures["raw_read_events_per_s"]) > 0  # type: ignore[arg-type]
    # The restart from a stored snapshot folds only the events after it (the bench checked it
    # ends in the full replay's state hash): half the history, this short.
    events, restarted_from = figures["events"], figures["restart_from_position"]
    assert isinstance(events, int)
    assert restarted_from == events - events // 2
    assert figures["restart_events"] == events // 2
    assert float(figures["restart_seconds"]) > 0  # type: ignore[arg-type]


@pytest.mark.postgres
def test_the_settle_bench_settles_a_history_into_postgresql(postgres_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": postgres_url}
    figures = _bench("settle", "--commands", "3000", env=env)
    assert figures["bench"] == "settle"
    events, batch = figures["events"], figures["batch"]
    assert isinstance(events, int)
    assert isinstance(batch, int)
    assert events >= 3000  # whole commands: a few over
    # The first batch warms the connection up and is not timed.
    assert figures["timed_events"] == events - batch
    assert float(figures["events_per_s"]) > 0  # type: ignore[arg-type]
    assert float(figures["settlement_cpu_us_per_event"]) > 0  # type: ignore[arg-type]
    # The digest is of what was written: the same history writes the same rows, another not.
    again = _bench("settle", "--commands", "3000", env=env)
    assert again["tables_digest"] == figures["tables_digest"]
    other = _bench("settle", "--commands", "3000", "--seed", "2", env=env)
    assert other["tables_digest"] != figures["tables_digest"]


def test_the_stages_bench_runs_risk_and_matching_over_the_e2e_flow_in_memory() -> None:
    figures = _bench("stages", "--commands", "400")
    assert figures["bench"] == "stages"
    assert figures["commands"] == 400
    # Every order reaches matching once; risk also reads what matching feeds back.
    assert figures["matching_records"] == 400
    assert int(figures["risk_records"]) > 400  # type: ignore[call-overload]
    assert float(figures["risk_cpu_us_per_command"]) > 0  # type: ignore[arg-type]
    assert float(figures["matching_cpu_us_per_command"]) > 0  # type: ignore[arg-type]
    # The digest is of what the stages wrote: the same flow writes the same records.
    again = _bench("stages", "--commands", "400")
    assert again["outputs_digest"] == figures["outputs_digest"]
    other = _bench("stages", "--commands", "400", "--seed", "2")
    assert other["outputs_digest"] != figures["outputs_digest"]


def test_the_api_and_fanout_benches_run_against_a_served_exchange() -> None:
    api = _bench("api", "--clients", "2", "--seconds", "1")
    assert api["bench"] == "api"
    assert float(api["orders_per_s"]) > 0  # type: ignore[arg-type]
    assert float(api["noop_requests_per_s"]) > 0  # type: ignore[arg-type]
    fanout = _bench("fanout", "--subscribers", "5", "--updates", "5", "--updates-per-s", "20")
    assert fanout["delivered"] == fanout["expected"] == 25
    assert isinstance(fanout["p99_ms"], float)


def test_benches_that_need_kafka_and_postgresql_say_so() -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    done = subprocess.run(
        [sys.executable, "-m", "cx.cli", "bench", "e2e"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "needs KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL" in done.stderr


def test_the_matching_bench_prints_the_plain_book_flows_beside_its_own_line() -> None:
    sizes = ["--commands", "2000", "--messages", "5000", "--resting", "200"]
    sizes += ["--deep-resting", "2000"]
    done = subprocess.run(
        [sys.executable, "-m", "cx.cli", "bench", "matching", *sizes],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    mixed, touch, deep = (json.loads(line) for line in done.stdout.splitlines())
    assert mixed["bench"] == touch["bench"] == deep["bench"] == "matching"
    assert mixed["commands"] == 2000
    assert float(mixed["reference_commands_per_s"]) > 0
    assert (touch["flow"], deep["flow"]) == ("touch", "deep")
    for figures in (touch, deep):
        assert figures["yardstick"] == "plain_book"
        assert figures["compiled"] == mixed["compiled"]
        assert figures["messages"] == 5000
        assert int(figures["trades"]) > 0
        for key in ("commands_per_s", "plain_commands_per_s", "ratio", "ratio_gc_off",
                    "p99_us", "plain_p99_us", "max_us", "plain_max_us", "p99_ratio"):  # fmt: skip
            assert float(figures[key]) > 0, key
    assert 1800 <= int(deep["resting_mean"]) <= 2200


def test_the_horizon_bench_measures_each_horizon_against_the_two_day_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One family keeps it light; the figures must add up, whatever the machine's speed.
    from cx import horizon

    monkeypatch.setitem(horizon.SCOPES, "simulation", ("CPU.JJJ",))
    figures = json.loads(horizon.run("simulation", replay_days=1, seed=1))

    assert figures["bench"] == "horizon"
    assert figures["families"] == 1
    baseline, hours, terms = figures["baseline"], figures["hours_30d"], figures["terms_92d"]
    static = len(default_catalogue())
    # At 10:00 CST the hours to 11:00 are past their gate (an hour ahead): 12 of each day's
    # 24 are gone from today; every later hour of the horizon is listed, with a book each.
    assert baseline["listed_events"] == 3 * 24 - 12
    assert hours["listed_events"] == 31 * 24 - 12
    assert baseline["books"] == baseline["listed_events"] + static
    assert hours["books"] == hours["listed_events"] + static
    term_catalogue = horizon.catalogue_for(("CPU.JJJ",), 30, 92)
    term_contracts = [s for s in term_catalogue.rolled_at(horizon.START_MS) if s.is_term]
    assert {s.term for s in term_contracts} == {"W", "N", "M"}
    assert terms["listed_events"] == hours["listed_events"] + len(term_contracts)
    # Memory, snapshots and the stored history grow with the books; the replay folds the
    # same orders at every horizon, plus the listings.
    assert hours["stage_bytes"] > 5 * baseline["stage_bytes"]
    assert hours["views_bytes"] > 5 * baseline["views_bytes"]
    assert hours["snapshot_bytes"] > 5 * baseline["snapshot_bytes"]
    listings_added = hours["listed_events"] - baseline["listed_events"]
    assert hours["replay_events"] == baseline["replay_events"] + listings_added
    assert baseline["replay_events"] > 24 * 30 * 2, "a sell and a buy every two minutes"
    for name in ("hours_30d", "terms_92d"):
        for key, ratio in figures["ratios"][name].items():
            assert ratio == round(figures[name][key] / baseline[key], 2), (name, key)


def test_the_processes_listening_on_a_bootstrap_s_ports_are_found() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        assert local_listeners(f"127.0.0.1:{port}") == {os.getpid()}
        assert local_listeners(f"remote.example:1,127.0.0.1:{port}") == {os.getpid()}
    finally:
        listener.close()
    assert local_listeners(f"127.0.0.1:{port}") == set()
