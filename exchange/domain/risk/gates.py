"""The day-ahead gate: the check every day-ahead order passes before its day's auction."""

from __future__ import annotations

from datetime import datetime

from exchange.domain.catalogue import CHINA_STANDARD_TIME, to_utc_ms
from exchange.domain.messages import RejectReason
from exchange.domain.risk.state import RiskState


def day_ahead_refusal(
    state: RiskState, symbols: list[str], at_ms: int
) -> tuple[RejectReason, str] | None:
    """Why a day-ahead order for `symbols` cannot enter their day's auction at `at_ms`, if it
    cannot: the exchange runs none, the hours span two days, or the gate has passed."""
    rules = state.catalogue.rules
    if rules.day_ahead_gate_ms is None:
        return (
            RejectReason.NO_DAY_AHEAD_AUCTION,
            "this exchange runs no day-ahead auction (CX_DAY_AHEAD_GATE is not set)",
        )
    specs = [state.catalogue.get(s) for s in symbols]
    days = {spec.delivery_start.astimezone(CHINA_STANDARD_TIME).date() for spec in specs if spec}
    if len(days) > 1:
        return (
            RejectReason.INVALID_BLOCK,
            "a day-ahead block's hours must all be in one delivery day (China Standard Time)",
        )
    first = specs[0]
    if first is None:
        return None
    gate = rules.day_ahead_gate(to_utc_ms(first.delivery_start))
    if gate is not None and at_ms >= gate:
        day = first.delivery_start.astimezone(CHINA_STANDARD_TIME).date()
        closed = datetime.fromtimestamp(gate / 1000, CHINA_STANDARD_TIME)
        return (
            RejectReason.ALREADY_AUCTIONED,
            f"the day-ahead auction of {day.isoformat()} closed its gate at "
            f"{closed:%Y-%m-%d %H:%M} CST: trade its hours continuously instead",
        )
    return None
