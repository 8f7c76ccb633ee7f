"""Rolled contracts in the API's catalogue, and providers' stalls: validation, ownership and
the sellers each contract shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cx_client import ExchangeClient, NotFound, ProblemError

from exchange.domain.catalogue import CHINA_STANDARD_TIME
from tests.conftest import fresh_database
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
LISTINGS = {"CX_LISTINGS": "H100-80G-INT.GZ,TOK-QWEN.YRD", "CX_LISTING_DAYS": 2}


def _rolled(family: str, days: int, hour: int) -> str:
    """The symbol of `hour` o'clock (CST), `days` days after today by the wall clock (which is
    what the embedded log stamps records with)."""
    day = datetime.now(CHINA_STANDARD_TIME) + timedelta(days=days)
    return f"{family}.{day:%Y%m%d}T{hour:02d}"


# Tomorrow and the day after are listed whatever the time of day the test runs at.
INT_TOMORROW = _rolled("H100-80G-INT.GZ", 1, 12)
INT_TOMORROW_NIGHT = _rolled("H100-80G-INT.GZ", 1, 2)
TOKENS = _rolled("TOK-QWEN.YRD", 2, 9)
TOO_FAR = _rolled("H100-80G-INT.GZ", 5, 12)


@pytest.fixture(params=["embedded", "kafka+postgres"])
async def exchange(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RunningExchange]:
    if request.param == "embedded":
        async with running_exchange(settings_for(tmp_path, **LISTINGS)) as running:
            yield running
        return
    kafka = request.getfixturevalue("kafka_bootstrap")
    async with fresh_database(request.getfixturevalue("postgres_url")) as database_url:
        settings = settings_for(tmp_path, kafka=kafka, database_url=database_url, **LISTINGS)
        async with running_exchange(settings) as running:
            yield running


async def _contracts(exchange: RunningExchange) -> dict[str, dict[str, Any]]:
    answer = await exchange.anonymous.get("/v1/contracts")
    assert answer.status_code == 200
    return {c["symbol"]: c for c in answer.json()}


async def test_rolled_contracts_are_listed_trade_and_show_per_standard_prices(
    exchange: RunningExchange,
) -> None:
    buyer = await exchange.as_("buyer-a")
    provider = await exchange.as_("provider-p", "provider")
    cash = {"kind": "cash", "amount": 100_000}
    assert (await buyer.post("/v1/accounts/buyer-a/deposits", json=cash)).status_code == 201
    await settle(exchange.runtime)

    listed = await _contracts(exchange)
    assert {INT_TOMORROW, INT_TOMORROW_NIGHT, TOKENS, "H100-80G.GZ.20271201T00"} <= set(listed)
    assert TOO_FAR not in listed
    assert listed[INT_TOMORROW]["performance_factor"] == "1.0000"
    assert listed[TOKENS]["unit"] == "million-tokens"
    assert listed[TOKENS]["performance_factor"] is None

    capacity = {"kind": "capacity", "symbol": INT_TOMORROW, "quantity": 4}
    deposited = await provider.post("/v1/accounts/provider-p/deposits", json=capacity)
    assert deposited.status_code == 201
    ask = {"symbol": INT_TOMORROW, "side": "sell", "price": 900, "quantity": 4}
    assert (await provider.post("/v1/orders", json=ask)).status_code == 201
    bid = {"symbol": INT_TOMORROW, "side": "buy", "price": 900, "quantity": 1}
    assert (await buyer.post("/v1/orders", json=bid)).status_code == 201
    await settle(exchange.runtime)

    contract = (await exchange.anonymous.get(f"/v1/contracts/{INT_TOMORROW}")).json()
    assert (contract["best_ask"], contract["best_ask_per_std"], contract["last"]) == (900, 900, 900)
    book = await exchange.anonymous.get(f"/v1/contracts/{INT_TOMORROW}/book")
    assert book.json()["asks"] == [[900, 3]]

    too_far = await exchange.anonymous.get(f"/v1/contracts/{TOO_FAR}")
    assert too_far.status_code == 404
    assert too_far.headers["content-type"] == PROBLEM
    # The path's contract: 404, with the code the risk stage refuses a body's contract with.
    assert too_far.json()["type"] == "/problems/unknown_contract"
    assert "is not yet listed: it lists at" in too_far.json()["detail"]
    refused = await buyer.post(
        "/v1/orders", json={"symbol": TOO_FAR, "side": "buy", "price": 900, "quantity": 1}
    )
    assert refused.status_code == 422
    assert refused.json()["type"] == "/problems/unknown_contract"
    assert "not yet listed" in refused.json()["detail"]

    # Replay and audit use the same catalogue, rolled listings included.
    await settle(exchange.runtime)
    operator = await exchange.operator()
    audited = (await operator.get("/v1/admin/audit")).json()
    assert audited["discrepancies"] == []
    assert audited["trades"] == 1
    replayed = (await operator.get("/v1/admin/replay", params={"contract": INT_TOMORROW})).json()
    assert replayed["books"][INT_TOMORROW]["asks"] == [[900, 3]]


async def test_every_contract_shows_its_state_in_words_chinese_first(
    exchange: RunningExchange, tmp_path: Path
) -> None:
    """The static contracts, which matching lists before it reads the log and announces no
    state for, show the state they were listed in (they showed null), rolled ones theirs, and
    each a halt puts in its new one, all worded Chinese first."""
    listed = await _contracts(exchange)
    assert {symbol: c["state"] for symbol, c in listed.items()} == dict.fromkeys(
        listed, "continuous"
    )
    states = {symbol: (c["state"], c.get("state_name")) for symbol, c in listed.items()}
    trading = ("continuous", "交易中 trading")
    assert states["H100-80G.GZ.20271201T00"] == trading
    assert states[INT_TOMORROW] == trading
    assert set(states.values()) == {trading}, states
    operator = await exchange.operator()
    halted = await operator.post(
        "/v1/admin/contracts/H100-80G.GZ.20271201T00/halt", json={"reason": "drill"}
    )
    assert halted.status_code == 200, halted.text
    await settle(exchange.runtime)
    one = (await exchange.anonymous.get("/v1/contracts/H100-80G.GZ.20271201T00")).json()
    assert (one["state"], one["state_name"]) == ("halted", "已暂停 halted")


async def test_static_contracts_of_a_market_with_opening_calls_show_pre_open(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path, CX_PRE_OPEN=True)) as exchange:
        listed = await _contracts(exchange)
        assert {(c["state"], c.get("state_name")) for c in listed.values()} == {
            ("pre_open", "未开盘 pre-open")
        }


STALL = {
    "resource_class": "H100-80G-INT",
    "region": "GZ",
    "hours": [0, 1, 2, 3],
    "sla_tier": "premium",
    "max_interruptions": 2,
    "network": "roce",
    "description": "night capacity, recallable at 15 minutes' notice",
}


async def test_providers_keep_their_own_stalls_and_contracts_show_their_sellers(
    exchange: RunningExchange,
) -> None:
    provider = await exchange.as_("idc-gz", "provider")
    rival = await exchange.as_("idc-rival", "provider")
    buyer = await exchange.as_("buyer-a")
    cash = {"kind": "cash", "amount": 1}
    assert (await buyer.post("/v1/accounts/buyer-a/deposits", json=cash)).status_code == 201
    await settle(exchange.runtime)

    created = await provider.put("/v1/stalls/gz-night", json=STALL)
    assert created.status_code == 201
    assert created.json()["account_id"] == "idc-gz"
    changed = await provider.put("/v1/stalls/gz-night", json={**STALL, "hours": [3, 2, 1, 2]})
    assert changed.status_code == 200
    assert changed.json()["hours"] == [1, 2, 3]
    firm = {**STALL, "resource_class": "TOK-QWEN", "region": "YRD", "max_interruptions": 0}
    assert (await rival.put("/v1/stalls/qwen", json={**firm, "hours": [9]})).status_code == 201

    # A stall id is its provider's own: the rival's "gz-night" is a stall of its own, and
    # taking it down leaves idc-gz's.
    theirs = await rival.put("/v1/stalls/gz-night", json={**STALL, "hours": [7]})
    assert theirs.status_code == 201
    assert (theirs.json()["account_id"], theirs.json()["hours"]) == ("idc-rival", [7])
    assert (await rival.delete("/v1/stalls/gz-night")).status_code == 204
    assert (await provider.put(f"/v1/stalls/{'x' * 65}", json=STALL)).status_code == 422
    not_a_provider = await buyer.put("/v1/stalls/mine", json=STALL)
    assert not_a_provider.status_code == 403
    assert (await exchange.anonymous.put("/v1/stalls/x", json=STALL)).status_code == 401

    everything = (await exchange.anonymous.get("/v1/stalls")).json()
    assert [s["stall_id"] for s in everything] == ["gz-night", "qwen"]
    tokens_only = await exchange.anonymous.get("/v1/stalls", params={"resource_class": "TOK-QWEN"})
    assert [s["stall_id"] for s in tokens_only.json()] == ["qwen"]
    in_gz = await exchange.anonymous.get("/v1/stalls", params={"region": "GZ"})
    assert [s["stall_id"] for s in in_gz.json()] == ["gz-night"]

    listed = await _contracts(exchange)
    assert listed[INT_TOMORROW_NIGHT]["sellers"] == ["idc-gz"]
    assert listed[INT_TOMORROW]["sellers"] == [], "the stall serves 01:00 to 03:00 only"
    assert listed[TOKENS]["sellers"] == ["idc-rival"]
    firm_night = listed["H100-80G.GZ.20271201T01"]
    assert firm_night["sellers"] == [], "an interruptible stall does not sell firm capacity"
    one = (await exchange.anonymous.get(f"/v1/contracts/{INT_TOMORROW_NIGHT}")).json()
    assert one["sellers"] == ["idc-gz"]

    assert (await rival.delete("/v1/stalls/gz-night")).status_code == 404
    assert (await provider.delete("/v1/stalls/gz-night")).status_code == 204
    gone = await provider.delete("/v1/stalls/gz-night")
    assert gone.status_code == 404
    assert gone.json()["type"] == "/problems/unknown-stall"
    assert (await _contracts(exchange))[INT_TOMORROW_NIGHT]["sellers"] == []


@pytest.mark.parametrize(
    ("change", "kind", "detail"),
    [
        ({"resource_class": "B200"}, "unknown-resource-class", "unknown resource class 'B200'"),
        ({"region": "XJ"}, "unknown-region", "unknown region 'XJ'"),
        (
            {"resource_class": "H100-80G"},
            "not-interruptible",
            "H100-80G is not an interruptible class",
        ),
        ({"hours": [24]}, "invalid-request", "hours.0"),
        ({"hours": []}, "invalid-request", "hours"),
        ({"sla_tier": "gold"}, "invalid-request", "sla_tier"),
        ({"max_interruptions": -1}, "invalid-request", "max_interruptions"),
    ],
    ids=["class", "region", "firm-recalls", "hour-24", "no-hours", "tier", "negative"],
)
async def test_a_stall_outside_the_standard_specification_is_refused(
    tmp_path: Path, change: dict[str, Any], kind: str, detail: str
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        provider = await exchange.as_("idc-gz", "provider")

        refused = await provider.put("/v1/stalls/s-1", json={**STALL, **change})

        assert refused.status_code == 422
        assert refused.headers["content-type"] == PROBLEM
        assert refused.json()["type"] == f"/problems/{kind}"
        assert detail in refused.json()["detail"]
        assert (await exchange.anonymous.get("/v1/stalls")).json() == []


async def test_the_client_keeps_stalls_and_reads_sellers(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path, **LISTINGS)) as exchange:
        key = await exchange.key_for("idc-gz", "provider")
        async with ExchangeClient(exchange.base_url, key) as provider:
            await provider.deposit_cash(1)
            await settle(exchange.runtime)

            stall = await provider.put_stall(
                "gz-night", "H100-80G-INT", "GZ", [2, 1], max_interruptions=1, network="roce"
            )
            assert (stall.account_id, stall.hours) == ("idc-gz", [1, 2])
            assert [s.stall_id for s in await provider.stalls(region="GZ")] == ["gz-night"]
            assert (await provider.contract(INT_TOMORROW_NIGHT)).sellers == ["idc-gz"]
            with pytest.raises(ProblemError) as refused:
                await provider.put_stall("bad", "H100-80G", "GZ", [1], max_interruptions=1)
            assert refused.value.code == "not-interruptible"
            await provider.delete_stall("gz-night")
            with pytest.raises(NotFound):
                await provider.delete_stall("gz-night")
            assert await provider.stalls() == []


async def test_a_new_exchange_lists_todays_hours_before_any_record(tmp_path: Path) -> None:
    """Before the log has a record, the catalogue is read at the wall clock: a fresh exchange
    lists tomorrow's hours (it listed 1970's), and takes a deposit for one of them at once."""
    async with running_exchange(settings_for(tmp_path, **LISTINGS)) as exchange:
        listed = await _contracts(exchange)
        assert INT_TOMORROW in listed, sorted(listed)[:5]
        assert not [symbol for symbol in listed if ".1970" in symbol]
        provider = await exchange.as_("p-fresh", "provider")
        deposit = {"kind": "capacity", "symbol": INT_TOMORROW, "quantity": 1}
        answer = await provider.post("/v1/accounts/p-fresh/deposits", json=deposit)
        assert answer.status_code in (201, 202), answer.text
