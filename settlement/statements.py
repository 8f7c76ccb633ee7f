"""Statements and VAT invoice data, read from the journal.

A statement explains every fen by which an account's own money (its `cash`, `held` and `bond`
ledger accounts) moved over a calendar month in China Standard Time, or over one buy order:
each journal entry's legs are sorted into lines (purchases, fees, vouchers, clawbacks,
concessions, platform discounts, refunds, penalties, sales, deposits, withdrawals), so the
lines add up to the journal's own net movement, to the fen. The cost of the compute bought is
split three ways: the government's vouchers net of clawbacks, the platform's concessions,
rebates and discounts, and what the firm paid.

Invoice data follows a Chinese VAT invoice (增值税发票): the platform sells as reseller, the
parties are named as registered when the buyer bought (`enterprise_registrations`), amounts are
tax-inclusive integers in fen with the 6% tax of information technology services taken out of
each line.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exchange.domain.accounts import TOKENS_PER_UNIT
from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    RESOURCE_CLASSES,
    UNIT_CARD_HOUR,
    UNIT_CORE_HOUR,
    family_of,
    strip_hours,
)
from exchange.domain.delivery import bundle_period
from settlement import projections as tables
from settlement.schema import events

BPS = 10_000
PLATFORM_ACCOUNT = "platform"
"""The platform's registration (its legal name and USCC), as invoices' seller."""
PLATFORM_NAME = "算力交易平台 (compute exchange platform)"
"""The seller's name on an invoice of a purchase made while the platform was not registered."""
VAT_RATE_BPS = 600
"""6%: the VAT rate of information technology services (信息技术服务)."""
PLATFORM_DISCOUNT = "platform_discount"
"""Journal entries of the platform's discount pool: `discount:PROG:ACC` -> `cash:ACC`."""
COMPUTE_ITEM = "信息技术服务*算力服务"
FEE_ITEM = "信息技术服务*交易服务费"
UNITS_ZH = {UNIT_CARD_HOUR: "卡时", UNIT_CORE_HOUR: "核时"}
"""Invoice units by contract unit; tokens are sold by the million (百万tokens)."""
MILLION_TOKENS_ZH = "百万tokens"
TOKENS = "tokens"
"""The invoice unit of a token bundle's refund: the unused tokens, rarely whole millions."""

LINES = (
    "deposits",
    "withdrawals",
    "purchases",
    "fees",
    "rebates",
    "vouchers",
    "voucher_clawbacks",
    "fee_concessions",
    "platform_discounts",
    "refunds",
    "penalties_received",
    "penalties_paid",
    "sales",
    "sale_fees",
    "other",
)
"""A statement's lines, each a non-negative sum except `sale_fees` and `other` (signed)."""
INFLOWS = (
    "deposits",
    "rebates",
    "vouchers",
    "fee_concessions",
    "platform_discounts",
    "refunds",
    "penalties_received",
    "sales",
    "other",
)
"""Lines that add to the account's money; the rest take from it."""


class StatementError(ValueError):
    """A statement asked for a period or order it cannot be made for."""


def month_bounds(month: str) -> tuple[int, int]:
    """The log times (ms, start inclusive, end exclusive) of a `YYYY-MM` month in CST."""
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=CHINA_STANDARD_TIME)
        following = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        return _ms(start), _ms(following)
    except (ValueError, OverflowError):
        raise StatementError(
            f"月份 {month!r} 应如 2026-12 (1 至 9998 年) / month {month!r} is not a month YYYY-MM "
            "of years 1 to 9998"
        ) from None


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp()) * 1000


@dataclass(frozen=True, slots=True)
class Leg:
    """One journal leg."""

    entry_id: str
    position: int
    kind: str
    ts: int
    account: str
    amount: int


def _funds(account_id: str) -> tuple[str, str, str]:
    """The ledger accounts holding the account's own money."""
    return (f"cash:{account_id}", f"held:{account_id}", f"bond:{account_id}")


