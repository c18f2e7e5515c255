"""Alerts across a cluster: two real worker processes evaluate the same rules every 0.3 s
against the test Redis and deliver to a recording HTTP server in this process.

Each rule watches ``queue_depth`` of its own queue that nobody serves: the test enqueues
jobs there to make the condition true and deletes them to clear it. What is checked: one
firing notification across both workers, within one evaluation interval after ``for``;
nothing more within the cooldown (a later alert inside it is suppressed); a reminder after
the cooldown; ``ack`` silences the alert until it resolves; one resolved notification
when the condition clears; ``history`` in order; and a rule whose channel's server is down
does not hold up another rule's deliveries.

The workers are started once for the module with every rule the tests use; the alert state
keys are per rule name, so every rule name and queue carries this run's id. Nothing is
flushed: the module deletes its queues, its rules' state and its alert ids at the end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import orjson
import pytest
import pytest_asyncio
import redis as sync_redis
from redis.asyncio import Redis

import taskflow
from taskflow._protocol import keys
from taskflow.alerts import AlertNotFound, AlertRecord
from tests.alert_servers import HTTPRequest, RecordingHTTPServer, closed_port, signature_ok
from tests.apps import alerts_app
from tests.apps.shared import REDIS_URL
from tests.helpers import until
from tests.processes import Workers, wait_live

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

APP = "tests.apps.alerts_app:app"
RUN = uuid.uuid4().hex[:8]
INTERVAL = 0.3  # WorkerSettings.alert_interval of both workers
SLACK = 0.4  # scheduling and delivery latency allowed on top of the protocol's own bounds
SECRET = f"whsec-cluster-{RUN}-never-logged"
TOKEN = f"tok{RUN}"  # in every webhook path: a URL path may hold a credential


@dataclass(frozen=True)
class Rule:
    name: str
    queue: str
    path: str  # where its webhook posts ("" for none)
    for_: float
    cooldown: float
    channels: tuple[dict[str, Any], ...] = ()

    def spec(self, http: RecordingHTTPServer) -> dict[str, Any]:
        channels = list(self.channels)
        if self.path:
            channels.insert(0, {"type": "webhook", "url": http.url(self.path), "secret": SECRET})
        return {
            "name": self.name,
            "conditions": [
                {"metric": "queue_depth", "queue": self.queue, "op": ">=", "threshold": 2}
            ],
            "for": f"{self.for_}s",
            "cooldown": f"{self.cooldown}s",
            "severity": "critical",
            "message": "{rule} {state}: depth of {queue} is {value} (>= {threshold})",
            "channels": channels,
        }


def make_rule(tag: str, *, path: bool = True, **fields: Any) -> Rule:
    return Rule(
        name=f"a-{tag}-{RUN}",
        queue=f"t-alert-{tag}-{RUN}",
        path=f"/hook/{TOKEN}/{tag}" if path else "",
        **fields,
    )


ONCE = make_rule("once", for_=1.0, cooldown=60.0)
REMIND = make_rule("remind", for_=0.0, cooldown=1.0)
UP = make_rule("up", for_=0.0, cooldown=60.0)
DOWN = make_rule(
    "down",
    path=False,
    for_=0.0,
    cooldown=60.0,
    channels=(
        {
            "type": "webhook",
            "url": f"http://127.0.0.1:{closed_port()}/in/{TOKEN}-down",
            "secret": SECRET,
        },
        {"type": "slack", "url": f"http://127.0.0.1:{closed_port()}/services/{TOKEN}-slack"},
    ),
)
DOWN = replace(DOWN, queue=UP.queue)  # the same condition as UP
RULES = (ONCE, REMIND, UP, DOWN)


@dataclass
class Cluster:
    http: RecordingHTTPServer
    workers: Workers
    served: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    served = f"t-alert-served-{RUN}"
    env = {
        "TEST_QUEUE": served,
        "TEST_ALERT_INTERVAL": str(INTERVAL),
        "TEST_ALERT_RULES": "",
    }
    with RecordingHTTPServer() as http:
        env["TEST_ALERT_RULES"] = orjson.dumps([r.spec(http) for r in RULES]).decode()
        try:
            with Workers(tmp_path_factory.mktemp("alerts-cluster"), APP) as workers:
                for _ in range(2):
                    workers.spawn([served], concurrency=2, env=env)
                yield Cluster(http, workers, served)
        finally:
            _forget(served)


def _forget(served: str) -> None:
    """Delete what this module left in Redis: queues, rule state, alert ids."""
    client = sync_redis.Redis.from_url(REDIS_URL)
    scope = keys.AppKeys(APP.partition(":")[0])
    try:
        names = {r.name for r in RULES}
        ids = [k for k, v in client.hscan_iter(scope.alert_ids) if v.decode() in names]
        if ids:
            client.hdel(scope.alert_ids, *ids)
        client.delete(
            *(scope.alert_state(r.name) for r in RULES),
            *(keys.queue(r.queue) for r in RULES),
            keys.queue(served),
        )
    finally:
        client.close()


@pytest_asyncio.fixture
async def app(cluster: Cluster, redis: Redis) -> AsyncIterator[taskflow.TaskFlow]:
    """An open app of this process (no rules: only the workers evaluate), once both
    workers are live."""
    for worker in cluster.workers.started:
        await wait_live(redis, worker)
    client = alerts_app.make_app(cluster.served, rules="[]")
    async with client:
        yield client


class Backlog:
    """Jobs on a rule's queue (nobody serves it): ``fill`` makes the condition true,
    ``clear`` makes it false."""

    def __init__(self, app: taskflow.TaskFlow, queue: str) -> None:
        self.app = app
        self.queue = queue
        self.job_ids: list[str] = []

    async def fill(self, jobs: int = 2) -> float:
        """Enqueue ``jobs``; returns the wall time just before, when the condition could
        first hold."""
        started = time.time()
        noop = self.app.get_task("alert_noop").with_options(queue=self.queue)
        for n in range(jobs):
            handle = await noop.enqueue(n)
            self.job_ids.append(handle.job_id)
        return started

    async def clear(self) -> float:
        """Delete the queue and its jobs; returns the wall time just after."""
        await self.app.redis.delete(keys.queue(self.queue), *(keys.job(j) for j in self.job_ids))
        self.job_ids.clear()
        return time.time()


def bodies(requests: list[HTTPRequest]) -> list[dict[str, Any]]:
    return [r.json() for r in requests]


async def history_of(app: taskflow.TaskFlow, rule: Rule, since: float) -> list[AlertRecord]:
    start = datetime.fromtimestamp(since - 1, UTC)
    return [r for r in await app.alerts.history(since=start) if r.rule == rule.name]


async def wait_history(
    app: taskflow.TaskFlow, rule: Rule, since: float, events: list[str], timeout: float
) -> list[AlertRecord]:
    """The rule's history once it lists ``events`` (in that order)."""

    async def listed() -> bool:
        return [r.event for r in await history_of(app, rule, since)] == events

    await until(listed, timeout=timeout, interval=0.05)
    return await history_of(app, rule, since)


