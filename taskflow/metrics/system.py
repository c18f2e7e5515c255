"""The system collector: a worker sibling sampling the host and the worker process.

Each sample goes to one Redis stream shared by all workers (``AppKeys.system_stream``: one per app),
trimmed to ``MetricsSettings.system_retention``. Event-loop lag is measured by a probe that
sleeps a fixed 100 ms and records how late it wakes up.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import psutil
from anyio.abc import TaskStatus

from .._clock import now_ms
from ..connection import CONNECTION_ERRORS
from .clock import metrics_ms

if TYPE_CHECKING:
    from .._worker.services import ServiceContext

__all__ = ("SystemCollector", "SystemSample")

logger = logging.getLogger(__name__)

_PROBE = 0.1


@dataclass(frozen=True, slots=True)
class SystemSample:
    """One system sample. Rates are per second over the interval since the previous one."""

    worker: str
    host: str
    time_ms: int
    cpu_percent: float  # host, all cores (0-100)
    load_1m: float
    memory_used_bytes: int
    memory_percent: float
    swap_used_bytes: int
    disk_used_bytes: int  # of the filesystem holding the working directory
    disk_percent: float
    disk_read_bytes_per_s: float
    disk_write_bytes_per_s: float
    net_sent_bytes_per_s: float
    net_recv_bytes_per_s: float
    process_rss_bytes: int
    process_cpu_percent: float  # of one core; can exceed 100 with threads
    process_open_files: int  # file descriptors
    loop_lag_seconds: float  # worst event-loop lag seen since the previous sample
    running_jobs: int

    @classmethod
    def from_json(cls, data: bytes) -> SystemSample:
        return cls(**orjson.loads(data))


class SystemCollector:
    """Samples every ``system_interval`` and appends to the system stream."""

    name = "system-collector"

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._lag = 0.0
        self._last: tuple[float, Any, Any] | None = None

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        settings = ctx.app_settings.metrics
        interval = settings.system_interval.total_seconds()
        retention_ms = int(settings.system_retention.total_seconds() * 1000)
        self._safe_take(ctx)  # primes psutil's CPU and I/O counters
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._probe_lag)
            task_status.started()
            while True:
                await anyio.sleep(interval)
                sample = self._safe_take(ctx)
                if sample is None:
                    continue
                try:
                    async with ctx.redis.pipeline(transaction=False) as pipe:
                        pipe.xadd(
                            ctx.keys.system_stream,
                            {"worker": ctx.worker_id, "sample": orjson.dumps(asdict(sample))},
                            minid=str(now_ms() - retention_ms),
                            approximate=True,
                        )
                        # trimming happens on the next sample only: the stream's expiry
                        # takes the last samples away once no worker writes any more
                        pipe.pexpire(ctx.keys.system_stream, retention_ms)
                        await pipe.execute()
                except CONNECTION_ERRORS as exc:
                    ctx.health.redis_failed("writing a system sample", exc)

    async def _probe_lag(self) -> None:
        while True:
            started = time.monotonic()
            await anyio.sleep(_PROBE)
            self._lag = max(self._lag, time.monotonic() - started - _PROBE)

    def _safe_take(self, ctx: ServiceContext) -> SystemSample | None:
        """A sample, or None (logged) if the OS would not give one: a collector's trouble
        (a deleted working directory, a denied /proc read) must not stop the worker."""
        try:
            return self._take(ctx)
        except Exception as exc:
            logger.warning("system sample skipped: %s: %s", type(exc).__name__, exc)
            return None

    def _take(self, ctx: ServiceContext) -> SystemSample:
        now = time.monotonic()
        disk_io = psutil.disk_io_counters()
        net_io = psutil.net_io_counters()
        rates = [0.0, 0.0, 0.0, 0.0]
        if self._last is not None:
            then, old_disk, old_net = self._last
            span = max(now - then, 1e-6)
            if disk_io is not None and old_disk is not None:
                rates[0] = (disk_io.read_bytes - old_disk.read_bytes) / span
                rates[1] = (disk_io.write_bytes - old_disk.write_bytes) / span
            if net_io is not None and old_net is not None:
                rates[2] = (net_io.bytes_sent - old_net.bytes_sent) / span
                rates[3] = (net_io.bytes_recv - old_net.bytes_recv) / span
        self._last = (now, disk_io, net_io)
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(os.getcwd())
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            process_cpu = self._process.cpu_percent(None)
            fds = self._process.num_fds() if hasattr(self._process, "num_fds") else 0
        lag, self._lag = self._lag, 0.0
        return SystemSample(
            worker=ctx.worker_id,
            host=socket.gethostname(),
            time_ms=metrics_ms(ctx.app_settings.metrics),
            cpu_percent=psutil.cpu_percent(None),
            load_1m=os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0,
            memory_used_bytes=memory.used,
            memory_percent=memory.percent,
            swap_used_bytes=psutil.swap_memory().used,
            disk_used_bytes=disk.used,
            disk_percent=disk.percent,
            disk_read_bytes_per_s=rates[0],
            disk_write_bytes_per_s=rates[1],
            net_sent_bytes_per_s=rates[2],
            net_recv_bytes_per_s=rates[3],
            process_rss_bytes=rss,
            process_cpu_percent=process_cpu,
            process_open_files=fds,
            loop_lag_seconds=lag,
            running_jobs=len(ctx.jobs.running),
        )
