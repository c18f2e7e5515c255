"""Bottlenecks: what holds the jobs back, each stated with its figures and what to do.

Each detector reads the stored metrics over a window (per task or queue summaries, system
series) and reports only with enough attempts to judge (:data:`MIN_ATTEMPTS`). The
thresholds are module constants, named in each finding's evidence so a reader can weigh it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .._clock import ms_to_datetime
from .._critical_path import CriticalPath, slowest_dependencies
from ..dead_letters import DeadLetters
from ..metrics import Metrics, MetricsSummary
from ..metrics.clock import wall_ms
from ..metrics.query import _window

if TYPE_CHECKING:
    from .._client import Client

__all__ = ("MIN_ATTEMPTS", "Bottleneck", "bottlenecks")

MIN_ATTEMPTS = 20  #: attempts a task or queue needs in the window before it is judged
WAIT_OVER_RUN = 1.0  #: queue wait p95 above this multiple of run time p95 ...
MIN_WAIT = 1.0  #: ... and above this many seconds: under-provisioned
CPU_SHARE = 0.8  #: CPU seconds per second of run time at or above which a body blocks
MIN_BLOCKING_RUN = 0.02  #: mean run time (s) from which a CPU-bound body hurts the loop
LEAK_BYTES = 1 << 20  #: mean RSS growth per attempt (bytes) that suggests a leak
FAILURE_RATE = 0.05  #: share of attempts failing for good that is worth a look
RETRY_RATE = 0.10  #: share of attempts retried that is worth a look
DEPENDENCY_SHARE = 0.5  #: share of graph critical paths one task takes: a slow dependency


@dataclass(frozen=True, slots=True)
class Bottleneck:
    """One finding: its ``kind``, what it is about (``task:<name>``, ``queue:<name>``), the
    figures it rests on, what to do and what doing it should change."""

    #: queue_wait, cpu_bound, memory_growth, failures, retries, timeouts, slow_dependency
    kind: str
    subject: str
    evidence: dict[str, float] = field(default_factory=dict)
    recommendation: str = ""
    expected_effect: str = ""


async def bottlenecks(
    app: Client,
    since: timedelta | datetime = timedelta(hours=24),
    until: datetime | None = None,
    *,
    paths: Iterable[CriticalPath] = (),
) -> list[Bottleneck]:
    """Every bottleneck the window's metrics show (and, given graph runs' critical paths,
    slow dependencies), the most pressing kinds first."""
    metrics = Metrics(app)
    by_task = await metrics.summaries(since, until, by=("task",))
    by_queue = await metrics.summaries(since, until, by=("queue",))
    lag = await _worst_lag(metrics, since, until)
    found: list[Bottleneck] = []
    found += [b for s in by_queue if (b := _queue_wait(s)) is not None]
    found += [b for s in by_task if (b := _cpu_bound(s, lag)) is not None]
    found += [b for s in by_task if (b := _memory_growth(s)) is not None]
    found += [b for s in by_task for b in _failures(s)]
    found += await _timeouts(app, since, until)
    found += _slow_dependencies(list(paths))
    return found


async def _timeouts(
    app: Client, since: timedelta | datetime, until: datetime | None
) -> list[Bottleneck]:
    """Tasks whose jobs failed for good on their timeout in the window (from the error
    groups: counted since the group was first seen)."""
    settings = app.settings.metrics
    start, _ = _window(since, until, settings)
    start_wall = ms_to_datetime(wall_ms(settings, start))  # error groups keep wall times
    out = []
    for group in await DeadLetters(app).errors():
        if "TimeoutError" not in group.error_type or group.last_seen < start_wall:
            continue
        out.append(
            Bottleneck(
                "timeouts",
                f"task:{group.task}",
                {"failed_on_timeout": float(group.count)},
                f"{group.task} jobs failed for good on their timeout ({group.count} since "
                f"{group.first_seen:%Y-%m-%d %H:%M} UTC): raise its timeout if the work is "
                "legitimately long, or find what it waits on (a slow dependency, a body "
                "blocking the event loop)",
                "fewer dead letters; if the body blocks the loop, other jobs stop waiting too",
            )
        )
    return out


async def _worst_lag(
    metrics: Metrics, since: timedelta | datetime, until: datetime | None
) -> float:
    samples = await metrics.system(since=since, until=until)
    return max((s.loop_lag_seconds for series in samples.values() for s in series), default=0.0)


def _queue_wait(s: MetricsSummary) -> Bottleneck | None:
    wait, run = s.wait.p95, s.run.p95
    if s.count < MIN_ATTEMPTS or wait is None or run is None:
        return None
    if wait < MIN_WAIT or wait < WAIT_OVER_RUN * run:
        return None
    return Bottleneck(
        "queue_wait",
        f"queue:{s.queue}",
        {"wait_p95_s": wait, "run_p95_s": run, "attempts": s.count, "rate_per_s": s.rate},
        f"queue {s.queue} is under-provisioned: its jobs wait {wait:.1f}s (p95) for "
        f"{run:.2f}s of work; add concurrency or worker processes for it (see the advice)",
        "the wait falls toward the run time once capacity exceeds the arrival rate",
    )


def _cpu_bound(s: MetricsSummary, lag: float) -> Bottleneck | None:
    cpu, run = s.cpu.mean, s.run.mean
    if s.count < MIN_ATTEMPTS or cpu is None or not run or run < MIN_BLOCKING_RUN:
        return None
    share = cpu / run
    if share < CPU_SHARE:
        return None
    return Bottleneck(
        "cpu_bound",
        f"task:{s.task}",
        {"cpu_share": share, "run_mean_s": run, "worst_loop_lag_s": lag, "attempts": s.count},
        f"{s.task} is CPU-bound ({share:.0%} of its {run * 1000:.0f} ms run time is CPU): it "
        "blocks its worker's event loop while it runs; run it in a thread "
        "(anyio.to_thread.run_sync) or a process pool, or on its own queue",
        "other jobs on the same workers stop waiting behind it; loop lag falls",
    )


def _memory_growth(s: MetricsSummary) -> Bottleneck | None:
    growth = s.memory.mean
    if s.count < MIN_ATTEMPTS or growth is None or growth < LEAK_BYTES:
        return None
    return Bottleneck(
        "memory_growth",
        f"task:{s.task}",
        {"rss_growth_mean_bytes": growth, "attempts": s.count},
        f"{s.task} leaves its worker {growth / (1 << 20):.1f} MiB larger per attempt on "
        "average: a leak (a cache or list that only grows, a reference kept)? check what "
        "it keeps between calls",
        "worker memory stays flat; no restarts by the OOM killer",
    )


def _failures(s: MetricsSummary) -> list[Bottleneck]:
    if s.count < MIN_ATTEMPTS:
        return []
    out = []
    if s.failure_rate >= FAILURE_RATE:
        out.append(
            Bottleneck(
                "failures",
                f"task:{s.task}",
                {"failure_rate": s.failure_rate, "failures": s.failures, "attempts": s.count},
                f"{s.failure_rate:.0%} of {s.task}'s attempts failed for good: see "
                "`taskflow dlq errors` for the errors grouped",
                "fewer dead letters and wasted attempts",
            )
        )
    retried = s.retried / s.count
    if retried >= RETRY_RATE:
        out.append(
            Bottleneck(
                "retries",
                f"task:{s.task}",
                {"retry_rate": retried, "retried": s.retried, "attempts": s.count},
                f"{retried:.0%} of {s.task}'s attempts were retried: a flaky dependency, or a "
                "timeout too short for its work",
                "fewer attempts per job; lower latency",
            )
        )
    return out


def _slow_dependencies(paths: Sequence[CriticalPath]) -> list[Bottleneck]:
    out = []
    for share in slowest_dependencies(paths):
        if share.share < DEPENDENCY_SHARE or len(paths) < 2:
            continue
        out.append(
            Bottleneck(
                "slow_dependency",
                f"task:{share.task}",
                {
                    "critical_path_share": share.share,
                    "wall_share": share.wall_share,
                    "runs": float(share.paths),
                },
                f"{share.task} takes {share.share:.0%} of the critical path of the graph runs "
                "it is in: speeding it up shortens them the most",
                f"each second taken off {share.task} takes up to a second off those runs",
            )
        )
    return out
