"""Sending a report through the alerts' channels, and on a schedule.

Each built-in channel gets the report in the form it reads best: an email gets the HTML
report with the Markdown as its plain-text part; a webhook the JSON report (signed as alert
events are, when it has a secret); Slack a summary with the bottlenecks (a message is no
place for charts); the log and the console the Markdown. A channel of your own gets it if
it has ``async def send_report(self, report)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..alerts.channels import Console, Email, Log, Slack, Webhook
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .report import Report

__all__ = ("send_report", "slack_summary")

logger = logging.getLogger("taskflow.insights")

_SLACK_CHARS = 3000  # Slack truncates a message's text past about 4,000 characters


async def send_report(report: Report, channels: Sequence[Any]) -> list[str]:
    """Send ``report`` to every channel; returns the names of those that failed (each
    failure is logged, the others are still sent)."""
    failed = []
    for channel in channels:
        try:
            await _send(report, channel)
        except Exception as exc:  # one channel down must not stop the others
            name = str(getattr(channel, "name", type(channel).__name__))
            failed.append(name)
            logger.warning("the report could not be sent to %s: %s", name, exc)
    return failed


def check_channels(channels: Sequence[Any]) -> None:
    """Raise :class:`ConfigurationError` for a channel that cannot take a report."""
    for channel in channels:
        if not isinstance(channel, Email | Webhook | Slack | Log | Console) and not callable(
            getattr(channel, "send_report", None)
        ):
            raise ConfigurationError(
                f"channel {channel!r} cannot send a report: use a built-in channel (Email, "
                "Webhook, Slack, Log, Console) or one with `async def send_report(self, report)`"
            )


async def _send(report: Report, channel: Any) -> None:
    title = (
        f"taskflow report: {report.app} ({report.since:%Y-%m-%d %H:%M} to {report.until:%H:%M} UTC)"
    )
    if isinstance(channel, Email):
        message = channel.message(title)
        message.set_content(report.to_markdown())
        message.add_alternative(report.to_html(), subtype="html")
        await channel.deliver(message)
    elif isinstance(channel, Webhook):
        await channel.post(report.to_json().encode())
    elif isinstance(channel, Slack):
        await channel.post({"text": slack_summary(report, title)})
    elif isinstance(channel, Log):
        logger.info("%s\n%s", title, report.to_markdown())
    elif isinstance(channel, Console):
        from rich.console import Console as RichConsole
        from rich.markdown import Markdown

        RichConsole().print(Markdown(report.to_markdown()))
    else:
        await channel.send_report(report)


def slack_summary(report: Report, title: str) -> str:
    """The report's head for a chat message: totals, then each bottleneck's advice."""
    s = report.summary
    lines = [
        f"*{title}*",
        f"{s.jobs} jobs, {s.failures} failed for good, {s.retries} retried",
    ]
    lines += [f"• {b.kind} {b.subject}: {b.recommendation}" for b in report.bottlenecks.items]
    if not report.bottlenecks.items and report.bottlenecks.reason:
        lines.append(f"no bottlenecks: {report.bottlenecks.reason}")
    text = "\n".join(lines)
    return text if len(text) <= _SLACK_CHARS else text[: _SLACK_CHARS - 1] + "…"
