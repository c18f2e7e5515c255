"""Embed taskflow in a FastAPI app: a lifespan, a dependency and a status router
(health, jobs, and Prometheus metrics).

Needs the ``fastapi`` extra (``pip install 'taskflow-redis[fastapi]'``). Example::

    from fastapi import FastAPI
    from taskflow import TaskFlow
    from taskflow.integrations.fastapi import TaskFlowDep, lifespan, router

    tf = TaskFlow()

    @tf.task(queue="emails")
    async def send_email(to: str) -> None: ...

    api = FastAPI(lifespan=lifespan(tf, worker=True))
    api.include_router(router(tf), prefix="/taskflow")

    @api.post("/signup")
    async def signup(email: str, app: TaskFlowDep) -> dict[str, str]:
        job = await send_email.enqueue(email)
        return {"job_id": job.job_id}
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast, overload

try:
    from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
except ImportError as exc:  # pragma: no cover - exercised by a test that hides fastapi
    raise ImportError(
        "taskflow.integrations.fastapi needs FastAPI, which is an optional extra: "
        "pip install 'taskflow-redis[fastapi]'"
    ) from exc

import anyio
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from .._clock import now_ms
from .._protocol import keys
from .._protocol.codecs import JobResult
from .._registry import WorkerInfo, live_workers
from ..app import TaskFlow
from ..config import WorkerSettings
from ..connection import CONNECTION_ERRORS
from ..errors import LifecycleError, RedisFailed
from ..metrics.custom import registry_of
from ..metrics.prometheus import CONTENT_TYPE, MetricsExporter
from ..task import JobStatus

logger = logging.getLogger("taskflow")

__all__ = (
    "HealthReport",
    "JobReport",
    "QueueSummary",
    "StatefulLifespan",
    "StatelessLifespan",
    "TaskFlowDep",
    "WorkerSummary",
    "get_taskflow",
    "lifespan",
    "router",
)

StatelessLifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
"""A FastAPI lifespan that yields nothing."""

StatefulLifespan = Callable[[FastAPI], AbstractAsyncContextManager[Mapping[str, Any]]]
"""A FastAPI lifespan that yields request state."""

_STATE_APP = "taskflow"
_STATE_WORKER = "taskflow_worker"

# what "Redis is unusable right now" looks like to the health check
_UNHEALTHY: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    RedisError,
    RedisFailed,
    TimeoutError,
    LifecycleError,
)


# -- lifespan ---------------------------------------------------------------------------


@overload
def lifespan(
    app: TaskFlow,
    *,
    worker: bool = False,
    queues: list[str] | None = None,
    concurrency: int | None = None,
    worker_settings: WorkerSettings | None = None,
    inner: StatelessLifespan | None = None,
) -> StatelessLifespan: ...


@overload
def lifespan(
    app: TaskFlow,
    *,
    worker: bool = False,
    queues: list[str] | None = None,
    concurrency: int | None = None,
    worker_settings: WorkerSettings | None = None,
    inner: StatefulLifespan,
) -> StatefulLifespan: ...


def lifespan(
    app: TaskFlow,
    *,
    worker: bool = False,
    queues: list[str] | None = None,
    concurrency: int | None = None,
    worker_settings: WorkerSettings | None = None,
    inner: StatelessLifespan | StatefulLifespan | None = None,
) -> StatelessLifespan | StatefulLifespan:
    """A FastAPI lifespan that opens ``app`` for the web process, and optionally runs a worker.

    On startup: ``async with app`` (skipped when ``app`` is already open: a borrowed app is
    never closed), then ``async with app.worker(...)`` when ``worker`` is true, then the
    ``inner`` lifespan. On shutdown the same in reverse: ``inner`` ends, the worker drains
    (running jobs get ``grace_period`` to finish), the app closes.

    The app is stored on ``fastapi_app.state.taskflow`` (read it with :func:`get_taskflow` or
    :data:`TaskFlowDep`); the worker, when there is one, on ``fastapi_app.state.taskflow_worker``.

    :param app: the :class:`~taskflow.TaskFlow` app whose tasks the routes enqueue.
    :param worker: also run a worker in this process, for small deployments and tests;
        in production run separate ``taskflow worker module:app`` processes instead.
    :param queues: queues the worker serves; every queue of a registered task by default.
    :param concurrency: jobs the worker runs at once; ``worker_settings`` value by default.
    :param worker_settings: worker settings; ``app.settings.worker`` by default.
    :param inner: your own lifespan, run inside this one (taskflow is open during its whole
        life, so its startup code may enqueue); its state, if it yields any, is passed on.
    :returns: a callable to pass as ``FastAPI(lifespan=...)``.
    :raises RedisUnavailable: at startup, when no Redis is reachable.

    Example::

        @asynccontextmanager
        async def my_lifespan(api: FastAPI) -> AsyncIterator[None]:
            print("starting")
            yield

        api = FastAPI(lifespan=lifespan(tf, worker=True, queues=["emails"], inner=my_lifespan))
    """

    @asynccontextmanager
    async def run(fastapi_app: FastAPI) -> AsyncIterator[Mapping[str, Any] | None]:
        async with AsyncExitStack() as stack:
            if not app.is_open:
                await stack.enter_async_context(app)
            running = None
            if worker:
                running = await stack.enter_async_context(
                    app.worker(queues, concurrency=concurrency, settings=worker_settings)
                )
            else:  # the web process's custom metrics, written as a worker writes its own
                await stack.enter_async_context(_flushing(app))
            setattr(fastapi_app.state, _STATE_APP, app)
            setattr(fastapi_app.state, _STATE_WORKER, running)
            stack.callback(_forget, fastapi_app)
            state = None
            if inner is not None:
                state = await stack.enter_async_context(inner(fastapi_app))
            yield state

    # yields None without ``inner``, else whatever ``inner`` yields: the overloads say which
    return cast("StatelessLifespan | StatefulLifespan", run)


@asynccontextmanager
async def _flushing(app: TaskFlow) -> AsyncIterator[None]:
    """Write the app's custom metrics every ``flush_interval`` while the block runs (the
    app's close writes the rest); Redis trouble is logged."""
    registry = registry_of(app)

    async def loop() -> None:
        while True:
            await anyio.sleep(registry.flush_interval)
            try:
                await registry.flush()
            except CONNECTION_ERRORS as exc:
                logger.warning("custom metrics not written (kept for the next try): %s", exc)
            except RedisError as exc:
                logger.warning("custom metrics refused by Redis: %s", exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


def _forget(fastapi_app: FastAPI) -> None:
    for name in (_STATE_APP, _STATE_WORKER):
        if hasattr(fastapi_app.state, name):
            delattr(fastapi_app.state, name)


# -- dependency -------------------------------------------------------------------------


def get_taskflow(request: Request) -> TaskFlow:
    """FastAPI dependency: the :class:`~taskflow.TaskFlow` app opened by :func:`lifespan`.

    :raises LifecycleError: the FastAPI app was not started with :func:`lifespan`, or it
        has shut down.

    Example::

        @api.get("/queues")
        async def queues(tf: Annotated[TaskFlow, Depends(get_taskflow)]) -> list[str]:
            return tf.queues
    """
    app = getattr(request.app.state, _STATE_APP, None)
    if not isinstance(app, TaskFlow):
        raise LifecycleError(
            "no taskflow app on this FastAPI app; create it with "
            "FastAPI(lifespan=taskflow.integrations.fastapi.lifespan(app)) and start it"
        )
    return app


TaskFlowDep = Annotated[TaskFlow, Depends(get_taskflow)]
"""Route parameter annotation that injects the app: ``async def route(tf: TaskFlowDep)``."""


# -- response models --------------------------------------------------------------------

_model = ConfigDict(frozen=True, extra="forbid")


class WorkerSummary(BaseModel):
    """A live worker, as its last heartbeat described it."""

    model_config = _model

    id: str = Field(description="Worker id: host, pid and a random suffix.")
    host: str = Field(description="Host name the worker runs on.")
    pid: int = Field(description="Process id of the worker.")
    queues: list[str] = Field(description="Queues it serves.")
    concurrency: int = Field(description="Jobs it runs at once at most.")
    running: int = Field(description="Jobs it was running at its last heartbeat.")
    started_at: datetime = Field(description="When it started serving.")
    last_beat_at: datetime = Field(description="Its last heartbeat.")
    counts: dict[str, int] = Field(description="Jobs it finished, by outcome.")

    @classmethod
    def from_info(cls, info: WorkerInfo) -> WorkerSummary:
        """Build the summary of a heartbeat record."""
        return cls(
            id=info.id,
            host=info.host,
            pid=info.pid,
            queues=list(info.queues),
            concurrency=info.concurrency,
            running=info.running,
            started_at=_datetime(info.started_ms),
            last_beat_at=_datetime(info.beat_ms),
            counts=dict(info.counts),
        )


class QueueSummary(BaseModel):
    """Jobs waiting in one queue, and the live workers serving it."""

    model_config = _model

    queued: int = Field(description="Jobs due now and not yet claimed by a worker.")
    deferred: int = Field(
        description="Jobs scheduled for later, and jobs a worker is running (a claimed job "
        "stays in its queue with its score at the end of its lease)."
    )
    workers: int = Field(description="Live workers serving the queue.")


class HealthReport(BaseModel):
    """Body of ``GET /status``."""

    model_config = _model

    redis: Literal["ok", "unreachable"] = Field(description="Whether Redis answered.")
    error: str | None = Field(None, description="Why Redis is unreachable, when it is.")
    workers: list[WorkerSummary] = Field(description="Live workers on this Redis.")
    queues: dict[str, QueueSummary] = Field(description="The app's queues, by name.")


class JobError(BaseModel):
    """Why a job failed or was cancelled (the remote traceback is not exposed)."""

    model_config = _model

    type: str = Field(description="Qualified name of the exception type.")
    message: str = Field(description="The exception's message.")


class JobReport(BaseModel):
    """Body of ``GET /jobs/{job_id}``."""

    model_config = _model

    job_id: str = Field(description="The job's id.")
    status: JobStatus = Field(description="Where the job is in its life.")
    task: str | None = Field(None, description="Task name, once the job has finished.")
    queue: str | None = Field(None, description="Queue it ran on, once it has finished.")
    attempt: int | None = Field(None, description="Attempts made, once it has finished.")
    enqueued_at: datetime | None = Field(None, description="When it was enqueued.")
    started_at: datetime | None = Field(None, description="When its last attempt started.")
    finished_at: datetime | None = Field(None, description="When it finished.")
    result: Any = Field(None, description="The return value, when it succeeded.")
    error: JobError | None = Field(None, description="The error, when it failed or was cancelled.")

    @classmethod
    def from_record(cls, record: JobResult) -> JobReport:
        """Build the report of a finished job's stored result."""
        error = None
        if not record.success:
            raw = record.value if isinstance(record.value, dict) else {}
            error = JobError(
                type=str(raw.get("type", "Exception")), message=str(raw.get("message", ""))
            )
        return cls(
            job_id=record.job_id,
            status=JobStatus(record.status),
            task=record.task,
            queue=record.queue,
            attempt=record.attempt,
            enqueued_at=_datetime(record.enqueue_ms) if record.enqueue_ms else None,
            started_at=_datetime(record.start_ms),
            finished_at=_datetime(record.finish_ms),
            result=record.value if record.success else None,
            error=error,
        )


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# -- router -----------------------------------------------------------------------------


def router(app: TaskFlow, *, health_timeout: float = 5.0) -> APIRouter:
    """Status routes for ``app``: ``GET /health``, ``GET /ready``, ``GET /status``,
    ``GET /jobs/{job_id}`` and ``GET /metrics``.

    ``GET /health`` is a liveness probe: 200 whenever the process answers HTTP (it reads
    nothing from Redis: a Redis outage must not get healthy API processes restarted).
    ``GET /ready`` is for an orchestrator's readiness probe: 200 when Redis answers within
    ``health_timeout`` seconds and this process's embedded worker (if any) is running, else
    503 with the reason. ``GET /status`` answers 200 with Redis status, live workers and the
    app's queues, or 503 when Redis is unreachable (or the app is not open).
    ``GET /jobs/{job_id}`` answers with the job's status and, once it finished,
    its result or error; 404 for a job that does not exist (or whose result expired). Pass
    ``?queue=`` for jobs on a queue other than the app's default, to tell deferred from
    queued. ``GET /metrics`` answers with cluster-wide job metrics in Prometheus text format
    (see :mod:`taskflow.metrics.prometheus`; counters count from this router's creation), or
    503 when Redis is unreachable.

    :param app: the app whose queues and jobs the routes describe.
    :param health_timeout: seconds /ready, /status and a metrics scrape wait for Redis.
    :returns: a router to mount with ``api.include_router(router(app), prefix=...)``.

    Example::

        api.include_router(router(tf), prefix="/taskflow", tags=["taskflow"])
    """
    routes = APIRouter()

    @routes.get("/health")
    async def health() -> dict[str, bool]:
        """Liveness: the process answers (nothing is read from Redis)."""
        return {"alive": True}

    @routes.get(
        "/status",
        response_model=HealthReport,
        responses={503: {"model": HealthReport, "description": "Redis is unreachable."}},
    )
    async def status() -> HealthReport | JSONResponse:
        try:
            with anyio.fail_after(health_timeout):
                return await _health(app)
        except _UNHEALTHY as exc:
            report = HealthReport(
                redis="unreachable", error=str(exc) or type(exc).__name__, workers=[], queues={}
            )
            return JSONResponse(report.model_dump(mode="json"), status_code=503)

    @routes.get(
        "/ready",
        responses={503: {"description": "Redis is unreachable, or the embedded worker is down."}},
    )
    async def ready(request: Request) -> JSONResponse:
        """Readiness for an orchestrator: 200 when Redis answers and, if this process runs
        an embedded worker (``lifespan(worker=True)``), that worker is running."""
        try:
            with anyio.fail_after(health_timeout):
                await app.redis.ping()
        except _UNHEALTHY as exc:
            reason = f"redis unreachable: {str(exc) or type(exc).__name__}"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        worker = getattr(request.app.state, _STATE_WORKER, None)
        if worker is not None and not worker.is_running:
            return JSONResponse(
                {"ready": False, "reason": "the embedded worker is not running"}, status_code=503
            )
        return JSONResponse({"ready": True, "reason": ""})

    @routes.get("/jobs/{job_id}", response_model=JobReport, responses={404: {}})
    async def job(job_id: str, queue: str | None = None) -> JobReport:
        return await _job_report(app, job_id, queue)

    exporter = MetricsExporter(app)

    @routes.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."},
            503: {"description": "Redis is unreachable."},
        },
    )
    async def metrics() -> Response:
        try:
            with anyio.fail_after(health_timeout):
                body = await exporter.render()
        except _UNHEALTHY as exc:
            return PlainTextResponse(
                f"redis unreachable: {str(exc) or type(exc).__name__}\n", status_code=503
            )
        return Response(body, media_type=CONTENT_TYPE)

    return routes


