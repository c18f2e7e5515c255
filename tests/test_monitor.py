"""app.monitor and taskflow status against a real Redis: queue counts, workers, stuck jobs
told apart, and the status screen (once and --watch)."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest
from redis.asyncio import Redis
from rich.console import Console

import taskflow
from taskflow._protocol import keys
from taskflow.cli.status import _watch, render, snapshot
from taskflow.cli.worker import _check

pytestmark = pytest.mark.asyncio

TIMEOUT = 10


async def test_queue_health_and_workers(
    make_app: Callable[..., taskflow.TaskFlow], queue_name: str
) -> None:
    app = make_app()
    release = anyio.Event()

    @app.task
    async def slow(i: int) -> int:
        await release.wait()
        return i

    @app.task
    async def boom() -> None:
        raise ValueError("boom")

    async with app:
        with pytest.raises(taskflow.TaskFailed):
            async with app.worker():
                await (await boom.enqueue()).result(timeout=TIMEOUT)
        async with app.worker(concurrency=2):
            jobs = [await slow.enqueue(i) for i in range(5)]
            await slow.with_options(delay=timedelta(hours=1)).enqueue(99)
            await anyio.sleep(1.2)  # two claimed, and a heartbeat that says so
            [health] = await app.monitor.queues([queue_name])
            [worker] = await app.monitor.workers()
            release.set()
            assert [await j.result(timeout=TIMEOUT) for j in jobs] == list(range(5))
    assert (health.ready, health.running, health.deferred) == (3, 2, 1)
    assert health.oldest_ready_age > 0.5 and health.workers == 1 and not health.paused
    assert health.failed_per_min > 0 and health.completed_per_min >= health.failed_per_min
    assert worker.queues == [queue_name] and worker.running == 2 and worker.concurrency == 2
    assert worker.version == taskflow.__version__ and worker.last_heartbeat < 2
    assert worker.loop_lag < 1


async def test_stuck_jobs_are_told_apart_and_wait(
    make_app: Callable[..., taskflow.TaskFlow], queue_name: str, redis: Redis
) -> None:
    old, new = make_app(), make_app()

    @old.task
    async def ping() -> str:
        return "pong"

    @new.task
    async def resize(width: int) -> int:  # only in the new code
        return width * 2

    new.task(name="ping")(ping.fn)
    unserved, paused = queue_name + "-nobody", queue_name + "-paused"
    try:
        async with old, new, old.worker(queues=[queue_name, paused]):
            await old.queue(paused).pause()
            waiting = await resize.enqueue(21)
            await ping.with_options(queue=unserved).enqueue()
            await ping.with_options(queue=paused).enqueue()
            await anyio.sleep(1.2)
            stuck = {s.kind: s for s in await old.monitor.stuck([queue_name, unserved, paused])}
            assert set(stuck) == {"no_task", "no_worker", "paused"}
            assert stuck["no_task"].task == "resize" and stuck["no_task"].job_id == waiting.job_id
            assert "registers task 'resize'" in stuck["no_task"].why
            assert stuck["no_worker"].queue == unserved and stuck["no_worker"].count == 1
            assert "paused" in stuck["paused"].why
            assert (await waiting.status()).value == "queued"  # it waits, it is not failed
            async with new.worker(queues=[queue_name]):  # a worker that has the task
                assert await waiting.result(timeout=TIMEOUT) == 42
    finally:
        await redis.srem(keys.PAUSED, paused)  # type: ignore[misc]
        await redis.delete(keys.queue(unserved), keys.queue(paused))


async def test_the_status_screen_once_and_watching(
    make_app: Callable[..., taskflow.TaskFlow], queue_name: str
) -> None:
    app = make_app()

    @app.task
    async def boom() -> None:
        raise ValueError("kaboom")

    @app.periodic(every=timedelta(hours=1), name="hourly-report")
    async def report() -> None: ...

    async with app, app.worker():
        with pytest.raises(taskflow.TaskFailed):
            await (await boom.enqueue()).result(timeout=TIMEOUT)
        await anyio.sleep(0.7)
        out = Console(file=io.StringIO(), width=200, record=True)
        out.print(render(await snapshot(app)))
        text = out.export_text()
        live = Console(file=io.StringIO(), width=200, force_terminal=True, record=True)
        viewer = taskflow.TaskFlow(settings=app.settings, name=app.name)  # another process
        with anyio.move_on_after(1.5):
            await _watch(viewer, live, 0.3)
    for part in ("queues", queue_name, "workers", "schedules", "hourly-report", "every 1h"):
        assert part in text, part
    assert "recent failures" in text and "ValueError: kaboom" in text
    assert "errors" in text and "boom" in text
    watched = live.export_text()
    assert watched.count("recent failures") >= 1 and queue_name in watched


async def test_check_fails_over_max_depth_and_max_lag(
    make_app: Callable[..., taskflow.TaskFlow],
    queue_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = make_app()

    @app.task
    async def work() -> None: ...

    async with app:
        for _ in range(3):
            await work.enqueue()
    checker = make_app()
    assert await _check(checker, [], None, {queue_name: 2}) == 1
    assert f"{queue_name}: 3 ready job(s) OVER --max-depth 2" in capsys.readouterr().out
    checker = make_app()
    assert await _check(checker, [], timedelta(seconds=5), {queue_name: 3}) == 0
    assert f"{queue_name}: 3 ready job(s) ok" in capsys.readouterr().out
    async with app:
        await app.queue(queue_name).purge()
