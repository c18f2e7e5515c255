"""Per-job overhead of taskflow against raw arq: no-op jobs through ONE worker process.

Run from the repository root::

    python benchmarks/overhead.py [--jobs 5000] [--runs 3] [--redis-url URL | --private-redis]
        [--metrics on|off|both]

For each system and each run: enqueue ``--jobs`` no-op jobs on a fresh queue (timed, one
client, one job at a time), then start one worker process and wait until the queue is empty.

- taskflow: ``python -m taskflow --log-level WARNING worker benchmarks.overhead:app
  --queue <unique> --concurrency 100`` (served until drained, then SIGTERM), with job and
  system metrics on (taskflow's default) and/or off: ``--metrics both`` (the default) runs
  both in the same run, so their drain throughputs can be compared. The worker's app reads
  ``TASKFLOW_BENCH_METRICS`` (on/off) to build ``Settings(metrics=MetricsSettings(enabled=...))``.
- arq: ``python benchmarks/overhead.py --arq-worker <queue key>``: arq's ``Worker`` with
  ``burst=True, max_jobs=100, poll_delay=0.01``, default ``keep_result`` and signal handling,
  logging at WARNING, and taskflow's orjson ``job_serializer``/``job_deserializer``.

Drain throughput is ``jobs / (last job's finish time - first job's start time)``, both read
from the result records the workers write (``st``/``ft``, same meaning in both systems), so
process start-up and imports are excluded the same way for both. Redis commands per job
(INFO commandstats, including commands run inside Lua scripts, minus this script's own
polling) and Redis CPU per job (INFO cpu, user+sys) are deltas from just before the worker
starts to the moment the queue is empty. Worker CPU per job is the worker process's CPU time
between its first and last no-op body, measured inside the worker.

The metric bucket fields of the benchmark's unique queues and the benchmark workers' system
samples are deleted with the jobs. Timing figures belong here, never in tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make `benchmarks.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncio
import atexit
import os
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

import taskflow
from benchmarks import common
from benchmarks.common import median
from taskflow import connection
from taskflow.config import MetricsSettings, Settings
from taskflow.serde import arq_deserializer, arq_serializer

PROBE_ENV = "TASKFLOW_BENCH_PROBE"
METRICS_ENV = "TASKFLOW_BENCH_METRICS"  # on | off: the worker's MetricsSettings.enabled


# -- inside the worker processes ----------------------------------------------------------


class _Probe:
    """CPU and wall clock at the first and the latest no-op body, written out at exit."""

    __slots__ = ("calls", "first_cpu", "first_wall", "last_cpu", "last_wall")

    def __init__(self) -> None:
        self.calls = 0
        self.first_cpu = self.first_wall = self.last_cpu = self.last_wall = 0.0

    def touch(self) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        if not self.calls:
            self.first_cpu, self.first_wall = cpu, wall
        self.calls += 1
        self.last_cpu, self.last_wall = cpu, wall

    def dump(self) -> None:
        path = os.environ.get(PROBE_ENV)
        if path and self.calls:
            data = {
                "calls": self.calls,
                "cpu": self.last_cpu - self.first_cpu,
                "wall": self.last_wall - self.first_wall,
            }
            Path(path).write_bytes(orjson.dumps(data))


_PROBE = _Probe()
atexit.register(_PROBE.dump)


def build_app(redis_url: str | None = None) -> taskflow.TaskFlow:
    """The benchmark's app; metrics on unless ``TASKFLOW_BENCH_METRICS=off``."""
    metrics = os.environ.get(METRICS_ENV, "on")
    if metrics not in ("on", "off"):
        raise SystemExit(f"{METRICS_ENV} must be on or off, got {metrics!r}")
    settings = Settings(metrics=MetricsSettings(enabled=metrics == "on"))
    tf = taskflow.TaskFlow(redis_url=redis_url, settings=settings)

    @tf.task(name="noop")
    async def noop() -> None:
        _PROBE.touch()

    return tf


app = build_app()  # what `python -m taskflow worker benchmarks.overhead:app` serves


async def arq_noop(ctx: dict[str, Any]) -> None:
    _PROBE.touch()


def arq_worker(queue_key: str, url: str) -> None:
    from arq.worker import func

    common.run_arq_worker(
        [func(arq_noop, name="noop")], queue_key, url, burst=True, poll_delay=0.01
    )


# -- the driver ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    system: str
    jobs: int
    enqueue_rate: float  # jobs/s, one client, one job at a time
    drain_s: float  # first job start -> last job finish, from the result records
    wall_s: float  # worker spawn -> queue empty, start-up included
    worker_cpu_ms: float  # worker CPU per job between its first and last job body
    commands: Counter[str]  # Redis commands while draining, by name
    redis_cpu_s: float

    @property
    def rate(self) -> float:
        return self.jobs / self.drain_s

    @property
    def commands_per_job(self) -> float:
        return sum(self.commands.values()) / self.jobs

    @property
    def redis_cpu_us(self) -> float:
        return self.redis_cpu_s / self.jobs * 1e6


