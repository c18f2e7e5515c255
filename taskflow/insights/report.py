"""``await app.report(since=...)``: one document of what a window of metrics says.

A :class:`Report` holds a summary (jobs, failures, retries, run-time percentiles per task),
the SLA targets' check, the insights (trends, bottlenecks, forecasts, advice), the alerts
that fired and the top failures (dead letters' error groups). Every section is an object
with ``items`` and, when it has none, a ``reason`` saying why.

It renders as JSON (:meth:`Report.to_json`, valid against :func:`json_schema`, committed as
``docs/report.schema.json``), Markdown (:meth:`Report.to_markdown`) and one self-contained
HTML page with inline SVG charts (:meth:`Report.to_html`, see :mod:`taskflow.insights.svg`).
Every string that came from users (task names, error messages) is escaped, and error
messages are cut to their first line and :data:`MAX_MESSAGE` characters: no tracebacks.

Example::

    report = await app.report(since=timedelta(hours=24))
    Path("report.html").write_text(report.to_html())
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ..alerts import AlertManager, AlertRecord
from ..metrics import Metrics
from ..metrics.clock import wall_ms
from .analysis import Insights, insights

if TYPE_CHECKING:
    from .._client import Client
    from ..metrics import Distribution
    from ..slas import Slas
    from .series import Series

__all__ = (
    "FORMATS",
    "MAX_MESSAGE",
    "SECTIONS",
    "Report",
    "build_report",
    "insight_sections",
    "json_schema",
    "schema_text",
)

FORMATS = ("html", "json", "md")
SCHEMA_ID = "https://taskflow.invalid/schemas/report-1.json"
"""``$id`` of the schema; ``.invalid`` because it is an identifier, not a download."""
MAX_MESSAGE = 200  #: characters of an error or alert message kept (its first line only)
MAX_FAILURES = 20  #: error groups kept, the most frequent first
MAX_ALERTS = 200  #: alert firings kept, the latest first

_frozen = ConfigDict(frozen=True, extra="forbid")
T = TypeVar("T")


class Section(BaseModel, Generic[T]):
    """A list of findings; ``reason`` says why it is empty."""

    model_config = _frozen

    items: list[T] = Field(description="The findings, most pressing first.")
    reason: str | None = Field(None, description="Why items is empty; null when it is not.")


class RunTimes(BaseModel):
    """Run time of a task's attempts, seconds (percentiles within 2 %)."""

    model_config = _frozen

    mean: float | None = Field(description="Exact mean; null without attempts.")
    p50: float | None = Field(description="Median.")
    p90: float | None = Field(description="90th percentile.")
    p95: float | None = Field(description="95th percentile.")
    p99: float | None = Field(description="99th percentile.")

    @classmethod
    def of(cls, d: Distribution) -> RunTimes:
        return cls(mean=d.mean, p50=d.p50, p90=d.p90, p95=d.p95, p99=d.p99)


class TaskRow(BaseModel):
    """Attempts of one task in the window."""

    model_config = _frozen

    task: str = Field(description="Task name.")
    jobs: int = Field(ge=0, description="Attempts that ended, any outcome.")
    failures: int = Field(ge=0, description="Attempts that failed for good.")
    retries: int = Field(ge=0, description="Attempts that failed and were retried.")
    failure_rate: float = Field(ge=0, le=1, description="failures / jobs.")
    run_seconds: RunTimes = Field(description="Run time of the job body.")


class Summary(BaseModel):
    """Every attempt in the window, and one row per task."""

    model_config = _frozen

    jobs: int = Field(ge=0, description="Attempts that ended, any outcome.")
    failures: int = Field(ge=0, description="Attempts that failed for good.")
    retries: int = Field(ge=0, description="Attempts that failed and were retried.")
    failure_rate: float = Field(ge=0, le=1, description="failures / jobs; 0 without attempts.")
    run_seconds: RunTimes = Field(description="Run time over every task.")
    items: list[TaskRow] = Field(description="One row per task, sorted by name.")
    reason: str | None = Field(None, description="Why items is empty; null when it is not.")


