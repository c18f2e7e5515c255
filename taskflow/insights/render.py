"""Markdown and HTML renderings of a :class:`~taskflow.insights.report.Report`.

Both escape every string that came from users or from Redis (task and queue names, rule
names, error messages): HTML with :func:`html.escape`, Markdown table cells also for pipes
and line breaks, so a task named ``<script>`` stays text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING

from .svg import FORECAST, bar_chart, forecast_chart, sparkline

if TYPE_CHECKING:
    from .report import ForecastRow, Report, Section

__all__ = ("html_page", "markdown")


def quantity(value: float | None, unit: str = "") -> str:
    """``value`` in words for a table: seconds as ms or s, ratios as %, else 3 digits."""
    if value is None:
        return "n/a"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit == "ratio":
        return f"{value:.1%}"
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:.3g}{(' ' + unit) if unit else ''}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not within the horizon"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def crossing_text(f: ForecastRow) -> str:
    """When a forecast reaches its threshold, in words."""
    c = f.crossing
    if c is None:
        return ""
    if c.point is None and c.lower is None:
        return f"{c.threshold:g}: not within {_duration(f.horizon)}"
    when = "not within the horizon" if c.point is None else f"in {_duration(c.point)}"
    return f"{c.threshold:g}: {when} (earliest {_duration(c.lower)})"


def _short(number: str) -> str:
    """A number stored as text, to 3 significant digits (other text as it is)."""
    try:
        return f"{float(number):.3g}"
    except ValueError:
        return number


def _evidence(evidence: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in evidence.items())


def rows(report: Report, key: str) -> tuple[list[str], list[list[str]]]:
    """Header and plain-text cells of section ``key`` (shared by Markdown and HTML)."""
    if key == "summary":
        header = ["task", "jobs", "failures", "retries", "p50", "p90", "p95", "p99"]
        return header, [
            [t.task, str(t.jobs), str(t.failures), str(t.retries)]
            + [quantity(getattr(t.run_seconds, q), "s") for q in ("p50", "p90", "p95", "p99")]
            for t in report.summary.items
        ]
    if key == "slas":
        return ["scope", "metric", "value", "target", "met"], [
            [r.scope, r.metric, "n/a" if r.value is None else f"{r.value:.3g}", f"{r.target:g}"]
            + ["no data" if r.met is None else ("yes" if r.met else "MISSED")]
            for r in report.slas.items
        ]
    if key == "trends":
        return ["series", "subject", "direction", "change", "p-value"], [
            [
                t.series,
                t.subject,
                t.direction,
                change_text(t.start, t.end, t.relative_change, t.unit),
                f"{t.p_value:.2g}",
            ]
            for t in report.trends.items
            if t.significant
        ]
    if key == "bottlenecks":
        return ["kind", "subject", "recommendation", "evidence"], [
            [b.kind, b.subject, b.recommendation, _evidence(b.evidence)]
            for b in report.bottlenecks.items
        ]
    if key == "forecasts":
        header = ["series", "subject", "horizon", "point", "interval", "crossing"]
        return header, [
            [
                f.series,
                f.subject,
                _duration(f.horizon),
                quantity(f.point[-1] if f.point else None, f.unit),
                f"{f.level:.0%}: {quantity(f.lower[-1] if f.lower else None, f.unit)} to "
                f"{quantity(f.upper[-1] if f.upper else None, f.unit)}",
                crossing_text(f),
            ]
            for f in report.forecasts.items
        ]
    if key == "advice":
        return ["queue", "arrivals/s", "run time", "concurrency x processes", "wait", "assumes"], [
            [
                a.queue,
                f"{a.arrival_rate:.3g}",
                quantity(a.service_time, "s"),
                f"{a.concurrency} x {a.processes}",
                f"{quantity(a.predicted_wait, 's')} (target {quantity(a.target_wait, 's')}"
                f"{'' if a.meets_target else ', NOT met'})",
                "; ".join(a.assumptions),
            ]
            for a in report.advice.items
        ]
    if key == "alerts":
        return ["fired", "rule", "severity", "value", "resolved", "message"], [
            [_time(a.fired_at), a.rule, a.severity, _short(a.value)]
            + ["" if a.resolved_at is None else _time(a.resolved_at), a.message]
            for a in report.alerts.items
        ]
    return ["task", "error", "count", "last seen", "latest message"], [
        [f.task, f.error_type, str(f.count), _time(f.last_seen), f.message]
        for f in report.failures.items
    ]


def _reason(report: Report, key: str) -> str | None:
    if key == "summary":
        return report.summary.reason
    section: Section[object] = getattr(report, key)
    if key == "trends" and section.items and not any(t.significant for t in report.trends.items):
        return f"no significant trend among {len(section.items)} series"
    return section.reason


def _cell(text: str) -> str:
    one_line = " ".join(text.split())
    return escape(one_line, quote=False).replace("|", "\\|")


def markdown(report: Report) -> str:
    """The report as Markdown (GitHub tables); user strings escaped."""
    from .report import SECTIONS

    s = report.summary
    lines = [
        f"# taskflow report: {_cell(report.app)}",
        "",
        f"{_time(report.since)} to {_time(report.until)} (metrics clock, "
        f"x{report.time_scale:g}); generated {_time(report.generated_at)}.",
    ]
    for key, title in SECTIONS:
        lines += ["", f"## {title}", ""]
        if key == "summary":
            lines += [
                f"{s.jobs} jobs, {s.failures} failures ({s.failure_rate:.1%}), "
                f"{s.retries} retries; run time p95 {quantity(s.run_seconds.p95, 's')}.",
                "",
            ]
        header, cells = rows(report, key)
        reason = _reason(report, key)
        if cells:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in cells]
        if reason:
            lines.append(f"_{_cell(reason)}_")
    return "\n".join(lines) + "\n"


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#101828;
max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #eaecf0}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #eaecf0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f9fafb}.reason{color:#667085;font-style:italic}.missed{color:#b42318}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #eaecf0}
"""


