"""taskflow: an asyncio task runner on arq's Redis protocol.

Declare ``async def`` tasks on a :class:`TaskFlow` app, enqueue them with validated
arguments, and run workers that pull them from Redis.
"""

from __future__ import annotations

from .app import TaskFlow
from .config import Backoff, Settings, WorkerSettings
from .errors import (
    ArgumentError,
    ConfigurationError,
    ExecutionError,
    JobNotFound,
    LifecycleError,
    LookupMiss,
    PayloadError,
    PayloadTooLarge,
    RedisUnavailable,
    ResultTimeout,
    Retry,
    SerializationError,
    TaskFailed,
    TaskflowError,
    UnknownTask,
)
from .heartbeat import WorkerInfo, live_workers
from .task import JobContext, JobHandle, JobStatus, Task, current_job
from .worker import Sibling, Worker

__all__ = (
    "ArgumentError",
    "Backoff",
    "ConfigurationError",
    "ExecutionError",
    "JobContext",
    "JobHandle",
    "JobNotFound",
    "JobStatus",
    "LifecycleError",
    "LookupMiss",
    "PayloadError",
    "PayloadTooLarge",
    "RedisUnavailable",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "Settings",
    "Sibling",
    "Task",
    "TaskFailed",
    "TaskFlow",
    "TaskflowError",
    "UnknownTask",
    "Worker",
    "WorkerInfo",
    "WorkerSettings",
    "current_job",
    "live_workers",
)

__version__ = "0.1.0"
