"""Results pushed instead of polled, over Redis pub/sub.

:class:`ResultListener`, one per open app: a client waiting for a job or run adds its
channel to ``taskflow:notify:<id>``; the finishing script publishes the id there. Waiters
still re-check on a slow timer, so a lost message only costs latency. :func:`listen` is the
resubscribing loop the worker's waker shares.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from ._protocol import keys
from .connection import CONNECTION_ERRORS

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub


__all__ = ("ResultListener", "listen")

logger = logging.getLogger(__name__)


async def listen(
    redis: Redis,
    channels: list[str],
    on_message: Any,
    on_subscribed: Any = None,
    backoff_cap: float = 5.0,
) -> None:
    """Subscribe to ``channels`` and call ``on_message(data)`` for each message, forever,
    resubscribing with capped backoff when the connection drops."""
    delay = 0.05
    while True:
        pubsub: PubSub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            if on_subscribed is not None:
                on_subscribed()
            delay = 0.05
            async for message in pubsub.listen():
                if message and message.get("type") == "message":
                    on_message(message["data"])
        except CONNECTION_ERRORS as exc:
            logger.debug("pub/sub on %s dropped (%s); resubscribing", channels, exc)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except CONNECTION_ERRORS:
                    pass
        await anyio.sleep(delay)
        delay = min(delay * 2, backoff_cap)


class ResultListener:
    """The app's single subscription for "your job (or run) finished" messages.

    It runs no task of its own, so an app may be opened and closed from different tasks:
    whichever waiter needs a message reads the shared connection (one reader at a time,
    delivering to everyone), and when its own message arrives it hands the reading over.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.channel = keys.done_channel(uuid.uuid4().hex)
        self._waiters: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._pubsub: PubSub | None = None
        self._reading = False
        self._vacancy: asyncio.Future[bytes | None] | None = None

    async def subscribe(self) -> bool:
        """Subscribe if not yet subscribed; False if Redis cannot be reached (then waiters
        fall back to polling)."""
        if self._pubsub is None:
            pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
            except CONNECTION_ERRORS:
                await _close(pubsub)
                return False
            self._pubsub = pubsub
        return True

    async def aclose(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await _close(pubsub)

    def expect(self, job_or_run_id: str) -> asyncio.Future[bytes | None]:
        """A future set when ``job_or_run_id`` is reported finished on this channel: to the
        job's result record when the message carried it, else to None."""
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_or_run_id, []).append(future)
        return future

    def forget(self, job_or_run_id: str, future: asyncio.Future[bytes | None]) -> None:
        waiters = self._waiters.get(job_or_run_id)
        if waiters and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._waiters[job_or_run_id]

    async def wait(self, future: asyncio.Future[bytes | None], timeout: float) -> None:
        """Wait up to ``timeout`` seconds for ``future`` (then the caller re-checks Redis)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not future.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if not self._reading and self._pubsub is not None:
                await self._read(future, deadline)
            elif self._pubsub is None:  # no subscription: the caller polls
                await anyio.sleep(remaining)
                return
            else:
                if self._vacancy is None or self._vacancy.done():
                    self._vacancy = loop.create_future()
                # asyncio.wait leaves both futures alone on timeout
                await asyncio.wait([future, self._vacancy], timeout=remaining)

    async def _read(self, future: asyncio.Future[bytes | None], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        self._reading = True
        pubsub = self._pubsub
        assert pubsub is not None
        try:
            while not future.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=min(remaining, 1.0)
                )
                if message and message.get("type") == "message":
                    self._deliver(message["data"])
        except CONNECTION_ERRORS as exc:
            logger.debug("result subscription dropped (%s); waiters poll until resubscribed", exc)
            await self._drop(pubsub)
        except BaseException:
            # cancelled mid-read: the connection may hold half a reply
            with anyio.CancelScope(shield=True):
                await self._drop(pubsub)
            raise
        finally:
            self._reading = False
            if self._vacancy is not None and not self._vacancy.done():
                self._vacancy.set_result(None)  # another waiter takes over the reading

    async def _drop(self, pubsub: PubSub) -> None:
        if self._pubsub is pubsub:
            self._pubsub = None
        await _close(pubsub)

    def _deliver(self, data: bytes) -> None:
        # b"i<id>": that job or run finished; b"r<result record>": a job finished, with it
        kind, body = data[:1], data[1:]
        record: bytes | None = None
        if kind == b"r":
            record = body
            try:
                key = str(orjson.loads(body)["id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return
        else:
            key = body.decode()
        for future in self._waiters.pop(key, []):
            if not future.done():
                future.set_result(record)


async def _close(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    except CONNECTION_ERRORS:
        pass
