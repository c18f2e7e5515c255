"""Custom metrics: counters, gauges and histograms an app declares for what it must watch
itself (an AI service's latency, an API's remaining quota, a gateway's errors).

Declaring is synchronous and works before the app is open (at module level). Recording
(``inc``, ``set``, ``observe``) is synchronous and in memory: values are added to this
process's aggregates, and a flush writes them to Redis in one script call: every
``flush_interval`` in a worker (:class:`CustomMetricsFlusher`) or the FastAPI lifespan,
on ``await app.metrics.flush()``, and when the app closes.

Storage, beside the job metrics: one hash per resolution and time bucket,
``taskflow:app:<app>:custom:<width>s:<start ms>``, fields
``<metric>\\x1f<label values as a JSON list>\\x1f<part>``. Parts: a counter's sum ``c``; a
histogram's ``:<bucket index>`` counts, ``.s`` sum, ``.max`` and ``.min`` (as the job
metrics); a gauge's ``g:<process>``, ``"<time ms> <value>"``, the latest kept. A live
process writes each of its gauges into every new bucket, so a gauge stays visible while
the process that set it lives. Declarations go to the hash ``custom:meta`` so any process
can read and expose a metric it did not declare.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Self

import anyio
import orjson
from anyio.abc import TaskStatus

from ..connection import CONNECTION_ERRORS
from .clock import metrics_ms
from .histogram import Histogram

if TYPE_CHECKING:
    from .._client import Client
    from .._worker.services import ServiceContext
    from ..config import MetricsSettings

__all__ = (
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_SERIES",
    "CounterMetric",
    "CustomMetrics",
    "CustomMetricsFlusher",
    "GaugeMetric",
    "HistogramMetric",
    "MetricKind",
    "MetricSpec",
    "format_selector",
    "parse_selector",
    "registry_of",
)

logger = logging.getLogger(__name__)

SEP: Final = "\x1f"
DEFAULT_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
"""prometheus-client's default ``le`` bounds, for histograms that name none."""
DEFAULT_MAX_SERIES: Final = 1000
"""Label combinations one metric may have in one process; more are dropped, with a warning."""
RESERVED_PREFIX: Final = "taskflow_"
_NAME: Final = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MAX_LABEL_VALUE: Final = 200
_MAX_PENDING: Final = 50_000  # aggregates kept while Redis is unreachable


class MetricKind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A custom metric's declaration: what it is, its help text, labels and ``le`` bounds."""

    name: str
    kind: MetricKind
    help: str
    labelnames: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    max_series: int = DEFAULT_MAX_SERIES

    def describe(self) -> str:
        return f"{self.kind.value} {self.name}({', '.join(self.labelnames)})"

    def to_json(self) -> bytes:
        data: dict[str, object] = {
            "kind": self.kind.value,
            "help": self.help,
            "labels": list(self.labelnames),
        }
        if self.buckets:
            data["buckets"] = list(self.buckets)
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, name: str, raw: bytes | str) -> MetricSpec:
        data = orjson.loads(raw)
        return cls(
            name,
            MetricKind(data["kind"]),
            str(data.get("help", "")),
            tuple(data.get("labels", ())),
            tuple(float(b) for b in data.get("buckets", ())),
        )


