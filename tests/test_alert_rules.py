"""Alert rules without Redis: validation, durations, evaluation, messages, rules files,
presets, secrets in reprs, and the registry of ``app.alerts``."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

import taskflow
from taskflow.alerts import (
    METRICS,
    AlertRule,
    Condition,
    Email,
    Log,
    Severity,
    Slack,
    Webhook,
    load_rules,
    presets,
)
from taskflow.alerts.rules import render_message
from taskflow.errors import ConfigurationError

WEBHOOK_SECRET = "whsec-7Yq2-do-not-log"
SMTP_PASSWORD = "smtp-pw-Kx81-do-not-log"
SLACK_URL = "https://hooks.slack.com/services/T0001/B0001/slacktoken9Zr"


def depth(queue: str = "emails", op: str = ">", threshold: float = 100, **extra: Any) -> Condition:
    return Condition.model_validate(
        {"metric": "queue_depth", "queue": queue, "op": op, "threshold": threshold, **extra}
    )


def rule(**fields: Any) -> AlertRule:
    return AlertRule.model_validate({"name": "r", "conditions": [depth()], **fields})


def errors(exc: pytest.ExceptionInfo[ValidationError]) -> dict[tuple[Any, ...], str]:
    return {tuple(e["loc"]): e["msg"] for e in exc.value.errors()}


# -- conditions ---------------------------------------------------------------------------


def test_unknown_metric_is_refused_naming_the_field_and_the_valid_ones() -> None:
    with pytest.raises(ValidationError) as exc:
        Condition(metric="queue_size", queue="q", op=">", threshold=1)
    [(loc, msg)] = errors(exc).items()
    assert loc == ("metric",)
    assert "queue_size" in msg
    for metric in METRICS:
        assert metric in msg


@pytest.mark.parametrize("metric", ["queue_depth", "oldest_job_age"])
def test_queue_metrics_need_a_queue(metric: str) -> None:
    with pytest.raises(ValidationError, match="needs queue="):
        Condition(metric=metric, op=">", threshold=1)
    assert Condition(metric=metric, queue="q", op=">", threshold=1).queue == "q"


def test_queue_metrics_and_live_workers_take_no_task() -> None:
    for metric in ("queue_depth", "oldest_job_age", "live_workers"):
        with pytest.raises(ValidationError, match="does not take task="):
            Condition(metric=metric, queue="q", task="t", op=">", threshold=1)
    # live_workers without a queue counts every worker; job metrics take task= and queue=
    Condition(metric="live_workers", op="<", threshold=1)
    Condition(metric="failure_rate", task="t", queue="q", op=">", threshold=0.1)


@pytest.mark.parametrize("op", ["=>", "=", "gt", "", "<>"])
def test_bad_operator_is_refused(op: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Condition(metric="throughput", op=op, threshold=1)
    assert ("op",) in errors(exc)


@pytest.mark.parametrize("window", [timedelta(0), timedelta(seconds=-5), "-5s", "0s", "soon"])
def test_window_must_be_a_positive_duration(window: object) -> None:
    with pytest.raises(ValidationError) as exc:
        Condition.model_validate(
            {"metric": "throughput", "op": ">", "threshold": 1, "window": window}
        )
    assert ("window",) in errors(exc)


def test_condition_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError) as exc:
        depth(treshold=5)
    assert ("treshold",) in errors(exc)


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        (">", 101, True),
        (">", 100, False),
        (">=", 100, True),
        ("<", 99, True),
        ("<", 100, False),
        ("<=", 100, True),
        ("==", 100, True),
        ("==", 100.5, False),
        ("!=", 100.5, True),
        ("!=", 100, False),
    ],
)
def test_operators(op: str, value: float, expected: bool) -> None:
    assert depth(op=op, threshold=100).holds(value) is expected


@pytest.mark.parametrize("op", [">", ">=", "<", "<=", "==", "!="])
def test_no_data_never_holds(op: str) -> None:
    assert depth(op=op, threshold=0).holds(None) is False


def test_describe() -> None:
    assert depth(threshold=1000).describe() == "queue_depth[queue=emails] > 1000"
    described = Condition(metric="run_time_p95", task="t", queue="q", op=">=", threshold=2.5)
    assert described.describe() == "run_time_p95[task=t, queue=q] >= 2.5"
    assert Condition(metric="system_cpu", op=">", threshold=90).describe() == "system_cpu > 90"


# -- durations and rule fields --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86400),
        ("250ms", 0.25),
        ("1.5m", 90),
        (" 30 s ", 30),
        (45, 45),
        ("PT2M", 120),  # what pydantic takes itself still works
    ],
)
def test_durations(text: object, seconds: float) -> None:
    loaded = rule(**{"for": text, "cooldown": text})
    assert loaded.for_ == timedelta(seconds=seconds)
    assert loaded.cooldown == timedelta(seconds=seconds)
    window = Condition.model_validate(
        {"metric": "throughput", "op": ">", "threshold": 1, "window": text}
    ).window
    assert window == timedelta(seconds=seconds)


def test_for_is_an_alias_of_for_() -> None:
    by_alias = rule(**{"for": "2m"})
    by_name = AlertRule(name="r", conditions=[depth()], for_=timedelta(minutes=2))
    assert by_alias.for_ == by_name.for_ == timedelta(minutes=2)
    assert by_alias == by_name
    assert rule().for_ == timedelta(0)  # fires at the first evaluation that holds
    assert rule().cooldown == timedelta(minutes=15)


@pytest.mark.parametrize("field", ["for", "cooldown"])
@pytest.mark.parametrize("value", [timedelta(seconds=-1), "-5s", "ten minutes", "5x"])
def test_negative_or_garbled_durations_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        rule(**{field: value})
    assert list(errors(exc)) in ([(field,)], [("for_",)])


def test_zero_cooldown_and_for_are_allowed() -> None:
    zero = rule(**{"for": "0s", "cooldown": 0})
    assert zero.for_ == zero.cooldown == timedelta(0)


@pytest.mark.parametrize("name", ["", "has space", "slash/name", "x" * 201, "ünï"])
def test_bad_rule_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as exc:
        rule(name=name)
    assert ("name",) in errors(exc)


def test_a_rule_needs_a_condition() -> None:
    with pytest.raises(ValidationError) as exc:
        rule(conditions=[])
    assert ("conditions",) in errors(exc)


def test_severity_and_match_are_checked() -> None:
    assert rule(severity="critical").severity is Severity.CRITICAL
    with pytest.raises(ValidationError) as exc:
        rule(severity="fatal")
    assert ("severity",) in errors(exc)
    with pytest.raises(ValidationError) as exc:
        rule(match="most")
    assert ("match",) in errors(exc)


@pytest.mark.parametrize(
    "template", ["{rule} at {when}", "{rule.name}", "{0}", "{value} {Rule}", "{conditions[0]}"]
)
def test_unknown_message_fields_are_refused(template: str) -> None:
    with pytest.raises(ValidationError) as exc:
        rule(message=template)
    [(loc, msg)] = errors(exc).items()
    assert loc == ("message",)
    assert "unknown message field" in msg


def test_positional_message_field_is_refused_at_load() -> None:
    with pytest.raises(ValidationError) as exc:
        loaded = rule(message="{rule} is {}")
        # if it loads, rendering it must not fail either
        ok, results = loaded.evaluate([500])
        render_message(loaded, "firing", results, "2024-01-01T00:00:00+00:00")
    assert ("message",) in errors(exc)


def test_nested_field_in_a_format_spec_is_refused_at_load() -> None:
    with pytest.raises(ValidationError) as exc:
        loaded = rule(message="{rule:>{width}}")
        ok, results = loaded.evaluate([500])
        render_message(loaded, "firing", results, "2024-01-01T00:00:00+00:00")
    assert ("message",) in errors(exc)


def test_every_documented_message_field_renders() -> None:
    template = " | ".join(
        f"{{{f}}}"
        for f in (
            "rule",
            "severity",
            "state",
            "value",
            "threshold",
            "metric",
            "task",
            "queue",
            "conditions",
            "started_at",
        )
    )
    loaded = rule(name="all-fields", severity="critical", message=template + " {{literal}}")
    _, results = loaded.evaluate([1234.5])
    text = render_message(loaded, "firing", results, "2024-05-01T10:00:00+00:00")
    assert text == (
        "all-fields | critical | firing | 1234.5 | 100 | queue_depth |  | emails | "
        "queue_depth[queue=emails] > 100 | 2024-05-01T10:00:00+00:00 {literal}"
    )


def test_rules_are_frozen_and_refuse_unknown_fields() -> None:
    loaded = rule()
    with pytest.raises(ValidationError):
        loaded.name = "other"
    with pytest.raises(ValidationError) as exc:
        rule(cooldwn="5m")
    assert ("cooldwn",) in errors(exc)


# -- evaluation -----------------------------------------------------------------------------


def two(match: str) -> AlertRule:
    return rule(
        match=match,
        conditions=[
            depth(threshold=100),
            Condition(metric="live_workers", queue="emails", op="<", threshold=1),
        ],
    )


@pytest.mark.parametrize(
    ("match", "values", "expected"),
    [
        ("all", [500, 0], True),
        ("all", [500, 2], False),
        ("all", [5, 0], False),
        ("all", [None, 0], False),
        ("any", [500, 2], True),
        ("any", [5, 0], True),
        ("any", [5, 2], False),
        ("any", [None, None], False),
    ],
)
def test_evaluate_all_and_any(match: str, values: list[float | None], expected: bool) -> None:
    holds, results = two(match).evaluate(values)
    assert holds is expected
    assert [r.value for r in results] == values
    assert [r.condition for r in results] == list(two(match).conditions)
    assert [r.holds for r in results] == [
        c.holds(v) for c, v in zip(two(match).conditions, values, strict=True)
    ]


def test_evaluate_needs_one_value_per_condition() -> None:
    with pytest.raises(ValueError, match="zip"):
        two("all").evaluate([1])


def test_message_takes_its_fields_from_the_first_holding_condition() -> None:
    loaded = two("any").model_copy(
        update={"message": "{rule} {state}: {metric} {value} vs {threshold} ({conditions})"}
    )
    _, results = loaded.evaluate([5, 0])  # only the second holds
    assert render_message(loaded, "firing", results, "t0") == (
        "r firing: live_workers 0 vs 1 "
        "(queue_depth[queue=emails] > 100 any live_workers[queue=emails] < 1)"
    )
    _, results = loaded.evaluate([None, 3])  # none holds: the first, with no data
    assert render_message(loaded, "resolved", results, "t0").startswith(
        "r resolved: queue_depth n/a vs 100"
    )


def test_default_message_says_the_measured_value_against_the_threshold() -> None:
    loaded = rule(name="emails-backlog", severity="info")
    _, results = loaded.evaluate([150])
    assert render_message(loaded, "firing", results, "t0") == (
        "emails-backlog (info): queue_depth[queue=emails] = 150 (> 100)"
    )
    _, results = loaded.evaluate([None])
    assert render_message(loaded, "resolved", results, "t0") == (
        "emails-backlog (info): queue_depth[queue=emails] = n/a (no data) (> 100)"
    )


# -- rules files ----------------------------------------------------------------------------

YAML_RULES = f"""
rules:
  - name: emails-backlog
    conditions:
      - metric: queue_depth
        queue: emails
        op: ">"
        threshold: 1000
    for: 2m
    cooldown: 15m
    severity: critical
    message: "{{rule}}: depth of {{queue}} is {{value}} (> {{threshold}})"
    channels:
      - type: webhook
        url: https://hooks.example/alerts/abc
        secret: {WEBHOOK_SECRET}
      - type: slack
        url: {SLACK_URL}
      - type: email
        host: smtp.example
        port: 2525
        sender: alerts@example.com
        to: [ops@example.com, oncall@example.com]
        username: alerts
        password: {SMTP_PASSWORD}
      - type: log
      - type: console
  - name: slow-reports
    match: any
    conditions:
      - {{metric: run_time_p95, task: report, window: 10m, op: ">", threshold: 30}}
      - {{metric: failure_rate, task: report, op: ">=", threshold: 0.2}}
    for: 90s
