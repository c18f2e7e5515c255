"""The monitor's cluster-wide pass, and the worker service that runs one per interval.

Every worker runs :class:`MonitorService`; each interval the one that claims the turn
(``SET NX PX`` on ``AppKeys.monitor_turn``) runs :func:`sweep`, so N workers cost one pass.
A pass reads the worker registry and, per queue, at most the oldest 100 ready jobs: its cost
does not grow with the number of queued jobs (``benchmarks/monitor.py`` measures it).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import anyio
import orjson
from anyio.abc import TaskStatus

from .._clock import now_ms
from .._protocol.scripts import claim_token
from .._registry import WorkerInfo, add_event, read_registry
from ..errors import redis_errors
from .monitor import Monitor, StuckJob

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from .._client import Client
    from .._worker.services import ServiceContext

__all__ = ("MonitorService", "SweepReport", "sweep")

logger = logging.getLogger("taskflow.monitor")

_DEAD_PER_PASS = 100  # dead workers reported per pass (a crash loop is caught up on later)


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one pass saw and did."""

    took: float  #: seconds
    workers: int  #: live workers
    blocked: list[str]  #: live workers whose event loop is blocked
    released: list[str]  #: overdue jobs failed as timed out (retried under their policy)
    dead_workers: list[str]  #: workers found dead, reported with the jobs they ran
    stuck: list[StuckJob]
    removed: dict[str, int] = field(default_factory=dict)  #: what retention removed, by kind


@redis_errors
async def sweep(app: Client, *, by: str = "") -> SweepReport:
    """Run one monitor pass now (workers run one per ``monitor_interval``; this does not
    claim the turn): fail overdue jobs on blocked workers as timed out, report dead workers
    and the jobs they were running, remove what outlived its retention, list stuck jobs."""
    started = time.perf_counter()
    alive, dead = await read_registry(app.redis, app.keys)
    now = now_ms()
    released = [job for w in alive for job in await _release_overdue(app, w, now)]
    dead_ids = await _report_dead(app, sorted(dead, key=dead.__getitem__)[:_DEAD_PER_PASS])
    removed = await _retention(app, now)
    stuck = await Monitor(app).stuck(workers=alive)
    report = SweepReport(
        took=time.perf_counter() - started,
        workers=len(alive),
        blocked=[w.id for w in alive if w.blocked_since_ms is not None],
        released=released,
        dead_workers=dead_ids,
        stuck=stuck,
        removed=removed,
    )
    if removed:
        event = {"kind": "retention", "removed": removed, "by": by}
        await add_event(app.redis, app.keys, event, app.settings.event_retention)
    return report


async def _release_overdue(app: Client, worker: WorkerInfo, now: int) -> list[str]:
    if worker.blocked_since_ms is None:
        return []
    released = []
    blocked = round(max(0.0, (now - worker.blocked_since_ms) / 1000), 3)
    ttl_ms = int(app.settings.job_ttl.total_seconds() * 1000)
    for job in worker.jobs:
        deadline = job.get("deadline_ms")
        if deadline is None or deadline > now:
            continue
        job_id, attempt = str(job["id"]), int(job["attempt"])
        timeout = round((deadline - int(job.get("started_ms") or deadline)) / 1000, 3)
        note = {
            "kind": "overdue",
            "attempt": attempt,
            "worker": worker.id,
            "timeout_s": timeout,
            "blocked_s": blocked,
        }
        token = claim_token(worker.id, attempt)
        done = await app.scripts.release_overdue(
            job_id, str(job["queue"]), token, now, orjson.dumps(note), ttl_ms
        )
        if not done:
            continue
        released.append(job_id)
        logger.warning(
            "job %s (%s) failed as timed out: %gs timeout passed on worker %s, whose event "
            "loop has been blocked for %gs; it is retried under its task's policy",
            job_id,
            job.get("task", ""),
            timeout,
            worker.id,
            blocked,
        )
        event = {**note, "kind": "overdue", "job": job_id, "queue": job["queue"]}
        event["task"] = job.get("task", "")
        await add_event(app.redis, app.keys, event, app.settings.event_retention)
    return released


