"""The event store's history as documents: the state replayed at a point, what a verification
compared, and stored events filtered and exported as JSON lines or CSV (`cx replay`, `cx
history` and the API's history and replay endpoints)."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
from sqlalchemy import BigInteger, ColumnElement, Select, and_, cast, or_, select

from settlement.replay import ExchangeState, ReplayResult
from settlement.schema import events


def verification(result: ReplayResult) -> dict[str, Any]:
    """What `--verify` compared: the recorded state hashes (checkpoints, and settlement's
    snapshots) at or before the point, and a sentence saying what could be verified."""
    state = result.state
    checked, mismatches = result.checked, result.mismatches
    where = f"at or before position {state.position}"
    if mismatches:
        summary = f"the replay differs from {len(mismatches)} of {checked} checkpoints {where}"
    elif checked:
        counted = "1 checkpoint" if checked == 1 else f"{checked} checkpoints"
        summary = f"the replay matches {counted} {where}"
    else:
        summary = f"no checkpoint {where}: nothing to verify; state hash {state.state_hash()}"
    if result.not_comparable:
        summary += (
            f"; {result.not_comparable} more come after an event the time cut leaves out, "
            "so they cannot be compared"
        )
    return {
        "checkpoints": checked,
        "not_comparable": result.not_comparable,
        "mismatches": [m.__dict__ for m in mismatches],
        "summary": summary,
    }


def replay_document(
    result: ReplayResult, contract: str | None, account: str | None
) -> dict[str, Any]:
    state = result.state
    books = {}
    for symbol, book in sorted(state.books.items()):
        if contract is not None and symbol != contract:
            continue
        books[symbol] = {
            "bids": [list(level) for level in book.bids.depth(10)],
            "asks": [list(level) for level in book.asks.depth(10)],
        }
    accounts = state.accounts
    names = sorted(
        set(accounts.cash) | {a for a, _ in accounts.capacity} | {a for a, _ in accounts.positions}
    )
    listed: dict[str, Any] = {}
    for name in names:
        if account is not None and name != account:
            continue
        balance = accounts.cash.get(name)
        entry = {
            "cash": {
                "available": 0 if balance is None else balance.available,
                "held": 0 if balance is None else balance.held,
            },
            "capacity": {
                s: {"available": b.available, "held": b.held}
                for (a, s), b in sorted(accounts.capacity.items())
                if a == name and (contract is None or s == contract)
            },
            "positions": {
                s: q
                for (a, s), q in sorted(accounts.positions.items())
                if a == name and (contract is None or s == contract)
            },
            "open_orders": sorted(
                o.order_id
                for o in accounts.open_orders.values()
                if o.account_id == name and (contract is None or o.symbol == contract)
            ),
        }
        listed[name] = entry
    return {
        "position": state.position,
        "ts": state.ts,
        "events": state.applied,
        "started_from": result.started_from,
        "snapshot_refused": result.refused,
        "state_hash": state.state_hash(),
        "history_hash": state.history_hash(),
        "books": books,
        "accounts": listed,
        **_voucher_budgets(state, account),
    }


def _voucher_budgets(state: ExchangeState, account: str | None) -> dict[str, Any]:
    """Each programme's budget and what is left to grant, and each grant (of `account` only,
    when given): granted, not yet reserved, reserved for open orders, paid out, clawed back."""
    accounts = state.accounts
    grants = {
        f"{p}:{a}": {
            "programme_id": p,
            "account_id": a,
            "limit": g.limit,
            "unreserved": g.remaining,
            "reserved": g.reserved,
            "paid": g.committed,
            "clawed_back": g.clawed_back,
        }
        for (p, a), g in sorted(accounts.grants.items())
        if account is None or a == account
    }
    programmes = {
        p: {
            "issuer": programme.issuer,
            "budget": programme.budget,
            "unallocated": programme.unallocated,
            "granted": dict(sorted(programme.granted.items())),
        }
        for p, programme in sorted(accounts.programmes.items())
        if account is None or any(g["programme_id"] == p for g in grants.values())
    }
    return {"programmes": programmes, "grants": grants}


def history_query(
    contract: str | None = None,
    account: str | None = None,
    order: str | None = None,
    since_ts: int | None = None,
    until_ts: int | None = None,
) -> Select[Any]:
    """Stored events filtered by contract, account (either side of a trade), order and log time."""
    query = select(
        events.c.position,
        events.c.event_id,
        events.c.stream_id,
        events.c.type,
        events.c.schema_version,
        events.c.data,
        events.c.recorded_at,
    ).order_by(events.c.position)
    condition = history_condition(contract, account, order, since_ts, until_ts)
    return query if condition is None else query.where(condition)


def stream_condition(stream_id: str, from_version: int = 1) -> ColumnElement[bool]:
    """The events of one stream from `from_version` on (a store's own stream versions)."""
    return and_(events.c.stream_id == stream_id, events.c.stream_version >= from_version)


def history_condition(
    contract: str | None = None,
    account: str | None = None,
    order: str | None = None,
    since_ts: int | None = None,
    until_ts: int | None = None,
) -> ColumnElement[bool] | None:
    """What `history_query` selects by, as one condition (None: every event)."""
    data = events.c.data
    conditions: list[ColumnElement[bool]] = []
    if contract is not None:
        conditions.append(events.c.stream_id == f"contract-{contract}")
    if account is not None:
        conditions.append(
            or_(
                data["account_id"].as_string() == account,
                data["buyer_id"].as_string() == account,
                data["seller_id"].as_string() == account,
            )
        )
    if order is not None:
        conditions.append(
            or_(
                data["order_id"].as_string() == order,
                data["buy_order_id"].as_string() == order,
                data["sell_order_id"].as_string() == order,
            )
        )
    # Log times are milliseconds: past 32 bits, so compare as BIGINT.
    ts = cast(data["ts"].as_string(), BigInteger)
    if since_ts is not None:
        conditions.append(ts >= since_ts)
    if until_ts is not None:
        conditions.append(ts <= until_ts)
    return and_(*conditions) if conditions else None


EXPORT_COLUMNS = ("position", "event_id", "stream_id", "type", "schema_version", "ts", "data")
SHARD_EXPORT_COLUMNS = ("shard", *EXPORT_COLUMNS)
"""With settlement in shards: each event labelled with the shard storing it (its position is
that shard's own)."""


def export_header(sharded: bool) -> str:
    """The CSV export's first line."""
    return ",".join(SHARD_EXPORT_COLUMNS if sharded else EXPORT_COLUMNS) + "\r\n"


def export_line(row: Any, output_format: str, shard: int | None = None) -> str:
    """One exported event: a JSON line, or a CSV row with the event's JSON last; labelled
    with its shard when one is given (settlement in shards)."""
    label = {} if shard is None else {"shard": shard}
    if output_format != "csv":
        record = {
            **label,
            "position": row.position,
            "event_id": row.event_id,
            "stream_id": row.stream_id,
            "type": row.type,
            "schema_version": row.schema_version,
            "ts": row.data.get("ts"),
            "data": row.data,
        }
        return orjson.dumps(record).decode() + "\n"
    line = io.StringIO()
    csv.writer(line).writerow(
        [
            *label.values(),
            row.position,
            row.event_id,
            row.stream_id,
            row.type,
            row.schema_version,
            row.data.get("ts"),
            orjson.dumps(row.data).decode(),
        ]
    )
    return line.getvalue()
