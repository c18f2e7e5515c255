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
    GraphCycle,
    GraphError,
    GraphFailed,
    JobNotFound,
    LifecycleError,
    LookupMiss,
    PayloadError,
    PayloadTooLarge,
    RedisUnavailable,
    ResultTimeout,
    Retry,
    RunNotFound,
    SerializationError,
    TaskFailed,
    TaskflowError,
    UnknownTask,
)
from .graph import Graph, Node, NodeState, Trigger
from .heartbeat import WorkerInfo, live_workers
from .resolver import NodeStatus, RunHandle, RunStatus
from .serde import JobResult
from .task import JobContext, JobHandle, JobStatus, Task, current_job
from .worker import Sibling, Worker

__all__ = (
    "ArgumentError",
    "Backoff",
    "ConfigurationError",
    "ExecutionError",
    "Graph",
    "GraphCycle",
    "GraphError",
    "GraphFailed",
    "JobContext",
    "JobHandle",
    "JobNotFound",
    "JobResult",
    "JobStatus",
    "LifecycleError",
    "LookupMiss",
    "Node",
    "NodeState",
    "NodeStatus",
    "PayloadError",
    "PayloadTooLarge",
    "RedisUnavailable",
    "ResultTimeout",
    "Retry",
    "RunHandle",
    "RunNotFound",
    "RunStatus",
    "SerializationError",
    "Settings",
    "Sibling",
    "Task",
    "TaskFailed",
    "TaskFlow",
    "TaskflowError",
    "Trigger",
    "UnknownTask",
    "Worker",
    "WorkerInfo",
    "WorkerSettings",
    "current_job",
    "live_workers",
)

__version__ = "0.1.0"
