"""The schedule ticker under load: 1,000 schedules firing every second on one worker.

One worker process (``python -m taskflow worker benchmarks.schedules:app``) serves a queue
nobody enqueues on, so its CPU is the ticker's (plus a heartbeat); its schedules enqueue on
another queue, where the jobs stay to be read. For each run:

- **ticks**: jobs the ticker enqueued in the measured window (``--seconds``, after a 3 s
  warm-up);
- **CPU/tick**: the worker process's CPU time (user + system) over the window, divided by
  the ticks;
- **lateness p50/p99**: from a tick's due time to its enqueue (the job payload's enqueue
  time, written by the ticker in the same step).

    python -m benchmarks.schedules --private-redis              # 1,000 schedules, 3 runs
    python -m benchmarks.schedules --schedules 200 --seconds 5 --runs 1
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta

import orjson
import psutil
from redis.asyncio import Redis

import taskflow
from benchmarks import common
from taskflow._protocol import keys

COUNT = int(os.environ.get("BENCH_SCHEDULES", "1000"))
NAME = os.environ.get("BENCH_SCHEDULES_APP", "bench-schedules")
TARGET = "bench-schedules-jobs"  # where the ticks' jobs go (no worker serves it)
IDLE = "bench-schedules-idle"  # what the worker serves

app = taskflow.TaskFlow(name=NAME)


@app.task(queue=TARGET)
async def noop() -> None:
    pass


for _i in range(COUNT):
    app.schedule(noop, every=timedelta(seconds=1), name=f"s{_i}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_run(url: str, count: int, seconds: float) -> tuple[int, float, float, float]:
    name = f"bench-schedules-{uuid.uuid4().hex[:8]}"
    env = common.worker_env(url, BENCH_SCHEDULES=str(count), BENCH_SCHEDULES_APP=name)
    argv = [sys.executable, "-m", "taskflow", "--log-level", "WARNING", "worker"]
    argv += ["benchmarks.schedules:app", "--queue", IDLE]
    redis = Redis.from_url(url)
    try:
        async with common.worker_process(argv, env) as proc:
            await asyncio.sleep(3)  # start-up, registration, first ticks
            worker = psutil.Process(proc.pid)
            cpu0, start = sum(worker.cpu_times()[:2]), time.time()
            await asyncio.sleep(seconds)
            cpu1, end = sum(worker.cpu_times()[:2]), time.time()
        ids = [i.decode() for i in await redis.zrange(keys.queue(TARGET), 0, -1)]
        late: list[float] = []
        for chunk in common.chunks(ids, 1000):
            for raw in await redis.mget([keys.job(i) for i in chunk]):
                if raw is None:
                    continue
                job = orjson.loads(raw)
                tick_ms = job["s"][1]
                if start * 1000 <= tick_ms <= end * 1000:
                    late.append(job["et"] - tick_ms)
        for chunk in common.chunks(ids, 1000):
            await redis.delete(*[keys.job(i) for i in chunk])
        await redis.delete(keys.queue(TARGET))
        async for key in redis.scan_iter(match=f"taskflow:app:{name}:*", count=1000):
            await redis.delete(key)
    finally:
        await redis.aclose()
    ticks = len(late)
    return (
        ticks,
        (cpu1 - cpu0) * 1000 / max(ticks, 1),
        percentile(late, 0.5),
        percentile(late, 0.99),
    )


async def main() -> None:
    parser = common.parser(__doc__ or "")
    parser.add_argument("--schedules", type=int, default=1000, help="schedules (default 1000)")
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds (default 10)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with common.server_url(args) as url:
        results = [await one_run(url, args.schedules, args.seconds) for _ in range(args.runs)]
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"{args.schedules} schedules every 1 s, one worker, {args.seconds:g} s measured per run")
    for label, index, unit in (
        ("ticks fired", 0, ""),
        ("worker CPU per tick", 1, " ms"),
        ("lateness p50", 2, " ms"),
        ("lateness p99", 3, " ms"),
    ):
        values = [r[index] for r in results]
        print(
            f"  {label:<20} {statistics.median(values):10.3f}{unit} "
            f"[{min(values):.3f}-{max(values):.3f}]"
        )


if __name__ == "__main__":
    asyncio.run(main())
