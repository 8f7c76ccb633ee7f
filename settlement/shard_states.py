"""The merged history's state put together from each settlement shard's own state, so that a
replay of every shard can restart from the shards' stored snapshots instead of position 0.

Each shard's stored snapshot is its own `ExchangeState`: the fold of its events alone. The
merged replay folds every shard's events into one state. The two meet because of how the
events are split (docs/DESIGN.md, "Settlement in shards"): the replica runs one matching
stage per partition, moved only by that partition's events on that partition's own log time,
and every event of a partition is stored in the one shard settling it, so the merged state's
stage of a partition is that shard's, as it stands (its books, blocks, timers, auctions,
deliveries and clock); the other shards hold that stage as they started it, never moved.
What is per account is a sum of parts (each journal entry balances within its event, and
`Accounts` folds a part whatever the other parts hold: a shard holding a buyer's purchases
but not its deposit holds its cash below zero), so the merged state's cash, capacity,
positions and journal are the parts added up. Anything kept whole by one shard (an open
order, a programme, a grant, a concession) must be held by one shard only.

`combine` checks those conditions as it goes and raises `NotCombinable` saying which one does
not hold; the replay then starts from position 0. It never guesses: a part of the state it
does not know how to put together is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any


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
STATE_PARTS = {"replica", "accounts", "markets", "seq", "unpartitioned_ts", "position", "ts",
               "applied"}  # fmt: skip
"""The parts of `ExchangeState.snapshot()` that `combine` puts together."""


def combine(
    states: Sequence[dict[str, Any]], shard_of_partition: Callable[[int], int]
) -> dict[str, Any]:
    """The merged history's state (`ExchangeState.snapshot()`'s form) from each shard's,
    in shard order; `shard_of_partition` names the shard settling a matching partition.
    NotCombinable says why it cannot be done."""
    _same_keys("replica", states, STATE_PARTS)
    if any(state["replica"] != states[0]["replica"] for state in states):
        raise NotCombinable("the shards' states are of different replica layouts")
    partitions = len(states[0]["markets"])
    if any(len(state["markets"]) != partitions for state in states):
        raise NotCombinable("the shards' states hold different numbers of matching partitions")
    return {
        "replica": states[0]["replica"],
        "accounts": _accounts([s["accounts"] for s in states]),
        "markets": [
            _stage(p, [s["markets"][p] for s in states], shard_of_partition(p))
            for p in range(partitions)
        ],
        # Each shard numbers its own orders and blocks from one sequence, as the merged
        # replay numbers all of them: it has numbered as many as the shards together.
        # (Their numbers differ, their order within a book or family does not: priority
        # only compares those, and `history_hash` only counts it.)
        "seq": sum(s["seq"] for s in states),
        "unpartitioned_ts": max(s["unpartitioned_ts"] for s in states),
        "position": sum(s["position"] for s in states),
        "ts": max((s["ts"] for s in states if s["ts"] is not None), default=None),
        "applied": sum(s["applied"] for s in states),
    }


def _stage(partition: int, parts: Sequence[dict[str, Any]], owner: int) -> dict[str, Any]:
    """Partition `partition`'s stage: the one of the shard settling it, `owner`. Another
    shard's must never have moved (it read none of the partition's events)."""
    if not 0 <= owner < len(parts):
        raise NotCombinable(f"partition {partition} is settled by shard {owner}, not one given")
    for k, part in enumerate(parts):
        if k != owner and _moved(part):
            raise NotCombinable(
                f"shard {k} has moved the stage of matching partition {partition}, which "
                f"shard {owner} settles"
            )
    return parts[owner]


def _moved(stage: dict[str, Any]) -> bool:
    """Whether a stage was moved by an event: its log time passed, or it holds an order, a
    block or a delivery."""
    engine = stage["engine"]
    return bool(
        engine["now"]
        or engine["seq"]
        or engine["blocks"]
        or any(book["orders"] for book in engine["books"])
        or any(stage["delivery"].values())
    )


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
