"""Click parameter types shared by the taskflow commands: durations, times, app targets.

The parsers behind them (parse_time, parse_since, split_target) raise ValueError with a
message naming the value, so they also serve callers outside click.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from ..config import parse_duration

__all__ = ("Duration", "Since", "Target", "Time", "parse_since", "parse_time", "split_target")

DURATION_EXAMPLES = "30 (seconds), 500ms, 30s, 15m, 2h, 1d, 1w, 1h30m or PT30S"
"""What a duration option accepts, in the words of its error message."""

_TIME_EXAMPLE = "2024-05-01T12:00:00Z"

T = TypeVar("T")

if TYPE_CHECKING:
    _ParamType = click.ParamType  # generic in its value type since click 8.4
else:

    class _ParamType(click.ParamType):
        """click.ParamType, subscriptable at run time on click < 8.4 too."""

        def __class_getitem__(cls, _item: Any) -> type[_ParamType]:
            return cls


def parse_time(value: str) -> datetime:
    """An ISO 8601 time (2024-05-01T12:00:00Z); UTC when it names no zone."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"invalid time {value!r}; use ISO 8601, e.g. {_TIME_EXAMPLE}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_since(value: str) -> timedelta | datetime:
    """How far back: a duration (30s, 15m, 1h, 7d, 2w) or an ISO 8601 time."""
    try:
        duration = parse_duration(value)
    except ValueError:
        pass
    else:
        if duration <= timedelta(0):
            raise ValueError(f"invalid duration {value!r}: use a duration above 0, e.g. 15m")
        return duration
    try:
        return parse_time(value)
    except ValueError:
        raise ValueError(
            f"invalid duration or time {value!r}; use e.g. 30s, 15m, 1h, 7d, "
            f"or an ISO 8601 time such as {_TIME_EXAMPLE}"
        ) from None


def split_target(value: str) -> tuple[str, str]:
    """(module, attribute) of ``module:attribute``; ValueError naming the value if malformed."""
    module, sep, attribute = value.partition(":")
    if not sep or not module.strip() or not attribute.strip() or ":" in attribute:
        raise ValueError(
            f"app must be given as module:attribute, e.g. myapp.tasks:app, got {value!r}"
        )
    return module.strip(), attribute.strip()


class Duration(_ParamType[timedelta]):
    """A duration through taskflow.config.parse_duration: 30 (seconds), 30s, 15m, 1h30m, PT30S.

    Negative durations are refused, and zero unless ``allow_zero``.
    """

    name = "duration"

    def __init__(self, *, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            duration = parse_duration(value)
        except ValueError:
            self.fail(f"invalid duration {value!r}: use {DURATION_EXAMPLES}", param, ctx)
        if duration < timedelta(0) or (duration == timedelta(0) and not self.allow_zero):
            bound = "0 or more" if self.allow_zero else "more than 0"
            self.fail(f"{value!r} is not a duration of {bound}", param, ctx)
        return duration


class _Parsed(_ParamType[T]):
    """A parameter read by a parser that raises ValueError naming the value; a value that is
    already of the parsed type (a default) passes through."""

    parsed: tuple[type, ...] = ()

    @staticmethod
    def parse(text: str, /) -> T:
        raise NotImplementedError

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> T:
        if self.parsed and isinstance(value, self.parsed):
            return cast("T", value)
        try:
            return self.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Since(_Parsed[timedelta | datetime]):
    """The start of a window: a duration back from its end, or an ISO 8601 time."""

    name = "duration or time"
    parsed = (timedelta, datetime)
    parse = staticmethod(parse_since)


class Time(_Parsed[datetime]):
    """An ISO 8601 time; UTC when it names no zone."""

    name = "time"
    parsed = (datetime,)
    parse = staticmethod(parse_time)


def _target(text: str) -> str:
    split_target(text)
    return text


class Target(_Parsed[str]):
    """``module:attribute`` naming a TaskFlow app; only its form is checked here (the module
    is imported by the command, after logging is set up)."""

    name = "module:attribute"
    parse = staticmethod(_target)
