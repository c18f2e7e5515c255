"""taskflow worker (run a worker until SIGTERM/SIGINT) and taskflow check (is every queue
served by a live worker?)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import click
from redis.exceptions import RedisError

from .._clock import now_ms
from .._protocol import keys
from .._registry import WorkerInfo, live_workers
from .._worker import Service
from .._worker.memory import redis_state
from .._worker.supervised import SUPERVISOR_FD_ENV, SupervisorLink
from ..app import TaskFlow
from ..config import WorkerSettings, build
from ..connection import redact
from . import CONTEXT, app_argument, log_level, log_level_option, open_app
from ._params import Duration
from .supervisor import Supervisor, child_argv

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ("check", "worker")


def _queues(app: TaskFlow, given: tuple[str, ...]) -> list[str]:
    return list(given or app.queues or [app.settings.default_queue])


def _worker_settings(
    app: TaskFlow,
    queues: tuple[str, ...],
    concurrency: int | None,
    grace: timedelta | None,
    lease: timedelta | None,
    alert_interval: timedelta | None,
) -> WorkerSettings:
    data = app.settings.worker.model_dump()
    data["queues"] = tuple(_queues(app, queues))
    if concurrency is not None:
        data["concurrency"] = concurrency
    if grace is not None:
        data["grace_period"] = grace
    if lease is not None:
        data["lease"] = lease
        data["heartbeat_interval"] = min(data["heartbeat_interval"], lease / 3)
    if alert_interval is not None:
        data["alert_interval"] = alert_interval
    return build(WorkerSettings, data, source="the command line")


def _queues_option(verb: str) -> Callable[[F], F]:
    """-q/--queue, repeatable; the app's queues when not given."""
    return click.option(
        "--queue",
        "-q",
        "queues",
        multiple=True,
        metavar="QUEUE",
        help=f"A queue to {verb}; repeat for several. Default: every queue the app's tasks use.",
    )


async def _run_worker(app: TaskFlow, settings: WorkerSettings, services: list[Service]) -> None:
    async with app:
        await app.worker(settings=settings, services=services).run()


@click.command(context_settings=CONTEXT, short_help="Run a worker until SIGTERM or SIGINT.")
@app_argument
@_queues_option("serve")
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    metavar="N",
    help="Jobs running at once, across all its queues (default: the app's setting, 100).",
)
@click.option(
    "--grace",
    type=Duration(allow_zero=True),
    help="Time running jobs get to finish on shutdown, e.g. 30s or 30 "
    "(default: the app's setting, 10s).",
)
@click.option(
    "--lease",
    type=Duration(),
    help="How soon a dead worker's jobs run again, e.g. 1m (default: the app's setting, 10s).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="Address for --metrics-port (0.0.0.0 in a container).",
)
@click.option(
    "--no-schedules",
    is_flag=True,
    help="Do not fire the app's schedules in this worker (the others still do).",
)
@click.option(
    "--alert-interval",
    type=Duration(),
    help="How often the app's alert rules are evaluated, e.g. 5s "
    "(default: the app's setting, 15s).",
)
@click.option(
    "--supervise/--no-supervise",
    default=True,
    show_default=True,
    help="Run the worker as a child process and replace it when it dies or wedges (its "
    "event loop blocked past a running job's timeout). --no-supervise runs it in this "
    "process (under another supervisor, or to debug).",
)
@log_level_option
def worker(
    target: str,
    queues: tuple[str, ...],
    concurrency: int | None,
    grace: timedelta | None,
    lease: timedelta | None,
    metrics_port: int | None,
    metrics_host: str,
    no_schedules: bool,
    alert_interval: timedelta | None,
    supervise: bool,
) -> None:
    """Run a worker until SIGTERM or SIGINT.

    APP is the TaskFlow app as module:attribute, e.g. myapp.tasks:app. The worker claims
    jobs from its queues and runs up to --concurrency of them at once.
    The first SIGTERM or SIGINT stops claiming and gives running jobs --grace to finish;
    jobs still running then are requeued. A second signal requeues them at once. Durations
    take a unit (500ms, 30s, 15m, 1h30m) or are seconds.

    \b
    Examples:
      taskflow worker myapp.tasks:app
      taskflow worker myapp.tasks:app -q emails -c 50
      taskflow worker myapp.tasks:app --grace 30s --lease 1m --metrics-port 9464
    """
    app = open_app(target)
    settings = _worker_settings(app, queues, concurrency, grace, lease, alert_interval)
    if no_schedules:
        settings = settings.model_copy(update={"schedules": False})
    services: list[Service] = []
    link = os.environ.pop(SUPERVISOR_FD_ENV, None)  # not for processes its jobs start
    if link is not None:  # this is the supervised child
        services.append(SupervisorLink(int(link)))
    elif supervise:
        ctx = click.get_current_context()
        status = Supervisor(child_argv(_child_command(ctx))).run()
        if status:
            ctx.exit(status)
        return
    if metrics_port is not None:
        from ..metrics.prometheus import MetricsServer  # prometheus-client only if asked

        services.append(MetricsServer(metrics_port, metrics_host))
    anyio.run(_run_worker, app, settings, services, backend="asyncio")


