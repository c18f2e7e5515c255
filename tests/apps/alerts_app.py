"""The app run by tests/test_alerts_cluster.py in real worker subprocesses.

Started as ``python -m taskflow worker tests.apps.alerts_app:app --queue <q>`` from the
repository root, configured from the environment:

- ``TASKFLOW_TEST_REDIS_URL``: the Redis server (default ``redis://127.0.0.1:6379/0``);
- ``TEST_QUEUE``: the default queue (the one the workers serve);
- ``TEST_ALERT_RULES``: a JSON list of alert rules as a rules file holds them (``for``,
  ``cooldown`` as ``"1s"``, channels as dicts with ``type``), e.g. webhooks pointing at
  the recording server of the test process; none when unset;
- ``TEST_ALERT_INTERVAL``: seconds between alert evaluations (default 0.3).

The one task, ``alert_noop``, is never run by these workers: the tests enqueue it onto
queues nobody serves, to make ``queue_depth`` conditions true.
"""

from __future__ import annotations

import os
from datetime import timedelta

import orjson

import taskflow
from taskflow.alerts import AlertRule
from tests.apps.shared import fast_worker, settings

QUEUE = os.environ.get("TEST_QUEUE", "taskflow-test")
INTERVAL = float(os.environ.get("TEST_ALERT_INTERVAL", "0.3"))


def make_app(queue: str = QUEUE, rules: str | None = None) -> taskflow.TaskFlow:
    """An unopened app whose default queue is ``queue``, with the rules of the JSON text
    ``rules`` (default: ``TEST_ALERT_RULES``) registered."""
    worker = fast_worker(alert_interval=timedelta(seconds=INTERVAL))
    app = taskflow.TaskFlow(settings=settings(queue, worker))

    @app.task(name="alert_noop")
    async def alert_noop(n: int = 0) -> int:
        return n

    text = os.environ.get("TEST_ALERT_RULES", "[]") if rules is None else rules
    for item in orjson.loads(text):
        app.alerts.add_rule(AlertRule.model_validate(item))
    return app


app = make_app()
