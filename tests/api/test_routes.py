"""The routers' handlers are plain functions: each runs alone, on fakes of the ports and the
runtime, with the real services (`api.services.Commands`) and market data fold."""

from __future__ import annotations

from typing import Any, cast

import pytest

import api.services
from api.keys import Principal, Role
from api.marketdata import MarketData
from api.ports import Ledger, Runtime
from api.problems import Problem
from api.routes import accounts, orders
from api.services import Commands
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import CancelOrder, CancelRejected, Command, RejectReason
from exchange.pipeline import Topics

BUYER = Principal("k1", "buyer-1", Role.BUYER)


class LedgerOf:
    """A ledger that knows one account summary and one order."""

    def __init__(
        self, summary: dict[str, Any] | None = None, order: dict[str, Any] | None = None
    ) -> None:
        self.summary = summary
        self.stored_order = order

    async def account_summary(self, account_id: str) -> dict[str, Any] | None:
        return self.summary

    async def order(self, order_id: str) -> dict[str, Any] | None:
        return self.stored_order


class RuntimeRefusing:
    """A runtime whose risk stage refuses every cancel with `reason` at once (None: it never
    decides)."""

    def __init__(self, market: MarketData, reason: RejectReason | None) -> None:
        self.market = market
        self.reason = reason
        self.sent: list[Command] = []

    async def submit(self, command: Command) -> None:
        self.sent.append(command)
        if self.reason is None or not isinstance(command, CancelOrder):
            return
        refused = CancelRejected(
            event_id=f"t.orders:0:{len(self.sent)}:0",
            ts=0,
            order_id=command.order_id,
            account_id=command.account_id,
            reason=self.reason,
            message="refused",
        )
        self.market.apply(refused, 0)


def _market() -> MarketData:
    return MarketData(None, Topics.named("t", 1, 1), default_catalogue())  # type: ignore[arg-type]


def _commands(reason: RejectReason | None) -> tuple[Commands, RuntimeRefusing]:
    market = _market()
    runtime = RuntimeRefusing(market, reason)
    return Commands(cast(Runtime, runtime), market), runtime


async def test_an_account_without_settled_history_is_not_found() -> None:
    with pytest.raises(Problem) as refused:
        await accounts.account("buyer-1", BUYER, cast(Ledger, LedgerOf()), _market())
    assert (refused.value.status, refused.value.kind) == (404, "unknown-account")

    summary = {
        "account_id": "buyer-1",
        "cash": {"available": 700, "held": 0},
        "bonds": 0,
        "capacity": [],
        "positions": [],
    }
    found = await accounts.account("buyer-1", BUYER, cast(Ledger, LedgerOf(summary)), _market())
    assert found.cash.available == 700


async def test_another_accounts_order_reads_as_unknown() -> None:
    theirs = {"order_id": "buyer-2:o-1", "account_id": "buyer-2"}
    with pytest.raises(Problem) as refused:
        await orders.get_order(
            "buyer-2:o-1", BUYER, cast(Ledger, LedgerOf(order=theirs)), _market()
        )
    assert (refused.value.status, refused.value.kind) == (404, "unknown_order")
    assert refused.value.detail == "account buyer-1 has no order 'buyer-2:o-1'"


async def test_a_cancel_answers_the_risk_stages_decision() -> None:
    commands, runtime = _commands(RejectReason.NOT_ORDER_OWNER)
    with pytest.raises(Problem) as refused:
        await orders.cancel_order("o-9", BUYER, commands, cast(Ledger, LedgerOf()))
    # Another account's order is answered as one the account does not have.
    assert (refused.value.status, refused.value.kind) == (404, "unknown_order")
    assert runtime.sent == [CancelOrder(order_id="o-9", account_id="buyer-1")]

    settled = {"order_id": "o-9", "account_id": "buyer-1", "status": "filled"}
    commands, _ = _commands(RejectReason.ORDER_NOT_OPEN)
    with pytest.raises(Problem) as closed:
        await orders.cancel_order("o-9", BUYER, commands, cast(Ledger, LedgerOf(order=settled)))
    assert (closed.value.status, closed.value.kind) == (409, "order_not_open")

    # Closed, says the risk stage, and settlement has not recorded it (yet): it says so.
    for unsettled in (None, {**settled, "status": "open"}):
        commands, _ = _commands(RejectReason.ORDER_NOT_OPEN)
        with pytest.raises(Problem) as behind:
            await orders.cancel_order(
                "o-9", BUYER, commands, cast(Ledger, LedgerOf(order=unsettled))
            )
        assert (behind.value.status, behind.value.kind) == (409, "order_not_settled")


async def test_a_cancel_not_decided_in_time_is_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.services, "OUTCOME_TIMEOUT_S", 0.01)
    commands, runtime = _commands(None)
    answer = await orders.cancel_order("o-9", BUYER, commands, cast(Ledger, LedgerOf()))
    assert (answer.order_id, answer.status) == ("o-9", "pending")
    assert len(runtime.sent) == 1
