"""Stages of the exchange as real `cx run` processes, for tests that kill and restart them."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]


class StageProcess:
    """One `cx run STAGE` process; its output goes to a file, appended across restarts."""

    def __init__(self, stage: str, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.stage = stage
        self.env = env
        self.name = name
        self.output_path = log_dir / f"{name}.log"
        self._output: IO[str] | None = None
        self.process: subprocess.Popen[str] | None = None
        self.starts = 0
        self.start()

    def start(self) -> None:
        """Start (or start again) the process."""
        self._output = self.output_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cx.cli", "run", self.stage],
            cwd=ROOT,
            env=self.env,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.starts += 1

    def output(self) -> str:
        return self.output_path.read_text()

    def holds(self) -> list[int]:
        """The partitions the process said it holds last."""
        found = re.findall(r"now holds partitions \[([0-9, ]*)\]", self.output())
        return [int(p) for p in found[-1].split(",") if p.strip()] if found else []

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Signal the process and wait for it (SIGKILL if it does not stop in time)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self._output is not None:
            self._output.close()
            self._output = None
