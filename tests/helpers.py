"""Helpers the test modules share: polling until something holds, and deleting test keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

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


async def delete_keys(redis: Redis, match: str, also: Iterable[str] = ()) -> None:
    """Delete the keys matching the pattern ``match`` and the keys ``also``, 1,000 a call."""
    doomed: list[bytes | str] = [k async for k in redis.scan_iter(match=match, count=1000)]
    doomed += also
    for start in range(0, len(doomed), 1000):
        await redis.delete(*doomed[start : start + 1000])
