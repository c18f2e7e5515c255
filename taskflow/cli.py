"""The ``taskflow`` command: ``worker`` runs a worker, ``check`` asks whether queues are
served, ``metrics export`` writes job and system metrics as JSON or CSV and ``metrics show``
prints a summary table, ``alerts list``/``ack``/``rules`` show the alert history,
acknowledge a firing alert and list the app's alert rules (:mod:`taskflow.cli_alerts`).

Each takes the app as ``module:attribute`` (``module.path:app``), importable from the
current directory.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import anyio
from rich.console import Console
from rich.table import Table

from ._registry import live_workers
from ._worker import Service
from .app import TaskFlow
from .cli_alerts import add_alerts_parser, run_alerts
from .config import Settings, WorkerSettings, build, parse_duration
from .errors import ConfigurationError, TaskflowError
from .metrics.export import FORMATS, JobRow, MetricsExport, collect, to_csv, to_json

__all__ = ("load_app", "main", "parse_since", "parse_time")


def load_app(path: str) -> TaskFlow:
    """Import ``module:attribute`` and return the :class:`TaskFlow` app it names."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"app must be given as module:attribute, got {path!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import module {module_name!r}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, TaskFlow):
        raise ConfigurationError(f"{path!r} is {type(app).__name__}, not a taskflow.TaskFlow app")
    return app


