"""The loop watch: a thread that notices the worker's event loop blocked and speaks for it.

A body that does not await (CPU-bound, or a blocking call) stops every coroutine of its
worker, the heartbeat included: without a voice, the worker would look dead and its jobs'
leases would lapse, so a long computation within its timeout would be run a second time
elsewhere. The thread asks the loop to run a callback every half heartbeat interval; while
one goes unanswered for that long the loop is blocked, and the thread writes the heartbeat
record itself (marked ``blocked_since_ms``) and the worker's will (its running jobs and
their timeout deadlines), renews the leases of the jobs still inside their timeout (or whose
outcome is being written), and fails the attempts past their timeout as timed out
(``lua/release_overdue.lua``): the next claim, on any worker, retries them under their
task's policy. The monitor's pass does the same from another worker should this thread be
unable to; under ``taskflow worker`` the supervisor replaces the wedged process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from anyio.abc import TaskStatus
from redis.exceptions import RedisError

from .._clock import now_ms
from .._protocol import keys
from .._protocol.scripts import claim_token, lua_source, release_overdue_keys
from .._registry import overdue, queue_event
from ..connection import sync_twin
from .heartbeat import running_jobs, worker_record

if TYPE_CHECKING:
    from redis import Redis as SyncRedis

    from .services import ServiceContext

__all__ = ("LoopProbe", "LoopWatch", "overdue_release")

_CALL_TIMEOUT = 2.0  # seconds a Redis call of the watch's thread may take

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
        if self.loop.is_closed():
            raise RuntimeError("the event loop is closed")
        since = self.since
        if since is None:
            self.since, self.since_ms = time.monotonic(), now_ms()
            self.loop.call_soon_threadsafe(self._answer)
            return 0.0
        return time.monotonic() - since


def overdue_release(
    worker_id: str, job: dict[str, Any], blocked_s: float
) -> tuple[str, bytes, dict[str, Any]]:
    """What failing an overdue attempt (``lua/release_overdue.lua``) takes: the claim's
    token, the note the next claim reads, and the monitor event."""
    attempt = int(job["attempt"])
    timeout = round((int(job["deadline_ms"]) - int(job["started_ms"])) / 1000, 3)
    note = {
        "kind": "overdue",
        "attempt": attempt,
        "worker": worker_id,
        "timeout_s": timeout,
        "blocked_s": round(blocked_s, 3),
    }
    event = {**note, "job": job["id"], "queue": job["queue"], "task": job.get("task", "")}
    return claim_token(worker_id, attempt), orjson.dumps(note), event


class LoopWatch:
    """Speaks for the worker while its event loop is blocked (see the module's docstring)."""

    name = "loop-watch"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.reports = 0  #: records written since the loop was last seen blocked
        self.released = 0  #: overdue attempts this watch failed as timed out
        self._failed_episode = False  # a write failed during this blocked episode

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
            # a write in flight must land before the worker deregisters, not after
            thread.join(timeout=_CALL_TIMEOUT * 3)

    def _watch(self, ctx: ServiceContext, probe: LoopProbe) -> None:
        half = ctx.settings.heartbeat_interval.total_seconds() / 2
        redis = sync_twin(ctx.redis, timeout=_CALL_TIMEOUT)
        scripts = _SyncScripts(redis)
        try:
            while not self._stop.wait(half):
                try:
                    blocked = probe.blocked_for()
                except RuntimeError:  # the loop is closed: the worker is gone
                    return
                if blocked < half:
                    if blocked == 0.0:
                        self.reports, self._failed_episode = 0, False
                    continue
                self._speak(ctx, redis, scripts, blocked, probe.since_ms)
        finally:
            redis.close()

    def _speak(
        self,
        ctx: ServiceContext,
        redis: SyncRedis,
        scripts: _SyncScripts,
        blocked: float,
        since: int,
    ) -> None:
        """Write the record marked blocked and the will; renew the leases of jobs inside
        their timeout (or being finished); fail the attempts past it."""
        now = now_ms()
        lease_ms = int(ctx.settings.lease.total_seconds() * 1000)
        try:
            record = worker_record(ctx, now, blocked, blocked_since=since)
            jobs = running_jobs(ctx)
            slots = list(ctx.jobs.running.items())
        except RuntimeError:  # the loop moved on while this was read: it is not blocked
            return
        inside = [
            (job_id, slot.claim.queue, claim_token(ctx.worker_id, slot.claim.attempt))
            for job_id, slot in slots
            if slot.finishing or slot.deadline_ms > now
        ]
        past = overdue({"jobs": jobs}, now)
        try:
            with redis.pipeline(transaction=False) as pipe:
                pipe.set(ctx.keys.worker(ctx.worker_id), orjson.dumps(record), px=lease_ms)
                will = orjson.dumps({**record, "jobs": jobs})
                pipe.set(ctx.keys.will(ctx.worker_id), will, px=lease_ms + keys.WILL_KEEP_MS)
                pipe.zadd(ctx.keys.workers, {ctx.worker_id: now})
                pipe.execute()
            if inside:
                scripts.renew(inside, lease_ms, now)
            for job in past:
                self._release(ctx, redis, scripts, job, blocked, now)
        except (RedisError, OSError) as exc:
            if not self._failed_episode:
                self._failed_episode = True
                logger.warning(
                    "the event loop is blocked and the loop watch cannot reach Redis (%s): "
                    "the worker's leases lapse in %gs",
                    exc,
                    lease_ms / 1000,
                )
            return
        if self.reports % 10 == 0:
            logger.warning(
                "the event loop has been blocked for %.1fs (a task body that does not "
                "await?); the loop watch keeps the worker's record and %d leases alive, "
                "%d jobs are past their timeout",
                blocked,
                len(inside),
                len(past),
            )
        self.reports += 1

    def _release(
        self,
        ctx: ServiceContext,
        redis: SyncRedis,
        scripts: _SyncScripts,
        job: dict[str, Any],
        blocked: float,
        now: int,
    ) -> None:
        token, note, event = overdue_release(ctx.worker_id, job, blocked)
        ttl_ms = int(ctx.app_settings.job_ttl.total_seconds() * 1000)
        if not scripts.release_overdue(job["id"], job["queue"], token, now, note, ttl_ms):
            return
        self.released += 1
        with redis.pipeline(transaction=False) as pipe:
            queue_event(pipe, ctx.keys, event, ctx.app_settings.event_retention)
            pipe.execute()
        logger.warning(
            "job %s (%s) failed as timed out: its %gs timeout passed while this worker's "
            "event loop was blocked; another worker retries it under its task's policy",
            job["id"],
            job.get("task", ""),
            event["timeout_s"],
        )


class _SyncScripts:
    """The two scripts the watch's thread calls, on its blocking client."""

    def __init__(self, redis: SyncRedis) -> None:
        self._renew = redis.register_script(lua_source("renew"))
        self._release = redis.register_script(lua_source("release_overdue"))

    def renew(self, jobs: list[tuple[str, str, str]], lease_ms: int, now: int) -> None:
        pairs: list[str] = []
        args: list[str | int] = [lease_ms, now]
        for job_id, queue, token in jobs:
            pairs += [keys.in_progress(job_id), keys.queue(queue)]
            args += [job_id, token]
        self._renew(keys=pairs, args=args)

    def release_overdue(
        self, job_id: str, queue: str, token: str, now: int, note: bytes, ttl_ms: int
    ) -> bool:
        keys_ = release_overdue_keys(job_id, queue)
        return bool(int(self._release(keys=keys_, args=[token, job_id, now, note, ttl_ms])))
