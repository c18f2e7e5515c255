"""Exporting job, system and custom metrics as JSON or CSV (``taskflow metrics export``).

Both formats are built from one :class:`MetricsExport` document, read with
``app.metrics.summaries()``, ``app.metrics.summary()`` and ``app.metrics.system()``:

- JSON is the whole document. Its JSON Schema is :func:`json_schema`, committed as
  ``docs/metrics-export.schema.json`` (a test fails when the two differ);
- CSV holds the ``jobs`` rows only, one per task and queue, under a header row of
  :data:`CSV_COLUMNS`: nested figures are flattened with their unit, e.g.
  ``run_p95_seconds`` or ``memory_max_bytes``.

Example::

    text = await export(app, "csv", since=timedelta(hours=6))
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config import MetricsSettings
from ..errors import ConfigurationError
from .clock import metrics_now
from .custom import MetricSpec
from .custom_read import (
    CounterValue,
    GaugeValue,
    HistogramValue,
    MetricValue,
    collect_series,
    matches,
    specs,
    value_of,
)
from .histogram import RELATIVE_ERROR
from .query import Metrics
from .system import SystemSample

if TYPE_CHECKING:
    from .._client import Client
    from .query import Distribution, MetricsSummary

__all__ = (
    "CSV_COLUMNS",
    "FORMATS",
    "CustomRow",
    "Figures",
    "JobRow",
    "MetricsExport",
    "collect",
    "export",
    "json_schema",
    "schema_text",
    "to_csv",
    "to_json",
)

FORMATS = ("json", "csv")
SCHEMA_ID = "https://taskflow.invalid/schemas/metrics-export-1.json"
"""``$id`` of the schema; ``.invalid`` because it is an identifier, not a download."""

_frozen = ConfigDict(frozen=True, extra="forbid")


class Figures(BaseModel):
    """One measure over the attempts of a row: seconds, or bytes for ``memory_bytes``."""

    model_config = _frozen

    count: int = Field(ge=0, description="Attempts measured (the row's count).")
    mean: float | None = Field(description="Exact mean; null when count is 0.")
    p50: float | None = Field(description="Median, within relative_error; null when empty.")
    p90: float | None = Field(description="90th percentile, within relative_error.")
    p95: float | None = Field(description="95th percentile, within relative_error.")
    p99: float | None = Field(description="99th percentile, within relative_error.")
    max: float | None = Field(description="Exact maximum; null when count is 0.")

    @classmethod
    def of(cls, d: Distribution) -> Figures:
        """The figures of one :class:`~taskflow.metrics.Distribution`."""
        return cls(**asdict(d))


class JobRow(BaseModel):
    """Job attempts of one task on one queue (or of everything, in ``total``)."""

    model_config = _frozen

    task: str | None = Field(description="Task name; null in total.")
    queue: str | None = Field(description="Queue name; null in total.")
    count: int = Field(ge=0, description="Attempts that ended in the window, any outcome.")
    succeeded: int = Field(ge=0, description="Attempts that succeeded.")
    failures: int = Field(ge=0, description="Attempts that failed for good (no retry left).")
    retried: int = Field(ge=0, description="Attempts that failed and were retried.")
    cancelled: int = Field(ge=0, description="Attempts aborted, or whose graph run was cancelled.")
    requeued: int = Field(
        ge=0, description="Attempts interrupted by a worker shutdown and put back."
    )
    reruns: int = Field(ge=0, description="Attempts that were not a job's first.")
    rate_per_s: float = Field(ge=0, description="count divided by the window's length.")
    failure_rate: float = Field(ge=0, le=1, description="failures divided by count; 0 if none.")
    run_seconds: Figures = Field(description="Wall time of the job body.")
    wait_seconds: Figures = Field(description="From when the job was due to its start.")
    cpu_seconds: Figures = Field(description="CPU time of the job's own coroutine steps.")
    memory_bytes: Figures = Field(description="Growth of the worker's RSS over the attempt.")

    @classmethod
    def of(cls, s: MetricsSummary) -> JobRow:
        """The row of one :class:`~taskflow.metrics.MetricsSummary`."""
        return cls(
            task=s.task,
            queue=s.queue,
            count=s.count,
            succeeded=s.succeeded,
            failures=s.failures,
            retried=s.retried,
            cancelled=s.cancelled,
            requeued=s.requeued,
            reruns=s.reruns,
            rate_per_s=s.rate,
            failure_rate=s.failure_rate,
            run_seconds=Figures.of(s.run),
            wait_seconds=Figures.of(s.wait),
            cpu_seconds=Figures.of(s.cpu),
            memory_bytes=Figures.of(s.memory),
        )


class CustomRow(BaseModel):
    """One series (label combination) of a custom metric over the window."""

    model_config = _frozen

    name: str = Field(description="The metric's name, as declared.")
    kind: Literal["counter", "gauge", "histogram"] = Field(description="The metric's kind.")
    labels: dict[str, str] = Field(description="The series' label values.")
    total: float | None = Field(description="A counter's sum over the window; else null.")
    rate_per_s: float | None = Field(description="A counter's total / the window; else null.")
    value: float | None = Field(
        description="A gauge's latest value set in the window by any process; else null."
    )
    figures: Figures | None = Field(description="A histogram's figures; else null.")

    @classmethod
    def of(cls, spec: MetricSpec, labels: dict[str, str], v: MetricValue) -> CustomRow:
        """The row of one series' value."""
        return cls(
            name=spec.name,
            kind=spec.kind.value,
            labels=labels,
            total=v.total if isinstance(v, CounterValue) else None,
            rate_per_s=v.rate if isinstance(v, CounterValue) else None,
            value=v.value if isinstance(v, GaugeValue) else None,
            figures=Figures(
                count=v.count, mean=v.mean, p50=v.p50, p90=v.p90, p95=v.p95, p99=v.p99, max=v.max
            )
            if isinstance(v, HistogramValue)
            else None,
        )


