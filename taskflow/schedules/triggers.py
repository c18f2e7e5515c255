"""When a schedule's ticks are due: a cron expression in a time zone, or a fixed interval.

Both are anchored: tick n of an interval is due at ``start + n * every`` (``start`` defaults
to the Unix epoch, so every worker, before and after a restart, agrees on the ticks), and a
cron's ticks are the wall-clock times its expression matches. Jitter is the schedule's, not
the trigger's: it delays one tick's job without moving the ticks.

Daylight saving, for a cron in a zone that has it: each wall-clock time the expression
matches fires once if it exists. A time skipped by a spring-forward does not fire (there is
no 02:30 on that day in Europe/Berlin); a time repeated by a fall-back fires once, at its
first occurrence (the second 02:30 is passed by). So ``30 2 * * *`` skips the spring-forward
day and fires once on the fall-back day, and ``*/15 * * * *`` fires four times in the
repeated hour, not eight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from ..errors import ConfigurationError

__all__ = ("Cron", "Every", "Trigger", "zone")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-6 or sun-sat (7 is sunday too)"),
    ("second", "0-59"),
)
_FORMS = "a value, *, a list (1,15), a range (1-5) or a step (*/10, 0-30/5)"


def zone(tz: str | ZoneInfo | None) -> ZoneInfo:
    """A time zone by IANA name (``Europe/Berlin``), refused with a clear error if unknown."""
    if tz is None:
        return ZoneInfo("UTC")
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"tz={tz!r} is not a time zone: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from None


def _check_cron(expr: str) -> None:
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ConfigurationError(
            f"cron={expr!r} has {len(fields)} fields: use 5 (minute hour day-of-month month "
            "day-of-week) or 6 (the same, then seconds)"
        )
    try:
        croniter(expr, datetime(2000, 1, 1))
        return
    except (CroniterError, ValueError, KeyError):
        pass
    for position, value in enumerate(fields):
        probe = ["*"] * len(fields)
        probe[position] = value
        try:
            croniter(" ".join(probe), datetime(2000, 1, 1))
        except (CroniterError, ValueError, KeyError):
            name, valid = _FIELDS[position]
            raise ConfigurationError(
                f"cron={expr!r}: field {position + 1} ({name}) {value!r} is invalid; valid: "
                f"{valid}, as {_FORMS}"
            ) from None
    raise ConfigurationError(f"cron={expr!r} is not a valid cron expression")


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression (5 fields, or 6 with seconds last) read in ``tz``."""

    expr: str
    tz: ZoneInfo
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def parse(
        cls,
        expr: str,
        tz: str | ZoneInfo | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Cron:
        """Check ``expr`` now: a bad field is refused naming the field and its range."""
        if not isinstance(expr, str):
            raise ConfigurationError(f"cron={expr!r} must be a string such as '*/5 * * * *'")
        _check_cron(expr)
        return cls(" ".join(expr.split()), zone(tz), _aware("start", start), _aware("end", end))

    def after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after ``moment`` (aware), or None past ``end``."""
        if self.start is not None and moment < self.start:
            moment = self.start - timedelta(microseconds=1)
        local = moment.astimezone(self.tz).replace(tzinfo=None)
        # the expression is matched on naive wall-clock times (no DST inside croniter);
        # each is then placed in the zone: times that do not exist are passed by, and a
        # repeated one counts at its first occurrence only
        it = croniter(self.expr, local)
        for _ in range(100_000):
            wall: datetime = it.get_next(datetime)
            tick = wall.replace(tzinfo=self.tz, fold=0)
            if tick.astimezone(UTC).astimezone(self.tz).replace(tzinfo=None) != wall:
                continue  # skipped by a spring-forward
            tick = tick.astimezone(UTC)
            if tick <= moment:
                continue  # the first occurrence of a repeated time, already passed
            if self.end is not None and tick > self.end:
                return None
            return tick
        return None  # an expression that matches nothing in 100,000 candidates

    def describe(self) -> str:
        return f"cron {self.expr}" + (f" ({self.tz.key})" if self.tz.key != "UTC" else "")


@dataclass(frozen=True, slots=True)
class Every:
    """A tick every ``interval``, anchored at ``start`` (the Unix epoch by default)."""

    interval: timedelta
    start: datetime = EPOCH
    end: datetime | None = None

    @classmethod
    def parse(
        cls, interval: timedelta, start: datetime | None = None, end: datetime | None = None
    ) -> Every:
        if not isinstance(interval, timedelta) or interval <= timedelta(0):
            raise ConfigurationError(
                f"every={interval!r} must be a positive timedelta, e.g. timedelta(minutes=5)"
            )
        if interval < timedelta(milliseconds=1):
            raise ConfigurationError(f"every={interval!r} is under the 1 ms resolution")
        return cls(interval, _aware("start", start) or EPOCH, _aware("end", end))

    def after(self, moment: datetime) -> datetime | None:
        if moment < self.start:
            tick = self.start
        else:
            n = (moment - self.start) // self.interval + 1
            tick = self.start + n * self.interval
        if self.end is not None and tick > self.end:
            return None
        return tick

    def describe(self) -> str:
        return f"every {_span(self.interval)}"


Trigger = Cron | Every


def _aware(name: str, moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ConfigurationError(
            f"{name}={moment!r} must be an aware datetime, e.g. datetime(2027, 1, 1, tzinfo=UTC)"
        )
    return moment.astimezone(UTC)


def _span(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
