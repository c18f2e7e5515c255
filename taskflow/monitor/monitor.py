"""Queue health, workers and stuck jobs, each read with a bounded number of Redis calls
(no KEYS, no scan of job keys): a queue's counts are sorted-set counts, and the jobs looked
at for a stuck kind are at most ``_HEAD`` of the oldest ready ones per queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import orjson

from .._clock import ms_to_datetime, now_ms
from .._protocol import keys
from .._registry import WorkerInfo, live_workers
from ..errors import redis_errors
from ..metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

    from .._client import Client

__all__ = ("Monitor", "QueueHealth", "StuckJob", "WorkerHealth")

_HEAD = 100  # oldest ready jobs per queue looked at for stuck kinds
_RATE_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class QueueHealth:
    """One queue, now."""

    name: str
    ready: int  #: jobs whose time has come, waiting for a worker
    deferred: int  #: jobs waiting for a later time (or a retry's backoff)
    running: int  #: jobs live workers are running
    oldest_ready_age: float  #: seconds the oldest ready job has waited (0: none)
    completed_per_min: float  #: attempts that ended, per minute over the last 5 minutes
    failed_per_min: float  #: of those, the ones that failed for good
    workers: int  #: live workers serving it
    paused: bool


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """One live worker, as its last heartbeat described it."""

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    running: int
    loop_lag: float  #: seconds its event loop was late at its last heartbeat
    last_heartbeat: float  #: seconds ago
    started: datetime
    version: str
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class StuckJob:
    """Jobs that are not moving, and why. ``job_id`` names the oldest of ``count``."""

    kind: str  #: no_worker (nobody serves the queue), no_task (no live worker has the task), paused
    queue: str
    task: str
    job_id: str
    count: int
    since: datetime  #: when the oldest became due
    why: str


class Monitor:
    """Reads of the cluster's state for dashboards, health checks and ``taskflow status``."""

    def __init__(self, app: Client) -> None:
        self.app = app

    @redis_errors
    async def workers(self) -> list[WorkerHealth]:
        """Every live worker of the app."""
        now = now_ms()
        return [_worker(w, now) for w in await live_workers(self.app.redis, self.app.keys)]

    @redis_errors
    async def queues(self, names: Iterable[str] | None = None) -> list[QueueHealth]:
        """Health of ``names`` (default: the app's queues and any a live worker serves)."""
        workers = await live_workers(self.app.redis, self.app.keys)
        chosen = sorted(set(names) if names is not None else self._names(workers))
        now = now_ms()
        redis = self.app.redis
        async with redis.pipeline(transaction=False) as pipe:
            for name in chosen:
                key = keys.queue(name)
                pipe.zcount(key, "-inf", now)
                pipe.zcard(key)
                pipe.zrangebyscore(key, "-inf", now, start=0, num=1, withscores=True)
            pipe.smembers(keys.PAUSED)
            replies = await pipe.execute()
        paused = {p.decode() for p in replies[-1]}
        metrics = Metrics(self.app)
        out = []
        for i, name in enumerate(chosen):
            ready, total, oldest = replies[3 * i : 3 * i + 3]
            running = sum(w.running_by_queue.get(name, 0) for w in workers)
            summary = await metrics.summary(queue=name, since=_RATE_WINDOW)
            minutes = _RATE_WINDOW.total_seconds() / 60
            out.append(
                QueueHealth(
                    name=name,
                    ready=int(ready),
                    deferred=max(0, int(total) - int(ready) - running),
                    running=running,
                    oldest_ready_age=max(0.0, (now - oldest[0][1]) / 1000) if oldest else 0.0,
                    completed_per_min=round(summary.count / minutes, 2),
                    failed_per_min=round(summary.failures / minutes, 2),
                    workers=sum(1 for w in workers if name in w.queues),
                    paused=name in paused,
                )
            )
        return out

    @redis_errors
    async def stuck(self, names: Iterable[str] | None = None) -> list[StuckJob]:
        """Ready jobs that nothing will run as things stand: their queue has no live worker,
        is paused, or no live worker serving it registers their task (a version skew: they
        wait, they are not failed). At most the oldest 100 ready jobs per queue are read."""
        workers = await live_workers(self.app.redis, self.app.keys)
        chosen = sorted(set(names) if names is not None else self._names(workers))
        now = now_ms()
        redis = self.app.redis
        async with redis.pipeline(transaction=False) as pipe:
            for name in chosen:
                pipe.zrangebyscore(
                    keys.queue(name), "-inf", now, start=0, num=_HEAD, withscores=True
                )
            pipe.smembers(keys.PAUSED)
            heads = await pipe.execute()
        paused = {p.decode() for p in heads[-1]}
        out: list[StuckJob] = []
        for name, head in zip(chosen, heads, strict=False):
            if not head:
                continue
            oldest_id, oldest_score = head[0][0].decode(), head[0][1]
            since = ms_to_datetime(int(oldest_score))
            serving = [w for w in workers if name in w.queues]
            if name in paused:
                why = f"queue {name} is paused (taskflow queues resume APP {name})"
                out.append(StuckJob("paused", name, "", oldest_id, len(head), since, why))
                continue
            if not serving:
                why = f"no live worker serves queue {name}"
                out.append(StuckJob("no_worker", name, "", oldest_id, len(head), since, why))
                continue
            known = set().union(*(w.tasks for w in serving))
            if not known:  # workers too old to say which tasks they have
                continue
            ids = [job.decode() for job, _ in head]
            payloads = await cast(
                "Awaitable[list[bytes | None]]", redis.mget([keys.job(i) for i in ids])
            )
            missing: dict[str, list[tuple[str, float]]] = {}
            for (job, score), raw in zip(head, payloads, strict=True):
                task = _task_of(raw)
                if task and task not in known:
                    missing.setdefault(task, []).append((job.decode(), score))
            for task, jobs in sorted(missing.items()):
                why = (
                    f"no live worker serving {name} registers task {task!r} (a version "
                    "skew? the jobs wait for a worker that has it)"
                )
                first_id, first_score = jobs[0]
                out.append(
                    StuckJob(
                        "no_task",
                        name,
                        task,
                        first_id,
                        len(jobs),
                        ms_to_datetime(int(first_score)),
                        why,
                    )
                )
        return out

    def _names(self, workers: list[WorkerInfo]) -> set[str]:
        return set(self.app.queues) | {q for w in workers for q in w.queues}


def _task_of(raw: bytes | None) -> str:
    if raw is None:
        return ""
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    return str(data.get("f", "")) if isinstance(data, dict) else ""


def _worker(w: WorkerInfo, now: int) -> WorkerHealth:
    return WorkerHealth(
        id=w.id,
        host=w.host,
        pid=w.pid,
        queues=w.queues,
        concurrency=w.concurrency,
        running=w.running,
        loop_lag=w.loop_lag,
        last_heartbeat=max(0.0, (now - w.beat_ms) / 1000),
        started=ms_to_datetime(w.started_ms),
        version=w.version,
        counts=w.counts,
    )
