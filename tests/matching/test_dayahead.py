"""The day-ahead solver: worked examples solved by hand, properties of random books, limits."""

from __future__ import annotations

import json
import random
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching.dayahead import (
    DayAheadOrder,
    DayAheadResult,
    DayAheadTrade,
    Rejection,
    clear,
    lp_relaxation,
    order_from_wire,
    order_to_wire,
    result_from_wire,
    result_to_wire,
    verify,
)

A, B = "H100-80G.GZ.20271201T00", "H100-80G.GZ.20271201T01"
C, D = "CPU.NX.20271201T00", "CPU.NX.20271201T01"


def order(
    order_id: str,
    side: str,
    symbols: tuple[str, ...] | str,
    price: int,
    quantity: int,
    seq: int,
    group: str | None = None,
) -> DayAheadOrder:
    hours = (symbols,) if isinstance(symbols, str) else symbols
    return DayAheadOrder(order_id, side, hours, price, quantity, seq, group)


def solved(orders: list[DayAheadOrder], ticks: dict[str, int] | None = None) -> DayAheadResult:
    """Clear and check the result is a valid clearing, as every worked example must be."""
    result = clear(orders, ticks)
    assert verify(orders, result, ticks) == []
    assert result.welfare <= lp_relaxation(orders)
    return result


# Worked examples


def test_a_simple_hourly_cross_clears_at_the_marginal_sell() -> None:
    orders = [
        order("b1", "buy", A, 100, 10, 1),
        order("s1", "sell", A, 80, 6, 2),
        order("s2", "sell", A, 90, 10, 3),
        order("b2", "buy", A, 70, 5, 4),
    ]
    # b1 buys 6 from s1 and 4 from s2; s2 is filled in part, so the price is its limit.
    result = solved(orders)
    assert result.prices == {A: 90}
    assert result.accepted == {"b1": 10, "s1": 6, "s2": 4}
    assert result.rejected == {"b2": Rejection.OUT_OF_THE_MONEY}
    assert result.trades == (
        DayAheadTrade(A, "b1", "s1", 6, 90),
        DayAheadTrade(A, "b1", "s2", 4, 90),
    )
    assert result.welfare == 100 * 10 - 80 * 6 - 90 * 4 == 160
    assert (result.status, result.bound, result.gap_ppm) == ("optimal", 160, 0)


def test_when_both_orders_fill_the_price_is_the_midpoint_rounded_down_to_the_tick() -> None:
    orders = [order("b", "buy", A, 100, 5, 1), order("s", "sell", A, 85, 5, 2)]
    assert solved(orders, {A: 5}).prices == {A: 90}  # 92.5 rounded down to the tick of 5
    assert solved(orders).prices == {A: 92}


def test_a_block_clears_two_hours_of_which_one_alone_would_not() -> None:
    orders = [
        order("blk", "buy", (A, B), 100, 10, 1),
        order("sA", "sell", A, 60, 10, 2),
        order("sB", "sell", B, 130, 10, 3),
    ]
    # Hour B alone: nobody pays 130. The block pays 2 x 100 for A + B, which cost 60 + 130.
    # Midpoints: A between the sell (60) and the block (100): 80; B at least 130 (its sell is
    # filled, the block's 100 below it): 130. 80 + 130 > 200, so A moves down to 70.
    result = solved(orders)
    assert result.prices == {A: 70, B: 130}
    assert result.accepted == {"blk": 10, "sA": 10, "sB": 10}
    assert result.rejected == {}
    assert result.trades == (
        DayAheadTrade(A, "blk", "sA", 10, 70),
        DayAheadTrade(B, "blk", "sB", 10, 130),
    )
    assert result.welfare == 100 * 10 * 2 - 60 * 10 - 130 * 10 == 100


def test_a_block_that_no_prices_support_is_rejected_paradoxically() -> None:
    orders = [
        order("block", "sell", (A, B), 60, 10, 1),
        order("bA", "buy", A, 100, 10, 2),
        order("bB", "buy", B, 100, 10, 3),
        order("sA", "sell", A, 50, 5, 4),
        order("sB", "sell", B, 50, 5, 5),
    ]
    # Welfare alone would take the block (2 x 10 x (100 - 60) = 800 against 2 x 5 x 50 = 500),
    # but then the hourly sells at 50 are left out, so the price must be at most 50 and the
    # block (at least 60 on average) would lose: no prices support it. Without it the buys are
    # filled in part, the price is their 100, and the block is in the money there, rejected.
    result = solved(orders)
    assert result.prices == {A: 100, B: 100}
    assert result.accepted == {"bA": 5, "bB": 5, "sA": 5, "sB": 5}
    assert result.rejected == {"block": Rejection.PARADOXICALLY_REJECTED}
    assert result.welfare == 2 * 5 * (100 - 50) == 500
    assert lp_relaxation(orders) >= 800


