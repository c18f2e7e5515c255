"""Graph nodes that fail for good are dead letters, and retrying one continues its run,
against a real Redis with in-process workers: the letter names its run and node; a retry
runs the node again and, once it succeeds, the nodes below it that never ran because it
failed (exactly once), and the run (running again) ends as its nodes now do. Refused: a
cancelled or expired run, a node already retried; two retries at once run it once.

Every test uses its own app name and queue (``named_app``); effects are counted in this
process, per run and node.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

import taskflow
from taskflow._protocol import keys
from taskflow.config import MetricsSettings, Resolution
from taskflow.dead_letters import DeadLetter
from taskflow.graph import Graph, Node
from taskflow.runs import RunHandle
from tests.apps.shared import fast_worker
from tests.helpers import reply, until
from tests.processes import redis_server

TIMEOUT = 15
MakeApp = Callable[..., taskflow.TaskFlow]


def make(named_app: MakeApp, **settings: Any) -> taskflow.TaskFlow:
    # the runs of these tests need not outlive them by a day
    settings.setdefault("run_retention", timedelta(seconds=30))
    return named_app(**settings)


class Flow:
    """A test app's tasks: ``step`` counts its runs per (run, node) and fails while its node
    is in ``broken``; ``hold`` waits until its node is released by the test."""

    def __init__(self, app: taskflow.TaskFlow) -> None:
        self.app = app
        self.ran: Counter[tuple[str, str]] = Counter()
        self.queues: dict[tuple[str, str], list[str]] = {}
        self.broken: set[str] = set()
        self.gates: dict[str, anyio.Event] = {}
        flow = self

        @app.task(retries=0)
        async def step(node: str, *parents: Any) -> str:
            job = taskflow.current_job()
            run_id = job.job_id.partition(".")[0]
            flow.ran[run_id, node] += 1
            flow.queues.setdefault((run_id, node), []).append(job.queue)
            if node in flow.gates:
                await flow.gates[node].wait()
            if node in flow.broken:
                raise ConnectionError(f"{node}: upstream service down")
            return node + "(" + ",".join(str(p) for p in parents) + ")"

        self.step = step

    def add(self, graph: Graph, name: str, *parents: Node, trigger: str = "all_success") -> Node:
        return graph.add(self.step, name, *parents, name=name, trigger=trigger)

    def runs(self, run: RunHandle) -> dict[str, int]:
        return {node: n for (run_id, node), n in self.ran.items() if run_id == run.run_id}


async def outcome(
    run: RunHandle, timeout: float = TIMEOUT
) -> dict[str, Any] | taskflow.GraphFailed:
    try:
        return await run.wait(timeout=timeout)
    except taskflow.GraphFailed as exc:
        return exc


def diamond(flow: Flow) -> Graph:
    """a -> (b, c) -> d -> e, and f (all_done) after b: b is the one that breaks."""
    g = flow.app.graph("diamond")
    a = flow.add(g, "a")
    b = flow.add(g, "b", a)
    c = flow.add(g, "c", a)
    d = flow.add(g, "d", b, c)
    flow.add(g, "e", d)
    flow.add(g, "f", b, trigger="all_done")
    return g


@pytest.mark.asyncio
async def test_a_dead_node_is_listed_with_its_run_and_its_retry_finishes_the_run(
    named_app: MakeApp,
) -> None:
    app = make(named_app)
    flow = Flow(app)
    flow.broken.add("b")
    async with app, app.worker():
        run = await diamond(flow).submit()
        failed = await outcome(run)
        assert isinstance(failed, taskflow.GraphFailed) and set(failed.failed) == {"b", "d", "e"}
        assert failed.states["d"] == "upstream_failed" and failed.states["f"] == "succeeded"
        [letter] = await app.dead_letters.list()
        assert letter.run_id == run.run_id and letter.node == "b"
        status = await run.status()
        assert letter.node_index == status.nodes["b"].index
        assert letter.job_id == keys.node_job_id(run.run_id, status.nodes["b"].index)
        assert letter.task == "step" and letter.reason == "ConnectionError"
        assert "upstream service down" in letter.message and letter.attempts == 1
        assert await app.dead_letters.list(run_id="0" * 32) == []
        assert (await app.dead_letters.get(letter.job_id)).node == "b"

        flow.broken.clear()  # the service is back: replay b
        await app.dead_letters.retry(letter.job_id)
        assert await app.dead_letters.count() == 0
        results = await run.wait(timeout=TIMEOUT)  # running again, then succeeded
    assert results == {
        "a": "a()",
        "b": "b(a())",
        "c": "c(a())",
        "d": "d(b(a()),c(a()))",
        "e": "e(d(b(a()),c(a())))",
        "f": "f(None)",  # f ran once, when b had failed; it keeps that outcome
    }
    assert flow.runs(run) == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 1, "f": 1}


@pytest.mark.asyncio
async def test_retry_while_the_run_is_still_running_waits_for_the_other_parents(
    named_app: MakeApp,
) -> None:
    app = make(named_app)
    flow = Flow(app)
    flow.broken.add("b")
    flow.gates["c"] = anyio.Event()
    async with app, app.worker():
        run = await diamond(flow).submit()

        async def letter_kept() -> bool:
            return await app.dead_letters.count() == 1

        await until(letter_kept, TIMEOUT)
        status = await run.status()
        assert status.state == "running" and status.nodes["c"].state == "running"
        assert status.nodes["d"].state == "upstream_failed"
        flow.broken.clear()
        [letter] = await app.dead_letters.list()
        await app.dead_letters.retry(letter.job_id)

        async def b_done() -> bool:
            return (await run.status()).nodes["b"].state == "succeeded"

        await until(b_done, TIMEOUT)
        # d waits for c, still running: b's success alone must not release it
        assert (await run.status()).nodes["d"].state == "pending"
        flow.gates["c"].set()
        results = await run.wait(timeout=TIMEOUT)
    assert results["e"] == "e(d(b(a()),c(a())))"
    assert flow.runs(run) == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 1, "f": 1}


@pytest.mark.asyncio
async def test_a_node_that_fails_again_is_a_dead_letter_again_and_the_run_fails_again(
    named_app: MakeApp,
) -> None:
    app = make(named_app)
    flow = Flow(app)
    flow.broken.add("b")
    async with app, app.worker():
        run = await diamond(flow).submit()
        assert isinstance(await outcome(run), taskflow.GraphFailed)
        [letter] = await app.dead_letters.list()
        await app.dead_letters.retry(letter.job_id)
        again = await outcome(run)
        assert isinstance(again, taskflow.GraphFailed)
        assert again.states == {
            "a": "succeeded",
            "b": "failed",
            "c": "succeeded",
            "d": "upstream_failed",
            "e": "upstream_failed",
            "f": "succeeded",
        }
        assert [x.job_id for x in await app.dead_letters.list()] == [letter.job_id]
        status = await run.status()
        assert status.state == "failed" and status.done == status.total == 6
    assert flow.runs(run) == {"a": 1, "b": 2, "c": 1, "f": 1}


@pytest.mark.asyncio
async def test_retry_on_another_queue(named_app: MakeApp) -> None:
    app = make(named_app)
    flow = Flow(app)
    flow.broken.add("b")
    other = app.settings.default_queue + "-b"
    try:
        async with app, app.worker(queues=[app.settings.default_queue, other]):
            run = await diamond(flow).submit()
            assert isinstance(await outcome(run), taskflow.GraphFailed)
            [letter] = await app.dead_letters.list()
            flow.broken.clear()
            moved = await app.dead_letters.retry(letter.job_id, queue=other)
            assert moved.queue == other and moved.job_id == letter.job_id
            assert (await run.wait(timeout=TIMEOUT))["e"] == "e(d(b(a()),c(a())))"
        assert flow.queues[run.run_id, "b"] == [app.settings.default_queue, other]
    finally:
        async with app:
            await app.redis.delete(keys.queue(other))


@pytest.mark.asyncio
async def test_two_retries_at_once_run_the_node_once(named_app: MakeApp) -> None:
    app = make(named_app)
    flow = Flow(app)
    flow.broken.add("b")
    async with app, app.worker():
        run = await diamond(flow).submit()
        assert isinstance(await outcome(run), taskflow.GraphFailed)
        [letter] = await app.dead_letters.list()
        flow.broken.clear()
        outcomes = await asyncio.gather(
            *(app.dead_letters.retry(letter.job_id) for _ in range(4)), return_exceptions=True
        )
        handles = [o for o in outcomes if isinstance(o, taskflow.JobHandle)]
        refused = [o for o in outcomes if not isinstance(o, taskflow.JobHandle)]
        assert len(handles) == 1, outcomes
        for error in refused:  # the letter was gone, or the node was queued already
            assert isinstance(error, taskflow.RetryRefused | taskflow.JobNotFound), error
        await run.wait(timeout=TIMEOUT)
        with pytest.raises(taskflow.RetryRefused, match="is succeeded, not failed"):
            await _retry_node_without_letter(app, letter)
    assert flow.runs(run) == {"a": 1, "b": 2, "c": 1, "d": 1, "e": 1, "f": 1}


async def _retry_node_without_letter(app: taskflow.TaskFlow, letter: DeadLetter) -> None:
    """Put the letter's record back (as if kept twice) and retry it: the node is not failed."""
    assert letter.run_id is not None and letter.node_index is not None
    record = b'{"task":"step","queue":"%s","run":"%s","node":%d}' % (
        letter.queue.encode(),
        letter.run_id.encode(),
        letter.node_index,
    )
    await reply(app.redis.hset(app.keys.dead_letter(letter.job_id), mapping={"record": record}))
    try:
        await app.dead_letters.retry(letter.job_id)
    finally:
        await app.redis.delete(app.keys.dead_letter(letter.job_id))


