"""The exceptions taskflow raises, the one a task may raise to ask for a retry, and the
kinds of failure a worker reports for jobs that did not fail by raising.

Hierarchy::

    TaskflowError
    ├── ConfigurationError            bad settings or bad use of the API at definition time
    │   └── RedisUnavailable (+RedisFailed)  no Redis reachable (and no embedded fallback)
    │       └── RedisRefused          a Redis answered but refused: password, permission, db, TLS
    ├── RedisFailed                   a Redis call failed at run time; __cause__ is redis-py's
    │   ├── RedisOutOfMemory          maxmemory reached under noeviction: writes refused
    │   ├── RedisReadOnly             a read-only replica
    │   ├── RedisCommandError         a command or script refused (e.g. a key of the wrong type)
    │   └── RedisUnavailable          (see above)
    ├── GraphError (+ValueError)      a graph is malformed: duplicate or foreign node, bad task
    │   └── GraphCycle                an edge would close a loop; names it
    ├── PayloadError                  a value cannot travel through Redis
    │   ├── ArgumentError (+TypeError)     arguments do not match the task's signature
    │   ├── SerializationError        a value cannot be encoded as JSON
    │   │   └── CorruptPayload        a stored job or result cannot be decoded
    │   └── PayloadTooLarge           an encoded payload is over the size cap
    ├── LookupMiss (+LookupError)
    │   ├── UnknownTask               no task registered under that name
    │   ├── JobNotFound               no job, result or queue entry under that id
    │   ├── RunNotFound               no graph run under that id (never submitted, or expired)
    │   ├── AlertNotFound             no firing alert under that id
    │   ├── ScheduleNotFound          no schedule under that name
    │   └── MetricNotFound            no custom metric under that name
    ├── ExecutionError
    │   ├── TaskFailed                the job failed or was cancelled; the remote error as data
    │   ├── GraphFailed               a run ended with failed nodes; lists them and their errors
    │   └── ResultTimeout (+TimeoutError)  the result did not arrive in time
    ├── LifecycleError (+RuntimeError)    used before opening, after closing, or opened twice
    ├── RetryRefused                  a dead letter cannot be retried as things stand; says why
    └── ChannelError                  an alert channel could not deliver (no secrets inside)

    Retry                             raised by a task body to be run again (not a TaskflowError)

:class:`FailureKind` names what a worker reports when a job ends without its body raising
(``TaskFailed.kind``): match on it instead of on ``error_type`` strings.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar

from redis import exceptions as r

__all__ = (
    "AlertNotFound",
    "MetricNotFound",
    "ScheduleNotFound",
    "ArgumentError",
    "ChannelError",
    "ConfigurationError",
    "CorruptPayload",
    "ExecutionError",
    "FailureKind",
    "GraphCycle",
    "GraphError",
    "GraphFailed",
    "JobNotFound",
    "LifecycleError",
    "LookupMiss",
    "PayloadError",
    "PayloadTooLarge",
    "RedisCommandError",
    "RedisFailed",
    "RedisOutOfMemory",
    "RedisReadOnly",
    "RedisRefused",
    "RedisUnavailable",
    "ResultTimeout",
    "Retry",
    "RetryRefused",
    "RunNotFound",
    "SerializationError",
    "TaskFailed",
    "TaskflowError",
    "UnknownTask",
)


class FailureKind(StrEnum):
    """Why a worker ended a job that did not fail by raising; stored as the error's ``type``.

    A job whose body raised carries the exception's own qualified name instead, and its
    ``TaskFailed.kind`` is None.
    """

    ABORTED = "taskflow.Aborted"  #: a client aborted it (before or while it ran)
    CANCELLED = "taskflow.Cancelled"  #: its graph run was cancelled
    JOB_LOST = "taskflow.JobLost"  #: its worker died during more attempts than allowed
    #: its attempts lost their lease while their worker lived (a body that blocked the event
    #: loop past the lease, a paused process): more such attempts than allowed
    LEASE_LOST = "taskflow.LeaseLost"
    JOB_EXPIRED = "taskflow.JobExpired"  #: its payload expired before a worker claimed it
    UNKNOWN_TASK = "taskflow.UnknownTask"  #: no task of that name on the worker
    CORRUPT_PAYLOAD = "taskflow.CorruptPayload"  #: its payload could not be decoded
    RESULT_NOT_ENCODABLE = "taskflow.ResultNotEncodable"  #: its result was not JSON or too big
    RUN_NOT_FOUND = "taskflow.RunNotFound"  #: its graph run was unknown or expired
    #: its keys in Redis could not be read (a key of the wrong type, a counter that is not a
    #: number): the job fails alone and the worker carries on
    UNREADABLE_JOB = "taskflow.UnreadableJob"
    SKIPPED = "taskflow.Skipped"  #: a graph node its trigger rule skipped
    UPSTREAM_FAILED = "taskflow.UpstreamFailed"  #: a graph node whose parent failed

    @classmethod
    def of(cls, error_type: str) -> FailureKind | None:
        """The kind named by an error's ``type``, or None for a task's own exception."""
        try:
            return cls(error_type)
        except ValueError:
            return None


class TaskflowError(Exception):
    """Root of every error taskflow raises."""


class ConfigurationError(TaskflowError):
    """A setting, decorator argument or other definition-time value is invalid."""


class RedisFailed(TaskflowError):
    """A Redis call failed while the app was running; ``__cause__`` is redis-py's error."""


