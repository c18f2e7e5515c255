"""Schedules: cron and interval jobs fired by every worker, each tick enqueued once.

Declare them in code with ``@app.periodic(cron=...)`` or ``app.schedule(task, every=...)``;
control them from any process with ``app.schedules`` (add, pause, resume, run_now, list).
See docs/schedules.md.
"""

from .manager import Schedules, build_schedule
from .model import Misfire, Schedule, ScheduleInfo
from .ticker import ScheduleTicker
from .triggers import Cron, Every

__all__ = (
    "Cron",
    "Every",
    "Misfire",
    "Schedule",
    "ScheduleInfo",
    "ScheduleTicker",
    "Schedules",
    "build_schedule",
)
