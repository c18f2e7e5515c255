"""Graph runs across real worker subprocesses
(``python -m taskflow worker tests.apps.graph_app:app --queue A --queue B``) on real Redis:
random DAGs checked against a trigger-rule oracle, a 500-parent fan-in whose parents end
at the same instant, a 2,000-node chain and a 1 -> 1,000 -> 1 fan, a SIGKILLed worker
whose node re-runs elsewhere, and a submitter that exits right after submitting.

Every test uses its own two queues (passed to its workers through the environment) and its
own test id, under which the tasks record executions and timestamps (see
tests/apps/graph_app.py). Each worker's output goes to a file that is printed at teardown
(pytest shows it when the test fails).
"""

from __future__ import annotations

import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, note, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

import taskflow
from taskflow._protocol import keys
from taskflow.errors import GraphFailed
from taskflow.graph import Node
from taskflow.runs import RunHandle, RunStatus
from tests import processes
from tests.apps import graph_app
from tests.apps.shared import REDIS_URL
from tests.helpers import delete_keys, reply, until
from tests.processes import WorkerProcess, child_env, wait_live

pytestmark = pytest.mark.slow

APP = "tests.apps.graph_app:app"
RAN = frozenset({"succeeded", "failed"})
BAD = frozenset({"failed", "upstream_failed", "cancelled"})


# -- worker processes ---------------------------------------------------------------------


def queue_env(queues: Sequence[str]) -> dict[str, str]:
    """The environment that tells graph_app the test's two queues."""
    return {"TEST_QUEUE_A": queues[0], "TEST_QUEUE_B": queues[1]}


class Workers(processes.Workers):
    async def start_live(
        self, queues: Sequence[str], count: int, *, concurrency: int = 100
    ) -> list[WorkerProcess]:
        """Start ``count`` workers at once; wait until every heartbeat serves ``queues``."""
        env = queue_env(queues)
        started = [self.spawn(queues, concurrency=concurrency, env=env) for _ in range(count)]
        client = Redis.from_url(REDIS_URL)
        try:
            for worker in started:
                await wait_live(client, worker)
        finally:
            await client.aclose()
        return started


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    with Workers(tmp_path, APP) as started:
        yield started


