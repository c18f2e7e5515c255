"""Reading metrics back, from any process: ``app.metrics.summary(...)`` and friends.

A query over ``[since, until]`` reads every time bucket that overlaps it, at the finest
resolution whose retention still covers ``since``, and merges the histograms of every
matching task, queue and outcome. The window is therefore widened to whole buckets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .._clock import ms_to_datetime
from ..config import MetricsSettings, Resolution
from ..errors import ConfigurationError, redis_errors
from .clock import metrics_ms, metrics_now, wall_ms
from .custom import (
    DEFAULT_MAX_SERIES,
    CounterMetric,
    GaugeMetric,
    HistogramMetric,
    MetricKind,
    registry_of,
)
from .histogram import Histogram
from .recorder import MEASURES, SEP
from .system import SystemSample

if TYPE_CHECKING:
    from .._client import Client
    from .custom_read import MetricValue

__all__ = ("Distribution", "Metrics", "MetricsSummary")

OUTCOMES = ("succeeded", "failed", "cancelled", "retrying", "requeued")


@dataclass(frozen=True, slots=True)
class Distribution:
    """Count, mean, percentiles (within 2 %) and maximum of one measure."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, h: Histogram) -> Distribution:
        return cls(
            count=h.count,
            mean=h.mean,
            p50=h.quantile(0.5),
            p90=h.quantile(0.9),
            p95=h.quantile(0.95),
            p99=h.quantile(0.99),
            max=h.maximum if h.count else None,
        )


@dataclass(frozen=True, slots=True)
class MetricsSummary:
    """Job attempts of one task/queue (None: all) over a time window.

    ``run``/``wait``/``cpu`` are seconds, ``memory`` bytes of RSS growth per attempt.
    ``count`` counts attempts of every outcome; ``failures`` those that ended failed (for
    good); ``retried`` those that failed and were retried; ``rate`` is attempts per second.
    """

    task: str | None
    queue: str | None
    since: datetime
    until: datetime
    resolution: timedelta
    count: int
    succeeded: int
    failures: int
    retried: int
    cancelled: int
    requeued: int
    reruns: int
    rate: float
    run: Distribution
    wait: Distribution
    cpu: Distribution
    memory: Distribution

    @property
    def failure_rate(self) -> float:
        """Share of attempts that ended failed, 0..1."""
        return self.failures / self.count if self.count else 0.0


@dataclass(slots=True)
class Aggregate:
    """Merged job metrics of one group: attempts per outcome, re-runs, and a histogram per
    measure (``r`` run, ``w`` wait, ``c`` CPU, ``m`` memory)."""

    counts: dict[str, int]
    reruns: int
    histograms: dict[str, Histogram]


def _add_field(merged: Aggregate, outcome: str, name: str, value: str) -> None:
    """Fold one stored field (see recorder's module docstring) into ``merged``."""
    if name == "n":
        merged.counts[outcome] = merged.counts.get(outcome, 0) + int(value)
    elif name == "a2":
        merged.reruns += int(value)
    else:
        h = merged.histograms[name[0]]
        rest = name[1:]
        if rest.startswith(":"):
            index = int(rest[1:])
            h.buckets[index] = h.buckets.get(index, 0) + int(value)
        elif rest == ".s":
            h.total += float(value)
        elif rest == ".max":
            h.maximum = max(h.maximum, float(value))
        elif rest == ".min":
            h.minimum = min(h.minimum, float(value))


def _window(
    since: timedelta | datetime, until: datetime | None, settings: MetricsSettings
) -> tuple[int, int]:
    end = until or metrics_now(settings)
    start = end - since if isinstance(since, timedelta) else since
    for name, value in (("since", start), ("until", end)):
        if value.tzinfo is None:
            raise ConfigurationError(
                f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got {value.isoformat()!r}"
            )
    if start > end:
        raise ConfigurationError(
            f"since {start.isoformat()!r} is after until {end.isoformat()!r}; "
            "since must be the earlier of the two"
        )
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


