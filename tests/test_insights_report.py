"""app.report() and the `taskflow insights` / `taskflow report` commands, on a day of load
real in-process workers ran on a compressed metrics clock (a day in ~20 wall seconds): the
JSON validates against the committed schema and has every section; Markdown has them too;
the HTML page renders its charts in headless Chromium with the network blocked; user
strings are escaped and no traceback leaks.

The day is run once per module; every report of it is read with a fixed ``until`` (the
metrics clock keeps running at 4320x after the load)."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import re
import shutil
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev extra
import pytest
from click.testing import CliRunner, Result
from PIL import Image
from redis.asyncio import Redis

import taskflow
from taskflow.cli import cli
from taskflow.insights.report import Report, json_schema, schema_text
from taskflow.metrics.clock import metrics_now
from tests.apps.shared import REDIS_URL
from tests.helpers import delete_keys

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "docs" / "report.schema.json"
SCALE = 4320.0  # a day in 20 wall seconds
SECTIONS = ("summary", "slas", "trends", "bottlenecks", "forecasts", "advice", "alerts", "failures")
SECRET = "hunter2-in-a-traceback"
HOSTILE = '<script>alert("x")</script> & | pipe'

APP_MODULE = """
    from datetime import datetime, timedelta

    import anyio

    import taskflow
    from taskflow.alerts import AlertRule, Condition
    from taskflow.config import MetricsSettings, Resolution

    NAME = {name!r}
    app = taskflow.TaskFlow(
        settings=taskflow.Settings(
            redis_url={url!r},
            embedded="never",
            default_queue=NAME,
            dead_letter_ttl=timedelta(hours=1),
            metrics=MetricsSettings(
                flush_interval=timedelta(milliseconds=200),
                system_interval=timedelta(milliseconds=150),
                resolutions=(
                    Resolution(bucket=timedelta(minutes=15), retention=timedelta(days=3)),
                ),
                time_scale={scale!r},
                time_origin=datetime.fromisoformat({origin!r}),
            ),
            worker=taskflow.WorkerSettings(
                poll_interval=timedelta(milliseconds=10),
                lease=timedelta(seconds=2),
                heartbeat_interval=timedelta(milliseconds=500),
                monitor_interval=timedelta(milliseconds=150),
                alert_interval=timedelta(milliseconds=200),
            ),
        ),
        name=NAME,
    )


    @app.task(name={task!r})
    async def render(delay: float) -> None:
        await anyio.sleep(delay)


    @app.task
    async def flaky(n: int) -> None:
        if 20 <= n < 60 and n % 3 == 0:  # a bad spell in the middle of the day
            raise ValueError({message!r} + "\\nTraceback (most recent call last): {secret}")


    app.sla(task=render, run_time_p95=timedelta(milliseconds=5), failure_rate=0.5)
    app.alerts.add_rule(
        AlertRule(
            name="flaky-failing",
            conditions=[
                Condition(
                    metric="failure_rate",
                    task=flaky.name,
                    op=">",
                    threshold=0.05,
                    window=timedelta(hours=2),
                )
            ],
            severity="critical",
        )
    )
"""


@dataclass(frozen=True)
class Day:
    module: str  #: a fresh module defining the same app (for the CLI)
    name: str
    until: datetime  #: end of the load, on the metrics clock
    report: Report
    task: str


def _write(where: Path, source: str) -> str:
    name = f"report_app_{uuid.uuid4().hex[:8]}"
    (where / f"{name}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    return name


async def _run_day(app: taskflow.TaskFlow) -> tuple[datetime, Report]:
    """Twenty wall seconds of load: render slows from 10 to 30 ms over the day; a third
    of flaky's calls fail for good in the middle of the day, which fires an alert."""
    render, flaky = app.tasks[app.name + "-render"], app.tasks["flaky"]
    async with app:
        async with app.worker(concurrency=20):
            steps = 160
            for step in range(steps):
                delay = 0.01 * (1 + 2 * step / steps)
                await render.enqueue_many([((delay,), {})] * 3)
                if step % 2 == 0:
                    await flaky.enqueue(step // 2)
                await asyncio.sleep(0.125)
            await asyncio.sleep(1.0)  # the last flush and monitor pass
        until = metrics_now(app.settings.metrics)
        report = await app.report(since=timedelta(hours=24), until=until)
    return until, report


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day]:
    where = tmp_path_factory.mktemp("report_apps")
    sys.path.insert(0, str(where))
    name = f"report-{uuid.uuid4().hex[:8]}"
    source = APP_MODULE.format(
        name=name,
        url=REDIS_URL,
        scale=SCALE,
        origin=datetime.now(UTC).isoformat(),
        task=f"{name}-render",
        message=HOSTILE,
        secret=SECRET,
    )
    loader, module = _write(where, source), _write(where, source)
    app = importlib.import_module(loader).app
    try:
        until, report = asyncio.run(_run_day(app))
        (where / "report.md").write_text(report.to_markdown())  # to look at after a failure
        yield Day(module, name, until, report, f"{name}-render")
    finally:
        sys.path.remove(str(where))
        for m in (loader, module):
            sys.modules.pop(m, None)
        asyncio.run(_forget(name))


