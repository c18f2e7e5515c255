"""Tasks, job handles, job states and the running job's context."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeAlias, TypeVar, cast

import anyio

from ._arguments import Signature
from ._options import ENQUEUE_OPTIONS, EnqueueOptions, legacy_options
from ._protocol import keys
from ._protocol.codecs import JobResult, decode_result
from .config import Backoff
from .errors import JobNotFound, LifecycleError, ResultTimeout, TaskFailed, redis_errors

if TYPE_CHECKING:
    from ._client import Client

__all__ = (
    "BoundTask",
    "CallArguments",
    "EnqueueOptions",
    "JobContext",
    "JobHandle",
    "JobStatus",
    "Task",
    "TaskCall",
    "TaskOptions",
    "current_job",
)

P = ParamSpec("P")
R = TypeVar("R")
X = TypeVar("X")
X_contra = TypeVar("X_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)


class JobStatus(StrEnum):
    """Where a job is in its life. The last four are final."""

    DEFERRED = "deferred"  #: queued, its scheduled time not reached
    QUEUED = "queued"  #: ready, waiting for a worker
    RUNNING = "running"  #: claimed by a worker
    RETRYING = "retrying"  #: an attempt failed; waiting to run again
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"  #: never enqueued, or its result expired

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a running task can know about its job; see :func:`current_job`."""

    job_id: str
    task: str
    queue: str
    attempt: int  #: 1 on the first run; counts retries and re-runs after a lost worker
    max_attempts: int
    enqueue_time: datetime
    worker_id: str
    #: the schedule that enqueued this job (see :mod:`taskflow.schedules`), else None
    schedule: str | None = None
    #: when the schedule's tick was due (aware, UTC); None for jobs not from a schedule
    tick: datetime | None = None
    #: ticks missed before this one and coalesced into it (``misfire="coalesce"``)
    missed_ticks: int = 0


_current: ContextVar[JobContext] = ContextVar("taskflow_current_job")


def current_job() -> JobContext:
    """The context of the job whose body is running in this task.

    Raises :class:`LifecycleError` outside a task body run by a worker.
    """
    try:
        return _current.get()
    except LookupError:
        raise LifecycleError(
            "current_job() called outside a task run by a taskflow worker"
        ) from None


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task is queued, retried and kept. Built by ``@app.task``."""

    name: str
    queue: str
    retries: int
    backoff: Backoff
    retry_on: tuple[type[BaseException], ...]
    timeout: float | None
    result_ttl: timedelta


@dataclass(frozen=True, slots=True)
class TaskCall(Generic[P]):
    """One call's arguments for :meth:`Task.enqueue_many`; build it with :meth:`Task.call`,
    which type checkers check against the task's signature."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


CallArguments: TypeAlias = TaskCall[P] | tuple[tuple[Any, ...], dict[str, Any]]
"""What ``enqueue_many`` takes per job: a checked :class:`TaskCall` or an ``(args, kwargs)``
pair that only the runtime validation sees."""


class _OneArgument(Protocol[X_contra, R_co]):
    """A task whose body takes one positional argument of type ``X_contra``, as ``map`` needs."""

    @property
    def fn(self) -> Callable[[X_contra], Awaitable[R_co]]: ...


class _BoundOneArgument(Protocol[X_contra, R_co]):
    @property
    def task(self) -> _OneArgument[X_contra, R_co]: ...


