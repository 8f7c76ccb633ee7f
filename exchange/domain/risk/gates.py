"""The day-ahead gate: the check every day-ahead order passes before its day's auction."""

from __future__ import annotations

from datetime import datetime

from exchange.domain.catalogue import CHINA_STANDARD_TIME, INTRADAY_GUARD_MS, to_utc_ms
from exchange.domain.messages import RejectReason
from exchange.domain.risk.state import RiskState

NO_DAY_AHEAD_WORDS = (
    "本交易所不举行日前集合竞价: 合约只做连续交易, 下单请勿选日前竞价 (day_ahead) this exchange "
    "runs no day-ahead auction: contracts trade continuously, so send orders without day_ahead"
)
"""Why a day-ahead order or page finds no auction, in words a buyer reads (whether the
exchange runs one is the operator's setting, `CX_DAY_AHEAD_GATE`, which buyers never see)."""


def day_ahead_refusal(
    state: RiskState, symbols: list[str], at_ms: int, exclusive: bool = False
) -> tuple[RejectReason, str] | None:
    """Why a day-ahead order for `symbols` cannot enter their day's auction at `at_ms`, if it
    cannot: the exchange runs none, the hours span two days, or the gate has passed. Past
    the gate, an `exclusive` group's alternative waits for the next intraday auction, if the
    exchange runs them and one comes early enough before the hours' gate closure."""
    rules = state.catalogue.rules
    if rules.day_ahead_gate_ms is None:
        return (
            RejectReason.NO_DAY_AHEAD_AUCTION,
            NO_DAY_AHEAD_WORDS,
        )
    specs = [state.catalogue.get(s) for s in symbols]
    term = next((spec for spec in specs if spec is not None and spec.is_term), None)
    if term is not None:
        # A term's book never waits for a day-ahead auction: the order would trade at once.
        return (
            RejectReason.NO_DAY_AHEAD_AUCTION,
            f"{term.symbol} is a term contract: it trades continuously and enters no "
            "day-ahead auction; send the order without day_ahead",
        )
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
    if gate is None or at_ms < gate:
        return None
    intraday = rules.intraday_auction_after(at_ms)
    if exclusive and intraday is not None:
        closure = state.catalogue.retires_at(first)
        if intraday + INTRADAY_GUARD_MS <= closure:
            return None
        when = datetime.fromtimestamp(intraday / 1000, CHINA_STANDARD_TIME)
        return (
            RejectReason.ALREADY_AUCTIONED,
            f"the next intraday auction, at {when:%Y-%m-%d %H:%M} CST, comes too late for "
            f"{first.symbol}: its gate closes within {INTRADAY_GUARD_MS // 60_000} minutes "
            "of it; trade its hours continuously instead",
        )
    day = first.delivery_start.astimezone(CHINA_STANDARD_TIME).date()
    closed = datetime.fromtimestamp(gate / 1000, CHINA_STANDARD_TIME)
    return (
        RejectReason.ALREADY_AUCTIONED,
        f"the day-ahead auction of {day.isoformat()} closed its gate at "
        f"{closed:%Y-%m-%d %H:%M} CST: trade its hours continuously instead",
    )
