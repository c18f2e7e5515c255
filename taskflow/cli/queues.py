"""taskflow queues (pause, resume, move, purge) and taskflow dlq (list, show, retry, purge):
queue operations and dead letters from the command line. See docs/operations.md."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import click
from rich.markup import escape
from rich.table import Table

from ..app import TaskFlow
from ..dead_letters import DeadLetter
from ..errors import JobNotFound, RetryRefused
from . import CONTEXT, TaskflowGroup, app_argument, console, log_level_option, open_app
from ._params import Duration

__all__ = ("dlq", "queues")

_TIME = "%Y-%m-%d %H:%M:%S"

yes_option = click.option("--yes", "-y", is_flag=True, help="Do it without asking (for scripts).")


def _confirm(what: str, yes: bool) -> None:
    click.echo(what)
    if not yes and not click.confirm("Go ahead?", default=False):
        raise click.ClickException("nothing done")


async def _with(app: TaskFlow, action: Any) -> Any:
    async with app:
        return await action(app)


# -- taskflow queues ------------------------------------------------------------------------


@click.group(
    cls=TaskflowGroup, context_settings=CONTEXT, short_help="Pause, resume, move or purge a queue."
)
@log_level_option
def queues() -> None:
    """Pause, resume, move or purge a queue.

    Each acts on the queue in Redis, from any machine, atomically against the workers
    claiming from it: no job is lost or run twice. Move and purge say what they will do and
    ask first, unless --yes.

    \b
    Examples:
      taskflow queues pause myapp.tasks:app payments
      taskflow queues resume myapp.tasks:app payments
      taskflow queues move myapp.tasks:app matching matching-v2 --limit 1000
      taskflow queues purge myapp.tasks:app ai_services --older-than 6h --yes
    """


@queues.command(context_settings=CONTEXT, short_help="Stop workers claiming from a queue.")
@app_argument
@click.argument("queue", metavar="QUEUE")
@log_level_option
def pause(target: str, queue: str) -> None:
    """Stop workers claiming from a queue.

    Workers stop claiming from QUEUE at once; running jobs finish, and enqueueing goes on.

    \b
    Example:
      taskflow queues pause myapp.tasks:app payments
    """
    anyio.run(_with, open_app(target), lambda app: app.queue(queue).pause(), backend="asyncio")
    click.echo(f"queue {queue}: paused")


@queues.command(context_settings=CONTEXT, short_help="Let workers claim from a queue again.")
@app_argument
@click.argument("queue", metavar="QUEUE")
@log_level_option
def resume(target: str, queue: str) -> None:
    """Let workers claim from a queue again.

    \b
    Example:
      taskflow queues resume myapp.tasks:app payments
    """
    anyio.run(_with, open_app(target), lambda app: app.queue(queue).resume(), backend="asyncio")
    click.echo(f"queue {queue}: resumed")


@queues.command(context_settings=CONTEXT, short_help="Move waiting jobs to another queue.")
@app_argument
@click.argument("queue", metavar="QUEUE")
@click.argument("to", metavar="TO")
@click.option("--limit", type=click.IntRange(min=1), help="Move at most N jobs (default all).")
@yes_option
@log_level_option
def move(target: str, queue: str, to: str, limit: int | None, yes: bool) -> None:
    """Move waiting jobs to another queue.

    Moves the jobs waiting on QUEUE (oldest first, at most --limit) to queue TO, each keeping
    when it may run; jobs running now stay. Workers of TO must have the jobs' tasks.

    \b
    Example:
      taskflow queues move myapp.tasks:app matching matching-v2 --limit 1000
    """
    app = open_app(target)
    many = f"up to {limit}" if limit else "all"
    _confirm(f"move {many} waiting jobs of queue {queue} to queue {to}", yes)
    moved = anyio.run(
        _with, app, lambda a: a.queue(queue).move(to=to, limit=limit), backend="asyncio"
    )
    click.echo(f"queue {queue}: {moved} jobs moved to {to}")


@queues.command(context_settings=CONTEXT, short_help="Delete waiting jobs of a queue.")
@app_argument
@click.argument("queue", metavar="QUEUE")
@click.option(
    "--older-than",
    type=Duration(allow_zero=True),
    default="0",
    help="Only jobs ready for longer than this, e.g. 6h (default: every ready job).",
)
@yes_option
@log_level_option
def purge(target: str, queue: str, older_than: timedelta, yes: bool) -> None:
    """Delete waiting jobs of a queue.

    Deletes the jobs of QUEUE that have been ready for longer than --older-than; running
    jobs, and deferred ones whose time has not come, stay. Their waiters get JobNotFound.

    \b
    Example:
      taskflow queues purge myapp.tasks:app ai_services --older-than 6h --yes
    """
    app = open_app(target)
    age = f" ready for over {older_than}" if older_than else " ready"
    _confirm(f"delete the jobs of queue {queue}{age}", yes)
    purged = anyio.run(
        _with, app, lambda a: a.queue(queue).purge(older_than=older_than), backend="asyncio"
    )
    click.echo(f"queue {queue}: {purged} jobs deleted")


# -- taskflow dlq ---------------------------------------------------------------------------


@click.group(
    cls=TaskflowGroup,
    context_settings=CONTEXT,
    short_help="Jobs that failed for good: list, show, retry, purge.",
)
@log_level_option
def dlq() -> None:
    """Jobs that failed for good: list, show, retry, purge.

    A job whose last attempt failed is kept as a dead letter (Settings.dead_letter_ttl, 7
    days by default) with its arguments, error and attempts; a graph node's also with its
    run and node, and retrying it continues the run.

    \b
    Examples:
      taskflow dlq list myapp.tasks:app --queue payments
      taskflow dlq show myapp.tasks:app 5d41402abc4b2a76b9719d911017c592
      taskflow dlq retry myapp.tasks:app 5d41402abc4b2a76b9719d911017c592
      taskflow dlq purge myapp.tasks:app --older-than 7d --yes
    """


@dlq.command(name="list", context_settings=CONTEXT, short_help="The newest dead letters.")
@app_argument
@click.option("--queue", "-q", metavar="QUEUE", help="Only this queue's.")
@click.option("--task", metavar="TASK", help="Only this task's.")
@click.option("--run", "run_id", metavar="RUN_ID", help="Only this graph run's nodes.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@log_level_option
def list_(target: str, queue: str | None, task: str | None, run_id: str | None, limit: int) -> None:
    """The newest dead letters.

    A graph node's shows its name in the node column; its job id is its run id, a dot and
    its index.

    \b
    Example:
      taskflow dlq list myapp.tasks:app --queue payments --limit 20
    """
    letters = anyio.run(
        _with,
        open_app(target),
        lambda a: a.dead_letters.list(queue=queue, task=task, run_id=run_id, limit=limit),
        backend="asyncio",
    )
    out = console()
    if not letters:
        out.print("no dead letters")
        return
    table = Table(title="dead letters (newest first, times in UTC)")
    for column in ("failed", "job id", "node", "task", "queue", "attempts", "error"):
        table.add_column(column)
    for d in letters:
        error = f"{d.reason}: {d.message}"
        table.add_row(
            f"{d.failed:{_TIME}}",
            d.job_id,
            escape(d.node or ""),
            escape(d.task),
            escape(d.queue),
            str(d.attempts),
            escape(error[:120]),
        )
    out.print(table)


def _show(d: DeadLetter) -> str:
    lines = [
        f"job {d.job_id}: task {d.task} on queue {d.queue}",
        f"  failed:   {d.failed:{_TIME}} UTC after {d.attempts} attempt(s), on {d.worker}",
        f"  enqueued: {d.enqueued:{_TIME}} UTC; last attempt started {d.started:{_TIME}}",
        f"  args:     {d.args!r}",
        f"  kwargs:   {d.kwargs!r}",
        f"  error:    {d.reason}: {d.message}",
    ]
    if d.run_id is not None:
        lines.insert(1, f"  graph:    node {d.node} (index {d.node_index}) of run {d.run_id}")
    if d.error.get("traceback"):
        lines += ["", str(d.error["traceback"]).rstrip()]
    return "\n".join(lines)


@dlq.command(context_settings=CONTEXT, short_help="One dead letter in full.")
@app_argument
@click.argument("job_id", metavar="JOB_ID")
@log_level_option
def show(target: str, job_id: str) -> None:
    """One dead letter in full.

    Its arguments, error and traceback, attempts and times. Exits 1 if there is no dead
    letter JOB_ID.

    \b
    Example:
      taskflow dlq show myapp.tasks:app 5d41402abc4b2a76b9719d911017c592
    """
    try:
        letter = anyio.run(
            _with, open_app(target), lambda a: a.dead_letters.get(job_id), backend="asyncio"
        )
    except JobNotFound as exc:
        raise click.ClickException(f"no dead letter {job_id!r}") from exc
    click.echo(_show(letter))


@dlq.command(context_settings=CONTEXT, short_help="Put a dead letter back on its queue.")
@app_argument
@click.argument("job_id", metavar="JOB_ID")
@click.option("--queue", "-q", metavar="QUEUE", help="Another queue to put it on.")
@log_level_option
def retry(target: str, job_id: str, queue: str | None) -> None:
    """Put a dead letter back on its queue.

    On its queue, or --queue, as a new first attempt: the same job id runs again, and its
    old result is deleted. A graph node runs again in its run, and the nodes below it that
    never ran because it failed run once it succeeds. Exits 1 if there is no dead letter
    JOB_ID, or if a graph node's run expired or was cancelled.

    \b
    Example:
      taskflow dlq retry myapp.tasks:app 5d41402abc4b2a76b9719d911017c592
    """
    try:
        job = anyio.run(
            _with,
            open_app(target),
            lambda a: a.dead_letters.retry(job_id, queue=queue),
            backend="asyncio",
        )
    except JobNotFound as exc:
        raise click.ClickException(f"no dead letter {job_id!r}") from exc
    except RetryRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"job {job_id}: back on queue {job.queue}")


@dlq.command(name="purge", context_settings=CONTEXT, short_help="Delete dead letters.")
@app_argument
@click.option(
    "--older-than",
    type=Duration(allow_zero=True),
    default="0",
    help="Only those that failed longer ago than this, e.g. 7d (default: all).",
)
@click.option("--queue", "-q", metavar="QUEUE", help="Only this queue's.")
@click.option("--task", metavar="TASK", help="Only this task's.")
@yes_option
@log_level_option
def purge_dead(
    target: str, older_than: timedelta, queue: str | None, task: str | None, yes: bool
) -> None:
    """Delete dead letters.

    \b
    Example:
      taskflow dlq purge myapp.tasks:app --older-than 7d --queue payments --yes
    """
    which = " of queue " + queue if queue else ""
    which += " of task " + task if task else ""
    age = f" that failed over {older_than} ago" if older_than else ""
    _confirm(f"delete the dead letters{which}{age}", yes)
    purged = anyio.run(
        _with,
        open_app(target),
        lambda a: a.dead_letters.purge(older_than=older_than, queue=queue, task=task),
        backend="asyncio",
    )
    click.echo(f"{purged} dead letters deleted")


@dlq.command(context_settings=CONTEXT, short_help="Failures grouped by task and error type.")
@app_argument
@log_level_option
def errors(target: str) -> None:
    """Failures grouped by task and error type.

    One line per task and error type, the most frequent first: how many, first and last
    seen, and the latest one's message; a burst of one error is one line.

    \b
    Example:
      taskflow dlq errors myapp.tasks:app
    """
    groups = anyio.run(
        _with, open_app(target), lambda a: a.dead_letters.errors(), backend="asyncio"
    )
    out = console()
    if not groups:
        out.print("no failures kept")
        return
    table = Table(title="failures by task and error (times in UTC)")
    for column in ("task", "error", "count", "first seen", "last seen", "latest message"):
        table.add_column(column)
    for g in groups:
        message = g.sample.split("\n", 1)[0]
        table.add_row(
            escape(g.task),
            escape(g.error_type),
            str(g.count),
            f"{g.first_seen:{_TIME}}",
            f"{g.last_seen:{_TIME}}",
            escape(message[:100]),
        )
    out.print(table)