class Task(Generic[P, R]):
    """A registered coroutine. Call ``enqueue`` to run it on a worker.

    ``await task(...)`` runs the body in-process, with no Redis and no validation.
    """

    def __init__(self, app: Client, fn: Callable[P, Awaitable[R]], options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.options = options
        self.name = options.name
        self.signature = Signature(fn, options.name)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.options.queue!r}>"

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.fn(*args, **kwargs)

    def with_options(
        self,
        *,
        delay: float | timedelta | str | None = None,
        defer_until: datetime | None = None,
        job_id: str | None = None,
        queue: str | None = None,
    ) -> BoundTask[P, R]:
        """This task with enqueue options bound, for its ``enqueue``, ``enqueue_many`` and ``map``.

        The options are those of :class:`EnqueueOptions`, checked now: a bad value raises
        :class:`ConfigurationError` here, before any enqueue. The result is immutable and can
        be kept and reused.

        Example::

            job = await send_email.with_options(delay=10, job_id="welcome-42").enqueue(
                "a@b.c", subject="hi"
            )
        """
        return BoundTask(self, EnqueueOptions(delay, defer_until, job_id, queue))

    def call(self, *args: P.args, **kwargs: P.kwargs) -> TaskCall[P]:
        """One call's arguments for :meth:`enqueue_many`, checked like those of ``enqueue``."""
        return TaskCall(args, kwargs)

    @redis_errors
    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Validate the arguments and enqueue a job; return its handle.

        Options (delay, job id, queue) go through :meth:`with_options`. The old keywords
        ``_delay``, ``_defer_until``, ``_job_id`` and ``_queue`` still work for now, with a
        :class:`DeprecationWarning`.

        Raises :class:`ArgumentError` (nothing written) or :class:`PayloadTooLarge`.
        """
        call = dict(kwargs)
        options = legacy_options(call, ENQUEUE_OPTIONS, "enqueue")
        handle = await self.app.enqueue_task(self, args, call, options)
        return cast("JobHandle[R]", handle)

    @redis_errors
    async def enqueue_many(
        self,
        calls: Iterable[CallArguments[P]],
        *,
        _delay: float | timedelta | str | None = None,
        _defer_until: datetime | None = None,
        _queue: str | None = None,
    ) -> list[JobHandle[R]]:
        """Enqueue one job per call, all in one round trip.

        A call is ``task.call(...)`` (checked by type checkers) or an ``(args, kwargs)`` pair.
        Every call is validated first; an invalid one raises (naming its position) and
        nothing is written. The write is atomic: all the jobs, or none. Options go through
        :meth:`with_options` (the ``_``-prefixed keywords are deprecated).

        Example::

            handles = await send_email.enqueue_many(
                send_email.call(addr, subject="hi") for addr in addresses
            )
        """
        legacy = {"_delay": _delay, "_defer_until": _defer_until, "_queue": _queue}
        options = legacy_options(legacy, tuple(legacy), "enqueue_many")
        return await BoundTask(self, options).enqueue_many(calls)

    @redis_errors
    async def map(
        self: _OneArgument[X, R],
        values: Iterable[X],
        *,
        _delay: float | timedelta | str | None = None,
        _queue: str | None = None,
    ) -> list[JobHandle[R]]:
        """Enqueue one job per value, passed as the task's single positional argument.

        Only for tasks that take one positional argument (type checkers check the values
        against its type); otherwise as :meth:`enqueue_many`.
        """
        task = cast("Task[..., R]", self)  # the self type only limits which tasks may map
        legacy = {"_delay": _delay, "_queue": _queue}
        options = legacy_options(legacy, tuple(legacy), "map")
        return await BoundTask(task, options).map(values)


@dataclass(frozen=True, slots=True)
class BoundTask(Generic[P, R]):
    """A task with enqueue options bound; made by :meth:`Task.with_options`.

    Immutable: keep one and reuse it. Its methods are those of :class:`Task`, typed the same
    way, with ``options`` applied to every job they enqueue.

    Example::

        bulk = send_email.with_options(queue="bulk", delay=timedelta(minutes=5))
        await bulk.enqueue("a@b.c", subject="hi")
        await bulk.enqueue_many(send_email.call(a, subject="hi") for a in ("c@d.e", "f@g.h"))
    """

    task: Task[P, R]
    options: EnqueueOptions

    @redis_errors
    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Validate the arguments and enqueue a job with the bound options; see
        :meth:`Task.enqueue`."""
        handle = await self.task.app.enqueue_task(self.task, args, dict(kwargs), self.options)
        return cast("JobHandle[R]", handle)

    @redis_errors
    async def enqueue_many(self, calls: Iterable[CallArguments[P]]) -> list[JobHandle[R]]:
        """Enqueue one job per call in one atomic write; see :meth:`Task.enqueue_many`.

        :raises ConfigurationError: the options have a ``job_id`` (it names a single job).
        """
        pairs = ((c.args, c.kwargs) if isinstance(c, TaskCall) else c for c in calls)
        handles = await self.task.app.enqueue_calls(self.task, pairs, self.options)
        return cast("list[JobHandle[R]]", handles)

    async def map(self: _BoundOneArgument[X, R], values: Iterable[X]) -> list[JobHandle[R]]:
        """Enqueue one job per value, the task's single positional argument; see
        :meth:`Task.map`."""
        bound = cast("BoundTask[..., R]", self)  # the self type only limits which tasks may map
        return await bound.enqueue_many(((value,), {}) for value in values)


