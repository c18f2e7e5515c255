"""The waker service: push instead of polling for the job loop.

Enqueues (and graph releases, retries, requeues) publish on ``taskflow:wake:<queue key>``;
an idle worker wakes at once instead of sleeping out its poll interval. Plain arq clients
publish nothing; the poll interval covers them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyio.abc import TaskStatus

from .._listener import listen
from .._protocol import keys

if TYPE_CHECKING:
    from .services import ServiceContext

__all__ = ("Waker",)


class Waker:
    """Wakes the worker's job loop when one of its queues gets a job."""

    name = "waker"

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        channels = [keys.wake_channel(q) for q in ctx.queues]
        task_status.started()  # claiming works without it (polling); don't wait for Redis
        await listen(
            ctx.redis,
            channels,
            lambda _data: ctx.wake(),
            # a message may have been missed while unsubscribed: look at the queues now
            on_subscribed=ctx.wake,
            backoff_cap=ctx.health.backoff_cap,
        )
