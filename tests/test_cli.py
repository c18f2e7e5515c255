"""The taskflow command line (taskflow.cli) short of running a worker: help texts, --version,
validated options, app targets, shell completion, and alert tables that keep ids whole when
piped (the one test here that needs Redis).

The commands against real workers are tested in test_worker_process.py,
test_metrics_export.py and test_alerting_example.py.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from redis import Redis

import taskflow
from taskflow._clock import now_ms
from taskflow._protocol import keys
from taskflow._protocol.keys import AppKeys
from taskflow.cli import cli, main
from taskflow.cli._params import Duration
from tests.apps.shared import REDIS_URL


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="taskflow", input=input)


def command_paths(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from command_paths(command, (*path, name))
        else:
            yield (*path, name)


COMMANDS = list(command_paths(cli))


@pytest.fixture(autouse=True)
def log_config(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The commands' logging.basicConfig calls, recorded instead of configuring this process."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: calls.append(kwargs))
    return calls


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Write importable modules into tmp_path (the current directory); returns a writer
    that gives each module a unique name and returns it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [os.getcwd(), *sys.path])
    written: list[str] = []

    def write(source: str, stem: str = "cli_target") -> str:
        name = f"{stem}_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


APP_MODULE = """
    import taskflow

    app = taskflow.TaskFlow(settings=taskflow.Settings(embedded="never"))
    other = taskflow.TaskFlow(settings=taskflow.Settings(embedded="never"))


    def helper():
        return 1
