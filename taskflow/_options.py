"""Enqueue options: when and where an enqueue puts its jobs, validated where they enter.

Built by :meth:`taskflow.Task.with_options`; the deprecated ``_delay=``-style keywords of
``enqueue`` are turned into the same object (with a DeprecationWarning) by
:func:`legacy_options`.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .config import DURATION_FORMS, QueueName, parse_duration
from .errors import ConfigurationError

__all__ = (
    "ENQUEUE_OPTIONS",
    "NO_OPTIONS",
    "EnqueueOptions",
    "check_queue",
    "did_you_mean",
    "duration_option",
    "legacy_options",
)

_QUEUE_NAME: TypeAdapter[str] = TypeAdapter(QueueName)


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """When and where an enqueue puts its jobs; built by :meth:`Task.with_options`.

    :param delay: run no earlier than this from now: seconds, a timedelta or a duration
        string such as ``"30s"``, ``"15m"``, ``"1h30m"`` or ``"PT5M"``.
    :param defer_until: run no earlier than this timezone-aware datetime (not with ``delay``).
    :param job_id: the job's own id, 1-200 characters. Deduplicates: if a job or a result with
        this id exists, nothing is enqueued and the handle has ``enqueued=False``.
    :param queue: enqueue on this queue instead of the task's.
    :raises ConfigurationError: a value of the wrong type or out of range, naming it.
    """

    delay: float | timedelta | str | None = None
    defer_until: datetime | None = None
    job_id: str | None = None
    queue: str | None = None

    def __post_init__(self) -> None:
        delay = None if self.delay is None else duration_option("delay", self.delay, minimum=0)
        if self.defer_until is not None:
            _check_defer_until(self.defer_until)
            if self.delay is not None:
                raise ConfigurationError(
                    f"pass delay or defer_until, not both; got delay={self.delay!r} "
                    f"and defer_until={self.defer_until!r}"
                )
        if self.job_id is not None:
            _check_job_id(self.job_id)
        if self.queue is not None:
            check_queue(self.queue)
        if delay is not None:
            object.__setattr__(self, "delay", delay)  # one form for the enqueue path


ENQUEUE_OPTIONS = ("_delay", "_defer_until", "_job_id", "_queue")


def legacy_options(given: dict[str, Any], valid: tuple[str, ...], method: str) -> EnqueueOptions:
    """Pop the deprecated ``_``-prefixed options out of ``given``; warn when one is set."""
    legacy = {k: given.pop(k) for k in list(given) if k.startswith("_")}
    if not legacy:
        return NO_OPTIONS
    unknown = sorted(set(legacy) - set(valid))
    if unknown:
        raise ConfigurationError(
            f"unknown enqueue option {unknown[0]!r}{did_you_mean(unknown[0], valid)}; "
            f"valid options: {', '.join(valid)}"
        )
    options = {k[1:]: v for k, v in legacy.items() if v is not None}
    if not options:
        return NO_OPTIONS
    old = ", ".join(f"_{k}=" for k in options)
    new = ", ".join(f"{k}=..." for k in options)
    warnings.warn(
        f"{old} {'is' if len(options) == 1 else 'are'} deprecated: "
        f"use task.with_options({new}).{method}(...)",
        DeprecationWarning,
        stacklevel=4,  # the caller of Task.enqueue, past its redis_errors wrapper
    )
    return EnqueueOptions(**options)


def duration_option(option: str, value: object, *, minimum: float) -> timedelta:
    """``value`` parsed by the one duration parser, at least ``minimum`` seconds (``0``:
    zero allowed; anything above: strictly more than zero)."""
    try:
        duration = parse_duration(value)
    except ValueError:
        raise ConfigurationError(
            f"{option}={value!r} is not a duration: use {DURATION_FORMS}"
        ) from None
    seconds = duration.total_seconds()
    if seconds < 0 or (minimum > 0 and seconds == 0):
        bound = ">= 0" if minimum == 0 else "> 0"
        raise ConfigurationError(f"{option} must be {bound}, got {value!r}")
    return duration


def _check_defer_until(until: object) -> None:
    if not isinstance(until, datetime) or until.utcoffset() is None:
        raise ConfigurationError(
            f"defer_until must be a timezone-aware datetime, got {until!r}; "
            "e.g. datetime.now(UTC) + timedelta(hours=1)"
        )


def _check_job_id(job_id: object) -> None:
    if isinstance(job_id, str) and 1 <= len(job_id) <= 200:
        return
    got = (
        f"{job_id[:20]!r}... ({len(job_id)} characters)"
        if isinstance(job_id, str) and job_id
        else repr(job_id)
    )
    raise ConfigurationError(f"job_id must be a string of 1-200 characters, got {got}")


def check_queue(queue: object, option: str = "queue") -> None:
    """Refuse a queue name no worker could serve, naming it and the valid form."""
    try:
        _QUEUE_NAME.validate_python(queue)
    except ValidationError:
        raise ConfigurationError(
            f"{option}={queue!r} is not a valid queue name: use 1-200 letters, digits "
            "and the characters _ . : -"
        ) from None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


NO_OPTIONS = EnqueueOptions()
