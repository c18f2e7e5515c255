"""The worker's periodic summary line: what it did since the last one, at INFO.

``worker w-1a2b: last 5m: 1,204 jobs (1,190 succeeded, 9 failed, 5 retried), run p50 12 ms
p95 210 ms; 3 running`` on the ``taskflow.worker`` logger every ``summary_interval``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from .._worker.meter import JobSample
from .histogram import Histogram

if TYPE_CHECKING:
    from .._worker.services import ServiceContext

__all__ = ("SummaryLogger", "format_seconds")

logger = logging.getLogger("taskflow.worker")

_ORDER = ("succeeded", "failed", "cancelled", "retrying", "requeued")
_WORDS = {"retrying": "retried", "requeued": "requeued"}


def format_seconds(value: float) -> str:
    """``850 µs``, ``12 ms``, ``3.4 s``, ``2.5 min``: short and readable."""
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.0f} ms"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _span(seconds: float) -> str:
    """``45s``, ``5m``, ``4m12s``, ``2h``: the span a summary covers."""
    whole = max(1, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


class SummaryLogger:
    """A service and job observer: counts outcomes and run times, logs them every
    ``interval`` seconds and once more when the worker stops."""

    name = "summary"

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"summary interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self._outcomes: Counter[str] = Counter()
        self._runs = Histogram()
        self._since = 0.0

    def job_finished(self, sample: JobSample) -> None:
        self._outcomes[sample.outcome] += 1
        if sample.run > 0:  # the body ran (not an unknown task or bad arguments)
            self._runs.add(sample.run)

    def line(self, worker_id: str, running: int) -> str:
        """The summary of what was counted since the last line, and a fresh count."""
        outcomes, runs, since = self._outcomes, self._runs, self._since
        self._outcomes, self._runs, self._since = Counter(), Histogram(), time.monotonic()
        attempts = sum(outcomes.values())
        head = f"worker {worker_id}: last {_span(self._since - since)}: "
        if not attempts:
            return head + f"no jobs; {running} running"
        parts = ", ".join(f"{outcomes[k]:,} {_WORDS.get(k, k)}" for k in _ORDER if outcomes.get(k))
        timing = ""
        p50, p95 = runs.quantile(0.5), runs.quantile(0.95)
        if p50 is not None and p95 is not None:
            timing = f", run p50 {format_seconds(p50)} p95 {format_seconds(p95)}"
        noun = "attempt" if attempts == 1 else "attempts"
        return head + f"{attempts:,} job {noun} ({parts}){timing}; {running} running"

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        self._since = time.monotonic()
        task_status.started()
        try:
            while True:
                await anyio.sleep(self.interval)
                logger.info(self.line(ctx.worker_id, len(ctx.jobs.running)))
        finally:
            if sum(self._outcomes.values()):
                logger.info(self.line(ctx.worker_id, len(ctx.jobs.running)))
