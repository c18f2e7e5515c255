"""Alerting demo: rules over job metrics and queue depth, notified once, acknowledged, resolved.

Run it with ``python examples/alerting.py``. It uses the Redis at ``TASKFLOW_REDIS_URL``
(default ``redis://localhost:6379/0``), or a private embedded redis-server when nothing
answers there and the ``embedded`` extra is installed. It takes about ten seconds.

What it shows:

* two rules built in code: the ``failure_rate`` preset on ``charge_card`` (over half of
  its attempts failing in a 10 s window, read as whole one-minute metric buckets, for 1 s)
  and a backlog rule on the depth of the ``alerting-demo-reports`` queue (over 20 waiting
  jobs, for 1 s);
* three channels: the console, the ``taskflow.alerts`` logger, and a webhook posted to a
  small receiver this script starts on a free loopback port, which checks each delivery's
  ``X-Taskflow-Signature`` as your own endpoint should (and refuses a forged one);
* a worker evaluating the rules every 0.5 s (``WorkerSettings.alert_interval``, 15 s by
  default): the payment provider goes down, the failure rate rule goes pending, then firing
  with exactly one notification; it is acknowledged with ``app.alerts.ack``; the provider
  recovers and the alert resolves. Then reports pile up on a queue no worker serves, the
  backlog rule fires, a second worker drains the queue, and it resolves: two workers
  evaluate the rules, and still one notification goes out per change;
* the alert history, from ``app.alerts.history()``.

It exits 0 when each rule notified exactly once firing and once resolved, with valid
signatures, and the history has the acknowledgement; 1 otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

import taskflow
from taskflow.alerts import AlertNotFound, AlertRule, Condition, Log, Webhook, presets
from taskflow.alerts import Console as ConsoleChannel
from taskflow.config import MetricsSettings

QUEUE = "alerting-demo"
REPORTS = "alerting-demo-reports"
FAILURES = "alerting-demo-failures"
BACKLOG = "alerting-demo-backlog"
# in production, read the secret from your secret store or the environment
SECRET = "demo-signing-secret"

app = taskflow.TaskFlow(
    settings=taskflow.Settings(
        result_ttl=timedelta(minutes=10),
        # evaluate every 0.5 s and write job metrics every 0.2 s, to keep the demo short
        worker=taskflow.WorkerSettings(alert_interval=timedelta(seconds=0.5)),
        metrics=MetricsSettings(flush_interval=timedelta(seconds=0.2)),
    )
)
provider_up = True  # flipped by the demo to simulate an outage of the payment provider


@app.task(queue=QUEUE)
async def charge_card(order_id: int, cents: int) -> str:
    """Charge a card; while the provider is down, three charges in four fail."""
    await asyncio.sleep(0.005)
    if not provider_up and order_id % 4:
        raise ConnectionError(f"payment provider timed out charging order {order_id}")
    return f"order {order_id}: charged {cents / 100:.2f}"


@app.task(queue=REPORTS)
async def render_report(day: str) -> str:
    """Render a daily report (simulated)."""
    await asyncio.sleep(0.01)
    return f"report for {day}"


def alert_rules(webhook_url: str) -> list[AlertRule]:
    """The demo's rules: a preset and a hand-written one, sending to three channels."""
    channels = [ConsoleChannel(), Log(), Webhook(url=webhook_url, secret=SECRET)]
    failures = presets.failure_rate(
        0.5,
        task="charge_card",
        window=timedelta(seconds=10),
        for_=timedelta(seconds=1),
        severity="critical",
        channels=channels,
    )
    # a preset is an ordinary AlertRule: rename it, and shorten the cooldown (15 min by
    # default) so that running the demo twice in a row notifies both times
    failures = failures.model_copy(update={"name": FAILURES, "cooldown": timedelta(seconds=5)})
    backlog = AlertRule(
        name=BACKLOG,
        conditions=[Condition(metric="queue_depth", queue=REPORTS, op=">", threshold=20)],
        for_=timedelta(seconds=1),
        severity="warning",
        cooldown=timedelta(seconds=5),
        channels=channels,
        message="{rule}: {value} reports waiting on {queue} (> {threshold})",
    )
    return [failures, backlog]