class Metrics:
    """Cluster-wide job, system and custom metrics; ``app.metrics``."""

    def __init__(self, app: Client) -> None:
        self.app = app

    # -- custom metrics -------------------------------------------------------------------

    def counter(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> CounterMetric:
        """Declare a counter (or get the one declared under ``name``), as prometheus-client's
        ``Counter``; works before the app is open.

        Example::

            calls = app.metrics.counter("gemini_calls_total", "Gemini API calls", ("model",))
            calls.labels(model="flash").inc()          # sync, in memory: no I/O

        :param max_series: label combinations kept per process; more are dropped (warned).
        :raises ValueError: an invalid name or label name, or ``name`` already declared as
            another kind or with other labels.
        """
        metric: CounterMetric = registry_of(self.app).declare(
            MetricKind.COUNTER, name, documentation, labelnames, max_series=max_series
        )
        return metric

    def gauge(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> GaugeMetric:
        """Declare a gauge: ``quota = app.metrics.gauge("api_quota_remaining", "...")`` then
        ``quota.set(1200)``. Each process keeps its own value; a read gives the latest set.
        Raises as :meth:`counter`."""
        metric: GaugeMetric = registry_of(self.app).declare(
            MetricKind.GAUGE, name, documentation, labelnames, max_series=max_series
        )
        return metric

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] | None = None,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> HistogramMetric:
        """Declare a histogram: ``latency.labels(model="flash").observe(0.42)`` or
        ``with latency.labels(...).time(): ...``. Stored as a mergeable sketch (percentiles
        within 2 %); ``buckets`` are only the ``le`` bounds shown to Prometheus
        (prometheus-client's defaults if omitted). Raises as :meth:`counter`."""
        metric: HistogramMetric = registry_of(self.app).declare(
            MetricKind.HISTOGRAM,
            name,
            documentation,
            labelnames,
            buckets=buckets,
            max_series=max_series,
        )
        return metric

    @redis_errors
    async def read(
        self,
        name: str,
        *,
        since: timedelta | datetime | str = timedelta(hours=1),
        until: datetime | None = None,
        labels: Mapping[str, object] | None = None,
    ) -> MetricValue:
        """A custom metric over a window, cluster-wide: a ``CounterValue`` (total, rate),
        ``GaugeValue`` (latest value) or ``HistogramValue`` (count, sum, percentiles).

        ``labels`` keeps the matching series; labels left out are merged. See
        :func:`taskflow.metrics.custom_read.read`.

        Example::

            v = await app.metrics.read("gemini_calls_total", since="1h", labels={"model": "flash"})
            print(v.total)
        """
        from .custom_read import read

        return await read(self.app, name, since=since, until=until, labels=labels)

    @redis_errors
    async def flush(self) -> int:
        """Write the custom metrics this process recorded and has not written yet (workers
        and the FastAPI lifespan do it every ``flush_interval``, and an app when it closes);
        returns how many aggregates were written."""
        return await registry_of(self.app).flush()

    def _resolution(self, start_ms: int) -> Resolution:
        age = timedelta(milliseconds=max(0, metrics_ms(self.app.settings.metrics) - start_ms))
        for resolution in self.app.settings.metrics.resolutions:
            if resolution.retention >= age:
                return resolution
        return self.app.settings.metrics.resolutions[-1]

    @redis_errors
    async def aggregate(
        self, start_ms: int, end_ms: int, group: Iterable[str]
    ) -> tuple[Resolution, dict[tuple[str | None, ...], Aggregate]]:
        """Merged metrics of ``[start_ms, end_ms]`` widened to whole buckets, keyed by the
        values of ``group`` (any of ``task``, ``queue``, ``outcome``)."""
        resolution = self._resolution(start_ms)
        width = int(resolution.bucket.total_seconds() * 1000)
        starts = range(start_ms - start_ms % width, end_ms + 1, width)
        async with self.app.redis.pipeline(transaction=False) as pipe:
            for bucket in starts:
                pipe.hgetall(self.app.keys.metrics_bucket(width // 1000, bucket))
            hashes = await pipe.execute()
        fields = tuple(group)
        out: dict[tuple[str | None, ...], Aggregate] = {}
        for data in hashes:
            for raw_name, raw_value in data.items():
                task, queue, outcome, name = raw_name.decode().split(SEP)
                combo = {"task": task, "queue": queue, "outcome": outcome}
                key = tuple(combo[f] for f in fields)
                merged = out.get(key)
                if merged is None:
                    merged = out[key] = Aggregate(
                        dict.fromkeys(OUTCOMES, 0), 0, {m: Histogram() for m in MEASURES}
                    )
                _add_field(merged, outcome, name, raw_value.decode())
        for merged in out.values():
            for h in merged.histograms.values():
                h.count = sum(h.buckets.values())
        return resolution, out

    @redis_errors
    async def summaries(
        self,
        since: timedelta | datetime = timedelta(hours=1),
        until: datetime | None = None,
        by: tuple[str, ...] = ("task", "queue"),
    ) -> list[MetricsSummary]:
        """One summary per distinct ``by`` combination (of ``task``, ``queue``), sorted."""
        unknown = set(by) - {"task", "queue"}
        if unknown:
            raise ConfigurationError(f"cannot group by {sorted(unknown)}; use task and/or queue")
        start, end = _window(since, until, self.app.settings.metrics)
        resolution, merged = await self.aggregate(start, end, by)
        return [
            self._summary(dict(zip(by, key, strict=True)), m, start, end, resolution)
            for key, m in sorted(merged.items(), key=lambda kv: [str(x) for x in kv[0]])
        ]

    @redis_errors
    async def summary(
        self,
        task: str | None = None,
        queue: str | None = None,
        since: timedelta | datetime = timedelta(hours=1),
        until: datetime | None = None,
    ) -> MetricsSummary:
        """Count, failures, rate, mean, p50/p90/p95/p99 and max of run time, queue wait,
        CPU time and memory, for one task and/or queue (or all), from any process.

        Example::

            s = await app.metrics.summary(task="send_email", since=timedelta(hours=1))
            print(s.count, s.failures, s.run.p95)
        """
        start, end = _window(since, until, self.app.settings.metrics)
        resolution, merged = await self.aggregate(start, end, ("task", "queue"))
        picked = [
            m
            for (t, q), m in merged.items()
            if (task is None or t == task) and (queue is None or q == queue)
        ]
        total = Aggregate(dict.fromkeys(OUTCOMES, 0), 0, {m: Histogram() for m in MEASURES})
        for m in picked:
            for outcome, n in m.counts.items():
                total.counts[outcome] = total.counts.get(outcome, 0) + n
            total.reruns += m.reruns
            for measure in MEASURES:
                total.histograms[measure].update(m.histograms[measure])
        return self._summary({"task": task, "queue": queue}, total, start, end, resolution)

    @staticmethod
    def _summary(
        labels: dict[str, str | None], m: Aggregate, start: int, end: int, resolution: Resolution
    ) -> MetricsSummary:
        count = sum(m.counts.values())
        # the counts cover whole buckets from the one holding `since`: report that window,
        # and divide by it
        width = int(resolution.bucket.total_seconds() * 1000)
        start -= start % width
        seconds = max((end - start) / 1000, 1e-3)
        return MetricsSummary(
            task=labels.get("task"),
            queue=labels.get("queue"),
            since=ms_to_datetime(start),
            until=ms_to_datetime(end),
            resolution=resolution.bucket,
            count=count,
            succeeded=m.counts.get("succeeded", 0),
            failures=m.counts.get("failed", 0),
            retried=m.counts.get("retrying", 0),
            cancelled=m.counts.get("cancelled", 0),
            requeued=m.counts.get("requeued", 0),
            reruns=m.reruns,
            rate=count / seconds,
            run=Distribution.of(m.histograms["r"]),
            wait=Distribution.of(m.histograms["w"]),
            cpu=Distribution.of(m.histograms["c"]),
            memory=Distribution.of(m.histograms["m"]),
        )

    @redis_errors
    async def export(
        self,
        format: str = "json",
        since: timedelta | datetime = timedelta(hours=1),
        until: datetime | None = None,
        *,
        task: str | None = None,
        queue: str | None = None,
    ) -> str:
        """The job summaries (and, in JSON, system samples) as ``json`` or ``csv`` text; see
        :func:`taskflow.metrics.export.export` and docs/metrics-export.schema.json."""
        from .export import export

        return await export(self.app, format, since, until, task=task, queue=queue)

    @redis_errors
    async def system(
        self,
        since: timedelta | datetime = timedelta(hours=1),
        until: datetime | None = None,
        worker: str | None = None,
    ) -> dict[str, list[SystemSample]]:
        """System samples per worker id, oldest first."""
        start, end = _window(since, until, self.app.settings.metrics)
        settings = self.app.settings.metrics  # stream ids are wall time
        entries = await self.app.redis.xrange(
            self.app.keys.system_stream,
            min=str(wall_ms(settings, start)),
            max=str(wall_ms(settings, end)),
        )
        out: dict[str, list[SystemSample]] = {}
        for _, data in entries:
            worker_id = data[b"worker"].decode()
            if worker is None or worker_id == worker:
                out.setdefault(worker_id, []).append(SystemSample.from_json(data[b"sample"]))
        return out
