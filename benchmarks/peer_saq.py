"""SAQ's side of ``benchmarks/peers.py``: the worker and the client.

Worker: ``python -m benchmarks.peer_saq --queue Q --redis-url URL``: ``saq.Worker`` with
``concurrency=100`` on a Redis ``Queue`` (workers block on BLMOVE, so nothing polls),
logging at WARNING. SAQ has no dependencies between jobs, so the client drives the chain and
the fan. It waits the way ``Job.refresh(until_complete=...)`` does, through ``Queue.listen``
(pub/sub on the job's status), but subscribes before it enqueues, so no finish can slip
between enqueue and subscription; a background ``listen`` on an unused key keeps the queue's
one pub/sub connection open, as in a long-lived client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import saq
from saq import Queue, Status, Worker

from benchmarks.peer_common import CONCURRENCY, SLEEP, TIMEOUT, in_flight, probe

NAME = f"saq {saq.__version__}"
CHAIN = "client-driven (pub/sub)"
FAN = "client-driven (pub/sub)"
ENQUEUE = "Queue.enqueue, 100 in flight"
_FINAL = {Status.COMPLETE, Status.FAILED, Status.ABORTED}


async def noop(ctx: dict[str, Any]) -> None:
    probe.start()
    probe.finish()


async def sleep(ctx: dict[str, Any]) -> None:
    probe.start()
    await asyncio.sleep(SLEEP)
    probe.finish()


async def step(ctx: dict[str, Any], *, x: int) -> int:
    return x + 1


async def seed(ctx: dict[str, Any]) -> int:
    return 1


async def leaf(ctx: dict[str, Any], *, seed: int, i: int) -> int:
    return seed + i


async def join(ctx: dict[str, Any], *, values: list[int]) -> int:
    return sum(values)


FUNCTIONS = [
    ("noop", noop),
    ("sleep", sleep),
    ("step", step),
    ("seed", seed),
    ("leaf", leaf),
    ("join", join),
]


def worker_argv(url: str, queue: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.peer_saq", "--queue", queue, "--redis-url", url]


class Client:
    def __init__(self, url: str, queue: str) -> None:
        self.queue = Queue.from_url(url, name=queue)
        self.name = queue
        self.keepalive: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Client:
        await self.queue.connect()
        self.keepalive = asyncio.create_task(
            self.queue.listen(["peers-keepalive"], lambda *_: False, timeout=None)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.keepalive is not None:
            self.keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.keepalive
        await self.queue.disconnect()

    async def _apply_many(self, fn: str, calls: Sequence[dict[str, Any]]) -> list[Any]:
        """Enqueue one job per kwargs dict, wait for all of them, return their results."""
        keys = [uuid.uuid4().hex for _ in calls]
        left = set(keys)

        def seen(key: str, status: Status) -> bool:
            if status in _FINAL:
                left.discard(key)
            return not left

        waiter = asyncio.create_task(self.queue.listen(keys, seen, timeout=TIMEOUT))
        await asyncio.sleep(0)  # let the waiter subscribe before anything is enqueued
        try:
            await asyncio.gather(
                *(self.queue.enqueue(fn, key=k, **kw) for k, kw in zip(keys, calls, strict=True))
            )
            await waiter
        finally:
            waiter.cancel()
        jobs = await self.queue.jobs(keys)
        bad = [j for j in jobs if j is None or j.status != Status.COMPLETE]
        if bad:
            raise RuntimeError(f"{len(bad)} SAQ job(s) did not complete: {bad[0]!r}")
        return [j.result for j in jobs if j is not None]

    async def enqueue_bulk(self, name: str, n: int) -> None:
        await in_flight(n, lambda: self.queue.enqueue(name))

    async def roundtrip(self, x: int) -> int:
        return int((await self._apply_many("step", [{"x": x}]))[0])

    async def chain(self, n: int) -> int:
        x = 0
        for _ in range(n):
            x = (await self._apply_many("step", [{"x": x}]))[0]
        return int(x)

    async def fan(self, n: int) -> int:
        value = (await self._apply_many("seed", [{}]))[0]
        values = await self._apply_many("leaf", [{"seed": value, "i": i} for i in range(n)])
        return int((await self._apply_many("join", [{"values": values}]))[0])

    def created(self) -> dict[str, Any]:
        return {"patterns": [f"saq:*{self.name}*"]}


def main() -> None:
    parser = argparse.ArgumentParser(description="SAQ worker for benchmarks/peers.py")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    queue = Queue.from_url(args.redis_url, name=args.queue)
    worker = Worker(queue, functions=FUNCTIONS, concurrency=CONCURRENCY)

    async def serve() -> None:
        await queue.connect()
        try:
            await worker.start()  # until SIGTERM
        finally:
            await queue.disconnect()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
