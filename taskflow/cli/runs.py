"""taskflow runs (show, critical-path): a graph run's nodes and its critical path, from
Redis. See docs/cli.md and docs/graphs.md."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

import anyio
import click
from rich.markup import escape
from rich.table import Table

from ..errors import RunNotFound
from . import CONTEXT, TaskflowGroup, app_argument, console, log_level_option, open_app

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .._critical_path import CriticalPath
    from ..app import TaskFlow
    from ..runs import RunHandle, RunStatus

__all__ = ("runs",)

_TIME = "%Y-%m-%d %H:%M:%S.%f"
T = TypeVar("T")


def _read(target: str, run_id: str, read: Callable[[RunHandle], Awaitable[T]]) -> T:
    """Open the app, read the run; no such run is "Error: ..." with exit status 1."""

    async def go(app: TaskFlow) -> T:
        async with app:
            return await read(app.run_handle(run_id))

    try:
        return anyio.run(go, open_app(target), backend="asyncio")
    except RunNotFound as exc:
        raise click.ClickException(str(exc)) from exc


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:{_TIME}}"[:-3]


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}s"


run_id_argument = click.argument("run_id", metavar="RUN_ID")


@click.group(
    cls=TaskflowGroup,
    context_settings=CONTEXT,
    short_help="A graph run: its nodes, its critical path.",
)
@log_level_option
def runs() -> None:
    """A graph run: its nodes, its critical path.

    RUN_ID is what graph.submit() returned (run.run_id). A run is kept for
    Settings.run_retention after it ends; an unknown or expired run exits 1.

    \b
    Examples:
      taskflow runs show myapp.tasks:app 3f9a1c2b7d4e4f0a9b8c7d6e5f4a3b2c
      taskflow runs critical-path myapp.tasks:app 3f9a1c2b7d4e4f0a9b8c7d6e5f4a3b2c
    """


@runs.command(context_settings=CONTEXT, short_help="A run's state and its nodes.")
@app_argument
@run_id_argument
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Show at most N nodes (in the order they were added).",
)
@log_level_option
def show(target: str, run_id: str, limit: int) -> None:
    """A run's state and its nodes.

    The run's state, counts per node state and times (UTC), then one row per node: task,
    state, attempt, start, run time, worker and, for a node that did not succeed, its error.

    \b
    Example:
      taskflow runs show myapp.tasks:app 3f9a1c2b7d4e4f0a9b8c7d6e5f4a3b2c
    """
    status = _read(target, run_id, lambda run: run.status())
    out = console()
    out.print(escape(_header(status)))
    table = Table(title=f"nodes of run {status.run_id} (times in UTC)")
    for column in ("#", "node", "task", "state", "attempt", "started", "run time", "worker"):
        table.add_column(column, justify="right" if column in ("#", "attempt") else "left")
    table.add_column("error")
    nodes = sorted(status.nodes.values(), key=lambda n: n.index)
    for n in nodes[:limit]:
        ran = n.finished - n.started if n.started and n.finished else None
        error = f"{n.error.get('type', '?')}: {n.error.get('message', '')}" if n.error else ""
        table.add_row(
            str(n.index),
            escape(n.name),
            escape(n.task),
            n.state.value,
            str(n.attempt or ""),
            _when(n.started),
            _secs(ran.total_seconds() if ran is not None else None),
            escape(n.worker or ""),
            escape(error.split("\n", 1)[0][:100]),
        )
    out.print(table)
    if len(nodes) > limit:
        out.print(f"... and {len(nodes) - limit} more nodes (--limit)")


def _header(status: RunStatus) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(status.counts.items()))
    lines = [
        f"run {status.run_id}: graph {status.graph}, {status.state.value}",
        f"  nodes:     {status.done}/{status.total} ended ({counts})",
        f"  submitted: {_when(status.created)} UTC",
    ]
    if status.finished is not None:
        wall = (status.finished - status.created).total_seconds()
        lines.append(f"  ended:     {_when(status.finished)} UTC, {wall:.3f}s after submission")
    return "\n".join(lines)


@runs.command(
    name="critical-path",
    context_settings=CONTEXT,
    short_help="The longest chain of nodes by run time, and each node's slack.",
)
@app_argument
@run_id_argument
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Nodes off the path to list, least slack first.",
)
@log_level_option
def critical_path(target: str, run_id: str, limit: int) -> None:
    """The longest chain of nodes by run time, and each node's slack.

    The nodes of the critical path in order, with their run time (finish minus start of the
    last attempt) and wait (start minus the latest parent's finish, or the run's submission);
    the path's length against the run's wall time, the difference being queue wait; the
    bottleneck; then the nodes off the path with the least slack (how much longer each
    could run without making the run longer). A run still going gives a partial path.

    \b
    Example:
      taskflow runs critical-path myapp.tasks:app 3f9a1c2b7d4e4f0a9b8c7d6e5f4a3b2c
    """
    cp = _read(target, run_id, lambda run: run.critical_path())
    out = console()
    out.print(escape(_summary(run_id, cp)))
    table = Table(title="critical path (times in UTC)")
    for column in ("step", "node", "task", "state", "run time", "wait", "started"):
        table.add_column(column, justify="right" if column == "step" else "left")
    for step, n in enumerate(cp.nodes, 1):
        table.add_row(
            str(step),
            escape(n.name),
            escape(n.task),
            n.state.value + ("" if n.ran else " (did not run)"),
            _secs(n.run_time),
            _secs(n.wait),
            _when(n.started),
        )
    out.print(table)
    on_path = {n.name for n in cp.nodes}
    off = sorted((s, name) for name, s in cp.slack.items() if name not in on_path)
    if off and limit:
        out.print("least slack off the path (how much longer each could run, path unchanged):")
        slack = Table()
        slack.add_column("node")
        slack.add_column("slack")
        for s, name in off[:limit]:
            slack.add_row(escape(name), _secs(s))
        out.print(slack)
        if len(off) > limit:
            out.print(f"... and {len(off) - limit} more nodes (--limit)")


def _summary(run_id: str, cp: CriticalPath) -> str:
    share = f" ({cp.length / cp.wall_time:.0%} of the wall time)" if cp.wall_time else ""
    lines = [
        f"run {run_id}: critical path of {len(cp.nodes)} node(s)"
        + (", partial: the run is still going" if cp.partial else ""),
        f"  wall time:  {_secs(cp.wall_time)}",
        f"  path:       {_secs(cp.length)} of run time{share}",
        f"  queue wait: {_secs(cp.queue_wait)} (wall time minus path)",
    ]
    b = cp.bottleneck
    if b is not None:
        part = f", {b.run_time / cp.length:.0%} of the path" if cp.length else ""
        lines.append(f"  bottleneck: {b.name} (task {b.task}), {_secs(b.run_time)}{part}")
    return "\n".join(lines)
