"""The app run by tests/test_outage.py: plain jobs on a private Redis that gets restarted.

Configured from the environment: ``TASKFLOW_TEST_REDIS_URL`` (the private server) and
``OUTAGE_QUEUE``. The task touches nothing but its own arguments, so it never needs Redis
while Redis is down.
"""

from __future__ import annotations

import os
from datetime import timedelta

import anyio

import taskflow
from tests.apps.shared import REDIS_URL, fast_worker

app = taskflow.TaskFlow(
    settings=taskflow.Settings(
        redis_url=REDIS_URL,
        embedded="never",
        default_queue=os.environ.get("OUTAGE_QUEUE", "outage"),
        worker=fast_worker(reconnect_backoff_cap=timedelta(seconds=1)),
    )
)


@app.task
async def double(i: int, seconds: float) -> int:
    await anyio.sleep(seconds)
    return i * 2
