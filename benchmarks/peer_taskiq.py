"""taskiq's side of ``benchmarks/peers.py``: the worker and the client.

taskiq with taskiq-redis's ``ListQueueBroker`` (workers block on BRPOP, so nothing polls)
and ``RedisAsyncResultBackend``, and taskiq-pipelines for the chain (``call_next``) and the
fan (``map`` then ``call_next``).

Worker: ``python -m benchmarks.peer_taskiq --queue Q --redis-url URL`` runs what the child
process of ``taskiq worker --workers 1 --max-async-tasks 100`` runs, taskiq's ``Receiver``
with ``max_async_tasks=100``, in ONE process (the CLI adds a supervising parent), logging at
WARNING. Clients wait with ``wait_result(check_interval=0.01)``; the pipelines' map step
polls its 1,000 children every 10 ms (``check_interval=0.01``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from typing import Any

from taskiq.receiver import Receiver
from taskiq_pipelines import Pipeline, PipelineMiddleware
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from benchmarks.peer_common import CONCURRENCY, POLL, SLEEP, TIMEOUT, in_flight, probe

NAME = f"taskiq {version('taskiq')} (taskiq-redis {version('taskiq-redis')})"
CHAIN = "native (taskiq-pipelines call_next)"
FAN = "native (taskiq-pipelines map, polls 10 ms)"
ENQUEUE = "kiq, 100 in flight"
RESULT_TTL = 3600  # seconds


async def noop() -> None:
    probe.start()
    probe.finish()


async def sleep() -> None:
    probe.start()
    await asyncio.sleep(SLEEP)
    probe.finish()


async def step(x: int) -> int:
    return x + 1


async def fan_seed(width: int) -> list[list[int]]:
    """The map step fans out over the seed's result: one item per leaf, ``[seed, i]``."""
    return [[1, i] for i in range(width)]


async def leaf(item: list[int]) -> int:
    seed, i = item
    return seed + i


async def join(values: list[int]) -> int:
    return sum(values)


FUNCTIONS = {
    "noop": noop,
    "sleep": sleep,
    "step": step,
    "fan_seed": fan_seed,
    "leaf": leaf,
    "join": join,
}


def build_broker(url: str, queue: str) -> tuple[ListQueueBroker, dict[str, Any]]:
    backend: RedisAsyncResultBackend[Any] = RedisAsyncResultBackend(
        redis_url=url, result_ex_time=RESULT_TTL, prefix_str=queue
    )
    broker = ListQueueBroker(url=url, queue_name=queue, result_backend=backend)
    broker.add_middlewares(PipelineMiddleware())
    tasks = {name: broker.register_task(f, task_name=name) for name, f in FUNCTIONS.items()}
    return broker, tasks


def worker_argv(url: str, queue: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.peer_taskiq", "--queue", queue, "--redis-url", url]


class Client:
    def __init__(self, url: str, queue: str) -> None:
        self.broker, self.tasks = build_broker(url, queue)
        self.queue = queue

    async def __aenter__(self) -> Client:
        await self.broker.startup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.broker.shutdown()

    @staticmethod
    async def _value(task: Any) -> Any:
        result = await task.wait_result(check_interval=POLL, timeout=TIMEOUT)
        return result.raise_for_error().return_value

    async def enqueue_bulk(self, name: str, n: int) -> None:
        await in_flight(n, self.tasks[name].kiq)

    async def roundtrip(self, x: int) -> int:
        return int(await self._value(await self.tasks["step"].kiq(x)))

    async def chain(self, n: int) -> int:
        step = self.tasks["step"]
        pipe: Any = Pipeline(self.broker, step)
        for _ in range(n - 1):
            pipe = pipe.call_next(step)
        return int(await self._value(await pipe.kiq(0)))

    async def fan(self, n: int) -> int:
        pipe: Any = (
            Pipeline(self.broker, self.tasks["fan_seed"])
            .map(self.tasks["leaf"], check_interval=POLL)
            .call_next(self.tasks["join"])
        )
        return int(await self._value(await pipe.kiq(n)))

    def created(self) -> dict[str, Any]:
        return {"patterns": [f"{self.queue}*"]}


async def _serve(url: str, queue: str) -> None:
    broker, _ = build_broker(url, queue)
    broker.is_worker_process = True
    finish = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, finish.set)
    try:
        with ThreadPoolExecutor() as pool:
            receiver = Receiver(broker=broker, executor=pool, max_async_tasks=CONCURRENCY)
            await receiver.listen(finish)  # starts the broker; returns after SIGTERM
    finally:
        await broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description="taskiq worker for benchmarks/peers.py")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(args.redis_url, args.queue))


if __name__ == "__main__":
    main()
