"""The monitor's cluster-wide pass against queues of growing depth.

For 10, 1,000 and 100,000 queued jobs spread over 50 queues, with 3 live workers serving
every queue (heartbeat records as real workers write them, so ``stuck()`` reads the oldest
100 ready jobs of each queue to check their tasks), one pass (``taskflow.monitor.sweep``) is
run ``--passes`` times per run. Per run:

- **pass**: mean wall time of one pass, this process to Redis and back;
- **cmds/pass**: Redis commands per pass (INFO commandstats, whole server, net of this
  script's own INFO calls, commands run inside scripts included): bounded by the queues
  and the 100 head jobs read per queue, whatever the number of queued jobs.

Figures are medians with [min-max] over ``--runs`` runs. Use ``--private-redis`` so other
clients do not add to the command counts.

    python -m benchmarks.monitor --private-redis
    python -m benchmarks.monitor --sizes 10 1000 --runs 3 --passes 10
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

import orjson
from redis.asyncio import Redis

import taskflow
from benchmarks import common
from taskflow._clock import now_ms
from taskflow._version import __version__
from taskflow.monitor import sweep

QUEUES = 50
WORKERS = 3
BATCH = 5_000


async def fill(app: taskflow.TaskFlow, task: taskflow.Task[[int], None], total: int) -> None:
    """``total`` jobs, round-robin over the queues, in atomic batches."""
    queues = [f"{app.name}-q{i}" for i in range(QUEUES)]
    per_queue = [total // QUEUES + (1 if i < total % QUEUES else 0) for i in range(QUEUES)]
    for queue, count in zip(queues, per_queue, strict=True):
        for start in range(0, count, BATCH):
            calls = [task.call(i) for i in range(start, min(count, start + BATCH))]
            await task.with_options(queue=queue).enqueue_many(calls)


async def register_workers(app: taskflow.TaskFlow, redis: Redis) -> None:
    """Heartbeat records of live workers serving every queue, as workers write them."""
    queues = [f"{app.name}-q{i}" for i in range(QUEUES)]
    now = now_ms()
    for n in range(WORKERS):
        worker_id = f"bench-{n}"
        record = {
            "id": worker_id, "host": "bench", "pid": n, "queues": queues, "concurrency": 100,
            "running": 0, "started_ms": now, "beat_ms": now, "counts": {},
            "running_by_queue": {}, "loop_lag": 0.0, "version": __version__,
            "tasks": ["bench-noop"], "jobs": [],
        }  # fmt: skip
        await redis.set(app.keys.worker(worker_id), orjson.dumps(record), px=600_000)
        await redis.zadd(app.keys.workers, {worker_id: now})


async def one_run(url: str, size: int, passes: int) -> tuple[float, float]:
    """Mean seconds per pass and Redis commands per pass, for ``size`` queued jobs."""
    name = f"bench-monitor-{uuid.uuid4().hex[:8]}"
    settings = taskflow.Settings(redis_url=url, embedded="never", default_queue=name)
    app = taskflow.TaskFlow(settings=settings, name=name)

    @app.task(name="bench-noop")
    async def noop(i: int) -> None:
        pass

    redis = Redis.from_url(url)
    meter = common.Meter(redis)
    try:
        async with app:
            await fill(app, noop, size)
            await register_workers(app, redis)
            await sweep(app)  # warm: scripts loaded, connections open
            before, _ = await meter.snapshot()
            started = time.perf_counter()
            for _ in range(passes):
                report = await sweep(app)
            took = (time.perf_counter() - started) / passes
            after, _ = await meter.snapshot()
            assert report.workers == WORKERS and not report.stuck, report
            commands = sum(meter.net(before, after).values()) / passes
            for i in range(QUEUES):
                await app.queue(f"{name}-q{i}").purge()
    finally:
        async for key in redis.scan_iter(match=f"taskflow:app:{name}:*", count=1000):
            await redis.unlink(key)
        await redis.aclose()
    return took, commands


def spread(values: list[float], scale: float, digits: int) -> str:
    med = statistics.median(values) * scale
    return f"{med:.{digits}f} [{min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f}]"


async def main() -> None:
    parser = common.parser(__doc__ or "")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1_000, 100_000])
    parser.add_argument("--passes", type=int, default=20, help="passes timed per run")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {QUEUES} queues, {WORKERS} live workers")
    print(f"{'queued':>8}  {'pass ms':>22}  {'cmds/pass':>22}")
    with common.server_url(args) as url:
        for size in args.sizes:
            runs = [await one_run(url, size, args.passes) for _ in range(args.runs)]
            took = spread([t for t, _ in runs], 1000, 2)
            commands = spread([c for _, c in runs], 1, 1)
            print(f"{size:>8,}  {took:>22}  {commands:>22}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