def parse_time(value: str) -> datetime:
    """An ISO 8601 time (``2024-05-01T12:00:00Z``); UTC when it names no zone."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {value!r}; use ISO 8601, e.g. 2024-05-01T12:00:00Z"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_since(value: str) -> timedelta | datetime:
    """How far back: a duration (``30s``, ``15m``, ``1h``, ``7d``, ``2w``) or an ISO 8601 time."""
    duration = parse_duration(value)
    if isinstance(duration, timedelta):
        return duration
    try:
        return parse_time(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"invalid duration or time {value!r}; use e.g. 30s, 15m, 1h, 7d, or an ISO 8601 time"
        ) from None


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}; use 0 to 65535")
    return int(value)


def _seconds_arg(value: str) -> float:
    try:
        seconds = float(value)
        timedelta(seconds=seconds)
    except (ValueError, OverflowError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"invalid seconds {value!r}; use a number > 0, e.g. 15")
    return seconds


def _metrics_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    metrics = sub.add_parser("metrics", help="export or show job metrics", parents=[common])
    commands = metrics.add_subparsers(dest="metrics_command", required=True)
    export = commands.add_parser(
        "export", help="job and system metrics as JSON, or job rows as CSV", parents=[common]
    )
    show = commands.add_parser(
        "show", help="print a summary table of job metrics", parents=[common]
    )
    for parser in (export, show):
        parser.add_argument("app", help="module:attribute of the TaskFlow app")
        parser.add_argument(
            "--since",
            type=parse_since,
            default=timedelta(hours=1),
            help="start of the window: 30s, 15m, 1h, 7d before --until, or an ISO 8601 time "
            "(default 1h)",
        )
        parser.add_argument(
            "--until", type=parse_time, help="end of the window, ISO 8601 (default now; UTC)"
        )
        parser.add_argument("--task", help="only this task")
        parser.add_argument("--queue", "-q", help="only this queue")
    export.add_argument("--format", "-f", choices=FORMATS, default="json", help="default json")
    export.add_argument("--output", "-o", help="write to this file instead of standard output")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, help="logging level (default INFO)"
    )
    parser = argparse.ArgumentParser(prog="taskflow", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a worker until SIGTERM/SIGINT", parents=[common])
    worker.add_argument("app", help="module:attribute of the TaskFlow app")
    worker.add_argument(
        "--queue",
        "-q",
        action="append",
        dest="queues",
        help="queue to serve; repeat for several (default: every queue the app's tasks use)",
    )
    worker.add_argument("--concurrency", "-c", type=int, help="jobs at once (default 100)")
    worker.add_argument("--grace", type=float, help="seconds running jobs get on shutdown")
    worker.add_argument("--lease", type=float, help="seconds before a dead worker's jobs re-run")
    worker.add_argument(
        "--metrics-port",
        type=_port,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port)",
    )
    worker.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)"
    )
    worker.add_argument(
        "--alert-interval",
        type=_seconds_arg,
        metavar="SECONDS",
        help="how often the worker evaluates the app's alert rules (default 15)",
    )

    check = sub.add_parser(
        "check", help="exit 0 only if a live worker serves each queue", parents=[common]
    )
    check.add_argument("app", help="module:attribute of the TaskFlow app")
    check.add_argument(
        "--queue",
        "-q",
        action="append",
        dest="queues",
        help="queue to check; repeat for several (default: every queue the app's tasks use)",
    )
    _metrics_parser(sub, common)
    add_alerts_parser(sub, common, parse_since)
    return parser


def _worker_settings(app: TaskFlow, args: argparse.Namespace) -> WorkerSettings:
    data = app.settings.worker.model_dump()
    data["queues"] = tuple(args.queues or app.queues or [app.settings.default_queue])
    if args.concurrency is not None:
        data["concurrency"] = args.concurrency
    if args.grace is not None:
        data["grace_period"] = timedelta(seconds=args.grace)
    if args.lease is not None:
        data["lease"] = timedelta(seconds=args.lease)
        data["heartbeat_interval"] = min(data["heartbeat_interval"], data["lease"] / 3)
    if args.alert_interval is not None:
        data["alert_interval"] = timedelta(seconds=args.alert_interval)
    return build(WorkerSettings, data, source="the command line")


async def _run_worker(app: TaskFlow, settings: WorkerSettings, services: list[Service]) -> int:
    async with app:
        await app.worker(settings=settings, services=services).run()
    return 0


async def _check(app: TaskFlow, queues: list[str]) -> int:
    async with app:
        workers = await live_workers(app.redis, app.keys)
    served = {q for w in workers for q in w.queues}
    status = 0
    for queue in queues:
        count = sum(queue in w.queues for w in workers)
        mark = "ok" if queue in served else "NO LIVE WORKER"
        print(f"{queue}: {count} live worker(s) {mark}")
        if queue not in served:
            status = 1
    return status


async def _collect(app: TaskFlow, args: argparse.Namespace) -> MetricsExport:
    async with app:
        return await collect(app, args.since, args.until, task=args.task, queue=args.queue)


def _export(document: MetricsExport, args: argparse.Namespace) -> int:
    text = to_json(document) if args.format == "json" else to_csv(document)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            out.write(text)
    except OSError as exc:
        raise ConfigurationError(f"cannot write {args.output!r}: {exc.strerror or exc}") from exc
    print(f"wrote {len(document.jobs)} job rows to {args.output}", file=sys.stderr)
    return 0


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


def _show(document: MetricsExport) -> int:
    console = Console()
    if not console.is_terminal:  # a pipe or file: no wrapping at 80 columns
        console = Console(width=200)
    window = f"{document.since:%Y-%m-%d %H:%M:%S} to {document.until:%Y-%m-%d %H:%M:%S} UTC"
    if not document.jobs:
        console.print(f"no job attempts ended from {window}")
        return 0
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
    console.print(table)
    return 0


def _error_in(group: BaseExceptionGroup[BaseException]) -> TaskflowError | None:
    """The TaskflowError a task group raised, when nothing else went wrong with it."""
    match, rest = group.split(TaskflowError)
    if match is None or rest is not None:
        return None
    leaf: BaseException = match
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf if isinstance(leaf, TaskflowError) else None


def _no_silent_embedded(app: TaskFlow) -> None:
    """A CLI worker or check on a private embedded server would serve nobody: unless the
    embedded mode was chosen explicitly, fail instead of falling back to one."""
    if "embedded" in app.settings.model_fields_set or os.environ.get("TASKFLOW_EMBEDDED"):
        return
    app.settings = build(
        Settings, {**app.settings.model_dump(exclude_unset=True), "embedded": "never"}
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskflow`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _dispatch(args)
    except TaskflowError as exc:
        print(f"taskflow: error: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:  # e.g. a service's bad configuration
        error = _error_in(group)
        if error is None:
            raise
        print(f"taskflow: error: {error}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    _no_silent_embedded(app)
    if args.command == "worker":
        settings = _worker_settings(app, args)
        services: list[Service] = []
        if args.metrics_port is not None:
            from .metrics.prometheus import MetricsServer  # prometheus-client only if asked

            services.append(MetricsServer(args.metrics_port, args.metrics_host))
        return anyio.run(_run_worker, app, settings, services, backend="asyncio")
    if args.command == "metrics":
        document = anyio.run(_collect, app, args, backend="asyncio")
        return _show(document) if args.metrics_command == "show" else _export(document, args)
    if args.command == "alerts":
        return anyio.run(run_alerts, app, args, backend="asyncio")
    queues = args.queues or app.queues or [app.settings.default_queue]
    return anyio.run(_check, app, queues, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
