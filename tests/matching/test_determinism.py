"""Replaying the same commands gives the same event bytes; a snapshot round-trip keeps the hash."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from matching import book as B
from matching import outputs as O
from matching.bench import AMEND, CANCEL, CANCEL_ALL, SUBMIT, make_flow
from matching.engine import MatchingEngine

H = B.HOUR_MS
FAMILY = "D.X"
SYMBOLS = [f"{FAMILY}.{h}" for h in range(4)]
Call = tuple[str, tuple[Any, ...], dict[str, Any]]


def commands(seed: int, count: int) -> list[Call]:
    """A seeded command list with every command type."""
    rng = random.Random(seed)
    out: list[Call] = []
    for i, symbol in enumerate(SYMBOLS):
        opens = {"open_at": 0} if i < 3 else {}
        out.append(
            (
                "list_contract",
                (0, symbol, FAMILY, (3 + i) * H, 100),
                {"band": 8, "protection": 5, "close_at": (3 + i) * H - H // 4, **opens},
            )
        )
    ts = 1
    ids: list[str] = []
    for n in range(count):
        ts += rng.choice([0, 1, 5, 50, 500, 5_000])
        symbol = rng.choice(SYMBOLS)
        account = rng.choice("abcdef")
        side = rng.choice([B.BUY, B.SELL])
        price = rng.randint(92, 108)
        roll = rng.random()
        if roll < 0.55:
            order_id = f"o{n}"
            ids.append(order_id)
            options = rng.choice(
                [
                    {},
                    {},
                    {},
                    {"tif": B.IOC},
                    {"tif": B.FOK},
                    {"all_or_none": True},
                    {"post_only": True},
                    {"tif": B.GTD, "expire_at": ts + rng.randint(1, 20_000)},
                    {"tif": B.DAY},
                    {"market": True},
                    {"min_quantity": 2},
                    {
                        "stp_mode": rng.choice(B.STP_MODES),
                        "stp_group": "ab" if account in "ab" else "",
                    },
                ]
            )
            args = (ts, symbol, order_id, account, side, price, rng.randint(1, 9))
            out.append(("submit", args, options))
        elif roll < 0.75 and ids:
            out.append(("cancel", (ts, rng.choice(ids), None), {}))
        elif roll < 0.85 and ids:
            out.append(
                (
                    "amend",
                    (ts, rng.choice(ids), None, rng.choice([0, price]), rng.randint(0, 6)),
                    {},
                )
            )
        elif roll < 0.9:
            first = rng.randint(0, 2)
            block = SYMBOLS[first : first + rng.randint(1, 2)]
            out.append(
                ("submit_block", (ts, f"k{n}", account, side, block, price, rng.randint(1, 4)), {})
            )
        elif roll < 0.93:
            out.append((rng.choice(["halt", "resume"]), (ts, symbol), {}))
        elif roll < 0.95:
            out.append(("schedule_auction", (ts, FAMILY, ts + 1_000, SYMBOLS[2:]), {}))
        elif roll < 0.96:
            out.append(("cancel_all", (ts, account), {}))
        else:
            out.append(("advance", (ts + rng.choice([1_000, 60_000, H // 8]),), {}))
    return out


def replay(engine: MatchingEngine, calls: list[Call]) -> bytes:
    """Apply the calls; the events they caused, as canonical JSON bytes."""
    events: list[Any] = []
    for method, args, kwargs in calls:
        getattr(engine, method)(*args, **kwargs)
        events.extend(engine.take_events())
    return json.dumps(events, separators=(",", ":")).encode()


def test_same_commands_twice_give_identical_event_bytes_and_hash() -> None:
    calls = commands(seed=11, count=6_000)
    first, second = MatchingEngine(), MatchingEngine()
    first_bytes = replay(first, calls)
    assert first_bytes == replay(second, calls)
    assert first.state_hash() == second.state_hash()
    kinds = {e[0] for e in json.loads(first_bytes)}
    assert {O.TRADE, O.CANCELLED, O.EXPIRED, O.AMENDED, O.AUCTION, O.STATE, O.REJECTED} <= kinds


def test_snapshot_mid_way_then_the_rest_equals_straight_through() -> None:
    calls = commands(seed=23, count=6_000)
    straight = MatchingEngine()
    replay(straight, calls[:3_000])
    straight_tail = replay(straight, calls[3_000:])

    head = MatchingEngine()
    replay(head, calls[:3_000])
    stored = json.dumps(head.snapshot())
    restored = MatchingEngine.restore(json.loads(stored))
    assert restored.state_hash() == head.state_hash()
    assert replay(restored, calls[3_000:]) == straight_tail
    assert restored.state_hash() == straight.state_hash()


def test_the_hash_changes_with_the_state() -> None:
    engine = MatchingEngine()
    engine.list_contract(0, "D.X.0", FAMILY, 3 * H, 100, open_at=0)
    before = engine.state_hash()
    engine.submit(1, "D.X.0", "o1", "a", B.BUY, 99, 1)
    after = engine.state_hash()
    assert after != before
    assert MatchingEngine.restore(engine.snapshot()).state_hash() == after


def test_benchmark_flow_replays_identically() -> None:
    flow = make_flow(20_000, seed=5)
    assert flow == make_flow(20_000, seed=5)
    outputs = []
    for _ in range(2):
        engine = MatchingEngine()
        for hour, symbol in enumerate(sorted({a[1] for op, a in flow if op == SUBMIT})):
            engine.list_contract(
                0, symbol, "H100-80G.GZ", 10**13 + hour * H, 1800, tick=10, open_at=0
            )
        handlers = {
            SUBMIT: engine.submit,
            CANCEL: engine.cancel,
            AMEND: engine.amend,
            CANCEL_ALL: engine.cancel_all,
        }
        for op, args in flow:
            handlers[op](*args)
        outputs.append((json.dumps(engine.take_events()), engine.state_hash()))
    assert outputs[0] == outputs[1]


def canonical_digest(engine: MatchingEngine) -> str:
    """What the state hash is defined as: SHA-256 of the snapshot's canonical JSON."""
    text = json.dumps(engine.snapshot(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_hash_reusing_unchanged_books_is_the_canonical_snapshot_digest_throughout() -> None:
    # The hash reuses the JSON of orderless books and of timers between calls: at every step
    # of a flow that rests, fills, expires, halts, auctions and closes books, and with empty
    # books listed beside them, it must still hash exactly the canonical snapshot.
    calls = commands(seed=31, count=3_000)
    engine = MatchingEngine()
    for hour in range(40):
        engine.list_contract(0, f"E.Y.{hour}", "E.Y", (10 + hour) * H, 0, continuous=True)
    hashes = set()
    for step, (method, args, kwargs) in enumerate(calls):
        getattr(engine, method)(*args, **kwargs)
        engine.take_events()
        if step % 7 == 0:
            hashes.add(engine.state_hash())
            assert engine.state_hash() == canonical_digest(engine), step
    engine.set_band(engine.now, "E.Y.3", 5)
    engine.halt(engine.now, "E.Y.4")
    assert engine.state_hash() == canonical_digest(engine)
    engine.advance(12 * H)
    assert engine.state_hash() == canonical_digest(engine)
    assert MatchingEngine.restore(engine.snapshot()).state_hash() == engine.state_hash()
    assert len(hashes) > 100
