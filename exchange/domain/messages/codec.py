"""The wire codec: a message's JSON bytes, decoding any topic's records, and upcasting older
versions of a message to the current one (see docs/WIRE_FORMAT.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from exchange.domain.messages.common import Message
from exchange.domain.messages.unions import AnyEvent, AnyMessage, Command

_any_message: TypeAdapter[AnyMessage] = TypeAdapter(AnyMessage)
_any_event: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
_command: TypeAdapter[Command] = TypeAdapter(Command)


def encode(message: Message) -> bytes:
    """The message's wire form: compact JSON, fields in declaration order."""
    return message.__pydantic_serializer__.to_json(message)


def _funds_deposited_v1(data: dict[str, Any]) -> dict[str, Any]:
    # Version 1 had no currency field: every cash amount was CNY fen.
    return {**data, "v": 2, "currency": "CNY"}


UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("FundsDeposited", 1): _funds_deposited_v1,
}
"""(type, version) -> the function that rewrites it as the next version."""


def upcast(data: dict[str, Any]) -> dict[str, Any]:
    """Rewrite an older version of a message as the current one (unchanged if current)."""
    while (step := UPCASTERS.get((str(data.get("type")), int(data.get("v", 1))))) is not None:
        data = step(data)
    return data


def _older(data: bytes | str) -> dict[str, Any] | None:
    """The message as a dict if it is an older version an upcaster knows; else None."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    kind, version = parsed.get("type"), parsed.get("v", 1)
    # Anything may arrive on a topic: only a string type and an integer version can name one.
    if not isinstance(kind, str) or type(version) is not int or (kind, version) not in UPCASTERS:
        return None
    return parsed


def decode(data: bytes | str) -> AnyMessage:
    """Decode any command or event, upcasting older versions; raises pydantic.ValidationError."""
    try:
        return _any_message.validate_json(data)
    except ValidationError:
        older = _older(data)
        if older is None:
            raise
        return _any_message.validate_python(upcast(older))


def decode_event(data: bytes | str) -> AnyEvent:
    """Decode an event, upcasting older versions; raises pydantic.ValidationError otherwise."""
    try:
        # The validator itself: `TypeAdapter.validate_json` only passes its options on, and a
        # replay decodes every event that moves money or acts on the books.
        event: AnyEvent = _any_event.validator.validate_json(data)
    except ValidationError:
        older = _older(data)
        if older is None:
            raise
        return _any_event.validate_python(upcast(older))
    return event


def decode_command(data: bytes | str) -> Command:
    """Decode a command; raises pydantic.ValidationError for anything else."""
    return _command.validate_json(data)


def event_from_dict(data: dict[str, Any]) -> AnyEvent:
    """Rebuild an event from its stored JSON object, upcasting an older version."""
    return _any_event.validate_python(upcast(data))
