"""taskflow's side of ``benchmarks/peers.py``: the worker's app and the client.

Worker: ``python -m taskflow --log-level WARNING worker benchmarks.peer_taskflow:app --queue Q
--concurrency 100``; the app sets the worker's idle poll to 10 ms.

It uses taskflow's public API only (for clean-up, it names the queue's key in arq's layout,
which taskflow keeps for arq's clients and workers), so that ``peers.py --baseline PATH`` can
run this same module against another checkout of taskflow, whatever its internal layout.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import taskflow
from benchmarks.peer_common import (
    BULK,
    POLL,
    SLEEP,
    TIMEOUT,
    in_flight,
    probe,
    taskflow_worker_argv,
)

NAME = f"taskflow {taskflow.__version__}"
CHAIN = "native (graph)"
FAN = "native (graph)"
ENQUEUE = (
    "Task.enqueue_many, 1,000 a call"
    if hasattr(taskflow.Task, "enqueue_many")
    else "Task.enqueue, 100 in flight"
)


def build_app(redis_url: str | None = None, queue: str | None = None) -> taskflow.TaskFlow:
    settings = taskflow.Settings(
        run_retention=timedelta(seconds=60),
        worker=taskflow.WorkerSettings(poll_interval=timedelta(seconds=POLL)),
    )
    tf = taskflow.TaskFlow(redis_url=redis_url, settings=settings)

    @tf.task(name="noop", queue=queue)
    async def noop() -> None:
        probe.start()
        probe.finish()

    @tf.task(name="sleep", queue=queue)
    async def sleep() -> None:
        probe.start()
        await asyncio.sleep(SLEEP)
        probe.finish()

    @tf.task(name="step", queue=queue)
    async def step(x: int) -> int:
        return x + 1

    @tf.task(name="seed", queue=queue)
    async def seed() -> int:
        return 1

    @tf.task(name="leaf", queue=queue)
    async def leaf(seed: int, i: int) -> int:
        return seed + i

    @tf.task(name="join", queue=queue)
    async def join(values: list[int]) -> int:
        return sum(values)

    return tf


app = build_app()  # what `python -m taskflow worker benchmarks.peer_taskflow:app` serves


def worker_argv(url: str, queue: str) -> list[str]:
    return taskflow_worker_argv("benchmarks.peer_taskflow:app", queue)


class Client:
    """Enqueues on one queue and waits through the public API."""

    def __init__(self, url: str, queue: str) -> None:
        self.app = build_app(url, queue)
        self.queue = queue
        self.ids: list[str] = []
        self.runs: list[str] = []

    async def __aenter__(self) -> Client:
        await self.app.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.app.aclose()

    async def enqueue_bulk(self, name: str, n: int) -> None:
        task = self.app.get_task(name)
        many = getattr(task, "enqueue_many", None)
        if many is None:
            handles = await in_flight(n, task.enqueue)
        else:
            handles = []
            for start in range(0, n, BULK):
                handles += await many([((), {})] * min(BULK, n - start))
        self.ids += [h.job_id for h in handles]

    async def roundtrip(self, x: int) -> int:
        handle = await self.app.get_task("step").enqueue(x)
        self.ids.append(handle.job_id)
        return int(await handle.result(timeout=TIMEOUT, poll_interval=POLL))

    async def _run(self, g: taskflow.Graph, last: str) -> int:
        run = await g.submit()
        self.runs.append(run.run_id)
        return int((await run.wait(timeout=TIMEOUT, poll_interval=POLL))[last])

    async def chain(self, n: int) -> int:
        step = self.app.get_task("step")
        g = self.app.graph("peers-chain")
        node = g.add(step, 0, name="s0")
        for i in range(1, n):
            node = g.add(step, node, name=f"s{i}")
        return await self._run(g, node.name)

    async def fan(self, n: int) -> int:
        seed, leaf, join = (self.app.get_task(t) for t in ("seed", "leaf", "join"))
        g = self.app.graph("peers-fan")
        root = g.add(seed, name="seed")
        leaves = [g.add(leaf, root, i, name=f"leaf{i}") for i in range(n)]
        g.add(join, leaves, name="join")
        return await self._run(g, "join")

    def created(self) -> dict[str, Any]:
        """What this client may have left in Redis, for the harness to delete: the queue, and
        every key whose name holds one of its job or run ids (jobs, results, runs, their node
        jobs, waiters' registrations), however taskflow names them."""
        return {"queue_key": "arq:queue:" + self.queue, "owners": self.ids + self.runs}
