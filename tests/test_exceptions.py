"""What user code raises inside ``async with app.worker()`` (or the FastAPI lifespan) comes out
as itself, not wrapped in an ExceptionGroup; only a genuine multi-error case is a group."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from fastapi import FastAPI

import taskflow
from taskflow.integrations.fastapi import lifespan

pytestmark = pytest.mark.asyncio


class Crashes:
    """A service that fails: at start, some time after, or while being cancelled."""

    def __init__(self, when: str) -> None:
        self.name = f"crashes-{when}"
        self.when = when

    async def run(self, ctx: taskflow.ServiceContext, *, task_status: TaskStatus[None]) -> None:
        if self.when == "at start":
            raise taskflow.ConfigurationError("the crashing service is misconfigured")
        task_status.started()
        try:
            if self.when == "later":
                await anyio.sleep(0.01)
                raise RuntimeError("the crashing service broke")
            await anyio.sleep_forever()
        finally:
            if self.when == "on cancel":
                raise RuntimeError("the crashing service failed to clean up")


def register(app: taskflow.TaskFlow) -> taskflow.Task[Any, int]:
    @app.task
    async def area(width: int, height: int) -> int:
        return width * height

    return area


async def test_an_argument_error_in_the_readme_pattern_is_caught_by_its_class(
    app: taskflow.TaskFlow,
) -> None:
    area = register(app)
    with pytest.raises(taskflow.ArgumentError, match="argument 'width'") as caught:
        async with app, app.worker():
            await area.enqueue(width="wide", height=2)
    # the traceback still reaches the line that raised it
    assert "area.enqueue(width=" in "".join(traceback.format_tb(caught.value.__traceback__))


async def test_any_exception_of_the_body_comes_out_as_itself(app: taskflow.TaskFlow) -> None:
    register(app)
    with pytest.raises(KeyError, match="missing"):
        async with app, app.worker():
            raise KeyError("missing")
    assert not app.is_open


async def test_a_service_failing_at_start_raises_its_own_error(app: taskflow.TaskFlow) -> None:
    register(app)
    with pytest.raises(taskflow.ConfigurationError, match="misconfigured"):
        async with app, app.worker(services=[Crashes("at start")]):
            pytest.fail("the worker started")


async def test_a_service_crashing_later_stops_the_body_with_its_own_error(
    app: taskflow.TaskFlow,
) -> None:
    register(app)
    with pytest.raises(RuntimeError, match="the crashing service broke"):
        async with app, app.worker(services=[Crashes("later")]):
            await anyio.sleep_forever()


async def test_serve_and_run_raise_a_service_error_as_itself(app: taskflow.TaskFlow) -> None:
    register(app)
    async with app:
        with pytest.raises(RuntimeError, match="broke"):
            await app.worker(services=[Crashes("later")]).serve()
        with pytest.raises(RuntimeError, match="broke"):
            await app.worker(services=[Crashes("later")]).run()


async def test_two_errors_at_once_stay_a_group(app: taskflow.TaskFlow) -> None:
    """The documented multi-error case: the body fails, and a service fails while the worker
    is being stopped because of it. Both are kept; neither hides the other."""
    register(app)
    with pytest.raises(BaseExceptionGroup) as caught:
        async with app, app.worker(services=[Crashes("on cancel")]):
            raise KeyError("missing")
    body, service = caught.value.split(KeyError)
    assert body is not None and service is not None
    assert "failed to clean up" in str(service.exceptions[0])


async def test_an_error_in_the_fastapi_lifespan_comes_out_as_itself(
    app: taskflow.TaskFlow,
) -> None:
    register(app)

    @asynccontextmanager
    async def inner(api: FastAPI) -> AsyncIterator[None]:
        raise taskflow.ConfigurationError("the web app's own start-up failed")
        yield

    api = FastAPI(lifespan=lifespan(app, worker=True, inner=inner))
    with pytest.raises(taskflow.ConfigurationError, match="own start-up failed"):
        async with api.router.lifespan_context(api):
            pytest.fail("the app started")
    assert not app.is_open