@pytest.mark.asyncio
async def test_retry_is_refused_for_a_cancelled_or_expired_run(named_app: MakeApp) -> None:
    app = make(named_app, run_retention=timedelta(milliseconds=300))
    flow = Flow(app)
    flow.broken.add("b")
    flow.gates["c"] = anyio.Event()
    async with app, app.worker():
        run = await diamond(flow).submit()

        async def letter_kept() -> bool:
            return await app.dead_letters.count() == 1

        await until(letter_kept, TIMEOUT)
        [letter] = await app.dead_letters.list()
        await run.cancel()
        flow.gates["c"].set()
        with pytest.raises(taskflow.RetryRefused, match="was cancelled") as refused:
            await app.dead_letters.retry(letter.job_id)
        assert refused.value.job_id == letter.job_id
        assert await app.dead_letters.count() == 1  # kept

        flow.gates.clear()
        second = await diamond(flow).submit()
        assert isinstance(await outcome(second), taskflow.GraphFailed)
        [newest, _] = await app.dead_letters.list()
        assert newest.run_id == second.run_id

        async def expired() -> bool:
            return not await app.redis.exists(keys.run(second.run_id, "meta"))

        await until(expired, TIMEOUT)
        with pytest.raises(taskflow.RetryRefused, match=f"run '{second.run_id}' expired"):
            await app.dead_letters.retry(newest.job_id)
        with pytest.raises(taskflow.JobNotFound):
            await app.dead_letters.retry(keys.node_job_id(second.run_id, 99))


