"""Request budgets per key: 429 with Retry-After, and the Python client waiting it out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

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


async def _answer(socket: websockets.ClientConnection, request: dict[str, str]) -> dict[str, Any]:
    await socket.send(json.dumps(request))
    answer: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), 5))
    return answer


async def test_websocket_auth_is_charged_like_a_request_with_the_key(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CX_API_RATE=1, CX_API_BURST=3)
    async with running_exchange(settings) as exchange:
        key = await exchange.key_for("streamer")
        url = exchange.base_url.replace("http", "ws") + "/v1/stream"
        async with websockets.connect(url) as socket:
            answers = [await _answer(socket, {"op": "auth", "key": key}) for _ in range(4)]
        assert [a["type"] for a in answers] == ["authenticated"] * 3 + ["error"]
        assert (answers[-1]["code"], answers[-1]["retry_after"]) == ("rate-limited", 1)
        # The same budget as the key's REST calls.
        headers = {"Authorization": f"Bearer {key}"}
        assert (await exchange.anonymous.get("/v1/me", headers=headers)).status_code == 429


async def test_failed_keys_are_charged_to_the_address_and_then_not_checked_at_all(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, CX_API_RATE=1, CX_API_BURST=3)
    async with running_exchange(settings) as exchange:
        good = await exchange.key_for("owner")
        key_id = good.split("_")[1]
        guesses = [f"cx_{key_id}_{'A' * 43}", f"cx_{'0' * 12}_{'B' * 43}", "cx_nonsense"]
        url = exchange.base_url.replace("http", "ws") + "/v1/stream"
        async with websockets.connect(url) as socket:
            for guess in guesses:
                refused = await _answer(socket, {"op": "auth", "key": guess})
                assert (refused["type"], refused["code"]) == ("error", "unauthorized")
            # The address's failures are spent: no key is checked now, the good one neither,
            # so the answer tells a guesser nothing.
            for key in (guesses[0], good):
                refused = await _answer(socket, {"op": "auth", "key": key})
                assert (refused["type"], refused["code"]) == ("error", "rate-limited")
            for key in (guesses[0], good):
                rest = await exchange.anonymous.get(
                    "/v1/me", headers={"Authorization": f"Bearer {key}"}
                )
                assert rest.status_code == 429, rest.text
                assert rest.json()["type"] == "/problems/rate-limited"
            with pytest.raises(websockets.exceptions.InvalidStatus):
                async with websockets.connect(
                    url, additional_headers={"Authorization": f"Bearer {good}"}
                ):
                    pass
            await asyncio.sleep(1.1)  # one failure's worth refilled
            accepted = await _answer(socket, {"op": "auth", "key": good})
            assert (accepted["type"], accepted["account_id"]) == ("authenticated", "owner")