async def _forget(name: str) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        await delete_keys(client, f"taskflow:app:{name}:*", [f"arq:queue:{name}"])
    finally:
        await client.aclose()


def validate(document: object) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(document)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="taskflow")


# -- the schema, without Redis --------------------------------------------------------------


def test_committed_schema_is_the_models_schema() -> None:
    committed = SCHEMA.read_text()
    assert committed == schema_text(), (
        "docs/report.schema.json is stale; regenerate it with: python -c "
        "\"from taskflow.insights.report import schema_text; print(schema_text(), end='')\" "
        "> docs/report.schema.json"
    )
    jsonschema.Draft202012Validator.check_schema(json_schema())
    assert set(SECTIONS) <= set(json_schema()["required"])


# -- a day of load --------------------------------------------------------------------------


@pytest.mark.slow
def test_json_validates_and_has_every_section(day: Day) -> None:
    document = json.loads(day.report.to_json())
    validate(document)
    for section in SECTIONS:
        body = document[section]
        assert body["items"] or body["reason"], section
    summary = document["summary"]
    assert summary["jobs"] >= 400 and summary["failures"] >= 10  # most of 560 in 24 h
    [render] = [t for t in summary["items"] if t["task"] == day.task]
    assert render["run_seconds"]["p95"] >= render["run_seconds"]["p50"] > 0
    assert {r["metric"] for r in document["slas"]["items"]} == {"run_time_p95", "failure_rate"}
    rising = [
        t
        for t in document["trends"]["items"]
        if (t["series"], t["subject"]) == ("run_time_p95", f"task:{day.task}")
    ]
    assert rising and rising[0]["direction"] == "rising" and len(rising[0]["history"]["times"]) >= 8
    assert document["forecasts"]["items"], document["forecasts"]["reason"]
    for f in document["forecasts"]["items"]:
        assert {"series", "horizon", "point", "lower", "upper", "level", "method"} <= set(f)
        assert len(f["point"]) == len(f["lower"]) == len(f["upper"]) == len(f["times"]) > 0
        assert all(lo <= hi for lo, hi in zip(f["lower"], f["upper"], strict=True))
        assert f["history"]["times"]
    [alert] = [a for a in document["alerts"]["items"] if a["rule"] == "flaky-failing"][:1]
    assert alert["severity"] == "critical"
    [failure] = document["failures"]["items"]
    assert failure["task"] == "flaky" and failure["error_type"] == "ValueError"
    assert failure["message"] == HOSTILE  # the first line only
    assert SECRET not in day.report.to_json()


@pytest.mark.slow
def test_markdown_has_every_section_and_escapes(day: Day) -> None:
    text = day.report.to_markdown()
    for title in ("Summary", "SLAs", "Trends", "Bottlenecks", "Forecasts", "Advice"):
        assert f"\n## {title}\n" in text
    assert "\n## Alerts fired\n" in text and "\n## Top failures\n" in text
    assert day.task in text and "flaky-failing" in text
    assert "<script>" not in text and "&lt;script&gt;" in text and "\\| pipe" in text
    assert SECRET not in text


