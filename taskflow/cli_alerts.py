"""``taskflow alerts``: the alert history (``list``), acknowledging a firing alert (``ack``)
and the app's rules with their current state (``rules``). Part of :mod:`taskflow.cli`; see
docs/alerts.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._clock import ms_to_datetime
from .alerts import AlertNotFound, AlertRecord, AlertRule
from .alerts.manager import HISTORY_MAX

if TYPE_CHECKING:
    from .app import TaskFlow

__all__ = ("add_alerts_parser", "run_alerts")

_TIME = "%Y-%m-%d %H:%M:%S"
_INSTANT = {"queue_depth", "oldest_job_age", "live_workers"}  # metrics without a window


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"invalid count {value!r}; use a whole number >= 1")
    return int(value)


def add_alerts_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    parse_since: Callable[[str], timedelta | datetime],
) -> None:
    """Add ``alerts list``, ``alerts ack`` and ``alerts rules`` to the ``taskflow`` parser;
    ``parse_since`` is the CLI's duration-or-time parser, shared with ``taskflow metrics``."""
    alerts = sub.add_parser(
        "alerts", help="alert history, acknowledgement and rules", parents=[common]
    )
    commands = alerts.add_subparsers(dest="alerts_command", required=True)
    history = commands.add_parser(
        "list", help="alert events (firing, suppressed, acknowledged, resolved)", parents=[common]
    )
    history.add_argument("app", help="module:attribute of the TaskFlow app")
    history.add_argument(
        "--since",
        type=parse_since,
        default=timedelta(hours=24),
        help="start: 30s, 15m, 1h, 7d before now, or an ISO 8601 time (default 24h)",
    )
    history.add_argument(
        "--limit", type=_positive_int, default=100, help="show the N most recent (default 100)"
    )
    history.add_argument("--rule", help="only this rule's events")
    ack = commands.add_parser(
        "ack",
        help="acknowledge a firing alert: it notifies nothing more until it resolves",
        parents=[common],
    )
    ack.add_argument("app", help="module:attribute of the TaskFlow app")
    ack.add_argument("alert_id", metavar="ALERT_ID", help="the alert id (from alerts list)")
    ack.add_argument("--by", required=True, help="who acknowledges (kept in the history)")
    ack.add_argument("--note", default="", help="why, or what is being done (optional)")
    rules = commands.add_parser(
        "rules", help="the app's alert rules and their current state", parents=[common]
    )
    rules.add_argument("app", help="module:attribute of the TaskFlow app")


async def run_alerts(app: TaskFlow, args: argparse.Namespace) -> int:
    """Run an ``alerts`` subcommand against the (not yet open) ``app``; the exit status."""
    async with app:
        if args.alerts_command == "ack":
            return await _ack(app, args.alert_id, args.by, args.note)
        if args.alerts_command == "rules":
            return await _rules(app)
        return await _history(app, args.since, args.limit, args.rule)


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)  # no wrapping in a pipe


async def _ack(app: TaskFlow, alert_id: str, by: str, note: str) -> int:
    try:
        rule = await app.alerts.ack(alert_id, by=by, note=note)
    except AlertNotFound as exc:
        sys.stderr.write(f"taskflow: {exc}\n")
        return 1
    sys.stdout.write(f"acknowledged alert {alert_id} of rule {rule} (by {by})\n")
    return 0


def _number(text: str) -> str:
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def _history_row(r: AlertRecord) -> list[str]:
    who = f"{r.by}: {r.note}" if r.by and r.note else r.by
    return [f"{r.at:{_TIME}}", r.rule, r.event, r.alert_id, _number(r.value), r.message, who]


async def _history(app: TaskFlow, since: timedelta | datetime, limit: int, rule: str | None) -> int:
    start = datetime.now(UTC) - since if isinstance(since, timedelta) else since
    # the stream holds about HISTORY_MAX events: read them all, show the most recent
    records = await app.alerts.history(start, limit=2 * HISTORY_MAX)
    if rule is not None:
        records = [r for r in records if r.rule == rule]
    console = _console()
    if not records:
        console.print(f"no alert events since {start:{_TIME}} UTC")
        return 0
    shown = records[-limit:]
    table = Table(
        title=f"taskflow alert history since {start:{_TIME}} UTC",
        caption=f"the {len(shown)} most recent of {len(records)} events"
        if len(shown) < len(records)
        else None,
    )
    table.add_column("time (UTC)", no_wrap=True)
    for header in ("rule", "event", "alert id"):
        table.add_column(header, overflow="fold")
    table.add_column("value", justify="right")
    for header in ("message", "by / note"):
        table.add_column(header, overflow="fold")
    for record in shown:
        table.add_row(*map(escape, _history_row(record)))  # messages are not markup
    console.print(table)
    return 0


def _duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _state(rule: AlertRule, state: dict[str, str]) -> tuple[str, str, str]:
    """(state, alert id, last value) as shown by ``alerts rules``."""
    if not rule.enabled:
        return "disabled", "", ""
    name = state.get("state", "ok")
    value = _number(state.get("last_value", ""))
    since_ms = {"pending": "pending_since", "firing": "started_at"}.get(name, "")
    if name == "acknowledged":
        name = f"acknowledged by {state.get('acked_by', '?')}"
        since_ms = "acked_at"
    if state.get(since_ms):
        name += f" since {ms_to_datetime(int(state[since_ms])):{_TIME}}"
    firing = state.get("state") in ("firing", "acknowledged")
    return name, state.get("alert_id", "") if firing else "", value


async def _rules(app: TaskFlow) -> int:
    rules = app.alerts.rules
    console = _console()
    if not rules:
        console.print(
            "no alert rules registered: add them where the app is defined, with "
            "app.alerts.add_rule(...) or app.alerts.load('alerts.yaml')"
        )
        return 0
    table = Table(title="taskflow alert rules", caption="state as of now, read from Redis")
    for header in ("rule", "severity", "when", "for", "cooldown", "channels"):
        table.add_column(header, overflow="fold")
    for header in ("state", "alert id", "last value"):
        table.add_column(
            header, overflow="fold", justify="right" if header == "last value" else "left"
        )
    for rule in rules:
        state = _state(rule, await app.alerts.state(rule.name))
        cells = (
            rule.name,
            rule.severity.value,
            f" {rule.match} ".join(
                c.describe() + ("" if c.metric in _INSTANT else f" over {_duration(c.window)}")
                for c in rule.conditions
            ),
            _duration(rule.for_),
            _duration(rule.cooldown),
            ", ".join(str(c.name) for c in rule.channels) or "-",
            *state,
        )
        table.add_row(*map(escape, cells))  # "queue_depth[queue=x]" is not markup
    console.print(table)
    return 0
