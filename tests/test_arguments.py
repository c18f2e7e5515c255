"""Signature.encode/decode: call arguments -> JSON-ready (args, kwargs) -> validated values."""

from __future__ import annotations

import enum
from collections.abc import Coroutine
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

import taskflow
from taskflow import serde
from taskflow._arguments import Signature


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that never suspends to its return value."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("coroutine suspended")


def wire(sig: Signature, *args: Any, **kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    """encode, then through the real wire format and back, as a worker would see it."""
    encoded = sig.encode(args, kwargs)
    back = serde.loads(serde.dumps(encoded))
    return back[0], back[1]


def call_via_wire(fn: Any, *args: Any, **kwargs: Any) -> Any:
    sig = Signature(fn, fn.__name__)
    decoded_args, decoded_kwargs = sig.decode(*wire(sig, *args, **kwargs))
    return run(fn(*decoded_args, **decoded_kwargs))


# -- parameter kinds ----------------------------------------------------------------------


async def plain(a: int, b: str, c: float = 1.5) -> tuple[Any, ...]:
    return a, b, c


def test_positional_and_keyword_are_sent_by_name() -> None:
    sig = Signature(plain, "plain")
    assert sig.encode((1, "x"), {"c": 2.5}) == ([], {"a": 1, "b": "x", "c": 2.5})
    assert sig.encode((), {"b": "x", "a": 1}) == ([], {"a": 1, "b": "x"})


def test_defaults_are_not_sent_but_filled_on_decode() -> None:
    sig = Signature(plain, "plain")
    args, kwargs = sig.encode((1, "x"), {})
    assert kwargs == {"a": 1, "b": "x"}
    assert sig.decode(args, kwargs) == ([], {"a": 1, "b": "x", "c": 1.5})
    assert call_via_wire(plain, 1, "x") == (1, "x", 1.5)


async def pos_only(a: int, b: str = "b", /, c: int = 0) -> tuple[Any, ...]:
    return a, b, c


def test_positional_only() -> None:
    sig = Signature(pos_only, "pos_only")
    assert sig.encode((1, "z"), {"c": 3}) == ([1, "z"], {"c": 3})
    assert sig.encode((1,), {}) == ([1], {})
    assert call_via_wire(pos_only, 1) == (1, "b", 0)
    assert call_via_wire(pos_only, "4", "q", c="5") == (4, "q", 5)
    with pytest.raises(taskflow.ArgumentError, match="positional only"):
        sig.encode((), {"a": 1})


async def var_positional(a: int, /, *rest: int) -> tuple[Any, ...]:
    return a, rest


def test_var_positional_after_positional_only() -> None:
    sig = Signature(var_positional, "var_positional")
    assert sig.encode((1, 2, "3"), {}) == ([1, 2, 3], {})
    assert call_via_wire(var_positional, 1, 2, "3") == (1, (2, 3))
    assert call_via_wire(var_positional, 1) == (1, ())
    with pytest.raises(taskflow.ArgumentError, match=r"argument 'rest'\[1\]"):
        sig.encode((1, 2, "three"), {})


async def mixed_var_positional(a: int, *rest: int) -> tuple[Any, ...]:
    return a, rest


def test_var_positional_after_positional_or_keyword() -> None:
    assert call_via_wire(mixed_var_positional, 1, 2, 3) == (1, (2, 3))


async def var_keyword(a: int, *, flag: bool = False, **extra: int) -> tuple[Any, ...]:
    return a, flag, extra


def test_keyword_only_and_var_keyword() -> None:
    sig = Signature(var_keyword, "var_keyword")
    assert sig.encode((1,), {"flag": True, "x": "2", "y": 3}) == (
        [],
        {"a": 1, "flag": True, "x": 2, "y": 3},
    )
    assert call_via_wire(var_keyword, 1, x="2") == (1, False, {"x": 2})
    with pytest.raises(taskflow.ArgumentError, match=r"argument 'extra'\[x\]"):
        sig.encode((1,), {"x": "two"})
    with pytest.raises(taskflow.ArgumentError, match="too many positional"):
        sig.encode((1, True), {})


async def no_hints(a, b=None, *args, **kwargs):  # type: ignore[no-untyped-def]
    return a, b, args, kwargs


def test_unannotated_parameters_accept_json_values() -> None:
    sig = Signature(no_hints, "no_hints")
    assert sig.decode(*wire(sig, [1, {"x": None}])) == ([], {"a": [1, {"x": None}], "b": None})


# -- coercion -----------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(BaseModel):
    name: str
    qty: int = 1


async def typed(
    when: datetime,
    day: date,
    span: timedelta,
    ident: UUID,
    color: Color,
    item: Item,
    price: Decimal,
    tags: set[str],
    pair: tuple[int, str],
) -> dict[str, Any]:
    return dict(locals())


def test_rich_types_travel_as_json_and_come_back_typed() -> None:
    when = datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5)))
    ident = UUID("12345678-1234-5678-1234-567812345678")
    sig = Signature(typed, "typed")
    args, kwargs = sig.encode(
        (
            when,
            date(2024, 1, 2),
            timedelta(seconds=90),
            ident,
            Color.BLUE,
            Item(name="pen"),
            Decimal("1.10"),
            {"b", "a"},
            (1, "x"),
        ),
        {},
    )
    assert args == []
    assert kwargs["when"] == "2024-02-29T12:30:15.123456+05:00"
    assert kwargs["day"] == "2024-01-02"
    assert kwargs["ident"] == str(ident) and kwargs["color"] == "blue"
    assert kwargs["item"] == {"name": "pen"} and kwargs["pair"] == [1, "x"]
    serde.dumps(kwargs)  # plain JSON now
    _, values = sig.decode(*serde.loads(serde.dumps([args, kwargs])))
    assert values["when"] == when and isinstance(values["when"], datetime)
    assert values["when"].utcoffset() == timedelta(hours=5)
    assert values["day"] == date(2024, 1, 2) and values["span"] == timedelta(seconds=90)
    assert values["ident"] == ident and values["color"] is Color.BLUE
    assert values["item"] == Item(name="pen", qty=1)
    assert values["price"] == Decimal("1.10") and values["tags"] == {"a", "b"}
    assert values["pair"] == (1, "x")


