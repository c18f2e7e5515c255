"""The slowest single Redis call taskflow makes on big graphs, from Redis's own SLOWLOG.

Redis runs one command at a time: while a script or a big HGETALL runs, every other client
(heartbeats, enqueues, other workers' claims) waits. This script runs the shapes that make
the longest calls and prints, per script or command, how many calls there were and the
slowest one:

- ``fan``: root -> N children (each takes the root's result) -> a join taking all N results.
- ``graph``: a layered graph of M nodes (1,000 per layer, two parents each), run to the end.
- ``cancel``: the same graph submitted with no worker, then cancelled.

Each scenario submits, runs (an in-process worker, concurrency 100), reads the run's status
and waits for its outcome, on a private server whose SLOWLOG records every call of 0.1 ms
or more (commands a script runs are recorded on their own too). The durations are Redis's
execution time, without network.

    python -m benchmarks.script_time                 # 10,000-wide fan, 50,000-node graph
    python -m benchmarks.script_time --fan 2000 --nodes 10000 --runs 1
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import uuid
from collections import defaultdict
from typing import Any

from redis.asyncio import Redis

import taskflow
from benchmarks import common
from taskflow._protocol.scripts import Scripts

LAYER = 1000


def build(url: str, queue: str) -> taskflow.TaskFlow:
    app = taskflow.TaskFlow(
        redis_url=url, settings=taskflow.Settings(default_queue=queue), name="script_time"
    )

    @app.task(name="seed")
    async def seed() -> int:
        return 1

    @app.task(name="leaf")
    async def leaf(seed: int, i: int) -> int:
        return seed + i

    @app.task(name="join")
    async def join(values: list[int]) -> int:
        return sum(values)

    @app.task(name="step")
    async def step(i: int) -> int:
        return i

    return app


def fan_graph(app: taskflow.TaskFlow, width: int) -> taskflow.Graph:
    g = app.graph("script-time-fan")
    root = g.add(app.get_task("seed"), name="root")
    leaves = [g.add(app.get_task("leaf"), root, i, name=f"leaf{i}") for i in range(width)]
    g.add(app.get_task("join"), leaves, name="join")
    return g


def layered_graph(app: taskflow.TaskFlow, total: int) -> taskflow.Graph:
    g = app.graph("script-time-layers")
    step = app.get_task("step")
    previous: list[Any] = []
    for i in range(total):
        width = min(LAYER, total)
        j = i % width
        after = [previous[j], previous[(j + 1) % width]] if previous else []
        node = g.add(step, i, name=f"n{i}", after=after)
        if j == 0:
            layer: list[Any] = []
        layer.append(node)
        if j == width - 1:
            previous = layer
    return g


def script_names(scripts: Scripts) -> dict[str, str]:
    """sha -> script name, for reading EVALSHA entries."""
    return {
        script.sha: attr.removeprefix("_")
        for attr, script in vars(scripts).items()
        if hasattr(script, "sha")
    }


async def slowest(redis: Redis, names: dict[str, str]) -> dict[str, tuple[int, float]]:
    """Per script (or command): calls and the slowest one in ms, since the last reset."""
    entries = await redis.slowlog_get(1_000_000)
    calls: dict[str, int] = defaultdict(int)
    worst: dict[str, float] = defaultdict(float)
    for entry in entries:
        words = entry["command"].split()
        name = words[0].decode().upper()
        if name in ("SLOWLOG", "CONFIG"):
            continue
        if name == "EVALSHA" and len(words) > 1:
            name = names.get(words[1].decode(), "EVALSHA ?")
        calls[name] += 1
        worst[name] = max(worst[name], entry["duration"] / 1000)
    return {name: (calls[name], worst[name]) for name in calls}


async def scenario(url: str, kind: str, size: int) -> dict[str, tuple[int, float]]:
    app = build(url, "script-time-" + uuid.uuid4().hex[:8])
    redis = Redis.from_url(url)
    async with app:
        names = script_names(app.scripts)
        g = fan_graph(app, size) if kind == "fan" else layered_graph(app, size)
        await redis.slowlog_reset()
        run = await g.submit()
        if kind == "cancel":
            await run.cancel()
        else:
            async with app.worker(concurrency=100):
                await run.wait(timeout=600)
        await run.status()
        found = await slowest(redis, names)
    await redis.aclose()
    return found


async def main() -> None:
    parser = common.parser(__doc__ or "")
    parser.add_argument("--fan", type=int, default=10_000, help="fan width (default 10,000)")
    parser.add_argument("--nodes", type=int, default=50_000, help="graph size (default 50,000)")
    parser.add_argument("--top", type=int, default=8, help="calls to list (default 8)")
    parser.add_argument("--only", default="fan,graph,cancel", help="scenarios to run")
    args = parser.parse_args()
    args.private_redis = True
    with common.server_url(args) as url:
        redis = Redis.from_url(url)
        await redis.config_set("slowlog-log-slower-than", 100)
        await redis.config_set("slowlog-max-len", 1_000_000)
        await redis.aclose()
        for kind in args.only.split(","):
            size = args.fan if kind == "fan" else args.nodes
            runs = [await scenario(url, kind, size) for _ in range(args.runs)]
            shape = "wide" if kind == "fan" else "nodes"
            print(f"\n{kind} ({size:,} {shape}), {args.runs} runs; calls of 0.1 ms and over")
            print(f"  {'call':<16} {'calls':>8}  slowest ms: median [min-max]")
            ranked = sorted({n for r in runs for n in r}, key=lambda n: -runs[0].get(n, (0, 0))[1])
            for name in ranked[: args.top]:
                worst = [r[name][1] for r in runs if name in r]
                count = statistics.median(r[name][0] for r in runs if name in r)
                print(
                    f"  {name:<16} {count:>8.0f}  {statistics.median(worst):6.2f} "
                    f"[{min(worst):.2f}-{max(worst):.2f}]"
                )
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