"""


# -- help and version -----------------------------------------------------------------------


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "taskflow")
def test_help_is_plain_words_with_a_summary_and_an_example(path: tuple[str, ...]) -> None:
    done = invoke(*path, "--help")
    assert done.exit_code == 0, done.output
    text = done.stdout
    for markup in ("``", ":class:", ":func:", ":mod:", ":meth:"):
        assert markup not in text, text
    assert f"Usage: taskflow {' '.join(path)}".rstrip() in text
    assert "Example" in text, text
    lines = text.splitlines()
    summary = lines[lines.index("") + 1].strip()  # the first line after the usage
    assert summary.endswith("."), text
    if path:
        *parent, name = path
        listing = invoke(*parent, "--help").stdout
        assert f"{name} " in listing and summary[:40] in listing, listing


def test_short_help_flag_and_worker_example() -> None:
    done = invoke("worker", "-h")
    assert done.exit_code == 0
    assert "taskflow worker myapp.tasks:app -q emails -c 50" in done.stdout
    for option in ("--queue", "-q", "--concurrency", "-c", "--grace", "--lease"):
        assert option in done.stdout
    for option in ("--metrics-port", "--metrics-host", "--alert-interval", "--log-level"):
        assert option in done.stdout


def test_version_names_the_distribution() -> None:
    done = invoke("--version")
    assert done.exit_code == 0
    assert done.stdout == f"taskflow-redis {importlib.metadata.version('taskflow-redis')}\n"
    assert importlib.metadata.version("taskflow-redis") == taskflow.__version__


def test_main_returns_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("taskflow-redis ")
    assert main(["worker", "no-colon"]) == 2
    assert "Error: Invalid value for 'APP'" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2
    assert "No such command 'no-such-command'" in capsys.readouterr().err


# -- validated options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("worker", "m:app", "--log-level", "LOUD"),
        ("--log-level", "LOUD", "worker", "m:app"),
        ("metrics", "--log-level", "LOUD", "show", "m:app"),
    ],
)
def test_bad_log_level_is_a_usage_error(args: tuple[str, ...]) -> None:
    done = invoke(*args)
    assert done.exit_code == 2
    assert "Invalid value for '--log-level': 'LOUD' is not one of" in done.stderr
    assert "'debug'" in done.stderr.lower() and "'critical'" in done.stderr.lower()
    assert "Traceback" not in done.output


def test_log_level_is_case_insensitive_and_the_last_one_wins(
    modules: Any, log_config: list[dict[str, Any]]
) -> None:
    name = modules(APP_MODULE)
    assert invoke("--log-level", "warning", "worker", f"{name}:missing").exit_code == 2
    assert invoke("worker", f"{name}:missing").exit_code == 2
    assert invoke("--log-level", "ERROR", "check", f"{name}:x", "--log-level", "debug").exit_code
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    assert log_config == [
        {"level": "WARNING", "format": fmt},
        {"level": "INFO", "format": fmt},
        {"level": "DEBUG", "format": fmt},
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--grace", "soon"),
            "Invalid value for '--grace': invalid duration 'soon': use 30 (seconds), 500ms",
        ),
        (("--grace", "-5"), "Invalid value for '--grace': '-5' is not a duration of 0 or more"),
        (("--lease", "0"), "Invalid value for '--lease': '0' is not a duration of more than 0"),
        (("--alert-interval", "1x"), "Invalid value for '--alert-interval': invalid duration '1x'"),
        (("--concurrency", "0"), "Invalid value for '--concurrency' / '-c': 0 is not in the range"),
        (("-c", "many"), "Invalid value for '--concurrency' / '-c': 'many' is not a valid integer"),
        (("--metrics-port", "70000"), "Invalid value for '--metrics-port': 70000 is not in the"),
        (("--unknown",), "No such option"),
    ],
)
def test_bad_worker_options_name_the_option_and_value(args: tuple[str, ...], message: str) -> None:
    done = invoke("worker", "m:app", *args)
    assert done.exit_code == 2, done.output
    assert message in done.stderr
    assert "Traceback" not in done.output


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("30s", 30), ("0.5", 0.5), ("500ms", 0.5), ("1m", 60), ("1h30m", 5400)],
)
def test_durations_take_units_or_seconds(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == timedelta(seconds=seconds)
    assert Duration().convert("PT30S", None, None) == timedelta(seconds=30)
    assert Duration(allow_zero=True).convert("0", None, None) == timedelta(0)


def test_worker_options_reach_the_worker_settings(
    modules: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    async def run_worker(app: taskflow.TaskFlow, settings: Any, services: list[Any]) -> None:
        seen.append((app, settings, services))

    # the module, not the command of the same name that taskflow.cli exports
    worker_module = importlib.import_module("taskflow.cli.worker")
    monkeypatch.setattr(worker_module, "_run_worker", run_worker)
    name = modules(APP_MODULE)
    argv = ["worker", f"{name}:app", "-q", "emails", "--queue", "default", "-c", "50"]
    options = ("--grace", "30", "--lease", "1m", "--alert-interval", "5s", "--no-supervise")
    done = invoke(*argv, *options)
    assert done.exit_code == 0, done.output
    [(app, settings, services)] = seen
    assert app is sys.modules[name].app
    assert settings.queues == ("emails", "default")
    assert settings.concurrency == 50
    assert settings.grace_period == timedelta(seconds=30)
    assert settings.lease == timedelta(minutes=1)
    assert settings.alert_interval == timedelta(seconds=5)
    assert services == []


def test_a_supervised_worker_runs_the_same_command_as_its_child(
    modules: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    class Recorder:
        def __init__(self, argv: list[str]) -> None:
            seen.append(argv)

        def run(self) -> int:
            return 3

    worker_module = importlib.import_module("taskflow.cli.worker")
    monkeypatch.setattr(worker_module, "Supervisor", Recorder)
    name = modules(APP_MODULE)
    done = invoke(
        "--log-level", "debug", "worker", f"{name}:app", "-q", "a", "-q", "b", "--lease", "1m",
        "--no-schedules",
    )  # fmt: skip
    assert done.exit_code == 3, done.output
    [argv] = seen
    assert argv[:3] == [sys.executable, "-m", "taskflow"]
    assert argv[3:] == [
        "--log-level", "DEBUG", "worker", f"{name}:app", "--queue", "a", "--queue", "b",
        "--lease", "60.0s", "--metrics-host", "127.0.0.1", "--no-schedules",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "soon"), "Invalid value for '--since': invalid duration or time 'soon'"),
        (("--since", "0s"), "Invalid value for '--since': invalid duration '0s'"),
        (("--until", "1h"), "Invalid value for '--until': invalid time '1h'; use ISO 8601"),
        (("--format", "xml"), "Invalid value for '--format' / '-f': 'xml' is not one of"),
    ],
)
def test_bad_metrics_options_name_the_option_and_value(args: tuple[str, ...], message: str) -> None:
    done = invoke("metrics", "export", "m:app", *args)
    assert done.exit_code == 2, done.output
    assert message in done.stderr


def test_alerts_options_are_validated() -> None:
    done = invoke("alerts", "list", "m:app", "--limit", "0")
    assert done.exit_code == 2 and "Invalid value for '--limit'" in done.stderr
    done = invoke("alerts", "ack", "m:app", "0123")
    assert done.exit_code == 2 and "Missing option '--by'" in done.stderr


# -- app targets ----------------------------------------------------------------------------


def test_target_without_a_colon() -> None:
    done = invoke("check", "myapp")
    assert done.exit_code == 2
    assert (
        "Invalid value for 'APP': app must be given as module:attribute, e.g. myapp.tasks:app, "
        "got 'myapp'" in done.stderr
    )


def test_target_module_that_does_not_exist(modules: Any) -> None:
    done = invoke("worker", "no_such_module_anywhere:app")
    assert done.exit_code == 2
    assert done.stderr.startswith(
        "Error: cannot import module 'no_such_module_anywhere': "
        "No module named 'no_such_module_anywhere'"
    )


def test_target_module_whose_own_import_fails(modules: Any) -> None:
    name = modules("import requests_not_installed_here\n")
    done = invoke("worker", f"{name}:app")
    assert done.exit_code == 2
    assert (
        f"Error: importing '{name}' failed: No module named 'requests_not_installed_here'"
        in done.stderr
    )
    assert "Traceback" not in done.output


def test_target_attribute_missing_lists_the_apps(modules: Any) -> None:
    name = modules(APP_MODULE)
    done = invoke("worker", f"{name}:ap")
    assert done.exit_code == 2
    assert (
        f"Error: module '{name}' has no attribute 'ap'; TaskFlow apps in it: app, other"
        in done.stderr
    )


def test_target_that_is_not_an_app(modules: Any) -> None:
    name = modules(APP_MODULE)
    done = invoke("check", f"{name}:helper")
    assert done.exit_code == 2
    assert (
        f"Error: '{name}:helper' is a function, not a taskflow.TaskFlow app; "
        f"TaskFlow apps in {name}: app, other" in done.stderr
    )
    empty = modules("value = 3\n")
    done = invoke("metrics", "show", f"{empty}:value")
    assert done.exit_code == 2
    assert (
        f"Error: '{empty}:value' is an int, not a taskflow.TaskFlow app; "
        f"{empty} defines no taskflow.TaskFlow app" in done.stderr
    )
    done = invoke("alerts", "rules", f"{empty}:app")
    assert "has no attribute 'app'; it defines no taskflow.TaskFlow app" in done.stderr


# -- shell completion -----------------------------------------------------------------------


def taskflow_script() -> str:
    script = Path(sys.executable).parent / "taskflow"
    found = str(script) if script.exists() else shutil.which("taskflow")
    if found is None:
        pytest.skip("the taskflow script is not installed (pip install -e .)")
    return found


def test_bash_completion_script_and_completions() -> None:
    script = taskflow_script()
    done = subprocess.run(
        [script],
        env={**os.environ, "_TASKFLOW_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "_taskflow_completion" in done.stdout and "complete " in done.stdout
    env = {"_TASKFLOW_COMPLETE": "bash_complete", "COMP_WORDS": "taskflow al", "COMP_CWORD": "1"}
    done = subprocess.run(
        [script], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )
    assert done.stdout.split() == ["plain,alerts"], done.stdout + done.stderr


# -- tables in a pipe -----------------------------------------------------------------------


def test_alert_tables_keep_long_names_and_ids_whole_when_piped(tmp_path: Path) -> None:
    app_name = f"cli-test-{uuid.uuid4().hex[:8]}"
    rule = f"cli-test-{'a-rather-long-rule-name-' * 5}{uuid.uuid4().hex}"
    queue = f"cli-test-{'queue-' * 10}end"
    (tmp_path / "long_alerts.py").write_text(
        textwrap.dedent(f"""
        import taskflow
        from taskflow.alerts import AlertRule, Condition

        app = taskflow.TaskFlow(
            name={app_name!r},
            settings=taskflow.Settings(redis_url={REDIS_URL!r}, embedded="never"),
        )
        app.alerts.add_rule(
            AlertRule(
                name={rule!r},
                conditions=[Condition(metric="queue_depth", queue={queue!r}, op=">", threshold=1)],
            )
        )
        """)
    )
    keys = AppKeys(app_name)
    alert_id = uuid.uuid4().hex
    at = str(now_ms())
    redis = Redis.from_url(REDIS_URL)
    try:
        state = {"state": "firing", "alert_id": alert_id, "started_at": at, "last_value": "7"}
        redis.hset(keys.alert_state(rule), mapping=state)
        message = "depth is 7 " * 30  # a long message must not squeeze the id column
        redis.xadd(
            keys.alert_history,
            {"alert_id": alert_id, "rule": rule, "event": "firing", "at": at, "message": message},
        )
        for command in ("rules", "list"):
            done = subprocess.run(
                [sys.executable, "-m", "taskflow", "alerts", command, "long_alerts:app"],
                cwd=tmp_path,
                env={**os.environ, "COLUMNS": "80"},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            rows = [line for line in done.stdout.splitlines() if alert_id in line]
            assert len(rows) == 1 and rule in rows[0], done.stdout
    finally:
        redis.delete(keys.alert_state(rule), keys.alert_history)
        redis.close()


# -- schedules ------------------------------------------------------------------------------

SCHEDULE_MODULE = """
    from datetime import timedelta

    import taskflow

    app = taskflow.TaskFlow(
        settings=taskflow.Settings(redis_url={url!r}, embedded="never", default_queue={name!r}),
        name={name!r},
    )


    @app.periodic(every=timedelta(hours=1))
    async def hourly() -> str:
        return "done"
