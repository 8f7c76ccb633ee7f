"""`cx` loads what a command runs and nothing more: a stage and the everyday commands start
without the simulations, the packages of the `sim` extra (numpy, scipy) and matplotlib."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SIMULATION_ONLY = {"matplotlib", "numpy", "scipy", "simulations"}
"""Top-level packages only the simulations (`cx simulate`, the market of `cx demo`) and the
charts of programme reports may load."""

PROBE = """
import atexit, sys
atexit.register(lambda: print("loaded:", *sorted({name.split(".")[0] for name in sys.modules})))
from cx.cli import main
for argv in sys.argv[1:]:
    print(f"exit {main(argv.split())}: cx {argv}", flush=True)
"""
"""Runs each argument as one `cx` command in this process, printing its exit code, then prints
the top-level packages the process loaded."""


def _embedded(data_dir: Path) -> dict[str, str]:
    """The environment of an embedded exchange kept in `data_dir` (no Kafka, no PostgreSQL)."""
    env = {**os.environ, "CX_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("DATABASE_URL", None)
    return env


def _exits(output: str) -> dict[str, int]:
    """Each command's exit code, by the command."""
    return {
        line.split(": cx ", 1)[1]: int(line.split()[1].rstrip(":"))
        for line in output.splitlines()
        if line.startswith("exit ")
    }


def _loaded(output: str) -> set[str]:
    lines = [line for line in output.splitlines() if line.startswith("loaded: ")]
    assert len(lines) == 1, output
    return set(lines[0].split()[1:])


@pytest.mark.timeout(120)
def test_a_stage_loads_neither_the_simulations_nor_the_sim_extra(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", PROBE, "run risk"],
        env=_embedded(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "risk: now holds partitions" in line:
            break
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=60)
    assert process.returncode == 0, "".join(seen) + errors
    assert _exits(output) == {"run risk": 0}
    loaded = _loaded(output)
    assert {"cx", "exchange", "settlement", "aiosqlite"} <= loaded, "the stage ran embedded"
    assert not loaded & SIMULATION_ONLY, sorted(loaded & SIMULATION_ONLY)


def test_everyday_commands_load_neither_the_simulations_nor_the_sim_extra(
    tmp_path: Path,
) -> None:
    commands = [
        "init",
        "keys create --account buyer-1 --role buyer",
        "keys list",
        "status",
        "deadletters list",
        "history",
        "replay --json",
        "audit --json",
    ]
    no_programme = f"report programme none --out {tmp_path / 'reports'}"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *commands, no_programme],
        env=_embedded(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _exits(result.stdout) == {**dict.fromkeys(commands, 0), no_programme: 1}
    assert "no programme 'none'" in result.stderr
    loaded = _loaded(result.stdout)
    assert {"cx", "exchange", "settlement", "api"} <= loaded
    assert not loaded & SIMULATION_ONLY, sorted(loaded & SIMULATION_ONLY)


def test_simulate_without_the_sim_extra_says_how_to_install_it(tmp_path: Path) -> None:
    without_scipy = "import sys; sys.modules['scipy'] = None\n" + PROBE
    result = subprocess.run(
        [sys.executable, "-c", without_scipy, f"simulate --scenario tiny --out {tmp_path}"],
        env=_embedded(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert _exits(result.stdout) == {f"simulate --scenario tiny --out {tmp_path}": 2}
    assert "cx simulate: needs scipy, of the sim extra" in result.stderr, result.stderr
    assert "pip install 'compute-exchange[sim]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "report.md").exists()
