"""What the test apps share: the test Redis, fast worker settings, and effect recording.

Imported by the apps in worker subprocesses too, so it imports nothing from pytest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import taskflow

REDIS_URL = os.environ.get("TASKFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

KEY_TTL = 3600  # seconds the effect keys live; nothing is ever flushed


def fast_worker(**overrides: Any) -> taskflow.WorkerSettings:
    """Short polls, leases and heartbeats, so a test sees a lost worker within seconds."""
    return taskflow.WorkerSettings(
        poll_interval=timedelta(milliseconds=10),
        lease=timedelta(seconds=2),
        heartbeat_interval=timedelta(milliseconds=500),
        **overrides,
    )


def settings(queue: str, worker: taskflow.WorkerSettings, **overrides: Any) -> taskflow.Settings:
    """The test Redis (never an embedded server), results, jobs and dead letters kept for an
    hour."""
    base: dict[str, Any] = {
        "redis_url": REDIS_URL,
        "embedded": "never",
        "default_queue": queue,
        "result_ttl": timedelta(hours=1),
        "job_ttl": timedelta(hours=1),
        "dead_letter_ttl": timedelta(hours=1),
        "worker": worker,
    }
    return taskflow.Settings(**(base | overrides))


async def record(
    app: taskflow.TaskFlow, incr: Sequence[str], push: Mapping[str, str | float] | None = None
) -> None:
    """In one round trip: INCR the ``incr`` keys, RPUSH each value of ``push`` on its key,
    then make every key expire after KEY_TTL."""
    push = push or {}
    async with app.redis.pipeline(transaction=False) as pipe:
        for key in incr:
            pipe.incr(key)
        for key, value in push.items():
            pipe.rpush(key, value)
        for key in [*incr, *push]:
            pipe.expire(key, KEY_TTL)
        await pipe.execute()