@dataclass(frozen=True)
class System:
    name: str
    queue_key: Callable[[str], str]
    enqueue: Callable[[str, str, int], Any]  # async (url, queue, n) -> (ids, seconds)
    argv: Callable[[str, str], list[str]]  # (url, queue) -> worker command line
    stops_itself: bool
    env: dict[str, str] = field(default_factory=dict)  # added to the worker's environment
    metrics: bool = False  # taskflow with metrics on: its metric keys are cleaned up too


async def _enqueue_taskflow(url: str, queue: str, n: int) -> tuple[list[str], float]:
    client = build_app(url)
    noop = client.get_task("noop")
    ids: list[str] = []
    async with client:
        start = time.perf_counter()
        for _ in range(n):
            handle = await noop.with_options(queue=queue).enqueue()
            ids.append(handle.job_id)
        elapsed = time.perf_counter() - start
    return ids, elapsed


async def _enqueue_arq(url: str, queue: str, n: int) -> tuple[list[str], float]:
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(
        RedisSettings.from_dsn(url),
        job_serializer=arq_serializer,
        job_deserializer=arq_deserializer,
        default_queue_name=common.arq_queue_key(queue),
    )
    ids: list[str] = []
    try:
        start = time.perf_counter()
        for _ in range(n):
            job = await pool.enqueue_job("noop")
            assert job is not None
            ids.append(job.job_id)
        elapsed = time.perf_counter() - start
    finally:
        await pool.aclose()
    return ids, elapsed


def _taskflow_argv(url: str, queue: str) -> list[str]:
    return common.taskflow_worker_argv("benchmarks.overhead:app", queue)


def _arq_argv(url: str, queue: str) -> list[str]:
    return common.arq_worker_argv(str(Path(__file__).resolve()), common.arq_queue_key(queue), url)


def _taskflow(metrics: str) -> System:
    return System(
        f"taskflow {taskflow.__version__} (metrics {metrics})",
        common.taskflow_queue_key,
        _enqueue_taskflow,
        _taskflow_argv,
        stops_itself=False,
        env={METRICS_ENV: metrics},
        metrics=metrics == "on",
    )


ARQ = System(
    f"arq {common.arq_version()}",
    common.arq_queue_key,
    _enqueue_arq,
    _arq_argv,
    stops_itself=True,
)
METRICS_ON, METRICS_OFF = _taskflow("on"), _taskflow("off")


def systems(metrics: str) -> list[System]:
    """The systems to run for ``--metrics`` (on, off or both), arq last."""
    chosen = {"on": [METRICS_ON], "off": [METRICS_OFF], "both": [METRICS_ON, METRICS_OFF]}
    return [*chosen[metrics], ARQ]


SYSTEMS = (METRICS_ON, ARQ)  # what this script compared before --metrics


async def _wait_drained(
    meter: common.Meter, key: str, proc: asyncio.subprocess.Process, timeout: float
) -> None:
    deadline = time.perf_counter() + timeout
    while (left := await meter.remaining(key)) > 0:
        if proc.returncode is not None:
            raise RuntimeError(f"worker exited with status {proc.returncode}, {left} jobs left")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"queue {key} not drained in {timeout:g}s: {left} jobs left")
        await asyncio.sleep(0.01)


async def _drain_window(redis: Redis, ids: list[str]) -> float:
    """Seconds from the first job's start to the last job's finish, from the results."""
    starts, finishes = await common.result_times(redis, ids)
    return (max(finishes) - min(starts)) / 1000


async def measure(system: System, url: str, jobs: int, redis: Redis) -> Run:
    queue = f"bench-overhead-{uuid.uuid4().hex[:12]}"
    key = system.queue_key(queue)
    meter = common.Meter(redis)
    ids, enqueue_s = await system.enqueue(url, queue, jobs)
    pid: int | None = None
    with tempfile.TemporaryDirectory(prefix="taskflow-bench-") as tmp:
        probe = Path(tmp) / "probe.json"
        try:
            calls0, cpu0 = await meter.snapshot()
            spawned = time.perf_counter()
            spawned_ms = int(time.time() * 1000)
            async with common.worker_process(
                system.argv(url, queue),
                common.worker_env(url, **{PROBE_ENV: str(probe)}, **system.env),
                signal_it=not system.stops_itself,
            ) as proc:
                pid = proc.pid
                await _wait_drained(meter, key, proc, timeout=120)
                drained = time.perf_counter()
                calls1, cpu1 = await meter.snapshot()
            drain_s = await _drain_window(redis, ids)
        finally:
            await common.cleanup(redis, ids, key)
            if system.metrics and pid is not None:
                await common.cleanup_metrics(redis, queue, spawned_ms, pid, "benchmarks.overhead")
        seen = orjson.loads(probe.read_bytes())
    return Run(
        system=system.name,
        jobs=jobs,
        enqueue_rate=jobs / enqueue_s,
        drain_s=drain_s,
        wall_s=drained - spawned,
        worker_cpu_ms=seen["cpu"] / max(seen["calls"] - 1, 1) * 1000,
        commands=meter.net(calls0, calls1),
        redis_cpu_s=cpu1 - cpu0,
    )