class JobHandle(Generic[R]):
    """A reference to one job, usable from any process with the same app."""

    __slots__ = ("app", "enqueued", "job_id", "queue", "task")

    def __init__(
        self, app: Client, job_id: str, task: str, queue: str, *, enqueued: bool = True
    ) -> None:
        self.app = app
        self.job_id = job_id
        self.task = task
        self.queue = queue
        self.enqueued = enqueued

    def __repr__(self) -> str:
        return f"<JobHandle {self.job_id} {self.task} queue={self.queue!r}>"

    async def _fetch(
        self, notify: str | None = None, notify_ttl: float = 86400
    ) -> tuple[bytes | None, bool, float | None, int, bool]:
        async with self.app.redis.pipeline(transaction=False) as pipe:
            if notify is not None:
                # before the reads: a finish after them is then certain to publish to us
                pipe.sadd(keys.notify(self.job_id), notify)
                pipe.expire(keys.notify(self.job_id), max(1, int(notify_ttl) + 1))
            pipe.get(keys.result(self.job_id))
            pipe.exists(keys.in_progress(self.job_id))
            pipe.zscore(keys.queue(self.queue), self.job_id)
            pipe.get(keys.failures(self.job_id))
            pipe.exists(keys.job(self.job_id))
            replies = await pipe.execute()
        raw, running, score, failures, exists = replies[-5:]
        if notify is not None and (raw is not None or not (running or exists or score)):
            # over already (or never there): nobody will notify, and the set would outlive
            # the job by the wait's timeout
            await cast("Awaitable[int]", self.app.redis.srem(keys.notify(self.job_id), notify))
        return raw, bool(running), score, int(failures or 0), bool(exists)

    @redis_errors
    async def info(self) -> JobResult | None:
        """The stored result record, or None while the job has not finished."""
        raw = await self.app.redis.get(keys.result(self.job_id))
        return None if raw is None else decode_result(raw, self.job_id)

    @redis_errors
    async def status(self) -> JobStatus:
        """The job's current state."""
        raw, running, score, failures, exists = await self._fetch()
        if raw is not None:
            return JobStatus(decode_result(raw, self.job_id).status)
        if running:
            return JobStatus.RUNNING
        if score is None and not exists:
            return JobStatus.NOT_FOUND
        if failures:
            return JobStatus.RETRYING
        if score is not None and score > time.time() * 1000:
            return JobStatus.DEFERRED
        return JobStatus.QUEUED

    @redis_errors
    async def result(self, timeout: float | None = None, *, poll_interval: float = 0.1) -> R:
        """Wait for the job to finish and return its value.

        The worker's finish notifies this process over pub/sub; ``poll_interval`` is only the
        safety net (e.g. for a plain arq worker, which does not notify).

        Raises :class:`TaskFailed` (failed or cancelled; the remote error as data),
        :class:`ResultTimeout` after ``timeout`` seconds, :class:`JobNotFound`.
        """
        listener = await self.app.result_listener()
        future = listener.expect(self.job_id)
        notify: str | None = listener.channel
        try:
            with anyio.move_on_after(timeout):
                while True:
                    raw, running, score, _, exists = await self._fetch(notify, timeout or 86400)
                    notify = None
                    if raw is not None:
                        return self._unwrap(raw)
                    if not running and score is None and not exists:
                        raise JobNotFound(self.job_id)
                    await listener.wait(future, poll_interval)
                    if future.done():
                        if (pushed := future.result()) is not None:
                            return self._unwrap(pushed)  # the message carried the result
                        future = listener.expect(self.job_id)
        finally:
            listener.forget(self.job_id, future)
        raise ResultTimeout(self.job_id, timeout or 0.0)

    def _unwrap(self, raw: bytes) -> R:
        record = decode_result(raw, self.job_id)
        if record.success:
            return cast("R", record.value)
        raise TaskFailed(self.job_id, record.task, record.value, record.status)

    @redis_errors
    async def abort(self, timeout: float = 5.0) -> bool:
        """Cancel the job: a queued one at once, a running one by its worker.

        Returns True when the job ended cancelled within ``timeout`` seconds, False if it had
        already finished or its worker did not cancel it in time.
        """
        outcome = await self.app.abort_job(self.job_id, self.task, self.queue)
        if outcome == 1:
            return True
        if outcome == 0:
            return False
        if outcome == -1:
            raise JobNotFound(self.job_id)
        with anyio.move_on_after(timeout):
            while True:
                if (status := await self.status()).finished:
                    return status is JobStatus.CANCELLED
                await anyio.sleep(0.02)
        return False
