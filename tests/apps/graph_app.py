"""The app run by tests/test_graph_process.py in real worker subprocesses.

Started as ``python -m taskflow worker tests.apps.graph_app:app --queue A --queue B`` from
the repository root. Configured from the environment, so one module serves every test:

- ``TASKFLOW_TEST_REDIS_URL``: the Redis server (default ``redis://127.0.0.1:6379/0``);
- ``TEST_QUEUE_A``, ``TEST_QUEUE_B``: the two queues graph nodes are spread over (each test
  uses its own); tasks default to queue A, nodes pick B with ``queue=``.

Tasks record their effects in Redis under ``tfgraph:<test id>:`` keys (which expire after
an hour) so the test process can count executions per node and compare start and end times
of parents and children across processes. The test id is the first argument of every task.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import timedelta
from typing import Any

import anyio
import orjson

import taskflow
from tests.apps.shared import KEY_TTL, fast_worker, record, settings

QUEUE_A = os.environ.get("TEST_QUEUE_A", "taskflow-graph-a")
QUEUE_B = os.environ.get("TEST_QUEUE_B", "taskflow-graph-b")


def prefix(tid: str) -> str:
    """Every effect key of test ``tid`` starts with this."""
    return f"tfgraph:{tid}:"


def count_key(tid: str, node: str) -> str:
    """INCR'd when a node's body starts: how often it ran."""
    return f"{prefix(tid)}count:{node}"


def start_key(tid: str, node: str) -> str:
    """RPUSH'd with time.time() when a node's body starts."""
    return f"{prefix(tid)}start:{node}"


def end_key(tid: str, node: str) -> str:
    """RPUSH'd with time.time() when a node's body ends (also when it then fails)."""
    return f"{prefix(tid)}end:{node}"


def pid_key(tid: str, node: str) -> str:
    """RPUSH'd with the worker's pid when a node's body starts."""
    return f"{prefix(tid)}pid:{node}"


def attempt_key(tid: str, node: str) -> str:
    """RPUSH'd with current_job().attempt when a node's body starts."""
    return f"{prefix(tid)}attempt:{node}"


def deps_key(tid: str, node: str) -> str:
    """SET to the JSON of the ``deps`` argument a node received (data parents' results)."""
    return f"{prefix(tid)}deps:{node}"


def arrived_key(tid: str) -> str:
    """INCR'd by every ``gate`` node that reached the barrier."""
    return f"{prefix(tid)}arrived"


def barrier_key(tid: str) -> str:
    """Set by the test to a time.time() value: every waiting ``gate`` node ends then."""
    return f"{prefix(tid)}barrier"


class NodeFailed(RuntimeError):
    """Raised by a node told to fail."""


def make_app(queue_a: str = QUEUE_A, redis_url: str | None = None) -> taskflow.TaskFlow:
    """An unopened app whose tasks default to ``queue_a``; nodes pick B with ``queue=``.

    Workers use the module-level ``app``; tests build their own with their queues (and
    ``redis_url`` for a private server).
    """
    worker = fast_worker(queues=(QUEUE_A, QUEUE_B), grace_period=timedelta(seconds=2))
    overrides = {"redis_url": redis_url} if redis_url else {}
    app = taskflow.TaskFlow(
        settings=settings(
            queue_a,
            worker,
            run_retention=timedelta(hours=1),
            run_max_age=timedelta(hours=2),
            **overrides,
        )
    )
    _register_tasks(app)
    return app


async def _started(app: taskflow.TaskFlow, tid: str, node: str) -> int:
    job = taskflow.current_job()
    started: dict[str, str | float] = {
        start_key(tid, node): repr(time.time()),
        pid_key(tid, node): os.getpid(),
        attempt_key(tid, node): job.attempt,
    }
    await record(app, [count_key(tid, node)], started)
    return job.attempt


async def _ended(app: taskflow.TaskFlow, tid: str, node: str) -> None:
    await record(app, [], {end_key(tid, node): repr(time.time())})


