"""The memory-policy watch: an evicting Redis silently deletes jobs and results.

At start, and then every ``INTERVAL`` seconds, the worker reads ``INFO memory`` and
``INFO stats``. A ``maxmemory-policy`` that may evict keys (anything but ``noeviction``, with
``maxmemory`` set) is a warning naming the setting to change, or with
``WorkerSettings.refuse_evicting_redis`` a refusal to start; keys evicted since the last
look are a warning with their count, and each reading of the counter goes to Redis for the
``redis_evicted_keys`` alert metric. ``INFO`` is used rather than ``CONFIG GET``, which
managed Redis services often disable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from redis.exceptions import RedisError

from .._clock import now_ms
from ..connection import CONNECTION_ERRORS
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .services import ServiceContext

__all__ = ("MemoryPolicyWatch", "RedisState", "evicting_policy", "redis_state")

logger = logging.getLogger("taskflow.worker")

INTERVAL = 60.0
KEEP_MS = 24 * 3600 * 1000


def evicting_policy(info: dict[str, Any]) -> str | None:
    """The policy named in ``INFO memory`` when it may evict keys, else None."""
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy == "noeviction" or not int(info.get("maxmemory", 0) or 0):
        return None
    return policy


@dataclass(frozen=True, slots=True)
class RedisState:
    """What ``taskflow check`` reports of the server: memory, its policy, its role."""

    used: int  #: bytes
    maxmemory: int  #: bytes; 0 is no limit
    policy: str
    evicted: int  #: keys evicted since Redis started
    replica: bool  #: a read-only replica: every write is refused

    @property
    def full(self) -> bool:
        """At maxmemory under noeviction: writes are refused (workers wait them out)."""
        return self.policy == "noeviction" and 0 < self.maxmemory <= self.used

    @property
    def evicting(self) -> bool:
        return self.policy != "noeviction" and self.maxmemory > 0

    @property
    def healthy(self) -> bool:
        return not (self.full or self.replica)

    def describe(self) -> str:
        limit = f"of maxmemory {_mb(self.maxmemory)}" if self.maxmemory else "(no maxmemory)"
        memory = f"{_mb(self.used)} used {limit}, maxmemory-policy {self.policy}"
        if self.replica:
            return (
                f"READ-ONLY REPLICA: writes are refused; point redis_url at the primary ({memory})"
            )
        if self.full:
            return (
                f"OUT OF MEMORY: {memory}: writes are refused, workers wait and retry; raise "
                "maxmemory or free memory"
            )
        if self.evicting:
            return (
                f"ok, but WARNING: {memory} may delete jobs and results when memory is full "
                f"({self.evicted} keys evicted since Redis started); set maxmemory-policy "
                "noeviction"
            )
        return f"ok ({memory})"


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


async def redis_state(redis: Redis) -> RedisState:
    """The server's memory, policy and role from ``INFO`` (``CONFIG`` is often disabled)."""
    memory = await redis.info("memory")
    stats = await redis.info("stats")
    replication = await redis.info("replication")
    return RedisState(
        used=int(memory.get("used_memory", 0)),
        maxmemory=int(memory.get("maxmemory", 0) or 0),
        policy=str(memory.get("maxmemory_policy", "noeviction")),
        evicted=int(stats.get("evicted_keys", 0) or 0),
        replica=replication.get("role") == "slave",
    )


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
            await self.record(ctx, evicted - self.evicted)
            logger.warning(
                "Redis evicted %d keys in the last %gs (maxmemory-policy %s): jobs or "
                "results may be gone; set maxmemory-policy noeviction or raise maxmemory",
                evicted - self.evicted,
                self.interval,
                policy or str(memory.get("maxmemory_policy", "?")),
            )
        self.evicted = evicted

    async def record(self, ctx: ServiceContext, evicted: int) -> None:
        """Note ``evicted`` keys since the last look for the ``redis_evicted_keys`` alert
        metric (a day is kept). Each worker notes what it saw; the metric takes the worker
        that saw the most. Only growth is written: under an evicting policy this key may be
        evicted too, and the next look writes again."""
        now = now_ms()
        try:
            async with ctx.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(ctx.keys.evictions, {f"{now}:{ctx.worker_id}:{evicted}": now})
                pipe.zremrangebyscore(ctx.keys.evictions, "-inf", now - KEEP_MS)
                pipe.pexpire(ctx.keys.evictions, KEEP_MS)
                await pipe.execute()
        except RedisError as exc:  # a full Redis refuses it: the log line still tells
            logger.debug("eviction reading not recorded: %s", exc)
