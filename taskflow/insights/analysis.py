"""``await app.insights(since=...)``: trends, bottlenecks, forecasts and advice in one read.

Every answer carries its evidence and its uncertainty: a trend its test and p-value (and is
"flat" unless significant), a forecast its interval and method, advice its assumptions; a
section left empty says why in :attr:`Insights.reasons`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

from .._critical_path import CriticalPath
from ..errors import RunNotFound
from ..metrics import Metrics
from ..runs import RunHandle
from .bottlenecks import Bottleneck, bottlenecks
from .series import Series, job_series, queue_series, system_series
from .stats import Advice, Crossing, Forecast, Trend, advise, forecast, time_to_threshold, trend

if TYPE_CHECKING:
    from .._client import Client

__all__ = (
    "AdviceFinding",
    "ForecastFinding",
    "InsightOptions",
    "Insights",
    "TrendFinding",
    "insights",
)

#: the job series whose trends are reported (the rest feed bottlenecks and advice)
TREND_SERIES = ("run_time_p95", "wait_p95", "throughput", "failure_rate")
DAY = 86_400.0  #: the season forecasts look for, in seconds
#: system series and the level a forecast is asked when it would reach
THRESHOLDS = {"system_cpu": 90.0, "system_memory": 90.0}


@dataclass(frozen=True, slots=True)
class TrendFinding:
    """The trend of one series over the window."""

    series: str
    subject: str
    unit: str
    trend: Trend
    #: the points the trend was fitted to (for charts); None when built by hand
    history: Series | None = None


@dataclass(frozen=True, slots=True)
class ForecastFinding:
    """A series forecast ``horizon`` ahead, and when it reaches ``threshold`` (if set)."""

    series: str
    subject: str
    unit: str
    forecast: Forecast
    threshold: float | None = None
    crossing: Crossing | None = None
    #: the points the forecast was fitted to (for charts); None when built by hand
    history: Series | None = None


@dataclass(frozen=True, slots=True)
class AdviceFinding:
    """Worker configuration for one queue, from its measured load."""

    queue: str
    arrival_rate: float  #: jobs per second over the window
    service_time: float  #: mean run time, seconds
    cpu_share: float  #: CPU seconds per second of run time
    advice: Advice


class InsightOptions(TypedDict, total=False):
    """The options of :func:`insights`, also taken by ``app.insights`` and ``app.report``."""

    until: datetime | None
    target_wait: timedelta
    horizon: timedelta | None
    level: float
    interval: float
    cores: int | None
    runs: Iterable[RunHandle]


@dataclass(frozen=True, slots=True)
class Insights:
    """What the window's metrics say; see the module's docstring."""

    since: datetime
    until: datetime
    trends: list[TrendFinding] = field(default_factory=list)
    bottlenecks: list[Bottleneck] = field(default_factory=list)
    forecasts: list[ForecastFinding] = field(default_factory=list)
    advice: list[AdviceFinding] = field(default_factory=list)
    #: why a section is empty (too little history, no queue with attempts, ...)
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def significant_trends(self) -> list[TrendFinding]:
        return [t for t in self.trends if t.trend.significant]


async def insights(
    app: Client,
    since: timedelta = timedelta(hours=24),
    *,
    until: datetime | None = None,
    target_wait: timedelta = timedelta(seconds=5),
    horizon: timedelta | None = None,
    level: float = 0.05,
    interval: float = 0.8,
    cores: int | None = None,
    runs: Iterable[RunHandle] = (),
) -> Insights:
    """Trends (significant at ``level``), bottlenecks, forecasts ``horizon`` ahead (default:
    a quarter of the window) with ``interval`` prediction intervals, and per-queue advice
    to meet ``target_wait`` (mean queue wait) with ``cores`` per worker host (default:
    this machine's). Given graph ``runs``, a task that dominates their critical paths is
    reported as a slow dependency (runs whose keys expired are passed over)."""
    if since <= timedelta(0):
        raise ValueError(f"since must be a positive duration, got {since}")
    jobs = await job_series(app, since, until, names=TREND_SERIES)
    jobs += await job_series(app, since, until, by="queue", names=TREND_SERIES)
    queues = await queue_series(app, since, until)
    system = await system_series(app, since, until)
    trends = [
        TrendFinding(s.name, s.subject, s.unit, t, s)
        for s in [*jobs, *system]
        if (t := trend(s.times, s.values, level=level)) is not None
    ]
    ahead = (horizon or since / 4).total_seconds()
    forecasts = _forecasts([*queues, *system], ahead, interval)
    advice = await _advice(app, since, until, queues, target_wait, cores or os.cpu_count() or 1)
    summary = await Metrics(app).summary(since=since, until=until)
    found = Insights(
        since=summary.since,
        until=summary.until,
        trends=trends,
        bottlenecks=await bottlenecks(app, since, until, paths=await _paths(runs)),
        forecasts=forecasts,
        advice=advice,
    )
    _explain(found, summary.count)
    return found


async def _paths(runs: Iterable[RunHandle]) -> list[CriticalPath]:
    paths = []
    for run in runs:
        try:
            paths.append(await run.critical_path())
        except RunNotFound:
            continue
    return paths


def _forecasts(series: list[Series], ahead: float, interval: float) -> list[ForecastFinding]:
    out = []
    for s in series:
        # none of these can go below zero: neither may their intervals
        floor = 0.0 if s.name in ("queue_depth", "arrival_rate", *THRESHOLDS) else None
        # a daily season is used once two days of history exist (forecast() checks)
        made = forecast(s.times, s.values, horizon=ahead, level=interval, floor=floor, season=DAY)
        if made is None:
            continue
        threshold = THRESHOLDS.get(s.name)
        crossing = None
        if threshold is not None:
            crossing = time_to_threshold(
                s.times, s.values, threshold, level=interval, horizon=ahead, season=DAY
            )
        out.append(ForecastFinding(s.name, s.subject, s.unit, made, threshold, crossing, s))
    return out


async def _advice(
    app: Client,
    since: timedelta,
    until: datetime | None,
    queues: list[Series],
    target_wait: timedelta,
    cores: int,
) -> list[AdviceFinding]:
    """Per queue with attempts: the configuration for its busy periods. The arrival rate is
    the 90th percentile over buckets of the arrivals the monitor's depth samples give (or,
    without them, of the attempts that ended): an average over a day would size for the
    night. Rates are per wall second (a compressed metrics clock is undone)."""
    scale = app.settings.metrics.time_scale
    arrivals = {
        s.subject.removeprefix("queue:"): s.values for s in queues if s.name == "arrival_rate"
    }
    ended = {
        s.subject.removeprefix("queue:"): s.values
        for s in await job_series(app, since, until, by="queue", names=["throughput"])
    }
    out = []
    for s in await Metrics(app).summaries(since, until, by=("queue",)):
        run = s.run.mean
        if not s.count or not run or run <= 0 or s.queue is None:
            continue
        busy = [v for v in arrivals.get(s.queue) or ended.get(s.queue) or [] if v > 0]
        rate = _p90(busy) * scale if busy else s.rate * scale
        cpu_share = min(1.0, (s.cpu.mean or 0.0) / run)
        found = advise(
            arrival_rate=rate,
            service_time=run,
            target_wait=target_wait.total_seconds(),
            cpu_share=cpu_share,
            cores=cores,
        )
        found.assumptions.insert(
            0,
            f"arrival rate {rate:.3g}/s: the 90th percentile over the window's buckets with "
            "arrivals",
        )
        out.append(AdviceFinding(s.queue, rate, run, cpu_share, found))
    return out


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def _explain(found: Insights, attempts: int) -> None:
    if attempts == 0:
        why = "no job attempts were recorded in the window"
        for section in ("trends", "bottlenecks", "advice"):
            found.reasons[section] = why
    if not found.trends and "trends" not in found.reasons:
        found.reasons["trends"] = "too little history: a trend needs 8 buckets with data"
    if not found.bottlenecks and "bottlenecks" not in found.reasons:
        found.reasons["bottlenecks"] = "none found: no detector's threshold was crossed"
    if not found.forecasts:
        found.reasons["forecasts"] = (
            "too little history: a forecast needs 10 points (queue depths come from the "
            "monitor's passes, system samples from the workers' collectors)"
        )
    if not found.advice and "advice" not in found.reasons:
        found.reasons["advice"] = "no queue had attempts with a run time in the window"
