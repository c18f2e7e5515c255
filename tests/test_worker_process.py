"""Real worker subprocesses (``python -m taskflow worker tests.apps.worker_app:app``) against
real Redis: graceful drain, dropped connections, a killed worker, ``taskflow check``,
several queues, and the second signal that skips the grace period.

Every test uses its own queue names; the tasks record their effects under ``tfproc:`` keys
(see tests/apps/worker_app.py) so executions can be counted from here. Each worker's stderr
goes to a file that is printed at teardown (pytest shows it when the test fails).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio
from redis.asyncio import Redis

import taskflow
from taskflow._protocol import keys
from tests import processes
from tests.apps import worker_app
from tests.helpers import delete_keys, reply, until
from tests.processes import WorkerProcess, child_env, wait_live

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

APP = "tests.apps.worker_app:app"
APP_NAME = APP.partition(":")[0]  # TaskFlow.name: the module that builds the app
TASK = "sleep_then_record"


# -- worker processes ---------------------------------------------------------------------


class Workers(processes.Workers):
    def start(
        self,
        queues: list[str],
        *,
        concurrency: int = 50,
        grace: float = 2.0,
        extra: tuple[str, ...] = (),
    ) -> WorkerProcess:
        env = {"TEST_QUEUE": queues[0], "TEST_GRACE": str(grace)}
        return self.spawn(queues, concurrency=concurrency, env=env, extra=extra)

    async def start_live(self, redis: Redis, queues: list[str], **options: Any) -> WorkerProcess:
        """Start a worker and wait until its heartbeat says it serves ``queues``."""
        worker = self.start(queues, **options)
        await wait_live(redis, worker)
        return worker


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    with Workers(tmp_path, APP) as started:
        yield started


# -- apps, jobs, effects --------------------------------------------------------------------


def new_queue(tag: str) -> str:
    return f"wp-{tag}-{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def client_apps(redis: Redis) -> AsyncIterator[Any]:
    """Open client apps (for enqueueing) per queue; close them and delete test keys after."""
    opened: list[taskflow.TaskFlow] = []
    queues: list[str] = []

    async def open_app(queue: str) -> taskflow.TaskFlow:
        app = worker_app.make_app(queue)
        await app.__aenter__()
        opened.append(app)
        queues.append(queue)
        return app

    try:
        yield open_app
    finally:
        for app in opened:
            await app.aclose()
        for queue in queues:
            # effect keys of the queue's jobs (job keys contain the queue name), and the queue
            await delete_keys(redis, f"tfproc:*{queue}*", [keys.queue(queue)])


def job_key(queue: str, kind: str, i: int) -> str:
    return f"{queue}/{kind}/{i}"


async def count(redis: Redis, key: str) -> int:
    return int(await redis.get(key) or 0)


async def attempts(redis: Redis, key: str) -> list[int]:
    return [int(a) for a in await reply(redis.lrange(worker_app.attempts_key(key), 0, -1))]


async def wait_started(redis: Redis, job_keys: list[str], timeout: float = 20.0) -> None:
    """Wait until every job body has started at least once."""

    async def all_started() -> bool:
        return all([await count(redis, worker_app.started_key(k)) for k in job_keys])

    await until(all_started, timeout)


async def results(handles: list[taskflow.JobHandle[Any]], timeout: float) -> list[Any]:
    return [await h.result(timeout=timeout) for h in handles]


async def assert_requeued(redis: Redis, handles: list[taskflow.JobHandle[Any]]) -> None:
    """Back in their queue at once: queued, no claim left behind (no lease to wait out)."""
    for handle in handles:
        assert await handle.status() is taskflow.JobStatus.QUEUED, handle
        assert not await redis.exists(keys.in_progress(handle.job_id)), handle
        assert await redis.zscore(keys.queue(handle.queue), handle.job_id) is not None, handle
        assert await handle.info() is None, handle


async def drop_jobs(redis: Redis, handles: list[taskflow.JobHandle[Any]]) -> None:
    """Remove jobs left queued on purpose (no worker runs them after the test)."""
    for handle in handles:
        await redis.zrem(keys.queue(handle.queue), handle.job_id)
        await redis.delete(
            keys.job(handle.job_id), keys.retry(handle.job_id), keys.failures(handle.job_id)
        )


# -- tests ----------------------------------------------------------------------------------


async def test_sigterm_drains_finishes_short_jobs_and_requeues_long_ones(
    redis: Redis, workers: Workers, client_apps: Any
) -> None:
    queue = new_queue("drain")
    app = await client_apps(queue)
    grace = 1.5
    worker = await workers.start_live(redis, [queue], grace=grace, concurrency=50)

    long_keys = [job_key(queue, "long", i) for i in range(5)]
    long_jobs = [await app.enqueue(TASK, k, 30.0, override=True) for k in long_keys]
    await wait_started(redis, long_keys)
    short_keys = [job_key(queue, "short", i) for i in range(5)]
    short_jobs = [await app.enqueue(TASK, k, 0.3) for k in short_keys]
    await wait_started(redis, short_keys)

    worker.signal(signal.SIGTERM)
    # exits once the grace period is over, not after the long jobs' 30 s
    assert await worker.wait(timeout=grace + 10) == 0, worker.log()

    # short jobs finished inside the grace period, once each
    for handle, key in zip(short_jobs, short_keys, strict=True):
        assert await handle.status() is taskflow.JobStatus.SUCCEEDED
        assert (await handle.result(timeout=1))["job_key"] == key
    # long jobs were interrupted and put back at once
    await assert_requeued(redis, long_jobs)
    for key in long_keys:
        assert await count(redis, worker_app.done_key(key)) == 0

    # a second worker runs them (shortened) to success
    await redis.set(worker_app.duration_key(queue), "0.1", ex=600)
    second = await workers.start_live(redis, [queue], grace=grace)
    values = await results(long_jobs, timeout=20)
    assert [v["job_key"] for v in values] == long_keys
    assert {v["pid"] for v in values} == {second.pid}
    for handle in long_jobs:
        info = await handle.info()
        assert info is not None and info.status == "succeeded"
        assert info.attempt == 1  # an interrupted attempt is given back

    # none lost, every job completed exactly once
    for key in short_keys:
        assert await count(redis, worker_app.started_key(key)) == 1
        assert await count(redis, worker_app.done_key(key)) == 1
    for key in long_keys:
        assert await count(redis, worker_app.started_key(key)) == 2
        assert await count(redis, worker_app.done_key(key)) == 1
        assert await attempts(redis, key) == [1, 1]
    log = [k.decode() for k in await reply(redis.lrange(worker_app.log_key(queue), 0, -1))]
    assert sorted(log) == sorted(short_keys + long_keys)

    second.signal(signal.SIGTERM)
    assert await second.wait(timeout=10) == 0


async def kill_worker_connections(redis: Redis, pid: int) -> int:
    """CLIENT KILL every connection the worker process named; return how many."""
    killed = 0
    for client in await redis.client_list():
        name = client.get("name", "")
        if name.startswith("taskflow-") and name.endswith(f"-{pid}"):
            killed += await redis.client_kill_filter(_id=client["id"])
    return killed


async def test_client_kill_mid_batch_worker_survives_and_every_job_succeeds(
    redis: Redis, workers: Workers, client_apps: Any
) -> None:
    queue = new_queue("kill")
    app = await client_apps(queue)
    worker = await workers.start_live(redis, [queue], concurrency=20)

    n = 300
    job_keys = [job_key(queue, "batch", i) for i in range(n)]
    handles = [await app.enqueue(TASK, k, 0.03) for k in job_keys]
    await wait_started(redis, job_keys[:1])

    done_at_kills: list[tuple[int, int]] = []
    for _ in range(3):
        done = await reply(redis.llen(worker_app.log_key(queue)))
        killed = await kill_worker_connections(redis, worker.pid)
        done_at_kills.append((done, killed))
        await anyio.sleep(0.2)
    sys.stdout.write(f"(jobs done, connections killed) at each kill: {done_at_kills}\n")
    assert all(killed > 0 for _, killed in done_at_kills)
    assert done_at_kills[0][0] < n, "the batch finished before the first kill; make jobs longer"

    # claims whose reply was lost are re-run once their lease lapses, so allow for that
    values = await results(handles, timeout=60)
    assert [v["job_key"] for v in values] == job_keys
    assert worker.proc.poll() is None, worker.log()
    log = {k.decode() for k in await reply(redis.lrange(worker_app.log_key(queue), 0, -1))}
    assert log == set(job_keys)
    for handle in handles:
        assert await handle.status() is taskflow.JobStatus.SUCCEEDED

    worker.signal(signal.SIGTERM)
    assert await worker.wait(timeout=10) == 0, worker.log()


async def test_sigkilled_worker_job_reruns_after_lease_with_attempt_2(
    redis: Redis, workers: Workers, client_apps: Any
) -> None:
    queue = new_queue("sigkill")
    app = await client_apps(queue)
    first = await workers.start_live(redis, [queue])
    key = job_key(queue, "victim", 0)
    handle = await app.enqueue(TASK, key, 60.0, retry_seconds=0.05)
    await wait_started(redis, [key])
    assert await handle.status() is taskflow.JobStatus.RUNNING

    first.signal(signal.SIGKILL)
    assert await first.wait(timeout=10) == -signal.SIGKILL
    # the claim outlives its worker until the lease (2 s) lapses
    assert await redis.exists(keys.in_progress(handle.job_id))

    second = await workers.start_live(redis, [queue])
    value = await handle.result(timeout=20)
    assert value["attempt"] == 2 and value["pid"] == second.pid
    info = await handle.info()
    assert info is not None
    assert info.status == "succeeded" and info.attempt == 2
    assert await attempts(redis, key) == [1, 2]
    assert await count(redis, worker_app.done_key(key)) == 1

    second.signal(signal.SIGTERM)
    assert await second.wait(timeout=10) == 0, second.log()


def run_check(*queues: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "taskflow", "check", APP]
    for queue in queues:
        argv += ["--queue", queue]
    return processes.run(argv, child_env(TEST_QUEUE=queues[0]), timeout=30)


async def test_check_follows_worker_liveness(redis: Redis, workers: Workers) -> None:
    queue = new_queue("check")
    nobody = new_queue("nobody")
    worker = await workers.start_live(redis, [queue])
    worker_id = next(
        w.id for w in await taskflow.live_workers(redis, APP_NAME) if w.pid == worker.pid
    )

    served = await anyio.to_thread.run_sync(run_check, queue)
    assert served.returncode == 0, served.stdout + served.stderr
    assert "ok" in served.stdout
    unserved = await anyio.to_thread.run_sync(run_check, nobody)
    assert unserved.returncode != 0, unserved.stdout + unserved.stderr
    assert "NO LIVE WORKER" in unserved.stdout
    both = await anyio.to_thread.run_sync(run_check, queue, nobody)
    assert both.returncode != 0, both.stdout + both.stderr

    worker.signal(signal.SIGTERM)
    assert await worker.wait(timeout=10) == 0, worker.log()
    # a clean shutdown removes the heartbeat at once (no waiting for it to expire)
    assert await redis.zscore(keys.AppKeys(APP_NAME).workers, worker_id) is None
    assert not await redis.exists(keys.AppKeys(APP_NAME).worker(worker_id))
    assert not [w for w in await taskflow.live_workers(redis, APP_NAME) if w.pid == worker.pid]
    stopped = await anyio.to_thread.run_sync(run_check, queue)
    assert stopped.returncode != 0, stopped.stdout + stopped.stderr


async def test_worker_with_two_queue_options_serves_both(
    redis: Redis, workers: Workers, client_apps: Any
) -> None:
    first, second = new_queue("q1"), new_queue("q2")
    app = await client_apps(first)
    await client_apps(second)  # only for the cleanup of its keys
    worker = await workers.start_live(redis, [first, second])
    info = next(w for w in await taskflow.live_workers(redis, APP_NAME) if w.pid == worker.pid)
    assert info.queues == [first, second]

    keys_1 = [job_key(first, "a", i) for i in range(5)]
    keys_2 = [job_key(second, "b", i) for i in range(5)]
    jobs_1 = [await app.enqueue(TASK, k, 0.01) for k in keys_1]
    on_second = app.get_task(TASK).with_options(queue=second)
    jobs_2 = [await on_second.enqueue(k, 0.01) for k in keys_2]
    values_1 = await results(jobs_1, timeout=20)
    values_2 = await results(jobs_2, timeout=20)
    assert {v["queue"] for v in values_1} == {first}
    assert {v["queue"] for v in values_2} == {second}
    assert {v["pid"] for v in values_1 + values_2} == {worker.pid}
    log_1 = await reply(redis.lrange(worker_app.log_key(first), 0, -1))
    log_2 = await reply(redis.lrange(worker_app.log_key(second), 0, -1))
    assert sorted(k.decode() for k in log_1) == sorted(keys_1)
    assert sorted(k.decode() for k in log_2) == sorted(keys_2)

    worker.signal(signal.SIGTERM)
    assert await worker.wait(timeout=10) == 0, worker.log()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_second_signal_skips_the_grace_period(
    redis: Redis, workers: Workers, client_apps: Any, signum: signal.Signals
) -> None:
    queue = new_queue("twice")
    app = await client_apps(queue)
    grace = 60.0
    # the app's grace is 2 s (TEST_GRACE); the --grace option must win over it
    worker = await workers.start_live(redis, [queue], grace=2.0, extra=("--grace", str(grace)))
    long_keys = [job_key(queue, "long", i) for i in range(3)]
    handles = [await app.enqueue(TASK, k, 60.0) for k in long_keys]
    try:
        await wait_started(redis, long_keys)

        worker.signal(signum)
        # still draining after longer than both the app's grace and the lease: the heartbeat
        # keeps the worker live and renews the leases of the jobs it is waiting for
        await anyio.sleep(3.0)
        assert worker.proc.poll() is None, "exited before the grace period:\n" + worker.log()
        for handle in handles:
            assert await handle.status() is taskflow.JobStatus.RUNNING
        assert [w for w in await taskflow.live_workers(redis, APP_NAME) if w.pid == worker.pid]

        worker.signal(signum)
        # the second signal skips what is left of the 60 s grace period
        assert await worker.wait(timeout=15) == 0, worker.log()
        await assert_requeued(redis, handles)
        for key in long_keys:
            assert await count(redis, worker_app.started_key(key)) == 1
            assert await count(redis, worker_app.done_key(key)) == 0
    finally:
        await drop_jobs(redis, handles)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def run_unreachable(*argv: str) -> subprocess.CompletedProcess[str]:
    env = child_env(TASKFLOW_TEST_REDIS_URL=closed_port_url(), TEST_QUEUE="nowhere")
    return processes.run(
        [sys.executable, "-m", "taskflow", *argv, APP, "--queue", "nowhere"], env, timeout=60
    )


@pytest.mark.parametrize("command", ["worker", "check"])
async def test_unreachable_redis_at_startup_exits_2_with_a_hint(command: str) -> None:
    done = await anyio.to_thread.run_sync(run_unreachable, command)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no Redis reachable" in done.stderr
    assert "Traceback" not in done.stderr


async def connections_named(redis: Redis, name: str) -> int:
    return sum(c.get("name") == name for c in await redis.client_list())


async def test_app_close_disconnects_pool(redis: Redis) -> None:
    """Regression: the pool was left connected (redis-py does not close an explicit pool)."""
    name = f"taskflow-{socket.gethostname()}-{os.getpid()}"
    before = await connections_named(redis, name)
    app = worker_app.make_app(new_queue("close"))
    async with app:
        await app.redis.ping()
        pool = app.redis.connection_pool
        assert await connections_named(redis, name) > before
    try:
        with anyio.move_on_after(1):
            while True:
                if await connections_named(redis, name) <= before:
                    break
                await anyio.sleep(0.02)
        assert await connections_named(redis, name) <= before
    finally:
        await pool.disconnect()  # whatever the outcome, leave no socket behind
