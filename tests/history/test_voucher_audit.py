"""Voucher budgets in `cx replay` and `cx audit`: programme usage recomputed from the events."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cx.settings import Settings
from exchange.domain.messages import ApproveGrant, CreateProgramme
from tests.e2e.grants import apply, register
from tests.e2e.harness import running_exchange, settings_for, settle
from tests.history.test_replay_and_audit import _audit_copy, _copy, _cx, _events

GZ0 = "H100-80G.GZ.20271201T00"
BUDGET, GRANT = 1_000_000, 20_000


@pytest.fixture(scope="module")
def voucher_history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A programme, a grant to buyer `b`, a voucher buy that traded and one that rests."""
    data_dir = tmp_path_factory.mktemp("vouchers")
    settings = settings_for(data_dir)
    asyncio.run(_trade_with_vouchers(settings))
    return {"settings": settings, "database": data_dir / "events.sqlite3"}


async def _trade_with_vouchers(settings: Settings) -> None:
    async with running_exchange(settings) as exchange:
        runtime = exchange.runtime
        await runtime.submit(
            runtime.seal.sign(
                CreateProgramme(
                    programme_id="hz",
                    admin_id="hz-admin",
                    issuer="Hangzhou",
                    budget=BUDGET,
                    cap_per_contract=100_000,
                    cap_per_enterprise=50_000,
                    valid_from=0,
                    valid_until=4_000_000_000_000,
                )
            )
        )
        await settle(runtime)
        await register(exchange, "b")
        applied = await apply(exchange, "b", "hz", GRANT, "app-b")
        assert applied.status_code == 201, applied.text
        await runtime.submit(
            runtime.seal.sign(
                ApproveGrant(application_id="app-b", programme_id="hz", admin_id="hz-admin",
                             limit=GRANT)
            )
        )  # fmt: skip
        buyer = await exchange.as_("b")
        seller = await exchange.as_("s", "provider")
        await buyer.post("/v1/accounts/b/deposits", json={"kind": "cash", "amount": 100_000})
        capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 10}
        await seller.post("/v1/accounts/s/deposits", json=capacity)
        await settle(runtime)
        sell = {"symbol": GZ0, "side": "sell", "price": 1800, "quantity": 2}
        assert (await seller.post("/v1/orders", json=sell)).status_code == 201
        for price, quantity in ((1800, 2), (1700, 1)):
            buy = {"symbol": GZ0, "side": "buy", "price": price, "quantity": quantity}
            placed = await buyer.post("/v1/orders", json={**buy, "voucher": "hz"})
            assert placed.status_code == 201, placed.text
        await settle(runtime)


