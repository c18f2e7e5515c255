"""Metrics export (JSON, CSV), Prometheus exposition (render, FastAPI route, worker sibling),
the ``taskflow metrics`` commands, and the documents in docs/ that describe them.

Everything touching Redis runs against the real server with real workers. Metric buckets
and the system stream are shared by every test, so each test uses its own queue and reads
only its rows (``--queue``/``queue=`` filters, or labels).
"""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev extra
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from redis.asyncio import Redis

import taskflow
from taskflow.cli import parse_since, parse_time
from taskflow.config import MetricsSettings, Resolution
from taskflow.errors import ConfigurationError
from taskflow.integrations.fastapi import lifespan, router
from taskflow.metrics.export import (
    CSV_COLUMNS,
    JobRow,
    MetricsExport,
    export,
    json_schema,
    schema_text,
)
from taskflow.metrics.histogram import Histogram
from taskflow.metrics.prometheus import (
    CONTENT_TYPE,
    MetricsExporter,
    MetricsServer,
    _buckets,
    render,
)
from tests.apps import metrics_app
from tests.helpers import until
from tests.processes import Workers, child_env, run, wait_live

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
APP = "tests.apps.metrics_app:app"
ALLOWED_LABELS = {"task", "queue", "status", "le"}  # le: the histograms' bucket bounds
OK, FAILING = 3, 2


# -- helpers ------------------------------------------------------------------------------


async def run_jobs(app: taskflow.TaskFlow, ok: int = OK, failing: int = FAILING) -> str:
    """Run ``ok`` work and ``failing`` boom jobs on an in-process worker until it has sent
    a system sample; returns its id. Leaving the worker flushes its metrics."""
    async with app.worker() as worker:
        jobs = [await app.enqueue("work", 0.01) for _ in range(ok)]
        jobs += [await app.enqueue("boom", "no") for _ in range(failing)]
        for job in jobs:
            try:
                await job.result(timeout=10)
            except taskflow.TaskFailed:
                pass

        async def sampled() -> bool:
            return bool(await app.metrics.system(timedelta(minutes=1), worker=worker.id))

        await until(sampled, timeout=10)
        return worker.id


def samples(text: str) -> list[tuple[str, str, Sample]]:
    """(family name, family type, sample) of every sample, parsed by prometheus-client."""
    return [
        (family.name, family.type, sample)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def check_exposition(text: str) -> None:
    """Parses; every name starts with taskflow_; no labels beyond the allowed ones."""
    parsed = samples(text)
    assert parsed
    for family, _, sample in parsed:
        assert family.startswith("taskflow_"), family
        assert sample.name.startswith("taskflow_"), sample.name
        assert set(sample.labels) <= ALLOWED_LABELS, sample


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample ``name`` whose labels include ``labels``."""
    found = [
        s.value
        for _, _, s in samples(text)
        if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DOCS / "metrics-export.schema.json").read_text())
    return loaded


def validate(document: object) -> None:
    validator = jsonschema.Draft202012Validator(
        schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(document)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def raw(port: int, request: bytes) -> bytes:
    """Send ``request`` as is and read the reply until the server closes."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        if request:
            await stream.send(request)
        reply = b""
        try:
            while True:
                reply += await stream.receive()
        except anyio.EndOfStream:
            return reply


def cli(*args: str, queue: str = "unused") -> Any:
    argv = [sys.executable, "-m", "taskflow", *args]
    return run(argv, env=child_env(TEST_QUEUE=queue), timeout=60)


# -- the schema and the pure parts --------------------------------------------------------


def test_committed_schema_is_the_models_schema() -> None:
    committed = (DOCS / "metrics-export.schema.json").read_text()
    assert committed == schema_text(), (
        "docs/metrics-export.schema.json is stale; regenerate it with: python -c "
        "\"from taskflow.metrics.export import schema_text; print(schema_text(), end='')\" "
        "> docs/metrics-export.schema.json"
    )
    assert json.loads(committed) == json_schema()
    jsonschema.Draft202012Validator.check_schema(json_schema())


def test_csv_columns_flatten_the_measures_with_units() -> None:
    assert CSV_COLUMNS[:2] == ("task", "queue")
    for column in ("run_p95_seconds", "wait_p99_seconds", "cpu_mean_seconds"):
        assert column in CSV_COLUMNS
    assert "memory_max_bytes" in CSV_COLUMNS
    assert "run_count" in CSV_COLUMNS
    assert len(CSV_COLUMNS) == len(set(CSV_COLUMNS))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1.5h", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),  # no zone: UTC
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ],
)
def test_since_accepts_durations_and_iso_times(text: str, expected: object) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["1x", "-5m", "h", "5 minutes", "", "yesterday"])
def test_since_rejects_other_values_naming_them(text: str) -> None:
    with pytest.raises(Exception, match=re.escape(repr(text))):
        parse_since(text)


