"""Snapshots, restore and the state hash of the matching engine.

`snapshot()` returns the whole state as plain JSON-able data (books in priority order, waiting
blocks, pending timers, counters); `restore(snapshot)` rebuilds an engine that behaves
identically; `state_hash()` is the SHA-256 of the canonical JSON of the snapshot. The stages
store snapshots and replays compare hashes, so the layout is part of what they rely on.

`Snapshots` adds these methods to the engine's state (`matching/state.py` says why the engine is
built from one class per concern).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Self

import orjson

from matching.book import BUY, CST_DAY_OFFSET_MS, Block, Book, by_seq, side_orders
from matching.outputs import CancelReason
from matching.state import TIMER_AUCTION, TIMER_EXPIRE, EngineState


class Snapshots(EngineState):
    """The engine's state as data, and back."""

    def __init__(self, halt_ms: int = 60_000, day_offset_ms: int = CST_DAY_OFFSET_MS) -> None:
        super().__init__(halt_ms, day_offset_ms)
        self._book_json: dict[str, EncodedBook] = {}
        """The canonical JSON of each orderless book as of the last state hash, by symbol."""
        self._timer_json: dict[int, bytes] = {}
        """The canonical JSON of each timer but expiries as of the last state hash, by its
        number."""

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON-able data; `restore` rebuilds an identical engine."""
        return self._snapshot(
            self._timer_data(), [_book_data(self.books[symbol]) for symbol in sorted(self.books)]
        )

    def _timer_data(self) -> list[list[Any]]:
        """The pending timers, in the order they run (an expiry only of an order still open)."""
        timers = []
        for at, kind, key, _, payload in sorted(self._timers):
            if kind == TIMER_EXPIRE:
                order, reason = payload
                if self.orders.get(order.order_id) is not order:
                    continue
                timers.append([at, kind, key, reason])
            else:
                timers.append([at, kind, key, list(payload) if kind == TIMER_AUCTION else payload])
        return timers

    def _snapshot(self, timers: Any, books: Any) -> dict[str, Any]:
        """The snapshot with the timers and books given (as data, or as their JSON)."""
        blocks = [
            [
                b.block_id,
                b.account,
                b.side,
                b.family,
                b.price,
                b.quantity,
                b.group,
                b.seq,
                list(self.block_symbols[b.block_id]),
            ]
            for b in sorted(self.blocks.values(), key=by_seq)
        ]
        snapshot = {
            "version": 1,
            "halt_ms": self.halt_ms,
            "day_offset_ms": self.day_offset_ms,
            "now": self.now,
            "seq": self.seq,
            "books": books,
            "blocks": blocks,
            "timers": timers,
        }
        if self.in_auction:
            # Only while a day-ahead result is awaited: other snapshots keep their layout.
            snapshot["in_auction"] = sorted(self.in_auction)
        # Likewise only with exclusive groups waiting, or during an intraday auction.
        if self.exclusive:
            snapshot["exclusive"] = sorted(self.exclusive)
        if self.session_books:
            snapshot["session_books"] = sorted(self.session_books)
        # Only while an operator holds a pre-open book out of its auction, or one is awaited.
        if self.day_ahead_books:
            snapshot["day_ahead_books"] = sorted(self.day_ahead_books)
        if self.halted_pre_open:
            snapshot["halted_pre_open"] = dict(sorted(self.halted_pre_open.items()))
        if self.close_after_session:
            snapshot["close_after_session"] = dict(sorted(self.close_after_session.items()))
        return snapshot

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> Self:
        """An engine in the state `snapshot` describes."""
        engine = cls(snapshot["halt_ms"], snapshot["day_offset_ms"])
        engine.now = snapshot["now"]
        for data in snapshot["books"]:
            book = Book(
                data["symbol"],
                data["family"],
                data["delivery_at"],
                data["reference"],
                data["tick"],
                data["band"],
                data["protection"],
                data["close_at"],
            )
            book.state = data["state"]
            book.reopen_at = data["reopen_at"]
            book.trades = data["trades"]
            engine.books[book.symbol] = book
            for oid, account, side, price, remaining, group, mode, seq, aon, post in data["orders"]:
                order = engine._rest(book, oid, account, side, price, remaining, group, mode)
                order.aon = aon
                order.post_only = post
                order.seq = seq
                if aon:
                    level = (book.bids if side == BUY else book.asks).levels[price]
                    level.quantity -= remaining
                    level.aon += 1
        engine.in_auction = set(snapshot.get("in_auction", ()))
        engine.exclusive = set(snapshot.get("exclusive", ()))
        engine.session_books = set(snapshot.get("session_books", ()))
        engine.close_after_session = dict(snapshot.get("close_after_session", {}))
        engine.day_ahead_books = set(snapshot.get("day_ahead_books", ()))
        engine.halted_pre_open = dict(snapshot.get("halted_pre_open", {}))
        for bid, account, side, family, price, quantity, group, seq, symbols in snapshot["blocks"]:
            engine.blocks[bid] = Block(bid, account, side, family, price, quantity, group, seq)
            engine.block_symbols[bid] = tuple(symbols)
        for at, kind, key, payload in snapshot["timers"]:
            if kind == TIMER_EXPIRE:
                engine._push_timer(at, kind, key, (engine.orders[key], CancelReason(payload)))
            else:
                engine._push_timer(
                    at, kind, key, tuple(payload) if kind == TIMER_AUCTION else payload
                )
        engine.seq = snapshot["seq"]
        return engine

    def state_hash(self) -> str:
        """SHA-256 of the canonical snapshot: equal states give equal hashes.

        The text hashed is `json.dumps(self.snapshot(), sort_keys=True, separators=(",", ":"))`
        to the byte, but a book holding no orders (with a long listing horizon, nearly every
        book) and a timer that is not an order's expiry are encoded once, and their JSON is
        reused while they stay as they were: settlement hashes the whole state every
        checkpoint, so re-encoding thousands of empty books each time would cost more than
        folding the events between two checkpoints.
        """
        return _canonical_hash(self._snapshot(None, None), self._books_json(), self._timers_json())

    def _books_json(self) -> list[bytes]:
        """Each book's canonical JSON, by symbol; an orderless book's from the last hash when
        none of its fields changed."""
        # Kept and compared in place: a hash allocates only for what changed, so it neither
        # adds garbage to collect nor ages a copy of every book into the old generation.
        books = self.books
        encoded = self._book_json
        parts = []
        for symbol in sorted(books):
            book = books[symbol]
            if book.bids.levels or book.asks.levels:
                parts.append(canonical_json(_book_data(book)))
                continue
            known = encoded.get(symbol)
            if known is None:
                known = encoded[symbol] = EncodedBook(book)
            elif not known.encodes(book):
                known.encode(book)
            parts.append(known.text)
        if len(encoded) > len(books):
            for symbol in [s for s in encoded if s not in books]:
                del encoded[symbol]
        return parts

    def _timers_json(self) -> list[bytes]:
        """Each pending timer's canonical JSON, in `_timer_data`'s order; a timer other than an
        expiry (whose order may have gone) from the last hash."""
        return [text for _, text in self._keyed_timers_json()]

    def _keyed_timers_json(self) -> list[tuple[tuple[int, int, str], bytes]]:
        """`_timers_json`, each timer's JSON with its (time, kind, key): the order timers of
        several engines merge in (`merged_state_hash`)."""
        encoded = self._timer_json
        parts = []
        for at, kind, key, number, payload in sorted(self._timers):
            if kind == TIMER_EXPIRE:
                order, reason = payload
                if self.orders.get(order.order_id) is order:
                    parts.append(((at, kind, key), canonical_json([at, kind, key, reason])))
                continue
            text = encoded.get(number)
            if text is None:
                data = list(payload) if kind == TIMER_AUCTION else payload
                text = encoded[number] = canonical_json([at, kind, key, data])
            parts.append(((at, kind, key), text))
        if len(encoded) > len(self._timers):
            pending = {timer[3] for timer in self._timers}
            for number in [n for n in encoded if n not in pending]:
                del encoded[number]
        return parts


class EncodedBook:
    """An orderless book's canonical JSON and the fields it was encoded from."""

    __slots__ = (
        "band",
        "book",
        "close_at",
        "protection",
        "reference",
        "reopen_at",
        "state",
        "text",
        "tick",
        "trades",
    )

    def __init__(self, book: Book) -> None:
        self.encode(book)

    def encode(self, book: Book) -> None:
        """Encode `book` (holding no orders) afresh."""
        self.book = book
        self.state = book.state
        self.reference = book.reference
        self.band = book.band
        self.protection = book.protection
        self.close_at = book.close_at
        self.reopen_at = book.reopen_at
        self.trades = book.trades
        self.tick = book.tick
        self.text = canonical_json(_book_data(book))

    def encodes(self, book: Book) -> bool:
        """Whether `text` is still the JSON of `book` (holding no orders)."""
        return (
            self.book is book
            and self.state == book.state
            and self.reference == book.reference
            and self.band == book.band
            and self.protection == book.protection
            and self.close_at == book.close_at
            and self.reopen_at == book.reopen_at
            and self.trades == book.trades
            and self.tick == book.tick
        )


