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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
from redis.asyncio import Redis

import taskflow
from taskflow.graph import Node
from taskflow.runs import RunHandle, RunStatus
from tests.apps import graph_app
from tests.apps.shared import REDIS_URL
from tests.processes import RedisProcess, WorkerProcess, wait_live
from tests.proxy import ReplyDroppingProxy

from .test_graph_process import (  # noqa: F401 - the workers fixture
    Workers,
    client,
    new_queues,
    queue_env,
    workers,
)

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


def random_graph(
    app: taskflow.TaskFlow, rng: random.Random, db: str, name: str
) -> tuple[taskflow.Graph, dict[str, list[str]]]:
    """NODES ledger nodes, each with 1-3 random earlier parents (its data), and the edges."""
    ledger = app.tasks["ledger"]
    graph = app.graph(name)
    parents: dict[str, list[str]] = {}
    nodes: list[Node] = []
    for i in range(NODES):
        picked = sorted(rng.sample(range(i), min(i, rng.randint(1, 3)))) if i else []
        node_name = f"n{i}"
        parents[node_name] = [f"n{p}" for p in picked]
        deps = [nodes[p] for p in picked] or None
        sleep = rng.uniform(0.05, 0.4)
        nodes.append(graph.add(ledger, db, node_name, sleep=sleep, deps=deps, name=node_name))
    return graph, parents


async def run_to_end(run: RunHandle, timeout: float = 120) -> RunStatus:
    status = await run.status()
    with anyio.fail_after(timeout):
        while not status.state.final:
            await anyio.sleep(0.2)
            status = await run.status()
    return status


def check_effects(
    seed: int, db: str, status: RunStatus, parents: dict[str, list[str]]
) -> tuple[int, int]:
    """Every node succeeded with its effect once, parents' effects before children's
    starts; returns (re-executions, effects written twice)."""
    effects, starts, attempts, rewrites = read_ledger(db)
    stranded = [n for n, node in status.nodes.items() if node.state.value != "succeeded"]
    assert status.state == "succeeded", (seed, status.counts)
    assert stranded == [] and sorted(effects) == sorted(parents), seed  # one effect each
    for child, ps in parents.items():
        for parent in ps:
            assert effects[parent] <= min(starts[child]), (seed, parent, child)
    return attempts - NODES, rewrites


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
    async with client(queues, tid) as (app, redis, run_ids):
        await redis.slowlog_reset()  # the slowest calls during this run, 10 ms and over
        graph, parents = random_graph(app, rng, db, f"faults-{seed}")
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
        status = await run_to_end(run)
        tail = time.monotonic() - started
        slow = await redis.slowlog_get(10)
    slowest = max((entry["duration"] for entry in slow), default=0) / 1000
    reruns, rewrites = check_effects(seed, db, status, parents)
    sys.stdout.write(
        f"seed {seed}: {NODES} nodes, {kills} kills, {NODES + reruns} attempts ({reruns} "
        f"re-executions), {rewrites} effects written twice (kept once: idempotent), "
        f"0 stranded; slowest Redis call over 10 ms: "
        f"{f'{slowest:.1f} ms' if slowest else 'none'}; run "
        f"ended {tail:.1f}s after the last kill\n"
    )


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("seed", SEEDS)
async def test_replies_lost_after_their_commands_ran_lose_no_node_and_repeat_no_effect(
    workers: Workers,  # noqa: F811 - the fixture
    tmp_path: Path,
    seed: int,
) -> None:
    sys.stdout.write(f"lost-reply seed {seed} (TASKFLOW_FAULT_SEEDS={seed} replays it)\n")
    rng = random.Random(seed)
    db = make_ledger(tmp_path / "ledger.sqlite")
    queues = new_queues("lost-replies")
    upstream = urlsplit(REDIS_URL)
    with ReplyDroppingProxy(upstream.port or 6379, seed=seed, rate=0.05, limit=KILLS * 4) as proxy:
        url = urlunsplit(upstream._replace(netloc=f"127.0.0.1:{proxy.port}"))
        env = {**queue_env(queues), "TASKFLOW_TEST_REDIS_URL": url}
        started = [workers.spawn(queues, concurrency=8, env=env) for _ in range(3)]
        tid = uuid.uuid4().hex
        async with client(queues, tid) as (app, redis, run_ids):
            for worker in started:
                await wait_live(redis, worker)
            proxy.armed = True
            graph, parents = random_graph(app, rng, db, f"lost-replies-{seed}")
            run = await graph.submit()
            run_ids.append(run.run_id)
            status = await run_to_end(run)
        dropped = proxy.dropped
        for worker in started:  # before the proxy goes, or they log its absence
            worker.kill()
    reruns, rewrites = check_effects(seed, db, status, parents)
    reclaims = sum(node.attempt for node in status.nodes.values()) - NODES
    sys.stdout.write(
        f"seed {seed}: {NODES} nodes, {dropped} script replies lost after the script ran, "
        f"{reclaims} claims made again after a lost one lapsed, {NODES + reruns} bodies "
        f"started ({reruns} re-executions), {rewrites} effects written twice (kept once), "
        f"0 stranded\n"
    )
    assert dropped > 0, "no reply was dropped: the run proves nothing"


