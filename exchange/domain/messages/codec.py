"""The wire codec: a message's JSON bytes, decoding any topic's records, and upcasting older
versions of a message to the current one (see docs/WIRE_FORMAT.md)."""

from __future__ import annotations

import types
from collections.abc import Callable
from enum import Enum
from operator import itemgetter
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import orjson
from pydantic import PlainSerializer, TypeAdapter, ValidationError, WrapSerializer

from exchange.domain.messages.common import Message
from exchange.domain.messages.orders import OPTIONS_OFF_THE_WIRE
from exchange.domain.messages.unions import AnyEvent, AnyMessage, Command

_any_message: TypeAdapter[AnyMessage] = TypeAdapter(AnyMessage)
_any_event: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
_command: TypeAdapter[Command] = TypeAdapter(Command)


_SERIALIZERS = (PlainSerializer, WrapSerializer)
"""Annotations that change how pydantic writes a value."""


def _plain_json(annotation: Any) -> bool:
    """True if orjson writes every value of the type as pydantic does: strings, integers,
    booleans, None, literals of them, string enums, and lists of these."""
    if annotation in (str, int, bool, type(None)):
        return True
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return issubclass(annotation, str)
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        return _plain_json(inner) and not any(isinstance(item, _SERIALIZERS) for item in metadata)
    if origin is Literal:
        return all(type(value) in (str, int, bool) for value in get_args(annotation))
    if origin in (Union, types.UnionType, list):
        return all(_plain_json(argument) for argument in get_args(annotation))
    return False


_ALWAYS = object()
"""Stands for the default of a field that is always on the wire: no value equals it."""


class _OptionsOmitted:
    """The wire bytes of a message whose serializer leaves options that keep their defaults
    off the wire, written by orjson from the message's fields: 0.7-0.9 µs a PlaceOrder or
    OrderAccepted against pydantic's 2.4-3.0, most of it the wrap serializer building and then
    serialising a dict. The bytes are pydantic's (tests/test_wire_options.py compares them
    over every option set of each such message)."""

    __slots__ = ("_defaults", "_kept", "_kept_names", "_names", "_omitted", "_options", "_values")

    def __init__(self, kind: type[Message], defaults: dict[str, Any]) -> None:
        names = tuple(kind.model_fields)
        options = tuple(name for name in names if name in defaults)
        kept = tuple(name for name in names if name not in defaults)
        self._names = names
        self._values = itemgetter(*names)
        # Per field, the value that leaves it off the wire; `_ALWAYS` equals no value.
        self._omitted = tuple(defaults.get(name, _ALWAYS) for name in names)
        self._options = itemgetter(*options)
        self._defaults = tuple(defaults[name] for name in options)
        self._kept_names = kept
        self._kept = itemgetter(*kept)

    @classmethod
    def of(cls, kind: type[Message], defaults: dict[str, Any]) -> _OptionsOmitted | None:
        """The writer of `kind`, or None where pydantic must write it (a field orjson might
        write otherwise, or too few fields for `itemgetter`'s tuples)."""
        fields = kind.model_fields
        options = [name for name in fields if name in defaults]
        if len(options) < 2 or len(fields) - len(options) < 2:
            return None
        if kind.__pydantic_decorators__.field_serializers or not all(
            _plain_json(field.annotation)
            and field.alias is None
            and not field.exclude
            and not any(isinstance(item, _SERIALIZERS) for item in field.metadata)
            for field in fields.values()
        ):
            return None
        return cls(kind, defaults)

    def __call__(self, fields: dict[str, Any]) -> bytes | None:
        """The bytes of the message of these fields, or None if orjson cannot write them (an
        integer beyond 64 bits, a string that is not UTF-8): pydantic then decides."""
        try:
            if self._options(fields) == self._defaults:
                # The common case: a plain order.
                wire = orjson.dumps(dict(zip(self._kept_names, self._kept(fields), strict=True)))
            else:
                values = zip(self._names, self._values(fields), self._omitted, strict=True)
                wire = orjson.dumps({name: value for name, value, left in values if value != left})
        except orjson.JSONEncodeError:
            return None
        # orjson's bytes keep the whole 4 KiB buffer it wrote into; the embedded log and the
        # producers' queues hold every record they are given, so keep a copy of its length
        # (about 0.1 µs; without it the soak's memory per order tripled).
        return bytes(memoryview(wire))


_WRITERS: dict[type[Message], _OptionsOmitted] = {
    kind: writer
    for kind, defaults in OPTIONS_OFF_THE_WIRE.items()
    if (writer := _OptionsOmitted.of(kind, defaults)) is not None
}


def encode(message: Message) -> bytes:
    """The message's wire form: compact JSON, fields in declaration order."""
    writer = _WRITERS.get(type(message))
    if writer is not None:
        wire = writer(message.__dict__)
        if wire is not None:
            return wire
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
        # The validator itself, as `decode_event`: every record a stage reads comes here.
        message: AnyMessage = _any_message.validator.validate_json(data)
    except ValidationError:
        older = _older(data)
        if older is None:
            raise
        return _any_message.validate_python(upcast(older))
    return message


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
