"""The services the routers share: sending a command and waiting for its decision, and the
pipeline's progress as health and status report it. (Idempotent requests are
`api.idempotency.Idempotent`; needs are `api.needs.NeedService`.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from api.marketdata import MarketData, Outcome
from api.models import StageProgress, StalledStage
from api.ports import Runtime
from exchange.domain.catalogue import CHINA_STANDARD_TIME
from exchange.domain.messages import Command
from exchange.domain.operators import Signed
from settlement.pipeline_status import (
    PartitionProgress,
    PipelineStatus,
    StalledPartition,
    StatusMonitor,
)

OUTCOME_TIMEOUT_S = 5.0
"""How long a request waits for the exchange's decision before it answers `pending`."""


class Commands:
    """Sends commands through the log and waits briefly for the exchange's decision."""

    def __init__(self, runtime: Runtime, market: MarketData) -> None:
        self.runtime = runtime
        self.market = market

    async def submit_and_wait(
        self, command: Command, key: str, answers: Callable[[Outcome], bool] | None = None
    ) -> Outcome | None:
        """Append a command and wait up to OUTCOME_TIMEOUT_S for the decision the market data
        fold sees under `key` (`api.marketdata.order_key`, ...); None if it did not come. With
        `answers`, only an outcome it accepts answers (`MarketData.expect`)."""
        future = self.market.expect(key, answers)
        try:
            await self.runtime.submit(command)
            return await asyncio.wait_for(asyncio.shield(future), OUTCOME_TIMEOUT_S)
        except TimeoutError:
            return None
        finally:
            self.market.forget(key, future)

    def sign(self, command: Signed) -> Signed:
        """An operator's or programme administrator's command under the API's seal, which the
        risk stage verifies."""
        return self.runtime.seal.sign(command)


class PipelineHealth:
    """Every stage's progress and stall, read by `settlement.pipeline_status.StatusMonitor`."""

    def __init__(self, monitor: StatusMonitor) -> None:
        self.monitor = monitor
        self._of: PipelineStatus | None = None
        self._stages: list[dict[str, Any]] = []
        self._stalls: list[dict[str, Any]] = []

    async def status(self) -> PipelineStatus:
        """The latest reading."""
        return await self.monitor.status()

    async def reading(self) -> tuple[PipelineStatus, list[dict[str, Any]], list[dict[str, Any]]]:
        """The latest reading with its stages and stalls JSON-ready, converted once per
        reading: load balancers ask for health far more often than it changes."""
        pipeline = await self.monitor.status()
        if self._of is not pipeline:
            self._stages = [stage_out(p).model_dump() for p in pipeline.partitions]
            self._stalls = [stall_out(s).model_dump() for s in pipeline.stalls]
            self._of = pipeline
        return pipeline, self._stages, self._stalls


def iso(ms: int) -> str:
    """A time in ms as ISO 8601 in China Standard Time (+08:00), to the millisecond."""
    return datetime.fromtimestamp(ms / 1000, CHINA_STANDARD_TIME).isoformat(timespec="milliseconds")


def cst(moment: datetime, timespec: str = "auto") -> str:
    """A stored time as ISO 8601 in China Standard Time (+08:00), to `timespec` (as
    `datetime.isoformat`'s). The stores keep UTC; a time read back without its zone (SQLite)
    is UTC, not the server's local time."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA_STANDARD_TIME).isoformat(timespec=timespec)


def stage_out(progress: PartitionProgress) -> StageProgress:
    """A stage's progress on one partition as the API shows it."""
    return StageProgress(
        stage=progress.stage,
        topic=progress.topic,
        partition=progress.partition,
        end_offset=progress.end_offset,
        offset=progress.offset,
        lag=progress.lag,
        progressing=progress.progressing,
        idle_seconds=progress.idle_ms / 1000,
    )


def stall_out(stall: StalledPartition) -> StalledStage:
    """A stalled partition as the API shows it."""
    return StalledStage(
        stage=stall.stage,
        topic=stall.topic,
        partition=stall.partition,
        kind=stall.kind,
        since=iso(stall.since_ms),
        lag=stall.lag,
        detail=stall.detail,
        offset=stall.offset,
        event_id=stall.event_id,
        event_type=stall.event_type,
        attempts=stall.attempts,
        set_aside_by=stall.set_aside_by,
    )
