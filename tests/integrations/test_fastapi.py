"""The FastAPI integration, through httpx's ASGI transport against a real worker and Redis.

httpx does not run lifespans, so each test enters ``api.router.lifespan_context(api)``
itself, in the test's own task (anyio cancel scopes must be left in the task that entered
them, which an async fixture's teardown does not guarantee).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from redis.asyncio import Redis

import taskflow
from taskflow import TaskFlow
from taskflow.integrations.fastapi import TaskFlowDep, get_taskflow, lifespan, router


class Boom(Exception):
    pass


def register(tf: TaskFlow) -> None:
    """The tasks every test app has, on its default (per-test) queue."""

    @tf.task
    async def add(x: int, y: int) -> int:
        return x + y

    @tf.task
    async def boom(message: str) -> None:
        raise Boom(message)


def build_api(tf: TaskFlow, **options: Any) -> FastAPI:
    """A FastAPI app with enqueue and result routes, the taskflow router, and ``options``
    passed to :func:`lifespan`."""
    api = FastAPI(lifespan=lifespan(tf, **options))
    api.include_router(router(tf), prefix="/taskflow")

    @api.post("/enqueue/{task}")
    async def enqueue(task: str, kwargs: dict[str, Any], app: TaskFlowDep) -> dict[str, str]:
        job = await app.enqueue(task, **kwargs)
        return {"job_id": job.job_id}

    @api.get("/result/{job_id}")
    async def result(job_id: str, app: TaskFlowDep, timeout: float = 5.0) -> dict[str, Any]:
        try:
            value = await app.job(job_id).result(timeout=timeout)
        except taskflow.ResultTimeout:
            raise HTTPException(504, "no result yet") from None
        return {"result": value}

    @api.get("/same")
    async def same(app: TaskFlowDep, request: Request) -> dict[str, bool]:
        return {"same": app is tf and get_taskflow(request) is tf}

    return api


@asynccontextmanager
async def serve(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``api``'s lifespan and yield a client talking to it in-process."""
    transport = httpx.ASGITransport(api)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


async def enqueue(client: httpx.AsyncClient, task: str, **kwargs: Any) -> str:
    response = await client.post(f"/enqueue/{task}", json=kwargs)
    assert response.status_code == 200, response.text
    job_id: str = response.json()["job_id"]
    return job_id


@pytest.mark.asyncio
async def test_enqueue_route_then_result_route(make_app: type[TaskFlow]) -> None:
    tf = make_app()
    register(tf)
    async with serve(build_api(tf, worker=True)) as client:
        job_id = await enqueue(client, "add", x=2, y=3)
        response = await client.get(f"/result/{job_id}")
    assert response.status_code == 200
    assert response.json() == {"result": 5}


@pytest.mark.asyncio
async def test_status_lists_the_worker_and_its_queues(
    make_app: type[TaskFlow], queue_name: str, redis: Redis
) -> None:
    tf = make_app()
    register(tf)
    api = build_api(tf, worker=True, concurrency=7)
    async with serve(api) as client:
        worker_id = api.state.taskflow_worker.id
        response = await client.get("/taskflow/status")
        assert response.status_code == 200
        body = response.json()
        assert body["redis"] == "ok"
        ours = [w for w in body["workers"] if w["id"] == worker_id]
        assert len(ours) == 1
        assert ours[0]["queues"] == [queue_name]
        assert ours[0]["concurrency"] == 7
        assert set(body["queues"]) == {queue_name}
        assert body["queues"][queue_name]["workers"] == 1
        assert body["queues"][queue_name]["deferred"] == 0
    # shutdown drained the worker and removed its heartbeat
    assert worker_id not in {w.id for w in await taskflow.live_workers(redis, tf.name)}


