"""taskflow schedules: the app's schedules with their next fire and last outcome (list),
and run, pause or resume one by name. See docs/schedules.md."""

from __future__ import annotations

from datetime import datetime

import anyio
import click
from rich.markup import escape
from rich.table import Table

from ..app import TaskFlow
from ..errors import ScheduleNotFound
from ..schedules import ScheduleInfo
from . import CONTEXT, TaskflowGroup, app_argument, console, log_level_option, open_app

__all__ = ("schedules",)

_TIME = "%Y-%m-%d %H:%M:%S"


@click.group(
    cls=TaskflowGroup,
    context_settings=CONTEXT,
    short_help="List schedules; run, pause or resume one.",
)
@log_level_option
def schedules() -> None:
    """List schedules; run, pause or resume one.

    Schedules are declared where the app is defined (app.periodic, app.schedule) or added
    at run time (app.schedules.add); the workers fire them. These commands read and change
    them in Redis, from any machine.

    \b
    Examples:
      taskflow schedules list myapp.tasks:app
      taskflow schedules run myapp.tasks:app weekly-digest
      taskflow schedules pause myapp.tasks:app weekly-digest
      taskflow schedules resume myapp.tasks:app weekly-digest
    """


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:{_TIME}}"


def _row(s: ScheduleInfo) -> list[str]:
    outcome = s.last_outcome or "-"
    if s.last_status and s.last_outcome == "fired":
        outcome = f"fired, {s.last_status}"
    state = "paused" if s.paused else "active" if s.next_fire else "ended"
    return [
        escape(s.name),
        escape(s.task),
        escape(s.queue),
        escape(s.trigger),
        _when(s.next_fire),
        _when(s.last_tick),
        escape(outcome),
        state,
        f"{s.fired}/{s.skips}/{s.missed}",
    ]


async def _list(app: TaskFlow) -> list[ScheduleInfo]:
    async with app:
        return await app.schedules.list()


@schedules.command(
    name="list", context_settings=CONTEXT, short_help="Every schedule and its state."
)
@app_argument
@log_level_option
def list_(target: str) -> None:
    """Every schedule and its state.

    APP is the TaskFlow app as module:attribute. For each schedule: its task and queue, its
    trigger (a cron expression and zone, or an interval), when it fires next and last fired
    (UTC), the last tick's outcome (fired with its job's status, paused, overlap, skipped),
    whether it is paused, and how many jobs it fired / ticks it skipped / ticks it missed.

    \b
    Example:
      taskflow schedules list myapp.tasks:app
    """
    found = anyio.run(_list, open_app(target), backend="asyncio")
    out = console()
    if not found:
        out.print("no schedules stored (a worker registers the app's when it starts)")
        return
    table = Table(title="taskflow schedules (times in UTC)")
    for column in (
        "name",
        "task",
        "queue",
        "trigger",
        "next fire",
        "last tick",
        "last outcome",
        "state",
        "fired/skipped/missed",
    ):
        table.add_column(column)
    for info in found:
        table.add_row(*_row(info))
    out.print(table)


async def _act(app: TaskFlow, action: str, name: str) -> str:
    async with app:
        if action == "run":
            job = await app.schedules.run_now(name)
            return f"schedule {name}: job {job.job_id} enqueued on {job.queue}"
        await getattr(app.schedules, action)(name)
        return f"schedule {name}: {action}d" if action != "pause" else f"schedule {name}: paused"


def _command(action: str, summary: str, detail: str) -> click.Command:
    @click.command(
        name=action, context_settings=CONTEXT, short_help=summary, help=f"{summary}\n\n{detail}"
    )
    @app_argument
    @click.argument("name", metavar="NAME")
    @log_level_option
    def command(target: str, name: str) -> None:
        try:
            message = anyio.run(_act, open_app(target), action, name, backend="asyncio")
        except ScheduleNotFound as exc:
            raise click.ClickException(str(exc)) from exc  # exit 1: nothing by that name
        click.echo(message)

    return command


for _action, _summary, _detail in (
    (
        "run",
        "Enqueue a schedule's job now.",
        "Enqueue the job of schedule NAME now, outside its ticks (its next tick stays as it "
        "was). APP is the TaskFlow app as module:attribute. Exits 1 if there is no schedule "
        "NAME.\n\n\b\nExample:\n  taskflow schedules run myapp.tasks:app weekly-digest",
    ),
    (
        "pause",
        "Stop a schedule firing until resumed.",
        "Pause schedule NAME: its ticks pass without a job (each counted as skipped) until "
        "it is resumed, from any process. Exits 1 if there is no schedule NAME.\n\n\b\n"
        "Example:\n  taskflow schedules pause myapp.tasks:app weekly-digest",
    ),
    (
        "resume",
        "Fire a paused schedule again.",
        "Resume schedule NAME from its next tick (ticks passed while paused are not caught "
        "up). Exits 1 if there is no schedule NAME.\n\n\b\nExample:\n"
        "  taskflow schedules resume myapp.tasks:app weekly-digest",
    ),
):
    schedules.add_command(_command(_action, _summary, _detail))