def verify(secret: bytes, timestamp: str, signature: str, body: bytes) -> bool:
    """Check a webhook delivery: recompute the HMAC-SHA256 of ``timestamp + "." + body``,
    compare in constant time, and refuse timestamps more than 5 minutes off (replays)."""
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), signature)


class Receiver:
    """A webhook endpoint on a free loopback port: verifies, records and answers 204 (401
    when the signature is wrong). A real one would be a route in your web app."""

    def __init__(self, secret: str, console: Console) -> None:
        self.secret = secret.encode()
        self.console = console
        self.events: list[dict[str, Any]] = []
        self.refused = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hooks/taskflow"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        stamp = headers.get("x-taskflow-timestamp", "")
        ok = verify(self.secret, stamp, headers.get("x-taskflow-signature", ""), body)
        writer.write(
            f"HTTP/1.1 {'204 No Content' if ok else '401 Unauthorized'}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()
        if not ok:
            self.refused += 1
            self.console.print("  webhook: [red]refused a delivery with a bad signature (401)[/]")
            return
        event = json.loads(body)
        self.events.append(event)
        self.console.print(
            f"  webhook: {event['state']} {event['rule']} (alert {event['alert_id'][:8]}), "
            "signature ok"
        )

    def count(self, rule: str, state: str) -> int:
        return sum(e["rule"] == rule and e["state"] == state for e in self.events)

    def first(self, rule: str, state: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["rule"] == rule and e["state"] == state), None)


async def watch_states(rules: list[str], console: Console, started: float) -> None:
    """Print each rule's state (from Redis, as any process sees it) whenever it changes."""
    last: dict[str, str] = {}
    while True:
        for rule in rules:
            state = (await app.alerts.state(rule)).get("state", "ok")
            if last.get(rule) != state:
                was = last.get(rule)
                change = f"{was} -> {state}" if was else state
                console.print(f"{time.monotonic() - started:5.1f}s  {rule}: [bold]{change}[/]")
                last[rule] = state
        await asyncio.sleep(0.05)


async def traffic(until: Callable[[], bool], per_tick: int, timeout: float = 20) -> bool:
    """Enqueue ``per_tick`` charges every 0.1 s until ``until()`` is true (or ``timeout``)."""
    order = int(time.time() * 1000)
    stop_at = time.monotonic() + timeout
    while not until():
        if time.monotonic() > stop_at:
            return False
        for _ in range(per_tick):
            order += 1
            await charge_card.enqueue(order, cents=1999)
        await asyncio.sleep(0.1)
    return True


async def wait_for(until: Callable[[], bool], timeout: float = 20) -> bool:
    stop_at = time.monotonic() + timeout
    while not until():
        if time.monotonic() > stop_at:
            return False
        await asyncio.sleep(0.05)
    return True


async def forge(url: str) -> int:
    """Post a delivery signed with the wrong key, as an attacker would: the receiver refuses."""
    body = b'{"rule": "fake", "state": "resolved"}'
    stamp = str(int(time.time()))
    mac = hmac.new(b"not-the-secret", stamp.encode() + b"." + body, hashlib.sha256)
    headers = {"X-Taskflow-Timestamp": stamp, "X-Taskflow-Signature": "sha256=" + mac.hexdigest()}
    async with httpx.AsyncClient() as client:
        return (await client.post(url, content=body, headers=headers)).status_code


def history_table(records: list[taskflow.alerts.AlertRecord]) -> Table:
    table = Table(title="alert history (app.alerts.history())")
    for column in ("time (UTC)", "rule", "event", "alert id", "value", "by / note"):
        table.add_column(column)
    for r in records:
        value = f"{float(r.value):.3g}" if r.value else ""
        who = f"{r.by}: {r.note}" if r.by else ""
        table.add_row(f"{r.at:%H:%M:%S.%f}"[:-3], r.rule, r.event, r.alert_id[:8], value, who)
    return table


