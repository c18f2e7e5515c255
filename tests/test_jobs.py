"""Jobs end to end on a real Redis, with an in-process worker (``async with app.worker()``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import orjson
import pytest
from redis.asyncio import Redis

import taskflow
from taskflow import JobStatus
from taskflow._protocol import keys
from tests.helpers import until

pytestmark = pytest.mark.asyncio

RESULT_TIMEOUT = 10.0
SLACK = 0.5  # generous scheduling slack on top of a computed delay, in seconds
# short, but not zero: a zero retry delay trips the re-claim race shown by
# test_immediate_retries_do_not_crash_the_worker
QUICK = taskflow.Backoff(base=0.05, cap=0.05, jitter=False)


async def wait_status(handle: taskflow.JobHandle[Any], status: JobStatus) -> None:
    async def reached() -> bool:
        return await handle.status() is status

    await until(reached)


def new_id() -> str:
    return f"test-{uuid.uuid4().hex}"


async def plant_job(redis: Redis, queue: str, job_id: str, raw: bytes) -> None:
    """Write a job by hand, in arq's layout."""
    await redis.set(keys.job(job_id), raw, px=60_000)
    await redis.zadd(keys.queue(queue), {job_id: int(time.time() * 1000)})


# -- basics -------------------------------------------------------------------------------


async def test_enqueue_then_result(app: taskflow.TaskFlow, queue_name: str) -> None:
    @app.task
    async def add(a: int, b: int = 10) -> int:
        return a + b

    async with app:
        # the client converts "3" to 3 as the signature says; a type checker rightly objects
        handle = await add.enqueue(2, b="3")  # type: ignore[arg-type]
        assert handle.enqueued and handle.queue == queue_name and handle.task == "add"
        async with app.worker() as worker:
            assert await handle.result(timeout=RESULT_TIMEOUT) == 5
            assert await (await add.enqueue(1)).result(timeout=RESULT_TIMEOUT) == 11
        info = await handle.info()
        assert info is not None
        assert (info.status, info.value, info.attempt, info.queue, info.worker) == (
            "succeeded",
            5,
            1,
            queue_name,
            worker.id,
        )
        assert info.enqueue_ms <= info.start_ms <= info.finish_ms
        # by name, and by id from another handle
        by_name = await app.enqueue("add", 1, 1)
        assert await app.job(handle.job_id).result(timeout=1) == 5
        assert await by_name.status() is JobStatus.QUEUED


async def test_current_job_context(app: taskflow.TaskFlow, queue_name: str) -> None:
    seen: list[taskflow.JobContext] = []

    @app.task(retries=2)
    async def introspect() -> str:
        seen.append(taskflow.current_job())
        return taskflow.current_job().job_id

    async with app:
        before = datetime.now(UTC)
        handle = await introspect.enqueue()
        async with app.worker() as worker:
            assert await handle.result(timeout=RESULT_TIMEOUT) == handle.job_id
    [context] = seen
    assert (context.job_id, context.task, context.queue) == (
        handle.job_id,
        "introspect",
        queue_name,
    )
    assert (context.attempt, context.max_attempts, context.worker_id) == (1, 3, worker.id)
    assert abs(context.enqueue_time - before) < timedelta(seconds=5)
    assert context.enqueue_time.tzinfo is not None
    with pytest.raises(taskflow.LifecycleError, match="outside a task"):
        taskflow.current_job()


# -- status transitions -------------------------------------------------------------------


async def test_status_queued_running_succeeded(app: taskflow.TaskFlow) -> None:
    started, release = anyio.Event(), anyio.Event()

    @app.task
    async def gated() -> str:
        started.set()
        await release.wait()
        return "done"

    async with app:
        assert await app.job(new_id()).status() is JobStatus.NOT_FOUND
        handle = await gated.enqueue()
        assert await handle.status() is JobStatus.QUEUED
        async with app.worker():
            with anyio.fail_after(5):
                await started.wait()
            assert await handle.status() is JobStatus.RUNNING
            assert await handle.info() is None
            release.set()
            assert await handle.result(timeout=RESULT_TIMEOUT) == "done"
            assert await handle.status() is JobStatus.SUCCEEDED
            assert JobStatus.SUCCEEDED.finished and not JobStatus.RUNNING.finished


async def test_status_deferred_retrying_cancelled_failed(app: taskflow.TaskFlow) -> None:
    @app.task(retries=1)
    async def later() -> None:
        raise taskflow.Retry(delay=60)

    @app.task
    async def broken() -> None:
        raise RuntimeError("nope")

    async with app:
        deferred = await later.with_options(delay=60).enqueue()
        assert await deferred.status() is JobStatus.DEFERRED
        retrying = await later.enqueue()
        failing = await broken.enqueue()
        async with app.worker():
            await wait_status(retrying, JobStatus.RETRYING)
            await wait_status(failing, JobStatus.FAILED)
            assert await deferred.status() is JobStatus.DEFERRED
            assert await retrying.abort() is True
            assert await deferred.abort() is True
        assert await retrying.status() is JobStatus.CANCELLED
        assert await deferred.status() is JobStatus.CANCELLED
        assert JobStatus.CANCELLED.finished and JobStatus.FAILED.finished


