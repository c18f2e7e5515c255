"""``app.monitor``: live queue health, workers and stuck jobs, read from Redis by any process.

See docs/operations.md.
"""

from .monitor import Monitor, QueueHealth, Recovery, StuckJob, WorkerHealth
from .sweep import MonitorService, SweepReport, sweep

__all__ = (
    "Monitor",
    "MonitorService",
    "QueueHealth",
    "Recovery",
    "StuckJob",
    "SweepReport",
    "WorkerHealth",
    "sweep",
)