def new_queues(tag: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return f"gp-{tag}-a-{suffix}", f"gp-{tag}-b-{suffix}"


# -- clients and effects --------------------------------------------------------------------


@asynccontextmanager
async def client(
    queues: Sequence[str], tid: str
) -> AsyncIterator[tuple[taskflow.TaskFlow, Redis, list[str]]]:
    """An open app on the test's queues, a raw client, and a list for the ids of the runs the
    test submits. After: test ``tid``'s effect keys, those runs' state and the queues are
    deleted (nothing else is ever deleted)."""
    app = graph_app.make_app(queues[0])
    await app.__aenter__()
    pool = app.redis.connection_pool
    raw = Redis.from_url(REDIS_URL)
    run_ids: list[str] = []
    try:
        yield app, raw, run_ids
    finally:
        try:
            run_keys = [k for run_id in run_ids for k in keys.run_keys(run_id)]
            queue_keys = [keys.queue(q) for q in queues]
            await delete_keys(raw, f"{graph_app.prefix(tid)}*", run_keys + queue_keys)
        finally:
            # TaskFlow.aclose() leaves the pool's sockets open (see test_worker_process.py)
            await app.aclose()
            await pool.disconnect()
            await raw.aclose()


@dataclass(frozen=True)
class Effects:
    """What one node's body recorded."""

    count: int
    starts: list[float]
    ends: list[float]
    pids: list[int]
    attempts: list[int]
    deps: Any


async def read_effects(redis: Redis, tid: str, names: Sequence[str]) -> dict[str, Effects]:
    out: dict[str, Effects] = {}
    for first in range(0, len(names), 500):
        chunk = names[first : first + 500]
        async with redis.pipeline(transaction=False) as pipe:
            for name in chunk:
                pipe.get(graph_app.count_key(tid, name))
                pipe.lrange(graph_app.start_key(tid, name), 0, -1)
                pipe.lrange(graph_app.end_key(tid, name), 0, -1)
                pipe.lrange(graph_app.pid_key(tid, name), 0, -1)
                pipe.lrange(graph_app.attempt_key(tid, name), 0, -1)
                pipe.get(graph_app.deps_key(tid, name))
            replies = await pipe.execute()
        for k, name in enumerate(chunk):
            count, starts, ends, pids, attempts, deps = replies[6 * k : 6 * k + 6]
            out[name] = Effects(
                count=int(count or 0),
                starts=[float(s) for s in starts],
                ends=[float(e) for e in ends],
                pids=[int(p) for p in pids],
                attempts=[int(a) for a in attempts],
                deps=orjson.loads(deps) if deps is not None else None,
            )
    return out


async def wait_run(run: RunHandle, timeout: float) -> RunStatus:
    """Wait for the run to end, whether it succeeds or not; return its status."""
    try:
        await run.wait(timeout=timeout)
    except GraphFailed:
        pass
    return await run.status()


async def wait_count(redis: Redis, key: str, target: int, timeout: float) -> None:
    async def reached() -> bool:
        return int(await redis.get(key) or 0) >= target

    await until(reached, timeout, interval=0.02)


async def wait_states(run: RunHandle, names: Sequence[str], state: str, timeout: float) -> None:
    async def reached() -> bool:
        nodes = (await run.status()).nodes
        return all(nodes[n].state.value == state for n in names)

    await until(reached, timeout, interval=0.02)


def ended_at(status: RunStatus, effects: dict[str, Effects], name: str) -> float:
    """When a node ended: its body's recorded end if it ran, else when the run settled it."""
    node = status.nodes[name]
    if node.state.value in RAN:
        return effects[name].ends[-1]
    assert node.finished is not None, f"{name} ended {node.state} without a finish time"
    return node.finished.timestamp()


def started_after_parents(
    status: RunStatus, effects: dict[str, Effects], name: str
) -> tuple[float, float] | None:
    """(parents' last end, this body's first start) if the body started too early."""
    parents = status.nodes[name].parents
    if not parents:
        return None
    last_end = max(ended_at(status, effects, p) for p in parents)
    start = effects[name].starts[0]
    # a settled parent's finish time is in whole ms (floored), a body's time is exact
    return (last_end, start) if start < last_end - 0.002 else None


# -- the trigger-rule oracle ------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One generated node: its parents (earlier indexes) and how it behaves."""

    parents: tuple[int, ...]
    trigger: str
    fail: bool
    queue: int  # 0: queue A, 1: queue B
    data: bool  # parents passed as data (deps=[...]) rather than after=[...]
    sleep: float

    def __repr__(self) -> str:
        flags = ("F" if self.fail else "") + ("D" if self.data else "") + "AB"[self.queue]
        return f"{list(self.parents)}:{self.trigger}:{flags}:{self.sleep:g}"


def expected_state(trigger: str, parents: Sequence[str], fail: bool) -> str:
    """A node's final state from its parents' final states, per the trigger-rule spec.

    all_success runs iff every parent succeeded, else upstream_failed, or skipped if some
    parent skipped and none failed; none_failed runs iff no parent failed/upstream_failed/
    cancelled, else skipped; all_done always runs; any_failed runs iff some parent failed/
    upstream_failed/cancelled, else skipped. A node that runs ends per its failure flag.
    """
    if parents:
        bad = any(p in BAD for p in parents)
        if trigger == "all_success":
            if bad:
                return "upstream_failed"
            if any(p != "succeeded" for p in parents):
                return "skipped"
        elif trigger == "none_failed" and bad:
            return "skipped"
        elif trigger == "any_failed" and not bad:
            return "skipped"
    return "failed" if fail else "succeeded"


def oracle(dag: Sequence[Spec]) -> list[str]:
    states: list[str] = []
    for spec in dag:
        states.append(expected_state(spec.trigger, [states[p] for p in spec.parents], spec.fail))
    return states


TRIGGERS = ("all_success", "all_success", "none_failed", "all_done", "any_failed")
SLEEPS = (0.0, 0.0, 0.0, 0.005, 0.02)
WINDOW = 25  # parents come from the previous WINDOW nodes, so graphs get deep


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 200) -> list[Spec]:
    size = draw(st.integers(1, max_nodes))
    out: list[Spec] = []
    for i in range(size):
        parents: tuple[int, ...] = ()
        if i:
            choices = st.integers(max(0, i - WINDOW), i - 1)
            parents = tuple(sorted(draw(st.sets(choices, max_size=min(i, 4)))))
        out.append(
            Spec(
                parents=parents,
                trigger=draw(st.sampled_from(TRIGGERS)),
                fail=draw(st.sampled_from((False, False, False, True))),
                queue=draw(st.integers(0, 1)),
                data=draw(st.booleans()),
                sleep=draw(st.sampled_from(SLEEPS)),
            )
        )
    return out