def test_lax_coercion_on_encode() -> None:
    sig = Signature(plain, "plain")
    assert sig.encode(("7",), {"b": "s", "c": "2"}) == ([], {"a": 7, "b": "s", "c": 2.0})


aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-14 * 60, 14 * 60)),
)


async def at(when: datetime, later: list[datetime]) -> tuple[datetime, list[datetime]]:
    return when, later


@given(aware_datetimes, st.lists(aware_datetimes, max_size=3))
def test_datetimes_round_trip(when: datetime, later: list[datetime]) -> None:
    sig = Signature(at, "at")
    args, kwargs = wire(sig, when, later)
    assert isinstance(kwargs["when"], str)
    decoded_args, decoded_kwargs = sig.decode(args, kwargs)
    out_when, out_later = run(at(*decoded_args, **decoded_kwargs))
    assert out_when == when and out_when.utcoffset() == when.utcoffset()
    assert out_later == later


async def shapes(
    a: int, b: str, c: float, /, *rest: bool, d: list[int], e: dict[str, str | None] | None = None
) -> tuple[Any, ...]:
    return a, b, c, rest, d, e


@given(
    a=st.integers(-(2**63), 2**63 - 1),
    b=st.text(),
    c=st.floats(allow_nan=False, allow_infinity=False),
    rest=st.lists(st.booleans(), max_size=3),
    d=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
    e=st.none() | st.dictionaries(st.text(max_size=5), st.none() | st.text(max_size=5), max_size=3),
)
def test_round_trip_any_values(
    a: int, b: str, c: float, rest: list[bool], d: list[int], e: dict[str, str | None] | None
) -> None:
    assert call_via_wire(shapes, a, b, c, *rest, d=d, e=e) == (a, b, c, tuple(rest), d, e)


# -- names --------------------------------------------------------------------------------


async def awkward(
    schema: int,
    model_config: str,
    model_fields: list[int],
    p1: int,
    p0: int,
    copy: bool = False,
    json: str = "j",
) -> tuple[Any, ...]:
    return schema, model_config, model_fields, p1, p0, copy, json


