"""Market data folded from events: depth with sequence numbers, candles and statistics on log
time, private routing, and what happens to a subscriber that falls behind."""

from __future__ import annotations

import asyncio
from typing import Any

from api.keys import Principal, Role
from api.marketdata import (
    DAY_MS,
    HOUR_MS,
    MAX_RESYNCS,
    MINUTE_MS,
    RECENT_TRADES,
    MarketData,
    Subscriber,
)
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import (
    BookChanged,
    CapacityDeposited,
    FundsDeposited,
    ListingChanged,
    MarketControlRejected,
    MarketControlRequested,
    OrderAccepted,
    TradeExecuted,
)
from exchange.pipeline import Topics

GZ0 = "H100-80G.GZ.20271201T00"
NMG0 = "A100-80G.NMG.20271201T00"
T0 = 1_795_000_000_000 - 1_795_000_000_000 % DAY_MS


class Feed:
    """Events with fresh ids, as if read from one partition of the events topic."""

    def __init__(self, market: MarketData) -> None:
        self.market = market
        self.offset = 0

    def __call__(self, event_type: type[Any], **fields: Any) -> None:
        self.offset += 1
        event = event_type(event_id=f"t.orders:0:{self.offset}:0", **fields)
        self.market.apply(event, 0)


def _market() -> tuple[MarketData, Feed]:
    market = MarketData(None, Topics.named("t", 1, 1), default_catalogue())  # type: ignore[arg-type]
    return market, Feed(market)


def _trade(feed: Feed, n: int, price: int, quantity: int, ts: int, symbol: str = GZ0) -> None:
    feed(
        TradeExecuted,
        ts=ts,
        trade_id=f"{symbol}:{n}",
        symbol=symbol,
        price=price,
        quantity=quantity,
        buy_order_id="b",
        sell_order_id="s",
        buyer_id="buyer",
        seller_id="seller",
        aggressor="buy",
    )


def _drain(subscriber: Subscriber) -> list[dict[str, Any]]:
    messages = []
    while not subscriber.queue.empty():
        messages.append(subscriber.queue.get_nowait())
    return messages


async def test_depth_is_a_snapshot_then_increments_numbered_per_contract() -> None:
    market, feed = _market()
    feed(BookChanged, ts=T0, symbol=GZ0, seq=1, bids=[(1790, 4)], asks=[])
    subscriber = market.subscriber()
    market.subscribe(subscriber, [GZ0], ["depth"])
    feed(BookChanged, ts=T0 + 1, symbol=GZ0, seq=2, bids=[], asks=[(1800, 2)])
    feed(BookChanged, ts=T0 + 2, symbol=NMG0, seq=1, bids=[(1100, 1)], asks=[])
    feed(BookChanged, ts=T0 + 3, symbol=GZ0, seq=3, bids=[(1790, 0)], asks=[])
    messages = _drain(subscriber)
    assert messages[0] == {
        "type": "depth_snapshot",
        "symbol": GZ0,
        "seq": 1,
        "bids": [[1790, 4]],
        "asks": [],
        "ts": T0,
    }
    assert [(m["type"], m["seq"]) for m in messages[1:]] == [("depth", 2), ("depth", 3)]
    assert messages[2]["bids"] == [[1790, 0]], "a level at 0 is gone"


async def test_a_repeated_event_changes_nothing() -> None:
    market, _ = _market()
    event = BookChanged(
        event_id="t.orders:0:1:0", ts=T0, symbol=GZ0, seq=1, bids=[(1790, 4)], asks=[]
    )
    market.apply(event, 0)
    market.apply(event, 0)
    assert market.views[GZ0].bids == {1790: 4}
    assert market.views[GZ0].seq == 1


async def test_candles_and_24_hour_statistics_follow_the_log_time() -> None:
    market, feed = _market()
    _trade(feed, 1, 1800, 2, T0 + 5_000)
    _trade(feed, 2, 1820, 1, T0 + 50_000)
    _trade(feed, 3, 1790, 3, T0 + MINUTE_MS + 1)
    minutes = market.candles(GZ0, "1m", 10)
    assert [(c["open"], c["high"], c["low"], c["close"], c["volume"]) for c in minutes] == [
        (1800, 1820, 1800, 1820, 3),
        (1790, 1790, 1790, 1790, 3),
    ]
    hours = market.candles(GZ0, "1h", 10)
    assert len(hours) == 1
    assert hours[0]["turnover"] == 1800 * 2 + 1820 + 1790 * 3
    stats = market.stats(GZ0)
    assert (stats["open"], stats["high"], stats["low"], stats["last"]) == (1800, 1820, 1790, 1790)
    assert stats["volume"] == 6
    assert stats["trades"] == 3
    assert stats["vwap"] == (1800 * 2 + 1820 + 1790 * 3 + 3) // 6
    assert stats["last_per_std"] == 1790, "an H100 hour is one standard card-hour"

    # A day later (log time) the old trades leave the window; the last price stays.
    _trade(feed, 1, 1100, 1, T0 + DAY_MS + 2 * MINUTE_MS, symbol=NMG0)
    later = market.stats(GZ0)
    assert later["volume"] == 0
    assert later["open"] is None
    assert later["last"] == 1790
    assert market.stats(NMG0)["last_per_std"] == 3488


