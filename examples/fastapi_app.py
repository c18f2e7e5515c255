"""A FastAPI app that enqueues taskflow jobs and runs a worker in the same process.

Serve it for real (Redis from ``TASKFLOW_REDIS_URL``, default ``redis://localhost:6379/0``)::

    uvicorn examples.fastapi_app:api

then ``curl -X POST localhost:8000/sums -H 'content-type: application/json' -d '{"x": 2, "y": 3}'``
and ``curl localhost:8000/sums/<job_id>``. Status routes live under ``/taskflow``
(``/taskflow/health``, ``/taskflow/ready``, ``/taskflow/status``, ``/taskflow/jobs/<job_id>``).

Run it as a script (``python examples/fastapi_app.py``) for a short self-contained demo that
drives the app through httpx without a server, and exits.
"""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from taskflow import JobNotFound, ResultTimeout, TaskFailed, TaskFlow
from taskflow.integrations.fastapi import TaskFlowDep, lifespan, router

QUEUE = "fastapi-demo"

# settings, including the Redis URL, come from TASKFLOW_* environment variables
tf = TaskFlow()


@tf.task(queue=QUEUE, retries=2)
async def add(x: int, y: int) -> int:
    """Add two numbers, slowly enough to be worth a queue."""
    await asyncio.sleep(0.1)
    return x + y


# worker=True runs a worker inside the web process; in production leave it out and run
# `taskflow worker examples.fastapi_app:tf` processes instead
api = FastAPI(title="taskflow demo", lifespan=lifespan(tf, worker=True, queues=[QUEUE]))
api.include_router(router(tf), prefix="/taskflow", tags=["taskflow"])


class Sum(BaseModel):
    x: int
    y: int


@api.post("/sums", status_code=202)
async def create_sum(body: Sum) -> dict[str, str]:
    """Enqueue ``add`` and return the job id at once."""
    job = await add.enqueue(body.x, body.y)
    return {"job_id": job.job_id}


@api.get("/sums/{job_id}")
async def get_sum(job_id: str, app: TaskFlowDep, timeout: float = 5.0) -> dict[str, object]:
    """Wait up to ``timeout`` seconds for the job's result: 504 if it is not ready."""
    job = app.job(job_id, task=add.name, queue=QUEUE)
    try:
        value = await job.result(timeout=timeout)
    except ResultTimeout:
        raise HTTPException(504, f"job {job_id!r} has no result after {timeout:g}s") from None
    except JobNotFound:
        raise HTTPException(404, f"job {job_id!r} not found") from None
    except TaskFailed as exc:
        raise HTTPException(500, f"job {job_id!r} failed: {exc.error_type}") from None
    return {"job_id": job_id, "result": value}


async def demo() -> None:
    """POST a job and GET its result through httpx, with the lifespan entered by hand
    (httpx's ASGI transport does not run lifespans)."""
    transport = httpx.ASGITransport(api)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://demo") as client,
    ):
        created = await client.post("/sums", json={"x": 2, "y": 3})
        created.raise_for_status()
        print("POST /sums ->", created.status_code, created.json())
        job_id = created.json()["job_id"]
        fetched = await client.get(f"/sums/{job_id}")
        fetched.raise_for_status()
        print(f"GET /sums/{job_id} ->", fetched.status_code, fetched.json())


if __name__ == "__main__":
    asyncio.run(demo())
