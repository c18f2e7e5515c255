"""``app.queue(name)``: a handle on one queue to pause, resume, move and purge its jobs.

Each operation is atomic against workers claiming at the same moment (a job is moved,
purged or claimed, never two of these), and works in bounded steps (``_STEP`` jobs per
script call) so a queue of a million jobs never holds Redis for long.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from ._clock import now_ms
from ._options import check_queue
from ._protocol import keys
from .errors import ConfigurationError, redis_errors

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ._client import Client

__all__ = ("QueueHandle",)

_STEP = 500


class QueueHandle:
    """One queue, by name (``app.queues`` stays the list of the app's queue names)."""

    def __init__(self, app: Client, name: str) -> None:
        check_queue(name)
        self.app = app
        self.name = name

    def __repr__(self) -> str:
        return f"<QueueHandle {self.name!r}>"

    @redis_errors
    async def pause(self) -> None:
        """Workers stop claiming from this queue at once (every app's workers: queues are
        shared); running jobs finish. Enqueueing goes on."""
        async with self.app.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.PAUSED, self.name)
            pipe.publish(keys.PAUSED_CHANNEL, self.name)
            await pipe.execute()

    @redis_errors
    async def resume(self) -> None:
        """Workers claim from this queue again."""
        async with self.app.redis.pipeline(transaction=True) as pipe:
            pipe.srem(keys.PAUSED, self.name)
            pipe.publish(keys.PAUSED_CHANNEL, self.name)
            pipe.publish(keys.wake_channel(self.name), "1")
            await pipe.execute()

    @redis_errors
    async def is_paused(self) -> bool:
        return bool(await cast("Awaitable[int]", self.app.redis.sismember(keys.PAUSED, self.name)))

    @redis_errors
    async def move(self, to: str, *, limit: int | None = None) -> int:
        """Move up to ``limit`` (all by default) waiting jobs, oldest first, to queue
        ``to``, keeping when each may run; jobs running now stay. Returns how many moved.

        Workers must serve ``to`` with the same tasks, as the jobs are unchanged."""
        check_queue(to, "to")
        if to == self.name:
            raise ConfigurationError(f"move to={to!r}: that is this queue")
        _check_limit(limit)
        moved = held = 0
        while limit is None or moved < limit:
            step = _STEP if limit is None else min(_STEP, limit - moved)
            done, skipped, left = await self.app.scripts.queue_move(self.name, to, step, held)
            moved, held = moved + done, held + skipped
            if left == 0 or done + skipped == 0:
                break
        return moved

    @redis_errors
    async def purge(self, *, older_than: timedelta = timedelta(0)) -> int:
        """Delete the waiting jobs that have been ready for longer than ``older_than`` (all
        ready ones by default; deferred jobs whose time has not come stay). Their waiters
        then get ``JobNotFound``. Returns how many were deleted."""
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise ConfigurationError(f"older_than={older_than!r} must be a timedelta >= 0")
        before = now_ms() - int(older_than.total_seconds() * 1000)
        purged = held = 0
        while True:
            done, skipped, more = await self.app.scripts.queue_purge(self.name, before, _STEP, held)
            purged, held = purged + done, held + skipped
            if not more:
                return purged


def _check_limit(limit: Any) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigurationError(f"limit={limit!r} must be a positive integer, or None for all")