def merged_snapshot(engines: Sequence[Snapshots], now: int, seq: int) -> dict[str, Any]:
    """The snapshot one engine would have that held every book, block and timer of `engines`
    (each holding other contracts' books), with the log time `now` and the order sequence
    `seq` they share: a replica that runs one engine per matching partition hashes and stores
    the same state as one that runs one for all (settlement's `ExchangeState`)."""
    return _merge_heads([engine.snapshot() for engine in engines], now, seq)


def merged_state_hash(engines: Sequence[Snapshots], now: int, seq: int) -> str:
    """`state_hash` of `merged_snapshot(engines, now, seq)`, from each engine's encoded books
    and timers as its own `state_hash` reuses them."""
    heads = _merge_heads([engine._snapshot(None, None) for engine in engines], now, seq)
    books = [zip(sorted(e.books), e._books_json(), strict=True) for e in engines]
    timers = [e._keyed_timers_json() for e in engines]
    return _canonical_hash(
        heads,
        [text for _, text in heapq.merge(*books, key=itemgetter(0))],
        [text for _, text in heapq.merge(*timers, key=itemgetter(0))],
    )


def _canonical_hash(head: dict[str, Any], books: list[bytes], timers: list[bytes]) -> str:
    """SHA-256 of a snapshot's canonical JSON (`Snapshots.state_hash`): `head` holds every
    key, its books and timers given as each one's JSON, in order."""
    # Fed to the hash piece by piece: the same bytes as one text, without copying them into
    # one. JSON with ASCII escapes is its own UTF-8.
    hasher = hashlib.sha256()
    separator = b"{"
    for key in sorted(head):
        hasher.update(separator + canonical_json(key) + b":")
        separator = b","
        if key == "books":
            parts = books
        elif key == "timers":
            parts = timers
        else:
            hasher.update(canonical_json(head[key]))
            continue
        hasher.update(b"[" + b",".join(parts) + b"]")
    hasher.update(b"}")
    return hasher.hexdigest()


