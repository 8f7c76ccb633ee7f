"""The merged history's state put together from each settlement shard's own state, so that a
replay of every shard can restart from the shards' stored snapshots instead of position 0.

Each shard's stored snapshot is its own `ExchangeState`: the fold of its events alone. The
merged replay folds every shard's events into one state. The two meet because of how the
events are split (docs/DESIGN.md, "Settlement in shards"): a family's books, blocks, timers
and deliveries are only ever acted on by its own shard's events, so the merged state's are
its shard's; and what is per account is a sum of parts (each journal entry balances within
its event, and `Accounts` folds a part whatever the other parts hold: a shard holding a
buyer's purchases but not its deposit holds its cash below zero), so the merged state's cash,
capacity, positions and journal are the parts added up. Anything kept whole by one shard
(an open order, a programme, a grant, a concession) must be held by one shard only.

`combine` checks those conditions as it goes and raises `NotCombinable` saying which one does
not hold; the replay then starts from position 0. It never guesses: a part of the state it
does not know how to put together must be the same in every shard (the engine's settings),
or the combination is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from exchange.domain.catalogue import family_of, is_family
from matching.state import TIMER_EXPIRE


class NotCombinable(Exception):
    """The shards' states cannot be put together into the merged history's state."""


ACCOUNT_SUMS = {"cash": 1, "capacity": 2, "positions": 2, "resale_held": 2, "ledger": 1}
"""The accounts' figures that are sums of the shards' parts, and how many leading items of
each entry are its key (the rest are added up)."""
ACCOUNT_WHOLES = {
    "open_orders": 1,
    "programmes": 1,
    "subsidised": 3,
    "bundle_used": 3,
    "concessions": 2,
    "cascaded_strips": 1,
    "settled_in_period": 2,
}
"""The accounts' entries each kept whole by one shard, and the length of their keys."""
DELIVERY_WHOLES = {
    "sells": 1,
    "provisions": 2,
    "holdings": 2,
    "obligations": 3,
    "recalls": 1,
    "cascaded": 1,
    "drawdowns": 3,
    "bundles_started": 1,
}
"""The delivery desk's entries, each of one family's contract and so kept by its shard."""
ENGINE_SETS = ("in_auction", "exclusive", "session_books", "day_ahead_books")
ENGINE_MAPS = ("halted_pre_open", "close_after_session")


def combine(
    states: Sequence[dict[str, Any]], shard_of_family: Callable[[str], int]
) -> dict[str, Any]:
    """The merged history's state (`ExchangeState.snapshot()`'s form) from each shard's,
    in shard order; `shard_of_family` names the shard settling a family. NotCombinable says
    why it cannot be done."""
    return {
        "accounts": _accounts([s["accounts"] for s in states]),
        "market": _market([s["market"] for s in states], shard_of_family),
        "position": sum(s["position"] for s in states),
        "ts": max((s["ts"] for s in states if s["ts"] is not None), default=None),
        "applied": sum(s["applied"] for s in states),
    }


