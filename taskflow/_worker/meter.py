"""Per-job measurement: CPU time of one coroutine among many, and process memory.

CPU: a job's coroutine is driven step by step and each step's thread CPU time is added to
that job only, so a hundred jobs sharing one event loop each get their own CPU time. Work
a job hands to other threads (``anyio.to_thread``) or processes is not counted.

Memory: Python cannot attribute allocations to one of many concurrent coroutines cheaply,
so taskflow records the process's resident set size (RSS) when the attempt ends and its
growth over the attempt (clamped at 0), read from ``/proc/self/statm`` (psutil elsewhere).
"""

from __future__ import annotations

import os
import time
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psutil

__all__ = ("JobSample", "Metered", "rss_bytes")

T = TypeVar("T")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_thread_time = time.thread_time


@dataclass(frozen=True, slots=True)
class JobSample:
    """One attempt of one job, as measured by its worker."""

    task: str
    queue: str
    outcome: str  # succeeded | failed | cancelled | retrying | requeued
    attempt: int
    finished_ms: int
    wait: float  # seconds from when it was due (enqueued or scheduled) to its start
    run: float  # wall seconds of the attempt's body
    cpu: float  # CPU seconds of the attempt's own coroutine steps
    memory: int  # bytes the process's RSS grew during the attempt (>= 0)
    rss: int  # bytes of process RSS when the attempt ended


class Metered(Generic[T]):
    """Await ``Metered(coro)`` instead of ``coro``; ``cpu`` then holds its CPU seconds."""

    __slots__ = ("_coro", "cpu")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self.cpu = 0.0

    def __await__(self) -> Generator[Any, Any, T]:
        coro = self._coro
        send: Any = None
        error: BaseException | None = None
        while True:
            started = _thread_time()
            try:
                yielded = coro.send(send) if error is None else coro.throw(error)
            except StopIteration as stop:
                self.cpu += _thread_time() - started
                return stop.value  # type: ignore[no-any-return]
            except BaseException:
                self.cpu += _thread_time() - started
                raise
            self.cpu += _thread_time() - started
            try:
                send, error = (yield yielded), None
            except BaseException as exc:  # cancellation and throws go to the coroutine
                send, error = None, exc


_RSS_REUSE = 0.002  # seconds a reading is reused: a burst of short jobs shares one


def _statm_reader() -> Any:
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        process = psutil.Process()

        def read_psutil() -> int:
            return int(process.memory_info().rss)

        return read_psutil

    last = [0.0, 0]  # when, bytes

    def read() -> int:
        now = time.monotonic()
        if now - last[0] >= _RSS_REUSE:
            # reading /proc/self/statm costs ~10 us: reuse it within a couple of ms
            last[0], last[1] = now, int(os.pread(fd, 64, 0).split()[1]) * _PAGE
        return int(last[1])

    return read


rss_bytes = _statm_reader()
"""The process's resident set size in bytes, read at most every 2 ms."""
