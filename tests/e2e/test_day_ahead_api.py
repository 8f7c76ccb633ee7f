"""The day-ahead auction through the API: orders, blocks, exclusive groups and needs collected
until the gate, cleared once the log's clock passes it, and read back as the auction's prices
and each account's results; every bad bid refused with its reason, changing nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from exchange.domain.catalogue import CHINA_STANDARD_TIME
from exchange.domain.messages import exchange_order_id
from tests.e2e.harness import RunningExchange, eventually, running_exchange, settings_for, settle

ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000
MINUTE_MS = 60_000


def _delivery_day() -> datetime:
    """A delivery day two days after today (CST): its gate, at noon the day before, is ahead
    of the wall clock, so the needs' deadlines in it are too."""
    today = datetime.now(CHINA_STANDARD_TIME).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=3)


DAY = _delivery_day()
DATE = DAY.date().isoformat()
GATE_MS = int((DAY - timedelta(hours=12)).timestamp() * 1000)
BEFORE_GATE_MS = GATE_MS - 2 * HOUR_MS


def _symbol(region: str, hour: int, day: datetime = DAY) -> str:
    return f"H100-80G.{region}.{day:%Y%m%d}T{hour:02d}"


GZ = [_symbol("GZ", 9), _symbol("GZ", 10)]
NM = [_symbol("NMG", 9), _symbol("NMG", 10)]


def _at_hour(hour: int) -> int:
    return int((DAY + timedelta(hours=hour)).timestamp() * 1000)


def _settings(tmp_path: Path, **overrides: Any) -> Any:
    values = {
        "CX_DAY_AHEAD_GATE": "12:00",
        "CX_LISTINGS": "H100-80G.GZ,H100-80G.NMG",
        "CX_LISTING_DAYS": 1,
        "CX_TICK_SECONDS": 0.2,
        **overrides,
    }
    return settings_for(tmp_path, **values)


async def _fund(exchange: RunningExchange, account: str, amount: int) -> httpx.AsyncClient:
    client = await exchange.as_(account)
    deposit = {"kind": "cash", "amount": amount}
    answer = await client.post(f"/v1/accounts/{account}/deposits", json=deposit)
    assert answer.status_code == 201, answer.text
    return client


async def _offer(
    exchange: RunningExchange, provider: str, symbols: list[str], price: int, quantity: int
) -> httpx.AsyncClient:
    """Capacity deposited and offered in the day-ahead auction, hour by hour."""
    client = await exchange.as_(provider, "provider")
    for symbol in symbols:
        capacity = {"kind": "capacity", "symbol": symbol, "quantity": 10}
        answer = await client.post(f"/v1/accounts/{provider}/deposits", json=capacity)
        assert answer.status_code == 201, answer.text
        ask = {"symbol": symbol, "side": "sell", "price": price, "quantity": quantity,
               "day_ahead": True}  # fmt: skip
        answer = await client.post("/v1/orders", json=ask)
        assert answer.status_code == 201, answer.text
    return client


async def _cleared(exchange: RunningExchange) -> dict[str, Any]:
    async def cleared() -> dict[str, Any] | None:
        document: dict[str, Any] = (await exchange.anonymous.get(f"/v1/day-ahead/{DATE}")).json()
        return document if document["status"] == "cleared" else None

    result: dict[str, Any] = await eventually(cleared, "the day-ahead auction to clear", 60.0)
    return result


async def _at(exchange: RunningExchange, ms: int) -> None:
    """Wait until the API has seen the log's clock reach `ms` (ticks carry it)."""

    async def reached() -> bool:
        return exchange.market.now_ms >= ms

    await eventually(reached, "the API to see the log's time")