def _of(ledger_account: str, prefix: str, account_id: str) -> bool:
    """Whether `ledger_account` is `PREFIX:ID:ACCOUNT` (a programme's or concession's); the
    id holds no `:`, the account id may."""
    parts = ledger_account.split(":", 2)
    return len(parts) == 3 and parts[0] == prefix and parts[2] == account_id


def named_for(column: Any, prefix: str, account_id: str) -> Any:
    """SQL: `column` is a ledger account `PREFIX:ID:ACCOUNT` of exactly `account_id`. The
    programme's or concession's id holds no `:`, so a name with a further `:` before the
    account id is another account's (`grant:P:X:A` is account `X:A`'s); `_` in ids is a
    literal, not LIKE's any character."""
    literal = _like_literal(account_id)
    return and_(
        column.like(f"{prefix}:%:{literal}", escape="\\"),
        ~column.like(f"{prefix}:%:%:{literal}", escape="\\"),
    )


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def classify(account_id: str, legs: list[Leg], settled: Mapping[str, Any] | None) -> dict[str, int]:
    """The lines one journal entry adds to the account's statement; `settled` is the
    `DeliverySettled` event behind a `delivery` entry. `other` is what no rule explains,
    so the lines always add up to the entry's movement of the account's money."""
    funds = _funds(account_id)
    kind = legs[0].kind
    moved = sum(leg.amount for leg in legs if leg.account in funds)
    fee = sum(leg.amount for leg in legs if leg.account in ("fees", "rebates"))
    escrow = sum(leg.amount for leg in legs if leg.account.startswith("escrow:"))
    clawback = sum(
        leg.amount for leg in legs if _of(leg.account, "grant", account_id) and leg.amount > 0
    )
    lines: dict[str, int] = defaultdict(int)
    if kind == "deposit":
        lines["deposits"] += moved
    elif kind == "withdrawal":
        lines["withdrawals"] -= moved
    elif kind == "trade_buy":
        lines["purchases"] += escrow
        lines["fees" if fee >= 0 else "rebates"] += abs(fee)
        lines["vouchers"] -= sum(
            leg.amount for leg in legs if _of(leg.account, "reserved", account_id)
        )
    elif kind == "resale":
        lines["sales"] -= escrow
        lines["sale_fees"] += fee
        lines["voucher_clawbacks"] += clawback
    elif kind == "bundle_draw":
        # A token bundle's provider, paid out of escrow for the tokens metered.
        lines["sales"] -= escrow
        lines["sale_fees"] += fee
    elif kind == "fee_concession":
        lines["fee_concessions"] += moved
    elif kind == PLATFORM_DISCOUNT:
        lines["platform_discounts"] += moved
    elif kind == "delivery" and settled is not None:
        if settled["buyer_id"] == account_id:
            lines["refunds"] += settled["refund"]
            lines["penalties_received"] += settled["penalty"]
            lines["voucher_clawbacks"] += clawback
        if settled["provider_id"] == account_id:
            lines["sales"] += settled["paid"]
            lines["sale_fees"] += fee
            lines["penalties_paid"] += settled["penalty"]
    lines["other"] += moved - net(lines)
    return {name: amount for name, amount in lines.items() if amount}


def net(lines: Mapping[str, int]) -> int:
    """What the lines add to the account's money, signed."""
    return sum(amount if name in INFLOWS else -amount for name, amount in lines.items())


def split(lines: Mapping[str, int]) -> dict[str, Any]:
    """The cost of the compute bought (purchases and their fees, less refunds) and who bore
    it: the government's vouchers net of clawbacks, the platform's concessions, rebates and
    discounts, and the firm the rest; shares in basis points by largest remainder."""
    cost = lines.get("purchases", 0) + lines.get("fees", 0) - lines.get("refunds", 0)
    government = lines.get("vouchers", 0) - lines.get("voucher_clawbacks", 0)
    platform = (
        lines.get("fee_concessions", 0)
        + lines.get("platform_discounts", 0)
        + lines.get("rebates", 0)
    )
    parts = {"government": government, "platform": platform, "firm": cost - government - platform}
    return {"cost": cost, **parts, "shares_bps": shares_bps(parts)}


