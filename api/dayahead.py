"""The day-ahead auction as the API shows it, read from the stored auction events: a delivery
day's status, its clearing prices and volumes per region, hour and class, and what each order
of an account got.

A day's auction is `collecting` until its gate (`CX_DAY_AHEAD_GATE`, CST, the day before
delivery), `clearing` from the gate until its result is stored, then `cleared`. An auction no
matching partition collected bids for by NOT_HELD_AFTER_MS past its gate never ran and never
will (`not_held`): its gate passed before the exchange started (or before it ran day-ahead
auctions), since a partition that is up collects every auction in gate order at its first
record past the gate, and a restarted one catches up on those it slept through. The result is
the stored `DayAheadAuctionCompleted` (prices, volumes, welfare); what each order got is in the
`DayAheadCleared` of its matching partition, and what it asked in that partition's
`DayAheadBidsCollected`. All three are events of the day's own stream (`day-ahead-<date>`), so
they are read from the event store rather than kept in a projection of their own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from api.ports import Ledger
from api.problems import Problem
from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    Catalogue,
    SymbolError,
    intraday_key,
    is_intraday_key,
    parse_symbol,
)
from exchange.domain.messages import (
    DayAheadAuctionCompleted,
    DayAheadBidsCollected,
    DayAheadCleared,
)
from exchange.domain.risk.gates import NO_DAY_AHEAD_WORDS

COLLECTING = "collecting"
CLEARING = "clearing"
CLEARED = "cleared"
NOT_HELD = "not_held"
NOT_HELD_AFTER_MS = 10 * 60_000
"""How long past its gate (in log time) an auction with no stored `DayAheadBidsCollected`
still shows `clearing`: the partitions collect at their first record past the gate, and the
event store takes a moment to hold what they wrote. Well beyond that, no partition collected
the auction, and none will."""


def cst_text(ms: int) -> str:
    """A log time as ISO 8601 in China Standard Time, to the millisecond."""
    return datetime.fromtimestamp(ms / 1000, CHINA_STANDARD_TIME).isoformat(timespec="milliseconds")


def gate_of(catalogue: Catalogue, date: str) -> int:
    """The gate (log time, ms) of the day-ahead auction of a CST date, or of the intraday
    auction at a CST time YYYY-MM-DDTHH:MM; 422 for a name that is neither, 404 when the
    exchange runs no such auction."""
    rules = catalogue.rules
    try:
        gate = rules.auction_gate(date)
    except ValueError:
        raise Problem(
            422,
            "invalid-date",
            f"参数 date: {date[:80]!r} 不是日期 YYYY-MM-DD(日前竞价)或时间 YYYY-MM-DDTHH:MM"
            f"(日内竞价), 中国标准时间 is not a date YYYY-MM-DD (a day-ahead auction) or a "
            "time YYYY-MM-DDTHH:MM (an intraday auction), China Standard Time",
            field="date",
        ) from None
    if rules.day_ahead_gate_ms is None:
        raise Problem(
            404,
            "no_day_ahead_auction",
            NO_DAY_AHEAD_WORDS,
        )
    every = rules.intraday_every_ms
    if is_intraday_key(date) and rules.intraday_auction_after(gate - 1) != gate:
        when = (
            "本交易所不举行日内集合竞价 this exchange runs no intraday auction"
            if every is None
            else f"日内集合竞价从北京时间 00:00 起每 {every // 3_600_000} 小时一场 intraday "
            f"auctions run every {every // 3_600_000} hours from 00:00 China Standard Time"
        )
        raise Problem(
            404,
            "no_intraday_auction",
            f"北京时间 {date.replace('T', ' ')} 没有日内集合竞价 no intraday auction runs at "
            f"{date} China Standard Time; {when}",
        )
    return gate


def _intraday_around(catalogue: Catalogue, now_ms: int) -> dict[str, str | None] | None:
    """The names of the last intraday auction whose gate has passed and of the next one (None
    on an exchange that runs none), so a reader can go from a day's auction to them."""
    rules = catalogue.rules
    every = rules.intraday_every_ms
    following = rules.intraday_auction_after(now_ms)
    if every is None or following is None:
        return None
    return {"previous": intraday_key(following - every), "next": intraday_key(following)}


def _status(
    completed: DayAheadAuctionCompleted | None, collected: bool, gate: int, now_ms: int
) -> str:
    """The auction's status from its stored events: `cleared` with a result; `collecting`
    before the gate; `clearing` once bids are collected (or just past the gate); else
    `not_held`."""
    if completed is not None:
        return CLEARED
    if now_ms < gate:
        return COLLECTING
    return CLEARING if collected or now_ms < gate + NOT_HELD_AFTER_MS else NOT_HELD


async def auction_document(
    ledger: Ledger,
    catalogue: Catalogue,
    date: str,
    now_ms: int,
    collected_seen: Collection[str] = (),
) -> dict[str, Any]:
    """A day's auction: status, gate, the solver's summary and per region, hour and class the
    clearing price and volume (DayAheadAuctionOut).

    `now_ms` is the log time the caller's fold of the events topic reached and
    `collected_seen` the auctions that fold saw bids collected for: settlement may be behind
    that fold, so an auction whose collection is not stored yet is still `clearing`, never
    `not_held`."""
    gate = gate_of(catalogue, date)
    stored = await ledger.day_ahead_events(date, ("DayAheadAuctionCompleted",))
    completed = next((e for e in reversed(stored) if isinstance(e, DayAheadAuctionCompleted)), None)
    # The bids (a busy day's are many) are read only when they decide between clearing and
    # not held.
    collected = (
        completed is None
        and now_ms >= gate + NOT_HELD_AFTER_MS
        and (
            date in collected_seen
            or bool(await ledger.day_ahead_events(date, ("DayAheadBidsCollected",)))
        )
    )
    document: dict[str, Any] = {
        "date": date,
        "status": _status(completed, collected, gate, now_ms),
        "gate": cst_text(gate).replace(".000", ""),
        "gate_ms": gate,
        "result": None,
        "regions": [],
        "intraday": _intraday_around(catalogue, now_ms),
    }
    if completed is None:
        return document
    document["result"] = {
        "welfare": completed.welfare,
        "bound": completed.bound,
        "gap_ppm": completed.gap_ppm,
        "solver_status": completed.status,
        "orders": completed.orders,
        "accepted": completed.accepted,
        "solve_ms": completed.solve_ms,
        "cleared_at": cst_text(completed.ts),
    }
    document["regions"] = _regions(completed)
    return document


