"""Job and system metrics end to end, on a real Redis with real workers.

The samples a worker records are captured by wrapping its recorder's ``record``; what
``app.metrics`` reads back from Redis must be the histogram of exactly those samples.

Isolation: the metric bucket hashes and the system stream are shared by every test (and
every process using the server), so each test uses its own task and queue names, filters
summaries by them, and reads system samples by worker id. Only the retention test uses
1-second buckets.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from anyio.lowlevel import checkpoint
from redis.asyncio import Redis

import taskflow
from taskflow.config import MetricsSettings, Resolution
from taskflow.metrics import (
    RELATIVE_ERROR,
    Distribution,
    Histogram,
    JobSample,
    MetricsRecorder,
    MetricsSummary,
)
from taskflow.metrics.recorder import SEP
from tests.apps import metrics_worker_app
from tests.helpers import reply, until
from tests.processes import Workers, wait_live

pytestmark = pytest.mark.asyncio

FAST = MetricsSettings(
    flush_interval=timedelta(milliseconds=100), system_interval=timedelta(milliseconds=200)
)
QUICK = taskflow.Backoff(base=0.05, cap=0.05, jitter=False)
WINDOW = timedelta(minutes=10)  # the summaries' window: covers the test, 1-minute buckets
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
BOUND = RELATIVE_ERROR * (1 + 1e-9)
RESULT_TIMEOUT = 15.0
WORKER_APP = "tests.apps.metrics_worker_app:app"


def unique(tag: str) -> str:
    return f"m_{tag}_{uuid.uuid4().hex[:10]}"


def exact(values: list[float], q: float) -> float:
    """The value at the lower rank floor(q * (n - 1)), as the histogram defines quantiles."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def recorder_of(worker: taskflow.Worker) -> MetricsRecorder | None:
    """The worker's metrics recorder service, if it runs one."""
    return next((s for s in worker.services if isinstance(s, MetricsRecorder)), None)


def capture(worker: taskflow.Worker) -> list[JobSample]:
    """Every sample ``worker`` records from now on (still recorded as usual)."""
    samples: list[JobSample] = []
    recorder = recorder_of(worker)
    assert recorder is not None
    record = recorder.job_finished

    def spy(sample: JobSample) -> None:
        samples.append(sample)
        record(sample)

    recorder.job_finished = spy  # type: ignore[method-assign]
    return samples


async def flushed(
    app: taskflow.TaskFlow, count: int, *, timeout: float = 10.0, **filters: Any
) -> MetricsSummary:
    """The summary (over WINDOW, with ``filters``) once it counts ``count`` attempts."""
    summary: MetricsSummary | None = None

    async def complete() -> bool:
        nonlocal summary
        summary = await app.metrics.summary(since=WINDOW, **filters)
        assert summary.count <= count, summary
        return summary.count == count

    await until(complete, timeout, interval=0.05)
    assert summary is not None
    return summary


def assert_is_histogram_of(d: Distribution, values: list[float]) -> None:
    """``d`` is exactly what the histogram of ``values`` says (sum up to float rounding),
    and its percentiles are within the stated error of the exact ones."""
    h = Histogram.of(values)
    assert d.count == len(values)
    assert d.max == max(values)
    assert d.mean == pytest.approx(math.fsum(values) / len(values), rel=1e-9, abs=1e-12)
    for name, q in QUANTILES.items():
        got = getattr(d, name)
        assert got == h.quantile(q), name
        want = exact(values, q)
        assert abs(got - want) <= BOUND * want, (name, got, want)


def assert_near_exact(d: Distribution, values: list[float], slack: float) -> None:
    """``d``'s percentiles are within the stated error (plus ``slack`` seconds of measurement
    difference) of the exact percentiles of ``values``."""
    assert d.count == len(values)
    for name, q in QUANTILES.items():
        got, want = getattr(d, name), exact(values, q)
        assert abs(got - want) <= BOUND * want + slack, (name, got, want)
    assert d.max == pytest.approx(max(values), rel=BOUND, abs=slack)
    assert d.mean == pytest.approx(sum(values) / len(values), abs=slack)


