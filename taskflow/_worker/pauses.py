"""The pause watch: which of the worker's queues are paused (``app.queue(name).pause()``).

It reads the paused set when it starts, whenever a pause or resume is published, and every
``INTERVAL`` seconds (a missed message costs at most that), and hands the result to the job
loop, which claims nothing from a paused queue from its next claim on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import anyio
from anyio.abc import TaskStatus

from .._listener import listen
from .._protocol import keys

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from .services import ServiceContext

__all__ = ("PauseWatch",)

INTERVAL = 5.0


class PauseWatch:
    """Keeps the job loop's set of paused queues current."""

    name = "pause-watch"

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._changed = anyio.Event()

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        await self.look(ctx)  # before the first claim: a paused queue is never claimed from
        task_status.started()
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: listen(
                    ctx.redis,
                    [keys.PAUSED_CHANNEL],
                    lambda _data: self._changed.set(),
                    on_subscribed=self._changed.set,
                    backoff_cap=ctx.health.backoff_cap,
                )
            )
            while True:
                with anyio.move_on_after(self.interval):
                    await self._changed.wait()
                self._changed = anyio.Event()
                await self.look(ctx)

    async def look(self, ctx: ServiceContext) -> None:
        members = await ctx.health.call(
            "reading the paused queues",
            cast("Awaitable[set[bytes]]", ctx.redis.smembers(keys.PAUSED)),
        )
        if members is None:
            return
        ctx.set_paused(frozenset(m.decode() for m in members))
