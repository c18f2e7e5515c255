"""A platform's periodic work on taskflow schedules: 22 jobs over five routed queues.

A freelancing platform ran these through Celery beat; here every worker fires them, each
tick enqueued once across the cluster, with no beat process. Tasks are named
``<queue>.<function>`` and routed to their queue by pattern (``TaskFlow(routes=...)``, as
Celery's ``task_routes``); the jobs that notify people enqueue sends on ``communications``.

Run it with ``python examples/platform_schedules.py``. It prints the schedule table with
each one's next fire, then runs a worker on all five queues and prints each tick as its job
runs. Time is compressed by ``--speed`` (default 8640: a day passes in 10 s, and no
interval is shorter than 0.25 s), for ``--duration`` seconds (default 12); it exits 0 when
every schedule fired at least once. ``--speed 1 --duration 0`` runs the real intervals
until Ctrl-C, as ``taskflow worker examples.platform_schedules:app`` does.
Uses the Redis at ``TASKFLOW_REDIS_URL`` or, with none, a private embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from datetime import timedelta

import anyio
from rich.console import Console
from rich.table import Table

import taskflow

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)

# queue -> (schedule name, interval); the task is <queue>.<name with underscores>
PLATFORM: dict[str, list[tuple[str, timedelta]]] = {
    "ai_services": [
        ("update-developer-profiles", HOUR),
        ("periodic-skill-profile-updates", 30 * MINUTE),
        ("validate-skill-confidence", 2 * HOUR),
        ("refresh-skill-embeddings", DAY),
        ("cleanup-expired-cache", 6 * HOUR),
    ],
    "matching": [
        ("precompute-matching-results", 30 * MINUTE),
        ("cleanup-expired-matching-cache", 6 * HOUR),
        ("update-matching-analytics", HOUR),
        ("optimize-matching-performance", 12 * HOUR),
        ("monitor-matching-service-health", 5 * MINUTE),
    ],
    "payments": [
        ("check-overdue-payments", HOUR),
        ("reconcile-gateway-payments", 6 * HOUR),
        ("retry-failed-payments", 2 * HOUR),
        ("update-payment-gateway-metrics", HOUR),
        ("generate-payment-analytics-report", DAY),
    ],
    "monitoring": [
        ("collect-system-health-metrics", 5 * MINUTE),
        ("collect-ai-service-performance-metrics", 10 * MINUTE),
        ("collect-task-queue-metrics", 5 * MINUTE),
        ("check-performance-thresholds", 10 * MINUTE),
        ("cleanup-old-metrics", DAY),
        ("generate-performance-report", HOUR),
        ("monitor-and-recover-task-queues", 10 * MINUTE),
    ],
}
# the jobs whose work ends in a message to someone
NOTIFYING = {"check-overdue-payments", "retry-failed-payments", "check-performance-thresholds"}
ROUTES = {f"{queue}.*": queue for queue in [*PLATFORM, "communications"]}
FASTEST = timedelta(milliseconds=250)

ran: Counter[str] = Counter()  # schedule -> jobs run
shown: set[str] = set()
sent: list[str] = []


def build(speed: float) -> taskflow.TaskFlow:
    """The platform's app, every interval divided by ``speed`` (at least 0.25 s)."""
    app = taskflow.TaskFlow(name="platform", routes=ROUTES)

    @app.task(name="communications.send_notification")
    async def send_notification(topic: str) -> None:
        sent.append(topic)

    def job(queue: str, schedule: str) -> taskflow.Task[[], str]:
        async def body() -> str:
            tick = taskflow.current_job().tick
            ran[schedule] += 1
            await anyio.sleep(0.01)  # the work itself
            if schedule in NOTIFYING:
                await send_notification.enqueue(schedule)
            return f"{schedule} done for {tick:%H:%M:%S}" if tick else schedule

        body.__name__ = schedule.replace("-", "_")
        return app.task(name=f"{queue}.{body.__name__}")(body)

    for queue, schedules in PLATFORM.items():
        for schedule, interval in schedules:
            every = max(interval / speed, FASTEST)
            app.schedule(job(queue, schedule), every=every, name=schedule)
    return app


app = build(float(os.environ.get("PLATFORM_SCHEDULES_SPEED", "1")))


def span(interval: timedelta) -> str:
    minutes = int(interval.total_seconds() // 60)
    return (
        f"{minutes // 1440}d"
        if minutes % 1440 == 0
        else (f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m")
    )


def table(infos: list[taskflow.schedules.ScheduleInfo], console: Console) -> None:
    out = Table(title="schedules (next fire in UTC)")
    for column in ("schedule", "queue", "trigger", "next fire"):
        out.add_column(column)
    for info in infos:
        next_fire = f"{info.next_fire:%H:%M:%S.%f}"[:-3] if info.next_fire else "-"
        out.add_row(info.name, info.queue, info.trigger, next_fire)
    console.print(out)


async def main(speed: float, duration: float) -> int:
    demo = app if speed == 1 else build(speed)
    console = Console()
    console.print(
        f"[bold]{sum(len(s) for s in PLATFORM.values())} schedules over "
        f"{len(PLATFORM) + 1} queues[/], time x{speed:g}"
    )
    async with demo, demo.worker(concurrency=50):
        await anyio.sleep(0.2)  # the worker registers the schedules as it starts
        table(await demo.schedules.list(), console)
        elapsed = 0
        with anyio.move_on_after(duration if duration > 0 else None):
            while True:
                await anyio.sleep(1)
                elapsed += 1
                new = sorted(name for name in ran if name not in shown)
                shown.update(new)
                console.print(
                    f"{elapsed:>3}s: {sum(ran.values())} jobs, {len(ran)}/22 schedules fired"
                    + (f"; first: {', '.join(new)}" if new else "")
                )
        infos = await demo.schedules.list()
    summary = Table(title="summary")
    for column in ("schedule", "queue", "every (real)", "jobs", "skipped"):
        summary.add_column(column)
    real = {name: interval for queue in PLATFORM.values() for name, interval in queue}
    for info in infos:
        summary.add_row(
            info.name,
            info.queue,
            span(real[info.name]),
            str(ran[info.name]),
            str(info.skips),
        )
    console.print(summary)
    missing = [name for name in real if not ran[name]]
    console.print(
        f"[bold]{sum(ran.values())} jobs ran for {len(ran)} schedules; "
        f"{len(sent)} notifications sent on communications[/]"
    )
    if missing:
        console.print(f"[red]never fired:[/] {', '.join(missing)}")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--speed", type=float, default=8640, help="time factor (default 8640)")
    parser.add_argument(
        "--duration", type=float, default=12, help="seconds to run; 0 until Ctrl-C (default 12)"
    )
    options = parser.parse_args()
    if options.speed <= 0:
        parser.error(f"--speed {options.speed:g} must be > 0")
    sys.exit(asyncio.run(main(options.speed, options.duration)))
