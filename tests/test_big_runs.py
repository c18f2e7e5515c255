"""Big runs in bounded script calls (issue 11, item 5): a submission, a cancel and a wide
join are split into short calls, whatever is left half-way is finished by any worker, and
no call holds Redis for long (SLOWLOG after a 10,000-wide fan)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

import taskflow
import taskflow.runs
from taskflow._protocol import keys
from taskflow._protocol.scripts import Scripts
from tests.apps.shared import fast_worker
from tests.helpers import until
from tests.processes import redis_server

pytestmark = pytest.mark.asyncio


async def run_keys_left(redis: Redis, run_id: str) -> list[bytes]:
    return [k for k in keys.run_keys(run_id) if await redis.exists(k)]  # type: ignore[misc]


async def test_a_graph_wider_than_every_chunk_is_submitted_joined_and_read_whole(
    app: taskflow.TaskFlow,
) -> None:
    width = keys.SUBMIT_CHUNK + 2 * keys.SETTLE_BUDGET + 3  # > one HSET, > 2 release calls

    @app.task
    async def leaf(i: int) -> int:
        return i

    @app.task
    async def total(values: list[int]) -> int:
        return sum(values)

    async with app:
        graph = app.graph("wide-roots")
        leaves = [graph.add(leaf, i, name=f"l{i}") for i in range(width)]
        graph.add(total, leaves, name="total")  # > INLINE_PARENTS: its worker reads them
        run = await graph.submit()
        async with app.worker(concurrency=100):
            results = await run.wait(timeout=60)
        status = await run.status()  # > one HMGET per hash
    assert results["total"] == sum(range(width))
    assert len(status.nodes) == width + 1
    assert status.counts == {"succeeded": width + 1}
    assert {n.attempt for n in status.nodes.values()} == {1}
    assert status.nodes["total"].data_parents == [f"l{i}" for i in range(width)]


async def test_roots_a_dead_submitter_left_unreleased_are_released_by_a_worker(
    app: taskflow.TaskFlow, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    width = 2 * keys.SETTLE_BUDGET + 1

    @app.task
    async def leaf(i: int) -> int:
        return i

    async def died(*args: Any, **kwargs: Any) -> None:  # the submitter dies after opening
        return None

    async with app:
        graph = app.graph("half-submitted")
        for i in range(width):
            graph.add(leaf, i, name=f"l{i}")
        monkeypatch.setattr(taskflow.runs, "settle_run", died)
        run = await graph.submit()
        monkeypatch.undo()
        half = await run.status()
        assert half.counts == {"queued": keys.SETTLE_BUDGET, "pending": width - keys.SETTLE_BUDGET}
        assert await redis.zscore(keys.SETTLING, run.run_id) is not None
        async with app.worker(concurrency=50):  # its settler goes on, a lease later
            results = await run.wait(timeout=30)
    assert sorted(results.values()) == list(range(width))
    assert await redis.zscore(keys.SETTLING, run.run_id) is None


async def test_a_submit_that_fails_before_its_run_opens_leaves_nothing(
    app: taskflow.TaskFlow, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task
    async def leaf(i: int) -> int:
        return i

    seen: list[str] = []

    async def lost(self: Scripts, run_id: str, *args: Any, **kwargs: Any) -> None:
        seen.append(run_id)
        raise RedisConnectionError("Connection reset by peer")

    async with app:
        graph = app.graph("never-opened")
        first = graph.add(leaf, 0, name="first")
        graph.add(leaf, 1, name="second", after=[first])
        monkeypatch.setattr(Scripts, "submit_run", lost)
        with pytest.raises(taskflow.RedisUnavailable):
            await graph.submit()
        monkeypatch.undo()
        with pytest.raises(taskflow.RunNotFound):
            await app.run_handle(seen[0]).status()
    assert await run_keys_left(redis, seen[0]) == []


async def test_a_big_cancel_goes_in_chunks_and_a_dead_canceller_is_finished_by_a_worker(
    app: taskflow.TaskFlow, redis: Redis
) -> None:
    size = 2 * keys.CANCEL_BUDGET + 7
    ran: list[int] = []

    @app.task
    async def leaf(i: int) -> int:
        ran.append(i)
        return i

    async with app:
        graph = app.graph("big-cancel")
        first = graph.add(leaf, -1, name="first")
        for i in range(size):
            graph.add(leaf, i, name=f"l{i}", after=[first])
        run = await graph.submit()
        # another worker holds the first node; its children wait for it
        first_job = keys.node_job_id(run.run_id, 0)
        await redis.zrem(keys.queue(app.settings.default_queue), first_job)
        await redis.set(keys.in_progress(first_job), "elsewhere:1", px=60_000)
        # the canceller's first call, then it dies
        now = int(time.time() * 1000)
        assert await app.scripts.cancel_run(run.run_id, now, 60_000, 2_000) == (1, True)
        half = await run.status()
        cut = keys.CANCEL_BUDGET - 1
        assert half.counts == {"queued": 1, "cancelled": cut, "pending": size - cut}
        async with app.worker(concurrency=50):  # only its settler can end the others
            for _ in range(100):
                if (await run.status()).counts.get("cancelled") == size:
                    break
                await anyio.sleep(0.1)
        status = await run.status()
        assert await redis.zscore(keys.ABORT, first_job) is not None  # signalled at once
        await redis.zrem(keys.ABORT, first_job)
        await redis.delete(keys.in_progress(first_job))
    assert status.counts == {"queued": 1, "cancelled": size}  # the first is still held
    assert ran == []
    assert await redis.zscore(keys.SETTLING, run.run_id) is None
    assert await redis.hget(keys.run(run.run_id, "meta"), "cancel_at") is None  # type: ignore[misc]


async def test_the_handle_cancels_a_big_run_to_the_end(app: taskflow.TaskFlow) -> None:
    size = 3 * keys.CANCEL_BUDGET

    @app.task
    async def leaf(i: int) -> int:
        return i

    async with app:
        graph = app.graph("big-cancel-handle")
        first = graph.add(leaf, -1, name="first")
        for i in range(size):
            graph.add(leaf, i, name=f"l{i}", after=[first])
        run = await graph.submit()
        status = await run.cancel()
    assert status.state == "cancelled"
    assert status.counts == {"cancelled": size + 1}


async def test_a_big_run_is_deleted_with_unlink_when_its_retention_ends(
    make_app: Callable[..., taskflow.TaskFlow], redis: Redis
) -> None:
    app = make_app(run_retention=timedelta(seconds=1))
    size = keys.REAP_ABOVE + 1

    @app.task
    async def leaf(i: int) -> int:
        return i

    async with app:
        graph = app.graph("reaped")
        for i in range(size):
            graph.add(leaf, i, name=f"l{i}")
        run = await graph.submit()
        async with app.worker(concurrency=100):
            await run.wait(timeout=60)
            due = await redis.zscore(keys.REAPING, run.run_id)
            assert due is not None  # reaped, not left to expire in one long step
            ttl = await redis.pttl(keys.run(run.run_id, "timing"))
            assert ttl > keys.REAP_GRACE_MS - 60_000  # the backstop expiry

            async def reaped() -> bool:
                return not await run_keys_left(redis, run.run_id)

            await until(reaped, timeout=10)
        with pytest.raises(taskflow.RunNotFound):
            await run.status()
    assert await redis.zscore(keys.REAPING, run.run_id) is None


async def test_a_small_run_just_expires(app: taskflow.TaskFlow, redis: Redis) -> None:
    @app.task
    async def leaf(i: int) -> int:
        return i

    async with app, app.worker():
        graph = app.graph("small")
        graph.add(leaf, 1, name="one")
        run = await graph.submit()
        await run.wait(timeout=10)
    assert await redis.zscore(keys.REAPING, run.run_id) is None
    retention = app.settings.run_retention.total_seconds() * 1000
    assert 0 < await redis.pttl(keys.run(run.run_id, "meta")) <= retention


@pytest.mark.slow
async def test_no_call_holds_redis_long_on_a_10000_wide_fan_and_a_20000_node_cancel() -> None:
    # the old single calls took 44-180 ms here (release 177, wide join's start 45, status'
    # HGETALL 28, a cancel 900 at 50,000 nodes); the chunked ones take under 10 ms. The
    # bound is 5x that, since a busy machine stretches every call.
    bound_ms = 50
    with redis_server("--slowlog-log-slower-than", str(bound_ms * 1000)) as port:
        url = f"redis://127.0.0.1:{port}/0"
        settings = taskflow.Settings(
            redis_url=url, embedded="never", default_queue="wide", worker=fast_worker()
        )
        app = taskflow.TaskFlow(settings=settings, name="slowlog-test")

        @app.task
        async def seed() -> int:
            return 1

        @app.task
        async def leaf(seed: int, i: int) -> int:
            return seed + i

        @app.task
        async def join(values: list[int]) -> int:
            return sum(values)

        async with app:
            fan = app.graph("fan")
            root = fan.add(seed, name="root")
            leaves = [fan.add(leaf, root, i, name=f"leaf{i}") for i in range(10_000)]
            fan.add(join, leaves, name="join")
            run = await fan.submit()
            async with app.worker(concurrency=100):
                results = await run.wait(timeout=120)
            await run.status()
            big = app.graph("big")
            for i in range(20_000):
                big.add(seed, name=f"s{i}")
            await (await big.submit()).cancel()
            slow = await app.redis.slowlog_get(100)
    assert results["join"] == sum(range(1, 10_001))
    assert [(e["command"][:60], e["duration"] // 1000) for e in slow] == []