def shares_bps(parts: Mapping[str, int]) -> dict[str, int] | None:
    """Each part's share of their total in basis points summing to exactly 10,000: each
    rounded down, then the basis points left over go one each to the parts with the largest
    remainders (ties in the order given). None when a part is negative or all are zero
    (a month that only returned money has no shares)."""
    total = sum(parts.values())
    if total <= 0 or any(amount < 0 for amount in parts.values()):
        return None
    floors = {name: amount * BPS // total for name, amount in parts.items()}
    remainders = sorted(parts, key=lambda name: -(parts[name] * BPS - floors[name] * total))
    for name in remainders[: BPS - sum(floors.values())]:
        floors[name] += 1
    return floors


async def _legs(connection: AsyncConnection, condition: Any) -> dict[str, list[Leg]]:
    """Every leg of the journal entries that have a leg matching `condition`, by entry."""
    journal = tables.journal
    touched = select(journal.c.entry_id).where(condition)
    rows = await connection.execute(
        select(journal)
        .where(journal.c.entry_id.in_(touched))
        .order_by(journal.c.position, journal.c.entry_id, journal.c.leg)
    )
    entries: dict[str, list[Leg]] = {}
    for row in rows:
        entries.setdefault(row.entry_id, []).append(
            Leg(row.entry_id, row.position, row.kind, row.ts, row.account, row.amount)
        )
    return entries


def _touches(account_id: str) -> Any:
    """Legs on the account's money or on its grants, reservations, concessions, discounts."""
    journal = tables.journal
    return or_(
        journal.c.account.in_(_funds(account_id)),
        *(
            named_for(journal.c.account, prefix, account_id)
            for prefix in ("grant", "reserved", "concession", "discount")
        ),
    )


async def _settlements(
    connection: AsyncConnection, entries: Mapping[str, list[Leg]]
) -> dict[str, Mapping[str, Any]]:
    """The `DeliverySettled` events behind the `delivery` entries, by entry id."""
    ids = [entry_id for entry_id, legs in entries.items() if legs[0].kind == "delivery"]
    if not ids:
        return {}
    rows = await connection.execute(
        select(events.c.event_id, events.c.data).where(events.c.event_id.in_(ids))
    )
    return {row.event_id: row.data for row in rows}


def _total(per_entry: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total = dict.fromkeys(LINES, 0)
    for lines in per_entry:
        for name, amount in lines.items():
            total[name] += amount
    return total


async def account_statement(
    engine: AsyncEngine | Sequence[AsyncEngine], account_id: str, month: str
) -> dict[str, Any]:
    """The account's statement for a CST month: opening and closing money, every line, the
    entries behind them, and the three-way split of the compute bought.

    Given the engines of every settlement shard, the account's statement across them: each
    event's entry is in one shard, the opening balance is the sum of the shards' parts, and
    the entries are in log-time order (each shard's in its stored order, ties by shard)."""
    start, end = month_bounds(month)
    journal = tables.journal
    funds = _funds(account_id)
    engines = [engine] if isinstance(engine, AsyncEngine) else list(engine)
    entries: dict[str, list[Leg]] = {}
    settled: dict[str, Mapping[str, Any]] = {}
    bundles: list[dict[str, Any]] = []
    cascades: list[dict[str, Any]] = []
    opening_balance = 0
    for shard in engines:
        async with shard.connect() as connection:
            found = await _legs(
                connection, and_(_touches(account_id), journal.c.ts >= start, journal.c.ts < end)
            )
            settled.update(await _settlements(connection, found))
            bundles += await bundle_statement(connection, account_id, start, end)
            opening = (
                await connection.execute(
                    select(journal.c.amount).where(
                        and_(journal.c.account.in_(funds), journal.c.ts < start)
                    )
                )
            ).scalars()
            opening_balance += sum(opening)
            cascades += await strip_cascades(connection, account_id, start, end)
        entries.update(found)
    if len(engines) > 1:
        entries = dict(sorted(entries.items(), key=lambda item: item[1][0].ts))
        bundles.sort(key=lambda bundle: (bundle["symbol"], bundle["role"]))
        cascades.sort(key=lambda cascade: cascade["ts"])
    per_entry: list[dict[str, Any]] = []
    for entry_id, legs in entries.items():
        lines = classify(account_id, legs, settled.get(entry_id))
        if lines:
            per_entry.append(
                {"entry_id": entry_id, "kind": legs[0].kind, "ts": legs[0].ts, "lines": lines}
            )
    lines = _total(entry["lines"] for entry in per_entry)
    movement = net(lines)
    return {
        "account_id": account_id,
        "month": month,
        "from_ts": start,
        "until_ts": end,
        "timezone": "Asia/Shanghai",
        "opening": opening_balance,
        "lines": lines,
        "net_change": movement,
        "closing": opening_balance + movement,
        "split": split(lines),
        "entries": per_entry,
        "cascades": cascades,
        "bundles": bundles,
    }


async def strip_cascades(
    connection: AsyncConnection, account_id: str, start: int, end: int
) -> list[dict[str, Any]]:
    """The strips the account held or sold that cascaded into their hourly contracts within
    [start, end): no money moves for the account then (the escrow moves from the strip to its
    hours), but its positions do, which a statement must explain."""
    rows = await connection.execute(
        select(events.c.data).where(events.c.type == "StripCascaded").order_by(events.c.position)
    )
    found: list[dict[str, Any]] = []
    for (data,) in rows:
        if not start <= data["ts"] < end:
            continue
        for role, key in (("holder", "holders"), ("provider", "providers")):
            for part in data.get(key, []):
                if part["account_id"] != account_id:
                    continue
                hours = data["hours"]
                found.append(
                    {
                        "symbol": data["symbol"],
                        "ts": data["ts"],
                        "role": role,
                        "units": part["units"],
                        "hours": len(hours),
                        "first_hour": hours[0] if hours else None,
                        "last_hour": hours[-1] if hours else None,
                        # What the provider is paid over the hours as it delivers them.
                        "amount": part.get("amount", 0),
                        "description": (
                            f"{data['symbol']} 转为 {len(hours)} 个小时合约: 每小时 "
                            f"{part['units']} {unit_of(data['symbol'])}"
                            f" ({'entitlement' if role == 'holder' else 'sold'} of "
                            f"{part['units']} in each of {len(hours)} hours)"
                        ),
                    }
                )
    return found


async def bundle_statement(
    connection: AsyncConnection, account_id: str, start: int, end: int
) -> list[dict[str, Any]]:
    """The token bundles the account bought or provided whose period overlaps [start, end),
    with their draw-down, by symbol and role: millions of tokens bought (and topped up), the
    escrowed amount, tokens used, paid to providers (net of their fee), refunded, and for a
    holder the vouchers on its purchases and the part that returned with the refund."""
    deliveries = tables.deliveries
    rows = await connection.execute(
        select(deliveries).where(
            or_(deliveries.c.buyer_id == account_id, deliveries.c.provider_id == account_id)
        )
    )
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        period = bundle_period(row.symbol)
        if period is None or period[1] <= start or period[0] >= end:
            continue
        role = "holder" if row.buyer_id == account_id else "provider"
        bundle = found.setdefault(
            (row.symbol, role),
            {
                "symbol": row.symbol,
                "role": role,
                "from_ts": period[0],
                "until_ts": period[1],
                "counterparties": [],
                "bought": 0,
                "amount": 0,
                "used_tokens": 0,
                "paid": 0,
                "refunded": 0,
                "settled": True,
            },
        )
        bundle["counterparties"].append(row.provider_id if role == "holder" else row.buyer_id)
        bundle["bought"] += row.quantity
        bundle["amount"] += row.amount
        bundle["used_tokens"] += row.delivered or 0
        bundle["paid"] += row.paid or 0
        bundle["refunded"] += row.refund or 0
        bundle["settled"] = bundle["settled"] and row.status == "settled"
    for (symbol, role), bundle in found.items():
        if role == "holder":
            bundle.update(await _bundle_vouchers(connection, account_id, symbol))
    return [found[key] for key in sorted(found)]


async def _bundle_vouchers(
    connection: AsyncConnection, account_id: str, symbol: str
) -> dict[str, int]:
    """The vouchers on the holder's purchases of a bundle, and what its refund returned."""
    lines = tables.invoice_lines
    voucher = (
        await connection.execute(
            select(lines.c.voucher).where(
                and_(lines.c.account_id == account_id, lines.c.symbol == symbol)
            )
        )
    ).scalars()
    settlements = await _legs(
        connection,
        and_(tables.journal.c.kind == "delivery", tables.journal.c.account == f"escrow:{symbol}"),
    )
    returned = sum(
        leg.amount
        for legs in settlements.values()
        for leg in legs
        if _of(leg.account, "grant", account_id) and leg.amount > 0
    )
    return {"voucher": sum(voucher), "voucher_returned": returned}


async def order_statement(engine: AsyncEngine, order_id: str) -> dict[str, Any] | None:
    """A buy order's statement: its fills, their concessions and discounts, and its share
    (by units) of the deliveries of its contracts; None if no such order is settled."""
    orders, trades, journal = tables.orders, tables.trades, tables.journal
    async with engine.connect() as connection:
        order = (
            (await connection.execute(select(orders).where(orders.c.order_id == order_id)))
            .mappings()
            .first()
        )
        if order is None:
            return None
        account_id = order["account_id"]
        if order["side"] != "buy":
            raise StatementError(
                f"订单 {order_id!r} 是卖单, 结算单和发票只开给买单 / order {order_id!r} is a "
                "sell: statements and invoices are of buy orders"
            )
        bought = (
            await connection.execute(
                select(trades).where(trades.c.buyer_id == account_id).order_by(trades.c.position)
            )
        ).all()
        mine = [trade for trade in bought if trade.buy_order_id == order_id]
        symbols = sorted({trade.symbol for trade in mine})
        entries = await _legs(
            connection,
            and_(
                journal.c.account.in_(_funds(account_id)),
                or_(
                    journal.c.position.in_([trade.position for trade in mine]),
                    journal.c.kind.in_(("fee_concession", PLATFORM_DISCOUNT, "delivery")),
                ),
            ),
        )
        causes = await _causes(connection, entries)
    trade_ids = {trade.trade_id for trade in mine}
    positions = {trade.position for trade in mine}
    per_entry: list[dict[str, Any]] = []
    for entry_id, legs in entries.items():
        kind, cause = legs[0].kind, causes.get(entry_id.split("/")[0], {})
        refunded_units, symbol = 0, None
        if (kind == "trade_buy" and legs[0].position in positions) or (
            kind in ("fee_concession", PLATFORM_DISCOUNT)
            and (cause.get("trade_id") in trade_ids or cause.get("order_id") == order_id)
        ):
            lines = classify(account_id, legs, None)
        elif (
            kind == "delivery"
            and cause.get("buyer_id") == account_id
            and cause.get("symbol") in symbols
        ):
            whole = classify(account_id, legs, cause)
            whole["units"] = _undelivered(cause)
            lines = _apportioned(whole, order_id, cause["symbol"], bought)
            refunded_units, symbol = lines.pop("units", 0), cause["symbol"]
        else:
            continue
        if lines:
            per_entry.append(
                {
                    "entry_id": entry_id,
                    "kind": kind,
                    "ts": legs[0].ts,
                    "lines": lines,
                    "symbol": symbol,
                    "refunded_units": refunded_units,
                    "refunded_unit": None if symbol is None else _refund_unit(symbol),
                }
            )
    lines = _total(entry["lines"] for entry in per_entry)
    return {
        "order_id": order_id,
        "account_id": account_id,
        "symbols": symbols,
        "fills": [
            {
                "trade_id": t.trade_id,
                "symbol": t.symbol,
                "price": t.price,
                "quantity": t.quantity,
                "ts": t.ts,
            }
            for t in mine
        ],
        "lines": lines,
        "net_change": net(lines),
        "split": split(lines),
        "entries": per_entry,
    }


def _apportioned(
    lines: Mapping[str, int], order_id: str, symbol: str, bought: Iterable[Any]
) -> dict[str, int]:
    """The order's share of a delivery of `symbol` to its account, in proportion to the units
    each of the account's buy orders bought there, rounded cumulatively in the order of their
    first fill so the orders' shares add up to the whole."""
    units: dict[str, int] = {}
    for trade in bought:
        if trade.symbol == symbol:
            units[trade.buy_order_id] = units.get(trade.buy_order_id, 0) + trade.quantity
    total = sum(units.values())
    before = 0
    for other in units:
        if other == order_id:
            break
        before += units[other]
    after = before + units.get(order_id, 0)
    if not total:
        return {}
    shares = {
        name: amount * after // total - amount * before // total for name, amount in lines.items()
    }
    return {name: amount for name, amount in shares.items() if amount}


def _refund_unit(symbol: str) -> str:
    """What a refund of `symbol` is counted in: a token bundle's unused tokens one by one, an
    hour's undelivered units in its invoice unit."""
    return TOKENS if bundle_period(symbol) is not None else unit_of(symbol)


def _undelivered(settled: Mapping[str, Any]) -> int:
    """What a delivery's refund is for: its units not delivered, or of a token bundle (whose
    `used` counts the tokens drawn down) its unused tokens, which are rarely whole millions:
    4 million bought and 2,500,001 used leave 1,499,999 tokens refunded, not 2 millions."""
    if settled.get("used") is not None:
        return int(settled["quantity"] * TOKENS_PER_UNIT - settled["used"])
    return int(settled["quantity"] - settled["delivered"])


async def _causes(
    connection: AsyncConnection, entries: Mapping[str, list[Leg]]
) -> dict[str, Mapping[str, Any]]:
    """The events behind the entries, by event id (an entry id less its `/suffix`)."""
    ids = sorted({entry_id.split("/")[0] for entry_id in entries})
    rows = await connection.execute(
        select(events.c.event_id, events.c.data).where(events.c.event_id.in_(ids))
    )
    return {row.event_id: row.data for row in rows}


def tax_of(total: int) -> tuple[int, int]:
    """A tax-inclusive line total split into its amount before tax and the tax, in fen: the
    amount is total / 1.06 rounded half away from zero, the tax the rest, so they add up."""
    magnitude = (abs(total) * BPS * 2 + BPS + VAT_RATE_BPS) // (2 * (BPS + VAT_RATE_BPS))
    amount = magnitude if total >= 0 else -magnitude
    return amount, total - amount


def unit_of(symbol: str) -> str:
    """The invoice unit of a contract: 卡时 (card-hours), 核时 (core-hours) or 百万tokens."""
    resource = RESOURCE_CLASSES[family_of(symbol).split(".")[0]]
    return UNITS_ZH.get(resource.unit, MILLION_TOKENS_ZH)


def _party(row: Mapping[str, Any] | None, account_id: str, default_name: str) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "name": (row or {}).get("name") or default_name,
        "uscc": (row or {}).get("uscc"),
    }


async def order_invoice(
    engine: AsyncEngine | Sequence[AsyncEngine], order_id: str
) -> dict[str, Any] | None:
    """The VAT invoice data of a buy order; None if no such order is settled.

    The parties are named as they were registered when the order first filled (the latest
    registration at or before that trade's log time), so an invoice once issued never changes
    when an account registers again or another account takes its code. Given every settlement
    shard's engine, the order's statement is its family's shard's and the registrations are
    read from whichever shard holds them (the registry's partition's), not only the order's."""
    engines = [engine] if isinstance(engine, AsyncEngine) else list(engine)
    for shard in engines:
        if (statement := await order_statement(shard, order_id)) is not None:
            break
    else:
        return None
    buyer_id = statement["account_id"]
    # An order not yet filled has no purchase to date: its parties as registered now.
    bought_ts = min((fill["ts"] for fill in statement["fills"]), default=None)
    rows = await _registered_at(engines, (buyer_id, PLATFORM_ACCOUNT), bought_ts)
    return invoice_of(
        statement,
        seller=_party(rows.get(PLATFORM_ACCOUNT), PLATFORM_ACCOUNT, PLATFORM_NAME),
        buyer=_party(rows.get(buyer_id), buyer_id, buyer_id),
    )


async def _registered_at(
    engines: Sequence[AsyncEngine], account_ids: Sequence[str], ts: int | None
) -> dict[str, dict[str, Any]]:
    """Each account's registration in force at log time `ts` (the latest at or before it; the
    latest of all if `ts` is None), by account id; accounts not registered then are left out."""
    registrations = tables.enterprise_registrations
    query = select(registrations).where(registrations.c.account_id.in_(account_ids))
    if ts is not None:
        query = query.where(registrations.c.registered_ts <= ts)
    found: list[dict[str, Any]] = []
    for shard in engines:
        async with shard.connect() as connection:
            found.extend(dict(row) for row in (await connection.execute(query)).mappings())
    found.sort(key=lambda row: (row["registered_ts"], row["position"]))
    return {row["account_id"]: row for row in found}


def invoice_of(
    statement: Mapping[str, Any], seller: dict[str, Any], buyer: dict[str, Any]
) -> dict[str, Any]:
    """An order statement as VAT invoice data: the platform, as reseller, sells the compute
    delivered (fills less refunded units) and its service fee (less concessions and
    discounts); vouchers are a payment, penalties compensation, both in the remarks."""
    items: list[dict[str, Any]] = []
    fills: dict[tuple[str, int], int] = defaultdict(int)
    for fill in statement["fills"]:
        fills[(fill["symbol"], fill["price"])] += fill["quantity"]
    for (symbol, price), quantity in sorted(fills.items()):
        # A strip's price is per card-hour: its quantity on an invoice is in card-hours.
        hours = strip_hours(symbol)
        items.append(_item(COMPUTE_ITEM, symbol, unit_of(symbol), quantity * hours, price))
    for entry in statement["entries"]:
        refund = entry["lines"].get("refunds", 0)
        if entry["kind"] == "delivery" and refund:
            items.append(
                _item(
                    f"{COMPUTE_ITEM} (退款)",
                    entry["symbol"],
                    entry["refunded_unit"],
                    -entry["refunded_units"],
                    None,
                    total=-refund,
                )
            )
    lines = statement["lines"]
    fee = lines["fees"] - lines["rebates"]
    if fee:
        items.append(_item(FEE_ITEM, "", "项", 1, None, total=fee))
    # Each discount on the line it discounts: the fee concession on the fee, the discount
    # pool's on the compute.
    if lines["fee_concessions"]:
        items.append(
            _item(f"{FEE_ITEM} (平台减免)", "", "项", 1, None, total=-lines["fee_concessions"])
        )
    if lines["platform_discounts"]:
        items.append(
            _item(
                f"{COMPUTE_ITEM} (平台折扣)", "", "项", 1, None, total=-lines["platform_discounts"]
            )
        )
    totals = {name: sum(item[name] for item in items) for name in ("amount", "tax", "total")}
    voucher = lines["vouchers"] - lines["voucher_clawbacks"]
    return {
        "invoice_type": "增值税普通发票 (VAT invoice, ordinary)",
        "order_id": statement["order_id"],
        "seller": seller,
        "buyer": buyer,
        "items": items,
        "tax_rate_bps": VAT_RATE_BPS,
        **totals,
        "total_in_words": yuan_in_capitals(totals["total"]),
        "voucher": voucher,
        "penalties_received": lines["penalties_received"],
        "firm_paid": statement["split"]["firm"],
        "remarks": (
            f"订单 order {statement['order_id']}; "
            f"合同 contracts {', '.join(statement['symbols'])}; "
            f"其中政府算力券支付 of which government vouchers paid {yuan(voucher)} 元; "
            f"违约金 penalties received {yuan(lines['penalties_received'])} 元 (不征增值税 "
            "not subject to VAT); 时间为中国标准时间 China Standard Time"
        ),
        "rounding": "each line's total is tax-inclusive; amount = total / 1.06 rounded half "
        "away from zero to the fen, tax = total - amount",
    }


def _item(
    name: str,
    spec: str,
    unit: str,
    quantity: int,
    unit_price: int | None,
    total: int | None = None,
) -> dict[str, Any]:
    line_total = quantity * unit_price if unit_price is not None else (total or 0)
    amount, tax = tax_of(line_total)
    return {
        "item": name,
        "spec": spec,
        "unit": unit,
        "quantity": quantity,
        "unit_price": unit_price,
        "total": line_total,
        "amount": amount,
        "tax_rate_bps": VAT_RATE_BPS,
        "tax": tax,
    }


def yuan(fen: int) -> str:
    """Fen as yuan with two decimals, e.g. `-1,234.05`."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{cents:02d}"


AMOUNT_IN_FEN = re.compile(r"(?<![\w.,])(-?\d+) fen\b")
"""An amount as the exchange's messages count it, in fen (`15052 fen`)."""


def in_yuan(text: str) -> str:
    """A message as a person reads it: its amounts in 元 (`15052 fen` is said `150.52 元`).
    The exchange counts in fen, and what machines read (JSON, CSV, a problem's fields) keeps
    fen; every amount a message gives says `fen` after it, so none is left in fen here."""
    return AMOUNT_IN_FEN.sub(lambda amount: f"{yuan(int(amount.group(1)))} 元", text)


CAPITAL_DIGITS = "零壹贰叁肆伍陆柒捌玖"
CAPITAL_GROUPS = ("", "万", "亿", "万亿")


def yuan_in_capitals(fen: int) -> str:
    """Fen as an invoice writes the amount in words (人民币大写), by the rules of the People's
    Bank of China's 支付结算办法: 壹仟零伍元整, 陆仟柒佰玖拾叁元玖角捌分, 壹佰元零伍分, 伍角."""
    if abs(fen) >= 10**18:
        raise ValueError(f"{fen} fen is beyond an amount in words")
    sign = "负" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    jiao, fen_digit = divmod(cents, 10)
    head = f"{_capital_integer(whole)}元" if whole else ""
    if not cents:
        return f"{sign}{head or '零元'}整"
    tail = f"{CAPITAL_DIGITS[jiao]}角" if jiao else ("零" if head else "")
    if fen_digit:
        tail += f"{CAPITAL_DIGITS[fen_digit]}分"
    return f"{sign}{head}{tail}"


def _capital_integer(number: int) -> str:
    """A whole number of yuan in capitals, grouped by ten thousands: a run of zeros inside it
    is one 零, zeros at the end of a group are silent."""
    groups = []
    while number:
        number, group = divmod(number, 10_000)
        groups.append(group)
    words, zero = "", False
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if not group:
            zero = bool(words)
            continue
        if words and (zero or group < 1000):
            words += "零"
        words += _capital_group(group) + CAPITAL_GROUPS[index]
        zero = False
    return words


def _capital_group(group: int) -> str:
    words, zero = "", False
    for place, unit in ((1000, "仟"), (100, "佰"), (10, "拾"), (1, "")):
        digit = group // place % 10
        if not digit:
            zero = bool(words)
            continue
        if zero:
            words += "零"
        words += CAPITAL_DIGITS[digit] + unit
        zero = False
    return words


INVOICE_COLUMNS = (
    "item",
    "spec",
    "unit",
    "quantity",
    "unit_price",
    "amount",
    "tax_rate_bps",
    "tax",
    "total",
)


def invoice_csv(invoice: Mapping[str, Any]) -> str:
    """The invoice as CSV: the parties, then one row per item and the totals, in fen."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["order_id", "seller", "seller_uscc", "buyer", "buyer_uscc"])
    writer.writerow(
        [
            invoice["order_id"],
            invoice["seller"]["name"],
            invoice["seller"]["uscc"],
            invoice["buyer"]["name"],
            invoice["buyer"]["uscc"],
        ]
    )
    writer.writerow([])
    writer.writerow(INVOICE_COLUMNS)
    for item in invoice["items"]:
        writer.writerow([item[column] for column in INVOICE_COLUMNS])
    writer.writerow(
        [
            "total",
            "",
            "",
            "",
            "",
            invoice["amount"],
            invoice["tax_rate_bps"],
            invoice["tax"],
            invoice["total"],
        ]
    )
    return out.getvalue()
