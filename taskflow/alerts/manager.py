"""``app.alerts``: the rule registry, acknowledgement and history; and the evaluator that
runs in every worker.

Every worker evaluates every rule each ``alert_interval``; ``lua/alert_step.lua`` decides
atomically which one notifies, so N workers send one notification per condition per
cooldown. Deliveries run beside the evaluator, each channel retried with backoff, so a
failing channel never blocks the evaluator, the other channels or the job loop.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio import CancelScope, fail_after, get_cancelled_exc_class
from anyio.abc import TaskGroup, TaskStatus

from .._clock import ms_to_datetime, now_ms
from .._protocol.scripts import AckReply, AlertAction
from ..connection import CONNECTION_ERRORS
from ..errors import AlertNotFound, ConfigurationError, redis_errors
from .channels import AlertEvent, Channel
from .rules import AlertRule, ConditionResult, load_rules, render_message
from .sources import Measurer

if TYPE_CHECKING:
    from .._client import Client
    from .._worker.services import Health, ServiceContext

__all__ = ("AlertEvaluator", "AlertManager", "AlertNotFound", "AlertRecord")

logger = logging.getLogger("taskflow.alerts")

HISTORY_MAX = 10_000
_DELIVERY_ATTEMPTS = 4
_SEND_DEADLINE = 20.0  # seconds one delivery attempt may take, whatever the channel's timeout


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One history entry: ``event`` is firing, suppressed, resolved or acknowledged."""

    alert_id: str
    rule: str
    event: str
    at: datetime
    severity: str = ""
    value: str = ""
    threshold: str = ""
    message: str = ""
    by: str = ""
    note: str = ""


class AlertManager:
    """Alert rules of an app, and the cluster's alert state in Redis."""

    def __init__(self, app: Client) -> None:
        self.app = app
        self._rules: dict[str, AlertRule] = {}

    @property
    def rules(self) -> list[AlertRule]:
        return list(self._rules.values())

    def add_rule(self, rule: AlertRule) -> AlertRule:
        """Register ``rule``; its name must be new. Returns it."""
        if not isinstance(rule, AlertRule):
            raise ConfigurationError(f"add_rule takes an AlertRule, got {rule!r}")
        if rule.name in self._rules:
            raise ConfigurationError(f"an alert rule named {rule.name!r} already exists")
        self._rules[rule.name] = rule
        return rule

    def remove_rule(self, name: str) -> None:
        if self._rules.pop(name, None) is None:
            raise ConfigurationError(f"no alert rule named {name!r}")

    def load(self, path: str | Path) -> list[AlertRule]:
        """Add every rule of a YAML or TOML file (all or none: a bad rule loads nothing)."""
        rules = load_rules(path)
        clash = sorted(r.name for r in rules if r.name in self._rules)
        if clash:
            raise ConfigurationError(f"{path}: rules already registered: {clash}")
        for rule in rules:
            self._rules[rule.name] = rule
        return rules

    @redis_errors
    async def ack(self, alert_id: str, *, by: str, note: str = "") -> str:
        """Acknowledge a firing alert: it notifies nothing more until it resolves.

        Returns the rule name. Raises :class:`AlertNotFound` if the alert is not firing.
        """
        if not by:
            raise ConfigurationError("ack needs by= (who acknowledges)")
        verdict, rule = await self.app.scripts.alert_ack(
            self.app.keys, alert_id, by, note, now_ms(), HISTORY_MAX
        )
        if verdict is not AckReply.OK:
            raise AlertNotFound(f"alert {alert_id!r} cannot be acknowledged: it is {verdict.value}")
        return rule

    @redis_errors
    async def history(
        self, since: timedelta | datetime = timedelta(hours=24), limit: int = 1000
    ) -> list[AlertRecord]:
        """Alert events since then, oldest first (kept: the last ~10,000)."""
        start = datetime.now(UTC) - since if isinstance(since, timedelta) else since
        entries = await self.app.redis.xrange(
            self.app.keys.alert_history,
            min=str(int(start.timestamp() * 1000)),
            max="+",
            count=limit,
        )
        records = []
        for _, raw in entries:
            data = {k.decode(): v.decode() for k, v in raw.items()}
            records.append(
                AlertRecord(
                    alert_id=data.get("alert_id", ""),
                    rule=data.get("rule", ""),
                    event=data.get("event", ""),
                    at=ms_to_datetime(int(data.get("at", "0"))),
                    severity=data.get("severity", ""),
                    value=data.get("value", ""),
                    threshold=data.get("threshold", ""),
                    message=data.get("message", ""),
                    by=data.get("by", ""),
                    note=data.get("note", ""),
                )
            )
        return records

    @redis_errors
    async def reset(self, rule: str) -> None:
        """Forget ``rule``'s state in Redis: an ongoing alert ends without a notification and
        the next evaluation starts from ``ok`` (after changing a rule, or before a demo).
        The history keeps its events."""
        keys = self.app.keys
        alert_id = (await self.state(rule)).get("alert_id")
        async with self.app.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.alert_state(rule))
            if alert_id:
                pipe.hdel(keys.alert_ids, alert_id)
            await pipe.execute()

    @redis_errors
    async def state(self, rule: str) -> dict[str, str]:
        """A rule's current state hash (state, alert_id, started_at, ...)."""
        async with self.app.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.app.keys.alert_state(rule))
            [raw] = await pipe.execute()
        return {k.decode(): v.decode() for k, v in raw.items()}


