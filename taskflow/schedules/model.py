"""A schedule's definition: a task call plus a trigger, as stored in Redis."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from .._clock import ms_to_datetime
from ..errors import ConfigurationError
from .triggers import EPOCH, Cron, Every, Trigger, zone

__all__ = ("Misfire", "Schedule", "ScheduleInfo")

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")


class Misfire(StrEnum):
    """What a schedule does with ticks that passed while no worker was there to fire them."""

    COALESCE = "coalesce"  #: one job for all of them; it learns how many were missed
    SKIP = "skip"  #: none; the schedule goes on at its next tick
    ALL = "all"  #: one job per missed tick, the latest ``max_catchup`` of them


@dataclass(frozen=True, slots=True)
class Schedule:
    """A task call and when to make it. Build one with ``app.schedule``, ``app.periodic``
    or ``app.schedules.add``; the arguments are encoded (and checked) when it is built."""

    name: str
    task: str
    queue: str
    trigger: Trigger
    args: list[Any] = field(default_factory=list)  #: encoded, as on the wire
    kwargs: dict[str, Any] = field(default_factory=dict)
    jitter: timedelta = timedelta(0)
    misfire: Misfire = Misfire.COALESCE
    max_catchup: int = 100
    overlap: bool = True
    #: a tick fired later than this after its due time counts as missed
    grace: timedelta = timedelta(seconds=1)
    source: str = "code"  #: "code" (declared, registered by workers) or "runtime" (added)

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _NAME_CHARS or len(self.name) > 200:
            raise ConfigurationError(
                f"schedule name {self.name!r} is not valid: use 1-200 letters, digits and _ . : -"
            )
        if self.jitter < timedelta(0):
            raise ConfigurationError(f"jitter={self.jitter!r} must be >= 0")
        if isinstance(self.trigger, Every) and self.jitter >= self.trigger.interval:
            raise ConfigurationError(
                f"jitter={self.jitter!r} must be shorter than every={self.trigger.interval!r}, "
                "or a tick's job could come after the next tick's"
            )
        if not 1 <= self.max_catchup <= 10_000:
            raise ConfigurationError(f"max_catchup={self.max_catchup!r} must be 1-10,000")
        if self.grace <= timedelta(0):
            raise ConfigurationError(f"grace={self.grace!r} must be > 0")

    # -- storage ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        t = self.trigger
        data: dict[str, Any] = {
            "name": self.name,
            "task": self.task,
            "queue": self.queue,
            "args": self.args,
            "kwargs": self.kwargs,
            "jitter_ms": _ms(self.jitter),
            "misfire": self.misfire.value,
            "max_catchup": self.max_catchup,
            "overlap": self.overlap,
            "grace_ms": _ms(self.grace),
            "source": self.source,
            "start_ms": _when(t.start),
            "end_ms": _when(t.end),
        }
        if isinstance(t, Cron):
            data |= {"cron": t.expr, "tz": t.tz.key}
        else:
            data |= {"every_ms": _ms(t.interval)}
        return data

    def encode(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @property
    def version(self) -> str:
        """Changes when anything but ``source`` changes: a new version resets the cursor."""
        data = self.to_dict()
        del data["source"]
        return hashlib.sha1(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    @classmethod
    def decode(cls, raw: bytes) -> Schedule:
        data = orjson.loads(raw)
        start = ms_to_datetime(data["start_ms"]) if data.get("start_ms") is not None else None
        end = ms_to_datetime(data["end_ms"]) if data.get("end_ms") is not None else None
        trigger: Trigger
        if "cron" in data:
            trigger = Cron(data["cron"], zone(data["tz"]), start, end)
        else:
            trigger = Every(timedelta(milliseconds=data["every_ms"]), start or EPOCH, end)
        return cls(
            name=data["name"],
            task=data["task"],
            queue=data["queue"],
            trigger=trigger,
            args=data["args"],
            kwargs=data["kwargs"],
            jitter=timedelta(milliseconds=data["jitter_ms"]),
            misfire=Misfire(data["misfire"]),
            max_catchup=data["max_catchup"],
            overlap=data["overlap"],
            grace=timedelta(milliseconds=data["grace_ms"]),
            source=data["source"],
        )

    def with_source(self, source: str) -> Schedule:
        return replace(self, source=source)

    # -- ticks ------------------------------------------------------------------------

    def jitter_ms(self, tick_ms: int) -> int:
        """The delay of one tick's job, the same in every worker (seeded by name and tick)."""
        span = _ms(self.jitter)
        return random.Random(f"{self.name}:{tick_ms}").randrange(span + 1) if span else 0

    def job_id(self, tick_ms: int) -> str:
        """The id of a tick's job: one job per (schedule, tick), however many workers race."""
        return f"schedule:{self.name}:{tick_ms}"

    def describe(self) -> str:
        return self.trigger.describe()


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as ``app.schedules.list()`` reports it."""

    name: str
    task: str
    queue: str
    trigger: str  #: ``cron */30 * * * *`` or ``every 5m``
    tz: str
    next_fire: datetime | None  #: None once the schedule has ended
    last_tick: datetime | None
    last_outcome: str | None  #: fired, paused, overlap, skipped; None before the first tick
    last_job: str | None  #: the id of the last tick's job
    last_status: str | None  #: that job's status (queued, running, succeeded, failed, ...)
    paused: bool
    fired: int  #: jobs enqueued by ticks
    skips: int  #: ticks that enqueued nothing (paused, overlap, skipped misfires)
    missed: int  #: ticks that passed with no worker to fire them
    source: str  #: code or runtime


def _ms(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


def _when(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)
