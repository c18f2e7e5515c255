"""Queue operations against a real Redis: pause and resume, move and purge, racing busy
workers without losing or doubling a job."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import timedelta

import anyio
import pytest
from redis.asyncio import Redis

import taskflow
from taskflow._protocol import keys
from tests.apps.shared import fast_worker

pytestmark = pytest.mark.asyncio

TIMEOUT = 10


async def test_pause_stops_claims_and_resume_restarts_them(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    ran: list[int] = []

    @app.task
    async def work(i: int) -> int:
        ran.append(i)
        return i

    queue = app.queue(queue_name)
    try:
        async with app, app.worker():
            assert await (await work.enqueue(0)).result(timeout=TIMEOUT) == 0
            await queue.pause()
            assert await queue.is_paused()
            await anyio.sleep(0.2)  # one claim cycle
            jobs = [await work.enqueue(i) for i in range(1, 6)]
            await anyio.sleep(0.5)
            assert ran == [0]  # nothing claimed while paused
            assert {(await j.status()).value for j in jobs} == {"queued"}
            await queue.resume()
            assert [await j.result(timeout=TIMEOUT) for j in jobs] == [1, 2, 3, 4, 5]
    finally:
        await redis.srem(keys.PAUSED, queue_name)  # type: ignore[misc]


async def test_a_queue_paused_before_the_worker_starts_is_never_claimed_from(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    @app.task
    async def work() -> None: ...

    queue = app.queue(queue_name)
    try:
        async with app:
            await queue.pause()
            job = await work.enqueue()
            async with app.worker():
                await anyio.sleep(0.5)
                assert (await job.status()).value == "queued"
                await queue.resume()
                await job.result(timeout=TIMEOUT)
    finally:
        await redis.srem(keys.PAUSED, queue_name)  # type: ignore[misc]


async def test_move_reroutes_waiting_jobs_and_purge_deletes_old_ones(
    make_app: Callable[..., taskflow.TaskFlow], queue_name: str, redis: Redis
) -> None:
    app = make_app()
    target = queue_name + "-v2"

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    async with app:
        jobs = [await double.enqueue(i) for i in range(20)]
        later = await double.with_options(delay=timedelta(hours=1)).enqueue(99)
        assert await app.queue(queue_name).move(to=target, limit=5) == 5
        assert await redis.zcard(keys.queue(target)) == 5
        assert await app.queue(queue_name).move(to=target) == 16  # the rest, deferred included
        assert await redis.zcard(keys.queue(queue_name)) == 0
        async with app.worker(queues=[target]):
            assert [await j.result(timeout=TIMEOUT) for j in jobs] == [2 * i for i in range(20)]
        moved_later = app.job(later.job_id, queue=target)  # a handle looks in its queue
        assert (await moved_later.status()).value == "deferred"  # it kept its time
        fresh = [await double.enqueue(i) for i in range(3)]
        await app.queue(queue_name).move(to=target)
        purged = await app.queue(target).purge(older_than=timedelta(0))
        assert purged == 3  # the deferred one is not ready: it stays
        for job in fresh:
            with pytest.raises(taskflow.JobNotFound):
                await app.job(job.job_id, queue=target).result(timeout=1)
        assert await app.queue(target).purge(older_than=timedelta(hours=1)) == 0
        assert (await moved_later.status()).value == "deferred"
        with pytest.raises(taskflow.ConfigurationError, match="to='bad name!' is not a valid"):
            await app.queue(target).move(to="bad name!")
        with pytest.raises(taskflow.ConfigurationError, match="limit=0"):
            await app.queue(target).move(to=queue_name, limit=0)
        await redis.delete(keys.queue(target))


async def test_move_and_purge_racing_busy_workers_lose_and_double_nothing(
    make_app: Callable[..., taskflow.TaskFlow], queue_name: str
) -> None:
    app = make_app(worker=fast_worker(concurrency=20))
    other = queue_name + "-b"
    ran: Counter[int] = Counter()

    @app.task
    async def effect(i: int) -> None:
        ran[i] += 1
        await anyio.sleep(0.002)

    total = 1500
    async with app:
        handles = await effect.enqueue_many([((i,), {}) for i in range(total)])
        ids = {h.job_id: i for i, h in enumerate(handles)}
        async with AsyncExitStack() as stack:
            for _ in range(3):  # three busy workers on both queues
                await stack.enter_async_context(app.worker(queues=[queue_name, other]))
            await anyio.sleep(0.05)
            moved = await app.queue(queue_name).move(to=other, limit=400)
            await anyio.sleep(0.05)
            purged_a = await app.queue(queue_name).purge()
            purged_b = await app.queue(other).purge()
            with anyio.fail_after(30):
                while sum(ran.values()) < total - purged_a - purged_b:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            await anyio.sleep(0.3)
        statuses = Counter([(await app.job(j).status()).value for j in ids])
    assert max(ran.values()) == 1  # none ran twice
    assert sum(ran.values()) + purged_a + purged_b == total  # none lost: ran or purged
    assert statuses["succeeded"] == sum(ran.values())
    assert statuses["not_found"] == purged_a + purged_b
    assert moved > 0
