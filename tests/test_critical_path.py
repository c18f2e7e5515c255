"""The critical path of a graph run (taskflow/_critical_path.py, RunHandle.critical_path).

The pure computation is checked against brute force on small random DAGs; runs against a
real worker are checked against the run times the run itself recorded, never against
elapsed time, and the path's order (set by sleeps far apart) is checked as is.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import taskflow
from taskflow import NodeState, critical_path_of, slowest_dependencies
from taskflow._critical_path import CriticalPath

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


@dataclass(frozen=True)
class N:
    """A node as critical_path_of reads one."""

    name: str
    index: int
    parents: list[str] = field(default_factory=list)
    started: datetime | None = None
    finished: datetime | None = None
    state: NodeState = NodeState.SUCCEEDED
    task: str = "t"


def timed(name: str, index: int, parents: list[str], start_ms: int, run_ms: int, **kw: Any) -> N:
    start = T0 + timedelta(milliseconds=start_ms)
    return N(name, index, parents, start, start + timedelta(milliseconds=run_ms), **kw)


# -- pure: table tests ------------------------------------------------------------------


def test_a_diamond_with_a_side_branch() -> None:
    nodes = [
        timed("a", 0, [], 10, 100),
        timed("slow", 1, ["a"], 120, 600),
        timed("fast", 2, ["a"], 115, 300),
        timed("join", 3, ["slow", "fast"], 730, 100),
        timed("side", 4, ["a"], 111, 100),
    ]
    cp = critical_path_of(nodes, submitted=T0, finished=T0 + timedelta(milliseconds=850))
    assert [n.name for n in cp.nodes] == ["a", "slow", "join"]
    assert cp.length == pytest.approx(0.8)
    assert cp.wall_time == pytest.approx(0.85)
    assert cp.queue_wait == pytest.approx(0.05)
    assert cp.slack == pytest.approx({"a": 0, "slow": 0, "join": 0, "fast": 0.3, "side": 0.6})
    assert [n.wait for n in cp.nodes] == pytest.approx([0.01, 0.01, 0.01])
    assert cp.bottleneck is not None and cp.bottleneck.name == "slow"
    assert not cp.partial


def test_nodes_that_never_ran_weigh_nothing_and_are_marked() -> None:
    nodes = [
        timed("a", 0, [], 0, 100),
        timed("boom", 1, ["a"], 100, 300, state=NodeState.FAILED),
        N("after", 2, ["boom"], None, T0 + timedelta(milliseconds=400), NodeState.UPSTREAM_FAILED),
        timed("ok", 3, ["a"], 100, 50),
        N("all", 4, ["after", "ok"], None, T0, NodeState.SKIPPED),
    ]
    cp = critical_path_of(nodes, submitted=T0)
    assert [n.name for n in cp.nodes] == ["a", "boom"]  # never a trailing node that did not run
    assert cp.length == pytest.approx(0.4) and cp.wall_time == pytest.approx(0.4)
    assert cp.slack["after"] == 0 and cp.slack["ok"] == pytest.approx(0.25)
    assert cp.slack["all"] == 0
    skipped = critical_path_of([N("x", 0, state=NodeState.SKIPPED)])
    assert [(n.name, n.ran, n.run_time, n.wait) for n in skipped.nodes] == [("x", False, 0, None)]
    assert skipped.bottleneck is None and skipped.length == 0


def test_a_running_node_counts_with_its_time_so_far_and_the_path_is_partial() -> None:
    now = T0 + timedelta(seconds=2)
    nodes = [
        timed("a", 0, [], 0, 500),
        N("b", 1, ["a"], T0 + timedelta(milliseconds=500), None, NodeState.RUNNING),
        N("c", 2, ["b"], None, None, NodeState.PENDING),
        timed("d", 3, ["a"], 500, 100),
    ]
    cp = critical_path_of(nodes, submitted=T0, now=now)
    assert cp.partial
    assert [n.name for n in cp.nodes] == ["a", "b"]
    assert cp.nodes[1].run_time == pytest.approx(1.5) and cp.nodes[1].ran
    assert cp.length == pytest.approx(2.0) and cp.wall_time == pytest.approx(2.0)
    assert cp.slack["d"] == pytest.approx(1.4)


def test_waits_are_measured_from_the_latest_parent_and_never_negative() -> None:
    nodes = [
        timed("a", 0, [], 100, 100),  # submitted at 0: waited 0.1
        timed("b", 1, [], 0, 300),
        timed("c", 2, ["a", "b"], 290, 10),  # "started" before b finished: clocks differ
        timed("d", 3, ["c"], 400, 10),
    ]
    cp = critical_path_of(nodes, submitted=T0)
    waits = {n.name: n.wait for n in cp.nodes}
    assert waits == pytest.approx({"b": 0.0, "c": 0.0, "d": 0.1})


def test_defaults_come_from_the_nodes_stamps() -> None:
    cp = critical_path_of([timed("a", 0, [], 100, 200), timed("b", 1, ["a"], 400, 100)])
    assert cp.wall_time == pytest.approx(0.4) and cp.length == pytest.approx(0.3)
    assert cp.queue_wait == pytest.approx(0.1)


def test_an_edge_against_index_order_is_followed() -> None:
    # g.add_edge(later, earlier): a parent may have a higher index than its child
    nodes = [timed("early", 0, ["late"], 100, 100), timed("late", 1, [], 0, 100)]
    assert [n.name for n in critical_path_of(nodes).nodes] == ["late", "early"]


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([], "at least one node"),
        ([N("a", 0), N("a", 1)], "node name 'a' appears twice"),
        ([N("a", 0, ["ghost"])], "node 'a' has parent 'ghost'"),
        ([N("a", 0, ["b"]), N("b", 1, ["a"])], "cycle"),
    ],
)
def test_bad_nodes_are_refused_naming_the_value(nodes: list[N], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        critical_path_of(nodes)


def test_slowest_dependencies_share_the_path_length_per_task() -> None:
    def path(*parts: tuple[str, int], wall_ms: int) -> CriticalPath:
        nodes: list[N] = []
        start, parent = 0, list[str]()
        for i, (task, ms) in enumerate(parts):
            nodes.append(timed(f"n{i}", i, parent, start, ms, task=task))
            start, parent = start + ms, [f"n{i}"]
        return critical_path_of(nodes, submitted=T0, finished=T0 + timedelta(milliseconds=wall_ms))

    paths = [
        path(("fetch", 100), ("parse", 700), ("save", 200), wall_ms=1500),
        path(("fetch", 200), ("save", 700), ("save", 100), wall_ms=1500),
        path(("noop", 0), wall_ms=0),
    ]
    shares = slowest_dependencies(paths)
    assert [(s.task, s.paths) for s in shares] == [
        ("save", 2),
        ("parse", 1),
        ("fetch", 2),
        ("noop", 1),
    ]
    assert [s.share for s in shares] == pytest.approx([0.5, 0.35, 0.15, 0.0])
    assert [s.wall_share for s in shares] == pytest.approx([1 / 3, 0.7 / 3, 0.3 / 3, 0.0])
    assert shares[0].run_time == pytest.approx(1.0)
    assert slowest_dependencies([]) == []


# -- pure: properties on random DAGs ------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 8) -> tuple[list[N], dict[str, int]]:
    """A random DAG with random run times (µs, zeros included so ties happen), its nodes
    given indexes in a random order (an edge may point from a higher index to a lower)."""
    size = draw(st.integers(1, max_nodes))
    parents = [draw(st.lists(st.integers(0, i - 1), max_size=3)) if i else [] for i in range(size)]
    weights = draw(st.lists(st.sampled_from([0, 1, 2, 5, 7, 1000]), min_size=size, max_size=size))
    labels = draw(st.permutations(range(size)))
    nodes = []
    for i in range(size):
        start = T0 + draw(st.integers(0, 10_000)) * US
        nodes.append(
            N(f"v{i}", labels[i], [f"v{p}" for p in parents[i]], start, start + weights[i] * US)
        )
    order = draw(st.permutations(nodes))
    return list(order), {f"v{i}": w for i, w in enumerate(weights)}


def longest(nodes: Sequence[N], weights: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """Brute force over every path: the longest ending at each node, and starting at it."""
    parents = {n.name: n.parents for n in nodes}
    children: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for p in n.parents:
            children[p].append(n.name)

    def best(name: str, step: dict[str, list[str]]) -> int:
        return weights[name] + max((best(x, step) for x in step[name]), default=0)

    return (
        {n: best(n, parents) for n in parents},
        {n: best(n, children) for n in parents},
    )


@settings(max_examples=300, deadline=None)
@given(dags())
def test_the_path_is_a_longest_path_and_slack_is_what_a_node_may_add(
    dag: tuple[list[N], dict[str, int]],
) -> None:
    nodes, weights = dag
    cp = critical_path_of(nodes, now=T0)
    to, from_ = longest(nodes, weights)
    length = max(to.values())
    assert round(cp.length * 1e6) == length
    names = [n.name for n in cp.nodes]
    by_name = {n.name: n for n in nodes}
    assert not by_name[names[0]].parents  # starts at a root
    for parent, child in zip(names, names[1:], strict=False):
        assert parent in by_name[child].parents  # a chain of edges
    assert sum(round(n.run_time * 1e6) for n in cp.nodes) == length
    assert set(cp.slack) == set(weights)
    for name, slack in cp.slack.items():
        assert slack >= 0
        through = to[name] + from_[name] - weights[name]  # the longest path through it
        assert round(slack * 1e6) == length - through
    assert all(cp.slack[name] == 0 for name in names)
    if length:
        assert cp.bottleneck is not None
        assert cp.bottleneck.run_time == max(n.run_time for n in cp.nodes)


@settings(max_examples=100, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_the_order_nodes_come_in(
    dag: tuple[list[N], dict[str, int]], rnd: random.Random
) -> None:
    nodes, _ = dag
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    assert critical_path_of(shuffled, now=T0) == critical_path_of(nodes, now=T0)


def test_two_thousand_nodes_in_one_pass() -> None:
    rnd = random.Random(14)
    nodes = []
    for i in range(2000):
        parents = [f"v{p}" for p in rnd.sample(range(i), min(i, 3))]
        nodes.append(timed(f"v{i}", i, parents, i, rnd.randint(0, 50)))
    cp = critical_path_of(nodes)
    assert len(cp.slack) == 2000 and min(cp.slack.values()) == 0
    assert all(cp.slack[n.name] == 0 for n in cp.nodes)


# -- against a real worker ----------------------------------------------------------------


def stamps(status: taskflow.RunStatus) -> tuple[dict[str, datetime], dict[str, datetime]]:
    """Each node's start and finish as the run recorded them (every node must have run)."""
    starts, ends = {}, {}
    for n in status.nodes.values():
        assert n.started is not None and n.finished is not None, n
        starts[n.name], ends[n.name] = n.started, n.finished
    return starts, ends