async def quiet_for(seconds: float) -> None:
    """Let the workers evaluate for ``seconds`` (several intervals)."""
    await anyio.sleep(seconds)


def check_firing(body: dict[str, Any], rule: Rule) -> None:
    assert body["rule"] == rule.name
    assert body["state"] == "firing"
    assert body["severity"] == "critical"
    assert body["metric"] == "queue_depth"
    assert body["value"] == 2.0
    assert body["threshold"] == 2.0
    assert body["resolved_at"] is None
    assert body["message"] == f"{rule.name} firing: depth of {rule.queue} is 2 (>= 2)"
    assert len(body["alert_id"]) == 32
    datetime.fromisoformat(body["started_at"])


async def test_a_rule_fires_once_across_both_workers_and_resolves_once(
    cluster: Cluster, app: taskflow.TaskFlow
) -> None:
    http, rule, backlog = cluster.http, ONCE, Backlog(app, ONCE.queue)
    try:
        became_true = await backlog.fill()
        [firing] = await http.wait_for(rule.path, 1, timeout=rule.for_ + 2 * INTERVAL + 3)
        body = firing.json()
        check_firing(body, rule)
        assert signature_ok(firing, SECRET)

        # not before `for` has elapsed, and within one evaluation interval after it
        state = await app.alerts.state(rule.name)
        assert state["state"] == "firing"
        assert state["alert_id"] == body["alert_id"]
        pending_since, started = int(state["pending_since"]), int(state["started_at"])
        assert pending_since >= became_true * 1000 - 20
        assert pending_since - became_true * 1000 <= (INTERVAL + SLACK) * 1000
        assert rule.for_ * 1000 <= started - pending_since <= (rule.for_ + INTERVAL + SLACK) * 1000
        assert firing.wall - became_true >= rule.for_
        assert firing.wall - became_true <= rule.for_ + 2 * INTERVAL + SLACK
        assert datetime.fromisoformat(body["started_at"]) == datetime.fromtimestamp(
            started / 1000, UTC
        )

        # both workers keep evaluating: still one notification (the cooldown is 60 s)
        await quiet_for(6 * INTERVAL)
        assert len(http.requests(rule.path)) == 1

        cleared = await backlog.clear()
        _, resolved = await http.wait_for(rule.path, 2, timeout=2 * INTERVAL + 3)
        assert resolved.wall - cleared <= INTERVAL + SLACK
        again = resolved.json()
        assert again["state"] == "resolved"
        assert again["alert_id"] == body["alert_id"]
        assert again["started_at"] == body["started_at"]
        assert again["resolved_at"] is not None
        assert again["resolved_at"] >= again["started_at"]
        assert again["value"] == 0.0
        assert signature_ok(resolved, SECRET)
        await quiet_for(4 * INTERVAL)
        assert len(http.requests(rule.path)) == 2

        records = await history_of(app, rule, became_true)
        assert [(r.event, r.alert_id) for r in records] == [
            ("firing", body["alert_id"]),
            ("resolved", body["alert_id"]),
        ]
        assert records[0].at <= records[1].at
        assert records[0].severity == "critical"
        assert records[0].message == body["message"]
        assert (await app.alerts.state(rule.name))["state"] == "ok"
        with pytest.raises(AlertNotFound, match="cannot be acknowledged"):
            await app.alerts.ack(body["alert_id"], by="late")

        # true again within the cooldown of the last notification: a new alert, recorded
        # as suppressed; nothing is sent, neither for it nor for its resolution
        back = await backlog.fill()
        records = await wait_history(
            app,
            rule,
            became_true,
            ["firing", "resolved", "suppressed"],
            timeout=rule.for_ + 2 * INTERVAL + 3,
        )
        quiet_id = records[-1].alert_id
        assert quiet_id != body["alert_id"]
        assert records[-1].at.timestamp() - back >= rule.for_
        await backlog.clear()
        records = await wait_history(
            app,
            rule,
            became_true,
            ["firing", "resolved", "suppressed", "resolved"],
            timeout=2 * INTERVAL + 3,
        )
        assert records[-1].alert_id == quiet_id
        await quiet_for(3 * INTERVAL)
        assert len(http.requests(rule.path)) == 2
    finally:
        await backlog.clear()


