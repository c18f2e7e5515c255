"""The app run by tests/test_poison.py in worker subprocesses: ``crash`` kills its worker
process on every attempt (a poison job), ``fine`` just returns. ``TEST_POISON_APP`` names
the app (and its queue)."""

from __future__ import annotations

import os

import taskflow
from tests.apps.shared import fast_worker, settings

NAME = os.environ.get("TEST_POISON_APP", "poison-test")

app = taskflow.TaskFlow(settings=settings(NAME, fast_worker()), name=NAME)


@app.task(retries=0)
async def crash() -> None:
    os._exit(17)  # the whole worker dies, as a segfault or the OOM killer would do it


@app.task
async def fine(i: int) -> int:
    return i
