"""Runs the whole-system model (`tests/system/machine.py`) with a budget, and says what it ran."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import run_state_machine_as_test

from cx.settings import Settings
from settlement.scratch import scratch_database
from tests.e2e.harness import settings_for
from tests.system.live import Prepare
from tests.system.machine import SETTINGS, ExchangeMachine

DATABASE = Path(__file__).resolve().parents[2] / ".hypothesis" / "system"
"""Found examples are kept here locally, and tried first on the next run."""


@dataclass
class Ran:
    """What a run of the model did."""

    examples: int
    steps: int
    seconds: float
    statuses: dict[int, int]
    events: dict[str, int]
    edge: dict[str, int]

    def __str__(self) -> str:
        answers = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        reached = ", ".join(f"{self.events.get(kind, 0)} {kind}" for kind in REACHED)
        at_edge = ", ".join(f"{self.edge.get(kind, 0)} {kind}" for kind in REACHED_AT_EDGE)
        return (
            f"model: {self.examples} examples, {self.steps} steps checked in "
            f"{self.seconds:.0f}s; answers by status {{{answers}}}; stored {reached}; "
            f"at the API edge {at_edge}"
        )

    def never_reached(self, events: Iterable[str], at_edge: Iterable[str] = ()) -> list[str]:
        """Which of these stored event types and API-edge outcomes no example reached."""
        return [kind for kind in events if not self.events.get(kind)] + [
            kind for kind in at_edge if not self.edge.get(kind)
        ]


REACHED = (
    "TradeExecuted",
    "OrderAmended",
    "OrderReduced",
    "OrderAmended of a resale",
    "OrderReduced of a resale",
    "AuctionCompleted",
    "DayAheadAuctionCompleted",
    "BlockAccepted",
    "FundsWithdrawn",
    "CapacityWithdrawn",
    "EnterpriseRegistered",
    "GrantApplied",
    "ApplicationInfoRequested",
    "ApplicationSupplemented",
    "ApplicationRejected",
    "GrantApproved",
    "VoucherPolicySet",
    "DeliveryObligation",
    "MeteringReported",
    "DeliveryDisputed",
    "DeliverySettled",
    "CapacityRecalled",
    "ListingChanged",
    "ConcessionGranted",
    "FeeConceded",
    "ProgrammeCreated",
    "DiscountPoolFunded",
    "PlatformDiscounted",
    "StripCascaded",
    "BundleDrawn",
)
"""Events that show an example got somewhere: every command family's stored outcome (trades,
amends, self-trade prevention, both of resales too, auctions, blocks, cash and capacity,
listings, concessions, vouchers (registrations, applications and their steps, grants, the
policy), and deliveries from obligation to metering, dispute, recall and settlement, strips'
cascades and bundles' draw-downs)."""

REACHED_AT_EDGE = (
    "need placed",
    "need standing",
    "need withdrawn",
    "stall set up",
    "stall taken down",
    "block with a voucher",
    "sell block bonded",
    "exclusive group",
    "need bought a strip",
    "strip cascaded with holders",
)
"""Outcomes kept at the API edge, not as events: needs planned, standing and withdrawn, stalls,
blocks accepted with a voucher, providers' sell blocks accepted (with their bond),
exclusive groups accepted for an intraday auction, needs placed as a strip order, and strips
that cascaded with holders (whose positions the model checks moved)."""


def base_settings(
    data_dir: Path, kafka: str | None = None, database: str | None = None
) -> Settings:
    """The market the model trades on (`SETTINGS`), embedded or on Kafka and PostgreSQL."""
    return settings_for(data_dir, kafka=kafka, database_url=database, **SETTINGS)


def fresh_postgres(server_url: str) -> Prepare:
    """A new scratch database on the server for each example, dropped after it."""

    @asynccontextmanager
    async def prepare(settings: Settings) -> AsyncIterator[Settings]:
        async with scratch_database(server_url, "model") as (url, _):
            yield settings.model_copy(update={"database_url": url})

    return prepare


def run_model(
    base: Settings,
    examples: int,
    steps: int,
    *,
    prepare: Prepare | None = None,
    derandomize: bool = True,
    shrink: bool = True,
    auctions: bool = True,
) -> Ran:
    """Run `examples` examples of up to `steps` steps each (with `auctions`, some on an
    exchange running the day-ahead and intraday auctions); raises the shrunk failure.

    Derandomized, the same examples every run (CI); otherwise random, with the examples
    that failed before kept in `DATABASE` and tried first.
    """
    ExchangeMachine.base_settings = base
    ExchangeMachine.prepare = prepare
    ExchangeMachine.with_auctions = auctions
    ExchangeMachine.examples_run = 0
    ExchangeMachine.steps_run = 0
    ExchangeMachine.statuses.clear()
    ExchangeMachine.events_seen.clear()
    ExchangeMachine.edge_seen.clear()
    started = time.monotonic()
    run_state_machine_as_test(
        ExchangeMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=derandomize,
            database=None if derandomize else DirectoryBasedExampleDatabase(DATABASE),
            phases=tuple(Phase) if shrink else tuple(p for p in Phase if p is not Phase.shrink),
            suppress_health_check=list(HealthCheck),
            print_blob=True,
            report_multiple_bugs=False,
        ),
    )
    return Ran(
        ExchangeMachine.examples_run,
        ExchangeMachine.steps_run,
        time.monotonic() - started,
        dict(ExchangeMachine.statuses),
        dict(ExchangeMachine.events_seen),
        dict(ExchangeMachine.edge_seen),
    )
