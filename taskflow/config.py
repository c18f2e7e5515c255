"""Frozen settings: connection, limits, retry policy and worker behaviour.

The environment is read in exactly one place, :func:`settings_from_env`.
"""

from __future__ import annotations

import math
import os
import random
import re
import warnings
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from .errors import ConfigurationError

__all__ = (
    "DEFAULT_REDIS_URL",
    "DURATION_FORMS",
    "Backoff",
    "Duration",
    "MetricsSettings",
    "Resolution",
    "RetryPolicy",
    "build",
    "describe_validation",
    "parse_duration",
    "Settings",
    "WorkerSettings",
    "settings_from_env",
)

DEFAULT_REDIS_URL = "redis://localhost:6379/0"

_frozen = ConfigDict(frozen=True, extra="forbid")

QueueName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")]


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ISO_DURATION: TypeAdapter[timedelta] = TypeAdapter(timedelta)

DURATION_FORMS = (
    "a number of seconds (30, 0.5), a string such as 500ms, 30s, 15m, 2h, 1d, 1w or 1h30m, "
    "an ISO 8601 duration such as PT30S or P1DT2H, or a datetime.timedelta"
)
"""What :func:`parse_duration` accepts, for error messages."""


def parse_duration(value: object) -> timedelta:
    """The one duration parser: seconds, ``"500ms"``/``"30s"``/``"15m"``/``"2h"``/``"1d"``/
    ``"1w"`` and sums such as ``"1h30m"``, ISO 8601 (``"PT30S"``), or a timedelta.

    :raises ValueError: naming the value and every accepted form (the sign is left to the
        caller: each setting says whether zero or negative makes sense).
    """
    if isinstance(value, timedelta):
        return value
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _DURATION.match(text):
            seconds = sum(
                float(n) * _UNITS[unit.lower()] for n, unit in _DURATION_PART.findall(text)
            )
        elif re.fullmatch(r"-?\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text[:1] in "Pp-" and len(text) > 1:
            try:
                return _ISO_DURATION.validate_python(text)
            except ValidationError:
                pass
    if seconds is not None and math.isfinite(seconds):
        try:
            return timedelta(seconds=seconds)
        except OverflowError:
            pass
    raise ValueError(f"invalid duration {value!r}: use {DURATION_FORMS}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
"""A timedelta field that accepts everything :func:`parse_duration` does."""


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


def _positive(value: timedelta, info: ValidationInfo) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"{info.field_name} must be positive, got {_seconds(value)}")
    return value


def _not_negative(value: timedelta, info: ValidationInfo) -> timedelta:
    if value < timedelta(0):
        raise ValueError(f"{info.field_name} must be >= 0, got {_seconds(value)}")
    return value


# durations a negative (or zero) value would make meaningless: refused, naming field and value
_Positive = Annotated[Duration, AfterValidator(_positive)]
_NotNegative = Annotated[Duration, AfterValidator(_not_negative)]


class Backoff(BaseModel):
    """Exponential backoff with full jitter and a cap.

    The n-th retry waits a uniformly random time in ``[0, min(cap, base * factor**(n-1))]``
    (or exactly that bound with ``jitter=False``).

    Example::

        taskflow.Backoff(base=1.0, cap=60.0)   # waits up to 1 s, 2 s, 4 s, ... 60 s
    """

    model_config = _frozen

    base: float = Field(1.0, gt=0, description="Upper bound of the first delay, in seconds.")
    cap: float = Field(60.0, gt=0, description="Largest delay, in seconds.")
    factor: float = Field(2.0, ge=1, description="Growth of the bound per retry.")
    jitter: bool = Field(True, description="Full jitter: draw uniformly below the bound.")

    @model_validator(mode="after")
    def _cap_covers_base(self) -> Self:
        if self.cap < self.base:
            raise ValueError(f"cap ({self.cap!r}) must be >= base ({self.base!r})")
        return self

    def bound(self, retry: int) -> float:
        """Largest delay before the ``retry``-th retry (1-based), in seconds."""
        if retry < 1:
            raise ValueError(f"retry number must be >= 1, got {retry!r}")
        # compare in log space first: factor**(retry-1) overflows long before it matters
        if self.factor > 1 and (retry - 1) * math.log(self.factor) >= math.log(
            self.cap / self.base
        ):
            return float(self.cap)
        return float(min(self.cap, self.base * self.factor ** (retry - 1)))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Delay before the ``retry``-th retry (1-based), in seconds."""
        top = self.bound(retry)
        if not self.jitter:
            return top
        return (rng or random).uniform(0.0, top)


class RetryPolicy(BaseModel):
    """The app-wide default of how failed jobs are retried; ``@app.task`` may override it."""

    model_config = _frozen

    retries: int = Field(
        0, ge=0, le=1000, description="Extra attempts after a failure, for tasks that name none."
    )
    backoff: Backoff = Field(
        default_factory=Backoff, description="Delay between attempts, for tasks that name none."
    )


class WorkerSettings(BaseModel):
    """How a worker claims, runs, heartbeats and drains."""

    model_config = _frozen

    queues: tuple[QueueName, ...] = Field(
        ("default",), min_length=1, description="Queues served, by taskflow queue name."
    )
    concurrency: int = Field(
        100, ge=1, le=100_000, description="Jobs running at once, across all served queues."
    )
    poll_interval: _Positive = Field(
        timedelta(milliseconds=50),
        description="Longest sleep between looks at the queues when they are empty.",
    )
    lease: _Positive = Field(
        timedelta(seconds=10),
        description="A claimed job's lock lives this long unless its worker's heartbeat renews it; "
        "a job whose worker died is re-run once it lapses.",
    )
    heartbeat_interval: _Positive = Field(
        timedelta(seconds=2), description="How often the worker renews its heartbeat and leases."
    )
    grace_period: _NotNegative = Field(
        timedelta(seconds=10),
        description="On shutdown, how long running jobs may finish before they are put back "
        "(0: at once).",
    )
    max_worker_deaths: int = Field(
        3,
        ge=1,
        description="A job whose attempts ended in this many worker deaths (or lost leases) "
        "fails for good as a poison job (JobLost, into the dead letters) instead of killing "
        "more workers; the task's own retries do not count these.",
    )
    monitor_interval: _Positive = Field(
        timedelta(seconds=10),
        description="How often one worker of the app (whichever claims the turn) runs the "
        "monitor's cluster-wide pass: blocked workers' overdue jobs, dead workers' jobs, "
        "stuck queues, retention.",
    )
    monitor: bool = Field(
        True, description="Take part in the monitor's passes (one worker per interval runs one)."
    )
    alert_interval: _Positive = Field(
        timedelta(seconds=15),
        description="How often the worker evaluates the app's alert rules.",
    )
    reconnect_backoff_cap: _Positive = Field(
        timedelta(seconds=5), description="Longest wait between reconnection attempts."
    )
    refuse_evicting_redis: bool = Field(
        False,
        description="Refuse to start on a Redis whose maxmemory-policy may evict keys (jobs "
        "and results would vanish silently); otherwise it is a warning.",
    )
    unknown_task_window: _NotNegative = Field(
        timedelta(minutes=10),
        description="How long a job whose task this worker does not register is put back "
        "for another worker (a rolling deploy) before it fails as UnknownTask.",
    )
    schedules: bool = Field(
        True,
        description="Run the schedule ticker: fire the app's schedules (every worker does; "
        "each tick is enqueued once).",
    )
    schedule_retire_after: _Positive = Field(
        timedelta(minutes=10),
        description="A schedule declared in code that no running worker has declared for this "
        "long (removed from the code) is deleted.",
    )
    summary_interval: _NotNegative = Field(
        timedelta(minutes=5),
        description="How often the worker logs a summary line (jobs, failures, run time "
        "p50/p95) at INFO on the taskflow.worker logger; 0 turns it off.",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_redeliveries" in data:
            warnings.warn(
                "WorkerSettings.max_redeliveries is now max_worker_deaths, counted as deaths "
                "(max_redeliveries=N is max_worker_deaths=N+1)",
                DeprecationWarning,
                stacklevel=2,
            )
            data = dict(data)
            old = data.pop("max_redeliveries")
            if isinstance(old, int) and "max_worker_deaths" not in data:
                data["max_worker_deaths"] = old + 1
        return data

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> Self:
        if self.heartbeat_interval * 2 > self.lease:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be at most half of "
                f"lease ({self.lease}), or leases lapse between heartbeats"
            )
        return self


class Resolution(BaseModel):
    """One time resolution of stored metrics: bucket width and how long buckets are kept."""

    model_config = _frozen

    bucket: Duration = Field(description="Width of one time bucket.")
    retention: Duration = Field(description="Buckets older than this expire.")

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if self.bucket < timedelta(seconds=1) or self.retention < self.bucket:
            raise ValueError(
                f"bucket ({self.bucket}) must be >= 1s and retention ({self.retention}) >= bucket"
            )
        return self


class MetricsSettings(BaseModel):
    """What workers measure and how long Redis keeps it."""

    model_config = _frozen

    enabled: bool = Field(True, description="Measure every job and run the system collector.")
    flush_interval: _Positive = Field(
        timedelta(seconds=1),
        description="How often a worker writes its aggregated job metrics (one round trip).",
    )
    system_interval: _Positive = Field(
        timedelta(seconds=10), description="How often system samples are taken."
    )
    system_retention: _Positive = Field(
        timedelta(days=1), description="How long system samples are kept."
    )
    resolutions: tuple[Resolution, ...] = Field(
        (
            Resolution(bucket=timedelta(minutes=1), retention=timedelta(days=1)),
            Resolution(bucket=timedelta(hours=1), retention=timedelta(days=30)),
        ),
        min_length=1,
        description="Job metrics are written at every resolution (finest first); queries "
        "use the finest one that still covers their time range.",
    )

    time_scale: float = Field(
        1.0,
        gt=0,
        le=100_000,
        description="For demos and tests: the metrics' clock runs this many times faster "
        "than wall time from time_origin (3600: an hour of metrics per second), so compressed "
        "load is stored and read back as spread over the longer span. 1 in production.",
    )
    time_origin: datetime | None = Field(
        None,
        description="The wall time from which a time_scale other than 1 runs; every process "
        "of the app must use the same one.",
    )

    @model_validator(mode="after")
    def _finest_first(self) -> Self:
        buckets = [r.bucket for r in self.resolutions]
        if buckets != sorted(set(buckets)):
            raise ValueError(f"resolutions must go from finest to coarsest, got {buckets}")
        if self.time_scale != 1 and self.time_origin is None:
            raise ValueError(
                f"time_scale={self.time_scale:g} needs time_origin: the wall time (timezone-"
                "aware) from which the metrics' clock runs faster, the same in every process"
            )
        if self.time_origin is not None and self.time_origin.tzinfo is None:
            raise ValueError(
                f"time_origin must be timezone-aware, got {self.time_origin.isoformat()!r}"
            )
        return self


class Settings(BaseModel):
    """Settings of a :class:`taskflow.TaskFlow` app.

    Build one directly, or let :func:`settings_from_env` fill it from ``TASKFLOW_*`` variables.
    """

    model_config = _frozen

    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        description="redis:// or rediss:// URL (TLS with rediss://), database number in the path.",
    )
    embedded: Literal["auto", "never", "always"] = Field(
        "auto",
        description="Start a private redis-server (needs the `embedded` extra): `auto` only when "
        "redis_url is unreachable, `always` regardless, `never` to fail instead.",
    )
    default_queue: QueueName = Field("default", description="Queue of tasks that name none.")
    max_payload_bytes: int = Field(
        512 * 1024, ge=1024, description="Largest encoded job or result, enforced on both sides."
    )
    result_ttl: _NotNegative = Field(
        timedelta(days=1),
        description="How long a finished job's result is kept by default (0 keeps none).",
    )
    job_ttl: _Positive = Field(
        timedelta(days=1),
        description="How long a queued job may wait past its scheduled time before it expires.",
    )
    dead_letter_ttl: _NotNegative = Field(
        timedelta(days=7),
        description="How long a job that failed for good is kept as a dead letter, to "
        "inspect and retry (0 keeps none).",
    )
    event_retention: _Positive = Field(
        timedelta(days=7),
        description="How long the monitor's events (overdue jobs, dead workers, recoveries, "
        "retention) are kept after the last one (the last 1,000 at most).",
    )
    run_retention: _Positive = Field(
        timedelta(days=1),
        description="How long a graph run's state is kept after the run ends.",
    )
    run_max_age: _Positive = Field(
        timedelta(days=7),
        description="A run's state expires this long after submission even if it never ends.",
    )
    connect_timeout: _Positive = Field(
        timedelta(seconds=5), description="Timeout of one connection attempt."
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, description="Default retry policy of this app's tasks."
    )
    worker: WorkerSettings = Field(
        default_factory=WorkerSettings, description="Defaults for workers of this app."
    )
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings, description="Job and system metrics."
    )

    @model_validator(mode="after")
    def _url_scheme(self) -> Self:
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"redis_url must start with redis://, rediss:// or unix://, got {self.redis_url!r}"
            )
        return self


M = TypeVar("M", bound=BaseModel)


def describe_validation(
    exc: ValidationError, *, root: str = "value", show_input: bool = False
) -> str:
    """Every problem of a pydantic error as ``field.path: message`` (``; ``-joined)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or root}: {err['msg']}"
        + (f" (got {err.get('input')!r:.60})" if show_input else "")
        for err in exc.errors(include_url=False)
    )


def build(model: type[M], data: Mapping[str, Any], source: str = "") -> M:
    """Validate ``data`` as ``model``; a :class:`ConfigurationError` names each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation(exc, show_input=True)
        where = f" from {source}" if source else ""
        raise ConfigurationError(f"invalid {model.__name__}{where}: {problems}") from None


def settings_from_env(
    base: Settings | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Return ``base`` (or defaults) with values from ``TASKFLOW_REDIS_URL``/``TASKFLOW_EMBEDDED``.

    Values set explicitly on ``base`` win over the environment.
    """
    env = os.environ if environ is None else environ
    settings = base or Settings()
    updates: dict[str, object] = {}
    if "redis_url" not in settings.model_fields_set and env.get("TASKFLOW_REDIS_URL"):
        updates["redis_url"] = env["TASKFLOW_REDIS_URL"]
    if "embedded" not in settings.model_fields_set and env.get("TASKFLOW_EMBEDDED"):
        updates["embedded"] = env["TASKFLOW_EMBEDDED"]
    if not updates:
        return settings
    data = {**settings.model_dump(exclude_unset=True), **updates}
    return build(Settings, data, source="TASKFLOW_* environment variables")