class RedisOutOfMemory(RedisFailed):
    """Redis refused a write: it is at ``maxmemory`` under ``noeviction``."""


class RedisReadOnly(RedisFailed):
    """Redis refused a write: the URL points at a read-only replica (or one mid-failover)."""


class RedisCommandError(RedisFailed):
    """Redis refused a command or a script failed (a key of the wrong type, for one)."""


class RedisUnavailable(ConfigurationError, RedisFailed):
    """No Redis server could be reached (and, when opening, no embedded one started)."""


class RedisRefused(RedisUnavailable):
    """A Redis server answered but refused the connection: the password (missing or wrong),
    the user's permissions, the database number or the TLS handshake. Never a reason to
    fall back to an embedded server."""


class GraphError(TaskflowError, ValueError):
    """A graph is malformed: duplicate or foreign node, unregistered task, bad arguments."""


class GraphCycle(GraphError):
    """An edge would close a loop. ``cycle`` lists node names, first repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("graph has a cycle: " + " -> ".join(cycle))
        self.cycle = cycle


class PayloadError(TaskflowError):
    """A value cannot be carried through Redis."""


class ArgumentError(PayloadError, TypeError):
    """Arguments do not match the task's signature; nothing was written to Redis."""


class SerializationError(PayloadError):
    """A value cannot be encoded as JSON (orjson)."""


class CorruptPayload(SerializationError):
    """A stored job or result could not be decoded; ``raw`` keeps its bytes."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class PayloadTooLarge(PayloadError):
    """An encoded payload is larger than ``Settings.max_payload_bytes``."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"{what} is {size} bytes, over the {limit}-byte cap "
            "(raise max_payload_bytes or pass a reference instead of the data)"
        )
        self.size = size
        self.limit = limit


class LookupMiss(TaskflowError, LookupError):
    """Something looked up by name or id does not exist."""


class UnknownTask(LookupMiss):
    """No task is registered under the given name."""


class JobNotFound(LookupMiss):
    """No job, result or queue entry exists for the given id (never enqueued, or expired)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found: never enqueued, or its result expired")
        self.job_id = job_id


class RunNotFound(LookupMiss):
    """No graph run exists under the given id: never submitted, or expired after retention."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"run {run_id!r} is unknown or expired (graph state is kept for "
            "Settings.run_retention after a run ends)"
        )
        self.run_id = run_id


class AlertNotFound(LookupMiss):
    """No firing alert has that id (unknown, already resolved, or already acknowledged)."""


