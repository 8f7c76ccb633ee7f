"""The engine's reasons are the exchange's, and its operator refusals come from the engine."""

from __future__ import annotations

from exchange.domain import messages
from exchange.domain.catalogue import default_catalogue
from exchange.domain.market import MarketStage
from exchange.domain.messages import EventStamp, MarketControlRejected, MarketControlRequested
from matching import outputs as O
from matching.engine import MatchingEngine
from matching.outputs import RefusalReason

H = 3_600_000


def test_the_exchange_cancels_with_the_engines_reasons() -> None:
    assert messages.CancelReason is O.CancelReason
    assert messages.ContractState is O.ContractState


def test_every_refusal_of_the_engine_is_the_reject_reason_of_the_same_name() -> None:
    for reason in RefusalReason:
        assert messages.RejectReason(reason.value) is messages.RejectReason[reason.name]


def test_a_band_is_set_on_a_contract_or_a_family_and_refused_for_an_unknown_name() -> None:
    engine = MatchingEngine()
    for hour in range(2):
        engine.list_contract(0, f"F.X.{hour}", "F.X", (10 + hour) * H, 100, continuous=True)
    engine.list_contract(0, "F.Y.0", "F.Y", 10 * H, 100, continuous=True)
    engine.take_events()

    assert engine.set_band(1, "F.X", 7)
    assert engine.set_band(2, "F.Y.0", 3)
    assert [engine.books[s].band for s in ("F.X.0", "F.X.1", "F.Y.0")] == [7, 7, 3]
    assert not engine.set_band(3, "F.Z", 5)
    assert engine.take_events() == [
        (O.OPERATOR_REJECTED, "F.Z", "set_band", RefusalReason.UNKNOWN_CONTRACT)
    ]
    assert engine.now == 3


def test_a_listing_the_stage_cannot_parse_or_whose_gate_closed_is_refused() -> None:
    stage = MarketStage(default_catalogue())
    ts = 1_800_000_000_000  # 15 January 2027: the 2026 hour below has long been retired

    def listing(symbol: str) -> MarketControlRejected:
        request = MarketControlRequested(
            event_id=f"o:0:1:{symbol}", ts=ts, operator_id="ops", action="list", symbol=symbol
        )
        out = stage.handle(request, EventStamp("o", 0, 1, ts))
        [refused] = out
        assert isinstance(refused, MarketControlRejected), out
        return refused

    unparsed = listing("not-a-contract")
    assert (unparsed.action, unparsed.reason) == ("list", messages.RejectReason.UNKNOWN_CONTRACT)
    retired = listing("H100-80G.GZ.20260101T00")
    assert (retired.action, retired.reason) == ("list", messages.RejectReason.CONTRACT_CLOSED)
    assert retired.message == "list of H100-80G.GZ.20260101T00 refused: contract_closed"