class SlaRow(BaseModel):
    """One SLA target against the window."""

    model_config = _frozen

    scope: str = Field(description="task=..., queue=... the target is about.")
    metric: str = Field(description="run_time_p95, wait_p95 (s), failure_rate, throughput_per_min.")
    value: float | None = Field(description="Measured; null without attempts.")
    target: float = Field(description="The target.")
    met: bool | None = Field(description="Null when there was nothing to judge.")


class History(BaseModel):
    """The points a finding was computed from: bucket starts (seconds since the epoch, on
    the metrics clock) and values."""

    model_config = _frozen

    times: list[float] = Field(description="Bucket starts, seconds since the epoch.")
    values: list[float] = Field(description="The series' values, in its unit.")

    @classmethod
    def of(cls, s: Series | None) -> History:
        if s is None:
            return cls(times=[], values=[])
        return cls(times=list(s.times), values=list(s.values))


class TrendRow(BaseModel):
    """The trend of one series (Theil-Sen slope, Mann-Kendall test)."""

    model_config = _frozen

    series: str = Field(description="run_time_p95, wait_p95, throughput, system_cpu, ...")
    subject: str = Field(description="task:<name>, queue:<name> or system.")
    unit: str = Field(description="Unit of the series' values.")
    direction: Literal["rising", "falling", "flat"] = Field(description="flat unless significant.")
    significant: bool = Field(description="p_value < level.")
    slope_per_s: float = Field(description="Units per second.")
    relative_change: float = Field(
        description="Fitted change over the window / start value (0 when the start is ~0: "
        "then read start and end)."
    )
    start: float = Field(description="The fitted value at the window's start.")
    end: float = Field(description="The fitted value at the window's end.")
    p_value: float = Field(ge=0, le=1, description="Two-sided Mann-Kendall p-value.")
    level: float = Field(description="Significance level used.")
    n: int = Field(ge=0, description="Points used.")
    method: str = Field(description="How the trend was found.")
    history: History = Field(description="The points the trend was fitted to.")


class BottleneckRow(BaseModel):
    """What holds jobs back, the figures it rests on and what to do."""

    model_config = _frozen

    kind: str = Field(description="queue_wait, cpu_bound, memory_growth, failures, retries, ...")
    subject: str = Field(description="task:<name> or queue:<name>.")
    evidence: dict[str, float] = Field(description="The figures the finding rests on.")
    recommendation: str = Field(description="What to do.")
    expected_effect: str = Field(description="What doing it should change.")


class CrossingRow(BaseModel):
    """When the forecast reaches ``threshold``: seconds after the last observation."""

    model_config = _frozen

    threshold: float = Field(description="The level watched (e.g. 90 % CPU).")
    direction: Literal["up", "down"] = Field(description="up: a rise reaches it.")
    point: float | None = Field(description="Point forecast's crossing; null: not in horizon.")
    lower: float | None = Field(description="Earliest plausible crossing; null: none.")
    upper: float | None = Field(description="Latest plausible crossing; null: none.")
    level: float = Field(description="Probability of the interval used.")


class ForecastRow(BaseModel):
    """A series forecast ``horizon`` seconds ahead with a prediction interval."""

    model_config = _frozen

    series: str = Field(description="queue_depth, arrival_rate, system_cpu, system_memory.")
    subject: str = Field(description="queue:<name> or system.")
    unit: str = Field(description="Unit of the values.")
    horizon: float = Field(gt=0, description="Seconds past the last observation.")
    times: list[float] = Field(description="Forecast times, seconds since the epoch.")
    point: list[float] = Field(description="Point forecast at each time.")
    lower: list[float] = Field(description="Lower bound of the interval at each time.")
    upper: list[float] = Field(description="Upper bound of the interval at each time.")
    level: float = Field(gt=0, lt=1, description="Probability a value falls in [lower, upper].")
    method: str = Field(description="The model.")
    crossing: CrossingRow | None = Field(description="Time to the threshold, if one is watched.")
    history: History = Field(description="The points the forecast was fitted to.")


