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

app = taskflow.TaskFlow(
    settings=taskflow.Settings(
        redis_url=os.environ.get("TASKFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        embedded="never",
        default_queue=os.environ.get("OUTAGE_QUEUE", "outage"),
        worker=taskflow.WorkerSettings(
            poll_interval=timedelta(milliseconds=10),
            lease=timedelta(seconds=2),
            heartbeat_interval=timedelta(milliseconds=500),
            reconnect_backoff_cap=timedelta(seconds=1),
        ),
    )
)


@app.task
async def double(i: int, seconds: float) -> int:
    await anyio.sleep(seconds)
    return i * 2
