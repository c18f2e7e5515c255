"""Schedules against a real Redis, in-process workers: ticks, misfires, overlap, control."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio
import pytest

import taskflow
from taskflow.schedules import Misfire
from tests.apps.shared import fast_worker
from tests.helpers import reply

pytestmark = pytest.mark.asyncio

TIMEOUT = 10


async def eventually(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    with anyio.fail_after(timeout):
        while not check():  # noqa: ASYNC110 - a condition of plain Python state
            await anyio.sleep(0.02)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def test_every_tick_is_one_job_told_its_tick(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()
    seen: list[tuple[datetime | None, int]] = []

    @app.periodic(every=timedelta(seconds=1))
    async def beat() -> None:
        job = taskflow.current_job()
        seen.append((job.tick, job.missed_ticks))
        assert job.schedule == "beat"

    async with app, app.worker():
        await anyio.sleep(3.6)
    ticks = [tick for tick, _ in seen if tick is not None]
    assert len(ticks) == len(seen) >= 3 and len(set(ticks)) == len(ticks)
    for tick in ticks:  # anchored: whole seconds since the epoch
        assert tick.microsecond == 0 and tick.tzinfo is not None
    assert all(missed == 0 for _, missed in seen)
    assert [b - a for a, b in zip(ticks, ticks[1:], strict=False)] == [timedelta(seconds=1)] * (
        len(ticks) - 1
    )


async def test_list_pause_resume_and_run_now(named_app: Callable[..., taskflow.TaskFlow]) -> None:
    app = named_app()
    runs: list[str] = []

    @app.task
    async def digest(kind: str) -> str:
        runs.append(kind)
        return kind

    app.schedule(digest, every=timedelta(seconds=1), args=("weekly",), name="weekly-digest")
    async with app, app.worker():
        await eventually(lambda: len(runs) >= 1)
        [info] = await app.schedules.list()
        assert (info.name, info.task, info.trigger, info.paused) == (
            "weekly-digest",
            "digest",
            "every 1s",
            False,
        )
        assert info.next_fire is not None and info.last_outcome == "fired"
        await app.schedules.pause("weekly-digest")
        await anyio.sleep(0.3)
        before = len(runs)
        await anyio.sleep(2.2)
        assert len(runs) == before  # paused: no job
        paused = await app.schedules.get("weekly-digest")
        assert paused.paused and paused.skips >= 1 and paused.last_outcome == "paused"
        job = await app.schedules.run_now("weekly-digest")
        assert await job.result(timeout=TIMEOUT) == "weekly"
        await app.schedules.resume("weekly-digest")
        await eventually(lambda: len(runs) >= before + 2)
        with pytest.raises(taskflow.ScheduleNotFound, match="no schedule named 'nope'"):
            await app.schedules.pause("nope")


async def test_a_schedule_added_at_run_time_fires_and_is_removed(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()
    runs: list[int] = []

    @app.task
    async def count(n: int) -> None:
        runs.append(n)

    async with app, app.worker():
        other = named_app(name=app.name)  # another process of the app: the task's name is enough
        other_count = other.task(name="count")(count.fn)
        async with other:
            info = await other.schedules.add(
                other_count,
                every=timedelta(seconds=1),
                args=(7,),
                name="added",
                queue=app.settings.default_queue,
            )
        assert info.source == "runtime"
        await eventually(lambda: len(runs) >= 2)
        await app.schedules.remove("added")
        await anyio.sleep(0.3)
        done = len(runs)
        await anyio.sleep(1.5)
        assert len(runs) == done and set(runs) == {7}


async def _stale(app: taskflow.TaskFlow, name: str) -> list[int]:
    """Pretend every worker was down for the last five ticks of a 10 s schedule, each more
    than its 1 s grace late: returns those ticks (ms)."""
    while not 2 <= time.time() % 10 <= 7:  # noqa: ASYNC110 - the latest tick 2-7 s old
        await anyio.sleep(0.1)
    latest = int(time.time()) // 10 * 10_000
    missed = [latest - 10_000 * i for i in range(4, -1, -1)]
    await reply(app.redis.hset(app.keys.schedule_state(name), "next", str(missed[0])))
    return missed


@pytest.mark.parametrize("policy", list(Misfire))
async def test_misfire_policies(
    named_app: Callable[..., taskflow.TaskFlow], policy: Misfire
) -> None:
    app = named_app()
    got: list[tuple[int, int]] = []

    @app.task
    async def report() -> None:
        job = taskflow.current_job()
        assert job.tick is not None
        got.append((ms(job.tick), job.missed_ticks))

    app.schedule(report, every=timedelta(seconds=10), misfire=policy, max_catchup=3, name="report")
    async with app:
        await app.schedules.register_declared(int(time.time() * 1000))
        missed = await _stale(app, "report")
        async with app.worker():
            await anyio.sleep(1.5)
        info = await app.schedules.get("report")
    if policy is Misfire.COALESCE:
        assert got == [(missed[-1], 4)]  # one job for the latest, told of the 4 before
    elif policy is Misfire.SKIP:
        assert got == []
    else:
        assert sorted(got) == [(t, 0) for t in missed[-3:]]  # the latest max_catchup
    assert info.missed == 5
    assert info.next_fire is not None and info.next_fire > datetime.now(UTC)


async def test_overlap_false_skips_ticks_while_a_run_is_in_flight(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()
    started: list[float] = []

    @app.periodic(every=timedelta(seconds=1), overlap=False)
    async def slow() -> None:
        started.append(time.monotonic())
        await anyio.sleep(2.5)

    async with app, app.worker():
        await anyio.sleep(5.8)
        info = await app.schedules.get("slow")
    assert 2 <= len(started) <= 3
    assert all(b - a >= 2.5 for a, b in zip(started, started[1:], strict=False))
    assert info.skips >= 2


async def test_declaration_errors_name_the_bad_part(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()

    @app.task
    async def send(to: str, count: int = 1) -> None: ...

    with pytest.raises(taskflow.ArgumentError, match="count"):
        app.schedule(send, every=timedelta(minutes=1), args=("a@b.c",), kwargs={"count": "x"})
    with pytest.raises(taskflow.ConfigurationError, match=r"field 2 \(hour\) '25'.*0-23"):
        app.schedule(send, cron="0 25 * * *", args=("a@b.c",))
    with pytest.raises(taskflow.ConfigurationError, match="tz='Mars/Base'"):
        app.schedule(send, cron="0 8 * * mon-fri", tz="Mars/Base", args=("a@b.c",))
    with pytest.raises(taskflow.ConfigurationError, match="exactly one of cron"):
        app.schedule(send, args=("a@b.c",))
    with pytest.raises(taskflow.ConfigurationError, match="misfire='later'"):
        app.schedule(send, every=timedelta(minutes=1), args=("a@b.c",), misfire="later")
    app.schedule(send, every=timedelta(minutes=1), args=("a@b.c",))
    with pytest.raises(taskflow.ConfigurationError, match="declared already"):
        app.schedule(send, every=timedelta(minutes=2), args=("a@b.c",))


async def test_a_changed_definition_replaces_the_stored_one_and_its_cursor(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    old = named_app()
    new = named_app(name=old.name)

    @old.task
    async def report() -> None: ...

    new.task(name="report")(report.fn)
    old.schedule(report, every=timedelta(hours=1), name="report")
    new.schedule(new.get_task("report"), cron="0 6 * * *", tz="Europe/Berlin", name="report")
    async with old, new:
        await old.schedules.register_declared(int(time.time() * 1000))
        before = await old.schedules.get("report")
        await old.schedules.register_declared(int(time.time() * 1000))  # the same: kept
        assert (await old.schedules.get("report")).next_fire == before.next_fire
        await new.schedules.register_declared(int(time.time() * 1000))  # a deploy changed it
        after = await new.schedules.get("report")
    assert before.trigger == "every 1h" and after.trigger == "cron 0 6 * * * (Europe/Berlin)"
    assert after.next_fire is not None
    assert after.next_fire.astimezone(ZoneInfo("Europe/Berlin")).hour == 6


async def test_a_schedule_gone_from_the_code_is_retired_after_the_grace_period(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    old = named_app()
    retire = timedelta(seconds=5)
    new = named_app(name=old.name, worker=fast_worker(schedule_retire_after=retire))

    @old.task
    async def legacy() -> None: ...

    @new.periodic(every=timedelta(hours=1))
    async def current() -> None: ...

    old.schedule(legacy, every=timedelta(hours=1))
    async with old:
        await old.schedules.register_declared(int(time.time() * 1000))
        runtime = await old.schedules.add(legacy, every=timedelta(hours=2), name="added")
    async with new, new.worker():  # the new code no longer declares `legacy`
        await anyio.sleep(0.5)
        kept = {s.name for s in await new.schedules.list()}  # declared 0.5 s ago: kept
        # as if no running code had declared it for longer than the grace period
        stale = str(int(time.time() * 1000) - 6_000)
        await reply(new.redis.hset(new.keys.schedule_state("legacy"), "seen", stale))
        await new.redis.publish(new.keys.schedule_changes, "legacy")  # reload now
        await anyio.sleep(0.5)
        left = {s.name for s in await new.schedules.list()}
    assert kept == {"legacy", "current", "added"}
    assert left == {"current", "added"}  # added at run time: never retired
    assert runtime.source == "runtime"


async def test_routes_send_tasks_to_queues_by_name_pattern(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = taskflow.TaskFlow(
        name="routing-test",
        settings=taskflow.Settings(default_queue="fallback"),
        routes={"payments.*": "payments", "ai.*": "ai"},
    )

    @app.task(name="payments.check_overdue")
    async def check_overdue() -> None: ...

    @app.task(name="payments.refund", queue="refunds")  # an explicit queue wins
    async def refund() -> None: ...

    @app.task(name="ai.embed")
    async def embed() -> None: ...

    @app.task
    async def other() -> None: ...

    assert [t.options.queue for t in (check_overdue, refund, embed, other)] == [
        "payments",
        "refunds",
        "ai",
        "fallback",
    ]
    assert sorted(app.queues) == ["ai", "fallback", "payments", "refunds"]
    with pytest.raises(taskflow.ConfigurationError, match=r"routes\['x\.\*'\]='bad queue!'"):
        taskflow.TaskFlow(name="bad-routes", routes={"x.*": "bad queue!"})
