"""Worker liveness: the heartbeat sibling (which also renews job leases), the abort
watcher sibling, and the registry query behind ``taskflow check``.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from anyio.abc import TaskStatus

from . import keys
from .connection import CONNECTION_ERRORS
from .task import now_ms

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .worker import Worker

__all__ = ("AbortWatcher", "Heartbeat", "WorkerInfo", "live_workers")

logger = logging.getLogger("taskflow.worker")


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker, as its last heartbeat described it."""

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    running: int
    started_ms: int
    beat_ms: int
    counts: dict[str, int]


class Heartbeat:
    """Every ``heartbeat_interval``: write the worker's record (TTL = lease) and renew the
    leases of its running jobs. A worker that dies stops both, so its jobs become claimable
    again within one lease.
    """

    name = "heartbeat"

    async def run(self, worker: Worker, *, task_status: TaskStatus[None]) -> None:
        await self.beat(worker)
        task_status.started()
        interval = worker.settings.heartbeat_interval.total_seconds()
        while True:
            await anyio.sleep(interval)
            await self.beat(worker)

    async def beat(self, worker: Worker) -> None:
        lease_ms = int(worker.settings.lease.total_seconds() * 1000)
        now = now_ms()
        record = {
            "id": worker.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": worker.queues,
            "concurrency": worker.settings.concurrency,
            "running": len(worker.running),
            "started_ms": worker.started_ms,
            "beat_ms": now,
            "counts": dict(worker.counts),
        }
        try:
            async with worker.app.redis.pipeline(transaction=False) as pipe:
                pipe.set(keys.worker(worker.id), orjson.dumps(record), px=lease_ms)
                pipe.zadd(keys.WORKERS, {worker.id: now})
                await pipe.execute()
            renewing = [
                (job_id, slot.claim.queue)
                for job_id, slot in worker.running.items()
                if not slot.finishing
            ]
            lost = await worker.app.scripts.renew(renewing, worker.id, lease_ms, now_ms())
        except CONNECTION_ERRORS as exc:
            worker.redis_failed("renewing the heartbeat", exc)
            return
        worker.redis_ok()
        for job_id in lost:
            slot = worker.running.get(job_id)
            if slot is not None and not slot.finishing:  # else it just finished: no loss
                logger.warning("job %s: lease lost; another worker may be running it", job_id)


class AbortWatcher:
    """Cancels running jobs that a client flagged in arq's abort set."""

    name = "abort-watcher"

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval

    async def run(self, worker: Worker, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        while True:
            await anyio.sleep(self.interval)
            if not worker.running:
                continue
            try:
                flagged = await worker.app.redis.zrangebyscore(
                    keys.ABORT, now_ms() - 60_000, "+inf"
                )
            except CONNECTION_ERRORS:
                continue
            for raw in flagged:
                job_id = raw.decode()
                if job_id in worker.running and worker.interrupt(job_id, "abort"):
                    logger.info("job %s: aborted by request", job_id)


async def live_workers(redis: Redis) -> list[WorkerInfo]:
    """Workers whose heartbeat has not lapsed, from any process."""
    ids = [i.decode() for i in await redis.zrange(keys.WORKERS, 0, -1)]
    if not ids:
        return []
    records = await redis.mget([keys.worker(i) for i in ids])
    alive: list[WorkerInfo] = []
    dead: list[str] = []
    for worker_id, raw in zip(ids, records, strict=True):
        if raw is None:
            dead.append(worker_id)
            continue
        data: dict[str, Any] = orjson.loads(raw)
        alive.append(WorkerInfo(**data))
    if dead:
        await redis.zrem(keys.WORKERS, *dead)
    return alive
