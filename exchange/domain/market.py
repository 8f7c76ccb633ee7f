"""The matching stage: turns risk-approved orders, cancels, amends and operator commands into
trades, cancels, book changes, auctions and contract state changes.

Pure and deterministic, a function of the orders topic alone. The books, auctions and lifecycle
live in `matching.engine`; this module maps the exchange's events onto it and its outputs back
onto events. Time is the log time of the records read: it advances only when a record arrives,
so expiries, gate closures and scheduled auctions happen at the first record at or after their
time (a scheduler that wants them on time sends `ControlMarket` ticks).
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from typing import Any, assert_never

from exchange.domain.catalogue import (
    INTRADAY_GUARD_MS,
    Catalogue,
    ContractSpec,
    SymbolError,
    cst_date,
    cst_day_of,
    cst_day_start_ms,
    family_of,
    intraday_key,
    is_intraday_key,
    parse_symbol,
    to_utc_ms,
)
from exchange.domain.delivery import DeliveryDesk
from exchange.domain.messages import (
    AmendRejected,
    AmendRequested,
    AuctionCompleted,
    BlockAccepted,
    BookChanged,
    CancelAllRequested,
    CancelReason,
    CancelRejected,
    CancelRequested,
    ContractStateChanged,
    DayAheadBidsCollected,
    DayAheadCleared,
    DeliveryRequested,
    DeliverySettled,
    Event,
    EventStamp,
    ListingChanged,
    MarketAction,
    MarketControlRejected,
    MarketControlRequested,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    RejectReason,
    TradeExecuted,
)
from matching import outputs as mo
from matching.book import DAY_MS, INFINITY, Book
from matching.engine import MatchingEngine
from matching.snapshot import merged_snapshot as merged_engine_snapshot
from matching.snapshot import merged_state_hash as merged_engine_hash

NO_GATE_CLOSURE = 1 << 62
"""A gate-closure time that never comes (contracts listed without one)."""

_OPERATOR_ACTIONS: dict[mo.OperatorAction, MarketAction] = {
    "halt": "halt",
    "resume": "resume",
    "schedule": "schedule_auction",
    "delist": "delist",
    "list": "list",
    "set_band": "set_band",
}


INPUTS: tuple[type[Event], ...] = (
    OrderAccepted,
    CancelRequested,
    AmendRequested,
    MarketControlRequested,
    CancelAllRequested,
    BlockAccepted,
    DeliveryRequested,
    DayAheadCleared,
    DayAheadBidsCollected,
)
"""The events the stage acts on; any other record only moves its log time (`idle`)."""


def listing_state(pre_open: bool, awaits_day_ahead: bool) -> mo.ContractState:
    """The state the stage lists a contract in: pre-open, collecting orders for an opening
    call (`pre_open`) or for its day's day-ahead auction; else continuous (a static one
    opened at once by an auction of its empty book). The static contracts are listed before
    the stage reads the log, and a rolled one only when a record reaches its partition, with
    no state announced before: whoever shows the contracts starts from this state until
    matching announces another."""
    return mo.PRE_OPEN if pre_open or awaits_day_ahead else mo.CONTINUOUS


class _Unset:
    """Marks a rule left to the catalogue."""


_UNSET = _Unset()


class MarketStage:
    """The books of every listed contract in this stage's partitions.

    Contracts open for continuous trading at once, or with `pre_open` collect orders until an
    operator schedules their family's call auction (or resumes them). `gate_closure_ms`
    (None: never) closes each contract that long before its delivery hour; `band` and
    `protection` (fen; 0: none) are the price band around the last trade price and the
    market-order protection.

    The catalogue's static contracts get their books at once. Rolled contracts get theirs on
    the log clock: the first record at or after midnight (CST) lists every hour the catalogue
    lists from then on, each with a `listed` state change, and each book closes at its gate
    like any other. A rolled book is dropped once delivered, so the books, snapshots and the
    state hash hold only the hours still to come.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        gate_closure_ms: int | _Unset | None = _UNSET,
        halt_ms: int | _Unset = _UNSET,
        band: int | _Unset = _UNSET,
        protection: int | _Unset = _UNSET,
        pre_open: bool | _Unset = _UNSET,
        replica: bool = False,
    ) -> None:
        # Unless given here, each rule is the catalogue's, so live and replayed books agree.
        rules = catalogue.rules
        gate_closure_ms = (
            rules.gate_closure_ms if isinstance(gate_closure_ms, _Unset) else gate_closure_ms
        )
        halt_ms = rules.halt_ms if isinstance(halt_ms, _Unset) else halt_ms
        band = rules.band if isinstance(band, _Unset) else band
        protection = rules.protection if isinstance(protection, _Unset) else protection
        pre_open = rules.pre_open if isinstance(pre_open, _Unset) else pre_open
        # With a day-ahead auction, the static contracts collect orders until their day's
        # auction (or, when the stage starts past its gate, open at the first record).
        listed_in = listing_state(pre_open, rules.day_ahead_gate_ms is not None)
        self.catalogue = catalogue
        self.engine = MatchingEngine(halt_ms=halt_ms)
        for spec in catalogue:
            delivery = to_utc_ms(spec.delivery_start)
            close = NO_GATE_CLOSURE if gate_closure_ms is None else delivery - gate_closure_ms
            self.engine.list_contract(
                0,
                spec.symbol,
                spec.family,
                delivery,
                0,
                # The risk stage checks ticks; orders here are already approved.
                tick=1,
                band=band,
                protection=protection,
                open_at=None if listed_in == mo.PRE_OPEN else 0,
                close_at=close,
            )
        self.engine.take_events()
        self.delivery = DeliveryDesk(rules)
        self._rules = (band, protection, pre_open)
        self.family_bands: dict[str, int] = {}
        """Price bands an operator set for whole families: contracts listed later get them."""
        self._acted_on: list[str] | None = None
        """The contracts the market-wide control just handled acted on (not state)."""
        self._static = frozenset(catalogue.symbols)
        self._book_seq = dict.fromkeys(catalogue.symbols, 0)
        """The contracts whose book changes this stage publishes, and how many it has."""
        # The CST day whose listings are in the books. Not state: listing again what the
        # catalogue lists at a time adds nothing, so a restored stage starts from None.
        self._listed_day: int | None = None
        self.exclusive_groups: dict[str, str] = {}
        """Waiting blocks that are alternatives of an exclusive group (a need): their group."""
        self.replica = replica
        """A replica folds every partition's stored inputs (settlement, replay, audit): it
        collects day-ahead bids where each partition's stored collection says, not by time."""
        self.day_ahead_next: int | None = None
        """The next delivery day (00:00 CST, ms) to collect bids of at its gate; None until
        the first record (or without day-ahead auctions). Days before it trade continuously."""
        self.intraday_next: int | None = None
        """The log time of the next intraday auction; None until the first record (or
        without intraday auctions)."""

    @property
    def books(self) -> dict[str, Book]:
        """Every contract's book, by symbol."""
        return self.engine.books

    def handle(self, event: Event, stamp: EventStamp) -> list[Event]:
        """The events a record of the orders topic causes, after the record itself."""
        if not isinstance(event, INPUTS):
            return self.idle(stamp)
        listing = self._act(event, stamp.ts)
        done = self.engine.take_events()
        outputs = self._translate(done, stamp, _Context(event))
        if listing is not None and isinstance(event, MarketControlRequested):
            outputs.append(
                ListingChanged(
                    event_id=stamp.next_id(),
                    ts=stamp.ts,
                    symbol=event.symbol,
                    listed=listing,
                    operator_id=event.operator_id,
                    reason=event.reason,
                )
            )
        outputs += self._deliver(event, done, stamp)
        outputs += self._collect_day_ahead(stamp)
        return outputs

    def replay(self, event: Event, stamp: EventStamp) -> None:
        """Act on one of the `INPUTS` as `handle` does, leaving exactly the state it leaves,
        without building the events it would publish: a replay of the events topic already
        has them stored."""
        self._act(event, stamp.ts)
        done = self.engine.take_events()
        self._replay_outputs(done)
        self._deliver(event, done, stamp, publish=False)
        self._collect_day_ahead(stamp)

    def _replay_outputs(self, done: list[mo.Output]) -> None:
        """Count the book changes of the engine's outputs and drop the books they delivered,
        as `_translate` does, without building events."""
        book_seq = self._book_seq
        # Indexed, not matched against a sequence pattern: every order a replay folds comes
        # here, most with one output. Every output but the kill switch's count names a
        # contract (or a family) second.
        touched = {
            output[1] for output in done if output[0] != mo.CANCELLED_ALL and output[1] in book_seq
        }
        for symbol in touched:
            self._take_book_changes(symbol)
        self._forget_delivered(done)

    def _deliver(
        self, event: Event | None, done: list[mo.Output], stamp: EventStamp, *, publish: bool = True
    ) -> list[Event]:
        """What the delivery desk makes of a record and the engine's outputs, then the
        cancels of resting resales that the obligations settled meanwhile leave unheld.
        Without `publish` (a replay) the cancels change the books as `_translate` would,
        without building the events the store already has."""
        caused = self.delivery.observe(event, done, stamp)
        withdrawn = self._cancel_unheld_resales(caused, stamp.ts)
        if withdrawn:
            if publish:
                caused += self._translate(withdrawn, stamp, _Context(None))
            else:
                self._replay_outputs(withdrawn)
            caused += self.delivery.observe(None, withdrawn, stamp)
        return caused

    def _cancel_unheld_resales(self, caused: list[Event], ts: int) -> list[mo.Output]:
        """Cancel a holder's resting resales beyond what it still holds once an obligation of
        it settled (a token bundle's dispute resolved in its period, a recall): what settled
        was refunded to it, and a resale of it would be paid out of the escrow a second time
        while its buyer is owed by no one. The newest go first: the earlier offers keep their
        place while the holder still holds what they sell. Returns the engine's outputs."""
        if not caused:
            # Nearly every record: nothing settled, so no resale lost its cover.
            return []
        holders = dict.fromkeys(
            (settled.symbol, settled.buyer_id)
            for settled in caused
            if isinstance(settled, DeliverySettled)
        )
        if not holders:
            return []
        engine, desk = self.engine, self.delivery
        for symbol, holder in holders:
            resales = {o: q for o, q in desk.resales(symbol, holder).items() if o in engine.orders}
            excess = sum(resales.values()) - desk.resale_cover(symbol, holder)
            for order_id in sorted(resales, key=lambda o: engine.orders[o].seq, reverse=True):
                if excess <= 0:
                    break
                engine.cancel(ts, order_id, None, CancelReason.OBLIGATION_SETTLED)
                excess -= resales[order_id]
        return engine.take_events()

    def _resale_unheld(self, order: OrderAccepted, ts: int) -> CancelReason | None:
        """Why an entitlement-backed sell cannot be entered, or None: with the seller's
        resting resales it offers more than the seller still holds of the contract, or, in a
        token bundle's period, more than the units of it no token was drawn into. Risk
        approved it on what it knew, but since then an obligation of the seller may have
        settled (a dispute resolved, a recall), its `DeliverySettled` still on the way to
        risk, or a metering report may have drawn into the units it offers, its `BundleDrawn`
        still on the way. A contract whose trading closed is left to the engine, which
        refuses it as closed."""
        engine = self.engine
        engine.advance(ts)
        symbol, seller = order.symbol, order.account_id
        book = engine.books.get(symbol)
        if book is None or book.state in (mo.CLOSED, mo.DELIVERED):
            return None
        desk = self.delivery
        # Of the resales the desk knows, those the timers just run left resting.
        resales = desk.resales(symbol, seller)
        offered = sum(q for order_id, q in resales.items() if order_id in engine.orders)
        offered += order.quantity
        if offered > desk.resale_cover(symbol, seller):
            return CancelReason.OBLIGATION_SETTLED
        if symbol in desk.bundles_started and offered > desk.resale_unused(symbol, seller):
            return CancelReason.BUNDLE_TOKENS_USED
        return None

    def _act(self, event: Event, ts: int) -> bool | None:
        """Carry out an input in the engine; for `delist` and `list` controls, whether the
        contract is listed after it (None: nothing changed)."""
        engine = self.engine
        self._acted_on = None
        self._start_day_ahead(max(ts, self.engine.now))
        self._list_rolled(ts)
        if (
            isinstance(event, OrderAccepted)
            and event.backing == "entitlement"
            and (unheld := self._resale_unheld(event, ts)) is not None
        ):
            engine.refuse(ts, event.symbol, event.order_id, unheld)
        elif isinstance(event, OrderAccepted):
            engine.submit(
                ts,
                event.symbol,
                event.order_id,
                event.account_id,
                event.side,
                event.price,
                event.quantity,
                event.time_in_force,
                event.expire_at or 0,
                event.min_quantity,
                event.all_or_none,
                event.post_only,
                event.stp_group or "",
                event.stp_mode,
                event.order_type == "market",
            )
        elif isinstance(event, CancelRequested):
            engine.cancel(ts, event.order_id, event.account_id)
        elif isinstance(event, AmendRequested):
            engine.amend(
                ts, event.order_id, event.account_id, event.price or 0, event.quantity or 0
            )
        elif isinstance(event, MarketControlRequested):
            return self._control(event, ts)
        elif isinstance(event, CancelAllRequested):
            # The copy this partition was sent names the account's contracts here, so a replay
            # over every partition acts on each family when its own partition did.
            here = event.here or event.symbols
            engine.cancel_all(ts, event.account_id, {family_of(s) for s in here})
        elif isinstance(event, DayAheadCleared):
            self._apply_day_ahead(event, ts)
        elif isinstance(event, DayAheadBidsCollected):
            self._replay_collection(event)
        elif isinstance(event, BlockAccepted):
            if event.group is not None:
                self.exclusive_groups[event.order_id] = event.group
            engine.submit_block(
                ts,
                event.order_id,
                event.account_id,
                event.side,
                event.symbols,
                event.price,
                event.quantity,
                event.stp_group or "",
                event.stp_mode,
                exclusive=event.group is not None,
            )
        else:
            engine.advance(ts)
        return None

    def idle(self, stamp: EventStamp) -> list[Event]:
        """What a record that is not one of the stage's `INPUTS` causes: its log time passes
        (expiries, gate closures, auctions, listings and delivery settlements falling due)."""
        self._acted_on = None
        ts = stamp.ts
        self._start_day_ahead(max(ts, self.engine.now))
        self._list_rolled(ts)
        engine = self.engine
        engine.advance(ts)
        done = engine.take_events()
        outputs = self._translate(done, stamp, _Context(None))
        outputs += self._deliver(None, done, stamp)
        outputs += self._collect_day_ahead(stamp)
        return outputs

    def due(self, ts: int) -> bool:
        """Whether `idle` at log time `ts` could do anything beyond moving the clock."""
        # A replica (which passes the log time of every record a replay does not decode)
        # follows no auction gate of its own: `_next_gate` and `_next_intraday` are never.
        return (
            self.engine.due(ts)
            or self.delivery.due(ts)
            or (not self.replica and (ts >= self._next_gate() or ts >= self._next_intraday()))
            or (
                bool(self.catalogue.listings)
                and cst_day_start_ms(max(ts, self.engine.now)) != self._listed_day
            )
        )

    def recorded(self, event: Event, ts: int) -> Event:
        """The input just handled as the events topic records it: at matching's log time `ts`,
        the time it acted on it (so a replay applies expiries, gate closures and auctions at
        the same points), and a market-wide control naming the contracts it acted on here."""
        update: dict[str, Any] = {}
        if event.ts != ts:
            update["ts"] = ts
        if isinstance(event, MarketControlRequested) and self._acted_on is not None:
            update["contracts"] = self._acted_on
        return event.model_copy(update=update) if update else event

    def _in_state(self, state: mo.ContractState) -> list[str]:
        return sorted(s for s, book in self.engine.books.items() if book.state == state)

    def _list_rolled(self, ts: int) -> None:
        """List the rolled contracts the catalogue lists at log time `ts` that have no book."""
        if not self.catalogue.listings:
            return
        now = max(ts, self.engine.now)
        # Rolled contracts only ever start being listed at midnight (see the catalogue), so
        # once per day is enough.
        today = cst_day_start_ms(now)
        if today == self._listed_day:
            return
        self._listed_day = today
        books = self.engine.books
        # A start-up lists a whole horizon of books at once, none in a cycle (as a snapshot).
        with collector_paused():
            for spec in self.catalogue.rolled_at(now):
                if spec.symbol not in books:
                    self._list(spec, now)

    def _list(self, spec: ContractSpec, ts: int, by_operator: bool = False) -> None:
        band, protection, pre_open = self._rules
        band = self.family_bands.get(spec.family, band)
        self.engine.list_contract(
            ts,
            spec.symbol,
            spec.family,
            # A token bundle is delivered (and its book dropped) when its period ends; its
            # draw-down from the period's start is the delivery desk's.
            to_utc_ms(spec.delivery_end if spec.is_bundle else spec.delivery_start),
            0,
            tick=1,
            band=band,
            protection=protection,
            close_at=self.catalogue.retires_at(spec),
            # An operator's listing may be of a family no day-ahead auction expects bids from.
            continuous=listing_state(pre_open, not by_operator and self._awaits_day_ahead(spec))
            == mo.CONTINUOUS,
        )
        self._book_seq[spec.symbol] = 0

    def _control(self, event: MarketControlRequested, ts: int) -> bool | None:
        """Carry out an operator's or the scheduler's command; for `delist` and `list`, whether
        the contract is listed after it (None: nothing changed). A command to one contract (or
        family) is recorded with what matching decided (`contracts`: the symbol, or none when
        it refused), so whoever waits for it knows without waiting for another input."""
        engine = self.engine
        action = event.action
        if action in ("halt", "resume"):
            self._halt_or_resume(event, ts)
            return None
        if action in ("halt_market", "resume_market"):
            self._control_market(event, ts)
            return None
        if action == "tick":
            engine.advance(ts)
            return None
        mark = len(engine.events)
        listing: bool | None = None
        if action == "schedule_auction":
            book = engine.books.get(event.symbol)
            family = event.symbol.rsplit(".", 1)[0] if book is None else book.family
            at = ts if event.at is None else event.at
            engine.schedule_auction(ts, family, at, event.symbols or [event.symbol])
        elif action == "delist":
            listing = False if engine.close_early(ts, event.symbol) else None
        elif action == "list":
            listing = True if self._list_by_operator(event.symbol, ts) else None
        else:
            self._set_band(event, ts)
        refused = any(output[0] == mo.OPERATOR_REJECTED for output in engine.events[mark:])
        self._acted_on = [] if refused else [event.symbol]
        return listing

    def _halt_or_resume(self, event: MarketControlRequested, ts: int) -> None:
        """An operator's halt or resume of one contract. A pre-open contract whose day-ahead
        auction is still to come opens only by that auction: a resume of it is refused
        (`not_halted`). Whether the contract's partition acted is recorded (`contracts`), and
        a replay follows that record: in a replay folding every partition, another partition
        may already have passed the day's gate this one had not."""
        engine = self.engine
        symbol = event.symbol
        if event.contracts is not None:
            if symbol not in event.contracts:
                engine.advance(ts)
                self._acted_on = []
                return
            opens_pre_open = True
        else:
            engine.advance(ts)
            book = engine.books.get(symbol)
            opens_pre_open = book is None or not self._awaits_day_ahead_book(book)
        mark = len(engine.events)
        if event.action == "halt":
            engine.halt(ts, symbol)
        else:
            engine.resume(ts, symbol, open_pre_open=opens_pre_open)
        refused = any(output[0] == mo.OPERATOR_REJECTED for output in engine.events[mark:])
        self._acted_on = [] if refused else [symbol]

    def _awaits_day_ahead_book(self, book: Book) -> bool:
        """Whether a contract in pre-open waits for a day-ahead auction whose gate this
        partition has not passed (one listed in pre-open for a day whose gate had passed when
        the stage started waits for an operator instead)."""
        following = self.day_ahead_next
        return (
            book.state == mo.PRE_OPEN
            and following is not None
            and cst_day_start_ms(book.delivery_at) >= following
        )

    def _awaits_day_ahead(self, spec: ContractSpec) -> bool:
        """Whether a contract listed now waits for its day's day-ahead auction."""
        following = self.day_ahead_next
        return (
            not spec.is_term
            and following is not None
            and cst_day_start_ms(to_utc_ms(spec.delivery_start)) >= following
        )

    def _next_gate(self) -> int:
        """The log time of the next day-ahead gate (never, without day-ahead auctions, or in
        a replica, which follows the partitions' stored collections instead)."""
        following = None if self.replica else self.day_ahead_next
        gate = None if following is None else self.catalogue.rules.day_ahead_gate(following)
        return INFINITY if gate is None else gate

    def _next_intraday(self) -> int:
        """The log time of the next intraday auction (never, without them, or in a replica)."""
        following = None if self.replica else self.intraday_next
        return INFINITY if following is None else following

    def _start_day_ahead(self, now: int) -> None:
        """At the first record: the first day to collect is the first whose gate is still
        ahead; the pre-open books of the days before it open at once."""
        rules = self.catalogue.rules
        if rules.day_ahead_gate_ms is None or self.day_ahead_next is not None:
            return
        self.intraday_next = rules.intraday_auction_after(now)
        following = cst_day_start_ms(now) + DAY_MS
        gate = rules.day_ahead_gate(following)
        while gate is not None and gate <= now:
            following += DAY_MS
            gate = rules.day_ahead_gate(following)
        self.day_ahead_next = following
        if rules.pre_open:
            return
        for day in sorted({cst_day_start_ms(b.delivery_at) for b in self.engine.books.values()}):
            if day < following:
                self.engine.open_day(day)

    def _collect_day_ahead(self, stamp: EventStamp) -> list[Event]:
        """At each auction's gate, what this partition brings to it: at a day-ahead gate,
        every order and waiting block in the day's pre-open books; at an intraday auction,
        every order and waiting block in the books trading continuously, which it takes out
        of continuous trading (none, if it has none). Frozen until the result. Every partition
        sends every auction, in gate order, so the auction stage knows when all are in."""
        if self.replica:
            return []
        now = max(stamp.ts, self.engine.now)
        if now < min(self._next_gate(), self._next_intraday()):
            return []
        collected: list[Event] = []
        engine = self.engine
        while True:
            gate, intraday = self._next_gate(), self._next_intraday()
            if now < min(gate, intraday):
                break
            if gate <= intraday and self.day_ahead_next is not None:
                day = self.day_ahead_next
                key = cst_date(day)
                orders, blocks, symbols = engine.day_ahead_bids(day)
                withheld = engine.withhold_halted(day)
                self.day_ahead_next = day + DAY_MS
            else:
                key = intraday_key(intraday)
                orders, blocks, symbols = engine.session_bids(intraday + INTRADAY_GUARD_MS)
                withheld = []
                self.intraday_next = self.catalogue.rules.intraday_auction_after(intraday)
            groups = self.exclusive_groups
            bids = [
                {"order_id": o.order_id, "side": o.side, "symbols": [o.book.symbol],
                 "price": o.price, "quantity": o.remaining, "seq": o.seq}
                for o in orders
            ] + [
                {"order_id": b.block_id, "side": b.side,
                 "symbols": list(engine.block_symbols[b.block_id]), "price": b.price,
                 "quantity": b.quantity, "seq": b.seq,
                 **({"group": groups[b.block_id]} if b.block_id in groups else {})}
                for b in blocks
            ]  # fmt: skip
            # An intraday auction takes its books out of continuous trading: say so first.
            collected += self._translate(engine.take_events(), stamp, _Context(None))
            collected.append(
                DayAheadBidsCollected(
                    event_id=stamp.next_id(),
                    ts=stamp.ts,
                    day=key,
                    partition=-1,
                    orders=bids,
                    symbols=symbols,
                    withheld=withheld,
                )
            )
        return collected

    def _apply_day_ahead(self, result: DayAheadCleared, ts: int) -> None:
        """Carry out this partition's share of a day-ahead or intraday auction's result."""
        engine = self.engine
        engine.advance(ts)
        decided = [*result.accepted, *result.rejected]
        trades = result.trades
        if self.replica:
            # The replica's books follow every partition's stored inputs in the store's order,
            # in which another partition's later log time may already have closed a book this
            # partition still held: it carries out only the trades its books can.
            trades = [t for t in trades if engine.can_fill(*t[1:4])]
        engine.apply_day_ahead(trades, result.rejected, decided, result.symbols)
        for order_id in decided:
            self.exclusive_groups.pop(order_id, None)
        # A group is decided by the first auction that saw any of its alternatives: one that
        # reached its book after that auction's gate here never competes in a later one.
        closed = set(result.groups)
        late = [b for b, group in self.exclusive_groups.items() if group in closed]
        engine.drop_undecided(late)
        for block_id in late:
            self.exclusive_groups.pop(block_id, None)

    def _replay_collection(self, collected: DayAheadBidsCollected) -> None:
        """In a replica, a partition's collection where the partition made it: its orders
        frozen until the result, as the partition's were (and, for an intraday auction, its
        books out of continuous trading)."""
        engine = self.engine
        engine.in_auction.update(bid["order_id"] for bid in collected.orders)
        if is_intraday_key(collected.day):
            # As in `_apply_day_ahead`: only the books the replica still has trading.
            engine.suspend_for_session(
                s
                for s in collected.symbols
                if s in engine.books and engine.books[s].state == mo.CONTINUOUS
            )
            return
        engine.day_ahead_books.update(s for s in collected.symbols if s in engine.books)
        for symbol in collected.withheld:
            if symbol in engine.halted_pre_open:
                engine.halted_pre_open[symbol] = False
        day = cst_day_of(collected.day)
        following = self.day_ahead_next
        self.day_ahead_next = day + DAY_MS if following is None else max(following, day + DAY_MS)

    def _control_market(self, event: MarketControlRequested, ts: int) -> None:
        """Halt every contract of this partition trading continuously or collecting orders
        in pre-open for an auction that has not taken them yet, or resume every halted one
        (in a replay, the contracts the partition's recorded copy names)."""
        halting = event.action == "halt_market"
        engine = self.engine
        if event.contracts is not None:
            targets = event.contracts
        elif halting:
            engine.advance(ts)
            in_auction = engine.session_books | engine.day_ahead_books
            targets = [
                s
                for s in self._in_state(mo.CONTINUOUS) + self._in_state(mo.PRE_OPEN)
                if s not in in_auction
            ]
            targets.sort()
        else:
            engine.advance(ts)
            targets = self._in_state(mo.HALTED)
        self._acted_on = targets
        for symbol in targets:
            if halting:
                engine.halt(ts, symbol)
            else:
                engine.resume(ts, symbol)

    def _list_by_operator(self, symbol: str, ts: int) -> bool:
        """Re-open a delisted contract, or list one of the grammar that has no book yet."""
        pre_open = self._rules[2]
        if symbol in self.delivery.cascaded:
            # Its positions are in its hours now: trading it again would sell them twice.
            self.engine.refuse_listing(symbol, mo.RefusalReason.CONTRACT_CLOSED)
            return False
        if symbol in self.engine.books:
            return self.engine.relist(ts, symbol, continuous=not pre_open)
        try:
            spec = parse_symbol(symbol)
        except SymbolError:
            self.engine.refuse_listing(symbol, mo.RefusalReason.UNKNOWN_CONTRACT)
            return False
        if self.catalogue.retires_at(spec) <= max(ts, self.engine.now):
            self.engine.refuse_listing(symbol, mo.RefusalReason.CONTRACT_CLOSED)
            return False
        self._list(spec, ts, by_operator=True)
        return True

    def _set_band(self, event: MarketControlRequested, ts: int) -> None:
        """A contract's band, or every contract's of a family (and those it lists later)."""
        band = event.band or 0
        target = event.symbol
        if self.engine.set_band(ts, target, band) and target not in self.engine.books:
            self.family_bands[target] = band

    def _translate(
        self, outputs: list[mo.Output], stamp: EventStamp, context: _Context
    ) -> list[Event]:
        events: list[Event] = []
        touched: dict[str, None] = {}
        for output in outputs:
            event: Event | None = None
            match output:
                case (mo.ACCEPTED, symbol, _):
                    pass
                case (mo.TRADE, symbol, *_):
                    event = self._trade(output, stamp)
                case (mo.CANCELLED | mo.EXPIRED, symbol, order_id, account, side, remaining, why):
                    event = OrderCancelled(
                        event_id=stamp.next_id(),
                        ts=stamp.ts,
                        order_id=order_id,
                        account_id=account,
                        symbol=symbol,
                        side=side,
                        remaining=remaining,
                        reason=why,
                    )
                case (mo.REJECTED, symbol, _, why):
                    if why is CancelReason.CONTRACT_CLOSED and self.engine.is_delisted(symbol):
                        why = CancelReason.DELISTED
                    event = context.cancelled(why, stamp)
                case (mo.REDUCED, symbol, order_id, account, side, cut, remaining, why):
                    event = OrderReduced(
                        event_id=stamp.next_id(),
                        ts=stamp.ts,
                        order_id=order_id,
                        account_id=account,
                        symbol=symbol,
                        side=side,
                        quantity=cut,
                        remaining=remaining,
                        reason=why,
                    )
                case (mo.AMENDED, symbol, order_id, account, side, price, remaining, kept):
                    event = OrderAmended(
                        event_id=stamp.next_id(),
                        ts=stamp.ts,
                        order_id=order_id,
                        account_id=account,
                        symbol=symbol,
                        side=side,
                        price=price,
                        remaining=remaining,
                        kept_priority=kept,
                        extra_hold=context.extra_hold,
                    )
                case (mo.AMEND_REJECTED, symbol, _, refusal):
                    event = context.amend_rejected(refusal, stamp)
                case (mo.CANCEL_REJECTED, symbol, _, refusal):
                    event = context.cancel_rejected(refusal, stamp)
                case (mo.STATE, symbol, state, change):
                    event = ContractStateChanged(
                        event_id=stamp.next_id(),
                        ts=stamp.ts,
                        symbol=symbol,
                        state=state,
                        reason=change,
                    )
                case (mo.AUCTION, symbol, price, volume, imbalance):
                    event = AuctionCompleted(
                        event_id=stamp.next_id(),
                        ts=stamp.ts,
                        symbol=symbol,
                        price=price,
                        volume=volume,
                        imbalance=imbalance,
                    )
                case (mo.OPERATOR_REJECTED, symbol, action, refusal):
                    event = context.control_rejected(symbol, action, refusal, stamp)
                case (mo.CANCELLED_ALL, _, _):
                    # Names an account, not a contract; the cancels before it said everything.
                    continue
                case _:
                    assert_never(output)
            if event is not None:
                events.append(event)
            if symbol in self._book_seq:
                touched[symbol] = None
        for symbol in touched:
            changed = self._book_changed(symbol, stamp)
            if changed is not None:
                events.append(changed)
        self._forget_delivered(outputs)
        return events

    def _forget_delivered(self, outputs: list[mo.Output]) -> None:
        """Drop the books of the rolled contracts these outputs delivered (see the class)."""
        for output in outputs:
            # Indexed, not matched: a replay passes every order's outputs through here.
            if output[0] == mo.STATE and output[2] == mo.DELIVERED:
                symbol = output[1]
                if symbol not in self._static:
                    self.engine.delist(symbol)
                    del self._book_seq[symbol]

    def _trade(self, trade: mo.Trade, stamp: EventStamp) -> TradeExecuted:
        _, symbol, number, price, quantity, taker, maker, taker_account, maker_account, side = trade
        taker_buys = side != "sell"
        return TradeExecuted(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            trade_id=f"{symbol}:{number}",
            symbol=symbol,
            price=price,
            quantity=quantity,
            buy_order_id=taker if taker_buys else maker,
            sell_order_id=maker if taker_buys else taker,
            buyer_id=taker_account if taker_buys else maker_account,
            seller_id=maker_account if taker_buys else taker_account,
            aggressor=side,
        )

    def _book_changed(self, symbol: str, stamp: EventStamp) -> BookChanged | None:
        """The displayed levels of `symbol` that changed since they were last published."""
        changes = self._take_book_changes(symbol)
        if changes is None:
            return None
        bids, asks = changes
        return BookChanged(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            symbol=symbol,
            seq=self._book_seq[symbol],
            bids=bids,
            asks=asks,
        )

    def _take_book_changes(
        self, symbol: str
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]] | None:
        """(bids, asks): the displayed levels of `symbol` that changed since last taken, counted
        as one more book change; None if none did."""
        book = self.engine.books[symbol]
        bids = book.bids.take_changes()
        asks = book.asks.take_changes()
        if not bids and not asks:
            return None
        self._book_seq[symbol] += 1
        return bids, asks

    def state_hash(self) -> str:
        """SHA-256 of the engine's state hash and the book-change sequence numbers."""
        hasher = hashlib.sha256(self.engine.state_hash().encode())
        book_seq = self._book_seq
        # One update of the joined text hashes the same bytes as one a contract.
        hasher.update("".join([f"|{s}|{book_seq[s]}" for s in sorted(book_seq)]).encode())
        for family in sorted(self.family_bands):
            hasher.update(f"|band|{family}|{self.family_bands[family]}".encode())
        for block_id in sorted(self.exclusive_groups):
            hasher.update(f"|group|{block_id}|{self.exclusive_groups[block_id]}".encode())
        if self.day_ahead_next is not None:
            hasher.update(f"|next|{self.day_ahead_next}".encode())
        if self.intraday_next is not None:
            hasher.update(f"|intraday|{self.intraday_next}".encode())
        self.delivery.digest(hasher)
        return hasher.hexdigest()

    def snapshot(self) -> dict[str, Any]:
        """The engine's snapshot and the book-change sequence numbers, JSON-ready."""
        with collector_paused():
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        snapshot = {
            "engine": self.engine.snapshot(),
            "book_seq": dict(sorted(self._book_seq.items())),
            "delivery": self.delivery.snapshot(),
            "family_bands": dict(sorted(self.family_bands.items())),
        }
        if self.day_ahead_next is not None:
            snapshot["day_ahead"] = {
                "groups": dict(sorted(self.exclusive_groups.items())),
                "next": self.day_ahead_next,
            }
            if self.intraday_next is not None:
                snapshot["day_ahead"]["intraday_next"] = self.intraday_next
        return snapshot

    @classmethod
    def restore(
        cls, catalogue: Catalogue, data: dict[str, Any], replica: bool = False
    ) -> MarketStage:
        """The stage a snapshot describes (also one taken before the engine existed)."""
        with collector_paused():
            return cls._restore(catalogue, data, replica)

    @classmethod
    def _restore(cls, catalogue: Catalogue, data: dict[str, Any], replica: bool) -> MarketStage:
        stage = cls(catalogue, replica=replica)
        if "engine" in data:
            stage.engine = MatchingEngine.restore(data["engine"])
            stage._book_seq.update(data["book_seq"])
            if "delivery" in data:
                stage.delivery = DeliveryDesk.restore(catalogue.rules, data["delivery"])
            stage.family_bands.update(data.get("family_bands", {}))
            day_ahead = data.get("day_ahead", {})
            stage.exclusive_groups.update(day_ahead.get("groups", {}))
            stage.day_ahead_next = day_ahead.get("next")
            stage.intraday_next = day_ahead.get("intraday_next")
        else:
            for symbol, saved in data["books"].items():
                for order_id, account_id, side, price, remaining in saved["orders"]:
                    stage.engine.submit(0, symbol, order_id, account_id, side, price, remaining)
                stage.engine.books[symbol].trades = saved["trade_seq"]
                stage._book_seq[symbol] = saved["book_seq"]
            stage.engine.take_events()
        for book in stage.engine.books.values():
            # What the books hold counts as published: their next changes count from here.
            book.bids.take_changes()
            book.asks.take_changes()
        return stage


