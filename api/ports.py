"""What the API is given of the running exchange: the API names it here, and the wiring
(`cx.runtime.ExchangeRuntime`) provides it, so the API imports nothing above it."""

from __future__ import annotations

from typing import Protocol

from exchange.domain.catalogue import Catalogue
from exchange.domain.messages import Command
from exchange.domain.operators import OperatorSeal
from exchange.log import CommandLog
from exchange.pipeline import Topics
from settlement.sql_store import SqlEventStore


class ApiSettings(Protocol):
    """The settings the API reads."""

    @property
    def api_rate(self) -> float:
        """Requests a second each API key may make on average (CX_API_RATE)."""

    @property
    def api_burst(self) -> int:
        """Requests an API key may make at once (CX_API_BURST)."""

    @property
    def key_cache_seconds(self) -> float:
        """How long a verified key is trusted without asking the database (CX_KEY_CACHE_SECONDS)."""

    @property
    def key_outage_seconds(self) -> float:
        """How long a key works while the database cannot be asked (CX_KEY_OUTAGE_SECONDS)."""

    @property
    def stall_seconds(self) -> float:
        """How long a lag may stand still before its stage is stalled (CX_STALL_SECONDS)."""


class Runtime(Protocol):
    """The running exchange the API serves: its log, event store, topics and catalogue, the
    seal it signs operator commands with, and the way in for commands."""

    @property
    def settings(self) -> ApiSettings:
        """The settings the API reads."""

    @property
    def log(self) -> CommandLog:
        """The command log (Kafka or the embedded log)."""

    @property
    def store(self) -> SqlEventStore:
        """The event store, with the ledger and the API's own tables."""

    @property
    def topics(self) -> Topics:
        """The exchange's topics."""

    @property
    def catalogue(self) -> Catalogue:
        """The contracts and listing rules."""

    @property
    def seal(self) -> OperatorSeal:
        """Signs the operator commands the API sends; the risk stage verifies them."""

    async def submit(self, command: Command) -> None:
        """Append a command to the commands topic."""
