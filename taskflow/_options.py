"""Enqueue options: when and where an enqueue puts its jobs, validated where they enter.

Built by :meth:`taskflow.Task.with_options`; the deprecated ``_delay=``-style keywords of
``enqueue`` are turned into the same object (with a DeprecationWarning) by
:func:`legacy_options`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .config import QueueName
from .errors import ConfigurationError

__all__ = ("ENQUEUE_OPTIONS", "NO_OPTIONS", "EnqueueOptions", "legacy_options")

_QUEUE_NAME: TypeAdapter[str] = TypeAdapter(QueueName)


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """When and where an enqueue puts its jobs; built by :meth:`Task.with_options`.

    :param delay: run no earlier than this many seconds (a float or a timedelta) from now.
    :param defer_until: run no earlier than this timezone-aware datetime (not with ``delay``).
    :param job_id: the job's own id, 1-200 characters. Deduplicates: if a job or a result with
        this id exists, nothing is enqueued and the handle has ``enqueued=False``.
    :param queue: enqueue on this queue instead of the task's.
    :raises ConfigurationError: a value of the wrong type or out of range, naming it.
    """

    delay: float | timedelta | None = None
    defer_until: datetime | None = None
    job_id: str | None = None
    queue: str | None = None

    def __post_init__(self) -> None:
        _check_delay(self.delay)
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
            _check_queue(self.queue)


ENQUEUE_OPTIONS = ("_delay", "_defer_until", "_job_id", "_queue")


def legacy_options(given: dict[str, Any], valid: tuple[str, ...], method: str) -> EnqueueOptions:
    """Pop the deprecated ``_``-prefixed options out of ``given``; warn when one is set."""
    legacy = {k: given.pop(k) for k in list(given) if k.startswith("_")}
    if not legacy:
        return NO_OPTIONS
    unknown = sorted(set(legacy) - set(valid))
    if unknown:
        raise ConfigurationError(
            f"unknown enqueue option {unknown[0]!r}; valid options: {', '.join(valid)}"
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
        stacklevel=3,
    )
    return EnqueueOptions(**options)


def _check_delay(delay: object) -> None:
    if delay is None:
        return
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise ConfigurationError(f"delay must be seconds (a float) or a timedelta, got {delay!r}")
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigurationError(f"delay must be a finite number of seconds >= 0, got {delay!r}")


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


def _check_queue(queue: object) -> None:
    try:
        _QUEUE_NAME.validate_python(queue)
    except ValidationError:
        raise ConfigurationError(
            f"queue name {queue!r} is invalid: use 1-200 letters, digits and _.:-"
        ) from None


NO_OPTIONS = EnqueueOptions()