async def _health(app: TaskFlow) -> HealthReport:
    redis = app.redis
    await redis.ping()
    workers = await live_workers(redis, app.keys)
    names = app.queues or [app.settings.default_queue]
    now = now_ms()
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcount(keys.queue(name), "-inf", now)
            pipe.zcount(keys.queue(name), f"({now}", "+inf")
        counts: list[int] = await pipe.execute()
    queues = {
        name: QueueSummary(
            queued=counts[2 * i],
            deferred=counts[2 * i + 1],
            workers=sum(name in w.queues for w in workers),
        )
        for i, name in enumerate(names)
    }
    return HealthReport(
        redis="ok", workers=[WorkerSummary.from_info(w) for w in workers], queues=queues
    )


async def _job_report(app: TaskFlow, job_id: str, queue: str | None) -> JobReport:
    handle = app.job(job_id, queue=queue)
    record = await handle.info()
    if record is not None:
        return JobReport.from_record(record)
    status = await handle.status()
    if status is JobStatus.NOT_FOUND:
        raise HTTPException(404, f"job {job_id!r} not found: never enqueued, or its result expired")
    if status.finished:  # finished between the two reads
        record = await handle.info()
        if record is not None:
            return JobReport.from_record(record)
    return JobReport(job_id=job_id, status=status)
