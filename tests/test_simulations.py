"""The simulation end to end: a small scenario through the real pipeline, its report's figures
checked against a second, simpler computation straight from the stored events."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from cx.cli import main
from cx.simulation import open_simulated_exchange, settings_for
from exchange.adapters.inprocess_log import InProcessLog
from exchange.domain.accounts import Accounts
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import (
    ApplicationInfoRequested,
    ApplicationRejected,
    ApplicationSupplemented,
    GrantApplied,
    GrantApproved,
    event_from_dict,
)
from exchange.log import LogRecord
from exchange.pipeline import RiskRunner, Topics, partition_for
from settlement.audit import audit, audit_ledger
from settlement.sql_store import open_event_store
from simulations import scenario as scenarios
from simulations.analysis import JobOutcome, _limits, optimal_allocation, start_of
from simulations.run import compare, prepare, simulate
from simulations.world import build

EAST = {"YRD", "JJJ", "GBA"}


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default: no Kafka, no PostgreSQL."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)


async def _run(out: Path) -> dict[str, Any]:
    prepare(out)
    return await simulate("tiny", None, 3, out, open_simulated_exchange, progress=lambda _: None)


def _events(out: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(out / "data" / "events.sqlite3") as db:
        return [json.loads(data) for (data,) in db.execute("SELECT data FROM events")]


def _close(a: float | None, b: float | None) -> bool:
    assert a is not None
    assert b is not None
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


@pytest.mark.usefixtures("embedded")
async def test_a_small_market_reports_figures_the_event_store_confirms(tmp_path: Path) -> None:
    figures = await _run(tmp_path)
    truth = json.loads((tmp_path / "truth.json").read_text())
    events = _events(tmp_path)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_type[event["type"]].append(event)
    for name in ("report.md", *[f"{n}.png" for n in ("utilisation", "voucher_burn_down")]):
        assert (tmp_path / name).stat().st_size > 0

    # The market did what a market does: trades, deliveries, grants and vouchers.
    trades = by_type["TradeExecuted"]
    assert len(trades) > 20
    assert by_type["DeliverySettled"]
    assert by_type["BlockAccepted"], "planner buyers placed blocks"
    assert by_type["GrantApproved"]

    # Volume and prices per region, recomputed from the raw trades.
    assert figures["trades"] == len(trades)
    assert figures["volume_card_hours"] == sum(t["quantity"] for t in trades)
    per_region: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for t in trades:
        card, region, _ = t["symbol"].split(".")
        if card == "H100-80G":
            per_region[region][0] += t["price"] * t["quantity"]
            per_region[region][1] += t["quantity"]
    for region, (amount, units) in per_region.items():
        assert _close(figures["prices"]["by_region"][region], amount / units)

    # Utilisation: capacity owed at delivery over capacity deposited and not recalled.
    deposited = sum(e["quantity"] for e in by_type["CapacityDeposited"]) - sum(
        e["quantity"] for e in by_type["CapacityWithdrawn"]
    )
    owed = sum(e["quantity"] for e in by_type["DeliveryObligation"])
    assert figures["deposited_card_hours"] == deposited
    assert _close(figures["utilisation"]["overall"]["realised"], owed / deposited)

    # Vouchers: what each programme's grants committed, folded by the exchange's own money
    # rules, against the report's reading of the journal.
    accounts = Accounts()
    for event in sorted(events, key=lambda e: (e["ts"], e["event_id"])):
        accounts.apply(event_from_dict(event))
    committed: dict[str, int] = defaultdict(int)
    for (programme_id, _), grant in accounts.grants.items():
        committed[programme_id] += grant.committed
    for programme_id, p in figures["vouchers"].items():
        assert p["used"] - p["clawed_back"] == committed[programme_id]
        assert p["granted"] == sum(
            g["limit"] for g in by_type["GrantApproved"] if g["programme_id"] == programme_id
        )
    assert sum(committed.values()) > 0

    # Jobs served and the realised surplus, from the trades of each job's orders and what
    # was delivered to its buyer in each contract.
    job_of = {order: job for job in truth["jobs"] for order in job["orders"]}
    bought: dict[str, int] = defaultdict(int)
    units: dict[tuple[str, str], int] = defaultdict(int)
    for t in trades:
        if t["buy_order_id"] in job_of:
            bought[job_of[t["buy_order_id"]]["job_id"]] += t["quantity"]
            units[(t["buyer_id"], t["symbol"])] += t["quantity"]
    delivered_share: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for s in by_type["DeliverySettled"]:
        delivered_share[(s["buyer_id"], s["symbol"])][0] += s["delivered"]
        delivered_share[(s["buyer_id"], s["symbol"])][1] += s["quantity"]
    value = 0.0
    for t in trades:
        job = job_of.get(t["buy_order_id"])
        if job is None:
            continue
        done, owed_units = delivered_share[(t["buyer_id"], t["symbol"])]
        region = t["symbol"].split(".")[1]
        value += (job["value"] - job["adders"][region]) * t["quantity"] * done / owed_units
    cost = {p["account_id"]: p["cost"] for p in truth["providers"]}
    produced = sum(cost[s["provider_id"]] * s["delivered"] for s in by_type["DeliverySettled"])
    assert _close(figures["surplus"]["realised"], value - produced)
    in_full = {key for key, (done, owed_units) in delivered_share.items() if done == owed_units}
    small = [j for j in truth["jobs"] if j["kind"] in ("sme", "opc")]
    served = sum(
        bought[j["job_id"]] == j["cards"] * j["hours"]
        and all(key in in_full for key in units if key[0] == j["buyer_id"])
        for j in small
    )
    assert figures["buyers"]["small"]["served"] == served
    assert figures["buyers"]["small"]["jobs"] == len(small)

    # The maximum bounds what happened, and the market without scheduling does worse.
    surplus = figures["surplus"]
    assert 0 < surplus["realised"] <= surplus["maximum"] + 1e-6
    assert surplus["without_scheduling_optimum"] <= surplus["maximum"] + 1e-6
    assert 0 < surplus["efficiency"] <= 1


@pytest.mark.usefixtures("embedded")
async def test_the_auctions_serve_small_firms_at_least_as_well_within_every_limit(
    tmp_path: Path,
) -> None:
    # Two days of the baseline: the second day's contracts go through the auction on the
    # first day at noon, with the needs of the jobs that fit that day; with intraday
    # auctions, the jobs that come later go through those, every hour.
    runs = await compare("baseline", 2, 1, tmp_path, open_simulated_exchange, lambda _: None)
    continuous, day_ahead, intraday = runs["continuous"], runs["day-ahead"], runs["intraday"]
    assert (tmp_path / "comparison.md").stat().st_size > 0
    assert (tmp_path / "comparison.png").stat().st_size > 0

    # The auction ran and traded: needs went in and some were filled there.
    auction = day_ahead["day_ahead"]
    assert auction["groups"] > 10
    assert auction["groups_filled"] > 0
    assert auction["card_hours"] > 0
    assert all(a["status"] == "optimal" for a in auction["auctions"].values())
    assert continuous["day_ahead"]["groups"] == 0
    hourly = intraday["day_ahead"]
    assert any("T" in name for name in hourly["auctions"])
    assert hourly["groups"] > auction["groups"]

    # Nobody did worse than the limit it set: no buy above its limit, no sell below it, no
    # block above its limit on average, no job paying above its value, no provider below cost.
    for figures in (continuous, day_ahead, intraday):
        assert set(figures["limits"].values()) == {0}, figures["limits"]

    # Everything is accounted for: cash, capacity, holds, vouchers and the journal.
    for mode, hourly_too in (("day-ahead", False), ("intraday", True)):
        world = build(scenarios.load("baseline"), 1, 2, day_ahead=True, intraday=hourly_too)
        settings = settings_for(world, tmp_path / mode / "data")
        store = open_event_store(settings.event_store_url())
        try:
            for check in (audit, audit_ledger):
                report = await check(store, settings.catalogue(), settings.market_partitions)
                assert report.discrepancies == [], (mode, report.discrepancies[:3])
        finally:
            await store.close()

    # The auctions serve small firms' jobs at least as well as continuous trading alone.
    small = [runs[mode]["buyers"]["small"] for mode in ("continuous", "day-ahead", "intraday")]
    assert small[0]["jobs"] == small[1]["jobs"] == small[2]["jobs"]
    assert small[2]["served"] >= small[1]["served"] >= small[0]["served"]
    assert intraday["surplus"]["efficiency"] >= day_ahead["surplus"]["efficiency"]
    assert day_ahead["surplus"]["efficiency"] >= continuous["surplus"]["efficiency"]


def test_the_same_seed_gives_the_same_report_in_any_process(tmp_path: Path) -> None:
    # Separate processes with different string hashing: nothing may depend on set order or
    # on how the stages' batches happen to interleave.
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    reports = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        subprocess.run(
            [sys.executable, "-c", "from cx.cli import main; raise SystemExit(main())",
             "simulate", "--scenario", "tiny", "--seed", "3", "--out", str(out)],
            env={**env, "PYTHONHASHSEED": hash_seed},
            check=True,
            capture_output=True,
        )  # fmt: skip
        figures = json.loads((out / "figures.json").read_text())
        del figures["run"]["seconds"]
        reports.append(figures)
    assert reports[0] == reports[1]
    assert reports[0]["trades"] > 20


def test_grants_from_one_commands_partition_travel_through_one_orders_partition() -> None:
    # Risk stamps a grant with its commands position; the enterprise's partition drops a grant
    # whose position is not above the last one it saw from there, so grants must come back in
    # order, through one matching partition, whichever account they are for.
    topics = Topics.named("t", 4, 4)
    runner = RiskRunner(InProcessLog(), topics, default_catalogue())
    routes = set()
    for n, account in enumerate(["a-1", "b-2", "c-3", "d-4", "e-5"]):
        grant = GrantApproved(
            event_id=f"t.commands:2:{n}:0", ts=0, application_id=f"app-{n}", programme_id="p",
            admin_id="admin",
            account_id=account, limit=1, kind="sme", city="Hangzhou", related_accounts=[],
            rate_bps=3000, cap_per_contract=1, classes=[], regions=[], valid_from=0,
            valid_until=1,
        )  # fmt: skip
        record = LogRecord(topics.commands, 2, n, 0, None, b"")
        routes.add(runner._route(grant, record))
    assert len({partition_for(a, 4) for a in ["a-1", "b-2", "c-3", "d-4", "e-5"]}) > 1
    assert len(routes) == 1


def test_an_applications_steps_travel_with_its_grant_through_one_orders_partition() -> None:
    # The applications projection folds an application's steps in stored order: a step
    # stored after the grant (an answer, say) must not have been decided after it, so every
    # step travels the way the grant does, whichever account applied.
    topics = Topics.named("t", 4, 4)
    runner = RiskRunner(InProcessLog(), topics, default_catalogue())
    key = {"event_id": "t.commands:2:0:0", "ts": 0, "application_id": "a", "programme_id": "p"}
    steps = [
        GrantApplied(**key, account_id="b-2", amount=1, intended_use="u", name="n",
                     uscc="u", kind="sme", city="c"),
        ApplicationInfoRequested(**key, account_id="b-2", admin_id="admin", question="q"),
        ApplicationSupplemented(**key, account_id="b-2", answer="a"),
        ApplicationRejected(**key, account_id="b-2", admin_id="admin", reason="r"),
        GrantApproved(**key, admin_id="admin", account_id="b-2", limit=1, kind="sme",
                      city="c", related_accounts=[], rate_bps=3000, cap_per_contract=1,
                      classes=[], regions=[], valid_from=0, valid_until=1),
    ]  # fmt: skip
    record = LogRecord(topics.commands, 2, 0, 0, None, b"")
    assert {runner._route(step, record) for step in steps} == {2}
    assert partition_for("b-2", 4) != 2


async def test_on_postgresql_the_figures_match_the_embedded_run(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    on_postgres = await _run(tmp_path / "postgres")
    monkeypatch.delenv("DATABASE_URL")
    embedded = await _run(tmp_path / "sqlite")
    for figures in (on_postgres, embedded):
        del figures["run"]["seconds"]
    assert on_postgres == embedded


def test_the_optimal_allocation_matches_a_hand_computation() -> None:
    # One western provider with 3 card-hours at 10 fen; two eastern jobs in the same hour:
    # A is worth 30 less a 5 latency cost for 2 cards, B 12 less 5 for 2 cards. The best use
    # gives A its 2 cards (2 x (25 - 10)) and B the third (7 - 10 < 0: no), so 30 fen.
    symbol = "H100-80G.GZ.20270115T16"
    hour = start_of(symbol)
    adders = {r: (0 if r == "YRD" else 5) for r in ("YRD", "JJJ", "GBA", "GZ", "NMG", "GS", "NX")}
    job = {
        "home": "YRD",
        "hours": 1,
        "earliest_ms": hour,
        "deadline_ms": hour + 3_600_000,
        "adders": adders,
        "interruptible_ok": False,
    }
    truth = {
        "providers": [{"account_id": "p", "cost": 10}],
        "jobs": [
            {**job, "job_id": "A", "cards": 2, "value": 30},
            {**job, "job_id": "B", "cards": 2, "value": 12},
        ],
    }
    flexible = optimal_allocation(truth, {("p", symbol): 3}, restricted=False)
    assert flexible.surplus == pytest.approx(30)
    assert flexible.served == pytest.approx({"A": 2, "B": 0})
    assert flexible.sold == pytest.approx({("p", symbol): 2})
    # Without scheduling, eastern jobs cannot use western capacity at all.
    assert optimal_allocation(truth, {("p", symbol): 3}, restricted=True).surplus == 0


def test_a_voucher_holder_paying_its_net_limit_is_not_counted_above_its_value() -> None:
    # A firm with a 30% voucher bids its value, 20.10 元 a card-hour, net of the voucher: its
    # 5 cards trade at 20.50 (102.50 元), of which the voucher pays 30.75 and the firm 71.75,
    # under the 100.50 its value allows. Another firm without a voucher pays 20.50 for a card
    # worth 20.10 to it: above its value.
    def job(job_id: str, gross: int, voucher_paid: int, bought: float) -> JobOutcome:
        outcome = JobOutcome(job_id, "sme", "direct", "JJJ", voucher_paid > 0, bought, 2010)
        outcome.bought, outcome.gross, outcome.voucher_paid = bought, gross, voucher_paid
        return outcome

    jobs = {"net": job("net", 10250, 3075, 5.0), "gross": job("gross", 2050, 0, 1.0)}
    assert _limits([], jobs, {})["jobs_paid_above_value"] == 1
    del jobs["gross"]
    assert _limits([], jobs, {})["jobs_paid_above_value"] == 0


def test_every_shipped_scenario_loads_and_variants_extend_the_baseline() -> None:
    names = scenarios.available()
    assert {"baseline", "demand_spike", "western_surge", "delivery_failure", "vouchers_off"} <= set(
        names
    )
    baseline = scenarios.load("baseline")
    for name in names:
        loaded = scenarios.load(name)
        assert loaded.name == name
        assert loaded.list_price == baseline.list_price
    assert scenarios.load("vouchers_off").programmes == ()
    assert scenarios.load("delivery_failure").shocks[0].provider == "prov-GZ-1"
    with pytest.raises(scenarios.ScenarioError, match="no scenario"):
        scenarios.load("no-such-scenario")


def test_an_unknown_scenario_is_a_usage_error_listing_the_shipped_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"

    status = main(["simulate", "--scenario", "nosuch", "--out", str(out)])

    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("cx simulate: no scenario 'nosuch'; shipped: "), error
    assert all(name in error for name in scenarios.available())
    assert "Traceback" not in error
    assert not out.exists()


def test_a_scenario_file_that_is_not_toml_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")

    status = main(["simulate", "--scenario", str(broken), "--out", str(tmp_path / "report")])

    assert status == 2
    assert capsys.readouterr().err.startswith(f"cx simulate: {broken} is not valid TOML: ")
