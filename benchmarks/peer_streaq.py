"""streaq's side of ``benchmarks/peers.py``: the worker and the client.

Worker: ``python -m benchmarks.peer_streaq --queue Q --redis-url URL``: a ``streaq.Worker``
with ``concurrency=100`` (workers block on XREADGROUP, so nothing polls), its default
(pickle) serializer, logging at WARNING, run with ``run_sync()``. Clients wait with
``Task.result()`` (pub/sub).

The chain is streaq's native pipelining: ``step.enqueue(0).then(step).then(step)...``, each
step receiving the previous result. The fan uses streaq's native dependencies,
``Task.start(after=...)``: leaves wait for the seed and the join for all 1,000 leaves. A
dependency passes no data, so each leaf reads the seed's stored result (one GET) and the join
reads the 1,000 leaf results (one MGET) itself, through the worker's client; the join
therefore takes the 1,000 leaf ids as its argument, not their results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from importlib.metadata import version
from typing import Any

from streaq import Worker

from benchmarks.peer_common import BULK, CONCURRENCY, SLEEP, TIMEOUT, probe

NAME = f"streaq {version('streaq')} (coredis {version('coredis')})"
CHAIN = "native (then)"
FAN = "native (after=); join reads the results"
ENQUEUE = "Worker.enqueue_many, 1,000 a call"

_WORKER: Worker[Any] | None = None  # the worker process's own worker, for reading results


async def _results(ids: list[str]) -> list[Any]:
    assert _WORKER is not None
    raws = await _WORKER.redis.mget([_WORKER.results_key + i for i in ids])
    return [(await _WORKER.deserialize(raw))["r"] for raw in raws]


async def noop() -> None:
    probe.start()
    probe.finish()


async def sleep() -> None:
    probe.start()
    await asyncio.sleep(SLEEP)
    probe.finish()


async def step(x: int) -> int:
    return x + 1


async def seed() -> int:
    return 1


async def leaf(seed_id: str, i: int) -> int:
    (value,) = await _results([seed_id])
    return int(value) + i


async def join(leaf_ids: list[str]) -> int:
    return sum(await _results(leaf_ids))


FUNCTIONS = {"noop": noop, "sleep": sleep, "step": step, "seed": seed, "leaf": leaf, "join": join}


def build_worker(url: str, queue: str) -> tuple[Worker[Any], dict[str, Any]]:
    worker: Worker[Any] = Worker(redis_url=url, queue_name=queue, concurrency=CONCURRENCY)
    tasks = {name: worker.task(name=name)(f) for name, f in FUNCTIONS.items()}
    return worker, tasks


def worker_argv(url: str, queue: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.peer_streaq", "--queue", queue, "--redis-url", url]


class Client:
    def __init__(self, url: str, queue: str) -> None:
        self.worker, self.tasks = build_worker(url, queue)
        self.queue = queue
        self.stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Client:
        await self.stack.enter_async_context(self.worker)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()

    async def enqueue_bulk(self, name: str, n: int) -> None:
        task = self.tasks[name]
        for start in range(0, n, BULK):
            await self.worker.enqueue_many([task.enqueue() for _ in range(min(BULK, n - start))])

    async def roundtrip(self, x: int) -> int:
        task = await self.tasks["step"].enqueue(x)
        return int((await task.result(timeout=TIMEOUT)).result)

    async def chain(self, n: int) -> int:
        step = self.tasks["step"]
        task = step.enqueue(0)
        for _ in range(n - 1):
            task = task.then(step)
        await task  # enqueues the whole chain in one transaction
        return int((await task.result(timeout=TIMEOUT)).result)

    async def fan(self, n: int) -> int:
        root = self.tasks["seed"].enqueue()
        leaves = [self.tasks["leaf"].enqueue(root.id, i).start(after=root.id) for i in range(n)]
        ids = [t.id for t in leaves]
        last = self.tasks["join"].enqueue(ids).start(after=ids)
        await self.worker.enqueue_many([root, *leaves, last])
        return int((await last.result(timeout=TIMEOUT)).result)

    def created(self) -> dict[str, Any]:
        return {"patterns": [f"streaq:{self.queue}*"]}


def main() -> None:
    global _WORKER
    parser = argparse.ArgumentParser(description="streaq worker for benchmarks/peers.py")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    _WORKER, _ = build_worker(args.redis_url, args.queue)
    _WORKER.run_sync()  # until SIGTERM


if __name__ == "__main__":
    main()
