"""The app run by tests/test_metrics.py in real worker subprocesses.

Started as ``python -m taskflow worker tests.apps.metrics_worker_app:app`` from the repository
root, configured from the environment:

- ``TASKFLOW_TEST_REDIS_URL``: the Redis server (default ``redis://127.0.0.1:6379/0``);
- ``TEST_QUEUE``: the default queue;
- ``TEST_TASK``: the name of the one task (each test uses its own, since the metric buckets
  are shared by every test).

Metrics are flushed every 100 ms. The task returns the wall time of its own body, measured
by itself, so the test can compare the stored percentiles with exact ones; a failing call
puts that time in its error message.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import anyio

import taskflow
from taskflow.config import MetricsSettings
from tests.apps.shared import fast_worker, settings

QUEUE = os.environ.get("TEST_QUEUE", "taskflow-test")
TASK = os.environ.get("TEST_TASK", "metrics_sleep")

METRICS = MetricsSettings(
    flush_interval=timedelta(milliseconds=100), system_interval=timedelta(milliseconds=200)
)


class MeasuredFailure(Exception):
    """Raised by a failing call; its message is the body's wall time, repr'd."""


def make_app(queue: str = QUEUE, task: str = TASK) -> taskflow.TaskFlow:
    """An unopened app whose one task is named ``task``; the default queue is ``queue``."""
    app = taskflow.TaskFlow(settings=settings(queue, fast_worker(), metrics=METRICS))

    @app.task(name=task)
    async def measured_sleep(seconds: float, fail: bool = False) -> dict[str, float | int]:
        """Sleep ``seconds``; return (or fail with) the body's own wall time."""
        started = time.perf_counter()
        await anyio.sleep(seconds)
        elapsed = time.perf_counter() - started
        if fail:
            raise MeasuredFailure(repr(elapsed))
        return {"elapsed": elapsed, "pid": os.getpid()}

    return app


app = make_app()