@pytest.mark.asyncio
async def test_job_route_for_a_finished_job(make_app: type[TaskFlow], queue_name: str) -> None:
    tf = make_app()
    register(tf)
    async with serve(build_api(tf, worker=True)) as client:
        job_id = await enqueue(client, "add", x=20, y=22)
        assert (await client.get(f"/result/{job_id}")).json() == {"result": 42}
        response = await client.get(f"/taskflow/jobs/{job_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["job_id"] == job_id
    assert body["status"] == "succeeded"
    assert body["result"] == 42
    assert body["error"] is None
    assert body["task"] == "add"
    assert body["queue"] == queue_name
    assert body["attempt"] == 1
    assert body["finished_at"] >= body["started_at"]


@pytest.mark.asyncio
async def test_job_route_for_a_failed_job(make_app: type[TaskFlow]) -> None:
    tf = make_app()
    register(tf)
    async with serve(build_api(tf, worker=True)) as client:
        job_id = await enqueue(client, "boom", message="no luck")
        with pytest.raises(taskflow.TaskFailed):
            await tf.job(job_id).result(timeout=5)
        response = await client.get(f"/taskflow/jobs/{job_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "failed"
    assert body["result"] is None
    assert body["error"]["type"].endswith("Boom")
    assert body["error"]["message"] == "no luck"
    assert "traceback" not in body["error"]


@pytest.mark.asyncio
async def test_job_route_for_an_unknown_job_is_404(make_app: type[TaskFlow]) -> None:
    tf = make_app()
    register(tf)
    async with serve(build_api(tf)) as client:
        response = await client.get("/taskflow/jobs/no-such-job")
    assert response.status_code == 404
    assert "no-such-job" in response.json()["detail"]


@pytest.mark.asyncio
async def test_without_worker_jobs_stay_queued(make_app: type[TaskFlow], queue_name: str) -> None:
    tf = make_app()
    register(tf)
    api = build_api(tf, worker=False)
    async with serve(api) as client:
        assert api.state.taskflow_worker is None
        job_id = await enqueue(client, "add", x=1, y=1)
        await anyio.sleep(0.3)
        job = (await client.get(f"/taskflow/jobs/{job_id}")).json()
        assert job["status"] == "queued"
        assert job["result"] is None
        result = await client.get(f"/result/{job_id}", params={"timeout": 0.1})
        assert result.status_code == 504
        health = (await client.get("/taskflow/status")).json()
        assert health["queues"][queue_name] == {"queued": 1, "deferred": 0, "workers": 0}
        assert not [w for w in health["workers"] if queue_name in w["queues"]]
        assert await tf.job(job_id).abort()  # leave nothing queued behind


@pytest.mark.asyncio
async def test_borrowed_open_app_is_not_closed(make_app: type[TaskFlow]) -> None:
    tf = make_app()
    register(tf)
    api = build_api(tf, worker=True)
    async with tf:
        async with serve(api) as client:
            job_id = await enqueue(client, "add", x=1, y=2)
            assert (await client.get(f"/result/{job_id}")).json() == {"result": 3}
        assert tf.is_open
        assert not hasattr(api.state, "taskflow")
        job = await tf.get_task("add").enqueue(3, 4)
        assert await job.status() is taskflow.JobStatus.QUEUED  # the worker is gone
        assert await job.abort()
    assert not tf.is_open


@pytest.mark.asyncio
async def test_owned_app_is_closed_on_shutdown(make_app: type[TaskFlow]) -> None:
    tf = make_app()
    register(tf)
    async with serve(build_api(tf)):
        assert tf.is_open
    assert not tf.is_open


@pytest.mark.asyncio
async def test_dependency_returns_the_same_app(make_app: type[TaskFlow]) -> None:
    tf = make_app()
    register(tf)
    async with serve(build_api(tf)) as client:
        response = await client.get("/same")
    assert response.json() == {"same": True}


@pytest.mark.asyncio
async def test_dependency_outside_the_lifespan_is_a_lifecycle_error(
    make_app: type[TaskFlow],
) -> None:
    tf = make_app()
    api = build_api(tf)
    transport = httpx.ASGITransport(api)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(taskflow.LifecycleError, match="lifespan"):
            await client.get("/same")


@pytest.mark.asyncio
async def test_status_is_503_and_health_200_when_redis_is_unreachable() -> None:
    # a borrowed client on a closed port: opening the app does not connect
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        tf = TaskFlow(redis=dead)
        async with serve(build_api(tf)) as client:
            response = await client.get("/taskflow/status")
            alive = await client.get("/taskflow/health")
    finally:
        await dead.aclose()
    assert alive.status_code == 200 and alive.json() == {"alive": True}
    assert response.status_code == 503
    body = response.json()
    assert body["redis"] == "unreachable"
    assert body["error"]
    assert body["workers"] == []


@pytest.mark.asyncio
async def test_inner_lifespan_runs_inside_with_taskflow_open(make_app: type[TaskFlow]) -> None:
    tf = make_app()
    register(tf)
    events: list[str] = []

    @asynccontextmanager
    async def mine(api: FastAPI) -> AsyncIterator[None]:
        events.append(f"start open={tf.is_open} worker={api.state.taskflow_worker is not None}")
        job = await tf.get_task("add").enqueue(5, 5)
        yield
        events.append(f"stop open={tf.is_open} result={await job.result(timeout=5)}")

    api = FastAPI(lifespan=lifespan(tf, worker=True, inner=mine))
    async with api.router.lifespan_context(api) as state:
        assert state is None
    assert events == ["start open=True worker=True", "stop open=True result=10"]
    assert not tf.is_open


@pytest.mark.asyncio
async def test_inner_lifespan_state_is_passed_on(make_app: type[TaskFlow]) -> None:
    tf = make_app()

    @asynccontextmanager
    async def mine(api: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        yield {"greeting": "hello"}

    api = FastAPI(lifespan=lifespan(tf, inner=mine))
    async with api.router.lifespan_context(api) as state:
        assert state == {"greeting": "hello"}


def test_import_without_fastapi_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "taskflow.integrations.fastapi")
    with pytest.raises(ImportError, match=r"pip install 'taskflow-redis\[fastapi\]'"):
        importlib.import_module("taskflow.integrations.fastapi")


@pytest.mark.asyncio
async def test_ready_answers_for_redis_and_the_embedded_worker(make_app: type[TaskFlow]) -> None:
    tf = make_app()
    register(tf)
    api = build_api(tf, worker=True)
    async with serve(api) as client:
        ok = await client.get("/taskflow/ready")
        assert ok.status_code == 200 and ok.json() == {"ready": True, "reason": ""}
        api.state.taskflow_worker.stop()  # the embedded worker goes down: not ready
        with anyio.fail_after(10):
            while (down := await client.get("/taskflow/ready")).status_code == 200:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert down.status_code == 503
        assert down.json() == {"ready": False, "reason": "the embedded worker is not running"}
