"""Vouchers on block orders and needs, and delivery bonds on sell blocks, through the API of an
exchange on the embedded default, every figure to the fen.

A grant holder's block with a voucher fills in every hour and each hour's fill uses the voucher
as a single order's would; a block from a related party earns none; a block that cannot fill,
and one killed while it waits for the opening auction, give their whole reservation back; a
voucher the grant does not cover is refused and holds nothing. A need with a voucher picks the
region the voucher makes cheaper. A provider's sell block posts its delivery bond, gets it back
when its unfilled block is cancelled or its hours are delivered, and loses the penalty of a
short delivery.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cx.settings import Settings
from exchange.domain.catalogue import CHINA_STANDARD_TIME, to_utc_ms
from exchange.domain.messages import ControlMarket
from tests.e2e.grants import granted
from tests.e2e.harness import LogClock, RunningExchange, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
GZ1 = "H100-80G.GZ.20271201T01"
YRD0 = "H100-80G.YRD.20271201T00"
YRD1 = "H100-80G.YRD.20271201T01"
HOUR = 3_600_000
MIDNIGHT = to_utc_ms(datetime(2027, 12, 1, tzinfo=CHINA_STANDARD_TIME))
YEAR_2027 = (1_798_761_600_000, 1_830_297_600_000)
ADMIN = "city-admin"


async def _post(
    exchange: RunningExchange, account: str, path: str, body: Any, role: str = "buyer"
) -> Any:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def _programme(
    exchange: RunningExchange, programme_id: str, grants: dict[str, list[str]], **rules: Any
) -> None:
    """A 30% programme capped at 10.00 CNY a contract, granting 100.00 CNY to each of `grants`
    (account -> its related parties)."""
    body = {
        "programme_id": programme_id,
        "issuer": "Hangzhou",
        "budget": 1_000_000,
        "rate_bps": 3_000,
        "cap_per_contract": 1_000,
        "cap_per_enterprise": 1_000_000,
        "cities": ["hangzhou"],
        "valid_from": YEAR_2027[0] - 400 * 86_400_000,
        "valid_until": YEAR_2027[1],
        **rules,
    }
    await _post(exchange, ADMIN, "/v1/programmes", body, "programme_admin")
    for account, related in grants.items():
        await granted(exchange, ADMIN, programme_id, account, 10_000, related=tuple(related))


async def _deposit(exchange: RunningExchange, account: str, role: str, **body: Any) -> None:
    await _post(exchange, account, f"/v1/accounts/{account}/deposits", body, role)


async def _cash(exchange: RunningExchange, account: str) -> dict[str, int]:
    client = await exchange.as_(account)
    cash: dict[str, int] = (await client.get(f"/v1/accounts/{account}")).json()["cash"]
    return cash


async def _report(exchange: RunningExchange, programme_id: str) -> dict[str, int]:
    reader = await exchange.as_(ADMIN, "programme_admin")
    report = (await reader.get(f"/v1/programmes/{programme_id}/report")).json()
    return {k: report[k] for k in ("granted", "reserved", "committed", "remaining")}


async def _invoice_lines(exchange: RunningExchange, account: str) -> list[tuple[Any, ...]]:
    client = await exchange.as_(account)
    invoices = (await client.get(f"/v1/accounts/{account}/invoices")).json()["invoices"]
    return sorted(
        (i["order_id"], c["symbol"], c["gross"], c["voucher"], c["paid"])
        for i in invoices
        for c in i["contracts"]
    )


async def _asks(
    exchange: RunningExchange, provider: str, asks: tuple[tuple[str, int, int], ...]
) -> None:
    """Deposit the capacity of each (symbol, price, quantity) and ask for it."""
    for symbol, price, quantity in asks:
        await _deposit(exchange, provider, "provider", kind="capacity", symbol=symbol,
                       quantity=quantity)  # fmt: skip
        ask = {"symbol": symbol, "side": "sell", "price": price, "quantity": quantity}
        await _post(exchange, provider, "/v1/orders", ask, "provider")
    await settle(exchange.runtime)


async def _placed(exchange: RunningExchange, block: dict[str, Any]) -> str:
    """Place the buyer's block; its order id."""
    answer = await _post(exchange, "sme", "/v1/block-orders", block)
    assert answer["status"] == "accepted", answer
    await settle(exchange.runtime)
    order_id: str = answer["order_id"]
    return order_id


