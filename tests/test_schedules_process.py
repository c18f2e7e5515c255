"""Schedules fired by real worker subprocesses (tests/apps/schedule_app.py): one job per tick
while workers die, misfire policies after every worker was down, and control from another
process. Ticks are checked by their due times, recorded by the jobs, not by wall timings."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import orjson
import pytest
import pytest_asyncio
from redis.asyncio import Redis

import taskflow
from tests import processes
from tests.apps.schedule_app import ticks_key
from tests.apps.shared import REDIS_URL, fast_worker, settings
from tests.helpers import delete_keys
from tests.processes import WorkerProcess, wait_live

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

APP = "tests.apps.schedule_app:app"


class Workers(processes.Workers):
    def start(self, name: str, count: int) -> list[WorkerProcess]:
        started = []
        for _ in range(count):
            worker = self.spawn([name], concurrency=20, env={"TEST_SCHEDULE_APP": name})
            worker.app_name = name  # the app is named by the test, not by its module
            started.append(worker)
        return started


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    with Workers(tmp_path, APP) as started:
        yield started


@pytest_asyncio.fixture
async def name() -> AsyncIterator[str]:
    """This test's app name (its schedules, queue and tick log); cleaned up after."""
    app_name = f"sched-{uuid.uuid4().hex[:10]}"
    yield app_name
    redis = Redis.from_url(REDIS_URL)
    try:
        await delete_keys(
            redis, f"taskflow:app:{app_name}:*", [f"arq:queue:{app_name}", ticks_key(app_name)]
        )
    finally:
        await redis.aclose()


async def ticks(redis: Redis, app_name: str) -> dict[str, list[tuple[int, int]]]:
    """Schedule -> sorted (tick ms, missed ticks) of the jobs that ran."""
    out: dict[str, list[tuple[int, int]]] = {}
    for raw in await redis.lrange(ticks_key(app_name), 0, -1):  # type: ignore[misc]
        schedule, tick, missed, _pid = orjson.loads(raw)
        out.setdefault(schedule, []).append((tick, missed))
    return {s: sorted(v) for s, v in out.items()}


async def live(redis: Redis, started: list[WorkerProcess]) -> None:
    for worker in started:
        await wait_live(redis, worker)


async def test_each_tick_is_one_job_while_two_of_three_workers_are_killed(
    workers: Workers, name: str
) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        started = workers.start(name, 3)
        await live(redis, started)
        await anyio.sleep(8)
        for victim in started[:2]:
            victim.proc.send_signal(signal.SIGKILL)
        await anyio.sleep(12)
        seen = await ticks(redis, name)
    finally:
        await redis.aclose()
    for schedule in ("every", "cron"):
        times = [t for t, _ in seen[schedule]]
        assert len(times) >= 15, (schedule, times)
        # one job per tick: no tick twice, none missing between the first and the last
        assert len(set(times)) == len(times), schedule
        assert [b - a for a, b in zip(times, times[1:], strict=False)] == [1000] * (
            len(times) - 1
        ), schedule
        assert all(missed == 0 for _, missed in seen[schedule])


async def test_misfire_policies_after_every_worker_was_down(workers: Workers, name: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        [first] = workers.start(name, 1)
        await live(redis, [first])
        await anyio.sleep(2.5)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        before = await ticks(redis, name)
        await anyio.sleep(5)  # no worker: five ticks or so pass unfired
        restarted = int(time.time() * 1000)
        [second] = workers.start(name, 1)
        await live(redis, [second])
        await anyio.sleep(3)
        seen = await ticks(redis, name)
    finally:
        await redis.aclose()

    def after(schedule: str) -> list[tuple[int, int]]:
        last = max(t for t, _ in before[schedule])
        return [(t, m) for t, m in seen[schedule] if t > last]

    # the restarted ticker fires every schedule's due ticks in one step, at one moment:
    # coalesce's one job is for the latest due tick, told how many came before it
    coalesced = after("coalesce")
    latest, missed = coalesced[0]
    assert missed >= 3, coalesced  # about five seconds passed with no worker
    assert all(m == 0 for _, m in coalesced[1:])
    # all: the latest max_catchup (3) due ticks each ran, the ones before were dropped
    assert [t for t, _ in after("all") if t <= latest] == [latest - 2000, latest - 1000, latest]
    # skip: none of the missed ticks ran (the latest only if it was not late yet)
    assert [t for t, _ in after("skip") if t <= latest] in ([], [latest])
    assert min(t for t, _ in after("skip")) > latest - 1000
    # and each goes on with one job per tick
    for schedule in ("coalesce", "all", "skip"):
        times = [t for t, _ in after(schedule) if t >= latest]
        assert times == list(range(times[0], times[0] + 1000 * len(times), 1000)), schedule
    assert restarted > latest - 2000


async def test_pause_resume_and_run_now_from_another_process(workers: Workers, name: str) -> None:
    control = taskflow.TaskFlow(settings=settings(name, fast_worker()), name=name)
    redis = Redis.from_url(REDIS_URL)
    try:
        started = workers.start(name, 2)
        await live(redis, started)
        await anyio.sleep(2)
        async with control:
            await control.schedules.pause("every")
            paused_at = int(time.time() * 1000)
            await anyio.sleep(3)
            await control.schedules.resume("every")
            resumed_at = int(time.time() * 1000)
            job = await control.schedules.run_now("every")
            assert await job.result(timeout=10) is None
            await anyio.sleep(2.5)
            info = await control.schedules.get("every")
        seen = await ticks(redis, name)
    finally:
        await redis.aclose()
    times = [t for t, _ in seen["every"]]
    # nothing fired after the pause returned, until the resume
    assert not [t for t in times if paused_at < t <= resumed_at - 1000]
    # fired again within one tick of the resume
    assert [t for t in times if resumed_at < t <= resumed_at + 1000]
    assert info.skips >= 2 and not info.paused
    assert job.job_id.startswith("schedule:every:now:")
