"""Each worker service on its own, without a worker: a real app on the test Redis, a
:class:`ServiceContext` over a small fake of the worker's running jobs, and the service
started in a task group with ``tg.start``. Then what it did, in Redis or on the fake.

Readiness is awaited (``tg.start``, events) and effects are polled with a deadline; no test
sleeps as proof.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import anyio
import httpx
import orjson
import pytest
from anyio.abc import TaskStatus
from redis.asyncio import Redis

import taskflow
from taskflow._clock import now_ms
from taskflow._protocol import keys
from taskflow._protocol.scripts import Claimed, claim_token
from taskflow._worker import Service
from taskflow._worker.abort import AbortWatcher
from taskflow._worker.batcher import Batcher
from taskflow._worker.heartbeat import Heartbeat
from taskflow._worker.services import Health, ServiceContext
from taskflow._worker.waker import Waker
from taskflow.alerts import AlertEvaluator, AlertRule, Condition
from taskflow.errors import ConfigurationError, LifecycleError
from taskflow.metrics import (
    JobSample,
    MetricsRecorder,
    MetricsServer,
    SystemCollector,
    SystemSample,
)
from taskflow.metrics.prometheus import CONTENT_TYPE, MetricsExporter
from taskflow.metrics.recorder import SEP
from tests.helpers import reply, until

# -- the fake worker ------------------------------------------------------------------------


@dataclass
class FakeJob:
    claim: Claimed
    finishing: bool = False
    task: str = ""
    started_ms: int = 0
    deadline_ms: float = math.inf


@dataclass
class FakeSlots:
    """What a service sees of the worker's running jobs; records interruptions."""

    running: dict[str, FakeJob] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    started_ms: int = field(default_factory=now_ms)
    interrupts: list[tuple[str, str]] = field(default_factory=list)
    interrupted: anyio.Event = field(default_factory=anyio.Event)

    def add(self, job_id: str, queue: str) -> None:
        claim = Claimed(job_id, queue, None, attempt=1, failures=0, score=0, aborted=False)
        self.running[job_id] = FakeJob(claim)

    def interrupt(self, job_id: str, reason: Literal["abort", "drain"]) -> bool:
        self.interrupts.append((job_id, reason))
        self.interrupted.set()
        return True


def context(
    app: taskflow.TaskFlow,
    jobs: FakeSlots | None = None,
    wake: Callable[[], None] = lambda: None,
) -> ServiceContext:
    settings = app.settings.worker
    return ServiceContext(
        worker_id=f"svc-test-{uuid.uuid4().hex[:12]}",
        queues=(app.settings.default_queue,),
        settings=settings,
        client=app,
        health=Health(settings.reconnect_backoff_cap.total_seconds()),
        jobs=jobs if jobs is not None else FakeSlots(),
        wake=wake,
    )


@asynccontextmanager
async def running(service: Service, ctx: ServiceContext) -> AsyncIterator[None]:
    """Run ``service`` until the block ends, as the worker would: started, then cancelled."""
    async with anyio.create_task_group() as tg:
        await tg.start(service.run, ctx)
        yield
        tg.cancel_scope.cancel()


