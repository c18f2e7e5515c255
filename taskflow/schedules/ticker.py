"""The schedule ticker: a service in every worker that fires the app's schedules.

There is no leader. Every worker's ticker sleeps until the earliest tick due among the
stored schedules, then tries to fire it; ``lua/schedule_fire.lua`` lets exactly one worker
do so (its cursor must still point at that tick, and moves on in the same call), so a tick
makes one job however many workers race, and the schedule goes on while any worker lives.

A ticker woken after ticks passed with nobody to fire them (every worker down) applies
the schedule's misfire policy. Definitions are reloaded when a schedule changes (a
pub/sub message from ``app.schedules``) and every ``RELOAD`` seconds; a code schedule that
no running code has declared for ``retire_after`` is deleted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from redis.exceptions import RedisError

from .._clock import ms_to_datetime, now_ms
from .._listener import listen
from ..connection import CONNECTION_ERRORS
from .model import Misfire, Schedule

if TYPE_CHECKING:
    from .._worker.services import ServiceContext
    from .manager import Schedules

__all__ = ("ScheduleTicker",)

logger = logging.getLogger("taskflow.schedules")

RELOAD = 30.0
_COUNT_CAP = 100_000  # missed ticks counted at most (a 1 s schedule down for a day: 86,400)


class ScheduleTicker:
    """Fires due ticks of every stored schedule; see the module's docstring."""

    name = "schedules"

    def __init__(self, schedules: Schedules, retire_after: timedelta) -> None:
        self.schedules = schedules
        self.retire_after_ms = int(retire_after.total_seconds() * 1000)
        self._changed = anyio.Event()
        self._defs: dict[str, Schedule] = {}
        self._next: dict[str, int | None] = {}  # schedule -> its cursor (next tick ms)
        self._loaded_at = -math.inf
        self.fired = 0  #: jobs this ticker enqueued (the benchmark reads it)

    async def run(self, ctx: ServiceContext, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._listen, ctx)
            await self._register(ctx)
            while True:
                wait = await self.step(ctx)
                with anyio.move_on_after(wait):
                    await self._changed.wait()
                if self._changed.is_set():
                    self._changed = anyio.Event()
                    self._loaded_at = -math.inf

    async def _listen(self, ctx: ServiceContext) -> None:
        await listen(
            ctx.redis,
            [ctx.keys.schedule_changes],
            lambda _data: self._changed.set(),
            on_subscribed=self._changed.set,  # a change may have been missed meanwhile
            backoff_cap=ctx.health.backoff_cap,
        )

    async def _register(self, ctx: ServiceContext) -> None:
        delay = 0.05
        while True:
            try:
                await self.schedules.register_declared(now_ms())
                return
            except CONNECTION_ERRORS as exc:
                ctx.health.redis_failed("registering schedules", exc)
            except RedisError as exc:
                ctx.health.redis_refused("registering schedules", exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, ctx.health.backoff_cap)

    async def step(self, ctx: ServiceContext) -> float:
        """Reload if due, fire what is due; seconds until the next tick (or reload)."""
        try:
            now = now_ms()
            if now - self._loaded_at >= RELOAD * 1000:
                await self._reload(ctx, now)
            due = [n for n, at in self._next.items() if at is not None and at <= now]
            if due:
                await self._fire(ctx, due, now)
                ctx.health.redis_ok()  # a write went through (reads pass on a full Redis)
        except CONNECTION_ERRORS as exc:
            ctx.health.redis_failed("firing schedules", exc)
            return min(1.0, ctx.health.backoff_cap)
        except RedisError as exc:
            ctx.health.redis_refused("firing schedules", exc)
            return 1.0
        upcoming = [at for at in self._next.values() if at is not None]
        until_reload = self._loaded_at / 1000 + RELOAD - now_ms() / 1000
        if not upcoming:
            return max(0.0, until_reload)
        return max(0.0, min((min(upcoming) - now_ms()) / 1000, until_reload))

    async def _reload(self, ctx: ServiceContext, now: int) -> None:
        defs = await self.schedules.load()
        redis, keys = ctx.redis, ctx.keys
        async with redis.pipeline(transaction=False) as pipe:
            for name in defs:
                pipe.hmget(keys.schedule_state(name), ["next", "seen"])
            states = await pipe.execute()
        self._defs, self._next = {}, {}
        for (name, schedule), (cursor, seen) in zip(defs.items(), states, strict=True):
            if schedule.source == "code" and name not in self.schedules.declared:
                if seen is not None and now - int(seen) > self.retire_after_ms:
                    await self._retire(ctx, name)
                    continue
            self._defs[name] = schedule
            self._next[name] = int(cursor) if cursor else None
        if self.schedules.declared:  # this code still declares them: keep them alive
            async with redis.pipeline(transaction=False) as pipe:
                for name in self.schedules.declared:
                    pipe.hset(keys.schedule_state(name), "seen", str(now))
                await pipe.execute()
        self._loaded_at = now

    async def _retire(self, ctx: ServiceContext, name: str) -> None:
        logger.warning(
            "schedule %s: no running code has declared it for %ds; retired (deleted)",
            name,
            self.retire_after_ms // 1000,
        )
        async with ctx.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(ctx.keys.schedules, name)
            pipe.delete(ctx.keys.schedule_state(name))
            await pipe.execute()

    async def _fire(self, ctx: ServiceContext, names: list[str], now: int) -> None:
        expiry = int(self.schedules.app.settings.job_ttl.total_seconds() * 1000)
        calls: list[tuple[str, Any]] = []
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for name in names:
                schedule, cursor = self._defs[name], self._next[name]
                assert cursor is not None
                plan = self._plan(schedule, cursor, now)
                calls.append((name, plan))
                await ctx.scripts.schedule_fire(
                    ctx.keys,
                    name,
                    schedule.queue,
                    due_ms=cursor,
                    next_ms=plan.next_ms,
                    version=schedule.version,
                    now_ms=now,
                    overlap=schedule.overlap,
                    expiry_ms=expiry,
                    missed=plan.missed,
                    jobs=plan.jobs,
                    pipe=pipe,
                )
            replies = await pipe.execute(raise_on_error=False)
        for (name, plan), reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                ctx.health.redis_refused(f"firing schedule {name}", reply)
                continue
            outcome, enqueued = reply[0].decode(), int(reply[1])
            if outcome in ("taken", "stale"):
                self._loaded_at = -math.inf  # another worker moved it, or it changed: reload
                self._next[name] = None
                continue
            self._next[name] = plan.next_ms
            self.fired += enqueued
            if plan.missed:
                logger.warning(
                    "schedule %s: %d tick(s) passed with no worker to fire them (misfire=%s)",
                    name,
                    plan.missed,
                    self._defs[name].misfire.value,
                )
            if outcome == "overlap":
                logger.debug("schedule %s: tick skipped, its last job is still running", name)

    def _plan(self, schedule: Schedule, cursor: int, now: int) -> _Plan:
        """The jobs to enqueue for the ticks due from ``cursor`` to ``now``, and the
        cursor's next value. A tick fired more than ``grace`` after it was due counts as
        missed; with missed ticks the misfire policy decides: ``coalesce`` one job for the
        latest tick (``missed_ticks`` says how many came before it), ``skip`` none of the
        missed ones, ``all`` one per tick, the latest ``max_catchup``."""
        trigger, grace = schedule.trigger, int(schedule.grace.total_seconds() * 1000)
        keep = schedule.max_catchup if schedule.misfire is Misfire.ALL else 1
        due = [cursor]  # the latest `keep` due ticks
        count, late = 1, int(now - cursor > grace)
        tick = trigger.after(ms_to_datetime(cursor))
        while tick is not None and (t := int(tick.timestamp() * 1000)) <= now:
            count += 1
            late += now - t > grace
            due = [*due[-(keep - 1) :], t] if keep > 1 else [t]
            if count >= _COUNT_CAP:  # count no further; go on from now
                tick = trigger.after(ms_to_datetime(now))
                break
            tick = trigger.after(tick)
        next_ms = None if tick is None else int(tick.timestamp() * 1000)
        latest = due[-1]
        if late == 0:
            fired = [(latest, 0)]
        elif schedule.misfire is Misfire.COALESCE:
            fired = [(latest, count - 1)]
        elif schedule.misfire is Misfire.SKIP:
            fired = [] if now - latest > grace else [(latest, 0)]
        else:
            fired = [(t, 0) for t in due]
        jobs = [
            (
                schedule.job_id(t),
                self.schedules.payload(schedule, t, missed, now),
                t + schedule.jitter_ms(t),
            )
            for t, missed in fired
        ]
        return _Plan(jobs, next_ms, late)


@dataclass(frozen=True, slots=True)
class _Plan:
    jobs: list[tuple[str, bytes, int]]  #: (job id, payload, score)
    next_ms: int | None  #: the cursor's next value; None once the schedule has ended
    missed: int  #: ticks fired later than their grace