def random_dag(seed: int, size: int) -> list[Spec]:
    """A fixed large DAG with the same shape rules, so every run covers the 200-node case."""
    rng = random.Random(seed)
    out: list[Spec] = []
    for i in range(size):
        k = rng.randint(0, min(i, 4))
        parents = tuple(sorted(rng.sample(range(max(0, i - WINDOW), i), k))) if i else ()
        out.append(
            Spec(
                parents=parents,
                trigger=rng.choice(TRIGGERS),
                fail=rng.random() < 0.2,
                queue=rng.randint(0, 1),
                data=rng.random() < 0.5,
                sleep=rng.choice(SLEEPS),
            )
        )
    return out


async def check_dag(queues: tuple[str, str], dag: list[Spec]) -> None:
    tid = uuid.uuid4().hex
    names = [f"n{i}" for i in range(len(dag))]
    async with client(queues, tid) as (app, redis, run_ids):
        step = app.tasks["step"]
        graph = app.graph(f"dag-{tid[:8]}")
        nodes: list[Node] = []
        for i, spec in enumerate(dag):
            parents = [nodes[p] for p in spec.parents]
            edges: dict[str, Any] = (
                {"deps": parents} if spec.data and parents else {"after": parents}
            )
            nodes.append(
                graph.add(
                    step,
                    tid,
                    names[i],
                    fail=spec.fail,
                    sleep=spec.sleep,
                    name=names[i],
                    trigger=spec.trigger,
                    queue=queues[spec.queue],
                    **edges,
                )
            )
        run = await graph.submit()
        run_ids.append(run.run_id)
        status = await wait_run(run, timeout=60)
        effects = await read_effects(redis, tid, names)
    check_outcome(dag, names, status, effects)


def check_outcome(
    dag: list[Spec], names: list[str], status: RunStatus, effects: dict[str, Effects]
) -> None:
    actual = [status.nodes[n].state.value for n in names]
    expected = oracle(dag)
    note(f"dag: {dag}")
    note(f"actual:   {actual}")
    note(f"expected: {expected}")
    where = f"run {status.run_id}, {len(dag)} nodes"

    # the run ended and every node is terminal
    assert status.state in {"succeeded", "failed"}, (where, status.state, status.counts)
    assert all(status.nodes[n].state.terminal for n in names), (where, status.counts)
    assert status.done == status.total == len(dag), (where, status.done, status.total)
    run_failed = any(s in BAD for s in actual)
    assert status.state == ("failed" if run_failed else "succeeded"), (where, status.counts)

    problems = body_problems(dag, names, actual, status, effects)
    assert not problems, f"{where}:\n" + "\n".join(problems)
    broken = rule_problems(dag, names, actual)
    assert not broken, f"{where}: trigger rules broken:\n" + "\n".join(broken)
    # each node follows from its parents, so the whole run matches the oracle
    assert actual == expected, where


