"""taskflow sla check: the app's SLA targets against the metrics of a window."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import anyio
import click
from rich.table import Table

from ..app import TaskFlow
from ..slas import SlaReport
from . import CONTEXT, TaskflowGroup, app_argument, console, log_level_option, open_app
from ._params import Since

__all__ = ("sla",)


@click.group(cls=TaskflowGroup, context_settings=CONTEXT, short_help="Check SLA targets.")
@log_level_option
def sla() -> None:
    """Check SLA targets.

    Targets are declared where the app is defined (app.sla(task=..., run_time_p95=...)).

    \b
    Example:
      taskflow sla check myapp.tasks:app --since 24h
    """


async def _check(app: TaskFlow, since: timedelta | datetime) -> SlaReport:
    window = since if isinstance(since, timedelta) else datetime.now(since.tzinfo) - since
    async with app:
        return await app.slas.check(since=window)


def _number(metric: str, value: float | None) -> str:
    if value is None:
        return "no data"
    if metric in ("run_time_p95", "wait_p95"):
        return f"{value:.3f}s"
    if metric == "failure_rate":
        return f"{value:.2%}"
    return f"{value:g}/min"


@sla.command(context_settings=CONTEXT, short_help="Every target: value, target, met.")
@app_argument
@click.option(
    "--since", type=Since(), default="1h", show_default=True, help="The window: 24h, 7d, ..."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@log_level_option
def check(target: str, since: timedelta | datetime, as_json: bool) -> None:
    """Every target: value, target, met.

    APP is the TaskFlow app as module:attribute. Checks each SLA target against the
    cluster-wide metrics of the window and exits 1 if any was missed (a target with no
    attempts to judge is not a miss), so it suits cron jobs and CI gates.

    \b
    Examples:
      taskflow sla check myapp.tasks:app --since 24h
      taskflow sla check myapp.tasks:app --json
    """
    app = open_app(target)
    if not app.slas.targets:
        raise click.ClickException("the app declares no SLA targets (app.sla(...))")
    report = anyio.run(_check, app, since, backend="asyncio")
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        table = Table(title=f"SLA since {report.since:%Y-%m-%d %H:%M} UTC")
        for column in ("scope", "metric", "value", "target", "met"):
            table.add_column(column)
        for r in report.results:
            met = "no data" if r.met is None else ("yes" if r.met else "MISSED")
            table.add_row(
                r.scope, r.metric, _number(r.metric, r.value), _number(r.metric, r.target), met
            )
        console().print(table)
    if not report.met:
        raise SystemExit(1)
