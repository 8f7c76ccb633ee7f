"""The engine and a naive reference model, driven side by side by random commands of every type.

After every step the events both emitted, the whole depth of every book, the open orders in
priority order, the contracts' states and reference prices must agree, and invariants must hold
in the engine: a continuous book is never crossed at rest, no quantity is created or lost, FIFO
within a price level, all-or-none orders never partially filled, blocks all-or-nothing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from matching import book as B
from matching import outputs as O
from matching.engine import MatchingEngine
from matching.outputs import Output
from tests.matching.reference import Reference

FAMILY = "G.A"
HOURS = [f"{FAMILY}.{h}" for h in range(3)]
OTHER = "G.B.0"
SYMBOLS = [*HOURS, OTHER]
ACCOUNTS = ["a", "b", "c", "d"]
GROUPS = {"a": "ab", "b": "ab", "c": "", "d": ""}
H = B.HOUR_MS

tifs = st.sampled_from([B.GTC, B.GTC, B.GTC, B.GTD, B.DAY, B.IOC, B.FOK])
prices = st.integers(min_value=90, max_value=112)
quantities = st.integers(min_value=1, max_value=9)
modes = st.sampled_from(B.STP_MODES)


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = MatchingEngine(halt_ms=5_000)
        self.ref = Reference(halt_ms=5_000)
        self.ts = 1
        self.next_id = 0
        self.ids: list[str] = []
        self.open: dict[str, int] = defaultdict(int)
        self.aon: set[str] = set()
        self.block_legs: dict[str, dict[str, int]] = {}
        self.block_size: dict[str, tuple[int, int]] = {}
        self.submitted: dict[str, tuple[int, bool]] = {}
        self.block_ids: list[str] = []

    @initialize(band=st.sampled_from([0, 6, 15]), protection=st.sampled_from([0, 3, 8]))
    def listing(self, band: int, protection: int) -> None:
        for model in (self.engine, self.ref):
            for i, symbol in enumerate(HOURS):
                model.list_contract(
                    0,
                    symbol,
                    FAMILY,
                    (2 + i) * H,
                    100,
                    band=band,
                    protection=protection,
                    open_at=0 if i < 2 else None,
                    close_at=(2 + i) * H - H // 2,
                )
            model.list_contract(0, OTHER, "G.B", 2 * H, 0, tick=2, band=5, protection=4, open_at=0)
        self._compare()

    def _fresh(self) -> str:
        self.next_id += 1
        order_id = f"o{self.next_id}"
        self.ids.append(order_id)
        return order_id

    def _both(self, method: str, *args: Any, **kwargs: Any) -> None:
        getattr(self.engine, method)(*args, **kwargs)
        getattr(self.ref, method)(*args, **kwargs)
        self._compare()

    def _step(self, dt: int) -> int:
        self.ts += dt
        return self.ts

    @rule(
        dt=st.integers(0, 2_000),
        symbol=st.sampled_from([*SYMBOLS, *HOURS, *HOURS, "NOPE"]),
        reuse=st.sampled_from([False] * 9 + [True]),
        account=st.sampled_from(ACCOUNTS),
        side=st.sampled_from([B.BUY, B.SELL]),
        price=prices,
        quantity=quantities,
        tif=tifs,
        expire_in=st.integers(-10, 20_000),
        min_quantity=st.sampled_from([0, 0, 0, 1, 3, 12]),
        aon=st.sampled_from([False, False, False, True]),
        post_only=st.sampled_from([False, False, False, True]),
        mode=modes,
        market=st.sampled_from([False] * 6 + [True]),
    )
    def submit(
        self,
        dt: int,
        symbol: str,
        reuse: bool,
        account: str,
        side: str,
        price: int,
        quantity: int,
        tif: str,
        expire_in: int,
        min_quantity: int,
        aon: bool,
        post_only: bool,
        mode: str,
        market: bool,
    ) -> None:
        order_id = self.ids[-1] if reuse and self.ids else self._fresh()
        if market and price % 3 == 0:
            price = 0
        self.submitted[order_id] = (quantity, aon)
        self._both(
            "submit",
            self._step(dt),
            symbol,
            order_id,
            account,
            side,
            price,
            quantity,
            tif=tif,
            expire_at=self.ts + expire_in,
            min_quantity=min_quantity,
            all_or_none=aon,
            post_only=post_only,
            stp_group=GROUPS[account],
            stp_mode=mode,
            market=market,
        )

    @rule(
        dt=st.integers(0, 300),
        symbol=st.sampled_from(HOURS[:2]),
        account=st.sampled_from(ACCOUNTS),
        side=st.sampled_from([B.BUY, B.SELL]),
        offset=st.integers(-4, 4),
        quantity=st.integers(1, 5),
    )
    def limit(
        self, dt: int, symbol: str, account: str, side: str, offset: int, quantity: int
    ) -> None:
        order_id = self._fresh()
        self.submitted[order_id] = (quantity, False)
        price = self.ref.books[symbol].reference + offset
        self._both(
            "submit",
            self._step(dt),
            symbol,
            order_id,
            account,
            side,
            price,
            quantity,
            stp_group=GROUPS[account],
        )

    @rule(
        dt=st.integers(0, 300),
        symbol=st.sampled_from(HOURS[:2]),
        account=st.sampled_from(ACCOUNTS),
        side=st.sampled_from([B.BUY, B.SELL]),
        offset=st.integers(-3, 3),
        quantity=st.integers(1, 8),
        tif=tifs,
        aon=st.booleans(),
        mode=modes,
    )
    def special(
        self,
        dt: int,
        symbol: str,
        account: str,
        side: str,
        offset: int,
        quantity: int,
        tif: str,
        aon: bool,
        mode: str,
    ) -> None:
        order_id = self._fresh()
        self.submitted[order_id] = (quantity, aon)
        price = self.ref.books[symbol].reference + offset
        self._both(
            "submit",
            self._step(dt),
            symbol,
            order_id,
            account,
            side,
            price,
            quantity,
            tif=tif,
            expire_at=self.ts + 3_000,
            all_or_none=aon,
            stp_group=GROUPS[account],
            stp_mode=mode,
            min_quantity=quantity // 2 if not aon and offset % 2 else 0,
        )

    @rule(
        dt=st.integers(0, 300),
        symbol=st.sampled_from(HOURS[:2]),
        account=st.sampled_from(ACCOUNTS),
        side=st.sampled_from([B.BUY, B.SELL]),
        beyond=st.integers(-2, 3),
        quantity=st.integers(1, 12),
        ioc=st.booleans(),
    )
    def sweep(
        self,
        dt: int,
        symbol: str,
        account: str,
        side: str,
        beyond: int,
        quantity: int,
        ioc: bool,
    ) -> None:
        """An aggressive order reaching about as far as the price band."""
        order_id = self._fresh()
        self.submitted[order_id] = (quantity, False)
        book = self.ref.books[symbol]
        reach = (book.band or 6) + beyond
        price = book.reference + reach if side == B.BUY else book.reference - reach
        self._both(
            "submit",
            self._step(dt),
            symbol,
            order_id,
            account,
            side,
            max(price, 1),
            quantity,
            tif=B.IOC if ioc else B.GTC,
            stp_group=GROUPS[account],
        )

    @rule(
        dt=st.integers(0, 300),
        data=st.data(),
        account=st.sampled_from(ACCOUNTS),
        side=st.sampled_from([B.BUY, B.SELL]),
        offset=st.integers(-5, 5),
        quantity=st.integers(1, 8),
        aon=st.sampled_from([False, False, True]),
    )
    def call_order(
        self,
        dt: int,
        data: st.DataObject,
        account: str,
        side: str,
        offset: int,
        quantity: int,
        aon: bool,
    ) -> None:
        """An order for a contract in a call phase (pre-open or halted), if there is one."""
        calling = [s for s in HOURS if self.ref.books[s].state in (O.PRE_OPEN, O.HALTED)]
        symbol = data.draw(st.sampled_from(calling or HOURS))
        order_id = self._fresh()
        self.submitted[order_id] = (quantity, aon)
        price = self.ref.books[symbol].reference + offset
        self._both(
            "submit",
            self._step(dt),
            symbol,
            order_id,
            account,
            side,
            price,
            quantity,
            all_or_none=aon,
            stp_group=GROUPS[account],
        )

    @rule(dt=st.integers(0, 500), data=st.data(), owner=st.booleans())
    def cancel(self, dt: int, data: st.DataObject, owner: bool) -> None:
        order_id = data.draw(self._targets())
        account = self._owner(order_id) if owner else data.draw(st.sampled_from(ACCOUNTS))
        self._both("cancel", self._step(dt), order_id, account)

    @rule(
        dt=st.integers(0, 500),
        data=st.data(),
        price=st.sampled_from([0, 0, -1, *range(92, 110, 3)]),
        quantity=st.sampled_from([0, 1, 2, 4, 8, -1]),
    )
    def amend(self, dt: int, data: st.DataObject, price: int, quantity: int) -> None:
        order_id = data.draw(self._targets())
        self._both("amend", self._step(dt), order_id, self._owner(order_id), price, quantity)

    @precondition(lambda self: self.next_id % 6 == 0)
    @rule(dt=st.integers(0, 500), account=st.sampled_from(ACCOUNTS))
    def cancel_all(self, dt: int, account: str) -> None:
        self._both("cancel_all", self._step(dt), account)

    @rule(
        dt=st.integers(0, 500),
        first=st.integers(0, 2),
        hours=st.integers(1, 3),
        gap=st.booleans(),
        account=st.sampled_from(ACCOUNTS),
        side=st.sampled_from([B.BUY, B.SELL]),
        price=prices,
        quantity=st.integers(1, 6),
        mode=modes,
    )
    def block(
        self,
        dt: int,
        first: int,
        hours: int,
        gap: bool,
        account: str,
        side: str,
        price: int,
        quantity: int,
        mode: str,
    ) -> None:
        symbols = HOURS[first : first + hours]
        if gap and len(symbols) == 3:
            symbols = [symbols[0], symbols[2]]
        self.next_id += 1
        block_id = f"k{self.next_id}"
        self.block_ids.append(block_id)
        self.block_size[block_id] = (quantity, len(symbols))
        self._both(
            "submit_block",
            self._step(dt),
            block_id,
            account,
            side,
            symbols,
            price,
            quantity,
            stp_group=GROUPS[account],
            stp_mode=mode,
        )

    @precondition(lambda self: self.next_id % 5 == 0)
    @rule(dt=st.integers(0, 500), symbol=st.sampled_from([*SYMBOLS, "NOPE"]))
    def halt(self, dt: int, symbol: str) -> None:
        self._both("halt", self._step(dt), symbol)

    @rule(dt=st.integers(0, 500), symbol=st.sampled_from([*SYMBOLS, "NOPE"]))
    def resume(self, dt: int, symbol: str) -> None:
        self._both("resume", self._step(dt), symbol)

    @rule(dt=st.integers(0, 500), delay=st.integers(0, 10_000), first=st.integers(1, 2))
    def schedule(self, dt: int, delay: int, first: int) -> None:
        self._both("schedule_auction", self._step(dt), FAMILY, self.ts + delay, HOURS[first:])

    @rule(dt=st.sampled_from([1_000, 1_000, 3_000, 6_000, 6_000, 30_000, H // 4]))
    def clock(self, dt: int) -> None:
        self._both("advance", self._step(dt))

    @precondition(lambda self: self.next_id % 8 == 7)
    @rule(dt=st.sampled_from([H // 2, H]))
    def long_wait(self, dt: int) -> None:
        self._both("advance", self._step(dt))

    def _targets(self) -> st.SearchStrategy[str]:
        """Mostly live orders, sometimes finished or unknown ones."""
        live = sorted(self.engine.orders) + sorted(self.engine.blocks)
        anything = st.sampled_from([*self.ids, *self.block_ids, "missing"])
        return st.one_of(st.sampled_from(live), anything) if live else anything

    def _owner(self, order_id: str) -> str | None:
        order = self.engine.orders.get(order_id)
        if order is not None:
            return order.account
        block = self.engine.blocks.get(order_id)
        return block.account if block is not None else None

    def _compare(self) -> None:
        events = self.engine.take_events()
        assert events == self.ref.take_events()
        self._account(events)
        for symbol in SYMBOLS:
            assert self.engine.depth(symbol) == self.ref.depth(symbol), symbol
            bids, asks = self.engine.open_orders(symbol)
            rbook = self.ref.books[symbol]
            for mine, theirs in ((bids, rbook.side(B.BUY)), (asks, rbook.side(B.SELL))):
                assert [
                    (o.order_id, o.account, o.price, o.remaining, o.aon, o.seq) for o in mine
                ] == [(o.order_id, o.account, o.price, o.remaining, o.aon, o.seq) for o in theirs]
            book = self.engine.books[symbol]
            assert (book.state, book.reference, book.trades) == (
                rbook.state,
                rbook.reference,
                rbook.trades,
            )
        assert sorted(self.engine.blocks) == sorted(self.ref.blocks)

    def _account(self, events: list[Output]) -> None:
        """Follow every order's open quantity through the events."""
        aon_traded: dict[str, int] = defaultdict(int)
        aon_open: dict[str, int] = {}
        for event in events:
            match event:
                case (O.ACCEPTED, _, order_id):
                    self._accepted(order_id)
                case (O.TRADE, symbol, _, _, quantity, taker, maker, *_):
                    for order_id in (taker, maker):
                        if order_id in self.aon:
                            aon_open.setdefault(order_id, self.open[order_id])
                            aon_traded[order_id] += quantity
                        if order_id in self.block_legs:
                            legs = self.block_legs[order_id]
                            legs[symbol] = legs.get(symbol, 0) + quantity
                        self.open[order_id] -= quantity
                        assert self.open[order_id] >= 0
                case (O.CANCELLED | O.EXPIRED, _, order_id, _, _, remaining, _):
                    assert self.open[order_id] == remaining, event
                    self.open[order_id] = 0
                case (O.REDUCED, _, order_id, _, _, cut, remaining, _):
                    self.open[order_id] -= cut
                    assert self.open[order_id] == remaining
                case (O.AMENDED, _, order_id, _, _, _, remaining, _):
                    self.open[order_id] = remaining
        for order_id, traded in aon_traded.items():
            assert traded == aon_open[order_id], f"AON order {order_id} partially filled"

    def _accepted(self, order_id: str) -> None:
        """Start following an order (or block) the engine accepted."""
        if order_id in self.block_size:
            size, hours = self.block_size[order_id]
            self.open[order_id] = size * hours
            self.block_legs[order_id] = {}
        else:
            self.open[order_id], aon = self.submitted[order_id]
            if aon:
                self.aon.add(order_id)
            else:
                self.aon.discard(order_id)

    @invariant()
    def quantities_conserved(self) -> None:
        live = self.engine.orders
        for order_id, quantity in self.open.items():
            if order_id in live:
                assert live[order_id].remaining == quantity, order_id
            elif order_id in self.engine.blocks:
                size, hours = self.block_size[order_id]
                assert quantity == size * hours
            else:
                assert quantity == 0, order_id

    @invariant()
    def blocks_all_or_nothing(self) -> None:
        for block_id, legs in self.block_legs.items():
            if block_id in self.engine.blocks:
                assert not legs
                continue
            size, hours = self.block_size[block_id]
            assert not legs or (len(legs) == hours and set(legs.values()) == {size}), legs

    @invariant()
    def books_well_formed(self) -> None:
        engine = self.engine
        count = 0
        for book in engine.books.values():
            for side in (book.bids, book.asks):
                assert side.keys == sorted(side.keys)
                assert sorted(side.levels) == sorted(k * side.sign for k in side.keys)
                for level in side.iter_levels():
                    orders = level.resting_orders()
                    assert level.count == len(orders)
                    assert orders, "empty level left in the book"
                    seqs = [o.seq for o in orders]
                    assert seqs == sorted(seqs), "FIFO broken"
                    assert level.quantity == sum(o.remaining for o in orders if not o.aon)
                    assert level.aon == sum(o.aon for o in orders)
                    for o in orders:
                        assert o.remaining > 0
                        assert o.price == level.price
                        assert o.book is book
                        assert o.level is level
                        assert engine.orders[o.order_id] is o
                        assert level.orders[o.position] is o
                        assert o.owner is engine.by_account[o.account]
                        assert o.owner.orders[o.slot] is o
                        count += 1
            if book.state == O.CONTINUOUS:
                bids, asks = engine.depth(book.symbol)
                if bids and asks:
                    assert bids[0][0] < asks[0][0], "crossed at rest"
        listed = sum(len(m.orders) for m in engine.by_account.values())
        assert count == len(engine.orders) == listed

    @precondition(lambda self: self.next_id % 7 == 0)
    @rule()
    def snapshot_round_trip(self) -> None:
        before = self.engine.state_hash()
        restored = MatchingEngine.restore(json.loads(json.dumps(self.engine.snapshot())))
        assert restored.state_hash() == before
        assert restored.snapshot() == self.engine.snapshot()
        # From here on the restored engine is the one compared with the reference model.
        self.engine = restored


EngineMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestEngineAgainstReference = EngineMachine.TestCase