async def outcome_of(handle: taskflow.JobHandle[Any]) -> Any:
    try:
        return await handle.result(timeout=RESULT_TIMEOUT)
    except taskflow.TaskFailed as exc:
        return exc


# -- job metrics ----------------------------------------------------------------------------


async def test_stored_summary_is_the_histogram_of_the_samples(
    make_app: Any, queue_name: str
) -> None:
    app: taskflow.TaskFlow = make_app(metrics=FAST)
    name = unique("mix")
    elapsed: list[float] = []  # the body's wall time of every attempt, measured by itself

    @app.task(name=name, retries=1, backoff=QUICK)
    async def mixed(seconds: float, mode: str) -> str:
        attempt = taskflow.current_job().attempt
        started = time.perf_counter()
        await anyio.sleep(seconds)
        elapsed.append(time.perf_counter() - started)
        if mode == "fail" or (mode == "flaky" and attempt == 1):
            raise ValueError(f"{mode} attempt {attempt}")
        return mode

    modes = ["ok"] * 30 + ["fail"] * 5 + ["flaky"] * 5
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((0.002 * (i % 25), mode), {}) for i, mode in enumerate(modes)
    ]
    async with app:
        started_ms = int(time.time() * 1000)
        handles = await mixed.enqueue_many(calls)
        worker = app.worker()
        samples = capture(worker)
        async with worker:
            outcomes = [await outcome_of(h) for h in handles]
            summary = await flushed(app, 50, task=name)
        by_queue = await app.metrics.summary(queue=queue_name, since=WINDOW)
    finished_ms = int(time.time() * 1000)

    assert sum(isinstance(o, taskflow.TaskFailed) for o in outcomes) == 5
    # 30 ok + 5 flaky that succeed on their 2nd attempt; 5 fail twice; 10 first attempts retried
    assert len(samples) == len(elapsed) == 50
    assert Counter(s.outcome for s in samples) == {"succeeded": 35, "retrying": 10, "failed": 5}
    assert (summary.count, summary.succeeded, summary.failures, summary.retried) == (50, 35, 5, 10)
    assert (summary.cancelled, summary.requeued, summary.reruns) == (0, 0, 10)
    assert summary.failure_rate == pytest.approx(5 / 50)
    assert summary.task == name and summary.queue is None
    seconds = (summary.until - summary.since).total_seconds()
    assert summary.until - summary.since >= WINDOW - timedelta(seconds=1)
    # attempts per second over the window, which may be widened to whole buckets
    width = summary.resolution.total_seconds()
    assert 50 / (seconds + width) * 0.999 <= summary.rate <= 50 / seconds * 1.001
    assert by_queue.count == 50 and by_queue.run == summary.run  # only this task used the queue
    for s in samples:
        assert (s.task, s.queue) == (name, queue_name)
        assert started_ms <= s.finished_ms <= finished_ms
        assert s.wait >= 0 and s.run >= 0 and s.memory >= 0 and s.rss > 0
        assert s.cpu <= s.run + 0.005  # the body's own CPU cannot exceed its wall time

    # what Redis holds is exactly the histogram of what the worker measured
    assert_is_histogram_of(summary.run, [s.run for s in samples])
    assert_is_histogram_of(summary.wait, [s.wait for s in samples])
    assert_is_histogram_of(summary.cpu, [s.cpu for s in samples])
    assert_is_histogram_of(summary.memory, [float(s.memory) for s in samples])
    # and agrees with the run times the bodies measured themselves; the worker's run time of
    # an attempt covers its body and only microseconds more (20 ms allowed on a busy machine)
    for measured, reported in zip(sorted(s.run for s in samples), sorted(elapsed), strict=True):
        assert reported <= measured <= reported + 0.02
    assert_near_exact(summary.run, elapsed, slack=0.02)


