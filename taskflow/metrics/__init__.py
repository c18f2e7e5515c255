"""Job and system metrics: measured in every worker, stored in Redis as mergeable
histograms, read back cluster-wide from any process. See docs/metrics.md.
"""

from __future__ import annotations

from .export import export
from .histogram import RELATIVE_ERROR, Histogram
from .prometheus import MetricsServer, render
from .query import Aggregate, Distribution, Metrics, MetricsSummary
from .recorder import JobSample, MetricsRecorder
from .system import SystemCollector, SystemSample

__all__ = (
    "RELATIVE_ERROR",
    "Aggregate",
    "Distribution",
    "Histogram",
    "JobSample",
    "Metrics",
    "MetricsRecorder",
    "MetricsServer",
    "MetricsSummary",
    "SystemCollector",
    "SystemSample",
    "export",
    "render",
)