"""

TOML_RULES = f"""
[[rules]]
name = "emails-backlog"
for = "2m"
cooldown = "15m"
severity = "critical"
message = "{{rule}}: depth of {{queue}} is {{value}} (> {{threshold}})"

[[rules.conditions]]
metric = "queue_depth"
queue = "emails"
op = ">"
threshold = 1000

[[rules.channels]]
type = "webhook"
url = "https://hooks.example/alerts/abc"
secret = "{WEBHOOK_SECRET}"

[[rules.channels]]
type = "slack"
url = "{SLACK_URL}"

[[rules.channels]]
type = "email"
host = "smtp.example"
port = 2525
sender = "alerts@example.com"
to = ["ops@example.com", "oncall@example.com"]
username = "alerts"
password = "{SMTP_PASSWORD}"

[[rules.channels]]
type = "log"

[[rules.channels]]
type = "console"

[[rules]]
name = "slow-reports"
match = "any"
for = "90s"
conditions = [
  {{metric = "run_time_p95", task = "report", window = "10m", op = ">", threshold = 30}},
  {{metric = "failure_rate", task = "report", op = ">=", threshold = 0.2}},
]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def check_loaded(rules: list[AlertRule]) -> None:
    first, second = rules
    assert first.name == "emails-backlog"
    assert first.conditions == (depth(threshold=1000),)
    assert first.for_ == timedelta(minutes=2)
    assert first.cooldown == timedelta(minutes=15)
    assert first.severity is Severity.CRITICAL
    webhook, slack, mail, log, console = first.channels
    assert isinstance(webhook, Webhook)
    assert webhook.url == "https://hooks.example/alerts/abc"
    assert webhook.secret is not None and webhook.secret.get_secret_value() == WEBHOOK_SECRET
    assert isinstance(slack, Slack) and slack.url.get_secret_value() == SLACK_URL
    assert isinstance(mail, Email)
    assert (mail.host, mail.port, mail.sender) == ("smtp.example", 2525, "alerts@example.com")
    assert mail.to == ("ops@example.com", "oncall@example.com")
    assert mail.password is not None and mail.password.get_secret_value() == SMTP_PASSWORD
    assert isinstance(log, Log)
    assert console.name == "console"
    assert second.name == "slow-reports"
    assert second.match == "any"
    assert second.for_ == timedelta(seconds=90)
    assert second.cooldown == timedelta(minutes=15)
    assert second.severity is Severity.WARNING
    assert second.conditions[0].window == timedelta(minutes=10)
    assert second.conditions[1].window == timedelta(minutes=5)
    assert second.channels == ()


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_load_yaml(tmp_path: Path, suffix: str) -> None:
    check_loaded(load_rules(write(tmp_path, f"alerts{suffix}", YAML_RULES)))


