"""taskflow alerts: the alert history (list), acknowledging a firing alert (ack) and the
app's rules with their current state (rules). See docs/alerts.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import click
from rich.markup import escape
from rich.table import Table

from .._clock import ms_to_datetime
from ..alerts import AlertNotFound, AlertRecord, AlertRule
from ..alerts.manager import HISTORY_MAX
from ..app import TaskFlow
from . import CONTEXT, TaskflowGroup, app_argument, console, log_level_option, open_app
from ._params import Since

__all__ = ("alerts",)

_TIME = "%Y-%m-%d %H:%M:%S"
_INSTANT = {"queue_depth", "oldest_job_age", "live_workers", "stuck_jobs"}  # no window


@click.group(
    cls=TaskflowGroup,
    context_settings=CONTEXT,
    short_help="Alert history, acknowledgement and rules.",
)
@log_level_option
def alerts() -> None:
    """Alert history, acknowledgement and rules.

    Rules are registered where the app is defined (app.alerts.add_rule or app.alerts.load)
    and evaluated by the workers; these commands read their state and history from Redis.

    \b
    Examples:
      taskflow alerts rules myapp.tasks:app
      taskflow alerts list myapp.tasks:app --since 24h --rule emails-backlog
      taskflow alerts ack myapp.tasks:app 93f812cb9cab4ce987b6117a55eb4ec2 --by ada
    """


# -- alerts list ----------------------------------------------------------------------------


def _number(text: str) -> str:
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def _history_row(r: AlertRecord) -> list[str]:
    who = f"{r.by}: {r.note}" if r.by and r.note else r.by
    return [f"{r.at:{_TIME}}", r.rule, r.event, r.alert_id, _number(r.value), r.message, who]


async def _history(
    app: TaskFlow, since: timedelta | datetime, limit: int, rule: str | None
) -> None:
    start = datetime.now(UTC) - since if isinstance(since, timedelta) else since
    async with app:
        # the stream holds about HISTORY_MAX events: read them all, show the most recent
        records = await app.alerts.history(start, limit=2 * HISTORY_MAX)
    if rule is not None:
        records = [r for r in records if r.rule == rule]
    out = console()
    if not records:
        out.print(f"no alert events since {start:{_TIME}} UTC")
        return
    shown = records[-limit:]
    table = Table(
        title=f"taskflow alert history since {start:{_TIME}} UTC",
        caption=f"the {len(shown)} most recent of {len(records)} events"
        if len(shown) < len(records)
        else None,
    )
    table.add_column("time (UTC)", no_wrap=True)
    for header in ("rule", "event"):
        table.add_column(header, overflow="fold")
    table.add_column("alert id", no_wrap=True)  # whole, to copy into alerts ack
    table.add_column("value", justify="right")
    for header in ("message", "by / note"):
        table.add_column(header, overflow="fold")
    for record in shown:
        table.add_row(*map(escape, _history_row(record)))  # messages are not markup
    out.print(table)


@alerts.command(
    "list",
    context_settings=CONTEXT,
    short_help="Alert events: firing, suppressed, acknowledged, resolved.",
)
@app_argument
@click.option(
    "--since",
    type=Since(),
    default="24h",
    show_default=True,
    metavar="DURATION|TIME",
    help="Start: a duration before now (30s, 15m, 1h, 7d) or an ISO 8601 time.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    metavar="N",
    help="Show the N most recent events.",
)
@click.option("--rule", metavar="RULE", help="Only this rule's events.")
@log_level_option
def list_(target: str, since: timedelta | datetime, limit: int, rule: str | None) -> None:
    """Alert events: firing, suppressed, acknowledged, resolved.

    APP is the TaskFlow app as module:attribute. Prints a table of time, rule, event, alert
    id, value, message and who acknowledged, oldest first. The alert id of a firing alert is
    what alerts ack takes.

    \b
    Examples:
      taskflow alerts list myapp.tasks:app
      taskflow alerts list myapp.tasks:app --since 7d --limit 20 --rule emails-backlog
    """
    app = open_app(target)
    anyio.run(_history, app, since, limit, rule, backend="asyncio")


# -- alerts ack -----------------------------------------------------------------------------


async def _ack(app: TaskFlow, alert_id: str, by: str, note: str) -> str:
    async with app:
        return await app.alerts.ack(alert_id, by=by, note=note)


@alerts.command(
    context_settings=CONTEXT, short_help="Acknowledge a firing alert: no more notifications."
)
@app_argument
@click.argument("alert_id", metavar="ALERT_ID")
@click.option("--by", required=True, metavar="NAME", help="Who acknowledges (kept in the history).")
@click.option("--note", default="", metavar="TEXT", help="Why, or what is being done.")
@log_level_option
def ack(target: str, alert_id: str, by: str, note: str) -> None:
    """Acknowledge a firing alert: no more notifications.

    APP is the TaskFlow app as module:attribute; take ALERT_ID from alerts list or alerts
    rules. The alert notifies nothing more until it resolves; who acknowledged, and the
    note, are kept in the history. Exits 1 if the alert is not firing (unknown, resolved or
    already acknowledged).

    \b
    Example:
      taskflow alerts ack myapp.tasks:app 93f812cb9cab4ce987b6117a55eb4ec2 --by ada --note "on it"
    """
    app = open_app(target)
    try:
        rule = anyio.run(_ack, app, alert_id, by, note, backend="asyncio")
    except AlertNotFound as exc:
        raise click.ClickException(str(exc)) from exc  # exit 1: a refusal, not a bad usage
    click.echo(f"acknowledged alert {alert_id} of rule {rule} (by {by})")


# -- alerts rules ---------------------------------------------------------------------------


def _duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _state(rule: AlertRule, state: dict[str, str]) -> tuple[str, str, str]:
    """(state, alert id, last value) as shown by alerts rules."""
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


def _when(rule: AlertRule) -> str:
    return f" {rule.match} ".join(
        c.describe() + ("" if c.metric in _INSTANT else f" over {_duration(c.window)}")
        for c in rule.conditions
    )


async def _rules(app: TaskFlow) -> None:
    rules = app.alerts.rules
    out = console()
    if not rules:
        out.print(
            "no alert rules registered: add them where the app is defined, with "
            "app.alerts.add_rule(...) or app.alerts.load('alerts.yaml')"
        )
        return
    async with app:
        states = [await app.alerts.state(rule.name) for rule in rules]
    table = Table(title="taskflow alert rules", caption="state as of now, read from Redis")
    for header in ("rule", "severity", "when", "for", "cooldown", "channels", "state"):
        table.add_column(header, overflow="fold")
    table.add_column("alert id", no_wrap=True)  # whole, to copy into alerts ack
    table.add_column("last value", overflow="fold", justify="right")
    for rule, state in zip(rules, states, strict=True):
        cells = (
            rule.name,
            rule.severity.value,
            _when(rule),
            _duration(rule.for_),
            _duration(rule.cooldown),
            ", ".join(str(c.name) for c in rule.channels) or "-",
            *_state(rule, state),
        )
        table.add_row(*map(escape, cells))  # "queue_depth[queue=x]" is not markup
    out.print(table)


@alerts.command(
    context_settings=CONTEXT, short_help="The app's alert rules and their current state."
)
@app_argument
@log_level_option
def rules(target: str) -> None:
    """The app's alert rules and their current state.

    APP is the TaskFlow app as module:attribute. For each rule: severity, conditions, for,
    cooldown, channels, and its state in Redis (ok, pending, firing with the alert id to
    acknowledge, acknowledged) with the last measured value.

    \b
    Example:
      taskflow alerts rules myapp.tasks:app
    """
    app = open_app(target)
    anyio.run(_rules, app, backend="asyncio")
