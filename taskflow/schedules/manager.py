"""``app.schedules``: schedules declared in code, added at run time, paused, resumed, run now
and listed, from any process. Definitions and cursors live in Redis (``keys.AppKeys``):
the ticker in every worker fires them (``ticker.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._clock import ms_to_datetime, now_ms
from .._options import check_queue
from .._protocol.codecs import JobPayload, encode_job
from ..errors import ConfigurationError, ScheduleNotFound, redis_errors
from ..task import JobHandle, Task
from .model import Misfire, Schedule, ScheduleInfo
from .triggers import Cron, Every, Trigger

if TYPE_CHECKING:
    from .._client import Client

__all__ = ("Schedules", "build_schedule")

T = TypeVar("T")


def build_schedule(
    task: Task[Any, Any],
    *,
    cron: str | None = None,
    every: timedelta | None = None,
    tz: str | None = None,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
    queue: str | None = None,
    jitter: timedelta = timedelta(0),
    start: datetime | None = None,
    end: datetime | None = None,
    misfire: Misfire | str = Misfire.COALESCE,
    max_catchup: int = 100,
    overlap: bool = True,
    grace: timedelta = timedelta(seconds=1),
    source: str = "code",
) -> Schedule:
    """A schedule of ``task``, every part checked now: the arguments as an enqueue checks
    them (naming the bad parameter), the cron expression (naming the bad field), the zone."""
    if (cron is None) == (every is None):
        raise ConfigurationError(
            f"schedule of {task.name!r}: give exactly one of cron='*/5 * * * *' or "
            "every=timedelta(...)"
        )
    trigger: Trigger
    if cron is not None:
        trigger = Cron.parse(cron, tz, start, end)
    else:
        if tz is not None:
            raise ConfigurationError("tz= applies to cron= schedules; every= counts real time")
        assert every is not None
        trigger = Every.parse(every, start, end)
    try:
        misfire = Misfire(misfire)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in Misfire)
        raise ConfigurationError(f"misfire={misfire!r} is not valid; use {valid}") from None
    if not isinstance(jitter, timedelta) or not isinstance(grace, timedelta):
        raise ConfigurationError("jitter= and grace= take a timedelta")
    queue = queue or task.options.queue
    check_queue(queue)
    wire_args, wire_kwargs = task.signature.encode(tuple(args), dict(kwargs or {}))
    return Schedule(
        name=name or task.name,
        task=task.name,
        queue=queue,
        trigger=trigger,
        args=wire_args,
        kwargs=wire_kwargs,
        jitter=jitter,
        misfire=misfire,
        max_catchup=max_catchup,
        overlap=overlap,
        grace=grace,
        source=source,
    )


class Schedules:
    """The app's schedules: those declared in code (registered by every worker at start)
    and those added at run time; control them from any process with the app open."""

    def __init__(self, app: Client) -> None:
        self.app = app
        #: declared in code (``app.periodic``, ``app.schedule``), by name
        self.declared: dict[str, Schedule] = {}

    def declare(self, schedule: Schedule) -> Schedule:
        """Add a code schedule; a second one with the same name is refused."""
        if schedule.name in self.declared:
            raise ConfigurationError(
                f"a schedule named {schedule.name!r} is declared already; pass name= to "
                "schedule the same task twice"
            )
        self.declared[schedule.name] = schedule
        return schedule

    # -- from any process -----------------------------------------------------------------

    @redis_errors
    async def add(self, task: Task[Any, Any] | str, **options: Any) -> ScheduleInfo:
        """Add (or replace) a schedule at run time, from any process: ``cron=`` or
        ``every=`` and the options of ``app.schedule``. Workers fire it within a tick."""
        if isinstance(task, str):
            task = self.app.get_task(task)
        schedule = build_schedule(task, source="runtime", **options)
        await self._store(schedule, now=now_ms())
        return await self.get(schedule.name)

    @redis_errors
    async def remove(self, name: str) -> None:
        """Delete a schedule and its state; a declared one comes back when a worker starts
        with it in its code."""
        await self._definition(name)
        redis, keys = self.app.redis, self.app.keys
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.schedules, name)
            pipe.delete(keys.schedule_state(name))
            pipe.publish(keys.schedule_changes, name)
            await pipe.execute()

    @redis_errors
    async def pause(self, name: str) -> None:
        """Its ticks pass without a job until :meth:`resume` (each counted as a skip)."""
        await self._definition(name)
        await self._set(name, paused="1")

    @redis_errors
    async def resume(self, name: str) -> None:
        """Fire again from its next tick (ticks passed while paused are not caught up)."""
        await self._definition(name)
        keys = self.app.keys
        async with self.app.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.schedule_state(name), "paused")
            pipe.publish(keys.schedule_changes, name)
            await pipe.execute()

    @redis_errors
    async def run_now(self, name: str) -> JobHandle[Any]:
        """Enqueue the schedule's job now, outside its ticks (its cursor does not move)."""
        schedule = await self._definition(name)
        now = now_ms()
        job_id = f"schedule:{name}:now:{uuid.uuid4().hex[:12]}"
        payload = self.payload(schedule, now, 0, now)
        expiry = int(self.app.settings.job_ttl.total_seconds() * 1000)
        await self.app.scripts.enqueue(schedule.queue, expiry, [(job_id, payload, now)])
        return JobHandle(self.app, job_id, schedule.task, schedule.queue)

    @redis_errors
    async def list(self) -> list[ScheduleInfo]:
        """Every stored schedule, by name, with its next fire, last tick and outcome."""
        raw = await _wait(self.app.redis.hgetall(self.app.keys.schedules))
        names = sorted(k.decode() for k in raw)
        return [await self._info(Schedule.decode(raw[n.encode()])) for n in names]

    @redis_errors
    async def get(self, name: str) -> ScheduleInfo:
        """One schedule's info; :class:`ScheduleNotFound` if there is none by that name."""
        return await self._info(await self._definition(name))

    # -- for the ticker ---------------------------------------------------------------------

    async def register_declared(self, now: int) -> None:
        """Store the code's schedules (a changed definition replaces the stored one and
        resets its cursor) and note that this code still declares them: one round trip."""
        if self.declared:
            await self._store(*self.declared.values(), now=now)

    async def load(self) -> dict[str, Schedule]:
        """Every stored definition (an unreadable one is skipped, not fatal)."""
        raw = await _wait(self.app.redis.hgetall(self.app.keys.schedules))
        out: dict[str, Schedule] = {}
        for name, data in raw.items():
            try:
                out[name.decode()] = Schedule.decode(data)
            except (ValueError, KeyError, TypeError, ConfigurationError):
                continue
        return out

    def payload(self, schedule: Schedule, tick_ms: int, missed: int, now: int) -> bytes:
        """A tick's job payload: the stored call plus (schedule, tick, missed ticks)."""
        return encode_job(
            JobPayload(
                schedule.task,
                schedule.args,
                schedule.kwargs,
                None,
                now,
                tick=(schedule.name, tick_ms, missed),
            ),
            self.app.settings.max_payload_bytes,
        )

    # -- internals ----------------------------------------------------------------------

    async def _store(self, *schedules: Schedule, now: int) -> None:
        app, keys = self.app, self.app.keys
        async with app.redis.pipeline(transaction=False) as pipe:
            for schedule in schedules:
                first = schedule.trigger.after(ms_to_datetime(now) - timedelta(milliseconds=1))
                first_ms = None if first is None else int(first.timestamp() * 1000)
                await app.scripts.schedule_register(
                    keys, schedule.name, schedule.encode(), schedule.version, first_ms, pipe=pipe
                )
                pipe.hset(keys.schedule_state(schedule.name), "seen", str(now))
            pipe.publish(keys.schedule_changes, ",".join(s.name for s in schedules))
            await pipe.execute()

    async def _set(self, name: str, **fields: str) -> None:
        keys = self.app.keys
        async with self.app.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.schedule_state(name), mapping=fields)
            pipe.publish(keys.schedule_changes, name)
            await pipe.execute()

    async def _definition(self, name: str) -> Schedule:
        raw = cast("bytes | None", await _wait(self.app.redis.hget(self.app.keys.schedules, name)))
        if raw is None:
            stored = await _wait(self.app.redis.hkeys(self.app.keys.schedules))
            known = sorted(k.decode() for k in stored)
            raise ScheduleNotFound(name, known)
        return Schedule.decode(raw)

    async def _info(self, schedule: Schedule) -> ScheduleInfo:
        state = await _wait(self.app.redis.hgetall(self.app.keys.schedule_state(schedule.name)))
        s = {k.decode(): v.decode() for k, v in state.items()}
        last_job = s.get("last_job")
        status = None
        if last_job:
            handle: JobHandle[Any] = JobHandle(self.app, last_job, schedule.task, schedule.queue)
            status = (await handle.status()).value
        trigger = schedule.trigger
        return ScheduleInfo(
            name=schedule.name,
            task=schedule.task,
            queue=schedule.queue,
            trigger=schedule.describe(),
            tz=trigger.tz.key if isinstance(trigger, Cron) else "UTC",
            next_fire=_at(s.get("next")),
            last_tick=_at(s.get("last_tick")),
            last_outcome=s.get("last_outcome"),
            last_job=last_job,
            last_status=status,
            paused=s.get("paused") == "1",
            fired=int(s.get("fired", 0)),
            skips=int(s.get("skips", 0)),
            missed=int(s.get("missed", 0)),
            source=schedule.source,
        )


def _at(ms: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(ms) / 1000, UTC) if ms else None


async def _wait(reply: Awaitable[T] | T) -> T:
    """redis-py types its async replies as ``Awaitable[T] | T``; they are awaitables."""
    return await cast("Awaitable[T]", reply)
