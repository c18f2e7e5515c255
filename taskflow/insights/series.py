"""Time series for the insights, read from the stored metrics: one point per time bucket.

Job series come from the mergeable per-bucket histograms the workers write (one ``HGETALL``
per bucket, pipelined; a day of one-minute buckets is 1,440 reads in one round trip), per
task or per queue. System series merge the workers' samples per bucket: the highest CPU
and memory share, the worst event-loop lag. Buckets with no attempts are left out of a job
series rather than counted as zeros, except for throughput, where an empty bucket is a
real zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from .._clock import ms_to_datetime
from .._registry import loads_or_none
from ..metrics.clock import wall_ms
from ..metrics.histogram import Histogram
from ..metrics.query import OUTCOMES, Aggregate, Metrics, _add_field, _window
from ..metrics.recorder import MEASURES, SEP

if TYPE_CHECKING:
    from .._client import Client

__all__ = ("JOB_SERIES", "SYSTEM_SERIES", "Series", "job_series", "queue_series", "system_series")

#: job series per task or queue: name -> unit
JOB_SERIES: dict[str, str] = {
    "run_time_p50": "s",
    "run_time_p95": "s",
    "wait_p95": "s",
    "throughput": "1/s",
    "failure_rate": "ratio",
    "cpu_share": "ratio",
    "memory_growth_mean": "bytes",
}
#: system series, all workers merged: name -> unit
SYSTEM_SERIES: dict[str, str] = {
    "system_cpu": "%",
    "system_memory": "%",
    "loop_lag": "s",
}


@dataclass(frozen=True, slots=True)
class Series:
    """One measure of one subject over time: ``times`` are bucket starts (seconds since
    the epoch, on the metrics' clock), ``values`` the measure in ``unit``."""

    name: str
    subject: str  #: "task:<name>", "queue:<name>" or "system"
    unit: str
    bucket: timedelta
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    @property
    def start(self) -> datetime | None:
        return ms_to_datetime(int(self.times[0] * 1000)) if self.times else None


async def job_series(
    app: Client,
    since: timedelta | datetime = timedelta(hours=24),
    until: datetime | None = None,
    *,
    by: Literal["task", "queue"] = "task",
    names: Sequence[str] = tuple(JOB_SERIES),
) -> list[Series]:
    """Per task (or queue): run-time p50/p95, queue-wait p95, throughput, failure rate,
    CPU share (CPU seconds per second of run time) and mean memory growth per attempt,
    one point per bucket of the finest resolution that covers ``since``."""
    unknown = set(names) - set(JOB_SERIES)
    if unknown:
        raise ValueError(f"unknown job series {sorted(unknown)}; valid: {', '.join(JOB_SERIES)}")
    metrics = Metrics(app)
    start, end = _window(since, until, app.settings.metrics)
    resolution = metrics._resolution(start)
    width = int(resolution.bucket.total_seconds() * 1000)
    starts = list(range(start - start % width, end + 1, width))
    async with app.redis.pipeline(transaction=False) as pipe:
        for bucket in starts:
            pipe.hgetall(app.keys.metrics_bucket(width // 1000, bucket))
        hashes = await pipe.execute()
    per_subject: dict[str, dict[int, Aggregate]] = {}
    for bucket, data in zip(starts, hashes, strict=True):
        for raw_name, raw_value in data.items():
            task, queue, outcome, measure = raw_name.decode().split(SEP)
            subject = task if by == "task" else queue
            buckets = per_subject.setdefault(subject, {})
            merged = buckets.get(bucket)
            if merged is None:
                merged = buckets[bucket] = Aggregate(
                    dict.fromkeys(OUTCOMES, 0), 0, {m: Histogram() for m in MEASURES}
                )
            _add_field(merged, outcome, measure, raw_value.decode())
    out = []
    for subject, buckets in sorted(per_subject.items()):
        for name in names:
            series = Series(name, f"{by}:{subject}", JOB_SERIES[name], resolution.bucket)
            for bucket in starts:
                value = _job_value(name, buckets.get(bucket), width)
                if value is not None:
                    series.times.append(bucket / 1000)
                    series.values.append(value)
            out.append(series)
    return out


def _job_value(name: str, merged: Aggregate | None, width_ms: int) -> float | None:
    if merged is None:
        return 0.0 if name == "throughput" else None
    for h in merged.histograms.values():
        h.count = sum(h.buckets.values())
    count = sum(merged.counts.values())
    if name == "throughput":
        return count / (width_ms / 1000)
    if not count:
        return None
    run, wait, cpu, memory = (merged.histograms[m] for m in MEASURES)
    if name == "failure_rate":
        return merged.counts.get("failed", 0) / count
    if name == "cpu_share":
        return cpu.total / run.total if run.total > 0 else None
    if name == "memory_growth_mean":
        return memory.mean
    histogram, q = {
        "run_time_p50": (run, 0.5),
        "run_time_p95": (run, 0.95),
        "wait_p95": (wait, 0.95),
    }[name]
    return histogram.quantile(q)


async def system_series(
    app: Client,
    since: timedelta | datetime = timedelta(hours=24),
    until: datetime | None = None,
    *,
    bucket: timedelta = timedelta(minutes=1),
) -> list[Series]:
    """Host CPU and memory share (the highest any worker reported in the bucket) and the
    worst event-loop lag, one point per ``bucket`` that has samples."""
    if bucket <= timedelta(0):
        raise ValueError(f"bucket must be positive, got {bucket}")
    samples = await Metrics(app).system(since=since, until=until)
    width = int(bucket.total_seconds() * 1000)
    worst: dict[int, list[float]] = {}
    for per_worker in samples.values():
        for s in per_worker:
            key = s.time_ms - s.time_ms % width
            row = worst.setdefault(key, [0.0, 0.0, 0.0])
            row[0] = max(row[0], s.cpu_percent)
            row[1] = max(row[1], s.memory_percent)
            row[2] = max(row[2], s.loop_lag_seconds)
    out = []
    for i, (name, unit) in enumerate(SYSTEM_SERIES.items()):
        series = Series(name, "system", unit, bucket)
        for key in sorted(worst):
            series.times.append(key / 1000)
            series.values.append(worst[key][i])
        out.append(series)
    return out


async def queue_series(
    app: Client,
    since: timedelta | datetime = timedelta(hours=24),
    until: datetime | None = None,
) -> list[Series]:
    """Per queue: ``queue_depth`` (ready jobs at the last monitor pass of each bucket) and
    ``arrival_rate`` (jobs per second arriving between two depth samples: the attempts that
    ended in the buckets between them plus the growth of the depth, over the time between
    them, by conservation of jobs; a job retried counts twice), one point per bucket with a
    depth sample, at the job metrics' resolution that covers ``since``. Depths come from
    the monitor's passes (``WorkerSettings.monitor``), kept ``system_retention``."""
    settings = app.settings.metrics
    start, end = _window(since, until, settings)
    resolution = Metrics(app)._resolution(start)
    width = int(resolution.bucket.total_seconds() * 1000)
    entries = await app.redis.xrange(
        app.keys.queue_depths, min=str(wall_ms(settings, start)), max=str(wall_ms(settings, end))
    )
    last: dict[str, dict[int, int]] = {}  # queue -> bucket -> ready at its last sample
    for _, data in entries:
        sample = loads_or_none(data.get(b"d"))
        if not isinstance(sample, dict) or not isinstance(sample.get("t"), int):
            continue
        depths = sample.get("q")
        if not isinstance(depths, dict):
            continue
        bucket = sample["t"] - sample["t"] % width
        for queue, pair in depths.items():
            if isinstance(pair, list) and pair and isinstance(pair[0], int):
                last.setdefault(str(queue), {})[bucket] = pair[0]
    done = {
        s.subject.removeprefix("queue:"): dict(zip(s.times, s.values, strict=True))
        for s in await job_series(app, since, until, by="queue", names=["throughput"])
    }
    out = []
    for queue, buckets in sorted(last.items()):
        depth = Series("queue_depth", f"queue:{queue}", "jobs", resolution.bucket)
        arrivals = Series("arrival_rate", f"queue:{queue}", "1/s", resolution.bucket)
        ended = done.get(queue, {})  # bucket start (s) -> attempts ended per second
        previous: int | None = None
        for bucket in sorted(buckets):
            depth.times.append(bucket / 1000)
            depth.values.append(float(buckets[bucket]))
            if previous is not None:
                gap = (bucket - previous) / 1000
                count = sum(
                    ended.get(b / 1000, 0.0) * width / 1000
                    for b in range(previous + width, bucket + 1, width)
                )
                arrivals.times.append(bucket / 1000)
                arrivals.values.append(
                    max(0.0, (count + buckets[bucket] - buckets[previous]) / gap)
                )
            previous = bucket
        out += [depth, arrivals]
    return out
