"""A Kafka broker of a test's own, to stop and start without touching the shared one.

It runs the same broker as `make services-up`: the class path is the one infra/services.sh
resolves from Maven Central (`infra/services.sh kafka-lib` resolves it once into .cache and
prints the folder), and the configuration is infra/kafka/server.properties rendered with the
test's own ports and a data folder under a temporary directory. Stopping it is a controlled
shutdown (SIGTERM); starting it again reuses the same ports and data, as a restarted broker
would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_ID = "Y3gtcHJpdmF0ZS1rYWZrYQ"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
HEAP = ["-Xmx384m", "-Xms64m"]


def kafka_lib() -> Path:
    """The folder of the broker's jars, resolved by infra/services.sh (once)."""
    done = subprocess.run(
        ["bash", str(ROOT / "infra" / "services.sh"), "kafka-lib"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"infra/services.sh kafka-lib failed: {done.stderr[-2000:]}")
    lib = Path(done.stdout.strip().splitlines()[-1])
    if not any(lib.glob("kafka_*.jar")):
        raise RuntimeError(f"no Kafka jars in {lib}")
    return lib


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class PrivateBroker:
    """One single-node KRaft broker on 127.0.0.1, its data in `folder`."""

    def __init__(self, folder: Path, lib: Path, port: int, controller_port: int) -> None:
        self.folder = folder
        self.lib = lib
        self.port = port
        self.controller_port = controller_port
        self.bootstrap = f"127.0.0.1:{port}"
        self.properties = folder / "server.properties"
        self.log_path = folder / "broker.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._output: IO[bytes] | None = None
        template = (ROOT / "infra" / "kafka" / "server.properties").read_text()
        self.properties.write_text(
            template.replace("@DATA_DIR@", str(folder / "data"))
            .replace("@BROKER_PORT@", str(port))
            .replace("@CONTROLLER_PORT@", str(controller_port))
        )

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            *HEAP,
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={ROOT / 'infra' / 'kafka' / 'log4j2.properties'}",
            "-cp",
            f"{self.lib}/*",
            *args,
        ]

    def format(self) -> None:
        """Format a new KRaft store in the data folder."""
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "--cluster-id",
                CLUSTER_ID,
                "--config",
                str(self.properties),
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Start the broker and wait until it says it started and its port takes connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        if _port_open(self.port) or _port_open(self.controller_port):
            raise RuntimeError(f"port {self.port} or {self.controller_port} is taken")
        before = self.output().count("Kafka Server started")
        self._output = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(self.properties)),
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of pytest does not reach it; stop() does
        )
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (self.output().count("Kafka Server started") > before and _port_open(self.port)):
            if self.process.poll() is not None:
                raise RuntimeError(f"the broker exited: {self.output()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"the broker did not start in {START_TIMEOUT_S}s")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the broker (SIGTERM: a controlled shutdown) and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._output is not None:
            self._output.close()
            self._output = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@contextmanager
def private_kafka(port: int, controller_port: int) -> Iterator[PrivateBroker]:
    """A freshly formatted broker, started; stopped and deleted afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="cx-kafka-"))
    broker = PrivateBroker(folder, kafka_lib(), port, controller_port)
    try:
        broker.format()
        broker.start()
        yield broker
    finally:
        with contextlib.suppress(OSError):
            broker.stop()
        if os.environ.get("CX_KEEP_BROKER_LOG"):
            print(f"private broker log: {broker.log_path}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
