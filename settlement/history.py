"""`cx replay` and `cx audit`: rebuild and check the exchange from its event store."""

from __future__ import annotations

import csv
import io
import sys
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import BigInteger, Select, cast, func, or_, select

from cx.settings import Settings
from exchange.domain.catalogue import Catalogue
from settlement.audit import audit, audit_ledger, recorded_hashes
from settlement.replay import ExchangeState, ReplayResult, parse_until, replay
from settlement.schema import events
from settlement.sql_store import SqlEventStore, open_event_store


async def _open(settings: Settings) -> SqlEventStore:
    store = open_event_store(settings.event_store_url())
    await store.initialise()
    return store


async def run_replay(
    settings: Settings,
    until: str | None,
    contract: str | None,
    account: str | None,
    as_json: bool,
    verify: bool,
    catalogue: Catalogue | None = None,
) -> int:
    """Rebuild the state at `until` (a position or an ISO time), print it; 1 if unverified."""
    catalogue = catalogue or settings.catalogue()
    until_position, until_ts = parse_until(until) if until else (None, None)
    if contract is not None and contract not in catalogue:
        print(f"cx replay: contract {contract!r} is not listed", file=sys.stderr)
        return 2
    store = await _open(settings)
    try:
        # One consistent point of the history, so a live store's writes meanwhile change
        # neither the events replayed nor the hashes they are checked against.
        async with store.view() as view:
            query = select(func.count()).select_from(events)
            if until_position is not None:
                query = query.where(events.c.position <= until_position)
            total = (await view.connection.execute(query)).scalar_one()
            recorded: dict[int, str] = {}
            if verify:
                recorded = {
                    position: state_hash
                    for position, state_hash in (await recorded_hashes(view.connection)).items()
                    if until_position is None or position <= until_position
                }
            console = Console(stderr=True)
            with Progress(
                TextColumn("replaying"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
                disable=not console.is_terminal,
            ) as progress:
                task = progress.add_task("replay", total=total)
                result = await replay(
                    view,
                    catalogue,
                    until_position,
                    until_ts,
                    recorded,
                    lambda n: progress.advance(task, n),
                )
    finally:
        await store.close()
    document = replay_document(result, contract, account)
    if verify:
        document["verified"] = verification(result)
    if as_json:
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_replay(document)
    return 1 if verify and result.mismatches else 0


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
    for symbol, book in sorted(state.market.books.items()):
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
        "state_hash": state.state_hash(),
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


def _money(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def _print_replay(document: dict[str, Any]) -> None:
    console = Console()
    books = Table(title=f"Books at position {document['position']}")
    for column in ("contract", "bids (price x qty)", "asks (price x qty)"):
        books.add_column(column)
    for symbol, book in document["books"].items():
        books.add_row(
            symbol,
            ", ".join(f"{_money(p)} x {q}" for p, q in book["bids"][:5]) or "-",
            ", ".join(f"{_money(p)} x {q}" for p, q in book["asks"][:5]) or "-",
        )
    console.print(books)
    accounts = Table(title="Accounts (CNY; capacity and positions in units)")
    for column in ("account", "available", "held", "capacity avail/held", "positions", "open"):
        accounts.add_column(column)
    for name, entry in document["accounts"].items():
        accounts.add_row(
            name,
            _money(entry["cash"]["available"]),
            _money(entry["cash"]["held"]),
            ", ".join(f"{s} {c['available']}/{c['held']}" for s, c in entry["capacity"].items())
            or "-",
            ", ".join(f"{s} {q}" for s, q in entry["positions"].items()) or "-",
            str(len(entry["open_orders"])),
        )
    console.print(accounts)
    if document["programmes"] or document["grants"]:
        vouchers = Table(title="Voucher budgets (CNY)")
        for column in ("programme", "account", "budget/granted", "left", "reserved", "paid"):
            vouchers.add_column(column)
        for programme_id, programme in document["programmes"].items():
            vouchers.add_row(
                programme_id,
                "-",
                _money(programme["budget"]),
                _money(programme["unallocated"]),
                "-",
                "-",
            )
        for grant in document["grants"].values():
            vouchers.add_row(
                grant["programme_id"],
                grant["account_id"],
                _money(grant["limit"]),
                _money(grant["unreserved"]),
                _money(grant["reserved"]),
                _money(grant["paid"]),
            )
        console.print(vouchers)
    console.print(f"events replayed: {document['events']}   log time: {document['ts']}")
    console.print(f"state hash: {document['state_hash']}")
    verified = document.get("verified")
    if verified is not None:
        for mismatch in verified["mismatches"]:
            console.print(
                f"MISMATCH at {mismatch['position']}: recorded {mismatch['recorded']}, "
                f"replayed {mismatch['replayed']}"
            )
        console.print(f"verified: {verified['summary']}")


async def run_audit(
    settings: Settings, as_json: bool, catalogue: Catalogue | None = None, scope: str = "all"
) -> int:
    """Audit the whole history (or, with scope "ledger", the journal); exit status 1 if
    anything is unaccounted for."""
    store = await _open(settings)
    check = audit_ledger if scope == "ledger" else audit
    try:
        report = await check(store, catalogue or settings.catalogue())
    finally:
        await store.close()
    if as_json:
        document = {
            "position": report.position,
            "events": report.events,
            "trades": report.trades,
            "orders": report.orders,
            "checkpoints": report.checkpoints,
            "state_hash": report.state_hash,
            "discrepancies": [
                {"kind": d.kind, "message": d.message, "positions": list(d.positions)}
                for d in report.discrepancies
            ],
        }
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for discrepancy in report.discrepancies:
            print(discrepancy)
        verdict = (
            "no discrepancies"
            if not report.discrepancies
            else f"{len(report.discrepancies)} discrepancies"
        )
        if scope == "ledger":
            print(
                f"audited {report.events} journal entries up to position {report.position}: "
                f"{verdict}"
            )
        else:
            print(
                f"audited {report.events} events up to position {report.position}, "
                f"{report.orders} orders, {report.trades} trades, {report.checkpoints} "
                f"checkpoints: {verdict}"
            )
    return 1 if report.discrepancies else 0


def history_query(
    contract: str | None = None,
    account: str | None = None,
    order: str | None = None,
    since_ts: int | None = None,
    until_ts: int | None = None,
) -> Select[Any]:
    """Stored events filtered by contract, account (either side of a trade), order and log time."""
    data = events.c.data
    query = select(
        events.c.position,
        events.c.event_id,
        events.c.stream_id,
        events.c.type,
        events.c.schema_version,
        events.c.data,
        events.c.recorded_at,
    ).order_by(events.c.position)
    if contract is not None:
        query = query.where(events.c.stream_id == f"contract-{contract}")
    if account is not None:
        query = query.where(
            or_(
                data["account_id"].as_string() == account,
                data["buyer_id"].as_string() == account,
                data["seller_id"].as_string() == account,
            )
        )
    if order is not None:
        query = query.where(
            or_(
                data["order_id"].as_string() == order,
                data["buy_order_id"].as_string() == order,
                data["sell_order_id"].as_string() == order,
            )
        )
    # Log times are milliseconds: past 32 bits, so compare as BIGINT.
    ts = cast(data["ts"].as_string(), BigInteger)
    if since_ts is not None:
        query = query.where(ts >= since_ts)
    if until_ts is not None:
        query = query.where(ts <= until_ts)
    return query


EXPORT_COLUMNS = ("position", "event_id", "stream_id", "type", "schema_version", "ts", "data")


async def run_history(
    settings: Settings,
    contract: str | None,
    account: str | None,
    order: str | None,
    since: str | None,
    until: str | None,
    output_format: str,
    out: TextIO,
) -> int:
    """Write the matching events as JSON lines or CSV; returns how many were written."""
    since_ts = None if since is None else _time_ms(since)
    until_ts = None if until is None else _time_ms(until)
    store = await _open(settings)
    written = 0
    try:
        query = history_query(contract, account, order, since_ts, until_ts)
        if output_format == "csv":
            out.write(",".join(EXPORT_COLUMNS) + "\r\n")
        async with store.engine.connect() as connection:
            result = await connection.stream(query.execution_options(yield_per=2000))
            async for row in result:
                out.write(export_line(row, output_format))
                written += 1
    finally:
        await store.close()
    return written


def export_line(row: Any, output_format: str) -> str:
    """One exported event: a JSON line, or a CSV row with the event's JSON last."""
    if output_format != "csv":
        record = {
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


def _time_ms(value: str) -> int:
    """Milliseconds since the epoch of an ISO time with offset (or a number of ms)."""
    if value.isdigit():
        return int(value)
    _, ts = parse_until(value)
    assert ts is not None
    return ts
