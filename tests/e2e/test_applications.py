"""Enterprises register, apply for grants, answer questions, are approved or rejected, within
the platform's voucher policy and yearly budgets: every path and every refusal through the API
of the embedded default, budgets to the fen."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect

from settlement import projections as tables
from settlement.audit import audit, audit_ledger
from tests.e2e.grants import apply, register, uscc_of
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
YEAR_2027 = (1_798_761_600_000, 1_830_297_600_000)
NEW_YEAR_2028 = 1_830_268_800_000
"""2028-01-01 00:00 China Standard Time."""
ADMIN = "hz-admin"


def _programme(programme_id: str, budget: int, **terms: Any) -> dict[str, Any]:
    return {
        "programme_id": programme_id,
        "issuer": "杭州市经信局",
        "budget": budget,
        "rate_bps": 3_000,
        "cap_per_contract": 1_000,
        "cap_per_enterprise": 6_000,
        "kinds": ["sme", "opc"],
        "cities": ["hangzhou"],
        "valid_from": YEAR_2027[0],
        "valid_until": YEAR_2027[1] + 366 * 86_400_000,
        **terms,
    }


async def _admin(exchange: RunningExchange, admin: str = ADMIN) -> httpx.AsyncClient:
    return await exchange.as_(admin, "programme_admin")


async def _create(exchange: RunningExchange, programme: dict[str, Any]) -> httpx.Response:
    return await (await _admin(exchange)).post("/v1/programmes", json=programme)


def _refused(answer: httpx.Response, kind: str, *details: str) -> None:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["type"] == f"/problems/{kind}", body
    for detail in details:
        assert detail in body["detail"], body


async def _step(
    exchange: RunningExchange, who: str, role: str, application: str, step: str, body: Any
) -> httpx.Response:
    client = await exchange.as_(who, role)
    return await client.post(f"/v1/programmes/hz/applications/{application}/{step}", json=body)


async def _approve(exchange: RunningExchange, application: str, limit: int) -> httpx.Response:
    body = {"application_id": application, "limit": limit}
    return await (await _admin(exchange)).post("/v1/programmes/hz/grants", json=body)


async def _report(exchange: RunningExchange) -> dict[str, Any]:
    await settle(exchange.runtime)
    answer = await (await _admin(exchange)).get("/v1/programmes/hz/report")
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report


async def test_registration_checks_the_code_and_keeps_one_account_per_code(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        client = await exchange.as_("sme")
        path = "/v1/accounts/sme/enterprise"
        body = {"name": "杭州算力科技有限公司", "kind": "sme", "city": "hangzhou"}
        for uscc, kind, detail in (
            ("91330100716105852", "invalid_uscc", "has 18 characters, '91330100716105852' has 17"),
            ("91330100716I05852F", "invalid_uscc", "bad character 'I' at position 12"),
            ("91330100716105852E", "invalid_uscc", "wrong check character 'E' in "
             "'91330100716105852E': expected 'F'"),
        ):  # fmt: skip
            _refused(await client.post(path, json={**body, "uscc": uscc}), kind, detail)
        missing = await client.get(path)
        assert missing.status_code == 404
        assert missing.json()["type"] == "/problems/not-registered"

        registered = await client.post(path, json={**body, "uscc": "91330100716105852F"})
        assert registered.status_code == 201, registered.text
        taken = await (await exchange.as_("other")).post(
            "/v1/accounts/other/enterprise", json={**body, "uscc": "91330100716105852F"}
        )
        _refused(taken, "uscc_registered", "91330100716105852F is registered by another")
        # Registering again replaces the registration, and frees the old code.
        moved = {**body, "uscc": uscc_of("sme"), "kind": "opc", "city": "ningbo"}
        assert (await client.post(path, json=moved)).status_code == 201
        freed = await (await exchange.as_("other")).post(
            "/v1/accounts/other/enterprise", json={**body, "uscc": "91330100716105852F"}
        )
        assert freed.status_code == 201, freed.text
        await settle(exchange.runtime)

        mine = (await client.get(path)).json()
        assert {k: mine[k] for k in ("name", "uscc", "kind", "city")} == {
            "name": "杭州算力科技有限公司", "uscc": uscc_of("sme"), "kind": "opc", "city": "ningbo",
        }  # fmt: skip
        assert mine["registered_ts"] > 0
        forbidden = await client.get("/v1/accounts/other/enterprise")
        assert forbidden.status_code == 403


def test_the_enterprises_table_has_the_agreed_columns() -> None:
    columns = {c.name: (type(c.type).__name__, c.nullable, c.primary_key) for c in inspect(
        tables.enterprises).columns}  # fmt: skip
    assert columns == {
        "account_id": ("Text", False, True),
        "name": ("Text", False, False),
        "uscc": ("Text", False, False),
        "kind": ("Text", False, False),
        "city": ("Text", False, False),
        "registered_ts": ("BigInteger", False, False),
    }


async def test_an_application_asked_answered_approved_and_its_budget_to_the_fen(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        assert (await _create(exchange, _programme("hz", 10_000))).status_code == 201
        # Each refused application keeps its answer under its id: a retry gets it again.
        _refused(await apply(exchange, "sme", "hz", 5_000, "a0"), "not_registered",
                 "account sme has registered no enterprise")  # fmt: skip
        await register(exchange, "sme")
        _refused(await apply(exchange, "sme", "nowhere", 5_000, "a1"), "unknown_programme")
        _refused(await apply(exchange, "sme", "hz", 6_001, "a-big"), "not_eligible",
                 "60.01 元 is above programme hz's cap per enterprise of 60.00 元")  # fmt: skip
        applied = await apply(exchange, "sme", "hz", 5_000, "a1")
        assert applied.status_code == 201, applied.text
        assert applied.json()["id"] == "hz/a1"
        retried = await apply(exchange, "sme", "hz", 5_000, "a1")
        assert retried.status_code == 201
        assert retried.headers.get("idempotent-replayed") == "true"
        _refused(await apply(exchange, "sme", "hz", 4_000, "a2"), "duplicate_application",
                 "account sme already has application 'a1' (pending) to programme hz")  # fmt: skip
        await register(exchange, "sme-2")
        _refused(await apply(exchange, "sme-2", "hz", 1_000, "a1"), "duplicate_application",
                 "application 'a1' to programme hz exists")  # fmt: skip

        # Nothing to answer yet; the administrator asks, then approving must wait.
        answer = {"answer": "约 400 小时 / about 400 hours"}
        _refused(await _step(exchange, "sme", "buyer", "a1", "supplements", answer),
                 "application_not_pending", "is pending, not info_requested")  # fmt: skip
        question = {"question": "每月需要多少 GPU 小时 / GPU hours a month?", "request_id": "q1"}
        asked = await _step(exchange, ADMIN, "programme_admin", "a1", "info-requests", question)
        assert asked.status_code == 201, asked.text
        again = await _step(exchange, ADMIN, "programme_admin", "a1", "info-requests", question)
        assert again.headers.get("idempotent-replayed") == "true"
        _refused(await _approve(exchange, "a1", 5_000), "application_not_pending",
                 "application 'a1' to programme hz is info_requested, not pending")  # fmt: skip
        _refused(await _step(exchange, "sme-2", "buyer", "a1", "supplements", answer),
                 "unknown_application")  # fmt: skip
        await settle(exchange.runtime)
        (waiting,) = (await (await exchange.as_("sme")).get("/v1/applications")).json()
        assert (waiting["status"], waiting["question"]) == ("info_requested", question["question"])
        supplemented = await _step(exchange, "sme", "buyer", "a1", "supplements", answer)
        assert supplemented.status_code == 201, supplemented.text

        _refused(await _approve(exchange, "a9", 1), "unknown_application")
        stranger = await (await _admin(exchange, "nb-admin")).post(
            "/v1/programmes/hz/grants", json={"application_id": "a1", "limit": 1}
        )
        _refused(stranger, "not_programme_admin", "programme hz is administered by hz-admin")
        _refused(await _approve(exchange, "a1", 5_001), "above_amount_applied",
                 "a grant of 50.01 元 is above the 50.00 元 sme applied for")  # fmt: skip
        approved = await _approve(exchange, "a1", 4_500)
        assert approved.status_code == 201, approved.text
        _refused(await _approve(exchange, "a1", 4_500), "application_not_pending",
                 "application 'a1' to programme hz is approved, not pending")  # fmt: skip
        _refused(await _step(exchange, ADMIN, "programme_admin", "a1", "rejection",
                             {"reason": "too late"}), "application_not_pending")  # fmt: skip
        _refused(await apply(exchange, "sme", "hz", 1_000, "a3"), "duplicate_application",
                 "already has application 'a1' (approved)")  # fmt: skip

        report = await _report(exchange)
        assert (report["budget"], report["granted"], report["remaining"]) == (10_000, 4_500, 10_000)
        (row,) = (await (await exchange.as_("sme")).get("/v1/applications")).json()
        assert {k: row[k] for k in ("status", "amount", "granted", "answer", "kind", "city")} == {
            "status": "approved", "amount": 5_000, "granted": 4_500,
            "answer": answer["answer"], "kind": "sme", "city": "hangzhou",
        }  # fmt: skip
        assert (row["uscc"], row["name"]) == (uscc_of("sme"), "sme 科技有限公司")
        listed = await (await _admin(exchange)).get("/v1/programmes/hz/applications")
        assert [a["application_id"] for a in listed.json()] == ["a1"]
        foreign = await (await _admin(exchange, "nb-admin")).get("/v1/programmes/hz/applications")
        assert foreign.status_code == 403


async def test_rejection_eligibility_and_the_budget_refuse_and_change_nothing(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        assert (await _create(exchange, _programme("hz", 10_000))).status_code == 201
        await register(exchange, "big", kind="large")
        _refused(await apply(exchange, "big", "hz", 1_000, "b1"), "not_eligible",
                 "programme hz is for sme, opc only, not large")  # fmt: skip
        await register(exchange, "nb", city="ningbo")
        _refused(await apply(exchange, "nb", "hz", 1_000, "n1"), "not_eligible",
                 "programme hz is for enterprises of hangzhou")  # fmt: skip

        await register(exchange, "s1")
        assert (await apply(exchange, "s1", "hz", 6_000, "s1")).status_code == 201
        rejected = await _step(
            exchange,
            ADMIN,
            "programme_admin",
            "s1",
            "rejection",
            {"reason": "材料不全 / incomplete"},
        )
        assert rejected.status_code == 201, rejected.text
        _refused(await _approve(exchange, "s1", 6_000), "application_not_pending",
                 "is rejected, not pending")  # fmt: skip
        await settle(exchange.runtime)
        # Applying again under the rejected application's id gets the rejection back, with
        # its reason, however the request is named: not the first answer's "done".
        s1 = await exchange.as_("s1")
        body = {"application_id": "s1", "amount": 6_000, "intended_use": "推理 / inference"}
        for headers in ({}, {"Idempotency-Key": "again"}, {}):
            again = await s1.post("/v1/programmes/hz/applications", json=body, headers=headers)
            _refused(again, "application_rejected", "申请 's1' 已被项目 hz 的管理员驳回: "
                     "材料不全 / incomplete", "apply again under a new application_id")  # fmt: skip
            assert again.headers.get("idempotent-replayed") == "true"
            assert again.json()["request_id"] == "hz/s1"
        changed = await s1.post("/v1/programmes/hz/applications", json={**body, "amount": 1})
        _refused(changed, "idempotency-key-reused")
        # Rejected, the enterprise may apply again.
        assert (await apply(exchange, "s1", "hz", 6_000, "s1-again")).status_code == 201
        assert (await _approve(exchange, "s1-again", 6_000)).status_code == 201
        await register(exchange, "s2")
        assert (await apply(exchange, "s2", "hz", 6_000, "s2")).status_code == 201
        _refused(await _approve(exchange, "s2", 4_001), "budget_exhausted",
                 "programme hz has 40.00 元 of its ",
                 " budget left to grant, the grant asks 40.01 元")  # fmt: skip
        assert (await _approve(exchange, "s2", 4_000)).status_code == 201

        report = await _report(exchange)
        assert (report["budget"], report["granted"]) == (10_000, 10_000)
        statuses = {
            a["application_id"]: (a["status"], a["reason"], a["granted"])
            for a in (await (await _admin(exchange)).get("/v1/programmes/hz/applications")).json()
        }
        assert statuses == {
            "s1": ("rejected", "材料不全 / incomplete", None),
            "s1-again": ("approved", None, 6_000),
            "s2": ("approved", None, 4_000),
        }


async def test_the_voucher_policy_caps_programmes_and_the_operator_sets_it(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        # A programme id names one request, refused or not: each attempt has its own.
        for programme_id, terms, detail in (
            ("hz-rate", {"rate_bps": 9_000},
             "rate_bps 9000 is above the highest voucher share of 3000 bps"),
            ("hz-cap", {"cap_per_enterprise": 500_000_001, "budget": 10**9},
             "cap_per_enterprise 5,000,000.01 元 is above the highest of 5,000,000.00 元"),
            ("hz-kind", {"kinds": ["sme", "large"]},
             "kind 'large' is not eligible: the policy covers sme, opc"),
        ):  # fmt: skip
            programme = {**_programme(programme_id, 10_000), **terms}
            _refused(await _create(exchange, programme), "above_voucher_policy", detail)
        assert (await _create(exchange, _programme("hz", 10_000))).status_code == 201

        operator = await exchange.operator()
        policy = {"max_rate_bps": 2_000, "max_cap_per_enterprise": 5_000, "kinds": ["sme"],
                  "cities": ["ningbo"], "reason": "2028 政策 / policy"}  # fmt: skip
        answer = await operator.post("/v1/admin/voucher-policy", json=policy)
        assert answer.status_code == 201, answer.text
        forbidden = await (await _admin(exchange)).post("/v1/admin/voucher-policy", json=policy)
        assert forbidden.status_code == 403
        _refused(await _create(exchange, _programme("hz-2", 10_000)), "above_voucher_policy",
                 "rate_bps 3000 is above the highest voucher share of 2000 bps")  # fmt: skip
        _refused(await _create(exchange, _programme("hz-3", 10_000, rate_bps=2_000,
                                                    cap_per_enterprise=5_000)),
                 "above_voucher_policy", "kind 'opc' is not eligible")  # fmt: skip
        _refused(await _create(exchange, _programme("hz-4", 10_000, rate_bps=2_000,
                                                    cap_per_enterprise=5_000, kinds=["sme"])),
                 "above_voucher_policy", "city 'hangzhou' is not eligible")  # fmt: skip
        # The programme created before stays, but grants its enterprises no more.
        await register(exchange, "s1")
        _refused(await apply(exchange, "s1", "hz", 1_000, "s1"), "not_eligible",
                 "the voucher policy covers enterprises of ningbo only")  # fmt: skip


async def test_each_cst_calendar_year_starts_with_the_whole_budget(tmp_path: Path) -> None:
    now = [NEW_YEAR_2028 - 60_000]
    async with running_exchange(settings_for(tmp_path), clock_ms=lambda: now[0]) as exchange:
        assert (await _create(exchange, _programme("hz", 10_000))).status_code == 201
        for account in ("s1", "s2", "s3"):
            await register(exchange, account)
            assert (await apply(exchange, account, "hz", 6_000, account)).status_code == 201
        assert (await _approve(exchange, "s1", 6_000)).status_code == 201
        _refused(await _approve(exchange, "s2", 5_000), "budget_exhausted",
                 "programme hz has 40.00 元 of its 2027 budget left to grant")  # fmt: skip
        assert (await _approve(exchange, "s2", 3_000)).status_code == 201
        report = await _report(exchange)
        assert (report["budget"], report["granted"]) == (10_000, 9_000)

        now[0] = NEW_YEAR_2028
        # 2027 granted 9,000 and left 1,000, which lapses: 2028 has the whole 10,000 again.
        _refused(await _approve(exchange, "s3", 6_001), "above_amount_applied",
                 "a grant of 60.01 元 is above the 60.00 元 s3 applied for")  # fmt: skip
        assert (await _approve(exchange, "s3", 6_000)).status_code == 201
        report = await _report(exchange)
        # Pledged: 10,000 for 2027 and the 9,000 granted in it again for 2028.
        assert (report["budget"], report["granted"]) == (19_000, 15_000)
        assert report["remaining"] == 4_000 + 15_000
        # The audits count the renewal in the programme's pledge: nothing is amiss.
        store, catalogue = exchange.runtime.store, exchange.runtime.catalogue
        assert (
            await audit(store, catalogue, exchange.runtime.topics.market_partitions)
        ).discrepancies == []
        assert (
            await audit_ledger(store, catalogue, exchange.runtime.topics.market_partitions)
        ).discrepancies == []


async def _cx(exchange: RunningExchange, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`cx vouchers ...` against the running exchange, in a process of its own."""
    command = [sys.executable, "-m", "cx.cli", "vouchers", "--url", exchange.base_url, *args]
    env = {**os.environ, "CX_API_KEY": key}
    return await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


