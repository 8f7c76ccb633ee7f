"""Request budgets per key: 429 with Retry-After, and the Python client waiting it out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import websockets
from cx_client import ExchangeClient, RateLimited

from tests.e2e.harness import running_exchange, settings_for

pytestmark = pytest.mark.e2e


async def test_a_key_over_its_budget_gets_429_with_retry_after(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CX_API_RATE=1, CX_API_BURST=3)
    async with running_exchange(settings) as exchange:
        busy = await exchange.as_("busy")
        calm = await exchange.as_("calm")
        answers = [await busy.get("/v1/me") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        limited = answers[-1]
        assert limited.headers["content-type"] == "application/problem+json"
        assert limited.json()["type"] == "/problems/rate-limited"
        assert limited.headers["retry-after"] == "1"
        assert (await calm.get("/v1/me")).status_code == 200, "budgets are per key"
        await asyncio.sleep(float(limited.headers["retry-after"]))
        assert (await busy.get("/v1/me")).status_code == 200


async def test_anonymous_callers_are_budgeted_per_address(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CX_API_RATE=1, CX_API_BURST=2)
    async with running_exchange(settings) as exchange:
        await asyncio.sleep(10 / 5)  # the harness's start-up polls used some of the budget
        codes = [(await exchange.anonymous.get("/v1/contracts")).status_code for _ in range(14)]
        assert codes[:10] == [200] * 10, "a key's burst times five"
        assert 429 in codes[10:]
        # A stream connection is a request too.
        url = exchange.base_url.replace("http", "ws") + "/v1/stream"
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(url):
                pass


async def test_the_client_waits_out_429s_or_raises_them(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CX_API_RATE=2, CX_API_BURST=2)
    async with running_exchange(settings) as exchange:
        key = await exchange.key_for("patient")
        async with ExchangeClient(exchange.base_url, key) as patient:
            started = asyncio.get_running_loop().time()
            for _ in range(4):
                assert (await patient.me()).account_id == "patient"
                patient._me = None  # ask the server every time
            assert asyncio.get_running_loop().time() - started >= 0.9
        async with ExchangeClient(exchange.base_url, key, rate_limit_retries=0) as hasty:
            await asyncio.sleep(1.1)  # a full bucket again: 2 requests at once
            for _ in range(2):
                await hasty.health()
            with pytest.raises(RateLimited) as raised:
                await hasty.health()
            assert raised.value.code == "rate-limited"
            assert raised.value.retry_after >= 1
