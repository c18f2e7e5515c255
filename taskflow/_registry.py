"""The worker registry as any process reads it: which workers are alive, and what they do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ._protocol import keys
from .errors import redis_errors

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


@redis_errors
async def live_workers(redis: Redis, app: str | keys.AppKeys) -> list[WorkerInfo]:
    """The workers of the app named ``app`` (``TaskFlow.name``) whose heartbeat has not
    lapsed, from any process."""
    scope = app if isinstance(app, keys.AppKeys) else keys.AppKeys(app)
    ids = [i.decode() for i in await redis.zrange(scope.workers, 0, -1)]
    if not ids:
        return []
    records = await redis.mget([scope.worker(i) for i in ids])
    alive: list[WorkerInfo] = []
    dead: list[str] = []
    for worker_id, raw in zip(ids, records, strict=True):
        if raw is None:
            dead.append(worker_id)
            continue
        data: dict[str, Any] = orjson.loads(raw)
        alive.append(WorkerInfo(**data))
    if dead:
        await redis.zrem(scope.workers, *dead)
    return alive
