"""Insights: trends, bottlenecks, forecasts and worker-configuration advice from the stored
metrics (issue 14, being built). :mod:`taskflow.insights.series` reads the metrics as time
series, :mod:`taskflow.insights.bottlenecks` names what holds jobs back, and the numerical
core lives in :mod:`taskflow.insights.stats` (see docs/insights.md).
"""

from __future__ import annotations

from .stats import (
    Advice,
    Crossing,
    Forecast,
    Trend,
    advise,
    erlang_c,
    forecast,
    time_to_threshold,
    trend,
)

__all__ = (
    "Advice",
    "Crossing",
    "Forecast",
    "Trend",
    "advise",
    "erlang_c",
    "forecast",
    "time_to_threshold",
    "trend",
)
