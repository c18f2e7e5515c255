"""Coalescing of Redis script calls: every call made while a round trip is in flight goes
out together in the next pipeline, so a hundred jobs finishing at once cost one round trip,
not a hundred.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from .services import ServiceContext

__all__ = ("Batcher",)


class Batcher:
    """A worker service that sends queued script calls in one non-transactional pipeline.

    Each call still runs as its own atomic script; only the round trip is shared. A call
    that fails (connection lost, script error) raises in its caller, who decides to retry.
    The pending calls use asyncio futures: the worker runs on asyncio only (arq is asyncio).
    """

    name = "batcher"

    def __init__(self, max_batch: int = 1000) -> None:
        self._redis: Redis | None = None
        self._max_batch = max_batch
        self._pending: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]] = []
        self._ready = anyio.Event()
        self._running = False
        self._in_flight = 0  # round trips under way, direct or batched

    async def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """Run ``script`` and return its reply: at once if no round trip is in flight (no
        added latency when idle), else in the next pipeline (one round trip for many)."""
        if not self._running or not self._in_flight:
            self._in_flight += 1
            try:
                return await script(keys=keys, args=args)
            finally:
                self._in_flight -= 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((script, keys, args, future))
        self._ready.set()
        return await future

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        self._redis = ctx.redis
        self._running = True
        task_status.started()
        try:
            while True:
                await self._ready.wait()
                self._ready = anyio.Event()
                while self._pending:
                    batch = self._pending[: self._max_batch]
                    del self._pending[: self._max_batch]
                    self._in_flight += 1
                    try:
                        await self._send(batch)
                    finally:
                        self._in_flight -= 1
        finally:
            self._running = False
            # callers retry connection errors themselves, now without batching
            error = ConnectionError("the worker's batcher stopped")
            for *_, future in self._pending:
                if not future.done():
                    future.set_exception(error)
            self._pending.clear()

    async def _send(
        self, batch: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]]
    ) -> None:
        assert self._redis is not None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for script, keys, args, _ in batch:
                    # plain EVALSHA: AsyncScript on a pipeline adds a SCRIPT EXISTS round trip
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (script, keys, args, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, NoScriptError):  # script cache flushed (e.g. Redis restarted)
                try:
                    reply = await script(keys=keys, args=args)  # loads it, then runs it
                except Exception as exc:
                    reply = exc
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
