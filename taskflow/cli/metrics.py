"""taskflow metrics export (job and system metrics as JSON, job rows as CSV) and taskflow
metrics show (a summary table)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio
import click
from rich.table import Table

from ..app import TaskFlow
from ..errors import ConfigurationError
from ..metrics.export import FORMATS, JobRow, MetricsExport, collect, to_csv, to_json
from . import CONTEXT, TaskflowGroup, app_argument, console, log_level_option, open_app
from ._params import Since, Time

__all__ = ("metrics",)

F = TypeVar("F", bound=Callable[..., Any])


def _window_options(f: F) -> F:
    """APP, --since, --until, --task and --queue, shared by export and show."""
    options = (
        app_argument,
        click.option(
            "--since",
            type=Since(),
            default="1h",
            show_default=True,
            metavar="DURATION|TIME",
            help="Start of the window: a duration before --until (30s, 15m, 1h, 7d) "
            "or an ISO 8601 time.",
        ),
        click.option(
            "--until",
            type=Time(),
            metavar="TIME",
            help="End of the window, ISO 8601, UTC unless it names a zone (default now).",
        ),
        click.option("--task", metavar="TASK", help="Only this task."),
        click.option("--queue", "-q", metavar="QUEUE", help="Only this queue."),
    )
    for option in reversed(options):
        f = option(f)
    return f


async def _collect(
    app: TaskFlow,
    since: timedelta | datetime,
    until: datetime | None,
    task: str | None,
    queue: str | None,
) -> MetricsExport:
    async with app:
        return await collect(app, since, until, task=task, queue=queue)


def _read(
    target: str,
    since: timedelta | datetime,
    until: datetime | None,
    task: str | None,
    queue: str | None,
) -> MetricsExport:
    app = open_app(target)
    return anyio.run(_collect, app, since, until, task, queue, backend="asyncio")


@click.group(cls=TaskflowGroup, context_settings=CONTEXT, short_help="Export or show job metrics.")
@log_level_option
def metrics() -> None:
    """Export or show job metrics.

    The figures are cluster-wide (every worker of the app) and read from Redis: job
    attempts, failures, rate, run time, queue wait, CPU time and memory growth.

    \b
    Examples:
      taskflow metrics show myapp.tasks:app --since 1h
      taskflow metrics export myapp.tasks:app --format csv --since 24h -o jobs.csv
    """


@metrics.command(
    context_settings=CONTEXT, short_help="Job and system metrics as JSON, or job rows as CSV."
)
@_window_options
@click.option(
    "--format",
    "-f",
    "format_",
    type=click.Choice(FORMATS),
    default="json",
    show_default=True,
    help="json: the whole document (jobs, total, system); csv: one row per task and queue.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Write to this file instead of standard output.",
)
@log_level_option
def export(
    target: str,
    since: timedelta | datetime,
    until: datetime | None,
    task: str | None,
    queue: str | None,
    format_: str,
    output: str | None,
) -> None:
    """Job and system metrics as JSON, or job rows as CSV.

    APP is the TaskFlow app as module:attribute. The JSON document holds job rows, their
    total and system samples (schema: docs/metrics-export.schema.json); the CSV has one row
    per task and queue, with units in the column names.

    \b
    Examples:
      taskflow metrics export myapp.tasks:app --since 1h > metrics.json
      taskflow metrics export myapp.tasks:app -f csv --since 24h -o jobs.csv
      taskflow metrics export myapp.tasks:app --since 2024-05-01 --until 2024-05-02
    """
    document = _read(target, since, until, task, queue)
    text = to_json(document) if format_ == "json" else to_csv(document)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8", newline="") as out:
            out.write(text)
    except OSError as exc:
        raise ConfigurationError(f"cannot write {output!r}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {len(document.jobs)} job rows to {output}", err=True)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s" if value < 120 else f"{value / 60:.1f} min"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    units = ("B", "KiB", "MiB", "GiB")
    n = 0
    while value >= 1024 and n < len(units) - 1:
        value /= 1024
        n += 1
    return f"{value:.0f} B" if n == 0 else f"{value:.1f} {units[n]}"


def _rate(per_second: float) -> str:
    if per_second >= 1:
        return f"{per_second:.1f}/s"
    return f"{per_second * 60:.1f}/min" if per_second * 60 >= 1 else f"{per_second * 3600:.1f}/h"


def _cells(row: JobRow, task: str, queue: str) -> list[str]:
    run = row.run_seconds
    return [
        task,
        queue,
        str(row.count),
        f"{row.failures} ({row.failure_rate:.1%})",
        _rate(row.rate_per_s),
        _seconds(run.p50),
        _seconds(run.p95),
        _seconds(run.p99),
        _seconds(row.wait_seconds.p95),
        _seconds(row.cpu_seconds.p95),
        _bytes(row.memory_bytes.max),
    ]


def _table(document: MetricsExport, window: str) -> Table:
    table = Table(
        title=f"taskflow job metrics, {window}",
        caption=f"read from {document.resolution_seconds:g}s buckets overlapping the window; "
        f"percentiles within {document.relative_error:.0%}",
    )
    for header in ("task", "queue"):
        table.add_column(header, overflow="fold")
    for header in ("count", "failures", "rate", "run p50", "run p95", "run p99"):
        table.add_column(header, justify="right")
    for header in ("wait p95", "cpu p95", "mem max"):
        table.add_column(header, justify="right")
    for row in document.jobs:
        table.add_row(*_cells(row, row.task or "", row.queue or ""))
    if len(document.jobs) > 1:
        table.add_section()
        table.add_row(*_cells(document.total, "all", ""))
    return table


@metrics.command(context_settings=CONTEXT, short_help="Print a summary table of job metrics.")
@_window_options
@log_level_option
def show(
    target: str,
    since: timedelta | datetime,
    until: datetime | None,
    task: str | None,
    queue: str | None,
) -> None:
    """Print a summary table of job metrics.

    APP is the TaskFlow app as module:attribute. One row per task and queue, and a total
    row: count, failures (and their share), rate, run time p50/p95/p99, queue wait p95, CPU
    time p95 and the largest memory growth.

    \b
    Examples:
      taskflow metrics show myapp.tasks:app
      taskflow metrics show myapp.tasks:app --since 7d -q emails
    """
    document = _read(target, since, until, task, queue)
    out = console()
    window = f"{document.since:%Y-%m-%d %H:%M:%S} to {document.until:%Y-%m-%d %H:%M:%S} UTC"
    if not document.jobs:
        out.print(f"no job attempts ended from {window}")
        return
    out.print(_table(document, window))