def merged_state_hash(stages: Sequence[MarketStage], now: int, seq: int) -> str:
    """`MarketStage.state_hash` of one stage holding what `stages` (each another matching
    partition's) hold, at the log time `now` and order sequence `seq` they share
    (`matching.snapshot.merged_state_hash`): a replica running one stage per partition hashes
    as one running a stage for every partition would, where their log times agree."""
    hasher = hashlib.sha256(
        merged_engine_hash([stage.engine for stage in stages], now, seq).encode()
    )
    book_seq, family_bands, groups = _merged_keyed(stages)
    hasher.update("".join([f"|{s}|{n}" for s, n in book_seq.items()]).encode())
    for family, band in family_bands.items():
        hasher.update(f"|band|{family}|{band}".encode())
    for block_id, group in groups.items():
        hasher.update(f"|group|{block_id}|{group}".encode())
    day_ahead_next, intraday_next = _merged_day_ahead(stages)
    if day_ahead_next is not None:
        hasher.update(f"|next|{day_ahead_next}".encode())
    if intraday_next is not None:
        hasher.update(f"|intraday|{intraday_next}".encode())
    hasher.update(_merged_desk_text(stages).encode())
    return hasher.hexdigest()


def merged_snapshot(stages: Sequence[MarketStage], now: int, seq: int) -> dict[str, Any]:
    """`MarketStage.snapshot` of one stage holding what `stages` hold (`merged_state_hash`)."""
    book_seq, family_bands, groups = _merged_keyed(stages)
    with collector_paused():
        snapshot: dict[str, Any] = {
            "engine": merged_engine_snapshot([stage.engine for stage in stages], now, seq),
            "book_seq": book_seq,
            "delivery": _merged_desk(stages),
            "family_bands": family_bands,
        }
    day_ahead_next, intraday_next = _merged_day_ahead(stages)
    if day_ahead_next is not None:
        snapshot["day_ahead"] = {"groups": groups, "next": day_ahead_next}
        if intraday_next is not None:
            snapshot["day_ahead"]["intraday_next"] = intraday_next
    return snapshot


