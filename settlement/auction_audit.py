"""`cx audit auction DATE`: re-solve a stored day-ahead auction and check what was recorded.

From the auction's stream (`day-ahead-<date>`): the bids every matching partition brought at
the gate, each partition's share of the result and the result itself. The audit checks that

- every partition's bids and share are there, and the summary too;
- the recorded result is a valid clearing of those bids (`matching.dayahead.verify`: balances,
  limits, no accepted order at a loss, at most one alternative per exclusive group, prices on
  tick, the welfare it states);
- each recorded trade was executed and stored as a `TradeExecuted` of the same orders,
  quantity and price;
- the welfare is at most the linear relaxation's and at most the bound the solver recorded;
- solving the bids again gives the same welfare and prices when both solves proved optimal
  (or, when one stopped at a limit, a welfare within the recorded bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from exchange.dayahead import NODE_LIMIT, TIME_LIMIT_S, auction_orders, tick_sizes
from exchange.domain.catalogue import Catalogue
from matching.dayahead import (
    DayAheadResult,
    DayAheadTrade,
    Rejection,
    clear,
    lp_relaxation,
    verify,
)
from settlement.service import day_ahead_stream
from settlement.sql_store import SqlEventStore


@dataclass
class AuctionAudit:
    """What auditing one day's auction found."""

    day: str
    orders: int = 0
    welfare: int = 0
    resolved_welfare: int = 0
    lp_bound: float = 0.0
    status: str = ""
    discrepancies: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "day": self.day,
            "orders": self.orders,
            "welfare": self.welfare,
            "resolved_welfare": self.resolved_welfare,
            "lp_bound": self.lp_bound,
            "status": self.status,
            "discrepancies": self.discrepancies,
        }


async def audit_auction(
    store: SqlEventStore, catalogue: Catalogue, day: str, partitions: int
) -> AuctionAudit:
    """Audit the day-ahead auction of `day` (CST date) of an exchange of `partitions`
    matching partitions."""
    report = AuctionAudit(day)
    found = report.discrepancies
    stored = await store.read_stream(day_ahead_stream(day))
    bids: dict[int, list[dict[str, Any]]] = {}
    shares: dict[int, dict[str, Any]] = {}
    summary: dict[str, Any] | None = None
    for event in stored:
        if event.type == "DayAheadBidsCollected":
            bids[event.data["partition"]] = event.data["orders"]
        elif event.type == "DayAheadCleared":
            shares[event.data["partition"]] = event.data
        elif event.type == "DayAheadAuctionCompleted":
            summary = event.data
    if summary is None:
        found.append(f"no day-ahead auction of {day} is recorded")
        return report
    missing = sorted(set(summary["partitions"]) - set(bids))
    if missing:
        found.append(f"the bids of partitions {missing} are not recorded")
    # A partition that holds none of the auction's families sends its (empty) bids too, and
    # they may be stored after the result: only bids the result left out are a discrepancy.
    left_out = sorted(p for p in set(bids) - set(summary["partitions"]) if bids[p])
    if left_out:
        found.append(
            f"bids of partitions {left_out} are not in the result of partitions "
            f"{summary['partitions']}"
        )
    unshared = sorted(set(range(partitions)) - set(shares))
    if unshared:
        found.append(f"the result for partitions {unshared} is not recorded")
    orders = auction_orders(bids)
    report.orders = len(orders)
    report.welfare = summary["welfare"]
    report.status = summary["status"]
    recorded = DayAheadResult(
        prices=dict(sorted(summary["prices"].items())),
        accepted=dict(sorted((o, q) for s in shares.values() for o, q in s["accepted"].items())),
        rejected=dict(
            sorted((o, Rejection(r)) for s in shares.values() for o, r in s["rejected"].items())
        ),
        trades=tuple(
            DayAheadTrade(*trade) for p in sorted(shares) for trade in shares[p]["trades"]
        ),
        welfare=summary["welfare"],
        bound=summary["bound"],
        status=summary["status"],
        gap_ppm=summary["gap_ppm"],
    )
    ticks = tick_sizes(catalogue, orders)
    found += [f"recorded result: {problem}" for problem in verify(orders, recorded, ticks)]
    await _trades_executed(store, recorded, found)
    relaxed = lp_relaxation(orders)
    report.lp_bound = float(relaxed)
    if recorded.welfare > relaxed:
        # Welfare is whole fen: above the relaxation is above its whole fen.
        found.append(
            f"welfare {recorded.welfare} fen is above the LP relaxation's {math.floor(relaxed)} fen"
        )
    if recorded.welfare > recorded.bound:
        found.append(
            f"welfare {recorded.welfare} fen is above the recorded bound {recorded.bound} fen"
        )
    again = clear(orders, ticks, node_limit=NODE_LIMIT, time_limit_s=TIME_LIMIT_S)
    report.resolved_welfare = again.welfare
    if again.status == "optimal" and recorded.status == "optimal":
        if again.welfare != recorded.welfare:
            found.append(
                f"solved again: welfare {again.welfare} fen, recorded {recorded.welfare} fen"
            )
        if again.prices != recorded.prices:
            changed = sorted(s for s in again.prices if again.prices[s] != recorded.prices.get(s))
            found.append(f"solved again: different prices in {changed[:5]}")
    elif again.welfare > recorded.bound or recorded.welfare > again.bound:
        found.append(
            f"solved again: welfare {again.welfare} fen (bound {again.bound} fen) against the "
            f"recorded {recorded.welfare} fen (bound {recorded.bound} fen)"
        )
    return report


async def _trades_executed(
    store: SqlEventStore, recorded: DayAheadResult, found: list[str]
) -> None:
    """Each recorded trade must have been executed and stored in its contract's stream."""
    for symbol in sorted({t.symbol for t in recorded.trades}):
        executed = [
            (e.data["buy_order_id"], e.data["sell_order_id"], e.data["quantity"], e.data["price"])
            for e in await store.read_stream(f"contract-{symbol}")
            if e.type == "TradeExecuted" and e.data.get("aggressor") is None
        ]
        for trade in (t for t in recorded.trades if t.symbol == symbol):
            key = (trade.buy_order_id, trade.sell_order_id, trade.quantity, trade.price)
            if key in executed:
                executed.remove(key)
            else:
                found.append(f"trade {key} in {symbol} was not executed")
