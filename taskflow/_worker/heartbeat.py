"""Worker liveness: the heartbeat service, which also renews the leases of running jobs."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from anyio.abc import TaskStatus
from redis.exceptions import OutOfMemoryError, RedisError

from .._clock import now_ms
from .._protocol import keys
from .._protocol.scripts import claim_token
from .._version import __version__
from ..connection import CONNECTION_ERRORS
from ..errors import RedisOutOfMemory

if TYPE_CHECKING:
    from .services import ServiceContext

__all__ = ("Heartbeat", "running_jobs", "worker_record")

_LISTED_JOBS = 200  # running jobs named in a heartbeat record (the rest are counted)

logger = logging.getLogger("taskflow.worker")


class Heartbeat:
    """Every ``heartbeat_interval``: write the worker's record (TTL = lease) and renew the
    leases of its running jobs. A worker that dies stops both, so its jobs become claimable
    again within one lease.
    """

    name = "heartbeat"
    lag = 0.0  #: how late the last heartbeat woke (s): the event loop's lag
    _willed: frozenset[tuple[Any, ...]] | None = None  # the jobs the will last listed

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        await self.beat(ctx)
        task_status.started()
        interval = ctx.settings.heartbeat_interval.total_seconds()
        while True:
            asked = anyio.current_time() + interval
            await anyio.sleep(interval)
            late = anyio.current_time() - asked
            self.lag = max(0.0, late)
            if late > interval:  # the event loop was blocked (a body that does not await)
                ctx.health.note_stall(late)
                logger.warning(
                    "the event loop was blocked for %.1fs (a task body that does not await? "
                    "run blocking code with anyio.to_thread.run_sync)",
                    late,
                )
            await self.beat(ctx)

    async def beat(self, ctx: ServiceContext) -> None:
        """Write the record and renew leases once; Redis trouble is reported, not raised."""
        lease_ms = int(ctx.settings.lease.total_seconds() * 1000)
        now = now_ms()
        jobs = ctx.jobs
        record = worker_record(ctx, now, self.lag)
        jobs_now = running_jobs(ctx)
        ids = frozenset((j["id"], j["attempt"], j["deadline_ms"]) for j in jobs_now)
        try:
            async with ctx.redis.pipeline(transaction=False) as pipe:
                pipe.set(ctx.keys.worker(ctx.worker_id), orjson.dumps(record), px=lease_ms)
                will_ms = lease_ms + keys.WILL_KEEP_MS
                if ids != self._willed:  # rewritten only when the running jobs changed
                    will = orjson.dumps({**record, "jobs": jobs_now})
                    pipe.set(ctx.keys.will(ctx.worker_id), will, px=will_ms)
                else:
                    pipe.pexpire(ctx.keys.will(ctx.worker_id), will_ms)
                pipe.zadd(ctx.keys.workers, {ctx.worker_id: now})
                await pipe.execute()
            self._willed = ids
            renewing = [
                (job_id, slot.claim.queue, claim_token(ctx.worker_id, slot.claim.attempt))
                for job_id, slot in jobs.running.items()
                if not slot.finishing
            ]
            lost = await ctx.scripts.renew(renewing, lease_ms, now_ms())
        except CONNECTION_ERRORS as exc:
            ctx.health.redis_failed("renewing the heartbeat", exc)
            if isinstance(exc, OutOfMemoryError | RedisOutOfMemory):
                # a full Redis still extends a key's life: the worker stays listed as live
                # (taskflow check) while it waits for writes to be accepted again
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await ctx.redis.pexpire(ctx.keys.worker(ctx.worker_id), lease_ms)
            return
        except RedisError as exc:
            ctx.health.redis_refused("the heartbeat", exc)
            return
        ctx.health.redis_ok()
        for job_id in lost:
            slot = jobs.running.get(job_id)
            if slot is not None and not slot.finishing:  # else it just finished: no loss
                logger.warning("job %s: lease lost; another worker may be running it", job_id)


def worker_record(
    ctx: ServiceContext, now: int, lag: float, blocked_since: int | None = None
) -> dict[str, Any]:
    """The worker's heartbeat record: who it is, what it serves and runs (counts), its
    loop's lag; ``blocked_since``: written by the loop watch while the event loop is
    blocked."""
    jobs = ctx.jobs
    running = list(jobs.running.values())
    record: dict[str, Any] = {
        "id": ctx.worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": list(ctx.queues),
        "concurrency": ctx.settings.concurrency,
        "running": len(running),
        "started_ms": jobs.started_ms,
        "beat_ms": now,
        "counts": dict(jobs.counts),
        "running_by_queue": dict(Counter(slot.claim.queue for slot in running)),
        "loop_lag": round(lag, 3),
        "version": __version__,
        "tasks": sorted(ctx.client.tasks),
    }
    if blocked_since is not None:
        record["blocked_since_ms"] = blocked_since
    return record


def running_jobs(ctx: ServiceContext) -> list[dict[str, Any]]:
    """The first 200 running jobs, for the worker's will: id, queue, attempt, task, start
    and timeout deadline (None: no timeout, or its outcome is being written)."""
    return [
        {
            "id": job_id,
            "queue": slot.claim.queue,
            "attempt": slot.claim.attempt,
            "task": slot.task,
            "started_ms": slot.started_ms,
            "deadline_ms": None
            if slot.finishing or math.isinf(slot.deadline_ms)
            else int(slot.deadline_ms),
        }
        for job_id, slot in list(ctx.jobs.running.items())[:_LISTED_JOBS]
    ]
