"""Worked call-auction examples; each clearing price is derived by hand in the comments.

D(p) is the demand at p (buy quantity limited at p or higher), S(p) the supply (sell quantity
limited at p or lower), V(p) = min(D, S) the executable volume, imbalance = D - S. Candidates
are the orders' limit prices plus the reference price. Rules, in order: max V, min |D - S|,
nearest the reference, lower price.
"""

from __future__ import annotations

from matching import book as B
from matching import outputs as O
from matching.engine import MatchingEngine
from matching.outputs import CancelReason, Output, StateReason

H = B.HOUR_MS


def listed(
    reference: int = 100, band: int = 0, symbols: tuple[str, ...] = ("F.X.0",)
) -> MatchingEngine:
    engine = MatchingEngine(halt_ms=1_000)
    for i, symbol in enumerate(symbols):
        engine.list_contract(0, symbol, "F.X", (10 + i) * H, reference, band=band)
    engine.take_events()
    return engine


def trades(events: list[Output]) -> list[tuple[str, int, int, str, str]]:
    """(symbol, price, quantity, taker, maker) of each trade: in an auction the taker is the buy
    order and the maker the sell order."""
    found = []
    for event in events:
        match event:
            case (O.TRADE, symbol, _, price, quantity, taker, maker, *_):
                found.append((symbol, price, quantity, taker, maker))
    return found


def test_opening_auction_maximises_volume_then_takes_the_price_nearest_the_reference() -> None:
    engine = listed(reference=100)
    engine.submit(1, "F.X.0", "B1", "b1", B.BUY, 103, 5)
    engine.submit(2, "F.X.0", "B2", "b2", B.BUY, 101, 3)
    engine.submit(3, "F.X.0", "B3", "b3", B.BUY, 99, 4)
    engine.submit(4, "F.X.0", "S1", "s1", B.SELL, 98, 2)
    engine.submit(5, "F.X.0", "S2", "s2", B.SELL, 100, 4)
    engine.submit(6, "F.X.0", "S3", "s3", B.SELL, 102, 5)
    engine.take_events()
    #   p     98  99  100  101  102  103
    #   D(p)  12  12    8    8    5    5
    #   S(p)   2   2    6    6   11   11
    #   V(p)   2   2    6    6    5    5
    # V is largest (6) at 100 and 101; |D - S| is 2 at both; 100 is the reference itself.
    engine.resume(10, "F.X.0")
    events = engine.take_events()
    assert events[0] == (O.AUCTION, "F.X.0", 100, 6, 2)
    # Buys by priority: B1 (103) takes 5, B2 (101) the last 1; sells: S1 2, S2 4.
    # Pairing in that order: B1-S1 2, B1-S2 3, B2-S2 1.
    assert trades(events) == [
        ("F.X.0", 100, 2, "B1", "S1"),
        ("F.X.0", 100, 3, "B1", "S2"),
        ("F.X.0", 100, 1, "B2", "S2"),
    ]
    assert events[-1] == (O.STATE, "F.X.0", O.CONTINUOUS, StateReason.OPENED)
    assert engine.depth("F.X.0") == ([(101, 2), (99, 4)], [(102, 5)])
    assert engine.books["F.X.0"].reference == 100


def test_equal_volume_and_imbalance_goes_to_the_candidate_nearest_the_reference() -> None:
    engine = listed(reference=50)
    engine.submit(1, "F.X.0", "B", "b", B.BUY, 52, 10)
    engine.submit(2, "F.X.0", "S1", "s", B.SELL, 48, 4)
    engine.submit(3, "F.X.0", "S2", "s", B.SELL, 51, 6)
    #   p     48  50  51  52
    #   D(p)  10  10  10  10
    #   S(p)   4   4  10  10
    #   V(p)   4   4  10  10     -> 51 and 52, both balanced (|D - S| = 0)
    # 51 is 1 from the reference 50, 52 is 2 away: 51.
    engine.take_events()
    engine.resume(5, "F.X.0")
    events = engine.take_events()
    assert events[0] == (O.AUCTION, "F.X.0", 51, 10, 0)
    assert trades(events) == [("F.X.0", 51, 4, "B", "S1"), ("F.X.0", 51, 6, "B", "S2")]


def test_the_reference_price_clears_when_it_lies_inside_the_crossed_range() -> None:
    engine = listed(reference=100)
    engine.submit(1, "F.X.0", "B", "b", B.BUY, 105, 5)
    engine.submit(2, "F.X.0", "S", "s", B.SELL, 95, 5)
    # Candidates 95, 100 (reference), 105: V = 5 and D - S = 0 at each; 100 is the reference.
    engine.take_events()
    engine.resume(5, "F.X.0")
    assert engine.take_events()[0] == (O.AUCTION, "F.X.0", 100, 5, 0)


