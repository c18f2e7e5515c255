"""The worker registry as any process reads it: which workers are alive, and what they do."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
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
    #: running jobs per queue, the event loop's lag at the last heartbeat (s), the version
    #: of taskflow it runs (empty from workers older than these fields)
    running_by_queue: dict[str, int] = field(default_factory=dict)
    loop_lag: float = 0.0
    version: str = ""
    tasks: list[str] = field(default_factory=list)  #: the task names it registers


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
        alive.append(WorkerInfo(**{k: v for k, v in data.items() if k in _FIELDS}))
    if dead:
        await redis.zrem(scope.workers, *dead)
    return alive


_FIELDS = frozenset(f.name for f in fields(WorkerInfo))
