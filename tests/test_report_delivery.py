"""Reports sent through the alerts' channels, now and on a schedule: real HTTP and SMTP
servers on loopback receive them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest

import taskflow
from taskflow.alerts.channels import Email, Slack, Webhook
from taskflow.insights.delivery import send_report
from tests.alert_servers import RecordingHTTPServer, SMTPRecorder, signature_ok, wait_until

pytestmark = pytest.mark.asyncio

SECRET = "s3cret-report-key"


async def test_each_channel_gets_the_report_in_its_form_and_one_down_stops_none(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()

    @app.task
    async def work() -> None: ...

    with RecordingHTTPServer() as http, SMTPRecorder() as smtp:
        http.respond("/down", [500])
        channels: list[Any] = [
            Webhook(url=http.url("/down")),
            Webhook(url=http.url("/hook"), secret=SECRET),
            Slack(url=http.url("/slack")),
            Email(
                host="127.0.0.1",
                port=smtp.port,
                sender="t@x.test",
                to=("ops@x.test",),
                starttls=False,
            ),
        ]
        async with app, app.worker():
            await (await work.enqueue()).result(timeout=10)
            await anyio.sleep(1.3)  # the metrics' flush
            report = await app.report(since=timedelta(minutes=10))
            failed = await send_report(report, channels)
        [hook] = http.requests("/hook")
        [slack] = http.json_bodies("/slack")
        await wait_until(lambda: len(smtp.mails) == 1, 5)
    assert failed == [channels[0].name]
    assert signature_ok(hook, SECRET) and hook.json()["summary"]["jobs"] >= 1
    assert slack["text"].startswith(f"*taskflow report: {app.name}") and "jobs" in slack["text"]
    mail = smtp.mails[0].message
    assert mail["Subject"].startswith(f"taskflow report: {app.name}")
    html = mail.get_body(("html",))
    text = mail.get_body(("plain",))
    assert html is not None and "<svg" in html.get_content()
    assert text is not None and "## Summary" in text.get_content()


async def test_a_scheduled_report_is_sent_by_the_workers(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()
    with RecordingHTTPServer() as http:
        app.schedule_report(
            every=timedelta(seconds=1),
            since=timedelta(minutes=5),
            channels=[Webhook(url=http.url("/r"))],
        )
        async with app, app.worker():
            [delivered, *_] = await http.wait_for("/r", 1, timeout=20)
    assert set(delivered.json()) >= {"summary", "slas", "trends", "bottlenecks", "forecasts"}


async def test_a_channel_that_cannot_take_a_report_is_refused(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    class AlertsOnly:
        name = "alerts-only"

        async def send(self, event: object) -> None: ...

    with pytest.raises(taskflow.ConfigurationError, match="cannot send a report"):
        named_app().schedule_report(every=timedelta(hours=1), channels=[AlertsOnly()])