class ScheduleNotFound(LookupMiss):
    """No schedule is stored under the given name."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        listed = ", ".join(known or []) or "none"
        super().__init__(f"no schedule named {name!r}; stored: {listed}")
        self.name = name


class MetricNotFound(LookupMiss):
    """No custom metric of that name is declared in this process or recorded in Redis."""


class ExecutionError(TaskflowError):
    """A job did not produce a result."""


class TaskFailed(ExecutionError):
    """The job ended failed or cancelled.

    The remote exception travels as data, never as an object: ``error_type``,
    ``error_message`` and ``traceback`` are plain strings. ``kind`` is the
    :class:`FailureKind` when taskflow ended the job (aborted, lost, unknown task, ...),
    None when the task's own code raised.
    """

    def __init__(
        self, job_id: str, task: str, error: dict[str, Any], status: str = "failed"
    ) -> None:
        self.job_id = job_id
        self.task = task
        self.status = status
        self.error = error
        self.error_type = str(error.get("type", "Exception"))
        self.error_message = str(error.get("message", ""))
        self.traceback = str(error.get("traceback", ""))
        self.kind = FailureKind.of(self.error_type)
        super().__init__(
            f"job {job_id!r} ({task}) {status}: {self.error_type}: {self.error_message}"
        )


class GraphFailed(ExecutionError):
    """A graph run ended with nodes that did not succeed.

    ``failed`` maps node name to its error data (``type``, ``message``, ``traceback``);
    ``states`` maps every node name to its final state; ``results`` holds the successes.
    """

    def __init__(
        self,
        run_id: str,
        failed: dict[str, dict[str, Any]],
        states: dict[str, str],
        results: dict[str, Any],
    ) -> None:
        listed = "; ".join(
            f"{name}: {err.get('type', '?')}: {err.get('message', '')}"
            for name, err in list(failed.items())[:10]
        )
        more = f" (+{len(failed) - 10} more)" if len(failed) > 10 else ""
        super().__init__(f"run {run_id!r} failed: {listed}{more}")
        self.run_id = run_id
        self.failed = failed
        self.states = states
        self.results = results


class ResultTimeout(ExecutionError, TimeoutError):
    """The result was not available within the requested timeout."""

    def __init__(self, job_id: str, timeout: float, what: str = "job") -> None:
        super().__init__(f"{what} {job_id!r} has no result after {timeout:g}s")
        self.job_id = job_id
        self.timeout = timeout


class LifecycleError(TaskflowError, RuntimeError):
    """An object was used in the wrong state: before opening, after closing, or twice."""


class RetryRefused(TaskflowError):
    """A dead letter cannot be retried as things stand: a graph node whose run expired or
    was cancelled, or that is no longer failed (retried already), or whose retry would be
    too big for one atomic call. ``job_id`` names it and ``reason`` says why."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"dead letter {job_id!r} cannot be retried: {reason}")
        self.job_id = job_id
        self.reason = reason


class ChannelError(TaskflowError):
    """An alert channel could not deliver a message; the message never contains secrets."""


class Retry(Exception):
    """Raise from a task body to run the job again after ``delay`` seconds.

    The retry counts against the task's ``retries``; with none left the job fails.
    With no delay, the task's backoff decides.

    Example::

        @app.task(retries=5)
        async def poll(url: str) -> str:
            if not ready(url):
                raise taskflow.Retry(delay=2.0)
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        if delay is not None and delay < 0:
            raise ValueError(f"retry delay must be >= 0 seconds, got {delay!r}")
        super().__init__(reason or (f"retry in {delay:g}s" if delay is not None else "retry"))
        self.delay = delay
        self.reason = reason


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` (through nested groups), or None if it holds more.

    Task groups wrap whatever a worker's body or services raise; taskflow hands a single
    error back as itself so that ``except taskflow.ArgumentError`` matches, and leaves a
    genuine multi-error group (two services failing at once) as the group.
    """
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        if len(leaf.exceptions) != 1:
            return None
        leaf = leaf.exceptions[0]
    return leaf


@contextmanager
def unwrapped() -> Iterator[None]:
    """Re-raise a single-exception group that escapes the block as its one exception."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = sole_exception(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__


def from_redis(exc: BaseException, doing: str) -> TaskflowError:
    """The TaskflowError for a redis-py error met while ``doing`` something (raise it
    ``from exc``)."""
    if isinstance(exc, r.AuthenticationError | r.NoPermissionError):
        return RedisRefused(f"{doing}: Redis refused: {exc}")
    if isinstance(exc, r.OutOfMemoryError):
        return RedisOutOfMemory(
            f"{doing}: Redis is out of memory and refuses writes ({exc}); raise maxmemory, free "
            "memory, or shorten result_ttl/job_ttl"
        )
    if isinstance(exc, r.ReadOnlyError):
        return RedisReadOnly(f"{doing}: Redis is a read-only replica ({exc}); use the primary")
    if isinstance(exc, r.ConnectionError | r.TimeoutError):
        return RedisUnavailable(f"{doing}: Redis unreachable ({exc})")
    return RedisCommandError(f"{doing}: Redis refused: {exc}")


P = ParamSpec("P")
T = TypeVar("T")


def redis_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Let ``fn`` raise TaskflowErrors only: a redis-py error becomes :func:`from_redis`'s,
    with the original as ``__cause__``."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except r.RedisError as exc:
            raise from_redis(exc, fn.__qualname__.replace("._", ".")) from exc

    return call
