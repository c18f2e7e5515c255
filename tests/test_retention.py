"""Retention: after a workload ends and its retention has passed, Redis holds what it held
before (a private server, retention in seconds): results, dead letters and their error
groups, graph runs, metrics buckets, system samples, waiters' notify sets, the worker's
registry entry, the monitor's turn and events all go."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from redis.asyncio import Redis

import taskflow
from taskflow.config import MetricsSettings, Resolution
from tests.apps.shared import fast_worker
from tests.processes import redis_server

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SECOND = timedelta(seconds=1)


async def test_the_database_returns_to_its_keys_after_the_retention() -> None:
    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        metrics = MetricsSettings(
            flush_interval=timedelta(milliseconds=200),
            system_interval=SECOND,
            system_retention=2 * SECOND,
            resolutions=(Resolution(bucket=SECOND, retention=2 * SECOND),),
        )
        settings = taskflow.Settings(
            redis_url=url,
            embedded="never",
            default_queue="retention",
            result_ttl=5 * SECOND,  # read back within 5 s even on a busy machine
            run_retention=SECOND,
            dead_letter_ttl=SECOND,
            event_retention=SECOND,
            metrics=metrics,
            worker=fast_worker(monitor_interval=SECOND / 2),
        )
        app = taskflow.TaskFlow(settings=settings, name="retention")

        @app.task(retries=0)
        async def work(i: int) -> int:
            if i % 100 == 0:
                raise ValueError(f"job {i} fails")
            return i

        raw = Redis.from_url(url)
        try:
            await raw.set("theirs", "a key that was there before")
            baseline = sorted(await raw.keys("*"))
            async with app, app.worker():
                jobs = await work.enqueue_many([((i,), {}) for i in range(1000)])
                failed = 0

                limit = anyio.CapacityLimiter(20)  # within the connection pool

                async def outcome(job: taskflow.JobHandle[int]) -> None:
                    nonlocal failed
                    async with limit:
                        try:
                            await job.result(timeout=20)
                        except taskflow.TaskFailed:
                            failed += 1

                # waiting on many at once: one by one, the last would come after their 1 s
                # results had expired on a busy machine
                async with anyio.create_task_group() as tg:
                    for job in jobs:
                        tg.start_soon(outcome, job)
                for r in range(20):
                    graph = app.graph(f"run-{r}")
                    a = graph.add(work, 1, name="a")
                    b = graph.add(work, a, name="b")
                    graph.add(work, b, name="c")
                    await (await graph.submit()).wait(timeout=20)
                during = await raw.dbsize()
            with anyio.move_on_after(15):
                while (left := sorted(await raw.keys("*"))) != baseline:  # noqa: ASYNC110
                    await anyio.sleep(0.5)
            ttls = {k: await raw.pttl(k) for k in left}
        finally:
            await raw.aclose()
    assert failed == 10 and during > 100
    assert left == baseline == [b"theirs"], ttls
