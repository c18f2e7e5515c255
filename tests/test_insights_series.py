"""Insight series read from metrics that real workers stored, on a compressed clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import taskflow
from taskflow.config import MetricsSettings, Resolution
from taskflow.insights.series import job_series, queue_series, system_series
from tests.apps.shared import fast_worker

pytestmark = pytest.mark.asyncio


async def test_a_planted_slowdown_shows_in_the_run_time_series(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    metrics = MetricsSettings(
        flush_interval=timedelta(milliseconds=200),
        system_interval=timedelta(milliseconds=200),
        resolutions=(Resolution(bucket=timedelta(minutes=1), retention=timedelta(days=1)),),
        time_scale=120.0,  # two metric minutes per wall second
        time_origin=datetime.now(UTC),
    )
    app = named_app(metrics=metrics, worker=fast_worker())

    @app.task
    async def work(delay: float) -> None:
        await anyio.sleep(delay)

    @app.task
    async def other() -> None:
        raise ValueError("always")

    async with app, app.worker(concurrency=4):
        for delay in (0.01, 0.01, 0.08, 0.08):  # a wall second (two metric minutes) each
            await anyio.sleep(max(0.0, 1 - delay * 5))
            for _ in range(5):
                await (await work.enqueue(delay)).result(timeout=10)
        with pytest.raises(taskflow.TaskFailed):
            await (await other.enqueue()).result(timeout=10)
        await anyio.sleep(0.6)  # the last flush and system sample
        series = {
            (s.subject, s.name): s for s in await job_series(app, since=timedelta(minutes=15))
        }
        by_queue = await job_series(
            app, since=timedelta(minutes=15), by="queue", names=["throughput"]
        )
        system = await system_series(app, since=timedelta(minutes=15))
    p95 = series["task:work", "run_time_p95"]
    assert len(p95.values) >= 3 and p95.unit == "s"
    early, late = p95.values[0], p95.values[-1]
    assert late >= 0.08 > early * 2  # the planted 8x slowdown, in the stored buckets
    assert all(b > a for a, b in zip(p95.times, p95.times[1:], strict=False))
    throughput = series["task:work", "throughput"]
    assert len(throughput.values) >= 15 and 0.0 in throughput.values  # empty buckets are zeros
    assert sum(v * 60 for v in throughput.values) == pytest.approx(20)
    assert series["task:other", "failure_rate"].values == [1.0]
    assert [s.subject for s in by_queue] == [f"queue:{app.name}"]
    assert {s.name for s in system} == {"system_cpu", "system_memory", "loop_lag"}
    assert all(len(s.values) >= 2 for s in system)


async def test_an_unknown_series_is_named(named_app: Callable[..., taskflow.TaskFlow]) -> None:
    app = named_app()
    async with app:
        with pytest.raises(ValueError, match="unknown job series \\['p99'\\]; valid: run_time_p50"):
            await job_series(app, names=["p99"])


async def test_an_under_provisioned_queue_grows_and_its_arrivals_are_estimated(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    metrics = MetricsSettings(
        flush_interval=timedelta(milliseconds=200),
        resolutions=(Resolution(bucket=timedelta(minutes=1), retention=timedelta(days=1)),),
        time_scale=60.0,  # a metric minute per wall second
        time_origin=datetime.now(UTC),
    )
    worker = fast_worker(monitor_interval=timedelta(milliseconds=200))
    app = named_app(metrics=metrics, worker=worker)

    @app.task
    async def slow() -> None:
        await anyio.sleep(0.5)  # two a second at most, with one slot

    async with app, app.worker(concurrency=1):
        for _ in range(5):  # four arrivals a wall second: the backlog grows
            await slow.enqueue_many([((), {})] * 4)
            await anyio.sleep(1)
        await anyio.sleep(0.5)
        found = {s.name: s for s in await queue_series(app, since=timedelta(minutes=30))}
        await app.queue(app.name).purge()
    depth, arrivals = found["queue_depth"], found["arrival_rate"]
    assert depth.subject == f"queue:{app.name}" and len(depth.values) >= 4
    assert depth.values[-1] > depth.values[0] + 3
    # 20 arrived over the window; the first bucket has no earlier depth to grow from
    assert 8 <= sum(v * 60 for v in arrivals.values) <= 22
