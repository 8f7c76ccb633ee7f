"""The codec writes the order messages that leave default options off the wire by orjson
(`codec._OptionsOmitted`); their bytes must be pydantic's own for every set of options."""

from __future__ import annotations

import itertools
import tracemalloc
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic_core import PydanticSerializationError

from exchange.domain.messages import Message, decode, encode
from exchange.domain.messages.codec import _WRITERS
from exchange.domain.messages.orders import OPTIONS_OFF_THE_WIRE

REQUIRED: dict[str, Any] = {
    "event_id": "bench.commands:1:2:0",
    "ts": 1_767_225_600_000,
    "order_id": "o-1",
    "account_id": "acct-1",
    "symbol": "H100-80G.GZ.2026010100",
    "family": "H100-80G.GZ",
    "symbols": ["H100-80G.GZ.2026010100", "H100-80G.GZ.2026010101"],
    "side": "sell",
    "price": 100_000,
    "quantity": 7,
}


def _other_value(annotation: Any, default: Any) -> Any:
    """A valid value of the type that is not `default`."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _other_value(get_args(annotation)[0], default)
    if origin is Literal:
        return next(value for value in get_args(annotation) if value != default)
    if origin in (Union, types.UnionType):
        present = [a for a in get_args(annotation) if a is not type(None)]
        return _other_value(present[0], default)
    if origin is list:
        return [_other_value(get_args(annotation)[0], None) for _ in range(2)]
    if annotation is bool:
        return not default
    if annotation is int:
        return 3 if default != 3 else 4
    if annotation is str:
        return "p-1"
    raise AssertionError(f"no sample value for {annotation}")


def _options(kind: type[Message]) -> dict[str, Any]:
    """Each option of the message, to a value other than its default."""
    defaults = OPTIONS_OFF_THE_WIRE[kind]
    return {
        name: _other_value(field.annotation, defaults[name])
        for name, field in kind.model_fields.items()
        if name in defaults
    }


def _required(kind: type[Message]) -> dict[str, Any]:
    return {
        name: REQUIRED[name]
        for name, field in kind.model_fields.items()
        if field.is_required() and name in REQUIRED
    }


def test_every_order_message_that_omits_options_has_the_fast_writer() -> None:
    assert set(_WRITERS) == set(OPTIONS_OFF_THE_WIRE)


@pytest.mark.parametrize("kind", list(OPTIONS_OFF_THE_WIRE), ids=lambda kind: kind.__name__)
def test_every_set_of_options_is_written_as_pydantic_writes_it(kind: type[Message]) -> None:
    options = _options(kind)
    required = _required(kind)
    checked = 0
    for chosen in itertools.product((False, True), repeat=len(options)):
        pairs = zip(options.items(), chosen, strict=True)
        fields = {name: value for (name, value), on in pairs if on}
        message = kind.model_validate({**required, **fields})
        wire = encode(message)
        assert wire == message.__pydantic_serializer__.to_json(message), sorted(fields)
        checked += 1
    assert checked == 2 ** len(options) >= 2**3
    plain = kind.model_validate(required)
    for name in options:
        assert f'"{name}"'.encode() not in encode(plain)
    assert decode(encode(plain)) == plain


ODD_STRINGS = [
    "".join(map(chr, range(32))),
    '"quoted" \\ back/slash \x7f',
    "中文 é ✓ \U0001f600 \u2028\u2029",
    "</script>&<>",
    "",
]


@pytest.mark.parametrize("text", ODD_STRINGS)
def test_strings_are_escaped_as_pydantic_escapes_them(text: str) -> None:
    kind = next(k for k in OPTIONS_OFF_THE_WIRE if k.__name__ == "OrderAccepted")
    for options in ({}, {"stp_group": text, "voucher_related": [text, "b"]}):
        message = kind.model_validate(
            {**_required(kind), "symbol": text, "client_order_id": text, **options}
        )
        assert encode(message) == message.__pydantic_serializer__.to_json(message)
        assert decode(encode(message)) == message


@pytest.mark.parametrize("price", [2**63 - 1, 2**63, 2**64, 2**70, -(2**63) - 1])
def test_integers_beyond_64_bits_are_written_as_pydantic_writes_them(price: int) -> None:
    kind = next(k for k in OPTIONS_OFF_THE_WIRE if k.__name__ == "OrderAccepted")
    for options in ({}, {"bond_per_unit": price}):
        message = kind.model_validate({**_required(kind), "price": price, **options})
        assert encode(message) == message.__pydantic_serializer__.to_json(message)
        assert str(price).encode() in encode(message)


def test_a_string_that_is_not_utf8_fails_as_pydantic_fails() -> None:
    kind = next(k for k in OPTIONS_OFF_THE_WIRE if k.__name__ == "OrderAccepted")
    message = kind.model_validate({**_required(kind), "symbol": "\ud800"})
    with pytest.raises(PydanticSerializationError, match="surrogates not allowed"):
        encode(message)


def test_written_bytes_hold_no_more_memory_than_their_length() -> None:
    """orjson's own bytes keep its 4 KiB buffer; a log holding every record must not pay that
    for each (the soak's memory per order tripled when it did)."""
    kind = next(k for k in OPTIONS_OFF_THE_WIRE if k.__name__ == "PlaceOrder")
    order = kind.model_validate(_required(kind))
    tracemalloc.start()
    try:
        kept = [encode(order) for _ in range(1_000)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < len(kept) * (len(kept[0]) + 512), f"{held / len(kept):.0f} B a record"