async def _report_dead(app: Client, dead: list[str]) -> list[str]:
    """Note each dead worker once (its registry entry is removed by the pass that notes it)
    with the jobs its will says it was running; those run again once their leases lapse."""
    if not dead:
        return []
    wills = await app.redis.mget([app.keys.will(w) for w in dead])
    reported = []
    for worker_id, raw in zip(dead, wills, strict=True):
        if not await cast("Awaitable[int]", app.redis.zrem(app.keys.workers, worker_id)):
            continue  # another pass noted it
        await app.redis.delete(app.keys.will(worker_id))
        will: dict[str, Any] = _json(raw) or {}
        jobs = [
            {k: j.get(k) for k in ("id", "queue", "attempt", "task")}
            for j in will.get("jobs", ())
            if isinstance(j, dict)
        ]
        event = {
            "kind": "worker_died",
            "worker": worker_id,
            "host": will.get("host", ""),
            "pid": will.get("pid", 0),
            "last_beat_ms": will.get("beat_ms", 0),
            "jobs": jobs,
        }
        await add_event(app.redis, app.keys, event, app.settings.event_retention)
        reported.append(worker_id)
        logger.warning(
            "worker %s died (last heartbeat %s ms ago) running %d jobs; they run again as "
            "their leases lapse",
            worker_id,
            now_ms() - int(will.get("beat_ms") or now_ms()),
            len(jobs),
        )
    return reported


async def _retention(app: Client, now: int) -> dict[str, int]:
    """Remove index entries that outlived their retention (the records themselves expire
    by TTL): dead letters past ``dead_letter_ttl`` from the dead-letter index, error groups
    last seen before it."""
    keep = int(app.settings.dead_letter_ttl.total_seconds() * 1000)
    removed: dict[str, int] = {}
    redis = app.redis
    letters = await cast(
        "Awaitable[int]", redis.zremrangebyscore(app.keys.dead_letters, "-inf", now - keep)
    )
    if letters:
        removed["dead_letters"] = int(letters)
    groups = await cast("Awaitable[dict[bytes, bytes]]", redis.hgetall(app.keys.error_groups))
    stale = [
        key.decode().rpartition(":")[0]
        for key, value in groups.items()
        if key.endswith(b":last") and int(value or 0) < now - keep
    ]
    if stale:
        parts = ("n", "first", "last", "sample")
        fields = [f"{g}:{p}" for g in stale for p in parts]
        await cast("Awaitable[int]", redis.hdel(app.keys.error_groups, *fields))
        removed["error_groups"] = len(stale)
    return removed


def _json(raw: bytes | None) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class MonitorService:
    """Runs :func:`sweep` when this worker claims the interval's turn."""

    name = "monitor"

    def __init__(self) -> None:
        self.passes = 0  #: passes this worker ran
        self.last: SweepReport | None = None

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        interval = ctx.settings.monitor_interval.total_seconds()
        while True:
            # look four times an interval (jittered), so a pass is at most ~1.25 intervals
            # after the last even as workers come and go
            await anyio.sleep(interval / 4 * random.uniform(0.8, 1.2))
            turn = ctx.redis.set(
                ctx.keys.monitor_turn, ctx.worker_id, nx=True, px=max(1, int(interval * 1000))
            )
            if not await ctx.health.call("claiming the monitor's turn", turn):
                continue
            try:
                report = await ctx.health.call(
                    "the monitor's pass", sweep(ctx.client, by=ctx.worker_id)
                )
            except Exception:  # whatever Redis holds, the worker goes on
                logger.exception("the monitor's pass failed; the next interval retries")
                continue
            if report is not None:
                self.passes += 1
                self.last = report
                if report.removed:
                    logger.info("retention removed %s", report.removed)
