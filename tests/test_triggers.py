"""Schedule triggers, without Redis: cron ticks against croniter's own iteration, interval
ticks that never drift, and the daylight-saving rule on a spring-forward and a fall-back
day (docs/schedules.md#daylight-saving)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from taskflow.schedules import Cron, Every

BERLIN = ZoneInfo("Europe/Berlin")

minutes = st.sampled_from(["*", "0", "*/5", "*/15", "0,30", "10-20", "59"])
hours = st.sampled_from(["*", "0", "2", "3", "*/6", "8-17", "23"])
days = st.sampled_from(["*", "1", "15", "28", "31", "1-7"])
months = st.sampled_from(["*", "1", "3", "10", "*/3", "jan-jun"])
weekdays = st.sampled_from(["*", "mon-fri", "sun", "1", "6", "0,6"])
expressions = st.tuples(minutes, hours, days, months, weekdays).map(" ".join)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)


def ticks(trigger: Cron | Every, start: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    moment: datetime | None = start
    for _ in range(count):
        assert moment is not None
        moment = trigger.after(moment)
        if moment is None:
            break
        out.append(moment)
    return out


@settings(max_examples=150, deadline=None)
@given(expressions, moments, st.sampled_from(["UTC", "Asia/Tokyo", "Asia/Kolkata"]))
def test_cron_ticks_are_croniters_in_zones_without_dst(expr: str, start: datetime, tz: str) -> None:
    zone = ZoneInfo(tz)
    mine = ticks(Cron.parse(expr, tz), start, 5)
    it = croniter(expr, start.astimezone(zone))
    theirs = [it.get_next(datetime).astimezone(UTC) for _ in range(5)]
    assert mine == theirs


@settings(max_examples=150, deadline=None)
@given(expressions, moments, st.sampled_from(["Europe/Berlin", "America/New_York"]))
def test_cron_ticks_in_dst_zones_are_each_existing_wall_time_once(
    expr: str, start: datetime, tz: str
) -> None:
    zone = ZoneInfo(tz)
    trigger = Cron.parse(expr, tz)
    mine = ticks(trigger, start, 8)
    assert mine == sorted(set(mine)) and all(t > start for t in mine)
    walls = [t.astimezone(zone).replace(tzinfo=None) for t in mine]
    assert len(set(walls)) == len(walls)  # no wall-clock time twice (a repeated hour)
    for wall in walls:
        assert croniter.match(expr, wall)
    # croniter's own wall-clock iteration, kept where the time exists: the same ticks
    it = croniter(expr, start.astimezone(zone).replace(tzinfo=None))
    expected: list[datetime] = []
    while len(expected) < len(mine):
        wall = it.get_next(datetime)
        aware = wall.replace(tzinfo=zone)
        if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
            continue  # skipped by a spring-forward
        if aware.astimezone(UTC) > start:
            expected.append(aware.astimezone(UTC))
    assert mine == expected


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=86_400_000),
    moments,
    st.integers(min_value=0, max_value=50),
    st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
)
def test_an_interval_never_drifts(
    interval_ms: int, moment: datetime, n: int, anchor: datetime
) -> None:
    every = Every.parse(timedelta(milliseconds=interval_ms), start=anchor)
    found = ticks(every, moment, n + 1)
    for tick in found:
        steps = (tick - anchor) / timedelta(milliseconds=interval_ms)
        assert steps == int(steps) and tick >= anchor  # tick k is start + k * interval
    assert [b - a for a, b in zip(found, found[1:], strict=False)] == [
        timedelta(milliseconds=interval_ms)
    ] * (len(found) - 1)
    if found:  # the first tick is the first one after `moment`: none was passed by
        first = found[0]
        assert first > moment
        assert first == anchor or first - timedelta(milliseconds=interval_ms) <= moment


def local(year: int, month: int, day: int, hour: int, minute: int, fold: int = 0) -> datetime:
    """A Berlin wall-clock time (``fold=1``: its second occurrence), in UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN, fold=fold).astimezone(UTC)


def test_spring_forward_skips_the_hour_that_does_not_exist() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST; 02:30 does not exist
    daily = Cron.parse("30 2 * * *", "Europe/Berlin")
    assert ticks(daily, local(2026, 3, 28, 12, 0), 2) == [
        local(2026, 3, 30, 2, 30),  # not on the 29th
        local(2026, 3, 31, 2, 30),
    ]
    quarter = Cron.parse("*/30 * * * *", "Europe/Berlin")
    got = ticks(quarter, local(2026, 3, 29, 1, 0), 3)
    assert [t.astimezone(BERLIN).strftime("%H:%M %Z") for t in got] == [
        "01:30 CET",
        "03:00 CEST",
        "03:30 CEST",
    ]


def test_fall_back_fires_a_repeated_time_once() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; 02:00-02:59 happens twice
    daily = Cron.parse("30 2 * * *", "Europe/Berlin")
    assert ticks(daily, local(2026, 10, 24, 12, 0), 2) == [
        local(2026, 10, 25, 2, 30, fold=0),  # the first 02:30 (CEST), once
        local(2026, 10, 26, 2, 30),
    ]
    quarter = Cron.parse("*/30 * * * *", "Europe/Berlin")
    got = ticks(quarter, local(2026, 10, 25, 1, 45), 5)
    assert [t.astimezone(BERLIN).strftime("%H:%M %Z") for t in got] == [
        "02:00 CEST",
        "02:30 CEST",
        "03:00 CET",  # the repeated 02:00 and 02:30 (CET) do not fire again
        "03:30 CET",
        "04:00 CET",
    ]
    # a start inside the repeated hour's second pass does not fire its times again
    second_pass = local(2026, 10, 25, 2, 10, fold=1)
    assert ticks(quarter, second_pass, 1) == [local(2026, 10, 25, 3, 0)]


def test_start_and_end_bound_the_ticks() -> None:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    every = Every.parse(timedelta(hours=1), start=start, end=start + timedelta(hours=2))
    assert ticks(every, start - timedelta(days=1), 5) == [
        start,
        start + timedelta(hours=1),
        start + timedelta(hours=2),
    ]
    cron = Cron.parse("0 * * * *", start=start, end=start + timedelta(hours=1))
    assert ticks(cron, start - timedelta(days=1), 5) == [start, start + timedelta(hours=1)]


def test_six_fields_take_seconds_last() -> None:
    every_two = Cron.parse("* * * * * */2")
    got = ticks(every_two, datetime(2027, 1, 1, tzinfo=UTC), 3)
    assert [t.second for t in got] == [2, 4, 6]