async def test_a_contract_without_trades_shares_empty_series_until_its_first_trade() -> None:
    # A month of listed hours makes thousands of views that never trade: they share empties,
    # and a first trade gives only its own view bounded series of its own.
    market, feed = _market()
    quiet, traded = market.views[NMG0], market.views[GZ0]
    assert quiet.candles is traded.candles
    assert not quiet.trades
    for n in range(RECENT_TRADES + 5):
        _trade(feed, n + 1, 1800, 1, T0 + n * MINUTE_MS)
    assert len(traded.trades) == RECENT_TRADES
    assert traded.trades[-1].trade_id == f"{GZ0}:{RECENT_TRADES + 5}"
    assert len(traded.candles["1m"]) == RECENT_TRADES + 5
    assert quiet.trades == ()
    assert quiet.candles["1m"] == quiet.candles["1h"] == ()
    assert market.candles(NMG0, "1m", 10) == []
    assert market.stats(NMG0)["last"] is None


async def test_a_products_history_merges_its_delivery_hours_by_hour_or_china_day() -> None:
    market, feed = _market()
    gz1 = "H100-80G.GZ.20271201T01"
    _trade(feed, 1, 1800, 2, T0 + 5_000)
    _trade(feed, 1, 1900, 1, T0 + 6_000, symbol=gz1)
    _trade(feed, 2, 1700, 1, T0 + 3 * HOUR_MS, symbol=gz1)
    # 16:00 UTC is midnight in China: this trade falls on the next CST day.
    _trade(feed, 3, 2000, 1, T0 + 16 * HOUR_MS)
    _trade(feed, 1, 1100, 5, T0 + 5_000, symbol=NMG0)  # another family

    hourly = market.family_history("H100-80G.GZ", days=False, limit=10)
    assert [(p["start"], p["volume"], p["low"], p["high"]) for p in hourly] == [
        (T0, 3, 1800, 1900),
        (T0 + 3 * HOUR_MS, 1, 1700, 1700),
        (T0 + 16 * HOUR_MS, 1, 2000, 2000),
    ]
    assert hourly[0]["vwap"] == (1800 * 2 + 1900) // 3
    assert hourly[0]["vwap_per_std"] == hourly[0]["vwap"], "an H100 hour is the standard"

    daily = market.family_history("H100-80G.GZ", days=True, limit=10)
    cst_midnight = T0 - 8 * HOUR_MS
    assert [(p["start"], p["volume"], p["trades"]) for p in daily] == [
        (cst_midnight, 4, 3),
        (cst_midnight + DAY_MS, 1, 1),
    ]
    assert market.family_history("H100-80G.GZ", days=True, limit=1) == daily[-1:]
    nmg = market.family_history("A100-80G.NMG", days=True, limit=10)
    assert nmg[0]["vwap_per_std"] == 3488, "A100 at 11.00 is 34.88 per standard card-hour"


async def test_private_updates_go_to_the_owning_account_only() -> None:
    market, feed = _market()
    mine, theirs = market.subscriber(), market.subscriber()
    mine.principal = Principal("k1", "buyer", Role.BUYER)
    theirs.principal = Principal("k2", "someone-else", Role.BUYER)
    market.subscribe_private(mine, ["orders", "fills", "balances"])
    market.subscribe_private(theirs, ["orders", "fills", "balances"])
    assert _drain(mine)[0]["type"] == "account_snapshot"
    _drain(theirs)
    # The currency field is new in version 2 of the event.
    currency = {"currency": "CNY"} if "currency" in FundsDeposited.model_fields else {}
    feed(FundsDeposited, ts=T0, deposit_id="d", account_id="buyer", amount=10_000, **currency)
    feed(CapacityDeposited, ts=T0, deposit_id="e", account_id="seller", symbol=GZ0, quantity=5)
    feed(
        OrderAccepted,
        ts=T0,
        order_id="b",
        account_id="buyer",
        symbol=GZ0,
        side="buy",
        price=1850,
        quantity=2,
    )
    _trade(feed, 1, 1800, 2, T0 + 1)
    got = _drain(mine)
    assert [m["type"] for m in got] == ["balance", "order", "balance", "fill", "order", "balance"]
    assert got[-1]["cash"] == {"available": 10_000 - 3600, "held": 0}
    assert got[-1]["position"] == 2
    assert got[-2]["status"] == "filled"
    assert got[3]["liquidity"] == "taker"
    assert _drain(theirs) == []


