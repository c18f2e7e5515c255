"""taskflow: an asyncio task runner on arq's Redis protocol.

Declare ``async def`` tasks on a :class:`TaskFlow` app, enqueue them with validated
arguments, and run workers that pull them from Redis.
"""

from __future__ import annotations

from . import _version
from ._critical_path import (
    CriticalPath,
    PathNode,
    TaskShare,
    critical_path_of,
    slowest_dependencies,
)
from ._protocol.codecs import JobResult
from ._registry import WorkerInfo, live_workers
from ._worker import JobObserver, JobSample, Service, ServiceContext, Worker
from .app import TaskFlow
from .config import Backoff, MetricsSettings, Resolution, Settings, WorkerSettings
from .errors import (
    ArgumentError,
    ConfigurationError,
    CorruptPayload,
    ExecutionError,
    FailureKind,
    GraphCycle,
    GraphError,
    GraphFailed,
    JobNotFound,
    LifecycleError,
    LookupMiss,
    MetricNotFound,
    PayloadError,
    PayloadTooLarge,
    RedisCommandError,
    RedisFailed,
    RedisOutOfMemory,
    RedisReadOnly,
    RedisRefused,
    RedisUnavailable,
    ResultTimeout,
    Retry,
    RetryRefused,
    RunNotFound,
    ScheduleNotFound,
    SerializationError,
    TaskFailed,
    TaskflowError,
    UnknownTask,
)
from .graph import Graph, Node, NodeState, RunState, Trigger
from .runs import NodeStatus, RunHandle, RunStatus
from .task import EnqueueOptions, JobContext, JobHandle, JobStatus, Task, current_job

__all__ = (
    "ArgumentError",
    "Backoff",
    "ConfigurationError",
    "CorruptPayload",
    "CriticalPath",
    "EnqueueOptions",
    "ExecutionError",
    "FailureKind",
    "Graph",
    "GraphCycle",
    "GraphError",
    "GraphFailed",
    "JobContext",
    "JobHandle",
    "JobNotFound",
    "JobObserver",
    "JobResult",
    "JobSample",
    "JobStatus",
    "LifecycleError",
    "LookupMiss",
    "MetricNotFound",
    "MetricsSettings",
    "Node",
    "NodeState",
    "NodeStatus",
    "PathNode",
    "PayloadError",
    "PayloadTooLarge",
    "RedisCommandError",
    "RedisFailed",
    "RedisOutOfMemory",
    "RedisReadOnly",
    "RedisRefused",
    "RedisUnavailable",
    "Resolution",
    "ResultTimeout",
    "Retry",
    "RetryRefused",
    "RunHandle",
    "RunNotFound",
    "RunState",
    "RunStatus",
    "ScheduleNotFound",
    "SerializationError",
    "Service",
    "ServiceContext",
    "Settings",
    "Task",
    "TaskFailed",
    "TaskFlow",
    "TaskShare",
    "TaskflowError",
    "Trigger",
    "UnknownTask",
    "Worker",
    "WorkerInfo",
    "WorkerSettings",
    "critical_path_of",
    "current_job",
    "live_workers",
    "slowest_dependencies",
)

__version__ = _version.__version__