def _table(header: list[str], cells: list[list[str]], extra: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header) + ("<th>trend</th>" if extra else "")
    body = []
    for i, row in enumerate(cells):
        tds = "".join(
            f'<td class="missed">{escape(c)}</td>' if c in ("MISSED",) else f"<td>{escape(c)}</td>"
            for c in row
        )
        if extra:
            tds += f"<td>{extra[i]}</td>"
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _charts(report: Report, key: str) -> str:
    if key == "summary":
        bars = [
            (t.task, t.run_seconds.p95)
            for t in report.summary.items
            if t.run_seconds.p95 is not None
        ]
        return bar_chart("run time p95 per task (s)", bars, unit=" s") if bars else ""
    if key == "forecasts":
        charts = [
            forecast_chart(
                f"{f.series} of {f.subject} ({f.level:.0%} interval)",
                (f.history.times, f.history.values),
                (f.times, f.point, f.lower, f.upper),
                unit=f" {f.unit}" if f.unit not in ("%",) else "%",
                threshold=None if f.crossing is None else f.crossing.threshold,
            )
            for f in report.forecasts.items
        ]
        return f'<div class="charts">{"".join(charts)}</div>' if charts else ""
    return ""


def html_page(report: Report) -> str:
    """One self-contained HTML page: styles inline, charts as inline SVG, no script; a
    Content-Security-Policy forbids fetching anything."""
    from .report import SECTIONS

    s = report.summary
    body = [
        f"<h1>taskflow report: {escape(report.app)}</h1>",
        f"<p>{escape(_time(report.since))} to {escape(_time(report.until))} (metrics clock, "
        f"x{report.time_scale:g}); generated {escape(_time(report.generated_at))}.</p>",
    ]
    for key, title in SECTIONS:
        body.append(f'<section id="{key}"><h2>{escape(title)}</h2>')
        if key == "summary":
            body.append(
                f"<p>{s.jobs} jobs, {s.failures} failures ({s.failure_rate:.1%}), {s.retries} "
                f"retries; run time p95 {escape(quantity(s.run_seconds.p95, 's'))}.</p>"
            )
        header, cells = rows(report, key)
        extra = None
        if key == "trends":
            shown = [t for t in report.trends.items if t.significant]
            extra = [sparkline(t.history.times, t.history.values, color=FORECAST) for t in shown]
        if cells:
            body.append(_table(header, cells, extra))
        body.append(_charts(report, key))
        reason = _reason(report, key)
        if reason:
            body.append(f'<p class="reason">{escape(reason)}</p>')
        body.append("</section>")
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>taskflow report: {escape(report.app)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def change_text(start: float, end: float, relative: float, unit: str) -> str:
    """A trend's change over its window: relative to its start, or, from a start of about
    zero (a throughput that rose from nothing), as the absolute change in ``unit``."""
    if abs(start) > 1e-9 * max(abs(end), 1e-300):
        return f"{relative:+.0%}"
    return f"{end - start:+.3g} {unit}"
