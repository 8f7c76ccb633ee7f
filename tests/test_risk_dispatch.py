"""The risk stage's dispatch table: every command type has exactly one handler, made for it."""

from __future__ import annotations

from typing import get_args, get_type_hints

import pytest

from exchange.domain.messages import (
    CancelOrder,
    Command,
    Message,
    PlaceOrder,
)
from exchange.domain.risk import HANDLERS
from exchange.domain.risk.orders import cancel_order, place_order
from exchange.domain.risk.stage import dispatch_table


def command_types() -> set[type[Message]]:
    """Every member of the `Command` union."""
    (union, *_) = get_args(Command)
    return set(get_args(union))


def test_every_command_type_has_a_handler_and_the_table_nothing_else() -> None:
    commands = command_types()
    assert len(commands) == 26
    assert set(HANDLERS) - commands == set(), "handlers of types that are not commands"
    assert commands - set(HANDLERS) == set(), "commands no handler decides"


@pytest.mark.parametrize("kind", sorted(command_types(), key=lambda kind: kind.__name__))
def test_each_handler_is_made_for_the_command_type_it_is_registered_for(
    kind: type[Message],
) -> None:
    handler = HANDLERS[kind]
    assert get_type_hints(handler)["command"] is kind, handler.__qualname__


def test_a_command_type_given_two_handlers_is_refused() -> None:
    with pytest.raises(ValueError, match="PlaceOrder has two handlers: place_order and"):
        dispatch_table(
            (PlaceOrder, place_order),
            (CancelOrder, cancel_order),
            (PlaceOrder, cancel_order),
        )
