"""What every system's side of ``benchmarks/peers.py`` shares. Standard library only.

The worker processes import this module, so it must stay light: anything it imported would
count in every worker's RSS.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

CONCURRENCY = 100  # jobs at once in each worker, where the system has the knob
POLL = 0.01  # seconds: every poll interval, on workers and clients, where a system polls
SLEEP = 0.01  # seconds each job of the sleep workload sleeps
TIMEOUT = 300.0  # seconds any one wait may take before the workload counts as failed
BULK = 1000  # jobs per call of a bulk enqueue API
CONCURRENT_ENQUEUES = 100  # enqueue calls in flight at once where there is no bulk API

PROBE_ENV = "PEERS_PROBE"  # file the probe writes once it has seen PEERS_EXPECT jobs
EXPECT_ENV = "PEERS_EXPECT"


def taskflow_worker_argv(app: str, queue: str) -> list[str]:
    """``python -m taskflow worker <app>`` on ``queue``, logging at WARNING. Here, not in
    ``common.py``, so that the taskflow peer imports nothing of taskflow but its public API."""
    return [
        sys.executable,
        "-m",
        "taskflow",
        "--log-level",
        "WARNING",
        "worker",
        app,
        "--queue",
        queue,
        "--concurrency",
        str(CONCURRENCY),
    ]


def expected_fan(width: int) -> int:
    """The fan's join result: the sum of the leaves ``seed + i`` with ``seed = 1``."""
    return sum(1 + i for i in range(width))


class _Probe:
    """Wall clock and CPU at the first job body's start and the latest one's end.

    Only the drain and sleep jobs touch it. When the body count reaches ``PEERS_EXPECT``, it
    writes a JSON file at ``PEERS_PROBE`` (atomically), which the harness waits for: no
    Redis command is needed to learn that a drain is over.
    """

    __slots__ = ("calls", "expect", "first_cpu", "first_wall", "last_cpu", "last_wall", "path")

    def __init__(self) -> None:
        self.path = os.environ.get(PROBE_ENV)
        self.expect = int(os.environ.get(EXPECT_ENV) or 0)
        self.calls = 0
        self.first_cpu = self.first_wall = self.last_cpu = self.last_wall = 0.0

    def start(self) -> None:
        if not self.first_wall:
            self.first_wall, self.first_cpu = time.perf_counter(), time.process_time()

    def finish(self) -> None:
        self.last_wall, self.last_cpu = time.perf_counter(), time.process_time()
        self.calls += 1
        if self.calls == self.expect and self.path:
            data = {
                "calls": self.calls,
                "wall": self.last_wall - self.first_wall,
                "cpu": self.last_cpu - self.first_cpu,
            }
            tmp = Path(self.path + ".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self.path)


probe = _Probe()


async def in_flight(n: int, make: Callable[[], Awaitable[Any]]) -> list[Any]:
    """``n`` calls of ``make()``, ``CONCURRENT_ENQUEUES`` at a time; their results in order."""
    out: list[Any] = []
    for start in range(0, n, CONCURRENT_ENQUEUES):
        size = min(CONCURRENT_ENQUEUES, n - start)
        out.extend(await asyncio.gather(*(make() for _ in range(size))))
    return out