_SEQ_AT = 7
"""Where a block's sequence number is in its snapshot entry."""
_SET_KEYS = ("in_auction", "exclusive", "session_books", "day_ahead_books")
_DICT_KEYS = ("halted_pre_open", "close_after_session")


def _merge_heads(heads: list[dict[str, Any]], now: int, seq: int) -> dict[str, Any]:
    """Engine snapshots (or their heads, with books and timers None) merged as `_snapshot`
    would have written one engine's: books by symbol, blocks by sequence, timers by time,
    the sets and maps only when not empty."""
    merged = dict(heads[0])
    merged["now"] = now
    merged["seq"] = seq
    if merged["books"] is not None:
        merged["books"] = sorted(
            (book for head in heads for book in head["books"]), key=itemgetter("symbol")
        )
        merged["timers"] = sorted(
            (timer for head in heads for timer in head["timers"]), key=itemgetter(0, 1, 2)
        )
    merged["blocks"] = sorted(
        (block for head in heads for block in head["blocks"]), key=itemgetter(_SEQ_AT)
    )
    for key in _SET_KEYS:
        members = sorted(member for head in heads for member in head.get(key, ()))
        if members:
            merged[key] = members
        else:
            merged.pop(key, None)
    for key in _DICT_KEYS:
        entries = dict(sorted(item for head in heads for item in head.get(key, {}).items()))
        if entries:
            merged[key] = entries
        else:
            merged.pop(key, None)
    return merged


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
"""The encoder of the state hash's canonical JSON (`json.dumps` with these options)."""


def canonical_json(value: Any) -> bytes:
    """`json.dumps(value, sort_keys=True, separators=(",", ":"))` as bytes, the text every
    state hash is taken of, made by orjson where that gives the same bytes: about 14 times
    faster on a book, and settlement and replays hash the whole state every checkpoint.

    orjson's text differs only where it writes a character other than printable ASCII as it
    is (json escapes DEL and everything past ASCII) and where it refuses what json takes
    (integers past 64 bits, keys that are not strings): json makes the text there. Floats,
    which the two would write differently, are never part of the state (prices, quantities
    and money are integers)."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _CANONICAL.encode(value).encode()
    if text.isascii() and b"\x7f" not in text:
        # A copy the size of the text: orjson's own bytes keep its whole buffer (4 KiB for
        # the shortest text), and an orderless book's text is kept from hash to hash.
        return bytes(memoryview(text))
    return _CANONICAL.encode(value).encode()


def _book_data(book: Book) -> dict[str, Any]:
    """A book as snapshot data: its parameters, state and orders in priority order."""
    return {
        "symbol": book.symbol,
        "family": book.family,
        "delivery_at": book.delivery_at,
        "reference": book.reference,
        "tick": book.tick,
        "band": book.band,
        "protection": book.protection,
        "close_at": book.close_at,
        "state": book.state,
        "reopen_at": book.reopen_at,
        "trades": book.trades,
        "orders": [
            [
                o.order_id,
                o.account,
                o.side,
                o.price,
                o.remaining,
                o.group,
                o.stp_mode,
                o.seq,
                o.aon,
                o.post_only,
            ]
            for side in (book.bids, book.asks)
            for o in side_orders(side)
        ],
    }
