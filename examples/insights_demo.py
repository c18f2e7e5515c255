"""A day of load in half a minute, then what taskflow's insights make of it.

Two queues run on real workers in this process, with the metrics' clock compressed
(``MetricsSettings.time_scale``: by default an hour of metrics per wall second, so
``--hours 24`` takes 24 s). Planted in the load:

- ``render`` jobs on ``pages`` get slower through the day: their run time doubles;
- ``export`` jobs on ``reports`` arrive faster than the one slot serving them can run
  them: an under-provisioned queue.

Then it prints the insights (significant trends, bottlenecks with what to do, forecasts
with their intervals, worker advice with its assumptions) and writes the report as one
HTML file (``--output``, default ``insights-report.html``). Run it with
``python examples/insights_demo.py`` (``--hours 6`` for a shorter day). Uses the Redis
at ``TASKFLOW_REDIS_URL`` or, with none, a private embedded one; needs the ``insights``
extra (``pip install 'taskflow-redis[insights]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import anyio
from rich.console import Console
from rich.table import Table

import taskflow
from taskflow.config import MetricsSettings, Resolution
from taskflow.insights.analysis import Insights
from taskflow.metrics.clock import metrics_now

HOUR_PER_SECOND = 3600.0  # the metrics' clock: an hour per wall second


def build(name: str) -> taskflow.TaskFlow:
    """The demo's app, its metrics on the compressed clock from now."""
    metrics = MetricsSettings(
        flush_interval=timedelta(milliseconds=250),
        system_interval=timedelta(milliseconds=250),
        resolutions=(Resolution(bucket=timedelta(minutes=1), retention=timedelta(days=2)),),
        time_scale=HOUR_PER_SECOND,
        time_origin=datetime.now(UTC),
    )
    worker = taskflow.WorkerSettings(monitor_interval=timedelta(milliseconds=250))
    settings = taskflow.Settings(metrics=metrics, worker=worker, default_queue="pages")
    return taskflow.TaskFlow(name=name, settings=settings)


async def drive(app: taskflow.TaskFlow, hours: int, rng: random.Random) -> int:
    """Each wall second (a metric hour), in four even slices: 40 renders, slower as the day
    goes on, and 12 exports for a queue whose one slot can run 10."""
    render = app.tasks["render"]
    export = app.tasks["export"].with_options(queue="reports")
    sent = 0
    for quarter in range(hours * 4):
        slowdown = 1 + quarter / max(1, hours * 4 - 1)  # 1x at dawn, 2x at night
        renders: list[tuple[tuple[float], dict[str, object]]] = [
            ((0.02 * slowdown * rng.uniform(0.8, 1.2),), {}) for _ in range(10)
        ]
        await render.enqueue_many(renders)
        await export.enqueue_many([((), {})] * 3)
        sent += 13
        await anyio.sleep(0.25)
    return sent


def show(console: Console, found: Insights) -> None:
    trends = Table(title="significant trends")
    for column in ("series", "subject", "direction", "change", "p"):
        trends.add_column(column)
    for t in found.significant_trends:
        trends.add_row(
            t.series,
            t.subject,
            t.trend.direction,
            f"{t.trend.relative_change:+.0%}",
            f"{t.trend.p_value:.1g}",
        )
    console.print(trends)
    for b in found.bottlenecks:
        console.print(f"[bold]{b.kind}[/bold] {b.subject}: {b.recommendation}")
    advice = Table(title="worker advice (target: mean queue wait 1 s)")
    for column in ("queue", "arrivals/s", "run s", "concurrency", "processes", "wait s"):
        advice.add_column(column)
    for a in found.advice:
        advice.add_row(
            a.queue,
            f"{a.arrival_rate:.1f}",
            f"{a.service_time:.3f}",
            str(a.advice.concurrency),
            str(a.advice.processes),
            f"{a.advice.predicted_wait:.2f}",
        )
    console.print(advice)
    for f in found.forecasts:
        if f.series == "queue_depth" and f.forecast.point:
            last = len(f.forecast.point) - 1
            console.print(
                f"forecast: {f.subject} holds {f.forecast.last_value:.0f} ready jobs now, "
                f"{f.forecast.point[last]:.0f} in {f.forecast.horizon / 3600:.0f} h "
                f"({f.forecast.level:.0%} interval {f.forecast.lower[last]:.0f}-"
                f"{f.forecast.upper[last]:.0f}; {f.forecast.method})"
            )


async def main(hours: int, output: str) -> int:
    app = build(f"insights-demo-{uuid.uuid4().hex[:6]}")

    @app.task(queue="pages")
    async def render(seconds: float) -> None:
        await anyio.sleep(seconds)

    @app.task(queue="reports")
    async def export() -> None:
        await anyio.sleep(0.1)  # ten a second on one slot

    console = Console()
    async with app:
        async with (
            app.worker(queues=["pages"], concurrency=50),
            app.worker(queues=["reports"], concurrency=1),
        ):
            console.print(f"running {hours} metric hours of load, one per second ...")
            sent = await drive(app, hours, random.Random(7))
            await anyio.sleep(1)  # the last flush
        # the compressed clock runs on: pin the window's end, or it drifts an hour a second
        until = metrics_now(app.settings.metrics)
        day, target = timedelta(hours=hours), timedelta(seconds=1)
        found = await app.insights(since=day, until=until, target_wait=target, cores=4)
        console.print(f"{sent} jobs sent")
        show(console, found)
        report = await app.report(since=day, until=until, target_wait=target, cores=4)
        await anyio.Path(output).write_text(report.to_html())
        console.print(f"report: {output} (open it in a browser; it needs no network)")
        await app.queue("reports").purge()
    planted = {(t.series, t.subject) for t in found.significant_trends}
    flagged = {(b.kind, b.subject) for b in found.bottlenecks}
    ok = ("run_time_p95", "task:render") in planted and ("queue_wait", "queue:reports") in flagged
    console.print("planted slowdown and under-provisioned queue found" if ok else "NOT FOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--hours", type=int, default=24, help="metric hours of load (24)")
    parser.add_argument("--output", default="insights-report.html", help="the report's file")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.hours, args.output)))
