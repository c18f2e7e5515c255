"""The settler service: finishes what a dead worker or client left half-way in a run, and
deletes big runs whose retention has ended.

A node with many children releases them over several script calls (``SETTLE_BUDGET`` each;
see ``lua/settle_more.lua``), as a submission releases the roots and a cancel visits the
nodes (``CANCEL_BUDGET`` each). The process that began makes those calls; should it die in
between, the run stays in the settling set past its due time, and this service, in every
worker, picks it up and goes on. Big ended runs (over ``keys.REAP_ABOVE`` nodes) are
deleted here with UNLINK when their retention ends, rather than left to expire, which
would free their hashes in one long step.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from .._clock import now_ms
from ..runs import settle_run

if TYPE_CHECKING:
    from .services import ServiceContext

__all__ = ("Settler",)

logger = logging.getLogger("taskflow.worker")


class Settler:
    """Every half lease: resumes runs left half-way (a release or a cancel), and deletes big
    runs whose retention has ended."""

    name = "settler"

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        interval = ctx.settings.lease.total_seconds() / 2
        while True:
            await anyio.sleep(interval)
            await self.sweep(ctx)

    async def sweep(self, ctx: ServiceContext) -> None:
        due = await ctx.health.call(
            "looking for runs left half-released", ctx.scripts.settling(now_ms())
        )
        for run_id in due or []:
            logger.info("run %s: resuming what its worker or client left half-way", run_id)
            await settle_run(ctx.client, run_id, ctx.settings.lease)
        reaped = await ctx.health.call("deleting ended runs", ctx.scripts.reap(now_ms()))
        for run_id in reaped or []:
            logger.debug("run %s: retention ended, its keys deleted", run_id)
