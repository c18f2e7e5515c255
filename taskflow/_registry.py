"""The worker registry as any process reads it: which workers are alive, and what they do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ._protocol import keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ("WorkerInfo", "live_workers")


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
