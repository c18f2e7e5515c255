"""The worker registry as any process reads it: which workers are alive, and what they do."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson

from ._clock import now_ms
from ._protocol import keys
from .errors import redis_errors

logger = logging.getLogger("taskflow.monitor")

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = (
    "WorkerInfo",
    "add_event",
    "blocked_wills",
    "live_workers",
    "loads_or_none",
    "overdue",
    "parse_json",
    "queue_event",
    "read_events",
    "read_registry",
)


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
            info = _info(worker_id, raw)
            if info is not None:
                alive.append(info)
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
    async with redis.pipeline(transaction=False) as pipe:
        queue_event(pipe, app, event, keep)
        await pipe.execute()


def queue_event(pipe: Any, app: keys.AppKeys, event: dict[str, Any], keep: timedelta) -> None:
    """Queue :func:`add_event`'s commands on ``pipe`` (an async or a blocking pipeline)."""
    body = orjson.dumps({**event, "at": int(event.get("at") or now_ms())})
    pipe.xadd(app.monitor_events, {"e": body}, maxlen=keys.MONITOR_EVENTS_CAP, approximate=True)
    pipe.pexpire(app.monitor_events, max(1, int(keep.total_seconds() * 1000)))


async def read_events(redis: Redis, app: keys.AppKeys, since_ms: int) -> list[dict[str, Any]]:
    """The app's monitor events from ``since_ms`` on, oldest first (at most the cap)."""
    entries = await redis.xrange(app.monitor_events, min=f"{since_ms}-0", max="+")
    events: list[dict[str, Any]] = []
    for _, fields_ in entries:
        event = parse_json(fields_.get(b"e"))  # None: not written by taskflow
        if event is not None:
            events.append(event)
    return events


_UNREADABLE: set[str] = set()


def _info(worker_id: str, raw: bytes) -> WorkerInfo | None:
    """A heartbeat record as WorkerInfo; None (logged) if it is not one taskflow wrote."""
    try:
        data = orjson.loads(raw)
        info = WorkerInfo(**{k: v for k, v in data.items() if k in _FIELDS})
        if info.blocked_since_ms is not None:
            int(info.blocked_since_ms)
        int(info.beat_ms)
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        if worker_id not in _UNREADABLE:  # once per process, not at every read
            _UNREADABLE.add(worker_id)
            logger.warning("worker %s: its heartbeat record is not readable (%s)", worker_id, exc)
        return None
    return info


def overdue(will: dict[str, Any], beat_ms: int) -> list[dict[str, Any]]:
    """The jobs of a worker's will (``AppKeys.will``) past their timeout at ``beat_ms`` (the
    worker's own clock: no skew between hosts), each with id, queue, attempt, task,
    started_ms and deadline_ms checked; malformed entries are skipped."""
    out = []
    jobs = will.get("jobs")
    for job in jobs if isinstance(jobs, list) else ():
        if not isinstance(job, dict):
            continue
        deadline, attempt = job.get("deadline_ms"), job.get("attempt")
        if not isinstance(deadline, int) or not isinstance(attempt, int) or deadline > beat_ms:
            continue
        if not isinstance(job.get("id"), str) or not isinstance(job.get("queue"), str):
            continue
        started = job.get("started_ms")
        out.append({**job, "started_ms": started if isinstance(started, int) else deadline})
    return out


async def blocked_wills(
    redis: Redis, app: keys.AppKeys, workers: list[WorkerInfo]
) -> dict[str, dict[str, Any]]:
    """The wills (running jobs) of the workers whose event loop is blocked, by worker id."""
    blocked = [w.id for w in workers if w.blocked_since_ms is not None]
    if not blocked:
        return {}
    raws = await redis.mget([app.will(w) for w in blocked])
    wills = {}
    for worker_id, raw in zip(blocked, raws, strict=True):
        will = parse_json(raw)
        if will is not None:
            wills[worker_id] = will
    return wills


def parse_json(raw: bytes | None) -> dict[str, Any] | None:
    """A JSON object stored by taskflow, or None (missing, or not an object)."""
    value = loads_or_none(raw)
    return value if isinstance(value, dict) else None


def loads_or_none(raw: bytes | None) -> Any:
    """``raw`` decoded as JSON, or None when missing or not JSON (a key taskflow did not
    write): what Redis holds must not raise in a service."""
    try:
        return orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return None
