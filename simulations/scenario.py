"""Scenarios: the agents, programmes and shocks of one simulated market, read from TOML files.

A scenario file in `simulations/scenarios/` describes groups of providers and buyers, the
resellers, the voucher programmes and the shocks (a demand spike, a western capacity surge, a
provider that fails delivery). A file may start from another with `extends = "NAME"`: its
tables are merged into the other's, key by key, and arrays replace arrays, so a variant only
states what differs. Prices and costs are integer fen per card-hour (of the H100-80G, the
standard card, so per standard card-hour too).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

EAST = ("YRD", "JJJ", "GBA")
"""The eastern hubs: near the buyers, busy by day."""
WEST = ("GZ", "NMG", "GS", "NX")
"""The western hubs: far from most buyers, idle most of the time, cheaper power."""
REGIONS = EAST + WEST
CARD = "H100-80G"
"""The one card traded: a standard card, so a card-hour is a standard card-hour."""
INTERRUPTIBLE = CARD + "-INT"


class ScenarioError(ValueError):
    """A scenario file that cannot be used: says which and why."""


@dataclass(frozen=True)
class Range:
    """An inclusive range a value is drawn from uniformly."""

    low: float
    high: float

    @classmethod
    def of(cls, value: Any, name: str) -> Range:
        """A range from `[low, high]` or a single number."""
        if isinstance(value, int | float):
            return cls(value, value)
        if isinstance(value, list) and len(value) == 2 and value[0] <= value[1]:
            return cls(value[0], value[1])
        raise ScenarioError(f"{name}: expected a number or [low, high], not {value!r}")


@dataclass(frozen=True)
class ProviderGroup:
    """Providers of one kind: `per_region` in each of `regions`."""

    regions: tuple[str, ...]
    per_region: int
    cards: Range
    cost: Range
    """Marginal cost, fen per card-hour (power, wear)."""
    profile: str
    """`east`: idle at night, busy by day; `west`: idle most of the time."""
    interruptible_share: float
    """Share of the idle capacity deposited as recallable (the `-INT` class)."""
    recall_probability: float
    """Chance that unsold recallable capacity of an hour is taken back before its gate."""
    markup: float
    """Asks start at cost x (1 + markup) two days out and fall towards cost by the gate."""


@dataclass(frozen=True)
class BuyerGroup:
    """Buyers of one kind with jobs drawn from these ranges."""

    kind: str
    """`sme`, `opc` or `large` (the enterprise kinds voucher programmes name)."""
    count: int
    home_regions: tuple[str, ...]
    cities: tuple[str, ...]
    planner_share: float
    """Share of the group that states needs through the planner; the rest place orders."""
    jobs_per_day: float
    cards: Range
    hours: Range
    lead_hours: Range
    """Hours from a job's arrival to the earliest start it can use."""
    slack_hours: Range
    """Hours of the deadline beyond the earliest start plus the job's length."""
    value: Range
    """What a delivered card-hour is worth to the buyer, fen."""
    near_adder: Range
    """Latency cost of another eastern hub, fen per card-hour."""
    far_adder: Range
    """Latency cost of a western hub, fen per card-hour."""
    interruptible_ok: float
    """Share of jobs that accept recallable capacity."""


@dataclass(frozen=True)
class ResellerGroup:
    """Traders who buy western hours a day or two ahead and resell them nearer delivery."""

    count: int
    budget: int
    """Fen each may have tied up in inventory."""
    discount: float
    """Buys when the ask is this far below the region's last traded price."""
    margin: float
    """First resale ask: the purchase price x (1 + margin)."""


@dataclass(frozen=True)
class Programme:
    """A compute-voucher programme of one city."""

    programme_id: str
    issuer: str
    city: str
    budget: int
    rate_bps: int
    cap_per_contract: int
    cap_per_enterprise: int
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class Shock:
    """A change to the market from `from_day` (until `to_day`, exclusive; 0: the end)."""

    kind: str
    """`demand`: job arrivals x factor; `capacity`: fleets of a profile x factor;
    `delivery_failure`: `provider` meters only `delivered_share` of what it owes."""
    from_day: int
    to_day: int = 0
    factor: float = 1.0
    profile: str = ""
    provider: str = ""
    delivered_share: float = 1.0

    def active(self, day: int) -> bool:
        """Whether the shock applies on day `day` (0-based)."""
        return self.from_day <= day and (not self.to_day or day < self.to_day)


@dataclass(frozen=True)
class Scenario:
    """Everything one simulation run needs besides its seed and length."""

    name: str
    description: str
    days: int
    start: str
    """First simulated day, `YYYY-MM-DD` (China Standard Time)."""
    listing_days: int
    bond_bps: int
    list_price: dict[str, int]
    """Fixed-price rental baseline per region, fen per card-hour."""
    providers: tuple[ProviderGroup, ...]
    buyers: tuple[BuyerGroup, ...]
    resellers: ResellerGroup | None
    programmes: tuple[Programme, ...]
    shocks: tuple[Shock, ...] = field(default_factory=tuple)