def recorded(status: taskflow.RunStatus) -> dict[str, int]:
    """Each node's run time as the run recorded it, in µs."""
    starts, ends = stamps(status)
    return {name: (ends[name] - starts[name]) // US for name in starts}


@pytest.mark.asyncio
async def test_a_diamond_and_a_side_branch_run_by_a_worker(app: taskflow.TaskFlow) -> None:
    @app.task
    async def nap(seconds: float, *after: Any) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async with app, app.worker():
        g = app.graph("diamond")
        start = g.add(nap, 0.1, name="start")
        slow = g.add(nap, 0.6, start, name="slow")
        fast = g.add(nap, 0.3, start, name="fast")
        g.add(nap, 0.1, slow, fast, name="join")
        side = g.add(nap, 0.1, start, name="side")
        g.add(nap, 0.1, side, name="side-2")
        run = await g.submit()
        await run.wait(timeout=30)
        cp = await run.critical_path()
        status = await run.status()
    assert [n.name for n in cp.nodes] == ["start", "slow", "join"]
    assert [n.task for n in cp.nodes] == ["nap"] * 3
    assert cp.bottleneck is not None and cp.bottleneck.name == "slow"
    # the expected figures, from the times the run recorded
    t = recorded(status)
    length = t["start"] + t["slow"] + t["join"]
    assert round(cp.length * 1e6) == length
    assert cp.slack["fast"] == pytest.approx((t["slow"] - t["fast"]) / 1e6, abs=1e-6)
    side_chain = t["start"] + t["side"] + t["side-2"]
    assert cp.slack["side"] == pytest.approx((length - side_chain) / 1e6, abs=1e-6)
    assert cp.slack["side-2"] == cp.slack["side"]
    assert all(cp.slack[n] == 0 for n in ("start", "slow", "join"))
    assert status.finished is not None
    wall = (status.finished - status.created) // US
    assert round(cp.wall_time * 1e6) == wall
    assert cp.queue_wait == pytest.approx(max(0, wall - length) / 1e6, abs=1e-6)
    start_, end = stamps(status)
    waits = [
        start_["start"] - status.created,
        start_["slow"] - end["start"],
        start_["join"] - max(end["slow"], end["fast"]),
    ]
    expected = [max(0, w // US) / 1e6 for w in waits]
    assert [n.wait for n in cp.nodes] == pytest.approx(expected, abs=1e-6)
    assert not cp.partial


@pytest.mark.asyncio
async def test_a_chain_is_its_own_critical_path(app: taskflow.TaskFlow) -> None:
    @app.task
    async def step(x: int) -> int:
        await asyncio.sleep(0.05)
        return x + 1

    async with app, app.worker():
        g = app.graph("chain")
        node = g.add(step, 0, name="s0")
        for i in range(1, 4):
            node = g.add(step, node, name=f"s{i}")
        run = await g.submit()
        await run.wait(timeout=30)
        cp = await run.critical_path()
        t = recorded(await run.status())
    assert [n.name for n in cp.nodes] == ["s0", "s1", "s2", "s3"]
    assert round(cp.length * 1e6) == sum(t.values())
    assert set(cp.slack.values()) == {0}


@pytest.mark.asyncio
async def test_a_failed_node_and_the_node_it_stopped(app: taskflow.TaskFlow) -> None:
    @app.task
    async def nap(seconds: float, *after: Any) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @app.task
    async def boom(*after: Any) -> None:
        await asyncio.sleep(0.4)
        raise RuntimeError("no")

    async with app, app.worker():
        g = app.graph("failing")
        first = g.add(nap, 0.05, name="first")
        broken = g.add(boom, first, name="boom")
        g.add(nap, 0.05, broken, name="after")
        g.add(nap, 0.05, first, name="ok")
        run = await g.submit()
        with pytest.raises(taskflow.GraphFailed):
            await run.wait(timeout=30)
        cp = await run.critical_path()
        status = await run.status()
    assert status.nodes["after"].state is NodeState.UPSTREAM_FAILED
    assert [(n.name, n.state) for n in cp.nodes] == [
        ("first", NodeState.SUCCEEDED),
        ("boom", NodeState.FAILED),
    ]
    assert cp.slack["after"] == 0  # it weighs nothing, right after the path's end
    ok, failed = status.nodes["ok"], status.nodes["boom"]
    assert failed.started and failed.finished and ok.started and ok.finished
    expected = ((failed.finished - failed.started) - (ok.finished - ok.started)) // US
    assert cp.slack["ok"] == pytest.approx(expected / 1e6, abs=1e-6)
    assert cp.bottleneck is not None and cp.bottleneck.name == "boom"
    assert not cp.partial


@pytest.mark.asyncio
async def test_a_run_still_going_has_a_partial_path(app: taskflow.TaskFlow) -> None:
    gate, started = anyio.Event(), anyio.Event()

    @app.task
    async def held() -> None:
        started.set()  # its node was marked running before its body began
        await gate.wait()

    @app.task
    async def quick(*after: Any) -> None:
        return None

    async with app, app.worker():
        g = app.graph("going")
        first = g.add(held, name="held")
        g.add(quick, first, name="quick")
        run = await g.submit()
        await started.wait()
        cp = await run.critical_path()
        gate.set()
        await run.wait(timeout=30)
    assert cp.partial
    assert [(n.name, n.state) for n in cp.nodes] == [("held", NodeState.RUNNING)]
    assert cp.nodes[0].ran and cp.nodes[0].finished is None
    assert cp.wall_time >= cp.length


@pytest.mark.asyncio
async def test_an_unknown_or_expired_run_is_not_found(app: taskflow.TaskFlow) -> None:
    async with app:
        with pytest.raises(taskflow.RunNotFound, match="'0{32}' is unknown or expired"):
            await app.run_handle("0" * 32).critical_path()


@pytest.mark.asyncio
async def test_a_run_of_two_thousand_nodes(app: taskflow.TaskFlow) -> None:
    @app.task
    async def node(*after: Any) -> None:
        return None

    rnd = random.Random(2000)
    async with app:
        g = app.graph("big")
        nodes = [g.add(node, name=f"r{i}") for i in range(40)]
        for i in range(40, 2000):
            nodes.append(g.add(node, *rnd.sample(nodes[max(0, i - 80) : i], 2), name=f"n{i}"))
        run = await g.submit()
        async with app.worker(concurrency=100):
            await run.wait(timeout=90)
        cp = await run.critical_path()
    assert len(cp.slack) == 2000 and not cp.partial
    assert min(cp.slack.values()) == 0
    assert all(cp.slack[n.name] == 0 for n in cp.nodes)
    assert cp.nodes[0].name.startswith("r")
    for parent, child in zip(cp.nodes, cp.nodes[1:], strict=False):
        assert g[parent.name] in g[child.name].parents
