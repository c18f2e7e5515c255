"""app.monitor and taskflow status against a real Redis: queue counts, workers, stuck jobs
told apart, and the status screen (once and --watch)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import orjson
import pytest
from redis.asyncio import Redis
from rich.console import Console

import taskflow
from taskflow._clock import now_ms
from taskflow._protocol import keys
from taskflow.alerts.rules import Condition
from taskflow.alerts.sources import Measurer
from taskflow.cli.status import Snapshot, _watch, render, snapshot
from taskflow.cli.worker import _check
from taskflow.monitor import MonitorService, Recovery, WorkerHealth, sweep
from tests.apps.shared import fast_worker

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


async def test_a_pass_reports_a_dead_workers_jobs_once_and_forgets_it(
    named_app: Callable[..., taskflow.TaskFlow], redis: Redis
) -> None:
    app = named_app()
    async with app:
        now = now_ms()
        will = {
            "id": "gone-1",
            "host": "h",
            "pid": 7,
            "beat_ms": now - 5000,
            "jobs": [{"id": "j1", "queue": "q", "attempt": 2, "task": "resize"}],
        }
        # a worker whose record lapsed: its registry entry and its will remain
        await redis.zadd(app.keys.workers, {"gone-1": now - 5000})
        await redis.set(app.keys.will("gone-1"), orjson.dumps(will), px=60_000)
        first = await sweep(app)
        again = await sweep(app)
        [event] = await app.monitor.events(kinds=["worker_died"])
        assert await redis.zscore(app.keys.workers, "gone-1") is None
        assert await redis.exists(app.keys.will("gone-1")) == 0
    assert first.dead_workers == ["gone-1"] and again.dead_workers == []
    assert event["last_beat_ms"] == now - 5000 and event["jobs"][0]["task"] == "resize"


async def test_a_pass_removes_dead_letter_entries_and_error_groups_past_retention(
    named_app: Callable[..., taskflow.TaskFlow], redis: Redis
) -> None:
    app = named_app(dead_letter_ttl=timedelta(seconds=60))
    async with app:
        now = now_ms()
        await redis.zadd(app.keys.dead_letters, {"old": now - 120_000, "new": now})
        group = "resize\x1fValueError"
        old_fields = {f"{group}:{p}": "1" for p in ("n", "first", "sample")}
        await redis.hset(  # type: ignore[misc]
            app.keys.error_groups, mapping={**old_fields, f"{group}:last": now - 90_000}
        )
        fresh = {"ok\x1fE:n": 1, "ok\x1fE:last": now}
        await redis.hset(app.keys.error_groups, mapping=fresh)  # type: ignore[misc]
        report = await sweep(app)
        [event] = await app.monitor.events(kinds=["retention"])
        assert await redis.zrange(app.keys.dead_letters, 0, -1) == [b"new"]
        left = await redis.hkeys(app.keys.error_groups)  # type: ignore[misc]
        assert sorted(left) == [b"ok\x1fE:last", b"ok\x1fE:n"]
    assert report.removed == {"dead_letters": 1, "error_groups": 1} == event["removed"]


async def test_workers_share_one_monitor_pass_per_interval(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    interval = 0.25
    # monitor=False: the app adds no monitor of its own, so these three are all there are
    worker = fast_worker(monitor_interval=timedelta(seconds=interval), monitor=False)
    app = named_app(worker=worker)
    services = [MonitorService() for _ in range(3)]
    async with app:
        async with (
            app.worker(services=[services[0]]),
            app.worker(services=[services[1]]),
            app.worker(services=[services[2]]),
        ):
            started = anyio.current_time()
            await anyio.sleep(3.0)
            elapsed = anyio.current_time() - started
    passes = [s.passes for s in services]
    # one pass per interval between them (a turn is claimed up to 1.25 intervals after the
    # last), not one per worker per interval
    assert elapsed / interval / 2 <= sum(passes) <= elapsed / interval + 2, passes


async def test_stuck_jobs_is_an_alert_metric(
    named_app: Callable[..., taskflow.TaskFlow], redis: Redis
) -> None:
    app = named_app()
    paused = f"{app.name}-held"

    @app.task(queue=paused)
    async def ping() -> None: ...

    try:
        async with app:
            await app.queue(paused).pause()
            await ping.enqueue()
            await ping.enqueue()
            condition = Condition(metric="stuck_jobs", queue=paused, op=">", threshold=0)
            value = await Measurer(app).value(condition)
            anywhere = await Measurer(app).value(
                Condition(metric="stuck_jobs", op=">", threshold=0)
            )
    finally:
        await redis.srem(keys.PAUSED, paused)  # type: ignore[misc]
        await redis.delete(keys.queue(paused))
    assert value == 2 and anywhere == 2  # the app's queues, without queue=


async def test_the_status_screen_shows_blocked_workers_and_recoveries() -> None:
    now = datetime.now(UTC)
    worker = WorkerHealth(
        id="w-1", host="h", pid=1, queues=["q"], concurrency=4, running=1, loop_lag=0.0,
        last_heartbeat=0.5, started=now, version="1", counts={}, blocked_for=12.0,
    )  # fmt: skip
    recovery = Recovery(
        job_id="j-9", queue="q", task="resize", attempt=2, dead_worker="w-0", worker="w-1",
        last_heartbeat=now, restarted=now, downtime=2.5,
    )  # fmt: skip
    screen = Snapshot(
        queues=[], workers=[worker], stuck=[], schedules=[], alerts=[], failures=[],
        recoveries=[recovery],
    )  # fmt: skip
    out = Console(file=io.StringIO(), width=200, record=True)
    out.print(render(screen))
    text = out.export_text()
    assert "BLOCKED 12s" in text
    assert "recovered after a worker died (1h: 1)" in text and "j-9" in text and "2.5s" in text


async def test_a_pass_goes_on_past_what_redis_holds_that_taskflow_did_not_write(
    named_app: Callable[..., taskflow.TaskFlow], redis: Redis
) -> None:
    fast = fast_worker(monitor_interval=timedelta(seconds=0.2), monitor=False)
    app = named_app(worker=fast)
    async with app:
        now = now_ms()
        await redis.set(app.keys.worker("garbled"), b"\x80 not json", px=60_000)
        await redis.zadd(app.keys.workers, {"garbled": now, "gone": now - 5000})
        await redis.set(app.keys.will("gone"), b'{"jobs": 7, "beat_ms": "x"}', px=60_000)
        await redis.hset(app.keys.error_groups, "t\x1fE:last", "not a time")  # type: ignore[misc]
        await redis.set(app.keys.monitor_events, "a string, not a stream")
        await redis.set(app.keys.monitor_turn, "stuck for ever")  # no expiry
        report = await sweep(app)
        await redis.delete(app.keys.monitor_events)
        service = MonitorService()
        async with app.worker(services=[service]):
            with anyio.fail_after(10):
                while service.passes == 0:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
    # the garbled record is skipped; the events key is a string, so the dead worker's note
    # and the retention event went nowhere, but every other part of the pass ran; the turn
    # without expiry was repaired (a pass ran since)
    assert report.dead_workers == ["gone"] and report.removed == {"error_groups": 1}
    assert report.failed == ["recording what it removed"] and report.workers == 0


async def test_two_passes_at_once_note_a_death_once(
    named_app: Callable[..., taskflow.TaskFlow], redis: Redis
) -> None:
    app = named_app()
    async with app:
        await redis.zadd(app.keys.workers, {"gone-2": now_ms() - 5000})
        reports = await asyncio.gather(*(sweep(app) for _ in range(5)))
        events = await app.monitor.events(kinds=["worker_died"])
    assert sorted(r.dead_workers for r in reports) == [[], [], [], [], ["gone-2"]]
    assert [e["worker"] for e in events] == ["gone-2"]
