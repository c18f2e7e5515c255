"""taskflow insights and taskflow report: what a window of metrics says, as tables or a file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import click
from rich.markup import escape
from rich.table import Table

from ..app import TaskFlow
from ..insights.analysis import Insights
from ..insights.render import change_text, crossing_text, quantity
from ..insights.report import FORMATS, Report, insight_sections
from ..metrics.clock import metrics_now
from . import CONTEXT, app_argument, console, log_level_option, open_app
from ._params import Duration, Since, Time

__all__ = ("insights", "report")


def _window(app: TaskFlow, since: timedelta | datetime, until: datetime | None) -> timedelta:
    if isinstance(since, timedelta):
        return since
    end = until or metrics_now(app.settings.metrics)
    if since >= end:
        raise click.BadParameter(
            f"{since.isoformat()!r} is not before the window's end {end.isoformat()!r}",
            param_hint="'--since'",
        )
    return end - since


def _options(f: Any) -> Any:
    """--since, --until, --target-wait and --horizon, shared by both commands."""
    for option in reversed(
        [
            click.option(
                "--since",
                type=Since(),
                default="24h",
                show_default=True,
                help="The window: a duration back from its end (24h, 7d) or an ISO time.",
            ),
            click.option(
                "--until",
                type=Time(),
                default=None,
                help="End of the window (ISO time); default now.",
            ),
            click.option(
                "--target-wait",
                type=Duration(),
                default="5s",
                show_default=True,
                help="Mean queue wait the advice aims for.",
            ),
            click.option(
                "--horizon",
                type=Duration(),
                default=None,
                help="How far ahead to forecast (default: a quarter of the window).",
            ),
        ]
    ):
        f = option(f)
    return f


async def _insights(
    app: TaskFlow, since: timedelta | datetime, until: datetime | None, **options: Any
) -> Insights:
    async with app:
        return await app.insights(_window(app, since, until), until=until, **options)


async def _report(
    app: TaskFlow, since: timedelta | datetime, until: datetime | None, **options: Any
) -> Report:
    async with app:
        return await app.report(_window(app, since, until), until=until, **options)


def _table(title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def _print_insights(found: Insights) -> None:
    out = console()
    out.print(f"insights from {found.since:%Y-%m-%d %H:%M} to {found.until:%Y-%m-%d %H:%M} UTC")
    sections = insight_sections(found)
    trends = [
        (
            t.series,
            t.subject,
            t.trend.direction,
            change_text(t.trend.start, t.trend.end, t.trend.relative_change, t.unit),
        )
        + (f"{t.trend.p_value:.2g}",)
        for t in found.significant_trends
    ]
    bottlenecks = [(b.kind, b.subject, b.recommendation) for b in found.bottlenecks]
    forecasts = [
        (f.series, f.subject, f"{f.horizon:.0f}s", quantity(f.point[-1], f.unit))
        + (f"{f.level:.0%}: {quantity(f.lower[-1], f.unit)} to {quantity(f.upper[-1], f.unit)}",)
        + (crossing_text(f),)
        for f in sections["forecasts"].items
    ]
    advice = [
        (a.queue, f"{a.concurrency} x {a.processes}")
        + (f"{quantity(a.predicted_wait, 's')} (target {quantity(a.target_wait, 's')})",)
        for a in sections["advice"].items
    ]
    tables = {
        "trends": _table(
            "significant trends", ("series", "subject", "direction", "change", "p-value"), trends
        ),
        "bottlenecks": _table("bottlenecks", ("kind", "subject", "recommendation"), bottlenecks),
        "forecasts": _table(
            "forecasts",
            ("series", "subject", "horizon", "point", "interval", "crossing"),
            forecasts,
        ),
        "advice": _table("advice", ("queue", "concurrency x processes", "predicted wait"), advice),
    }
    for name, table in tables.items():
        if table.row_count:
            out.print(table)
        else:
            why = found.reasons.get(name) or "no series has a significant trend"
            out.print(f"{table.title}: none ({escape(why)})")
    for a in sections["advice"].items:  # one per line: a table column would be one long line
        out.print(f"assumptions behind the advice for {escape(a.queue)}:")
        for line in a.assumptions:
            out.print(f"  - {escape(line)}", soft_wrap=False)


@click.command(context_settings=CONTEXT, short_help="Trends, bottlenecks, forecasts and advice.")
@app_argument
@_options
@click.option("--json", "as_json", is_flag=True, help="Print the insights as JSON.")
@log_level_option
def insights(
    target: str,
    since: timedelta | datetime,
    until: datetime | None,
    target_wait: timedelta,
    horizon: timedelta | None,
    as_json: bool,
) -> None:
    """Trends, bottlenecks, forecasts and advice.

    APP is the TaskFlow app as module:attribute. From the metrics of the window, prints
    significant trends, bottlenecks with what to do, forecasts with their interval and
    time to a threshold, and per-queue worker advice with its assumptions (needs the
    insights extra).

    \b
    Examples:
      taskflow insights myapp.tasks:app --since 24h
      taskflow insights myapp.tasks:app --since 7d --json
    """
    app = open_app(target)
    found = anyio.run(
        lambda: _insights(app, since, until, target_wait=target_wait, horizon=horizon),
        backend="asyncio",
    )
    if not as_json:
        _print_insights(found)
        return
    document = {
        "since": found.since.isoformat(),
        "until": found.until.isoformat(),
        **{k: v.model_dump(mode="json") for k, v in insight_sections(found).items()},
    }
    click.echo(json.dumps(document, indent=2))


@click.command(context_settings=CONTEXT, short_help="A report as HTML, JSON or Markdown.")
@app_argument
@_options
@click.option(
    "--format",
    "format_",
    type=click.Choice(FORMATS),
    default="html",
    show_default=True,
    help="html (one self-contained page with charts), json or md.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the report to this file (default: standard output).",
)
@log_level_option
def report(
    target: str,
    since: timedelta | datetime,
    until: datetime | None,
    target_wait: timedelta,
    horizon: timedelta | None,
    format_: str,
    output: Path | None,
) -> None:
    """A report as HTML, JSON or Markdown.

    APP is the TaskFlow app as module:attribute. The report of the window has a summary,
    the SLA check, the insights, the alerts fired and the top failures. The HTML page is
    one file with inline SVG charts (it opens offline); the JSON follows
    docs/report.schema.json.

    \b
    Examples:
      taskflow report myapp.tasks:app --since 24h --output report.html
      taskflow report myapp.tasks:app --since 7d --format md
      taskflow report myapp.tasks:app --format json -o report.json
    """
    app = open_app(target)
    made = anyio.run(
        lambda: _report(app, since, until, target_wait=target_wait, horizon=horizon),
        backend="asyncio",
    )
    text = made.render(format_)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"report written to {output}", err=True)
