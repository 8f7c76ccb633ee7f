"""`cx demo` as a user runs it: it trades, stops cleanly on Ctrl-C, and resumes its history."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import free_port

pytestmark = pytest.mark.e2e

RUN_S = 6.0


def _run_demo(data_dir: Path) -> str:
    env = {
        **os.environ,
        "CX_DATA_DIR": str(data_dir),
        "CX_API_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "cx.cli", "demo", "--rate", "40"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(RUN_S)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    return output


def _trades(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "events.sqlite3") as db:
        return [row[0] for row in db.execute("select trade_id from trades")]


def test_the_demo_trades_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    first = _run_demo(tmp_path)
    assert "embedded log and SQLite" in first
    assert "H100-80G.GZ.20271201T00" in first
    assert "stopped cleanly" in first
    assert "Traceback" not in first
    assert "API keys (shown only now" in first
    assert first.count(" cx_") == 3, "a buyer's, a provider's and an operator's key"
    after_first = _trades(tmp_path)
    assert after_first, "the simulated market should trade within a few seconds"

    second = _run_demo(tmp_path)
    assert "Traceback" not in second
    assert "API keys were printed on the first start" in second
    assert " cx_" not in second, "keys are shown once"
    after_second = _trades(tmp_path)
    assert set(after_first) < set(after_second)
    assert len(after_second) == len(set(after_second))