async def test_queue_wait_and_memory_growth_are_plausible(make_app: Any) -> None:
    app: taskflow.TaskFlow = make_app(metrics=FAST)
    name = unique("wait")
    held: list[bytes] = []
    size = 64 * 2**20

    @app.task(name=name, retries=1, backoff=taskflow.Backoff(base=0.2, cap=0.2, jitter=False))
    async def job(mode: str) -> None:
        if mode == "grow":
            held.append(b"x" * size)  # written, so resident; kept past the attempt
        if mode == "flaky" and taskflow.current_job().attempt == 1:
            raise ValueError("once")

    async with app:
        queued = await job.enqueue_many([(("plain",), {}) for _ in range(3)])
        delayed = await job.with_options(delay=0.3).enqueue("plain")
        await anyio.sleep(0.5)  # no worker yet: the first jobs wait 0.5 s, the delayed 0.2 s
        worker = app.worker()
        samples = capture(worker)
        async with worker:
            for handle in [*queued, delayed]:
                await handle.result(timeout=RESULT_TIMEOUT)
            flaky = await job.enqueue("flaky")
            await flaky.result(timeout=RESULT_TIMEOUT)
            grown = await job.enqueue("grow")
            await grown.result(timeout=RESULT_TIMEOUT)
            summary = await flushed(app, 7, task=name)
    held.clear()

    waits = [s.wait for s in samples]
    # the first four started together: three queued 0.5 s before a worker ran, one due 0.3 s
    # after its enqueue, which waited only since then
    first, *plain = sorted(waits[:4])
    assert all(0.45 <= w < 5 for w in plain), waits
    assert 0.2 < min(plain) - first < 0.4, waits
    retry = next(s for s in samples if s.attempt == 2)
    assert retry.wait < 0.15, retry  # measured from the retry's due time, not the enqueue
    [grow] = samples[-1:]
    assert grow.memory >= size * 0.9, grow
    assert grow.rss >= grow.memory
    assert summary.memory.max == grow.memory
    assert summary.wait.max == max(waits)


async def test_cpu_time_is_per_job_among_concurrent_jobs(make_app: Any) -> None:
    app: taskflow.TaskFlow = make_app(metrics=FAST)
    cpu_name, io_name = unique("cpu"), unique("io")
    spans: dict[str, tuple[float, float]] = {}

    @app.task(name=cpu_name)
    async def crunch(seconds: float) -> int:
        """A tight Python loop for ``seconds`` of wall time, yielding to the loop now and then."""
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < seconds:
            for _ in range(5000):
                n += 1
            await checkpoint()
        spans["cpu"] = (started, time.monotonic())
        return n

    @app.task(name=io_name)
    async def wait_io(seconds: float) -> None:
        started = time.monotonic()
        await anyio.sleep(seconds)
        spans["io"] = (started, time.monotonic())

    async with app:
        io_job = await wait_io.enqueue(0.6)
        cpu_job = await crunch.enqueue(0.3)
        worker = app.worker()
        samples = capture(worker)
        async with worker:
            assert await cpu_job.result(timeout=RESULT_TIMEOUT) > 0
            await io_job.result(timeout=RESULT_TIMEOUT)
            cpu_summary = await flushed(app, 1, task=cpu_name)
            io_summary = await flushed(app, 1, task=io_name)

    # they did run at the same time, in one worker
    (cpu_start, cpu_end), (io_start, io_end) = spans["cpu"], spans["io"]
    assert io_start < cpu_end and cpu_start < io_end, spans
    [cpu] = [s for s in samples if s.task == cpu_name]
    [io] = [s for s in samples if s.task == io_name]
    # CPU time: the loop's, not the sleeper's
    assert cpu.cpu >= 0.01, cpu  # ~0.3 s on an idle machine; much less on a busy one
    assert cpu.cpu >= 10 * io.cpu, (cpu, io)
    # wall time says the opposite: the sleeper took longest, and mostly waited
    assert io.run > cpu.run, (cpu, io)
    assert io.run >= 0.55 and io.run >= 10 * io.cpu, io
    # the stored summaries say the same
    assert cpu_summary.cpu.max == cpu.cpu and io_summary.cpu.max == io.cpu
    assert cpu_summary.run.max == cpu.run and io_summary.run.max == io.run


