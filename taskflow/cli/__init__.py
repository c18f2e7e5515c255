"""The taskflow command line, on click.

The root group lives here with what every command shares: --version, --log-level and the
logging set-up, loading the app from module:attribute, and turning a TaskflowError into
"Error: ..." with exit status 2. Each command group has its own module: worker.py (worker,
check), runs.py (runs show/critical-path), metrics.py (metrics export/show), alerts.py
(alerts list/ack/rules) and insights.py (insights, report); _params.py holds the parameter
types they share. See docs/cli.md.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

import click
from rich.console import Console

from .. import __version__
from ..app import TaskFlow
from ..config import Settings, build
from ..errors import ConfigurationError, TaskflowError, sole_exception
from ._params import Target, parse_since, parse_time, split_target

__all__ = ("cli", "load_app", "main", "open_app", "parse_since", "parse_time")

F = TypeVar("F", bound=Callable[..., Any])

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOG_LEVEL = "taskflow.log_level"  # key in click's context meta, shared by nested commands
_UNWRAPPED = 10_000  # console width in a pipe: tables keep their natural width


def _version() -> str:
    try:
        return importlib.metadata.version("taskflow-redis")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return __version__


# -- logging --------------------------------------------------------------------------------


def _remember_log_level(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:  # the last one given wins: `taskflow --log-level X worker --log-level Y`
        ctx.meta[_LOG_LEVEL] = value


def log_level_option(f: F) -> F:
    """--log-level, accepted by the root group and by every command (before or after it)."""
    option = click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        expose_value=False,
        callback=_remember_log_level,
        metavar="LEVEL",
        help="How much to log: DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO).",
    )
    return option(f)


def log_level() -> str:
    """The level given with --log-level (INFO by default)."""
    return str(click.get_current_context().meta.get(_LOG_LEVEL, "INFO"))


def setup_logging() -> None:
    """Log to standard error at the level given with --log-level (INFO by default)."""
    logging.basicConfig(level=log_level(), format=LOG_FORMAT)


# -- the app --------------------------------------------------------------------------------


def app_argument(f: F) -> F:
    """The APP argument: module:attribute of the TaskFlow app."""
    return click.argument("target", metavar="APP", type=Target())(f)


def _kind(value: object) -> str:
    """What ``value`` is, in words: 'a function', 'a class', 'an int', 'None'."""
    if value is None:
        return "None"
    if inspect.isroutine(value):
        return "a function"
    if inspect.isclass(value):
        return "a class"
    if inspect.ismodule(value):
        return "a module"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _apps_in(module: ModuleType, where: str) -> str:
    """Which TaskFlow apps ``module`` defines, for an error message."""
    names = [name for name, value in vars(module).items() if isinstance(value, TaskFlow)]
    if not names:
        return f"{where} defines no taskflow.TaskFlow app"
    return f"TaskFlow apps in {where}: {', '.join(names)}"


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigurationError(
                f"cannot import module {module_name!r}: {exc} (run taskflow from the "
                "directory that holds it, or add that directory to PYTHONPATH)"
            ) from None
        raise ConfigurationError(f"importing {module_name!r} failed: {exc}") from exc
    except ImportError as exc:  # raised inside the module, for something it imports
        raise ConfigurationError(f"importing {module_name!r} failed: {exc}") from exc


def load_app(path: str) -> TaskFlow:
    """Import ``module:attribute`` and return the TaskFlow app it names.

    The current directory is importable. A ConfigurationError says what is wrong: the form,
    the import (of the module itself, or of something it imports), a missing attribute or
    one that is not an app, naming the apps the module does define.
    """
    try:
        module_name, attribute = split_target(path)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import(module_name)
    missing = object()
    app = getattr(module, attribute, missing)
    if app is missing:
        raise ConfigurationError(
            f"module {module_name!r} has no attribute {attribute!r}; {_apps_in(module, 'it')}"
        )
    if not isinstance(app, TaskFlow):
        raise ConfigurationError(
            f"'{module_name}:{attribute}' is {_kind(app)}, not a taskflow.TaskFlow app; "
            f"{_apps_in(module, module_name)}"
        )
    return app


def _no_silent_embedded(app: TaskFlow) -> None:
    """A CLI worker or check on a private embedded server would serve nobody: unless the
    embedded mode was chosen explicitly, fail instead of falling back to one."""
    if "embedded" in app.settings.model_fields_set or os.environ.get("TASKFLOW_EMBEDDED"):
        return
    app.settings = build(
        Settings, {**app.settings.model_dump(exclude_unset=True), "embedded": "never"}
    )


def open_app(target: str) -> TaskFlow:
    """What every command does first: set up logging, then load the (unopened) app."""
    setup_logging()
    app = load_app(target)
    _no_silent_embedded(app)
    return app


def console() -> Console:
    """A console for tables: the terminal's width, or in a pipe or file no wrapping at all,
    so ids and names come out whole (and can be copied into the next command)."""
    out = Console()
    return out if out.is_terminal else Console(width=_UNWRAPPED)


# -- errors and the root group --------------------------------------------------------------


class TaskflowFailure(click.ClickException):
    """A TaskflowError (bad configuration, no Redis, ...): "Error: ..." on stderr, exit 2."""

    exit_code = 2


class TaskflowGroup(click.Group):
    """A group that lists its commands in the order they were added, and reports a
    TaskflowError (also one alone in an exception group) as "Error: ..." with exit 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TaskflowError as exc:
            raise TaskflowFailure(str(exc)) from exc
        except BaseExceptionGroup as group:  # e.g. one service's bad configuration
            error = sole_exception(group)
            if not isinstance(error, TaskflowError):
                raise
            raise TaskflowFailure(str(error)) from error


CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"]}  # -h as well, as before


@click.group(cls=TaskflowGroup, context_settings=CONTEXT)
@click.version_option(_version(), prog_name="taskflow-redis", message="%(prog)s %(version)s")
@log_level_option
def cli() -> None:
    """Run taskflow workers and look at their queues, metrics and alerts.

    Every command takes the app as module:attribute (for example myapp.tasks:app),
    imported with the current directory on the path.

    \b
    Examples:
      taskflow worker myapp.tasks:app -q emails -c 50
      taskflow check myapp.tasks:app
      taskflow metrics show myapp.tasks:app --since 1h
      taskflow alerts list myapp.tasks:app

    \b
    Exit status:
      0  success
      1  check found Redis refusing writes or a queue with no live worker, or alerts
         ack was refused
      2  bad usage or configuration (bad option, bad APP, no Redis)

    Run "taskflow COMMAND --help" for a command's options and examples.
    """


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the taskflow command (and of python -m taskflow); returns the exit
    status instead of exiting, printing errors as click does."""
    try:
        result = cli.main(
            args=None if args is None else list(args), prog_name="taskflow", standalone_mode=False
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return result if isinstance(result, int) else 0


# the command modules use the helpers above, so they are imported (and registered) last
from .alerts import alerts  # noqa: E402
from .insights import insights, report  # noqa: E402
from .metrics import metrics  # noqa: E402
from .queues import dlq, queues  # noqa: E402
from .runs import runs  # noqa: E402
from .schedules import schedules  # noqa: E402
from .sla import sla  # noqa: E402
from .status import status  # noqa: E402
from .worker import check, worker  # noqa: E402

for _command in (
    worker,
    check,
    status,
    runs,
    metrics,
    alerts,
    schedules,
    queues,
    dlq,
    sla,
    insights,
    report,
):
    cli.add_command(_command)
