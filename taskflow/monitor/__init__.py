"""``app.monitor``: live queue health, workers and stuck jobs, read from Redis by any process.

See docs/operations.md.
"""

from .monitor import Monitor, QueueHealth, StuckJob, WorkerHealth

__all__ = ("Monitor", "QueueHealth", "StuckJob", "WorkerHealth")