@pytest.mark.asyncio
async def test_invalid_arguments_of_a_node_make_a_dead_letter(named_app: MakeApp) -> None:
    app = make(named_app)

    @app.task
    async def number() -> str:
        return "not a number"

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    async with app, app.worker():
        g = app.graph("typed")
        g.add(double, g.add(number), name="double")
        run = await g.submit()
        assert isinstance(await outcome(run), taskflow.GraphFailed)
        [letter] = await app.dead_letters.list()
    assert letter.node == "double" and letter.run_id == run.run_id
    assert letter.reason == "taskflow.errors.ArgumentError"


# -- any DAG, any node ----------------------------------------------------------------------


@st.composite
def broken_dags(draw: st.DrawFn) -> tuple[list[tuple[list[int], str]], int]:
    """Nodes as (parents, trigger), parents before children; and the node that breaks."""
    size = draw(st.integers(2, 9))
    nodes: list[tuple[list[int], str]] = []
    for i in range(size):
        parents = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        nodes.append((parents, draw(st.sampled_from(["all_success", "none_failed"]))))
    return nodes, draw(st.integers(0, size - 1))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=broken_dags())
def test_after_the_retry_every_node_ran_once_and_the_run_succeeded(
    plan: tuple[list[tuple[list[int], str]], int], named_app: MakeApp
) -> None:
    nodes, broken = plan
    app = make(named_app)

    async def scenario() -> tuple[RunHandle, Flow, dict[str, Any]]:
        flow = Flow(app)
        flow.broken.add(f"n{broken}")
        g = app.graph("random")
        made: list[Node] = []
        for i, (parents, trigger) in enumerate(nodes):
            made.append(flow.add(g, f"n{i}", *(made[p] for p in parents), trigger=trigger))
        async with app, app.worker():
            run = await g.submit()
            assert isinstance(await outcome(run), taskflow.GraphFailed)
            [letter] = await app.dead_letters.list(run_id=run.run_id)
            assert letter.node == f"n{broken}"
            flow.broken.clear()
            await app.dead_letters.retry(letter.job_id)
            return run, flow, await run.wait(timeout=TIMEOUT)

    run, flow, results = asyncio.run(scenario())
    expected = {f"n{i}": 1 for i in range(len(nodes))} | {f"n{broken}": 2}
    assert flow.runs(run) == expected
    assert set(results) == set(expected)


