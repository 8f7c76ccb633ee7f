"""Poison records go to the dead-letter topic with their reason and source; stages go on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cx_client import ExchangeClient

from cx.settings import Settings
from exchange.deadletters import read_dead_letters
from tests.e2e.harness import running_exchange, settings_for, settle

ROOT = Path(__file__).resolve().parents[2]


def _cx(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env["CX_DATA_DIR"] = str(settings.data_dir)
    env["CX_TOPIC_PREFIX"] = settings.topic_prefix
    env["CX_COMMAND_PARTITIONS"] = str(settings.command_partitions)
    env["CX_MARKET_PARTITIONS"] = str(settings.market_partitions)
    return subprocess.run(
        [sys.executable, "-m", "cx.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_an_undecodable_event_is_set_aside_and_settlement_goes_on(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with running_exchange(settings) as exchange:
        runtime = exchange.runtime
        producer = await runtime.log.producer()
        poison = await producer.send_and_wait(runtime.topics.events, 1, b"\xff{not an event")
        await producer.close()
        deposit = await exchange.client.post(
            "/v1/accounts/after/deposits", json={"kind": "cash", "amount": 700}
        )
        assert deposit.status_code == 201, deposit.text
        await settle(runtime)
        letters = await read_dead_letters(runtime.log, runtime.topics.deadletters)
        assert [(letter.source, letter.stage) for letter in letters] == [
            (f"{runtime.topics.events}:1:{poison.offset}", "settlement")
        ]
        assert letters[0].value == b"\xff{not an event"
        assert "Invalid JSON" in letters[0].reason
        key = await exchange.key_for("operator", "operator")
        async with ExchangeClient(exchange.base_url, key) as client:
            (shown,) = await client.dead_letters()
        assert (shown.source, shown.stage, shown.reason) == (
            letters[0].source,
            "settlement",
            letters[0].reason,
        )
        assert (shown.topic, shown.partition, shown.offset) == (
            runtime.topics.events,
            1,
            poison.offset,
        )
        assert shown.value.startswith("\ufffd{not an event")
        assert (shown.set_aside_by, shown.set_aside_at, shown.event_id) == (None, None, None)
        refused = await exchange.anonymous.get("/v1/admin/dead-letters")
        assert refused.status_code == 401, refused.text
        buyer = await exchange.as_("after")
        assert (await buyer.get("/v1/admin/dead-letters")).status_code == 403
        account = (await exchange.client.get("/v1/accounts/after")).json()
        assert account["cash"]["available"] == 700
        settled = await runtime.store.consumer_offsets("settlement")
        assert settled[(runtime.topics.events, 1)] > poison.offset

    listed = _cx(settings, "deadletters", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["source"] == letters[0].source
    assert entry["stage"] == "settlement"

    again = _cx(settings, "deadletters", "replay", letters[0].source)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"appended again as {letters[0].source.rsplit(':', 1)[0]}:")
    missing = _cx(settings, "deadletters", "replay", "nope:0:0")
    assert missing.returncode == 1
    assert "no dead letter from nope:0:0" in missing.stderr
