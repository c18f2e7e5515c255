"""Insights: trends, forecasts and worker-configuration advice from stored metrics (issue
14). The numerical core lives in :mod:`taskflow.insights.stats`; see docs/insights-methods.md.
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
