"""Reading custom metrics back, from any process: ``await app.metrics.read(name, ...)``.

A read merges every stored time bucket overlapping the window (widened to whole buckets,
as job metrics are) and every series whose labels match the ``labels`` given: a counter
sums, a histogram merges, a gauge takes the value set last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from .._clock import ms_to_datetime
from ..config import Resolution, parse_duration
from ..errors import MetricNotFound
from .clock import metrics_ms
from .custom import SEP, MetricKind, MetricSpec, registry_of
from .histogram import Histogram
from .query import _window

if TYPE_CHECKING:
    from .._client import Client

__all__ = (
    "CounterValue",
    "GaugeValue",
    "HistogramValue",
    "MetricValue",
    "Series",
    "collect_series",
    "read",
    "specs",
)


@dataclass(frozen=True, slots=True)
class CounterValue:
    """A counter over a window: ``total`` added, and ``rate`` per second."""

    name: str
    labels: dict[str, str]
    since: datetime
    until: datetime
    total: float
    rate: float


@dataclass(frozen=True, slots=True)
class GaugeValue:
    """A gauge: the value set last in the window by any process (None: none was), when,
    and each process's last value (by ``<host>-<pid>``)."""

    name: str
    labels: dict[str, str]
    since: datetime
    until: datetime
    value: float | None
    at: datetime | None
    processes: dict[str, float]


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """A histogram over a window: exact count, sum, mean, min and max; percentiles within
    2 % (``histogram.quantile(q)`` for others)."""

    name: str
    labels: dict[str, str]
    since: datetime
    until: datetime
    count: int
    sum: float
    mean: float | None
    min: float | None
    max: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    histogram: Histogram


MetricValue = CounterValue | GaugeValue | HistogramValue


@dataclass(slots=True)
class Series:
    """One metric's merged figures for one label combination."""

    total: float = 0.0
    histogram: Histogram = field(default_factory=Histogram)
    gauges: dict[str, tuple[int, float]] = field(default_factory=dict)  # process -> (ms, v)

    def add(self, other: Series) -> None:
        self.total += other.total
        self.histogram.update(other.histogram)
        for process, value in other.gauges.items():
            self._gauge(process, value)

    def _gauge(self, process: str, value: tuple[int, float]) -> None:
        known = self.gauges.get(process)
        if known is None or known[0] <= value[0]:
            self.gauges[process] = value

    def fold(self, part: str, raw: str) -> None:
        """Add one stored field (see custom.py's module docstring)."""
        h = self.histogram
        if part == "c":
            self.total += float(raw)
        elif part.startswith(":"):
            index = int(part[1:])
            n = int(raw)
            h.buckets[index] = h.buckets.get(index, 0) + n
            h.count += n
        elif part == ".s":
            h.total += float(raw)
        elif part == ".max":
            h.maximum = max(h.maximum, float(raw))
        elif part == ".min":
            h.minimum = min(h.minimum, float(raw))
        elif part.startswith("g:"):
            at, value = raw.split(" ", 1)
            self._gauge(part[2:], (int(at), float(value)))


def _resolution(app: Client, start_ms: int) -> Resolution:
    age = timedelta(milliseconds=max(0, metrics_ms(app.settings.metrics) - start_ms))
    resolutions = app.settings.metrics.resolutions
    return next((r for r in resolutions if r.retention >= age), resolutions[-1])