def body_problems(
    dag: list[Spec],
    names: list[str],
    actual: list[str],
    status: RunStatus,
    effects: dict[str, Effects],
) -> list[str]:
    """Bodies ran iff their node ran, once, after their parents, with their parents' results."""
    problems: list[str] = []
    for spec, name, state in zip(dag, names, actual, strict=True):
        fx, node = effects[name], status.nodes[name]
        if state not in RAN:
            if fx.count:
                problems.append(f"{name} ended {state} but its body ran {fx.count} times")
            continue
        if fx.count != 1 or len(fx.starts) != 1 or len(fx.ends) != 1:
            problems.append(f"{name} ({state}) ran {fx.count} times: {fx}")
            continue
        if state != ("failed" if spec.fail else "succeeded"):
            problems.append(f"{name} ran and ended {state}, its failure flag is {spec.fail}")
        if node.attempt != 1 or fx.attempts != [1]:
            problems.append(f"{name} attempt {node.attempt}, bodies saw {fx.attempts}")
        early = started_after_parents(status, effects, name)
        if early is not None:
            problems.append(f"{name} started at {early[1]:.6f}, a parent ended {early[0]:.6f}")
        if spec.data and spec.parents:
            want = [names[p] if actual[p] == "succeeded" else None for p in spec.parents]
            if fx.deps != want:
                problems.append(f"{name} received deps {fx.deps}, expected {want}")
    return problems


def rule_problems(dag: list[Spec], names: list[str], actual: list[str]) -> list[str]:
    """Nodes whose state does not follow from their parents' actual states by their rule."""
    broken = []
    for i, spec in enumerate(dag):
        parent_states = {names[p]: actual[p] for p in spec.parents}
        want = expected_state(spec.trigger, list(parent_states.values()), spec.fail)
        if actual[i] != want:
            broken.append(
                f"{names[i]} {spec.trigger} with parents {parent_states} ended {actual[i]}, "
                f"the rule says {want}"
            )
    return broken


# -- 1. random DAGs ---------------------------------------------------------------------------


@pytest.fixture
def dag_workers(workers: Workers) -> tuple[str, str]:
    """Three workers on two fresh queues, shared by every example of the test."""
    queues = new_queues("dag")
    anyio.run(lambda: workers.start_live(queues, 3))
    return queues


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
    # each example is a real run across processes: no shrinking (it would blow the timeout);
    # a failure prints its DAG, and the database replays it first next time
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@example(dag=random_dag(seed=20240601, size=200))
@given(dag=dags())
def test_random_dags_follow_trigger_rules_across_processes(
    dag_workers: tuple[str, str], dag: list[Spec]
) -> None:
    event(f"nodes: {min(len(dag) // 50 * 50, 150)}+")
    anyio.run(check_dag, dag_workers, dag)


@pytest.mark.asyncio
async def test_all_success_child_of_a_skipped_and_a_failed_parent_is_upstream_failed(
    workers: Workers,
) -> None:
    """The rule must not depend on which parent ends first.

    ``s`` is skipped at once (an any_failed child of a success); ``f`` fails a second later.
    ``c`` (all_success) has both as parents, so it is upstream_failed, and its none_failed
    child ``d`` is skipped: its body never runs.
    """
    queues = new_queues("order")
    await workers.start_live(queues, 2)
    tid = uuid.uuid4().hex
    names = ["x", "s", "f", "c", "d"]
    async with client(queues, tid) as (app, redis, run_ids):
        step = app.tasks["step"]
        graph = app.graph(f"order-{tid[:8]}")
        x = graph.add(step, tid, "x", name="x")
        s = graph.add(step, tid, "s", name="s", trigger="any_failed", after=[x])
        f = graph.add(step, tid, "f", name="f", fail=True, sleep=1.0, queue=queues[1])
        c = graph.add(step, tid, "c", name="c", after=[s, f])
        graph.add(step, tid, "d", name="d", trigger="none_failed", after=[c])
        run = await graph.submit()
        run_ids.append(run.run_id)
        status = await wait_run(run, timeout=30)
        effects = await read_effects(redis, tid, names)

    states = {n: status.nodes[n].state.value for n in names}
    counts = {n: effects[n].count for n in names}
    assert states == {
        "x": "succeeded",
        "s": "skipped",
        "f": "failed",
        "c": "upstream_failed",
        "d": "skipped",
    }, (states, counts)
    assert counts == {"x": 1, "s": 0, "f": 1, "c": 0, "d": 0}
    assert status.state == "failed"