"""


def test_schedules_list_run_pause_resume(modules: Any) -> None:
    name = f"cli-sched-{uuid.uuid4().hex[:8]}"
    module = modules(SCHEDULE_MODULE.format(url=REDIS_URL, name=name))
    target = f"{module}:app"
    app = importlib.import_module(module).app

    async def register() -> None:  # what a worker does when it starts
        async with app:
            await app.schedules.register_declared(now_ms())

    async def clean() -> None:
        async with app:
            await app.redis.delete(app.keys.schedules, app.keys.schedule_state("hourly"))
            await app.redis.delete(f"arq:queue:{name}")

    empty = invoke("schedules", "list", target)
    assert empty.exit_code == 0 and "no schedules stored" in empty.stdout, empty.output
    asyncio.run(register())
    try:
        listed = invoke("schedules", "list", target)
        assert listed.exit_code == 0, listed.output
        assert (
            "hourly" in listed.stdout and "every 1h" in listed.stdout and "active" in listed.stdout
        )
        ran = invoke("schedules", "run", target, "hourly")
        assert ran.exit_code == 0 and "schedule hourly: job schedule:hourly:now:" in ran.stdout
        paused = invoke("schedules", "pause", target, "hourly")
        assert paused.exit_code == 0 and paused.stdout.strip() == "schedule hourly: paused"
        assert "paused" in invoke("schedules", "list", target).stdout
        resumed = invoke("schedules", "resume", target, "hourly")
        assert resumed.exit_code == 0 and resumed.stdout.strip() == "schedule hourly: resumed"
        missing = invoke("schedules", "pause", target, "nightly")
        assert missing.exit_code == 1
        assert "no schedule named 'nightly'; stored: hourly" in missing.output
    finally:
        asyncio.run(clean())


def test_worker_no_schedules_turns_the_ticker_off(
    modules: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[taskflow.WorkerSettings] = []

    async def fake_run(app: Any, settings: taskflow.WorkerSettings, services: Any) -> None:
        seen.append(settings)

    worker_module = importlib.import_module("taskflow.cli.worker")
    monkeypatch.setattr(worker_module, "_run_worker", fake_run)
    module = modules(APP_MODULE)
    assert invoke("worker", f"{module}:app", "--no-schedules", "--no-supervise").exit_code == 0
    assert invoke("worker", f"{module}:app", "--no-supervise").exit_code == 0
    assert [s.schedules for s in seen] == [False, True]


# -- queues and dead letters ------------------------------------------------------------------

OPS_MODULE = """
    import taskflow

    app = taskflow.TaskFlow(
        settings=taskflow.Settings(redis_url={url!r}, embedded="never", default_queue={name!r}),
        name={name!r},
    )
    broken = {{"yes": True}}


    @app.task
    async def flaky(order: str) -> str:
        if broken["yes"]:
            raise ValueError("gateway refused " + order)
        return order + " done"