class MetricsExport(BaseModel):
    """An export of job and system metrics over one time window (format version 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="taskflow metrics export")

    version: Literal[1] = Field(1, description="Format version; changes only incompatibly.")
    generated_at: datetime = Field(description="When the export was made (UTC).")
    since: datetime = Field(description="Start of the window asked for (UTC).")
    until: datetime = Field(description="End of the window asked for (UTC).")
    resolution_seconds: float = Field(
        gt=0,
        description="Width of the stored time buckets read: job figures cover every bucket "
        "overlapping the window, so the window is widened to whole buckets.",
    )
    relative_error: float = Field(
        description="Percentiles are within this fraction of a value that was really at "
        "that rank; counts, means and maxima are exact."
    )
    total: JobRow = Field(description="Every task and queue in the window together.")
    jobs: list[JobRow] = Field(description="One row per task and queue, sorted by both.")
    system: dict[str, list[SystemSample]] = Field(
        description="System samples per worker id, oldest first (see docs/metrics.md)."
    )
    custom: list[CustomRow] = Field(
        default_factory=list,
        description="Custom metrics (app.metrics.counter, gauge, histogram): one row per "
        "metric and label combination recorded in the window, sorted; never filtered.",
    )


def _csv_columns() -> tuple[str, ...]:
    columns: list[str] = []
    for name, info in JobRow.model_fields.items():
        if info.annotation is Figures:
            measure, unit = name.rsplit("_", 1)
            columns.append(f"{measure}_count")
            columns += [f"{measure}_{f}_{unit}" for f in Figures.model_fields if f != "count"]
        else:
            columns.append(name)
    return tuple(columns)


CSV_COLUMNS: tuple[str, ...] = _csv_columns()
"""Header of the CSV export: JobRow's fields in order, each measure flattened to
``<measure>_count`` and ``<measure>_<figure>_<unit>`` (``run_p95_seconds``)."""


def _csv_row(row: JobRow) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in row:
        if isinstance(value, Figures):
            measure, unit = name.rsplit("_", 1)
            for figure, number in value:
                column = f"{measure}_count" if figure == "count" else f"{measure}_{figure}_{unit}"
                out[column] = "" if number is None else number
        else:
            out[name] = "" if value is None else value
    return out


def _window(
    since: timedelta | datetime, until: datetime | None, settings: MetricsSettings
) -> tuple[datetime, datetime]:
    end = until if until is not None else metrics_now(settings)
    start = end - since if isinstance(since, timedelta) else since
    if start.tzinfo is None or end.tzinfo is None:
        raise ConfigurationError(
            f"since ({start!r}) and until ({end!r}) must be timezone-aware datetimes"
        )
    return start.astimezone(UTC), end.astimezone(UTC)


async def collect(
    app: Client,
    since: timedelta | datetime = timedelta(hours=1),
    until: datetime | None = None,
    *,
    task: str | None = None,
    queue: str | None = None,
) -> MetricsExport:
    """Read the metrics of ``[since, until]`` (``until`` defaults to now) into one document.

    :param app: an open app; the figures are cluster-wide, from every worker.
    :param since: how far back (a duration before ``until``) or a timezone-aware start.
    :param until: timezone-aware end of the window; now by default.
    :param task: keep only this task's rows (and total only its attempts).
    :param queue: keep only this queue's rows (and total only its attempts).
    :returns: the document; ``system`` is never filtered by task or queue.
    :raises ConfigurationError: naive datetimes, or ``since`` after ``until``.
    :raises LifecycleError: the app is not open.
    """
    start, end = _window(since, until, app.settings.metrics)
    generated = datetime.now(UTC)
    metrics = Metrics(app)
    rows = await metrics.summaries(start, end)
    total = await metrics.summary(task, queue, start, end)
    system = await metrics.system(start, end)
    custom = await _custom_rows(app, start, end)
    picked = [
        JobRow.of(s)
        for s in rows
        if (task is None or s.task == task) and (queue is None or s.queue == queue)
    ]
    return MetricsExport(
        generated_at=generated,
        since=start,
        until=end,
        resolution_seconds=total.resolution.total_seconds(),
        relative_error=RELATIVE_ERROR,
        total=JobRow.of(total),
        jobs=picked,
        system=system,
        custom=custom,
    )


async def _custom_rows(app: Client, start: datetime, end: datetime) -> list[CustomRow]:
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    resolution, found = await collect_series(app, start_ms, end_ms)
    known = await specs(app)
    width = int(resolution.bucket.total_seconds() * 1000)
    rows = []
    for (name, stored), series in sorted(found.items()):
        spec = known.get(name)
        labels = None if spec is None else matches(spec, stored, {})
        if spec is None or labels is None:
            continue  # recorded under another declaration
        value = value_of(spec, series, labels, start_ms - start_ms % width, end_ms)
        rows.append(CustomRow.of(spec, labels, value))
    return rows


def to_json(document: MetricsExport) -> str:
    """The document as indented JSON, valid against :func:`json_schema`."""
    return document.model_dump_json(indent=2) + "\n"


def to_csv(document: MetricsExport) -> str:
    """The document's ``jobs`` rows as CSV (RFC 4180, CRLF line ends) with a header row.

    Empty cells are figures of no attempts (JSON null).
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(_csv_row(row) for row in document.jobs)
    return buffer.getvalue()


async def export(
    app: Client,
    format: str = "json",
    since: timedelta | datetime = timedelta(hours=1),
    until: datetime | None = None,
    *,
    task: str | None = None,
    queue: str | None = None,
) -> str:
    """The metrics of ``[since, until]`` as JSON or CSV text; see :func:`collect`.

    :param format: ``"json"`` (the whole :class:`MetricsExport`) or ``"csv"`` (jobs rows).
    :raises ConfigurationError: an unknown format, naive datetimes, or since after until.

    Example::

        Path("metrics.json").write_text(await export(app, "json", since=timedelta(days=1)))
    """
    if format not in FORMATS:
        raise ConfigurationError(f"unknown export format {format!r}; use json or csv")
    document = await collect(app, since, until, task=task, queue=queue)
    return to_json(document) if format == "json" else to_csv(document)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the JSON export, generated from :class:`MetricsExport`."""
    schema = MetricsExport.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def schema_text() -> str:
    """:func:`json_schema` as the text committed in ``docs/metrics-export.schema.json``.

    Regenerate that file with::

        python -c "from taskflow.metrics.export import schema_text; print(schema_text(), end='')" \\
            > docs/metrics-export.schema.json
    """
    return json.dumps(json_schema(), indent=2) + "\n"