async def collect_series(
    app: Client, start_ms: int, end_ms: int, names: Iterable[str] | None = None
) -> tuple[Resolution, dict[tuple[str, str], Series]]:
    """Figures per (metric, label values JSON) of ``[start_ms, end_ms]`` widened to whole
    buckets, for the metrics ``names`` (None: all)."""
    wanted = None if names is None else set(names)
    resolution = _resolution(app, start_ms)
    width = int(resolution.bucket.total_seconds() * 1000)
    async with app.redis.pipeline(transaction=False) as pipe:
        for bucket in range(start_ms - start_ms % width, end_ms + 1, width):
            pipe.hgetall(app.keys.custom_bucket(width // 1000, bucket))
        hashes: list[dict[bytes, bytes]] = await pipe.execute()
    out: dict[tuple[str, str], Series] = {}
    for data in hashes:
        for raw_field, raw_value in data.items():
            name, labels, part = raw_field.decode().split(SEP)
            if wanted is None or name in wanted:
                out.setdefault((name, labels), Series()).fold(part, raw_value.decode())
    return resolution, out


async def specs(app: Client) -> dict[str, MetricSpec]:
    """Every custom metric known: declared in Redis by any process, or in this one (which
    wins)."""
    async with app.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(app.keys.custom_meta)
        [stored] = await pipe.execute()
    out = {}
    for raw_name, raw in stored.items():
        name = raw_name.decode()
        try:
            out[name] = MetricSpec.from_json(name, raw)
        except (ValueError, KeyError, TypeError):
            continue  # a declaration another version wrote: skip it
    out.update(registry_of(app).specs)
    return out


async def spec_of(app: Client, name: str) -> MetricSpec:
    """The declaration of metric ``name``; :class:`MetricNotFound` if none is known."""
    local = registry_of(app).specs.get(name)
    if local is not None:
        return local
    known = await specs(app)
    if name not in known:
        listed = ", ".join(sorted(known)) or "none"
        kept = app.settings.metrics.resolutions[-1].retention.total_seconds()
        span = f"{kept / 86400:g} days" if kept >= 86400 else f"{kept:g} s"
        raise MetricNotFound(
            f"no custom metric named {name!r} is declared here or was recorded in the last "
            f"{span}; known: {listed}"
        )
    return known[name]


def _since(value: timedelta | datetime | str) -> timedelta | datetime:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"since={value!r}: {exc}") from None
    return value


def matcher(spec: MetricSpec, labels: Mapping[str, object] | None) -> dict[str, str]:
    """``labels`` as strings, checked against the metric's label names."""
    wanted = {k: str(v) for k, v in (labels or {}).items()}
    unknown = sorted(set(wanted) - set(spec.labelnames))
    if unknown:
        valid = ", ".join(spec.labelnames) or "none"
        raise ValueError(f"metric {spec.name!r} has no label {unknown}; its labels: {valid}")
    return wanted


def matches(spec: MetricSpec, stored: str, wanted: Mapping[str, str]) -> dict[str, str] | None:
    """The series' labels if they match ``wanted`` (a series of another label set: None)."""
    values = orjson.loads(stored)
    if len(values) != len(spec.labelnames):
        return None
    labels = dict(zip(spec.labelnames, values, strict=True))
    return labels if all(labels.get(k) == v for k, v in wanted.items()) else None


async def read(
    app: Client,
    name: str,
    *,
    since: timedelta | datetime | str = timedelta(hours=1),
    until: datetime | None = None,
    labels: Mapping[str, object] | None = None,
) -> MetricValue:
    """The value of custom metric ``name`` over ``[since, until]``, cluster-wide.

    :param since: a duration before ``until`` (``timedelta`` or ``"15m"``) or an aware
        datetime. The window is widened to whole stored buckets.
    :param labels: keep the series with these label values; labels left out are merged.
    :returns: a :class:`CounterValue` (total and rate), :class:`GaugeValue` (latest) or
        :class:`HistogramValue` (count, sum, percentiles), by the metric's kind.
    :raises MetricNotFound: no such metric declared here or recorded.
    :raises ValueError: a label the metric does not have, or a bad ``since``.
    """
    spec = await spec_of(app, name)
    wanted = matcher(spec, labels)
    start, end = _window(_since(since), until, app.settings.metrics)
    resolution, found = await collect_series(app, start, end, [name])
    merged = Series()
    for (_, stored), series in found.items():
        if matches(spec, stored, wanted) is not None:
            merged.add(series)
    width = int(resolution.bucket.total_seconds() * 1000)
    start -= start % width
    return value_of(spec, merged, wanted, start, end)


def value_of(
    spec: MetricSpec, s: Series, labels: dict[str, str], start: int, end: int
) -> MetricValue:
    """The typed value of merged figures over ``[start, end]`` (ms)."""
    common: dict[str, Any] = {
        "name": spec.name,
        "labels": labels,
        "since": ms_to_datetime(start),
        "until": ms_to_datetime(end),
    }
    if spec.kind is MetricKind.COUNTER:
        return CounterValue(**common, total=s.total, rate=s.total / max((end - start) / 1000, 1e-3))
    if spec.kind is MetricKind.GAUGE:
        latest = max(s.gauges.values(), default=None)
        return GaugeValue(
            **common,
            value=None if latest is None else latest[1],
            at=None if latest is None else ms_to_datetime(latest[0]),
            processes={p: v for p, (_, v) in sorted(s.gauges.items())},
        )
    h = s.histogram
    return HistogramValue(
        **common,
        count=h.count,
        sum=h.total,
        mean=h.mean,
        min=h.minimum if h.count else None,
        max=h.maximum if h.count else None,
        p50=h.quantile(0.5),
        p90=h.quantile(0.9),
        p95=h.quantile(0.95),
        p99=h.quantile(0.99),
        histogram=h,
    )