"""


def test_dlq_list_show_retry_purge_and_queue_commands_end_to_end(modules: Any) -> None:
    name = f"cli-ops-{uuid.uuid4().hex[:8]}"
    module = importlib.import_module(modules(OPS_MODULE.format(url=REDIS_URL, name=name)))
    app, target = module.app, f"{module.__name__}:app"

    async def fail_two() -> list[str]:
        async with app, app.worker():
            jobs = [await app.enqueue("flaky", f"o-{i}") for i in range(2)]
            for job in jobs:
                with pytest.raises(taskflow.TaskFailed):
                    await job.result(timeout=10)
            return [j.job_id for j in jobs]

    async def run_retried(job_id: str) -> str:
        async with app, app.worker():
            return str(await app.job(job_id).result(timeout=10))

    async def clean() -> None:
        async with app:
            await app.dead_letters.purge()
            await app.redis.delete(f"arq:queue:{name}", f"arq:queue:{name}-b")

    first, second = asyncio.run(fail_two())
    try:
        listed = invoke("dlq", "list", target)
        assert listed.exit_code == 0 and first in listed.stdout and second in listed.stdout
        assert "ValueError: gateway refused" in listed.stdout
        shown = invoke("dlq", "show", target, first)
        assert shown.exit_code == 0 and "task flaky" in shown.stdout
        assert "Traceback" in shown.stdout and "gateway refused o-0" in shown.stdout
        assert invoke("dlq", "show", target, "nope").exit_code == 1
        module.broken["yes"] = False  # fixed: replay the first
        retried = invoke("dlq", "retry", target, first)
        assert retried.exit_code == 0 and f"job {first}: back on queue {name}" in retried.stdout
        assert asyncio.run(run_retried(first)) == "o-0 done"
        refused = invoke("dlq", "purge", target, input="n\n")
        assert refused.exit_code == 1 and "nothing done" in refused.output
        purged = invoke("dlq", "purge", target, "--yes")
        assert purged.exit_code == 0 and "1 dead letters deleted" in purged.stdout
        assert "no dead letters" in invoke("dlq", "list", target).stdout
        grouped = invoke("dlq", "errors", target)
        assert grouped.exit_code == 0 and "ValueError" in grouped.stdout
        assert "gateway refused" in grouped.stdout
        # queues: pause, resume, move and purge with confirmation
        assert invoke("queues", "pause", target, name).stdout.strip() == f"queue {name}: paused"
        assert invoke("queues", "resume", target, name).stdout.strip() == f"queue {name}: resumed"

        async def enqueue_three() -> None:
            async with app:
                for i in range(3):
                    await app.enqueue("flaky", f"w-{i}")

        asyncio.run(enqueue_three())
        moved = invoke("queues", "move", target, name, f"{name}-b", "--limit", "2", input="y\n")
        assert "move up to 2 waiting jobs" in moved.stdout and "2 jobs moved" in moved.stdout
        purged_q = invoke("queues", "purge", target, f"{name}-b", "--yes")
        assert purged_q.exit_code == 0 and "2 jobs deleted" in purged_q.stdout
    finally:
        asyncio.run(clean())


def test_dlq_shows_and_retries_a_dead_graph_node_and_the_run_finishes(modules: Any) -> None:
    name = f"cli-graph-{uuid.uuid4().hex[:8]}"
    module = importlib.import_module(modules(OPS_MODULE.format(url=REDIS_URL, name=name)))
    app: taskflow.TaskFlow = module.app
    target = f"{module.__name__}:app"
    broken_run: list[taskflow.RunHandle] = []

    async def fail_a_node() -> None:
        async with app, app.worker():
            graph = app.graph("orders")
            first = graph.add(module.flaky, "o-1", name="first")
            graph.add(module.flaky, first, name="second")
            run = await graph.submit()
            broken_run.append(run)
            with pytest.raises(taskflow.GraphFailed):
                await run.wait(timeout=10)

    async def finish(run: taskflow.RunHandle) -> dict[str, Any]:
        async with app, app.worker():
            return await app.run_handle(run.run_id).wait(timeout=10)

    async def clean(run: taskflow.RunHandle) -> None:
        async with app:
            await app.dead_letters.purge()
            await app.redis.delete(f"arq:queue:{name}", *keys.run_keys(run.run_id))

    asyncio.run(fail_a_node())
    [run] = broken_run
    job_id = keys.node_job_id(run.run_id, 0)
    try:
        listed = invoke("dlq", "list", target, "--run", run.run_id)
        assert listed.exit_code == 0 and job_id in listed.stdout and "first" in listed.stdout
        assert "no dead letters" in invoke("dlq", "list", target, "--run", "0" * 32).stdout
        shown = invoke("dlq", "show", target, job_id)
        assert shown.exit_code == 0
        assert f"node first (index 0) of run {run.run_id}" in shown.stdout
        module.broken["yes"] = False
        retried = invoke("dlq", "retry", target, job_id)
        assert retried.exit_code == 0 and f"job {job_id}: back on queue {name}" in retried.stdout
        assert asyncio.run(finish(run)) == {"first": "o-1 done", "second": "o-1 done done"}
        assert invoke("dlq", "retry", target, job_id).exit_code == 1  # gone once retried
    finally:
        asyncio.run(clean(run))


SLA_MODULE = """
    from datetime import timedelta

    import taskflow

    app = taskflow.TaskFlow(
        settings=taskflow.Settings(redis_url={url!r}, embedded="never"), name={name!r}
    )


    @app.task
    async def report() -> None: ...


    app.sla(task=report, min_throughput_per_min=100, run_time_p95=timedelta(seconds=1))
