"""The exceptions taskflow raises, and the one a task may raise to ask for a retry.

Hierarchy::

    TaskflowError
    ├── ConfigurationError            bad settings or bad use of the API at definition time
    │   └── RedisUnavailable          no Redis reachable and no embedded server to fall back on
    ├── PayloadError                  a value cannot travel through Redis
    │   ├── ArgumentError (+TypeError)     arguments do not match the task's signature
    │   ├── SerializationError        a value cannot be encoded as JSON
    │   └── PayloadTooLarge           an encoded payload is over the size cap
    ├── LookupMiss (+LookupError)
    │   ├── UnknownTask               no task registered under that name
    │   └── JobNotFound               no job, result or queue entry under that id
    ├── ExecutionError
    │   ├── TaskFailed                the job failed or was cancelled; the remote error as data
    │   └── ResultTimeout (+TimeoutError)  the result did not arrive in time
    └── LifecycleError (+RuntimeError)    used before opening, after closing, or opened twice

    Retry                             raised by a task body to be run again (not a TaskflowError)
"""

from __future__ import annotations

from typing import Any

__all__ = (
    "ArgumentError",
    "ConfigurationError",
    "ExecutionError",
    "JobNotFound",
    "LifecycleError",
    "LookupMiss",
    "PayloadError",
    "PayloadTooLarge",
    "RedisUnavailable",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "TaskFailed",
    "TaskflowError",
    "UnknownTask",
)


class TaskflowError(Exception):
    """Root of every error taskflow raises."""


class ConfigurationError(TaskflowError):
    """A setting, decorator argument or other definition-time value is invalid."""


class RedisUnavailable(ConfigurationError):
    """No Redis server could be reached and no embedded server could be started."""


class PayloadError(TaskflowError):
    """A value cannot be carried through Redis."""


class ArgumentError(PayloadError, TypeError):
    """Arguments do not match the task's signature; nothing was written to Redis."""


class SerializationError(PayloadError):
    """A value cannot be encoded as JSON (orjson)."""


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


class ExecutionError(TaskflowError):
    """A job did not produce a result."""


class TaskFailed(ExecutionError):
    """The job ended failed or cancelled.

    The remote exception travels as data, never as an object: ``error_type``,
    ``error_message`` and ``traceback`` are plain strings.
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
        super().__init__(
            f"job {job_id!r} ({task}) {status}: {self.error_type}: {self.error_message}"
        )


class ResultTimeout(ExecutionError, TimeoutError):
    """The result was not available within the requested timeout."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(f"job {job_id!r} has no result after {timeout:g}s")
        self.job_id = job_id
        self.timeout = timeout


class LifecycleError(TaskflowError, RuntimeError):
    """An object was used in the wrong state: before opening, after closing, or twice."""


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