def test_load_yaml_bare_list(tmp_path: Path) -> None:
    bare = YAML_RULES.replace("rules:\n", "")
    check_loaded(load_rules(str(write(tmp_path, "alerts.yml", bare))))


def test_load_toml(tmp_path: Path) -> None:
    check_loaded(load_rules(write(tmp_path, "alerts.toml", TOML_RULES)))


def test_yaml_and_toml_load_the_same_rules(tmp_path: Path) -> None:
    from_yaml = load_rules(write(tmp_path, "a.yaml", YAML_RULES))
    from_toml = load_rules(write(tmp_path, "a.toml", TOML_RULES))
    assert from_yaml == from_toml


def bad_yaml(body: str, name: str = "broken") -> str:
    return f"""
rules:
  - name: fine
    conditions: [{{metric: live_workers, op: "<", threshold: 1}}]
  - name: {name}
{body}
"""


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            '    conditions: [{metric: queue_size, queue: q, op: ">", threshold: 1}]',
            "conditions.0.metric",
            "unknown metric 'queue_size'",
        ),
        (
            '    conditions: [{metric: queue_depth, op: ">", threshold: 1}]',
            "conditions.0",
            "needs queue=",
        ),
        (
            '    conditions: [{metric: throughput, op: "=>", threshold: 1}]',
            "conditions.0.op",
            "",
        ),
        (
            '    conditions: [{metric: throughput, op: ">", threshold: many}]',
            "conditions.0.threshold",
            "",
        ),
        (
            '    conditions: [{metric: throughput, op: ">", threshold: 1, treshold: 2}]',
            "conditions.0.treshold",
            "",
        ),
        (
            '    conditions: [{metric: throughput, op: ">", threshold: 1, window: 0s}]',
            "conditions.0.window",
            "",
        ),
        ("    conditions: []", "conditions", ""),
        (
            '    conditions: [{metric: throughput, op: ">", threshold: 1}]\n    for: -5m',
            "for",
            "",
        ),
        (
            '    conditions: [{metric: throughput, op: ">", threshold: 1}]\n    cooldown: forever',
            "cooldown",
            "",
        ),
        (
            '    conditions: [{metric: throughput, op: ">", threshold: 1}]\n'
            "    message: '{rule} {when}'",
            "message",
            "unknown message field",
        ),
        (
            '    conditions: [{metric: throughput, op: ">", threshold: 1}]\n    severity: fatal',
            "severity",
            "",
        ),
        (
            '    conditions: [{metric: throughput, op: ">", threshold: 1}]\n'
            "    channels: [{type: pager, url: 'https://x'}]",
            "channels",
            "pager",
        ),
        (
            '    conditions: [{metric: throughput, op: ">", threshold: 1}]\n'
            "    channels: [{type: webhook, url: 'ftp://x'}]",
            "channel #0 webhook.url",
            "",
        ),
        (
            '    conditions: [{metric: throughput, op: ">", threshold: 1}]\n'
            "    channels: [{type: email, host: h, sender: a@b, to: []}]",
            "channel #0 email.to",
            "",
        ),
        (
            '    conditions: [{metric: throughput, op: ">", threshold: 1}]\n'
            "    channels: {type: log}",
            "channels",
            "must be a list",
        ),
    ],
)
def test_invalid_rule_is_refused_naming_the_rule_and_the_field(
    tmp_path: Path, body: str, field: str, words: str
) -> None:
    path = write(tmp_path, "alerts.yaml", bad_yaml(body))
    with pytest.raises(ConfigurationError) as exc:
        load_rules(path)
    text = str(exc.value)
    assert str(path) in text
    assert "rule 'broken' is invalid" in text
    assert f"{field}:" in text
    assert words in text
    assert "'fine'" not in text