def _child_command(ctx: click.Context) -> list[str]:
    """This ``taskflow worker`` command line, as parsed, for the supervised child."""
    argv = ["--log-level", log_level(), "worker"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if isinstance(param, click.Argument):
            argv.insert(3, str(value))
        elif isinstance(param, click.Option) and not (
            value is None or value is False or value == ()
        ):
            flag = max(param.opts, key=len)
            if param.is_flag:
                argv.append(flag)
                continue
            for item in value if param.multiple else (value,):
                shown = f"{item.total_seconds()}s" if isinstance(item, timedelta) else str(item)
                argv += [flag, shown]
    return [a for a in argv if a != "--supervise"]


async def _check(
    app: TaskFlow,
    queues: list[str],
    max_lag: timedelta | None = None,
    max_depth: dict[str, int] | None = None,
) -> int:
    async with app:
        workers = await live_workers(app.redis, app.keys)
        try:
            server = await redis_state(app.redis)
        except RedisError as exc:  # INFO disabled (some managed services): nothing to say
            server = None
            click.echo(f"redis {redact(app.settings.redis_url)}: state unknown ({exc})")
        depths = {}
        if max_depth:
            now = now_ms()
            for queue in max_depth:
                depths[queue] = int(await app.redis.zcount(keys.queue(queue), "-inf", now))
    status = 0
    if server is not None:
        click.echo(f"redis {redact(app.settings.redis_url)}: {server.describe()}")
        status = 0 if server.healthy else 1
    return max(
        status,
        _served(queues, workers),
        _deep(depths, max_depth or {}),
        _lagging(workers, max_lag),
    )


def _served(queues: list[str], workers: list[WorkerInfo]) -> int:
    status = 0
    for queue in queues:
        count = sum(queue in w.queues for w in workers)
        click.echo(f"{queue}: {count} live worker(s) {'ok' if count else 'NO LIVE WORKER'}")
        status = status if count else 1
    return status


def _deep(depths: dict[str, int], limits: dict[str, int]) -> int:
    status = 0
    for queue, limit in limits.items():
        over = depths[queue] > limit
        mark = f"OVER --max-depth {limit}" if over else "ok"
        click.echo(f"{queue}: {depths[queue]} ready job(s) {mark}")
        status = 1 if over else status
    return status


def _lagging(workers: list[WorkerInfo], max_lag: timedelta | None) -> int:
    if max_lag is None:
        return 0
    late = [w for w in workers if w.loop_lag > max_lag.total_seconds()]
    for w in late:
        click.echo(
            f"worker {w.id}: event loop {w.loop_lag:.2f}s late, over --max-lag "
            f"{max_lag.total_seconds():g}s"
        )
    return 1 if late else 0


def _depths(values: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        queue, sep, limit = value.rpartition("=")
        if not sep or not queue or not limit.isdigit():
            raise click.BadParameter(
                f"{value!r} is not QUEUE=N (a queue name, '=', a whole number)",
                param_hint="'--max-depth'",
            )
        out[queue] = int(limit)
    return out


@click.command(
    context_settings=CONTEXT,
    short_help="Exit 0 only if Redis accepts writes and a live worker serves each queue.",
)
@app_argument
@_queues_option("check")
@click.option(
    "--max-lag",
    type=Duration(),
    help="Also fail if a live worker's event loop was later than this at its last "
    "heartbeat, e.g. 1s.",
)
@click.option(
    "--max-depth",
    multiple=True,
    metavar="QUEUE=N",
    help="Also fail if QUEUE has more than N ready jobs; repeat for several queues.",
)
@log_level_option
@click.pass_context
def check(
    ctx: click.Context,
    target: str,
    queues: tuple[str, ...],
    max_lag: timedelta | None,
    max_depth: tuple[str, ...],
) -> None:
    """Exit 0 only if Redis accepts writes and a live worker serves each queue.

    APP is the TaskFlow app as module:attribute. Prints Redis's state (memory used, its
    maxmemory-policy, whether it refuses writes: full under noeviction, or a read-only
    replica) and each queue with its number of live workers (workers whose heartbeat has
    not lapsed), and exits 1 if Redis refuses writes or a queue has no live worker, so it
    suits health checks and deploy scripts. An evicting maxmemory-policy is a warning.

    \b
    Examples:
      taskflow check myapp.tasks:app
      taskflow check myapp.tasks:app -q emails -q default
      taskflow check myapp.tasks:app --max-lag 1s --max-depth emails=1000
    """
    app = open_app(target)
    depths = _depths(max_depth)
    status = anyio.run(_check, app, _queues(app, queues), max_lag, depths, backend="asyncio")
    if status:
        ctx.exit(status)
