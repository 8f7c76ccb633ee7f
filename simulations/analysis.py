"""The report's figures, computed from the event store after a run.

Everything the exchange did is read back from the stored events and the ledger's journal
(`settlement`'s tables): trades, deposits, obligations, settlements, grants and voucher legs.
The agents' bookkeeping is not used. What only the agents know, and the exchange cannot (a
job's value, window and latency costs, a provider's marginal cost), comes from the run's
`truth.json`, and only for the surplus and the counterfactuals.

The maximum surplus is a linear programme over units (`optimal_allocation`): any job's
card-hours may go to any provider's deposited card-hour of an acceptable class and region
inside the job's window, at most the job's cards in any hour and its cards x hours in all,
worth the job's value less its latency cost, costing the provider's marginal cost. That is a
transportation problem, so its optimum is integral. It relaxes one rule of the real market (a
job's hours need not be consecutive), so it bounds from above what any allocation could
achieve, and the efficiency it gives is conservative. The same programme, with each job
restricted to its home hub and its preferred hours (the earliest it can start), is the
counterfactual market without the exchange's cross-region and cross-hour scheduling.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix
from sqlalchemy import select

from exchange.domain.catalogue import cst_day_start_ms, family_of, parse_symbol, to_utc_ms
from exchange.domain.messages import (
    AnyEvent,
    BlockAccepted,
    CapacityDeposited,
    CapacityWithdrawn,
    DayAheadAuctionCompleted,
    DeliveryObligation,
    DeliverySettled,
    GrantApproved,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderRejected,
    ProgrammeCreated,
    RequestRejected,
    TradeExecuted,
    event_from_dict,
)
from exchange.domain.performance import STANDARD
from settlement.projections import journal
from settlement.sql_store import SqlEventStore
from simulations.scenario import EAST, INTERRUPTIBLE, REGIONS, WEST

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass
class Stored:
    """The run's events and journal legs, as read from the event store."""

    events: list[AnyEvent]
    legs: list[tuple[str, str, int, str, int]]
    """(entry id, kind, log time, ledger account, amount) of every journal leg."""


async def read_store(store: SqlEventStore, prefix: str) -> Stored:
    """Every event and journal leg of the run whose topics start with `prefix`."""
    mine = f"{prefix}."
    events: list[AnyEvent] = []
    after = 0
    while True:
        batch = await store.read_all(after, 5000)
        if not batch:
            break
        after = batch[-1].position
        events.extend(event_from_dict(e.data) for e in batch if e.event_id.startswith(mine))
    query = (
        select(
            journal.c.entry_id, journal.c.kind, journal.c.ts, journal.c.account, journal.c.amount
        )
        .where(journal.c.entry_id.startswith(mine))
        .order_by(journal.c.position, journal.c.leg)
    )
    async with store.engine.connect() as connection:
        legs = [
            (entry_id, kind, ts, account, amount)
            for entry_id, kind, ts, account, amount in await connection.execute(query)
        ]
    return Stored(events, legs)


def start_of(symbol: str) -> int:
    """The delivery start of a contract (ms)."""
    return to_utc_ms(parse_symbol(symbol).delivery_start)


def region_of(symbol: str) -> str:
    """The region of a contract."""
    return family_of(symbol).split(".")[1]


def class_of(symbol: str) -> str:
    """The resource class of a contract."""
    return symbol.split(".", 1)[0]


def factor_of(symbol: str) -> float:
    """Standard card-hours in one unit of the contract."""
    factor = STANDARD.factor(class_of(symbol))
    return float(factor if factor is not None else Fraction(1))


# The figures ----------------------------------------------------------------------------------


@dataclass
class JobOutcome:
    """What a job got, from the trades of its orders and the settlements of what it held."""

    job_id: str
    kind: str
    strategy: str
    home: str
    voucher: bool
    required: float
    """Standard card-hours the job needs."""
    limit: int = 0
    """The job's value per card-hour: the most it would pay anywhere (fen)."""
    bought: float = 0.0
    delivered: float = 0.0
    gross: int = 0
    """Fen paid in trades."""
    voucher_paid: int = 0
    refunded: int = 0
    """Refunds, penalties received, less vouchers clawed back, fen."""
    value: float = 0.0
    """The job's value of what was delivered, less latency costs (fen)."""
    regions: dict[str, float] = field(default_factory=dict)

    @property
    def served(self) -> bool:
        """Delivered in full (inside its window, as every order of a job is)."""
        return self.delivered >= self.required - 1e-9


