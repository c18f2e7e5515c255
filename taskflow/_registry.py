"""The worker registry as any process reads it: which workers are alive, and what they do."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson

from ._clock import now_ms
from ._protocol import keys
from .errors import redis_errors

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ("WorkerInfo", "add_event", "live_workers", "read_events", "read_registry")


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
    #: its running jobs (the first 200): id, queue, attempt, task, started_ms, deadline_ms
    jobs: list[dict[str, Any]] = field(default_factory=list)
    #: set while its event loop is blocked (written by its loop watch thread): since when
    blocked_since_ms: int | None = None


@redis_errors
async def live_workers(redis: Redis, app: str | keys.AppKeys) -> list[WorkerInfo]:
    """The workers of the app named ``app`` (``TaskFlow.name``) whose heartbeat has not
    lapsed, from any process."""
    alive, _ = await read_registry(redis, app)
    return alive


async def read_registry(
    redis: Redis, app: str | keys.AppKeys
) -> tuple[list[WorkerInfo], dict[str, int]]:
    """Live workers, and the dead ones still listed (id -> last heartbeat ms): their wills
    are kept for the monitor, which reports and then forgets them; entries older than a will
    are dropped here."""
    scope = app if isinstance(app, keys.AppKeys) else keys.AppKeys(app)
    listed = await redis.zrange(scope.workers, 0, -1, withscores=True)
    if not listed:
        return [], {}
    ids = [i.decode() for i, _ in listed]
    records = await redis.mget([scope.worker(i) for i in ids])
    alive: list[WorkerInfo] = []
    dead: dict[str, int] = {}
    forgotten: list[str] = []
    oldest = now_ms() - keys.WILL_KEEP_MS
    for (worker_id, (_, beat)), raw in zip(zip(ids, listed, strict=True), records, strict=True):
        if raw is not None:
            data: dict[str, Any] = orjson.loads(raw)
            alive.append(WorkerInfo(**{k: v for k, v in data.items() if k in _FIELDS}))
        elif beat < oldest:
            forgotten.append(worker_id)
        else:
            dead[worker_id] = int(beat)
    if forgotten:
        await redis.zrem(scope.workers, *forgotten)
    return alive, dead


_FIELDS = frozenset(f.name for f in fields(WorkerInfo))


async def add_event(
    redis: Redis, app: keys.AppKeys, event: dict[str, Any], keep: timedelta
) -> None:
    """Append ``event`` (a ``kind`` and its facts; ``at`` ms is added) to the app's capped
    monitor events (``AppKeys.monitor_events``), kept ``keep`` after the last one."""
    body = orjson.dumps({**event, "at": int(event.get("at") or now_ms())})
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xadd(app.monitor_events, {"e": body}, maxlen=keys.MONITOR_EVENTS_CAP, approximate=True)
        pipe.pexpire(app.monitor_events, max(1, int(keep.total_seconds() * 1000)))
        await pipe.execute()


async def read_events(redis: Redis, app: keys.AppKeys, since_ms: int) -> list[dict[str, Any]]:
    """The app's monitor events from ``since_ms`` on, oldest first (at most the cap)."""
    entries = await redis.xrange(app.monitor_events, min=f"{since_ms}-0", max="+")
    events: list[dict[str, Any]] = []
    for _, fields_ in entries:
        try:
            event = orjson.loads(fields_[b"e"])
        except (KeyError, orjson.JSONDecodeError):
            continue  # not written by taskflow
        if isinstance(event, dict):
            events.append(event)
    return events