async def _cx(exchange: RunningExchange, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`cx day-ahead ...` against the running exchange, in a process of its own."""
    command = [sys.executable, "-m", "cx.cli", "day-ahead", "--url", exchange.base_url, *args]
    env = {**os.environ, "CX_API_KEY": key}
    return await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def _refused(answer: httpx.Response, kind: str, says: str) -> None:
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["type"] == f"/problems/{kind}", problem
    assert says in problem["detail"], problem


async def test_day_ahead_bids_clear_at_the_gate_and_each_account_reads_its_results(
    tmp_path: Path,
) -> None:
    now = [BEFORE_GATE_MS]
    async with running_exchange(_settings(tmp_path), clock_ms=lambda: now[0]) as exchange:
        await _at(exchange, BEFORE_GATE_MS)
        await _offer(exchange, "p-gz", GZ, 1500, 5)
        await _offer(exchange, "p-nm", NM, 1400, 5)
        lab = await _fund(exchange, "lab", 100_000)
        block = {"symbols": GZ, "side": "buy", "price": 1600, "quantity": 2, "day_ahead": True}
        placed = await lab.post("/v1/block-orders", json=block)
        assert placed.status_code == 201, placed.text
        block_id = placed.json()["order_id"]
        group = {"alternatives": [GZ, NM], "price": 1700, "quantity": 3,
                 "client_order_id": "run-1"}  # fmt: skip
        answer = await lab.post("/v1/exclusive-groups", json=group)
        assert answer.status_code == 201, answer.text
        grouped = answer.json()
        assert grouped["order_id"] == exchange_order_id("lab", "run-1")
        alternatives = [a["order_id"] for a in grouped["alternatives"]]
        assert alternatives == [exchange_order_id("lab", f"run-1.{n}") for n in (1, 2)]
        await settle(exchange.runtime)
        # Until the auction, every alternative holds its own cash: 2 x 2 x 1600 for the block,
        # 2 x 3 x 2 x 1700 for the group's two alternatives.
        held = 2 * 2 * 1600 + 2 * 3 * 2 * 1700
        assert (await lab.get("/v1/accounts/lab")).json()["cash"] == {
            "available": 100_000 - held,
            "held": held,
        }
        before = (await exchange.anonymous.get(f"/v1/day-ahead/{DATE}")).json()
        assert (before["status"], before["result"], before["regions"]) == ("collecting", None, [])
        assert before["intraday"] is None
        assert before["gate"] == (DAY - timedelta(hours=12)).isoformat()

        need = {
            "client_need_id": "render-1",
            "unit": "cards",
            "quantity": 1,
            "hours": 2,
            "earliest_start": _at_hour(9),
            "deadline": _at_hour(11),
            "regions": [{"region": "GZ"}, {"region": "NMG"}],
            "max_total": 3_600,
            "day_ahead": True,
        }
        studio = await _fund(exchange, "studio", 10_000)
        answer = await studio.post("/v1/needs", json=need)
        assert answer.status_code == 201, answer.text
        bid = answer.json()
        assert (bid["status"], bid["order"]) == ("submitted", None)
        # Both regions' 09:00-11:00 blocks, at 3600 fen over 1 card x 2 hours: 1800 a card-hour.
        assert sorted(a["symbols"] for a in bid["group"]["alternatives"]) == sorted([GZ, NM])
        assert (bid["group"]["price"], bid["group"]["quantity"]) == (1_800, 1)
        await _refuse_bad_bids(exchange, lab)

        now[0] = GATE_MS + MINUTE_MS
        auction = await _cleared(exchange)
        await settle(exchange.runtime)
        assert auction["result"]["solver_status"] == "optimal"
        assert auction["result"]["gap_ppm"] == 0
        prices = {
            c["symbol"]: (c["price"], c["volume"])
            for region in auction["regions"]
            for hour in region["hours"]
            for c in hour["contracts"]
        }
        # Each hour's sellers have units left at their ask, so their ask is the price; the
        # group and the need both go to Inner Mongolia, whose sellers ask less.
        assert prices == {GZ[0]: (1500, 2), GZ[1]: (1500, 2), NM[0]: (1400, 4), NM[1]: (1400, 4)}
        assert auction["result"]["welfare"] == 4 * (1600 - 1500) + 6 * (1700 - 1400) + 2 * (
            1800 - 1400
        )
        results = (await lab.get(f"/v1/day-ahead/{DATE}/results")).json()
        by_id = {o["order_id"]: o for o in results["orders"]}
        assert (by_id[block_id]["status"], by_id[block_id]["accepted"]) == ("accepted", 2)
        assert by_id[block_id]["fills"] == [{"symbol": s, "price": 1500, "quantity": 2} for s in GZ]
        assert (by_id[alternatives[1]]["status"], by_id[alternatives[1]]["amount"]) == (
            "accepted",
            3 * 2 * 1400,
        )
        assert by_id[alternatives[0]]["reason"] == "alternative_accepted"
        assert by_id[alternatives[0]]["group"] == grouped["order_id"]
        paid = 2 * 2 * 1500 + 3 * 2 * 1400
        assert (await lab.get("/v1/accounts/lab")).json()["cash"] == {
            "available": 100_000 - paid,
            "held": 0,
        }
        assert (await studio.get("/v1/accounts/studio")).json()["cash"] == {
            "available": 10_000 - 2 * 1400,
            "held": 0,
        }
        filled = (await studio.get(f"/v1/needs/{bid['need_id']}")).json()
        assert filled["status"] == "filled"
        taken = [a for a in filled["group"]["alternatives"] if a["status"] == "filled"]
        assert [(a["symbols"], a["paid"]) for a in taken] == [(NM, 2 * 1400)]
        shown = await _cx(exchange, exchange.keys["lab"], "show", DATE)
        assert shown.returncode == 0, shown.stderr
        assert "已出清 cleared" in shown.stdout
        rows = [line.split() for line in shown.stdout.splitlines()]
        assert ["NMG", "09:00", "H100-80G", "14.00", "4", "卡时"] in rows
        assert ["GZ", "10:00", "H100-80G", "15.00", "2", "卡时"] in rows
        mine = await _cx(exchange, exchange.keys["lab"], "results", DATE)
        assert mine.returncode == 0, mine.stderr
        assert "同组他选中标 alternative accepted" in mine.stdout
        assert mine.stdout.startswith(f"日前市场 day-ahead auction {DATE}, 账户 account lab")
        # Each order's hours with their delivery date, as `MM-DD HH:00-HH:00`.
        assert f" {DATE[5:]} {NM[0][-2:]}:00-{int(NM[-1][-2:]) + 1:02d}:00 " in mine.stdout
        assert f"{NM[0]}: 3 卡时 x 14.00 元" in mine.stdout
        # Operators read any account's results; a participant only its own.
        operator = await exchange.operator()
        theirs = await operator.get(f"/v1/day-ahead/{DATE}/results", params={"account_id": "lab"})
        assert theirs.json()["orders"] == results["orders"]
        other = await studio.get(f"/v1/day-ahead/{DATE}/results", params={"account_id": "lab"})
        assert other.status_code == 403

        # Past the gate, the day's hours are auctioned: day-ahead bids for them are refused.
        ask = {"symbol": GZ[0], "side": "buy", "price": 1500, "quantity": 1, "day_ahead": True}
        _refused(await lab.post("/v1/orders", json=ask), "already_auctioned", "closed its gate")
        group = {"alternatives": [GZ], "price": 1700, "quantity": 1}
        _refused(await lab.post("/v1/exclusive-groups", json=group), "already_auctioned", "gate")
        # Without intraday auctions no auction takes the need's hours any more: the problem
        # says which auction closed and what the buyer can do instead.
        late = {**need, "client_need_id": "render-2"}
        refused = await studio.post("/v1/needs", json=late)
        _refused(refused, "already_auctioned", f"the day-ahead auction of {DATE} has passed")
        assert "runs no intraday auctions: send the need without day_ahead" in refused.text
        assert (await lab.get("/v1/accounts/lab")).json()["cash"]["held"] == 0


async def _refuse_bad_bids(exchange: RunningExchange, lab: httpx.AsyncClient) -> None:
    """Each bad bid refused with its reason, holding nothing and placing nothing."""
    before = (await lab.get("/v1/accounts/lab")).json()
    open_before = (await lab.get("/v1/orders", params={"status": "open"})).json()
    too_many = {"alternatives": [GZ] * 13, "price": 1700, "quantity": 1}
    _refused(
        await lab.post("/v1/exclusive-groups", json=too_many),
        "too_many_alternatives",
        "at most 12 alternatives, this one 13",
    )
    gap = [_symbol("GZ", 9), _symbol("GZ", 11)]
    apart = {"alternatives": [NM, gap], "price": 1700, "quantity": 1}
    _refused(await lab.post("/v1/exclusive-groups", json=apart), "invalid_block", "alternative 2")
    block = {"symbols": gap, "side": "buy", "price": 1700, "quantity": 1, "day_ahead": True}
    _refused(await lab.post("/v1/block-orders", json=block), "invalid_block", "consecutive")
    unlisted = {"alternatives": [["H100-80G.GZ.20990101T00"]], "price": 1700, "quantity": 1}
    _refused(
        await lab.post("/v1/exclusive-groups", json=unlisted),
        "unknown_contract",
        "none of the need's alternatives is listed",
    )
    dear = {"alternatives": [GZ, NM], "price": 1700, "quantity": 100}
    _refused(await lab.post("/v1/exclusive-groups", json=dear), "insufficient_funds", "available")
    await settle(exchange.runtime)
    assert (await lab.get("/v1/accounts/lab")).json() == before
    # Each refusal is on record as a rejected order; none holds or rests anything.
    assert (await lab.get("/v1/orders", params={"status": "open"})).json() == open_before
    rejected = (await lab.get("/v1/orders", params={"status": "rejected"})).json()
    assert sorted(r["reason"] for r in rejected) == sorted(
        ["too_many_alternatives", "invalid_block", "invalid_block", "unknown_contract",
         "insufficient_funds"]
    )  # fmt: skip


async def test_an_exchange_without_a_day_ahead_auction_refuses_day_ahead_bids(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, CX_DAY_AHEAD_GATE="")
    async with running_exchange(settings) as exchange:
        symbol = (await exchange.anonymous.get("/v1/contracts")).json()[0]["symbol"]
        lab = await _fund(exchange, "lab", 10_000)
        order = {"symbol": symbol, "side": "buy", "price": 1500, "quantity": 1, "day_ahead": True}
        _refused(await lab.post("/v1/orders", json=order), "no_day_ahead_auction", "no day-ahead")
        group = {"alternatives": [[symbol]], "price": 1500, "quantity": 1}
        refused = await lab.post("/v1/exclusive-groups", json=group)
        _refused(refused, "no_day_ahead_auction", "本交易所不举行日前集合竞价")
        auction = await exchange.anonymous.get(f"/v1/day-ahead/{DATE}")
        assert auction.status_code == 404
        assert auction.json()["type"] == "/problems/no_day_ahead_auction"
        # What the web page's day-ahead view shows a buyer: words, not the operator's setting.
        for detail in (refused.json()["detail"], auction.json()["detail"]):
            chinese, english = detail.find("本交易所不举行日前集合竞价"), detail.find("runs no day")
            assert 0 <= chinese < english, detail
            assert "CX_" not in detail, detail
        await settle(exchange.runtime)
        assert (await lab.get("/v1/accounts/lab")).json()["cash"] == {
            "available": 10_000,
            "held": 0,
        }


async def test_each_alternative_of_a_group_bids_at_its_own_price_and_the_auction_weighs_it(
    tmp_path: Path,
) -> None:
    """A group's alternatives at their own prices (a far region worth less to the buyer): the
    auction takes the one adding most welfare at those prices, not the cheapest ask, each
    alternative holds at its own price, and bad prices are refused changing nothing."""
    now = [BEFORE_GATE_MS]
    async with running_exchange(_settings(tmp_path), clock_ms=lambda: now[0]) as exchange:
        await _at(exchange, BEFORE_GATE_MS)
        await _offer(exchange, "p-gz", GZ, 1500, 5)
        await _offer(exchange, "p-nm", NM, 1000, 5)
        lab = await _fund(exchange, "lab", 100_000)
        for prices, says in (([2000], "one per alternative, 2, not 1"),
                             ([2000, 2100], "none above the group's price 2000")):  # fmt: skip
            bad = {"alternatives": [GZ, NM], "price": 2000, "prices": prices, "quantity": 2}
            _refused(await lab.post("/v1/exclusive-groups", json=bad), "invalid-request", says)
        # Guizhou's hours are worth 2000 a card-hour to the lab, Inner Mongolia's, far away,
        # 1300: welfare 2 x 2 x (2000 - 1500) there against 2 x 2 x (1300 - 1000).
        group = {"alternatives": [GZ, NM], "price": 2000, "prices": [2000, 1300], "quantity": 2,
                 "client_order_id": "near"}  # fmt: skip
        answer = await lab.post("/v1/exclusive-groups", json=group)
        assert answer.status_code == 201, answer.text
        # The same alternatives at one price: the cheaper asks win, as welfare says.
        flat = {"alternatives": [GZ, NM], "price": 2000, "quantity": 1, "client_order_id": "flat"}
        answer = await lab.post("/v1/exclusive-groups", json=flat)
        assert answer.status_code == 201, answer.text
        await settle(exchange.runtime)
        held = 2 * 2 * 2000 + 2 * 2 * 1300 + 2 * 1 * 2 * 2000
        assert (await lab.get("/v1/accounts/lab")).json()["cash"] == {
            "available": 100_000 - held,
            "held": held,
        }

        now[0] = GATE_MS + MINUTE_MS
        auction = await _cleared(exchange)
        await settle(exchange.runtime)
        assert auction["result"]["welfare"] == 2 * 2 * (2000 - 1500) + 1 * 2 * (2000 - 1000)
        results = (await lab.get(f"/v1/day-ahead/{DATE}/results")).json()
        status = {o["order_id"]: (o["status"], o["reason"]) for o in results["orders"]}
        near = [exchange_order_id("lab", f"near.{n}") for n in (1, 2)]
        flat_ids = [exchange_order_id("lab", f"flat.{n}") for n in (1, 2)]
        assert status[near[0]] == ("accepted", None)
        assert status[near[1]] == ("rejected", "alternative_accepted")
        assert status[flat_ids[1]] == ("accepted", None)
        assert status[flat_ids[0]] == ("rejected", "alternative_accepted")
        paid = 2 * 2 * 1500 + 1 * 2 * 1000
        assert (await lab.get("/v1/accounts/lab")).json()["cash"] == {
            "available": 100_000 - paid,
            "held": 0,
        }


async def test_a_need_after_the_day_ahead_gate_clears_in_the_next_intraday_auction(
    tmp_path: Path,
) -> None:
    """With intraday auctions, a group placed once its hours trade continuously waits for the
    next one (the asks resting in the books would fill it at once, but only an auction may
    choose among its alternatives), clears there at one price per contract-hour against the
    resting asks, and the books trade continuously again; a group whose hours close too soon
    after that auction is refused."""
    settings = _settings(tmp_path, CX_INTRADAY_AUCTION_HOURS=1, CX_GATE_CLOSURE_MINUTES=60)
    now = [BEFORE_GATE_MS]
    async with running_exchange(settings, clock_ms=lambda: now[0]) as exchange:
        await _at(exchange, BEFORE_GATE_MS)
        await _offer(exchange, "p-gz", GZ, 1500, 5)
        await _offer(exchange, "p-nm", NM, 1000, 5)
        now[0] = GATE_MS + MINUTE_MS
        await _cleared(exchange)
        lab = await _fund(exchange, "lab", 100_000)
        group = {"alternatives": [GZ, NM], "price": 2000, "prices": [2000, 1300], "quantity": 2,
                 "client_order_id": "after-gate"}  # fmt: skip
        answer = await lab.post("/v1/exclusive-groups", json=group)
        assert answer.status_code == 201, answer.text
        await settle(exchange.runtime)
        open_ = {
            o["order_id"] for o in (await lab.get("/v1/orders", params={"status": "open"})).json()
        }
        assert open_ == {exchange_order_id("lab", f"after-gate.{n}") for n in (1, 2)}
        # A bid resting below the asks: the intraday auction takes it and leaves it resting.
        low = {"symbol": GZ[0], "side": "buy", "price": 1400, "quantity": 1,
               "client_order_id": "low"}  # fmt: skip
        assert (await lab.post("/v1/orders", json=low)).status_code == 201
        # A need for the same hours goes where a group goes: to the next intraday auction.
        studio = await _fund(exchange, "studio", 10_000)
        need = {
            "client_need_id": "render-late",
            "unit": "cards",
            "quantity": 1,
            "hours": 2,
            "earliest_start": _at_hour(9),
            "deadline": _at_hour(11),
            "regions": [{"region": "GZ"}, {"region": "NMG"}],
            "max_total": 3_600,
            "day_ahead": True,
        }
        answer = await studio.post("/v1/needs", json=need)
        assert answer.status_code == 201, answer.text
        bid = answer.json()
        assert (bid["status"], bid["order"]) == ("submitted", None)
        assert sorted(a["symbols"] for a in bid["group"]["alternatives"]) == sorted([GZ, NM])
        intraday_at = f"{DAY - timedelta(hours=11):%Y-%m-%d %H:%M}"
        assert f"bid in the intraday auction at {intraday_at} CST" in answer.text
        # An hour trading continuously, with an ask resting in it.
        midnight = [_symbol("GZ", 0)]
        provider = await exchange.as_("p-gz", "provider")
        capacity = {"kind": "capacity", "symbol": midnight[0], "quantity": 1}
        assert (await provider.post("/v1/accounts/p-gz/deposits", json=capacity)).is_success
        ask = {"symbol": midnight[0], "side": "sell", "price": 1500, "quantity": 1}
        assert (await provider.post("/v1/orders", json=ask)).status_code == 201
        # The day before delivery, its 00:00 hour closes at 23:00: the auction at 23:00 comes
        # too late for it, for a group and for a need alike.
        now[0] = GATE_MS + 10 * HOUR_MS + 30 * MINUTE_MS
        await _at(exchange, now[0])
        late = {"alternatives": [midnight], "price": 2000, "quantity": 1}
        _refused(await lab.post("/v1/exclusive-groups", json=late), "already_auctioned", "too late")
        late_need = {**need, "client_need_id": "render-midnight", "hours": 1,
                     "earliest_start": _at_hour(0), "deadline": _at_hour(1),
                     "regions": [{"region": "GZ"}]}  # fmt: skip
        refused = await studio.post("/v1/needs", json=late_need)
        _refused(refused, "already_auctioned", "the next intraday auction, at ")
        assert "comes too late" in refused.text
        assert "send the need without day_ahead" in refused.text

        name = (DAY - timedelta(hours=11)).strftime("%Y-%m-%dT%H:%M")

        async def cleared() -> dict[str, Any] | None:
            document: dict[str, Any] = (
                await exchange.anonymous.get(f"/v1/day-ahead/{name}")
            ).json()
            return document if document["status"] == "cleared" else None

        auction = await eventually(cleared, "the intraday auction to clear", 60.0)
        await settle(exchange.runtime)
        prices = {
            c["symbol"]: (c["price"], c["volume"])
            for region in auction["regions"]
            for hour in region["hours"]
            for c in hour["contracts"]
        }
        assert (prices[GZ[0]], prices[GZ[1]]) == ((1500, 2), (1500, 2))
        results = (await lab.get(f"/v1/day-ahead/{name}/results")).json()
        status = {o["order_id"]: (o["status"], o["reason"]) for o in results["orders"]}
        assert status[exchange_order_id("lab", "after-gate.1")] == ("accepted", None)
        assert status[exchange_order_id("lab", "after-gate.2")] == (
            "rejected",
            "alternative_accepted",
        )
        # Out of the money, and still in its book: not told it was rejected.
        low_id = exchange_order_id("lab", "low")
        assert status[low_id] == ("resting", "out_of_the_money")
        assert (await lab.get(f"/v1/orders/{low_id}")).json()["status"] == "open"
        intraday = await _cx(exchange, exchange.keys["lab"], "results", name)
        assert intraday.returncode == 0, intraday.stderr
        assert intraday.stdout.startswith(f"日内集合竞价 intraday auction {name} (CST)")
        assert "未成交, 继续挂单 unfilled, resting in the book (价格未达" in intraday.stdout
        for symbol in (*GZ, *NM):
            contract = (await exchange.anonymous.get(f"/v1/contracts/{symbol}")).json()
            assert contract["state"] == "continuous", contract
        assert (await lab.get("/v1/accounts/lab")).json()["cash"] == {
            "available": 100_000 - 2 * 2 * 1500 - 1400,
            "held": 1400,
        }
        # The need took Inner Mongolia's cheaper hours in the same auction, at 1000 each.
        assert prices[NM[0]] == prices[NM[1]] == (1000, 1)
        filled = (await studio.get(f"/v1/needs/{bid['need_id']}")).json()
        assert filled["status"] == "filled", filled
        taken = [a for a in filled["group"]["alternatives"] if a["status"] == "filled"]
        assert [(a["symbols"], a["paid"]) for a in taken] == [(NM, 2 * 1000)]
        assert (await studio.get("/v1/accounts/studio")).json()["cash"] == {
            "available": 10_000 - 2 * 1000,
            "held": 0,
        }
        # Each auction's document names the intraday auctions around the log time now, whose
        # documents the page links to.
        around = (await exchange.anonymous.get(f"/v1/day-ahead/{DATE}")).json()["intraday"]
        assert around == auction["intraday"]
        previous, following = (datetime.strptime(around[k], "%Y-%m-%dT%H:%M") for k in around)
        assert (following - previous, list(around)) == (timedelta(hours=1), ["previous", "next"])
        statuses = [
            (await exchange.anonymous.get(f"/v1/day-ahead/{around[k]}")).json()["status"]
            for k in ("previous", "next")
        ]
        assert statuses[0] in ("clearing", "cleared"), statuses
        assert statuses[1] == "collecting", statuses
        wrong = await exchange.anonymous.get(f"/v1/day-ahead/{name[:-2]}30")
        assert wrong.status_code == 404, wrong.text
        assert wrong.json()["type"] == "/problems/no_intraday_auction"
        detail = wrong.json()["detail"]
        half_past = f"{name[:-3].replace('T', ' ')}:30"
        assert detail.startswith(f"北京时间 {half_past} 没有日内集合竞价"), detail
        assert "每 1 小时一场" in detail, detail
        assert "China Standard Time" in detail, detail
        assert "CX_" not in detail, detail


async def test_a_group_with_a_delisted_alternative_holds_and_names_only_the_listed_ones(
    tmp_path: Path,
) -> None:
    """Risk drops an alternative whose hours are not listed when it takes the group; the answer
    says which alternatives it holds and which it dropped, so no order id it names is unknown."""
    now = [BEFORE_GATE_MS]
    async with running_exchange(_settings(tmp_path), clock_ms=lambda: now[0]) as exchange:
        await _at(exchange, BEFORE_GATE_MS)
        operator = await exchange.operator()
        delisted = await operator.post(
            f"/v1/admin/contracts/{NM[1]}/delist", json={"reason": "provider outage"}
        )
        assert delisted.status_code in (200, 201, 202), delisted.text
        await settle(exchange.runtime)
        lab = await _fund(exchange, "lab", 100_000)
        group = {"alternatives": [GZ, NM], "price": 1700, "quantity": 1,
                 "client_order_id": "half"}  # fmt: skip
        answer = await lab.post("/v1/exclusive-groups", json=group)
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert body["alternatives"] == [
            {"order_id": exchange_order_id("lab", "half.1"), "symbols": GZ}
        ]
        assert body["skipped"] == [NM]
        retried = await lab.post("/v1/exclusive-groups", json=group)
        assert retried.json() == body
        await settle(exchange.runtime)
        open_ = (await lab.get("/v1/orders", params={"status": "open"})).json()
        assert [o["order_id"] for o in open_] == [exchange_order_id("lab", "half.1")]
        # Only the held alternative holds cash: 1 card x 2 hours x 17.00 元.
        assert (await lab.get("/v1/accounts/lab")).json()["cash"] == {
            "available": 100_000 - 2 * 1700,
            "held": 2 * 1700,
        }


async def test_an_exclusive_group_is_read_by_the_id_it_was_answered_with(tmp_path: Path) -> None:
    """GET /v1/orders/{id} of the id POST /v1/exclusive-groups answers (it was 404): the group
    with its alternatives, each a block with its hours in China Standard Time and the group
    it belongs to; another account's read of it is 404 as for an unknown order."""
    now = [BEFORE_GATE_MS]
    async with running_exchange(_settings(tmp_path), clock_ms=lambda: now[0]) as exchange:
        await _at(exchange, BEFORE_GATE_MS)
        lab = await _fund(exchange, "lab", 100_000)
        group = {"alternatives": [GZ, NM], "price": 1700, "quantity": 3}
        answer = await lab.post("/v1/exclusive-groups", json=group)
        assert answer.status_code == 201, answer.text
        group_id = answer.json()["order_id"]
        alternatives = [a["order_id"] for a in answer.json()["alternatives"]]
        await settle(exchange.runtime)

        read = await lab.get(f"/v1/orders/{group_id}")
        assert read.status_code == 200, read.text
        found = read.json()
        assert (found["order_id"], found["account_id"], found["status"]) == (
            group_id,
            "lab",
            "open",
        )
        start = DAY.replace(hour=9).isoformat()
        end = DAY.replace(hour=11).isoformat()
        assert start.endswith("+08:00")
        shown = {a["order_id"]: a for a in found["alternatives"]}
        assert sorted(shown) == sorted(alternatives)
        for order_id, hours in zip(alternatives, (GZ, NM), strict=True):
            alternative = shown[order_id]
            assert alternative["symbols"] == hours
            assert (alternative["delivery_start"], alternative["delivery_end"]) == (start, end)
            assert (alternative["group_id"], alternative["quantity"]) == (group_id, 6)
            assert (await lab.get(f"/v1/orders/{order_id}")).json() == alternative
        assert (found["symbol"], found["filled"]) == (shown[alternatives[0]]["symbol"], 0)

        stranger = await exchange.as_("stranger")
        hidden = await stranger.get(f"/v1/orders/{group_id}")
        assert hidden.status_code == 404, hidden.text
        assert hidden.json()["type"] == "/problems/unknown_order"
