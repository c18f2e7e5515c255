"""Every user input is checked where it enters: the bad value and the valid forms are named.

One test per gap a new user hit (issue 10); the command line's own checks are in
tests/test_cli.py.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

import taskflow
from taskflow._protocol import keys
from taskflow.alerts import AlertRule
from taskflow.config import DURATION_FORMS, WorkerSettings, parse_duration

FORMS = "30s, 15m, 2h"  # part of every duration error


async def area(width: int, height: int) -> int:
    return width * height


def test_a_number_as_backoff_is_refused_with_the_backoff_to_write_instead() -> None:
    app = taskflow.TaskFlow()
    with pytest.raises(
        taskflow.ConfigurationError,
        match=r"backoff=5 is invalid: use taskflow.Backoff\(...\), e.g. taskflow.Backoff\(base=5",
    ):
        app.task(backoff=5)(area)  # type: ignore[call-overload]
    assert app.tasks == {}


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [("30s", 30.0), ("1h30m", 5400.0), ("PT2M", 120.0), ("500ms", 0.5), (12, 12.0)],
)
def test_a_timeout_takes_every_duration_form(timeout: Any, seconds: float) -> None:
    app = taskflow.TaskFlow()
    assert app.task(timeout=timeout)(area).options.timeout == seconds


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": "soon"}, f"timeout='soon' is not a duration: use .*{FORMS}"),
        ({"timeout": "0s"}, "timeout must be > 0, got '0s'"),
        ({"result_ttl": "a week"}, "result_ttl='a week' is not a duration"),
        ({"result_ttl": "-1s"}, "result_ttl='-1s' is not a duration"),
        ({"retries": True}, "retries=True is invalid: use an integer >= 0"),
        ({"queue": "bad queue!"}, "queue='bad queue!' is not a valid queue name: use 1-200"),
        ({"name": ""}, "name='' is not a valid task name"),
    ],
)
def test_bad_task_options_name_the_value_and_the_valid_forms(
    options: dict[str, Any], message: str
) -> None:
    app = taskflow.TaskFlow()
    with pytest.raises(taskflow.ConfigurationError, match=message):
        app.task(**options)(area)
    assert app.tasks == {}


def test_result_ttl_takes_a_duration_and_zero_keeps_none() -> None:
    app = taskflow.TaskFlow()
    assert app.task(name="a", result_ttl="2h")(area).options.result_ttl == timedelta(hours=2)
    assert app.task(name="b", result_ttl=0)(area).options.result_ttl == timedelta(0)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"_delay": "soon"}, f"delay='soon' is not a duration: use .*{FORMS}"),
        ({"_queue": "bad queue!"}, "queue='bad queue!' is not a valid queue name"),
        ({"_dealy": 5}, r"unknown enqueue option '_dealy' \(did you mean '_delay'\?\)"),
    ],
)
async def test_bad_enqueue_options_write_nothing(
    app: taskflow.TaskFlow, redis: Redis, queue_name: str, options: dict[str, Any], message: str
) -> None:
    task = app.task(name="area")(area)
    async with app:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            with pytest.raises(taskflow.ConfigurationError, match=message):
                await task.enqueue(2, 3, **options)
        with pytest.raises(taskflow.ConfigurationError, match="delay='soon' is not a duration"):
            task.with_options(delay="soon")
    assert await redis.zcard(keys.queue(queue_name)) == 0


@pytest.mark.asyncio
async def test_a_delay_takes_a_duration_string(
    app: taskflow.TaskFlow, redis: Redis, queue_name: str
) -> None:
    task = app.task(name="area")(area)
    async with app:
        handle = await task.with_options(delay="5m").enqueue(2, 3)
        score = await redis.zscore(keys.queue(queue_name), handle.job_id)
        assert score is not None
        due_in = score / 1000 - (await redis.time())[0]
        assert 290 < due_in <= 301


@pytest.mark.asyncio
async def test_a_misspelt_keyword_is_named_as_unknown_with_the_close_match(
    app: taskflow.TaskFlow, redis: Redis, queue_name: str
) -> None:
    task = app.task(name="area")(area)
    async with app:
        with pytest.raises(
            taskflow.ArgumentError,
            match=r"^area\(\): unknown keyword argument 'widht' \(did you mean 'width'\?\); "
            r"it takes width, height$",
        ):
            await task.enqueue(widht=2, height=3)  # type: ignore[call-arg]
        with pytest.raises(taskflow.ArgumentError, match="unknown keyword argument 'colour'; it"):
            await task.enqueue(2, 3, colour="red")  # type: ignore[call-arg]
    assert await redis.zcard(keys.queue(queue_name)) == 0


def test_a_rule_duration_in_words_lists_the_accepted_forms() -> None:
    rule = yaml.safe_load(
        "name: slow\nfor: 2 minutes\nconditions: [{metric: queue_depth, op: '>', threshold: 1}]"
    )
    with pytest.raises(ValueError, match=f"invalid duration '2 minutes': use .*{FORMS}"):
        AlertRule.model_validate(rule)


def test_settings_take_duration_strings() -> None:
    settings = WorkerSettings.model_validate({"lease": "30s", "grace_period": "PT1M"})
    assert (settings.lease, settings.grace_period) == (timedelta(seconds=30), timedelta(minutes=1))
    with pytest.raises(ValueError, match="invalid duration 'a while'"):
        WorkerSettings.model_validate({"lease": "a while"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("500ms", timedelta(milliseconds=500)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m 15s", timedelta(hours=1, minutes=30, seconds=15)),
        ("1.5h", timedelta(minutes=90)),
        ("30", timedelta(seconds=30)),
        ("PT30S", timedelta(seconds=30)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        (45, timedelta(seconds=45)),
        (0.25, timedelta(milliseconds=250)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_one_parser_reads_every_duration_form(text: Any, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["soon", "2 minutes", "", "5x", "m5", "nan", float("inf"), True])
def test_a_bad_duration_names_itself_and_every_form(bad: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(bad)
    assert str(caught.value) == f"invalid duration {bad!r}: use {DURATION_FORMS}"


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["ms", "s", "m", "h", "d", "w"])),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["", " "]),
)
def test_a_sum_of_parts_is_the_sum_of_its_durations(parts: list[tuple[int, str]], sep: str) -> None:
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = sep.join(f"{n}{u}" for n, u in parts)
    expected = sum(n * unit[u] for n, u in parts)
    assert parse_duration(text).total_seconds() == pytest.approx(expected)


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)))
def test_seconds_and_iso_forms_round_trip(value: timedelta) -> None:
    assert parse_duration(value.total_seconds()) == pytest.approx(
        value, abs=timedelta(microseconds=1)
    )
    days, rest = value.days, value - timedelta(days=value.days)
    iso = f"P{days}DT{rest.total_seconds():f}S"
    assert parse_duration(iso) == value
