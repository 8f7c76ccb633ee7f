"""Performance-normalised prices: the price of one standard card-hour.

Cards differ in throughput, so an hour of one is not an hour of another. `performance.json`
beside this module lists each card's peak dense FP16/BF16 tensor throughput from the vendors'
figures, with its source; one standard card-hour is one hour of the base card (H100-80G). A
card's factor is its throughput over the base card's, and a price per card-hour divided by the
factor is the price per standard card-hour. Factors are exact fractions (no floats); prices
stay integer fen, rounded half to even. An interruptible class (`H100-80G-INT`) is an hour of
the same card as its firm class, so it has the same factor: its discount shows in its price.
Resource classes that are not cards (CPU core-hours, million tokens) have no factor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from importlib import resources

from exchange.domain.catalogue import RESOURCE_CLASSES


@dataclass(frozen=True, slots=True)
class CardPerformance:
    """One card's published throughput and where the figure comes from."""

    code: str
    name: str
    dense_tflops: Fraction
    factor: Fraction
    """Standard card-hours in one hour of this card."""
    source: str
    url: str
    confidence: str


@dataclass(frozen=True, slots=True)
class PerformanceTable:
    """Every card's factor relative to the base card."""

    base: str
    metric: str
    about: str
    cards: dict[str, CardPerformance]

    def factor(self, code: str) -> Fraction | None:
        """Standard card-hours per hour of the resource class `code`; None if it is not a card."""
        resource_class = RESOURCE_CLASSES.get(code)
        firm = None if resource_class is None else resource_class.firm_class
        card = self.cards.get(firm or code)
        return None if card is None else card.factor

    def price_per_standard(self, price: int, code: str) -> int | None:
        """A price per unit of `code` as a price per standard card-hour, in integer fen."""
        factor = self.factor(code)
        if factor is None:
            return None
        return round(Fraction(price) / factor)


def parse_table(text: str) -> PerformanceTable:
    """Read the table from its JSON text (numbers are read as exact decimals)."""
    raw = json.loads(text, parse_float=Decimal)
    base_code = raw["base"]
    throughput = {c["code"]: Fraction(c["dense_tflops"]) for c in raw["cards"]}
    if base_code not in throughput:
        raise ValueError(f"the base card {base_code!r} is not in the table")
    base = throughput[base_code]
    cards = {
        c["code"]: CardPerformance(
            code=c["code"],
            name=c["name"],
            dense_tflops=throughput[c["code"]],
            factor=throughput[c["code"]] / base,
            source=c["source"],
            url=c["url"],
            confidence=c["confidence"],
        )
        for c in raw["cards"]
    }
    return PerformanceTable(base=base_code, metric=raw["metric"], about=raw["about"], cards=cards)


def decimal_text(value: Fraction, places: int = 4) -> str:
    """A fraction as decimal text with `places` digits, rounded half to even (for display)."""
    scaled = round(value * 10**places)
    sign = "-" if scaled < 0 else ""
    whole, part = divmod(abs(scaled), 10**places)
    return f"{sign}{whole}.{part:0{places}d}"


STANDARD = parse_table(resources.files("exchange.domain").joinpath("performance.json").read_text())
"""The published table shipped with the exchange."""
