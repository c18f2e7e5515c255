"""Settings validation, Backoff, environment precedence and @app.task definition errors."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import taskflow
from taskflow.config import DEFAULT_REDIS_URL, settings_from_env

# Settings built from outside input (environment, app arguments): a ConfigurationError naming
# the field, or pydantic's ValidationError (which names it too).
BAD_CONFIG = (taskflow.ConfigurationError, ValidationError)

# -- Settings / WorkerSettings ------------------------------------------------------------


def _fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in err["loc"]) for err in exc.errors()}


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"max_payload_bytes": 10}, "max_payload_bytes"),
        ({"max_payload_bytes": "lots"}, "max_payload_bytes"),
        ({"default_queue": "has space"}, "default_queue"),
        ({"default_queue": ""}, "default_queue"),
        ({"default_queue": "q" * 201}, "default_queue"),
        ({"embedded": "sometimes"}, "embedded"),
        ({"result_ttl": "forever"}, "result_ttl"),
        ({"no_such_setting": 1}, "no_such_setting"),
        ({"worker": {"concurrency": 0}}, "worker.concurrency"),
        ({"worker": {"queues": ()}}, "worker.queues"),
        ({"worker": {"queues": ("ok", "not ok!")}}, "worker.queues.1"),
    ],
)
def test_settings_field_errors_name_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        taskflow.Settings.model_validate(values)
    assert field in _fields(info.value)
    assert field.split(".")[-1] in str(info.value)


def test_redis_url_scheme_is_checked() -> None:
    with pytest.raises(ValidationError, match="redis_url must start with redis://"):
        taskflow.Settings(redis_url="http://localhost:6379")
    for url in ("redis://h:1/2", "rediss://h", "unix:///tmp/redis.sock"):
        assert taskflow.Settings(redis_url=url).redis_url == url


def test_settings_are_frozen() -> None:
    settings = taskflow.Settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.redis_url = "redis://elsewhere"


def test_worker_settings_heartbeat_must_fit_twice_in_lease() -> None:
    with pytest.raises(ValidationError, match="heartbeat_interval .* at most half of lease"):
        taskflow.WorkerSettings(lease=timedelta(seconds=3), heartbeat_interval=timedelta(seconds=2))
    ok = taskflow.WorkerSettings(
        lease=timedelta(seconds=4), heartbeat_interval=timedelta(seconds=2)
    )
    assert ok.lease == 2 * ok.heartbeat_interval


@pytest.mark.parametrize("poll", [timedelta(0), timedelta(milliseconds=-5)])
def test_worker_settings_poll_interval_positive(poll: timedelta) -> None:
    with pytest.raises(ValidationError, match="poll_interval must be positive"):
        taskflow.WorkerSettings(poll_interval=poll)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 100_001}, "concurrency"),
        ({"max_worker_deaths": 0}, "max_worker_deaths"),
        ({"queues": ["a b"]}, "queues.0"),
    ],
)
def test_worker_settings_field_errors(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        taskflow.WorkerSettings.model_validate(values)
    assert field in _fields(info.value)


# -- Backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field"),
    [({"base": 0}, "base"), ({"cap": -1}, "cap"), ({"factor": 0.5}, "factor")],
)
def test_backoff_field_errors(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        taskflow.Backoff.model_validate(values)
    assert field in _fields(info.value)


def test_backoff_cap_below_base() -> None:
    with pytest.raises(ValidationError, match=r"cap \(1.0\) must be >= base \(2.0\)"):
        taskflow.Backoff(base=2.0, cap=1.0)


def test_backoff_bound_sequence_and_retry_number() -> None:
    backoff = taskflow.Backoff(base=1.0, cap=10.0, factor=3.0, jitter=False)
    assert [backoff.delay(n) for n in range(1, 6)] == [1.0, 3.0, 9.0, 10.0, 10.0]
    with pytest.raises(ValueError, match="retry number must be >= 1"):
        backoff.bound(0)


def _spec_bound(base: float, cap: float, factor: float, retry: int) -> float:
    """min(cap, base * factor**(retry-1)) without overflowing."""
    if factor > 1 and (retry - 1) * math.log(factor) >= math.log(cap / base):
        return cap
    return min(cap, base * factor ** (retry - 1))


backoffs = st.builds(
    lambda base, spread, factor: (base, base * spread, factor),
    st.floats(min_value=1e-3, max_value=100.0),
    st.floats(min_value=1.0, max_value=1000.0),
    st.floats(min_value=1.0, max_value=10.0),
)


@given(backoffs, st.integers(min_value=1, max_value=500), st.integers(0, 2**32))
def test_backoff_full_jitter_within_bound(
    params: tuple[float, float, float], retry: int, seed: int
) -> None:
    base, cap, factor = params
    backoff = taskflow.Backoff(base=base, cap=cap, factor=factor)
    limit = _spec_bound(base, cap, factor, retry)
    delay = backoff.delay(retry, random.Random(seed))
    assert 0.0 <= delay <= limit * (1 + 1e-9)
    # the rng decides: same seed, same delay
    assert backoff.delay(retry, random.Random(seed)) == delay


@given(backoffs, st.integers(min_value=1, max_value=60))
def test_backoff_without_jitter_is_the_bound(
    params: tuple[float, float, float], retry: int
) -> None:
    base, cap, factor = params
    backoff = taskflow.Backoff(base=base, cap=cap, factor=factor, jitter=False)
    assert backoff.delay(retry) == pytest.approx(_spec_bound(base, cap, factor, retry), rel=1e-9)


def test_backoff_jitter_spreads() -> None:
    backoff = taskflow.Backoff(base=1.0, cap=1.0)
    rng = random.Random(1)
    delays = [backoff.delay(1, rng) for _ in range(200)]
    assert min(delays) < 0.2 and max(delays) > 0.8


def test_backoff_huge_factor_reaches_cap() -> None:
    assert taskflow.Backoff(base=1.0, cap=60.0, factor=1e6).bound(100) == 60.0


def test_backoff_small_factor_keeps_growing_past_64_retries() -> None:
    backoff = taskflow.Backoff(base=1.0, cap=1000.0, factor=1.05, jitter=False)
    assert backoff.bound(100) == pytest.approx(1.05**99)


def test_retry_exception_delay() -> None:
    assert taskflow.Retry(delay=2.5).delay == 2.5
    assert str(taskflow.Retry(delay=2.5)) == "retry in 2.5s"
    assert taskflow.Retry().delay is None
    assert str(taskflow.Retry(reason="not ready")) == "not ready"
    with pytest.raises(ValueError, match="retry delay must be >= 0"):
        taskflow.Retry(delay=-1)


# -- environment --------------------------------------------------------------------------

ENV_URL = "redis://from-env:6379/3"


def test_env_defaults_when_nothing_set() -> None:
    settings = settings_from_env(environ={})
    assert settings.redis_url == DEFAULT_REDIS_URL and settings.embedded == "auto"


def test_env_beats_default() -> None:
    settings = settings_from_env(
        environ={"TASKFLOW_REDIS_URL": ENV_URL, "TASKFLOW_EMBEDDED": "never"}
    )
    assert settings.redis_url == ENV_URL and settings.embedded == "never"


def test_explicit_beats_env() -> None:
    base = taskflow.Settings(
        redis_url="redis://explicit:1/0", embedded="always", max_payload_bytes=4096
    )
    settings = settings_from_env(
        base, environ={"TASKFLOW_REDIS_URL": ENV_URL, "TASKFLOW_EMBEDDED": "never"}
    )
    assert settings.redis_url == "redis://explicit:1/0" and settings.embedded == "always"


def test_explicit_default_value_still_beats_env() -> None:
    base = taskflow.Settings(redis_url=DEFAULT_REDIS_URL)
    assert settings_from_env(base, environ={"TASKFLOW_REDIS_URL": ENV_URL}).redis_url == (
        DEFAULT_REDIS_URL
    )


def test_env_fills_only_unset_fields_and_keeps_the_rest() -> None:
    base = taskflow.Settings(
        embedded="never", max_payload_bytes=4096, worker=taskflow.WorkerSettings(concurrency=7)
    )
    settings = settings_from_env(
        base, environ={"TASKFLOW_REDIS_URL": ENV_URL, "TASKFLOW_EMBEDDED": "always"}
    )
    assert settings.redis_url == ENV_URL
    assert settings.embedded == "never"
    assert settings.max_payload_bytes == 4096 and settings.worker.concurrency == 7


def test_empty_env_value_is_ignored() -> None:
    base = taskflow.Settings(max_payload_bytes=4096)
    assert settings_from_env(base, environ={"TASKFLOW_REDIS_URL": ""}) is base


def test_bad_env_value_names_the_field() -> None:
    with pytest.raises(BAD_CONFIG, match=r"embedded[\s\S]*'maybe'"):
        settings_from_env(environ={"TASKFLOW_EMBEDDED": "maybe"})
    with pytest.raises(BAD_CONFIG, match="redis_url must start with"):
        settings_from_env(environ={"TASKFLOW_REDIS_URL": "localhost:6379"})


@given(
    explicit=st.sampled_from([None, DEFAULT_REDIS_URL, "redis://explicit:1/0"]),
    env=st.sampled_from([None, "", ENV_URL]),
)
def test_precedence_property(explicit: str | None, env: str | None) -> None:
    environ = {} if env is None else {"TASKFLOW_REDIS_URL": env}
    base = None if explicit is None else taskflow.Settings(redis_url=explicit)
    expected = explicit or env or DEFAULT_REDIS_URL
    assert settings_from_env(base, environ=environ).redis_url == expected


def test_app_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFLOW_REDIS_URL", ENV_URL)
    monkeypatch.setenv("TASKFLOW_EMBEDDED", "never")
    assert settings_from_env().redis_url == ENV_URL
    assert taskflow.TaskFlow().settings.redis_url == ENV_URL
    # the redis_url argument is explicit: it beats the environment
    app = taskflow.TaskFlow("redis://arg:2/0", settings=taskflow.Settings(max_payload_bytes=2048))
    assert app.settings.redis_url == "redis://arg:2/0"
    assert app.settings.embedded == "never" and app.settings.max_payload_bytes == 2048
    # explicit settings beat the environment too
    explicit = taskflow.TaskFlow(settings=taskflow.Settings(redis_url="redis://set:3/0"))
    assert explicit.settings.redis_url == "redis://set:3/0"


def test_app_redis_url_is_validated() -> None:
    with pytest.raises(BAD_CONFIG, match="redis_url must start with"):
        taskflow.TaskFlow("http://nope")


# -- @app.task ----------------------------------------------------------------------------


def test_task_defaults() -> None:
    app = taskflow.TaskFlow(settings=taskflow.Settings(default_queue="dq"))

    @app.task
    async def hello(name: str) -> str:
        """Say hello."""
        return f"hello {name}"

    assert app.tasks == {"hello": hello}
    assert app.get_task("hello") is hello
    assert hello.name == "hello" and hello.__doc__ == "Say hello."
    options = hello.options
    assert (options.queue, options.retries, options.timeout) == ("dq", 0, None)
    assert options.retry_on == (Exception,) and options.backoff == taskflow.Backoff()
    assert options.result_ttl == app.settings.result_ttl
    assert app.queues == ["dq"]


def test_task_options_are_normalised() -> None:
    app = taskflow.TaskFlow()

    @app.task(
        name="renamed",
        queue="q.1:x-y_z",
        retries=2,
        timeout=timedelta(seconds=3),
        result_ttl=30,
        retry_on=(KeyError,),
    )
    async def f() -> None:
        pass

    assert app.get_task("renamed") is f
    assert f.options.timeout == 3.0 and f.options.result_ttl == timedelta(seconds=30)
    assert f.options.queue == "q.1:x-y_z" and f.options.retry_on == (KeyError,)


async def _noop_in_process() -> int:
    return 5


@pytest.mark.asyncio
async def test_calling_a_task_runs_the_body_in_process() -> None:
    app = taskflow.TaskFlow()
    task = app.task(_noop_in_process)
    assert await task() == 5


def _sync(x: int) -> int:
    return x


async def _agen() -> Any:
    yield 1


@pytest.mark.parametrize("fn", [_sync, lambda: None, _agen, print])
def test_task_needs_async_def(fn: Any) -> None:
    app = taskflow.TaskFlow()
    with pytest.raises(taskflow.ConfigurationError, match="needs an `async def`"):
        app.task(fn)
    assert app.tasks == {}


def test_duplicate_task_names() -> None:
    app = taskflow.TaskFlow()

    @app.task
    async def job() -> None:
        pass

    async def other() -> None:
        pass

    with pytest.raises(taskflow.ConfigurationError, match="'job' is already registered"):
        app.task(name="job")(other)

    def make() -> Any:
        async def job() -> None:  # same __name__ as the first
            pass

        return job

    with pytest.raises(taskflow.ConfigurationError, match="already registered"):
        app.task(make())
    assert app.task(name="job2")(make()).name == "job2"
    assert set(app.tasks) == {"job", "job2"}


@pytest.mark.parametrize("queue", ["has space", "semi;colon", "q" * 201, "ünï", "a/b"])
def test_bad_queue_names(queue: str) -> None:
    app = taskflow.TaskFlow()

    async def f() -> None:
        pass

    with pytest.raises(
        taskflow.ConfigurationError, match="queue=.* is not a valid queue name: use 1-200 letters"
    ):
        app.task(queue=queue)(f)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"retries": -1}, "retries=.* is invalid: use an integer >= 0"),
        ({"retries": 1.5}, "retries=.* is invalid: use an integer >= 0"),
        ({"retries": "3"}, "retries=.* is invalid: use an integer >= 0"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"timeout": -2.5}, "timeout must be > 0"),
        ({"timeout": timedelta(0)}, "timeout must be > 0"),
        ({"result_ttl": -1}, "result_ttl must be >= 0"),
        ({"retry_on": ValueError}, "retry_on=.* is invalid: use a tuple of exception types"),
        ({"retry_on": (ValueError, int)}, "retry_on=.* is invalid: use a tuple of exception"),
        ({"retry_on": [ValueError]}, "retry_on=.* is invalid: use a tuple"),
    ],
)
def test_bad_task_options(options: dict[str, Any], pattern: str) -> None:
    app = taskflow.TaskFlow()

    async def f() -> None:
        pass

    with pytest.raises(taskflow.ConfigurationError, match=pattern):
        app.task(**options)(f)
    assert app.tasks == {}


def test_unknown_task_lists_registered() -> None:
    app = taskflow.TaskFlow()

    @app.task
    async def alpha() -> None:
        pass

    with pytest.raises(taskflow.UnknownTask, match="no task named 'beta'; registered: alpha"):
        app.get_task("beta")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"concurrency": 0}, "concurrency"), ({"queues": ["bad name"]}, "queues")],
)
def test_bad_worker_arguments(kwargs: dict[str, Any], field: str) -> None:
    app = taskflow.TaskFlow()
    with pytest.raises(BAD_CONFIG, match=field):
        app.worker(**kwargs)


def test_worker_defaults_to_task_queues() -> None:
    app = taskflow.TaskFlow()

    @app.task(queue="b")
    async def one() -> None:
        pass

    @app.task(queue="a")
    async def two() -> None:
        pass

    worker = app.worker(concurrency=3)
    assert worker.queues == ["a", "b"] and worker.settings.concurrency == 3
    assert worker.settings.lease == app.settings.worker.lease


def test_max_redeliveries_still_reads_as_max_worker_deaths() -> None:
    with pytest.warns(DeprecationWarning, match="max_worker_deaths"):
        settings = taskflow.WorkerSettings.model_validate({"max_redeliveries": 2})
    assert settings.max_worker_deaths == 3
