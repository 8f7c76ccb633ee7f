"""Every stage's lag is in `/v1/health`, read across processes: a stage that stops making
progress turns health to 503 within CX_STALL_SECONDS, and back once it runs again.

The stages run as separate `cx run` processes on Kafka and PostgreSQL, so the API process can
only know where risk, matching and settlement are from the log and the event store.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.keys import Role, create_key
from cx.runtime import ExchangeRuntime
from cx.settings import Settings
from tests.conftest import fresh_database
from tests.e2e.harness import eventually, free_port
from tests.e2e.processes import ROOT, StageProcess

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

PARTITIONS = 2
STALL_SECONDS = 3.0
STAGES = ("risk", "matching", "settlement", "api")


async def _health(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    try:
        answer = await client.get("/v1/health")
    except httpx.TransportError:
        return 0, {}
    return answer.status_code, answer.json()


async def _healthy(client: httpx.AsyncClient) -> bool:
    status, body = await _health(client)
    return status == 200 and body["status"] == "ok"


async def test_a_matching_process_that_stops_turns_health_to_503_in_time(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    async with fresh_database(postgres_url) as database_url:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "DATABASE_URL": database_url,
            "CX_TOPIC_PREFIX": f"sp{uuid.uuid4().hex[:10]}",
            "CX_API_PORT": str(free_port()),
            "CX_COMMAND_PARTITIONS": str(PARTITIONS),
            "CX_MARKET_PARTITIONS": str(PARTITIONS),
            "CX_STALL_SECONDS": str(STALL_SECONDS),
            "PYTHONUNBUFFERED": "1",
        }
        settings = Settings(
            **{k: v for k, v in env.items() if k.startswith(("CX_", "KAFKA", "DATABASE"))}
        )
        runtime = await ExchangeRuntime.open(settings)
        try:
            key = (await create_key(runtime.store.engine, "b", Role.BUYER)).key
        finally:
            await runtime.close()
        running = {stage: StageProcess(stage, env, tmp_path, stage) for stage in STAGES}
        try:
            base_url = f"http://127.0.0.1:{env['CX_API_PORT']}"
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as client:
                await eventually(lambda: _healthy(client), "every stage to run", 90)
                _, body = await _health(client)
                stages = {(s["stage"], s["partition"]) for s in body["stages"]}
                assert stages == {
                    (stage, partition)
                    for stage in ("risk", "matching", "settlement", "market-data")
                    for partition in range(PARTITIONS)
                } | {("dayahead", 0)}

                running["matching"].stop(signal.SIGKILL)
                # Commands keep arriving; risk forwards them and nobody matches them.
                deposits = [
                    client.post(
                        "/v1/accounts/b/deposits",
                        json={"kind": "cash", "amount": 100 + n},
                    )
                    for n in range(6)
                ]
                sending = asyncio.gather(*deposits)

                async def lagging() -> bool:
                    _, body = await _health(client)
                    return any(s["stage"] == "matching" and s["lag"] for s in body["stages"])

                async def stalled() -> dict[str, Any] | None:
                    status, body = await _health(client)
                    return body if status == 503 else None

                await eventually(lagging, "matching's lag to show", 30)
                seen = time.monotonic()
                body = await eventually(stalled, "health to report matching stalled", 30)
                took = time.monotonic() - seen
                # The stall time, give or take the half-second a reading is cached.
                assert STALL_SECONDS - 1 <= took <= STALL_SECONDS + 2, took
                kinds = {(s["stage"], s["kind"]) for s in body["stalls"]}
                assert kinds == {("matching", "no_progress")}, body["stalls"]
                (stall,) = [s for s in body["stalls"] if s["lag"]]
                assert stall["topic"] == f"{env['CX_TOPIC_PREFIX']}.orders"
                assert (
                    f"matching is stalled in {stall['topic']}:{stall['partition']}"
                    in (body["detail"])
                )
                moving = [s for s in body["stages"] if s["stage"] == "matching" and s["lag"]]
                assert [s["progressing"] for s in moving] == [False]
                answered = await sending
                assert {a.status_code for a in answered} == {202}
                # An operator's shell sees it too: `cx status` reads the log and the store.
                shown = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "cx.cli", "status", "--observe", "1", "--json"],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert shown.returncode == 1, shown.stdout + shown.stderr
                reported = json.loads(shown.stdout)["stalls"]
                assert {(s["stage"], s["kind"]) for s in reported} == {("matching", "no_progress")}
                # Without --observe it is a first look: how long matching has stood is the log's
                # word (the records it has not taken were logged more than the stall time ago),
                # not a timer it starts itself.
                shown = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "cx.cli", "status"],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert shown.returncode == 1, shown.stdout + shown.stderr
                assert "STALLED" in shown.stdout, shown.stdout
                assert "matching is stalled in" in shown.stdout, shown.stdout
                assert "moving (0s" not in shown.stdout, shown.stdout
                assert "nothing is stalled" not in shown.stdout, shown.stdout

                running["matching"].start()
                await eventually(lambda: _healthy(client), "health to recover", 90)
                account = await client.get("/v1/accounts/b")
                assert account.json()["cash"]["available"] == sum(100 + n for n in range(6))
        finally:
            for process in running.values():
                process.stop()
