"""Durations in the settings that a negative (or zero) value would make meaningless are
refused, and the message names the field and the value.

Before, a negative ``heartbeat_interval`` passed (it is "at most half of" any lease), and a
negative lease then passed as well.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import taskflow
from taskflow.config import MetricsSettings, build
from taskflow.errors import ConfigurationError

NEGATIVE = timedelta(seconds=-1)
ZERO = timedelta(0)

# (model, field, values that must be refused); positive fields refuse zero too
POSITIVE: list[tuple[type[BaseModel], str]] = [
    (taskflow.WorkerSettings, "poll_interval"),
    (taskflow.WorkerSettings, "lease"),
    (taskflow.WorkerSettings, "heartbeat_interval"),
    (taskflow.WorkerSettings, "alert_interval"),
    (taskflow.WorkerSettings, "reconnect_backoff_cap"),
    (taskflow.Settings, "job_ttl"),
    (taskflow.Settings, "connect_timeout"),
    (taskflow.Settings, "run_retention"),
    (taskflow.Settings, "run_max_age"),
    (MetricsSettings, "flush_interval"),
    (MetricsSettings, "system_interval"),
    (MetricsSettings, "system_retention"),
]
NOT_NEGATIVE: list[tuple[type[BaseModel], str]] = [
    (taskflow.WorkerSettings, "grace_period"),
    (taskflow.Settings, "result_ttl"),
]


def refused(model: type[BaseModel], values: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        model.model_validate(values)
    return info.value


@pytest.mark.parametrize(("model", "name"), POSITIVE, ids=[n for _, n in POSITIVE])
@pytest.mark.parametrize(("value", "shown"), [(NEGATIVE, "-1s"), (ZERO, "0s"), (-0.25, "-0.25s")])
def test_positive_durations_refuse_zero_and_negatives(
    model: type[BaseModel], name: str, value: object, shown: str
) -> None:
    error = refused(model, {name: value})
    [problem] = error.errors()
    assert problem["loc"] == (name,)
    assert f"{name} must be positive, got {shown}" in problem["msg"]


@pytest.mark.parametrize(("model", "name"), NOT_NEGATIVE, ids=[n for _, n in NOT_NEGATIVE])
def test_durations_that_may_be_zero_refuse_negatives(model: type[BaseModel], name: str) -> None:
    error = refused(model, {name: "-PT1.5S"})
    [problem] = error.errors()
    assert problem["loc"] == (name,)
    assert f"{name} must be >= 0, got -1.5s" in problem["msg"]
    assert getattr(model.model_validate({name: ZERO}), name) == ZERO


def test_negative_heartbeat_and_lease_are_both_named() -> None:
    error = refused(taskflow.WorkerSettings, {"heartbeat_interval": -2, "lease": -1})
    messages = {problem["loc"]: problem["msg"] for problem in error.errors()}
    assert set(messages) == {("heartbeat_interval",), ("lease",)}
    assert "heartbeat_interval must be positive, got -2s" in messages[("heartbeat_interval",)]
    assert "lease must be positive, got -1s" in messages[("lease",)]


def test_the_heartbeat_still_has_to_fit_twice_in_a_valid_lease() -> None:
    with pytest.raises(ValidationError, match="heartbeat_interval .* at most half of lease"):
        taskflow.WorkerSettings(lease=timedelta(seconds=1), heartbeat_interval=timedelta(seconds=1))


def test_nested_settings_name_the_path_and_build_names_the_value() -> None:
    error = refused(taskflow.Settings, {"worker": {"grace_period": -3}})
    assert [p["loc"] for p in error.errors()] == [("worker", "grace_period")]
    with pytest.raises(ConfigurationError) as info:
        build(taskflow.Settings, {"metrics": {"flush_interval": 0}}, source="a test")
    message = str(info.value)
    assert message.startswith("invalid Settings from a test: metrics.flush_interval: ")
    assert "flush_interval must be positive, got 0s" in message


def test_the_defaults_are_valid_and_small_positive_values_pass() -> None:
    tiny = timedelta(milliseconds=1)
    settings = taskflow.WorkerSettings(
        poll_interval=tiny,
        lease=4 * tiny,
        heartbeat_interval=2 * tiny,
        grace_period=ZERO,
        reconnect_backoff_cap=tiny,
        alert_interval=tiny,
    )
    assert settings.grace_period == ZERO
    assert taskflow.Settings(result_ttl=ZERO, job_ttl=tiny).result_ttl == ZERO
    assert taskflow.Settings().worker == taskflow.WorkerSettings()
