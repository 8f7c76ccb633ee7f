"""The API's ports (`api.ports`) on SQLAlchemy: the ledger projection, the event store and the
API's own tables (keys, stalls, idempotent requests, needs), on PostgreSQL or SQLite.

The tables stay where they are defined (`api.keys`, `api.stalls`, `api.idempotency`,
`api.needs`, `settlement`); every query the API makes is built here or in the functions these
classes call, and the routers and services see only the ports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Select, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from api import keys, queries, stalls
from api.idempotency import (
    PASSES_WITH_TIME,
    UNANSWERED,
    Answer,
    Named,
    NameReused,
    idempotent_requests,
)
from api.keys import KeyInfo, NewKey, Role, StoredKey, writing_transaction
from api.needs import EXPIRED, STANDING, SUBMITTED, api_needs
from api.stalls import Stall
from exchange.domain.messages import AnyEvent
from settlement import projections as tables
from settlement import reports, statements
from settlement.history import export_header, export_line, history_condition, history_query
from settlement.shards import read_merged
from settlement.stalled import Stall as StalledOn
from settlement.stalled import set_aside, set_aside_stalls

HISTORY_BATCH = 2000
"""Events read from the database at a time while an export streams."""


class SqlLedger:
    """The settled state as the API reads it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def order(self, order_id: str) -> dict[str, Any] | None:
        """One settled order, if it is settled."""
        return await queries.order(self.engine, order_id)

    async def group_orders(self, group_id: str) -> list[dict[str, Any]]:
        """The settled alternatives of an exclusive group, by order id."""
        return await queries.group_orders(self.engine, group_id)

    async def account_orders(
        self, account_id: str, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """An account's orders, newest first, optionally of one status."""
        return await queries.account_orders(self.engine, account_id, status, limit)

    async def account_fills(self, account_id: str, limit: int) -> list[dict[str, Any]]:
        """The account's sides of settled trades, newest first."""
        return await queries.account_fills(self.engine, account_id, limit)

    async def account_summary(self, account_id: str) -> dict[str, Any] | None:
        """Cash, bonds, capacity and positions of an account; None if it has no settled
        history."""
        return await queries.account_summary(self.engine, account_id)

    async def contract_trades(self, symbol: str, limit: int) -> list[dict[str, Any]]:
        """Settled trades of one contract, newest first."""
        return await queries.contract_trades(self.engine, symbol, limit)

    async def sold(self, account_id: str) -> list[dict[str, Any]]:
        """Per contract, what the account sold, was paid and in how many trades."""
        return await queries.sold(self.engine, account_id)

    async def trades_report(
        self,
        *,
        account_id: str | None,
        symbol: str | None,
        since_ts: int | None,
        until_ts: int | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Settled trades with their counterparties, newest first, filtered."""
        return await queries.trades_report(
            self.engine,
            account_id=account_id,
            symbol=symbol,
            since_ts=since_ts,
            until_ts=until_ts,
            limit=limit,
        )

    async def order_paid(self, order_id: str) -> int:
        """Fen paid by a buy order over its settled trades."""
        return await queries.order_paid(self.engine, order_id)

    async def day_ahead_events(self, day: str, types: tuple[str, ...]) -> list[AnyEvent]:
        """The stored day-ahead auction events of `types` of a CST date, in stored order."""
        return await queries.day_ahead_events(self.engine, day, types)

    async def account_order_symbols(self, account_id: str, order_ids: set[str]) -> dict[str, str]:
        """Which of `order_ids` are settled orders of the account, each with its symbol (a
        block's: its family)."""
        return await queries.account_order_symbols(self.engine, account_id, order_ids)

    async def deliveries(
        self, account_id: str
    ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """The account's delivery obligations and recalls, by symbol, provider and buyer."""
        owed, recalled = tables.deliveries, tables.delivery_recalls
        async with self.engine.connect() as connection:
            obligations = await connection.execute(
                select(owed)
                .where(or_(owed.c.provider_id == account_id, owed.c.buyer_id == account_id))
                .order_by(owed.c.symbol, owed.c.provider_id, owed.c.buyer_id)
            )
            found: list[Mapping[str, Any]] = [dict(row._mapping) for row in obligations]
            recalls = await connection.execute(
                select(recalled)
                .where(or_(recalled.c.provider_id == account_id, recalled.c.buyer_id == account_id))
                .order_by(recalled.c.symbol, recalled.c.provider_id, recalled.c.buyer_id)
            )
            return found, [dict(row._mapping) for row in recalls]

    async def invoices(self, account_id: str) -> dict[str, Any]:
        """The account's invoices."""
        return await reports.invoices(self.engine, account_id)

    async def programme_report(self, programme_id: str) -> dict[str, Any] | None:
        """A voucher programme's report; None if there is no such programme."""
        return await reports.programme_report(self.engine, programme_id)

    async def statement(self, account_id: str, month: str) -> dict[str, Any]:
        """The account's statement for a CST month."""
        return await statements.account_statement(self.engine, account_id, month)

    async def order_statement(self, order_id: str) -> dict[str, Any] | None:
        """A buy order's statement; None if the order is not settled."""
        return await statements.order_statement(self.engine, order_id)

    async def order_invoice(self, order_id: str) -> dict[str, Any] | None:
        """A buy order's VAT invoice data; None if the order is not settled."""
        return await statements.order_invoice(self.engine, order_id)

    async def enterprise(self, account_id: str) -> dict[str, Any] | None:
        """The enterprise the account registered, if it did and it is settled."""
        registered = tables.enterprises
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(registered).where(registered.c.account_id == account_id)
                )
            ).first()
        return None if row is None else dict(row._mapping)

    async def grant_applications(
        self, *, programme_id: str | None = None, account_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Applications for grants of a programme or by an account, oldest first."""
        applications = tables.grant_applications
        query = select(applications).order_by(
            applications.c.submitted_ts, applications.c.programme_id, applications.c.application_id
        )
        if programme_id is not None:
            query = query.where(applications.c.programme_id == programme_id)
        if account_id is not None:
            query = query.where(applications.c.account_id == account_id)
        async with self.engine.connect() as connection:
            return [dict(row._mapping) for row in await connection.execute(query)]

    def history(
        self,
        output_format: str,
        contract: str | None,
        account_id: str | None,
        order_id: str | None,
        since_ts: int | None,
        until_ts: int | None,
    ) -> AsyncIterator[str]:
        """Stored events, filtered, as export lines (a CSV header first), read as they are
        sent."""
        query = history_query(contract, account_id, order_id, since_ts, until_ts)
        return self._export(query, output_format)

    async def _export(self, query: Select[Any], output_format: str) -> AsyncIterator[str]:
        if output_format == "csv":
            yield export_header(sharded=False)
        async with self.engine.connect() as connection:
            result = await connection.stream(query.execution_options(yield_per=HISTORY_BATCH))
            async for row in result:
                yield export_line(row, output_format)

    async def set_aside(self, source: str, operator: str, reason: str) -> StalledOn | None:
        """Mark the open stall at `source` to be set aside; None if none is open there."""
        return await set_aside(self.engine, source, operator, reason)

    async def set_aside_stalls(self) -> dict[str, StalledOn]:
        """The stalls whose record an operator set aside, by `topic:partition:offset`."""
        return await set_aside_stalls(self.engine)


class ShardedLedger(SqlLedger):
    """The settled state over several settlement shards (`settlement.shards`): an account's
    views, a programme's report and its applications read every shard and add up or merge
    their parts; what is the API's own (keys, stalls set aside) is the home shard's. An order,
    a trade and a contract live in one shard (their family's); an account's money is spread
    over them."""

    def __init__(self, engines: Sequence[AsyncEngine]) -> None:
        super().__init__(engines[0])
        self.shards = [SqlLedger(engine) for engine in engines]

    async def order(self, order_id: str) -> dict[str, Any] | None:
        """One settled order, from the shard of its family."""
        for shard in self.shards:
            if (found := await shard.order(order_id)) is not None:
                return found
        return None

    async def group_orders(self, group_id: str) -> list[dict[str, Any]]:
        """The settled alternatives of an exclusive group, from every shard (a group may offer
        families of several)."""
        found = [row for shard in self.shards for row in await shard.group_orders(group_id)]
        return sorted(found, key=lambda row: row["order_id"])

    async def account_orders(
        self, account_id: str, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """An account's orders over every shard, newest first (as one shard orders them)."""
        rows = [r for s in self.shards for r in await s.account_orders(account_id, status, limit)]
        rows.sort(key=lambda row: row["order_id"])
        rows.sort(key=lambda row: row["created_ts"], reverse=True)
        return rows[:limit]

    async def account_fills(self, account_id: str, limit: int) -> list[dict[str, Any]]:
        """The account's fills over every shard, newest first by log time."""
        fills = [f for s in self.shards for f in await s.account_fills(account_id, limit)]
        return _newest_first(fills)[:limit]

    async def account_summary(self, account_id: str) -> dict[str, Any] | None:
        """Cash, bonds, capacity and positions of an account, each the sum of its shards'
        parts."""
        parts = [p for s in self.shards if (p := await s.account_summary(account_id))]
        if not parts:
            return None
        capacity: dict[str, dict[str, int]] = {}
        positions: dict[str, int] = {}
        for part in parts:
            for row in part["capacity"]:
                held = capacity.setdefault(row["symbol"], {"available": 0, "held": 0})
                held["available"] += row["available"]
                held["held"] += row["held"]
            for row in part["positions"]:
                positions[row["symbol"]] = positions.get(row["symbol"], 0) + row["quantity"]
        return {
            "account_id": account_id,
            "cash": {
                "available": sum(p["cash"]["available"] for p in parts),
                "held": sum(p["cash"]["held"] for p in parts),
            },
            "bonds": sum(p["bonds"] for p in parts),
            "capacity": [{"symbol": s, **capacity[s]} for s in sorted(capacity)],
            "positions": [{"symbol": s, "quantity": positions[s]} for s in sorted(positions)],
        }

    async def contract_trades(self, symbol: str, limit: int) -> list[dict[str, Any]]:
        """Settled trades of one contract (its family's shard), newest first."""
        trades = [t for s in self.shards for t in await s.contract_trades(symbol, limit)]
        return _newest_first(trades)[:limit]

    async def sold(self, account_id: str) -> list[dict[str, Any]]:
        """Per contract, what the account sold over every shard."""
        per_symbol: dict[str, dict[str, Any]] = {}
        for shard in self.shards:
            for row in await shard.sold(account_id):
                total = per_symbol.setdefault(
                    row["symbol"],
                    {"symbol": row["symbol"], "quantity": 0, "payout": 0, "trades": 0},
                )
                for name in ("quantity", "payout", "trades"):
                    total[name] += row[name]
        return [per_symbol[symbol] for symbol in sorted(per_symbol)]

    async def trades_report(
        self,
        *,
        account_id: str | None,
        symbol: str | None,
        since_ts: int | None,
        until_ts: int | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Settled trades over every shard, newest first by log time, filtered."""
        trades = [
            t
            for s in self.shards
            for t in await s.trades_report(
                account_id=account_id,
                symbol=symbol,
                since_ts=since_ts,
                until_ts=until_ts,
                limit=limit,
            )
        ]
        return _newest_first(trades)[:limit]

    async def order_paid(self, order_id: str) -> int:
        """Fen paid by a buy order (its trades are in its family's shard)."""
        return sum([await shard.order_paid(order_id) for shard in self.shards])

    async def day_ahead_events(self, day: str, types: tuple[str, ...]) -> list[AnyEvent]:
        """A day's auction events from every shard (each partition's share is in its own),
        by log time, each shard's in stored order."""
        found = [e for s in self.shards for e in await s.day_ahead_events(day, types)]
        return sorted(found, key=lambda event: event.ts)

    async def account_order_symbols(self, account_id: str, order_ids: set[str]) -> dict[str, str]:
        """Which of `order_ids` are settled orders of the account, in any shard, each with its
        symbol (a block's: its family)."""
        found: dict[str, str] = {}
        for shard in self.shards:
            found |= await shard.account_order_symbols(account_id, order_ids)
        return found

    async def deliveries(
        self, account_id: str
    ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """The account's delivery obligations and recalls over every shard."""
        owed: list[Mapping[str, Any]] = []
        recalled: list[Mapping[str, Any]] = []
        for shard in self.shards:
            obligations, recalls = await shard.deliveries(account_id)
            owed += obligations
            recalled += recalls
        key = lambda row: (row["symbol"], row["provider_id"], row["buyer_id"])  # noqa: E731
        return sorted(owed, key=key), sorted(recalled, key=key)

    async def invoices(self, account_id: str) -> dict[str, Any]:
        """The account's invoices over every shard."""
        return await reports.invoices([shard.engine for shard in self.shards], account_id)

    async def programme_report(self, programme_id: str) -> dict[str, Any] | None:
        """A voucher programme's report over every shard (its grants are used in every
        family's)."""
        engines = [shard.engine for shard in self.shards]
        return await reports.programme_report(engines, programme_id)

    async def statement(self, account_id: str, month: str) -> dict[str, Any]:
        """The account's statement for a CST month, over every shard."""
        engines = [shard.engine for shard in self.shards]
        return await statements.account_statement(engines, account_id, month)

    async def order_statement(self, order_id: str) -> dict[str, Any] | None:
        """A buy order's statement, from the shard of its family."""
        for shard in self.shards:
            if (found := await shard.order_statement(order_id)) is not None:
                return found
        return None

    async def order_invoice(self, order_id: str) -> dict[str, Any] | None:
        """A buy order's VAT invoice data, from the shard of its family, naming the parties'
        enterprises wherever they registered (the registry's shard)."""
        return await statements.order_invoice([shard.engine for shard in self.shards], order_id)

    async def enterprise(self, account_id: str) -> dict[str, Any] | None:
        """The enterprise the account registered, from the shard of the registry's partition."""
        for shard in self.shards:
            if (found := await shard.enterprise(account_id)) is not None:
                return found
        return None

    async def grant_applications(
        self, *, programme_id: str | None = None, account_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Applications over every shard, oldest first."""
        found = [
            row
            for shard in self.shards
            for row in await shard.grant_applications(
                programme_id=programme_id, account_id=account_id
            )
        ]
        return sorted(
            found, key=lambda r: (r["submitted_ts"], r["programme_id"], r["application_id"])
        )

    def history(
        self,
        output_format: str,
        contract: str | None,
        account_id: str | None,
        order_id: str | None,
        since_ts: int | None,
        until_ts: int | None,
    ) -> AsyncIterator[str]:
        """Stored events of every shard, filtered, in the merged history's order (the
        order a replay of every shard folds them in), each labelled with its shard."""
        condition = history_condition(contract, account_id, order_id, since_ts, until_ts)
        return self._export_merged(condition, output_format)

    async def _export_merged(
        self, condition: ColumnElement[bool] | None, output_format: str
    ) -> AsyncIterator[str]:
        if output_format == "csv":
            yield export_header(sharded=True)
        engines = [shard.engine for shard in self.shards]
        async for found in read_merged(engines, [0] * len(engines), condition):
            yield export_line(found.event, output_format, found.shard)

    async def set_aside(self, source: str, operator: str, reason: str) -> StalledOn | None:
        """Mark the open stall at `source` (in whichever shard stalled there) to be set aside."""
        for shard in self.shards:
            if (stall := await shard.set_aside(source, operator, reason)) is not None:
                return stall
        return None

    async def set_aside_stalls(self) -> dict[str, StalledOn]:
        """The stalls whose record an operator set aside, in every shard."""
        found: dict[str, StalledOn] = {}
        for shard in self.shards:
            found |= await shard.set_aside_stalls()
        return found


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of several shards (each newest first) by log time, newest first; ties keep
    each shard's order, then the shards' order."""
    return sorted(rows, key=lambda row: row["ts"], reverse=True)


class SqlKeys:
    """The API keys table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create_key(self, account_id: str, role: Role, label: str | None) -> NewKey:
        """A new key; RoleConflict if the account's live keys have another role."""
        return await keys.create_key(self.engine, account_id, role, label)

    async def list_keys(self, account_id: str | None, include_revoked: bool) -> list[KeyInfo]:
        """Keys, oldest first, optionally of one account."""
        return await keys.list_keys(self.engine, account_id, include_revoked)

    async def revoke_key(self, key_id: str) -> KeyInfo | None:
        """Revoke a key (idempotent); None if there is no such key."""
        return await keys.revoke_key(self.engine, key_id)

    async def stored_keys(self, key_ids: Sequence[str], live_only: bool) -> list[StoredKey]:
        """The stored keys of these ids (only the unrevoked with `live_only`)."""
        return await keys.stored_keys(self.engine, key_ids, live_only)


class SqlStalls:
    """The providers' stalls table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def list_stalls(
        self,
        resource_class: str | None = None,
        region: str | None = None,
        account_id: str | None = None,
    ) -> list[Stall]:
        """Stalls by id (and provider), optionally of one class, region or provider."""
        return await stalls.list_stalls(self.engine, resource_class, region, account_id)

    async def put_stall(
        self,
        stall_id: str,
        account_id: str,
        resource_class: str,
        region: str,
        hours: Iterable[int],
        sla_tier: str,
        max_interruptions: int,
        network: str | None,
        description: str,
    ) -> tuple[Stall, bool]:
        """Create or replace one of an account's stalls; returns it and whether it is new."""
        return await stalls.put_stall(
            self.engine,
            stall_id,
            account_id,
            resource_class,
            region,
            hours,
            sla_tier,
            max_interruptions,
            network,
            description,
        )

    async def delete_stall(self, stall_id: str, account_id: str) -> bool:
        """Remove one of an account's stalls; False if it has none of that id."""
        return await stalls.delete_stall(self.engine, stall_id, account_id)


class SqlRequests:
    """The `idempotent_requests` table: names reserved and answers kept."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def reserve(self, account_id: str, request: Named, now_ms: int) -> Answer | None:
        """Reserve the request's names for it, durably, before anything is sent.

        Returns the final answer a retry finds kept, or None to go ahead (the request is new,
        or its earlier sends are still undecided); raises NameReused if a name names another
        request.
        """
        if request.legacy:
            async with self.engine.connect() as connection:
                kept = (await connection.execute(_named(account_id, request.legacy))).all()
            for row in kept:
                if row.fingerprint != request.fingerprint:
                    raise NameReused(row.request_key)
            if kept:
                return _answer(kept[0])
        insert = (
            _dialect(self.engine)
            .insert(idempotent_requests)
            .values(
                [
                    {
                        "account_id": account_id,
                        "request_key": name,
                        "fingerprint": request.fingerprint,
                        "status_code": UNANSWERED,
                        "body": "{}",
                        "created_ms": now_ms,
                    }
                    # In one order for every request, so two writers lock shared names alike.
                    for name in sorted(request.names)
                ]
            )
            .on_conflict_do_nothing()
        )
        async with writing_transaction(self.engine) as connection:
            await connection.execute(insert)
            rows = (await connection.execute(_named(account_id, request.names))).all()
            taken = sorted(r.request_key for r in rows if r.fingerprint != request.fingerprint)
            if taken:
                raise NameReused(taken[0])  # and the reservation is rolled back
        answered = [row for row in rows if row.status_code != UNANSWERED]
        return _answer(answered[0]) if answered else None

    async def reused(self, account_id: str, request: Named) -> str | None:
        """A name of the request that another request of the account holds, or None; reads
        only, so a request refused before it is reserved leaves its names free."""
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(_named(account_id, (*request.names, *request.legacy)))
            ).all()
        taken = sorted(r.request_key for r in rows if r.fingerprint != request.fingerprint)
        return taken[0] if taken else None

    async def keep(self, account_id: str, request: Named, answer: Answer) -> None:
        """Keep a final answer on the request's names; the first one kept wins (over none,
        or a refusal that passes with time, which earlier versions of the API kept)."""
        column = idempotent_requests.c
        passing = or_(
            *(column.body.like(f'%"type":"/problems/{code}"%') for code in PASSES_WITH_TIME)
        )
        statement = (
            update(idempotent_requests)
            .where(
                (column.account_id == account_id)
                & (column.request_key.in_(request.names))
                & ((column.status_code == UNANSWERED) | ((column.status_code == 422) & passing))
            )
            .values(status_code=answer.status_code, body=orjson.dumps(answer.body).decode())
        )
        async with writing_transaction(self.engine) as connection:
            await connection.execute(statement)


def _named(account_id: str, names: Sequence[str]) -> Select[Any]:
    return select(idempotent_requests).where(
        (idempotent_requests.c.account_id == account_id)
        & (idempotent_requests.c.request_key.in_(names))
    )


def _answer(row: Any) -> Answer:
    return Answer(row.status_code, orjson.loads(row.body), row.fingerprint)


class SqlNeeds:
    """The `api_needs` table. Every change is a conditional update, so two processes, or a
    re-plan racing a withdrawal, never both act on one need."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def need(self, need_id: str) -> dict[str, Any] | None:
        """One need's row."""
        async with self.engine.connect() as connection:
            found = (
                await connection.execute(select(api_needs).where(api_needs.c.need_id == need_id))
            ).first()
        return None if found is None else dict(found._mapping)

    async def add_need(self, row: Mapping[str, Any]) -> bool:
        """Store a new need; False if one of its id is already stored."""
        async with self.engine.begin() as connection:
            inserted = await connection.execute(
                _dialect(self.engine).insert(api_needs).values(**row).on_conflict_do_nothing()
            )
        return bool(inserted.rowcount)

    async def update_need(self, need_id: str, only_if: str | None, **values: Any) -> bool:
        """Change a need's columns, only while its status is `only_if` (when given)."""
        condition = api_needs.c.need_id == need_id
        if only_if is not None:
            condition = condition & (api_needs.c.status == only_if)
        async with self.engine.begin() as connection:
            changed = await connection.execute(update(api_needs).where(condition).values(**values))
        return bool(changed.rowcount)

    async def expire_needs(self, now_ms: int) -> list[dict[str, Any]]:
        """Expire standing needs whose deadline passed; the standing ones left."""
        async with self.engine.begin() as connection:
            await connection.execute(
                update(api_needs)
                .where((api_needs.c.status == STANDING) & (api_needs.c.deadline_ms <= now_ms))
                .values(status=EXPIRED, reason="the deadline passed unfilled", updated_ms=now_ms)
            )
            rows = await connection.execute(
                select(api_needs.c.need_id, api_needs.c.account_id, api_needs.c.request).where(
                    api_needs.c.status == STANDING
                )
            )
            return [dict(row._mapping) for row in rows]

    async def lost_needs(self, claimed_before_ms: int) -> list[dict[str, Any]]:
        """Needs submitted at or before `claimed_before_ms`."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(api_needs.c.need_id, api_needs.c.account_id, api_needs.c.block).where(
                    (api_needs.c.status == SUBMITTED)
                    & (api_needs.c.updated_ms <= claimed_before_ms)
                )
            )
            return [dict(row._mapping) for row in rows]


def _dialect(engine: AsyncEngine) -> Any:
    """The dialect module whose `insert` has ON CONFLICT for the engine's database."""
    return postgresql if engine.dialect.name == "postgresql" else sqlite
