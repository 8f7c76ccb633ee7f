"""The simulated reseller learns from the hours it held to their gate: while its resales earned
back what the hours cost it buys a full lot, once they have not it buys one unit an hour."""

from __future__ import annotations

from collections.abc import Sequence

from exchange.adapters.inprocess_log import InProcessLog
from exchange.domain.messages import PlaceOrder
from exchange.pipeline import Topics
from simulations.agents import GATE_MS, HOUR_MS, LOT, Context, Reseller, symbol_at
from simulations.scenario import CARD, WEST
from simulations.view import Book, MarketView, OrderState

START = 1_830_268_800_000
"""2028-01-01 00:00 CST."""


def _market(now_ms: int) -> Context:
    """Every western hour 20 to 44 hours out offers 20 cards at 6.00 元 against a last trade
    of 10.00 元: cheap enough for the reseller's 12% discount."""
    view = MarketView(InProcessLog(), Topics.named("reseller", 1, 1))
    first = now_ms - now_ms % HOUR_MS + 20 * HOUR_MS
    for start in range(first, first + 24 * HOUR_MS, HOUR_MS):
        for region in WEST:
            view.books[symbol_at(CARD, region, start)] = Book(asks={600: 20})
    for region in WEST:
        view.last_price[f"{CARD}.{region}"] = 1000
    return Context(now_ms, now_ms + 10 * 24 * HOUR_MS, now_ms + 3 * 24 * HOUR_MS, 0, view)


def _reseller() -> Reseller:
    return Reseller("resell-1", 10**9, 0.12, 0.2, dict.fromkeys(WEST, 2800))


def _bought(commands: Sequence[object]) -> list[int]:
    return [c.quantity for c in commands if isinstance(c, PlaceOrder) and c.side == "buy"]


def test_a_reseller_whose_closed_hours_earned_back_their_cost_buys_full_lots() -> None:
    reseller = _reseller()
    ctx = _market(START)
    bought = _bought(reseller.act(ctx))
    assert bought == [LOT] * (24 * len(WEST))
    # Its first hour sells in full at 7.20 元 before the gate, then the gate closes.
    first = reseller.holdings[0]
    ctx.view.orders[first.buy_order] = OrderState(LOT, filled=LOT, paid=600 * LOT, open=False)
    later = _market(first.start_ms - GATE_MS - HOUR_MS)
    later.view.orders = ctx.view.orders
    reseller.act(later)
    assert first.sell_order is not None
    later.view.orders[first.sell_order] = OrderState(LOT, filled=LOT, paid=720 * LOT, open=False)
    closed = _market(first.start_ms)
    closed.view.orders = ctx.view.orders
    assert _bought(reseller.act(closed))[0] == LOT
    assert (reseller.spent_past, reseller.earned_past) == (600 * LOT, 720 * LOT)


def test_a_reseller_left_holding_unsold_hours_buys_one_unit_an_hour() -> None:
    reseller = _reseller()
    ctx = _market(START)
    reseller.act(ctx)
    first = reseller.holdings[0]
    ctx.view.orders[first.buy_order] = OrderState(LOT, filled=LOT, paid=600 * LOT, open=False)
    # Only 3 of its 8 units resell before the gate: 21.60 元 back for 48.00 元 spent.
    later = _market(first.start_ms - GATE_MS - HOUR_MS)
    later.view.orders = ctx.view.orders
    reseller.act(later)
    assert first.sell_order is not None
    later.view.orders[first.sell_order] = OrderState(LOT, filled=3, paid=720 * 3, open=False)
    closed = _market(first.start_ms)
    closed.view.orders = ctx.view.orders
    bought = _bought(reseller.act(closed))
    assert bought
    assert set(bought) == {1}
    assert (reseller.spent_past, reseller.earned_past) == (600 * LOT, 720 * 3)
