"""The connection policy: a Redis that refuses is an error saying what it refused, a configured
URL that fails is an error, and only an unconfigured default falls back to an embedded server.

A second real ``redis-server`` with ``requirepass`` runs on a free loopback port.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI

import taskflow
from taskflow.config import Settings
from taskflow.connection import EmbeddedRedis, open_redis
from taskflow.integrations.fastapi import lifespan
from tests.processes import free_port, redis_server

pytestmark = pytest.mark.asyncio

PASSWORD = "s3cret-pa55"


@pytest.fixture(scope="module")
def secured() -> Iterator[int]:
    """The port of a real redis-server that requires a password and has 16 databases."""
    with redis_server("--requirepass", PASSWORD) as port:
        yield port


@pytest.fixture
def no_embedded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every attempt to start an embedded server (and lets none start)."""
    started: list[str] = []

    def start(*args: Any, **kwargs: Any) -> EmbeddedRedis:
        started.append("embedded")
        raise AssertionError("an embedded redis-server was started")

    monkeypatch.setattr(EmbeddedRedis, "start", start)
    return started


def settings(url: str, **extra: Any) -> Settings:
    return Settings(redis_url=url, connect_timeout=timedelta(seconds=2), **extra)


async def refused(url: str, **extra: Any) -> str:
    with pytest.raises(taskflow.RedisRefused) as caught:
        async with open_redis(settings(url, **extra)):
            pass
    message = str(caught.value)
    assert PASSWORD not in message and "wrong-one" not in message
    assert "unreachable" not in message and "no Redis reachable" not in message
    return message


async def test_a_wrong_password_is_refused_naming_the_url_without_the_password(
    secured: int, no_embedded: list[str]
) -> None:
    message = await refused(f"redis://:wrong-one@127.0.0.1:{secured}/0")
    assert message.startswith(
        f"Redis at redis://***@127.0.0.1:{secured}/0 (from the app's redis_url setting) "
        "refused the password"
    )
    assert "correct the user and password in the app's redis_url setting" in message
    assert no_embedded == []


async def test_a_missing_password_says_one_is_required(
    secured: int, no_embedded: list[str]
) -> None:
    message = await refused(f"redis://127.0.0.1:{secured}/0")
    assert "requires a password" in message and "redis://:PASSWORD@HOST:PORT/DB" in message
    assert no_embedded == []


async def test_a_database_number_out_of_range_names_it(
    secured: int, no_embedded: list[str]
) -> None:
    message = await refused(f"redis://:{PASSWORD}@127.0.0.1:{secured}/99")
    assert "has no database 99" in message and "0-15" in message
    assert no_embedded == []


async def test_tls_against_a_plain_server_says_the_handshake_failed(
    secured: int, no_embedded: list[str]
) -> None:
    message = await refused(f"rediss://:{PASSWORD}@127.0.0.1:{secured}/0")
    assert "the TLS handshake failed" in message and "use redis://" in message
    assert no_embedded == []


async def test_the_right_password_connects(secured: int) -> None:
    async with open_redis(settings(f"redis://:{PASSWORD}@127.0.0.1:{secured}/3")) as conn:
        assert await conn.client.ping()
        assert conn.url == f"redis://***@127.0.0.1:{secured}/3" and not conn.embedded


async def test_the_environment_variable_is_named_as_the_source(
    secured: int, no_embedded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKFLOW_REDIS_URL", f"redis://:wrong-one@127.0.0.1:{secured}/0")
    app = taskflow.TaskFlow(name="auth-test")
    with pytest.raises(taskflow.RedisRefused, match=r"\(from TASKFLOW_REDIS_URL\) refused"):
        async with app:
            pass
    assert no_embedded == []


async def test_a_configured_url_that_is_unreachable_is_an_error_not_a_fallback(
    no_embedded: list[str],
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(taskflow.RedisUnavailable) as caught:
        async with open_redis(settings(url, embedded="auto")):
            pass
    message = str(caught.value)
    assert not isinstance(caught.value, taskflow.RedisRefused)
    assert message.startswith(f"no Redis reachable at {url} (from the app's redis_url setting)")
    assert message.endswith("start the server there, or correct the app's redis_url setting")
    assert "embedded" not in message  # the one fix that does not apply
    assert no_embedded == []


async def test_only_an_unconfigured_default_falls_back_to_an_embedded_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the default URL as nobody configured it (no setting, no environment variable), on a
    # port where nothing listens
    default = Settings.model_construct(
        _fields_set=set(), redis_url=f"redis://localhost:{free_port()}/0"
    )
    assert "redis_url" not in default.model_fields_set
    with caplog.at_level(logging.WARNING, logger="taskflow.connection"):
        async with open_redis(default) as conn:
            assert conn.embedded and await conn.client.ping()
    assert "no Redis URL configured; started an embedded redis-server" in caplog.text
    never = default.model_copy(update={"embedded": "never"})
    with pytest.raises(taskflow.RedisUnavailable) as caught:
        async with open_redis(never):
            pass
    message = str(caught.value)
    assert "(the default; no URL configured)" in message
    assert "start redis-server on localhost:6379 or set TASKFLOW_REDIS_URL" in message
    assert "taskflow-redis[embedded]" not in message  # installed here, and refused by never


async def test_a_fastapi_app_with_a_wrong_password_fails_at_startup(
    secured: int, no_embedded: list[str]
) -> None:
    tf = taskflow.TaskFlow(redis_url=f"redis://:wrong-one@127.0.0.1:{secured}/0", name="api")
    api = FastAPI(lifespan=lifespan(tf))
    with pytest.raises(taskflow.RedisRefused, match="refused the password"):
        async with api.router.lifespan_context(api):
            pytest.fail("the app started")
    assert no_embedded == []
