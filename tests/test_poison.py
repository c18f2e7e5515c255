"""A poison job: a body that kills its worker process on every attempt lands in the dead
letters after ``max_worker_deaths`` (3) worker deaths, while other jobs complete."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

import taskflow
from tests import processes
from tests.apps.shared import REDIS_URL, fast_worker, settings
from tests.helpers import delete_keys

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


async def test_a_job_that_kills_its_worker_goes_to_the_dead_letters(tmp_path: Path) -> None:
    name = f"poison-{uuid.uuid4().hex[:8]}"
    client = taskflow.TaskFlow(settings=settings(name, fast_worker()), name=name)
    crash = client.task(name="crash", retries=0)(_never)
    fine = client.task(name="fine")(_echo)
    redis = Redis.from_url(REDIS_URL)
    deaths = 0
    with processes.Workers(tmp_path, "tests.apps.poison_app:app") as workers:
        try:
            async with client:
                poison = await crash.enqueue()
                others = [await fine.enqueue(i) for i in range(20)]
                with anyio.fail_after(60):
                    while True:
                        worker = workers.spawn([name], concurrency=4, env={"TEST_POISON_APP": name})
                        code = await worker.wait(timeout=1) if await _dies(worker) else None
                        if code is None:
                            break
                        assert code == 17
                        deaths += 1
                with pytest.raises(taskflow.TaskFailed) as failed:
                    await poison.result(timeout=30)
                assert [await j.result(timeout=30) for j in others] == list(range(20))
                letter = await client.dead_letters.get(poison.job_id)
        finally:
            await delete_keys(redis, f"taskflow:app:{name}:*", [f"arq:queue:{name}"])
            await redis.aclose()
    assert failed.value.kind is taskflow.FailureKind.JOB_LOST
    assert "its worker died during 3 attempts" in failed.value.error_message
    assert deaths == 3 and letter.reason == "taskflow.JobLost" and letter.attempts == 4


async def _dies(worker: processes.WorkerProcess) -> bool:
    """Whether the worker dies within a few leases (it claims the poison job), or lives."""
    with anyio.move_on_after(8):
        while worker.proc.poll() is None:  # noqa: ASYNC110 - a child process
            await anyio.sleep(0.05)
        return True
    return False


async def _never() -> None: ...


async def _echo(i: int) -> int:
    return i
