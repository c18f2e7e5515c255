"""Custom metrics (``app.metrics.counter``, ``gauge``, ``histogram``): declaration rules,
label selectors, recording from worker subprocesses and a plain client, reading back,
Prometheus exposition, export, and alert rules on them, against a real Redis.

Isolation: every test's app has a name of its own, so its metric keys are its own.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import taskflow
from taskflow.alerts import AlertRule, Condition
from taskflow.alerts.sources import Measurer
from taskflow.config import MetricsSettings
from taskflow.metrics.custom import format_selector, parse_selector, registry_of
from taskflow.metrics.custom_read import CounterValue, GaugeValue, HistogramValue, Series
from taskflow.metrics.export import collect
from taskflow.metrics.histogram import Histogram
from taskflow.metrics.prometheus import MetricsExporter
from tests.apps import custom_metrics_app
from tests.conftest import FAST_WORKER
from tests.helpers import until
from tests.processes import Workers, wait_live

FAST = MetricsSettings(flush_interval=timedelta(milliseconds=50))
WORKER_APP = "tests.apps.custom_metrics_app:app"


def bare() -> taskflow.TaskFlow:
    """An unopened app for the declaration tests (never opened)."""
    return taskflow.TaskFlow(name=f"decl-{uuid.uuid4().hex[:8]}")


# -- declaring ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1calls", "calls-total", "", "calls total", "ünï"])
def test_invalid_names_are_refused_naming_them(name: str) -> None:
    with pytest.raises(ValueError, match=rf"metric name {name!r} is not valid.*letters, digits"):
        bare().metrics.counter(name, "help")


def test_taskflow_prefix_is_reserved() -> None:
    with pytest.raises(ValueError, match="'taskflow_x' is reserved"):
        bare().metrics.gauge("taskflow_x", "help")


@pytest.mark.parametrize("label", ["1x", "a-b", "__x", ""])
def test_invalid_label_names_are_refused(label: str) -> None:
    with pytest.raises(ValueError, match=rf"label name {label!r} is not valid"):
        bare().metrics.counter("c_total", "help", (label,))


def test_le_is_not_a_histogram_label_and_labelnames_must_be_a_tuple() -> None:
    app = bare()
    with pytest.raises(ValueError, match="'le' is not valid for a histogram"):
        app.metrics.histogram("h", "help", ("le",))
    with pytest.raises(ValueError, match="give a tuple of names"):
        app.metrics.counter("c_total", "help", "model")  # a string is not a tuple of names
    with pytest.raises(ValueError, match=r"appear more than once"):
        app.metrics.counter("c_total", "help", ("a", "a"))


def test_declaring_again_returns_the_metric_and_a_clash_names_both() -> None:
    app = bare()
    calls = app.metrics.counter("calls_total", "Calls", ("model",))
    assert app.metrics.counter("calls_total", "Calls", ("model",)) is calls
    with pytest.raises(ValueError) as clash:
        app.metrics.gauge("calls_total", "Calls", ("model",))
    assert "counter calls_total(model)" in str(clash.value)
    assert "gauge calls_total(model)" in str(clash.value)
    with pytest.raises(ValueError, match=r"counter calls_total\(model\).*counter calls_total\(\)"):
        app.metrics.counter("calls_total", "Calls")


def test_labels_missing_unknown_or_absent_are_named() -> None:
    calls = bare().metrics.counter("calls_total", "Calls", ("model", "region"))
    with pytest.raises(ValueError, match=r"missing \['region'\]; unknown \['zone'\]"):
        calls.labels(model="flash", zone="eu")
    with pytest.raises(ValueError, match=r"got 1 values for labels \(model, region\)"):
        calls.labels("flash")
    with pytest.raises(ValueError, match=r"record on .labels\(model=..., region=...\)"):
        calls.inc()
    with pytest.raises(ValueError, match="at most 200"):
        calls.labels(model="x" * 201, region="eu")


@pytest.mark.parametrize("amount", [-1, math.nan, math.inf, "1", True])
def test_bad_amounts_are_refused(amount: Any) -> None:
    app = bare()
    with pytest.raises(ValueError, match="must be"):
        app.metrics.counter("c_total", "help").inc(amount)
    with pytest.raises(ValueError, match="must be"):
        app.metrics.histogram("h_seconds", "help").observe(amount)


def test_label_combinations_over_the_cap_are_dropped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = bare()
    users = app.metrics.counter("logins_total", "Logins", ("user",), max_series=3)
    with caplog.at_level(logging.WARNING, logger="taskflow.metrics.custom"):
        for i in range(10):
            users.labels(user=f"u{i}").inc()
    registry = registry_of(app)
    series = {cell[3] for cell in registry._pending.counts}
    assert series == {'["u0"]', '["u1"]', '["u2"]'}
    warnings = [r for r in caplog.records if "max_series" in r.getMessage()]
    assert len(warnings) == 1
    assert "logins_total" in warnings[0].getMessage()


# -- selectors and merging (pure) -----------------------------------------------------------

names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True)
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)


@given(names, st.dictionaries(label_names, st.text(max_size=20), max_size=4))
def test_selectors_round_trip(name: str, labels: dict[str, str]) -> None:
    assert parse_selector(format_selector(name, labels)) == (name, labels)


@pytest.mark.parametrize(
    "text",
    ['calls{model="a" region="b"}', "calls{model=a}", '1calls{x="y"}', 'c{a="1", a="2"}'],
)
def test_bad_selectors_are_refused_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="calls|c\\{"):
        parse_selector(text)


def test_a_condition_on_a_custom_metric_is_validated() -> None:
    c = Condition(metric='custom:calls_total{model="flash"}', op=">", threshold=3)
    assert c.custom == ("calls_total", {"model": "flash"})
    assert c.describe() == 'custom:calls_total{model="flash"} > 3'
    with pytest.raises(ValueError, match="not a metric selector"):
        Condition(metric="custom:1calls", op=">", threshold=3)
    with pytest.raises(ValueError, match="unknown stat 'p42'"):
        Condition(metric="custom:calls_total", stat="p42", op=">", threshold=3)
    with pytest.raises(ValueError, match="stat= is for custom metrics only"):
        Condition(metric="queue_depth", queue="q", stat="p95", op=">", threshold=3)
    with pytest.raises(ValueError, match="select series with its labels"):
        Condition(metric="custom:calls_total", task="t", op=">", threshold=3)


values = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=30)


@given(st.lists(st.tuples(st.integers(0, 3), values), min_size=1, max_size=6))
def test_merging_series_in_any_grouping_gives_the_histogram_of_the_union(
    parts: list[tuple[int, list[float]]],
) -> None:
    """Whatever process and bucket the values were split over, merged they are one sketch."""
    shards: dict[int, Series] = {}
    for shard, batch in parts:
        s = shards.setdefault(shard, Series())
        for v in batch:
            s.histogram.add(v)
            s.total += v
    merged = Series()
    for s in reversed(list(shards.values())):
        merged.add(s)
    union = Histogram.of(v for _, batch in parts for v in batch)
    assert merged.histogram.buckets == union.buckets
    assert merged.histogram.count == union.count
    assert merged.total == pytest.approx(math.fsum(v for _, b in parts for v in b))
    for q in (0.5, 0.95, 0.99):
        assert merged.histogram.quantile(q) == union.quantile(q)


# -- recording and reading, real Redis ------------------------------------------------------


@pytest.mark.asyncio
async def test_values_recorded_in_a_plain_client_are_written_when_it_closes(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app(metrics=FAST)
    sent = app.metrics.counter("emails_sent_total", "Emails sent", ("provider",))
    async with app:
        for _ in range(7):
            sent.labels(provider="ses").inc()
        sent.labels(provider="smtp").inc(2.5)
    # nothing flushed it but the close: a new process (another app object) reads it back
    reader = named_app(name=app.name, metrics=FAST)
    async with reader:
        total = await reader.metrics.read("emails_sent_total", since="10m")
        assert isinstance(total, CounterValue)
        assert total.total == 9.5
        ses = await reader.metrics.read("emails_sent_total", labels={"provider": "ses"})
        assert isinstance(ses, CounterValue) and ses.total == 7
        with pytest.raises(taskflow.MetricNotFound, match="'emails_sent'.*emails_sent_total"):
            await reader.metrics.read("emails_sent")
        with pytest.raises(ValueError, match=r"no label \['region'\]; its labels: provider"):
            await reader.metrics.read("emails_sent_total", labels={"region": "eu"})


@pytest.mark.slow
@pytest.mark.asyncio
async def test_metrics_from_two_worker_processes_add_up(tmp_path: Path) -> None:
    app_name = f"custom-{uuid.uuid4().hex[:8]}"
    queues = [f"{app_name}-a", f"{app_name}-b"]
    client = custom_metrics_app.make_app(app_name)
    record = client.get_task("record")
    n = 40
    values = {
        q: [0.001 * (i + 1) * (3 if q.endswith("b") else 1) for i in range(25)] for q in queues
    }
    with Workers(tmp_path, WORKER_APP) as workers:
        started = [workers.spawn([q], concurrency=4, env={"TEST_QUEUE": app_name}) for q in queues]
        async with client:
            for worker in started:
                worker.app_name = app_name  # the app is named after its queue, not its module
                await wait_live(client.redis, worker)
            pids = []
            for queue in queues:  # one after the other: b's gauge is set last
                jobs = [
                    await record.with_options(queue=queue).enqueue("flash", n // 4, [])
                    for _ in range(4)
                ]
                jobs.append(await record.with_options(queue=queue).enqueue("pro", 0, values[queue]))
                pids += [await job.result(timeout=15) for job in jobs]
            assert len(set(pids)) == 2  # two processes recorded

            async def counted() -> bool:
                got = await client.metrics.read("calls_total", since="10m")
                return isinstance(got, CounterValue) and got.total == 2 * n

            await until(counted, timeout=10, interval=0.05)
            flash = await client.metrics.read("calls_total", labels={"model": "flash"})
            assert isinstance(flash, CounterValue) and flash.total == 2 * n

            union = Histogram.of(values[queues[0]] + values[queues[1]])

            async def observed() -> bool:
                got = await client.metrics.read("latency_seconds", labels={"model": "pro"})
                return isinstance(got, HistogramValue) and got.count == union.count

            await until(observed, timeout=10, interval=0.05)
            latency = await client.metrics.read("latency_seconds", since=timedelta(minutes=10))
            assert isinstance(latency, HistogramValue)
            assert latency.histogram.buckets == union.buckets
            for q, got in ((0.5, latency.p50), (0.95, latency.p95), (0.99, latency.p99)):
                assert got == union.quantile(q)
            assert latency.max == max(union.maximum, 0) and latency.sum == pytest.approx(
                union.total
            )

            async def both_gauges() -> GaugeValue:
                got = await client.metrics.read("quota_remaining")
                assert isinstance(got, GaugeValue)
                return got

            await until(lambda: _has_processes(both_gauges, 2), timeout=10, interval=0.05)
            quota = await both_gauges()
            assert quota.value == values[queues[1]][-1]  # set last, by the second process
            assert sorted(quota.processes.values()) == sorted(v[-1] for v in values.values())


async def _has_processes(read: Callable[[], Any], n: int) -> bool:
    return len((await read()).processes) == n


@pytest.mark.asyncio
async def test_prometheus_and_export_show_custom_metrics(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app(metrics=FAST)
    calls = app.metrics.counter("gemini_calls_total", "Gemini API calls", ("model",))
    latency = app.metrics.histogram(
        "gemini_latency_seconds", "Gemini latency", ("model",), buckets=(0.1, 1.0)
    )
    quota = app.metrics.gauge("gemini_quota_remaining", "Calls left today")
    async with app:
        exporter = MetricsExporter(app)
        calls.labels(model="flash").inc(3)
        latency.labels(model="flash").observe(0.05)
        latency.labels(model="flash").observe(0.5)
        quota.set(1200)
        await app.metrics.flush()
        text = (await exporter.render()).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["gemini_calls"].type == "counter"
        assert families["gemini_calls"].documentation == "Gemini API calls"
        [sample] = families["gemini_calls"].samples
        assert (sample.name, sample.labels, sample.value) == (
            "gemini_calls_total",
            {"model": "flash"},
            3.0,
        )
        histogram = families["gemini_latency_seconds"]
        assert histogram.type == "histogram"
        buckets = {s.labels["le"]: s.value for s in histogram.samples if s.name.endswith("_bucket")}
        assert buckets == {"0.1": 1.0, "1.0": 2.0, "+Inf": 2.0}
        assert families["gemini_quota_remaining"].type == "gauge"
        assert families["gemini_quota_remaining"].samples[0].value == 1200

        document = await collect(app, since=timedelta(minutes=10))
        rows = {(r.name, tuple(r.labels.items())): r for r in document.custom}
        assert rows[("gemini_calls_total", (("model", "flash"),))].total == 3
        row = rows[("gemini_latency_seconds", (("model", "flash"),))]
        assert row.figures is not None and row.figures.count == 2
        assert rows[("gemini_quota_remaining", ())].value == 1200
        assert orjson.loads(document.model_dump_json())["custom"]


@pytest.mark.asyncio
async def test_an_alert_rule_on_a_custom_metric_fires(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app(metrics=FAST)
    errors = app.metrics.counter("gateway_errors_total", "Payment gateway errors", ("gateway",))
    latency = app.metrics.histogram("gateway_latency_seconds", "Gateway latency")
    rule = app.alerts.add_rule(
        AlertRule(
            name="gateway-errors",
            conditions=[
                Condition(
                    metric='custom:gateway_errors_total{gateway="stripe"}',
                    op=">=",
                    threshold=5,
                    window=timedelta(minutes=5),
                ),
                Condition(
                    metric="custom:gateway_latency_seconds",
                    stat="p95",
                    op=">",
                    threshold=1,
                ),
            ],
            cooldown=timedelta(0),
        )
    )
    fast = FAST_WORKER.model_copy(update={"alert_interval": timedelta(milliseconds=50)})
    async with app, app.worker(settings=fast):
        for _ in range(5):
            errors.labels(gateway="adyen").inc()  # another series: not counted
        for value in (0.5, 2.0, 3.0):
            latency.observe(value)

        await app.metrics.flush()
        stripe, slow = rule.conditions
        assert await Measurer(app).value(stripe) == 0  # adyen's errors are not stripe's
        p95 = Histogram.of([0.5, 2.0, 3.0]).quantile(0.95)  # the lower rank: 2.0, within 2 %
        assert await Measurer(app).value(slow) == p95
        assert (await app.alerts.state(rule.name)).get("state") != "firing"
        for _ in range(5):
            errors.labels(gateway="stripe").inc()

        async def firing() -> bool:
            return (await app.alerts.state(rule.name)).get("state") == "firing"

        await until(firing, timeout=10)
        [event] = [e for e in await app.alerts.history() if e.event == "firing"]
        assert event.rule == "gateway-errors" and float(event.value) == 5
