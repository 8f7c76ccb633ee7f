"""Fuzzing the risk stage's input: any bytes, any JSON, any field of any command, any order.

Each record goes through the same path the risk runner takes (decode, then decide). Nothing
may raise; a record that is refused (a rejection, or a malformed record) changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import (
    CancelRejected,
    CommandRejected,
    DepositRejected,
    EventStamp,
    OrderRejected,
)
from exchange.log import LogRecord
from exchange.pipeline import RiskRunner, Topics

CATALOGUE = default_catalogue()
SYMBOLS = CATALOGUE.symbols
TOPICS = Topics.named("fuzz", 1, 1)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=80),
    st.sampled_from([*SYMBOLS, "a1", "a2", "o1", "buy", "sell", "", "CPU.GZ.20991231T00"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
valid_commands = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("PlaceOrder"),
            "order_id": st.sampled_from(["o1", "o2", "o3"]),
            "account_id": st.sampled_from(["a1", "a2"]),
            "symbol": st.sampled_from(SYMBOLS),
            "side": st.sampled_from(["buy", "sell"]),
            "price": st.integers(1, 5000),
            "quantity": st.integers(1, 50),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("CancelOrder"),
            "order_id": st.sampled_from(["o1", "o2", "o3"]),
            "account_id": st.sampled_from(["a1", "a2"]),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("DepositFunds"),
            "deposit_id": st.sampled_from(["d1", "d2", "d3"]),
            "account_id": st.sampled_from(["a1", "a2"]),
            "amount": st.integers(1, 10**9),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("DepositCapacity"),
            "deposit_id": st.sampled_from(["c1", "c2", "c3"]),
            "account_id": st.sampled_from(["a1", "a2"]),
            "symbol": st.sampled_from(SYMBOLS),
            "quantity": st.integers(1, 100),
        }
    ),
)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid command with one field replaced, removed or added."""
    command: dict[str, Any] = draw(valid_commands)
    field = draw(st.sampled_from([*command, "extra"]))
    action = draw(st.sampled_from(["replace", "remove"]))
    if action == "remove" and field in command:
        del command[field]
    else:
        command[field] = draw(json_values)
    return command


records = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    valid_commands.map(lambda c: json.dumps(c).encode()),
    mutated().map(lambda c: json.dumps(c).encode()),
)

REFUSALS = (OrderRejected, CancelRejected, DepositRejected, CommandRejected)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=25))
def test_any_record_in_any_order_is_decided_and_a_refusal_changes_nothing(
    values: list[bytes],
) -> None:
    runner = RiskRunner(None, TOPICS, CATALOGUE, [0])  # type: ignore[arg-type]
    instance = runner.new_instance(0)
    for offset, value in enumerate(values):
        record = LogRecord(TOPICS.commands, 0, offset, 1_800_000_000_000 + offset, None, value)
        before = instance.stage.state_hash()
        decided = runner._decide(instance, record, EventStamp("f", 0, offset, record.timestamp_ms))
        if decided is None or isinstance(decided, REFUSALS):
            assert instance.stage.state_hash() == before, decided
    accounts = instance.stage.accounts
    for balance in [*accounts.cash.values(), *accounts.capacity.values()]:
        assert balance.available >= 0
        assert balance.held >= 0
