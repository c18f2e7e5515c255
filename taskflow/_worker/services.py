"""The one interface between the worker and everything that runs beside its job loop.

A service is a long-lived coroutine in the worker's task group (heartbeat, abort watcher,
waker, batcher, metrics, alerts, and later schedules and the queue monitor). It receives a
:class:`ServiceContext`, not the worker: the worker's identity and settings, the app's
client and Redis, a :class:`Health` signal to report Redis trouble on, and a read-mostly
view of the worker's running jobs (:class:`JobSlots`). A job observer is told about every
finished attempt. Neither needs a base class.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar, runtime_checkable

from anyio.abc import TaskStatus
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError

from ..connection import CONNECTION_ERRORS
from ..errors import RedisOutOfMemory, RedisReadOnly

if TYPE_CHECKING:
    from arq.connections import ArqRedis

    from .._client import Client
    from .._protocol.keys import AppKeys
    from .._protocol.scripts import Claimed, Scripts
    from ..config import Settings, WorkerSettings
    from .meter import JobSample

__all__ = ("Health", "JobObserver", "JobSlots", "RunningJob", "Service", "ServiceContext")

T = TypeVar("T")

logger = logging.getLogger("taskflow.worker")


@runtime_checkable
class Service(Protocol):
    """A coroutine that lives beside the job loop for the worker's whole life.

    ``run`` calls ``task_status.started()`` once ready, then loops until cancelled. It must
    survive Redis outages itself (catch, report on ``ctx.health``, back off); an exception
    escaping ``run`` stops the worker.

    Example::

        class StatsLogger:
            name = "stats-logger"

            async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
                task_status.started()
                while True:
                    await anyio.sleep(60)
                    logger.info("%s: %d running", ctx.worker_id, len(ctx.jobs.running))

        async with app, app.worker(services=[StatsLogger()]): ...
    """

    name: str

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None: ...


@runtime_checkable
class JobObserver(Protocol):
    """Told about every attempt the worker finishes (the metrics recorder is one).

    ``job_finished`` runs on the job's own task, so it must be quick and must not block.
    """

    def job_finished(self, sample: JobSample) -> None: ...


class RunningJob(Protocol):
    """One running job as services see it."""

    @property
    def claim(self) -> Claimed: ...

    @property
    def finishing(self) -> bool: ...

    @property
    def task(self) -> str: ...

    @property
    def started_ms(self) -> int: ...

    @property
    def deadline_ms(self) -> float: ...


class JobSlots(Protocol):
    """The worker's running jobs: what services may read, and the one thing they may do."""

    @property
    def running(self) -> Mapping[str, RunningJob]: ...

    @property
    def counts(self) -> Mapping[str, int]: ...

    @property
    def started_ms(self) -> int: ...

    def interrupt(self, job_id: str, reason: Literal["abort", "drain"]) -> bool: ...


class Health:
    """Whether the worker can reach Redis, as its parts report it.

    Every part that talks to Redis reports failures and successes here; the worker logs one
    line when Redis becomes unreachable and one when it is back, not one per failed call.
    """

    def __init__(self, backoff_cap: float) -> None:
        self.backoff_cap = backoff_cap
        self._outage = False
        self._refusals: dict[str, float] = {}  # what was refused -> when it was last logged
        #: the longest the event loop was seen blocked (seconds, measured by the heartbeat)
        self.loop_stall = 0.0

    def note_stall(self, seconds: float) -> None:
        """The heartbeat woke ``seconds`` later than it asked: the loop was blocked."""
        self.loop_stall = max(self.loop_stall, seconds)

    @property
    def redis_reachable(self) -> bool:
        """False from a failed call until the next successful one."""
        return not self._outage

    def redis_failed(self, doing: str, exc: BaseException) -> None:
        """Note that Redis did not answer (or refused to serve) while ``doing`` something."""
        what = _trouble(exc)
        if not self._outage:
            self._outage = True
            logger.warning(
                "%s while %s (%s); running jobs go on, Redis calls are retried with backoff "
                "up to %gs",
                what,
                doing,
                exc,
                self.backoff_cap,
            )
        else:
            logger.debug("%s still, while %s: %s", what, doing, exc)

    def redis_refused(self, doing: str, exc: BaseException) -> None:
        """Redis answered ``doing`` with an error that retrying will not cure (a key of the
        wrong type, say): an ERROR once a minute per ``doing``; the worker goes on."""
        now = time.monotonic()
        if now - self._refusals.get(doing, -math.inf) >= 60:
            self._refusals[doing] = now
            logger.error("Redis refused %s (the worker goes on without it): %s", doing, exc)

    async def call(self, doing: str, reply: Awaitable[T]) -> T | None:
        """``await reply``, reporting Redis trouble while ``doing`` something (unreachable,
        full or read-only: :meth:`redis_failed`; an error retrying cannot cure:
        :meth:`redis_refused`) and returning None then: a service's next round retries."""
        try:
            return await reply
        except CONNECTION_ERRORS as exc:
            self.redis_failed(doing, exc)
        except RedisError as exc:
            self.redis_refused(doing, exc)
        return None

    def redis_ok(self) -> None:
        """Note that Redis answered."""
        if self._outage:
            self._outage = False
            logger.info("Redis reachable again")


def _trouble(exc: BaseException) -> str:
    if isinstance(exc, OutOfMemoryError | RedisOutOfMemory):
        return (
            "Redis is out of memory and refuses writes (maxmemory reached under noeviction: "
            "raise maxmemory or free memory)"
        )
    if isinstance(exc, ReadOnlyError | RedisReadOnly):
        return "Redis is a read-only replica (during a failover, or a wrong URL)"
    return "Redis unreachable"


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """What a service gets from the worker that runs it."""

    worker_id: str
    queues: tuple[str, ...]
    settings: WorkerSettings
    client: Client  #: the app: enqueue, query, its settings
    health: Health
    jobs: JobSlots
    wake: Callable[[], None]  #: make the job loop look at the queues now
    #: tell the job loop which of its queues are paused (it claims nothing from them)
    set_paused: Callable[[frozenset[str]], None] = lambda _paused: None

    @property
    def redis(self) -> ArqRedis:
        """The app's Redis client (borrowed: never close it)."""
        return self.client.redis

    @property
    def keys(self) -> AppKeys:
        """The keys the app owns (worker registry, metrics, alerts)."""
        return self.client.keys

    @property
    def scripts(self) -> Scripts:
        """The server-side scripts registered on the app's client."""
        return self.client.scripts

    @property
    def app_settings(self) -> Settings:
        return self.client.settings
