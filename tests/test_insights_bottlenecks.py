"""Bottlenecks named from metrics that real workers stored: an under-provisioned queue, a
CPU-bound task; and each detector's thresholds on summaries built by hand."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import taskflow
from taskflow._critical_path import CriticalPath, PathNode
from taskflow._dag import NodeState
from taskflow.insights.bottlenecks import (
    MIN_ATTEMPTS,
    _failures,
    _memory_growth,
    _slow_dependencies,
    bottlenecks,
)
from taskflow.metrics import MetricsSummary
from taskflow.metrics.query import Distribution
from tests.apps.shared import fast_worker

pytestmark = pytest.mark.asyncio


async def test_an_under_provisioned_queue_and_a_cpu_bound_task_are_named(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app(worker=fast_worker())
    narrow, busy = f"{app.name}-narrow", f"{app.name}-busy"

    @app.task(queue=narrow)
    async def io_bound() -> None:
        await anyio.sleep(0.1)

    @app.task(queue=busy)
    async def crunch() -> None:
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:  # CPU work on the event loop
            pass

    async with app, app.worker(queues=[narrow], concurrency=1), app.worker(queues=[busy]):
        waiting = await io_bound.enqueue_many([((), {})] * 25)  # 2.5 s of work, one slot
        crunched = await crunch.enqueue_many([((), {})] * 25)
        for job in [*waiting, *crunched]:
            await job.result(timeout=30)
        await anyio.sleep(1.5)  # the last flush
        found = {(b.kind, b.subject): b for b in await bottlenecks(app, since=timedelta(hours=1))}
    queue = found["queue_wait", f"queue:{narrow}"]
    assert queue.evidence["wait_p95_s"] > 1.0 > queue.evidence["run_p95_s"]
    assert "under-provisioned" in queue.recommendation
    cpu = found["cpu_bound", f"task:{crunch.name}"]
    assert cpu.evidence["cpu_share"] >= 0.8 and "anyio.to_thread.run_sync" in cpu.recommendation
    assert ("cpu_bound", f"task:{io_bound.name}") not in found  # sleeping is not CPU


def _summary(**figures: float) -> MetricsSummary:
    def dist(mean: float | None) -> Distribution:
        return Distribution(MIN_ATTEMPTS, mean, mean, mean, mean, mean, mean)

    now = datetime.now(UTC)
    return MetricsSummary(
        task="t", queue="q", since=now, until=now, resolution=timedelta(minutes=1),
        count=int(figures.get("count", 100)), succeeded=0,
        failures=int(figures.get("failures", 0)), retried=int(figures.get("retried", 0)),
        cancelled=0, requeued=0, reruns=0, rate=1.0, run=dist(0.1), wait=dist(0.0),
        cpu=dist(0.0), memory=dist(figures.get("memory")),
    )  # fmt: skip


async def test_each_detector_needs_its_threshold_and_enough_attempts() -> None:
    assert _memory_growth(_summary(memory=2 << 20)) is not None
    assert _memory_growth(_summary(memory=100_000)) is None
    assert _memory_growth(_summary(memory=2 << 20, count=MIN_ATTEMPTS - 1)) is None
    kinds = [b.kind for b in _failures(_summary(failures=10, retried=20))]
    assert kinds == ["failures", "retries"]
    assert _failures(_summary(failures=1, retried=1)) == []


async def test_a_task_dominating_the_critical_paths_is_a_slow_dependency() -> None:
    def path(slow: float) -> CriticalPath:
        nodes = [
            PathNode("a", 0, "fetch", NodeState.SUCCEEDED, 1.0, 0.0, None, None),
            PathNode("b", 1, "render", NodeState.SUCCEEDED, slow, 0.0, None, None),
        ]
        return CriticalPath(nodes, 1.0 + slow, 1.0 + slow, 0.0, {}, nodes[1], False)

    [found] = _slow_dependencies([path(9.0), path(4.0)])
    assert found.subject == "task:render" and found.evidence["critical_path_share"] > 0.8


async def test_timeouts_and_a_slow_dependency_of_graph_runs_are_named(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app(worker=fast_worker())

    @app.task(timeout=0.05, retries=0)
    async def stalls() -> None:
        await anyio.sleep(5)

    @app.task
    async def fetch() -> int:
        await anyio.sleep(0.02)
        return 1

    @app.task
    async def render(value: int) -> int:
        await anyio.sleep(0.3)  # most of every run's critical path
        return value

    async with app, app.worker():
        with pytest.raises(taskflow.TaskFailed):
            await (await stalls.enqueue()).result(timeout=10)
        runs = []
        for i in range(2):
            graph = app.graph(f"page-{i}")
            graph.add(render, graph.add(fetch, name="fetch"), name="render")
            runs.append(await graph.submit())
        for run in runs:
            await run.wait(timeout=10)
        found = await app.insights(since=timedelta(hours=1), runs=runs)
    kinds = {(b.kind, b.subject): b for b in found.bottlenecks}
    timeouts = kinds["timeouts", f"task:{stalls.name}"]
    assert timeouts.evidence["failed_on_timeout"] >= 1
    slow = kinds["slow_dependency", f"task:{render.name}"]
    assert slow.evidence["critical_path_share"] > 0.8 and slow.evidence["runs"] == 2