async def test_reminder_after_the_cooldown_and_ack_silences_until_resolve(
    cluster: Cluster, app: taskflow.TaskFlow
) -> None:
    http, rule, backlog = cluster.http, REMIND, Backlog(app, REMIND.queue)
    try:
        became_true = await backlog.fill()
        [first] = await http.wait_for(rule.path, 1, timeout=2 * INTERVAL + 3)
        check_firing(first.json(), rule)
        assert first.wall - became_true <= 2 * INTERVAL + SLACK
        alert_id = first.json()["alert_id"]

        # still firing after the cooldown: one reminder of the same alert
        _, second = await http.wait_for(rule.path, 2, timeout=rule.cooldown + INTERVAL + 3)
        reminder = second.json()
        check_firing(reminder, rule)
        assert reminder["alert_id"] == alert_id
        assert reminder["started_at"] == first.json()["started_at"]
        # not before the cooldown: judged on the decisions' own times (the history), since a
        # delivery can reach the server late; the arrivals bound it from above
        decided = [
            r.at
            for r in await app.alerts.history(since=timedelta(minutes=5))
            if r.alert_id == alert_id and r.event == "firing"
        ]
        assert len(decided) == 2
        assert (decided[1] - decided[0]).total_seconds() >= rule.cooldown
        assert second.at - first.at <= rule.cooldown + INTERVAL + SLACK
        assert signature_ok(second, SECRET)

        # acknowledged: nothing more while it keeps firing
        assert await app.alerts.ack(alert_id, by="alice", note="on it") == rule.name
        state = await app.alerts.state(rule.name)
        assert state["state"] == "acknowledged"
        assert (state["acked_by"], state["ack_note"]) == ("alice", "on it")
        with pytest.raises(AlertNotFound, match="acknowledged"):
            await app.alerts.ack(alert_id, by="bob")
        with pytest.raises(AlertNotFound, match="unknown"):
            await app.alerts.ack(uuid.uuid4().hex, by="bob")
        await quiet_for(2.5 * rule.cooldown)  # two reminders' worth
        assert len(http.requests(rule.path)) == 2
        assert (await app.alerts.state(rule.name))["state"] == "acknowledged"

        # the condition clears: one resolved notification
        cleared = await backlog.clear()
        *_, resolved = await http.wait_for(rule.path, 3, timeout=2 * INTERVAL + 3)
        assert resolved.wall - cleared <= INTERVAL + SLACK
        assert resolved.json()["state"] == "resolved"
        assert resolved.json()["alert_id"] == alert_id
        await quiet_for(4 * INTERVAL)
        assert len(http.requests(rule.path)) == 3

        records = await history_of(app, rule, became_true)
        assert [(r.event, r.alert_id) for r in records] == [
            ("firing", alert_id),
            ("firing", alert_id),
            ("acknowledged", alert_id),
            ("resolved", alert_id),
        ]
        assert [r.at for r in records] == sorted(r.at for r in records)
        assert (records[2].by, records[2].note) == ("alice", "on it")
        assert records[2].value == "2.0"
        with pytest.raises(AlertNotFound):
            await app.alerts.ack(alert_id, by="alice")
    finally:
        await backlog.clear()