async def outage(receiver: Receiver, console: Console) -> str | None:
    """The provider goes down until the failure rate rule fires; returns the alert id."""
    global provider_up
    console.print("\n[bold]1. the payment provider goes down[/]: 3 in 4 charges fail")
    provider_up = False
    if not await traffic(lambda: receiver.count(FAILURES, "firing") > 0, per_tick=10):
        return None
    event = receiver.first(FAILURES, "firing")
    assert event is not None
    console.print("  the webhook's JSON body:")
    console.print(json.dumps(event, indent=2), markup=False, highlight=False)
    # the worker keeps evaluating every 0.5 s while the rule fires: no second notification
    await traffic(lambda: False, per_tick=10, timeout=1.5)
    console.print(f"  firing notifications so far: {receiver.count(FAILURES, 'firing')}")
    return str(event["alert_id"])


async def acknowledge(alert_id: str, console: Console) -> None:
    console.print("\n[bold]2. on-call acknowledges the alert[/]")
    rule = await app.alerts.ack(alert_id, by="ada", note="provider incident, failing over")
    console.print(f"  app.alerts.ack({alert_id[:8]}...) acknowledged rule {rule}")
    await asyncio.sleep(0.1)  # let the state watcher print the change
    try:
        await app.alerts.ack(alert_id, by="grace")
    except AlertNotFound as exc:
        console.print(f"  a second ack is refused: {exc}")


async def backlog(receiver: Receiver, console: Console) -> bool:
    """Reports pile up where no worker listens; a second worker drains them."""
    console.print(f"\n[bold]4. 40 reports wait on {REPORTS!r}[/], which no worker serves yet")
    for day in range(1, 41):
        await render_report.enqueue(f"2024-05-{day % 31 + 1:02d}")
    if not await wait_for(lambda: receiver.count(BACKLOG, "firing") > 0):
        return False
    console.print("\n[bold]5. a second worker starts on the reports queue[/]")
    async with app.worker(queues=[REPORTS], concurrency=10):
        return await wait_for(lambda: receiver.count(BACKLOG, "resolved") > 0)


async def main() -> int:
    global provider_up
    console = Console() if sys.stdout.isatty() else Console(width=110)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("taskflow.alerts").setLevel(logging.INFO)  # the Log channel's records
    # the demo fails charges on purpose: one ERROR with a traceback each would drown it
    logging.getLogger("taskflow.worker").setLevel(logging.CRITICAL)
    started = time.monotonic()
    since = datetime.now(UTC)
    async with Receiver(SECRET, console) as receiver, app:
        console.print(f"Redis at {app.redis_url} (embedded: {'yes' if app.embedded else 'no'})")
        console.print(f"webhook receiver at {receiver.url}")
        for rule in alert_rules(receiver.url):
            app.alerts.add_rule(rule)
            await app.alerts.reset(rule.name)  # a fresh demo, whatever an earlier run left
        async with app.worker(queues=[QUEUE], concurrency=20), asyncio.TaskGroup() as tg:
            watcher = tg.create_task(watch_states([FAILURES, BACKLOG], console, started))
            alert_id = await outage(receiver, console)
            if alert_id is not None:
                await acknowledge(alert_id, console)
                console.print("\n[bold]3. the provider recovers[/]: every charge succeeds")
                provider_up = True
                await traffic(lambda: receiver.count(FAILURES, "resolved") > 0, per_tick=10)
            drained = await backlog(receiver, console)
            console.print(f"\nforged delivery answered HTTP {await forge(receiver.url)}")
            watcher.cancel()
        history = [
            r for r in await app.alerts.history(since=since) if r.rule in (FAILURES, BACKLOG)
        ]
    console.print(history_table(history))
    events = {(r.rule, r.event) for r in history}
    ok = (
        alert_id is not None
        and drained
        and all(
            receiver.count(rule, s) == 1
            for rule in (FAILURES, BACKLOG)
            for s in ("firing", "resolved")
        )
        and receiver.refused == 1
        and (FAILURES, "acknowledged") in events
    )
    console.print(
        "[green]alerting demo ended as expected[/]" if ok else "[red]unexpected outcome[/]"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except taskflow.RedisUnavailable as exc:  # no server, or one that refused: say which
        sys.exit(f"error: {exc}")