@pytest.mark.slow
async def test_summary_over_two_worker_processes_is_the_summary_of_the_union(
    redis: Redis, tmp_path: Path
) -> None:
    name = unique("two")
    queues = [f"mq-a-{uuid.uuid4().hex[:10]}", f"mq-b-{uuid.uuid4().hex[:10]}"]
    n = 40  # jobs per worker
    with Workers(tmp_path, WORKER_APP) as workers:
        procs = [
            workers.spawn([q], concurrency=50, env={"TEST_QUEUE": q, "TEST_TASK": name})
            for q in queues
        ]
        for proc in procs:
            await wait_live(redis, proc)
        client = metrics_worker_app.make_app(queues[0], name)
        async with client:
            task = client.get_task(name)
            halves = []
            for half, queue in enumerate(queues):
                calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
                    ((0.01 + 0.01 * (2 * i + half), i % 10 == 3), {}) for i in range(n)
                ]  # 10 ms .. 800 ms, interleaved, 4 failures per half
                halves.append(await task.with_options(queue=queue).enqueue_many(calls))
            elapsed: list[list[float]] = [[], []]
            for half, handles in enumerate(halves):
                for outcome in [await outcome_of(h) for h in handles]:
                    if isinstance(outcome, taskflow.TaskFailed):
                        assert outcome.error_type.endswith("MeasuredFailure"), outcome
                        elapsed[half].append(float(outcome.error_message))
                    else:
                        assert outcome["pid"] == procs[half].pid  # disjoint halves
                        elapsed[half].append(outcome["elapsed"])
            union = await flushed(client, 2 * n, task=name)
            parts = [
                s
                for s in await client.metrics.summaries(since=WINDOW, by=("task", "queue"))
                if s.task == name
            ]

    assert [(s.queue, s.count) for s in parts] == [(q, n) for q in sorted(queues)]
    assert (union.count, union.succeeded, union.failures, union.retried) == (2 * n, 72, 8, 0)
    assert sum(s.count for s in parts) == union.count
    assert sum(s.failures for s in parts) == union.failures
    # each worker's part, and the whole, against the exact percentiles of what ran there
    for part in parts:
        assert_near_exact(part.run, elapsed[queues.index(part.queue or "")], slack=0.01)
    assert_near_exact(union.run, elapsed[0] + elapsed[1], slack=0.01)
    # merging: the whole's extremes are its parts' extremes, its mean their weighted mean
    assert union.run.max == max(s.run.max or 0 for s in parts)
    assert union.run.mean == pytest.approx(
        sum((s.run.mean or 0) * s.count for s in parts) / union.count, rel=1e-9
    )


async def test_cancelled_and_requeued_attempts_are_counted(make_app: Any) -> None:
    app: taskflow.TaskFlow = make_app(metrics=FAST)
    name = unique("int")

    holding = [True]

    @app.task(name=name)
    async def hold(seconds: float) -> int:
        if holding[0]:
            await anyio.sleep(seconds)
        return taskflow.current_job().attempt

    async with app:
        aborted, drained = await hold.enqueue(30), await hold.enqueue(30)
        worker = app.worker()
        samples = capture(worker)
        async with worker:

            async def both_running() -> bool:
                return len(worker.running) == 2

            await until(both_running)
            assert await aborted.abort()

            async def recorded() -> bool:
                return len(samples) == 1

            await until(recorded)
            worker.hurry()  # stop now: the other one goes back to its queue
        holding[0] = False
        async with app.worker():
            assert await drained.result(timeout=RESULT_TIMEOUT) == 1  # requeues give it back
            summary = await flushed(app, 3, task=name)

    assert [s.outcome for s in samples] == ["cancelled", "requeued"]
    assert (summary.count, summary.cancelled, summary.requeued) == (3, 1, 1)
    assert (summary.succeeded, summary.failures, summary.retried, summary.reruns) == (1, 0, 0, 0)
    assert all(0 <= s.run < 5 for s in samples)  # cut short, not the 30 s they asked for