# -- core services --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_heartbeat_writes_the_record_renews_leases_and_reports_lost_ones(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = FakeSlots()
    held, lost = f"held-{uuid.uuid4().hex}", f"lost-{uuid.uuid4().hex}"
    jobs.add(held, queue_name)
    jobs.add(lost, queue_name)
    jobs.counts["succeeded"] = 3
    queue = keys.queue(queue_name)
    async with app:
        ctx = context(app, jobs)
        lease_ms = int(ctx.settings.lease.total_seconds() * 1000)
        # held by this worker's first attempt (claims are fenced per attempt)
        await redis.set(keys.in_progress(held), claim_token(ctx.worker_id, 1), px=1000)
        await redis.set(keys.in_progress(lost), "another-worker", px=60_000)
        await redis.zadd(queue, {held: 1, lost: 1})
        try:
            with caplog.at_level(logging.WARNING, logger="taskflow.worker"):
                async with running(Heartbeat(), ctx):  # the first beat is done once started
                    record = orjson.loads(await redis.get(ctx.keys.worker(ctx.worker_id)) or b"{}")
                    ttl = await redis.pttl(ctx.keys.worker(ctx.worker_id))
                    assert record["id"] == ctx.worker_id
                    assert record["running"] == 2 and record["counts"] == {"succeeded": 3}
                    assert 0 < ttl <= lease_ms
                    assert await redis.zscore(ctx.keys.workers, ctx.worker_id) is not None
                    # the held lease lives a whole lease again; its queue score is its end
                    assert await redis.pttl(keys.in_progress(held)) > 1000
                    score = await redis.zscore(queue, held)
                    assert score is not None and score > now_ms()
                    # the lost one is left alone, and reported
                    assert await redis.zscore(queue, lost) == 1
                    assert await redis.get(keys.in_progress(lost)) == b"another-worker"
            assert f"job {lost}: lease lost" in caplog.text
            assert f"job {held}: lease lost" not in caplog.text
            assert ctx.health.redis_reachable
        finally:
            await redis.delete(ctx.keys.worker(ctx.worker_id), queue)
            await redis.delete(keys.in_progress(held), keys.in_progress(lost))
            await redis.zrem(ctx.keys.workers, ctx.worker_id)


@pytest.mark.asyncio
async def test_heartbeat_beats_again_every_interval(app: taskflow.TaskFlow, redis: Redis) -> None:
    async with app:
        ctx = context(app)
        try:
            async with running(Heartbeat(), ctx):
                first = orjson.loads(await redis.get(ctx.keys.worker(ctx.worker_id)) or b"{}")

                async def beat_again() -> bool:
                    raw = await redis.get(ctx.keys.worker(ctx.worker_id))
                    return raw is not None and orjson.loads(raw)["beat_ms"] > first["beat_ms"]

                await until(beat_again, timeout=5)
        finally:
            await redis.delete(ctx.keys.worker(ctx.worker_id))
            await redis.zrem(ctx.keys.workers, ctx.worker_id)


