"""The monitor against real worker processes: a body that blocks its worker's event loop
past its timeout, a worker that dies mid-job, a job whose task no live worker has."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import psutil
import pytest
import pytest_asyncio
from redis.asyncio import Redis

import taskflow
from taskflow.monitor import sweep
from tests import processes
from tests.apps.blocking_app import WORKER, die_once, stall
from tests.apps.shared import REDIS_URL, settings
from tests.helpers import delete_keys

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

APP = "tests.apps.blocking_app:app"


@pytest_asyncio.fixture
async def name() -> AsyncIterator[str]:
    name = f"blocking-{uuid.uuid4().hex[:8]}"
    yield name
    redis = Redis.from_url(REDIS_URL)
    try:
        await delete_keys(redis, f"taskflow:app:{name}:*", [f"arq:queue:{name}"])
    finally:
        await redis.aclose()


def _client(name: str) -> taskflow.TaskFlow:
    """The app of the worker subprocesses, as this process builds it."""
    client = taskflow.TaskFlow(settings=settings(name, WORKER), name=name)
    client.task(name="stall", timeout=1, retries=1)(stall)
    client.task(name="die_once")(die_once)
    return client


async def _live_pid(client: taskflow.TaskFlow, worker: processes.WorkerProcess) -> None:
    with anyio.fail_after(20):
        while not any(w.pid == worker.pid for w in await client.monitor.workers()):
            assert worker.proc.poll() is None, f"worker exited at startup:\n{worker.log()}"
            await anyio.sleep(0.05)


async def _running_on(client: taskflow.TaskFlow, job_id: str, pid: int) -> None:
    with anyio.fail_after(20):
        while True:
            workers = await client.monitor.workers()
            if any(w.pid == pid and w.running for w in workers):
                return
            await anyio.sleep(0.05)


async def test_a_body_blocking_past_its_timeout_is_failed_as_timed_out_and_retried_elsewhere(
    tmp_path: Path, name: str
) -> None:
    client = _client(name)
    interval = WORKER.monitor_interval.total_seconds()
    with processes.Workers(tmp_path, APP) as workers:
        blocked = workers.spawn([name], concurrency=2, env={"TEST_BLOCKING_APP": name})
        async with client:
            await _live_pid(client, blocked)
            job = await client.tasks["stall"].enqueue(30)  # blocks that worker for 30 s
            await _running_on(client, job.job_id, blocked.pid)
            started = time.monotonic()
            # the blocked worker stays listed (its loop watch speaks for it), marked blocked
            with anyio.fail_after(10):
                while not any(w.blocked_since_ms for w in await _live(client)):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            # a healthy worker of the same app: its monitor pass fails the overdue attempt
            async with client.worker():
                assert await job.result(timeout=30) == 2  # attempt 2 ran here, at once
            took = time.monotonic() - started
            [event] = await client.monitor.events(kinds=["overdue"])
            assert blocked.proc.poll() is None  # not killed: it runs unsupervised
            assert await sweep(client) is not None
    assert event["job"] == job.job_id and event["attempt"] == 1 and event["timeout_s"] == 1
    assert event["worker"].split("-")[-2] == str(blocked.pid)  # its own loop watch did it
    # the timeout (1 s), the loop watch's first report (a heartbeat) and two monitor
    # intervals, with a wide margin for a busy machine
    assert took < 1 + WORKER.heartbeat_interval.total_seconds() + 2 * interval + 10


async def _live(client: taskflow.TaskFlow) -> list[taskflow.WorkerInfo]:
    return await taskflow.live_workers(client.redis, client.name)


async def test_taskflow_worker_replaces_a_wedged_process(tmp_path: Path, name: str) -> None:
    client = _client(name)
    with processes.Workers(tmp_path, APP) as workers:
        supervisor = workers.spawn(
            [name], concurrency=2, env={"TEST_BLOCKING_APP": name}, supervise=True
        )
        async with client:
            job = await client.tasks["stall"].enqueue(60)  # would block its worker a minute
            [first] = await _pids_running(client)
            # its loop watch fails the overdue attempt; the supervisor kills the wedged
            # child; the next child retries the job, whose second attempt returns at once
            assert await job.result(timeout=60) == 2
            with anyio.fail_after(30):  # a monitor pass notes the first child's death
                while not await client.monitor.events(kinds=["worker_died"]):  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            [overdue] = await client.monitor.events(kinds=["overdue"])
            [died] = await client.monitor.events(kinds=["worker_died"])
            second = {w.pid for w in await client.monitor.workers()}
            supervisor.signal(signal.SIGTERM)
            assert await supervisor.wait(timeout=30) == 0
            log = supervisor.log()
    assert first != supervisor.pid and first not in second and len(second) == 1
    assert overdue["job"] == job.job_id and overdue["worker"].split("-")[-2] == str(first)
    assert died["pid"] == first and [j["id"] for j in died["jobs"]] == [job.job_id]
    assert f"worker process {first} is wedged" in log and "starting a new one in 1s" in log


async def test_a_job_whose_worker_died_is_recovered_with_its_downtime(
    tmp_path: Path, name: str
) -> None:
    client = _client(name)
    with processes.Workers(tmp_path, APP) as workers:
        async with client:
            doomed = workers.spawn([name], concurrency=1, env={"TEST_BLOCKING_APP": name})
            job = await client.tasks["die_once"].enqueue()
            assert await doomed.wait(timeout=30) == 17  # attempt 1 killed it
            workers.spawn([name], concurrency=1, env={"TEST_BLOCKING_APP": name})
            assert await job.result(timeout=30) == 2  # its lease lapsed: attempt 2 ran
            with anyio.fail_after(30):  # a monitor pass notes the death (its record lapsed)
                while not (found := await client.monitor.recoveries())[0].dead_worker:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
    [recovery] = found
    assert recovery.job_id == job.job_id and recovery.task == "die_once"
    assert recovery.attempt == 2 and recovery.dead_worker.split("-")[-2] == str(doomed.pid)
    assert recovery.downtime is not None and recovery.downtime > 0
    assert recovery.last_heartbeat is not None and recovery.restarted > recovery.last_heartbeat


async def _pids_running(client: taskflow.TaskFlow) -> list[int]:
    with anyio.fail_after(20):
        while True:
            running = [w.pid for w in await client.monitor.workers() if w.running]
            if running:
                return running
            await anyio.sleep(0.05)


async def test_a_worker_whose_supervisor_was_killed_stops(tmp_path: Path, name: str) -> None:
    client = _client(name)
    with processes.Workers(tmp_path, APP) as workers:
        supervisor = workers.spawn(
            [name], concurrency=2, env={"TEST_BLOCKING_APP": name}, supervise=True
        )
        async with client:
            with anyio.fail_after(20):
                while not (live := await client.monitor.workers()):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            child = live[0].pid
            supervisor.kill()  # SIGKILL: no chance to stop its child
            with anyio.fail_after(20):  # the child notices its next tick, and drains
                while _alive(child):  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            assert await client.monitor.workers() == []  # it deregistered: a clean stop


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