def test_until_must_be_iso() -> None:
    assert parse_time("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.raises(Exception, match="'1h'"):
        parse_time("1h")


def test_prometheus_buckets_are_cumulative_within_the_bounds() -> None:
    h = Histogram.of([0.0, 0.0005, 0.003, 0.2, 0.2, 5000.0])
    got = dict(_buckets(h, (0.001, 0.005, 0.25, 3600.0)))
    assert got == {"0.001": 2, "0.005": 3, "0.25": 5, "3600.0": 5, "+Inf": 6}


@pytest.mark.asyncio
async def test_export_rejects_unknown_formats_and_naive_times(
    make_app: type[taskflow.TaskFlow],
) -> None:
    app = make_app()
    with pytest.raises(ConfigurationError, match="'xml'"):
        await export(app, "xml")
    async with app:
        with pytest.raises(ConfigurationError, match="timezone-aware"):
            await export(app, "json", since=datetime(2024, 1, 1))


# -- export -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_json_export_validates_and_matches_the_query_api(queue_name: str) -> None:
    app = metrics_app.make_app(queue_name)
    async with app:
        worker_id = await run_jobs(app)
        text = await export(app, "json", since=timedelta(minutes=5), queue=queue_name)
        validate(json.loads(text))
        document = MetricsExport.model_validate_json(text)
        assert document.until - document.since == timedelta(minutes=5)
        assert document.relative_error == 0.02
        assert document.resolution_seconds == 60
        assert [(r.task, r.queue) for r in document.jobs] == [
            ("boom", queue_name),
            ("work", queue_name),
        ]
        for row in document.jobs:
            summary = await app.metrics.summary(
                task=row.task, queue=queue_name, since=document.since, until=document.until
            )
            assert row == JobRow.of(summary)
        total = await app.metrics.summary(
            queue=queue_name, since=document.since, until=document.until
        )
        assert document.total == JobRow.of(total)
    work, boom = document.jobs[1], document.jobs[0]
    assert (work.count, work.succeeded, work.failures) == (OK, OK, 0)
    assert (boom.count, boom.failures, boom.failure_rate) == (FAILING, FAILING, 1.0)
    assert work.run_seconds.count == OK
    assert work.run_seconds.p50 is not None and work.run_seconds.p50 >= 0.01 * 0.98
    assert document.total.count == OK + FAILING
    assert document.system[worker_id], "the worker's system samples are exported"
    assert all(s.worker == worker_id for s in document.system[worker_id])


@pytest.mark.asyncio
async def test_csv_export_has_a_header_row_and_one_row_per_task(queue_name: str) -> None:
    app = metrics_app.make_app(queue_name)
    async with app:
        await run_jobs(app)
        text = await export(app, "csv", since=timedelta(minutes=5), queue=queue_name)
        document = MetricsExport.model_validate_json(
            await export(app, "json", since=timedelta(minutes=5), queue=queue_name)
        )
    assert text.startswith(",".join(CSV_COLUMNS) + "\r\n")
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    rows = list(reader)
    assert len(rows) == len(document.jobs) == 2
    by_task = {row["task"]: row for row in rows}
    assert int(by_task["work"]["count"]) == OK
    assert int(by_task["boom"]["failures"]) == FAILING
    work = next(r for r in document.jobs if r.task == "work")
    assert float(by_task["work"]["run_p95_seconds"]) == work.run_seconds.p95
    assert float(by_task["work"]["memory_max_bytes"]) == work.memory_bytes.max
    for row in rows:
        for column in CSV_COLUMNS[2:]:
            float(row[column])  # every figure parses as a number


# -- Prometheus ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_render_parses_with_the_official_parser(queue_name: str) -> None:
    app = metrics_app.make_app(queue_name)
    async with app:
        await run_jobs(app)
        text = (await render(app)).decode()
    check_exposition(text)
    ours = {"queue": queue_name}
    assert value(text, "taskflow_jobs_total", task="work", status="succeeded", **ours) == OK
    assert value(text, "taskflow_jobs_total", task="boom", status="failed", **ours) == FAILING
    assert value(text, "taskflow_job_reruns_total", task="work", **ours) == 0
    types = {family: kind for family, kind, _ in samples(text)}
    for name in ("run_seconds", "wait_seconds", "cpu_seconds", "memory_bytes"):
        family = f"taskflow_job_{name}"
        assert types[family] == "histogram"
        labels = {"task": "work", "status": "succeeded", **ours}
        assert value(text, f"{family}_count", **labels) == OK
        buckets = [
            s
            for _, _, s in samples(text)
            if s.name == f"{family}_bucket" and labels.items() <= s.labels.items()
        ]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf"
        assert counts[-1] == OK
    # each 10 ms job body lands between 5 ms and 25 ms
    run = {"task": "work", "status": "succeeded", **ours}
    assert value(text, "taskflow_job_run_seconds_bucket", le="0.005", **run) == 0
    assert value(text, "taskflow_job_run_seconds_bucket", le="0.025", **run) == OK
    assert value(text, "taskflow_queue_jobs", **ours) == 0
    assert types["taskflow_workers"] == types["taskflow_jobs_running"] == "gauge"


@pytest.mark.asyncio
async def test_counters_never_go_down_as_buckets_are_folded(make_app: Any, queue_name: str) -> None:
    """With 1-second buckets, buckets are folded into the exporter's totals within
    seconds: the counts stay put, then grow, and a newer exporter starts from zero."""
    metrics = MetricsSettings(
        flush_interval=timedelta(milliseconds=100),
        system_interval=timedelta(milliseconds=200),
        resolutions=(Resolution(bucket=timedelta(seconds=1), retention=timedelta(hours=1)),),
    )
    app: taskflow.TaskFlow = make_app(metrics=metrics)

    @app.task
    async def tick() -> None:
        pass

    labels = {"task": "tick", "queue": queue_name, "status": "succeeded"}
    async with app:
        exporter = MetricsExporter(app, settle=timedelta(milliseconds=300))
        counts: list[float | None] = []

        async def scrape() -> float:
            counts.append(
                value((await exporter.render()).decode(), "taskflow_jobs_total", **labels)
            )
            return counts[-1] or 0

        async with app.worker():
            for job in [await tick.enqueue() for _ in range(3)]:
                await job.result(timeout=10)
            await until(lambda: _equals(scrape, 3))
            for _ in range(5):  # well past the end of the jobs' bucket and the settle time
                await anyio.sleep(0.4)
                assert await scrape() == 3
            for job in [await tick.enqueue() for _ in range(2)]:
                await job.result(timeout=10)
            await until(lambda: _equals(scrape, 5))
        await anyio.sleep(1.1)
        later = MetricsExporter(app, settle=timedelta(milliseconds=300))
        text = (await later.render()).decode()
        assert value(text, "taskflow_jobs_total", **labels) is None
    assert [c for c in counts if c is not None] == sorted(c for c in counts if c is not None)


async def _equals(scrape: Any, expected: float) -> bool:
    return bool(await scrape() == expected)


@asynccontextmanager
async def serve(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(api)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


@pytest.mark.asyncio
async def test_fastapi_metrics_route(queue_name: str) -> None:
    app = metrics_app.make_app(queue_name)
    api = FastAPI(lifespan=lifespan(app, worker=True))
    api.include_router(router(app), prefix="/taskflow")
    async with serve(api) as client:
        jobs = [await app.enqueue("work", 0.0) for _ in range(OK)]
        for job in jobs:
            await job.result(timeout=10)

        async def counted() -> bool:
            response = await client.get("/taskflow/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"] == CONTENT_TYPE
            check_exposition(response.text)
            labels = {"task": "work", "queue": queue_name, "status": "succeeded"}
            return value(response.text, "taskflow_jobs_total", **labels) == OK

        await until(counted, timeout=10, interval=0.1)


@pytest.mark.asyncio
async def test_fastapi_metrics_route_is_503_when_redis_is_unreachable() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        app = taskflow.TaskFlow(redis=dead)
        api = FastAPI(lifespan=lifespan(app))
        api.include_router(router(app))
        async with serve(api) as client:
            response = await client.get("/metrics")
    finally:
        await dead.aclose()
    assert response.status_code == 503
    assert "redis unreachable" in response.text


@pytest.mark.asyncio
async def test_metrics_server_sibling_serves_only_get_metrics(queue_name: str) -> None:
    app = metrics_app.make_app(queue_name)
    server = MetricsServer(0)
    async with app, app.worker(services=[server]):
        assert server.port != 0
        for job in [await app.enqueue("work", 0.0) for _ in range(OK)]:
            await job.result(timeout=10)
        url = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=url) as client:

            async def counted() -> bool:
                response = await client.get("/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"] == CONTENT_TYPE
                check_exposition(response.text)
                labels = {"task": "work", "queue": queue_name, "status": "succeeded"}
                return value(response.text, "taskflow_jobs_total", **labels) == OK

            await until(counted, timeout=10, interval=0.1)
            assert (await client.get("/metrics?x=1")).status_code == 200
            assert (await client.get("/")).status_code == 404
            assert (await client.get("/metricsx")).status_code == 404
            post = await client.post("/metrics")
            assert post.status_code == 405 and "GET" in post.headers["allow"]
            head = await client.head("/metrics")
            assert head.status_code == 200 and head.content == b""
        assert (await raw(server.port, b"hello\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await raw(server.port, b"GET /metrics\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
        assert (await raw(server.port, huge)).startswith(b"HTTP/1.1 431 ")
        assert await raw(server.port, b"") == b""  # connects and hangs up: no answer
        reply = await raw(server.port, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 ")  # the worker is still serving
        assert (await raw(server.port, b"GET /nope HTTP/1.0\n\n")).startswith(b"HTTP/1.1 404 ")
        port = server.port
    with pytest.raises(OSError):  # the listener closed with the worker
        await anyio.connect_tcp("127.0.0.1", port)


@pytest.mark.asyncio
async def test_metrics_server_on_a_busy_port_is_a_configuration_error(
    queue_name: str,
) -> None:
    app = metrics_app.make_app(queue_name)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with app:
            # the service's own error, not wrapped in an exception group
            with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}"):
                async with app.worker(services=[MetricsServer(port)]):
                    pass


# -- the command line ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cli_export_json_csv_and_file(queue_name: str, tmp_path: Path) -> None:
    app = metrics_app.make_app(queue_name)
    async with app:
        await run_jobs(app)
    common = ("tests.apps.metrics_app:app", "--queue", queue_name, "--since", "3m")
    done = cli("metrics", "export", *common, queue=queue_name)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    validate(document)
    assert [row["task"] for row in document["jobs"]] == ["boom", "work"]
    assert document["total"]["count"] == OK + FAILING

    done = cli("metrics", "export", *common, "--format", "csv", queue=queue_name)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["task"], r["count"]) for r in rows] == [("boom", str(FAILING)), ("work", str(OK))]

    out = tmp_path / "metrics.csv"
    done = cli("metrics", "export", *common, "-f", "csv", "-o", str(out), queue=queue_name)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert out.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)


