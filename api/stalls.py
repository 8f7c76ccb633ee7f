"""Stalls: what each provider offers, described in the catalogue's one standard specification.

A stall names a resource class and a region (a contract family), the delivery hours of the day
it serves and the terms around the contract: SLA tier, how often interruptible capacity may be
recalled, the network. Buyers compare stalls like with like and see, per contract, which
providers have a stall covering it (its "sellers"). A stall is a description, not an order: it
never reaches the matching path, so it lives at the API edge in its own table, on the API's
metadata like the API keys (`api/schema.py`, which the migrations create). A stall's id is its
provider's own: two providers may each have a `gpu-1`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import Path
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    Row,
    Table,
    Text,
    delete,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from api.keys import writing_transaction
from api.models import StallOut, StallRequest
from api.problems import Problem
from api.schema import metadata
from api.services import cst
from exchange.domain.catalogue import REGIONS, RESOURCE_CLASSES, ContractSpec
from settlement.schema import utc_now

stalls = Table(
    "provider_stalls",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("stall_id", Text, primary_key=True),
    Column("resource_class", Text, nullable=False),
    Column("region", Text, nullable=False),
    Column("hours", JSON, nullable=False),
    Column("sla_tier", Text, nullable=False),
    Column("max_interruptions", Integer, nullable=False),
    Column("network", Text),
    Column("description", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=utc_now()),
    Index("provider_stalls_family_idx", "resource_class", "region"),
)
"""Stalls by (provider, stall id). It replaced the `stalls` table, keyed by the stall id
alone, which let one provider's id shut every other provider out of it."""


@dataclass(frozen=True, slots=True)
class Stall:
    """One provider's offer of a contract family."""

    stall_id: str
    account_id: str
    resource_class: str
    region: str
    hours: tuple[int, ...]
    """Delivery hours of the day (China Standard Time, 0-23) the stall serves, ascending."""
    sla_tier: str
    max_interruptions: int
    """Recalls a day at most (0 for a firm class)."""
    network: str | None
    description: str
    updated_at: datetime

    def covers(self, spec: ContractSpec) -> bool:
        """Whether this stall offers the contract `spec`."""
        return (
            spec.resource_class.code == self.resource_class
            and spec.region == self.region
            and spec.delivery_start.hour in self.hours
        )


class StallStore(Protocol):
    """Providers' stalls."""

    async def list_stalls(
        self,
        resource_class: str | None = None,
        region: str | None = None,
        account_id: str | None = None,
    ) -> list[Stall]:
        """Stalls by id (and provider), optionally of one class, region or provider."""

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

    async def delete_stall(self, stall_id: str, account_id: str) -> bool:
        """Remove one of an account's stalls; False if it has none of that id."""


def _stall(row: Row[Any]) -> Stall:
    return Stall(
        stall_id=row.stall_id,
        account_id=row.account_id,
        resource_class=row.resource_class,
        region=row.region,
        hours=tuple(row.hours),
        sla_tier=row.sla_tier,
        max_interruptions=row.max_interruptions,
        network=row.network,
        description=row.description,
        updated_at=row.updated_at,
    )


async def put_stall(
    engine: AsyncEngine,
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
    values = {
        "resource_class": resource_class,
        "region": region,
        "hours": sorted(set(hours)),
        "sla_tier": sla_tier,
        "max_interruptions": max_interruptions,
        "network": network,
        "description": description,
    }
    mine = (stalls.c.account_id == account_id) & (stalls.c.stall_id == stall_id)
    async with writing_transaction(engine) as connection:
        held = (await connection.execute(select(stalls.c.stall_id).where(mine))).first()
        if held is None:
            await connection.execute(
                stalls.insert().values(stall_id=stall_id, account_id=account_id, **values)
            )
        else:
            await connection.execute(
                stalls.update().where(mine).values(updated_at=utc_now(), **values)
            )
        row = (await connection.execute(select(stalls).where(mine))).one()
    return _stall(row), held is None


async def delete_stall(engine: AsyncEngine, stall_id: str, account_id: str) -> bool:
    """Remove one of an account's stalls; False if it has none of that id."""
    mine = (stalls.c.account_id == account_id) & (stalls.c.stall_id == stall_id)
    async with writing_transaction(engine) as connection:
        removed = await connection.execute(delete(stalls).where(mine))
    return bool(removed.rowcount)


async def list_stalls(
    engine: AsyncEngine,
    resource_class: str | None = None,
    region: str | None = None,
    account_id: str | None = None,
) -> list[Stall]:
    """Stalls by id (and provider), optionally of one class, region or provider."""
    query = select(stalls).order_by(stalls.c.stall_id, stalls.c.account_id)
    if resource_class is not None:
        query = query.where(stalls.c.resource_class == resource_class)
    if region is not None:
        query = query.where(stalls.c.region == region)
    if account_id is not None:
        query = query.where(stalls.c.account_id == account_id)
    async with engine.connect() as connection:
        return [_stall(row) for row in await connection.execute(query)]


def sellers(stalls_held: Iterable[Stall], spec: ContractSpec) -> list[str]:
    """The providers with a stall covering the contract `spec`, sorted."""
    return sorted({s.account_id for s in stalls_held if s.covers(spec)})


StallId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


def check_specification(request: StallRequest) -> None:
    """Raise a 422 problem unless the stall describes a catalogue family in its terms."""
    resource_class = RESOURCE_CLASSES.get(request.resource_class)
    if resource_class is None:
        raise Problem(
            422,
            "unknown-resource-class",
            f"unknown resource class {request.resource_class!r}; the catalogue has "
            + ", ".join(sorted(RESOURCE_CLASSES)),
        )
    if request.region not in REGIONS:
        raise Problem(
            422,
            "unknown-region",
            f"unknown region {request.region!r}; the catalogue has " + ", ".join(sorted(REGIONS)),
        )
    if request.max_interruptions and resource_class.firm_class is None:
        raise Problem(
            422,
            "not-interruptible",
            f"{resource_class.code} is not an interruptible class, so it is never recalled: "
            "offer recallable capacity as an interruptible (-INT) class, or set "
            "max_interruptions to 0",
        )


def stall_out(stall: Stall) -> StallOut:
    """A stall as the API shows it."""
    return StallOut(
        stall_id=stall.stall_id,
        account_id=stall.account_id,
        resource_class=stall.resource_class,
        region=stall.region,
        hours=list(stall.hours),
        sla_tier=stall.sla_tier,
        max_interruptions=stall.max_interruptions,
        network=stall.network,
        description=stall.description,
        updated_at=cst(stall.updated_at),
    )
