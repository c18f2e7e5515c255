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
and ``taskflow_jobs_running``; then the app's custom metrics (``app.metrics.counter`` and
kin, probes' ``taskflow_probe_*`` among them), counters and histograms accumulated the same
way, gauges the latest value set. See docs/metrics.md.

Serve it with the FastAPI router (``GET /metrics``), a worker sibling
(:class:`MetricsServer`, ``taskflow worker --metrics-port``), or :func:`render` anywhere.
"""

from __future__ import annotations

import logging
import socket
import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from http import HTTPStatus
from typing import IO, TYPE_CHECKING, Any, Final, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler

import anyio
import orjson
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from redis.exceptions import RedisError

from .._protocol import keys
from .._registry import live_workers
from ..connection import CONNECTION_ERRORS
from ..errors import ConfigurationError, LifecycleError, RedisFailed
from .clock import metrics_ms
from .custom import MetricKind, MetricSpec
from .custom_read import Series, collect_series, specs
from .histogram import Histogram, value_of
from .query import Metrics
from .recorder import MEASURES

if TYPE_CHECKING:
    from wsgiref.headers import Headers
    from wsgiref.types import StartResponse, WSGIEnvironment

    from prometheus_client.metrics_core import Metric

    from .._client import Client
    from .._worker.services import ServiceContext

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
        self, app: Client, *, queues: Iterable[str] = (), settle: timedelta | None = None
    ) -> None:
        self.app = app
        self.queues = tuple(queues)
        metrics = app.settings.metrics
        settle = settle if settle is not None else metrics.flush_interval * 2 + timedelta(seconds=5)
        # on the metrics' clock (a demo's time_scale makes a wall second longer there)
        self._settle_ms = int(settle.total_seconds() * 1000 * metrics.time_scale)
        finest = metrics.resolutions[0]
        self._width = int(finest.bucket.total_seconds() * 1000)
        self._retention = int(finest.retention.total_seconds() * 1000)
        created = metrics_ms(metrics)
        self._cursor = created - created % self._width  # first bucket not folded yet
        self._totals: dict[_Key, _Series] = {}
        self._custom_totals: dict[tuple[str, str], Series] = {}  # counters and histograms
        self._custom_live: dict[tuple[str, str], Series] = {}
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
        workers = await live_workers(redis, self.app.keys)
        families = _job_families(series)
        families += _custom_families(await specs(self.app), self._custom_totals, self._custom_live)
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
        _, merged = await Metrics(self.app).aggregate(start_ms, end_ms, _GROUP)
        out: dict[_Key, _Series] = {}
        for (task, queue, outcome), m in merged.items():
            key = (str(task), str(queue), str(outcome))
            out[key] = _Series(sum(m.counts.values()), m.reruns, m.histograms)
        return out

    async def _series(self) -> dict[_Key, _Series]:
        now = metrics_ms(self.app.settings.metrics)
        # buckets older than the finest retention are gone (and would be read at a coarser
        # resolution): an exporter left unscraped that long skips them
        oldest = now - self._retention + 2 * self._width
        self._cursor = max(self._cursor, oldest - oldest % self._width)
        settled = now - self._settle_ms
        settled -= settled % self._width
        if settled > self._cursor:
            for key, series in (await self._read(self._cursor, settled - 1)).items():
                self._totals.setdefault(key, _Series()).add(series)
            _, custom = await collect_series(self.app, self._cursor, settled - 1)
            for custom_key, custom_series in custom.items():
                custom_series.gauges.clear()  # gauges are read live, never accumulated
                self._custom_totals.setdefault(custom_key, Series()).add(custom_series)
            self._cursor = settled
        live = await self._read(self._cursor, now)
        _, self._custom_live = await collect_series(self.app, self._cursor, now)
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


def _custom_families(
    known: dict[str, MetricSpec],
    totals: dict[tuple[str, str], Series],
    live: dict[tuple[str, str], Series],
) -> list[Metric]:
    """The custom metrics (app.metrics.counter and kin): counters and histograms cumulative
    like the job metrics, gauges the latest value any live process set."""
    merged: dict[tuple[str, str], Series] = {}
    for source in (totals, live):
        for key, series in source.items():
            merged.setdefault(key, Series()).add(series)
    kinds = {
        MetricKind.COUNTER: CounterMetricFamily,
        MetricKind.GAUGE: GaugeMetricFamily,
        MetricKind.HISTOGRAM: HistogramMetricFamily,
    }
    families: dict[str, Metric] = {
        name: kinds[spec.kind](name, spec.help or name, labels=list(spec.labelnames))
        for name, spec in sorted(known.items())
    }
    for (name, stored), series in sorted(merged.items()):
        spec, family = known.get(name), families.get(name)
        values = orjson.loads(stored)
        if spec is None or family is None or len(values) != len(spec.labelnames):
            continue  # recorded with another declaration (an older deploy): not shown
        if isinstance(family, CounterMetricFamily):
            family.add_metric(values, series.total)
        elif isinstance(family, HistogramMetricFamily):
            h = series.histogram
            family.add_metric(values, _buckets(h, spec.buckets), h.total)
        elif isinstance(family, GaugeMetricFamily) and series.gauges:
            family.add_metric(values, max(series.gauges.values())[1])
    return list(families.values())


CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""Content type of :meth:`MetricsExporter.render`'s output."""

