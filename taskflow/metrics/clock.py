"""The metrics' own clock: wall time, or wall time running ``time_scale`` times faster from
``time_origin`` (``MetricsSettings``), so a demo or a test can put a day of load into
minutes and have it stored, bucketed and read back as a day. Every process of an app must
use the same settings; durations measured (run time, wait, CPU) stay real."""

from __future__ import annotations

from datetime import UTC, datetime

from .._clock import now_ms
from ..config import MetricsSettings

__all__ = ("metrics_ms", "metrics_now", "wall_ms")


def metrics_ms(settings: MetricsSettings, wall: int | None = None) -> int:
    """The metrics time (ms since the epoch) of wall time ``wall`` (default: now)."""
    at = now_ms() if wall is None else wall
    if settings.time_scale == 1 or settings.time_origin is None:
        return at
    origin = int(settings.time_origin.timestamp() * 1000)
    return origin + int((at - origin) * settings.time_scale)


def wall_ms(settings: MetricsSettings, metrics: int) -> int:
    """The wall time at which the metrics clock reads ``metrics`` (its inverse)."""
    if settings.time_scale == 1 or settings.time_origin is None:
        return metrics
    origin = int(settings.time_origin.timestamp() * 1000)
    return origin + int((metrics - origin) / settings.time_scale)


def metrics_now(settings: MetricsSettings) -> datetime:
    """Now, on the metrics clock."""
    return datetime.fromtimestamp(metrics_ms(settings) / 1000, UTC)