def _accounts(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    _same_keys("accounts", parts, {*ACCOUNT_SUMS, *ACCOUNT_WHOLES, "grants"})
    combined: dict[str, Any] = {}
    for name, key_length in ACCOUNT_SUMS.items():
        sums: dict[tuple[Any, ...], list[int]] = {}
        for part in parts:
            for entry in part.get(name, []):
                key, figures = tuple(entry[:key_length]), entry[key_length:]
                total = sums.setdefault(key, [0] * len(figures))
                for at, figure in enumerate(figures):
                    total[at] += figure
        entries = [[*key, *figures] for key, figures in sorted(sums.items())]
        if name in ("resale_held", "ledger"):
            # As `Accounts.snapshot` keeps them: none that came to nothing.
            entries = [entry for entry in entries if entry[-1]]
        if name in parts[0] or entries:
            combined[name] = entries
    for name, key_length in ACCOUNT_WHOLES.items():
        if any(name in part for part in parts):
            combined[name] = _whole(
                f"accounts' {name}", [p.get(name, []) for p in parts], key_length
            )
    programmes = {entry[0]: k for k, p in enumerate(parts) for entry in p.get("programmes", [])}
    if any("grants" in part for part in parts):
        combined["grants"] = _grants([part.get("grants", []) for part in parts], programmes)
    return combined


GRANT_RULES = slice(4, 11)
"""Where a grant's entry (`accounts._grant_entry`) has its rules: rate, cap, classes,
regions, validity and related accounts."""
GRANT_VALID_UNTIL = 9


def _grants(parts: Sequence[list[Any]], programmes: dict[str, int]) -> list[Any]:
    """Each grant put together from its parts: the approval's rules, from the one shard that
    saw it, and every shard's uses added up, as `Accounts` puts an approval and the uses seen
    before it together. A shard that sees uses of a grant but not its approval holds it
    `awaiting_approval`: no rules, and its figures below zero."""
    grants: dict[tuple[str, str], list[Any]] = {}
    approved_in: dict[tuple[str, str], int] = {}
    for k, part in enumerate(parts):
        for entry in part:
            key = (entry[0], entry[1])
            figures = _grant_figures(entry)
            held = grants.setdefault(key, [None, [0] * len(figures), 0])
            if entry[GRANT_VALID_UNTIL] > 0:
                if approved_in.setdefault(key, k) != k:
                    raise NotCombinable(f"shards {approved_in[key]} and {k} both approved {key!r}")
                if programmes.get(key[0], k) != k:
                    # The approval moved its programme's budget only where the programme is.
                    raise NotCombinable(
                        f"shard {k} approved a grant of programme {key[0]!r}, which shard "
                        f"{programmes[key[0]]} holds"
                    )
                held[0] = entry[GRANT_RULES]
                held[2] = entry[14] if len(entry) > 14 else 0
            held[1] = [a + b for a, b in zip(held[1], figures, strict=True)]
    combined = []
    for (programme_id, account_id), (rules, figures, discount_bps) in sorted(grants.items()):
        limit, remaining, reserved, committed, clawed_back, discount_remaining = figures
        if rules is None:
            rules = [0, 0, [], [], 0, 0, []]
        entry = [programme_id, account_id, limit, remaining, *rules, reserved, committed,
                 clawed_back]  # fmt: skip
        if discount_bps:
            entry += [discount_bps, discount_remaining]
        elif discount_remaining:
            # The snapshot's form has no place for it (`accounts._grant_entry`).
            raise NotCombinable(f"grant {programme_id}:{account_id} has a discount left unruled")
        combined.append(entry)
    return combined


def _grant_figures(entry: list[Any]) -> list[int]:
    """A grant entry's figures that add up: limit, what is left, reserved, committed, clawed
    back, and the discount left."""
    discount_remaining = entry[15] if len(entry) > 15 else 0
    return [entry[2], entry[3], entry[11], entry[12], entry[13], discount_remaining]


def _market(
    parts: Sequence[dict[str, Any]], shard_of_family: Callable[[str], int]
) -> dict[str, Any]:
    _same_keys("market", parts, {"engine", "book_seq", "delivery", "family_bands", "day_ahead"})
    for name in ("day_ahead",):
        if any(part.get(name) != parts[0].get(name) for part in parts):
            raise NotCombinable(f"the shards' {name} states differ")
    combined: dict[str, Any] = {
        "engine": _engine([part["engine"] for part in parts], shard_of_family),
        "book_seq": {
            symbol: parts[shard_of_family(family_of(symbol))]["book_seq"].get(symbol, 0)
            for symbol in sorted({s for part in parts for s in part["book_seq"]})
        },
        "delivery": _delivery([part["delivery"] for part in parts]),
        "family_bands": _owned(
            "family bands", [part["family_bands"] for part in parts], shard_of_family
        ),
    }
    if "day_ahead" in parts[0]:
        combined["day_ahead"] = parts[0]["day_ahead"]
    return combined


def _engine(
    parts: Sequence[dict[str, Any]], shard_of_family: Callable[[str], int]
) -> dict[str, Any]:
    known = {"version", "halt_ms", "day_offset_ms", "now", "seq", "books", "blocks", "timers"}
    _same_keys("engine", parts, known | set(ENGINE_SETS) | set(ENGINE_MAPS))
    for name in ("version", "halt_ms", "day_offset_ms"):
        if any(part[name] != parts[0][name] for part in parts):
            raise NotCombinable(f"the shards' engines differ in {name}")
    for name in (*ENGINE_SETS, *ENGINE_MAPS):
        if any(part.get(name) for part in parts):
            # Auctions and sessions in progress span families: not put together.
            raise NotCombinable(f"a shard's engine has {name} pending")
    books: list[dict[str, Any]] = []
    resting: list[set[str]] = [set() for _ in parts]
    for symbol in sorted({book["symbol"] for part in parts for book in part["books"]}):
        owner = shard_of_family(family_of(symbol))
        found = [book for book in parts[owner]["books"] if book["symbol"] == symbol]
        if not found:
            raise NotCombinable(f"shard {owner} has no book of {symbol}, which it settles")
        books.append(found[0])
        resting[owner].update(order[0] for order in found[0]["orders"])
    blocks = [
        block
        for k, part in enumerate(parts)
        for block in part["blocks"]
        if shard_of_family(block[3]) == k
    ]
    timers = [
        timer
        for k, part in enumerate(parts)
        for timer in part["timers"]
        if _timer_owned(timer, k, resting[k], shard_of_family)
    ]
    return {
        "version": parts[0]["version"],
        "halt_ms": parts[0]["halt_ms"],
        "day_offset_ms": parts[0]["day_offset_ms"],
        # The clock of the shard furthest behind: its timers then fire where the merged
        # history passes their time, after its own events logged before them (the others'
        # timers up to their own clocks have fired, on books none of its events touch).
        # Orders are numbered past every shard's numbers (priority only compares orders of
        # one book, all one shard's).
        "now": min(part["now"] for part in parts),
        "seq": max(part["seq"] for part in parts),
        "books": books,
        "blocks": sorted(blocks, key=lambda block: (block[7], block[0])),
        "timers": sorted(timers, key=lambda timer: (timer[0], timer[1], timer[2])),
    }


def _timer_owned(
    timer: list[Any], shard: int, resting: set[str], shard_of_family: Callable[[str], int]
) -> bool:
    """Whether a shard's timer is the merged state's: an order's expiry if the order rests in
    a book of the shard's own families, a contract's or a family's if it settles the family."""
    _, kind, key, _ = timer
    if kind == TIMER_EXPIRE:
        return key in resting
    family = key if is_family(key) else family_of(key)
    return shard_of_family(family) == shard


def _delivery(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    _same_keys("delivery", parts, set(DELIVERY_WHOLES))
    return {
        name: _whole(f"delivery {name}", [part[name] for part in parts], key_length)
        for name, key_length in DELIVERY_WHOLES.items()
        if any(name in part for part in parts)
    }


def _owned(
    what: str, parts: Sequence[dict[str, Any]], shard_of_family: Callable[[str], int]
) -> dict[str, Any]:
    combined: dict[str, Any] = {}
    for k, part in enumerate(parts):
        for family, value in part.items():
            if shard_of_family(family) != k:
                raise NotCombinable(f"shard {k} holds {what} of {family}, another's family")
            combined[family] = value
    return dict(sorted(combined.items()))


def _whole(what: str, parts: Iterable[list[Any]], key_length: int) -> list[Any]:
    """The entries of every shard, each key in one shard only."""
    holder: dict[Any, int] = {}
    entries: list[Any] = []
    for k, part in enumerate(parts):
        for entry in part:
            key = _key(entry, key_length)
            if holder.setdefault(key, k) != k:
                raise NotCombinable(f"shards {holder[key]} and {k} both hold {what} {key!r}")
            entries.append(entry)
    return sorted(entries, key=lambda entry: _key(entry, key_length))


def _key(entry: Any, key_length: int) -> str:
    """An entry's key, comparable and hashable whatever its items are."""
    return json.dumps(entry[:key_length] if isinstance(entry, list) else entry, sort_keys=True)


def _same_keys(what: str, parts: Sequence[dict[str, Any]], known: set[str]) -> None:
    for part in parts:
        if unknown := set(part) - known:
            raise NotCombinable(
                f"the {what} state has parts not known to combine: {sorted(unknown)}"
            )
