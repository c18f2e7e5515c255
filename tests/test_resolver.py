"""Graph runs against real Redis with in-process workers: results flowing from parents to
children, trigger rules, exactly-once release, big graphs, atomic submission, cancel,
finish idempotency, retention, status and retries inside a graph.

Every test uses its own queue (the ``make_app`` fixture) and records side effects under
``tftest:<queue>:`` keys, deleted at teardown with the runs' own keys. Tests that compare
DBSIZE use database 7, which no other test writes to; nothing is ever flushed.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import pytest
import pytest_asyncio
from redis.asyncio import Redis

import taskflow
from taskflow._clock import now_ms
from taskflow._protocol import keys
from taskflow._protocol.scripts import NodeVerdict
from taskflow.errors import (
    ArgumentError,
    GraphCycle,
    GraphError,
    GraphFailed,
    PayloadTooLarge,
    RunNotFound,
)
from taskflow.graph import Graph, NodeState, Trigger
from taskflow.runs import RunHandle, RunStatus
from tests.apps.shared import REDIS_URL
from tests.helpers import delete_keys, reply, until

pytestmark = pytest.mark.asyncio

ISOLATED_DB_URL = REDIS_URL.rpartition("/")[0] + "/7"  # the test server, database 7
MakeApp = Callable[..., taskflow.TaskFlow]


@dataclass
class Tracker:
    """Keys a test creates, deleted at teardown (runs that never end never expire soon)."""

    prefix: str
    runs: list[str] = field(default_factory=list)

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def run(self, handle: RunHandle) -> RunHandle:
        self.runs.append(handle.run_id)
        return handle


@pytest_asyncio.fixture
async def tracker(redis: Redis, queue_name: str) -> AsyncIterator[Tracker]:
    tracked = Tracker(prefix=f"tftest:{queue_name}:")
    yield tracked
    run_keys = [k for run_id in tracked.runs for k in keys.run_keys(run_id)]
    await delete_keys(redis, tracked.prefix + "*", run_keys)


def fresh(make_app: MakeApp, **settings: Any) -> taskflow.TaskFlow:
    # finished runs of these tests need not outlive them by a day
    settings.setdefault("run_retention", timedelta(seconds=30))
    return make_app(**settings)


async def run_graph(
    graph: Graph, tracker: Tracker, timeout: float = 20
) -> tuple[RunHandle, dict[str, Any] | GraphFailed]:
    """Submit and wait; the outcome is the results, or the GraphFailed raised."""
    run = tracker.run(await graph.submit())
    try:
        return run, await run.wait(timeout=timeout)
    except GraphFailed as exc:
        return run, exc


async def is_running(run: RunHandle, name: str) -> bool:
    return (await run.status()).nodes[name].state is NodeState.RUNNING


async def gone(redis: Redis, *names: str) -> bool:
    return not await redis.exists(*names)


async def longer_than(redis: Redis, key: str, length: int) -> bool:
    return int(await reply(redis.llen(key))) > length


async def idle(worker: taskflow.Worker) -> bool:
    return not worker.running


def assert_all_terminal(status: RunStatus) -> None:
    assert status.state != "running"
    assert status.done == status.total == len(status.nodes)
    for node in status.nodes.values():
        assert node.state.terminal, f"{node.name} is {node.state}"


async def run_snapshot(redis: Redis, run_id: str, *extra_keys: str) -> dict[str, Any]:
    """Everything a run's state is made of, plus the given keys (values and zsets)."""
    out: dict[str, Any] = {}
    for key in keys.run_keys(run_id):
        out[key] = await reply(redis.hgetall(key))
    for key in extra_keys:
        kind = (await redis.type(key)).decode()
        if kind == "zset":
            out[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            out[key] = await redis.get(key)
        else:
            out[key] = kind
    return out


# -- results flow -------------------------------------------------------------------------


async def test_results_flow_from_parents_to_children(make_app: MakeApp, tracker: Tracker) -> None:
    app = fresh(make_app)

    @app.task
    async def num(x: int) -> int:
        return x

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def total(xs: list[int]) -> int:
        return sum(xs)

    @app.task
    async def describe(parts: dict[str, int], label: str, *, scale: int = 1) -> dict[str, int]:
        return {k: v * scale for k, v in parts.items()} | {"label": len(label)}

    @app.task
    async def echo(value: Any) -> Any:
        return value

    g = app.graph("flow")
    a = g.add(num, 2, name="a")
    b = g.add(num, 3, name="b")
    s = g.add(add, a, b=b, name="sum")
    t = g.add(total, [a, b, s, 10], name="total")
    d = g.add(describe, {"a": a, "t": t, "lit": 1}, "xyz", scale=s, name="describe")
    g.add(echo, [{"x": a, "y": [b, None]}, (t,), {"__taskflow_node__": 1}], name="nested")
    g.add(echo, "order only", name="later", after=[d])

    async with app, app.worker(concurrency=20):
        run, outcome = await run_graph(g, tracker)
        status = await run.status()
    assert outcome == {
        "a": 2,
        "b": 3,
        "sum": 5,
        "total": 20,
        "describe": {"a": 10, "t": 100, "lit": 5, "label": 3},
        "nested": [{"x": 2, "y": [3, None]}, [20], {"__taskflow_node__": 1}],
        "later": "order only",
    }
    assert status.state == "succeeded"
    assert_all_terminal(status)
    assert status.nodes["describe"].data_parents == ["a", "total", "sum"]
    assert status.nodes["later"].parents == ["describe"]
    assert status.nodes["later"].data_parents == []


async def test_a_node_can_run_on_another_queue(
    make_app: MakeApp, tracker: Tracker, queue_name: str
) -> None:
    app = fresh(make_app)
    seen: list[str] = []

    @app.task
    async def where(x: int) -> int:
        seen.append(taskflow.current_job().queue)
        return x

    alt = f"{queue_name}-alt"
    g = app.graph("queues")
    first = g.add(where, 1, name="first")
    g.add(where, first, name="second", queue=alt)
    async with app, app.worker(queues=[queue_name, alt]):
        run, outcome = await run_graph(g, tracker)
        status = await run.status()
    assert outcome == {"first": 1, "second": 1}
    assert seen == [queue_name, alt]
    assert status.nodes["second"].queue == alt and status.nodes["first"].queue == queue_name


async def test_child_arguments_are_validated_against_its_types(
    make_app: MakeApp, tracker: Tracker
) -> None:
    app = fresh(make_app)
    ran: list[Any] = []

    @app.task
    async def produce(value: Any) -> Any:
        return value

    @app.task
    async def double(x: int) -> int:
        ran.append(x)
        return 2 * x

    g = app.graph("types")
    wrong = g.add(produce, "not a number", name="wrong")
    right = g.add(produce, "21", name="right")  # lax validation: "21" is a fine int
    g.add(double, wrong, name="child")
    g.add(double, right, name="coerced")
    g.add(double, g["child"], name="grandchild")

    async with app, app.worker():
        run, outcome = await run_graph(g, tracker)
        status = await run.status()
    assert isinstance(outcome, GraphFailed)
    assert ran == [21], "the child with a wrong argument never ran its body"
    assert outcome.states == {
        "wrong": "succeeded",
        "right": "succeeded",
        "child": "failed",
        "coerced": "succeeded",
        "grandchild": "upstream_failed",
    }
    error = outcome.failed["child"]
    assert error["type"] == f"{ArgumentError.__module__}.{ArgumentError.__qualname__}"
    assert "'x'" in error["message"] and "not a number" in error["message"]
    assert outcome.results["coerced"] == 42
    assert status.nodes["child"].error == error
    assert status.state == "failed"


# -- trigger rules ------------------------------------------------------------------------

OUTCOMES = ("succeed", "fail", "skip")
VALUE = {"succeed": 1, "fail": None, "skip": None}


def expected_states(rule: str, outcomes: tuple[str, ...]) -> set[str]:
    bad, skip = "fail" in outcomes, "skip" in outcomes
    if rule == "all_success":
        if bad and skip:  # whichever parent ends first decides; both are "did not run"
            return {"upstream_failed", "skipped"}
        return {"upstream_failed"} if bad else {"skipped"} if skip else {"succeeded"}
    if rule == "none_failed":
        return {"skipped"} if bad else {"succeeded"}
    if rule == "any_failed":
        return {"succeeded"} if bad else {"skipped"}
    assert rule == "all_done"
    return {"succeeded"}


Cases = dict[str, tuple[str, tuple[str, ...]]]


def trigger_graph(app: taskflow.TaskFlow) -> tuple[Graph, Cases]:
    """Two parents of each outcome; a child per rule and parent combination; and chains
    below children that never ran."""

    @app.task
    async def ok(x: int) -> int:
        return x

    @app.task
    async def boom(x: int) -> int:
        raise ValueError(f"boom {x}")

    @app.task
    async def collect(*parents: Any) -> list[Any]:
        return list(parents)

    g = app.graph("triggers")
    parents: dict[str, list[Any]] = {"succeed": [], "fail": [], "skip": []}
    for k in (1, 2):
        parents["succeed"].append(g.add(ok, 1, name=f"S{k}"))
        parents["fail"].append(g.add(boom, k, name=f"F{k}"))
        # an any_failed node whose parent succeeded is skipped
        root = g.add(ok, 10 + k, name=f"R{k}")
        parents["skip"].append(g.add(collect, root, name=f"K{k}", trigger="any_failed"))
    cases: Cases = {}
    combos = [(o,) for o in OUTCOMES] + list(itertools.combinations_with_replacement(OUTCOMES, 2))
    for rule in Trigger:
        for combo in combos:
            name = f"{rule.value}:{'-'.join(combo)}"
            ps = [parents[o][k] for k, o in enumerate(combo)]
            g.add(collect, *ps, name=name, trigger=rule)
            cases[name] = (rule.value, combo)
    # descendants of nodes that never ran, transitively
    g.add(collect, g["all_success:fail"], name="uf1")
    g.add(collect, g["uf1"], name="uf2")
    g.add(collect, g["uf2"], name="uf3", trigger="none_failed")  # a failed parent: skipped
    g.add(collect, g["uf2"], name="uf-done", trigger="all_done")  # runs, gets None
    g.add(collect, g["uf2"], name="uf-any", trigger="any_failed")  # upstream_failed counts
    g.add(collect, g["any_failed:succeed"], name="sk1")
    g.add(collect, g["sk1"], name="sk2")
    g.add(collect, g["sk2"], name="sk-none", trigger="none_failed")  # skipped parents are fine
    g.add(collect, g["sk2"], name="sk-any", trigger="any_failed")
    return g, cases


def check_table(cases: Cases, states: dict[str, str], results: dict[str, Any]) -> None:
    for k in (1, 2):
        assert states[f"S{k}"] == "succeeded" and states[f"F{k}"] == "failed"
        assert states[f"K{k}"] == "skipped"
    for name, (rule, combo) in cases.items():
        assert states[name] in expected_states(rule, combo), (name, states[name])
        if states[name] == "succeeded":
            assert results[name] == [VALUE[o] for o in combo], name
    assert states["uf1"] == states["uf2"] == "upstream_failed"
    assert states["uf3"] == "skipped"
    assert states["uf-done"] == "succeeded" and results["uf-done"] == [None]
    assert states["uf-any"] == "succeeded" and results["uf-any"] == [None]
    assert states["sk1"] == states["sk2"] == "skipped"
    assert states["sk-none"] == "succeeded" and results["sk-none"] == [None]
    assert states["sk-any"] == "skipped"


async def test_trigger_rules_table(make_app: MakeApp, tracker: Tracker) -> None:
    app = fresh(make_app)
    g, cases = trigger_graph(app)
    async with app, app.worker(concurrency=50):
        run, outcome = await run_graph(g, tracker)
        status = await run.status()

    assert isinstance(outcome, GraphFailed)
    assert_all_terminal(status)
    assert status.state == "failed"
    states = outcome.states
    assert states == {name: n.state.value for name, n in status.nodes.items()}
    check_table(cases, states, outcome.results)

    # nodes that never ran were settled in the script that ended their ancestor, at once
    f1 = status.nodes["F1"]
    for name in ("all_success:fail", "uf1", "uf2", "uf3"):
        node = status.nodes[name]
        assert node.finished == f1.finished, name
        assert node.started is None and node.worker is None and node.attempt == 0, name

    # GraphFailed lists failures (and what never ran because of them) with their error data
    not_succeeded = {n for n, s in states.items() if s in ("failed", "upstream_failed")}
    assert set(outcome.failed) == not_succeeded
    assert outcome.failed["F1"]["type"] == "ValueError"
    assert outcome.failed["F1"]["message"] == "boom 1"
    assert "ValueError: boom 1" in outcome.failed["F1"]["traceback"]
    assert outcome.failed["uf1"]["type"] == "taskflow.UpstreamFailed"
    assert "all_success:fail" in outcome.failed["uf1"]["message"]
    assert "F1" in str(outcome) and "boom 1" in str(outcome)
    assert not any(s == "skipped" for n, s in states.items() if n in outcome.failed)
    assert status.nodes["uf3"].error is not None
    assert status.nodes["uf3"].error["type"] == "taskflow.Skipped"


async def test_all_done_child_gets_none_for_a_failed_data_parent(
    make_app: MakeApp, tracker: Tracker
) -> None:
    app = fresh(make_app)

    @app.task
    async def ok() -> str:
        return "fine"

    @app.task
    async def boom() -> str:
        raise RuntimeError("nope")

    @app.task
    async def summary(good: str | None, bad: str | None, both: list[str | None]) -> list[Any]:
        return [good, bad, both]

    g = app.graph("all-done")
    good, bad = g.add(ok, name="good"), g.add(boom, name="bad")
    g.add(summary, good, bad, [bad, good], name="summary", trigger="all_done")
    async with app, app.worker():
        _, outcome = await run_graph(g, tracker)
    assert isinstance(outcome, GraphFailed)
    assert outcome.results == {"good": "fine", "summary": ["fine", None, [None, "fine"]]}
    assert list(outcome.failed) == ["bad"]


async def test_a_run_with_skipped_nodes_but_no_failure_succeeds(
    make_app: MakeApp, tracker: Tracker
) -> None:
    app = fresh(make_app)

    @app.task
    async def ok() -> int:
        return 1

    @app.task
    async def handler(x: int | None) -> str:
        return "handled"

    g = app.graph("happy")
    root = g.add(ok, name="root")
    on_error = g.add(handler, root, name="on-error", trigger="any_failed")
    g.add(handler, on_error, name="after-handler")
    g.add(ok, name="joined", after=[on_error, root], trigger="none_failed")
    async with app, app.worker():
        run, outcome = await run_graph(g, tracker)
        status = await run.status()
    assert outcome == {"root": 1, "joined": 1}
    assert status.state == "succeeded"
    assert status.counts == {"succeeded": 2, "skipped": 2}
    assert status.nodes["on-error"].error is not None
    assert status.nodes["on-error"].error["type"] == "taskflow.Skipped"


# -- scale --------------------------------------------------------------------------------


async def test_fan_in_of_500_releases_the_child_exactly_once(
    make_app: MakeApp, tracker: Tracker, redis: Redis
) -> None:
    app = fresh(make_app)
    counter = tracker.key("gather-runs")

    @app.task
    async def leaf(i: int) -> int:
        await anyio.sleep(0.01)
        return i

    @app.task
    async def gather(xs: list[int]) -> int:
        await app.redis.incr(counter)
        return sum(xs)

    g = app.graph("fan-in")
    leaves = [g.add(leaf, i, name=f"leaf-{i}") for i in range(500)]
    g.add(gather, leaves, name="gather")
    async with app, app.worker(concurrency=300), app.worker(concurrency=300):
        run, outcome = await run_graph(g, tracker, timeout=30)
        status = await run.status()
    assert not isinstance(outcome, GraphFailed), outcome
    assert outcome["gather"] == sum(range(500))
    assert await redis.get(counter) == b"1"
    assert status.nodes["gather"].attempt == 1
    assert status.counts == {"succeeded": 501}


async def test_chain_of_2000_nodes(make_app: MakeApp, tracker: Tracker) -> None:
    app = fresh(make_app)

    @app.task
    async def inc(x: int) -> int:
        return x + 1

    g = app.graph("chain")
    node = g.add(inc, 0, name="n0")
    for i in range(1, 2000):
        node = g.add(inc, node, name=f"n{i}")
    assert len(g.levels()) == 2000
    async with app, app.worker(concurrency=4):
        run, outcome = await run_graph(g, tracker, timeout=40)
        status = await run.status()
    assert not isinstance(outcome, GraphFailed), outcome
    assert outcome["n1999"] == 2000
    assert outcome == {f"n{i}": i + 1 for i in range(2000)}
    assert status.done == 2000 and status.state == "succeeded"


async def test_fan_out_1000_and_back(make_app: MakeApp, tracker: Tracker) -> None:
    app = fresh(make_app)

    @app.task
    async def seed() -> int:
        return 7

    @app.task
    async def mid(x: int, i: int) -> int:
        return x + i

    @app.task
    async def total(xs: list[int]) -> int:
        return sum(xs)

    g = app.graph("fan")
    root = g.add(seed, name="root")
    mids = [g.add(mid, root, i, name=f"mid-{i}") for i in range(1000)]
    g.add(total, mids, name="sink")
    async with app, app.worker(concurrency=200):
        run, outcome = await run_graph(g, tracker, timeout=30)
    assert not isinstance(outcome, GraphFailed), outcome
    assert outcome["sink"] == 7 * 1000 + sum(range(1000))
    assert len(outcome) == 1002


async def test_submit_of_10000_nodes_is_a_bounded_number_of_round_trips(
    make_app: MakeApp, tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = fresh(make_app)

    @app.task
    async def step(x: int) -> int:
        return x

    g = app.graph("big")
    roots = [g.add(step, r, name=f"root-{r}") for r in range(10)]
    for i in range(9990):
        parent = roots[i % 10]
        if i % 3:
            g.add(step, parent, name=f"n-{i}")
        else:
            g.add(step, i, name=f"n-{i}", after=[parent])
    assert len(g) == 10_000

    async with app:
        await app.redis.ping()  # a connection exists before counting
        connection_class = app.redis.connection_pool.connection_class
        sends = 0
        original = connection_class.send_packed_command

        async def counting(self: Any, command: Any, check_health: bool = True) -> None:
            nonlocal sends
            sends += 1
            await original(self, command, check_health)

        monkeypatch.setattr(connection_class, "send_packed_command", counting)
        run = tracker.run(await g.submit())
        monkeypatch.undo()

        # its time is measured in benchmarks/graph.py; here, that it is a few round trips
        assert sends <= 3, f"submit took {sends} round trips"
        redis = app.redis
        assert int(await reply(redis.hget(keys.run(run.run_id, "meta"), "total"))) == 10_000
        assert await reply(redis.hlen(keys.run(run.run_id, "state"))) == 10_000
        assert await reply(redis.hlen(keys.run(run.run_id, "nodes"))) == 10_000
        queued = await redis.zrange(keys.queue(step.options.queue), 0, -1)
        assert sorted(queued) == sorted(f"{run.run_id}.{r}".encode() for r in range(10))
        status = await run.status()
        assert status.counts == {"queued": 10, "pending": 9990}
        # no worker: cancel takes the roots' jobs off the queue; the tracker deletes the rest
        final = await run.cancel()
        assert final.state == "cancelled"
        assert await redis.zcard(keys.queue(step.options.queue)) == 0
        assert await redis.exists(*(keys.job(j.decode()) for j in queued)) == 0


# -- atomic submission ----------------------------------------------------------------------


async def test_rejected_graphs_leave_redis_unchanged(make_app: MakeApp, tracker: Tracker) -> None:
    app = fresh(make_app, redis_url=ISOLATED_DB_URL)

    @app.task
    async def step(x: int) -> int:
        return x

    @app.task
    async def text(s: str) -> str:
        return s

    async with app:
        redis = app.redis
        before = await redis.dbsize()

        g = app.graph("cyclic")
        a = g.add(step, 1, name="a")
        b = g.add(step, a, name="b")
        c = g.add(step, b, name="c")
        with pytest.raises(GraphCycle) as info:
            g.add_edge(c, a)
        assert info.value.cycle == ["a", "b", "c", "a"]
        other = app.graph("other")
        stranger = other.add(step, 1, name="stranger")
        with pytest.raises(GraphError, match="stranger"):
            g.add(step, stranger, name="d")
        with pytest.raises(GraphError, match="stranger"):
            g.add_edge(stranger, c)

        # a loop made behind add_edge's back is still caught, before anything is written
        a.parents.append(c)
        g._children.setdefault(c.index, []).append(a)
        with pytest.raises(GraphCycle):
            await g.submit()
        with pytest.raises(GraphError, match="no nodes"):
            await app.graph("empty").submit()

        bad_literal = app.graph("bad-literal")
        first = bad_literal.add(step, 1, name="first")
        bad_literal.add(step, "not an int", name="second", after=[first])
        with pytest.raises(ArgumentError, match="'x'"):
            await bad_literal.submit()

        huge = app.graph("huge")
        ok = huge.add(step, 1, name="fine")
        for i in range(5):
            huge.add(step, ok, name=f"fine-{i}")
        huge.add(text, "x" * 600_000, name="big")  # past the 512 KiB cap
        with pytest.raises(PayloadTooLarge):
            await huge.submit()

        assert await redis.dbsize() == before

        # a valid graph does write (all of it), and those keys are the run's and its roots'
        fine = app.graph("fine")
        root = fine.add(step, 1, name="root")
        fine.add(step, root, name="child")
        run = await fine.submit()
        written = {k async for k in redis.scan_iter(count=1000)}
        run_keys = {k.encode() for k in keys.run_keys(run.run_id)}
        job = keys.job(f"{run.run_id}.0").encode()
        queue = keys.queue(step.options.queue).encode()
        assert {job, queue} <= written
        assert await redis.dbsize() == before + len(run_keys & written) + 2
        await run.cancel()
        await redis.delete(*run_keys)
        assert await redis.dbsize() == before


# -- cancel -------------------------------------------------------------------------------


async def test_cancel_halfway_through_a_chain(
    make_app: MakeApp, tracker: Tracker, redis: Redis
) -> None:
    app = fresh(make_app)
    starts = tracker.key("starts")

    @app.task
    async def slow(prev: int | None, i: int) -> int:
        await reply(app.redis.rpush(starts, i))
        await anyio.sleep(0.3)
        return i

    g = app.graph("slow-chain")
    node = g.add(slow, None, 0, name="s0")
    for i in range(1, 10):
        node = g.add(slow, node, i, name=f"s{i}")

    async with app, app.worker(concurrency=10):
        run = tracker.run(await g.submit())
        await until(lambda: longer_than(app.redis, starts, 2))
        status = await run.cancel()
        started_at_cancel = await reply(app.redis.lrange(starts, 0, -1))
        # nothing can start any more: no node's job is left in its queue
        assert await app.redis.zcard(keys.queue(slow.options.queue)) == 0
        again = await run.cancel()  # a second cancel changes nothing
        with pytest.raises(GraphFailed) as info:
            await run.wait(timeout=5)
        final = await run.status()
    # the worker has drained and stopped: whatever it was going to start, it started
    assert await reply(redis.lrange(starts, 0, -1)) == started_at_cancel

    started = [int(x) for x in started_at_cancel]
    assert started == list(range(len(started))) and len(started) >= 3
    assert status.state == again.state == final.state == "cancelled"
    assert_all_terminal(status)
    assert_all_terminal(final)
    for i in range(10):
        state = final.nodes[f"s{i}"].state
        if i < len(started) - 1:
            assert state is NodeState.SUCCEEDED, (i, state)
        elif i == len(started) - 1:
            assert state in (NodeState.SUCCEEDED, NodeState.CANCELLED), (i, state)
        else:
            assert state is NodeState.CANCELLED, (i, state)
            assert final.nodes[f"s{i}"].started is None
    assert final.nodes[f"s{len(started) - 1}"].state is NodeState.CANCELLED  # aborted mid-run
    assert "s9" in info.value.failed
    assert info.value.failed["s9"]["type"] == "taskflow.Cancelled"
    assert final.finished is not None


async def test_cancel_drops_queued_nodes_of_a_wide_run(
    make_app: MakeApp, tracker: Tracker, redis: Redis
) -> None:
    app = fresh(make_app)
    starts = tracker.key("starts")

    @app.task
    async def slow(i: int) -> int:
        await reply(app.redis.rpush(starts, i))
        await anyio.sleep(0.3)
        return i

    g = app.graph("wide")
    for i in range(12):
        g.add(slow, i, name=f"w{i}")
    async with app, app.worker(concurrency=3):
        run = tracker.run(await g.submit())
        await until(lambda: longer_than(app.redis, starts, 2))
        status = await run.cancel()
        started = await reply(app.redis.lrange(starts, 0, -1))
        assert await app.redis.zcard(keys.queue(slow.options.queue)) == 0
    # the worker has drained and stopped: the first three ended and none started after them
    assert await reply(redis.lrange(starts, 0, -1)) == started
    assert len(started) == 3
    assert status.state == "cancelled"
    assert status.counts == {"cancelled": 12}
    assert_all_terminal(status)


async def test_cancel_reaches_a_claimed_node_before_it_starts(
    make_app: MakeApp, tracker: Tracker
) -> None:
    app = fresh(make_app)
    async with app:
        run, queue = await _submit_pair(app, tracker)
        redis = app.redis
        job_id = f"{run.run_id}.0"
        # a worker claimed the root but has not called node_start yet
        await redis.set(keys.in_progress(job_id), "claimer", px=60_000)
        try:
            status = await run.cancel(timeout=0.2)
            assert status.state == "running"  # the claimed root has not reported back
            assert status.nodes["root"].state is NodeState.QUEUED
            assert status.nodes["child"].state is NodeState.CANCELLED
            assert status.nodes["sibling"].state is NodeState.CANCELLED
            assert await redis.zscore(keys.ABORT, job_id) is not None
            start = await app.scripts.node_start(run.run_id, 0, "claimer", now_ms(), 1)
            assert start.verdict is NodeVerdict.CANCELLED
            assert (await run.status()).nodes["root"].started is None
            # the worker reports the node cancelled: the run ends, the abort flag is cleared
            error = b'{"type":"taskflow.Cancelled","message":"run cancelled","traceback":""}'
            assert await _finish_root(app, run, queue, "claimer", error, "cancelled") == 1
            final = await run.status()
            assert final.state == "cancelled"
            assert_all_terminal(final)
            assert await redis.zscore(keys.ABORT, job_id) is None
        finally:
            await _cleanup_jobs(app, run, queue)


async def test_cancel_of_unknown_run(make_app: MakeApp) -> None:
    async with fresh(make_app) as app:
        with pytest.raises(RunNotFound):
            await app.run_handle(uuid.uuid4().hex).cancel()


# -- finish_node: exactly once, stale claims --------------------------------------------------


async def _submit_pair(app: taskflow.TaskFlow, tracker: Tracker) -> tuple[RunHandle, str]:
    @app.task
    async def step(x: int) -> int:
        return x

    g = app.graph("pair")
    root = g.add(step, 1, name="root")
    g.add(step, root, name="child")
    g.add(step, root, name="sibling", trigger="all_done")
    run = tracker.run(await g.submit())
    return run, step.options.queue


async def _finish_root(
    app: taskflow.TaskFlow,
    run: RunHandle,
    queue: str,
    token: str,
    result: bytes = b"1",
    state: str = "succeeded",
) -> int:
    return await app.scripts.finish_node(
        run.run_id,
        0,
        queue,
        token,
        "done",
        state=state,
        result=result,
        now_ms=now_ms(),
        retention_ms=30_000,
        expiry_ms=60_000,
        lease_ms=10_000,
    )


async def _cleanup_jobs(app: taskflow.TaskFlow, run: RunHandle, queue: str) -> None:
    await run.cancel(timeout=0)
    ids = [f"{run.run_id}.{i}" for i in range(3)]
    await app.redis.delete(*(keys.job(j) for j in ids), *(keys.in_progress(j) for j in ids))
    await app.redis.zrem(keys.queue(queue), *ids)


async def test_finishing_a_node_twice_changes_nothing(make_app: MakeApp, tracker: Tracker) -> None:
    app = fresh(make_app)
    async with app:
        run, queue = await _submit_pair(app, tracker)
        redis = app.redis
        job_id = f"{run.run_id}.0"
        watched = [
            keys.queue(queue),
            keys.in_progress(job_id),
            keys.job(job_id),
            keys.job(f"{run.run_id}.1"),
            keys.job(f"{run.run_id}.2"),
        ]
        await redis.set(keys.in_progress(job_id), "token-1", px=60_000)
        try:
            assert await _finish_root(app, run, queue, "token-1") == 1
            first = await run_snapshot(redis, run.run_id, *watched)
            status = await run.status()
            assert status.nodes["root"].state is NodeState.SUCCEEDED
            assert status.nodes["child"].state is NodeState.QUEUED
            assert status.nodes["sibling"].state is NodeState.QUEUED
            assert status.done == 1
            queued = await redis.zrange(keys.queue(queue), 0, -1)
            assert sorted(queued) == sorted(
                [f"{run.run_id}.1".encode(), f"{run.run_id}.2".encode()]
            )

            assert await _finish_root(app, run, queue, "token-1", b"999") == 2
            assert await run_snapshot(redis, run.run_id, *watched) == first
            # even with the same token re-set (a confused retry of the call), nothing re-applies
            await redis.set(keys.in_progress(job_id), "token-1", px=60_000)
            assert await _finish_root(app, run, queue, "token-1", b"999") == 2
            after = await run_snapshot(redis, run.run_id, *watched)
            after.pop(keys.in_progress(job_id))
            first.pop(keys.in_progress(job_id))
            assert after == first
            meta = await reply(redis.hgetall(keys.run(run.run_id, "meta")))
            assert meta[b"done"] == b"1"
            assert await reply(redis.hget(keys.run(run.run_id, "results"), "0")) == b"1"
        finally:
            await _cleanup_jobs(app, run, queue)


async def test_stale_finish_is_rejected(make_app: MakeApp, tracker: Tracker) -> None:
    app = fresh(make_app)
    async with app:
        run, queue = await _submit_pair(app, tracker)
        redis = app.redis
        job_id = f"{run.run_id}.0"
        watched = [keys.queue(queue), keys.in_progress(job_id), keys.job(job_id)]
        try:
            # the lease lapsed and nobody holds the job: the late finish is rejected
            before = await run_snapshot(redis, run.run_id, *watched)
            assert await _finish_root(app, run, queue, "old-owner") == 0
            assert await run_snapshot(redis, run.run_id, *watched) == before

            # another worker claimed it since: still rejected, its claim untouched
            await redis.set(keys.in_progress(job_id), "new-owner", px=60_000)
            before = await run_snapshot(redis, run.run_id, *watched)
            assert await _finish_root(app, run, queue, "old-owner", b"666") == 0
            assert await run_snapshot(redis, run.run_id, *watched) == before
            assert (await run.status()).nodes["root"].state is NodeState.QUEUED

            # the owner's finish applies; a stale one after it changes nothing either
            assert await _finish_root(app, run, queue, "new-owner", b"5") == 1
            before = await run_snapshot(redis, run.run_id, *watched)
            assert await _finish_root(app, run, queue, "old-owner", b"666") in (0, 2)
            assert await run_snapshot(redis, run.run_id, *watched) == before
            assert await reply(redis.hget(keys.run(run.run_id, "results"), "0")) == b"5"
        finally:
            await _cleanup_jobs(app, run, queue)


# -- retention, handles, status ---------------------------------------------------------------


async def test_run_state_expires_after_retention(make_app: MakeApp, tracker: Tracker) -> None:
    app = fresh(make_app, run_retention=timedelta(seconds=1))

    @app.task
    async def step(x: int) -> int:
        return x

    g = app.graph("short-lived")
    root = g.add(step, 1, name="root")
    g.add(step, root, name="child")
    async with app, app.worker():
        run, outcome = await run_graph(g, tracker)
        assert outcome == {"root": 1, "child": 1}
        existing = 0
        for key in keys.run_keys(run.run_id):
            ttl = await app.redis.pttl(key)
            if ttl == -2:  # e.g. no node was ever skipped: that hash was never written
                continue
            existing += 1
            assert 0 < ttl <= 1000, (key, ttl)
        assert existing >= len(keys.RUN_FIELDS) - 2  # "bad" and "skip" may never be written
        await until(lambda: gone(app.redis, *keys.run_keys(run.run_id)))
        with pytest.raises(RunNotFound) as info:
            await run.status()
        assert info.value.run_id == run.run_id
        with pytest.raises(RunNotFound):
            await run.wait(timeout=1)
        unknown = app.run_handle(uuid.uuid4().hex)
        with pytest.raises(RunNotFound):
            await unknown.status()
        with pytest.raises(RunNotFound):
            await unknown.wait(timeout=1)


async def test_state_of_a_run_that_never_ends_expires_after_run_max_age(
    make_app: MakeApp, tracker: Tracker
) -> None:
    """Every key of a run carries a TTL from the moment it exists, so nothing outlives
    ``run_max_age`` even when the run never ends."""
    app = fresh(make_app, run_max_age=timedelta(seconds=1))
    gate = anyio.Event()

    @app.task
    async def quick(x: int) -> int:
        return x

    @app.task
    async def stuck(x: int) -> int:
        await gate.wait()
        return x

    g = app.graph("endless")
    root = g.add(quick, 1, name="root")
    g.add(stuck, root, name="stuck")
    async with app, app.worker() as worker:
        run = tracker.run(await g.submit())
        await until(lambda: is_running(run, "stuck"))
        ttls = {key: await app.redis.pttl(key) for key in keys.run_keys(run.run_id)}
        await until(lambda: gone(app.redis, keys.run(run.run_id, "meta")))
        with pytest.raises(RunNotFound):
            await run.status()
        gate.set()
        await until(lambda: idle(worker))
        await anyio.sleep(0.1)
        leftover = [k for k in keys.run_keys(run.run_id) if await app.redis.exists(k)]
    without_ttl = sorted(k.rsplit(":", 1)[1] for k, ttl in ttls.items() if ttl == -1)
    assert without_ttl == [], f"run keys that never expire: {without_ttl}"
    assert leftover == []


async def test_status_from_a_second_app_and_its_details(
    make_app: MakeApp, tracker: Tracker
) -> None:
    app = fresh(make_app)
    gate = anyio.Event()

    @app.task
    async def held(x: int) -> int:
        await gate.wait()
        return x

    @app.task
    async def boom(x: int) -> int:
        raise KeyError(x)

    g = app.graph("observed")
    root = g.add(held, 1, name="root")
    g.add(held, root, name="child")
    g.add(boom, root, name="bad", after=[root])

    second = fresh(make_app)
    async with app, second, app.worker() as worker:
        run = tracker.run(await g.submit())
        await until(lambda: is_running(run, "root"))
        live = await second.run_handle(run.run_id).status()
        assert live.state == "running" and live.done == 0 and live.finished is None
        assert live.nodes["root"].worker == worker.id
        assert live.nodes["root"].started is not None and live.nodes["root"].finished is None
        assert live.nodes["root"].attempt == 1
        assert live.nodes["child"].state is NodeState.PENDING
        assert live.nodes["child"].attempt == 0 and live.nodes["child"].worker is None
        gate.set()
        with pytest.raises(GraphFailed):
            await run.wait(timeout=10)
        mine = await run.status()
        other = second.run_handle(run.run_id)
        theirs = await other.status()
        with pytest.raises(GraphFailed) as info:
            await other.wait(timeout=1)

    assert theirs == mine
    assert info.value.results == {"root": 1, "child": 1}
    assert mine.run_id == run.run_id and mine.graph == "observed"
    assert mine.state == "failed" and mine.total == mine.done == 3
    assert mine.finished is not None and mine.created <= mine.finished
    for node in mine.nodes.values():
        assert node.attempt == 1 and node.worker == worker.id
        assert node.started is not None and node.finished is not None
        assert mine.created <= node.started <= node.finished <= mine.finished
    assert mine.nodes["root"].error is None
    assert mine.nodes["bad"].error is not None and mine.nodes["bad"].error["type"] == "KeyError"
    assert mine.nodes["bad"].parents == ["root"] and mine.nodes["bad"].data_parents == ["root"]
    assert mine.nodes["child"].task == "held" and mine.nodes["child"].queue == g["child"].queue
    assert mine.counts == {"succeeded": 2, "failed": 1}
    chart = run.to_mermaid()
    assert ":::succeeded" in chart and ":::failed" in chart
    assert "n0 --> n1" in chart and "n0 --> n2" in chart


async def test_retry_inside_a_graph_node(make_app: MakeApp, tracker: Tracker) -> None:
    app = fresh(make_app)
    attempts: list[int] = []

    @app.task(retries=2, backoff=taskflow.Backoff(base=0.01, cap=0.01, jitter=False))
    async def flaky(x: int) -> int:
        attempts.append(taskflow.current_job().attempt)
        if len(attempts) == 1:
            raise ConnectionError("transient")
        return x * 10

    @app.task
    async def after(x: int) -> int:
        return x + 1

    g = app.graph("retry")
    f = g.add(flaky, 4, name="flaky")
    g.add(after, f, name="after")
    async with app, app.worker():
        run, outcome = await run_graph(g, tracker)
        status = await run.status()
    assert outcome == {"flaky": 40, "after": 41}
    assert attempts == [1, 2]
    assert status.nodes["flaky"].state is NodeState.SUCCEEDED
    assert status.nodes["flaky"].attempt == 2
    assert status.nodes["after"].attempt == 1
