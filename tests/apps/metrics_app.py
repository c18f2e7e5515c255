"""The app of tests/test_metrics_export.py's subprocesses: loaded by ``taskflow metrics
export|show tests.apps.metrics_app:app`` and run by ``taskflow worker ... --metrics-port``.

Configured from the environment:

- ``TASKFLOW_TEST_REDIS_URL``: the Redis server (default ``redis://127.0.0.1:6379/0``);
- ``TEST_QUEUE``: the default queue of both tasks (each test uses its own).

Metrics are flushed every 100 ms and system samples taken every 200 ms.
"""

from __future__ import annotations

import os
from datetime import timedelta

import anyio

import taskflow
from taskflow.config import MetricsSettings
from tests.apps.shared import fast_worker, settings

QUEUE = os.environ.get("TEST_QUEUE", "taskflow-test")

METRICS = MetricsSettings(
    flush_interval=timedelta(milliseconds=100), system_interval=timedelta(milliseconds=200)
)


class Boom(Exception):
    """What ``boom`` raises."""


def make_app(queue: str = QUEUE) -> taskflow.TaskFlow:
    """An unopened app with the tasks ``work`` and ``boom``, whose default queue is ``queue``."""
    app = taskflow.TaskFlow(settings=settings(queue, fast_worker(), metrics=METRICS))

    @app.task
    async def work(seconds: float = 0.0) -> float:
        """Sleep ``seconds`` and return them."""
        await anyio.sleep(seconds)
        return seconds

    @app.task
    async def boom(message: str) -> None:
        """Fail at once (no retries)."""
        raise Boom(message)

    return app


app = make_app()
