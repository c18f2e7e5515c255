"""Hostile data and a hostile Redis (issue 11, quick tier): a key of the wrong type fails its
one job and the worker carries on; a Redis that refuses writes (maxmemory under noeviction)
is waited out and reported, not a crash."""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, cast

import anyio
import orjson
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

import taskflow
from taskflow._protocol import keys
from taskflow._protocol.scripts import FinishReply
from taskflow._worker.memory import MemoryPolicyWatch
from taskflow.alerts import presets
from taskflow.alerts.sources import Measurer
from taskflow.cli.worker import _check
from tests.apps.shared import REDIS_URL, fast_worker
from tests.helpers import reply, until
from tests.processes import redis_server

pytestmark = pytest.mark.asyncio

RESULT_TIMEOUT = 10


def new_id() -> str:
    return uuid.uuid4().hex


async def queue_job(redis: Redis, queue: str, job_id: str) -> None:
    await redis.zadd(keys.queue(queue), {job_id: int(time.time() * 1000)})


async def test_a_job_key_of_the_wrong_type_fails_that_job_alone(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task
    async def echo(value: str) -> str:
        return value

    as_hash = new_id()
    await reply(redis.hset(keys.job(as_hash), mapping={"f": "echo"}))  # a hash, not a string
    await redis.expire(keys.job(as_hash), 60)
    await queue_job(redis, queue_name, as_hash)
    async with app:
        counted = await echo.enqueue("counted")
        await redis.set(keys.retry(counted.job_id), "not a number", ex=60)
        async with app.worker():
            before = await echo.enqueue("before")
            with pytest.raises(taskflow.TaskFailed) as hashed:
                await app.job(as_hash).result(timeout=RESULT_TIMEOUT)
            with pytest.raises(taskflow.TaskFailed) as counter:
                await counted.result(timeout=RESULT_TIMEOUT)
            # the worker is alive and serves the same queue
            assert await before.result(timeout=RESULT_TIMEOUT) == "before"
            after = await echo.enqueue("after")
            assert await after.result(timeout=RESULT_TIMEOUT) == "after"
    assert hashed.value.kind is taskflow.FailureKind.UNREADABLE_JOB
    assert f"arq:job:{as_hash} (a hash key): WRONGTYPE" in hashed.value.error_message
    assert counter.value.kind is taskflow.FailureKind.UNREADABLE_JOB
    assert f"arq:retry:{counted.job_id} (a string key)" in counter.value.error_message
    assert "not an integer" in counter.value.error_message
    assert await redis.exists(keys.job(as_hash), keys.in_progress(as_hash)) == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x80\x04\x95pickle", "not JSON"),
        (b'{"t": 1, "a": [], "k": {}}', "'f'"),  # no task name
        (b'{"t": 1, "f": "echo", "a": {"not": "a list"}, "k": {}}', "'a'"),
        (b'{"t": 1, "f": "echo", "a": ["' + b"x" * 4096 + b'"], "k": {}}', "over the 2048"),
        (b"[1, 2, 3]", "not an object"),
    ],
    ids=["binary", "missing-task", "args-not-a-list", "oversize", "not-an-object"],
)
async def test_a_planted_payload_fails_that_job_with_a_raw_copy_and_the_worker_goes_on(
    make_app: Callable[..., taskflow.TaskFlow],
    queue_name: str,
    redis: Redis,
    raw: bytes,
    reason: str,
) -> None:
    app = make_app(max_payload_bytes=2048)

    @app.task
    async def echo(value: str) -> str:
        return value

    planted = new_id()
    await redis.set(keys.job(planted), raw, ex=60)
    await queue_job(redis, queue_name, planted)
    async with app, app.worker():
        with pytest.raises(taskflow.TaskFailed) as failed:
            await app.job(planted).result(timeout=RESULT_TIMEOUT)
        assert await (await echo.enqueue("after")).result(timeout=RESULT_TIMEOUT) == "after"
    assert failed.value.kind is taskflow.FailureKind.CORRUPT_PAYLOAD
    assert reason in failed.value.error_message
    error = failed.value.error
    assert error["raw_size"] == len(raw)
    assert base64.b64decode(error["raw_b64"]) == raw[: len(base64.b64decode(error["raw_b64"]))]