"""


def test_sla_check_prints_the_targets_and_exits_1_on_a_miss(modules: Any) -> None:
    name = f"cli-sla-{uuid.uuid4().hex[:8]}"
    module = modules(SLA_MODULE.format(url=REDIS_URL, name=name))
    done = invoke("sla", "check", f"{module}:app", "--since", "1h")
    assert done.exit_code == 1, done.output
    assert "throughput_per_min" in done.stdout and "MISSED" in done.stdout
    assert "no data" in done.stdout  # the run time of a task that never ran
    as_json = invoke("sla", "check", f"{module}:app", "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["met"] is False and len(report["results"]) == 2
    bare = modules(APP_MODULE)
    refused = invoke("sla", "check", f"{bare}:app")
    assert refused.exit_code == 1 and "declares no SLA targets" in refused.output


RUNS_MODULE = """
    import asyncio

    import taskflow

    app = taskflow.TaskFlow(
        settings=taskflow.Settings(redis_url={url!r}, embedded="never", default_queue={name!r}),
        name={name!r},
    )


    @app.task
    async def nap(seconds: float, *after: object) -> float:
        await asyncio.sleep(seconds)
        return seconds


    @app.task
    async def boom(*after: object) -> None:
        raise ValueError("no ledger")
"""


def test_runs_show_and_critical_path(modules: Any) -> None:
    name = f"cli-runs-{uuid.uuid4().hex[:8]}"
    module = importlib.import_module(modules(RUNS_MODULE.format(url=REDIS_URL, name=name)))
    app: taskflow.TaskFlow = module.app
    target = f"{module.__name__}:app"

    async def run_one() -> str:
        async with app, app.worker():
            g = app.graph("ledger")
            first = g.add(module.nap, 0.05, name="first")
            slow = g.add(module.nap, 0.4, first, name="slow")
            g.add(module.nap, 0.05, first, name="quick")
            g.add(module.boom, slow, name="close")
            run = await g.submit()
            with pytest.raises(taskflow.GraphFailed):
                await run.wait(timeout=30)
            return run.run_id

    async def clean(run_id: str) -> None:
        async with app:
            await app.dead_letters.purge()
            await app.redis.delete(f"arq:queue:{name}", *keys.run_keys(run_id))

    run_id = asyncio.run(run_one())
    try:
        shown = invoke("runs", "show", target, run_id)
        assert shown.exit_code == 0, shown.output
        assert f"run {run_id}: graph ledger, failed" in shown.stdout
        assert "4/4 ended (1 failed, 3 succeeded)" in shown.stdout
        for node in ("first", "slow", "quick", "close"):
            assert node in shown.stdout
        assert "ValueError: no ledger" in shown.stdout
        limited = invoke("runs", "show", target, run_id, "--limit", "1")
        assert "... and 3 more nodes (--limit)" in limited.stdout
        assert "quick" not in limited.stdout
        path = invoke("runs", "critical-path", target, run_id)
        assert path.exit_code == 0, path.output
        out = path.stdout
        assert f"run {run_id}: critical path of 3 node(s)\n" in out
        assert "bottleneck: slow (task nap)" in out
        assert "queue wait:" in out and "wall time:" in out
        rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines()]
        steps = [row[:4] for row in rows if row and row[0].isdigit()]
        assert steps == [
            ["1", "first", "nap", "succeeded"],
            ["2", "slow", "nap", "succeeded"],
            ["3", "close", "boom", "failed"],
        ], out
        assert "least slack off the path" in out and "quick" in out
        for args in (("show",), ("critical-path",)):
            missing = invoke("runs", *args, target, "0" * 32)
            assert missing.exit_code == 1
            assert f"Error: run '{'0' * 32}' is unknown or expired" in missing.output
    finally:
        asyncio.run(clean(run_id))
