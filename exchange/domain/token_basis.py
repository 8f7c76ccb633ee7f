"""A basis to compare prices per million tokens across model families.

Models tokenise Chinese text differently, so a million tokens of one model is not a million of
another. `token_basis.json` beside this module lists each token class's tokens per Chinese
character as its vendor publishes it, with the source, as `performance.json` does for cards'
throughput. A price per million tokens times a family's tokens per character is the price per
million Chinese characters of text: comparable volume, not comparable quality. Figures are
exact fractions of their decimal text; prices stay integer fen, rounded half to even. A family
without a citable figure has no basis (None), rather than a guessed one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from importlib import resources


@dataclass(frozen=True, slots=True)
class TokenBasis:
    """One model family's published tokens per Chinese character and its source."""

    code: str
    name: str
    tokens_per_character: Fraction | None
    source: str
    url: str
    confidence: str


@dataclass(frozen=True, slots=True)
class TokenBasisTable:
    """Every token class's basis, by resource class code."""

    metric: str
    about: str
    models: dict[str, TokenBasis]

    def price_per_million_characters(self, price: int, code: str) -> int | None:
        """A price per million tokens of `code` as a price per million Chinese characters, in
        integer fen; None for a class without a basis."""
        basis = self.models.get(code)
        if basis is None or basis.tokens_per_character is None:
            return None
        return round(price * basis.tokens_per_character)


def parse_basis(text: str) -> TokenBasisTable:
    """Read the table from its JSON text (numbers are read as exact decimals)."""
    raw = json.loads(text, parse_float=Decimal)
    models = {
        m["code"]: TokenBasis(
            code=m["code"],
            name=m["name"],
            tokens_per_character=(
                None if m["tokens_per_character"] is None else Fraction(m["tokens_per_character"])
            ),
            source=m["source"],
            url=m["url"],
            confidence=m["confidence"],
        )
        for m in raw["models"]
    }
    return TokenBasisTable(metric=raw["metric"], about=raw["about"], models=models)


TOKEN_BASIS = parse_basis(
    resources.files("exchange.domain").joinpath("token_basis.json").read_text(encoding="utf-8")
)
"""The published basis shipped with the exchange."""