def test_an_all_or_none_order_that_would_be_rationed_sits_out_and_keeps_resting() -> None:
    engine = listed(reference=100)
    engine.submit(1, "F.X.0", "A", "a", B.BUY, 101, 6, all_or_none=True)
    engine.submit(2, "F.X.0", "B", "b", B.BUY, 100, 2)
    engine.submit(3, "F.X.0", "S", "s", B.SELL, 99, 4)
    engine.take_events()
    # With A:    p     99  100  101
    #            D(p)   8    8    6
    #            S(p)   4    4    4
    #            V(p)   4    4    4, |D - S| 4, 4, 2  -> 101, where A would get 4 of its 6.
    # Without A: p     99  100
    #            D(p)   2    2
    #            S(p)   4    4
    #            V(p)   2    2, |D - S| 2, 2  -> nearest the reference: 100.
    engine.resume(5, "F.X.0")
    events = engine.take_events()
    assert events[0] == (O.AUCTION, "F.X.0", 100, 2, -2)
    assert trades(events) == [("F.X.0", 100, 2, "B", "S")]
    bids, asks = engine.open_orders("F.X.0")
    assert [(o.order_id, o.remaining, o.aon) for o in bids] == [("A", 6, True)]
    assert [(o.order_id, o.remaining) for o in asks] == [("S", 2)]
    # A is hidden: the displayed book shows only the ask.
    assert engine.depth("F.X.0") == ([], [(99, 2)])


def test_a_day_ahead_auction_accepts_a_block_whole_and_rejects_another_whole() -> None:
    engine = MatchingEngine()
    engine.list_contract(0, "F.X.0", "F.X", 10 * H, 90)
    engine.list_contract(0, "F.X.1", "F.X", 11 * H, 108)
    engine.submit(1, "F.X.0", "S0a", "p1", B.SELL, 88, 4)
    engine.submit(2, "F.X.0", "S0b", "p2", B.SELL, 92, 3)
    engine.submit(3, "F.X.1", "S1a", "p1", B.SELL, 106, 4)
    engine.submit(4, "F.X.1", "B1", "b1", B.BUY, 110, 2)
    engine.submit_block(5, "K1", "lab", B.BUY, ["F.X.0", "F.X.1"], 100, 4)
    engine.submit_block(6, "K2", "opc", B.BUY, ["F.X.0", "F.X.1"], 95, 3)
    engine.schedule_auction(7, "F.X", 1_000, ["F.X.0", "F.X.1"])
    engine.take_events()
    # Round 1, both blocks take part at any price (7 units bought in each hour).
    #   hour 0: p     88  90  92           hour 1: p     106  108  110
    #           D(p)   7   7   7                   D(p)    9    9    9
    #           S(p)   4   4   7                   S(p)    4    4    4
    #           V(p)   4   4   7  -> 92            V(p)    4    4    4, D - S = 5 everywhere
    #                                                      -> 108, the reference
    # Hour 1's 4 units all go to K1 (older); K2 gets none there, so K2 is dropped.
    # Round 2, K1 only (4 units an hour):
    #   hour 0: D = 4 everywhere; S = 4, 4, 7; V = 4; |D - S| = 0, 0, 3 -> 88 or 90,
    #           90 is the reference -> 90
    #   hour 1: D = 6 (K1 + B1), S = 4: V = 4, D - S = 2 everywhere -> 108
    # K1 pays (90 + 108) / 2 = 99 <= 100 on average: accepted.
    engine.advance(1_000)
    events = engine.take_events()
    assert events[0] == (O.CANCELLED, "F.X", "K2", "opc", B.BUY, 6, CancelReason.BLOCK_NOT_ACCEPTED)
    assert (O.AUCTION, "F.X.0", 90, 4, 0) in events
    assert (O.AUCTION, "F.X.1", 108, 4, 2) in events
    assert trades(events) == [("F.X.0", 90, 4, "K1", "S0a"), ("F.X.1", 108, 4, "K1", "S1a")]
    assert engine.blocks == {}
    assert engine.depth("F.X.0") == ([], [(92, 3)])
    assert engine.depth("F.X.1") == ([(110, 2)], [])


