"""Queue health, workers and stuck jobs, each read with a bounded number of Redis calls
(no KEYS, no scan of job keys): a queue's counts are sorted-set counts, and the jobs looked
at for a stuck kind are at most ``_HEAD`` of the oldest ready ones per queue."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from .._clock import ms_to_datetime, now_ms
from .._protocol import keys
from .._registry import (
    WorkerInfo,
    blocked_wills,
    live_workers,
    loads_or_none,
    overdue,
    read_events,
)
from ..errors import redis_errors
from ..metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

    from .._client import Client

__all__ = ("Monitor", "QueueHealth", "Recovery", "StuckJob", "WorkerHealth")

_HEAD = 100  # oldest ready jobs per queue looked at for stuck kinds
_PAYLOAD_START = 256  # bytes of a job's payload read to find its task name
_RATE_WINDOW = timedelta(minutes=5)
_DEATH_LOOKBACK = timedelta(minutes=15)  # a recovery's death was noted up to this earlier


def _ms(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


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
    #: seconds its event loop has been blocked, as its loop watch reports (None: it is not)
    blocked_for: float | None = None


@dataclass(frozen=True, slots=True)
class StuckJob:
    """Jobs that are not moving, and why. ``job_id`` names the oldest of ``count``."""

    #: overdue (past its timeout on a blocked worker), no_worker (nobody serves the queue),
    #: no_task (no live worker has the task), paused
    kind: str
    queue: str
    task: str
    job_id: str
    count: int
    since: datetime  #: when the oldest became due
    why: str


@dataclass(frozen=True, slots=True)
class Recovery:
    """A job re-run after its worker died mid-attempt."""

    job_id: str
    queue: str
    task: str  #: "" when the death was not seen by a monitor pass
    attempt: int  #: the attempt that took it up again
    dead_worker: str  #: the worker that died running it ("" when not seen)
    worker: str  #: the worker that took it up
    last_heartbeat: datetime | None  #: the dead worker's last sign of life
    restarted: datetime
    downtime: float | None  #: seconds from that last heartbeat to the restart


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
    async def stuck(
        self, names: Iterable[str] | None = None, *, workers: list[WorkerInfo] | None = None
    ) -> list[StuckJob]:
        """Jobs that are not moving, each kind told apart: ``overdue`` (running past its
        timeout on a worker whose event loop is blocked: the monitor's next pass fails it
        as timed out), and ready jobs that nothing will run as things stand: their queue
        has no live worker (``no_worker``), is ``paused``, or no live worker serving it
        registers their task (``no_task``, a version skew: they wait, they are not failed).
        At most the oldest 100 ready jobs per queue are read."""
        if workers is None:
            workers = await live_workers(self.app.redis, self.app.keys)
        chosen = sorted(set(names) if names is not None else self._names(workers))
        wills = await blocked_wills(self.app.redis, self.app.keys, workers)
        late = [j for j in _overdue(workers, wills) if j.queue in chosen]
        return late + await self._waiting(chosen, workers)

    async def _waiting(self, chosen: list[str], workers: list[WorkerInfo]) -> list[StuckJob]:
        redis = self.app.redis
        heads = await self.app.scripts.queue_heads(chosen, now_ms(), _HEAD, _PAYLOAD_START)
        paused = {
            p.decode() for p in await cast("Awaitable[set[bytes]]", redis.smembers(keys.PAUSED))
        }
        out: list[StuckJob] = []
        for name, head in zip(chosen, heads, strict=True):
            if not head:
                continue
            oldest_id, oldest_score, _ = head[0]
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
            if known:  # else workers too old to say which tasks they have
                out += _no_task(name, head, known)
        return out

    @redis_errors
    async def events(
        self, since: timedelta = timedelta(hours=1), kinds: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """What the monitor saw and did, oldest first (the last 1,000 events, 7 days at
        most): ``overdue`` (a job failed as timed out on a blocked worker), ``worker_died``
        (with the jobs it was running), ``recovered`` (a dead worker's job claimed again),
        ``retention`` (what a pass removed). Each is a dict with ``kind`` and ``at`` (ms)."""
        wanted = set(kinds) if kinds is not None else None
        events = await read_events(self.app.redis, self.app.keys, now_ms() - _ms(since))
        return [e for e in events if wanted is None or e.get("kind") in wanted]

    @redis_errors
    async def recoveries(self, since: timedelta = timedelta(hours=1)) -> list[Recovery]:
        """Jobs whose worker died while running them and that another claim took up again
        (the lease's work), with the time from the worker's last heartbeat to the restart.
        A death is known once a monitor pass has seen the worker gone (within a lease and a
        monitor interval of it), with the jobs its last heartbeat listed: a job claimed less
        than a heartbeat before the death is listed without it (``dead_worker`` "" and
        ``downtime`` None)."""
        events = await self.events(since + _DEATH_LOOKBACK, ("worker_died", "recovered"))
        deaths: dict[str, dict[str, Any]] = {}  # job id -> the last death that ran it
        for e in events:
            jobs = e.get("jobs")
            if e.get("kind") == "worker_died" and isinstance(jobs, list):
                for job in jobs:
                    if isinstance(job, dict):
                        deaths[str(job.get("id"))] = {**e, "job": job}
        start = now_ms() - _ms(since)
        out = []
        for e in events:
            at = e.get("at")
            if e.get("kind") != "recovered" or not isinstance(at, int) or at < start:
                continue
            death = deaths.get(str(e.get("job")))
            beat = death.get("last_beat_ms") if death else None
            if not isinstance(beat, int) or not beat:
                beat = None
            out.append(
                Recovery(
                    job_id=str(e.get("job")),
                    queue=str(e.get("queue", "")),
                    task=str(death["job"].get("task", "")) if death else "",
                    attempt=e["attempt"] if isinstance(e.get("attempt"), int) else 0,
                    dead_worker=str(death["worker"]) if death else "",
                    worker=str(e.get("worker", "")),
                    last_heartbeat=ms_to_datetime(beat) if beat is not None else None,
                    restarted=ms_to_datetime(at),
                    downtime=max(0.0, (at - beat) / 1000) if beat is not None else None,
                )
            )
        return out

    def _names(self, workers: list[WorkerInfo]) -> set[str]:
        return set(self.app.queues) | {q for w in workers for q in w.queues}


def _overdue(workers: list[WorkerInfo], wills: dict[str, dict[str, Any]]) -> list[StuckJob]:
    """Jobs past their timeout (on the worker's clock) on workers whose loop watch reports
    the loop blocked."""
    out = []
    for w in workers:
        if w.blocked_since_ms is None or w.id not in wills:
            continue
        blocked = max(0.0, (w.beat_ms - w.blocked_since_ms) / 1000)
        for job in overdue(wills[w.id], w.beat_ms):
            why = (
                f"over its timeout on worker {w.id}, whose event loop has been blocked for "
                f"{blocked:.1f}s (a body that does not await): it is failed as timed out "
                "and retried elsewhere under its task's policy"
            )
            since = ms_to_datetime(int(job["deadline_ms"]))
            task = str(job.get("task", ""))
            out.append(StuckJob("overdue", job["queue"], task, job["id"], 1, since, why))
    return out


def _no_task(name: str, head: list[tuple[str, float, bytes]], known: set[str]) -> list[StuckJob]:
    missing: dict[str, list[tuple[str, float]]] = {}
    for job, score, start in head:
        task = _task_of(start)
        if task and task not in known:
            missing.setdefault(task, []).append((job, score))
    out = []
    for task, jobs in sorted(missing.items()):
        why = (
            f"no live worker serving {name} registers task {task!r} (a version skew? the "
            "jobs wait for a worker that has it)"
        )
        first_id, first_score = jobs[0]
        since = ms_to_datetime(int(first_score))
        out.append(StuckJob("no_task", name, task, first_id, len(jobs), since, why))
    return out


_TASK_FIELD = re.compile(rb'"f":("(?:[^"\\]|\\.)*")')


def _task_of(start: bytes) -> str:
    """The task name from the start of a job's payload (its second field, after ``t``);
    "" when it is not there (not a taskflow payload, or a name longer than the start)."""
    match = _TASK_FIELD.search(start)
    if match is None:
        return ""
    task = loads_or_none(match.group(1))
    return task if isinstance(task, str) else ""


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
        blocked_for=None
        if w.blocked_since_ms is None
        else max(0.0, (now - w.blocked_since_ms) / 1000),
    )