@pytest.mark.asyncio
async def test_cli_show_prints_a_summary_table(queue_name: str) -> None:
    app = metrics_app.make_app(queue_name)
    async with app:
        await run_jobs(app)
    done = cli("metrics", "show", APP, "--queue", queue_name, "--since", "1h", queue=queue_name)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for header in ("task", "queue", "count", "failures", "rate", "run p95", "wait p95", "mem max"):
        assert header in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    assert queue_name in lines["work"] and f" {OK} " in lines["work"]
    assert "(100.0%)" in lines["boom"]
    assert f" {OK + FAILING} " in lines["all"]


def test_cli_show_with_no_data_says_so() -> None:
    done = cli("metrics", "show", APP, "--queue", "no-such-queue-ever", "--since", "1m")
    assert done.returncode == 0, done.stderr
    assert "no job attempts ended" in done.stdout


@pytest.mark.parametrize("bad", ["1x", "-5m", "soon"])
def test_cli_bad_since_exits_2_naming_the_value(bad: str) -> None:
    for command in ("export", "show"):
        done = cli("metrics", command, APP, f"--since={bad}")
        assert done.returncode == 2
        assert repr(bad) in done.stderr
        assert "--since" in done.stderr


def test_cli_bad_until_and_format_exit_2() -> None:
    done = cli("metrics", "export", APP, "--until", "tomorrow")
    assert done.returncode == 2 and "'tomorrow'" in done.stderr
    done = cli("metrics", "export", APP, "--format", "xml")
    assert done.returncode == 2 and "'xml'" in done.stderr
    done = cli("metrics", "export", APP, "--since", "2999-01-01T00:00:00Z")
    assert done.returncode == 2 and "is after until" in done.stderr


