"""The client core of an app: task registry, Redis lifecycle, enqueue, jobs, graphs and runs.

:class:`taskflow.TaskFlow` (``app.py``) extends it with workers, metrics and alerts; the
layers below the app (tasks, runs, workers, features) are typed against this class only."""

from __future__ import annotations

import enum
import fnmatch
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar, overload

import anyio

from ._clock import now_ms
from ._listener import ResultListener
from ._options import check_queue, duration_option
from ._protocol import keys
from ._protocol.codecs import JobPayload, JobResult, encode_job, encode_result
from ._protocol.scripts import Scripts
from .config import Backoff, Settings, build, parse_duration, settings_from_env
from .connection import open_redis, redact
from .dead_letters import DeadLetters
from .errors import (
    ConfigurationError,
    FailureKind,
    LifecycleError,
    PayloadError,
    UnknownTask,
)
from .graph import Graph
from .queues import QueueHandle
from .runs import RunHandle
from .task import EnqueueOptions, JobHandle, Task, TaskOptions

if TYPE_CHECKING:
    from arq.connections import ArqRedis
    from redis.asyncio import Redis


__all__ = ("Client",)

P = ParamSpec("P")
R = TypeVar("R")


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


def _module_name_of_caller() -> str:
    """The dotted name of the module that builds the app, outside taskflow itself.

    A script run as ``python examples/app.py`` is ``__main__``: it is named as the module
    it would be when imported from the current directory (``examples.app``), as
    ``taskflow worker examples.app:app`` imports it, so that both see one app.
    """
    frame = inspect.currentframe()
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != "taskflow" and not module.startswith("taskflow."):
            break
        frame = frame.f_back
    if frame is None:
        return "app"
    if module == "__main__":
        spec = frame.f_globals.get("__spec__")
        if spec is not None and getattr(spec, "name", None):
            return str(spec.name).removesuffix(".__main__")
        path = frame.f_globals.get("__file__")
        return _script_module_name(Path(path)) if path else "main"
    return module or "app"


def _script_module_name(path: Path) -> str:
    path = path.resolve().with_suffix("")
    try:
        parts = path.relative_to(Path.cwd().resolve()).parts
    except ValueError:
        return path.name
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) if parts and all(p.isidentifier() for p in parts) else path.name