def test_an_indivisible_block_in_the_money_is_rejected_when_the_hours_cannot_take_it() -> None:
    orders = [
        order("block", "sell", (A, B), 50, 10, 1),
        order("bA", "buy", A, 100, 5, 2),
        order("bB", "buy", B, 100, 5, 3),
        order("sA", "sell", A, 60, 5, 4),
        order("sB", "sell", B, 60, 5, 5),
    ]
    result = solved(orders)
    assert result.prices == {A: 80, B: 80}
    assert result.accepted == {"bA": 5, "bB": 5, "sA": 5, "sB": 5}
    assert result.rejected == {"block": Rejection.PARADOXICALLY_REJECTED}


def test_of_an_exclusive_group_the_better_block_is_taken() -> None:
    orders = [
        order("gpu", "buy", (A, B), 100, 10, 1, group="g"),
        order("cpu", "buy", (C, D), 50, 10, 2, group="g"),
        order("sA", "sell", A, 40, 10, 3),
        order("sB", "sell", B, 40, 10, 4),
        order("sC", "sell", C, 40, 10, 5),
        order("sD", "sell", D, 40, 10, 6),
        order("bC", "buy", C, 45, 5, 7),
        order("bD", "buy", D, 45, 5, 8),
    ]
    # gpu: 2 x 10 x (100 - 40) = 1200; cpu: 2 x 10 x (50 - 40) = 200 and it would crowd out the
    # hourly buys. Only one may be accepted: gpu. A and B: between the sell (40) and the block
    # (100), 70; C and D: the sells are filled in part, 40.
    result = solved(orders)
    assert result.prices == {A: 70, B: 70, C: 40, D: 40}
    assert result.accepted == {"bC": 5, "bD": 5, "gpu": 10, "sA": 10, "sB": 10, "sC": 5, "sD": 5}
    assert result.rejected == {"cpu": Rejection.ALTERNATIVE_ACCEPTED}
    assert result.welfare == 1200 + 2 * 5 * (45 - 40)
    without_group = solved([o if o.group is None else order(o.order_id, o.side, o.symbols,
                            o.price, o.quantity, o.seq) for o in orders])  # fmt: skip
    assert without_group.accepted.keys() >= {"gpu", "cpu"}


def test_ties_at_the_marginal_price_go_to_the_earlier_seq() -> None:
    orders = [
        order("later", "sell", A, 90, 4, 5),
        order("earlier", "sell", A, 90, 4, 2),
        order("buy", "buy", A, 100, 6, 7),
    ]
    result = solved(orders)
    assert result.prices == {A: 90}
    assert result.accepted == {"buy": 6, "earlier": 4, "later": 2}
    assert result.trades == (
        DayAheadTrade(A, "buy", "earlier", 4, 90),
        DayAheadTrade(A, "buy", "later", 2, 90),
    )
    smaller = solved([*orders[:2], order("buy", "buy", A, 100, 4, 7)])
    assert smaller.accepted == {"buy": 4, "earlier": 4}
    assert smaller.rejected == {"later": Rejection.AT_THE_MONEY}


def test_equal_limits_trade_for_volume_at_zero_welfare() -> None:
    result = solved([order("b", "buy", A, 90, 3, 1), order("s", "sell", A, 90, 5, 2)])
    assert (result.prices, result.accepted, result.welfare) == ({A: 90}, {"b": 3, "s": 3}, 0)


def test_a_book_that_does_not_cross_has_a_price_only_where_both_sides_bound_it() -> None:
    orders = [
        order("b", "buy", A, 80, 5, 1),
        order("s", "sell", A, 90, 5, 2),
        order("lonely", "buy", B, 80, 5, 3),
        order("blk", "sell", (A, C), 85, 5, 4),
        order("bC", "buy", C, 70, 5, 5),
    ]
    result = solved(orders)
    assert result.prices == {A: 85}
    assert result.accepted == {}
    assert result.rejected == {
        "b": Rejection.OUT_OF_THE_MONEY,
        "bC": Rejection.NO_CLEARING_PRICE,  # only a block sells in C; nothing bounds a price
        "blk": Rejection.NO_CLEARING_PRICE,
        "lonely": Rejection.NO_COUNTERPARTY,
        "s": Rejection.OUT_OF_THE_MONEY,
    }
    assert (result.welfare, result.trades) == (0, ())


