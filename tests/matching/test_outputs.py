"""The engine's reasons are the exchange's."""

from __future__ import annotations

from exchange.domain import messages
from matching import outputs as O
from matching.outputs import RefusalReason


def test_the_exchange_cancels_with_the_engines_reasons() -> None:
    assert messages.CancelReason is O.CancelReason
    assert messages.ContractState is O.ContractState


def test_every_refusal_of_the_engine_is_the_reject_reason_of_the_same_name() -> None:
    for reason in RefusalReason:
        assert messages.RejectReason(reason.value) is messages.RejectReason[reason.name]
