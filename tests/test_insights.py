"""app.insights() on load real workers ran, on a compressed metrics clock: a planted
slowdown is a significant rising trend; an under-provisioned queue is flagged, the advice
names a concurrency, and the same load run at that concurrency meets the target wait."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import taskflow
from taskflow.config import MetricsSettings, Resolution
from tests.apps.shared import fast_worker

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SCALE = 60.0  # a metric minute per wall second


def _compressed(named_app: Callable[..., taskflow.TaskFlow]) -> taskflow.TaskFlow:
    metrics = MetricsSettings(
        flush_interval=timedelta(milliseconds=200),
        system_interval=timedelta(milliseconds=250),
        resolutions=(Resolution(bucket=timedelta(minutes=1), retention=timedelta(days=1)),),
        time_scale=SCALE,
        time_origin=datetime.now(UTC),
    )
    worker = fast_worker(monitor_interval=timedelta(milliseconds=200))
    return named_app(metrics=metrics, worker=worker)


async def test_a_planted_slowdown_is_a_significant_rising_trend(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = _compressed(named_app)

    @app.task
    async def render(delay: float) -> None:
        await anyio.sleep(delay)

    async with app, app.worker(concurrency=20):
        for second in range(12):  # twelve metric minutes; run time 20 ms rising to 40 ms
            delay = 0.02 * (1 + second / 11)
            jobs = await render.enqueue_many([((delay,), {})] * 10)
            for job in jobs:
                await job.result(timeout=10)
            await anyio.sleep(0.7)
        await anyio.sleep(0.5)
        found = await app.insights(since=timedelta(minutes=15))
    [p95] = [
        t for t in found.trends if (t.series, t.subject) == ("run_time_p95", f"task:{render.name}")
    ]
    assert p95.trend.significant and p95.trend.direction == "rising"
    assert 0.5 < p95.trend.relative_change < 1.6  # doubled, within the buckets' noise
    assert "Mann-Kendall" in p95.trend.method


async def test_advice_for_an_under_provisioned_queue_meets_its_target_when_followed(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = _compressed(named_app)
    first, second = f"{app.name}-before", f"{app.name}-after"
    target = timedelta(seconds=0.5)

    @app.task
    async def call_api() -> None:
        await anyio.sleep(0.25)  # four a second per slot

    async def load(queue: str, seconds: int) -> None:
        """Eight arrivals a wall second, evenly spread."""
        task = call_api.with_options(queue=queue)
        for _ in range(seconds * 8):
            await task.enqueue()
            await anyio.sleep(0.125)

    async with app:
        async with app.worker(queues=[first], concurrency=1):
            await load(first, 8)
            await anyio.sleep(0.5)
            before = await app.insights(since=timedelta(minutes=10), target_wait=target)
            await app.queue(first).purge()
        [flagged] = [b for b in before.bottlenecks if b.subject == f"queue:{first}"]
        [advice] = [a for a in before.advice if a.queue == first]
        concurrency = advice.advice.concurrency * advice.advice.processes
        async with app.worker(queues=[second], concurrency=concurrency):
            await load(second, 8)
            await anyio.sleep(1)
            after = await app.metrics.summary(queue=second, since=timedelta(minutes=10))
    assert flagged.kind == "queue_wait"
    assert 6 <= advice.arrival_rate <= 10 and advice.service_time == pytest.approx(0.25, 0.2)
    assert advice.advice.meets_target and 3 <= concurrency <= 6
    assert after.count == 64 and after.wait.mean is not None
    assert after.wait.mean <= target.total_seconds()
