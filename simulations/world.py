"""A scenario made concrete: the agents, their jobs, costs and values, drawn from one seed.

Everything random is drawn here or by an agent's own generator, from `random.Random` seeded by
the run's seed, so a scenario and a seed always give the same market. The world's `truth` is
what only the agents know (true values, costs, jobs); the report needs it for the surplus and
the counterfactuals, and takes everything else from the event store.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from exchange.domain.catalogue import CHINA_STANDARD_TIME, to_utc_ms
from simulations.agents import (
    DAY_MS,
    HOUR_MS,
    Administrator,
    Buyer,
    Job,
    Provider,
    Reseller,
    adders_for,
)
from simulations.scenario import BuyerGroup, Range, Scenario


@dataclass
class World:
    """The agents of one run and its time span."""

    scenario: Scenario
    seed: int
    days: int
    start_ms: int
    end_ms: int
    """Deliveries end here; the run goes on a few hours so the last ones settle."""
    providers: list[Provider]
    buyers: list[Buyer]
    resellers: list[Reseller]
    administrators: list[Administrator]
    day_ahead: bool = False
    """Whether the exchange runs a day-ahead auction (`DAY_AHEAD_GATE`) and the agents use it."""
    intraday: bool = False
    """Whether it also runs an intraday auction every hour and the agents use those."""

    def fleet_factor(self, provider: Provider, day: int) -> float:
        """How many times its usual fleet a provider has on `day` (capacity shocks)."""
        factor = 1.0
        for shock in self.scenario.shocks:
            if shock.kind == "capacity" and shock.profile == provider.profile and shock.active(day):
                factor *= shock.factor
        return factor

    def delivered_share(self, provider: Provider, day: int) -> float:
        """The share of what it owes a provider delivers on `day` (delivery failures)."""
        for shock in self.scenario.shocks:
            if (
                shock.kind == "delivery_failure"
                and shock.provider == provider.account_id
                and shock.active(day)
            ):
                return shock.delivered_share
        return 1.0

    def truth(self) -> dict[str, Any]:
        """What the agents know and the exchange does not, JSON-ready."""
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "days": self.days,
            "day_ahead": self.day_ahead,
            "intraday": self.intraday,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "list_price": self.scenario.list_price,
            "providers": [
                {
                    "account_id": p.account_id,
                    "region": p.region,
                    "profile": p.profile,
                    "cards": p.cards,
                    "cost": p.cost,
                }
                for p in self.providers
            ],
            "buyers": [
                {
                    "account_id": b.account_id,
                    "kind": b.kind,
                    "city": b.city,
                    "strategy": "planner" if b.planner else "direct",
                }
                for b in self.buyers
            ],
            "jobs": [
                {k: v for k, v in asdict(job).items() if k not in ("status", "live", "part_of")}
                for b in self.buyers
                for job in b.jobs
            ],
            "resellers": [r.account_id for r in self.resellers],
            "programmes": [
                {
                    "programme_id": a.programme.programme_id,
                    "city": a.programme.city,
                    "budget": a.programme.budget,
                }
                for a in self.administrators
            ],
        }


def build(
    scenario: Scenario,
    seed: int,
    days: int | None = None,
    day_ahead: bool = False,
    intraday: bool = False,
) -> World:
    """The agents of `scenario` for `days` days (default: the scenario's), from `seed`; with
    `day_ahead`, in a market with a day-ahead auction, with `intraday` an intraday auction
    every hour too (the same agents and jobs)."""
    day_ahead = day_ahead or intraday
    days = scenario.days if days is None else days
    start_ms = to_utc_ms(datetime.fromisoformat(scenario.start).replace(tzinfo=CHINA_STANDARD_TIME))
    end_ms = start_ms + days * DAY_MS
    providers: list[Provider] = []
    for group in scenario.providers:
        for region in group.regions:
            for n in range(1, group.per_region + 1):
                account_id = f"prov-{region}-{n}"
                rng = random.Random(f"{seed}:{account_id}")
                providers.append(
                    Provider(
                        account_id,
                        region,
                        group.profile,
                        cards=_draw_int(rng, group.cards),
                        cost=_draw_int(rng, group.cost, 10),
                        interruptible_share=group.interruptible_share,
                        recall_probability=group.recall_probability,
                        markup=group.markup,
                        rng=rng,
                    )
                )
    buyers: list[Buyer] = []
    for kind in scenario.buyers:
        for n in range(1, kind.count + 1):
            home = kind.home_regions[(n - 1) % len(kind.home_regions)]
            account_id = f"{kind.kind}-{home}-{n}"
            rng = random.Random(f"{seed}:{account_id}")
            city = rng.choice(kind.cities)
            planner = rng.random() < kind.planner_share
            jobs = _jobs(scenario, kind, account_id, home, rng, start_ms, days)
            buyers.append(Buyer(account_id, kind.kind, city, planner, jobs, day_ahead))
    resellers = []
    if scenario.resellers is not None:
        r = scenario.resellers
        resellers = [
            Reseller(f"resell-{n}", r.budget, r.discount, r.margin, scenario.list_price)
            for n in range(1, r.count + 1)
        ]
    administrators = [Administrator(p, start_ms, end_ms + DAY_MS) for p in scenario.programmes]
    return World(
        scenario,
        seed,
        days,
        start_ms,
        end_ms,
        providers,
        buyers,
        resellers,
        administrators,
        day_ahead,
        intraday,
    )


def _draw_int(rng: random.Random, span: Range, step: int = 1) -> int:
    return round(rng.uniform(span.low, span.high) / step) * step


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: fine for the small means of job arrivals.
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _jobs(
    scenario: Scenario,
    group: BuyerGroup,
    account_id: str,
    home: str,
    rng: random.Random,
    start_ms: int,
    days: int,
) -> list[Job]:
    end_ms = start_ms + days * DAY_MS
    jobs: list[Job] = []
    for day in range(days):
        factor = 1.0
        for shock in scenario.shocks:
            if shock.kind == "demand" and shock.active(day):
                factor *= shock.factor
        for _ in range(_poisson(rng, group.jobs_per_day * factor)):
            arrival = start_ms + day * DAY_MS + rng.randrange(24) * HOUR_MS
            hours = _draw_int(rng, group.hours)
            earliest = arrival + max(2, _draw_int(rng, group.lead_hours)) * HOUR_MS
            deadline = earliest + (hours + _draw_int(rng, group.slack_hours)) * HOUR_MS
            job = Job(
                job_id=f"{account_id}.job{len(jobs) + 1}",
                buyer_id=account_id,
                kind=group.kind,
                home=home,
                cards=_draw_int(rng, group.cards),
                hours=hours,
                arrival_ms=arrival,
                earliest_ms=earliest,
                deadline_ms=min(deadline, end_ms),
                value=_draw_int(rng, group.value, 10),
                adders=adders_for(
                    home, _draw_int(rng, group.near_adder, 10), _draw_int(rng, group.far_adder, 10)
                ),
                interruptible_ok=rng.random() < group.interruptible_ok,
            )
            if job.deadline_ms - job.earliest_ms >= hours * HOUR_MS:
                jobs.append(job)
    return jobs
