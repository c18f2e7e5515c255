"""Fault injection, quick tier: workers SIGKILLed at random while a graph runs, its effects
recorded outside Redis in a SQLite ledger.

Checked for every run: it ends (no stranded node), each node's effect exists exactly once,
and on every edge the parent's effect happened before any start of the child. Every attempt
is in the ledger, so re-executions are counted (a node killed mid-body, or between its
effect and its finish, runs again: at-least-once); the effect is idempotent per node
(INSERT OR IGNORE), so the ledger holds it once, and the report says how often a
non-idempotent one would have been duplicated.

The seed is printed; ``TASKFLOW_FAULT_SEEDS=1,2,3`` replays or extends the runs and
``TASKFLOW_FAULT_NODES`` / ``TASKFLOW_FAULT_KILLS`` make them bigger (the long tier, by hand).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
import time
import uuid
from pathlib import Path

import anyio
import pytest

from taskflow.graph import Node
from tests.apps import graph_app

from .test_graph_process import Workers, client, new_queues, workers  # noqa: F401 - fixture

SEEDS = [int(s) for s in os.environ.get("TASKFLOW_FAULT_SEEDS", "").split(",") if s] or [
    random.randrange(1_000_000)
]
NODES = int(os.environ.get("TASKFLOW_FAULT_NODES", "60"))
KILLS = int(os.environ.get("TASKFLOW_FAULT_KILLS", "3"))


def make_ledger(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        for statement in graph_app.LEDGER_SCHEMA:
            conn.execute(statement)
    conn.close()
    return str(path)


def read_ledger(db: str) -> tuple[dict[str, float], dict[str, list[float]], int, int]:
    """(effect time by node, start times by node, attempts started, effect re-writes: the
    effects a non-idempotent node would have duplicated)."""
    with sqlite3.connect(db) as conn:
        effects = dict(conn.execute("SELECT node, at FROM effects").fetchall())
        starts: dict[str, list[float]] = {}
        for node, at in conn.execute("SELECT node, at FROM starts"):
            starts.setdefault(node, []).append(at)
        attempts = conn.execute("SELECT COUNT(*) FROM starts").fetchone()[0]
        ended = conn.execute("SELECT COUNT(DISTINCT node), COUNT(*) FROM ends").fetchone()
    conn.close()
    # an effect is written with its end row: more end rows than nodes are attempts killed
    # after their effect and before their finish, which ran again (at-least-once)
    rewrites = int(ended[1]) - int(ended[0]) if ended[0] else 0
    return effects, starts, int(attempts), rewrites


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("seed", SEEDS)
async def test_sigkilled_workers_lose_no_node_and_repeat_no_effect(
    workers: Workers,  # noqa: F811 - the fixture
    tmp_path: Path,
    seed: int,
) -> None:
    sys.stdout.write(f"fault seed {seed} (TASKFLOW_FAULT_SEEDS={seed} replays it)\n")
    rng = random.Random(seed)
    db = make_ledger(tmp_path / "ledger.sqlite")
    queues = new_queues("faults")
    live = await workers.start_live(queues, 3, concurrency=8)
    tid = uuid.uuid4().hex
    parents: dict[str, list[str]] = {}
    async with client(queues, tid) as (app, redis, run_ids):
        await redis.slowlog_reset()  # the slowest calls during this run, 10 ms and over
        ledger = app.tasks["ledger"]
        graph = app.graph(f"faults-{seed}")
        nodes: list[Node] = []
        for i in range(NODES):
            picked = sorted(rng.sample(range(i), min(i, rng.randint(1, 3)))) if i else []
            name = f"n{i}"
            parents[name] = [f"n{p}" for p in picked]
            deps = [nodes[p] for p in picked] or None
            sleep = rng.uniform(0.05, 0.4)
            nodes.append(graph.add(ledger, db, name, sleep=sleep, deps=deps, name=name))
        run = await graph.submit()
        run_ids.append(run.run_id)
        kills = 0
        while kills < KILLS and not (await run.status()).state.final:
            await anyio.sleep(rng.uniform(0.3, 1.0))
            victim = live.pop(rng.randrange(len(live)))
            victim.proc.send_signal(signal.SIGKILL)
            await anyio.to_thread.run_sync(victim.proc.wait, 10)
            kills += 1
            live += await workers.start_live(queues, 1, concurrency=8)
        started = time.monotonic()
        status = await run.status()
        with anyio.fail_after(120):
            while not status.state.final:
                await anyio.sleep(0.2)
                status = await run.status()
        tail = time.monotonic() - started
        slow = await redis.slowlog_get(10)
    slowest = max((entry["duration"] for entry in slow), default=0) / 1000
    effects, starts, attempts, rewrites = read_ledger(db)
    stranded = [n for n, node in status.nodes.items() if node.state.value != "succeeded"]
    reruns = attempts - NODES
    sys.stdout.write(
        f"seed {seed}: {NODES} nodes, {kills} kills, {attempts} attempts ({reruns} "
        f"re-executions), {rewrites} effects written twice (kept once: idempotent), "
        f"{len(stranded)} stranded; slowest Redis call over 10 ms: "
        f"{f'{slowest:.1f} ms' if slowest else 'none'}; run "
        f"ended {tail:.1f}s after the last kill\n"
    )
    assert status.state == "succeeded", (seed, status.counts)
    assert stranded == [] and sorted(effects) == sorted(parents), seed  # one effect each
    for child, ps in parents.items():
        for parent in ps:
            assert effects[parent] <= min(starts[child]), (seed, parent, child)
