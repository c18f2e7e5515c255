"""The app run by tests/test_schedules_process.py in real worker subprocesses.

Started as ``python -m taskflow worker tests.apps.schedule_app:app`` from the repository
root. ``TEST_SCHEDULE_APP`` names the app (each test its own, so its schedules and queue are
its own); ``TASKFLOW_TEST_REDIS_URL`` is the Redis server.

Every job records ``[schedule, tick ms, missed ticks, pid]`` on the list ``ticks_key(app)``.
"""

from __future__ import annotations

import os
from datetime import timedelta

import anyio
import orjson

import taskflow
from tests.apps.shared import fast_worker, settings

NAME = os.environ.get("TEST_SCHEDULE_APP", "schedule-test")


def ticks_key(app_name: str) -> str:
    return f"tfsched:{app_name}:ticks"


app = taskflow.TaskFlow(settings=settings(NAME, fast_worker()), name=NAME)


async def _record() -> None:
    job = taskflow.current_job()
    assert job.tick is not None and job.schedule is not None
    entry = [job.schedule, int(job.tick.timestamp() * 1000), job.missed_ticks, os.getpid()]
    await app.redis.rpush(ticks_key(NAME), orjson.dumps(entry))  # type: ignore[misc]
    await app.redis.expire(ticks_key(NAME), 3600)


@app.task
async def tick() -> None:
    await _record()


@app.task
async def slow() -> None:
    await _record()
    await anyio.sleep(2.5)


second = timedelta(seconds=1)
app.schedule(tick, every=second, name="every")
app.schedule(tick, cron="* * * * * *", name="cron")  # six fields: every second
app.schedule(tick, every=second, name="coalesce", misfire="coalesce")
app.schedule(tick, every=second, name="skip", misfire="skip")
app.schedule(tick, every=second, name="all", misfire="all", max_catchup=3)
app.schedule(slow, every=second, name="slow", overlap=False)
