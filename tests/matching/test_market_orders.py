"""Market orders: an IOC limited by the protection band around the reference price, if there is
one (protection > 0), and by the order's own cap (price > 0)."""

from __future__ import annotations

import pytest

from matching import book as B
from matching import outputs as O
from matching.engine import MatchingEngine
from matching.outputs import CancelReason

H = B.HOUR_MS
SYMBOL = "F.X.0"


def traded_at_100(protection: int) -> MatchingEngine:
    """A continuous book whose reference is 100 (sell 5@100, buy 5@100), asks 10@101 and
    10@110 and bids 10@99 and 10@90 resting."""
    engine = MatchingEngine(halt_ms=1_000)
    engine.list_contract(0, SYMBOL, "F.X", 10 * H, 0, protection=protection, continuous=True)
    engine.submit(1, SYMBOL, "s0", "s", B.SELL, 100, 5)
    engine.submit(2, SYMBOL, "b0", "b", B.BUY, 100, 5)
    engine.submit(3, SYMBOL, "s1", "s", B.SELL, 101, 10)
    engine.submit(4, SYMBOL, "s2", "s", B.SELL, 110, 10)
    engine.submit(5, SYMBOL, "b1", "b", B.BUY, 99, 10)
    engine.submit(6, SYMBOL, "b2", "b", B.BUY, 90, 10)
    assert engine.books[SYMBOL].reference == 100
    engine.take_events()
    return engine


def outcome(
    engine: MatchingEngine,
) -> tuple[list[tuple[int, int]], list[tuple[str, int, CancelReason]]]:
    """(price, quantity) of each trade, and (order, remaining, reason) of each cancel."""
    trades = []
    cancels = []
    for event in engine.take_events():
        match event:
            case (O.TRADE, _, _, price, quantity, *_):
                trades.append((price, quantity))
            case (O.CANCELLED, _, order_id, _, _, remaining, reason):
                cancels.append((order_id, remaining, reason))
    return trades, cancels


def test_without_protection_a_market_buy_takes_what_its_cap_allows() -> None:
    engine = traded_at_100(protection=0)
    engine.submit(10, SYMBOL, "m", "t", B.BUY, 105, 10, tif=B.IOC, market=True)
    assert outcome(engine) == ([(101, 10)], [])
    assert engine.depth(SYMBOL)[1] == [(110, 10)]


def test_without_protection_or_cap_a_market_order_sweeps_the_book() -> None:
    engine = traded_at_100(protection=0)
    engine.submit(10, SYMBOL, "m", "t", B.SELL, 0, 25, tif=B.IOC, market=True)
    assert outcome(engine) == ([(99, 10), (90, 10)], [("m", 5, CancelReason.MARKET_PROTECTION)])


def test_without_protection_the_cap_still_limits_a_market_sell() -> None:
    engine = traded_at_100(protection=0)
    engine.submit(10, SYMBOL, "m", "t", B.SELL, 95, 15, tif=B.IOC, market=True)
    assert outcome(engine) == ([(99, 10)], [("m", 5, CancelReason.MARKET_PROTECTION)])


@pytest.mark.parametrize(("side", "cap", "taken"), [(B.BUY, 0, 101), (B.SELL, 0, 99)])
def test_a_protection_band_limits_a_market_order_around_the_reference(
    side: str, cap: int, taken: int
) -> None:
    # 100 +- 5: the first level (101 or 99) is within, the next (110 or 90) is not.
    engine = traded_at_100(protection=5)
    engine.submit(10, SYMBOL, "m", "t", side, cap, 15, tif=B.IOC, market=True)
    assert outcome(engine) == ([(taken, 10)], [("m", 5, CancelReason.MARKET_PROTECTION)])


def test_the_nearer_of_band_and_cap_limits_a_market_order() -> None:
    engine = traded_at_100(protection=20)
    engine.submit(10, SYMBOL, "m", "t", B.BUY, 105, 15, tif=B.IOC, market=True)
    assert outcome(engine) == ([(101, 10)], [("m", 5, CancelReason.MARKET_PROTECTION)])