def test_replay_shows_voucher_budgets_and_a_clean_history_audits_clean(
    voucher_history: dict[str, Any],
) -> None:
    done = _cx(voucher_history["settings"], "replay", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["programmes"]["hz"] == {
        "issuer": "Hangzhou",
        "budget": BUDGET,
        "unallocated": BUDGET - GRANT,
        "granted": {"b": GRANT},
    }
    # 30% of the 3,600 fen filled was paid; 30% of the resting 1,700 is reserved.
    assert document["grants"]["hz:b"] == {
        "programme_id": "hz",
        "account_id": "b",
        "limit": GRANT,
        "unreserved": GRANT - 1_080 - 510,
        "reserved": 510,
        "paid": 1_080,
        "clawed_back": 0,
    }
    table = _cx(voucher_history["settings"], "replay")
    assert "算力券预算 voucher budgets (元)" in table.stdout
    # The grant's amounts in 元 (200.00 granted, 184.10 left, 5.10 reserved, 10.80 paid),
    # never in fen.
    for amount in ("200.00", "184.10", "5.10", "10.80"):
        assert amount in table.stdout, table.stdout
    assert "18410" not in table.stdout
    audited = _cx(voucher_history["settings"], "audit")
    assert audited.returncode == 0, audited.stdout + audited.stderr


async def test_a_reservation_beyond_the_programme_rate_is_reported_where_it_is_stored(
    voucher_history: dict[str, Any], tmp_path: Path
) -> None:
    copy = _copy(voucher_history, tmp_path)
    with sqlite3.connect(copy) as db:
        position, accepted = next(
            (p, e) for p, e in _events(db, "OrderAccepted") if e.get("voucher") == "hz"
        )
        inflated = {**accepted, "voucher_reserved": GRANT + 1}
        db.execute(
            "update events set data = ? where position = ?", (json.dumps(inflated), position)
        )
    found = await _audit_copy(copy, voucher_history["settings"].market_partitions)
    reservation = [f for f in found if f.startswith("voucher-reservation")]
    assert len(reservation) == 1, found
    assert accepted["order_id"] in reservation[0]
    assert f"(events at {position})" in reservation[0]
    assert any(f.startswith("voucher-overdrawn") and str(position) in f for f in found), found


async def test_grants_past_the_budget_are_reported(
    voucher_history: dict[str, Any], tmp_path: Path
) -> None:
    copy = _copy(voucher_history, tmp_path)
    with sqlite3.connect(copy) as db:
        created_at, _ = _events(db, "ProgrammeCreated")[0]
        position, granted = _events(db, "GrantApproved")[0]
        grown = {**granted, "limit": BUDGET + 1}
        db.execute("update events set data = ? where position = ?", (json.dumps(grown), position))
    found = await _audit_copy(copy, voucher_history["settings"].market_partitions)
    expected = (
        f"voucher-overgranted: [voucher-overgranted] programme hz has granted {BUDGET + 1} fen "
        f"of a budget of {BUDGET} fen (events at {created_at}, {position})"
    )
    assert expected in found


async def test_vouchers_used_without_a_grant_are_reported(
    voucher_history: dict[str, Any], tmp_path: Path
) -> None:
    copy = _copy(voucher_history, tmp_path)
    with sqlite3.connect(copy) as db:
        position, _ = _events(db, "GrantApproved")[0]
        db.execute("delete from events where position = ?", (position,))
        first_use, _ = next(
            (p, e) for p, e in _events(db, "OrderAccepted") if e.get("voucher") == "hz"
        )
    found = await _audit_copy(copy, voucher_history["settings"].market_partitions)
    overdrawn = [f for f in found if f.startswith("voucher-overdrawn")]
    assert len(overdrawn) == 1, found
    assert f"(events at {first_use}" in overdrawn[0], found
    grant = [f for f in found if f.startswith("voucher-grant")]
    assert any("it is used but was never approved" in f for f in grant), found


async def test_orders_stored_before_their_programme_and_grant_are_not_reported(
    voucher_history: dict[str, Any], tmp_path: Path
) -> None:
    """The store merges the partitions: an order reserving vouchers may be stored before the
    programme's creation and the grant's approval that risk read first, on another partition.
    Judged in the store's order, its reservation looked beyond a rate of 0 and a grant of 0."""
    copy = _copy(voucher_history, tmp_path)
    with sqlite3.connect(copy) as db:
        created_at, _ = _events(db, "ProgrammeCreated")[0]
        granted_at, _ = _events(db, "GrantApproved")[0]
        uses = [p for p, e in _events(db, "OrderAccepted") if e.get("voucher") == "hz"]
        columns = [row[1] for row in db.execute("pragma table_info(events)")]
        rows = db.execute(
            "select * from events where position between ? and ? order by position",
            (created_at, uses[-1]),
        ).fetchall()
        moved = [r for r in rows if r[0] not in (created_at, granted_at)] + [
            r for r in rows if r[0] in (created_at, granted_at)
        ]
        db.execute("delete from events where position between ? and ?", (created_at, uses[-1]))
        marks = ", ".join("?" * len(columns))
        for (position, *_), (_, *values) in zip(rows, moved, strict=True):
            db.execute(f"insert into events ({', '.join(columns)}) values ({marks})",
                       (position, *values))  # fmt: skip
    found = await _audit_copy(copy, voucher_history["settings"].market_partitions)
    assert uses[0] < created_at + len(rows) - 2, "the voucher orders now precede the programme"
    assert not [f for f in found if f.startswith("voucher")], found
