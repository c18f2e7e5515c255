"""Prometheus exposition of cluster-wide job metrics, through prometheus-client.

Nothing is observed per job: at each scrape a :class:`MetricsExporter` reads the stored
time buckets from Redis (``app.metrics``), so every endpoint reports the whole cluster,
like ``taskflow metrics show``. Counters must never go down, while stored buckets expire,
so each exporter accumulates: a minute bucket (the finest resolution) is folded into its
running totals once ``settle`` has passed since the bucket ended (workers flush every
``flush_interval``), and the buckets not yet folded are read afresh at each scrape. Its
counters thus count attempts that ended since the start of the minute the exporter was
created, and restart from zero with the process, which Prometheus treats as a counter
reset. Samples a worker writes later than ``settle`` (it kept them through a Redis outage)
are still in ``app.metrics`` queries but missed by exporters that already folded their
minute.

Names: ``taskflow_jobs_total``, ``taskflow_job_reruns_total``, the histograms
``taskflow_job_run_seconds``, ``taskflow_job_wait_seconds``, ``taskflow_job_cpu_seconds``
and ``taskflow_job_memory_bytes`` (labels ``task``, ``queue``, ``status``, plus the
histograms' ``le``), and the gauges ``taskflow_queue_jobs{queue}``, ``taskflow_workers``
and ``taskflow_jobs_running``. See docs/metrics.md.

Serve it with the FastAPI router (``GET /metrics``), a worker sibling
(:class:`MetricsServer`, ``taskflow worker --metrics-port``), or :func:`render` anywhere.
"""

from __future__ import annotations

import logging
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Final

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from redis.exceptions import RedisError

from .. import keys
from ..connection import CONNECTION_ERRORS
from ..errors import ConfigurationError, LifecycleError
from ..heartbeat import live_workers
from ..task import now_ms
from .histogram import Histogram, value_of
from .recorder import MEASURES

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..app import TaskFlow
    from ..worker import Worker

__all__ = ("LABELS", "MetricsExporter", "MetricsServer", "render")

logger = logging.getLogger(__name__)

LABELS: Final = ("task", "queue", "status")
"""The labels of every per-job series (histograms add ``le``)."""

SECONDS_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    900.0, 3600.0,
)  # fmt: skip
BYTES_BUCKETS: Final = (0.0, 2.0**16, 2.0**20, 2.0**22, 2.0**24, 2.0**26, 2.0**28, 2.0**30)

# measure code (see recorder.py) -> name, help, upper bounds of its Prometheus buckets
_HISTOGRAMS: Final = {
    "r": ("taskflow_job_run_seconds", "Wall time of job bodies.", SECONDS_BUCKETS),
    "w": (
        "taskflow_job_wait_seconds",
        "Queue wait: from when a job was due to the start of the attempt.",
        SECONDS_BUCKETS,
    ),
    "c": (
        "taskflow_job_cpu_seconds",
        "CPU time of the job's own coroutine steps (not threads it spawned).",
        SECONDS_BUCKETS,
    ),
    "m": (
        "taskflow_job_memory_bytes",
        "Growth of the worker's resident set size over the attempt, clamped at 0.",
        BYTES_BUCKETS,
    ),
}
_GROUP: Final = ("task", "queue", "outcome")

_Key = tuple[str, str, str]


@dataclass(slots=True)
class _Series:
    """Cumulative figures of one task, queue and outcome."""

    count: int = 0
    reruns: int = 0
    histograms: dict[str, Histogram] = field(
        default_factory=lambda: {m: Histogram() for m in MEASURES}
    )

    def add(self, other: _Series) -> None:
        self.count += other.count
        self.reruns += other.reruns
        for measure in MEASURES:
            self.histograms[measure].update(other.histograms[measure])