# -- report -------------------------------------------------------------------------------


def _print_table(
    by_system: dict[str, list[Run]], jobs: int, url: str, version: str, chosen: list[System]
) -> None:
    n_runs = len(next(iter(by_system.values())))
    print()
    print(
        f"{jobs:,} no-op jobs, one worker process, concurrency {common.CONCURRENCY}, "
        f"median of {n_runs} run(s); Redis {version} at {url}"
    )
    print()
    header = (
        "| system | enqueue (jobs/s) | drain (jobs/s) | worker CPU/job (ms) "
        "| Redis cmds/job | Redis CPU/job (us) | spawn->empty (s) |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in by_system.items():
        print(
            f"| {name} | {median(runs, 'enqueue_rate'):,.0f} | {median(runs, 'rate'):,.0f} "
            f"| {median(runs, 'worker_cpu_ms'):.3f} | {median(runs, 'commands_per_job'):.2f} "
            f"| {median(runs, 'redis_cpu_us'):.1f} | {median(runs, 'wall_s'):.2f} |"
        )
    arq = by_system[ARQ.name]
    print()
    for system in chosen[:-1]:
        tf = by_system[system.name]
        ratio = median(tf, "rate") / median(arq, "rate")
        enq = median(tf, "enqueue_rate") / median(arq, "enqueue_rate")
        print(f"drain throughput ratio {system.name}/arq: {ratio:.2f}   enqueue ratio: {enq:.2f}")
    if METRICS_ON.name in by_system and METRICS_OFF.name in by_system:
        on, off = by_system[METRICS_ON.name], by_system[METRICS_OFF.name]
        per_run = ", ".join(f"{a.rate / b.rate:.2f}" for a, b in zip(on, off, strict=True))
        cost = (median(on, "worker_cpu_ms") - median(off, "worker_cpu_ms")) * 1000
        print(
            f"drain throughput ratio metrics on/off: {median(on, 'rate') / median(off, 'rate'):.2f}"
            f" (per run: {per_run});  worker CPU/job on - off: {cost:+.1f} us"
        )
    print("per run, drain jobs/s:")
    for name, runs in by_system.items():
        print(f"  {name}: " + ", ".join(f"{r.rate:,.0f}" for r in runs))
    print("Redis commands per job, by command (all runs, incl. commands inside Lua scripts):")
    for name, runs in by_system.items():
        breakdown = common.command_breakdown((r.commands for r in runs), sum(r.jobs for r in runs))
        print(f"  {name}: {breakdown}")


async def bench(jobs: int, runs: int, url: str, metrics: str = "both") -> None:
    chosen = systems(metrics)
    redis = Redis.from_url(url)
    try:
        version = (await redis.info("server"))["redis_version"]
        by_system: dict[str, list[Run]] = {s.name: [] for s in chosen}
        for i in range(runs):
            # interleaved, so drift hits all alike; taskflow's variants swap places every run
            taskflows = chosen[:-1] if i % 2 == 0 else chosen[-2::-1]
            for system in [*taskflows, ARQ]:
                run = await measure(system, url, jobs, redis)
                by_system[system.name].append(run)
                print(
                    f"run {i + 1}/{runs} {system.name}: enqueue {run.enqueue_rate:,.0f}/s, "
                    f"drain {run.rate:,.0f}/s, worker CPU {run.worker_cpu_ms:.3f} ms/job, "
                    f"{run.commands_per_job:.2f} cmds/job, Redis CPU {run.redis_cpu_us:.1f} us/job",
                    flush=True,
                )
    finally:
        await redis.aclose()
    _print_table(by_system, jobs, url, version, chosen)


def main() -> None:
    options = common.parser(__doc__)
    options.add_argument("--jobs", type=int, default=5000, help="jobs per run (default 5000)")
    options.add_argument(
        "--metrics",
        choices=("on", "off", "both"),
        default="both",
        help="run taskflow with job and system metrics on, off, or both (default both)",
    )
    args = options.parse_args()
    if args.arq_worker:
        arq_worker(args.arq_worker, args.redis_url)
        return
    with common.server_url(args) as url:
        asyncio.run(bench(args.jobs, args.runs, url, args.metrics))


# -- names other scripts imported from here before they moved to common.py ---------------

CONCURRENCY = common.CONCURRENCY
KEY_PREFIXES = common.KEY_PREFIXES
ROOT = common.ROOT
Meter = common.Meter
_arq_queue_key = common.arq_queue_key
_arq_version = common.arq_version
_chunks = common.chunks
_cleanup = common.cleanup
_free_port = connection._free_port
_stop = common.stop
_taskflow_queue_key = common.taskflow_queue_key


def _start_private_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server's process and URL, for callers that terminate the process
    themselves (its working directory is removed at exit). main() uses common.server_url."""
    server = common.PrivateRedis.start()
    atexit.register(server.stop)
    return server.process, server.url


if __name__ == "__main__":
    main()
