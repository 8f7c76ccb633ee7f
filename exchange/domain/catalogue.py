"""Standard contracts: resource class x region x delivery hour, and the symbol grammar.

A symbol is `CLASS.REGION.YYYYMMDDTHH`, e.g. `H100-80G.GZ.20271201T02`: one card-hour of an
H100 80 GB in the Guizhou hub, delivered in the hour starting 02:00 (UTC+8, China Standard
Time) on 1 December 2027. The family `CLASS.REGION` groups every delivery hour of one class in
one region; a family is never split across partitions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")

REGIONS: dict[str, str] = {
    "JJJ": "Beijing-Tianjin-Hebei",
    "YRD": "Yangtze River Delta",
    "GBA": "Guangdong-Hong Kong-Macao",
    "CY": "Chengdu-Chongqing",
    "NMG": "Inner Mongolia",
    "GZ": "Guizhou",
    "GS": "Gansu",
    "NX": "Ningxia",
}

UNIT_CARD_HOUR = "card-hour"
UNIT_CORE_HOUR = "core-hour"
UNIT_MILLION_TOKENS = "million-tokens"


@dataclass(frozen=True, slots=True)
class ResourceClass:
    """A kind of compute sold in one unit, e.g. one H100-80G for one hour."""

    code: str
    description: str
    unit: str
    tick_size: int
    """Smallest price step, in fen (0.01 CNY)."""


RESOURCE_CLASSES: dict[str, ResourceClass] = {
    rc.code: rc
    for rc in (
        ResourceClass("H100-80G", "NVIDIA H100 80 GB", UNIT_CARD_HOUR, 10),
        ResourceClass("A100-80G", "NVIDIA A100 80 GB", UNIT_CARD_HOUR, 10),
        ResourceClass("A800", "NVIDIA A800 80 GB", UNIT_CARD_HOUR, 10),
        ResourceClass("H20", "NVIDIA H20 96 GB", UNIT_CARD_HOUR, 10),
        ResourceClass("L40S", "NVIDIA L40S 48 GB", UNIT_CARD_HOUR, 5),
        ResourceClass("RTX4090", "NVIDIA GeForce RTX 4090 24 GB", UNIT_CARD_HOUR, 5),
        ResourceClass("910B", "Huawei Ascend 910B 64 GB", UNIT_CARD_HOUR, 10),
        ResourceClass("CPU", "x86-64 vCPU core", UNIT_CORE_HOUR, 1),
    )
}

_SYMBOL = re.compile(
    r"^(?P<cls>[A-Z0-9][A-Z0-9-]*)\.(?P<region>[A-Z]+)\.(?P<day>\d{8})T(?P<hour>\d{2})$"
)


class SymbolError(ValueError):
    """A symbol does not follow the grammar or names an unknown class or region."""


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """One listed contract: a resource class in a region for one delivery hour."""

    resource_class: ResourceClass
    region: str
    delivery_start: datetime
    """Start of the delivery hour, timezone-aware (China Standard Time)."""

    @property
    def symbol(self) -> str:
        """The contract's symbol, `CLASS.REGION.YYYYMMDDTHH`."""
        start = self.delivery_start
        # Explicit widths: strftime's %Y does not pad years below 1000 on every platform.
        return f"{self.family}.{start.year:04d}{start.month:02d}{start.day:02d}T{start.hour:02d}"

    @property
    def family(self) -> str:
        """`CLASS.REGION`: every delivery hour of one class in one region."""
        return f"{self.resource_class.code}.{self.region}"

    @property
    def tick_size(self) -> int:
        """Smallest price step, in fen."""
        return self.resource_class.tick_size

    @property
    def unit(self) -> str:
        """The unit one quantity step buys."""
        return self.resource_class.unit


def parse_symbol(symbol: str) -> ContractSpec:
    """Parse a symbol into its contract spec, or raise SymbolError saying what is wrong."""
    match = _SYMBOL.match(symbol)
    if match is None:
        raise SymbolError(f"symbol {symbol!r} does not match CLASS.REGION.YYYYMMDDTHH")
    resource_class = RESOURCE_CLASSES.get(match["cls"])
    if resource_class is None:
        raise SymbolError(f"unknown resource class {match['cls']!r} in symbol {symbol!r}")
    if match["region"] not in REGIONS:
        raise SymbolError(f"unknown region {match['region']!r} in symbol {symbol!r}")
    try:
        day = datetime.strptime(match["day"], "%Y%m%d")
    except ValueError:
        raise SymbolError(f"invalid delivery day {match['day']!r} in symbol {symbol!r}") from None
    hour = int(match["hour"])
    if hour > 23:
        raise SymbolError(f"invalid delivery hour {hour:02d} in symbol {symbol!r}")
    start = day.replace(hour=hour, tzinfo=CHINA_STANDARD_TIME)
    return ContractSpec(resource_class, match["region"], start)


def family_of(symbol: str) -> str:
    """The family (`CLASS.REGION`) of a symbol, without validating it."""
    return symbol.rsplit(".", 1)[0]


@dataclass(frozen=True, slots=True)
class MarketRules:
    """How listed contracts trade: the matching stage's rules, the same live and in replay."""

    gate_closure_ms: int | None = 60 * 60_000
    """Trading closes this long before delivery (None: never); resting orders expire."""
    band: int = 0
    """A trade further than this (fen) from the last price halts the contract (0: no band)."""
    protection: int = 0
    """A market order trades at most this far (fen) from the reference price (0: no limit)."""
    halt_ms: int = 60_000
    """A halted contract reopens through a call auction after this long."""
    pre_open: bool = False
    """Contracts collect orders until an opening auction instead of trading at once."""
    fees: tuple[tuple[str, int, int], ...] = ()
    """(resource class, maker bps, taker bps) per class; unlisted classes trade free. A
    negative maker fee is a rebate."""
    bond_bps: int = 0
    """A provider's delivery bond per unit sold from deposited capacity, in basis points of
    its sell order's limit price (rounded up to the fen)."""
    delivery_window_ms: int = 2 * 60 * 60_000
    """After a delivery hour ends, how long providers may report metering and buyers dispute
    before undisputed obligations settle."""


class Catalogue:
    """The listed contracts, by symbol, and the rules they trade under."""

    def __init__(self, contracts: list[ContractSpec], rules: MarketRules | None = None) -> None:
        self._contracts = {c.symbol: c for c in contracts}
        self.rules = rules or MarketRules()

    def get(self, symbol: str) -> ContractSpec | None:
        """The listed contract with this symbol, if any."""
        return self._contracts.get(symbol)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._contracts

    def __iter__(self) -> Iterator[ContractSpec]:
        return iter(self._contracts.values())

    def __len__(self) -> int:
        return len(self._contracts)

    @property
    def symbols(self) -> list[str]:
        """Every listed symbol, sorted."""
        return sorted(self._contracts)


def default_catalogue(rules: MarketRules | None = None) -> Catalogue:
    """The contracts listed by default: two night hours of four class-and-region families.

    Fixed rather than relative to today so that every run and every replay lists the same
    contracts, and far enough ahead that their gate does not close soon; rolling listings on
    the log clock are to replace this.
    """
    start = datetime(2027, 12, 1, 0, tzinfo=CHINA_STANDARD_TIME)
    contracts = [
        ContractSpec(RESOURCE_CLASSES[cls], region, start + timedelta(hours=hour))
        for cls, region in (
            ("H100-80G", "GZ"),
            ("H100-80G", "YRD"),
            ("A100-80G", "NMG"),
            ("CPU", "GZ"),
        )
        for hour in range(2)
    ]
    return Catalogue(contracts, rules)


def to_utc_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
