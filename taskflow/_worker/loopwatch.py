"""The loop watch: a thread that notices the worker's event loop blocked and speaks for it.

A body that does not await (CPU-bound, or a blocking call) stops every coroutine of its
worker, the heartbeat included: without a voice, the worker would look dead and its jobs'
leases would lapse, so a long computation within its timeout would be run a second time
elsewhere. The thread asks the loop to run a callback every heartbeat interval; while one
goes unanswered for a whole interval the loop is blocked, and the thread writes the
heartbeat record itself (marked ``blocked_since_ms``, with the running jobs and their timeout
deadlines) and renews the leases of the jobs still inside their timeout. Jobs past their
timeout are left alone: the monitor fails them as timed out (``lua/release_overdue.lua``),
and under ``taskflow worker`` the supervisor replaces the wedged process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING

import anyio
import orjson
from anyio.abc import TaskStatus
from redis.exceptions import RedisError

from .._clock import now_ms
from .._protocol import keys
from .._protocol.scripts import claim_token, lua_source
from ..connection import sync_twin
from .heartbeat import worker_record

if TYPE_CHECKING:
    from redis import Redis as SyncRedis
    from redis.commands.core import Script

    from .services import ServiceContext

__all__ = ("LoopProbe", "LoopWatch")

logger = logging.getLogger("taskflow.worker")


class LoopProbe:
    """Measures, from another thread, how long the event loop has been blocked: each
    :meth:`blocked_for` asks the loop to run a callback if the last one was answered, and
    says how long an unanswered one has waited (0.0 while the loop answers)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.since: float | None = None  #: monotonic time of the unanswered ask
        self.since_ms = 0  #: the same, wall clock ms

    def _answer(self) -> None:
        self.since = None

    def blocked_for(self) -> float:
        """Seconds the pending ask has waited; raises RuntimeError once the loop is closed."""
        since = self.since
        if since is None:
            self.since, self.since_ms = time.monotonic(), now_ms()
            self.loop.call_soon_threadsafe(self._answer)
            return 0.0
        return time.monotonic() - since


class LoopWatch:
    """Speaks for the worker while its event loop is blocked (see the module's docstring)."""

    name = "loop-watch"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.reports = 0  #: records written since the loop was last seen blocked
        self._renew: Script | None = None

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        probe = LoopProbe(asyncio.get_running_loop())
        thread = threading.Thread(
            target=self._watch, args=(ctx, probe), name=f"taskflow-loop-watch-{ctx.worker_id}"
        )
        thread.daemon = True  # a wedged process must still be able to exit
        self._stop.clear()
        thread.start()
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            self._stop.set()

    def _watch(self, ctx: ServiceContext, probe: LoopProbe) -> None:
        interval = ctx.settings.heartbeat_interval.total_seconds()
        redis: SyncRedis | None = None
        try:
            while not self._stop.wait(interval):
                try:
                    blocked = probe.blocked_for()
                except RuntimeError:  # the loop is closed: the worker is gone
                    return
                if blocked < interval:
                    if blocked == 0.0:
                        self.reports = 0
                    continue
                if redis is None:
                    redis = sync_twin(ctx.redis)
                    self._renew = redis.register_script(lua_source("renew"))
                self._speak(ctx, redis, blocked, probe.since_ms)
        finally:
            if redis is not None:
                redis.close()

    def _speak(self, ctx: ServiceContext, redis: SyncRedis, blocked: float, since: int) -> None:
        """Write the record marked blocked; renew the leases of jobs inside their timeout."""
        now = now_ms()
        lease_ms = int(ctx.settings.lease.total_seconds() * 1000)
        try:
            record = worker_record(ctx, now, blocked, blocked_since=since)
            inside = [
                (job_id, slot.claim.queue, claim_token(ctx.worker_id, slot.claim.attempt))
                for job_id, slot in list(ctx.jobs.running.items())
                if not slot.finishing and slot.deadline_ms > now
            ]
        except RuntimeError:  # the loop moved on while this was read: it is not blocked
            return
        try:
            raw = orjson.dumps(record)
            with redis.pipeline(transaction=False) as pipe:
                pipe.set(ctx.keys.worker(ctx.worker_id), raw, px=lease_ms)
                pipe.set(ctx.keys.will(ctx.worker_id), raw, px=lease_ms + keys.WILL_KEEP_MS)
                pipe.zadd(ctx.keys.workers, {ctx.worker_id: now})
                pipe.execute()
            if inside and self._renew is not None:
                pairs: list[str] = []
                args: list[str | int] = [lease_ms, now]
                for job_id, queue, token in inside:
                    pairs += [keys.in_progress(job_id), keys.queue(queue)]
                    args += [job_id, token]
                self._renew(keys=pairs, args=args)
        except (RedisError, OSError) as exc:
            logger.debug("loop watch: could not write the blocked worker's record: %s", exc)
            return
        if self.reports == 0 or self.reports % 10 == 0:
            overdue = sum(1 for s in list(ctx.jobs.running.values()) if s.deadline_ms <= now)
            logger.warning(
                "the event loop has been blocked for %.1fs (a task body that does not "
                "await?); the loop watch keeps the worker's record and %d leases alive, "
                "%d jobs are past their timeout",
                blocked,
                len(inside),
                overdue,
            )
        self.reports += 1
