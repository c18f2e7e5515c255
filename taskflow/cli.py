"""The ``taskflow`` command: ``worker`` runs a worker, ``check`` asks whether queues are served.

Both take the app as ``module:attribute`` (``module.path:app``), importable from the
current directory.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

import anyio

from .app import TaskFlow
from .config import Settings, WorkerSettings, build
from .errors import ConfigurationError, TaskflowError
from .heartbeat import live_workers

__all__ = ("load_app", "main")


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
    return build(WorkerSettings, data, source="the command line")


async def _run_worker(app: TaskFlow, settings: WorkerSettings) -> int:
    async with app:
        await app.worker(settings=settings).run()
    return 0


async def _check(app: TaskFlow, queues: list[str]) -> int:
    async with app:
        workers = await live_workers(app.redis)
    served = {q for w in workers for q in w.queues}
    status = 0
    for queue in queues:
        count = sum(queue in w.queues for w in workers)
        mark = "ok" if queue in served else "NO LIVE WORKER"
        print(f"{queue}: {count} live worker(s) {mark}")
        if queue not in served:
            status = 1
    return status


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
        app = load_app(args.app)
        _no_silent_embedded(app)
        if args.command == "worker":
            settings = _worker_settings(app, args)
            return anyio.run(_run_worker, app, settings, backend="asyncio")
        queues = args.queues or app.queues or [app.settings.default_queue]
        return anyio.run(_check, app, queues, backend="asyncio")
    except TaskflowError as exc:
        print(f"taskflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
