"""An operator halting and resuming contracts that collect orders for the day-ahead auction,
through the API on the log's clock: a resume of a contract that is not halted is refused
`not_halted` and changes nothing; a halted contract is kept out of the auction, and resumed
before the gate it collects for it again; the whole market's halt includes them; every answer
says what matching did (the contract's state, or the refusal); and the stages, settlement's
replica and `cx replay --verify` reproduce all of it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from cx.runtime import ExchangeRuntime
from cx.settings import Settings
from exchange.domain.messages import exchange_order_id
from tests.e2e.harness import (
    RunningExchange,
    assert_stages_match_replay,
    running_exchange,
    settle,
)
from tests.e2e.test_day_ahead_api import (
    BEFORE_GATE_MS,
    GATE_MS,
    GZ,
    MINUTE_MS,
    NM,
    _at,
    _cleared,
    _fund,
    _offer,
    _settings,
)
from tests.e2e.test_day_ahead_api import ROOT as PROJECT_ROOT

OPEN_GZ, HALTED_GZ = GZ
"""GZ's 09:00 hour is halted and resumed before the gate; its 10:00 hour stays halted."""


async def _state(exchange: RunningExchange, symbol: str) -> str:
    answer = await exchange.anonymous.get(f"/v1/contracts/{symbol}")
    assert answer.status_code == 200, answer.text
    state: str = answer.json()["state"]
    return state


async def _control(
    operator: httpx.AsyncClient, symbol: str, action: str, status: int = 200
) -> dict[str, Any]:
    answer = await operator.post(
        f"/v1/admin/contracts/{symbol}/{action}", json={"reason": f"{action} drill"}
    )
    assert answer.status_code == status, answer.text
    document: dict[str, Any] = answer.json()
    return document


async def _trades(exchange: RunningExchange, symbol: str) -> list[tuple[int, int]]:
    answer = await exchange.anonymous.get(f"/v1/contracts/{symbol}/trades")
    assert answer.status_code == 200, answer.text
    return sorted((t["price"], t["quantity"]) for t in answer.json())


async def _bid(lab: httpx.AsyncClient, symbol: str, client_order_id: str) -> str:
    bid = {"symbol": symbol, "side": "buy", "price": 1600, "quantity": 2, "day_ahead": True,
           "client_order_id": client_order_id}  # fmt: skip
    answer = await lab.post("/v1/orders", json=bid)
    assert answer.status_code == 201, answer.text
    return exchange_order_id("lab", client_order_id)


async def test_halts_and_resumes_of_contracts_waiting_for_the_day_ahead_auction(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    now = [BEFORE_GATE_MS]
    async with running_exchange(settings, clock_ms=lambda: now[0]) as exchange:
        await _at(exchange, BEFORE_GATE_MS)
        # Each hour's seller offers more than is bid, so the auction's price is its ask.
        await _offer(exchange, "p-gz", GZ, 1500, 3)
        await _offer(exchange, "p-nm", NM[:1], 1400, 3)
        lab = await _fund(exchange, "lab", 100_000)
        held_bid = await _bid(lab, HALTED_GZ, "held")
        for symbol, name in ((OPEN_GZ, "open"), (NM[0], "nm")):
            await _bid(lab, symbol, name)
        await settle(exchange.runtime)
        operator = await exchange.operator()
        assert {await _state(exchange, s) for s in (*GZ, NM[0])} == {"pre_open"}

        # A resume of a contract that is not halted is refused and opens nothing: its crossed
        # orders still wait for the auction.
        refused = await _control(operator, OPEN_GZ, "resume", 422)
        assert refused["type"] == "/problems/not_halted", refused
        assert await _state(exchange, OPEN_GZ) == "pre_open"
        assert await _trades(exchange, OPEN_GZ) == []

        # The whole market's halt takes in the contracts collecting for the auction, and its
        # resume puts them back to collecting.
        halted = await operator.post("/v1/admin/market/halt", json={"reason": "drill"})
        assert halted.status_code == 200, halted.text
        await settle(exchange.runtime)
        assert {await _state(exchange, s) for s in (*GZ, NM[0])} == {"halted"}
        resumed = await operator.post("/v1/admin/market/resume", json={"reason": "drill over"})
        assert resumed.status_code == 200, resumed.text
        await settle(exchange.runtime)
        assert {await _state(exchange, s) for s in (*GZ, NM[0])} == {"pre_open"}

        # Halted and resumed before the gate, a contract collects for the auction again; one
        # still halted at the gate is kept out of it. Each answer says what matching did.
        for symbol, action, state in (
            (OPEN_GZ, "halt", "halted"),
            (OPEN_GZ, "resume", "pre_open"),
            (HALTED_GZ, "halt", "halted"),
        ):
            answer = await _control(operator, symbol, action)
            assert (answer["status"], answer["state"]) == ("applied", state), answer
        again = await _control(operator, HALTED_GZ, "halt", 422)
        assert again["type"] == "/problems/not_continuous", again

        now[0] = GATE_MS + MINUTE_MS
        auction = await _cleared(exchange)
        await settle(exchange.runtime)
        prices = {
            c["symbol"]: (c["price"], c["volume"])
            for region in auction["regions"]
            for hour in region["hours"]
            for c in hour["contracts"]
        }
        assert prices[OPEN_GZ] == (1500, 2)
        assert prices[NM[0]] == (1400, 2)
        assert HALTED_GZ not in prices or prices[HALTED_GZ][1] == 0, prices
        assert await _state(exchange, OPEN_GZ) == "continuous"
        assert await _state(exchange, HALTED_GZ) == "halted"
        assert await _trades(exchange, HALTED_GZ) == []
        order = (await lab.get(f"/v1/orders/{held_bid}")).json()
        assert (order["status"], order["filled"]) == ("open", 0), order

        # Resumed after the auction, it opens through a call auction of its own: the bid
        # (1600) and the ask (1500) meet at the ask, nearer the reference.
        opened = await _control(operator, HALTED_GZ, "resume")
        assert (opened["status"], opened["state"]) == ("applied", "continuous"), opened
        await settle(exchange.runtime)
        assert await _trades(exchange, HALTED_GZ) == [(1500, 2)]
        # lab paid 1500 a card-hour for 2 in each GZ hour and 1400 for 2 in Inner Mongolia.
        cash = (await lab.get("/v1/accounts/lab")).json()["cash"]
        assert cash == {"available": 100_000 - 2 * 1500 * 2 - 2 * 1400, "held": 0}, cash
    await _replays_agree(settings)


async def _replays_agree(settings: Settings) -> None:
    """Risk and matching replayed from their topics equal what the stages stored, and `cx
    replay --verify` reproduces every hash settlement's replica recorded."""
    runtime = await ExchangeRuntime.open(settings)
    try:
        await assert_stages_match_replay(runtime, settings.market_partitions)
    finally:
        await runtime.close()
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env.update(
        CX_DATA_DIR=str(settings.data_dir),
        CX_FEES=settings.fees,
        CX_MARKET_PARTITIONS=str(settings.market_partitions),
        CX_DAY_AHEAD_GATE="12:00",
        CX_LISTINGS="H100-80G.GZ,H100-80G.NMG",
        CX_LISTING_DAYS="1",
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cx.cli", "replay", "--verify", "--full", "--json"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    verified = json.loads(done.stdout)["verified"]
    assert verified["checkpoints"] > 0, verified
    assert verified["mismatches"] == [], verified
