"""The memory-policy watch: an evicting Redis silently deletes jobs and results.

At start, and then every ``INTERVAL`` seconds, the worker reads ``INFO memory`` and
``INFO stats``. A ``maxmemory-policy`` that may evict keys (anything but ``noeviction``, with
``maxmemory`` set) is a warning naming the setting to change, or with
``WorkerSettings.refuse_evicting_redis`` a refusal to start; keys evicted since the last
look are a warning with their count. ``INFO`` is used rather than ``CONFIG GET``, which
managed Redis services often disable.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from redis.exceptions import RedisError

from ..connection import CONNECTION_ERRORS
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .services import ServiceContext

__all__ = ("MemoryPolicyWatch", "evicting_policy")

logger = logging.getLogger("taskflow.worker")

INTERVAL = 60.0


def evicting_policy(info: dict[str, Any]) -> str | None:
    """The policy named in ``INFO memory`` when it may evict keys, else None."""
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy == "noeviction" or not int(info.get("maxmemory", 0) or 0):
        return None
    return policy


class MemoryPolicyWatch:
    """Warns when Redis may evict, or did evict, keys (taskflow's jobs among them)."""

    name = "memory-policy"

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.evicted: int | None = None  #: evicted_keys at the last look
        self.policy: str | None = None  #: the evicting policy, once seen

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        await self.look(ctx)
        if self.policy is not None and ctx.settings.refuse_evicting_redis:
            raise ConfigurationError(
                f"Redis maxmemory-policy is {self.policy}: it may delete jobs and results "
                "when memory is full; set maxmemory-policy noeviction (or run with "
                "WorkerSettings.refuse_evicting_redis=False to only warn)"
            )
        task_status.started()
        while True:
            await anyio.sleep(self.interval)
            await self.look(ctx)

    async def look(self, ctx: ServiceContext) -> None:
        try:
            memory = await ctx.redis.info("memory")
            stats = await ctx.redis.info("stats")
        except CONNECTION_ERRORS as exc:
            ctx.health.redis_failed("reading Redis's memory policy", exc)
            return
        except RedisError as exc:  # INFO disabled: nothing to learn, nothing to break
            logger.debug("cannot read Redis INFO: %s", exc)
            return
        policy = evicting_policy(memory)
        if policy is not None and policy != self.policy:
            logger.warning(
                "Redis maxmemory-policy is %s: when memory is full Redis deletes keys, jobs "
                "and results included, and taskflow cannot tell; set maxmemory-policy "
                "noeviction (then a full Redis refuses writes, which taskflow reports and "
                "waits out)",
                policy,
            )
        self.policy = policy
        evicted = int(stats.get("evicted_keys", 0) or 0)
        if self.evicted is not None and evicted > self.evicted:
            logger.warning(
                "Redis evicted %d keys in the last %.0fs (maxmemory-policy %s): jobs or "
                "results may be gone; set maxmemory-policy noeviction or raise maxmemory",
                evicted - self.evicted,
                self.interval,
                policy or str(memory.get("maxmemory_policy", "?")),
            )
        self.evicted = evicted