def test_rule_without_a_name_is_named_by_position(tmp_path: Path) -> None:
    path = write(tmp_path, "alerts.yaml", "- conditions: []\n")
    with pytest.raises(ConfigurationError, match=r"rule '#0' is invalid: .*name: Field required"):
        load_rules(path)
    path = write(tmp_path, "alerts.yaml", "- just a string\n")
    with pytest.raises(ConfigurationError, match=r"rule '#0' is invalid"):
        load_rules(path)


def test_invalid_rule_in_toml_names_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "alerts.toml",
        '[[rules]]\nname = "t"\nfor = "-1m"\n'
        '[[rules.conditions]]\nmetric = "oldest_job_age"\nop = ">"\nthreshold = 5\n',
    )
    with pytest.raises(ConfigurationError) as exc:
        load_rules(path)
    assert "rule 't' is invalid" in str(exc.value)
    assert "for:" in str(exc.value)
    assert "conditions.0: Value error, metric 'oldest_job_age' needs queue=" in str(exc.value)


@pytest.mark.parametrize(
    ("channel", "field"),
    [
        (f"{{type: webhook, url: 'ftp://x', secret: {WEBHOOK_SECRET}}}", "webhook.url"),
        (f"{{type: webhook, url: 'https://x', secret: [{WEBHOOK_SECRET}]}}", "webhook.secret"),
        (f"{{type: slack, url: '{SLACK_URL}', timeout: -1}}", "slack.timeout"),
        (
            f"{{type: email, host: h, port: 0, sender: a@b, to: [c@d], password: {SMTP_PASSWORD}}}",
            "email.port",
        ),
        (
            f"{{type: email, host: h, sender: a@b, to: [c@d], password: [{SMTP_PASSWORD}]}}",
            "email.password",
        ),
    ],
)
def test_errors_never_show_secrets(tmp_path: Path, channel: str, field: str) -> None:
    """Whatever is wrong, the secret beside it (or the secret itself) stays out of the
    error; the channel's field is named."""
    condition = '{metric: throughput, op: ">", threshold: 1}'
    body = f"    conditions: [{condition}]\n    channels: [{channel}]"
    path = write(tmp_path, "alerts.yaml", bad_yaml(body))
    with pytest.raises(ConfigurationError) as exc:
        load_rules(path)
    text = str(exc.value)
    assert f"channel #0 {field}:" in text
    for secret in (WEBHOOK_SECRET, SLACK_URL, "slacktoken9Zr", SMTP_PASSWORD):
        assert secret not in text


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    one = '  - {name: dup, conditions: [{metric: live_workers, op: "<", threshold: 1}]}\n'
    other = '  - {name: other, conditions: [{metric: live_workers, op: "<", threshold: 1}]}\n'
    path = write(tmp_path, "alerts.yaml", "rules:\n" + one + other + one)
    with pytest.raises(ConfigurationError, match=r"duplicate rule names \['dup'\]"):
        load_rules(path)


