"""Measuring what alert conditions name, from Redis, the same way in every process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._clock import now_ms
from .._protocol import keys
from .._registry import live_workers, loads_or_none
from ..errors import ConfigurationError
from ..metrics import Metrics
from ..metrics.custom_read import CounterValue, GaugeValue, read
from ..monitor import Monitor
from ..probes import Probes
from .rules import STATS

if TYPE_CHECKING:
    from .._client import Client
    from .rules import Condition

__all__ = ("Measurer",)


class Measurer:
    """Values for conditions, cached per evaluation round (rules sharing a metric, task,
    queue and window cost one read)."""

    def __init__(self, app: Client) -> None:
        self.app = app
        self._cache: dict[tuple[object, ...], float | None] = {}

    async def value(self, condition: Condition) -> float | None:
        key = (
            condition.metric,
            condition.task,
            condition.queue,
            condition.window,
            condition.probe,
            condition.stat,
        )
        if key not in self._cache:
            self._cache[key] = await self._measure(condition)
        return self._cache[key]

    async def _queue(self, c: Condition) -> float:
        assert c.queue is not None
        queue = keys.queue(c.queue)
        now = now_ms()
        redis = self.app.redis
        if c.metric == "queue_depth":  # ready jobs: running ones sit at their lease's end
            return float(await redis.zcount(queue, "-inf", now))
        oldest = await redis.zrangebyscore(queue, "-inf", now, start=0, num=1, withscores=True)
        return max(0.0, (now - oldest[0][1]) / 1000) if oldest else 0.0

    async def _measure(self, c: Condition) -> float | None:
        metric = c.metric
        redis = self.app.redis
        if metric in ("queue_depth", "oldest_job_age"):
            return await self._queue(c)
        if metric == "live_workers":
            workers = await live_workers(redis, self.app.keys)
            return float(sum(1 for w in workers if c.queue is None or c.queue in w.queues))
        if metric in ("system_cpu", "system_memory", "loop_lag"):
            return await self._system(metric, c)
        if metric == "redis_evicted_keys":
            return await self._evicted(c)
        if c.custom is not None:
            return await self._custom(c)
        if metric in ("probe_down", "stuck_jobs", "sla_missed"):
            return await self._operations(c)
        summary = await Metrics(self.app).summary(task=c.task, queue=c.queue, since=c.window)
        if metric == "failure_rate":
            return summary.failure_rate if summary.count else None
        if metric == "throughput":
            return summary.rate
        quantile = {
            "run_time_p50": "p50",
            "run_time_p90": "p90",
            "run_time_p95": "p95",
            "run_time_p99": "p99",
        }[metric]
        value: float | None = getattr(summary.run, quantile)
        return value

    async def _operations(self, c: Condition) -> float | None:
        """Probes down now, stuck jobs now, or SLA targets missed over the window."""
        if c.metric == "probe_down":
            return await self._probes_down(c)
        if c.metric == "stuck_jobs":
            return float(sum(count for _, _, _, count in await self._stuck(c)))
        return await self._sla_missed(c)

    async def _sla_missed(self, c: Condition) -> float | None:
        slas = getattr(self.app, "slas", None)  # TaskFlow has them; a bare client none
        if slas is None or not slas.targets:
            return None
        report = await slas.check(since=c.window, task=c.task)
        return float(len(report.missed))

    async def _stuck(self, c: Condition) -> list[tuple[str, str, str, int]]:
        """Stuck jobs as the monitor's last pass listed them (kind, queue, task, count), or,
        with no pass in the last three intervals, as read now."""
        raw = await self.app.redis.get(self.app.keys.monitor_stuck)
        listed = loads_or_none(raw)
        if isinstance(listed, list):
            rows = [
                (str(r.get("kind")), str(r.get("queue")), str(r.get("task")), r["count"])
                for r in listed
                if isinstance(r, dict) and isinstance(r.get("count"), int)
            ]
        else:
            stuck = await Monitor(self.app).stuck(None if c.queue is None else [c.queue])
            rows = [(s.kind, s.queue, s.task, s.count) for s in stuck]
        return [
            r
            for r in rows
            if (c.queue is None or r[1] == c.queue) and (c.task is None or r[2] == c.task)
        ]

    async def _custom(self, c: Condition) -> float | None:
        """A custom metric's figure: a counter's total or rate, a gauge's latest value, a
        histogram's percentile (or mean, min, max, count, sum); None without data."""
        assert c.custom is not None
        name, labels = c.custom
        value = await read(self.app, name, since=c.window, labels=labels)
        kind = type(value).__name__.removesuffix("Value").lower()
        stat = c.stat or STATS[kind][0]
        if stat not in STATS[kind]:
            raise ConfigurationError(
                f"stat {stat!r} does not apply to {kind} {name!r}; use one of "
                f"{', '.join(STATS[kind])}"
            )
        if isinstance(value, CounterValue):
            return value.total if stat == "total" else value.rate
        if isinstance(value, GaugeValue):
            return value.value
        figure = getattr(value, stat)
        return None if figure is None or not value.count else float(figure)

    async def _probes_down(self, c: Condition) -> float | None:
        """Probes whose latest result is down (of ``probe=`` only, if given); None when
        none has a result."""
        probes = getattr(self.app, "probes", None) or Probes(self.app)  # declared ones too
        found = [s for s in await probes.status() if s.last is not None]
        if c.probe is not None:
            found = [s for s in found if s.name == c.probe]
        if not found:
            return None
        return float(sum(1 for s in found if not s.last or not s.last.up))

    async def _evicted(self, c: Condition) -> float:
        """Keys Redis evicted in the window, as the worker that saw the most noted them
        (every worker watches the same counter; none noting any is 0)."""
        now = now_ms()
        start = now - int(c.window.total_seconds() * 1000)
        notes = await self.app.redis.zrangebyscore(self.app.keys.evictions, start, now)
        seen: dict[str, int] = {}
        for note in notes:
            _, worker, count = note.decode().rsplit(":", 2)
            seen[worker] = seen.get(worker, 0) + int(count)
        return float(max(seen.values(), default=0))

    async def _system(self, metric: str, c: Condition) -> float | None:
        samples = await Metrics(self.app).system(since=c.window)
        values = []
        for series in samples.values():
            if not series:
                continue
            if metric == "loop_lag":  # the worst lag seen in the window
                values.append(max(s.loop_lag_seconds for s in series))
            else:  # the latest reading of each worker
                latest = series[-1]
                values.append(
                    latest.cpu_percent if metric == "system_cpu" else latest.memory_percent
                )
        return max(values) if values else None