def test_parameter_names_that_clash_with_pydantic_or_field_names() -> None:
    sig = Signature(awkward, "awkward")
    args, kwargs = sig.encode(("1", "cfg", [2], 3, 4), {"json": "x"})
    assert kwargs == {
        "schema": 1,
        "model_config": "cfg",
        "model_fields": [2],
        "p1": 3,
        "p0": 4,
        "json": "x",
    }
    assert call_via_wire(awkward, "1", "cfg", [2], 3, 4, json="x") == (
        1,
        "cfg",
        [2],
        3,
        4,
        False,
        "x",
    )
    with pytest.raises(taskflow.ArgumentError, match="argument 'model_config'"):
        sig.encode((1, 2, [], 3, 4), {})


# -- errors -------------------------------------------------------------------------------


def test_wrong_type_names_parameter_and_input() -> None:
    sig = Signature(plain, "plain")
    with pytest.raises(taskflow.ArgumentError) as info:
        sig.encode(("not-an-int", "ok"), {})
    message = str(info.value)
    assert message.startswith("plain(): argument 'a':")
    assert "valid integer" in message and "'not-an-int'" in message
    assert "'b'" not in message
    assert isinstance(info.value, TypeError) and isinstance(info.value, taskflow.PayloadError)


@pytest.mark.parametrize(
    ("args", "kwargs", "pattern"),
    [
        ((1,), {}, "missing a required argument: 'b'"),
        ((1, "x", 2.0, 4), {}, "too many positional arguments"),
        ((1, "x"), {"zzz": 1}, "unknown keyword argument 'zzz'; it takes a, b, c"),
        ((1, "x"), {"a": 1}, "multiple values for argument 'a'"),
    ],
)
def test_binding_errors(args: tuple[Any, ...], kwargs: dict[str, Any], pattern: str) -> None:
    sig = Signature(plain, "plain")
    with pytest.raises(taskflow.ArgumentError, match=f"^plain\\(\\): .*{pattern}"):
        sig.encode(args, kwargs)
    with pytest.raises(taskflow.ArgumentError, match=pattern):
        sig.decode(list(args), kwargs)


async def many(a: int, b: int, c: int, d: int, e: int, f: int, g: int) -> None:
    pass


def test_many_errors_are_summarised_and_inputs_truncated() -> None:
    with pytest.raises(taskflow.ArgumentError) as info:
        Signature(many, "many").encode(("x" * 100,) * 7, {})
    message = str(info.value)
    assert message.endswith("(+2 more)")
    assert message.count("argument '") == 5
    assert "x" * 58 not in message and "..." in message


def test_decode_validates_like_encode() -> None:
    sig = Signature(plain, "plain")
    with pytest.raises(taskflow.ArgumentError, match="argument 'a'"):
        sig.decode(["not-an-int", "b"], {})
    with pytest.raises(taskflow.ArgumentError, match="argument 'a'"):
        sig.decode([], {"a": "not-an-int", "b": "b"})


async def choose(mode: Literal["Fast", "Slow"], level: int) -> None:
    pass


def test_error_message_keeps_expected_values_verbatim() -> None:
    with pytest.raises(taskflow.ArgumentError) as info:
        Signature(choose, "choose").encode(("Medium", 1), {})
    assert "'Fast'" in str(info.value) and "'Slow'" in str(info.value)


class Opaque:
    pass


async def takes_any(x: Any) -> None:
    pass


async def takes_opaque(x: Opaque) -> None:
    pass


def test_unencodable_argument_is_serialization_error() -> None:
    with pytest.raises(taskflow.SerializationError, match=r"^takes_any\(\): cannot encode"):
        Signature(takes_any, "takes_any").encode((object(),), {})
    with pytest.raises(taskflow.SerializationError, match="Opaque"):
        Signature(takes_opaque, "takes_opaque").encode((Opaque(),), {})
    with pytest.raises(taskflow.ArgumentError, match="argument 'x'"):
        Signature(takes_opaque, "takes_opaque").encode((3,), {})


def test_unresolvable_annotation_is_configuration_error() -> None:
    namespace: dict[str, Any] = {}
    exec("async def broken(x: 'DoesNotExist') -> None: pass", namespace)
    with pytest.raises(taskflow.ConfigurationError, match="type hints of task 'broken'"):
        Signature(namespace["broken"], "broken")
