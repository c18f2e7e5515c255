"""Per-job overhead of taskflow against raw arq: no-op jobs through ONE worker process.

Run from the repository root::

    python benchmarks/overhead.py [--jobs 5000] [--runs 3] [--redis-url URL | --private-redis]

For each system and each run: enqueue ``--jobs`` no-op jobs on a fresh queue (timed, one
client, one job at a time), then start one worker process and wait until the queue is empty.

- taskflow: ``python -m taskflow --log-level WARNING worker benchmarks.overhead:app
  --queue <unique> --concurrency 100`` (served until drained, then SIGTERM).
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

Timing figures belong here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

import taskflow
from taskflow.serde import arq_deserializer, arq_serializer

ROOT = Path(__file__).resolve().parent.parent
PROBE_ENV = "TASKFLOW_BENCH_PROBE"
CONCURRENCY = 100
KEY_PREFIXES = ("arq:result:", "arq:job:", "arq:retry:", "arq:in-progress:", "taskflow:failures:")


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
    tf = taskflow.TaskFlow(redis_url=redis_url)

    @tf.task(name="noop")
    async def noop() -> None:
        _PROBE.touch()

    return tf


app = build_app()  # what `python -m taskflow worker benchmarks.overhead:app` serves


async def arq_noop(ctx: dict[str, Any]) -> None:
    _PROBE.touch()


def run_arq_worker(queue_key: str, redis_url: str) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    logging.basicConfig(level=logging.WARNING)
    worker = Worker(
        functions=[func(arq_noop, name="noop")],
        queue_name=queue_key,
        redis_settings=RedisSettings.from_dsn(redis_url),
        burst=True,
        max_jobs=CONCURRENCY,
        poll_delay=0.01,
        job_serializer=arq_serializer,
        job_deserializer=arq_deserializer,
    )
    worker.run()


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


async def _enqueue_taskflow(url: str, queue: str, n: int) -> tuple[list[str], float]:
    client = build_app(url)
    noop = client.get_task("noop")
    ids: list[str] = []
    async with client:
        start = time.perf_counter()
        for _ in range(n):
            handle = await noop.enqueue(_queue=queue)
            ids.append(handle.job_id)
        elapsed = time.perf_counter() - start
    return ids, elapsed


async def _enqueue_arq(url: str, queue: str, n: int) -> tuple[list[str], float]:
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(
        RedisSettings.from_dsn(url),
        job_serializer=arq_serializer,
        job_deserializer=arq_deserializer,
        default_queue_name=_arq_queue_key(queue),
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


def _taskflow_queue_key(queue: str) -> str:
    from taskflow import keys

    return keys.queue(queue)


def _arq_queue_key(queue: str) -> str:
    return "arq:queue:" + queue


def _taskflow_argv(url: str, queue: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "taskflow",
        "--log-level",
        "WARNING",
        "worker",
        "benchmarks.overhead:app",
        "--queue",
        queue,
        "--concurrency",
        str(CONCURRENCY),
    ]


def _arq_argv(url: str, queue: str) -> list[str]:
    script = str(Path(__file__).resolve())
    return [sys.executable, script, "--arq-worker", _arq_queue_key(queue), "--redis-url", url]


def _arq_version() -> str:
    import arq

    return str(arq.VERSION)


SYSTEMS = (
    System(
        f"taskflow {taskflow.__version__}",
        _taskflow_queue_key,
        _enqueue_taskflow,
        _taskflow_argv,
        stops_itself=False,
    ),
    System(f"arq {_arq_version()}", _arq_queue_key, _enqueue_arq, _arq_argv, stops_itself=True),
)


class Meter:
    """Redis INFO snapshots, net of the commands this script itself sends."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.own: Counter[str] = Counter()

    async def snapshot(self) -> tuple[Counter[str], float]:
        stats = await self.redis.info("commandstats")
        cpu = await self.redis.info("cpu")
        calls = Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})
        return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    async def remaining(self, key: str) -> int:
        self.own["zcard"] += 1
        return int(await self.redis.zcard(key))

    def net(self, before: Counter[str], after: Counter[str]) -> Counter[str]:
        delta = Counter({k: after[k] - before.get(k, 0) for k in after})
        # an INFO reply leaves out its own call: the later snapshot sees both earlier INFO calls
        delta.subtract(self.own + Counter(info=2))
        self.own.clear()
        return +delta  # drops zero entries


async def _wait_drained(
    meter: Meter, key: str, proc: asyncio.subprocess.Process, timeout: float
) -> None:
    deadline = time.perf_counter() + timeout
    while (left := await meter.remaining(key)) > 0:
        if proc.returncode is not None:
            raise RuntimeError(f"worker exited with status {proc.returncode}, {left} jobs left")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"queue {key} not drained in {timeout:g}s: {left} jobs left")
        await asyncio.sleep(0.01)


