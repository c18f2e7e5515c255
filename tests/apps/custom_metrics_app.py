"""The app run by tests/test_custom_metrics.py in real worker subprocesses.

Started as ``python -m taskflow worker tests.apps.custom_metrics_app:app`` from the
repository root, configured from the environment:

- ``TASKFLOW_TEST_REDIS_URL``: the Redis server;
- ``TEST_QUEUE``: the default queue, also the app's name (so its metric keys are the test's).

Metrics are flushed every 100 ms. ``record(times, values)`` increments the counter
``calls_total{model}`` ``times`` times, observes each of ``values`` on the histogram
``latency_seconds{model}`` and sets the gauge ``quota_remaining`` to the last value.
"""

from __future__ import annotations

import os
from datetime import timedelta

import taskflow
from taskflow.config import MetricsSettings
from tests.apps.shared import fast_worker, settings

QUEUE = os.environ.get("TEST_QUEUE", "taskflow-test-custom")

METRICS = MetricsSettings(flush_interval=timedelta(milliseconds=100))


def make_app(queue: str = QUEUE) -> taskflow.TaskFlow:
    """An unopened app named and queued ``queue``, with its metrics and one task."""
    app = taskflow.TaskFlow(settings=settings(queue, fast_worker(), metrics=METRICS), name=queue)
    calls = app.metrics.counter("calls_total", "Calls to the model API.", ("model",))
    latency = app.metrics.histogram("latency_seconds", "Model API latency.", ("model",))
    quota = app.metrics.gauge("quota_remaining", "Calls left in the API's quota.")

    @app.task
    async def record(model: str, times: int, values: list[float]) -> int:
        for _ in range(times):
            calls.labels(model=model).inc()
        for value in values:
            latency.labels(model=model).observe(value)
        if values:
            quota.set(values[-1])
        return os.getpid()

    return app


app = make_app()