class AdviceRow(BaseModel):
    """A worker configuration for one queue's measured load (Erlang C)."""

    model_config = _frozen

    queue: str = Field(description="Queue name.")
    arrival_rate: float = Field(ge=0, description="Jobs per second at busy times.")
    service_time: float = Field(gt=0, description="Mean run time, seconds.")
    cpu_share: float = Field(ge=0, le=1, description="CPU seconds per second of run time.")
    concurrency: int = Field(ge=1, description="Concurrent jobs per worker process.")
    processes: int = Field(ge=1, description="Worker processes.")
    utilisation: float = Field(ge=0, description="Mean share of the slots busy.")
    predicted_wait: float | None = Field(description="Mean wait, s; null: never served.")
    target_wait: float = Field(gt=0, description="The target mean wait, seconds.")
    meets_target: bool = Field(description="Whether the prediction meets the target.")
    assumptions: list[str] = Field(description="What the prediction assumes.")


class AlertRow(BaseModel):
    """An alert that fired in the window."""

    model_config = _frozen

    alert_id: str = Field(description="The alert's id (acknowledge it with it).")
    rule: str = Field(description="The rule's name.")
    severity: str = Field(description="info, warning or critical.")
    fired_at: datetime = Field(description="When it fired (UTC, wall clock).")
    resolved_at: datetime | None = Field(description="When it resolved, if in the window.")
    value: str = Field(description="The measured value when it fired.")
    threshold: str = Field(description="The rule's threshold.")
    message: str = Field(description=f"First line, at most {MAX_MESSAGE} characters.")


class FailureRow(BaseModel):
    """Failures for good of one task with one error type (dead letters' error groups)."""

    model_config = _frozen

    task: str = Field(description="Task name.")
    error_type: str = Field(description="Exception type.")
    count: int = Field(ge=0, description="Failures kept in the group.")
    first_seen: datetime = Field(description="First failure (UTC, wall clock).")
    last_seen: datetime = Field(description="Latest failure (UTC, wall clock).")
    message: str = Field(description=f"The latest message: first line, <= {MAX_MESSAGE} chars.")


