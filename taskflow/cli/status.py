"""taskflow status: one screen of the cluster: queues, workers, stuck jobs, schedules,
probes, firing alerts and recent failures; --watch redraws it. See docs/operations.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import anyio
import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ..app import TaskFlow
from ..dead_letters import DeadLetter, ErrorGroup
from ..monitor import QueueHealth, Recovery, StuckJob, WorkerHealth
from ..probes import ProbeState, ProbeStatus
from ..schedules import ScheduleInfo
from . import CONTEXT, app_argument, console, log_level_option, open_app
from ._params import Duration

__all__ = ("status",)

_TIME = "%H:%M:%S"


@dataclass(frozen=True, slots=True)
class Snapshot:
    queues: list[QueueHealth]
    workers: list[WorkerHealth]
    stuck: list[StuckJob]
    schedules: list[ScheduleInfo]
    alerts: list[tuple[str, str, str]]  #: rule, state, since
    failures: list[DeadLetter]
    errors: Sequence[ErrorGroup] = ()
    recoveries: Sequence[Recovery] = ()  #: jobs re-run after their worker died, last hour
    probes: Sequence[ProbeStatus] = ()


async def snapshot(app: TaskFlow) -> Snapshot:
    """Everything ``taskflow status`` shows, read once (the app open)."""
    alerts = []
    for rule in app.alerts.rules:
        state = await app.alerts.state(rule.name)
        if state.get("state") in ("firing", "acknowledged", "pending"):
            alerts.append((rule.name, state["state"], state.get("started_at", "")))
    return Snapshot(
        queues=await app.monitor.queues(),
        workers=await app.monitor.workers(),
        stuck=await app.monitor.stuck(),
        schedules=await app.schedules.list(),
        alerts=alerts,
        failures=await app.dead_letters.list(limit=10),
        errors=(await app.dead_letters.errors())[:5],
        recoveries=await app.monitor.recoveries(since=timedelta(hours=1)),
        probes=await app.probes.status(),
    )


def _table(title: str, columns: tuple[str, ...], rows: list[list[str]], empty: str = "") -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    if not rows and empty:
        table.add_row(empty, *[""] * (len(columns) - 1))
    return table


def _queue_row(q: QueueHealth) -> list[str]:
    state = "paused" if q.paused else ("NO WORKER" if not q.workers else "ok")
    return [
        escape(q.name),
        str(q.ready),
        str(q.deferred),
        str(q.running),
        f"{q.oldest_ready_age:.1f}s",
        f"{q.completed_per_min:g}",
        f"{q.failed_per_min:g}",
        str(q.workers),
        state,
    ]


def _worker_row(w: WorkerHealth) -> list[str]:
    return [
        escape(w.id),
        escape(", ".join(w.queues)),
        f"{w.running}/{w.concurrency}",
        f"{w.loop_lag:.2f}s" if w.blocked_for is None else f"BLOCKED {w.blocked_for:.0f}s",
        f"{w.last_heartbeat:.1f}s ago",
        escape(w.version or "?"),
    ]


def _probe_row(p: ProbeStatus) -> list[str]:
    state = p.state.value.upper() if p.state is ProbeState.DOWN else p.state.value
    if p.stale:
        state += " (stale: no worker ran it lately)"
    last = p.last
    return [
        escape(p.name),
        state,
        f"{p.since:{_TIME}}" if p.since else "-",
        f"{last.latency_ms:.0f} ms" if last else "-",
        f"{last.at:{_TIME}}" if last else "-",
        str(p.failures) if p.failures else "",
        escape((last.error or last.detail)[:80]) if last else "",
    ]


def render(s: Snapshot) -> Group:
    """The screen, as rich renderables: stuck jobs, schedules and alerts only if any."""
    parts = [
        _table(
            "queues",
            (
                "queue",
                "ready",
                "deferred",
                "running",
                "oldest ready",
                "done/min",
                "failed/min",
                "workers",
                "state",
            ),
            [_queue_row(q) for q in s.queues],
            "no queues",
        ),
        _table(
            "workers",
            ("worker", "queues", "running", "loop lag", "heartbeat", "version"),
            [_worker_row(w) for w in s.workers],
            "no live worker",
        ),
    ]
    if s.stuck:
        rows = [
            [j.kind, escape(j.queue), str(j.count), f"{j.since:{_TIME}}", escape(j.why)]
            for j in s.stuck
        ]
        parts.append(_table("stuck", ("kind", "queue", "jobs", "since", "why"), rows))
    if s.recoveries:
        rows = [
            [
                f"{r.restarted:{_TIME}}",
                escape(r.job_id),
                escape(r.task or "?"),
                escape(r.dead_worker or "?"),
                "?" if r.downtime is None else f"{r.downtime:.1f}s",
            ]
            for r in s.recoveries[-10:]
        ]
        columns = ("restarted", "job", "task", "dead worker", "death to restart")
        parts.append(
            _table(f"recovered after a worker died (1h: {len(s.recoveries)})", columns, rows)
        )
    if s.schedules:
        rows = [
            [
                escape(sc.name),
                escape(sc.trigger),
                f"{sc.next_fire:{_TIME}}" if sc.next_fire else "-",
                escape(sc.last_outcome or "-"),
                "paused" if sc.paused else "active",
            ]
            for sc in s.schedules
        ]
        columns = ("schedule", "trigger", "next fire", "last outcome", "state")
        parts.append(_table("schedules", columns, rows))
    if s.probes:
        headers = ("probe", "state", "since", "latency", "checked", "failures", "error / detail")
        parts.append(_table("probes", headers, [_probe_row(p) for p in s.probes]))
    if s.alerts:
        parts.append(
            _table("alerts", ("rule", "state"), [[escape(r), st] for r, st, _ in s.alerts])
        )
    if s.errors:
        rows = [
            [escape(g.task), escape(g.error_type), str(g.count), f"{g.last_seen:{_TIME}}"]
            for g in s.errors
        ]
        parts.append(_table("errors", ("task", "error", "count", "last seen"), rows))
    rows = [
        [
            f"{d.failed:{_TIME}}",
            escape(d.task),
            escape(d.queue),
            escape(f"{d.reason}: {d.message}"[:100]),
        ]
        for d in s.failures
    ]
    parts.append(
        _table("recent failures (dead letters)", ("failed", "task", "queue", "error"), rows, "none")
    )
    return Group(*parts)


async def _once(app: TaskFlow, out: Console) -> None:
    async with app:
        out.print(render(await snapshot(app)))


async def _watch(app: TaskFlow, out: Console, every: float) -> None:
    async with app:
        with Live(render(await snapshot(app)), console=out, auto_refresh=False) as live:
            while True:
                await anyio.sleep(every)
                live.update(render(await snapshot(app)), refresh=True)


@click.command(context_settings=CONTEXT, short_help="One screen: queues, workers, failures.")
@app_argument
@click.option("--watch", "-w", is_flag=True, help="Redraw until Ctrl-C.")
@click.option(
    "--interval",
    type=Duration(),
    default="2s",
    show_default=True,
    help="How often --watch redraws.",
)
@log_level_option
def status(target: str, watch: bool, interval: timedelta) -> None:
    """One screen: queues, workers, failures.

    APP is the TaskFlow app as module:attribute. Shows each queue (ready, deferred and
    running jobs, the oldest ready job's wait, jobs done and failed per minute over 5
    minutes, live workers, paused), each live worker (running jobs, event-loop lag, last
    heartbeat, version), stuck jobs and why, schedules, service probes (up or down, since
    when, latency), firing alerts, and the latest dead letters. --watch redraws it every
    --interval until Ctrl-C.

    \b
    Examples:
      taskflow status myapp.tasks:app
      taskflow status myapp.tasks:app --watch --interval 5s
    """
    app = open_app(target)
    out = console()
    if watch:
        try:
            anyio.run(_watch, app, out, interval.total_seconds(), backend="asyncio")
        except KeyboardInterrupt:
            return
    else:
        anyio.run(_once, app, out, backend="asyncio")