async def test_the_cli_takes_an_application_from_registration_to_approval(
    tmp_path: Path,
) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        assert (await _create(exchange, _programme("hz", 10_000))).status_code == 201
        sme = await exchange.key_for("sme")
        admin = await exchange.key_for(ADMIN, "programme_admin")

        bad = await _cx(exchange, sme, "register", "杭州算力", "91330100716105852E",
                        "--kind", "sme", "--city", "hangzhou")  # fmt: skip
        assert bad.returncode == 1
        assert "invalid_uscc: wrong check character 'E'" in bad.stderr
        assert "expected 'F'" in bad.stderr
        good = await _cx(exchange, sme, "register", "杭州算力", "91330100716105852F",
                         "--kind", "sme", "--city", "hangzhou")  # fmt: skip
        assert good.returncode == 0, good.stderr
        assert json.loads(good.stdout)["status"] == "done"
        applied = await _cx(exchange, sme, "apply", "hz", "3000", "--use", "推理", "--id", "c1")
        assert json.loads(applied.stdout)["id"] == "hz/c1", applied.stderr
        for who, step in (
            (admin, ("ask", "hz", "c1", "多少小时? / how many hours?")),
            (sme, ("answer", "hz", "c1", "300")),
            (admin, ("approve", "hz", "c1", "2500")),
        ):
            done = await _cx(exchange, who, *step)
            assert done.returncode == 0, done.stderr
        twice = await _cx(exchange, admin, "reject", "hz", "c1", "late")
        assert twice.returncode == 1
        assert "application_not_pending" in twice.stderr
        await settle(exchange.runtime)

        listed = await _cx(exchange, admin, "applications", "--programme", "hz")
        (row,) = json.loads(listed.stdout)
        assert (row["status"], row["granted"], row["answer"]) == ("approved", 2_500, "300")
        assert row["uscc"] == "91330100716105852F"


async def test_a_code_moved_to_another_account_gets_no_second_grant(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        assert (await _create(exchange, _programme("hz", 100_000))).status_code == 201
        body = {"name": "杭州算力科技有限公司", "kind": "sme", "city": "hangzhou"}
        firm = await exchange.as_("sme")
        first = {**body, "uscc": "91330100716105852F"}
        assert (await firm.post("/v1/accounts/sme/enterprise", json=first)).status_code == 201
        assert (await apply(exchange, "sme", "hz", 6_000, "a-1")).status_code == 201
        assert (await _approve(exchange, "a-1", 6_000)).status_code == 201
        # The firm takes another code for its account and registers its own on a second one.
        other = {**body, "uscc": uscc_of("sme")}
        assert (await firm.post("/v1/accounts/sme/enterprise", json=other)).status_code == 201
        second = await exchange.as_("sme-2")
        assert (await second.post("/v1/accounts/sme-2/enterprise", json=first)).status_code == 201

        again = await apply(exchange, "sme-2", "hz", 6_000, "a-2")
        _refused(again, "duplicate_application", "91330100716105852F")
        report = await _report(exchange)
        assert report["granted"] == 6_000
