"""An account's view over settlement shards adds up each shard's part, the delivery bonds it
posted included: a provider's bonds lie in the shards of the families it sold in."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from api.sql import ShardedLedger
from settlement import projections as tables

GZ0 = "H100-80G.GZ.20271201T00"
YRD0 = "H100-80G.YRD.20271201T00"


async def test_an_account_s_bonds_are_the_sum_of_its_shards_parts(tmp_path: Path) -> None:
    engines = [create_async_engine(f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}") for n in (0, 1)]
    try:
        for engine, (available, held, bond, symbol) in zip(
            engines, ((69_771, 460, 2_000, GZ0), (-1_000, 0, 360, YRD0)), strict=True
        ):
            async with engine.begin() as connection:
                await connection.run_sync(tables.metadata.create_all)
                await connection.execute(
                    insert(tables.cash_balances).values(
                        account_id="p1", available=available, held=held
                    )
                )
                await connection.execute(
                    insert(tables.ledger_balances).values(account="bond:p1", balance=bond)
                )
                await connection.execute(
                    insert(tables.capacity_balances).values(
                        account_id="p1", symbol=symbol, available=1, held=0
                    )
                )
        ledger = ShardedLedger(engines)
        summary = await ledger.account_summary("p1")
        assert summary is not None
        assert summary["cash"] == {"available": 68_771, "held": 460}
        assert summary["bonds"] == 2_360
        assert [row["symbol"] for row in summary["capacity"]] == [GZ0, YRD0]
        assert (await ledger.shards[1].account_summary("p1") or {})["bonds"] == 360
    finally:
        for engine in engines:
            await engine.dispose()