class Report(BaseModel):
    """A report on one window of an app's metrics (format version 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="taskflow report")

    version: Literal[1] = Field(1, description="Format version; changes only incompatibly.")
    app: str = Field(description="The app's name.")
    generated_at: datetime = Field(description="When the report was made (UTC, wall clock).")
    since: datetime = Field(description="Start of the window (UTC, metrics clock).")
    until: datetime = Field(description="End of the window (UTC, metrics clock).")
    time_scale: float = Field(gt=0, description="Metrics clock speed (1: wall time).")
    summary: Summary = Field(description="Jobs, failures, retries, run times per task.")
    slas: Section[SlaRow] = Field(description="Each SLA target against the window.")
    trends: Section[TrendRow] = Field(description="Trends of every series, significant first.")
    bottlenecks: Section[BottleneckRow] = Field(description="What holds jobs back.")
    forecasts: Section[ForecastRow] = Field(description="Forecasts with prediction intervals.")
    advice: Section[AdviceRow] = Field(description="Worker configuration per queue.")
    alerts: Section[AlertRow] = Field(description="Alerts that fired in the window.")
    failures: Section[FailureRow] = Field(description="Top failures, most frequent first.")

    def to_json(self) -> str:
        """The report as indented JSON, valid against :func:`json_schema`."""
        return self.model_dump_json(indent=2) + "\n"

    def to_markdown(self) -> str:
        """The report as Markdown: one heading per section, tables, reasons for empty ones."""
        from .render import markdown

        return markdown(self)

    def to_html(self) -> str:
        """One self-contained HTML page with inline SVG charts: no script, no network."""
        from .render import html_page

        return html_page(self)

    def render(self, format: str) -> str:
        """The report in ``format`` (html, json or md); ValueError naming another."""
        if format not in FORMATS:
            raise ValueError(f"unknown report format {format!r}; use html, json or md")
        return {"html": self.to_html, "json": self.to_json, "md": self.to_markdown}[format]()


# -- building ---------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def first_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """The first non-empty line of ``text``, cut to ``limit`` characters (with an ellipsis)."""
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def insight_sections(found: Insights) -> dict[str, Any]:
    """The trends, bottlenecks, forecasts and advice of ``found`` as report sections."""
    trends = [
        TrendRow(
            series=f.series,
            subject=f.subject,
            unit=f.unit,
            direction=f.trend.direction,
            significant=f.trend.significant,
            slope_per_s=f.trend.slope,
            relative_change=f.trend.relative_change,
            start=f.trend.start,
            end=f.trend.end,
            p_value=f.trend.p_value,
            level=f.trend.level,
            n=f.trend.n,
            method=f.trend.method,
            history=History.of(f.history),
        )
        for f in sorted(found.trends, key=lambda f: (not f.trend.significant, f.trend.p_value))
    ]
    bottlenecks = [
        BottleneckRow(
            kind=b.kind,
            subject=b.subject,
            evidence=dict(b.evidence),
            recommendation=b.recommendation,
            expected_effect=b.expected_effect,
        )
        for b in found.bottlenecks
    ]
    forecasts = [
        ForecastRow(
            series=f.series,
            subject=f.subject,
            unit=f.unit,
            horizon=f.forecast.horizon,
            times=f.forecast.times,
            point=f.forecast.point,
            lower=f.forecast.lower,
            upper=f.forecast.upper,
            level=f.forecast.level,
            method=f.forecast.method,
            crossing=None
            if f.crossing is None or f.threshold is None
            else CrossingRow(
                threshold=f.threshold,
                direction=f.crossing.direction,
                point=f.crossing.point,
                lower=f.crossing.lower,
                upper=f.crossing.upper,
                level=f.crossing.level,
            ),
            history=History.of(f.history),
        )
        for f in found.forecasts
    ]
    advice = [
        AdviceRow(
            queue=a.queue,
            arrival_rate=a.arrival_rate,
            service_time=a.service_time,
            cpu_share=a.cpu_share,
            concurrency=a.advice.concurrency,
            processes=a.advice.processes,
            utilisation=a.advice.utilisation,
            predicted_wait=_finite(a.advice.predicted_wait),
            target_wait=a.advice.target_wait,
            meets_target=a.advice.meets_target,
            assumptions=list(a.advice.assumptions),
        )
        for a in found.advice
    ]

    def reason(name: str, items: Sequence[object]) -> str | None:
        return None if items else found.reasons.get(name, f"no {name} in the window")

    return {
        "trends": Section[TrendRow](items=trends, reason=reason("trends", trends)),
        "bottlenecks": Section[BottleneckRow](
            items=bottlenecks, reason=reason("bottlenecks", bottlenecks)
        ),
        "forecasts": Section[ForecastRow](items=forecasts, reason=reason("forecasts", forecasts)),
        "advice": Section[AdviceRow](items=advice, reason=reason("advice", advice)),
    }


async def _summary(app: Client, found: Insights) -> Summary:
    metrics = Metrics(app)
    total = await metrics.summary(since=found.since, until=found.until)
    rows = [
        TaskRow(
            task=s.task or "",
            jobs=s.count,
            failures=s.failures,
            retries=s.retried,
            failure_rate=s.failure_rate,
            run_seconds=RunTimes.of(s.run),
        )
        for s in await metrics.summaries(found.since, found.until, by=("task",))
        if s.count
    ]
    return Summary(
        jobs=total.count,
        failures=total.failures,
        retries=total.retried,
        failure_rate=total.failure_rate,
        run_seconds=RunTimes.of(total.run),
        items=rows,
        reason=None if rows else "no job attempts were recorded in the window",
    )


async def _slas(slas: Slas | None, since: timedelta, until: datetime | None) -> Section[SlaRow]:
    if slas is None or not slas.targets:
        return Section(items=[], reason="the app declares no SLA targets (app.sla(...))")
    checked = await slas.check(since=since, until=until)
    rows = [
        SlaRow(scope=r.scope, metric=r.metric, value=r.value, target=r.target, met=r.met)
        for r in checked.results
    ]
    return Section(items=rows, reason=None if rows else "no SLA target matched")


async def _alerts(manager: AlertManager, start: datetime, end: datetime) -> Section[AlertRow]:
    records = [r for r in await manager.history(since=start, limit=10_000) if r.at <= end]
    resolved = {r.alert_id: r.at for r in records if r.event == "resolved"}
    fired: dict[str, AlertRecord] = {}  # alert id -> its first firing (later ones are reminders)
    for r in records:
        if r.event == "firing":
            fired.setdefault(r.alert_id, r)
    rows = [
        AlertRow(
            alert_id=r.alert_id,
            rule=r.rule,
            severity=r.severity,
            fired_at=r.at,
            resolved_at=resolved.get(r.alert_id),
            value=r.value,
            threshold=r.threshold,
            message=first_line(r.message),
        )
        for r in reversed(fired.values())
    ][:MAX_ALERTS]
    if rows:
        return Section(items=rows)
    if not manager.rules:
        return Section(items=[], reason="the app declares no alert rules (app.alerts.add_rule)")
    return Section(items=[], reason="no alert fired in the window")


async def _failures(app: Client, start: datetime) -> Section[FailureRow]:
    rows = [
        FailureRow(
            task=g.task,
            error_type=g.error_type,
            count=g.count,
            first_seen=g.first_seen,
            last_seen=g.last_seen,
            message=first_line(g.sample),
        )
        for g in await app.dead_letters.errors()
        if g.last_seen >= start
    ][:MAX_FAILURES]
    reason = None
    if not rows:
        reason = (
            "no job failed for good in the window"
            if app.settings.dead_letter_ttl > timedelta(0)
            else "dead letters are off (dead_letter_ttl is 0): failures are not kept"
        )
    return Section(items=rows, reason=reason)


def _wall(app: Client, moment: datetime) -> datetime:
    ms = wall_ms(app.settings.metrics, int(moment.timestamp() * 1000))
    return datetime.fromtimestamp(ms / 1000, UTC)


async def build_report(
    app: Client,
    since: timedelta = timedelta(hours=24),
    *,
    until: datetime | None = None,
    slas: Slas | None = None,
    alerts: AlertManager | None = None,
    **options: Any,
) -> Report:
    """The report of the ``since`` before ``until`` (default: now, on the metrics clock):
    ``options`` go to
    :func:`~taskflow.insights.analysis.insights` (target_wait, horizon, level, interval,
    cores); ``slas`` and ``alerts`` are the app's (``app.slas``, ``app.alerts``)."""
    found = await insights(app, since, until=until, **options)
    start, end = _wall(app, found.since), _wall(app, found.until)
    return Report(
        app=app.name,
        generated_at=datetime.now(UTC),
        since=found.since,
        until=found.until,
        time_scale=app.settings.metrics.time_scale,
        summary=await _summary(app, found),
        slas=await _slas(slas, since, until),
        **insight_sections(found),
        alerts=await _alerts(alerts or AlertManager(app), start, end),
        failures=await _failures(app, start),
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :meth:`Report.to_json`, from the models."""
    schema = Report.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def schema_text() -> str:
    """:func:`json_schema` as committed in ``docs/report.schema.json``. Regenerate with::

    python -c "from taskflow.insights.report import schema_text; print(schema_text(), end='')" \\
        > docs/report.schema.json
    """
    return json.dumps(json_schema(), indent=2) + "\n"


SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("slas", "SLAs"),
    ("trends", "Trends"),
    ("bottlenecks", "Bottlenecks"),
    ("forecasts", "Forecasts"),
    ("advice", "Advice"),
    ("alerts", "Alerts fired"),
    ("failures", "Top failures"),
)
"""(key, title) of the report's sections, in order."""
