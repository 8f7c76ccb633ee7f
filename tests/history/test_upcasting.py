"""Events carry a schema version; older versions are upcast when read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from cx.migrations import upgrade_to_head
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import (
    FundsDeposited,
    decode,
    decode_event,
    encode,
    event_from_dict,
    upcast,
)
from settlement.replay import replay
from settlement.service import stream_of
from settlement.sql_store import open_event_store
from settlement.store import NewEvent

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "events_v1.jsonl"


def _fixture() -> list[dict[str, object]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_a_version_1_cash_deposit_is_read_as_version_2_in_cny() -> None:
    stored = _fixture()[0]
    assert stored["v"] == 1
    assert "currency" not in stored
    for event in (
        event_from_dict(stored),
        decode_event(json.dumps(stored)),
        decode(json.dumps(stored)),
    ):
        assert isinstance(event, FundsDeposited)
        assert (event.v, event.currency, event.amount) == (2, "CNY", 500_000)
    # A current event is written as version 2 and read back unchanged.
    current = event_from_dict(stored)
    assert json.loads(encode(current))["v"] == 2
    assert upcast(json.loads(encode(current))) == json.loads(encode(current))


def test_an_unknown_older_version_is_still_refused() -> None:
    stored = {**_fixture()[0], "v": 0}
    with pytest.raises(ValidationError, match="v"):
        event_from_dict(stored)
    with pytest.raises(ValidationError):
        decode_event(json.dumps(stored))


async def test_a_store_of_version_1_events_replays_to_the_same_balances(tmp_path: Path) -> None:
    store = open_event_store(f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}")
    await store.initialise(upgrade_to_head)
    rows = _fixture()
    await store.append(
        [
            NewEvent(
                event_id=str(data["event_id"]),
                stream_id=stream_of(event_from_dict(data)),
                type=str(data["type"]),
                data=data,
                schema_version=1,
            )
            for data in rows
        ]
    )
    stored = await store.read_all()
    assert [e.schema_version for e in stored] == [1] * len(rows)
    assert stored[0].data == rows[0]  # stored as written; upcast only on read
    # Events of version 1, stored without the partition they were read from: one partition.
    result = await replay(store, default_catalogue(), partitions=1)
    await store.close()
    accounts = result.state.accounts
    assert accounts.cash["buyer-1"].available == 500_000 - 4 * 1800
    assert accounts.cash["buyer-1"].held == 0
    assert accounts.ledger["escrow:H100-80G.GZ.20271201T00"] == 4 * 1800
    assert accounts.positions[("buyer-1", "H100-80G.GZ.20271201T00")] == 4
