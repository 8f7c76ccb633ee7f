"""SQL injection: hostile strings through every text field of the API and the CLI's queries.

On SQLite (embedded) and real PostgreSQL, classic injection strings, unicode, NUL bytes and very
long strings go into account ids, order ids, client order ids, symbols, history and report
filters, stream and key ids, idempotency keys, key labels and operators' reasons. Each request
gets a clean answer: a 4xx problem with a specific type, an empty result, or, where the text is
legal (a key's label, an operator's reason, an idempotency key), it is stored and read back
verbatim. Afterwards every table is intact, the keys still work, and the audit of the event
store finds nothing wrong. `cx history`, `cx replay` and `cx keys` get the same strings.

tests/test_sql_is_parameterised.py checks the source for SQL built from strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, inspect, select

from api.keys import Role, api_keys
from api.problems import PROBLEM
from cx.cli import main as cx
from cx.settings import Settings
from exchange.domain.catalogue import default_catalogue
from settlement.audit import audit
from settlement.schema import events
from tests.conftest import fresh_database
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

PAYLOADS = (
    "'; DROP TABLE events; --",
    "' OR '1'='1",
    '" OR ""="',
    "1; DELETE FROM api_keys WHERE '1'='1",
    "x' UNION SELECT key_hash FROM api_keys --",
    "'); SELECT pg_sleep(10); --",
    "$$; DROP TABLE events; $$",
    "%' OR 1=1 --",
    "\\'; DROP TABLE orders; --",
    "帐户-ünïcödé-🚀-\u202e",
    "nul\x00byte",
    "9" * 30,
    "x" * 10_000,
)
EXPECTED_TABLES = {
    "events",
    "consumer_offsets",
    "api_keys",
    "idempotent_requests",
    "cash_balances",
    "capacity_balances",
    "positions",
    "orders",
    "trades",
    "checkpoints",
    "snapshots",
}
GZ0 = "H100-80G.GZ.20271201T00"
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _header_safe(text: str) -> bool:
    """HTTP headers carry printable latin-1 only; clients cannot even send the rest."""
    return text.isprintable() and all(ord(c) < 256 for c in text)


@pytest.fixture(params=["sqlite", "postgres"])
async def hostile_settings(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Settings]:
    if request.param == "sqlite":
        yield settings_for(tmp_path)
        return
    postgres_url: str = request.getfixturevalue("postgres_url")
    async with fresh_database(postgres_url) as url:
        yield settings_for(tmp_path, database_url=url)


class Answers:
    """Every answer must be clean: below 500, and a specific problem when refused."""

    def __init__(self) -> None:
        self.count = 0
        self.refused = 0

    def check(self, response: httpx.Response, what: str) -> httpx.Response:
        self.count += 1
        where = f"{response.request.method} {what}: {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, where
        if response.status_code >= 400:
            self.refused += 1
            assert response.headers["content-type"] == PROBLEM, where
            problem = response.json()
            assert problem["type"].startswith("/problems/"), where
            assert problem["type"] != "/problems/http-error", where
            assert problem["detail"], where
        return response


def _rows(response: httpx.Response) -> list[str]:
    """The rows of a JSON list or JSON-lines answer, each as JSON text."""
    text = response.text.strip()
    if text.startswith("["):
        return [json.dumps(row, ensure_ascii=False) for row in json.loads(text)]
    return [json.dumps(json.loads(line), ensure_ascii=False) for line in text.splitlines() if line]


async def _table_counts(exchange: RunningExchange) -> dict[str, int]:
    engine = exchange.runtime.store.engine
    async with engine.connect() as connection:
        names = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
        assert names >= EXPECTED_TABLES, EXPECTED_TABLES - names
        keys = (await connection.execute(select(func.count()).select_from(api_keys))).scalar_one()
        stored = (await connection.execute(select(func.count()).select_from(events))).scalar_one()
    return {"api_keys": keys, "events": stored}


async def test_injection_strings_get_clean_answers_and_change_nothing(
    hostile_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = Answers()
    async with running_exchange(hostile_settings) as exchange:
        buyer = await exchange.as_("inj-buyer", Role.BUYER)
        provider = await exchange.as_("inj-provider", Role.PROVIDER)
        operator = await exchange.operator()
        deposit = {"kind": "cash", "amount": 10**8}
        assert (await buyer.post("/v1/accounts/inj-buyer/deposits", json=deposit)).is_success
        capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 100}
        assert (await provider.post("/v1/accounts/inj-provider/deposits", json=capacity)).is_success
        ask = {"symbol": GZ0, "side": "sell", "price": 1800, "quantity": 5}
        assert (await provider.post("/v1/orders", json=ask)).status_code == 201
        await settle(exchange.runtime)
        before = await _table_counts(exchange)
        own_account = (await buyer.get("/v1/accounts/inj-buyer")).json()

        for payload in PAYLOADS:
            await _through_the_api(exchange, answers, payload, buyer, operator)

        await settle(exchange.runtime)
        after = await _table_counts(exchange)
        assert after["api_keys"] >= before["api_keys"]
        assert after["events"] >= before["events"]
        # The keys still work, and nobody's money moved but by the legal orders placed.
        assert (await buyer.get("/v1/me")).status_code == 200
        assert (await operator.get("/v1/me")).status_code == 200
        account = (await buyer.get("/v1/accounts/inj-buyer")).json()
        cash = account["cash"]["available"] + account["cash"]["held"]
        bought = sum(p["quantity"] for p in account["positions"]) * 1800
        assert cash + bought == own_account["cash"]["available"]
        report = await audit(
            exchange.runtime.store, default_catalogue(), exchange.runtime.topics.market_partitions
        )
        assert report.discrepancies == [], [str(d) for d in report.discrepancies]
    assert answers.refused > len(PAYLOADS) * 10, answers.refused

    # The CLI's queries, on the same store (the exchange stopped).
    monkeypatch.setenv("CX_DATA_DIR", str(hostile_settings.data_dir))
    if hostile_settings.database_url:
        monkeypatch.setenv("DATABASE_URL", hostile_settings.database_url)
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    for payload in PAYLOADS:
        if "\x00" in payload:
            continue  # an argument cannot hold a NUL byte
        await _through_the_cli(payload)
    code, listed, _ = await _cx("keys", "list", "--all")
    assert code == 0
    assert "inj-buyer" in listed


async def _through_the_api(
    exchange: RunningExchange,
    answers: Answers,
    payload: str,
    buyer: httpx.AsyncClient,
    operator: httpx.AsyncClient,
) -> None:
    check = answers.check
    quoted = quote(payload, safe="")  # one path segment, percent-encoded
    short = payload[:60]

    # Path parameters.
    for client in (buyer, operator):
        check(await client.get(f"/v1/accounts/{quoted}"), "account path")
        check(
            await client.post(
                f"/v1/accounts/{quoted}/deposits", json={"kind": "cash", "amount": 100}
            ),
            "deposit path",
        )
    for method in ("GET", "DELETE"):
        check(await buyer.request(method, f"/v1/orders/{quoted}"), "order path")
    check(await buyer.patch(f"/v1/orders/{quoted}", json={"price": 1790}), "amend path")
    for tail in ("", "/book", "/trades", "/candles", "/stats"):
        check(await exchange.anonymous.get(f"/v1/contracts/{quoted}{tail}"), "contract path")
    check(await operator.get(f"/v1/admin/streams/{quoted}"), "stream path")
    check(await operator.delete(f"/v1/admin/keys/{quoted}"), "key path")
    check(
        await operator.post(f"/v1/admin/contracts/{quoted}/halt", json={"reason": "x"}),
        "control path",
    )

    # Query filters.
    for path, params in (
        ("/v1/orders", {"account_id": payload}),
        ("/v1/orders", {"status": payload}),
        ("/v1/fills", {"account_id": payload}),
        ("/v1/obligations", {"account_id": payload}),
        ("/v1/reports/trades", {"account_id": payload}),
        ("/v1/reports/trades", {"symbol": payload}),
        ("/v1/admin/history", {"contract": payload}),
        ("/v1/admin/history", {"account_id": payload}),
        ("/v1/admin/history", {"order_id": payload}),
        ("/v1/admin/history", {"contract": short}),
        ("/v1/admin/replay", {"until": payload}),
        ("/v1/admin/replay", {"contract": payload}),
        ("/v1/admin/keys", {"account_id": payload}),
        ("/v1/contracts/" + GZ0 + "/candles", {"interval": payload}),
    ):
        response = check(await operator.get(path, params=params), f"{path} {list(params)}")
        if response.status_code == 200:
            # Only rows that name the text itself (an account of that name is legal); any
            # other row would be an injection that worked.
            for row in _rows(response):
                assert payload in row, (path, params, row[:300])
    check(await buyer.get("/v1/orders", params={"account_id": payload}), "own orders filter")

    # Bodies.
    order: dict[str, Any] = {"symbol": GZ0, "side": "buy", "price": 1800, "quantity": 1}
    for field in ("symbol", "side", "client_order_id", "account_id", "time_in_force"):
        check(await buyer.post("/v1/orders", json={**order, field: payload}), f"order {field}")
    check(
        await buyer.post(
            "/v1/block-orders", json={**order, "symbols": [payload, GZ0], "quantity": 1}
        ),
        "block symbols",
    )
    check(
        await buyer.post(
            "/v1/accounts/inj-buyer/deposits",
            json={"kind": "capacity", "symbol": payload, "quantity": 1},
        ),
        "deposit symbol",
    )
    check(
        await operator.post(
            "/v1/admin/keys", json={"account_id": payload, "role": "buyer", "label": "x"}
        ),
        "key account",
    )

    # Legal text is stored verbatim: a key's label, an operator's reason, an idempotency key.
    # NUL is legal nowhere (PostgreSQL cannot store it): refused up front, on both stores.
    legal = "\x00" not in payload
    label = payload[:200]
    made = check(
        await operator.post(
            "/v1/admin/keys", json={"account_id": "inj-labels", "role": "buyer", "label": label}
        ),
        "key label",
    )
    reason = payload[:500]
    halted = check(
        await operator.post(f"/v1/admin/contracts/{GZ0}/halt", json={"reason": reason}),
        "halt reason",
    )
    if not legal:
        for refused in (made, halted):
            assert refused.status_code == 422, refused.text
            assert refused.json()["detail"] == "text in a request may not contain NUL (U+0000)"
        return
    assert made.status_code == 201, made.text
    key_id = made.json()["key_id"]
    listed = check(await operator.get("/v1/admin/keys", params={"account_id": "inj-labels"}), "")
    assert {k["key_id"]: k["label"] for k in listed.json()}[key_id] == label
    assert check(await operator.delete(f"/v1/admin/keys/{key_id}"), "revoke").is_success

    assert halted.is_success, halted.text
    assert check(
        await operator.post(f"/v1/admin/contracts/{GZ0}/resume", json={"reason": "ok"}), "resume"
    ).is_success
    await settle(exchange.runtime)
    stream = check(
        await operator.get(f"/v1/admin/streams/contract-{GZ0}", params={"limit": 1000}), "stream"
    ).json()
    reasons = [e["data"].get("reason") for e in stream if e["type"] == "MarketControlRequested"]
    assert reason in reasons, (reason[:40], [r[:40] for r in reasons if r])

    if _header_safe(payload):
        key = payload[:200]
        headers = {"Idempotency-Key": key}
        first = check(await buyer.post("/v1/orders", json=order, headers=headers), "idem key")
        again = check(await buyer.post("/v1/orders", json=order, headers=headers), "idem again")
        assert first.status_code == 201, first.text
        assert again.json()["order_id"] == first.json()["order_id"]
        assert again.headers.get("Idempotent-Replayed") == "true"
    if len(payload) > 200 and _header_safe(payload):
        check(
            await buyer.post("/v1/orders", json=order, headers={"Idempotency-Key": payload}),
            "long idempotency key",
        )


async def _cx(*argv: str) -> tuple[int, str, str]:
    """Run `cx ARGV` in this process (in a thread: it runs its own event loop)."""
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                return cx(list(argv))
            except SystemExit as exit_:
                return int(exit_.code or 0)

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


def _only_naming(out: str, payload: str) -> None:
    """Every line printed names the text itself (a legal account id may have rows)."""
    for line in out.splitlines():
        assert payload in line, (payload[:40], line[:300])


async def _through_the_cli(payload: str) -> None:
    where = payload[:40]
    code, out, err = await _cx(
        "history", "--account", payload, "--order", payload, "--contract", payload
    )
    assert code == 0, (where, code, err[-500:])
    assert out == ""  # no event is at once of that contract, account and order
    code, out, err = await _cx("history", "--account", payload)
    assert code == 0, (where, code, err[-500:])
    _only_naming(out, payload)
    code, out, err = await _cx("history", "--since", payload)
    assert code == 2, (where, code, err[-500:])  # not a time, or out of range
    assert "Traceback" not in err, err[-500:]
    code, out, err = await _cx("replay", "--contract", payload)
    assert code == 2, (where, code, err[-500:])
    code, out, err = await _cx("replay", "--until", payload)
    assert code in (0, 2), (where, code, err[-500:])
    assert "Traceback" not in err, err[-500:]
    code, out, err = await _cx("keys", "list", "--account", payload)
    assert code == 0, (where, code, err[-500:])
    _only_naming(out, payload)
    code, out, err = await _cx("keys", "revoke", payload)
    assert code == 1, (where, code, err[-500:])
    assert "there is no key" in err
    code, out, err = await _cx("keys", "create", "--account", payload, "--role", "buyer")
    legal = IDENTIFIER.fullmatch(payload) is not None
    assert code == (0 if legal else 2), (where, code, out, err[-500:])
    assert "Traceback" not in err, err[-500:]
