"""Dead letters against a real Redis: a job that fails for good is kept with its error,
attempts and arguments; it can be listed, read, retried (the same job, once fixed) and
purged."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from redis.asyncio import Redis

import taskflow
from taskflow._protocol import keys
from tests.apps.shared import fast_worker

pytestmark = pytest.mark.asyncio

TIMEOUT = 10


async def test_a_job_that_fails_for_good_is_kept_retried_once_fixed_and_purged(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()
    broken = {"yes": True}

    @app.task(retries=1, backoff=taskflow.Backoff(base=0.01, jitter=False))
    async def charge(order: str, cents: int) -> str:
        if broken["yes"]:
            raise ValueError(f"gateway refused {order}")
        return f"{order} charged {cents}"

    @app.task
    async def fine() -> str:
        return "ok"

    async with app, app.worker():
        job = await charge.enqueue("o-1", cents=250)
        with pytest.raises(taskflow.TaskFailed):
            await job.result(timeout=TIMEOUT)
        assert await (await fine.enqueue()).result(timeout=TIMEOUT) == "ok"  # not kept
        [letter] = await app.dead_letters.list()
        assert letter.job_id == job.job_id and letter.task == "charge"
        assert letter.reason == "ValueError"
        assert letter.message.startswith("gateway refused o-1")
        assert "Traceback" in letter.error["traceback"]
        assert letter.attempts == 2
        call = (letter.args, letter.kwargs)  # as stored: positional or by name
        assert call in ((["o-1"], {"cents": 250}), ([], {"order": "o-1", "cents": 250}))
        assert letter.enqueued <= letter.started <= letter.failed
        assert (await app.dead_letters.get(job.job_id)).queue == charge.options.queue
        assert await app.dead_letters.list(task="other") == []
        broken["yes"] = False  # the gateway is fixed: replay
        again = await app.dead_letters.retry(job.job_id)
        assert again.job_id == job.job_id
        assert await job.result(timeout=TIMEOUT) == "o-1 charged 250"  # the same handle
        assert await app.dead_letters.count() == 0
        with pytest.raises(taskflow.JobNotFound):
            await app.dead_letters.retry(job.job_id)
        broken["yes"] = True
        doomed = [await charge.enqueue(f"o-{i}", cents=1) for i in range(3)]
        for d in doomed:
            with pytest.raises(taskflow.TaskFailed):
                await d.result(timeout=TIMEOUT)
        assert await app.dead_letters.purge(older_than=timedelta(hours=1)) == 0
        assert await app.dead_letters.purge(task="charge") == 3
        assert await app.dead_letters.list() == []


async def test_corrupt_and_unknown_jobs_are_dead_letters_too_and_retry_elsewhere(
    named_app: Callable[..., taskflow.TaskFlow], redis: Redis
) -> None:
    app = named_app(worker=fast_worker(unknown_task_window=timedelta(0)))

    @app.task
    async def echo(x: int) -> int:
        return x

    queue = app.settings.default_queue
    corrupt = uuid.uuid4().hex
    await redis.set(keys.job(corrupt), b"\x80pickle", ex=60)
    await redis.zadd(keys.queue(queue), {corrupt: int(time.time() * 1000)})
    async with app, app.worker(queues=[queue, queue + "-b"]):
        with pytest.raises(taskflow.TaskFailed):
            await app.job(corrupt).result(timeout=TIMEOUT)
        unknown = await app.enqueue_task(app.get_task("echo"), (1,), {})
        await unknown.result(timeout=TIMEOUT)
        letter = await app.dead_letters.get(corrupt)
        assert letter.reason == "taskflow.CorruptPayload" and letter.args == []
        # a job for a task the worker never had, left to fail: its call is kept whole
        other_app = taskflow.TaskFlow(settings=app.settings, name=app.name)  # newer code
        resize = other_app.task(name="resize")(_resize)
        async with other_app:
            lost = await resize.with_options(queue=queue).enqueue(7)
        with pytest.raises(taskflow.TaskFailed) as failed:
            await app.job(lost.job_id, queue=queue).result(timeout=TIMEOUT)
        assert failed.value.kind is taskflow.FailureKind.UNKNOWN_TASK
        kept = await app.dead_letters.get(lost.job_id)
        assert kept.reason == "taskflow.UnknownTask"
        assert (kept.args, kept.kwargs) in (([7], {}), ([], {"width": 7}))
        # the task ships: replay it on another queue, where the new code's worker runs
        app.task(name="resize")(_resize)
        moved = await app.dead_letters.retry(lost.job_id, queue=queue + "-b")
        assert moved.queue == queue + "-b"
    async with app, app.worker(queues=[queue + "-b"]):
        assert await moved.result(timeout=TIMEOUT) == 14
    await redis.delete(keys.queue(queue + "-b"))


async def _resize(width: int) -> int:
    return width * 2


async def test_no_dead_letters_when_their_ttl_is_zero(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app(dead_letter_ttl=timedelta(0))

    @app.task
    async def boom() -> None:
        raise RuntimeError("boom")

    async with app, app.worker():
        with pytest.raises(taskflow.TaskFailed):
            await (await boom.enqueue()).result(timeout=TIMEOUT)
        assert await app.dead_letters.count() == 0


async def test_a_burst_of_one_error_is_one_group(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()

    @app.task(retries=0)
    async def sync(account: int) -> None:
        if account % 2:
            raise TimeoutError(f"account {account}: provider timed out")
        raise KeyError(account)

    async with app, app.worker():
        jobs = [await sync.enqueue(i) for i in range(30)]
        for job in jobs:
            with pytest.raises(taskflow.TaskFailed):
                await job.result(timeout=TIMEOUT)
        groups = await app.dead_letters.errors()
    assert [(g.task, g.error_type, g.count) for g in groups] == [
        ("sync", "KeyError", 15),
        ("sync", "TimeoutError", 15),
    ]
    timeout = groups[1]
    assert timeout.first_seen <= timeout.last_seen
    assert "provider timed out" in timeout.sample and "Traceback" in timeout.sample