def check_name(name: object, *, reserved_ok: bool = False) -> str:
    """``name`` if it is a valid Prometheus metric name not reserved by taskflow."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"metric name {name!r} is not valid: use letters, digits, '_' and ':', "
            "not starting with a digit (Prometheus's rule), e.g. 'gemini_calls_total'"
        )
    if name.startswith(RESERVED_PREFIX) and not reserved_ok:
        raise ValueError(
            f"metric name {name!r} is reserved: names starting with {RESERVED_PREFIX!r} "
            "are taskflow's own; pick another prefix"
        )
    return name


_SELECTOR: Final = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$", re.S)
_MATCHER: Final = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)', re.S)
_UNESCAPE: Final = {"\\": "\\", '"': '"', "n": "\n"}


def parse_selector(text: str) -> tuple[str, dict[str, str]]:
    """``'gemini_calls_total{model="flash"}'`` -> ``("gemini_calls_total", {"model":
    "flash"})``: a metric name and label matchers in PromQL's spelling (``=`` only; ``\\``,
    ``\\"`` and ``\\n`` escapes in values).

    :raises ValueError: naming the text and the expected form.
    """
    form = 'use name or name{label="value", ...}'
    match = _SELECTOR.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a metric selector: {form}")
    name, body = match[1], match[2] or ""
    labels: dict[str, str] = {}
    position = 0
    while body[position:].strip():
        item = _MATCHER.match(body, position)
        if item is None:
            raise ValueError(f"{text!r}: cannot read the labels at {body[position:]!r}; {form}")
        value = re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m[1], m[0]), item[2])
        if item[1] in labels:
            raise ValueError(f"{text!r}: label {item[1]!r} is given twice")
        labels[item[1]] = value
        position = item.end()
        if not item[3] and body[position:].strip():
            raise ValueError(f"{text!r}: expected ',' between labels; {form}")
    return name, labels


def format_selector(name: str, labels: dict[str, str]) -> str:
    """The inverse of :func:`parse_selector`."""
    if not labels:
        return name

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return name + "{" + ", ".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def check_labelnames(labelnames: object, kind: MetricKind) -> tuple[str, ...]:
    """The label names as a tuple, each valid for Prometheus and the kind."""
    if isinstance(labelnames, str) or not isinstance(labelnames, Sequence):
        raise ValueError(
            f"labelnames={labelnames!r} is not valid: give a tuple of names, e.g. ('model',)"
        )
    names = tuple(labelnames)
    for label in names:
        if not isinstance(label, str) or not _LABEL.match(label) or label.startswith("__"):
            raise ValueError(
                f"label name {label!r} is not valid: use letters, digits and '_', not "
                "starting with a digit or '__'"
            )
        if kind is MetricKind.HISTOGRAM and label == "le":
            raise ValueError("label name 'le' is not valid for a histogram: Prometheus uses it")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"label names {duplicates} appear more than once in {names!r}")
    return names


def label_values(spec: MetricSpec, args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    """The label values of ``labels(*args, **kwargs)``, as stored: a JSON list in the
    order of ``spec.labelnames``."""
    if args and kwargs:
        raise ValueError(f"{spec.name}.labels() takes label values by position or by name")
    valid = ", ".join(spec.labelnames) or "none"
    if args:
        if len(args) != len(spec.labelnames):
            raise ValueError(f"{spec.name}.labels() got {len(args)} values for labels ({valid})")
        values = list(args)
    else:
        missing = [n for n in spec.labelnames if n not in kwargs]
        extra = sorted(set(kwargs) - set(spec.labelnames))
        if missing or extra:
            raise ValueError(
                f"{spec.name}.labels(): "
                + "; ".join(
                    part
                    for part in (
                        f"missing {missing}" if missing else "",
                        f"unknown {extra}" if extra else "",
                    )
                    if part
                )
                + f"; its labels are ({valid})"
            )
        values = [kwargs[n] for n in spec.labelnames]
    out = []
    for name, value in zip(spec.labelnames, values, strict=True):
        text = value if isinstance(value, str) else str(value)
        if len(text) > _MAX_LABEL_VALUE:
            raise ValueError(
                f"{spec.name}: value of label {name!r} is {len(text)} characters; "
                f"at most {_MAX_LABEL_VALUE}"
            )
        out.append(text)
    return orjson.dumps(out).decode()


def _amount(value: object, what: str, *, non_negative: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or (non_negative and number < 0):
        bound = "finite and >= 0" if non_negative else "finite"
        raise ValueError(f"{what} must be {bound}, got {value!r}")
    return number


class _Metric:
    """What the three kinds share: labels, and where values go."""

    __slots__ = ("_children", "_dropped", "_labels", "_registry", "spec")

    def __init__(self, registry: CustomMetrics, spec: MetricSpec, labels: str | None) -> None:
        self._registry = registry
        self.spec = spec
        self._labels = labels
        self._dropped = False
        self._children: dict[str, Self] = {}

    def __repr__(self) -> str:
        where = f" {self._labels}" if self._labels else ""
        return f"<{type(self).__name__} {self.spec.name}{where}>"

    def labels(self, *values: object, **named: object) -> Self:
        """The series with these label values (by position or by name), as
        prometheus-client's ``labels()``.

        :raises ValueError: a label missing or unknown, or a value longer than 200 characters.
        """
        if self._labels is not None:
            raise ValueError(f"{self.spec.name}: labels() already applied ({self._labels})")
        key = label_values(self.spec, values, named)
        child = self._children.get(key)
        if child is None:
            child = type(self)(self._registry, self.spec, key)
            child._dropped = not self._registry.admit(self.spec, key)
            if not child._dropped:
                self._children[key] = child
        return child

    def _series(self) -> str | None:
        """The stored label values; None for a series dropped by the cardinality cap."""
        if self._labels is None:
            if self.spec.labelnames:
                example = ", ".join(f"{n}=..." for n in self.spec.labelnames)
                raise ValueError(
                    f"metric {self.spec.name!r} has labels ({', '.join(self.spec.labelnames)}):"
                    f" record on .labels({example})"
                )
            return "[]"
        return None if self._dropped else self._labels

    async def read(self, since: Any = "1h", until: Any = None, labels: Any = None) -> Any:
        """This metric's value over the window, as ``app.metrics.read`` (this series' labels
        unless ``labels`` says otherwise)."""
        from .custom_read import read

        app = self._registry.app
        wanted = dict(labels or {})
        if self._labels is not None and labels is None:
            wanted = dict(zip(self.spec.labelnames, orjson.loads(self._labels), strict=True))
        return await read(app, self.spec.name, since=since, until=until, labels=wanted)


class CounterMetric(_Metric):
    """A value that only goes up: ``calls.labels(model="flash").inc()``. Reads back as the
    total over a window (summed over processes and unspecified labels)."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0). No I/O: written by the next flush."""
        number = _amount(amount, f"{self.spec.name}.inc() amount", non_negative=True)
        series = self._series()
        if series is not None:
            self._registry.add(self.spec, series, number)


