"""`settle` and the harness's replay check: which state a live hash read at settle is.

Settle means the pipeline has consumed everything sent so far, not that nothing more will be
sent: the exchange's ticker sends a tick to each market partition that lists a contract every
CX_TICK_SECONDS, and a tick moves matching's clock, which its state hash covers. A tick between
settle and the clean stop made the broker-loss failover test fail about once in six runs, on
the matching hashes of partitions 0 and 1 (the two that list contracts) while risk's and
partition 2's matched. On the embedded log: with ticks, that same difference appears and the
replay check names the input that came after settle; without them, the state read at settle
is the one a replay ends in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from cx.runtime import ExchangeRuntime
from cx.settings import Settings
from cx.ticker import TICKER_ID, tick_symbols
from exchange.domain.messages import ControlMarket
from exchange.pipeline import StageRunner
from tests.e2e.harness import (
    InputEnds,
    assert_stages_match_replay,
    running_exchange,
    settings_for,
    settle,
)

pytestmark = pytest.mark.e2e

PARTITIONS = 3
STAGES = ("risk", "matching")


def _live_hashes(runtime: ExchangeRuntime) -> dict[str, dict[int, str]]:
    hashes: dict[str, dict[int, str]] = {}
    for name in STAGES:
        runner = cast(StageRunner[Any], runtime.running[name])
        hashes[name] = {p: runner.partition_hash(p) for p in range(PARTITIONS)}
    return hashes


async def _replay(settings: Settings, settled: InputEnds | None) -> dict[str, dict[int, str]]:
    runtime = await ExchangeRuntime.open(settings)
    try:
        return await assert_stages_match_replay(runtime, PARTITIONS, settled)
    finally:
        await runtime.close()


async def test_a_tick_after_settle_changes_matching_and_is_named(tmp_path: Path) -> None:
    # The ticker's background ticks off; the test sends one round of them itself, as the ticker
    # does, after settle: when the 30 s ticker fell in that window, as in the failover test.
    settings = settings_for(tmp_path, CX_TICK_SECONDS=86_400)
    async with running_exchange(settings) as exchange:
        runtime = exchange.runtime
        symbols = tick_symbols(runtime, runtime.clock_ms())
        ticked = {runtime.topics.market_partition(symbol) for symbol in symbols}
        # A partition that lists nothing gets no tick, so its hash stays as partition 2's did.
        assert ticked, symbols
        assert ticked != set(range(PARTITIONS)), ticked
        settled = await settle(runtime)
        live = _live_hashes(runtime)
        for symbol in symbols:
            await runtime.submit(ControlMarket(operator_id=TICKER_ID, action="tick", symbol=symbol))
        after = await settle(runtime)
        orders = runtime.topics.orders
        assert {p for p in range(PARTITIONS) if after[orders][p] > settled[orders][p]} == ticked

    replayed = await _replay(settings, None)
    assert replayed["risk"] == live["risk"]
    changed = {p for p in range(PARTITIONS) if replayed["matching"][p] != live["matching"][p]}
    assert changed == ticked
    with pytest.raises(AssertionError, match=r"input record\(s\) came after settle"):
        await _replay(settings, settled)
    assert await _replay(settings, after) == replayed


async def test_without_ticks_the_state_read_at_settle_is_the_one_replayed(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, CX_TICK_SECONDS=86_400)
    async with running_exchange(settings) as exchange:
        settled = await settle(exchange.runtime)
        live = _live_hashes(exchange.runtime)
        # Nothing else sends the exchange input of its own accord.
        assert await settle(exchange.runtime) == settled

    assert await _replay(settings, settled) == live
