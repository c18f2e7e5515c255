"""A loopback TCP proxy in front of Redis that loses replies: the command reaches Redis and
runs, and its reply is dropped with the connection, so the client sees a connection error
for a command that took effect (the hardest case for at-least-once bookkeeping)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from typing import Self


class ReplyDroppingProxy:
    """``with ReplyDroppingProxy(port, seed=1) as proxy:`` clients of ``proxy.port`` reach
    the Redis on ``upstream_port``. Once ``armed``, each reply to a script call (claims,
    finishes, renewals: where a lost reply matters) is dropped with probability ``rate``
    until ``limit`` have been; ``dropped`` counts them."""

    def __init__(
        self, upstream_port: int, *, seed: int, rate: float = 0.01, limit: int = 10
    ) -> None:
        self.upstream_port = upstream_port
        self.rng = random.Random(seed)
        self.rate = rate
        self.limit = limit
        self.armed = False
        self.dropped = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = started.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    def _drop_now(self) -> bool:
        if not self.armed or self.dropped >= self.limit or self.rng.random() >= self.rate:
            return False
        self.dropped += 1
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        script = False  # the connection's last command was a script call (EVALSHA)

        async def commands() -> None:
            nonlocal script
            while data := await reader.read(65536):
                script = b"EVALSHA" in data.upper()
                up_writer.write(data)
                await up_writer.drain()

        async def replies() -> None:
            while data := await up_reader.read(65536):
                if script and self._drop_now():
                    return  # the script ran; its reply is lost with the connection
                writer.write(data)
                await writer.drain()

        tasks = [
            asyncio.ensure_future(commands()),
            asyncio.ensure_future(replies()),
        ]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()
