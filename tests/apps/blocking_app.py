"""The app run by tests/test_monitor_process.py in worker subprocesses: ``stall`` blocks its
worker's event loop (``time.sleep``, no await) on its first attempt, past its 1 s timeout;
later attempts return at once. ``TEST_BLOCKING_APP`` names the app (and its queue)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import anyio

import taskflow
from tests.apps.shared import fast_worker, settings

NAME = os.environ.get("TEST_BLOCKING_APP", "blocking-test")
WORKER = fast_worker(monitor_interval=timedelta(milliseconds=500))

app = taskflow.TaskFlow(settings=settings(NAME, WORKER), name=NAME)


async def stall(seconds: float) -> int:
    """Blocks the loop for ``seconds`` on attempt 1; returns the attempt."""
    attempt = taskflow.current_job().attempt
    if attempt == 1:
        time.sleep(seconds)
    return attempt


app.task(name="stall", timeout=1, retries=1)(stall)


async def die_once() -> int:
    """Kills its worker process a second into attempt 1 (as the OOM killer would, after a
    heartbeat has listed the job); returns the attempt."""
    attempt = taskflow.current_job().attempt
    if attempt == 1:
        await anyio.sleep(1)
        os._exit(17)
    return attempt


app.task(name="die_once")(die_once)
