"""Interoperability with plain arq on a real Redis, and refusal of pickled payloads."""

from __future__ import annotations

import base64
import pathlib
import pickle
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import pytest_asyncio
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.jobs import JobStatus as ArqJobStatus
from arq.jobs import SerializationError as ArqSerializationError
from arq.worker import Worker as ArqWorker
from arq.worker import func
from redis.asyncio import Redis

import taskflow
from taskflow import serde
from taskflow._protocol import codecs, keys
from tests.apps.shared import REDIS_URL

pytestmark = pytest.mark.asyncio

RESULT_TIMEOUT = 10.0


@pytest_asyncio.fixture
async def arq_pool() -> AsyncIterator[ArqRedis]:
    """A plain arq client speaking taskflow's JSON wire format."""
    pool = await create_pool(
        RedisSettings.from_dsn(REDIS_URL),
        job_serializer=serde.arq_serializer,
        job_deserializer=serde.arq_deserializer,
    )
    try:
        yield pool
    finally:
        await pool.aclose()


# -- arq client -> taskflow worker --------------------------------------------------------


async def test_arq_client_reaches_taskflow_worker(
    app: taskflow.TaskFlow, queue_name: str, arq_pool: ArqRedis
) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def explode() -> None:
        raise ValueError("from taskflow")

    async with app, app.worker():
        positional = await arq_pool.enqueue_job("add", 2, 3, _queue_name=keys.queue(queue_name))
        keywords = await arq_pool.enqueue_job("add", a=4, b="5", _queue_name=keys.queue(queue_name))
        failing = await arq_pool.enqueue_job("explode", _queue_name=keys.queue(queue_name))
        assert positional is not None and keywords is not None and failing is not None
        assert await positional.result(timeout=RESULT_TIMEOUT, poll_delay=0.02) == 5
        assert await keywords.result(timeout=RESULT_TIMEOUT, poll_delay=0.02) == 9
        assert await positional.status() is ArqJobStatus.complete
        info = await positional.result_info()
        assert info is not None and info.success and info.job_try == 1
        args: object = info.args  # arq annotates a tuple; decoded from JSON it is a list
        assert info.function == "add" and args == [2, 3]

        # a failure reaches arq as data, never as a pickled exception: arq's result() can
        # only re-raise exception objects, so it reports the data as a SerializationError
        with pytest.raises(ArqSerializationError):
            await failing.result(timeout=RESULT_TIMEOUT, poll_delay=0.02)
        failed = await failing.result_info()
        assert failed is not None and failed.success is False
        assert failed.result["type"] == "ValueError"
        assert failed.result["message"] == "from taskflow"

        # and taskflow's own handle reads the same job
        handle = app.job(positional.job_id, queue=queue_name)
        assert await handle.result(timeout=1) == 5


async def test_arq_client_bad_arguments_are_rejected_by_the_worker(
    app: taskflow.TaskFlow, queue_name: str, arq_pool: ArqRedis
) -> None:
    calls = 0

    @app.task(retries=2)
    async def add(a: int, b: int) -> int:
        nonlocal calls
        calls += 1
        return a + b

    async with app, app.worker():
        job = await arq_pool.enqueue_job("add", "one", 2, _queue_name=keys.queue(queue_name))
        assert job is not None
        with pytest.raises(taskflow.TaskFailed) as info:
            await app.job(job.job_id, queue=queue_name).result(timeout=RESULT_TIMEOUT)
    assert calls == 0
    assert info.value.error_type.endswith("ArgumentError") and "argument 'a'" in str(info.value)


async def test_arq_abort_signal_cancels_a_queued_job(
    app: taskflow.TaskFlow, queue_name: str, arq_pool: ArqRedis
) -> None:
    calls = 0

    @app.task
    async def victim() -> None:
        nonlocal calls
        calls += 1

    async with app:
        job = await arq_pool.enqueue_job("victim", _queue_name=keys.queue(queue_name))
        assert job is not None
        # what arq's Job.abort() writes: the job id in arq's abort set, scored by time
        await arq_pool.zadd(keys.ABORT, {job.job_id: int(time.time() * 1000)})
        handle = app.job(job.job_id, task="victim", queue=queue_name)
        async with app.worker():
            with pytest.raises(taskflow.TaskFailed) as info:
                await handle.result(timeout=RESULT_TIMEOUT)
        assert calls == 0
        assert info.value.status == "cancelled" and info.value.error_type == "taskflow.Aborted"
        assert await handle.status() is taskflow.JobStatus.CANCELLED
        assert await arq_pool.zscore(keys.ABORT, job.job_id) is None
        arq_view = await job.result_info()
        assert arq_view is not None and arq_view.success is False