# -- argument validation ------------------------------------------------------------------


async def test_client_rejects_bad_arguments_and_writes_nothing(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with app:
        job_id = new_id()
        # wrong on purpose: what the type checker would catch, the client catches at run time
        with_id = add.with_options(job_id=job_id)
        with pytest.raises(taskflow.ArgumentError, match=r"argument 'b'.*'not-an-int'"):
            await with_id.enqueue(1, "not-an-int")  # type: ignore[arg-type]
        with pytest.raises(taskflow.ArgumentError, match="missing a required argument: 'b'"):
            await with_id.enqueue(1)  # type: ignore[call-arg]
        with pytest.raises(
            taskflow.ArgumentError, match="unknown keyword argument 'c'; it takes a, b"
        ):
            await with_id.enqueue(1, 2, c=3)  # type: ignore[call-arg]
        assert await redis.zcard(keys.queue(queue_name)) == 0
        assert await redis.exists(keys.job(job_id)) == 0


async def test_client_rejects_oversized_job_and_writes_nothing(
    make_app: Callable[..., taskflow.TaskFlow], queue_name: str, redis: Redis
) -> None:
    app = make_app(max_payload_bytes=1024)

    @app.task
    async def store(blob: Any) -> None:
        pass

    async with app:
        job_id = new_id()
        with pytest.raises(taskflow.PayloadTooLarge, match="over the 1024-byte cap"):
            await store.with_options(job_id=job_id).enqueue("x" * 2000)
        with pytest.raises(taskflow.SerializationError, match="cannot encode"):
            await store.with_options(job_id=job_id).enqueue(object())
        assert await redis.zcard(keys.queue(queue_name)) == 0
        assert await redis.exists(keys.job(job_id)) == 0


async def test_worker_rejects_bad_arguments_without_running_or_retrying(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    calls = 0

    @app.task(retries=3, backoff=QUICK)
    async def add(a: int) -> int:
        nonlocal calls
        calls += 1
        return a

    job_id = new_id()
    raw = orjson.dumps(
        {"t": None, "f": "add", "a": ["not-an-int"], "k": {}, "et": int(time.time() * 1000)}
    )
    await plant_job(redis, queue_name, job_id, raw)
    async with app, app.worker():
        handle = app.job(job_id, task="add", queue=queue_name)
        with pytest.raises(taskflow.TaskFailed) as info:
            await handle.result(timeout=RESULT_TIMEOUT)
        record = await handle.info()
    assert calls == 0
    assert info.value.error_type.endswith("ArgumentError")
    assert "argument 'a'" in info.value.error_message
    assert "not-an-int" in info.value.error_message
    assert record is not None and record.attempt == 1 and record.status == "failed"
    assert await redis.zscore(keys.queue(queue_name), job_id) is None


async def test_worker_fails_unknown_task(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    @app.task
    async def known() -> None:
        pass

    job_id = new_id()
    await plant_job(
        redis,
        queue_name,
        job_id,
        orjson.dumps({"t": None, "f": "no_such_task", "a": [], "k": {}, "et": 0}),
    )
    # due long ago: past the unknown-task window, so it fails instead of waiting
    await redis.zadd(keys.queue(queue_name), {job_id: 1})
    async with app, app.worker():
        with pytest.raises(taskflow.TaskFailed) as info:
            await app.job(job_id).result(timeout=RESULT_TIMEOUT)
    assert info.value.error_type == "taskflow.UnknownTask"
    assert "'no_such_task'" in info.value.error_message and "known" in info.value.error_message


async def test_worker_fails_expired_payload(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    @app.task
    async def echo(value: str) -> str:
        return value

    expired = new_id()
    # queued, but its job key is gone (expired)
    await redis.zadd(keys.queue(queue_name), {expired: int(time.time() * 1000)})
    async with app, app.worker():
        with pytest.raises(taskflow.TaskFailed) as gone:
            await app.job(expired).result(timeout=RESULT_TIMEOUT)
        assert await (await echo.enqueue("next")).result(timeout=RESULT_TIMEOUT) == "next"
    assert gone.value.error_type == "taskflow.JobExpired"
    assert await redis.zscore(keys.queue(queue_name), expired) is None


async def test_worker_refuses_oversized_payload(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    calls = 0

    @app.task
    async def echo(value: str) -> str:
        nonlocal calls
        calls += 1
        return value

    limit = app.settings.max_payload_bytes
    oversized = new_id()
    big = orjson.dumps({"t": None, "f": "echo", "a": ["x" * limit], "k": {}, "et": 0})
    await plant_job(redis, queue_name, oversized, big)
    async with app, app.worker():
        with pytest.raises(taskflow.TaskFailed) as too_big:
            await app.job(oversized).result(timeout=RESULT_TIMEOUT)
    assert calls == 0
    assert too_big.value.error_type == "taskflow.CorruptPayload"
    assert f"{len(big)} bytes, over the {limit}-byte cap" in too_big.value.error_message
    assert too_big.value.error["raw_size"] == len(big)


async def test_corrupt_payload_record_survives_small_cap(
    make_app: Callable[..., taskflow.TaskFlow], queue_name: str, redis: Redis
) -> None:
    app = make_app(max_payload_bytes=1024)

    @app.task
    async def echo(value: str) -> str:
        return value

    oversized = new_id()
    await plant_job(
        redis,
        queue_name,
        oversized,
        orjson.dumps({"t": None, "f": "echo", "a": ["x" * 2000], "k": {}, "et": 0}),
    )
    async with app, app.worker():
        with pytest.raises(taskflow.TaskFailed) as info:
            await app.job(oversized).result(timeout=RESULT_TIMEOUT)
    assert info.value.error_type == "taskflow.CorruptPayload"


# -- retries ------------------------------------------------------------------------------


def _gaps(marks: list[tuple[str, float]]) -> list[float]:
    """Seconds from each failure to the next attempt's start."""
    gaps = []
    for (kind, at), (next_kind, next_at) in zip(marks, marks[1:], strict=False):
        if kind == "fail" and next_kind == "start":
            gaps.append(next_at - at)
    return gaps


@pytest.mark.parametrize("jitter", [False, True])
async def test_retries_with_backoff(app: taskflow.TaskFlow, jitter: bool) -> None:
    backoff = taskflow.Backoff(base=0.1, cap=0.25, factor=2.0, jitter=jitter)
    attempts: list[int] = []
    marks: list[tuple[str, float]] = []

    @app.task(retries=3, backoff=backoff)
    async def flaky() -> int:
        attempt = taskflow.current_job().attempt
        attempts.append(attempt)
        marks.append(("start", time.time()))
        if attempt <= 3:
            marks.append(("fail", time.time()))
            raise ValueError(f"attempt {attempt}")
        return attempt

    async with app, app.worker():
        assert await (await flaky.enqueue()).result(timeout=RESULT_TIMEOUT) == 4
    assert attempts == [1, 2, 3, 4]
    gaps = _gaps(marks)
    assert len(gaps) == 3
    for retry, gap in enumerate(gaps, start=1):
        bound = backoff.bound(retry)
        assert gap <= bound + SLACK, (retry, gap, bound)
        if not jitter:
            assert gap >= bound - 0.01, (retry, gap, bound)


async def test_retries_exhausted_fail_with_last_error(app: taskflow.TaskFlow) -> None:
    attempts: list[int] = []

    @app.task(retries=2, backoff=QUICK)
    async def always() -> None:
        attempts.append(taskflow.current_job().attempt)
        raise ValueError(f"failure {len(attempts)}")

    async with app, app.worker():
        handle = await always.enqueue()
        with pytest.raises(taskflow.TaskFailed) as info:
            await handle.result(timeout=RESULT_TIMEOUT)
        record = await handle.info()
    assert attempts == [1, 2, 3]
    assert info.value.error_type == "ValueError"
    assert info.value.error_message == "failure 3 (after 3 failed attempts)"
    assert record is not None and record.attempt == 3 and record.status == "failed"


async def test_retry_exception_delay_is_honoured(app: taskflow.TaskFlow) -> None:
    marks: list[tuple[str, float]] = []

    # the task's own backoff would wait 5 s: the Retry's delay must win
    @app.task(retries=1, backoff=taskflow.Backoff(base=5, cap=5, jitter=False))
    async def poll() -> int:
        marks.append(("start", time.time()))
        if taskflow.current_job().attempt == 1:
            marks.append(("fail", time.time()))
            raise taskflow.Retry(delay=0.3)
        return taskflow.current_job().attempt

    async with app, app.worker():
        assert await (await poll.enqueue()).result(timeout=4) == 2
    [gap] = _gaps(marks)
    assert 0.29 <= gap <= 0.3 + SLACK


async def test_retry_exception_counts_against_retries(app: taskflow.TaskFlow) -> None:
    attempts: list[int] = []

    @app.task(retries=1)
    async def never_ready() -> None:
        attempts.append(taskflow.current_job().attempt)
        raise taskflow.Retry(delay=0.05, reason="not ready")

    async with app, app.worker():
        with pytest.raises(taskflow.TaskFailed) as info:
            await (await never_ready.enqueue()).result(timeout=RESULT_TIMEOUT)
    assert attempts == [1, 2]
    assert info.value.error_type == "taskflow.errors.Retry"
    assert info.value.error_message == "not ready (after 2 failed attempts)"


async def test_retry_on_restricts_retried_exceptions(app: taskflow.TaskFlow) -> None:
    attempts: dict[str, list[int]] = {"value": [], "conn": []}

    @app.task(retries=3, retry_on=(ConnectionError,), backoff=QUICK)
    async def fragile(kind: str) -> str:
        attempt = taskflow.current_job().attempt
        attempts[kind].append(attempt)
        if kind == "value":
            raise ValueError("not retried")
        if attempt < 3:
            raise ConnectionResetError("retried")  # a ConnectionError subclass
        return "ok"

    async with app, app.worker():
        not_retried = await fragile.enqueue("value")
        retried = await fragile.enqueue("conn")
        with pytest.raises(taskflow.TaskFailed) as info:
            await not_retried.result(timeout=RESULT_TIMEOUT)
        assert await retried.result(timeout=RESULT_TIMEOUT) == "ok"
    assert attempts == {"value": [1], "conn": [1, 2, 3]}
    assert info.value.error_type == "ValueError" and info.value.error_message == "not retried"


async def test_immediate_retries_do_not_crash_the_worker(app: taskflow.TaskFlow) -> None:
    @app.task(retries=40)
    async def spin(i: int) -> int:
        if taskflow.current_job().attempt <= 40:
            raise taskflow.Retry(delay=0)
        return i

    for _ in range(3):  # the race is timing-dependent: a few rounds make it near-certain
        async with app, app.worker():
            handles = [await spin.enqueue(i) for i in range(40)]
            assert [await h.result(timeout=30) for h in handles] == list(range(40))


# -- timeouts -----------------------------------------------------------------------------


async def test_timeout_fails_with_timeout_error(app: taskflow.TaskFlow) -> None:
    ended_by: list[str] = []

    @app.task(timeout=0.2)
    async def hangs() -> None:
        try:
            await anyio.sleep(30)
            ended_by.append("return")
        except anyio.get_cancelled_exc_class():
            ended_by.append("cancelled")
            raise

    async with app, app.worker():
        with pytest.raises(taskflow.TaskFailed) as info:
            await (await hangs.enqueue()).result(timeout=RESULT_TIMEOUT)
    assert info.value.error_type == "TimeoutError"
    assert info.value.error_message == "hangs exceeded its timeout of 0.2s"
    assert ended_by == ["cancelled"]  # the body was cut, not left to finish its sleep


async def test_timeout_is_retried_when_retries_remain(app: taskflow.TaskFlow) -> None:
    attempts: list[int] = []

    @app.task(
        timeout=timedelta(milliseconds=200),
        retries=1,
        backoff=QUICK,
    )
    async def slow_first() -> str:
        attempts.append(taskflow.current_job().attempt)
        if len(attempts) == 1:
            await anyio.sleep(30)
        return "second time lucky"

    async with app, app.worker():
        assert await (await slow_first.enqueue()).result(timeout=RESULT_TIMEOUT) == (
            "second time lucky"
        )
    assert attempts == [1, 2]


async def test_timeout_not_in_retry_on_fails_at_once(app: taskflow.TaskFlow) -> None:
    attempts: list[int] = []

    @app.task(timeout=0.2, retries=3, retry_on=(ValueError,))
    async def hangs() -> None:
        attempts.append(taskflow.current_job().attempt)
        await anyio.sleep(30)

    async with app, app.worker():
        with pytest.raises(taskflow.TaskFailed, match="TimeoutError"):
            await (await hangs.enqueue()).result(timeout=RESULT_TIMEOUT)
    assert attempts == [1]


# -- abort --------------------------------------------------------------------------------


async def test_abort_queued_job(app: taskflow.TaskFlow, queue_name: str, redis: Redis) -> None:
    calls: list[str] = []

    @app.task
    async def record(tag: str) -> str:
        calls.append(tag)
        return tag

    async with app:
        doomed = await record.enqueue("doomed")
        assert await doomed.abort() is True
        assert await doomed.status() is JobStatus.CANCELLED
        assert await redis.zscore(keys.queue(queue_name), doomed.job_id) is None
        assert await redis.exists(keys.job(doomed.job_id)) == 0
        with pytest.raises(taskflow.TaskFailed) as info:
            await doomed.result(timeout=1)
        assert info.value.status == "cancelled" and info.value.error_type == "taskflow.Aborted"
        async with app.worker(concurrency=1):
            assert await (await record.enqueue("sentinel")).result(timeout=RESULT_TIMEOUT) == (
                "sentinel"
            )
        assert calls == ["sentinel"]
        # aborting a finished job changes nothing
        assert await doomed.abort() is False
        assert await doomed.status() is JobStatus.CANCELLED


async def test_abort_running_job(app: taskflow.TaskFlow) -> None:
    started = anyio.Event()
    outcome: list[str] = []

    @app.task
    async def long_running() -> None:
        started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise
        outcome.append("finished")

    @app.task
    async def quick() -> str:
        return "still serving"

    async with app, app.worker():
        handle = await long_running.enqueue()
        with anyio.fail_after(5):
            await started.wait()
        assert await handle.status() is JobStatus.RUNNING
        assert await handle.abort(timeout=5) is True
        assert outcome == ["cancelled"]
        assert await handle.status() is JobStatus.CANCELLED
        with pytest.raises(taskflow.TaskFailed) as info:
            await handle.result(timeout=1)
        assert info.value.status == "cancelled" and info.value.error_type == "taskflow.Aborted"
        assert await (await quick.enqueue()).result(timeout=RESULT_TIMEOUT) == "still serving"


async def test_abort_finished_job_returns_false(app: taskflow.TaskFlow) -> None:
    @app.task
    async def fast() -> int:
        return 1

    async with app, app.worker():
        handle = await fast.enqueue()
        assert await handle.result(timeout=RESULT_TIMEOUT) == 1
        assert await handle.abort() is False
        assert await handle.status() is JobStatus.SUCCEEDED


async def test_abort_queued_job_uses_task_result_ttl(app: taskflow.TaskFlow, redis: Redis) -> None:
    @app.task(result_ttl=30)
    async def short_lived() -> None:
        pass

    async with app:
        handle = await short_lived.enqueue()
        assert await handle.abort() is True
        assert 0 < await redis.pttl(keys.result(handle.job_id)) <= 30_000


# -- deferral and dedupe ------------------------------------------------------------------


async def test_delay_and_defer_until_are_not_run_early(app: taskflow.TaskFlow) -> None:
    ran_at: dict[str, float] = {}

    @app.task
    async def stamp(tag: str) -> str:
        ran_at[tag] = time.time()
        return tag

    async with app, app.worker():
        enqueued = time.time()
        by_delay = await stamp.with_options(delay=0.6).enqueue("delay")
        until = datetime.now(UTC) + timedelta(seconds=0.6)
        by_until = await stamp.with_options(defer_until=until).enqueue("until")
        by_timedelta = await stamp.with_options(delay=timedelta(milliseconds=600)).enqueue("td")
        assert await by_delay.status() is JobStatus.DEFERRED
        assert await by_until.status() is JobStatus.DEFERRED
        for handle in (by_delay, by_until, by_timedelta):
            await handle.result(timeout=RESULT_TIMEOUT)
    assert ran_at["delay"] >= enqueued + 0.6 - 0.01
    assert ran_at["td"] >= enqueued + 0.6 - 0.01
    assert ran_at["until"] >= until.timestamp() - 0.01
    assert max(ran_at.values()) <= enqueued + 0.6 + SLACK + 1


async def test_defer_until_in_the_past_runs_now(app: taskflow.TaskFlow) -> None:
    @app.task
    async def now() -> str:
        return "now"

    async with app:
        past = datetime.now(UTC) - timedelta(hours=1)
        handle = await now.with_options(defer_until=past).enqueue()
        assert await handle.status() is JobStatus.QUEUED
        async with app.worker():
            assert await handle.result(timeout=RESULT_TIMEOUT) == "now"


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"delay": 1, "defer_until": datetime.now(UTC)}, "not both; got delay=1 and defer_until="),
        ({"defer_until": datetime(2030, 1, 1)}, "timezone-aware datetime, got datetime.datetime"),
        ({"defer_until": "2030-01-01"}, "timezone-aware datetime, got '2030-01-01'"),
        ({"delay": -1}, "delay must be >= 0, got -1"),
        ({"delay": timedelta(seconds=-1)}, "delay must be >= 0, got datetime.timedelta"),
        ({"delay": float("inf")}, "delay=inf is not a duration: use a number of seconds"),
        ({"delay": "soon"}, "delay='soon' is not a duration: use .* 30s, 15m, 2h"),
        ({"job_id": ""}, "job_id must be a string of 1-200 characters, got ''"),
        ({"job_id": "x" * 201}, r"job_id must be a string of 1-200 characters, .*201 characters"),
        ({"job_id": 42}, "job_id must be a string of 1-200 characters, got 42"),
        ({"queue": "no spaces"}, "queue='no spaces' is not a valid queue name: use 1-200"),
        ({"queue": ""}, "queue='' is not a valid queue name"),
    ],
)
async def test_bad_enqueue_options(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis, options: dict[str, Any], pattern: str
) -> None:
    @app.task
    async def noop() -> None:
        pass

    async with app:
        # checked when the options are bound, before any enqueue
        with pytest.raises(taskflow.ConfigurationError, match=pattern):
            noop.with_options(**options)
    assert await redis.zcard(keys.queue(queue_name)) == 0


async def test_bound_options_are_immutable_and_reusable(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    @app.task
    async def echo(word: str) -> str:
        return word

    later = echo.with_options(delay=60, queue=queue_name + "-later")
    assert later.options == taskflow.EnqueueOptions(delay=60, queue=queue_name + "-later")
    assert later.task is echo
    with pytest.raises(AttributeError):
        later.options = taskflow.EnqueueOptions()  # type: ignore[misc]
    async with app:
        handles = [await later.enqueue("a"), await later.enqueue(word="b")]
        assert [h.queue for h in handles] == [queue_name + "-later"] * 2
        assert all([await h.status() is JobStatus.DEFERRED for h in handles])
        assert await redis.zcard(keys.queue(queue_name + "-later")) == 2
        assert await redis.zcard(keys.queue(queue_name)) == 0
        await echo.enqueue("now")  # the task itself is unchanged
        assert await redis.zcard(keys.queue(queue_name)) == 1


async def test_enqueue_many_and_map(app: taskflow.TaskFlow, queue_name: str, redis: Redis) -> None:
    @app.task
    async def greet(name: str, punctuation: str = "!") -> str:
        return name + punctuation

    other = queue_name + "-other"
    async with app:
        many = await greet.enqueue_many([greet.call("a"), greet.call("b", punctuation="?")])
        pairs = await greet.enqueue_many([(("c",), {"punctuation": "."})])
        mapped = await greet.map(["d", "e"])
        deferred = await greet.with_options(delay=60, queue=other).map(["f", "g", "h"])
        bound_many = await greet.with_options(queue=other).enqueue_many(greet.call(n) for n in "ij")
        assert [h.queue for h in deferred + bound_many] == [other] * 5
        assert [await h.status() for h in deferred] == [JobStatus.DEFERRED] * 3
        assert await redis.zcard(keys.queue(other)) == 5
        async with app.worker():
            results = [await h.result(timeout=RESULT_TIMEOUT) for h in many + pairs + mapped]
        assert results == ["a!", "b?", "c.", "d!", "e!"]


async def test_enqueue_many_is_all_or_nothing(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    @app.task
    async def square(n: int) -> int:
        return n * n

    async with app:
        with pytest.raises(taskflow.ArgumentError, match="call 1: "):
            await square.enqueue_many([square.call(1), (("two",), {}), square.call(3)])
        with pytest.raises(taskflow.ArgumentError, match="call 2: "):
            await square.map([1, 2, "three"])  # type: ignore[list-item]
        with pytest.raises(taskflow.ConfigurationError, match="job_id 'one' names a single job"):
            await square.with_options(job_id="one").map([1, 2])
        with pytest.raises(taskflow.ConfigurationError, match="job_id 'one' names a single job"):
            await square.with_options(job_id="one").enqueue_many([square.call(1)])
        assert await redis.zcard(keys.queue(queue_name)) == 0
        assert await redis.exists(keys.job("one")) == 0
        assert await square.enqueue_many([]) == []


async def test_deprecated_underscore_options_still_work(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    @app.task
    async def noop(n: int = 0) -> int:
        return n

    other = queue_name + "-other"
    job_id = new_id()
    async with app:
        with pytest.warns(DeprecationWarning, match=r"use task.with_options\(delay=\.\.\.\)") as w:
            delayed = await noop.enqueue(_delay=60)  # type: ignore[call-arg]
        assert w[0].filename == __file__  # the warning points at the caller
        assert await delayed.status() is JobStatus.DEFERRED
        with pytest.warns(DeprecationWarning, match=r"with_options\(defer_until=\.\.\.\)"):
            until = datetime.now(UTC) + timedelta(minutes=1)
            deferred = await noop.enqueue(1, _defer_until=until)  # type: ignore[call-arg]
        assert await deferred.status() is JobStatus.DEFERRED
        with pytest.warns(DeprecationWarning, match=r"with_options\(job_id=\.\.\., queue=\.\.\.\)"):
            by_id = await noop.enqueue(2, _job_id=job_id, _queue=other)  # type: ignore[call-arg]
        assert (by_id.job_id, by_id.queue) == (job_id, other)
        with pytest.warns(DeprecationWarning, match=r"with_options\(queue=\.\.\.\).enqueue\("):
            await app.enqueue("noop", 3, _queue=other)
        with pytest.warns(DeprecationWarning, match=r"with_options\(delay=\.\.\.\).enqueue_many"):
            many = await noop.enqueue_many([noop.call(4)], _delay=60)
        with pytest.warns(DeprecationWarning, match=r"with_options\(queue=\.\.\.\).map"):
            mapped = await noop.map([5, 6], _queue=other)
        assert await many[0].status() is JobStatus.DEFERRED
        assert [h.queue for h in mapped] == [other, other]
        assert await redis.zcard(keys.queue(other)) == 4
        # bad values are still refused, as with_options refuses them
        with (
            pytest.warns(DeprecationWarning),
            pytest.raises(taskflow.ConfigurationError, match="delay must be >= 0"),
        ):
            await noop.enqueue(_delay=-1)  # type: ignore[call-arg]
        with pytest.raises(taskflow.ConfigurationError, match="unknown enqueue option '_dealy'"):
            await noop.enqueue(_dealy=1)  # type: ignore[call-arg]
    assert await redis.zcard(keys.queue(queue_name)) == 3


async def test_job_id_dedupe(app: taskflow.TaskFlow, queue_name: str, redis: Redis) -> None:
    calls: list[int] = []

    @app.task
    async def once(n: int) -> int:
        calls.append(n)
        return n

    job_id = new_id()
    async with app:
        first = await once.with_options(job_id=job_id).enqueue(1)
        second = await once.with_options(job_id=job_id).enqueue(2)
        assert first.enqueued and not second.enqueued
        assert second.job_id == first.job_id == job_id
        assert await redis.zcard(keys.queue(queue_name)) == 1
        async with app.worker(concurrency=1):
            assert await second.result(timeout=RESULT_TIMEOUT) == 1
            # the result still holds the id: a later enqueue is a no-op too
            third = await once.with_options(job_id=job_id).enqueue(3)
            assert not third.enqueued
            assert await redis.zscore(keys.queue(queue_name), job_id) is None
            # one worker slot, FIFO: had `third` been queued, it would run before this
            assert await (await once.enqueue(4)).result(timeout=RESULT_TIMEOUT) == 4
        assert calls == [1, 4]
        assert await first.result(timeout=1) == 1


async def test_queue_override(app: taskflow.TaskFlow, queue_name: str, redis: Redis) -> None:
    other = queue_name + "-other"

    @app.task
    async def where() -> str:
        return taskflow.current_job().queue

    async with app:
        handle = await where.with_options(queue=other).enqueue()
        assert handle.queue == other
        assert await redis.zcard(keys.queue(other)) == 1
        assert await redis.zcard(keys.queue(queue_name)) == 0
        async with app.worker(queues=[other]):
            assert await handle.result(timeout=RESULT_TIMEOUT) == other


# -- one worker, several queues -----------------------------------------------------------


async def test_one_concurrency_limit_across_queues(app: taskflow.TaskFlow, queue_name: str) -> None:
    q1, q2 = queue_name, queue_name + "-b"
    running = 0
    peak = 0
    served: list[str] = []

    async def body(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        served.append(taskflow.current_job().queue)
        try:
            await anyio.sleep(0.05)
        finally:
            running -= 1
        return n

    first = app.task(name="first", queue=q1)(body)

    async def body2(n: int) -> int:
        return await body(n)

    second = app.task(name="second", queue=q2)(body2)

    async with app:
        handles = [await first.enqueue(i) for i in range(4)]
        handles += [await second.enqueue(i) for i in range(4, 8)]
        async with app.worker(queues=[q1, q2], concurrency=2) as worker:
            assert worker.queues == [q1, q2]
            results = [await h.result(timeout=RESULT_TIMEOUT) for h in handles]
    assert results == list(range(8))
    assert peak == 2
    assert sorted(served) == sorted([q1] * 4 + [q2] * 4)


# -- results ------------------------------------------------------------------------------


async def test_unencodable_result_fails_the_job(app: taskflow.TaskFlow) -> None:
    @app.task
    async def opaque() -> object:
        return object()

    async with app, app.worker():
        handle = await opaque.enqueue()
        with pytest.raises(taskflow.TaskFailed) as info:
            await handle.result(timeout=RESULT_TIMEOUT)
        assert await handle.status() is JobStatus.FAILED
    assert info.value.error_type == "taskflow.ResultNotEncodable"
    assert "object" in info.value.error_message


async def test_result_over_payload_cap_fails_the_job(
    make_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = make_app(max_payload_bytes=2048)

    @app.task
    async def huge(n: int) -> str:
        return "x" * n

    async with app, app.worker():
        assert await (await huge.enqueue(100)).result(timeout=RESULT_TIMEOUT) == "x" * 100
        with pytest.raises(taskflow.TaskFailed) as info:
            await (await huge.enqueue(5000)).result(timeout=RESULT_TIMEOUT)
    assert info.value.error_type == "taskflow.ResultNotEncodable"
    assert "over the 2048-byte cap" in info.value.error_message


async def test_job_near_payload_cap_with_small_result_succeeds(
    make_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = make_app(max_payload_bytes=2048)

    @app.task
    async def digest(blob: str) -> int:
        return len(blob)

    async with app, app.worker():
        handle = await digest.enqueue("x" * 1900)  # accepted: the job is under the cap
        assert await handle.result(timeout=RESULT_TIMEOUT) == 1900


async def test_result_ttl(app: taskflow.TaskFlow, redis: Redis) -> None:
    calls: list[str] = []

    @app.task(result_ttl=30)
    async def short() -> str:
        calls.append("short")
        return "s"

    @app.task
    async def default() -> str:
        calls.append("default")
        return "d"

    @app.task(result_ttl=0)
    async def none_kept() -> str:
        calls.append("none")
        return "n"

    async with app, app.worker():
        short_job, default_job = await short.enqueue(), await default.enqueue()
        assert await short_job.result(timeout=RESULT_TIMEOUT) == "s"
        assert await default_job.result(timeout=RESULT_TIMEOUT) == "d"
        assert 25_000 < await redis.pttl(keys.result(short_job.job_id)) <= 30_000
        day_ms = 24 * 3600 * 1000
        assert day_ms - 60_000 < await redis.pttl(keys.result(default_job.job_id)) <= day_ms
        dropped = await none_kept.enqueue()
        with pytest.raises(taskflow.JobNotFound):
            await dropped.result(timeout=RESULT_TIMEOUT)
    assert sorted(calls) == ["default", "none", "short"]
    assert await redis.exists(keys.result(dropped.job_id)) == 0


class CustomError(Exception):
    pass


async def test_task_failed_carries_error_as_strings(app: taskflow.TaskFlow) -> None:
    @app.task
    async def explode(kind: str) -> None:
        if kind == "custom":
            raise CustomError("custom 1")
        raise ValueError("boom 42")

    async with app, app.worker():
        handle = await explode.enqueue("value")
        with pytest.raises(taskflow.TaskFailed) as info:
            await handle.result(timeout=RESULT_TIMEOUT)
        with pytest.raises(taskflow.TaskFailed) as custom:
            await (await explode.enqueue("custom")).result(timeout=RESULT_TIMEOUT)
    failed = info.value
    assert isinstance(failed, taskflow.ExecutionError)
    assert (failed.job_id, failed.task, failed.status) == (handle.job_id, "explode", "failed")
    assert (failed.error_type, failed.error_message) == ("ValueError", "boom 42")
    assert all(
        isinstance(v, str) for v in (failed.error_type, failed.error_message, failed.traceback)
    )
    assert "Traceback (most recent call last)" in failed.traceback
    assert "in explode" in failed.traceback and "ValueError: boom 42" in failed.traceback
    assert str(failed) == f"job {handle.job_id!r} (explode) failed: ValueError: boom 42"
    assert custom.value.error_type == f"{__name__}.CustomError"


# -- lookups and lifecycle ----------------------------------------------------------------


async def test_unknown_job_id(app: taskflow.TaskFlow) -> None:
    async with app:
        missing = app.job(new_id(), task="whatever")
        assert await missing.status() is JobStatus.NOT_FOUND
        assert await missing.info() is None
        with pytest.raises(taskflow.JobNotFound) as info:
            await missing.result(timeout=1)
        assert info.value.job_id == missing.job_id
        assert isinstance(info.value, LookupError)
        with pytest.raises(taskflow.JobNotFound):
            await missing.abort()
        with pytest.raises(taskflow.UnknownTask, match="no task named 'missing'"):
            await app.enqueue("missing")


async def test_result_timeout(app: taskflow.TaskFlow) -> None:
    @app.task
    async def never_run() -> None:
        pass

    async with app:
        handle = await never_run.enqueue()
        with pytest.raises(taskflow.ResultTimeout) as info:
            await handle.result(timeout=0.1)
        assert isinstance(info.value, TimeoutError) and info.value.timeout == 0.1
        assert await handle.abort() is True


async def test_lifecycle_errors(app: taskflow.TaskFlow) -> None:
    @app.task
    async def noop() -> None:
        pass

    with pytest.raises(taskflow.LifecycleError, match="unopened"):
        app.redis  # noqa: B018
    with pytest.raises(taskflow.LifecycleError):
        await noop.enqueue()
    async with app:
        assert app.is_open
        await app.redis.ping()
        with pytest.raises(taskflow.LifecycleError, match="already open"):
            await app.__aenter__()
        worker = app.worker()
        async with worker:
            pass
        with pytest.raises(taskflow.LifecycleError, match="build a new one"):
            await worker.serve()
    assert not app.is_open
    with pytest.raises(taskflow.LifecycleError, match="closed"):
        app.redis  # noqa: B018


async def test_worker_opens_and_closes_an_unopened_app(app: taskflow.TaskFlow) -> None:
    @app.task
    async def hello() -> str:
        return "hi"

    async with app.worker():
        assert app.is_open
        assert await (await hello.enqueue()).result(timeout=RESULT_TIMEOUT) == "hi"
    assert not app.is_open
