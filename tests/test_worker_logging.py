"""The worker's log, read as an operator reads it: one line per job at DEBUG, a line per retry
with its delay, an ERROR with the traceback for every job that fails for good (unknown task,
corrupt payload and invalid arguments included), and a periodic summary at INFO."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from redis.asyncio import Redis

import taskflow
from taskflow._protocol import keys
from taskflow.metrics.summary import SummaryLogger
from tests.apps.shared import fast_worker
from tests.helpers import until

WORKER_LOG = "taskflow.worker"


class Declined(Exception):
    pass


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == WORKER_LOG and r.levelno == level]


async def logged(caplog: pytest.LogCaptureFixture, level: int, text: str, count: int = 1) -> None:
    """Wait until ``count`` records at ``level`` contain ``text``."""

    async def enough() -> bool:
        return sum(text in m for m in records(caplog, level)) >= count

    await until(enough, timeout=10)


@pytest.mark.asyncio
async def test_a_final_failure_is_logged_at_error_with_its_traceback_after_its_retries(
    make_app: Callable[..., taskflow.TaskFlow], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()

    @app.task(retries=1, backoff=taskflow.Backoff(base=0.01, cap=0.01, jitter=False))
    async def charge(card: str) -> None:
        raise Declined(f"card {card} declined")

    caplog.set_level(logging.INFO, logger=WORKER_LOG)
    async with app, app.worker():
        job = await charge.enqueue("4242")
        with pytest.raises(taskflow.TaskFailed):
            await job.result(timeout=10)
    [retry] = [m for m in records(caplog, logging.INFO) if "retrying" in m]
    assert retry == (
        f"job {job.job_id} charge attempt 1 failed, retrying in 0.01s: Declined: card 4242 declined"
    )
    [failure] = records(caplog, logging.ERROR)
    head, _, trace = failure.partition("\n")
    assert head == (
        f"job {job.job_id} charge failed on attempt 2: "
        "tests.test_worker_logging.Declined: card 4242 declined (after 2 failed attempts)"
    )
    assert trace.startswith("Traceback (most recent call last):")
    assert 'raise Declined(f"card {card} declined")' in trace


@pytest.mark.asyncio
async def test_an_unknown_task_an_invalid_argument_and_a_corrupt_payload_are_errors(
    make_app: Callable[..., taskflow.TaskFlow], caplog: pytest.LogCaptureFixture, redis: Redis
) -> None:
    # no rolling-deploy wait: a task this worker lacks fails at once
    worker_app = make_app(worker=fast_worker(unknown_task_window=timedelta(0)))
    sender = make_app()

    @worker_app.task
    async def resize(width: int) -> int:
        return width

    # the sender's view of the tasks: one the worker does not know, one with other types
    @sender.task(name="resize")
    async def resize_as_sent(width: str) -> str:
        return width

    @sender.task
    async def thumbnail() -> None:
        pass

    caplog.set_level(logging.INFO, logger=WORKER_LOG)
    async with sender, worker_app:
        unknown = await thumbnail.enqueue()
        invalid = await resize_as_sent.enqueue("wide")
        corrupt = f"corrupt-{uuid.uuid4().hex}"
        queue = worker_app.settings.default_queue
        await redis.set(keys.job(corrupt), b"\x00not a job", ex=60)
        await redis.zadd(keys.queue(queue), {corrupt: 0})
        async with worker_app.worker():
            for job in (unknown, invalid):
                with pytest.raises(taskflow.TaskFailed):
                    await job.result(timeout=10)
            await logged(caplog, logging.ERROR, "failed on attempt 1", count=3)
    errors = {m.split(" ", 2)[1]: m for m in records(caplog, logging.ERROR)}
    assert errors[unknown.job_id].startswith(
        f"job {unknown.job_id} thumbnail failed on attempt 1: taskflow.UnknownTask: "
        "no task named 'thumbnail' on this worker; registered: resize"
    )
    assert re.match(
        rf"job {invalid.job_id} resize failed on attempt 1: taskflow.errors.ArgumentError: "
        r"resize\(\): argument 'width': input should be a valid integer",
        errors[invalid.job_id],
    )
    assert f"job {corrupt} ? failed on attempt 1: taskflow.CorruptPayload" in errors[corrupt]


@pytest.mark.asyncio
async def test_each_job_start_and_end_at_debug_only(
    app: taskflow.TaskFlow, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task
    async def ping() -> str:
        return "pong"

    caplog.set_level(logging.DEBUG, logger=WORKER_LOG)
    async with app, app.worker():
        job = await ping.enqueue()
        assert await job.result(timeout=10) == "pong"
    debug = records(caplog, logging.DEBUG)
    assert f"job {job.job_id} ping started (queue {job.queue}, attempt 1)" in debug
    assert any(re.fullmatch(rf"job {job.job_id} ping succeeded in \d+\.\d{{3}}s", m) for m in debug)
    assert not [m for m in records(caplog, logging.INFO) if job.job_id in m]


@pytest.mark.asyncio
async def test_the_summary_line_counts_jobs_failures_and_run_time_percentiles(
    make_app: Callable[..., taskflow.TaskFlow], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(worker=taskflow.WorkerSettings(summary_interval=timedelta(seconds=0.3)))

    @app.task
    async def work(fail: bool) -> None:
        if fail:
            raise Declined("no")

    caplog.set_level(logging.INFO, logger=WORKER_LOG)
    async with app, app.worker() as worker:
        jobs = [await work.enqueue(i == 0) for i in range(5)]
        for job in jobs:
            await job.status()  # enqueued; the worker runs them
        await logged(caplog, logging.INFO, "4 succeeded")
    [line] = [m for m in records(caplog, logging.INFO) if "4 succeeded" in m]
    assert re.fullmatch(
        rf"worker {worker.id}: last \d+s: 5 job attempts \(4 succeeded, 1 failed\), "
        r"run p50 \d+ µs p95 \d+ µs; 0 running",
        line,
    ), line


def test_summary_wording() -> None:
    summary = SummaryLogger(300)
    assert summary.line("w-1", 2).endswith(": no jobs; 2 running")
    with pytest.raises(ValueError, match="summary interval must be > 0 seconds, got 0"):
        SummaryLogger(0)
    with pytest.raises(ValueError, match="summary_interval must be >= 0"):
        taskflow.WorkerSettings(summary_interval=timedelta(seconds=-1))
    assert taskflow.WorkerSettings(summary_interval="10m").summary_interval == timedelta(minutes=10)