# -- taskflow client -> arq worker --------------------------------------------------------


async def _arq_add(ctx: dict[str, Any], a: int, b: int) -> int:
    assert "redis" in ctx  # really run by arq
    return a + b


async def _arq_explode(ctx: dict[str, Any]) -> None:
    raise ValueError("from arq")


async def test_taskflow_client_reaches_arq_worker(app: taskflow.TaskFlow, queue_name: str) -> None:
    # the client only needs the signatures; the bodies never run here
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        raise AssertionError("must run on the arq worker")

    @app.task(name="explode")
    async def explode() -> None:
        raise AssertionError("must run on the arq worker")

    async with app:
        # "40" is converted to 40 by the client, as the signature says (a type checker objects)
        ok = await add.enqueue(2, "40")  # type: ignore[arg-type]
        bad = await explode.enqueue()
        worker_pool = await create_pool(
            RedisSettings.from_dsn(REDIS_URL),
            job_serializer=serde.arq_serializer,
            job_deserializer=serde.arq_deserializer,
            default_queue_name=keys.queue(queue_name),
        )
        worker = ArqWorker(
            functions=[func(_arq_add, name="add"), func(_arq_explode, name="explode")],
            queue_name=keys.queue(queue_name),
            redis_pool=worker_pool,
            burst=True,
            poll_delay=0.01,
            handle_signals=False,
            job_serializer=serde.arq_serializer,
            job_deserializer=serde.arq_deserializer,
        )
        try:
            with anyio.fail_after(RESULT_TIMEOUT):
                await worker.async_run()
        finally:
            await worker.close()
        assert (worker.jobs_complete, worker.jobs_failed) == (1, 1)
        assert await ok.result(timeout=1) == 42
        assert await ok.status() is taskflow.JobStatus.SUCCEEDED
        record = await ok.info()
        assert record is not None and record.attempt == 1 and record.worker is None
        with pytest.raises(taskflow.TaskFailed) as info:
            await bad.result(timeout=1)
        assert info.value.error_type == "ValueError" and info.value.error_message == "from arq"
        assert "Traceback" in info.value.traceback


# -- pickle is never executed -------------------------------------------------------------


class Canary:
    """Unpickling this writes a file: proof that a pickle payload was executed."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        # long data, so the payload is over RAW_KEEP_BYTES and the kept bytes are truncated
        return (pathlib.Path.write_text, (self.path, "executed " + "x" * 3000))


async def test_planted_pickle_is_refused_not_executed(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis, tmp_path: pathlib.Path
) -> None:
    # the canary is live: unpickling a twin of the payload really writes its file
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Canary(control)))  # deliberately, as a control
    assert control.read_text().startswith("executed")

    canary = tmp_path / "canary"
    payload = pickle.dumps(Canary(canary))
    assert len(payload) > codecs.RAW_KEEP_BYTES

    @app.task
    async def echo(value: str) -> str:
        return value

    job_id = f"evil-{uuid.uuid4().hex}"
    await redis.set(keys.job(job_id), payload, px=60_000)
    await redis.zadd(keys.queue(queue_name), {job_id: int(time.time() * 1000)})

    async with app, app.worker() as worker:
        handle = app.job(job_id, queue=queue_name)
        with pytest.raises(taskflow.TaskFailed) as info:
            await handle.result(timeout=RESULT_TIMEOUT)
        # the worker keeps serving
        assert await (await echo.enqueue("after")).result(timeout=RESULT_TIMEOUT) == "after"
        assert worker.counts["failed"] == 1 and worker.counts["succeeded"] == 1

    assert not canary.exists()
    failed = info.value
    assert failed.status == "failed"
    assert failed.error_type == "taskflow.CorruptPayload"
    assert "not JSON" in failed.error_message
    assert failed.error["raw_size"] == len(payload)
    kept = base64.b64decode(failed.error["raw_b64"])
    assert kept == payload[: codecs.RAW_KEEP_BYTES] and len(kept) < len(payload)
    # gone from the queue, not retried
    assert await redis.zscore(keys.queue(queue_name), job_id) is None
    assert await redis.exists(keys.job(job_id)) == 0
    assert not canary.exists()
