"""The app run by tests/test_worker_process.py in real worker subprocesses.

Started as ``python -m taskflow worker tests.apps.worker_app:app`` from the repository root.
Configured from the environment, so one module serves every test:

- ``TASKFLOW_TEST_REDIS_URL``: the Redis server (default ``redis://127.0.0.1:6379/0``);
- ``TEST_QUEUE``: the default queue of every task (each test uses its own);
- ``TEST_GRACE``: the worker's grace period in seconds (default 2).

Tasks record their effects in Redis under ``tfproc:`` keys (which expire after an hour) so
the test process can count how often each job started, which attempts ran, and how often
it completed. Job keys are chosen by the test and contain its queue name.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import anyio

import taskflow
from tests.apps.shared import fast_worker, record, settings

QUEUE = os.environ.get("TEST_QUEUE", "taskflow-test")
GRACE = float(os.environ.get("TEST_GRACE", "2"))


def started_key(job_key: str) -> str:
    """INCR'd when a job body starts."""
    return f"tfproc:started:{job_key}"


def attempts_key(job_key: str) -> str:
    """RPUSH'd with current_job().attempt when a job body starts."""
    return f"tfproc:attempts:{job_key}"


def done_key(job_key: str) -> str:
    """INCR'd when a job body completes (returns)."""
    return f"tfproc:done:{job_key}"


def log_key(queue: str) -> str:
    """RPUSH'd with the job key when a job on ``queue`` completes."""
    return f"tfproc:log:{queue}"


def duration_key(queue: str) -> str:
    """If set, overrides the sleep of jobs enqueued with ``override=True`` on ``queue``."""
    return f"tfproc:duration:{queue}"


def make_app(queue: str = QUEUE, *, grace: float = GRACE) -> taskflow.TaskFlow:
    """An unopened app with this module's tasks, whose default queue is ``queue``.

    Workers use the module-level ``app``; tests build their own with their queue to enqueue.
    """
    worker = fast_worker(grace_period=timedelta(seconds=grace))
    app = taskflow.TaskFlow(settings=settings(queue, worker))

    async def _started(job_key: str) -> taskflow.JobContext:
        job = taskflow.current_job()
        await record(app, [started_key(job_key)], {attempts_key(job_key): job.attempt})
        return job

    async def _done(job: taskflow.JobContext, job_key: str) -> None:
        await record(app, [done_key(job_key)], {log_key(job.queue): job_key})

    @app.task
    async def sleep_then_record(
        job_key: str,
        seconds: float,
        override: bool = False,
        retry_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Record the start, sleep, record the completion; return what ran.

        ``override``: sleep for the queue's ``duration_key`` instead, when it is set (a test
        shortens long jobs before a second worker re-runs them). ``retry_seconds``: sleep this
        long instead on any attempt after the first (a re-run after a lost worker).
        """
        job = await _started(job_key)
        duration = seconds
        if retry_seconds is not None and job.attempt > 1:
            duration = retry_seconds
        if override:
            raw = await app.redis.get(duration_key(job.queue))
            if raw is not None:
                duration = float(raw)
        await anyio.sleep(duration)
        await _done(job, job_key)
        return {"job_key": job_key, "attempt": job.attempt, "queue": job.queue, "pid": os.getpid()}

    return app


app = make_app()
