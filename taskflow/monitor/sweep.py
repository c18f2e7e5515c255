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
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import orjson
from anyio.abc import TaskStatus

from .._clock import now_ms
from .._protocol import keys
from .._registry import (
    WorkerInfo,
    add_event,
    blocked_wills,
    overdue,
    parse_json,
    read_registry,
)
from .._worker.loopwatch import overdue_release
from ..connection import CONNECTION_ERRORS
from ..errors import redis_errors
from ..metrics.clock import metrics_ms
from .monitor import Monitor, StuckJob

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from .._client import Client
    from .._worker.services import ServiceContext

__all__ = ("MonitorService", "SweepReport", "sweep")

logger = logging.getLogger("taskflow.monitor")

_DEAD_PER_PASS = 100  # dead workers reported per pass (a crash loop is caught up on later)
_TRIM = 1000  # dead-letter index entries, and error groups, removed per pass at most
T = TypeVar("T")


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
    failed: list[str] = field(default_factory=list)  #: parts of the pass that failed (logged)


@redis_errors
async def sweep(app: Client, *, by: str = "") -> SweepReport:
    """Run one monitor pass now (workers run one per ``monitor_interval``; this does not
    claim the turn): fail overdue jobs on blocked workers as timed out, report dead workers
    and the jobs they were running, remove what outlived its retention, list stuck jobs."""
    started = time.perf_counter()
    alive, dead = await read_registry(app.redis, app.keys)
    failed: list[str] = []

    async def step(doing: str, work: Awaitable[T], default: T) -> T:
        """One part of the pass: what Redis holds may break it, not the others."""
        try:
            return await work
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:
            failed.append(doing)
            logger.warning("the monitor's pass failed %s: %r", doing, exc)
            return default

    wills = await step(
        "reading blocked workers' wills", blocked_wills(app.redis, app.keys, alive), {}
    )
    released = [
        job
        for w in alive
        if w.id in wills
        for job in await step("failing overdue jobs", _release_overdue(app, w, wills[w.id]), [])
    ]
    oldest_dead = sorted(dead, key=dead.__getitem__)[:_DEAD_PER_PASS]
    dead_ids = await step("noting dead workers", _report_dead(app, oldest_dead), [])
    removed = await step("removing what outlived its retention", _retention(app, now_ms()), {})
    stuck = await step("listing stuck jobs", _stuck(app, alive), [])
    await step("sampling queue depths", _sample_depths(app, alive), None)
    report = SweepReport(
        took=time.perf_counter() - started,
        workers=len(alive),
        blocked=[w.id for w in alive if w.blocked_since_ms is not None],
        released=released,
        dead_workers=dead_ids,
        stuck=stuck,
        removed=removed,
        failed=failed,
    )
    if removed:
        event = {"kind": "retention", "removed": removed, "by": by}
        keep = app.settings.event_retention
        await step("recording what it removed", add_event(app.redis, app.keys, event, keep), None)
    return report


async def _release_overdue(app: Client, worker: WorkerInfo, will: dict[str, Any]) -> list[str]:
    """Fail the attempts past their timeout on a blocked worker (its loop watch does it
    itself; this is for when it cannot reach Redis, or the worker's own thread is stuck)."""
    released = []
    blocked = max(0.0, (worker.beat_ms - (worker.blocked_since_ms or worker.beat_ms)) / 1000)
    ttl_ms = int(app.settings.job_ttl.total_seconds() * 1000)
    for job in overdue(will, worker.beat_ms):
        token, note, event = overdue_release(worker.id, job, blocked)
        if not await app.scripts.release_overdue(
            job["id"], job["queue"], token, now_ms(), note, ttl_ms
        ):
            continue
        released.append(job["id"])
        logger.warning(
            "job %s (%s) failed as timed out: %gs timeout passed on worker %s, whose event "
            "loop has been blocked for %gs; it is retried under its task's policy",
            job["id"],
            job.get("task", ""),
            event["timeout_s"],
            worker.id,
            blocked,
        )
        await add_event(
            app.redis, app.keys, {**event, "by": "monitor"}, app.settings.event_retention
        )
    return released


