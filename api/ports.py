"""The ports of the API: what it is given of the running exchange (the API names it here, and
the wiring, `cx.runtime.ExchangeRuntime`, provides it, so the API imports nothing above it), and
what it reads of the settled state (`Ledger`). The API's own tables each have their port beside
them and their records (`api.keys.KeyStore`, `api.stalls.StallStore`,
`api.idempotency.RequestStore`, `api.needs.NeedStore`); `api.sql` implements them all on
SQLAlchemy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from exchange.domain.catalogue import Catalogue
from exchange.domain.messages import AnyEvent, Command
from exchange.domain.operators import OperatorSeal
from exchange.log import CommandLog
from exchange.pipeline import Topics
from settlement.sql_store import SqlEventStore
from settlement.stalled import Stall as StalledOn


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
    def shards(self) -> list[SqlEventStore]:
        """Every settlement shard's store, the home shard (`store`) first."""

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


class Ledger(Protocol):
    """What the API reads of the settled state (the ledger projection and the event store),
    and the one thing it writes beside it: an operator's set-aside of a stalled event."""

    async def order(self, order_id: str) -> dict[str, Any] | None:
        """One settled order, if it is settled."""

    async def group_orders(self, group_id: str) -> list[dict[str, Any]]:
        """The settled alternatives of an exclusive group, by order id."""

    async def account_orders(
        self, account_id: str, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """An account's orders, newest first, optionally of one status."""

    async def account_fills(self, account_id: str, limit: int) -> list[dict[str, Any]]:
        """The account's sides of settled trades, newest first."""

    async def account_summary(self, account_id: str) -> dict[str, Any] | None:
        """Cash, bonds, capacity and positions of an account; None if it has no settled
        history."""

    async def contract_trades(self, symbol: str, limit: int) -> list[dict[str, Any]]:
        """Settled trades of one contract, newest first."""

    async def sold(self, account_id: str) -> list[dict[str, Any]]:
        """Per contract, what the account sold, was paid and in how many trades."""

    async def trades_report(
        self,
        *,
        account_id: str | None,
        symbol: str | None,
        since_ts: int | None,
        until_ts: int | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Settled trades with their counterparties, newest first, filtered."""

    async def order_paid(self, order_id: str) -> int:
        """Fen paid by a buy order over its settled trades."""

    async def day_ahead_events(self, day: str, types: tuple[str, ...]) -> list[AnyEvent]:
        """The stored day-ahead auction events of `types` of a CST date, in stored order."""

    async def account_order_symbols(self, account_id: str, order_ids: set[str]) -> dict[str, str]:
        """Which of `order_ids` are settled orders of the account, each with its symbol (a
        block's: its family)."""

    async def deliveries(
        self, account_id: str
    ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """The account's delivery obligations and the recalls that settled its units, as
        provider or as buyer, each by symbol, provider and buyer."""

    async def invoices(self, account_id: str) -> dict[str, Any]:
        """The account's invoices (`settlement.reports.invoices`)."""

    async def programme_report(self, programme_id: str) -> dict[str, Any] | None:
        """A voucher programme's report; None if there is no such programme."""

    async def statement(self, account_id: str, month: str) -> dict[str, Any]:
        """The account's statement for a CST month `YYYY-MM`
        (`settlement.statements.account_statement`)."""

    async def order_statement(self, order_id: str) -> dict[str, Any] | None:
        """A buy order's statement; None if the order is not settled."""

    async def order_invoice(self, order_id: str) -> dict[str, Any] | None:
        """A buy order's VAT invoice data; None if the order is not settled."""

    async def enterprise(self, account_id: str) -> dict[str, Any] | None:
        """The enterprise the account registered, if it did and it is settled."""

    async def grant_applications(
        self, *, programme_id: str | None = None, account_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Applications for grants of a programme or by an account, oldest first."""

    def history(
        self,
        output_format: str,
        contract: str | None,
        account_id: str | None,
        order_id: str | None,
        since_ts: int | None,
        until_ts: int | None,
    ) -> AsyncIterator[str]:
        """Stored events, filtered, as export lines (`settlement.history.export_line`; as CSV,
        the header first), read as they are sent; with settlement in shards, every shard's
        in the merged history's order, each labelled with its shard."""

    async def set_aside(self, source: str, operator: str, reason: str) -> StalledOn | None:
        """Mark the open stall at `source` to be set aside; None if none is open there;
        ValueError for a source that is not `topic:partition:offset`."""

    async def set_aside_stalls(self) -> dict[str, StalledOn]:
        """The stalls whose record an operator set aside, by `topic:partition:offset`."""