@pytest.mark.asyncio
async def test_a_dead_node_retried_continues_its_run_across_processes(workers: Workers) -> None:
    """``mid`` fails for good in a worker process: it is a dead letter naming its run and
    node; once fixed, its retry (from this process) runs it and then ``leaf``, once each."""
    queues = new_queues("dlq")
    await workers.start_live(queues, 2)
    tid = uuid.uuid4().hex
    fixed = f"{graph_app.prefix(tid)}fixed"
    names = ["root", "mid", "leaf", "side"]
    async with client(queues, tid) as (app, redis, run_ids):
        step = app.tasks["step"]
        graph = app.graph(f"dlq-{tid[:8]}")
        root = graph.add(step, tid, "root", name="root")
        mid = graph.add(step, tid, "mid", name="mid", fail_unless=fixed, after=[root])
        graph.add(step, tid, "leaf", name="leaf", after=[mid], queue=queues[1])
        graph.add(step, tid, "side", name="side", after=[root])
        run = await graph.submit()
        run_ids.append(run.run_id)
        assert (await wait_run(run, timeout=30)).state == "failed"
        try:
            [letter] = await app.dead_letters.list(run_id=run.run_id)
            assert (letter.node, letter.node_index) == ("mid", 1)
            await redis.set(fixed, 1, ex=600)
            await app.dead_letters.retry(letter.job_id)
            status = await wait_run(run, timeout=30)
        finally:
            await redis.delete(app.keys.dead_letter(keys.node_job_id(run.run_id, 1)))
        effects = await read_effects(redis, tid, names)
    assert status.state == "succeeded"
    assert {n: effects[n].count for n in names} == {"root": 1, "mid": 2, "leaf": 1, "side": 1}
    assert effects["mid"].attempts == [1, 1]  # the retry is a new first attempt


# -- 2. a wide fan-in whose parents end together ----------------------------------------------


@pytest.mark.asyncio
async def test_500_parents_ending_at_once_release_their_child_exactly_once(
    workers: Workers,
) -> None:
    queues = new_queues("fanin")
    width = 500
    # 3 x 200 slots: every parent runs at once, and no single process can hold them all
    procs = await workers.start_live(queues, 3, concurrency=200)
    tid = uuid.uuid4().hex
    async with client(queues, tid) as (app, redis, run_ids):
        gate, step = app.tasks["gate"], app.tasks["step"]
        graph = app.graph(f"fanin-{tid[:8]}")
        parents = [
            graph.add(gate, tid, f"p{i}", name=f"p{i}", queue=queues[i % 2]) for i in range(width)
        ]
        graph.add(step, tid, "child", deps=parents, name="child")
        run = await graph.submit()
        run_ids.append(run.run_id)

        await wait_count(redis, graph_app.arrived_key(tid), width, timeout=60)
        assert (await run.status()).nodes["child"].state.value == "pending"
        release = time.time() + 0.5
        await redis.set(graph_app.barrier_key(tid), repr(release), ex=3600)
        result = await run.wait(timeout=60)
        status = await run.status()
        names = [f"p{i}" for i in range(width)]
        effects = await read_effects(redis, tid, [*names, "child"])

    assert status.state == "succeeded", (status.counts, workers.logs())
    assert result["child"] == "child"
    child = effects["child"]
    assert child.count == 1, child
    assert child.deps == names
    assert status.nodes["child"].attempt == 1
    assert all(effects[n].count == 1 for n in names)
    ends = [effects[n].ends[0] for n in names]
    assert child.starts[0] >= max(ends), (child.starts, max(ends))
    pids = Counter(effects[n].pids[0] for n in names)
    assert set(pids) <= {w.pid for w in procs}
    assert len(pids) >= 3, pids  # 500 parents at once need all three processes
    sys.stdout.write(
        f"parents per process {dict(pids)}; parents' ends spread over "
        f"{max(ends) - min(ends):.3f}s after the barrier at {release:.3f}\n"
    )