class GaugeMetric(_Metric):
    """A value that goes up and down, per process: ``quota.set(1200)``. Reads back as the
    latest value set, across processes."""

    __slots__ = ()

    def set(self, value: float) -> None:
        """Set this process's value. No I/O: written by the next flush."""
        number = _amount(value, f"{self.spec.name}.set() value", non_negative=False)
        series = self._series()
        if series is not None:
            self._registry.set(self.spec, series, number)

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` to this process's value (0 before any set)."""
        number = _amount(amount, f"{self.spec.name}.inc() amount", non_negative=False)
        series = self._series()
        if series is not None:
            self._registry.set(self.spec, series, number, relative=True)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` from this process's value."""
        self.inc(-_amount(amount, f"{self.spec.name}.dec() amount", non_negative=False))


class HistogramMetric(_Metric):
    """A distribution: ``latency.labels(model="flash").observe(0.42)``. Reads back as count,
    sum, mean and percentiles within 2 % (merged over processes and labels)."""

    __slots__ = ()

    def observe(self, value: float) -> None:
        """Count one value (>= 0). No I/O: written by the next flush."""
        number = _amount(value, f"{self.spec.name}.observe() value", non_negative=True)
        series = self._series()
        if series is not None:
            self._registry.observe(self.spec, series, number)

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe the seconds the ``with`` block takes (also when it raises)."""
        self._series()  # a missing labels() fails before the block runs
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started)


_KINDS: Final = {
    MetricKind.COUNTER: CounterMetric,
    MetricKind.GAUGE: GaugeMetric,
    MetricKind.HISTOGRAM: HistogramMetric,
}

_Cell = tuple[int, int, str, str]  # level, bucket start ms, metric, label values


@dataclass(slots=True)
class _Batch:
    """What one flush takes from the aggregates (given back if Redis is unreachable)."""

    counts: dict[_Cell, float] = field(default_factory=dict)
    histograms: dict[_Cell, Histogram] = field(default_factory=dict)
    gauges: dict[_Cell, tuple[int, float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.counts) + len(self.histograms) + len(self.gauges)


class CustomMetrics:
    """One app's custom metrics in this process: declarations and unwritten values.

    Get it with :func:`registry_of` (``app.metrics`` does); recording is thread-safe.
    """

    def __init__(self, app: Client) -> None:
        self._app = weakref.ref(app)
        settings: MetricsSettings = app.settings.metrics
        self._widths = [int(r.bucket.total_seconds() * 1000) for r in settings.resolutions]
        self._ttls = [
            int((r.retention + r.bucket).total_seconds() * 1000) for r in settings.resolutions
        ]
        self.flush_interval = settings.flush_interval.total_seconds()
        self._settings = settings
        self.process = f"{socket.gethostname()}-{os.getpid()}"
        self.specs: dict[str, MetricSpec] = {}
        self._metrics: dict[str, _Metric] = {}
        self._series: dict[str, set[str]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._pending = _Batch()
        self._current: dict[tuple[str, str], tuple[int, float]] = {}  # gauges: (ms, value)
        self._carried: dict[tuple[int, str, str], int] = {}  # gauge's last bucket per level

    @property
    def app(self) -> Client:
        app = self._app()
        if app is None:  # pragma: no cover - the app holds its registry
            raise RuntimeError("the app of these metrics is gone")
        return app

    # -- declaring ------------------------------------------------------------------------

    def declare(
        self,
        kind: MetricKind,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] | None = None,
        max_series: int = DEFAULT_MAX_SERIES,
        reserved_ok: bool = False,
    ) -> Any:
        """Declare (or get again) a metric; the same name must keep its kind and labels."""
        check_name(name, reserved_ok=reserved_ok)
        if not isinstance(documentation, str):
            raise ValueError(f"{name}: help text must be a string, got {documentation!r}")
        names = check_labelnames(labelnames, kind)
        if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
            raise ValueError(f"{name}: max_series={max_series!r} must be an integer >= 1")
        bounds: tuple[float, ...] = ()
        if kind is MetricKind.HISTOGRAM:
            bounds = tuple(sorted({float(b) for b in (buckets or DEFAULT_BUCKETS)} - {math.inf}))
            if not bounds or any(not math.isfinite(b) for b in bounds):
                raise ValueError(f"{name}: buckets={buckets!r} must be finite upper bounds")
        elif buckets is not None:
            raise ValueError(f"{name}: only histograms take buckets=")
        spec = MetricSpec(name, kind, documentation, names, bounds, max_series)
        known = self.specs.get(name)
        if known is not None:
            if (known.kind, known.labelnames) != (spec.kind, spec.labelnames):
                raise ValueError(
                    f"metric {name!r} is already declared as {known.describe()}; "
                    f"cannot declare it again as {spec.describe()}"
                )
            return self._metrics[name]
        self.specs[name] = spec
        metric = self._metrics[name] = _KINDS[kind](self, spec, None)
        return metric

    def admit(self, spec: MetricSpec, labels: str) -> bool:
        """Whether a series may be recorded: its metric is under its ``max_series``."""
        seen = self._series.setdefault(spec.name, set())
        if labels in seen:
            return True
        if len(seen) >= spec.max_series:
            if spec.name not in self._warned:
                self._warned.add(spec.name)
                logger.warning(
                    "custom metric %s has %d label combinations in this process, its "
                    "max_series: new ones (such as %s) are dropped; a label that takes "
                    "unbounded values (ids, URLs) does not belong on a metric",
                    spec.name,
                    len(seen),
                    labels,
                )
            return False
        seen.add(labels)
        return True

    # -- recording ------------------------------------------------------------------------

    def _cells(self, name: str, labels: str, now: int) -> Iterator[_Cell]:
        for level, width in enumerate(self._widths):
            yield (level, now - now % width, name, labels)

    def _room(self, table: dict[_Cell, Any], cell: _Cell) -> bool:
        if cell in table or len(self._pending) < _MAX_PENDING:
            return True
        if "" not in self._warned:
            self._warned.add("")
            logger.warning("custom metrics: %d unwritten aggregates; dropping more", _MAX_PENDING)
        return False

    def add(self, spec: MetricSpec, labels: str, amount: float) -> None:
        counts = self._pending.counts
        with self._lock:
            for cell in self._cells(spec.name, labels, metrics_ms(self._settings)):
                if self._room(counts, cell):
                    counts[cell] = counts.get(cell, 0.0) + amount

    def observe(self, spec: MetricSpec, labels: str, value: float) -> None:
        histograms = self._pending.histograms
        with self._lock:
            for cell in self._cells(spec.name, labels, metrics_ms(self._settings)):
                h = histograms.get(cell)
                if h is None:
                    if not self._room(histograms, cell):
                        continue
                    h = histograms[cell] = Histogram()
                h.add(value)

    def set(self, spec: MetricSpec, labels: str, value: float, *, relative: bool = False) -> None:
        now = metrics_ms(self._settings)
        with self._lock:
            if relative:
                value += self._current.get((spec.name, labels), (0, 0.0))[1]
            self._current[(spec.name, labels)] = (now, value)
            for cell in self._cells(spec.name, labels, now):
                if self._room(self._pending.gauges, cell):
                    self._pending.gauges[cell] = (now, value)
                    self._carried[cell[0], spec.name, labels] = cell[1]

    # -- flushing -------------------------------------------------------------------------

    def _take(self) -> _Batch:
        """The unwritten values, plus each live gauge in buckets it was not written to."""
        now = metrics_ms(self._settings)
        with self._lock:
            batch, self._pending = self._pending, _Batch()
            for (name, labels), value in self._current.items():
                for cell in self._cells(name, labels, now):
                    if self._carried.get((cell[0], name, labels)) != cell[1]:
                        self._carried[cell[0], name, labels] = cell[1]
                        batch.gauges.setdefault(cell, value)
        return batch

    def _give_back(self, batch: _Batch) -> None:
        with self._lock:
            pending = self._pending
            for cell, amount in batch.counts.items():
                pending.counts[cell] = pending.counts.get(cell, 0.0) + amount
            for cell, h in batch.histograms.items():
                pending.histograms.setdefault(cell, Histogram()).update(h)
            for cell, value in batch.gauges.items():
                if cell not in pending.gauges or pending.gauges[cell][0] < value[0]:
                    pending.gauges[cell] = value

    def _ops(self, batch: _Batch) -> dict[str, tuple[int, list[Any]]]:
        keys = self.app.keys
        by_key: dict[str, tuple[int, list[Any]]] = {}
        names: set[str] = set()

        def ops(cell: _Cell) -> list[Any]:
            level, start, name, _ = cell
            names.add(name)
            key = keys.custom_bucket(self._widths[level] // 1000, start)
            return by_key.setdefault(key, (self._ttls[level], []))[1]

        for cell, amount in batch.counts.items():
            ops(cell).extend(("f", f"{cell[2]}{SEP}{cell[3]}{SEP}c", repr(amount)))
        for cell, h in batch.histograms.items():
            prefix = f"{cell[2]}{SEP}{cell[3]}{SEP}"
            out = ops(cell)
            for index, n in h.buckets.items():
                out.extend(("i", f"{prefix}:{index}", n))
            out.extend(("f", prefix + ".s", repr(h.total), "x", prefix + ".max", repr(h.maximum)))
            out.extend(("m", prefix + ".min", repr(h.minimum)))
        for cell, (at, value) in batch.gauges.items():
            field_name = f"{cell[2]}{SEP}{cell[3]}{SEP}g:{self.process}"
            ops(cell).extend(("l", field_name, f"{at} {value!r}"))
        meta: list[Any] = []
        for name in sorted(names):
            spec = self.specs.get(name)
            if spec is not None:
                meta.extend(("s", name, spec.to_json()))
        if meta:
            by_key[keys.custom_meta] = (max(self._ttls), meta)
        return by_key

    async def flush(self) -> int:
        """Write every value recorded so far to Redis, in one script call; returns how many
        aggregates were written. Values stay pending when Redis cannot be reached.

        :raises redis.exceptions.RedisError: or a connection error, when Redis fails.
        """
        batch = self._take()
        if not len(batch):
            return 0
        try:
            await self.app.scripts.metrics_flush(self._ops(batch))
        except CONNECTION_ERRORS:
            self._give_back(batch)
            raise
        return len(batch)


_registries: weakref.WeakKeyDictionary[Client, CustomMetrics] = weakref.WeakKeyDictionary()
_registries_lock = threading.Lock()


def registry_of(app: Client) -> CustomMetrics:
    """The custom metrics of ``app`` in this process (made on first use)."""
    with _registries_lock:
        registry = _registries.get(app)
        if registry is None:
            registry = _registries[app] = CustomMetrics(app)
        return registry


class CustomMetricsFlusher:
    """A service (in a worker, or the FastAPI lifespan's task group): writes the app's
    custom metrics every ``flush_interval``, and once more when it stops."""

    name = "custom-metrics"

    def __init__(self, registry: CustomMetrics) -> None:
        self.registry = registry

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            while True:
                await anyio.sleep(self.registry.flush_interval)
                await ctx.health.call("writing custom metrics", self.registry.flush())
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await ctx.health.call("writing custom metrics", self.registry.flush())