def _regions(completed: DayAheadAuctionCompleted) -> list[dict[str, Any]]:
    """The clearing prices and volumes, region by region, hour by hour, class by class."""
    # By delivery start: an intraday auction's hours may run into the next day.
    hours: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for symbol in sorted({*completed.prices, *completed.volumes}):
        try:
            spec = parse_symbol(symbol)
        except SymbolError:
            continue
        start = spec.delivery_start.astimezone(CHINA_STANDARD_TIME)
        hours[spec.region][start.isoformat()].append(
            {
                "symbol": symbol,
                "resource_class": spec.resource_class.code,
                "price": completed.prices.get(symbol),
                "volume": completed.volumes.get(symbol, 0),
            }
        )
    return [
        {
            "region": region,
            "hours": [
                {
                    "hour": f"{datetime.fromisoformat(start):%H}:00",
                    "delivery_start": start,
                    "contracts": sorted(contracts, key=lambda c: c["resource_class"]),
                }
                for start, contracts in sorted(by_hour.items())
            ],
        }
        for region, by_hour in sorted(hours.items())
    ]


def _status_of(accepted: int, cleared: bool, resting: bool) -> str:
    """What an order got in an auction: `pending` until its result, `accepted` if it got any
    units; one that got none is `rejected` when the auction dropped it (a block, an
    alternative), `resting` when it stays in its book, trading on (an hourly order: matching
    returns those the result passes over to continuous trading)."""
    if not cleared:
        return "pending"
    if accepted:
        return "accepted"
    return "resting" if resting else "rejected"


NO_CLEARING_PRICE = "no_clearing_price"
OUT_OF_THE_MONEY = "out_of_the_money"


def _reason(stored: str | None, bid: Mapping[str, Any], prices: Mapping[str, int]) -> str | None:
    """Why an order got nothing, as the account reads it: the stored reason, except that a
    bid the solver called `no_clearing_price` (one of its hours got no price) is
    `out_of_the_money` when the hours that did clear already cost more than its limit over
    all its hours, whatever the others' price (never below 0). The stored result keeps the
    solver's reason, so replaying and auditing stored histories see what they always saw."""
    if stored != NO_CLEARING_PRICE or bid["side"] != "buy":
        return stored
    cleared_cost = sum(prices[symbol] for symbol in bid["symbols"] if symbol in prices)
    limit = int(bid["price"]) * len(bid["symbols"])
    return OUT_OF_THE_MONEY if cleared_cost > limit else stored


async def results_document(
    ledger: Ledger,
    catalogue: Catalogue,
    date: str,
    account_id: str,
    now_ms: int,
    collected_seen: Collection[str] = (),
) -> dict[str, Any]:
    """What each of an account's orders got in a day's auction (DayAheadResultsOut): before
    the result, the orders collected at the gate, `pending`. `now_ms` and `collected_seen` as
    for `auction_document`."""
    gate = gate_of(catalogue, date)
    stored = await ledger.day_ahead_events(
        date, ("DayAheadBidsCollected", "DayAheadCleared", "DayAheadAuctionCompleted")
    )
    completed = next((e for e in reversed(stored) if isinstance(e, DayAheadAuctionCompleted)), None)
    collections = [e for e in stored if isinstance(e, DayAheadBidsCollected)]
    bids = [bid for e in collections for bid in e.orders]
    mine = await ledger.account_order_symbols(account_id, {bid["order_id"] for bid in bids})
    accepted: dict[str, int] = {}
    rejected: dict[str, str] = {}
    fills: dict[str, list[dict[str, int | str]]] = defaultdict(list)
    cleared = completed is not None
    prices = completed.prices if completed is not None else {}
    for event in stored:
        if not isinstance(event, DayAheadCleared):
            continue
        accepted.update(event.accepted)
        rejected.update(event.rejected)
        for symbol, buy_id, sell_id, quantity, price in event.trades:
            for order_id in (buy_id, sell_id):
                if order_id in mine:
                    fills[order_id].append({"symbol": symbol, "price": price, "quantity": quantity})
    orders = []
    for bid in bids:
        order_id = bid["order_id"]
        if order_id not in mine:
            continue
        got = accepted.get(order_id, 0)
        status = _status_of(got, cleared, resting=[mine[order_id]] == bid["symbols"])
        order_fills = fills.get(order_id, [])
        orders.append(
            {
                "order_id": order_id,
                "group": bid.get("group"),
                "side": bid["side"],
                "symbols": bid["symbols"],
                "price": bid["price"],
                "quantity": bid["quantity"],
                "status": status,
                "accepted": got,
                "reason": _reason(rejected.get(order_id), bid, prices)
                if status in ("rejected", "resting")
                else None,
                "fills": order_fills,
                "amount": sum(int(f["price"]) * int(f["quantity"]) for f in order_fills),
            }
        )
    return {
        "date": date,
        "account_id": account_id,
        "status": _status(completed, bool(collections) or date in collected_seen, gate, now_ms),
        "orders": orders,
    }
