"""SLA targets: per task or queue, run time p95, queue wait p95, failure rate and minimum
throughput, checked over a window from the cluster-wide metrics.

Declare them where the app is defined (``app.sla(task=..., run_time_p95=...)``); check them
from any process (``await app.slas.check(since=...)``, ``taskflow sla check``), or let an
alert rule on the ``sla_missed`` metric watch them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, redis_errors
from .metrics import Metrics

if TYPE_CHECKING:
    from ._client import Client
    from .metrics.query import MetricsSummary

__all__ = ("SlaReport", "SlaResult", "SlaTarget", "Slas")


@dataclass(frozen=True, slots=True)
class SlaTarget:
    """Targets for one task (or one queue, or a task on a queue). None: not targeted."""

    task: str | None = None
    queue: str | None = None
    run_time_p95: timedelta | None = None
    wait_p95: timedelta | None = None
    failure_rate: float | None = None  #: at most this share of attempts fail for good
    min_throughput_per_min: float | None = None  #: at least this many attempts end a minute

    @property
    def scope(self) -> str:
        parts = [
            f"task={self.task}" if self.task else "",
            f"queue={self.queue}" if self.queue else "",
        ]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class SlaResult:
    """One target's check: ``met`` is None when the window had no attempts to judge."""

    scope: str
    metric: str  #: run_time_p95, wait_p95 (seconds), failure_rate (0-1), throughput_per_min
    value: float | None
    target: float
    met: bool | None


@dataclass(frozen=True, slots=True)
class SlaReport:
    since: datetime
    until: datetime
    results: list[SlaResult]

    @property
    def met(self) -> bool:
        """No target missed (a target without data is not a miss)."""
        return all(r.met is not False for r in self.results)

    @property
    def missed(self) -> list[SlaResult]:
        return [r for r in self.results if r.met is False]

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "met": self.met,
            "results": [asdict(r) for r in self.results],
        }


class Slas:
    """The app's SLA targets (declared in code) and their check."""

    def __init__(self, app: Client) -> None:
        self.app = app
        self.targets: list[SlaTarget] = []

    def add(self, target: SlaTarget) -> SlaTarget:
        if not (target.task or target.queue):
            raise ConfigurationError("an SLA needs task= or queue= (or both)")
        checks = (
            target.run_time_p95,
            target.wait_p95,
            target.failure_rate,
            target.min_throughput_per_min,
        )
        if all(c is None for c in checks):
            raise ConfigurationError(
                f"SLA for {target.scope}: give at least one of run_time_p95, wait_p95, "
                "failure_rate, min_throughput_per_min"
            )
        for name, span in (("run_time_p95", target.run_time_p95), ("wait_p95", target.wait_p95)):
            if span is not None and (not isinstance(span, timedelta) or span <= timedelta(0)):
                raise ConfigurationError(f"{name}={span!r} must be a positive timedelta")
        if target.failure_rate is not None and not 0 <= target.failure_rate <= 1:
            raise ConfigurationError(f"failure_rate={target.failure_rate!r} must be 0-1")
        if target.min_throughput_per_min is not None and target.min_throughput_per_min < 0:
            raise ConfigurationError(
                f"min_throughput_per_min={target.min_throughput_per_min!r} must be >= 0"
            )
        self.targets.append(target)
        return target

    @redis_errors
    async def check(
        self,
        since: timedelta = timedelta(hours=1),
        *,
        task: str | None = None,
        until: datetime | None = None,
    ) -> SlaReport:
        """Every target (of ``task`` if given) against the metrics of the ``since`` before
        ``until`` (default: now)."""
        end = until or datetime.now(UTC)
        metrics = Metrics(self.app)
        results: list[SlaResult] = []
        for target in self.targets:
            if task is not None and target.task != task:
                continue
            summary = await metrics.summary(
                task=target.task, queue=target.queue, since=since, until=until
            )
            results += _judge(target, summary, since)
        return SlaReport(end - since, end, results)


def _judge(target: SlaTarget, s: MetricsSummary, window: timedelta) -> list[SlaResult]:
    out: list[SlaResult] = []
    has = s.count > 0

    def add(metric: str, value: float | None, goal: float, below: bool) -> None:
        met = None if value is None else (value <= goal if below else value >= goal)
        out.append(SlaResult(target.scope, metric, value, goal, met))

    if target.run_time_p95 is not None:
        add("run_time_p95", s.run.p95 if has else None, target.run_time_p95.total_seconds(), True)
    if target.wait_p95 is not None:
        add("wait_p95", s.wait.p95 if has else None, target.wait_p95.total_seconds(), True)
    if target.failure_rate is not None:
        add("failure_rate", s.failure_rate if has else None, target.failure_rate, True)
    if target.min_throughput_per_min is not None:
        per_min = s.count / (window.total_seconds() / 60)
        add("throughput_per_min", round(per_min, 3), target.min_throughput_per_min, False)
    return out