# -- 3. a long chain and a wide fan -----------------------------------------------------------


@pytest.mark.asyncio
async def test_2000_node_chain_and_1000_wide_fan_complete_across_processes(
    workers: Workers,
) -> None:
    queues = new_queues("big")
    procs = await workers.start_live(queues, 3)
    tid = uuid.uuid4().hex
    chain_names = [f"c{i}" for i in range(2000)]
    mid_names = [f"m{i}" for i in range(1000)]
    async with client(queues, tid) as (app, redis, run_ids):
        step = app.tasks["step"]
        chain = app.graph(f"chain-{tid[:8]}")
        prev: list[Node] = []
        for i, name in enumerate(chain_names):
            prev = [chain.add(step, tid, name, name=name, after=prev, queue=queues[i % 2])]
        fan = app.graph(f"fan-{tid[:8]}")
        root = fan.add(step, tid, "root", name="root")
        mids = [
            fan.add(step, tid, n, sleep=0.01, name=n, after=[root], queue=queues[i % 2])
            for i, n in enumerate(mid_names)
        ]
        fan.add(step, tid, "join", name="join", after=mids)

        began = time.monotonic()
        chain_run = await chain.submit()
        run_ids.append(chain_run.run_id)
        fan_run = await fan.submit()
        run_ids.append(fan_run.run_id)
        fan_results = await fan_run.wait(timeout=90)
        fan_took = time.monotonic() - began
        chain_results = await chain_run.wait(timeout=90)
        chain_took = time.monotonic() - began
        chain_status = await chain_run.status()
        fan_status = await fan_run.status()
        effects = await read_effects(redis, tid, [*chain_names, "root", *mid_names, "join"])
    sys.stdout.write(f"fan done after {fan_took:.2f}s, chain after {chain_took:.2f}s\n")

    assert chain_status.state == "succeeded" and chain_status.done == 2000
    assert fan_status.state == "succeeded" and fan_status.done == 1002
    assert chain_results == {n: n for n in chain_names}
    assert fan_results == {n: n for n in ["root", *mid_names, "join"]}
    not_once = {n: e.count for n, e in effects.items() if e.count != 1}
    assert not not_once, not_once
    for before, after in zip(chain_names, chain_names[1:], strict=False):
        assert effects[after].starts[0] >= effects[before].ends[0], (before, after)
    assert all(effects[m].starts[0] >= effects["root"].ends[0] for m in mid_names)
    assert effects["join"].starts[0] >= max(effects[m].ends[0] for m in mid_names)
    chain_pids = Counter(effects[n].pids[0] for n in chain_names)
    fan_pids = Counter(effects[n].pids[0] for n in mid_names)
    sys.stdout.write(f"chain nodes per process {dict(chain_pids)}, fan {dict(fan_pids)}\n")
    assert set(chain_pids) | set(fan_pids) <= {w.pid for w in procs}
    assert len(set(chain_pids) | set(fan_pids)) >= 2


# -- 4. a worker killed mid-node --------------------------------------------------------------


