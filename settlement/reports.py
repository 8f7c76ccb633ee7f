"""Invoices and voucher programme reports, read from the ledger's tables.

An invoice shows how each purchase was paid for: the gross amount, the government voucher, the
platform's fee (or its concession, a rebate), and what the enterprise paid, per contract and in
total, with any voucher clawed back since (a refunded delivery). A programme report shows an
administrator the budget, what is granted, reserved, committed and clawed back, what remains,
the burn-down by day, and the subsidised purchases by enterprise, region and class.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from exchange.domain.catalogue import CHINA_STANDARD_TIME, family_of
from settlement import projections as tables
from settlement.schema import events

CLAWBACK_KINDS = ("delivery", "resale")
"""Journal entries in which a voucher part returns to its grant."""


async def invoices(engine: AsyncEngine, account_id: str) -> dict[str, Any]:
    """The account's purchases, one invoice per buy order, and the totals."""
    lines = tables.invoice_lines
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(lines)
                .where(lines.c.account_id == account_id)
                .order_by(lines.c.ts, lines.c.trade_id)
            )
        ).all()
        clawed = await _clawed_back(connection, account_id=account_id)
        conceded = await _conceded(connection, account_id)
    by_order: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_order[row.order_id].append(row)
    result = []
    for order_id, order_rows in by_order.items():
        contracts: dict[str, dict[str, Any]] = {}
        for row in order_rows:
            line = contracts.setdefault(row.symbol, {"symbol": row.symbol, **_zero()})
            _add(line, row)
            discount = conceded.get(row.trade_id, 0)
            line["concession"] += discount
            line["paid"] -= discount
        result.append(
            {
                "order_id": order_id,
                "issued_ts": order_rows[0].ts,
                "programme_id": next((r.programme_id for r in order_rows if r.programme_id), None),
                "contracts": list(contracts.values()),
                "total": _sum(contracts.values()),
            }
        )
    total = _sum(invoice["total"] for invoice in result)
    return {
        "account_id": account_id,
        "invoices": result,
        "total": total,
        "voucher_clawed_back": sum(clawed.values()),
    }


async def _conceded(connection: Any, account_id: str) -> dict[str, int]:
    """Fee concessions paid to the account, by trade (an invoice line is the account's purchase
    in a trade, so only those on its purchases are looked up). They are events of the account's
    own (`FeeConceded`), settled whenever their partition is read, so they are added to the
    trades' invoice lines here rather than written into them."""
    rows = await connection.execute(
        select(events.c.data).where(
            and_(events.c.stream_id == f"account-{account_id}", events.c.type == "FeeConceded")
        )
    )
    conceded: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.data.get("trade_id") is not None:
            conceded[row.data["trade_id"]] += row.data["discount"]
    return conceded


def _zero() -> dict[str, int]:
    return {"quantity": 0, "gross": 0, "voucher": 0, "fee": 0, "concession": 0, "paid": 0}


def _add(line: dict[str, Any], row: Any) -> None:
    for name in ("quantity", "gross", "voucher", "fee", "concession", "paid"):
        line[name] += getattr(row, name)


def _sum(lines: Any) -> dict[str, int]:
    total = _zero()
    for line in lines:
        for name in total:
            total[name] += line[name]
    return total


async def _clawed_back(
    connection: Any, *, account_id: str | None = None, programme_id: str | None = None
) -> dict[tuple[str, str, int], int]:
    """Voucher parts returned to grants, by (programme, account, CST day)."""
    journal = tables.journal
    pattern = f"grant:{programme_id or '%'}:{account_id or '%'}"
    rows = await connection.execute(
        select(journal.c.account, journal.c.amount, journal.c.ts).where(
            and_(
                journal.c.account.like(pattern),
                journal.c.kind.in_(CLAWBACK_KINDS),
                journal.c.amount > 0,
            )
        )
    )
    clawed: dict[tuple[str, str, int], int] = defaultdict(int)
    for row in rows:
        _, programme, account = row.account.split(":")
        clawed[(programme, account, _day(row.ts))] += row.amount
    return clawed


def _day(ts: int) -> int:
    """The China Standard Time day of a log time, as YYYYMMDD."""
    moment = datetime.fromtimestamp(ts / 1000, UTC).astimezone(CHINA_STANDARD_TIME)
    return moment.year * 10_000 + moment.month * 100 + moment.day