def test_a_block_waits_for_an_auction_that_covers_all_its_hours() -> None:
    engine = MatchingEngine()
    engine.list_contract(0, "F.X.0", "F.X", 10 * H, 100)
    engine.list_contract(0, "F.X.1", "F.X", 11 * H, 100)
    engine.submit(1, "F.X.0", "S0", "p", B.SELL, 100, 2)
    engine.submit_block(3, "K", "lab", B.BUY, ["F.X.0", "F.X.1"], 105, 2)
    engine.take_events()
    # Opening hour 0 alone: the block does not take part, so hour 0 has no demand.
    engine.resume(4, "F.X.0")
    assert engine.take_events()[0] == (O.AUCTION, "F.X.0", None, 0, 0)
    assert "K" in engine.blocks
    # Now its hours are in different phases; it waits until an hour's gate closure ends it.
    engine.advance(10 * H)
    events = engine.take_events()
    assert (O.EXPIRED, "F.X", "K", "lab", B.BUY, 4, CancelReason.GATE_CLOSURE) in events
    assert engine.blocks == {}


def test_block_average_price_breach_in_a_joint_auction() -> None:
    engine = MatchingEngine()
    engine.list_contract(0, "F.X.0", "F.X", 10 * H, 100)
    engine.list_contract(0, "F.X.1", "F.X", 11 * H, 100)
    engine.submit(1, "F.X.0", "S0", "p", B.SELL, 100, 2)
    engine.submit(2, "F.X.1", "S1", "p", B.SELL, 120, 2)
    engine.submit_block(3, "K", "lab", B.BUY, ["F.X.0", "F.X.1"], 105, 2)
    engine.schedule_auction(4, "F.X", 5, ["F.X.0", "F.X.1"])
    engine.take_events()
    # With K: hour 0 clears 2 at 100; hour 1: candidates 100 (V 0), 120 (V 2) -> 120.
    # K would pay (100 + 120) / 2 = 110 > 105: rejected whole; then V = 0 in both hours.
    engine.advance(5)
    events = engine.take_events()
    assert events[0] == (O.CANCELLED, "F.X", "K", "lab", B.BUY, 4, CancelReason.BLOCK_NOT_ACCEPTED)
    assert (O.AUCTION, "F.X.0", None, 0, 0) in events
    assert (O.AUCTION, "F.X.1", None, 0, 0) in events
    assert trades(events) == []


def test_a_circuit_breaker_halts_then_a_reopening_auction_uncrosses() -> None:
    engine = listed(reference=100, band=5)
    engine.resume(1, "F.X.0")
    engine.submit(2, "F.X.0", "S1", "s", B.SELL, 104, 3)
    engine.submit(3, "F.X.0", "S2", "s", B.SELL, 107, 2)
    engine.take_events()
    # The band is 100 +- 5: the buy takes 3 at 104, then meets 107 > 105 and halts the book.
    engine.submit(4, "F.X.0", "B", "b", B.BUY, 107, 5)
    events = engine.take_events()
    assert trades(events) == [("F.X.0", 104, 3, "B", "S1")]
    assert events[-1] == (O.STATE, "F.X.0", O.HALTED, StateReason.PRICE_BAND)
    assert engine.books["F.X.0"].state == O.HALTED
    # The remainder rests (crossed, which a halted book may be) until the reopening auction.
    # Reference is now 104 (the last trade). Candidates 104, 107:
    #   D(104) = 2, S(104) = 0 -> V 0;  D(107) = 2, S(107) = 2 -> V 2  -> 107.
    engine.advance(4 + 1_000)
    events = engine.take_events()
    assert events[0] == (O.AUCTION, "F.X.0", 107, 2, 0)
    assert trades(events) == [("F.X.0", 107, 2, "B", "S2")]
    assert events[-1] == (O.STATE, "F.X.0", O.CONTINUOUS, StateReason.REOPENED)


def test_gate_closure_expires_resting_orders_with_a_reason() -> None:
    engine = MatchingEngine()
    engine.list_contract(0, "F.X.0", "F.X", 10 * H, 100, open_at=0, close_at=10 * H - H // 2)
    engine.submit(1, "F.X.0", "B", "b", B.BUY, 99, 3)
    engine.take_events()
    engine.advance(10 * H - H // 2)
    assert engine.take_events() == [
        (O.EXPIRED, "F.X.0", "B", "b", B.BUY, 3, CancelReason.GATE_CLOSURE),
        (O.STATE, "F.X.0", O.CLOSED, StateReason.GATE_CLOSURE),
    ]
    engine.submit(10 * H - 1, "F.X.0", "late", "b", B.BUY, 99, 3)
    assert engine.take_events() == [(O.REJECTED, "F.X.0", "late", CancelReason.CONTRACT_CLOSED)]
    engine.advance(10 * H)
    assert engine.take_events() == [(O.STATE, "F.X.0", O.DELIVERED, StateReason.DELIVERY)]