@pytest.mark.parametrize("name", ["alerts.json", "alerts.txt", "alerts", "alerts.yaml.bak"])
def test_unknown_suffix_is_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, YAML_RULES)
    with pytest.raises(ConfigurationError, match=r"use a \.yaml, \.yml or \.toml file"):
        load_rules(path)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigurationError, match="cannot read alert rules from") as exc:
        load_rules(missing)
    assert str(missing) in str(exc.value)
    with pytest.raises(ConfigurationError, match="cannot read alert rules from"):
        load_rules(tmp_path)  # a directory
    if os.geteuid() != 0:  # root reads anything
        locked = write(tmp_path, "locked.yaml", YAML_RULES)
        locked.chmod(0)
        with pytest.raises(ConfigurationError, match="cannot read alert rules from"):
            load_rules(locked)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("a.yaml", "rules: [unclosed", "not valid YAML"),
        ("a.toml", "[[rules]\nname =", "not valid TOML"),
        ("a.yaml", "", "expected a list of rules"),
        ("a.yaml", "rules: {name: x}", "expected a list of rules"),
        ("a.yaml", "alerts: []", "expected a list of rules"),
        ("a.toml", 'name = "x"', "expected a list of rules"),
    ],
)
def test_malformed_files(tmp_path: Path, name: str, text: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        load_rules(write(tmp_path, name, text))


def test_empty_rules_list_loads_nothing(tmp_path: Path) -> None:
    assert load_rules(write(tmp_path, "a.yaml", "rules: []")) == []
    assert load_rules(write(tmp_path, "a.toml", "rules = []")) == []


# -- presets --------------------------------------------------------------------------------


def preset_rules() -> list[AlertRule]:
    return [
        presets.failure_rate(),
        presets.failure_rate(0.2, task="report", severity="critical", channels=[Log()]),
        presets.oldest_job_age("emails", 60),
        presets.no_live_worker("emails"),
    ]


def test_presets_are_valid_rules() -> None:
    default, tasked, oldest, no_worker = preset_rules()
    assert default.name == "failure-rate"
    assert default.conditions[0].threshold == 0.05
    assert default.for_ == timedelta(minutes=5)
    assert tasked.name == "failure-rate-report"
    assert tasked.conditions[0].task == "report"
    assert tasked.severity is Severity.CRITICAL
    assert [c.name for c in tasked.channels] == ["log"]
    assert oldest.name == "oldest-job-age-emails"
    assert oldest.conditions[0] == Condition(
        metric="oldest_job_age", queue="emails", op=">", threshold=60
    )
    assert no_worker.name == "no-live-worker-emails"
    assert no_worker.severity is Severity.CRITICAL
    assert no_worker.for_ == timedelta(seconds=30)
    for made in preset_rules():
        # the same rule again through validation, as if from a file
        assert AlertRule.model_validate(made.model_dump(by_alias=True)) == made


@pytest.mark.parametrize("made", preset_rules(), ids=lambda r: r.name)
def test_preset_messages_render(made: AlertRule) -> None:
    [condition] = made.conditions
    value = condition.threshold - 1 if condition.op == "<" else condition.threshold + 1
    holds, results = made.evaluate([value])
    assert holds
    text = render_message(made, "firing", results, "2024-01-01T00:00:00+00:00")
    assert made.name in text
    assert "{" not in text


def test_preset_with_a_bad_severity_is_refused() -> None:
    with pytest.raises(ValueError, match="fatal"):
        presets.no_live_worker("q", severity="fatal")


# -- secrets --------------------------------------------------------------------------------


def secret_channels() -> list[Any]:
    return [
        Webhook(
            url="https://hooks.example/in",
            secret=SecretStr(WEBHOOK_SECRET),
            headers={"Authorization": "Bearer hdr-token-55"},
        ),
        Webhook.model_validate({"url": "https://hooks.example/in", "secret": WEBHOOK_SECRET}),
        Slack(url=SecretStr(SLACK_URL)),
        Slack.model_validate({"url": SLACK_URL}),
        Email(
            host="smtp.example",
            sender="a@example.com",
            to=("b@example.com",),
            username="alerts",
            password=SecretStr(SMTP_PASSWORD),
        ),
    ]


SECRETS = (WEBHOOK_SECRET, SLACK_URL, "slacktoken9Zr", SMTP_PASSWORD, "hdr-token-55")


@pytest.mark.parametrize("channel", secret_channels(), ids=lambda c: type(c).__name__)
def test_channel_reprs_and_names_hide_secrets(channel: Any) -> None:
    shown = " ".join([repr(channel), str(channel), channel.name, f"{channel}"])
    for secret in SECRETS:
        assert secret not in shown
    # a JSON dump masks the SecretStr fields (webhook headers are dumped as they are)
    dumped = channel.model_dump_json()
    for secret in (WEBHOOK_SECRET, SLACK_URL, "slacktoken9Zr", SMTP_PASSWORD):
        assert secret not in dumped


def test_rule_repr_and_dump_hide_channel_secrets() -> None:
    loaded = rule(channels=secret_channels())
    shown = " ".join([repr(loaded), str(loaded)])
    for secret in SECRETS:
        assert secret not in shown
    dumped = loaded.model_dump_json()
    for secret in (WEBHOOK_SECRET, SLACK_URL, "slacktoken9Zr", SMTP_PASSWORD):
        assert secret not in dumped


def test_webhook_name_omits_the_path() -> None:
    hook = Webhook(url="https://hooks.example:8443/t/path-token-31?key=q-token-32")
    assert hook.name == "webhook https://hooks.example"
    assert Slack(url=SecretStr(SLACK_URL)).name == "slack"
    assert Email(host="smtp.example", port=465, sender="a@b", to=("c@d",)).name == (
        "email smtp.example:465"
    )


def test_channel_fields_are_checked() -> None:
    with pytest.raises(ValidationError) as exc:
        Webhook(url="hooks.example/in")
    assert ("url",) in errors(exc)
    with pytest.raises(ValidationError) as exc:
        Email(host="h", sender="a@b", to=())
    assert ("to",) in errors(exc)
    with pytest.raises(ValidationError) as exc:
        Email(host="h", port=70000, sender="a@b", to=("c@d",))
    assert ("port",) in errors(exc)


def test_channels_must_be_channels() -> None:
    class Pager:
        name = "pager"

        async def send(self, event: object) -> None:
            pass

    assert rule(channels=[Pager()]).channels[0].name == "pager"
    with pytest.raises(ValidationError, match="is not a channel"):
        rule(channels=[object()])
    with pytest.raises(ValidationError, match="channels must be a list"):
        rule(channels="log")


# -- the registry -------------------------------------------------------------------------


def test_add_rule_refuses_duplicates_and_non_rules(app: taskflow.TaskFlow) -> None:
    first = rule(name="dup")
    assert app.alerts.add_rule(first) is first
    with pytest.raises(ConfigurationError, match="'dup' already exists"):
        app.alerts.add_rule(rule(name="dup", severity="critical"))
    assert app.alerts.rules == [first]
    with pytest.raises(ConfigurationError, match="takes an AlertRule"):
        app.alerts.add_rule({"name": "x"})  # type: ignore[arg-type]
    app.alerts.remove_rule("dup")
    assert app.alerts.rules == []
    with pytest.raises(ConfigurationError, match="no alert rule named 'dup'"):
        app.alerts.remove_rule("dup")


def test_load_adds_every_rule(app: taskflow.TaskFlow, tmp_path: Path) -> None:
    loaded = app.alerts.load(write(tmp_path, "a.yaml", YAML_RULES))
    assert [r.name for r in loaded] == ["emails-backlog", "slow-reports"]
    assert app.alerts.rules == loaded


def test_load_is_all_or_nothing(app: taskflow.TaskFlow, tmp_path: Path) -> None:
    existing = app.alerts.add_rule(rule(name="slow-reports"))
    # a clash with a registered rule: nothing of the file is added
    with pytest.raises(ConfigurationError, match=r"already registered: \['slow-reports'\]"):
        app.alerts.load(write(tmp_path, "a.yaml", YAML_RULES))
    assert app.alerts.rules == [existing]
    # an invalid rule after valid ones: nothing is added
    with pytest.raises(ConfigurationError, match="rule 'broken' is invalid"):
        app.alerts.load(write(tmp_path, "b.yaml", bad_yaml("    conditions: []")))
    assert app.alerts.rules == [existing]
    # duplicates inside the file: nothing is added
    dup = '  - {name: twice, conditions: [{metric: live_workers, op: "<", threshold: 1}]}\n'
    with pytest.raises(ConfigurationError, match="duplicate rule names"):
        app.alerts.load(write(tmp_path, "c.yaml", "rules:\n" + dup + dup))
    assert app.alerts.rules == [existing]


@pytest.mark.asyncio
async def test_ack_needs_by(app: taskflow.TaskFlow) -> None:
    with pytest.raises(ConfigurationError, match="by="):
        await app.alerts.ack("some-id", by="")