async def programme_report(engine: AsyncEngine, programme_id: str) -> dict[str, Any] | None:
    """The programme's budget and how it was used; None if no such programme was created."""
    balances = tables.ledger_balances
    lines = tables.invoice_lines
    async with engine.connect() as connection:
        pledge = (
            await connection.execute(
                select(balances.c.balance).where(balances.c.account == f"pledge:{programme_id}")
            )
        ).scalar()
        if pledge is None:
            return None
        created: dict[str, Any] = next(
            (
                row.data
                for row in await connection.execute(
                    select(events.c.data).where(events.c.type == "ProgrammeCreated")
                )
                if row.data.get("programme_id") == programme_id
            ),
            {},
        )
        held = {
            row.account: row.balance
            for row in await connection.execute(
                select(balances).where(
                    balances.c.account.like(f"budget:{programme_id}")
                    | balances.c.account.like(f"grant:{programme_id}:%")
                    | balances.c.account.like(f"reserved:{programme_id}:%")
                )
            )
        }
        subsidised = (
            await connection.execute(
                select(
                    lines.c.account_id,
                    lines.c.symbol,
                    lines.c.ts,
                    lines.c.gross,
                    lines.c.voucher,
                    lines.c.quantity,
                )
                .where(and_(lines.c.programme_id == programme_id, lines.c.voucher > 0))
                .order_by(lines.c.ts)
            )
        ).all()
        clawed = await _clawed_back(connection, programme_id=programme_id)
    budget = -pledge
    unallocated = held.get(f"budget:{programme_id}", 0)
    granted_unused = sum(v for k, v in held.items() if k.startswith("grant:"))
    reserved = sum(v for k, v in held.items() if k.startswith("reserved:"))
    committed = sum(row.voucher for row in subsidised)
    clawed_back = sum(clawed.values())
    by_day: dict[int, int] = defaultdict(int)
    for row in subsidised:
        by_day[_day(row.ts)] += row.voucher
    for (_, _, day), amount in clawed.items():
        by_day[day] -= amount
    burn_down = []
    remaining = budget
    for day in sorted(by_day):
        remaining -= by_day[day]
        burn_down.append({"day": f"{day:08d}", "spent": by_day[day], "remaining": remaining})
    return {
        "programme_id": programme_id,
        "issuer": created.get("issuer"),
        "admin_id": created.get("admin_id"),
        "budget": budget,
        "granted": budget - unallocated,
        "reserved": reserved,
        "committed": committed,
        "clawed_back": clawed_back,
        "remaining": unallocated + granted_unused,
        "burn_down": burn_down,
        "by_enterprise": _breakdown(subsidised, lambda row: row.account_id),
        "by_region": _breakdown(subsidised, lambda row: family_of(row.symbol).split(".")[1]),
        "by_class": _breakdown(subsidised, lambda row: family_of(row.symbol).split(".")[0]),
    }


def _breakdown(rows: Sequence[Any], key: Any) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, int]] = {}
    for row in rows:
        group = groups.setdefault(key(row), {"purchases": 0, "units": 0, "gross": 0, "voucher": 0})
        group["purchases"] += 1
        group["units"] += row.quantity
        group["gross"] += row.gross
        group["voucher"] += row.voucher
    return [{"name": name, **figures} for name, figures in sorted(groups.items())]


def report_csv(report: dict[str, Any]) -> str:
    """The report as CSV: a summary block, then the burn-down, then each breakdown."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["programme", "budget", "granted", "reserved", "committed", "clawed_back",
                     "remaining"])  # fmt: skip
    writer.writerow([report["programme_id"]] + [
        report[k] for k in ("budget", "granted", "reserved", "committed", "clawed_back",
                            "remaining")
    ])  # fmt: skip
    writer.writerow([])
    writer.writerow(["day", "spent", "remaining"])
    for entry in report["burn_down"]:
        writer.writerow([entry["day"], entry["spent"], entry["remaining"]])
    for breakdown in ("by_enterprise", "by_region", "by_class"):
        writer.writerow([])
        writer.writerow([breakdown.removeprefix("by_"), "purchases", "units", "gross", "voucher"])
        for group in report[breakdown]:
            writer.writerow(
                [
                    group["name"],
                    group["purchases"],
                    group["units"],
                    group["gross"],
                    group["voucher"],
                ]
            )
    return out.getvalue()


def burn_down_png(report: dict[str, Any], path: Path) -> None:
    """A chart of the programme's remaining budget by day, in yuan."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    days = ["start"] + [entry["day"] for entry in report["burn_down"]]
    remaining = [report["budget"]] + [entry["remaining"] for entry in report["burn_down"]]
    figure, axes = pyplot.subplots(figsize=(8, 4))
    axes.step(range(len(days)), [fen / 100 for fen in remaining], where="post")
    axes.set_xticks(range(len(days)), days, rotation=30, ha="right")
    axes.set_ylim(bottom=0)
    axes.set_ylabel("remaining budget (CNY)")
    axes.set_title(f"Voucher programme {report['programme_id']}: budget burn-down")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


async def programme_ids(engine: AsyncEngine) -> list[str]:
    """Every programme created, by id."""
    balances = tables.ledger_balances
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(func.substr(balances.c.account, 8)).where(balances.c.account.like("pledge:%"))
        )
        return sorted(row[0] for row in rows)