class MetricsWorkers(Workers):
    def start(self, queue: str, *extra: str) -> Any:
        return self.spawn([queue], concurrency=10, env={"TEST_QUEUE": queue}, extra=extra)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_cli_worker_serves_metrics_on_its_port(
    queue_name: str, tmp_path: Path, redis: Redis
) -> None:
    port = free_port()
    with MetricsWorkers(tmp_path, APP) as workers:
        worker = workers.start(queue_name, "--metrics-port", str(port))
        await wait_live(redis, worker)
        app = metrics_app.make_app(queue_name)
        async with app, httpx.AsyncClient() as client:
            for job in [await app.enqueue("work", 0.0) for _ in range(OK)]:
                await job.result(timeout=10)

            async def counted() -> bool:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
                check_exposition(response.text)
                labels = {"task": "work", "queue": queue_name, "status": "succeeded"}
                return value(response.text, "taskflow_jobs_total", **labels) == OK

            await until(counted, timeout=15, interval=0.1)
        worker.signal(signal.SIGTERM)
        assert await worker.wait(20) == 0
        assert f"serving Prometheus metrics at http://127.0.0.1:{port}/metrics" in worker.log()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_cli_worker_on_a_busy_metrics_port_exits_2(queue_name: str, tmp_path: Path) -> None:
    with socket.socket() as busy, MetricsWorkers(tmp_path, APP) as workers:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        worker = workers.start(queue_name, "--metrics-port", str(port))
        assert await worker.wait(20) == 2
        assert f"Error: cannot serve metrics on 127.0.0.1:{port}" in worker.log()
        assert "Traceback" not in worker.log()


# -- docs ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_docs_and_dashboard_name_only_real_metrics(queue_name: str) -> None:
    app = metrics_app.make_app(queue_name)
    async with app:
        await run_jobs(app, ok=1, failing=0)
        text = (await render(app)).decode()
    families = {family for family, _, _ in samples(text)}
    names = {s.name for _, _, s in samples(text)}
    page = (DOCS / "metrics.md").read_text()
    for family in families:
        assert family in page, f"docs/metrics.md does not describe {family}"
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(titles) == len(set(titles)) >= 5
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            used = set(re.findall(r"\btaskflow_\w+", target["expr"]))
            assert used and used <= names, (panel["title"], used - names)
    index = (DOCS / "index.md").read_text()
    assert "(metrics.md)" in index