def analyse(stored: Stored, truth: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the report, JSON-ready."""
    start_ms = truth["start_ms"]
    days = truth["days"]
    events = stored.events
    trades = [e for e in events if isinstance(e, TradeExecuted)]
    settled = [e for e in events if isinstance(e, DeliverySettled)]
    deposits = _deposits(events)
    figures: dict[str, Any] = {
        "scenario": truth["scenario"],
        "seed": truth["seed"],
        "days": days,
        "events": len(events),
        "trades": len(trades),
        "volume_card_hours": sum(t.quantity for t in trades),
        "deposited_card_hours": sum(deposits.values()),
        "rejections": _count_reasons(
            e for e in events if isinstance(e, OrderRejected | RequestRejected)
        ),
        "cancellations": _count_reasons(e for e in events if isinstance(e, OrderCancelled)),
    }
    figures["prices"] = _prices(trades, start_ms, days)
    jobs = _job_outcomes(stored, truth, trades, settled)
    figures["buyers"] = _buyer_figures(jobs, truth)
    figures["vouchers"] = _voucher_figures(stored)
    providers = {p["account_id"]: p for p in truth["providers"]}
    produced = sum(
        providers[s.provider_id]["cost"] * s.delivered * factor_of(s.symbol)
        for s in settled
        if s.provider_id in providers
    )
    realised = sum(j.value for j in jobs.values()) - produced
    flexible = optimal_allocation(truth, deposits, restricted=False)
    restricted = optimal_allocation(truth, deposits, restricted=True)
    figures["surplus"] = {
        "realised": realised,
        "maximum": flexible.surplus,
        "without_scheduling_optimum": restricted.surplus,
        "efficiency": realised / flexible.surplus if flexible.surplus > 0 else None,
        "without_scheduling_efficiency": (
            restricted.surplus / flexible.surplus if flexible.surplus > 0 else None
        ),
    }
    sold = _sold(events)
    figures["utilisation"] = {
        "realised": _utilisation(sold, deposits, start_ms, days),
        "without_scheduling": _utilisation(restricted.sold, deposits, start_ms, days),
        "optimal": _utilisation(flexible.sold, deposits, start_ms, days),
        "overall": {
            "realised": _share(sum(sold.values()), sum(deposits.values())),
            "without_scheduling": _share(sum(restricted.sold.values()), sum(deposits.values())),
            "optimal": _share(sum(flexible.sold.values()), sum(deposits.values())),
        },
    }
    figures["served_without_scheduling"] = _served_share_by_kind(truth, restricted.served)
    figures["limits"] = _limits(events, jobs, providers)
    figures["day_ahead"] = _day_ahead(events)
    figures["delivery"] = {
        "obligations": len(settled),
        "short": sum(s.delivered < s.quantity for s in settled),
        "undelivered_card_hours": sum(s.quantity - s.delivered for s in settled),
        "penalties": sum(s.penalty for s in settled),
        "refunds": sum(s.refund for s in settled),
    }
    return figures


def _limits(
    events: list[AnyEvent], jobs: dict[str, JobOutcome], providers: dict[str, dict[str, Any]]
) -> dict[str, int]:
    """Whether anyone did worse than the limit it set: orders filled beyond their price limit
    (a buy above it, a sell below it, a block above it on average over its hours), jobs whose
    firm paid more than their value, and provider trades below the provider's cost."""
    limit: dict[str, int] = {}
    side: dict[str, str] = {}
    hours: dict[str, int] = {}
    paid: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    worse = {"buys_above_limit": 0, "sells_below_limit": 0, "blocks_above_limit": 0}
    below_cost = 0
    for event in events:
        if isinstance(event, OrderAccepted | BlockAccepted):
            limit[event.order_id] = event.price
            side[event.order_id] = event.side
            if isinstance(event, BlockAccepted):
                hours[event.order_id] = len(event.symbols)
        elif isinstance(event, OrderAmended):
            limit[event.order_id] = event.price
        elif isinstance(event, TradeExecuted):
            for order_id in (event.buy_order_id, event.sell_order_id):
                if order_id in hours:
                    paid[order_id][0] += event.price * event.quantity
                    paid[order_id][1] += event.quantity
                elif order_id in limit:
                    buying = side[order_id] == "buy"
                    if buying and event.price > limit[order_id]:
                        worse["buys_above_limit"] += 1
                    elif not buying and event.price < limit[order_id]:
                        worse["sells_below_limit"] += 1
            seller = providers.get(event.seller_id)
            if seller is not None and event.price < seller["cost"] * factor_of(event.symbol):
                below_cost += 1
    for order_id, (amount, units) in paid.items():
        # A block's limit binds its average price per unit and hour.
        if amount > limit[order_id] * units:
            worse["blocks_above_limit"] += 1
    # A job's firm pays the trades less the voucher: a voucher holder's limit is net of it
    # (`limit_basis="net"`), so its trades may be above the job's value while it pays less.
    worse["jobs_paid_above_value"] = sum(
        o.gross - o.voucher_paid > o.limit * o.bought + 1e-6 for o in jobs.values()
    )
    worse["provider_trades_below_cost"] = below_cost
    return worse


def _day_ahead(events: list[AnyEvent]) -> dict[str, Any]:
    """The auctions (day-ahead ones by delivery day, intraday ones by time): what came in,
    what was accepted and traded, the welfare and the solver's gap; and the exclusive groups
    (needs) sent to them."""
    auctions = [e for e in events if isinstance(e, DayAheadAuctionCompleted)]
    groups: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if isinstance(event, BlockAccepted) and event.group is not None:
            groups[event.group].add(event.order_id)
    bought = {e.buy_order_id for e in events if isinstance(e, TradeExecuted)}
    return {
        "auctions": {
            a.day: {
                "orders": a.orders,
                "accepted": a.accepted,
                "card_hours": sum(a.volumes.values()),
                "welfare": a.welfare,
                "gap_ppm": a.gap_ppm,
                "status": a.status,
                "solve_ms": a.solve_ms,
            }
            for a in sorted(auctions, key=lambda a: a.day)
        },
        "card_hours": sum(sum(a.volumes.values()) for a in auctions),
        "groups": len(groups),
        "groups_filled": sum(bool(blocks & bought) for blocks in groups.values()),
    }


def _count_reasons(events: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for event in events:
        counts[str(event.reason.value)] += 1
    return dict(sorted(counts.items()))


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _deposits(events: list[AnyEvent]) -> dict[tuple[str, str], int]:
    """Capacity deposited and not recalled: (provider, symbol) -> units."""
    deposited: dict[tuple[str, str], int] = defaultdict(int)
    for event in events:
        if isinstance(event, CapacityDeposited):
            deposited[(event.account_id, event.symbol)] += event.quantity
        elif isinstance(event, CapacityWithdrawn):
            deposited[(event.account_id, event.symbol)] -= event.quantity
    return {key: units for key, units in deposited.items() if units > 0}


def _sold(events: list[AnyEvent]) -> dict[tuple[str, str], float]:
    """Deposited capacity that was sold and owed at delivery: (provider, symbol) -> units."""
    sold: dict[tuple[str, str], float] = defaultdict(float)
    for event in events:
        if isinstance(event, DeliveryObligation):
            sold[(event.provider_id, event.symbol)] += event.quantity
    return sold


def _utilisation(
    sold: dict[tuple[str, str], float],
    deposits: dict[tuple[str, str], int],
    start_ms: int,
    days: int,
) -> dict[str, list[float | None]]:
    """Per region, per day: sold over deposited card-hours."""
    totals: dict[str, list[list[float]]] = {r: [[0.0, 0.0] for _ in range(days)] for r in REGIONS}
    for (provider, symbol), units in deposits.items():
        day = (start_of(symbol) - start_ms) // DAY_MS
        if 0 <= day < days:
            totals[region_of(symbol)][day][1] += units
            totals[region_of(symbol)][day][0] += sold.get((provider, symbol), 0.0)
    return {r: [_share(s, d) for s, d in per_day] for r, per_day in totals.items()}


def _prices(trades: list[TradeExecuted], start_ms: int, days: int) -> dict[str, Any]:
    """Volume-weighted prices per standard card-hour: by region and hour of day (firm
    capacity), by day east and west, and firm against recallable."""
    by_cell: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    by_day: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    by_class: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    by_region: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for trade in trades:
        start = start_of(trade.symbol)
        per_standard = trade.price / factor_of(trade.symbol)
        interruptible = class_of(trade.symbol) == INTERRUPTIBLE
        if region_of(trade.symbol) in EAST:
            # Recallable capacity is deposited in the east only: compare like with like.
            cell = by_class["interruptible" if interruptible else "firm"]
            cell[0] += per_standard * trade.quantity
            cell[1] += trade.quantity
        if interruptible:
            continue
        region = region_of(trade.symbol)
        hour = (start - cst_day_start_ms(start)) // HOUR_MS
        side = "east" if region in EAST else "west" if region in WEST else "other"
        day = (start - start_ms) // DAY_MS
        for cell in (by_cell[(region, hour)], by_day[(side, day)], by_region[region]):
            cell[0] += per_standard * trade.quantity
            cell[1] += trade.quantity

    def vwap(cell: list[float] | None) -> float | None:
        return None if not cell or not cell[1] else cell[0] / cell[1]

    east = [vwap(by_day.get(("east", d))) for d in range(days)]
    west = [vwap(by_day.get(("west", d))) for d in range(days)]
    return {
        "heatmap": {r: [vwap(by_cell.get((r, h))) for h in range(24)] for r in REGIONS},
        "by_region": {r: vwap(by_region.get(r)) for r in REGIONS},
        "daily": {"east": east, "west": west},
        "spread": [
            e - w if e is not None and w is not None else None
            for e, w in zip(east, west, strict=True)
        ],
        "east_firm": vwap(by_class.get("firm")),
        "east_interruptible": vwap(by_class.get("interruptible")),
    }


def _job_outcomes(
    stored: Stored,
    truth: dict[str, Any],
    trades: list[TradeExecuted],
    settled: list[DeliverySettled],
) -> dict[str, JobOutcome]:
    buyers = {b["account_id"]: b for b in truth["buyers"]}
    voucher_holders = {e.account_id for e in stored.events if isinstance(e, GrantApproved)}
    jobs: dict[str, JobOutcome] = {}
    job_of_order: dict[str, dict[str, Any]] = {}
    for job in truth["jobs"]:
        buyer = buyers[job["buyer_id"]]
        jobs[job["job_id"]] = JobOutcome(
            job["job_id"],
            job["kind"],
            buyer["strategy"],
            job["home"],
            job["buyer_id"] in voucher_holders,
            float(job["cards"] * job["hours"]),
            job["value"],
        )
        for order_id in job["orders"]:
            job_of_order[order_id] = job
    # Voucher parts by trade: the journal entry of a fill's buy side is `<trade event id>/buy`.
    voucher_of_trade: dict[str, int] = defaultdict(int)
    clawed_at_delivery: dict[str, int] = defaultdict(int)
    for entry_id, kind, _, account, amount in stored.legs:
        if kind == "trade_buy" and account.startswith("reserved:"):
            voucher_of_trade[entry_id.removesuffix("/buy")] -= amount
        elif kind == "delivery" and account.startswith("grant:"):
            clawed_at_delivery[entry_id] += amount
    # What each job holds in each contract, and each holder's share delivered per contract.
    held: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for trade in trades:
        job = job_of_order.get(trade.buy_order_id)
        if job is None:
            continue
        outcome = jobs[job["job_id"]]
        outcome.bought += trade.quantity * factor_of(trade.symbol)
        outcome.gross += trade.price * trade.quantity
        outcome.voucher_paid += voucher_of_trade.get(trade.event_id, 0)
        held[(trade.buyer_id, trade.symbol)][job["job_id"]] += trade.quantity
    for s in settled:
        holders = held.get((s.buyer_id, s.symbol))
        if not holders:
            continue
        total = sum(holders.values())
        returned = s.refund + s.penalty - clawed_at_delivery.get(s.event_id, 0)
        for job_id, units in holders.items():
            share = units / total
            outcome = jobs[job_id]
            delivered = s.delivered * share * factor_of(s.symbol)
            outcome.delivered += delivered
            outcome.refunded += round(returned * share)
            region = region_of(s.symbol)
            outcome.regions[region] = outcome.regions.get(region, 0.0) + delivered
    by_id = {j["job_id"]: j for j in truth["jobs"]}
    for job_id, outcome in jobs.items():
        job = by_id[job_id]
        outcome.value = sum(
            (job["value"] - job["adders"][region]) * delivered
            for region, delivered in outcome.regions.items()
        )
    return jobs


def _buyer_figures(jobs: dict[str, JobOutcome], truth: dict[str, Any]) -> dict[str, Any]:
    list_price = truth["list_price"]
    figures: dict[str, Any] = {}
    groups: dict[str, list[JobOutcome]] = defaultdict(list)
    for outcome in jobs.values():
        groups[outcome.kind].append(outcome)
        groups[f"{outcome.kind}/{outcome.strategy}"].append(outcome)
        if outcome.kind in ("sme", "opc"):
            groups["small"].append(outcome)
            groups["small/voucher" if outcome.voucher else "small/no-voucher"].append(outcome)
    for name, outcomes in sorted(groups.items()):
        delivered = sum(o.delivered for o in outcomes)
        gross = sum(o.gross - o.refunded for o in outcomes)
        net = gross - sum(o.voucher_paid for o in outcomes)
        rental = sum(list_price[o.home] * o.delivered for o in outcomes)
        figures[name] = {
            "jobs": len(outcomes),
            "served": sum(o.served for o in outcomes),
            "served_share": _share(sum(o.served for o in outcomes), len(outcomes)),
            "delivered_card_hours": delivered,
            "paid_per_card_hour": _share(gross, delivered),
            "paid_after_vouchers_per_card_hour": _share(net, delivered),
            "rental_per_card_hour": _share(rental, delivered),
            "vouchers": sum(o.voucher_paid for o in outcomes),
        }
    return figures


def _voucher_figures(stored: Stored) -> dict[str, Any]:
    """Per programme: budget, grants, and the budget left over log time (burn-down)."""
    # Grants are stored by the enterprise's partition, so one may precede its programme.
    programmes: dict[str, dict[str, Any]] = {
        event.programme_id: {
            "budget": event.budget,
            "created": event.ts,
            "granted": 0,
            "grants": 0,
            "refused": 0,
            "used": 0,
            "clawed_back": 0,
            "burn": [[event.ts, event.budget]],
            "grantable": [[event.ts, event.budget]],
        }
        for event in stored.events
        if isinstance(event, ProgrammeCreated)
    }
    for event in sorted(stored.events, key=lambda e: (e.ts, e.event_id)):
        if isinstance(event, GrantApproved) and event.programme_id in programmes:
            granting = programmes[event.programme_id]
            granting["granted"] += event.limit
            granting["grants"] += 1
            granting["grantable"].append([event.ts, granting["budget"] - granting["granted"]])
        elif isinstance(event, RequestRejected) and event.request == "ApproveGrant":
            # A grant request is known by `programme:account:limit`.
            refused = programmes.get(event.request_id.split(":", 1)[0])
            if refused is not None:
                refused["refused"] += 1
    # The journal is in stored order, which interleaves partitions: follow the log time (and
    # the entry ids within one time, so the curve is the same in every run).
    for _, kind, ts, account, amount in sorted(stored.legs, key=lambda leg: (leg[2], leg[0])):
        name, _, rest = account.partition(":")
        programme_id = rest.split(":", 1)[0]
        p = programmes.get(programme_id)
        if p is None:
            continue
        if kind == "trade_buy" and name == "reserved":
            p["used"] -= amount
        elif kind in ("delivery", "resale") and name == "grant":
            p["clawed_back"] += amount
        else:
            continue
        p["burn"].append([ts, p["budget"] - p["used"] + p["clawed_back"]])
    return programmes


# The optimal allocation -----------------------------------------------------------------------


@dataclass
class Allocation:
    """An optimal allocation of deposited capacity to jobs."""

    surplus: float
    sold: dict[tuple[str, str], float]
    """(provider, symbol) -> units allocated."""
    served: dict[str, float]
    """job id -> standard card-hours allocated."""


def optimal_allocation(
    truth: dict[str, Any], deposits: dict[tuple[str, str], int], restricted: bool
) -> Allocation:
    """The surplus-maximising allocation of the deposited capacity to the jobs (see the
    module's description); `restricted` keeps each job to its home hub and preferred hours."""
    cost = {p["account_id"]: p["cost"] for p in truth["providers"]}
    supply: dict[tuple[str, str, int], list[tuple[str, str, int]]] = defaultdict(list)
    # In a fixed order: the optimum may not be unique, and the solver's choice among equal
    # optima follows the order of the columns.
    for (provider, symbol), units in sorted(deposits.items()):
        supply[(class_of(symbol), region_of(symbol), start_of(symbol))].append(
            (provider, symbol, units)
        )
    columns: list[float] = []  # objective, to minimise: -value of job units, +cost of supply
    upper: list[float] = []
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    row_bounds: list[float] = []
    market_rows: dict[tuple[str, str, int], int] = {}
    supply_columns: list[tuple[str, str]] = []
    for key, providers in supply.items():
        row = len(row_bounds)
        market_rows[key] = row
        row_bounds.append(0.0)  # job units taken - supply units used <= 0
        for provider, symbol, units in providers:
            column = len(columns)
            columns.append(cost.get(provider, 0) * factor_of(symbol))
            upper.append(units)
            rows.append(row)
            cols.append(column)
            vals.append(-1.0)
            supply_columns.append((provider, symbol))
    job_columns: list[tuple[str, int]] = []
    for job in truth["jobs"]:
        classes = ["H100-80G", INTERRUPTIBLE] if job["interruptible_ok"] else ["H100-80G"]
        if restricted:
            regions = [job["home"]]
            hours = range(job["earliest_ms"], job["earliest_ms"] + job["hours"] * HOUR_MS, HOUR_MS)
        else:
            regions = list(REGIONS)
            hours = range(job["earliest_ms"], job["deadline_ms"], HOUR_MS)
        total_row = len(row_bounds)
        row_bounds.append(float(job["cards"] * job["hours"]))
        for hour in hours:
            hour_row = len(row_bounds)
            row_bounds.append(float(job["cards"]))
            for region in regions:
                worth = job["value"] - job["adders"][region]
                if worth <= 0:
                    continue
                for resource_class in classes:
                    market = market_rows.get((resource_class, region, hour))
                    if market is None:
                        continue
                    column = len(columns)
                    columns.append(-float(worth))
                    upper.append(float(job["cards"]))
                    for row in (market, total_row, hour_row):
                        rows.append(row)
                        cols.append(column)
                        vals.append(1.0)
                    job_columns.append((job["job_id"], column))
    if not job_columns:
        return Allocation(0.0, {}, {})
    matrix = coo_matrix((vals, (rows, cols)), shape=(len(row_bounds), len(columns))).tocsr()
    result = linprog(
        np.array(columns),
        A_ub=matrix,
        b_ub=np.array(row_bounds),
        bounds=np.column_stack([np.zeros(len(upper)), np.array(upper)]),
        method="highs",
    )
    if result.status != 0:
        raise RuntimeError(f"the optimal allocation failed: {result.message}")
    x = result.x
    sold = {key: float(x[i]) for i, key in enumerate(supply_columns) if x[i] > 1e-9}
    served: dict[str, float] = defaultdict(float)
    for job_id, column in job_columns:
        served[job_id] += float(x[column])
    return Allocation(-float(result.fun), sold, dict(served))


def _served_share_by_kind(truth: dict[str, Any], served: dict[str, float]) -> dict[str, Any]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for job in truth["jobs"]:
        full = served.get(job["job_id"], 0.0) >= job["cards"] * job["hours"] - 1e-6
        for name in (job["kind"], "small") if job["kind"] in ("sme", "opc") else (job["kind"],):
            counts[name][0] += full
            counts[name][1] += 1
    return {k: _share(s, n) for k, (s, n) in sorted(counts.items())}