async def test_a_queue_key_of_the_wrong_type_is_skipped_and_the_other_queues_served(
    make_app: Callable[..., taskflow.TaskFlow], redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    broken, healthy = f"broken-{new_id()[:8]}", f"healthy-{new_id()[:8]}"

    @app.task(queue=healthy)
    async def ping() -> str:
        return "pong"

    await redis.set(keys.queue(broken), "a string where a sorted set belongs", ex=60)
    caplog.set_level(logging.ERROR, logger="taskflow.worker")
    async with app, app.worker(queues=[broken, healthy]):
        job = await ping.enqueue()
        assert await job.result(timeout=RESULT_TIMEOUT) == "pong"
    [line] = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert line.startswith(f"queue {broken!r} cannot be read and is skipped: arq:queue:{broken}")
    assert "WRONGTYPE" in line


# -- version skew -----------------------------------------------------------------------------


async def test_a_job_for_a_task_this_worker_lacks_goes_to_a_worker_that_has_it(
    make_app: Callable[..., taskflow.TaskFlow], caplog: pytest.LogCaptureFixture
) -> None:
    old, new = make_app(), make_app()  # a rolling deploy: `resize` exists only in the new code

    @old.task
    async def ping() -> str:
        return "old"

    @new.task(name="ping")
    async def ping_new() -> str:
        return "new"

    @new.task
    async def resize(width: int) -> int:
        return width * 2

    caplog.set_level(logging.WARNING, logger="taskflow.worker")
    async with old, new, old.worker():
        jobs = [await resize.enqueue(w) for w in range(20)]

        async def met() -> bool:
            return "task 'resize' is not registered on this worker" in caplog.text

        await until(met, timeout=RESULT_TIMEOUT)  # the old worker met them, and put them back
        async with new.worker():
            assert [await j.result(timeout=RESULT_TIMEOUT) for j in jobs] == [
                w * 2 for w in range(20)
            ]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_graph_nodes_of_a_task_this_worker_lacks_wait_for_a_worker_that_has_it(
    make_app: Callable[..., taskflow.TaskFlow], caplog: pytest.LogCaptureFixture
) -> None:
    old, new = make_app(), make_app()

    @old.task(name="double")
    async def double_old(x: int) -> int:
        return x * 2

    @new.task
    async def double(x: int) -> int:
        return x * 2

    @new.task
    async def add(a: int, b: int) -> int:  # only in the new code
        return a + b

    caplog.set_level(logging.WARNING, logger="taskflow.worker")
    async with old, new, old.worker():
        graph = new.graph("skew")
        a = graph.add(double, 1, name="a")
        b = graph.add(double, 2, name="b")
        total = graph.add(add, a, b, name="total")
        graph.add(double, total, name="last")
        run = await graph.submit()

        async def met() -> bool:
            return "task 'add' is not registered on this worker" in caplog.text

        await until(met, timeout=RESULT_TIMEOUT)  # the old worker ran a and b, met `total`
        assert (await run.status()).nodes["total"].state == "queued"  # put back, not failed
        async with new.worker():
            results = await run.wait(timeout=RESULT_TIMEOUT)
    assert results == {"a": 2, "b": 4, "total": 6, "last": 12}


async def test_a_deferred_job_gets_its_whole_window_from_when_it_is_due(
    make_app: Callable[..., taskflow.TaskFlow],
) -> None:
    window = timedelta(milliseconds=600)
    old = make_app(worker=fast_worker(unknown_task_window=window))
    new = make_app()

    @new.task
    async def resize(width: int) -> int:
        return width * 2

    async with old, new, old.worker():
        # due in 1 s: a window counted from enqueueing would fail it as soon as it is due
        job = await resize.with_options(delay=timedelta(seconds=1)).enqueue(21)
        await anyio.sleep(1.3)  # due, met by the old worker, within its window
        async with new.worker():
            assert await job.result(timeout=RESULT_TIMEOUT) == 42


async def test_a_job_no_worker_can_run_fails_once_the_window_has_passed(
    make_app: Callable[..., taskflow.TaskFlow],
) -> None:
    window = timedelta(milliseconds=500)
    worker_app = make_app(worker=fast_worker(unknown_task_window=window))
    sender = make_app()

    @sender.task
    async def thumbnail() -> None:
        pass

    async with sender, worker_app, worker_app.worker():
        started = time.monotonic()
        job = await thumbnail.enqueue()
        with pytest.raises(taskflow.TaskFailed) as failed:
            await job.result(timeout=RESULT_TIMEOUT)
        assert time.monotonic() - started >= window.total_seconds()
    assert failed.value.kind is taskflow.FailureKind.UNKNOWN_TASK
    assert "no worker ran it within unknown_task_window=0.5s" in failed.value.error_message


# -- a Redis at maxmemory ---------------------------------------------------------------------


async def test_shared_keys_of_the_wrong_type_are_reported_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with redis_server() as port:  # arq's abort set is shared: plant it on a private server
        url = f"redis://127.0.0.1:{port}/0"
        settings = taskflow.Settings(redis_url=url, embedded="never", worker=fast_worker())
        app = taskflow.TaskFlow(settings=settings, name="planted")

        @app.task
        async def nap() -> str:
            await anyio.sleep(0.5)  # running while the abort watcher looks
            return "rested"

        raw = Redis.from_url(url)
        await raw.set(keys.ABORT, "not a sorted set")
        await raw.set(app.keys.workers, "not a sorted set")
        caplog.set_level(logging.ERROR, logger="taskflow.worker")
        try:
            async with app, app.worker(queues=["default"]):
                assert await (await nap.enqueue()).result(timeout=RESULT_TIMEOUT) == "rested"
                assert await (await nap.enqueue()).result(timeout=RESULT_TIMEOUT) == "rested"
        finally:
            await raw.aclose()
    refused = [r.getMessage() for r in caplog.records if "Redis refused" in r.getMessage()]
    assert any(m.startswith("Redis refused the heartbeat") for m in refused), refused
    assert any(m.startswith("Redis refused reading the abort set") for m in refused), refused
    assert all("WRONGTYPE" in m for m in refused)
    assert len(refused) == 2  # once a minute each, not once per look


@pytest.fixture(params=["noeviction"])
def small_redis(request: pytest.FixtureRequest) -> Iterator[str]:
    """A real redis-server with 4 MB of memory and, by default, noeviction: full writes are
    refused (parametrize indirectly with another maxmemory-policy)."""
    policy = str(request.param)
    with redis_server("--maxmemory", "4mb", "--maxmemory-policy", policy) as port:
        yield f"redis://127.0.0.1:{port}/0"


async def fill(redis: Redis) -> None:
    """Put Redis over its maxmemory: 1.5 MB of data, then maxmemory set 512 KB below what it
    uses, so that every write is refused (used memory wobbles by a few bytes; this margin
    does not) until the data is deleted."""
    await redis.config_set("maxmemory", 0)  # room for the data, should it be full already
    for i in range(24):
        await redis.set(f"filler:{i}", b"x" * 65536)
    used = int((await redis.info("memory"))["used_memory"])
    await redis.config_set("maxmemory", used - 512 * 1024)
    with pytest.raises(OutOfMemoryError):
        await redis.set("filler:refused", b"x")


async def test_a_worker_started_on_a_full_redis_waits_reports_and_resumes(
    small_redis: str,
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = taskflow.Settings(
        redis_url=small_redis,
        embedded="never",
        default_queue=queue_name,
        worker=fast_worker(reconnect_backoff_cap=timedelta(milliseconds=200)),
    )
    app = taskflow.TaskFlow(settings=settings, name="oom-test")

    @app.task
    async def ping() -> str:
        return "pong"

    caplog.set_level(logging.WARNING)
    raw = Redis.from_url(small_redis)
    try:
        async with app:
            job = await ping.enqueue()  # enqueued while there was room
            await fill(raw)
            with pytest.raises(taskflow.RedisOutOfMemory, match="raise maxmemory") as refused:
                await ping.enqueue()
            assert isinstance(refused.value.__cause__, OutOfMemoryError)
            async with app.worker() as worker:

                async def reported() -> bool:
                    return "Redis is out of memory and refuses writes" in caplog.text

                await until(reported, timeout=10)
                assert not worker.health.redis_reachable
                # the operator's view: Redis refuses writes (exit 1); the worker could not
                # register, since that is a write too
                checker = taskflow.TaskFlow(settings=settings, name="oom-test")
                assert await _check(checker, [queue_name]) == 1
                shown = capsys.readouterr().out
                assert "OUT OF MEMORY" in shown and "raise maxmemory or free memory" in shown
                assert f"{queue_name}: 0 live worker(s)" in shown
                fillers = [key async for key in raw.scan_iter(match="filler:*", count=1000)]
                await raw.delete(*fillers)  # memory freed: the worker resumes by itself
                assert await job.result(timeout=RESULT_TIMEOUT) == "pong"
                with anyio.fail_after(RESULT_TIMEOUT):
                    assert await (await ping.enqueue()).result() == "pong"
                # full again: the registered worker stays listed past its lease (a full
                # Redis still extends a key's life), and the check says why nothing moves

                async def registered() -> bool:
                    return len(await taskflow.live_workers(raw, "oom-test")) == 1

                await until(registered, timeout=RESULT_TIMEOUT)
                await fill(raw)
                await anyio.sleep(worker.settings.lease.total_seconds() + 0.5)
                assert await _check(checker, [queue_name]) == 1
                shown = capsys.readouterr().out
                assert "OUT OF MEMORY" in shown and f"{queue_name}: 1 live worker(s) ok" in shown
                fillers = [key async for key in raw.scan_iter(match="filler:*", count=1000)]
                await raw.delete(*fillers)
    finally:
        await raw.aclose()


@pytest.mark.parametrize("small_redis", ["allkeys-lru"], indirect=True)
async def test_an_evicting_redis_is_named_and_its_evictions_counted(
    small_redis: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = taskflow.Settings(redis_url=small_redis, embedded="never", worker=fast_worker())
    app = taskflow.TaskFlow(settings=settings, name="evict-test")
    watch = MemoryPolicyWatch(interval=0.1)
    caplog.set_level(logging.WARNING, logger="taskflow.worker")
    raw = Redis.from_url(small_redis)
    try:
        async with app, app.worker(queues=["evict-test"], services=[watch]):

            async def named() -> bool:
                return "Redis maxmemory-policy is allkeys-lru" in caplog.text

            await until(named, timeout=RESULT_TIMEOUT)
            for i in range(200):  # 200 x 64 KiB into 4 MB: most are evicted
                await raw.set(f"filler:{i}", b"x" * 65536)

            async def counted() -> bool:
                return "keys in the last" in caplog.text

            await until(counted, timeout=RESULT_TIMEOUT)
            # the alert condition (the preset's) holds, from the workers' readings
            rule = presets.redis_evicting(window=timedelta(minutes=1))
            condition = rule.conditions[0]
            evicted = await Measurer(app).value(condition)
            assert evicted is not None and condition.holds(evicted), evicted
            assert evicted >= 100  # most of the 200 fillers
            await anyio.sleep(1)  # a heartbeat writes back the worker's evicted record
            checker = taskflow.TaskFlow(settings=settings, name="evict-test")
            assert await _check(checker, ["evict-test"]) == 0  # a warning, not a failure
    finally:
        await raw.aclose()
    line = next(r.getMessage() for r in caplog.records if "keys in the last" in r.getMessage())
    assert line.startswith("Redis evicted ") and "set maxmemory-policy noeviction" in line
    shown = capsys.readouterr().out
    assert "maxmemory-policy allkeys-lru may delete jobs and results" in shown


# -- a body that blocks the event loop past its lease ------------------------------------------


async def test_a_body_blocking_past_its_lease_keeps_it_and_runs_once(
    make_app: Callable[..., taskflow.TaskFlow], caplog: pytest.LogCaptureFixture
) -> None:
    """The loop watch thread speaks for a blocked loop: the worker stays listed as blocked
    and the lease of a body inside its timeout is renewed, so it is not run a second time."""
    worker = taskflow.WorkerSettings(
        poll_interval=timedelta(milliseconds=10),
        lease=timedelta(seconds=1),
        heartbeat_interval=timedelta(milliseconds=250),
    )
    app = make_app(worker=worker)
    runs: list[int] = []

    @app.task(timeout=30)
    async def crunch() -> int:
        runs.append(1)
        time.sleep(2.5)  # blocks the event loop: the heartbeat coroutine cannot run
        return len(runs)

    def blocked_will(worker_id: str) -> dict[str, Any] | None:
        """The worker's will once its record is marked blocked, read from a thread (this
        test's own coroutine shares the blocked loop)."""
        raw = SyncRedis.from_url(REDIS_URL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                record = cast("bytes | None", raw.get(app.keys.worker(worker_id)))
                if record is not None and b"blocked_since_ms" in record:
                    will = cast("bytes", raw.get(app.keys.will(worker_id)))
                    found: dict[str, Any] = orjson.loads(will)
                    return found
                time.sleep(0.05)
            return None
        finally:
            raw.close()

    caplog.set_level(logging.WARNING, logger="taskflow.worker")
    with ThreadPoolExecutor(1) as pool:
        async with app, app.worker() as running:
            seen = pool.submit(blocked_will, running.id)
            job = await crunch.enqueue()
            assert await job.result(timeout=30) == 1
            record = seen.result()
    assert runs == [1] and running.counts["stale"] == 0
    assert record is not None and [j["id"] for j in record["jobs"]] == [job.job_id]
    assert "the loop watch keeps the worker's record and 1 leases alive" in caplog.text


# -- wide fans are released a budget at a time -------------------------------------------------


async def test_a_wide_fan_is_released_in_chunks_each_child_once(
    app: taskflow.TaskFlow, redis: Redis
) -> None:
    width = 3 * keys.SETTLE_BUDGET + 17

    @app.task
    async def leaf(i: int) -> int:
        return i

    async with app, app.worker(concurrency=50):
        graph = app.graph("wide")
        root = graph.add(leaf, -1, name="root")
        kids = [graph.add(leaf, i, name=f"k{i}", after=[root]) for i in range(width)]
        graph.add(leaf, -2, name="join", after=kids)
        run = await graph.submit()
        results = await run.wait(timeout=60)
        status = await run.status()
    assert [results[f"k{i}"] for i in range(width)] == list(range(width))
    assert {n.attempt for n in status.nodes.values()} == {1}
    assert await redis.zscore(keys.SETTLING, run.run_id) is None


async def test_a_release_left_half_way_by_a_dead_worker_is_resumed_by_another(
    app: taskflow.TaskFlow, redis: Redis
) -> None:
    width = 2 * keys.SETTLE_BUDGET

    @app.task
    async def leaf(i: int) -> int:
        return i

    async with app:
        graph = app.graph("half-released")
        root = graph.add(leaf, -1, name="root")
        for i in range(width):
            graph.add(leaf, i, name=f"k{i}", after=[root])
        run = await graph.submit()
        job_id = keys.node_job_id(run.run_id, 0)
        # a worker claimed the root and finished it, then died before its second call
        await redis.set(keys.in_progress(job_id), "dead:1", px=60_000)
        reply = await app.scripts.finish_node(
            run.run_id,
            0,
            leaf.options.queue,
            "dead:1",
            "done",
            state="succeeded",
            result=b"-1",
            now_ms=int(time.time() * 1000),
            retention_ms=60_000,
            expiry_ms=60_000,
            lease_ms=100,
        )
        assert reply is FinishReply.MORE
        half = await run.status()
        assert half.counts.get("queued", 0) == keys.SETTLE_BUDGET  # the first chunk only
        assert await redis.zscore(keys.SETTLING, run.run_id) is not None
        async with app.worker(concurrency=50):  # its settler resumes the release
            results = await run.wait(timeout=30)
    assert sorted(v for k, v in results.items() if k != "root") == list(range(width))
    assert await redis.zscore(keys.SETTLING, run.run_id) is None


@pytest.mark.parametrize("small_redis", ["allkeys-lru"], indirect=True)
async def test_a_strict_worker_refuses_to_start_on_an_evicting_redis(small_redis: str) -> None:
    strict = fast_worker(refuse_evicting_redis=True)
    settings = taskflow.Settings(redis_url=small_redis, embedded="never", worker=strict)
    app = taskflow.TaskFlow(settings=settings, name="strict-test")
    with pytest.raises(
        taskflow.ConfigurationError,
        match="maxmemory-policy is allkeys-lru: .* set maxmemory-policy noeviction",
    ):
        async with app, app.worker(queues=["strict-test"]):
            pytest.fail("the worker started")
