"""Inline SVG charts for the HTML report: a forecast chart, a bar chart, a sparkline.

Each function returns one ``<svg>`` element as text, with every label escaped, sized in
CSS pixels and drawn from the data alone: no script, no font or style sheet to fetch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

__all__ = ("bar_chart", "forecast_chart", "sparkline")

HISTORY = "#1f6feb"
FORECAST = "#d4590b"
BAND = "#f3b27a"
THRESHOLD = "#b42318"
BAR = "#2f855a"
AXIS = "#667085"


def _range(values: Sequence[float], floor: float | None = None) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if floor is not None:
        low = min(low, floor)
    if high - low < 1e-12:
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


def _number(value: float) -> str:
    return f"{value:.3g}"


def _clock(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%m-%d %H:%M")


def _path(xs: Sequence[float], ys: Sequence[float]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))


class _Frame:
    """Maps data to pixels inside a chart's margins."""

    def __init__(self, ts: Sequence[float], ys: Sequence[float], width: int, height: int) -> None:
        self.left, self.right, self.top, self.bottom = 56, 12, 24, 28
        self.width, self.height = width, height
        self.t0, self.t1 = (min(ts), max(ts)) if ts else (0.0, 1.0)
        self.y0, self.y1 = _range(ys)

    def x(self, t: float) -> float:
        span = (self.t1 - self.t0) or 1.0
        return self.left + (t - self.t0) / span * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        inner = self.height - self.top - self.bottom
        return self.top + (self.y1 - v) / (self.y1 - self.y0) * inner

    def points(self, ts: Sequence[float], vs: Sequence[float]) -> str:
        return _path([self.x(t) for t in ts], [self.y(v) for v in vs])

    def axes(self, unit: str) -> list[str]:
        base, end = self.height - self.bottom, self.width - self.right
        parts = [
            f'<polyline points="{self.left},{self.top} {self.left},{base} {end},{base}" '
            f'fill="none" stroke="{AXIS}" stroke-width="1"/>'
        ]
        parts += [
            f'<text x="{self.left - 4}" y="{self.y(v) + 4:.1f}" font-size="10" '
            f'text-anchor="end" fill="{AXIS}">{escape(_number(v))}{escape(unit)}</text>'
            for v in (self.y0, (self.y0 + self.y1) / 2, self.y1)
        ]
        parts += [
            f'<text x="{self.x(t):.1f}" y="{self.height - 8}" font-size="10" '
            f'text-anchor="{anchor}" fill="{AXIS}">{_clock(t)}</text>'
            for t, anchor in ((self.t0, "start"), (self.t1, "end"))
        ]
        return parts


def _open(title: str, width: int, height: int, x: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{x}" y="15" font-size="12" fill="#101828">{escape(title)}</text>',
    ]


def forecast_chart(
    title: str,
    history: tuple[Sequence[float], Sequence[float]],
    forecast: tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]],
    *,
    unit: str = "",
    threshold: float | None = None,
    width: int = 640,
    height: int = 220,
) -> str:
    """History as a solid line, the point forecast dashed, its interval shaded, and the
    ``threshold`` (if any) as a red dotted rule. ``forecast`` is (times, point, lower,
    upper)."""
    times, values = history
    f_times, point, lower, upper = forecast
    ys = [*values, *lower, *upper, *point, *([] if threshold is None else [threshold])]
    frame = _Frame([*times, *f_times], ys, width, height)
    parts = [*_open(title, width, height, frame.left), *frame.axes(unit)]
    if f_times:
        band_t = [*f_times, *reversed(f_times)]
        band_v = [*upper, *reversed(lower)]
        parts.append(
            f'<polygon class="interval" points="{frame.points(band_t, band_v)}" '
            f'fill="{BAND}" fill-opacity="0.45" stroke="none"/>'
        )
    if threshold is not None:
        at = frame.y(threshold)
        parts.append(
            f'<line x1="{frame.left}" x2="{width - frame.right}" y1="{at:.1f}" y2="{at:.1f}" '
            f'stroke="{THRESHOLD}" stroke-dasharray="2 3"/>'
        )
    if times:
        parts.append(
            f'<polyline class="history" points="{frame.points(times, values)}" '
            f'fill="none" stroke="{HISTORY}" stroke-width="1.5"/>'
        )
    if f_times:  # joined to the last observation
        ts, vs = ([times[-1]], [values[-1]]) if times else ([], [])
        parts.append(
            f'<polyline class="point" points="{frame.points([*ts, *f_times], [*vs, *point])}" '
            f'fill="none" stroke="{FORECAST}" stroke-width="1.5" stroke-dasharray="5 3"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str, bars: Sequence[tuple[str, float]], *, unit: str = "", width: int = 640
) -> str:
    """One horizontal bar per (label, value), longest scaled to the chart's width."""
    row, label_w, top = 22, 180, 24
    height = top + row * max(1, len(bars)) + 8
    high = max((v for _, v in bars if math.isfinite(v)), default=0.0) or 1.0
    scale = (width - label_w - 90) / high
    parts = _open(title, width, height, 4)
    for i, (label, value) in enumerate(bars):
        y = top + i * row
        length = max(1.0, value * scale) if math.isfinite(value) else 1.0
        shown = label if len(label) <= 28 else label[:27] + "…"
        parts += [
            f'<text x="{label_w - 6}" y="{y + 14}" font-size="11" text-anchor="end" '
            f'fill="#101828">{escape(shown)}</text>',
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row - 6}" '
            f'fill="{BAR}"/>',
            f'<text x="{label_w + length + 4:.1f}" y="{y + 14}" font-size="10" '
            f'fill="{AXIS}">{escape(_number(value))}{escape(unit)}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


def sparkline(times: Sequence[float], values: Sequence[float], *, color: str = HISTORY) -> str:
    """A 120x28 line of ``values`` over ``times``, no axes (for a table cell)."""
    width, height = 120, 28
    if len(times) < 2:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>'
    t0, t1 = min(times), max(times)
    y0, y1 = _range(values)
    xs = [2 + (t - t0) / ((t1 - t0) or 1) * (width - 4) for t in times]
    ys = [2 + (y1 - v) / (y1 - y0) * (height - 4) for v in values]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
        f'<polyline points="{_path(xs, ys)}" fill="none" stroke="{color}" stroke-width="1.2"/>'
        "</svg>"
    )
