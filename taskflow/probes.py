"""Service probes: health checks of the external services a platform depends on (an AI
API, a payment gateway), declared with ``@app.probe(every=...)`` and run by the workers.

Every worker runs :class:`ProbeRunner`, but each interval of each probe runs once in the
cluster: the worker that wins ``SET <app>:probe:<name>:turn NX PX <every>`` runs it; the
others read how long the claim has left and try again when it lapses. A probe is up when
its coroutine returns (None, True, a detail string or a :class:`Check`), down when it
returns False, raises or overruns its ``timeout``. Each result is kept in Redis: the latest
in the hash ``probes`` with when its status last changed, the last :data:`HISTORY` in a
list per probe, both expiring (:data:`RETENTION` after the last write). Latency is also the
custom histogram ``taskflow_probe_latency_seconds{probe}`` and the status the gauge
``taskflow_probe_up{probe}`` (1 or 0), so both reach Prometheus and alert rules.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Final

import anyio
import orjson
from anyio.abc import TaskGroup, TaskStatus

from ._clock import ms_to_datetime, now_ms
from ._options import duration_option
from ._registry import parse_json
from .errors import ConfigurationError, redis_errors
from .metrics.custom import GaugeMetric, HistogramMetric, MetricKind, registry_of

if TYPE_CHECKING:
    from ._client import Client
    from ._worker.services import ServiceContext

__all__ = ("HISTORY", "Check", "Probe", "ProbeResult", "ProbeRunner", "ProbeStatus", "Probes")

logger = logging.getLogger("taskflow.probes")

HISTORY: Final = 100
"""Results kept per probe, newest first."""
RETENTION: Final = timedelta(days=1)
"""How long a probe's results are kept after its last run (at least ``HISTORY`` intervals)."""
_NAME: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_MAX_TEXT: Final = 300
_SECRETS: Final = (
    (re.compile(r"(\w+://)[^/\s@]+@"), r"\1***@"),  # credentials in URLs
    (re.compile(r"(https?://[^\s?#]+)\?\S*"), r"\1?***"),  # query strings (tokens, keys)
)

LATENCY_METRIC: Final = "taskflow_probe_latency_seconds"
UP_METRIC: Final = "taskflow_probe_up"


@dataclass(frozen=True, slots=True)
class Check:
    """What a probe may return to say more than up: ``Check(detail="3 models")``, or
    ``Check(up=False, detail="quota exhausted")``, or a ``latency`` (seconds) it measured
    itself (instead of the call's wall time)."""

    up: bool = True
    detail: str = ""
    latency: float | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """A declared probe: ``fn`` is checked every ``every``, within ``timeout``."""

    name: str
    fn: Callable[[], Awaitable[object]]
    every: timedelta
    timeout: timedelta


