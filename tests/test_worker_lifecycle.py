"""The worker as an async context manager: whoever opens the app closes it, whether the
worker starts, fails to start, or is left by cancellation; a borrowed app stays open.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from anyio.abc import TaskStatus
from arq.connections import ArqRedis
from redis.asyncio import Redis

import taskflow
from taskflow._worker import ServiceContext
from taskflow.connection import EmbeddedRedis
from taskflow.errors import ConfigurationError
from taskflow.metrics import MetricsServer
from tests.helpers import until


class Broken:
    """A service that fails before it is ready, noting the app's Redis on the way."""

    name = "broken"

    def __init__(self) -> None:
        self.redis: ArqRedis | None = None
        self.client_id = 0
        self.url = ""

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        self.redis = ctx.redis
        self.client_id = await ctx.redis.client_id()
        self.url = ctx.client.redis_url
        raise RuntimeError("broken service")


class Spy:
    """A service that notes the app's Redis and runs until cancelled."""

    name = "spy"

    def __init__(self) -> None:
        self.redis: ArqRedis | None = None

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        self.redis = ctx.redis
        await ctx.redis.ping()
        task_status.started()
        await anyio.sleep_forever()


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions at the bottom of nested exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in leaves(e)]
    return [exc]


def connected(redis: ArqRedis | None) -> list[object]:
    """The connections of ``redis``'s pool that are still open."""
    assert redis is not None
    pool = redis.connection_pool
    conns = [*pool._available_connections, *pool._in_use_connections]
    return [c for c in conns if c.is_connected]


async def client_gone(redis: Redis, client_id: int) -> None:
    """Wait until the server no longer lists the connection ``client_id``."""

    async def gone() -> bool:
        return str(client_id) not in {c["id"] for c in await redis.client_list()}

    await until(gone, timeout=5)


@contextmanager
def busy_port() -> Iterator[int]:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


@pytest.mark.asyncio
async def test_a_failed_start_closes_the_app_the_worker_opened(
    app: taskflow.TaskFlow, redis: Redis
) -> None:
    broken = Broken()
    worker = app.worker(services=[broken])
    with pytest.raises(BaseException) as caught:
        async with worker:
            pytest.fail("the worker started")
    [leaf] = leaves(caught.value)
    assert isinstance(leaf, RuntimeError) and str(leaf) == "broken service"
    assert not app.is_open
    assert connected(broken.redis) == []
    await client_gone(redis, broken.client_id)


@pytest.mark.asyncio
async def test_a_busy_metrics_port_closes_the_app_the_worker_opened(
    app: taskflow.TaskFlow,
) -> None:
    spy = Spy()
    with busy_port() as port:
        worker = app.worker(services=[spy, MetricsServer(port)])
        with pytest.raises(BaseException) as caught:
            async with worker:
                pytest.fail("the worker started")
    [leaf] = leaves(caught.value)
    assert isinstance(leaf, ConfigurationError) and f"127.0.0.1:{port}" in str(leaf)
    assert not app.is_open
    assert connected(spy.redis) == []


@pytest.mark.asyncio
async def test_a_failed_start_leaves_an_app_the_caller_opened_open(app: taskflow.TaskFlow) -> None:
    async with app:
        with pytest.raises(BaseException) as caught:
            async with app.worker(services=[Broken()]):
                pytest.fail("the worker started")
        assert [type(e) for e in leaves(caught.value)] == [RuntimeError]
        assert app.is_open
        assert await app.redis.ping()
        # and a new worker starts on it
        async with app.worker() as worker:
            assert worker.app is app
        assert app.is_open


@pytest.mark.asyncio
async def test_the_worker_closes_the_app_it_opened_when_it_stops(app: taskflow.TaskFlow) -> None:
    spy = Spy()
    async with app.worker(services=[spy]):
        assert app.is_open
        assert connected(spy.redis) != []
    assert not app.is_open
    assert connected(spy.redis) == []


@pytest.mark.asyncio
async def test_a_worker_left_by_cancellation_still_closes_its_app(app: taskflow.TaskFlow) -> None:
    spy = Spy()
    with anyio.CancelScope() as scope:
        async with app.worker(services=[spy]):
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert not app.is_open
    assert connected(spy.redis) == []


@pytest.mark.asyncio
@pytest.mark.skipif(not EmbeddedRedis.available(), reason="needs the embedded extra")
async def test_a_failed_start_stops_the_embedded_server_it_started(make_app: Any) -> None:
    app = make_app(embedded="always")
    broken = Broken()
    with pytest.raises(BaseException) as caught:
        async with app.worker(services=[broken]):
            pytest.fail("the worker started")
    assert [type(e) for e in leaves(caught.value)] == [RuntimeError]
    assert not app.is_open and not app.embedded
    url = urlsplit(broken.url)
    assert url.hostname and url.port
    with pytest.raises(OSError):  # the embedded redis-server is gone
        await anyio.connect_tcp(url.hostname, url.port)