def test_a_block_out_of_the_money_is_rejected_as_such() -> None:
    orders = [
        order("cheap", "buy", (A, B), 50, 5, 1),
        order("bA", "buy", A, 100, 5, 2),
        order("bB", "buy", B, 100, 5, 3),
        order("sA", "sell", A, 60, 5, 4),
        order("sB", "sell", B, 60, 5, 5),
    ]
    result = solved(orders)
    assert result.prices == {A: 80, B: 80}
    assert result.rejected == {"cheap": Rejection.OUT_OF_THE_MONEY}


def test_a_grouped_hourly_order_is_all_or_none() -> None:
    orders = [order("aon", "buy", A, 100, 10, 1, group="g"), order("s", "sell", A, 50, 6, 2)]
    result = solved(orders)
    assert result.accepted == {}
    assert result.rejected == {"aon": Rejection.NO_CLEARING_PRICE, "s": Rejection.NO_CLEARING_PRICE}


# Determinism and the wire


def test_the_input_order_does_not_matter_and_the_wire_round_trips() -> None:
    orders = random_book(random.Random(7), symbols=4, count=40)
    first = clear(orders)
    shuffled = list(orders)
    random.Random(1).shuffle(shuffled)
    assert clear(shuffled) == first
    wire = result_to_wire(first)
    assert json.loads(json.dumps(wire)) == wire
    assert result_from_wire(json.loads(json.dumps(wire))) == first
    assert [order_from_wire(json.loads(json.dumps(order_to_wire(o)))) for o in orders] == orders
    assert "group" not in order_to_wire(order("x", "buy", A, 1, 1, 1))


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"order_id": "x", "side": "buy", "symbols": [A], "price": 1, "quantity": 1}, "missing"),
        (
            {"order_id": "x", "side": "buy", "symbols": [A], "price": 1, "quantity": 1, "seq": 1,
             "colour": "red"},
            "unknown colour",
        ),
        (
            {"order_id": "x", "side": "buy", "symbols": A, "price": 1, "quantity": 1, "seq": 1},
            "symbols must be a list",
        ),
        (
            {"order_id": "x", "side": "buy", "symbols": [A], "price": "1", "quantity": 1, "seq": 1},
            "price must be int",
        ),
    ],
)  # fmt: skip
def test_a_malformed_wire_order_is_refused(wire: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        order_from_wire(wire)


def test_a_malformed_wire_result_is_refused() -> None:
    wire = result_to_wire(clear([order("b", "buy", A, 90, 3, 1), order("s", "sell", A, 90, 5, 2)]))
    with pytest.raises(ValueError, match="out_of_luck"):
        result_from_wire({**wire, "rejected": {"x": "out_of_luck"}})
    with pytest.raises(ValueError, match="unknown status"):
        result_from_wire({**wire, "status": "great"})
    with pytest.raises(ValueError, match="prices must map strings to integers"):
        result_from_wire({**wire, "prices": {A: 1.5}})


# Bad input


@pytest.mark.parametrize(
    ("orders", "message"),
    [
        ([order("x", "buy", A, 0, 1, 1)], "price must be positive"),
        ([order("x", "buy", A, 10, -1, 1)], "quantity must be positive"),
        ([order("x", "hold", A, 10, 1, 1)], "unknown side 'hold'"),
        ([order("x", "buy", A, 10, 1, 1), order("x", "sell", A, 10, 1, 2)], "duplicate order id"),
        ([order("x", "buy", A, 10, 1, 1), order("y", "sell", A, 10, 1, 1)], "duplicate seq 1"),
        ([order("x", "buy", (), 10, 1, 1)], "no symbols"),
        ([order("x", "buy", (A, A), 10, 1, 1)], "a symbol is repeated"),
    ],
)
def test_bad_input_is_refused_with_a_specific_message(
    orders: list[DayAheadOrder], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        clear(orders)


def test_an_hourly_price_off_the_tick_is_refused_but_a_block_average_need_not_be_on_it() -> None:
    with pytest.raises(ValueError, match="not on the tick 10"):
        clear([order("x", "buy", A, 15, 1, 1)], {A: 10})
    with pytest.raises(ValueError, match=r"tick of .* must be a positive integer"):
        clear([order("x", "buy", A, 15, 1, 1)], {A: 0})
    result = solved([order("blk", "buy", (A, B), 15, 1, 1)], {A: 10, B: 10})
    assert result.rejected == {"blk": Rejection.NO_COUNTERPARTY}


def test_verify_finds_a_tampered_result() -> None:
    orders = [order("b1", "buy", A, 100, 10, 1), order("s1", "sell", A, 80, 10, 2)]
    good = solved(orders)
    assert verify(orders, good) == []
    tampered = DayAheadResult(
        prices={A: 110},
        accepted={"b1": 10, "s1": 9},
        rejected={},
        trades=good.trades,
        welfare=good.welfare,
        bound=good.bound - 1,
        status="optimal",
        gap_ppm=0,
    )
    problems = "\n".join(verify(orders, tampered))
    for expected in (
        "10 bought but 9 sold",
        "b1: accepted at a loss",
        "s1: in the money but accepted 9 of 10",
        "trades in " + A + " sum to 10, accepted 9",
        "not at the price",
        "welfare 200 but the accepted orders make 280",
        "bound 199 < welfare 200",
    ):
        assert expected in problems


# Random books


def random_book(rng: random.Random, symbols: int, count: int) -> list[DayAheadOrder]:
    """A small book of hourly orders, blocks over consecutive hours and exclusive groups."""
    names = [f"F{family}.H{hour}" for family in range(2) for hour in range(symbols)]
    orders: list[DayAheadOrder] = []
    for seq in rng.sample(range(1000), count):
        family, start = rng.randrange(2), rng.randrange(symbols)
        length = 1 if rng.random() < 0.6 else rng.randint(1, symbols - start)
        hours = tuple(f"F{family}.H{hour}" for hour in range(start, start + length))
        side = rng.choice(("buy", "sell"))
        group = f"g{rng.randrange(3)}" if side == "buy" and rng.random() < 0.25 else None
        orders.append(
            DayAheadOrder(
                order_id=f"o{seq}",
                side=side,
                symbols=hours,
                price=rng.randint(1, 20) * (5 if length == 1 else 1),
                quantity=rng.randint(1, 6),
                seq=seq,
                group=group,
            )
        )
    assert {symbol for o in orders for symbol in o.symbols} <= set(names)
    return orders


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), symbols=st.integers(1, 4), count=st.integers(0, 24))
def test_every_random_book_clears_validly_within_the_lp_bound(
    seed: int, symbols: int, count: int
) -> None:
    orders = random_book(random.Random(seed), symbols, count)
    ticks = {f"F{family}.H{hour}": 5 for family in range(2) for hour in range(symbols)}
    result = clear(orders, ticks)
    assert verify(orders, result, ticks) == []
    bound = lp_relaxation(orders)
    assert isinstance(bound, Fraction)
    assert result.welfare <= result.bound <= bound + 1
    assert (result.status == "optimal") == (result.welfare == result.bound)
    for o in orders:
        filled = result.accepted.get(o.order_id, 0)
        if filled:
            paid = sum(result.prices[symbol] for symbol in o.symbols)
            limit = o.price * len(o.symbols)
            assert paid <= limit if o.side == "buy" else paid >= limit
    assert clear(orders, ticks) == result
    shuffled = list(orders)
    random.Random(seed).shuffle(shuffled)
    assert result_to_wire(clear(shuffled, ticks)) == result_to_wire(result)