async def _report_dead(app: Client, dead: list[str]) -> list[str]:
    """Note each dead worker once, atomically (``lua/worker_gone.lua``), with the jobs its
    will says it was running; those run again once their leases lapse."""
    if not dead:
        return []
    wills = await app.redis.mget([app.keys.will(w) for w in dead])
    keep_ms = int(app.settings.event_retention.total_seconds() * 1000)
    reported = []
    for worker_id, raw in zip(dead, wills, strict=True):
        will = parse_json(raw) or {}
        listed = will.get("jobs")
        jobs = [
            {k: j.get(k) for k in ("id", "queue", "attempt", "task")}
            for j in (listed if isinstance(listed, list) else ())
            if isinstance(j, dict)
        ]
        beat = will.get("beat_ms") if isinstance(will.get("beat_ms"), int) else 0
        event = {
            "kind": "worker_died",
            "worker": worker_id,
            "host": str(will.get("host", "")),
            "pid": will.get("pid", 0),
            "last_beat_ms": beat,
            "jobs": jobs,
            "at": now_ms(),
        }
        if not await app.scripts.worker_gone(app.keys, worker_id, orjson.dumps(event), keep_ms):
            continue  # back alive, or another pass noted it
        reported.append(worker_id)
        ago = f"{(now_ms() - beat) / 1000:.1f}s ago" if beat else "unknown"
        logger.warning(
            "worker %s died (last heartbeat %s) running %d jobs; they run again as their "
            "leases lapse",
            worker_id,
            ago,
            len(jobs),
        )
    return reported


async def _retention(app: Client, now: int) -> dict[str, int]:
    """Remove index entries that outlived their retention (the records themselves expire
    by TTL), a bounded number per pass: dead letters past ``dead_letter_ttl`` from the
    dead-letter index, error groups last seen before it."""
    keep = int(app.settings.dead_letter_ttl.total_seconds() * 1000)
    removed: dict[str, int] = {}
    redis = app.redis
    old = await cast(
        "Awaitable[list[bytes]]",
        redis.zrangebyscore(app.keys.dead_letters, "-inf", now - keep, start=0, num=_TRIM),
    )
    if old:
        await cast("Awaitable[int]", redis.zrem(app.keys.dead_letters, *old))
        removed["dead_letters"] = len(old)
    stale = []
    async for key, value in redis.hscan_iter(app.keys.error_groups, match="*:last", count=_TRIM):
        if not value.isdigit() or int(value) < now - keep:
            stale.append(key.decode(errors="replace").rpartition(":")[0])
        if len(stale) >= _TRIM:
            break
    if stale:
        parts = ("n", "first", "last", "sample")
        fields = [f"{g}:{p}" for g in stale for p in parts]
        await cast("Awaitable[int]", redis.hdel(app.keys.error_groups, *fields))
        removed["error_groups"] = len(stale)
    return removed


async def _sample_depths(app: Client, alive: list[WorkerInfo]) -> None:
    """Note each queue's depth (ready, and all it holds) for the insights' queue series
    and forecasts: one stream entry per pass, kept ``system_retention``."""
    names = sorted(set(app.queues) | {q for w in alive for q in w.queues})
    if not names:
        return
    now = now_ms()
    async with app.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcount(keys.queue(name), "-inf", now)
            pipe.zcard(keys.queue(name))
        counts = await pipe.execute()
    depths = {n: [int(counts[2 * i]), int(counts[2 * i + 1])] for i, n in enumerate(names)}
    settings = app.settings.metrics
    keep_ms = int(settings.system_retention.total_seconds() * 1000)
    entry = orjson.dumps({"t": metrics_ms(settings), "q": depths})
    async with app.redis.pipeline(transaction=False) as pipe:
        pipe.xadd(app.keys.queue_depths, {"d": entry}, minid=str(now - keep_ms), approximate=True)
        pipe.pexpire(app.keys.queue_depths, keep_ms)
        await pipe.execute()


async def _stuck(app: Client, alive: list[WorkerInfo]) -> list[StuckJob]:
    """List stuck jobs, and keep the list for alert rules on ``stuck_jobs`` (read by every
    worker's evaluator without redoing the work) until three passes have been missed."""
    stuck = await Monitor(app).stuck(workers=alive)
    snapshot = [{"kind": s.kind, "queue": s.queue, "task": s.task, "count": s.count} for s in stuck]
    interval_ms = int(app.settings.worker.monitor_interval.total_seconds() * 1000)
    await app.redis.set(app.keys.monitor_stuck, orjson.dumps(snapshot), px=3 * interval_ms)
    return stuck


class MonitorService:
    """Runs :func:`sweep` when this worker claims the interval's turn."""

    name = "monitor"

    def __init__(self) -> None:
        self.passes = 0  #: passes this worker ran
        self.last: SweepReport | None = None

    async def _repair_turn(self, ctx: ServiceContext) -> None:
        """A turn key that never expires (set by hand, or of the wrong type) would stop
        every pass: delete it."""
        ttl = await ctx.health.call(
            "reading the monitor's turn", ctx.redis.pttl(ctx.keys.monitor_turn)
        )
        if ttl == -1:
            logger.warning(
                "the monitor's turn key %s had no expiry: deleted", ctx.keys.monitor_turn
            )
            await ctx.health.call(
                "repairing the monitor's turn", ctx.redis.delete(ctx.keys.monitor_turn)
            )

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
                await self._repair_turn(ctx)
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