# -- retention ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_retried_run_keeps_its_keys_until_it_ends_then_nothing_is_left() -> None:
    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        settings_ = taskflow.Settings(
            redis_url=url,
            embedded="never",
            default_queue="retention",
            run_retention=timedelta(seconds=1),
            dead_letter_ttl=timedelta(seconds=1),
            metrics=MetricsSettings(
                flush_interval=timedelta(milliseconds=200),
                system_interval=timedelta(seconds=1),
                system_retention=timedelta(seconds=2),
                resolutions=(
                    Resolution(bucket=timedelta(seconds=1), retention=timedelta(seconds=2)),
                ),
            ),
            worker=fast_worker(),
        )
        app = taskflow.TaskFlow(settings=settings_, name="retention")
        flow = Flow(app)
        flow.broken.add("b")
        raw = Redis.from_url(url)
        try:
            baseline = sorted(await raw.keys("*"))
            async with app:
                async with app.worker():
                    run = await diamond(flow).submit()
                    assert isinstance(await outcome(run), taskflow.GraphFailed)
                [letter] = await app.dead_letters.list()
                flow.broken.clear()
                await app.dead_letters.retry(letter.job_id)
                meta = keys.run(run.run_id, "meta")
                # running again: it expires after run_max_age, not 1 s after its first end
                assert await raw.pttl(meta) > 60_000
                await anyio.sleep(1.5)  # no worker: the run waits, its keys stay
                assert (await run.status()).state == "running"
                async with app.worker():
                    assert (await run.wait(timeout=TIMEOUT))["e"] == "e(d(b(a()),c(a())))"
                assert 0 < await raw.pttl(meta) <= 1000
            with anyio.move_on_after(15):
                while (left := sorted(await raw.keys("*"))) != baseline:  # noqa: ASYNC110
                    await anyio.sleep(0.25)
            ttls = {k: await raw.pttl(k) for k in left}
        finally:
            await raw.aclose()
    assert left == baseline, ttls
