"""SLA targets against real metrics: a workload with a known p95, checked met and missed,
as an alert condition, and through the CLI."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest

import taskflow
from taskflow.alerts import Condition
from taskflow.alerts.sources import Measurer

pytestmark = pytest.mark.asyncio

TIMEOUT = 10


async def test_a_known_p95_is_checked_met_and_missed(
    make_app: Callable[..., taskflow.TaskFlow],
) -> None:
    base = make_app()  # the test's settings, under a name (and metrics) of its own
    app = taskflow.TaskFlow(settings=base.settings, name=f"sla-{uuid.uuid4().hex[:8]}")

    @app.task
    async def report(seconds: float) -> None:
        await anyio.sleep(seconds)

    @app.task(retries=0)
    async def flaky() -> None:
        raise ValueError("down")

    app.sla(task=report, run_time_p95=timedelta(seconds=0.5), failure_rate=0.01)
    app.sla(task="report", run_time_p95=timedelta(milliseconds=50))  # the p95 is ~0.1 s
    app.sla(task=flaky, failure_rate=0.5, min_throughput_per_min=0.1)
    app.sla(queue="nobody-runs-this", wait_p95=timedelta(seconds=1))
    with pytest.raises(taskflow.ConfigurationError, match="at least one of"):
        app.sla(task=report)
    with pytest.raises(taskflow.ConfigurationError, match="failure_rate=2"):
        app.sla(task=report, failure_rate=2)
    async with app, app.worker(concurrency=20):
        jobs = [await report.enqueue(0.1 if i < 18 else 0.02) for i in range(20)]
        for job in jobs:
            await job.result(timeout=TIMEOUT)
        with pytest.raises(taskflow.TaskFailed):
            await (await flaky.enqueue()).result(timeout=TIMEOUT)
        await anyio.sleep(1.5)  # a metrics flush
        result = await app.slas.check(since=timedelta(minutes=5))
        missed = await Measurer(app).value(
            Condition(metric="sla_missed", op=">", threshold=0, window=timedelta(minutes=5))
        )
    by = {(r.scope, r.metric, r.target): r for r in result.results}
    p95 = by[("task=report", "run_time_p95", 0.5)]
    assert p95.met is True and p95.value is not None and 0.09 <= p95.value <= 0.2
    assert by[("task=report", "run_time_p95", 0.05)].met is False
    assert by[("task=report", "failure_rate", 0.01)].met is True
    assert by[("task=flaky", "failure_rate", 0.5)].met is False  # 1 of 1 failed
    assert by[("task=flaky", "throughput_per_min", 0.1)].met is True
    assert by[("queue=nobody-runs-this", "wait_p95", 1.0)].met is None  # no data: not judged
    assert not result.met and len(result.missed) == 2
    assert missed == 2.0
    assert result.to_dict()["met"] is False
