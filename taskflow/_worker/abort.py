"""The abort watcher service: cancels running jobs that a client flagged in arq's abort set."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from .._clock import now_ms
from .._protocol import keys

if TYPE_CHECKING:
    from .services import ServiceContext

__all__ = ("AbortWatcher",)

logger = logging.getLogger("taskflow.worker")


class AbortWatcher:
    """Every ``interval`` seconds while jobs run, look for abort requests naming them."""

    name = "abort-watcher"

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        while True:
            await anyio.sleep(self.interval)
            await self.check(ctx)

    async def check(self, ctx: ServiceContext) -> None:
        """One look at the abort set; interrupts the running jobs it names."""
        if not ctx.jobs.running:
            return
        flagged = await ctx.health.call(
            "reading the abort set",
            ctx.redis.zrangebyscore(keys.ABORT, now_ms() - 60_000, "+inf"),
        )
        for raw in flagged or []:
            job_id = raw.decode()
            if job_id in ctx.jobs.running and ctx.jobs.interrupt(job_id, "abort"):
                logger.info("job %s: aborted by request", job_id)
