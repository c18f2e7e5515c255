"""Job and system metrics: measured in every worker, stored in Redis as mergeable
histograms, read back cluster-wide from any process. See docs/metrics.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._worker.meter import JobSample
from .histogram import RELATIVE_ERROR, Histogram
from .query import Aggregate, Distribution, Metrics, MetricsSummary
from .recorder import MetricsRecorder
from .system import SystemCollector, SystemSample

if TYPE_CHECKING:
    from .export import export
    from .prometheus import MetricsServer, render


def __getattr__(name: str) -> Any:
    # export and Prometheus pull in prometheus-client: loaded only when asked for, so a
    # worker that never serves /metrics does not carry it
    if name == "export":
        from .export import export

        return export
    if name in ("MetricsServer", "render"):
        from . import prometheus

        return getattr(prometheus, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