def _register_tasks(app: taskflow.TaskFlow) -> None:
    """``step`` (most nodes) and ``gate`` (nodes that end together at a barrier)."""

    @app.task
    async def step(
        tid: str,
        node: str,
        fail: bool = False,
        sleep: float = 0.0,
        first_sleep: float | None = None,
        deps: list[Any] | None = None,
        fail_unless: str | None = None,
    ) -> str:
        """Record the start, sleep, record the end; fail if told to; return the node name.

        ``first_sleep``: sleep this long instead on the first attempt (a test kills the
        worker meanwhile). ``deps``: data parents' results, recorded as received.
        ``fail_unless``: fail while the test has not set this Redis key ("fixed").
        """
        attempt = await _started(app, tid, node)
        if deps is not None:
            await app.redis.set(deps_key(tid, node), orjson.dumps(deps), ex=KEY_TTL)
        duration = first_sleep if first_sleep is not None and attempt == 1 else sleep
        if duration:
            await anyio.sleep(duration)
        await _ended(app, tid, node)
        if fail or (fail_unless is not None and not await app.redis.exists(fail_unless)):
            raise NodeFailed(f"node {node} fails by design")
        return node

    @app.task
    async def ledger(db: str, node: str, sleep: float = 0.0, deps: list[Any] | None = None) -> str:
        """Record this attempt in a SQLite ledger outside Redis: a start row, then (in one
        transaction, after ``sleep``) the node's effect, idempotent per node, and an end row.
        ``deps``: the data parents' results (their edges are what the ledger is checked on)."""
        attempt = taskflow.current_job().attempt
        await anyio.to_thread.run_sync(write_ledger, db, "start", node, attempt)
        await anyio.sleep(sleep)
        await anyio.to_thread.run_sync(write_ledger, db, "effect", node, attempt)
        return node

    @app.task
    async def gate(tid: str, node: str) -> str:
        """Record the start, wait for the test's barrier time, end exactly then."""
        await _started(app, tid, node)
        await app.redis.incr(arrived_key(tid))
        while True:
            raw = await app.redis.get(barrier_key(tid))
            if raw is not None:
                break
            await anyio.sleep(0.05)
        await anyio.sleep(max(0.0, float(raw) - time.time()))
        await _ended(app, tid, node)
        return node


LEDGER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS starts (node TEXT, attempt INT, pid INT, at REAL)",
    "CREATE TABLE IF NOT EXISTS ends (node TEXT, attempt INT, pid INT, at REAL)",
    "CREATE TABLE IF NOT EXISTS effects (node TEXT PRIMARY KEY, attempt INT, at REAL)",
)


def write_ledger(db: str, what: str, node: str, attempt: int) -> None:
    """One ledger write, atomic: ``start``, or ``effect`` (the effect, once per node, and the
    attempt's end row together)."""
    now, pid = time.time(), os.getpid()
    with sqlite3.connect(db, timeout=30) as conn:
        if what == "start":
            conn.execute("INSERT INTO starts VALUES (?, ?, ?, ?)", (node, attempt, pid, now))
        else:
            conn.execute("INSERT OR IGNORE INTO effects VALUES (?, ?, ?)", (node, attempt, now))
            conn.execute("INSERT INTO ends VALUES (?, ?, ?, ?)", (node, attempt, pid, now))
    conn.close()


app = make_app()


async def submit_demo(tid: str, width: int = 20, sleep: float = 0.3) -> str:
    """Submit root -> ``width`` middles (each sleeping ``sleep``) -> join; return the run id.

    Run by a short-lived ``python -c`` process that exits right after submitting.
    """
    step = app.tasks["step"]
    graph = app.graph(f"detached-{tid}")
    root = graph.add(step, tid, "root", name="root")
    middles = [
        graph.add(
            step,
            tid,
            f"mid-{i}",
            sleep=sleep,
            name=f"mid-{i}",
            after=[root],
            queue=QUEUE_B if i % 2 else QUEUE_A,
        )
        for i in range(width)
    ]
    graph.add(step, tid, "join", deps=middles, name="join")
    async with app:
        pool = app.redis.connection_pool
        run = await graph.submit()
    await pool.disconnect()
    return run.run_id
