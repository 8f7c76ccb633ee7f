"""The plain book keeps price-time priority with lazy cancels and trades as the engine does,
and the bench's check holds: the engine and the plain book do the same work on the bench's
flows, and a flow they disagree on fails loudly."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from matching.book import IOC
from matching.outputs import CANCELLED, TRADE, CancelReason
from matching.plain_bench import (
    CANCEL,
    LIMIT,
    START_PRICE,
    START_TS,
    SYMBOL,
    TAKE,
    BenchMismatch,
    check_same_work,
    engine_commands,
    make_flow,
    new_engine,
    plain_commands,
    replay_engine,
    replay_plain,
)
from matching.plain_book import NO_ASK, PlainBook


def test_the_plain_book_fills_oldest_first_skips_cancelled_orders_and_drops_empty_levels() -> None:
    book = PlainBook()
    book.limit(1, False, 101, 5)
    book.limit(2, False, 101, 5)
    book.limit(3, False, 101, 5)
    book.limit(4, False, 102, 5)
    assert book.cancel(2)
    book.limit(5, True, 101, 7)  # fills 1, passes cancelled 2 by, takes 2 of 3

    assert (book.trades, book.traded) == (2, 7)
    assert not book.cancel(1)
    assert not book.cancel(2)
    assert book.orders[3][0] == 3
    assert 5 not in book.orders
    assert list(book.ask_prices) == [101, 102]
    assert book.best_ask == 101
    assert book.cancel(3)
    assert list(book.ask_prices) == [102]
    assert 101 not in book.asks
    assert book.best_ask == 102

    book.take(True, 105, 9)  # takes all 5 at 102, drops the rest
    assert (book.trades, book.traded) == (3, 12)
    assert not book.asks
    assert not book.ask_prices
    assert book.best_ask == NO_ASK
    assert not book.bids
    assert book.best_bid == 0


def test_a_limit_order_rests_its_remainder_at_its_price() -> None:
    book = PlainBook()
    book.limit(1, True, 99, 4)
    book.limit(2, False, 98, 10)

    assert (book.trades, book.traded) == (1, 4)
    assert not book.bids
    assert book.best_bid == 0
    assert list(book.ask_prices) == [98]
    assert book.best_ask == 98
    assert book.orders == {2: [6, 2, 98, 0]}

    book.limit(3, True, 97, 1)
    book.limit(4, True, 96, 1)
    assert book.best_bid == 97
    assert book.cancel(3)
    assert book.best_bid == 96
    book.take(False, 96, 5)
    assert book.best_bid == 0
    assert (book.trades, book.traded) == (2, 5)


def test_the_flow_is_seeded_keeps_its_depth_and_has_the_described_mix() -> None:
    flow = make_flow("touch", 20_000, 400, 2, seed=5)
    assert flow == make_flow("touch", 20_000, 400, 2, seed=5)
    assert flow != make_flow("touch", 20_000, 400, 2, seed=6)

    assert len(flow.setup) == 400
    assert all(kind == LIMIT for kind, *_ in flow.setup)
    assert 360 <= flow.resting_mean <= 440
    kinds = Counter(kind for kind, *_ in flow.messages)
    assert 0.04 <= kinds[TAKE] / len(flow.messages) <= 0.06
    assert 0.30 <= kinds[CANCEL] / len(flow.messages) <= 0.45


@pytest.mark.parametrize(("name", "resting", "span"), [("touch", 300, 2), ("deep", 5_000, 20)])
def test_the_engine_and_the_plain_book_do_the_same_work_on_a_flow(
    name: str, resting: int, span: int
) -> None:
    flow = make_flow(name, 15_000, resting, span, seed=2)
    ids = [f"p{n}" for n in range(len(flow.setup) + len(flow.messages))]
    clock = itertools.count().__next__

    engine = replay_engine(
        engine_commands(flow.setup, ids, 0),
        engine_commands(flow.messages, ids, len(flow.setup)),
        clock,
    )
    plain = replay_plain(plain_commands(flow.setup), plain_commands(flow.messages), clock)

    check_same_work(name, engine, plain)
    assert engine.trades == plain.trades > 1_000
    assert engine.traded == plain.traded > engine.trades
    assert engine.resting == plain.resting > resting // 2
    assert len(engine.latencies) == len(plain.latencies) == 15_000


def test_a_flow_the_books_disagree_on_fails_loudly() -> None:
    flow = make_flow("touch", 3_000, 200, 2, seed=3)
    ids = [f"p{n}" for n in range(len(flow.setup) + len(flow.messages))]
    clock = itertools.count().__next__
    setup = engine_commands(flow.setup, ids, 0)
    commands = engine_commands(flow.messages, ids, len(flow.setup))
    plain = replay_plain(plain_commands(flow.setup), plain_commands(flow.messages), clock)
    first_take = next(i for i, (kind, *_) in enumerate(flow.messages) if kind == TAKE)

    without_a_take = replay_engine(setup, commands[:first_take] + commands[first_take + 1 :], clock)
    with pytest.raises(BenchMismatch, match="touch flow: the engine made"):
        check_same_work("touch", without_a_take, plain)

    unknown_cancel = (1, (len(flow.setup) + len(flow.messages), "nobody", "buyer"))
    with pytest.raises(BenchMismatch, match="the engine refused 1 commands"):
        replay_engine(setup, [*commands, unknown_cancel], clock)
    bad_price = (0, (0, SYMBOL, "extra", "buyer", "buy", -5, 1))
    with pytest.raises(BenchMismatch, match="the engine refused 1 commands"):
        replay_engine(setup, [*commands, bad_price], clock)


def test_the_plain_book_trades_as_the_engine_on_a_flow_it_did_not_generate() -> None:
    # The bench's flows are made by a plain book, which could route them around its own bugs:
    # here orders land anywhere near a fixed price and cancels name any of the last 300 orders.
    rng = random.Random(11)
    engine = new_engine()
    book = PlainBook()
    accounts: list[str] = []
    plain_cancels = engine_cancels = engine_trades = engine_traded = 0
    for number in range(20_000):
        ts = START_TS + number
        buy = rng.random() < 0.5
        side, account = ("buy", "buyer") if buy else ("sell", "seller")
        accounts.append(account)
        price = START_PRICE + rng.randint(-8, 8)
        quantity = rng.randint(1, 12)
        roll = rng.random()
        if roll < 0.35 and number:
            target = number - 1 - rng.randrange(min(number, 300))
            plain_cancels += book.cancel(target)
            engine.cancel(ts, f"p{target}", accounts[target])
        elif roll < 0.45:
            book.take(buy, price, quantity)
            engine.submit(ts, SYMBOL, f"p{number}", account, side, price, quantity, IOC)
        else:
            book.limit(number, buy, price, quantity)
            engine.submit(ts, SYMBOL, f"p{number}", account, side, price, quantity)
        for event in engine.take_events():
            if event[0] == CANCELLED and event[-1] == CancelReason.REQUESTED:
                engine_cancels += 1
            elif event[0] == TRADE:
                engine_trades += 1
                engine_traded += event[4]

    assert plain_cancels == engine_cancels > 500
    assert (book.trades, book.traded) == (engine_trades, engine_traded)
    assert book.trades > 1_000
    assert len(book.orders) == len(engine.orders)
    assert book.best_bid == max(book.bids)
    assert book.best_ask == min(book.asks)