class ProbeState(StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"  #: never run (or its results expired)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One run of a probe: ``error`` (down) and ``detail`` are short, secrets masked."""

    probe: str
    up: bool
    at: datetime
    latency_ms: float
    error: str = ""
    detail: str = ""
    worker: str = ""

    @classmethod
    def from_json(cls, raw: bytes | str) -> ProbeResult:
        data = orjson.loads(raw)
        return cls(
            probe=data["probe"],
            up=bool(data["up"]),
            at=ms_to_datetime(int(data["at"])),
            latency_ms=float(data["latency_ms"]),
            error=data.get("error", ""),
            detail=data.get("detail", ""),
            worker=data.get("worker", ""),
        )


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    """A probe's state: its latest result, since when it has been up or down, how many
    runs in a row failed, and ``stale`` when no worker has run it for over two intervals."""

    name: str
    state: ProbeState
    since: datetime | None
    failures: int
    last: ProbeResult | None
    every: timedelta | None
    stale: bool


def _clean(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


class Probes:
    """The app's probes: declared in code, run by workers, read from any process."""

    def __init__(self, app: Client) -> None:
        self.app = app
        self._probes: dict[str, Probe] = {}

    @property
    def declared(self) -> list[Probe]:
        return list(self._probes.values())

    def declare(
        self,
        fn: Callable[[], Awaitable[object]],
        *,
        every: timedelta | float | str,
        timeout: timedelta | float | str | None = None,
        name: str | None = None,
    ) -> Probe:
        """Add a probe (see :meth:`taskflow.TaskFlow.probe`)."""
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(f"@app.probe needs an `async def` function, got {fn!r}")
        if inspect.signature(fn).parameters:
            params = ", ".join(inspect.signature(fn).parameters)
            raise ConfigurationError(
                f"probe {fn.__name__!r} takes parameters ({params}); a probe is called with none"
            )
        probe_name = fn.__name__ if name is None else name
        if not isinstance(probe_name, str) or not _NAME.match(probe_name):
            raise ConfigurationError(
                f"probe name {probe_name!r} is not valid: use 1 to 100 letters, digits, "
                "'_', '.' or '-'"
            )
        if probe_name in self._probes:
            raise ConfigurationError(f"a probe named {probe_name!r} is already declared")
        interval = duration_option("every", every, minimum=0.05)
        limit = interval if timeout is None else duration_option("timeout", timeout, minimum=1e-3)
        if limit > interval:
            raise ConfigurationError(
                f"probe {probe_name!r}: timeout={timeout!r} is longer than every={every!r}; "
                "a run must end before the next interval starts"
            )
        probe = Probe(probe_name, fn, interval, limit)
        self._probes[probe_name] = probe
        _declare_metrics(self.app)
        return probe

    @redis_errors
    async def status(self) -> list[ProbeStatus]:
        """Every probe declared here or with results in Redis, sorted by name."""
        async with self.app.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.app.keys.probes)
            [stored] = await pipe.execute()
        # a record that is not a JSON object (not written by taskflow) reads as no result
        records = {k.decode(): r for k, v in stored.items() if (r := parse_json(v)) is not None}
        now = now_ms()
        out = []
        for name in sorted(set(records) | set(self._probes)):
            probe = self._probes.get(name)
            record = records.get(name)
            every = probe.every if probe else None
            if record is None:
                out.append(ProbeStatus(name, ProbeState.UNKNOWN, None, 0, None, every, False))
                continue
            every = every or timedelta(milliseconds=int(record.get("every_ms", 0)))
            last = ProbeResult.from_json(stored[name.encode()])
            late = now - int(record["at"]) > 2 * every.total_seconds() * 1000 + 5000
            out.append(
                ProbeStatus(
                    name,
                    ProbeState.UP if last.up else ProbeState.DOWN,
                    ms_to_datetime(int(record["since"])),
                    int(record.get("failures", 0)),
                    last,
                    every,
                    late,
                )
            )
        return out

    @redis_errors
    async def history(self, name: str, limit: int = HISTORY) -> list[ProbeResult]:
        """The probe's latest results, newest first (at most :data:`HISTORY`)."""
        async with self.app.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(self.app.keys.probe_history(name), 0, limit - 1)
            [raw] = await pipe.execute()
        return [ProbeResult.from_json(r) for r in raw]

    async def run(self, probe: Probe, worker: str = "") -> ProbeResult:
        """Run ``probe`` once here and record its result (what the runner does each turn)."""
        result = await _check(probe, worker)
        await self._record(probe, result)
        return result

    async def _record(self, probe: Probe, result: ProbeResult) -> None:
        app = self.app
        at = int(result.at.timestamp() * 1000)
        async with app.redis.pipeline(transaction=False) as pipe:
            pipe.hget(app.keys.probes, probe.name)
            [previous] = await pipe.execute()
        before = parse_json(previous)
        changed = before is None or bool(before.get("up")) != result.up
        record = {
            "probe": probe.name,
            "up": result.up,
            "at": at,
            "latency_ms": result.latency_ms,
            "error": result.error,
            "detail": result.detail,
            "worker": result.worker,
            "every_ms": int(probe.every.total_seconds() * 1000),
            "since": at if changed or before is None else int(before.get("since") or at),
            "failures": 0 if result.up else int((before or {}).get("failures") or 0) + 1,
        }
        encoded = orjson.dumps(record).decode()
        ttl = int(max(RETENTION, probe.every * HISTORY).total_seconds() * 1000)
        history = app.keys.probe_history(probe.name)
        async with app.redis.pipeline(transaction=True) as pipe:
            pipe.hset(app.keys.probes, probe.name, encoded)
            pipe.pexpire(app.keys.probes, ttl)
            pipe.lpush(history, encoded)
            pipe.ltrim(history, 0, HISTORY - 1)
            pipe.pexpire(history, ttl)
            await pipe.execute()
        up, latency = _declare_metrics(app)
        up.labels(probe=probe.name).set(1 if result.up else 0)
        latency.labels(probe=probe.name).observe(result.latency_ms / 1000)
        if changed and before is not None:
            if result.up:
                logger.info("probe %s is up again (%.0f ms)", probe.name, result.latency_ms)
            else:
                logger.warning("probe %s is down: %s", probe.name, result.error)
        elif before is None and not result.up:
            logger.warning("probe %s is down: %s", probe.name, result.error)


def _declare_metrics(app: Client) -> tuple[GaugeMetric, HistogramMetric]:
    """The probes' own metrics (declared again: the same ones)."""
    metrics = registry_of(app)
    up: GaugeMetric = metrics.declare(
        MetricKind.GAUGE,
        UP_METRIC,
        "Whether the probe's latest run found the service up (1) or down (0).",
        ("probe",),
        reserved_ok=True,
    )
    latency: HistogramMetric = metrics.declare(
        MetricKind.HISTOGRAM,
        LATENCY_METRIC,
        "Time a probe took, up or down.",
        ("probe",),
        reserved_ok=True,
    )
    return up, latency


async def _check(probe: Probe, worker: str) -> ProbeResult:
    """Call the probe within its timeout; any exception is a down result, never raised."""
    started = time.perf_counter()
    at = now_ms()
    up, error, detail, latency = True, "", "", None
    try:
        with anyio.fail_after(probe.timeout.total_seconds()):
            out = await probe.fn()
    except TimeoutError:
        up, error = False, f"timed out after {probe.timeout.total_seconds():g}s"
    except Exception as exc:  # the probe's failure is its result
        up, error = False, _clean(f"{type(exc).__name__}: {exc}")
    else:
        if out is False:
            up, error = False, "returned False"
        elif isinstance(out, str):
            detail = _clean(out)
        elif isinstance(out, Check):
            up, detail, latency = out.up, _clean(out.detail), out.latency
            error = "" if up else (detail or "reported down")
    seconds = time.perf_counter() - started if latency is None else latency
    latency_ms = round(seconds * 1000, 3)
    return ProbeResult(probe.name, up, ms_to_datetime(at), latency_ms, error, detail, worker)


class ProbeRunner:
    """A worker service: runs each of the app's probes once per interval, cluster-wide."""

    name = "probes"

    def __init__(self, probes: Probes) -> None:
        self.probes = probes
        self._next: dict[str, float] = {}
        self._running: set[str] = set()

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as runs:
            task_status.started()
            while True:
                wait = await self.step(ctx, runs)
                await anyio.sleep(wait)

    async def step(self, ctx: ServiceContext, runs: TaskGroup) -> float:
        """Claim the due probes' turns and start the ones won; seconds until the next."""
        now = time.monotonic()
        due = [p for p in self.probes.declared if self._next.get(p.name, -math.inf) <= now]
        if due:
            async with ctx.redis.pipeline(transaction=False) as pipe:
                for p in due:
                    turn = ctx.keys.probe_turn(p.name)
                    every_ms = max(1, int(p.every.total_seconds() * 1000))
                    pipe.set(turn, ctx.worker_id, nx=True, px=every_ms)
                    pipe.pttl(turn)
                replies = await ctx.health.call("claiming probe turns", pipe.execute())
            if replies is None:
                for p in due:
                    self._next[p.name] = now + min(1.0, p.every.total_seconds())
            else:
                ctx.health.redis_ok()
                for i, p in enumerate(due):
                    won, left_ms = replies[2 * i], replies[2 * i + 1]
                    if won and p.name not in self._running:
                        self._running.add(p.name)
                        runs.start_soon(self._run_one, ctx, p, name=f"probe {p.name}")
                        self._next[p.name] = now + p.every.total_seconds()
                    else:  # another worker's turn: try again when its claim lapses
                        self._next[p.name] = now + max(int(left_ms), 10) / 1000
        if not self._next:
            return 1.0
        return max(0.0, min(self._next.values()) - time.monotonic())

    async def _run_one(self, ctx: ServiceContext, probe: Probe) -> None:
        try:
            result = await _check(probe, ctx.worker_id)
            doing = f"recording probe {probe.name}"
            await ctx.health.call(doing, self.probes._record(probe, result))
        finally:
            self._running.discard(probe.name)