def _merged_keyed(
    stages: Sequence[MarketStage],
) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
    """The `_book_seq`, `family_bands` and `exclusive_groups` one stage holding what the
    stages hold would keep, each by key in order (a contract, a family and a block are each
    one partition's, so no key is in two stages)."""
    return (
        dict(sorted(item for stage in stages for item in stage._book_seq.items())),
        dict(sorted(item for stage in stages for item in stage.family_bands.items())),
        dict(sorted(item for stage in stages for item in stage.exclusive_groups.items())),
    )


def _merged_day_ahead(stages: Sequence[MarketStage]) -> tuple[int | None, int | None]:
    """The next day-ahead day one replica stage would have: the latest any partition
    collected or started from; its next intraday auction, fixed at the first record: the
    earliest."""
    days = [s.day_ahead_next for s in stages if s.day_ahead_next is not None]
    intraday = [s.intraday_next for s in stages if s.intraday_next is not None]
    return (max(days) if days else None), (min(intraday) if intraday else None)


def _merged_desk(stages: Sequence[MarketStage]) -> dict[str, Any]:
    """`DeliveryDesk.snapshot` of one desk holding what the stages' desks hold: each entry
    list merged and sorted, the keys in the order every desk writes them."""
    return _merged_entries([stage.delivery.snapshot() for stage in stages])