async def test_a_failing_system_sample_does_not_stop_the_worker(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: taskflow.TaskFlow = make_app(metrics=FAST)
    name = unique("sysfail")

    @app.task(name=name)
    async def quick() -> int:
        return 1

    def gone(path: str) -> None:
        raise FileNotFoundError(path)  # as for a working directory deleted under the worker

    async with app:
        async with app.worker():
            # the psutil module that taskflow.metrics.system calls
            monkeypatch.setattr(psutil, "disk_usage", gone)
            await anyio.sleep(0.5)  # two system intervals of FAST
            assert await (await quick.enqueue()).result(timeout=RESULT_TIMEOUT) == 1


async def test_the_reported_window_covers_what_the_summary_counts(make_app: Any) -> None:
    app: taskflow.TaskFlow = make_app(metrics=FAST)
    name = unique("win")

    @app.task(name=name)
    async def quick() -> None:
        pass

    async with app:
        handles = await quick.enqueue_many([((), {}) for _ in range(10)])
        worker = app.worker()
        samples = capture(worker)
        async with worker:
            for handle in handles:
                await handle.result(timeout=RESULT_TIMEOUT)
            await flushed(app, 10, task=name)
        # a window just after every attempt finished, inside the same one-minute bucket
        since = datetime.fromtimestamp((max(s.finished_ms for s in samples) + 1) / 1000, UTC)
        await anyio.sleep(0.01)
        summary = await app.metrics.summary(
            task=name, since=since, until=since + timedelta(milliseconds=5)
        )
    assert summary.count == 10  # the bucket's attempts are all counted (documented widening)
    first = datetime.fromtimestamp(min(s.finished_ms for s in samples) / 1000, UTC)
    assert summary.since <= first, (summary.since, first)  # ...so the window must show it
    seconds = (summary.until - summary.since).total_seconds()
    assert summary.rate == pytest.approx(10 / seconds)


# -- querying -------------------------------------------------------------------------------


async def test_summaries_filter_and_group_by_task_and_queue(make_app: Any, queue_name: str) -> None:
    app: taskflow.TaskFlow = make_app(metrics=FAST)
    first, second = sorted([unique("f1"), unique("f2")])
    other_queue = f"{queue_name}-other"

    @app.task(name=first)
    async def one() -> None:
        pass

    @app.task(name=second)
    async def two() -> None:
        pass

    async with app:
        await one.enqueue_many([((), {}) for _ in range(3)])
        await one.with_options(queue=other_queue).enqueue_many([((), {}) for _ in range(2)])
        await two.enqueue_many([((), {}) for _ in range(4)])
        async with app.worker([queue_name, other_queue]):
            await flushed(app, 5, task=first)
            await flushed(app, 4, task=second)
        metrics = app.metrics

        assert (await metrics.summary(task=first, queue=other_queue, since=WINDOW)).count == 2
        assert (await metrics.summary(task=first, queue=queue_name, since=WINDOW)).count == 3
        assert (await metrics.summary(queue=queue_name, since=WINDOW)).count == 7
        assert (await metrics.summary(queue=other_queue, since=WINDOW)).count == 2
        assert (await metrics.summary(task=unique("none"), since=WINDOW)).count == 0

        mine = {first, second}
        by_both = await metrics.summaries(since=WINDOW)
        assert [(s.task, s.queue, s.count) for s in by_both if s.task in mine] == [
            (first, queue_name, 3),
            (first, other_queue, 2),
            (second, queue_name, 4),
        ]
        by_task = await metrics.summaries(since=WINDOW, by=("task",))
        assert [(s.task, s.queue, s.count) for s in by_task if s.task in mine] == [
            (first, None, 5),
            (second, None, 4),
        ]
        by_queue = await metrics.summaries(since=WINDOW, by=("queue",))
        assert [(s.queue, s.count) for s in by_queue if s.queue in (queue_name, other_queue)] == [
            (queue_name, 7),
            (other_queue, 2),
        ]

        # an aware window in the past holds none of these jobs
        now = datetime.now(UTC)
        past = await metrics.summary(
            task=first, since=now - timedelta(hours=3), until=now - timedelta(hours=2)
        )
        assert past.count == 0 and past.run.p50 is None and past.failure_rate == 0.0
        ms = timedelta(milliseconds=1)  # the window is reported to the millisecond...
        asked = now - timedelta(hours=3)
        # ...widened to the start of the bucket holding `since` (what the counts cover)
        assert past.since <= asked < past.since + past.resolution
        assert past.since.timestamp() * 1000 % (past.resolution.total_seconds() * 1000) == 0
        assert abs(past.until - (now - timedelta(hours=2))) < ms

        # bad windows and groupings name the problem
        naive = datetime.now()  # naive on purpose
        with pytest.raises(taskflow.ConfigurationError, match="timezone-aware"):
            await metrics.summary(since=naive)
        with pytest.raises(taskflow.ConfigurationError, match="timezone-aware"):
            await metrics.summary(since=now - timedelta(hours=1), until=naive)
        with pytest.raises(taskflow.ConfigurationError, match="timezone-aware"):
            await metrics.system(since=naive)
        with pytest.raises(taskflow.ConfigurationError, match=r"since .* after until"):
            await metrics.summary(since=now, until=now - timedelta(seconds=1))
        with pytest.raises(taskflow.ConfigurationError, match=r"since .* after until"):
            await metrics.summaries(since=now + timedelta(minutes=1), until=now)
        with pytest.raises(taskflow.ConfigurationError, match="outcome"):
            await metrics.summaries(by=("task", "outcome"))


async def test_retention_expires_buckets(make_app: Any, redis: Redis) -> None:
    width, retention = timedelta(seconds=1), timedelta(seconds=2)
    metrics = FAST.model_copy(
        update={"resolutions": (Resolution(bucket=width, retention=retention),)}
    )
    app: taskflow.TaskFlow = make_app(metrics=metrics)
    name = unique("ret")

    @app.task(name=name)
    async def quick() -> None:
        pass

    async with app:
        handle = await quick.enqueue()
        worker = app.worker()
        samples = capture(worker)
        async with worker:
            await handle.result(timeout=RESULT_TIMEOUT)
            assert (await flushed(app, 1, task=name)).resolution == width
        [sample] = samples
        key = app.keys.metrics_bucket(1, sample.finished_ms - sample.finished_ms % 1000)
        assert (
            await reply(redis.hget(key, f"{name}{SEP}{sample.queue}{SEP}succeeded{SEP}n")) == b"1"
        )
        ttl_ms = await redis.pttl(key)
        assert 1000 < ttl_ms <= 3000  # retention + one bucket, set at the last flush
        # only the configured resolution is written
        minute = app.keys.metrics_bucket(60, sample.finished_ms - sample.finished_ms % 60_000)
        assert not [f async for f in redis.hscan_iter(minute, match=f"{name}{SEP}*")]

        async def expired() -> bool:
            return not await redis.exists(key)

        await until(expired, timeout=5.0, interval=0.1)
        summary = await app.metrics.summary(task=name, since=timedelta(seconds=30))
        assert summary.count == 0 and summary.run.count == 0 and summary.run.max is None


async def test_disabled_metrics_write_nothing(make_app: Any, redis: Redis) -> None:
    app: taskflow.TaskFlow = make_app(metrics=FAST.model_copy(update={"enabled": False}))
    name = unique("off")

    @app.task(name=name)
    async def quick() -> None:
        await anyio.sleep(0.01)

    async with app:
        started_ms = int(time.time() * 1000)
        handles = await quick.enqueue_many([((), {}) for _ in range(5)])
        worker = app.worker()
        assert recorder_of(worker) is None
        assert not any(s.name in ("metrics-recorder", "system-collector") for s in worker.services)
        async with worker:
            for handle in handles:
                await handle.result(timeout=RESULT_TIMEOUT)
        # the worker has stopped (a recorder would have flushed on the way out)
        finished_ms = int(time.time() * 1000)
        assert (await app.metrics.summary(task=name, since=WINDOW)).count == 0
        assert await app.metrics.system(since=WINDOW, worker=worker.id) == {}

    for width_s in (60, 3600):
        width = width_s * 1000
        for start in range(started_ms - started_ms % width, finished_ms + 1, width):
            key = app.keys.metrics_bucket(width_s, start)
            assert not [f async for f in redis.hscan_iter(key, match=f"{name}{SEP}*")], key


# -- system samples -------------------------------------------------------------------------


async def test_system_samples_are_present_and_plausible(make_app: Any) -> None:
    app: taskflow.TaskFlow = make_app(metrics=FAST)
    name_block, name_idle = unique("block"), unique("idle")

    @app.task(name=name_block)
    async def block() -> None:
        time.sleep(0.3)  # holds the event loop: the lag probe must see it

    @app.task(name=name_idle)
    async def idle() -> None:
        await anyio.sleep(1.0)

    async with app:
        before_ms = int(time.time() * 1000)
        idle_job = await idle.enqueue()
        async with app.worker() as worker:
            await anyio.sleep(0.3)
            await (await block.enqueue()).result(timeout=RESULT_TIMEOUT)
            await idle_job.result(timeout=RESULT_TIMEOUT)
            await anyio.sleep(0.3)
        after_ms = int(time.time() * 1000)
        found = await app.metrics.system(since=WINDOW, worker=worker.id)

    assert list(found) == [worker.id]
    samples = found[worker.id]
    assert len(samples) >= 4, samples  # ~1.6 s at one sample per 200 ms
    times = [s.time_ms for s in samples]
    assert times == sorted(times)
    assert before_ms <= times[0] and times[-1] <= after_ms
    assert all(b - a >= 100 for a, b in zip(times, times[1:], strict=False)), times
    total_memory = psutil.virtual_memory().total
    for s in samples:
        assert s.worker == worker.id and s.host == socket.gethostname()
        assert 0 <= s.cpu_percent <= 100, s
        assert s.load_1m >= 0, s
        assert 0 < s.memory_used_bytes <= total_memory and 0 < s.memory_percent <= 100, s
        assert s.swap_used_bytes >= 0 and s.disk_used_bytes > 0 and 0 < s.disk_percent <= 100, s
        rates = (
            s.disk_read_bytes_per_s,
            s.disk_write_bytes_per_s,
            s.net_sent_bytes_per_s,
            s.net_recv_bytes_per_s,
        )
        assert all(r >= 0 for r in rates), s
        assert 10 * 2**20 < s.process_rss_bytes < 2 * 2**30, s
        assert s.process_cpu_percent >= 0, s
        assert s.process_open_files > 0, s
        assert 0 <= s.loop_lag_seconds < 5, s
        assert 0 <= s.running_jobs <= worker.settings.concurrency, s
    assert max(s.running_jobs for s in samples) >= 1  # the idle job was running for 1 s
    assert max(s.loop_lag_seconds for s in samples) >= 0.15  # the blocking job
    rss_now = psutil.Process(os.getpid()).memory_info().rss
    assert samples[-1].process_rss_bytes == pytest.approx(rss_now, rel=0.5)
