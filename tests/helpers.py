"""Helpers the test modules share: polling until something holds, reading Redis replies, and
deleting test keys."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
from redis.asyncio import Redis


async def until(
    check: Callable[[], Awaitable[object]], timeout: float = 5.0, interval: float = 0.01
) -> None:
    """Poll ``check`` every ``interval`` seconds until it is truthy; fail after ``timeout``."""
    with anyio.fail_after(timeout):
        while True:
            if await check():
                return
            await anyio.sleep(interval)


async def reply(command: Awaitable[Any] | Any) -> Any:
    """The reply of an asyncio redis-py command whose annotations do not say it is awaitable.

    redis-py 5 annotates some commands (``hget``, ``lrange``, ``llen``, ...) for its sync and
    asyncio clients at once, as ``Awaitable[T] | T`` with ``T`` a decoded ``str``; our clients
    return bytes. Usage: ``assert await reply(redis.hget(key, field)) == b"1"``.
    """
    return await command if inspect.isawaitable(command) else command


async def delete_keys(redis: Redis, match: str, also: Iterable[str] = ()) -> None:
    """Delete the keys matching the pattern ``match`` and the keys ``also``, 1,000 a call."""
    doomed: list[bytes | str] = [k async for k in redis.scan_iter(match=match, count=1000)]
    doomed += also
    for start in range(0, len(doomed), 1000):
        await redis.delete(*doomed[start : start + 1000])
