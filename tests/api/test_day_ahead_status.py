"""A day-ahead or intraday auction's status, read from its stored events: `collecting` before
its gate, `clearing` once bids are collected (or just past the gate, while the partitions
collect), `cleared` with its result, and `not_held` when no partition collected bids for it
well past the gate: its gate passed before the exchange ran the auction, so it never ran
(it used to read `clearing` forever)."""

from __future__ import annotations

import asyncio
from typing import Any

from cx_client.models import DayAheadAuction, DayAheadResults

from api.dayahead import NOT_HELD_AFTER_MS, auction_document, results_document
from api.marketdata import MarketData
from exchange.domain.catalogue import MarketRules, default_catalogue
from exchange.domain.messages import AnyEvent, DayAheadAuctionCompleted, DayAheadBidsCollected
from exchange.pipeline import Topics

HOUR_MS = 3_600_000
CATALOGUE = default_catalogue(
    MarketRules(day_ahead_gate_ms=12 * HOUR_MS, intraday_every_ms=HOUR_MS)
)
DATE = "2027-12-02"
GATE_MS = CATALOGUE.rules.auction_gate(DATE)
INTRADAY = "2027-12-02T19:00"
INTRADAY_GATE_MS = CATALOGUE.rules.auction_gate(INTRADAY)


class StoredAuctions:
    """The ledger's reads of the day-ahead documents, over stored events by auction, counting
    the reads of each type."""

    def __init__(self, events: dict[str, list[AnyEvent]]) -> None:
        self.events = events
        self.reads: list[tuple[str, ...]] = []

    async def day_ahead_events(self, day: str, types: tuple[str, ...]) -> list[AnyEvent]:
        self.reads.append(types)
        return [event for event in self.events.get(day, []) if event.type in types]

    async def account_order_symbols(self, account_id: str, order_ids: set[str]) -> dict[str, str]:
        return {}


def _collected(day: str, ts: int) -> DayAheadBidsCollected:
    return DayAheadBidsCollected(
        event_id=f"c-{day}", ts=ts, day=day, partition=0, orders=[], symbols=[]
    )


def _completed(day: str, ts: int) -> DayAheadAuctionCompleted:
    return DayAheadAuctionCompleted(
        event_id=f"d-{day}", ts=ts, day=day, prices={}, volumes={}, welfare=0, bound=0,
        gap_ppm=0, status="optimal", orders=0, accepted=0, solve_ms=1, partitions=[0],
    )  # fmt: skip


def _status(
    ledger: StoredAuctions, key: str, now_ms: int, collected_seen: frozenset[str] = frozenset()
) -> str:
    document: dict[str, Any] = asyncio.run(
        auction_document(ledger, CATALOGUE, key, now_ms, collected_seen)  # type: ignore[arg-type]
    )
    results: dict[str, Any] = asyncio.run(
        results_document(ledger, CATALOGUE, key, "b", now_ms, collected_seen)  # type: ignore[arg-type]
    )
    assert results["status"] == document["status"]
    # The typed client reads every status the API answers.
    assert DayAheadAuction.model_validate(document).status == document["status"]
    assert DayAheadResults.model_validate(results).status == document["status"]
    return str(document["status"])


def test_an_auction_no_partition_collected_is_not_held_once_well_past_its_gate() -> None:
    nothing = StoredAuctions({})
    assert _status(nothing, DATE, GATE_MS - 1) == "collecting"
    # Just past the gate the partitions may not have collected yet, or the store not held it.
    assert _status(nothing, DATE, GATE_MS) == "clearing"
    assert _status(nothing, DATE, GATE_MS + NOT_HELD_AFTER_MS - 1) == "clearing"
    assert _status(nothing, DATE, GATE_MS + NOT_HELD_AFTER_MS) == "not_held"
    # A day long before the exchange ran any auction, and an intraday auction nobody held.
    assert _status(nothing, "2020-01-01", GATE_MS) == "not_held"
    assert _status(nothing, INTRADAY, INTRADAY_GATE_MS + HOUR_MS) == "not_held"


def test_an_auction_whose_bids_were_collected_is_clearing_until_its_result_then_cleared() -> None:
    late = GATE_MS + 5 * NOT_HELD_AFTER_MS
    collected = StoredAuctions({DATE: [_collected(DATE, GATE_MS)]})
    assert _status(collected, DATE, late) == "clearing"
    intraday = StoredAuctions({INTRADAY: [_collected(INTRADAY, INTRADAY_GATE_MS)]})
    assert _status(intraday, INTRADAY, INTRADAY_GATE_MS + HOUR_MS) == "clearing"
    cleared = StoredAuctions({DATE: [_collected(DATE, GATE_MS), _completed(DATE, GATE_MS + 9)]})
    assert _status(cleared, DATE, late) == "cleared"


def test_an_auction_the_fold_saw_collected_is_clearing_while_settlement_has_not_stored_it() -> None:
    """The API's fold of the events topic, whose log time decides "well past the gate", runs
    ahead of settlement: bids it saw collected and the store does not hold yet are an auction
    clearing, not one never held."""
    late = GATE_MS + 5 * NOT_HELD_AFTER_MS
    behind = StoredAuctions({})
    assert _status(behind, DATE, late) == "not_held"
    assert _status(behind, DATE, late, frozenset({DATE})) == "clearing"
    assert _status(behind, INTRADAY, INTRADAY_GATE_MS + HOUR_MS, frozenset({INTRADAY})) == (
        "clearing"
    )
    assert _status(behind, DATE, late, frozenset({INTRADAY})) == "not_held"


def test_the_market_fold_remembers_which_auctions_had_bids_collected() -> None:
    market = MarketData(None, Topics.named("t", 1, 2), CATALOGUE)  # type: ignore[arg-type]
    # As matching writes them: ids `topic:partition:offset:n` of the input that caused them.
    day = _collected(DATE, GATE_MS).model_copy(update={"event_id": "t.orders:0:7:0"})
    hour = _collected(INTRADAY, INTRADAY_GATE_MS).model_copy(update={"event_id": "t.orders:1:9:0"})
    market.apply(day, 0)
    market.apply(hour, 1)
    assert market.day_ahead_collected == {DATE, INTRADAY}


def test_the_auction_document_reads_the_bids_only_to_tell_clearing_from_not_held() -> None:
    cleared = StoredAuctions({DATE: [_collected(DATE, GATE_MS), _completed(DATE, GATE_MS + 9)]})
    asyncio.run(auction_document(cleared, CATALOGUE, DATE, GATE_MS + HOUR_MS))  # type: ignore[arg-type]
    assert cleared.reads == [("DayAheadAuctionCompleted",)]
    waiting = StoredAuctions({})
    asyncio.run(auction_document(waiting, CATALOGUE, DATE, GATE_MS + 1))  # type: ignore[arg-type]
    assert waiting.reads == [("DayAheadAuctionCompleted",)]
