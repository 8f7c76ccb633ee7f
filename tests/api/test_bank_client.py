"""The typed client over the bank's and the vouchers' endpoints, with their refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from cx_client import ExchangeClient, ProblemError

from tests.e2e.grants import uscc_of
from tests.e2e.harness import running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"


async def test_the_client_runs_a_programme_a_schedule_and_reads_invoices(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        keys = {
            name: await exchange.key_for(name, role)
            for name, role in (("city", "programme_admin"), ("sme", "buyer"), ("dc", "provider"))
        }
        url = exchange.base_url
        async with (
            ExchangeClient(url, keys["city"]) as city,
            ExchangeClient(url, keys["sme"]) as sme,
            ExchangeClient(url, keys["dc"]) as dc,
        ):
            created = await city.create_programme(
                "gz-2027", issuer="Guiyang", budget=10_000, cap_per_contract=5_000,
                cap_per_enterprise=10_000, regions=["GZ"], valid_from=0,
                valid_until=1_830_297_600_000,
            )  # fmt: skip
            assert (created.request, created.id, created.status) == (
                "CreateProgramme",
                "gz-2027",
                "done",
            )
            with pytest.raises(ProblemError) as unregistered:
                await sme.apply_for_grant("gz-2027", 2_000, "推理", application_id="sme-0")
            assert unregistered.value.type == "/problems/not_registered"
            registered = await sme.register_enterprise(
                "贵阳算力有限公司", uscc_of("sme", "520100"), "sme", "guiyang"
            )
            assert registered.status == "done"
            await sme.apply_for_grant("gz-2027", 2_000, "推理 / inference", application_id="sme-1")
            asked = await city.request_application_info("gz-2027", "sme-1", "用途 / use?")
            assert (asked.request, asked.id) == ("RequestApplicationInfo", "gz-2027/sme-1")
            await sme.supplement_application("gz-2027", "sme-1", "客服模型 / a support bot")
            await city.approve_grant("gz-2027", "sme-1", 2_000)
            with pytest.raises(ProblemError) as refused:
                await city.approve_grant("gz-2027", "sme-1", 2_000)
            assert refused.value.type == "/problems/application_not_pending"
            with pytest.raises(ProblemError) as twice:
                await sme.apply_for_grant("gz-2027", 1_000, "more", application_id="sme-2")
            assert twice.value.type == "/problems/duplicate_application"
            await settle(exchange.runtime)
            assert (await sme.enterprise()).city == "guiyang"
            (mine,) = await sme.applications()
            assert (mine.status, mine.granted, mine.answer) == (
                "approved",
                2_000,
                "客服模型 / a support bot",
            )
            assert [a.application_id for a in await city.programme_applications("gz-2027")] == [
                "sme-1"
            ]

            schedule = await dc.deposit_schedule(
                "H100-80G", "GZ", 3, "2027-12-01", to_hour=2, reserve_price=1_000
            )
            assert schedule.contracts == [GZ0, "H100-80G.GZ.20271201T01"]
            with pytest.raises(ProblemError) as too_far:
                await dc.deposit_schedule("H100-80G", "GZ", 3, "2027-12-05", to_hour=2)
            # An hour of the body past the listing horizon: 422, the risk stage's code.
            assert (too_far.value.status, too_far.value.code) == (422, "unknown_contract")

            # The supermarket's net price: what this buyer's grant would pay of one unit now.
            await settle(exchange.runtime)
            for_sme = await sme.contract(GZ0)
            assert (for_sme.best_ask, for_sme.best_ask_net) == (1_000, 700)
            anonymous = await exchange.client.get(f"/v1/contracts/{GZ0}")
            assert anonymous.json()["best_ask_net"] == 1_000

            await sme.deposit_cash(10_000)
            await sme.place_order(GZ0, "buy", 1_000, 2, voucher="gz-2027")
            await settle(exchange.runtime)
            invoices = await sme.invoices()
            line = invoices.invoices[0].contracts[0]
            assert (line.gross, line.voucher, line.paid) == (2_000, 600, 1_400)
            with pytest.raises(ProblemError) as held:
                await sme.withdraw_cash(10_000)
            assert held.value.type == "/problems/insufficient_funds"
            done = await sme.withdraw_cash(8_600)
            assert done.status == "done"
            await settle(exchange.runtime)
            assert (await sme.account()).cash.available == 0
            assert await sme.deliveries() == []
            report = await city.programme_report("gz-2027")
            assert (report.committed, report.remaining) == (600, 9_400)
