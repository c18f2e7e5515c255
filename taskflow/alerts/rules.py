"""Alert rules: pydantic models, loading from YAML or TOML, and pure evaluation.

A rule holds one or more conditions over a metric (queue depth, p95 run time, failure
rate, ...) joined by ``all`` or ``any``; it fires once its conditions have held for ``for``.
"""

from __future__ import annotations

import operator
import string
import tomllib
from collections.abc import Callable, Mapping
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..config import Duration, describe_validation, parse_duration
from ..errors import ConfigurationError
from ..metrics.custom import parse_selector
from .channels import Channel, ChannelConfig

__all__ = (
    "CUSTOM_PREFIX",
    "METRICS",
    "STATS",
    "AlertRule",
    "Condition",
    "ConditionResult",
    "Severity",
    "load_rules",
    "parse_duration",
    "render_message",
)

_frozen = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

METRICS: Mapping[str, str] = {
    "queue_depth": "jobs waiting in the queue (queue=)",
    "oldest_job_age": "seconds the oldest ready job has waited (queue=)",
    "live_workers": "workers with a live heartbeat serving the queue (queue=; all if omitted)",
    "failure_rate": "attempts that failed for good / all attempts (retried ones count only in "
    "the total) over the window (task=, queue=, window=), 0-1; no value without attempts",
    "run_time_p50": "median run time in seconds over the window (task=, queue=, window=)",
    "run_time_p90": "90th percentile run time in seconds (task=, queue=, window=)",
    "run_time_p95": "95th percentile run time in seconds (task=, queue=, window=)",
    "run_time_p99": "99th percentile run time in seconds (task=, queue=, window=)",
    "throughput": "attempts per second over the window (task=, queue=, window=)",
    "system_cpu": "highest host CPU % reported by any worker in the window",
    "system_memory": "highest host memory % reported by any worker in the window",
    "loop_lag": "worst event-loop lag in seconds reported by any worker in the window",
    "redis_evicted_keys": "keys Redis evicted in the window (maxmemory under an evicting "
    "policy: jobs and results among them), as workers read Redis's counter each minute",
    "sla_missed": "SLA targets (app.sla) missed over the window (task= for one task's)",
    "stuck_jobs": "jobs not moving now (app.monitor.stuck(): overdue on a blocked worker, "
    "no live worker, paused, no worker has the task), in the queue (queue=) or all; "
    "task= counts one task's",
    "probe_down": "probes (@app.probe) whose latest result is down (probe= for one probe)",
    'custom:<name>{label="value"}': "a custom metric (app.metrics.counter, gauge, "
    "histogram) over the window, its series matching the labels merged; stat= picks the "
    "figure: a counter's total (default) or rate, a gauge's latest, a histogram's p95 "
    "(default), p50, p90, p99, mean, min, max, count or sum",
}
CUSTOM_PREFIX = "custom:"
STATS: Mapping[str, tuple[str, ...]] = {
    "counter": ("total", "rate"),
    "gauge": ("latest",),
    "histogram": ("p95", "p50", "p90", "p99", "mean", "min", "max", "count", "sum"),
}
"""The figures ``stat=`` may pick, by the custom metric's kind (the first is the default)."""
_QUEUE_METRICS = {"queue_depth", "oldest_job_age"}
_SYSTEM_METRICS = {"system_cpu", "system_memory", "loop_lag"}
_SERVER_METRICS = {"redis_evicted_keys"}
_SLA_METRICS = {"sla_missed"}
_PROBE_METRICS = {"probe_down"}


