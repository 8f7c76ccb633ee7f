"""Market controls: operators' (and the clock scheduler's) commands to contracts, checked here
and passed on to matching, which acts on its books."""

from __future__ import annotations

from exchange.domain.catalogue import SymbolError, parse_family, parse_symbol
from exchange.domain.messages import (
    ALL_CONTRACTS,
    MARKET_WIDE_ACTIONS,
    OPERATOR_ACTIONS,
    ControlMarket,
    Event,
    EventStamp,
    MarketControlRejected,
    MarketControlRequested,
    RejectReason,
)
from exchange.domain.risk.state import RiskState


def control_market(state: RiskState, command: ControlMarket, stamp: EventStamp) -> Event:
    """Pass a market control on to matching, if it is signed where it must be and names
    contracts that can be acted on."""
    reason, message = _check_control(state, command, stamp.ts)
    if reason is not None:
        return MarketControlRejected(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            operator_id=command.operator_id,
            action=command.action,
            symbol=command.symbol,
            reason=reason,
            message=message,
        )
    return MarketControlRequested(
        event_id=stamp.next_id(),
        ts=stamp.ts,
        operator_id=command.operator_id,
        action=command.action,
        symbol=command.symbol,
        at=command.at,
        symbols=command.symbols,
        reason=command.reason,
        band=command.band,
    )


def _check_control(
    state: RiskState, command: ControlMarket, at_ms: int
) -> tuple[RejectReason | None, str]:
    action, symbol = command.action, command.symbol
    if action in OPERATOR_ACTIONS:
        forged = state.not_operator(command)
        if forged:
            return RejectReason.NOT_OPERATOR, forged
    if action in MARKET_WIDE_ACTIONS:
        if symbol != ALL_CONTRACTS:
            return RejectReason.MALFORMED, f"{action} acts on every contract: symbol must be *"
        return None, ""
    if action == "list":
        # Matching decides whether the contract can be (re-)listed: it knows its books.
        try:
            parse_symbol(symbol)
        except SymbolError as error:
            return RejectReason.UNKNOWN_CONTRACT, str(error)
        return None, ""
    if action == "set_band":
        if command.band is None:
            return RejectReason.MALFORMED, "set_band needs a band (fen; 0: none)"
        if state.listed(symbol, at_ms) is not None:
            return None, ""
        try:
            parse_family(symbol)
        except SymbolError:
            return state.not_listed(symbol, at_ms)
        return None, ""
    unknown = [s for s in (symbol, *command.symbols) if state.listed(s, at_ms) is None]
    if unknown:
        return state.not_listed(unknown[0], at_ms)
    return None, ""