SCENARIO_DIR = "scenarios"


def available() -> list[str]:
    """The names of the scenarios shipped in `simulations/scenarios/`."""
    folder = resources.files("simulations").joinpath(SCENARIO_DIR)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load(name_or_path: str) -> Scenario:
    """A shipped scenario by name, or a scenario file by path."""
    return parse(_raw(name_or_path, set()))


def _raw(name_or_path: str, seen: set[str]) -> dict[str, Any]:
    if name_or_path in seen:
        raise ScenarioError(f"scenario {name_or_path!r} extends itself")
    seen.add(name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text = path.read_text()
    else:
        shipped = resources.files("simulations").joinpath(SCENARIO_DIR, f"{name_or_path}.toml")
        if not shipped.is_file():
            raise ScenarioError(f"no scenario {name_or_path!r}; shipped: {', '.join(available())}")
        text = shipped.read_text()
    data = tomllib.loads(text)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _merge(_raw(str(parent), seen), data)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse(data: dict[str, Any]) -> Scenario:
    """A scenario from its TOML data; raises ScenarioError naming the bad field."""
    try:
        list_price = {r: int(data["list_price"][r]) for r in REGIONS}
        return Scenario(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            days=int(data.get("days", 7)),
            start=str(data.get("start", "2027-03-01")),
            listing_days=int(data.get("listing_days", 2)),
            bond_bps=int(data.get("bond_bps", 0)),
            list_price=list_price,
            providers=tuple(_provider_group(g) for g in data["providers"]),
            buyers=tuple(_buyer_group(g) for g in data["buyers"]),
            resellers=_resellers(data.get("resellers")),
            programmes=tuple(_programme(p) for p in data.get("programmes", [])),
            shocks=tuple(Shock(**s) for s in data.get("shocks", [])),
        )
    except KeyError as missing:
        raise ScenarioError(f"scenario lacks {missing}") from None
    except TypeError as error:
        raise ScenarioError(str(error)) from None


def _regions(values: list[str], name: str) -> tuple[str, ...]:
    for region in values:
        if region not in (*REGIONS, "CY"):
            raise ScenarioError(f"{name}: unknown region {region!r}")
    return tuple(values)


def _provider_group(g: dict[str, Any]) -> ProviderGroup:
    profile = str(g["profile"])
    if profile not in ("east", "west"):
        raise ScenarioError(f"providers.profile: east or west, not {profile!r}")
    return ProviderGroup(
        regions=_regions(g["regions"], "providers.regions"),
        per_region=int(g.get("per_region", 1)),
        cards=Range.of(g["cards"], "providers.cards"),
        cost=Range.of(g["cost"], "providers.cost"),
        profile=profile,
        interruptible_share=float(g.get("interruptible_share", 0.0)),
        recall_probability=float(g.get("recall_probability", 0.0)),
        markup=float(g.get("markup", 0.6)),
    )


def _buyer_group(g: dict[str, Any]) -> BuyerGroup:
    kind = str(g["kind"])
    if kind not in ("sme", "opc", "large"):
        raise ScenarioError(f"buyers.kind: sme, opc or large, not {kind!r}")
    return BuyerGroup(
        kind=kind,
        count=int(g["count"]),
        home_regions=_regions(g["home_regions"], "buyers.home_regions"),
        cities=tuple(g.get("cities", ["Shanghai"])),
        planner_share=float(g.get("planner_share", 0.5)),
        jobs_per_day=float(g["jobs_per_day"]),
        cards=Range.of(g["cards"], "buyers.cards"),
        hours=Range.of(g["hours"], "buyers.hours"),
        lead_hours=Range.of(g.get("lead_hours", [2, 12]), "buyers.lead_hours"),
        slack_hours=Range.of(g.get("slack_hours", [0, 24]), "buyers.slack_hours"),
        value=Range.of(g["value"], "buyers.value"),
        near_adder=Range.of(g.get("near_adder", [50, 150]), "buyers.near_adder"),
        far_adder=Range.of(g.get("far_adder", [200, 500]), "buyers.far_adder"),
        interruptible_ok=float(g.get("interruptible_ok", 0.0)),
    )


def _resellers(g: dict[str, Any] | None) -> ResellerGroup | None:
    if not g or not int(g.get("count", 0)):
        return None
    return ResellerGroup(
        count=int(g["count"]),
        budget=int(g["budget"]),
        discount=float(g.get("discount", 0.15)),
        margin=float(g.get("margin", 0.2)),
    )


def _programme(p: dict[str, Any]) -> Programme:
    return Programme(
        programme_id=str(p["id"]),
        issuer=str(p["issuer"]),
        city=str(p["city"]),
        budget=int(p["budget"]),
        rate_bps=int(p.get("rate_bps", 3000)),
        cap_per_contract=int(p["cap_per_contract"]),
        cap_per_enterprise=int(p["cap_per_enterprise"]),
        kinds=tuple(p.get("kinds", ["sme", "opc"])),
    )
