"""Raw arq's side of ``benchmarks/peers.py``: the worker and the client.

Worker: ``python -m benchmarks.peer_arq --queue Q --redis-url URL``: arq's ``Worker`` with
``max_jobs=100, poll_delay=0.01``, its default (pickle) serializer, logging at WARNING.
arq has no dependencies between jobs, so the client drives the chain and the fan, waiting
with ``Job.result(poll_delay=0.01)``: the fan enqueues the 1,000 leaves 100 at a time, then
waits for them one after the other, then enqueues the join with their 1,000 results.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

import arq
from arq.connections import RedisSettings, create_pool
from arq.worker import Worker, func

from benchmarks.peer_common import (
    CONCURRENCY,
    CONCURRENT_ENQUEUES,
    POLL,
    SLEEP,
    TIMEOUT,
    in_flight,
    probe,
)

NAME = f"arq {arq.VERSION}"
CHAIN = "client-driven (poll 10 ms)"
FAN = "client-driven (poll 10 ms)"
ENQUEUE = "ArqRedis.enqueue_job, 100 in flight"


async def noop(ctx: dict[str, Any]) -> None:
    probe.start()
    probe.finish()


async def sleep(ctx: dict[str, Any]) -> None:
    probe.start()
    await asyncio.sleep(SLEEP)
    probe.finish()


async def step(ctx: dict[str, Any], x: int) -> int:
    return x + 1


async def seed(ctx: dict[str, Any]) -> int:
    return 1


async def leaf(ctx: dict[str, Any], seed: int, i: int) -> int:
    return seed + i


async def join(ctx: dict[str, Any], values: list[int]) -> int:
    return sum(values)


FUNCTIONS = {"noop": noop, "sleep": sleep, "step": step, "seed": seed, "leaf": leaf, "join": join}


def queue_key(queue: str) -> str:
    return "arq:queue:" + queue


def worker_argv(url: str, queue: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.peer_arq", "--queue", queue, "--redis-url", url]


class Client:
    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.pool: Any = None
        self.ids: list[str] = []

    async def __aenter__(self) -> Client:
        self.pool = await create_pool(
            RedisSettings.from_dsn(self.url), default_queue_name=queue_key(self.queue)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.aclose()

    async def _enqueue(self, name: str, *args: Any) -> Any:
        job = await self.pool.enqueue_job(name, *args)
        assert job is not None
        self.ids.append(job.job_id)
        return job

    async def _apply(self, name: str, *args: Any) -> Any:
        job = await self._enqueue(name, *args)
        return await job.result(timeout=TIMEOUT, poll_delay=POLL)

    async def enqueue_bulk(self, name: str, n: int) -> None:
        await in_flight(n, lambda: self._enqueue(name))

    async def roundtrip(self, x: int) -> int:
        return int(await self._apply("step", x))

    async def chain(self, n: int) -> int:
        x = 0
        for _ in range(n):
            x = await self._apply("step", x)
        return x

    async def fan(self, n: int) -> int:
        value = await self._apply("seed")
        jobs: list[Any] = []
        for start in range(0, n, CONCURRENT_ENQUEUES):  # enqueued 100 at a time, like SAQ's
            stop = min(n, start + CONCURRENT_ENQUEUES)
            jobs += await asyncio.gather(
                *(self._enqueue("leaf", value, i) for i in range(start, stop))
            )
        values = [await job.result(timeout=TIMEOUT, poll_delay=POLL) for job in jobs]
        return int(await self._apply("join", values))

    def created(self) -> dict[str, Any]:
        return {"arq_ids": self.ids, "queue_key": queue_key(self.queue)}


def main() -> None:
    parser = argparse.ArgumentParser(description="raw arq worker for benchmarks/peers.py")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    worker = Worker(
        functions=[func(f, name=name) for name, f in FUNCTIONS.items()],
        queue_name=queue_key(args.queue),
        redis_settings=RedisSettings.from_dsn(args.redis_url),
        max_jobs=CONCURRENCY,
        poll_delay=POLL,
    )
    worker.run()


if __name__ == "__main__":
    main()