# Limits


def hard_book(seed: int, count: int) -> list[DayAheadOrder]:
    """Many overlapping blocks against thin hourly books: branch and bound has work to do."""
    rng = random.Random(seed)
    names = [f"H{hour:02d}" for hour in range(12)]
    orders = []
    for seq in range(count):
        side = "buy" if seq % 2 else "sell"
        if seq % 5 == 0:
            orders.append(
                DayAheadOrder(f"h{seq}", side, (rng.choice(names),), rng.randint(40, 60),
                              rng.randint(1, 9), seq)
            )  # fmt: skip
            continue
        start = rng.randrange(10)
        length = rng.randint(2, min(6, 12 - start))
        orders.append(
            DayAheadOrder(
                f"k{seq}",
                side,
                tuple(names[start : start + length]),
                rng.randint(30, 70),
                rng.randint(3, 17),
                seq,
                group=f"g{seq % 7}" if side == "buy" and seq % 3 == 0 else None,
            )
        )
    return orders


def test_a_tiny_node_limit_returns_the_best_solution_found_with_its_bound() -> None:
    orders = hard_book(seed=1, count=60)
    result = clear(orders, node_limit=1)
    assert result.status == "limit_reached"
    assert verify(orders, result) == []
    assert result.bound > result.welfare
    assert result.gap_ppm == (result.bound - result.welfare) * 1_000_000 // result.bound > 0
    assert result.bound <= lp_relaxation(orders) + 1
    assert clear(orders, node_limit=1) == result
    finished = clear(orders)
    assert finished.status == "optimal"
    assert result.welfare <= finished.welfare == finished.bound <= result.bound
