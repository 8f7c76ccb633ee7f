"""`cx audit auction` on stored auctions whose partitions do not all hold the auction's
families: the empty bids of a partition holding none may be stored after the result, and are no
discrepancy; bids the result left out are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cx.migrations import upgrade_to_head
from exchange.dayahead import auction_orders, tick_sizes
from exchange.domain.catalogue import default_catalogue
from matching.dayahead import clear, result_to_wire
from settlement.auction_audit import AuctionAudit, audit_auction
from settlement.service import day_ahead_stream
from settlement.sql_store import open_event_store
from settlement.store import NewEvent

DAY = "2027-12-01"
GZ = "H100-80G.GZ.20271201T10"
PARTITIONS = 4


def _bid(order_id: str, side: str, price: int, seq: int) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "side": side,
        "symbols": [GZ],
        "price": price,
        "quantity": 2,
        "seq": seq,
    }


def _event(n: int, kind: str, **data: Any) -> NewEvent:
    return NewEvent(
        f"dayahead.{n}",
        day_ahead_stream(DAY),
        kind,
        {"type": kind, "event_id": f"dayahead.{n}", "ts": 1_000 + n, "day": DAY, **data},
    )


async def _audit(tmp_path: Path, late: list[dict[str, Any]]) -> AuctionAudit:
    """An auction of partitions 0 and 1 (1 brought nothing) with no crossing orders, solved,
    then partition 2's bids `late` stored after the result."""
    bids = {0: [_bid("b", "buy", 1_000, 0), _bid("s", "sell", 1_200, 1)], 1: []}
    orders = auction_orders(bids)
    result = clear(orders, tick_sizes(default_catalogue(), orders))
    wire = result_to_wire(result)
    assert wire["trades"] == []
    events = [
        _event(p, "DayAheadBidsCollected", partition=p, orders=o, symbols=[GZ] if o else [])
        for p, o in bids.items()
    ]
    events += [
        _event(
            10 + p,
            "DayAheadCleared",
            partition=p,
            symbols=[GZ] if p == 0 else [],
            prices=wire["prices"],
            trades=[],
            accepted=wire["accepted"] if p == 0 else {},
            rejected=wire["rejected"] if p == 0 else {},
        )
        for p in range(PARTITIONS)
    ]
    events.append(
        _event(
            20,
            "DayAheadAuctionCompleted",
            prices=wire["prices"],
            volumes={},
            welfare=result.welfare,
            bound=result.bound,
            gap_ppm=result.gap_ppm,
            status=result.status,
            orders=len(orders),
            accepted=len(result.accepted),
            solve_ms=1,
            partitions=[0, 1],
        )
    )
    events.append(
        _event(30, "DayAheadBidsCollected", partition=2, orders=late, symbols=[GZ] if late else [])
    )
    store = open_event_store(f"sqlite+aiosqlite:///{tmp_path / 'events.sqlite3'}")
    await store.initialise(upgrade_to_head)
    try:
        await store.append(events)
        return await audit_auction(store, default_catalogue(), DAY, PARTITIONS)
    finally:
        await store.close()


async def test_empty_bids_stored_after_the_result_are_no_discrepancy(tmp_path: Path) -> None:
    report = await _audit(tmp_path, late=[])
    assert report.discrepancies == []
    assert report.orders == 2
    assert report.welfare == report.resolved_welfare == 0


async def test_bids_the_result_left_out_are_a_discrepancy(tmp_path: Path) -> None:
    report = await _audit(tmp_path, late=[_bid("late", "buy", 1_500, 0)])
    assert "bids of partitions [2] are not in the result of partitions [0, 1]" in (
        report.discrepancies
    )