class Client:
    """A taskflow application: declare tasks on it, open it, enqueue, run workers.

    :param redis_url: overrides ``settings.redis_url`` and ``TASKFLOW_REDIS_URL``.
    :param settings: everything else; defaults from the environment.
    :param redis: a client to borrow instead of opening one; never closed by the app.
    :param name: scopes the app's own keys (worker registry, metrics, alert rules and
        state) so that apps sharing a Redis do not mix; by default the name of the module
        that builds the app. Give every process of one application the same name.

    Example::

        app = taskflow.TaskFlow(redis_url="redis://localhost:6379/0")

        @app.task(queue="emails", retries=3)
        async def send_email(to: str, subject: str) -> dict: ...

        async with app:
            job = await send_email.enqueue("a@b.c", subject="hi")
            print(await job.result(timeout=5))
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        redis: Redis | None = None,
        name: str | None = None,
        routes: Mapping[str, str] | None = None,
    ) -> None:
        app_name = name if name is not None else _module_name_of_caller()
        #: task-name pattern (fnmatch: ``payments.*``) -> queue, for tasks that name none
        self.routes = dict(routes or {})
        for pattern, routed in self.routes.items():
            if not isinstance(pattern, str):
                raise ConfigurationError(f"routes: pattern {pattern!r} must be a string")
            check_queue(routed, f"routes[{pattern!r}]")
        try:
            #: the keys this app owns (workers, metrics, alerts), apart from other apps'
            self.keys = keys.AppKeys(app_name)
        except ValueError as exc:
            raise ConfigurationError(f"TaskFlow(name=...): {exc}") from None
        self.name = app_name
        base = settings or Settings()
        if redis_url is not None:
            base = build(Settings, {**base.model_dump(exclude_unset=True), "redis_url": redis_url})
        self.settings = settings_from_env(base)
        self._borrowed = redis
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._state = _State.UNOPENED
        self._stack: AsyncExitStack | None = None
        self._redis: ArqRedis | Redis | None = None
        self._scripts: Scripts | None = None
        self._url = redact(self.settings.redis_url)
        self._embedded = False
        self._listener: ResultListener | None = None

    # -- registry -------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int | None = None,
        backoff: Backoff | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | timedelta | str | None = None,
        result_ttl: float | timedelta | str | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[P, Awaitable[R]] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int | None = None,
        backoff: Backoff | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | timedelta | str | None = None,
        result_ttl: float | timedelta | str | None = None,
    ) -> Task[P, R] | Callable[[Callable[P, Awaitable[R]]], Task[P, R]]:
        """Register an ``async def`` as a task.

        :param name: registry and wire name; defaults to the function's ``__name__``.
        :param queue: queue it is enqueued on; defaults to ``settings.default_queue``.
        :param retries: extra attempts after a failure matching ``retry_on``;
            ``settings.retry.retries`` (0) by default.
        :param backoff: delay between attempts; ``settings.retry.backoff`` (exponential with
            full jitter) by default.
        :param retry_on: exception types that are retried (others fail at once).
        :param timeout: how long an attempt may run (seconds, a timedelta or ``"30s"``-style
            duration); a timed-out attempt fails (and retries).
        :param result_ttl: how long the result is kept (a duration as for ``timeout``; 0 keeps
            none); ``settings.result_ttl`` by default.
        :raises ConfigurationError: not a coroutine function, a taken name, bad values.
        """

        def register(f: Callable[P, Awaitable[R]]) -> Task[P, R]:
            options = self._options(f, name, queue, retries, backoff, retry_on, timeout, result_ttl)
            if options.name in self._tasks:
                raise ConfigurationError(
                    f"task name {options.name!r} is already registered; "
                    "pass name= to tell them apart"
                )
            task = Task(self, f, options)
            self._tasks[options.name] = task
            return task

        return register(fn) if fn is not None else register

    def _options(
        self,
        fn: Callable[..., Any],
        name: str | None,
        queue: str | None,
        retries: int | None,
        backoff: Backoff | None,
        retry_on: tuple[type[BaseException], ...],
        timeout: float | timedelta | str | None,
        result_ttl: float | timedelta | str | None,
    ) -> TaskOptions:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(
                f"@app.task needs an `async def` function, got {fn!r}; "
                "wrap blocking code with anyio.to_thread.run_sync inside an async def"
            )
        policy = self.settings.retry
        task_name = fn.__name__ if name is None else name
        if not isinstance(task_name, str) or not 1 <= len(task_name) <= 200:
            raise ConfigurationError(
                f"name={task_name!r} is not a valid task name: use a string of 1-200 characters"
            )
        retries = policy.retries if retries is None else retries
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigurationError(
                f"retries={retries!r} is invalid: use an integer >= 0 (extra attempts after "
                "the first; 0 means no retry)"
            )
        if backoff is not None and not isinstance(backoff, Backoff):
            raise ConfigurationError(
                f"backoff={backoff!r} is invalid: use taskflow.Backoff(...), e.g. "
                "taskflow.Backoff(base=5, cap=300) waits up to 5 s, 10 s, 20 s ... 300 s "
                "between attempts, or Backoff(base=5, factor=1, jitter=False) for 5 s each time"
            )
        if not isinstance(retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in retry_on
        ):
            raise ConfigurationError(
                f"retry_on={retry_on!r} is invalid: use a tuple of exception types, "
                "e.g. (TimeoutError, ConnectionError)"
            )
        limit = None if timeout is None else duration_option("timeout", timeout, minimum=1e-9)
        ttl = (
            self.settings.result_ttl
            if result_ttl is None
            else duration_option("result_ttl", result_ttl, minimum=0)
        )
        queue_name = self.route(task_name) if queue is None else queue
        check_queue(queue_name)
        return TaskOptions(
            name=task_name,
            queue=queue_name,
            retries=retries,
            backoff=backoff or policy.backoff,
            retry_on=retry_on,
            timeout=None if limit is None else limit.total_seconds(),
            result_ttl=ttl,
        )

    def route(self, task_name: str) -> str:
        """The queue of a task that names none: the first of ``routes`` whose pattern
        matches its name (``fnmatch``: ``payments.*``), else ``settings.default_queue``."""
        for pattern, queue in self.routes.items():
            if fnmatch.fnmatchcase(task_name, pattern):
                return queue
        return self.settings.default_queue

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        """Registered tasks by name."""
        return self._tasks

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTask(f"no task named {name!r}; registered: {known}") from None

    @property
    def queues(self) -> list[str]:
        """Every queue some registered task uses, sorted."""
        return sorted({t.options.queue for t in self._tasks.values()})

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is _State.OPEN:
            raise LifecycleError("this TaskFlow app is already open; open it once per process")
        stack = AsyncExitStack()
        try:
            if self._borrowed is not None:
                self._redis = self._borrowed
            else:
                connection = await stack.enter_async_context(open_redis(self.settings))
                self._redis = connection.client
                self._url, self._embedded = connection.url, connection.embedded
            self._scripts = Scripts(self._redis)  # type: ignore[arg-type]
            self._listener = ResultListener(self._redis)
            stack.push_async_callback(self._listener.aclose)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the connection pool (a borrowed client is left open)."""
        if self._state is not _State.OPEN:
            return
        self._state = _State.CLOSED
        stack, self._stack = self._stack, None
        self._redis = self._scripts = None
        self._listener = None
        self._embedded = False
        if stack is not None:
            # shielded: closed because its task was cancelled, the app still releases its
            # connections (and any embedded server) instead of leaving them to the GC
            with anyio.CancelScope(shield=True):
                await stack.aclose()

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    @property
    def redis_url(self) -> str:
        """The Redis URL in use (after any embedded fallback), password hidden."""
        return self._url

    @property
    def embedded(self) -> bool:
        """True while the app runs on a private embedded redis-server it started."""
        return self._embedded

    @property
    def redis(self) -> ArqRedis:
        """The open client; raises :class:`LifecycleError` unless inside ``async with app``."""
        if self._redis is None:
            raise LifecycleError(
                f"the TaskFlow app is {self._state.value}; "
                "use `async with app:` before talking to Redis"
            )
        return self._redis  # type: ignore[return-value]

    async def result_listener(self) -> ResultListener:
        """The app's subscription for finished jobs and runs, subscribed on first use."""
        if self._listener is None:
            raise LifecycleError(f"the TaskFlow app is {self._state.value}; open it first")
        await self._listener.subscribe()
        return self._listener

    @property
    def scripts(self) -> Scripts:
        if self._scripts is None:
            raise LifecycleError(f"the TaskFlow app is {self._state.value}; open it first")
        return self._scripts

    # -- jobs -----------------------------------------------------------------------------

    async def enqueue(self, task_name: str, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Enqueue a registered task by name, as :meth:`Task.enqueue` does.

        For options, bind them to the task: ``app.get_task(name).with_options(...).enqueue(...)``.
        """
        return await self.get_task(task_name).enqueue(*args, **kwargs)

    async def enqueue_task(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: EnqueueOptions | None = None,
    ) -> JobHandle[Any]:
        """Enqueue one call of ``task``; see :meth:`Task.enqueue` and :class:`EnqueueOptions`."""
        options = options or EnqueueOptions()
        now = now_ms()
        score = now + _defer_ms(now, options)
        job_id = options.job_id or uuid.uuid4().hex
        queue = options.queue or task.options.queue
        payload = self._payload(task, args, kwargs, now)
        expiry = score - now + int(self.settings.job_ttl.total_seconds() * 1000)
        [enqueued] = await self.scripts.enqueue(queue, expiry, [(job_id, payload, score)])
        return JobHandle(self, job_id, task.name, queue, enqueued=enqueued)

    async def enqueue_calls(
        self,
        task: Task[Any, Any],
        calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]],
        options: EnqueueOptions | None = None,
        *,
        chunk: int = 1000,
    ) -> list[JobHandle[Any]]:
        """Enqueue many calls of ``task`` in one round trip; see :meth:`Task.enqueue_many`.

        Every call is validated and encoded before anything is written, and the write is
        one MULTI/EXEC: all the jobs are enqueued, or none.

        :raises ConfigurationError: ``options`` has a ``job_id``, which names a single job.
        """
        options = options or EnqueueOptions()
        if options.job_id is not None:
            raise ConfigurationError(
                f"job_id {options.job_id!r} names a single job, so enqueue_many and map cannot "
                "take it; enqueue one job per id with with_options(job_id=...).enqueue(...)"
            )
        now = now_ms()
        score = now + _defer_ms(now, options)
        queue = options.queue or task.options.queue
        jobs: list[tuple[str, bytes, int]] = []
        for position, (args, kwargs) in enumerate(calls):
            try:
                payload = self._payload(task, args, kwargs, now)
            except PayloadError as exc:
                raise type(exc)(f"call {position}: {exc}") from None
            jobs.append((uuid.uuid4().hex, payload, score))
        expiry = score - now + int(self.settings.job_ttl.total_seconds() * 1000)
        if jobs:
            async with self.redis.pipeline(transaction=True) as pipe:
                # redis-py loads the script before the transaction, so EVALSHA cannot fail
                # half-way with NOSCRIPT
                for start in range(0, len(jobs), chunk):
                    await self.scripts.enqueue(
                        queue, expiry, jobs[start : start + chunk], pipe=pipe
                    )
                await pipe.execute()
        return [JobHandle(self, job_id, task.name, queue) for job_id, _, _ in jobs]

    def _payload(
        self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], now: int
    ) -> bytes:
        wire_args, wire_kwargs = task.signature.encode(args, kwargs)
        return encode_job(
            JobPayload(task.name, wire_args, wire_kwargs, None, now),
            self.settings.max_payload_bytes,
        )

    def job(self, job_id: str, *, task: str = "", queue: str | None = None) -> JobHandle[Any]:
        """A handle on an existing job, e.g. one enqueued by another process."""
        return JobHandle(self, job_id, task, queue or self.settings.default_queue)

    async def abort_job(self, job_id: str, task: str, queue: str) -> int:
        now = now_ms()
        record = JobResult(
            job_id=job_id,
            task=task,
            status="cancelled",
            value={
                "type": FailureKind.ABORTED.value,
                "message": "aborted before it started",
                "traceback": "",
            },
            attempt=0,
            enqueue_ms=0,
            start_ms=now,
            finish_ms=now,
            queue=queue,
            worker=None,
        )
        known = self._tasks.get(task)
        keep = known.options.result_ttl if known is not None else self.settings.result_ttl
        # as for any finished job: a result_ttl of 0 keeps no result
        ttl = int(keep.total_seconds() * 1000) or -1
        return await self.scripts.abort(job_id, queue, encode_result(record, [], {}), ttl, now)

    # -- graphs ---------------------------------------------------------------------------

    def graph(self, name: str) -> Graph:
        """A new, empty graph of calls of this app's tasks; see :class:`taskflow.Graph`."""
        return Graph(self, name)

    @property
    def dead_letters(self) -> DeadLetters:
        """Jobs that failed for good: list, get, retry, purge (see :mod:`taskflow.dead_letters`)."""
        return DeadLetters(self)

    def queue(self, name: str) -> QueueHandle:
        """A handle on queue ``name``: pause, resume, move and purge its jobs."""
        return QueueHandle(self, name)

    def run_handle(self, run_id: str) -> RunHandle:
        """Re-attach to a submitted run, from any process."""
        return RunHandle(self, run_id)


def _defer_ms(now: int, options: EnqueueOptions) -> int:
    """Milliseconds from ``now`` until a job with these (already validated) options is due."""
    if options.defer_until is not None:
        return max(0, int(options.defer_until.astimezone(UTC).timestamp() * 1000) - now)
    delay = options.delay
    if delay is None:
        return 0
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    return int(
        (parse_duration(seconds).total_seconds() if isinstance(seconds, str) else seconds) * 1000
    )