async def _stop(proc: asyncio.subprocess.Process, signal_it: bool) -> None:
    if signal_it and proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"worker exited with status {proc.returncode}")


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def _drain_window(redis: Redis, ids: list[str]) -> float:
    """Seconds from the first job's start to the last job's finish, from the results."""
    starts: list[int] = []
    finishes: list[int] = []
    bad = 0
    for chunk in _chunks(ids, 1000):
        for raw in await redis.mget(["arq:result:" + i for i in chunk]):
            record = orjson.loads(raw) if raw is not None else {}
            if not record.get("s"):
                bad += 1
                continue
            starts.append(record["st"])
            finishes.append(record["ft"])
    if bad:
        raise RuntimeError(f"{bad} of {len(ids)} jobs have no successful result")
    return (max(finishes) - min(starts)) / 1000


async def _cleanup(redis: Redis, ids: list[str], queue_key: str) -> None:
    for chunk in _chunks(ids, 500):
        await redis.unlink(*[p + i for i in chunk for p in KEY_PREFIXES])
    await redis.unlink(queue_key, queue_key + ":health-check")


def _child_env(url: str, probe: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TASKFLOW_REDIS_URL=url, TASKFLOW_EMBEDDED="never", **{PROBE_ENV: str(probe)})
    return env


async def measure(system: System, url: str, jobs: int, redis: Redis) -> Run:
    queue = f"bench-overhead-{uuid.uuid4().hex[:12]}"
    key = system.queue_key(queue)
    meter = Meter(redis)
    ids, enqueue_s = await system.enqueue(url, queue, jobs)
    with tempfile.TemporaryDirectory(prefix="taskflow-bench-") as tmp:
        probe = Path(tmp) / "probe.json"
        try:
            calls0, cpu0 = await meter.snapshot()
            spawned = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                *system.argv(url, queue), cwd=ROOT, env=_child_env(url, probe)
            )
            try:
                await _wait_drained(meter, key, proc, timeout=120)
                drained = time.perf_counter()
                calls1, cpu1 = await meter.snapshot()
            finally:
                await _stop(proc, signal_it=not system.stops_itself)
            drain_s = await _drain_window(redis, ids)
        finally:
            await _cleanup(redis, ids, key)
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


def _median(runs: list[Run], attr: str) -> float:
    return statistics.median(float(getattr(r, attr)) for r in runs)


def _print_table(by_system: dict[str, list[Run]], jobs: int, url: str, version: str) -> None:
    n_runs = len(next(iter(by_system.values())))
    print()
    print(
        f"{jobs:,} no-op jobs, one worker process, concurrency {CONCURRENCY}, "
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
            f"| {name} | {_median(runs, 'enqueue_rate'):,.0f} | {_median(runs, 'rate'):,.0f} "
            f"| {_median(runs, 'worker_cpu_ms'):.3f} | {_median(runs, 'commands_per_job'):.2f} "
            f"| {_median(runs, 'redis_cpu_us'):.1f} | {_median(runs, 'wall_s'):.2f} |"
        )
    tf, arq = (by_system[s.name] for s in SYSTEMS)
    ratio = _median(tf, "rate") / _median(arq, "rate")
    enq = _median(tf, "enqueue_rate") / _median(arq, "enqueue_rate")
    print()
    print(f"drain throughput ratio taskflow/arq: {ratio:.2f}   enqueue ratio: {enq:.2f}")
    print("per run, drain jobs/s:")
    for name, runs in by_system.items():
        print(f"  {name}: " + ", ".join(f"{r.rate:,.0f}" for r in runs))
    print("Redis commands per job, by command (all runs, incl. commands inside Lua scripts):")
    for name, runs in by_system.items():
        total: Counter[str] = sum((r.commands for r in runs), Counter())
        count = sum(r.jobs for r in runs)
        parts = [
            f"{cmd} {calls / count:.2f}"
            for cmd, calls in total.most_common()
            if calls / count >= 0.005
        ]
        print(f"  {name}: " + ", ".join(parts))


async def bench(jobs: int, runs: int, url: str) -> None:
    redis = Redis.from_url(url)
    try:
        version = (await redis.info("server"))["redis_version"]
        by_system: dict[str, list[Run]] = {s.name: [] for s in SYSTEMS}
        for i in range(runs):
            for system in SYSTEMS:  # interleaved, so drift hits both alike
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
    _print_table(by_system, jobs, url, version)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_private_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--private-redis needs redis-server on PATH")
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.02)
    proc.kill()
    raise SystemExit("private redis-server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per run (default 5000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per system (default 3)")
    parser.add_argument(
        "--redis-url", default=os.environ.get("TASKFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="start a private redis-server, so other clients cannot skew the Redis counters",
    )
    parser.add_argument("--arq-worker", metavar="QUEUE_KEY", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arq_worker:
        run_arq_worker(args.arq_worker, args.redis_url)
        return
    server = None
    url = args.redis_url
    if args.private_redis:
        server, url = _start_private_redis()
    try:
        asyncio.run(bench(args.jobs, args.runs, url))
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