async def test_a_slow_subscriber_gets_a_snapshot_instead_of_what_it_missed() -> None:
    market, feed = _market()
    market.queue_size = 4
    subscriber = market.subscriber()
    market.subscribe(subscriber, [GZ0], ["depth"])
    for seq in range(1, 7):
        feed(BookChanged, ts=T0 + seq, symbol=GZ0, seq=seq, bids=[(1000 + seq * 10, seq)], asks=[])
    messages = _drain(subscriber)
    resync = messages[0]
    assert resync["type"] == "resync"
    assert "fell behind" in resync["reason"]
    snapshot = resync["snapshots"][0]
    assert snapshot["type"] == "depth_snapshot"
    assert snapshot["seq"] == 4
    assert [m["seq"] for m in messages[1:]] == [5, 6], "then the increments go on"
    assert subscriber.dropped_reason is None


async def test_a_subscriber_that_keeps_falling_behind_is_disconnected_with_the_reason() -> None:
    market, feed = _market()
    market.queue_size = 4
    subscriber = market.subscriber()
    market.subscribe(subscriber, [GZ0], ["depth"])
    for seq in range(1, 6 * (MAX_RESYNCS + 2)):
        feed(BookChanged, ts=T0 + seq, symbol=GZ0, seq=seq, bids=[(1000 + seq, 1)], asks=[])
    assert subscriber.dropped_reason is not None
    assert subscriber.dropped_reason.startswith("too slow")
    assert subscriber not in market.subscribers
    assert subscriber.queue.empty()


async def test_a_slow_subscriber_never_blocks_the_feed() -> None:
    market, feed = _market()
    market.queue_size = 2
    stuck = [market.subscriber() for _ in range(50)]
    for subscriber in stuck:
        market.subscribe(subscriber, [GZ0], ["quote", "depth", "trades", "stats", "candles"])

    async def flood() -> None:
        for n in range(1, 2001):
            _trade(feed, n, 1800, 1, T0 + n)

    await asyncio.wait_for(flood(), 10)
    assert all(s.dropped_reason for s in stuck)
    assert market.views[GZ0].trades[-1].trade_id == f"{GZ0}:2000"


async def test_a_contract_shows_the_band_matching_keeps_for_it() -> None:
    market, feed = _market()
    gz1 = "H100-80G.GZ.20271201T01"

    def band(target: str, width: int) -> None:
        feed(
            MarketControlRequested,
            ts=T0,
            operator_id="ops",
            action="set_band",
            symbol=target,
            reason="",
            band=width,
        )

    assert (market.band(GZ0), market.band(NMG0)) == (0, 0)
    band(GZ0, 50)
    band("H100-80G.GZ", 80)
    assert (market.band(GZ0), market.band(gz1), market.band(NMG0)) == (80, 80, 0)
    band(GZ0, 30)
    assert (market.band(GZ0), market.band(gz1)) == (30, 80)
    # Matching refused the next one (no book there): the bands before it hold. A refusal by
    # risk (a forged command, later) changed nothing and puts nothing back.
    band("H100-80G.GZ", 90)

    def refused(ts: int, reason: str) -> None:
        feed(
            MarketControlRejected,
            ts=ts,
            operator_id="ops",
            action="set_band",
            symbol="H100-80G.GZ",
            reason=reason,
            message="refused",
        )

    refused(T0, "unknown_contract")
    assert (market.band(GZ0), market.band(gz1)) == (30, 80)
    band("H100-80G.GZ", 60)
    refused(T0 + 1, "not_operator")
    assert (market.band(GZ0), market.band(gz1)) == (60, 60)


async def test_a_strip_s_volume_and_average_price_count_its_hours() -> None:
    # A week's strip is priced per card-hour and bought in cards for each of its 168 hours:
    # its volume and turnover count every hour, so its average price is its price, and the
    # family's history, merged with hourly trades, averages between the lowest and highest.
    market, feed = _market()
    week = "H100-80G.GZ.W20271206"
    feed(ListingChanged, ts=T0, symbol=week, listed=True, operator_id="ops", reason="")
    _trade(feed, 1, 1010, 1, T0 + 5_000, symbol=week)
    _trade(feed, 2, 2500, 2, T0 + 6_000)
    stats = market.stats(week)
    assert (stats["volume"], stats["turnover"]) == (168, 1010 * 168)
    assert stats["vwap"] == stats["vwap_per_std"] == 1010
    assert market.candles(week, "1h", 1)[0]["volume"] == 168

    daily = market.family_history("H100-80G.GZ", days=True, limit=10)
    assert len(daily) == 1
    day = daily[0]
    assert (day["low"], day["high"], day["volume"]) == (1010, 2500, 168 + 2)
    assert day["turnover"] == 1010 * 168 + 2500 * 2
    # (169,680 + 5,000) / 170 = 1,027.53: rounded half up to the fen.
    assert day["vwap"] == 1028
    assert day["low"] <= day["vwap"] <= day["high"]