@pytest.mark.asyncio
async def test_abort_watcher_interrupts_a_flagged_running_job(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    jobs = FakeSlots()
    flagged, other = f"abort-{uuid.uuid4().hex}", f"other-{uuid.uuid4().hex}"
    jobs.add(flagged, queue_name)
    jobs.add(other, queue_name)
    async with app:
        try:
            async with running(AbortWatcher(interval=0.01), context(app, jobs)):
                await redis.zadd(keys.ABORT, {flagged: now_ms()})
                with anyio.fail_after(5):
                    await jobs.interrupted.wait()
        finally:
            await redis.zrem(keys.ABORT, flagged)
    assert jobs.interrupts[0] == (flagged, "abort")
    assert (other, "abort") not in jobs.interrupts


@pytest.mark.asyncio
async def test_waker_wakes_the_job_loop_on_a_publish(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    events = [anyio.Event(), anyio.Event()]
    wakes: list[int] = []

    def wake() -> None:
        wakes.append(1)
        events[min(len(wakes), 2) - 1].set()

    async with app, running(Waker(), context(app, wake=wake)):
        with anyio.fail_after(5):
            await events[0].wait()  # subscribed: it looks at the queues once, at once
            assert len(wakes) == 1
            await redis.publish(keys.wake_channel(queue_name), b"1")
            await events[1].wait()
    assert len(wakes) == 2


@pytest.mark.asyncio
async def test_batcher_sends_concurrent_calls_in_one_pipeline(
    app: taskflow.TaskFlow, monkeypatch: pytest.MonkeyPatch
) -> None:
    batcher = Batcher()
    sizes: list[int] = []
    send = batcher._send

    async def spy(batch: list[Any]) -> None:
        sizes.append(len(batch))
        await send(batch)

    monkeypatch.setattr(batcher, "_send", spy)
    replies: dict[int, Any] = {}
    async with app, running(batcher, context(app)):
        echo = app.redis.register_script("return ARGV[1]")
        await echo(keys=[], args=["load"])  # cached on the server: EVALSHA works in pipelines

        async def call(i: int) -> None:
            replies[i] = await batcher.call(echo, [], [f"reply-{i}"])

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(call, i)
    assert replies == {i: f"reply-{i}".encode() for i in range(20)}
    # the first call goes out at once; those made while it is in flight share a pipeline
    direct = 20 - sum(sizes)
    assert max(sizes, default=0) > 1 and direct + len(sizes) < 20


@pytest.mark.asyncio
async def test_batcher_calls_redis_directly_once_stopped(app: taskflow.TaskFlow) -> None:
    batcher = Batcher()
    async with app:
        async with running(batcher, context(app)):
            pass
        # stopped: calls go straight to Redis again
        echo = app.redis.register_script("return ARGV[1]")
        assert await batcher.call(echo, [], ["direct"]) == b"direct"


# -- feature services -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_metrics_recorder_flushes_samples_into_the_bucket_hashes(
    make_app: Any, queue_name: str, redis: Redis
) -> None:
    app = make_app(metrics={"flush_interval": timedelta(milliseconds=20)})
    recorder = MetricsRecorder(app.settings.metrics)
    task = f"svc-task-{uuid.uuid4().hex[:8]}"
    finished = now_ms()
    sample = JobSample(
        task=task,
        queue=queue_name,
        outcome="succeeded",
        attempt=2,
        finished_ms=finished,
        wait=0.01,
        run=0.02,
        cpu=0.005,
        memory=0,
        rss=1 << 20,
    )
    combo = SEP.join((task, queue_name, "succeeded")) + SEP
    buckets = [
        app.keys.metrics_bucket(
            int(r.bucket.total_seconds()),
            finished - finished % int(r.bucket.total_seconds() * 1000),
        )
        for r in app.settings.metrics.resolutions
    ]
    async with app, running(recorder, context(app)):
        recorder.job_finished(sample)
        recorder.job_finished(sample)

        async def flushed() -> bool:
            counts = [await reply(redis.hget(key, combo + "n")) for key in buckets]
            return counts == [b"2"] * len(buckets)

        await until(flushed, timeout=5)
        for key in buckets:
            assert await reply(redis.hget(key, combo + "a2")) == b"2"  # both were re-runs
            assert 0 < await redis.pttl(key)


@pytest.mark.asyncio
async def test_system_collector_appends_samples_to_the_system_stream(
    make_app: Any, redis: Redis
) -> None:
    app = make_app(metrics={"system_interval": timedelta(milliseconds=50)})
    async with app:
        ctx = context(app)
        ours: list[bytes] = []

        async def sampled() -> bool:
            entries = await redis.xrevrange(ctx.keys.system_stream, count=200)
            ours[:] = [id_ for id_, f in entries if f[b"worker"] == ctx.worker_id.encode()]
            return bool(ours)

        try:
            async with running(SystemCollector(), ctx):
                await until(sampled, timeout=5)
            [(_, fields)] = await redis.xrange(ctx.keys.system_stream, ours[-1], ours[-1])
            sample = SystemSample.from_json(fields[b"sample"])
            assert sample.worker == ctx.worker_id and sample.memory_used_bytes > 0
        finally:
            await sampled()
            if ours:
                await redis.xdel(ctx.keys.system_stream, *ours)


@pytest.mark.asyncio
async def test_alert_evaluator_fires_a_rule_that_holds(
    app: taskflow.TaskFlow, queue_name: str, redis: Redis
) -> None:
    rule = AlertRule(
        name=f"svc-{queue_name}",
        conditions=[Condition(metric="queue_depth", queue=queue_name, op=">=", threshold=1)],
    )
    app.alerts.add_rule(rule)
    queue = keys.queue(queue_name)
    async with app:
        await redis.zadd(queue, {"a-waiting-job": now_ms() - 1000})
        try:
            async with running(AlertEvaluator(app.alerts, 0.02), context(app)):

                async def firing() -> bool:
                    return (await app.alerts.state(rule.name)).get("state") == "firing"

                await until(firing, timeout=5)
            state = await app.alerts.state(rule.name)
            assert state["last_value"] == "1.0"
        finally:
            state = await app.alerts.state(rule.name)
            await redis.delete(queue, app.keys.alert_state(rule.name))
            if state.get("alert_id"):
                await reply(redis.hdel(app.keys.alert_ids, state["alert_id"]))


# -- the metrics server ---------------------------------------------------------------------


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == MetricsServer.name]