async def _audit_clean(exchange: RunningExchange) -> None:
    audit = await (await exchange.operator()).get("/v1/admin/audit")
    assert audit.json()["discrepancies"] == [], audit.text


async def _refused(client: httpx.AsyncClient, block: dict[str, Any]) -> str:
    answer = await client.post("/v1/block-orders", json=block)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["type"] == "/problems/not_eligible", problem
    detail: str = problem["detail"]
    return detail


async def test_a_block_uses_its_voucher_in_every_hour_and_gives_back_what_it_does_not_use(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        await _programme(exchange, "gz-fund", {"sme": ["sister-dc"]}, regions=["GZ"])
        await _programme(exchange, "int-fund", {"sme": []}, classes=["H100-80G-INT"])
        await _deposit(exchange, "sme", "buyer", kind="cash", amount=100_000)
        await settle(exchange.runtime)
        sme = await exchange.as_("sme")

        # Refused with the reason, holding nothing.
        block = {"symbols": [GZ0, GZ1], "side": "buy", "price": 2_000, "quantity": 3}
        refusals = [
            await _refused(sme, {**block, "symbols": [YRD0, YRD1], "voucher": "gz-fund"}),
            await _refused(sme, {**block, "voucher": "int-fund"}),
            await _refused(sme, {**block, "voucher": "nowhere"}),
            await _refused(sme, {**block, "side": "sell", "voucher": "gz-fund"}),
        ]
        assert refusals == [
            "programme gz-fund does not cover region YRD",
            "programme int-fund does not cover H100-80G",
            "account sme holds no grant of programme 'nowhere'",
            "vouchers are for buys",
        ]
        await settle(exchange.runtime)
        assert await _cash(exchange, "sme") == {"available": 100_000, "held": 0}
        untouched = {"granted": 10_000, "reserved": 0, "committed": 0, "remaining": 1_000_000}
        assert await _report(exchange, "gz-fund") == untouched
        assert await _report(exchange, "int-fund") == untouched

        # Filled in both hours: 12,000 gross reserves the least of 30% (3,600), the cap of
        # 1,000 per hour contract (2,000) and the grant (10,000). The first hour's fill takes
        # 30% of 4,500; the second the rest of the reservation.
        await _asks(exchange, "dc", ((GZ0, 1_500, 3), (GZ1, 2_500, 3)))
        ids = {}
        filled = {**block, "voucher": "gz-fund", "client_order_id": "filled"}
        ids["filled"] = await _placed(exchange, filled)
        # The related party's hours: no voucher, and the reservation (1,200) comes back.
        await _asks(exchange, "sister-dc", ((GZ0, 2_000, 1), (GZ1, 2_000, 1)))
        related = {**filled, "quantity": 1, "client_order_id": "related"}
        ids["related"] = await _placed(exchange, related)
        # Nothing left to buy: cancelled by matching, its reservation back to the grant.
        unfilled = {**related, "client_order_id": "unfilled"}
        ids["unfilled"] = await _placed(exchange, unfilled)
        await settle(exchange.runtime)

        named = {order_id: name for name, order_id in ids.items()}
        lines = [(named[line[0]], *line[1:]) for line in await _invoice_lines(exchange, "sme")]
        assert sorted(lines) == [
            ("filled", GZ0, 4_500, 1_350, 3_150),
            ("filled", GZ1, 7_500, 650, 6_850),
            ("related", GZ0, 2_000, 0, 2_000),
            ("related", GZ1, 2_000, 0, 2_000),
        ]
        orders = (await sme.get("/v1/orders")).json()
        assert sorted((named.get(o["order_id"], "refused"), o["status"]) for o in orders) == [
            ("filled", "filled"),
            ("refused", "rejected"),
            ("refused", "rejected"),
            ("refused", "rejected"),
            ("refused", "rejected"),
            ("related", "filled"),
            ("unfilled", "cancelled"),
        ]
        assert await _cash(exchange, "sme") == {"available": 100_000 - 10_000 - 4_000, "held": 0}
        assert await _report(exchange, "gz-fund") == {
            "granted": 10_000, "reserved": 0, "committed": 2_000, "remaining": 998_000,
        }  # fmt: skip
        await _audit_clean(exchange)


async def test_a_block_killed_before_its_auction_gives_its_whole_reservation_back(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, CX_PRE_OPEN=True)
    async with running_exchange(settings) as exchange:
        await _programme(exchange, "gz-fund", {"sme": []}, regions=["GZ"])
        await _deposit(exchange, "sme", "buyer", kind="cash", amount=100_000)
        await settle(exchange.runtime)
        # A pre-open market: the block waits for its family's opening auction.
        block = {"symbols": [GZ0, GZ1], "side": "buy", "price": 2_000, "quantity": 3,
                 "voucher": "gz-fund"}  # fmt: skip
        assert (await _post(exchange, "sme", "/v1/block-orders", block))["status"] == "accepted"
        await settle(exchange.runtime)
        assert await _report(exchange, "gz-fund") == {
            "granted": 10_000, "reserved": 2_000, "committed": 0, "remaining": 998_000,
        }  # fmt: skip
        assert await _cash(exchange, "sme") == {"available": 100_000 - 12_000, "held": 12_000}

        killed = await (await exchange.as_("sme")).delete("/v1/orders")
        assert killed.status_code == 200, killed.text
        await settle(exchange.runtime)
        assert await _report(exchange, "gz-fund") == {
            "granted": 10_000, "reserved": 0, "committed": 0, "remaining": 1_000_000,
        }  # fmt: skip
        assert await _cash(exchange, "sme") == {"available": 100_000, "held": 0}
        await _audit_clean(exchange)


async def test_a_need_with_a_voucher_takes_the_region_the_voucher_makes_cheaper(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        await _programme(exchange, "gz-fund", {"sme": []}, regions=["GZ"], cap_per_contract=100_000)
        await _deposit(exchange, "sme", "buyer", kind="cash", amount=100_000)
        for symbol, price in ((GZ0, 2_000), (GZ1, 2_000), (YRD0, 1_800), (YRD1, 1_800)):
            await _deposit(exchange, "dc", "provider", kind="capacity", symbol=symbol,
                           quantity=2)  # fmt: skip
            ask = {"symbol": symbol, "side": "sell", "price": price, "quantity": 2}
            await _post(exchange, "dc", "/v1/orders", ask, "provider")
        await settle(exchange.runtime)
        need = {
            "unit": "cards", "quantity": 2, "hours": 2, "earliest_start": MIDNIGHT,
            "deadline": MIDNIGHT + 2 * HOUR, "regions": [{"region": "GZ"}, {"region": "YRD"}],
            "max_total": 100_000,
        }  # fmt: skip
        # Without the voucher YRD is cheaper; with it GZ costs 8,000 less 30%.
        plain = await _post(exchange, "sme", "/v1/needs", {**need, "stand": False,
                                                           "client_need_id": "plain"})  # fmt: skip
        assert plain["status"] == "filled", plain
        assert plain["plan"]["chosen"]["family"] == "H100-80G.YRD"
        for symbol in (YRD0, YRD1):
            ask = {"symbol": symbol, "side": "sell", "price": 1_800, "quantity": 2}
            await _deposit(exchange, "dc", "provider", kind="capacity", symbol=symbol,
                           quantity=2)  # fmt: skip
            await _post(exchange, "dc", "/v1/orders", ask, "provider")
        await settle(exchange.runtime)
        answer = await _post(
            exchange, "sme", "/v1/needs", {**need, "voucher": "gz-fund", "client_need_id": "v"}
        )
        assert answer["status"] == "filled", answer
        chosen = answer["plan"]["chosen"]
        assert (chosen["family"], chosen["cost"], chosen["voucher"], chosen["net_cost"]) == (
            "H100-80G.GZ", 8_000, 2_400, 5_600,
        )  # fmt: skip
        priced = [
            (a["family"], a["cost"], a["voucher"], a["net_cost"], a["ranked_total"])
            for a in answer["plan"]["alternatives"]
        ]
        assert priced == [
            ("H100-80G.GZ", 8_000, 2_400, 5_600, 5_600),
            ("H100-80G.YRD", 7_200, None, 7_200, 7_200),
        ]
        assert answer["order"]["voucher"] == "gz-fund"
        await settle(exchange.runtime)
        lines = [line for line in await _invoice_lines(exchange, "sme") if line[1] in (GZ0, GZ1)]
        assert [line[1:] for line in lines] == [
            (GZ0, 4_000, 1_200, 2_800),
            (GZ1, 4_000, 1_200, 2_800),
        ]
        no_grant = await (await exchange.as_("sme")).post(
            "/v1/needs", json={**need, "voucher": "nowhere"}
        )
        assert no_grant.status_code == 422
        assert no_grant.json()["type"] == "/problems/not_eligible"
        assert await _cash(exchange, "sme") == {
            "available": 100_000 - 7_200 - 5_600, "held": 0,
        }  # fmt: skip
        await _audit_clean(exchange)


async def _tick(exchange: RunningExchange, clock: LogClock, at: int) -> None:
    """Move the log's clock and let the family's partition see the time."""
    clock.now_ms = at
    await exchange.runtime.submit(ControlMarket(operator_id="clock", action="tick", symbol=GZ0))
    await settle(exchange.runtime)


async def test_a_sell_blocks_bond_is_posted_released_and_forfeited_as_a_single_sells(
    tmp_path: Path,
) -> None:
    settings: Settings = settings_for(tmp_path).model_copy(
        update={"bond_bps": 1_000, "delivery_window_minutes": 60}
    )
    clock = LogClock(MIDNIGHT - 12 * HOUR)
    async with running_exchange(settings, clock) as exchange:
        await _deposit(exchange, "dc", "provider", kind="cash", amount=1_500)
        await _deposit(exchange, "sme", "buyer", kind="cash", amount=100_000)
        for symbol in (GZ0, GZ1):
            await _deposit(exchange, "dc", "provider", kind="capacity", symbol=symbol,
                           quantity=6)  # fmt: skip
            bid = {"symbol": symbol, "side": "buy", "price": 1_500, "quantity": 4}
            await _post(exchange, "sme", "/v1/orders", bid)
        # Not enough cash for the bond of 150 a unit over 2 x 6 units: refused, nothing held.
        provider = await exchange.as_("dc", "provider")
        too_big = {"symbols": [GZ0, GZ1], "side": "sell", "price": 1_500, "quantity": 6}
        refused = await provider.post("/v1/block-orders", json=too_big)
        assert refused.status_code == 422, refused.text
        assert refused.json()["type"] == "/problems/insufficient_funds"
        # Filled: 150 a unit over 8 units moves 1,200 from cash into the bond.
        sold = {**too_big, "quantity": 4}
        assert (await _post(exchange, "dc", "/v1/block-orders", sold, "provider"))[
            "status"
        ] == "accepted"
        # No bids left: cancelled, and its bond of 300 comes back.
        unsold = {**too_big, "quantity": 1}
        await _post(exchange, "dc", "/v1/block-orders", unsold, "provider")
        await settle(exchange.runtime)
        assert await _cash(exchange, "dc") == {"available": 1_500 - 1_200, "held": 0}

        await _tick(exchange, clock, MIDNIGHT)
        await _tick(exchange, clock, MIDNIGHT + HOUR)
        owed = (await provider.get("/v1/deliveries")).json()
        assert [(d["symbol"], d["quantity"], d["amount"], d["bond"]) for d in owed] == [
            (GZ0, 4, 6_000, 600),
            (GZ1, 4, 6_000, 600),
        ]
        for symbol, delivered in ((GZ0, 4), (GZ1, 3)):
            body = {"symbol": symbol, "buyer_id": "sme", "delivered": delivered}
            await _post(exchange, "dc", "/v1/deliveries/metering", body, "provider")
        await _tick(exchange, clock, MIDNIGHT + 3 * HOUR + 1)
        settled = (await provider.get("/v1/deliveries")).json()
        assert [(d["status"], d["delivered"], d["refund"], d["penalty"]) for d in settled] == [
            ("settled", 4, 0, 0),
            ("settled", 3, 1_500, 150),
        ]
        # Paid 10,500 for what it delivered, its bond of 1,200 back less the 150 penalty; the
        # buyer gets the undelivered card-hour's 1,500 and the penalty.
        assert await _cash(exchange, "dc") == {"available": 1_500 + 10_500 - 150, "held": 0}
        assert await _cash(exchange, "sme") == {
            "available": 100_000 - 12_000 + 1_500 + 150, "held": 0,
        }  # fmt: skip
        await _audit_clean(exchange)
