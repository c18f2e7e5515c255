"""Ready-made rules for the common cases; opt in with ``app.alerts.add_rule(preset(...))``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from .rules import AlertRule, Condition, Severity

__all__ = ("failure_rate", "no_live_worker", "oldest_job_age", "redis_evicting")


def _preset(
    name: str,
    condition: Condition,
    message: str,
    *,
    for_: timedelta,
    severity: Severity | str,
    channels: Sequence[Any],
    cooldown: timedelta,
) -> AlertRule:
    return AlertRule(
        name=name,
        conditions=[condition],
        for_=for_,
        severity=Severity(severity),
        cooldown=cooldown,
        channels=tuple(channels),
        message=message,
    )


def failure_rate(
    threshold: float = 0.05,
    *,
    task: str | None = None,
    window: timedelta = timedelta(minutes=5),
    for_: timedelta = timedelta(minutes=5),
    severity: Severity | str = Severity.WARNING,
    channels: Sequence[Any] = (),
    name: str | None = None,
    cooldown: timedelta = timedelta(minutes=15),
) -> AlertRule:
    """Failed attempts over ``threshold`` (5 %) of all attempts for ``for_`` (5 min)."""
    return _preset(
        name or f"failure-rate{'-' + task if task else ''}",
        Condition(metric="failure_rate", task=task, op=">", threshold=threshold, window=window),
        "{rule}: {value} of attempts failed over the last window (> {threshold})",
        for_=for_,
        severity=severity,
        channels=channels,
        cooldown=cooldown,
    )


def oldest_job_age(
    queue: str,
    seconds: float,
    *,
    for_: timedelta = timedelta(0),
    severity: Severity | str = Severity.WARNING,
    channels: Sequence[Any] = (),
    name: str | None = None,
    cooldown: timedelta = timedelta(minutes=15),
) -> AlertRule:
    """The oldest ready job on ``queue`` has waited longer than ``seconds``."""
    return _preset(
        name or f"oldest-job-age-{queue}",
        Condition(metric="oldest_job_age", queue=queue, op=">", threshold=seconds),
        "{rule}: the oldest job on {queue} has waited {value}s (> {threshold}s)",
        for_=for_,
        severity=severity,
        channels=channels,
        cooldown=cooldown,
    )


def no_live_worker(
    queue: str,
    *,
    for_: timedelta = timedelta(seconds=30),
    severity: Severity | str = Severity.CRITICAL,
    channels: Sequence[Any] = (),
    name: str | None = None,
    cooldown: timedelta = timedelta(minutes=15),
) -> AlertRule:
    """No worker with a live heartbeat serves ``queue``."""
    return _preset(
        name or f"no-live-worker-{queue}",
        Condition(metric="live_workers", queue=queue, op="<", threshold=1),
        "{rule}: no live worker serves {queue}",
        for_=for_,
        severity=severity,
        channels=channels,
        cooldown=cooldown,
    )


def redis_evicting(
    *,
    window: timedelta = timedelta(minutes=5),
    severity: Severity | str = Severity.CRITICAL,
    channels: Sequence[Any] = (),
    name: str | None = None,
    cooldown: timedelta = timedelta(minutes=15),
) -> AlertRule:
    """Redis evicted keys within ``window``: under an evicting ``maxmemory-policy`` it
    deletes jobs and results when memory is full, and nobody is told otherwise."""
    return _preset(
        name or "redis-evicting",
        Condition(metric="redis_evicted_keys", op=">", threshold=0, window=window),
        "{rule}: Redis evicted {value} keys in the last window (jobs and results may be "
        "lost); set maxmemory-policy noeviction or raise maxmemory",
        for_=timedelta(0),
        severity=severity,
        channels=channels,
        cooldown=cooldown,
    )
