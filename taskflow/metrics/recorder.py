"""The worker side of job metrics: samples aggregated in memory, flushed to Redis in one
script call per ``flush_interval`` (no extra round trip per job).

Storage: one hash per resolution and time bucket, ``taskflow:metrics:<width>s:<start ms>``,
expiring with the resolution's retention. Its fields are
``<task>\\x1f<queue>\\x1f<outcome>\\x1f<name>``, where name is ``n`` (samples), ``a2``
(attempts after the first), and per measure ``r`` (run time s), ``w`` (queue wait s),
``c`` (CPU s), ``m`` (RSS growth bytes): ``<x>:<bucket index>`` counts, ``<x>.s`` sum,
``<x>.max`` maximum, ``<x>.min`` minimum. Adding counts merges workers and time buckets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from redis.exceptions import RedisError

from .._protocol import keys
from .._worker.meter import JobSample
from ..connection import CONNECTION_ERRORS
from .clock import metrics_ms
from .histogram import Histogram, bucket_of

if TYPE_CHECKING:
    from .._protocol.scripts import Scripts
    from .._worker.services import Health, ServiceContext
    from ..config import MetricsSettings

__all__ = ("MEASURES", "SEP", "JobSample", "MetricsRecorder")

logger = logging.getLogger(__name__)

SEP = "\x1f"
MEASURES = ("r", "w", "c", "m")  # run time, queue wait, CPU time, memory growth
_MAX_PENDING_KEYS = 50_000  # aggregates kept while Redis is unreachable


@dataclass(slots=True)
class _Aggregate:
    count: int = 0
    reruns: int = 0
    histograms: dict[str, Histogram] = field(
        default_factory=lambda: {m: Histogram() for m in MEASURES}
    )

    def add(self, sample: JobSample, values: tuple[float, ...], indexes: list[int]) -> None:
        self.count += 1
        self.reruns += sample.attempt > 1
        for measure, value, index in zip(MEASURES, values, indexes, strict=True):
            self.histograms[measure].add(value, index=index)

    def ops(self, combo: str) -> list[Any]:
        """Flat (kind, field, value) triples for lua/metrics_flush.lua."""
        out: list[Any] = ["i", combo + "n", self.count]
        if self.reruns:
            out += ["i", combo + "a2", self.reruns]
        for measure, h in self.histograms.items():
            prefix = combo + measure
            for index, n in h.buckets.items():
                out += ["i", f"{prefix}:{index}", n]
            out += ["f", prefix + ".s", repr(h.total), "x", prefix + ".max", repr(h.maximum)]
            out += ["m", prefix + ".min", repr(h.minimum)]
        return out


class MetricsRecorder:
    """A worker sibling: ``record()`` is synchronous and in memory; ``run`` flushes."""

    name = "metrics-recorder"

    def __init__(self, settings: MetricsSettings) -> None:
        self.settings = settings
        self._pending: dict[tuple[int, int, str], _Aggregate] = {}
        self._widths = [int(r.bucket.total_seconds() * 1000) for r in settings.resolutions]
        self._ttls = [
            int((r.retention + r.bucket).total_seconds() * 1000) for r in settings.resolutions
        ]
        self._scripts: Scripts | None = None
        self._keys: keys.AppKeys | None = None

    def job_finished(self, sample: JobSample) -> None:
        """Aggregate one finished attempt (a :class:`JobObserver` hook; no I/O)."""
        combo = SEP.join((sample.task, sample.queue, sample.outcome)) + SEP
        values = tuple(
            max(float(v), 0.0) for v in (sample.run, sample.wait, sample.cpu, sample.memory)
        )
        indexes = [bucket_of(v) for v in values]  # once, for every resolution
        finished = metrics_ms(self.settings, sample.finished_ms)
        for level, width in enumerate(self._widths):
            key = (level, finished - finished % width, combo)
            aggregate = self._pending.get(key)
            if aggregate is None:
                if len(self._pending) >= _MAX_PENDING_KEYS:
                    continue  # Redis has been away for long: drop rather than grow forever
                aggregate = self._pending[key] = _Aggregate()
            aggregate.add(sample, values, indexes)

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        self._scripts, self._keys = ctx.scripts, ctx.keys
        task_status.started()
        interval = self.settings.flush_interval.total_seconds()
        try:
            while True:
                await anyio.sleep(interval)
                await self.flush(ctx.health)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self.flush(ctx.health)  # what the last interval measured

    async def flush(self, health: Health) -> None:
        """Write everything aggregated so far; on failure keep it for the next flush."""
        if not self._pending or self._scripts is None or self._keys is None:
            return
        pending, self._pending = self._pending, {}
        by_key: dict[str, list[Any]] = {}
        ttls: dict[str, int] = {}
        for (level, start, combo), aggregate in pending.items():
            key = self._keys.metrics_bucket(self._widths[level] // 1000, start)
            by_key.setdefault(key, []).extend(aggregate.ops(combo))
            ttls[key] = self._ttls[level]
        try:
            await self._scripts.metrics_flush({k: (ttls[k], ops) for k, ops in by_key.items()})
        except CONNECTION_ERRORS as exc:
            health.redis_failed("writing metrics", exc)
            for key_tuple, aggregate in pending.items():  # merge back, to retry
                current = self._pending.setdefault(key_tuple, _Aggregate())
                current.count += aggregate.count
                current.reruns += aggregate.reruns
                for m in MEASURES:
                    current.histograms[m].update(aggregate.histograms[m])
        except RedisError as exc:  # a key of the wrong type, say: retrying would fail alike
            logger.error("%d metric buckets dropped: Redis refused them: %s", len(by_key), exc)
        else:
            health.redis_ok()