class AlertEvaluator:
    """Worker sibling: evaluates every enabled rule each ``WorkerSettings.alert_interval``."""

    name = "alert-evaluator"

    def __init__(self, manager: AlertManager, interval: float) -> None:
        self.manager = manager
        self.interval = interval
        self._deliveries: TaskGroup | None = None

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as deliveries:
            self._deliveries = deliveries
            task_status.started()
            while True:
                await self.evaluate(ctx.health)
                await anyio.sleep(self.interval)

    async def evaluate(self, health: Health) -> None:
        """One round over every rule; a rule that cannot be measured is skipped, logged."""
        rules = [r for r in self.manager.rules if r.enabled]
        if not rules:
            return
        measurer = Measurer(self.manager.app)
        for rule in rules:
            try:
                await self._step(rule, measurer)
            except CONNECTION_ERRORS as exc:
                health.redis_failed("evaluating alerts", exc)
                return
            except Exception:
                logger.exception("alert rule %s could not be evaluated", rule.name)

    async def _step(self, rule: AlertRule, measurer: Measurer) -> None:
        app = self.manager.app
        values = [await measurer.value(c) for c in rule.conditions]
        holds, results = rule.evaluate(values)
        first = next((r for r in results if r.holds), results[0])
        now = now_ms()
        async with app.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(app.keys.alert_state(rule.name), ["state", "started_at"])
            [(state, started_ms)] = await pipe.execute()
        # history and notices carry the start of the alert they belong to: a resolution or a
        # reminder the current one's, a new firing this evaluation's time
        ongoing = state in (b"firing", b"acknowledged") and started_ms
        started = _iso(int(started_ms)) if ongoing else _iso(now)
        message = render_message(rule, "firing" if holds else "resolved", results, started)
        action, alert_id, started = await app.scripts.alert_step(
            app.keys,
            rule.name,
            [
                int(holds),
                now,
                int(rule.for_.total_seconds() * 1000),
                int(rule.cooldown.total_seconds() * 1000),
                uuid.uuid4().hex,
                "" if first.value is None else repr(first.value),
                rule.name,
                rule.severity.value,
                repr(first.condition.threshold),
                message,
                HISTORY_MAX,
            ],
        )
        if action in (AlertAction.NOTIFY_FIRING, AlertAction.NOTIFY_RESOLVED):
            state = "firing" if action is AlertAction.NOTIFY_FIRING else "resolved"
            started_at = _iso(int(started)) if started else _iso(now)
            event = _event(rule, alert_id, state, results, started_at, now)
            assert self._deliveries is not None
            for channel in rule.channels:
                self._deliveries.start_soon(_deliver, channel, event)


def _iso(ms: int) -> str:
    return ms_to_datetime(ms).isoformat()


def _event(
    rule: AlertRule,
    alert_id: str,
    state: str,
    results: list[ConditionResult],
    started_at: str,
    now: int,
) -> AlertEvent:
    first = next((r for r in results if r.holds), results[0])
    return AlertEvent(
        alert_id=alert_id,
        rule=rule.name,
        severity=rule.severity.value,
        state="firing" if state == "firing" else "resolved",
        value=first.value,
        threshold=first.condition.threshold,
        metric=first.condition.metric,
        started_at=started_at,
        resolved_at=_iso(now) if state == "resolved" else None,
        message=render_message(rule, state, results, started_at),
        conditions=[_condition(r) for r in results],
    )


def _condition(result: ConditionResult) -> dict[str, Any]:
    c = result.condition
    return {
        "metric": c.metric,
        "op": c.op,
        "threshold": c.threshold,
        "task": c.task,
        "queue": c.queue,
        "probe": c.probe,
        "stat": c.stat,
        "window_seconds": c.window.total_seconds(),
        "value": result.value,
        "holds": result.holds,
    }


async def _deliver(channel: Channel, event: AlertEvent) -> None:
    """Send with retries and backoff; failures are logged without secrets, never raised."""
    delay = 1.0
    for attempt in range(1, _DELIVERY_ATTEMPTS + 1):
        try:
            # an attempt under way finishes even when the worker stops (bounded); the
            # retries' waits do not hold a stopping worker up
            with CancelScope(shield=True), fail_after(_SEND_DEADLINE):
                await channel.send(event)
            return
        except get_cancelled_exc_class():
            logger.warning(
                "alert %s (%s): delivery to %s abandoned: the worker is stopping",
                event.rule,
                event.state,
                channel.name,
            )
            raise
        except Exception as exc:  # a channel's failure must not touch anything else
            # the exception's type only: messages can carry URLs with tokens
            logger.warning(
                "alert %s (%s): channel %s failed (attempt %d/%d): %s",
                event.rule,
                event.state,
                channel.name,
                attempt,
                _DELIVERY_ATTEMPTS,
                type(exc).__name__,
            )
        if attempt < _DELIVERY_ATTEMPTS:
            await anyio.sleep(delay)
            delay = min(delay * 2, 30.0)
    logger.error("alert %s (%s): gave up on channel %s", event.rule, event.state, channel.name)