async def test_a_channel_whose_server_is_down_does_not_hold_up_another_rule(
    cluster: Cluster, app: taskflow.TaskFlow
) -> None:
    """DOWN (webhook and Slack on closed ports) and UP watch the same queue; UP delivers
    firing and resolved on time while DOWN's deliveries fail and retry in the background."""
    http, backlog = cluster.http, Backlog(app, UP.queue)
    try:
        became_true = await backlog.fill()
        [firing] = await http.wait_for(UP.path, 1, timeout=2 * INTERVAL + 3)
        check_firing(firing.json(), UP)
        assert firing.wall - became_true <= 2 * INTERVAL + SLACK
        down = await wait_history(app, DOWN, became_true, ["firing"], timeout=3)
        cleared = await backlog.clear()
        _, resolved = await http.wait_for(UP.path, 2, timeout=2 * INTERVAL + 3)
        assert resolved.json()["state"] == "resolved"
        assert resolved.wall - cleared <= INTERVAL + SLACK
        await wait_history(app, DOWN, became_true, ["firing", "resolved"], timeout=3)
        assert (await app.alerts.state(DOWN.name))["alert_id"] == down[0].alert_id

        # the failures are logged by the worker that notified, without secrets or paths
        def failures() -> bool:
            return "channel webhook http://127.0.0.1 failed" in cluster.workers.logs()

        async def failed() -> bool:
            return failures()

        await until(failed, timeout=5, interval=0.1)
        logs = cluster.workers.logs()
        assert f"alert {DOWN.name} (firing): channel slack failed" in logs
        assert SECRET not in logs
        own = [line for line in logs.splitlines() if " taskflow." in line]
        assert own
        for line in own:
            assert TOKEN not in line, line
    finally:
        await backlog.clear()


async def test_workers_evaluated_without_errors(cluster: Cluster) -> None:
    """Whatever ran before: both workers are up and no rule failed to evaluate."""
    for worker in cluster.workers.started:
        assert worker.proc.poll() is None, worker.log()
        assert "could not be evaluated" not in worker.log()
        assert "Traceback" not in worker.log()
