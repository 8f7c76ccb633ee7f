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
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    RESOURCE_CLASSES,
    UNIT_CARD_HOUR,
    UNIT_CORE_HOUR,
    UNIT_MILLION_TOKENS,
    family_of,
    strip_hours,
)
from settlement import projections as tables
from settlement.schema import events
from settlement.statements import MILLION_TOKENS_ZH, UNITS_ZH, named_for
from settlement.statements import unit_of as invoice_unit

CLAWBACK_KINDS = ("delivery", "resale")
"""Journal entries in which a voucher part returns to its grant."""
UNITS = (UNIT_CARD_HOUR, UNIT_CORE_HOUR, UNIT_MILLION_TOKENS)
"""The units compute is counted in, never added to one another."""


def unit_of(symbol: str) -> str:
    """The unit a contract's compute is counted in: card-hours, core-hours or millions of
    tokens."""
    return RESOURCE_CLASSES[family_of(symbol).split(".")[0]].unit


def units_bought(symbol: str, quantity: int) -> int:
    """A purchase's quantity in its unit: a strip's quantity is cards (or cores) in each of
    its hours, so it delivers quantity x its hours card-hours; any other contract's quantity
    is already in its unit."""
    return quantity * strip_hours(symbol)


async def invoices(engine: AsyncEngine | Sequence[AsyncEngine], account_id: str) -> dict[str, Any]:
    """The account's purchases, one invoice per buy order, and the totals; given every
    settlement shard's engine, over all of them (a purchase's lines are in its family's shard,
    a concession on it in the account's)."""
    lines = tables.invoice_lines
    engines = [engine] if isinstance(engine, AsyncEngine) else list(engine)
    rows: list[Any] = []
    clawed: dict[tuple[str, str, int], int] = defaultdict(int)
    conceded: dict[str, int] = defaultdict(int)
    for shard in engines:
        async with shard.connect() as connection:
            rows += (
                await connection.execute(
                    select(lines)
                    .where(lines.c.account_id == account_id)
                    .order_by(lines.c.ts, lines.c.trade_id)
                )
            ).all()
            for key, amount in (await _clawed_back(connection, account_id=account_id)).items():
                clawed[key] += amount
            for trade_id, discount in (await _conceded(connection, account_id)).items():
                conceded[trade_id] += discount
    if len(engines) > 1:
        rows.sort(key=lambda row: (row.ts, row.trade_id))
    by_order: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_order[row.order_id].append(row)
    result = []
    for order_id, order_rows in by_order.items():
        contracts: dict[str, dict[str, Any]] = {}
        for row in order_rows:
            line = contracts.setdefault(
                row.symbol,
                {"symbol": row.symbol, "unit": invoice_unit(row.symbol), **_zero()},
            )
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
    """Fee concessions and platform discounts paid to the account, by trade (an invoice line is
    the account's purchase in a trade, so only those on its purchases are looked up). They are
    events of the account's own (`FeeConceded`, `PlatformDiscounted`), settled whenever their
    partition is read, so they are added to the trades' invoice lines here rather than written
    into them."""
    rows = await connection.execute(
        select(events.c.data).where(
            and_(
                events.c.stream_id == f"account-{account_id}",
                events.c.type.in_(("FeeConceded", "PlatformDiscounted")),
            )
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
    line["quantity"] += units_bought(row.symbol, row.quantity)
    for name in ("gross", "voucher", "fee", "concession", "paid"):
        line[name] += getattr(row, name)


def _sum(lines: Any) -> dict[str, Any]:
    """The money of `lines` added up, and their quantities by unit (a card-hour and a core-hour
    do not add)."""
    total: dict[str, Any] = {name: 0 for name in _zero() if name != "quantity"}
    quantities: dict[str, int] = defaultdict(int)
    for line in lines:
        for name in total:
            total[name] += line[name]
        for unit, quantity in _quantities(line).items():
            quantities[unit] += quantity
    return {"quantity": dict(sorted(quantities.items())), **total}


def _quantities(line: dict[str, Any]) -> dict[str, int]:
    """A contract line's quantity by its unit, or a total's quantities."""
    if isinstance(line["quantity"], dict):
        return dict(line["quantity"])
    return {line["unit"]: line["quantity"]}


def _grant_accounts(
    column: Any, prefix: str, programme_id: str | None, account_id: str | None = None
) -> Any:
    """SQL: `column` is a ledger account `PREFIX:PROGRAMME:ACCOUNT`, of the programme and the
    account where given (ids taken literally, `_` included)."""
    if programme_id is not None and account_id is not None:
        return column == f"{prefix}:{programme_id}:{account_id}"
    if programme_id is not None:
        return column.startswith(f"{prefix}:{programme_id}:", autoescape=True)
    if account_id is not None:
        return named_for(column, prefix, account_id)
    return column.startswith(f"{prefix}:")


async def _clawed_back(
    connection: Any, *, account_id: str | None = None, programme_id: str | None = None
) -> dict[tuple[str, str, int], int]:
    """Voucher parts returned to grants, by (programme, account, CST day)."""
    journal = tables.journal
    grants = _grant_accounts(journal.c.account, "grant", programme_id, account_id)
    rows = await connection.execute(
        select(journal.c.account, journal.c.amount, journal.c.ts).where(
            and_(grants, journal.c.kind.in_(CLAWBACK_KINDS), journal.c.amount > 0)
        )
    )
    clawed: dict[tuple[str, str, int], int] = defaultdict(int)
    for row in rows:
        # A programme's id holds no `:`; the account id after it may.
        _, programme, account = row.account.split(":", 2)
        clawed[(programme, account, _day(row.ts))] += row.amount
    return clawed


async def _enterprises(
    engines: Sequence[AsyncEngine], account_ids: set[str]
) -> dict[str, dict[str, str]]:
    """The enterprise each of these accounts registered (its latest registration, in whichever
    settlement shard settled it): `name` and `uscc` by account id; an account that registered
    none is not among them."""
    table = tables.enterprises
    found: dict[str, tuple[int, dict[str, str]]] = {}
    if not account_ids:
        return {}
    for shard in engines:
        async with shard.connect() as connection:
            rows = await connection.execute(
                select(table.c.account_id, table.c.name, table.c.uscc, table.c.registered_ts).where(
                    table.c.account_id.in_(sorted(account_ids))
                )
            )
            for row in rows:
                latest = found.get(row.account_id)
                if latest is None or row.registered_ts > latest[0]:
                    found[row.account_id] = (
                        row.registered_ts,
                        {"name": row.name, "uscc": row.uscc},
                    )
    return {account: enterprise for account, (_, enterprise) in found.items()}


def _named(account_id: str, registered: dict[str, dict[str, str]]) -> dict[str, Any]:
    """How a report names an account's enterprise: its registered name and unified social
    credit code, with the account id; the account id as the name, and no code, for an account
    that registered none."""
    enterprise = registered.get(account_id)
    if enterprise is None:
        return {"name": account_id, "uscc": None, "account_id": account_id}
    return {**enterprise, "account_id": account_id}


def _by_enterprise(
    subsidised: Sequence[Any], registered: dict[str, dict[str, str]]
) -> list[dict[str, Any]]:
    """The subsidised purchases by enterprise (`_breakdown` by account), each named as
    registered (`_named`)."""
    return [
        {**_named(group["name"], registered), **{k: v for k, v in group.items() if k != "name"}}
        for group in _breakdown(subsidised, lambda row: row.account_id)
    ]


def _day(ts: int) -> int:
    """The China Standard Time day of a log time, as YYYYMMDD."""
    moment = datetime.fromtimestamp(ts / 1000, UTC).astimezone(CHINA_STANDARD_TIME)
    return moment.year * 10_000 + moment.month * 100 + moment.day


async def programme_report(
    engine: AsyncEngine | Sequence[AsyncEngine], programme_id: str
) -> dict[str, Any] | None:
    """The programme's budget and how it was used; None if no such programme was created."""
    engines = [engine] if isinstance(engine, AsyncEngine) else list(engine)
    parts = [await _programme_part(shard, programme_id) for shard in engines]
    if all(part.pledge is None for part in parts):
        return None
    # Given every settlement shard's engine, the programme over all of them: its budget in
    # the shard of its partition, its grants' reservations and uses in their families'.
    pledge = sum(part.pledge or 0 for part in parts)
    created = next((part.created for part in parts if part.created), {})
    held: dict[str, int] = defaultdict(int)
    clawed: dict[tuple[str, str, int], int] = defaultdict(int)
    subsidised: list[Any] = []
    for part in parts:
        for account, balance in part.held.items():
            held[account] += balance
        for key, amount in part.clawed.items():
            clawed[key] += amount
        subsidised += part.subsidised
    if len(parts) > 1:
        subsidised.sort(key=lambda row: row.ts)
    symbols = sorted({row.symbol for row in subsidised})
    accounts = {row.account_id for row in subsidised} | {account for _, account, _ in clawed}
    registered = await _enterprises(engines, accounts)
    lines = tables.invoice_lines
    same_contracts: list[Any] = []
    for shard in engines:
        async with shard.connect() as connection:
            same_contracts += (
                await connection.execute(
                    select(
                        lines.c.symbol,
                        lines.c.quantity,
                        lines.c.gross,
                        and_(lines.c.programme_id == programme_id, lines.c.voucher > 0).label(
                            "subsidised"
                        ),
                    ).where(lines.c.symbol.in_(symbols))
                )
            ).all()
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
        "by_enterprise": _by_enterprise(subsidised, registered),
        "by_region": _breakdown(subsidised, lambda row: family_of(row.symbol).split(".")[1]),
        "by_class": _breakdown(subsidised, lambda row: family_of(row.symbol).split(".")[0]),
        "net_used": committed - clawed_back,
        "city": _city(budget, burn_down, subsidised, clawed, same_contracts, registered),
    }


@dataclass
class _ProgrammePart:
    """What one store holds of a programme."""

    pledge: int | None
    created: dict[str, Any]
    held: dict[str, int]
    subsidised: list[Any]
    clawed: dict[tuple[str, str, int], int]


async def _programme_part(engine: AsyncEngine, programme_id: str) -> _ProgrammePart:
    balances = tables.ledger_balances
    lines = tables.invoice_lines
    async with engine.connect() as connection:
        pledge = (
            await connection.execute(
                select(balances.c.balance).where(balances.c.account == f"pledge:{programme_id}")
            )
        ).scalar()
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
                    (balances.c.account == f"budget:{programme_id}")
                    | _grant_accounts(balances.c.account, "grant", programme_id)
                    | _grant_accounts(balances.c.account, "reserved", programme_id)
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
    return _ProgrammePart(pledge, created, held, list(subsidised), clawed)


def _city(
    budget: int,
    burn_down: list[dict[str, Any]],
    subsidised: Sequence[Any],
    clawed: dict[tuple[str, str, int], int],
    same_contracts: Sequence[Any],
    registered: dict[str, dict[str, str]],
) -> dict[str, Any]:
    """What a city asks of its programme: use over time, compute per 元, spread, prices;
    enterprises named as they registered (`registered`, by account)."""
    by_month: dict[str, dict[str, int]] = defaultdict(lambda: {"used": 0, "clawed_back": 0})
    for row in subsidised:
        by_month[_month(_day(row.ts))]["used"] += row.voucher
    for (_, _, day), amount in clawed.items():
        by_month[_month(day)]["clawed_back"] += amount
    per_enterprise: dict[str, int] = defaultdict(int)
    for row in subsidised:
        per_enterprise[row.account_id] += row.voucher
    for (_, account, _), amount in clawed.items():
        per_enterprise[account] -= amount
    return {
        "by_day": [
            {"day": entry["day"], "net_used": budget - entry["remaining"]} for entry in burn_down
        ],
        "by_month": [{"month": month, **figures} for month, figures in sorted(by_month.items())],
        "compute_per_yuan": _compute_per_yuan(subsidised),
        "spread": _spread(per_enterprise, registered),
        **_prices(same_contracts),
    }


def _month(day: int) -> str:
    return f"{day // 10_000:04d}-{day // 100 % 100:02d}"


def _compute_per_yuan(subsidised: Sequence[Any]) -> list[dict[str, Any]]:
    """Units bought with vouchers per 元 of the vouchers committed on them, by unit (a strip's
    cards in each of its hours), to three decimals rounded down."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in subsidised:
        unit = unit_of(row.symbol)
        totals[unit][0] += units_bought(row.symbol, row.quantity)
        totals[unit][1] += row.voucher
    result = []
    for unit, (units, voucher) in sorted(totals.items()):
        thousandths = units * 100 * 1000 // voucher
        result.append(
            {
                "unit": unit,
                "units": units,
                "voucher": voucher,
                "units_per_yuan": f"{thousandths // 1000}.{thousandths % 1000:03d}",
            }
        )
    return result


def _spread(
    per_enterprise: dict[str, int], registered: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """How the net vouchers spread over enterprises: the share of the top tenth (at least
    one enterprise) and the Gini coefficient, both in basis points rounded down."""
    ranked = sorted(per_enterprise.items(), key=lambda item: (-item[1], item[0]))
    amounts = [max(amount, 0) for _, amount in ranked]
    total, count = sum(amounts), len(amounts)
    top = -(-count // 10)
    ascending = sorted(amounts)
    weighted = sum(rank * amount for rank, amount in enumerate(ascending, start=1))
    return {
        "enterprises": count,
        "top_count": top,
        "top_10pct_bps": sum(amounts[:top]) * 10_000 // total if total else 0,
        "gini_bps": (2 * weighted - (count + 1) * total) * 10_000 // (count * total)
        if total
        else 0,
        "by_enterprise": [
            {**_named(account, registered), "net_voucher": amount} for account, amount in ranked
        ],
    }


def _prices(same_contracts: Sequence[Any]) -> dict[str, Any]:
    """Gross price per unit (card-hour, core-hour, million tokens; a strip's in each of its
    hours) of the purchases the programme's vouchers paid for ("holder") against every other
    purchase of the same contracts ("other": others', and a holder's bought without the
    voucher, which the subsidy did not pay for); averages rounded half up to the fen, premiums
    in basis points rounded down, overall against what the subsidised units would have cost at
    others' averages."""
    figures: dict[str, dict[str, int]] = defaultdict(
        lambda: {"holder_units": 0, "holder_gross": 0, "other_units": 0, "other_gross": 0}
    )
    for row in same_contracts:
        side = "holder" if row.subsidised else "other"
        figures[row.symbol][f"{side}_units"] += units_bought(row.symbol, row.quantity)
        figures[row.symbol][f"{side}_gross"] += row.gross
    prices = []
    paid, at_others = 0, Fraction(0)
    for symbol, f in sorted(figures.items()):
        if not (f["holder_units"] and f["other_units"]):
            continue
        expected = Fraction(f["other_gross"] * f["holder_units"], f["other_units"])
        paid += f["holder_gross"]
        at_others += expected
        prices.append(
            {
                "symbol": symbol,
                "unit": unit_of(symbol),
                **f,
                "holder_avg": _average(f["holder_gross"], f["holder_units"]),
                "other_avg": _average(f["other_gross"], f["other_units"]),
                "premium_bps": math.floor((f["holder_gross"] - expected) * 10_000 / expected),
            }
        )
    premium = math.floor((paid - at_others) * 10_000 / at_others) if at_others else None
    return {"prices": prices, "holder_premium_bps": premium}


def _average(gross: int, units: int) -> int:
    return (2 * gross + units) // (2 * units)


def _breakdown(rows: Sequence[Any], key: Any) -> list[dict[str, Any]]:
    """Purchases, money and units grouped by `key`; units by their unit, each apart."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        group = groups.setdefault(
            key(row), {"purchases": 0, "units": defaultdict(int), "gross": 0, "voucher": 0}
        )
        group["purchases"] += 1
        group["units"][unit_of(row.symbol)] += units_bought(row.symbol, row.quantity)
        group["gross"] += row.gross
        group["voucher"] += row.voucher
    return [
        {"name": name, **figures, "units": dict(sorted(figures["units"].items()))}
        for name, figures in sorted(groups.items())
    ]


FEN = "(分)"
"""What a CSV heading of an amount says after its Chinese name: the amounts are in fen."""
SUMMARY_HEADINGS = {
    "budget": "预算",
    "granted": "已授予",
    "reserved": "已预留",
    "committed": "已使用",
    "clawed_back": "已追回",
    "remaining": "剩余",
}
"""The summary's amounts, Chinese name by key."""
BREAKDOWN_HEADINGS = {
    "by_enterprise": "企业 enterprise",
    "by_region": "地区 region",
    "by_class": "资源类型 class",
}
"""The first heading of each breakdown, the name of what it groups by."""
ENTERPRISE_HEADINGS = ("统一社会信用代码 credit code", "账户 account")
"""The headings after an enterprise's name: its unified social credit code and its account."""
NOT_REGISTERED = "未登记 not registered"
"""The credit code column of an account that registered no enterprise."""


def report_csv(report: dict[str, Any]) -> str:
    """The report as CSV: a summary block, then the burn-down, then each breakdown, its units
    in a column per unit. Headings are Chinese first, then English (the report's keys);
    amounts are in fen, days YYYYMMDD in China Standard Time."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["项目 programme", *(f"{zh}{FEN} {key}" for key, zh in SUMMARY_HEADINGS.items())]
    )
    writer.writerow([report["programme_id"], *(report[key] for key in SUMMARY_HEADINGS)])
    writer.writerow([])
    writer.writerow(["日期 day", f"当日使用{FEN} spent", f"剩余{FEN} remaining"])
    for entry in report["burn_down"]:
        writer.writerow([entry["day"], entry["spent"], entry["remaining"]])
    units = [f"{UNITS_ZH.get(unit, MILLION_TOKENS_ZH)} {unit}" for unit in UNITS]
    for breakdown, heading in BREAKDOWN_HEADINGS.items():
        # An enterprise is named as registered, then by its credit code and account.
        named = [heading, *ENTERPRISE_HEADINGS] if breakdown == "by_enterprise" else [heading]
        writer.writerow([])
        writer.writerow(
            [*named, "购买笔数 purchases", *units, f"总额{FEN} gross", f"算力券{FEN} voucher"]
        )
        for group in report[breakdown]:
            writer.writerow(
                [
                    group["name"],
                    *(
                        [
                            group.get("uscc") or NOT_REGISTERED,
                            group.get("account_id", group["name"]),
                        ]
                        if breakdown == "by_enterprise"
                        else []
                    ),
                    group["purchases"],
                    *(group["units"].get(unit, 0) for unit in UNITS),
                    group["gross"],
                    group["voucher"],
                ]
            )
    return out.getvalue()


BURN_DOWN_COLOUR = "#1f5fa8"
"""The burn-down line's colour."""


def burn_down_figure(report: dict[str, Any]) -> Any:
    """The chart of the programme's remaining budget by day, in yuan, as a matplotlib figure.

    The axis leaves room above the budget, or a budget barely spent would draw its line on the
    plot's frame, and its labels are plain yuan with thousands separators (matplotlib's
    default writes a large budget as small numbers under an offset such as "1e6")."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import FuncFormatter

    from settlement.charts import chart_label, use_cjk_font

    use_cjk_font()
    days = [chart_label("起始", "start")] + [entry["day"] for entry in report["burn_down"]]
    remaining = [report["budget"]] + [entry["remaining"] for entry in report["burn_down"]]
    figure, axes = pyplot.subplots(figsize=(8, 4))
    axes.step(range(len(days)), [fen / 100 for fen in remaining], where="post",
              color=BURN_DOWN_COLOUR, linewidth=2.5, marker="o")  # fmt: skip
    axes.set_xticks(range(len(days)), days, rotation=30, ha="right")
    axes.set_ylim(bottom=0, top=max(report["budget"] / 100 * 1.1, 1.0))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.grid(True, color="#dddddd")
    axes.set_ylabel(chart_label("剩余预算(元)", "remaining budget (CNY)"))
    axes.set_xlabel(chart_label("日期(中国标准时间)", "day (China Standard Time)"))
    programme = report["programme_id"]
    axes.set_title(
        chart_label(
            f"算力券项目 {programme} 预算消耗", f"voucher programme {programme}: budget burn-down"
        )
    )
    figure.tight_layout()
    return figure


def burn_down_png(report: dict[str, Any], path: Path) -> None:
    """The burn-down chart (`burn_down_figure`) as a PNG file."""
    from matplotlib import pyplot

    figure = burn_down_figure(report)
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