_exporters: weakref.WeakKeyDictionary[Client, MetricsExporter] = weakref.WeakKeyDictionary()


async def render(app: Client) -> bytes:
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


# -- the worker service: prometheus-client's WSGI server in a thread ---------------------

_MAX_HEAD = 16 * 1024  # bytes of request headers accepted (a scrape sends a few hundred)
_POLL = 0.2  # seconds the server thread takes to notice a shutdown
_SCRAPE_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    RedisError,
    RedisFailed,
    LifecycleError,
)


class _ResponseHandler(ServerHandler):
    """wsgiref's response writer, speaking HTTP/1.1 and closing after each response."""

    http_version = "1.1"
    headers: Headers
    request_handler: WSGIRequestHandler

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        self.headers["Connection"] = "close"  # one request per connection


class _Server(ThreadingWSGIServer):
    """prometheus-client's threaded WSGI server, bound to ``host``'s first address family
    (IPv4 or IPv6), with a per-connection socket timeout and quiet error reporting."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        self.address_family, _, _, _, address = infos[0]
        self.request_timeout = timeout
        super().__init__((str(address[0]), port), _RequestHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        # a client that went away or was too slow: nothing to answer, nothing to report
        logger.debug("metrics server: request from %s failed", client_address, exc_info=True)


class _RequestHandler(WSGIRequestHandler):
    """wsgiref's request handler (http.server parses the request), stricter about what it
    accepts: a full HTTP/1.x request line, at most :data:`_MAX_HEAD` bytes of headers."""

    protocol_version = "HTTP/1.1"  # status line of the errors http.server answers itself
    default_request_version = "HTTP/1.1"  # so a malformed request line gets a status line
    error_content_type = "text/plain; charset=utf-8"  # like every other answer, not HTML
    error_message_format = "%(code)d: %(message)s\n"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)  # each read and write

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if len(self.requestline.split()) != 3:  # "GET /metrics": HTTP/0.9, not served
            self.send_error(HTTPStatus.BAD_REQUEST, "malformed request line")
            return False
        if sum(len(k) + len(v) for k, v in self.headers.items()) > _MAX_HEAD:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
            return False
        return True

    def handle(self) -> None:
        # wsgiref's own handle(), with the HTTP/1.1 response writer
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.parse_request():
            return
        app = self.server.get_app()
        assert app is not None
        writer = cast("IO[bytes]", self.wfile)
        handler = _ResponseHandler(
            self.rfile, writer, self.get_stderr(), self.get_environ(), multithread=False
        )
        handler.request_handler = self
        handler.run(app)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics server: %s", format % args)


def _stop(server: _Server, thread: threading.Thread) -> None:
    """Stop accepting connections; requests under way finish in their own threads."""
    server.shutdown()
    thread.join()


class MetricsServer:
    """A worker service serving ``GET /metrics`` (Prometheus text) over HTTP.

    prometheus-client's threaded WSGI server runs in a thread; each scrape is rendered on
    the worker's event loop, so it reads Redis through the worker's app. Every path but
    ``/metrics`` answers 404, methods other than GET and HEAD 405, malformed requests 400,
    and a scrape while Redis is unreachable (or slower than ``timeout``) 503. One request
    per connection. After start, :attr:`port` is the port really bound (useful with
    ``port=0``). The server stops, and its port closes, when the worker stops.

    :param port: TCP port; 0 picks a free one.
    :param host: address to bind; loopback by default, ``0.0.0.0`` for every IPv4
        interface, ``::`` for IPv6. A name binds the first address it resolves to.
    :param exporter: the exporter to serve; by default one over the worker's app and queues.
    :param timeout: seconds a client has for each read and write, and a scrape for its
        rendering.
    :raises ConfigurationError: at worker start, when the address cannot be bound.

    Example::

        async with app, app.worker(services=[MetricsServer(9464)]) as worker: ...
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
        self._serving = False

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        exporter = self.exporter or MetricsExporter(ctx.client, queues=ctx.queues)
        self.exporter = exporter
        try:  # in a thread: binding may resolve names
            server = await anyio.to_thread.run_sync(_Server, self.host, self.port, self.timeout)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        try:
            # scrapes run as tasks of this portal, so stopping the service cancels them
            async with BlockingPortal() as portal:
                server.set_app(partial(self._answer, portal, exporter))
                thread = threading.Thread(
                    target=server.serve_forever, args=(_POLL,), name=self.name, daemon=True
                )
                thread.start()
                self._serving = True
                try:
                    self.port = server.server_port
                    logger.info(
                        "serving Prometheus metrics at http://%s:%d/metrics", self.host, self.port
                    )
                    task_status.started()
                    await anyio.sleep_forever()
                finally:
                    self._serving = False
                    with anyio.CancelScope(shield=True):  # returns within _POLL seconds
                        await anyio.to_thread.run_sync(_stop, server, thread)
        finally:
            server.server_close()

    async def _render(self, exporter: MetricsExporter) -> bytes:
        with anyio.fail_after(self.timeout):
            return await exporter.render()

    def _answer(
        self,
        portal: BlockingPortal,
        exporter: MetricsExporter,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> list[bytes]:
        """The WSGI application; runs in a server thread."""
        method = environ["REQUEST_METHOD"]
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if environ["PATH_INFO"] != "/metrics":
            status, body = "404 Not Found", b"not found; metrics are at /metrics\n"
        elif method not in ("GET", "HEAD"):
            status, body = "405 Method Not Allowed", b"use GET\n"
            headers.append(("Allow", "GET, HEAD"))
        else:
            status, body = self._scrape(portal, exporter)
            if status.startswith("200"):
                headers = [("Content-Type", CONTENT_TYPE)]
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [] if method == "HEAD" else [body]

    def _scrape(self, portal: BlockingPortal, exporter: MetricsExporter) -> tuple[str, bytes]:
        try:
            return "200 OK", portal.call(self._render, exporter)
        except TimeoutError:  # before _SCRAPE_ERRORS: it is an OSError
            logger.warning("metrics scrape failed: no answer within %gs", self.timeout)
            return "503 Service Unavailable", b"scrape timed out\n"
        except _SCRAPE_ERRORS as exc:
            logger.warning("metrics scrape failed: Redis unavailable (%s)", exc)
            return "503 Service Unavailable", f"redis unavailable: {exc}\n".encode()
        except Exception:
            if not self._serving:  # the worker stopped during the scrape
                return "503 Service Unavailable", b"the worker is stopping\n"
            logger.exception("metrics scrape failed")
            return "500 Internal Server Error", b"internal error; see the worker's log\n"