@pytest.mark.asyncio
async def test_metrics_server_serves_metrics_and_stops_with_the_service(
    app: taskflow.TaskFlow,
) -> None:
    server = MetricsServer(0)
    async with app:
        async with running(server, context(app)):
            assert server.port != 0
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                response = await client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"] == CONTENT_TYPE
            assert response.headers["connection"] == "close"
            assert "taskflow_workers " in response.text
            assert server_threads()
        with pytest.raises(OSError):
            await anyio.connect_tcp("127.0.0.1", server.port)
    assert not server_threads()


@pytest.mark.asyncio
async def test_metrics_server_answers_503_while_redis_is_unreachable() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    app = taskflow.TaskFlow(redis=dead)
    server = MetricsServer(0)
    try:
        async with app, running(server, context(app)):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                response = await client.get("/metrics")
    finally:
        await dead.aclose()
    assert response.status_code == 503
    assert response.text.startswith("redis unavailable")


class HangingExporter(MetricsExporter):
    """Never finishes a render; says when one began."""

    def __init__(self, app: taskflow.TaskFlow) -> None:
        super().__init__(app)
        self.rendering = anyio.Event()

    async def render(self) -> bytes:
        self.rendering.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


@pytest.mark.asyncio
async def test_metrics_server_answers_503_when_a_scrape_times_out(app: taskflow.TaskFlow) -> None:
    async with app:
        server = MetricsServer(0, exporter=HangingExporter(app), timeout=0.2)
        async with running(server, context(app)):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                response = await client.get("/metrics")
    assert response.status_code == 503
    assert response.text == "scrape timed out\n"


@pytest.mark.asyncio
async def test_metrics_server_stopping_cancels_a_scrape_under_way(app: taskflow.TaskFlow) -> None:
    responses: list[httpx.Response] = []
    async with app:
        exporter = HangingExporter(app)
        server = MetricsServer(0, exporter=exporter, timeout=30)
        async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as clients:
            async with anyio.create_task_group() as services:
                await services.start(server.run, context(app))
                url = f"http://127.0.0.1:{server.port}/metrics"

                async def scrape() -> None:
                    responses.append(await client.get(url))

                clients.start_soon(scrape)
                with anyio.fail_after(5):
                    await exporter.rendering.wait()
                services.cancel_scope.cancel()  # the worker stops mid-scrape
    [response] = responses
    assert response.status_code == 503
    assert response.text == "the worker is stopping\n"
    assert not server_threads()


# -- adding services to a worker ------------------------------------------------------------


class Probe:
    """A user service: keeps the context it was given and says when it stopped."""

    name = "probe"

    def __init__(self) -> None:
        self.ctx: ServiceContext | None = None
        self.stopped = False

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        self.ctx = ctx
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            self.stopped = True


@pytest.mark.asyncio
async def test_add_service_runs_a_user_service_with_the_worker_context(
    app: taskflow.TaskFlow, queue_name: str
) -> None:
    probe = Probe()
    worker = app.worker()
    worker.add_service(probe)
    async with app, worker:
        assert probe.ctx is not None and not probe.stopped
        assert probe.ctx.worker_id == worker.id
        assert probe.ctx.queues == (queue_name,)
        assert probe.ctx.client is app and probe.ctx.jobs is worker
        assert probe.ctx.settings is worker.settings
        with pytest.raises(LifecycleError, match="add services before"):
            worker.add_service(Probe())
    assert probe.stopped


@pytest.mark.parametrize(
    "thing",
    [object(), "heartbeat", type("NoRun", (), {"name": "x"})()],
    ids=["object", "str", "no-run"],
)
def test_add_service_refuses_what_is_not_a_service(app: taskflow.TaskFlow, thing: object) -> None:
    worker = app.worker()
    with pytest.raises(ConfigurationError, match=r"is not a service: it needs a `name` and"):
        worker.add_service(thing)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="is not a service"):
        app.worker(services=[thing])  # type: ignore[list-item]


def test_worker_siblings_is_deprecated_for_services(app: taskflow.TaskFlow) -> None:
    probe = Probe()
    with pytest.warns(DeprecationWarning, match=r"siblings=\.\.\.\) is deprecated; pass services"):
        worker = app.worker(siblings=[probe])
    assert probe in worker.services
