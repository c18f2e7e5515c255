"""The child's side of ``taskflow worker``'s supervision: a thread that tells the
supervising parent, twice a second through an inherited pipe, whether the worker is wedged.

A line ``ok`` says the worker is fine; ``wedged <why>`` asks the parent to kill and replace
it: its event loop has been blocked (the thread asks the loop to run a callback, as the loop
watch does) past the timeout of a running job plus a grace, or for a minute with no job
running. A loop blocked by jobs without a timeout is not wedged: a slow job is not a hung
one. The thread keeps speaking while the loop is blocked; if even it falls silent (a C call
holding the GIL, a stopped process), the parent decides on silence alone. A child whose
parent is gone (killed) stops as SIGTERM stops it, rather than run on unsupervised.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from .._clock import now_ms
from .loopwatch import LoopProbe

if TYPE_CHECKING:
    from .services import ServiceContext

__all__ = ("SUPERVISOR_FD_ENV", "TICK", "SupervisorLink", "wedged")

logger = logging.getLogger("taskflow.worker")

SUPERVISOR_FD_ENV = "TASKFLOW_SUPERVISOR_FD"
TICK = 0.5  # seconds between lines
IDLE_BLOCK_S = 60.0  # a loop blocked this long with no job running is wedged


def wedged(ctx: ServiceContext, blocked: float, now: int) -> str | None:
    """Why a worker whose loop has been blocked ``blocked`` seconds is wedged, or None."""
    grace = 2 * ctx.settings.heartbeat_interval.total_seconds() + 1
    if blocked < grace:
        return None
    running = list(ctx.jobs.running.items())
    if not running:
        if blocked >= IDLE_BLOCK_S:
            return f"its event loop has been blocked for {blocked:.0f}s with no job running"
        return None
    overdue = [(job_id, slot) for job_id, slot in running if slot.deadline_ms + grace * 1000 < now]
    if not overdue:
        return None
    job_id, slot = overdue[0]
    return (
        f"its event loop has been blocked for {blocked:.1f}s, past the timeout of job "
        f"{job_id} ({slot.task})"
    )


class SupervisorLink:
    """Tells the supervising ``taskflow worker`` parent whether this worker is wedged."""

    name = "supervisor-link"

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._stop = threading.Event()

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        probe = LoopProbe(asyncio.get_running_loop())
        thread = threading.Thread(target=self._speak, args=(ctx, probe), daemon=True)
        thread.start()
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            self._stop.set()

    def _speak(self, ctx: ServiceContext, probe: LoopProbe) -> None:
        while not self._stop.wait(TICK):
            try:
                why = wedged(ctx, probe.blocked_for(), now_ms())
            except RuntimeError:  # the loop is closed, or moved on while this was read
                continue
            line = b"ok\n" if why is None else f"wedged {why}\n".encode()
            try:
                os.write(self.fd, line)
            except OSError as exc:  # the parent is gone: stop as SIGTERM would stop it
                logger.warning(
                    "the supervising taskflow worker process is gone (%s); stopping", exc
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return