def _merged_desk_text(stages: Sequence[MarketStage]) -> str:
    """`repr(_merged_desk(stages))`, each open sell's entry as its desk rendered it for the
    last hash (`DeliveryDesk.rendered_sells`): rendering every sell at every checkpoint was
    about a third of settlement's state hash with four partitions."""
    desks = [stage.delivery for stage in stages]
    # Sorted by the whole entry, as `sorted` sorts the entries of all of them: each desk's
    # come sorted already, and timsort merges such runs in one pass.
    sells = sorted(
        chain.from_iterable(desk.rendered_sells() for desk in desks), key=itemgetter(0, 1)
    )
    # Every desk's snapshot starts with its sells, so the other keys keep their merged order.
    rest = repr(_merged_entries([desk.snapshot_without_sells() for desk in desks]))
    return f"{{'sells': [{', '.join(text for _, _, text in sells)}], {rest[1:]}"


def _merged_entries(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The snapshots' entry lists merged and sorted, by key in the order every one writes
    them (a key only some have goes after the key it follows in those)."""
    order: list[str] = []
    for snapshot in snapshots:
        previous: str | None = None
        for key in snapshot:
            if key not in order:
                order.insert(0 if previous is None else order.index(previous) + 1, key)
            previous = key
    return {key: sorted(entry for s in snapshots for entry in s.get(key, ())) for key in order}


@contextmanager
def collector_paused() -> Iterator[None]:
    """Keep Python's cyclic garbage collector from running inside: listing, snapshotting or
    restoring a month of books makes hundreds of thousands of containers, none in a cycle
    (reference counting frees what is garbage), and with the collector on, the collections
    their allocations set off, each walking every live book, took half to three quarters of
    the time (docs/BENCHMARKS.md, "Listing horizon")."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Context:
    """The record being handled, for the outputs that must name what it asked for."""

    __slots__ = ("event",)

    def __init__(self, event: Event | None) -> None:
        self.event = event

    @property
    def extra_hold(self) -> int:
        return self.event.extra_hold if isinstance(self.event, AmendRequested) else 0

    def cancelled(self, reason: CancelReason, stamp: EventStamp) -> OrderCancelled | None:
        """A refused order or block: its whole hold is released."""
        order = self.event
        if isinstance(order, BlockAccepted):
            symbol = order.family
            remaining = order.quantity * len(order.symbols)
        elif isinstance(order, OrderAccepted):
            symbol = order.symbol
            remaining = order.quantity
        else:
            return None
        return OrderCancelled(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=order.order_id,
            account_id=order.account_id,
            symbol=symbol,
            side=order.side,
            remaining=remaining,
            reason=reason,
        )

    def amend_rejected(self, reason: mo.RefusalReason, stamp: EventStamp) -> AmendRejected | None:
        amend = self.event
        if not isinstance(amend, AmendRequested):
            return None
        why = (
            RejectReason.ORDER_NOT_OPEN
            if reason is mo.RefusalReason.UNKNOWN_ORDER
            else _rejection(reason)
        )
        return AmendRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=amend.order_id,
            account_id=amend.account_id,
            reason=why,
            message=f"amend of order {amend.order_id!r} refused: {why.value}",
            symbol=amend.symbol,
            extra_hold=amend.extra_hold,
        )

    def cancel_rejected(
        self, refusal: mo.RefusalReason, stamp: EventStamp
    ) -> CancelRejected | None:
        cancel = self.event
        if not isinstance(cancel, CancelRequested):
            return None
        if refusal is mo.RefusalReason.IN_AUCTION:
            reason = RejectReason.IN_AUCTION
            message = (
                f"order {cancel.order_id!r} is in an auction whose result is not in yet: it "
                "can be cancelled once the result is applied"
            )
        else:
            reason = RejectReason.ORDER_NOT_OPEN
            message = f"order {cancel.order_id!r} is no longer open"
        return CancelRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=cancel.order_id,
            account_id=cancel.account_id,
            reason=reason,
            message=message,
        )

    def control_rejected(
        self, symbol: str, action: mo.OperatorAction, reason: mo.RefusalReason, stamp: EventStamp
    ) -> MarketControlRejected | None:
        control = self.event
        if not isinstance(control, MarketControlRequested):
            return None
        # The command's own symbol, as it was sent: an auction's refusal may be of another of
        # its `symbols`, which the message names.
        return MarketControlRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            operator_id=control.operator_id,
            action=_OPERATOR_ACTIONS[action],
            symbol=control.symbol,
            reason=_rejection(reason),
            message=f"{control.action} of {symbol} refused: {reason}",
        )


def _rejection(reason: mo.RefusalReason) -> RejectReason:
    """The exchange's reason for a refusal of matching (the same value: see `RejectReason`)."""
    return RejectReason(reason.value)