@pytest.mark.slow
def test_html_is_self_contained_and_escapes(day: Day) -> None:
    page = day.report.to_html()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    assert page.count("<svg") >= 3 and 'class="interval"' in page
    assert SECRET not in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(
    _chromium() is None, reason="needs Debian's chromium (apt-get install -y chromium)"
)
def test_html_renders_its_charts_offline_in_chromium(day: Day, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright")
    page_file = tmp_path / "report.html"
    page_file.write_text(day.report.to_html(), encoding="utf-8")
    attempted: list[str] = []

    def block(route: Any) -> None:
        url = route.request.url
        if url.startswith("file:"):
            route.continue_()
        else:
            attempted.append(url)
            route.abort()

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            context.route("**/*", block)
            page = context.new_page()
            page.goto(page_file.as_uri())
            boxes = page.eval_on_selector_all(
                "svg.chart",
                "els => els.map(e => { const r = e.getBoundingClientRect();"
                " return [r.width, r.height]; })",
            )
            drawn = page.eval_on_selector_all(
                "svg.chart polyline.history, svg.chart polygon.interval, svg.chart rect.bar",
                "els => els.map(e => e.getBBox().width * e.getBBox().height)",
            )
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            chart = page.locator("#forecasts svg.chart").first
            chart_shot = chart.screenshot()
        finally:
            browser.close()
    assert attempted == []
    assert len(boxes) >= 3 and all(w > 100 and h > 50 for w, h in boxes)
    assert drawn and sum(1 for area in drawn if area > 0) >= 3
    assert _colours(chart_shot) > 20, "the forecast chart looks blank"
    assert shot.stat().st_size > 10_000


def _colours(png: bytes) -> int:
    """Distinct colours in a PNG image."""
    with Image.open(io.BytesIO(png)) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    return len(colours or ())


# -- the commands ---------------------------------------------------------------------------


@pytest.mark.slow
def test_report_command_writes_each_format(day: Day, tmp_path: Path) -> None:
    target, until = f"{day.module}:app", day.until.isoformat()
    as_json = invoke("report", target, "--since", "24h", "--until", until, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    validate(json.loads(as_json.stdout))
    md = invoke("report", target, "--since", "24h", "--until", until, "--format", "md")
    assert md.exit_code == 0 and "## Forecasts" in md.stdout and day.task in md.stdout
    out = tmp_path / "report.html"
    html = invoke("report", target, "--since", "24h", "--until", until, "--output", str(out))
    assert html.exit_code == 0, html.output
    assert html.stdout == "" and "<svg" in out.read_text() and day.task in out.read_text()


@pytest.mark.slow
def test_insights_command_prints_tables_and_json(day: Day) -> None:
    target, until = f"{day.module}:app", day.until.isoformat()
    shown = invoke("insights", target, "--since", "24h", "--until", until)
    assert shown.exit_code == 0, shown.output
    assert "significant trends" in shown.stdout and "run_time_p95" in shown.stdout
    assert "forecasts" in shown.stdout and "advice" in shown.stdout
    as_json = invoke("insights", target, "--since", "24h", "--until", until, "--json")
    document = json.loads(as_json.stdout)
    assert set(document) == {"since", "until", "trends", "bottlenecks", "forecasts", "advice"}
    assert document["forecasts"]["items"][0]["level"] == 0.8


def test_report_command_names_a_bad_format_or_since() -> None:
    bad_format = invoke("report", "nowhere:app", "--format", "pdf")
    assert bad_format.exit_code == 2 and "'pdf'" in bad_format.output
    bad_since = invoke("report", "nowhere:app", "--since", "yesterday")
    assert bad_since.exit_code == 2 and "'yesterday'" in bad_since.output
    bad_insights = invoke("insights", "nowhere:app", "--since", "-5m")
    assert bad_insights.exit_code == 2 and "'-5m'" in bad_insights.output


# -- nothing to report ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_idle_app_reports_a_reason_for_every_section(
    named_app: Any,
) -> None:
    app = named_app()
    async with app:
        report = await app.report(since=timedelta(hours=1))
    document = json.loads(report.to_json())
    validate(document)
    for section in SECTIONS:
        assert document[section]["items"] == [], section
        assert document[section]["reason"], section
    assert "no SLA targets" in document["slas"]["reason"]
    assert "no alert rules" in document["alerts"]["reason"]
    assert "too little history" in document["forecasts"]["reason"]
    text = report.to_markdown()
    assert "no job attempts were recorded" in text
    assert "<svg" not in report.to_html() or "<section" in report.to_html()