@asynccontextmanager
async def private_client(
    server: RedisProcess, queues: tuple[str, str]
) -> AsyncIterator[tuple[taskflow.TaskFlow, Redis]]:
    """An open app on ``server`` and the test's queues, and a raw client."""
    app = graph_app.make_app(queues[0], redis_url=server.url)
    raw = Redis.from_url(server.url)
    async with app:
        try:
            yield app, raw
        finally:
            await raw.aclose()


def spawn_on(
    workers: Workers,  # noqa: F811 - the fixture
    server: RedisProcess,
    queues: tuple[str, str],
    count: int = 3,
) -> list[WorkerProcess]:
    env = {**queue_env(queues), "TASKFLOW_TEST_REDIS_URL": server.url}
    return [workers.spawn(queues, concurrency=8, env=env) for _ in range(count)]


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("seed", SEEDS)
async def test_redis_killed_mid_graph_and_restarted_from_its_aof_loses_nothing(
    workers: Workers,  # noqa: F811 - the fixture
    tmp_path: Path,
    seed: int,
) -> None:
    sys.stdout.write(f"redis-crash seed {seed} (TASKFLOW_FAULT_SEEDS={seed} replays it)\n")
    rng = random.Random(seed)
    db = make_ledger(tmp_path / "ledger.sqlite")
    queues = new_queues("redis-crash")
    server = RedisProcess("--appendonly", "yes", "--appendfsync", "always")
    server.start()
    try:
        started = spawn_on(workers, server, queues)
        async with private_client(server, queues) as (app, raw):
            for worker in started:
                await wait_live(raw, worker)
            graph, parents = random_graph(app, rng, db, f"redis-crash-{seed}")
            run = await graph.submit()
            await anyio.sleep(rng.uniform(1.0, 2.5))
            done_before = (await run.status()).done
            server.kill()  # SIGKILL: no shutdown save; the AOF is all there is
            await anyio.sleep(rng.uniform(0.5, 1.5))
            server.start()
            status = await run_to_end(run)
        assert all(w.proc.poll() is None for w in started), "a worker died with Redis"
        for worker in started:
            worker.kill()
    finally:
        server.stop()
    reruns, rewrites = check_effects(seed, db, status, parents)
    sys.stdout.write(
        f"seed {seed}: {NODES} nodes, Redis killed with {done_before} ended and restarted "
        f"from its AOF: {NODES + reruns} bodies started ({reruns} re-executions), "
        f"{rewrites} effects written twice (kept once), 0 stranded\n"
    )


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_redis_restarted_without_persistence_tells_waiters_their_run_is_gone(
    workers: Workers,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    db = make_ledger(tmp_path / "ledger.sqlite")
    queues = new_queues("redis-amnesia")
    server = RedisProcess()  # no AOF, no RDB: a restart starts empty
    server.start()
    try:
        started = spawn_on(workers, server, queues, count=1)
        async with private_client(server, queues) as (app, raw):
            await wait_live(raw, started[0])
            ledger = app.tasks["ledger"]
            graph = app.graph("amnesia")
            first = graph.add(ledger, db, "first", sleep=0.5, name="first")
            graph.add(ledger, db, "second", sleep=0.5, deps=[first], name="second")
            run = await graph.submit()
            job = await ledger.enqueue(db, "lone", sleep=0.5)
            server.kill()
            server.start()
            with pytest.raises(taskflow.RunNotFound):
                await run.wait(timeout=20)
            with pytest.raises(taskflow.JobNotFound):
                await job.result(timeout=20)
            # the worker came back with Redis and serves new work
            again = await ledger.enqueue(db, "after", sleep=0)
            assert await again.result(timeout=20) == "after"
        assert started[0].proc.poll() is None
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("seed", SEEDS)
async def test_redis_full_mid_graph_is_waited_out_and_loses_nothing(
    workers: Workers,  # noqa: F811 - the fixture
    tmp_path: Path,
    seed: int,
) -> None:
    sys.stdout.write(f"redis-full seed {seed} (TASKFLOW_FAULT_SEEDS={seed} replays it)\n")
    rng = random.Random(seed)
    db = make_ledger(tmp_path / "ledger.sqlite")
    queues = new_queues("redis-full")
    server = RedisProcess("--maxmemory-policy", "noeviction")
    server.start()
    try:
        started = spawn_on(workers, server, queues)
        async with private_client(server, queues) as (app, raw):
            for worker in started:
                await wait_live(raw, worker)
            graph, parents = random_graph(app, rng, db, f"redis-full-{seed}")
            run = await graph.submit()
            await anyio.sleep(rng.uniform(0.5, 1.5))
            used = int((await raw.info("memory"))["used_memory"])
            await raw.config_set("maxmemory", used - 256 * 1024)  # every write refused
            full_for = rng.uniform(1.0, 3.0)
            await anyio.sleep(full_for)
            done_while_full = (await run.status()).done
            await raw.config_set("maxmemory", 0)
            status = await run_to_end(run)
        assert all(w.proc.poll() is None for w in started), "a worker died of a full Redis"
        logs = "".join(w.log() for w in started)
        assert "Redis is out of memory and refuses writes" in logs
        for worker in started:
            worker.kill()
    finally:
        server.stop()
    reruns, rewrites = check_effects(seed, db, status, parents)
    sys.stdout.write(
        f"seed {seed}: {NODES} nodes, Redis full for {full_for:.1f}s ({done_while_full} "
        f"ended by its end): {NODES + reruns} bodies started ({reruns} re-executions), "
        f"{rewrites} effects written twice (kept once), 0 stranded\n"
    )