def _channels(value: Any) -> tuple[Any, ...]:
    """Built-in channels from dicts (``type: webhook``), or objects with name and send."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"channels must be a list, got {type(value).__name__}")
    out = []
    for position, item in enumerate(value):
        if isinstance(item, dict):
            try:
                out.append(_CHANNEL.validate_python(item))
            except ValidationError as exc:
                problems = describe_validation(exc)
                raise PydanticCustomError(
                    "channel",
                    "channel #{position} {problems}",
                    {"position": position, "problems": problems},
                ) from None
        elif isinstance(item, Channel):
            out.append(item)
        else:
            raise ValueError(f"{item!r} is not a channel: give it a name and async send(event)")
    return tuple(out)


_CHANNEL: TypeAdapter[Any] = TypeAdapter(ChannelConfig)

_OPS: Mapping[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Condition(BaseModel):
    """``<metric>[task, queue, window] <op> <threshold>``, e.g. queue depth of emails > 1000."""

    model_config = _frozen

    metric: str = Field(description="What to measure; one of taskflow.alerts.METRICS.")
    op: Literal[">", ">=", "<", "<=", "==", "!="] = Field(description="Comparison.")
    threshold: float = Field(description="The value compared against.")
    task: str | None = Field(None, description="Only this task (job metrics).")
    queue: str | None = Field(None, description="Only this queue.")
    window: Duration = Field(
        timedelta(minutes=5), gt=timedelta(0), description="Time span of rates and percentiles."
    )
    probe: str | None = Field(None, description="Only this probe (probe_down).")
    stat: str | None = Field(
        None, description="Which figure of a custom metric: see taskflow.alerts.rules.STATS."
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value.startswith(CUSTOM_PREFIX):
            parse_selector(value.removeprefix(CUSTOM_PREFIX))  # raises naming the problem
            return value
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; valid: {', '.join(METRICS)}")
        return value

    @property
    def custom(self) -> tuple[str, dict[str, str]] | None:
        """The custom metric's name and label matchers, for ``custom:`` metrics."""
        if not self.metric.startswith(CUSTOM_PREFIX):
            return None
        return parse_selector(self.metric.removeprefix(CUSTOM_PREFIX))

    @model_validator(mode="after")
    def _custom_and_probes(self) -> Self:
        custom = self.metric.startswith(CUSTOM_PREFIX)
        if self.stat is not None:
            valid = sorted({s for stats in STATS.values() for s in stats})
            if not custom:
                raise ValueError(f"stat= is for custom metrics only, not {self.metric!r}")
            if self.stat not in valid:
                raise ValueError(f"unknown stat {self.stat!r}; valid: {', '.join(valid)}")
        if custom and (self.task or self.queue):
            raise ValueError(f"metric {self.metric!r} is custom: select series with its labels")
        if self.probe is not None and self.metric not in _PROBE_METRICS:
            raise ValueError(f"probe= is for probe_down only, not {self.metric!r}")
        if self.metric in _PROBE_METRICS and (self.task or self.queue):
            raise ValueError(f"metric {self.metric!r} takes probe= only")
        return self

    @model_validator(mode="after")
    def _needs_queue(self) -> Self:
        if self.metric in _QUEUE_METRICS and not self.queue:
            raise ValueError(f"metric {self.metric!r} needs queue=")
        no_task = _QUEUE_METRICS | {"live_workers"} | _SYSTEM_METRICS | _SERVER_METRICS
        if self.task and self.metric in no_task:
            raise ValueError(f"metric {self.metric!r} does not take task=")
        if self.queue and self.metric in _SYSTEM_METRICS:
            raise ValueError(f"metric {self.metric!r} is host-wide: it does not take queue=")
        if self.queue and self.metric in _SLA_METRICS:
            raise ValueError(f"metric {self.metric!r} takes task= only (targets name their queue)")
        if self.queue and self.metric in _SERVER_METRICS:
            raise ValueError(f"metric {self.metric!r} is Redis-wide: it does not take queue=")
        return self

    def holds(self, value: float | None) -> bool:
        """Whether the condition is true for ``value`` (no data is never true)."""
        return value is not None and _OPS[self.op](value, self.threshold)

    def where(self) -> str:
        """``[task=x, queue=y]`` (or probe=, stat=), empty without any."""
        pairs = (("task", self.task), ("queue", self.queue), ("probe", self.probe))
        where = ", ".join(f"{k}={v}" for k, v in (*pairs, ("stat", self.stat)) if v)
        return f"[{where}]" if where else ""

    def describe(self) -> str:
        return f"{self.metric}{self.where()} {self.op} {self.threshold:g}"


class ConditionResult(BaseModel):
    """One condition's measured value at an evaluation."""

    model_config = ConfigDict(frozen=True)

    condition: Condition
    value: float | None
    holds: bool

    def measured(self) -> str:
        """``queue_depth[queue=emails] = 1520 (> 1000)``: the value read against the test."""
        c = self.condition
        value = "n/a (no data)" if self.value is None else f"{self.value:g}"
        return f"{c.metric}{c.where()} = {value} ({c.op} {c.threshold:g})"


_Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class AlertRule(BaseModel):
    """A named alert: conditions, how long they must hold, severity, cooldown, channels.

    Example::

        AlertRule(
            name="emails-backlog",
            conditions=[Condition(metric="queue_depth", queue="emails", op=">", threshold=1000)],
            for_=timedelta(minutes=2),
            severity="warning",
            cooldown=timedelta(minutes=15),
            channels=[Webhook(url="https://hooks.example/alerts", secret="...")],
            message="{rule}: depth of {queue} is {value} (> {threshold})",
        )
    """

    model_config = _frozen

    name: _Name = Field(description="Unique rule name.")
    conditions: tuple[Condition, ...] = Field(min_length=1, description="What to check.")
    match: Literal["all", "any"] = Field("all", description="All conditions, or any one.")
    for_: Duration = Field(
        timedelta(0), alias="for", ge=timedelta(0), description="How long they must hold."
    )
    severity: Severity = Field(Severity.WARNING, description="info, warning or critical.")
    cooldown: Duration = Field(
        timedelta(minutes=15),
        ge=timedelta(0),
        description="At most one firing notification per rule per cooldown, cluster-wide.",
    )
    channels: Annotated[tuple[Any, ...], BeforeValidator(_channels)] = Field(
        (), description="Where notifications go: built-in channel models or your own."
    )
    message: str = Field(
        "{rule} ({severity}): {measured}",
        description="Template; fields: rule, severity, state, value, threshold, metric, "
        "task, queue, conditions, measured, started_at.",
    )
    enabled: bool = Field(True, description="Disabled rules are not evaluated.")

    @field_validator("message")
    @classmethod
    def _template(cls, value: str) -> str:
        valid = ", ".join(sorted(_TEMPLATE_FIELDS))
        try:
            parts = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(f"message is not a valid template ({exc}); fields: {valid}") from None
        for _, name, spec, _ in parts:
            if name is None:
                continue
            if name not in _TEMPLATE_FIELDS:
                raise ValueError(f"unknown message field {{{name}}}; use one of {valid}")
            if spec and ("{" in spec or "}" in spec):
                raise ValueError(f"message field {{{name}}} nests a field in its format spec")
        return value

    def evaluate(self, values: list[float | None]) -> tuple[bool, list[ConditionResult]]:
        """Whether the rule's conditions hold for the measured ``values`` (one per condition)."""
        results = [
            ConditionResult(condition=c, value=v, holds=c.holds(v))
            for c, v in zip(self.conditions, values, strict=True)
        ]
        joined = all if self.match == "all" else any
        return joined(r.holds for r in results), results


_TEMPLATE_FIELDS = {
    "rule",
    "severity",
    "state",
    "value",
    "threshold",
    "metric",
    "task",
    "queue",
    "conditions",
    "measured",
    "started_at",
}


def render_message(
    rule: AlertRule, state: str, results: list[ConditionResult], started_at: str
) -> str:
    """The rule's message for this evaluation; the first holding condition fills the fields."""
    first = next((r for r in results if r.holds), results[0])
    fields = {
        "rule": rule.name,
        "severity": rule.severity.value,
        "state": state,
        "value": "n/a" if first.value is None else f"{first.value:g}",
        "threshold": f"{first.condition.threshold:g}",
        "metric": first.condition.metric,
        "task": first.condition.task or "",
        "queue": first.condition.queue or "",
        "conditions": f" {rule.match} ".join(r.condition.describe() for r in results),
        "measured": f" {rule.match} ".join(r.measured() for r in results),
        "started_at": started_at,
    }
    return rule.message.format(**fields)


def load_rules(path: str | Path) -> list[AlertRule]:
    """Rules from a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file: a top-level list
    ``rules`` (or, in YAML, a bare list). Invalid rules raise ConfigurationError naming the
    rule and the field; nothing is loaded then."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read alert rules from {str(file)!r}: {exc}") from None
    data = _parse(file, text)
    items = data.get("rules") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigurationError(f"{file}: expected a list of rules under 'rules'")
    rules = []
    for position, item in enumerate(items):
        name = item.get("name", f"#{position}") if isinstance(item, dict) else f"#{position}"
        try:
            rules.append(AlertRule.model_validate(item))
        except ValidationError as exc:
            problems = describe_validation(exc, root="rule")
            raise ConfigurationError(f"{file}: rule {name!r} is invalid: {problems}") from None
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"{file}: duplicate rule names {duplicates}")
    return rules


def _parse(file: Path, text: str) -> Any:
    suffix = file.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        if suffix == ".toml":
            return tomllib.loads(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{file}: not valid {suffix[1:].upper()}: {exc}") from None
    raise ConfigurationError(f"{file}: use a .yaml, .yml or .toml file, got {suffix or 'none'!r}")