def _buckets(h: Histogram, bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative counts at ``bounds`` (then +Inf), each stored bucket counted at the first
    bound at or above its representative value: within the histogram's 2 %."""
    counts = [0] * len(bounds)
    for index, n in h.buckets.items():
        at = bisect_left(bounds, value_of(index))
        if at < len(bounds):
            counts[at] += n
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(bounds, counts, strict=True):
        running += n
        out.append((repr(bound), running))
    out.append(("+Inf", sum(h.buckets.values())))
    return out


class _Families:
    """A prometheus-client collector over metric families built beforehand."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class MetricsExporter:
    """Cumulative, cluster-wide job metrics for one scrape endpoint; see the module docs.

    :param app: the app whose Redis is read; it must be open when :meth:`render` is called.
    :param queues: queues whose depth to report besides the app's own and those in metrics.
    :param settle: how long after a minute bucket ends it is folded into the totals;
        by default twice the app's ``metrics.flush_interval`` plus 5 seconds.
    """

    def __init__(
        self, app: TaskFlow, *, queues: Iterable[str] = (), settle: timedelta | None = None
    ) -> None:
        self.app = app
        self.queues = tuple(queues)
        metrics = app.settings.metrics
        settle = settle if settle is not None else metrics.flush_interval * 2 + timedelta(seconds=5)
        self._settle_ms = int(settle.total_seconds() * 1000)
        finest = metrics.resolutions[0]
        self._width = int(finest.bucket.total_seconds() * 1000)
        self._retention = int(finest.retention.total_seconds() * 1000)
        created = now_ms()
        self._cursor = created - created % self._width  # first bucket not folded yet
        self._totals: dict[_Key, _Series] = {}
        self._lock = anyio.Lock()

    async def render(self) -> bytes:
        """The exposition text (prometheus-client's text format, :data:`CONTENT_TYPE`).

        :raises redis.exceptions.RedisError: or a connection error, when Redis fails.
        :raises LifecycleError: the app is not open.
        """
        async with self._lock:  # one fold at a time
            series = await self._series()
        queues = sorted({*self.app.queues, self.app.settings.default_queue, *self.queues})
        queues = sorted({*queues, *(queue for _, queue, _ in series)})
        redis = self.app.redis
        async with redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zcard(keys.queue(queue))
            depths: list[int] = await pipe.execute()
        workers = await live_workers(redis)
        families = _job_families(series)
        depth = GaugeMetricFamily(
            "taskflow_queue_jobs",
            "Jobs in the queue: due, deferred, and running (arq keeps a job there until it ends).",
            labels=["queue"],
        )
        for queue, n in zip(queues, depths, strict=True):
            depth.add_metric([queue], n)
        families.append(depth)
        families.append(GaugeMetricFamily("taskflow_workers", "Live workers.", len(workers)))
        running = sum(w.running for w in workers)
        families.append(
            GaugeMetricFamily(
                "taskflow_jobs_running", "Jobs running, per the workers' last heartbeats.", running
            )
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        return generate_latest(registry)

    async def _read(self, start_ms: int, end_ms: int) -> dict[_Key, _Series]:
        _, merged = await self.app.metrics.aggregate(start_ms, end_ms, _GROUP)
        out: dict[_Key, _Series] = {}
        for (task, queue, outcome), m in merged.items():
            key = (str(task), str(queue), str(outcome))
            out[key] = _Series(sum(m.counts.values()), m.reruns, m.histograms)
        return out

    async def _series(self) -> dict[_Key, _Series]:
        now = now_ms()
        # buckets older than the finest retention are gone (and would be read at a coarser
        # resolution): an exporter left unscraped that long skips them
        oldest = now - self._retention + 2 * self._width
        self._cursor = max(self._cursor, oldest - oldest % self._width)
        settled = now - self._settle_ms
        settled -= settled % self._width
        if settled > self._cursor:
            for key, series in (await self._read(self._cursor, settled - 1)).items():
                self._totals.setdefault(key, _Series()).add(series)
            self._cursor = settled
        live = await self._read(self._cursor, now)
        out: dict[_Key, _Series] = {}
        for source in (self._totals, live):
            for key, series in source.items():
                out.setdefault(key, _Series()).add(series)
        return out


def _job_families(series: dict[_Key, _Series]) -> list[Metric]:
    labels = list(LABELS)
    jobs = CounterMetricFamily(
        "taskflow_jobs", "Job attempts that ended, by task, queue and outcome.", labels=labels
    )
    reruns = CounterMetricFamily(
        "taskflow_job_reruns", "Job attempts that were not the job's first.", labels=labels
    )
    histograms = {
        measure: (HistogramMetricFamily(name, text, labels=labels), bounds)
        for measure, (name, text, bounds) in _HISTOGRAMS.items()
    }
    for key in sorted(series):
        s = series[key]
        jobs.add_metric(list(key), s.count)
        reruns.add_metric(list(key), s.reruns)
        for measure, (family, bounds) in histograms.items():
            h = s.histograms[measure]
            family.add_metric(list(key), _buckets(h, bounds), h.total)
    return [jobs, reruns, *(family for family, _ in histograms.values())]


CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""Content type of :meth:`MetricsExporter.render`'s output."""

_exporters: weakref.WeakKeyDictionary[TaskFlow, MetricsExporter] = weakref.WeakKeyDictionary()


async def render(app: TaskFlow) -> bytes:
    """Prometheus text for ``app``, from one :class:`MetricsExporter` per app kept for this
    process (so its counters count from the first call).

    :raises redis.exceptions.RedisError: or a connection error, when Redis fails.
    :raises LifecycleError: the app is not open.

    Example::

        body = await render(app)   # serve with Content-Type: CONTENT_TYPE
    """
    exporter = _exporters.get(app)
    if exporter is None:
        exporter = _exporters[app] = MetricsExporter(app)
    return await exporter.render()


# -- the worker sibling: a tiny HTTP server ----------------------------------------------

_MAX_HEAD = 16 * 1024
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_SCRAPE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, RedisError, LifecycleError)


class _BadRequest(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


async def _read_head(stream: SocketStream) -> bytes:
    """The request line and headers (a scrape has no body)."""
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head:  # bare LF: a hand-typed request
        head += await stream.receive(4096)
        if len(head) > _MAX_HEAD:
            raise _BadRequest(431, "request head too large")
    return head


def _response(status: int, body: bytes, content_type: str, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class MetricsServer:
    """A worker sibling serving ``GET /metrics`` (Prometheus text) over plain HTTP/1.1.

    Every path but ``/metrics`` answers 404, methods other than GET and HEAD 405, malformed
    requests 400, and a scrape while Redis is unreachable 503. One request per connection.
    After start, :attr:`port` is the port really bound (useful with ``port=0``).

    :param port: TCP port; 0 picks a free one.
    :param host: address to bind; loopback by default, ``0.0.0.0`` for every interface.
    :param exporter: the exporter to serve; by default one over the worker's app and queues.
    :param timeout: seconds a client has to send its request.
    :raises ConfigurationError: at worker start, when the address cannot be bound.

    Example::

        async with app, app.worker(siblings=[MetricsServer(9464)]) as worker: ...
    """

    name = "metrics-server"

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        exporter: MetricsExporter | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.host = host
        self.exporter = exporter
        self.timeout = timeout

    async def run(self, worker: Worker, *, task_status: TaskStatus[None]) -> None:
        exporter = self.exporter or MetricsExporter(worker.app, queues=worker.queues)
        self.exporter = exporter
        try:
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        async with listener, anyio.create_task_group() as tg:
            self.port = listener.extra(SocketAttribute.local_port)
            logger.info("serving Prometheus metrics at http://%s:%d/metrics", self.host, self.port)
            task_status.started()
            await listener.serve(partial(self._handle, exporter), task_group=tg)

    async def _handle(self, exporter: MetricsExporter, stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(self.timeout):
                    try:
                        reply = await self._reply(exporter, await _read_head(stream))
                    except _BadRequest as exc:
                        reply = _response(exc.status, f"{exc}\n".encode(), "text/plain")
                    await stream.send(reply)
            except (anyio.EndOfStream, anyio.BrokenResourceError, TimeoutError, OSError):
                pass  # the client went away or was too slow: nothing to answer
            except Exception:  # a bug here must not stop the worker
                logger.exception("metrics server: error answering a request")

    async def _reply(self, exporter: MetricsExporter, head: bytes) -> bytes:
        parts = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _BadRequest(400, "malformed request line")
        method, target, _ = parts
        if target.split("?", 1)[0] != "/metrics":
            return _response(404, b"not found; metrics are at /metrics\n", "text/plain")
        if method not in ("GET", "HEAD"):
            return _response(405, b"use GET\n", "text/plain", "Allow: GET, HEAD\r\n")
        try:
            body = await exporter.render()
        except _SCRAPE_ERRORS as exc:
            logger.warning("metrics scrape failed: Redis unavailable (%s)", exc)
            return _response(503, f"redis unavailable: {exc}\n".encode(), "text/plain")
        except Exception:
            logger.exception("metrics scrape failed")
            return _response(500, b"internal error; see the worker's log\n", "text/plain")
        reply = _response(200, body, CONTENT_TYPE)
        return reply[: len(reply) - len(body)] if method == "HEAD" else reply
