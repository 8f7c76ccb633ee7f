"""The simulated reseller learns from the hours it held to their gate: it buys one unit an hour
until some have closed, then, while its resales earned back what the hours cost, twice what it
resold of an hour on average (at most a lot); once they have not, one unit an hour."""

from __future__ import annotations

from collections.abc import Sequence

from exchange.adapters.inprocess_log import InProcessLog
from exchange.domain.messages import PlaceOrder
from exchange.pipeline import Topics
from simulations.agents import GATE_MS, HOUR_MS, LOT, Context, Holding, Reseller, symbol_at
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


def _close(
    reseller: Reseller, holding: Holding, ctx: Context, bought: int, resold: int
) -> list[int]:
    """`bought` units of the holding filled at 6.00 元; an hour before the gate its resale
    order has sold `resold` of them at 7.20 元; then the gate closes and the reseller acts:
    what it buys then."""
    ctx.view.orders[holding.buy_order] = OrderState(
        bought, filled=bought, paid=600 * bought, open=False
    )
    later = _market(holding.start_ms - GATE_MS - HOUR_MS)
    later.view.orders = ctx.view.orders
    reseller.act(later)
    assert holding.sell_order is not None
    ctx.view.orders[holding.sell_order] = OrderState(
        bought, filled=resold, paid=720 * resold, open=resold < bought
    )
    closed = _market(holding.start_ms - GATE_MS)
    closed.view.orders = ctx.view.orders
    return _bought(reseller.act(closed))


def test_a_new_reseller_buys_one_unit_an_hour_until_hours_it_held_reach_their_gate() -> None:
    reseller = _reseller()
    assert _bought(reseller.act(_market(START))) == [1] * (24 * len(WEST))
    # An hour later nothing it bought has reached its gate yet: still one unit an hour.
    assert set(_bought(reseller.act(_market(START + HOUR_MS)))) == {1}


def test_a_reseller_whose_closed_hours_paid_back_buys_twice_what_they_resold() -> None:
    reseller = _reseller()
    ctx = _market(START)
    reseller.act(ctx)
    first, second = reseller.holdings[0], reseller.holdings[len(WEST)]
    assert second.start_ms == first.start_ms + HOUR_MS
    # Its first hour's unit resells at 7.20 元 before the gate, then the gate closes.
    assert set(_close(reseller, first, ctx, bought=1, resold=1)) == {2}
    assert (reseller.spent_past, reseller.earned_past) == (600, 720)
    # The next hour's unit resells too: two hours closed, 2 x 2 units resold // 2 hours.
    assert set(_close(reseller, second, ctx, bought=1, resold=1)) == {2}
    assert (reseller.hours_closed, reseller.units_resold) == (2, 2)
    # Hours of which it resold 6 units on average would make it buy 12: it buys a lot.
    reseller.units_resold = 12
    assert reseller.units_per_hour() == LOT


def test_a_reseller_left_holding_unsold_hours_buys_one_unit_an_hour() -> None:
    reseller = _reseller()
    ctx = _market(START)
    reseller.act(ctx)
    first, second = reseller.holdings[0], reseller.holdings[len(WEST)]
    assert set(_close(reseller, first, ctx, bought=1, resold=1)) == {2}
    # Its next hour resells nothing before the gate: 7.20 元 back for 12.00 元 spent.
    bought = _close(reseller, second, ctx, bought=1, resold=0)
    assert bought
    assert set(bought) == {1}
    assert (reseller.spent_past, reseller.earned_past) == (1200, 720)