@pytest.mark.asyncio
async def test_sigkilled_workers_node_reruns_elsewhere_with_attempt_2(
    workers: Workers,
) -> None:
    queues = new_queues("kill")
    procs = await workers.start_live(queues, 3)
    tid = uuid.uuid4().hex
    async with client(queues, tid) as (app, redis, run_ids):
        step = app.tasks["step"]
        graph = app.graph(f"kill-{tid[:8]}")
        first = graph.add(step, tid, "first", name="first")
        # 3 s on its first attempt (the victim), 0.05 s on the re-run
        slow = graph.add(step, tid, "slow", sleep=0.05, first_sleep=3.0, name="slow", deps=[first])
        side = [graph.add(step, tid, f"side{i}", name=f"side{i}", after=[first]) for i in range(6)]
        graph.add(step, tid, "last", name="last", deps=[slow], after=side)
        run = await graph.submit()
        run_ids.append(run.run_id)

        await wait_count(redis, graph_app.count_key(tid, "slow"), 1, timeout=30)
        # the side nodes end first, so the victim is running "slow" alone when killed
        await wait_states(run, [f"side{i}" for i in range(6)], "succeeded", timeout=30)
        victim_pid = int((await reply(redis.lrange(graph_app.pid_key(tid, "slow"), 0, -1)))[0])
        victim = workers.by_pid(victim_pid)
        assert (await run.status()).nodes["slow"].state.value == "running"
        victim.proc.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(victim.proc.wait, 10)
        killed_at = time.monotonic()

        results = await run.wait(timeout=30)
        waited = time.monotonic() - killed_at
        status = await run.status()
        names = ["first", "slow", *(f"side{i}" for i in range(6)), "last"]
        effects = await read_effects(redis, tid, names)
    sys.stdout.write(f"run ended {waited:.2f}s after the kill\n")

    assert victim.proc.returncode == -signal.SIGKILL
    assert status.state == "succeeded", status.counts
    assert results["slow"] == "slow" and results["last"] == "last"
    slow_fx = effects["slow"]
    assert slow_fx.count == 2, slow_fx
    assert slow_fx.attempts == [1, 2]
    assert slow_fx.pids[0] == victim_pid
    assert slow_fx.pids[1] != victim_pid and slow_fx.pids[1] in {w.pid for w in procs}
    assert len(slow_fx.ends) == 1  # the victim never got to the end of its body
    assert status.nodes["slow"].attempt == 2
    assert status.nodes["slow"].worker is not None
    assert f"-{slow_fx.pids[1]}-" in status.nodes["slow"].worker
    for name in names:
        if name != "slow":
            assert effects[name].count == 1, (name, effects[name])
            assert status.nodes[name].attempt == 1
    assert effects["last"].starts[0] >= slow_fx.ends[0]
    assert effects["last"].deps == ["slow"]


# -- 5. the submitter exits at once ------------------------------------------------------------


SUBMIT = (
    "import asyncio, sys\n"
    "from tests.apps import graph_app\n"
    "print(asyncio.run(graph_app.submit_demo(sys.argv[1])))\n"
)


@pytest.mark.asyncio
async def test_run_completes_after_its_submitting_process_exits(workers: Workers) -> None:
    queues = new_queues("detach")
    await workers.start_live(queues, 2)
    tid = uuid.uuid4().hex
    env = child_env(**queue_env(queues))
    async with client(queues, tid) as (app, redis, run_ids):
        done = await anyio.to_thread.run_sync(
            lambda: processes.run([sys.executable, "-c", SUBMIT, tid], env, timeout=60)
        )
        assert done.returncode == 0, done.stdout + done.stderr
        run_id = done.stdout.strip().splitlines()[-1]
        run_ids.append(run_id)
        assert len(run_id) == 32, done.stdout

        handle = app.run_handle(run_id)
        results = await handle.wait(timeout=30)
        status = await handle.status()
        names = ["root", *(f"mid-{i}" for i in range(20)), "join"]
        effects = await read_effects(redis, tid, names)

    assert status.state == "succeeded", status.counts
    assert status.graph == f"detached-{tid}"
    assert results == {n: n for n in names}
    assert all(effects[n].count == 1 for n in names), {n: e.count for n, e in effects.items()}
    assert effects["join"].deps == [f"mid-{i}" for i in range(20)]
    assert effects["join"].starts[0] >= max(effects[f"mid-{i}"].ends[0] for i in range(20))
