"""Apps scoped by name: two apps on one Redis keep their own workers, metrics and alerts."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

import taskflow
from taskflow._protocol import keys
from taskflow.alerts import AlertNotFound, AlertRule, Condition
from taskflow.config import MetricsSettings
from tests.apps.shared import REDIS_URL
from tests.conftest import FAST_WORKER
from tests.helpers import until

FAST = MetricsSettings(flush_interval=timedelta(milliseconds=100))
WINDOW = timedelta(minutes=10)


def build(name: str, queue: str) -> taskflow.TaskFlow:
    settings = taskflow.Settings(
        redis_url=REDIS_URL,
        embedded="never",
        default_queue=queue,
        worker=FAST_WORKER,
        metrics=FAST,
    )
    return taskflow.TaskFlow(settings=settings, name=name)


def test_the_name_defaults_to_the_module_that_builds_the_app() -> None:
    assert taskflow.TaskFlow().name == __name__ == "tests.test_app_scope"
    assert taskflow.TaskFlow(name="billing").name == "billing"
    assert taskflow.TaskFlow(name="billing").keys.workers == "taskflow:app:billing:workers"


@pytest.mark.parametrize("bad", ["", "two words", "a/b", "x" * 101, "é"])
def test_a_bad_name_is_refused_naming_it_and_the_valid_forms(bad: str) -> None:
    with pytest.raises(taskflow.ConfigurationError) as caught:
        taskflow.TaskFlow(name=bad)
    assert repr(bad) in str(caught.value)
    assert "letters, digits, '_', '.' or '-'" in str(caught.value)


def test_a_script_and_the_command_line_see_one_app_name(tmp_path: Path) -> None:
    """``python shop/jobs.py``, ``python -m shop.jobs`` and ``taskflow worker shop.jobs:app``
    run from one directory name the app alike; a script outside it goes by its file name."""
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(
        "import taskflow\napp = taskflow.TaskFlow()\nif __name__ == '__main__':\n"
        "    print(app.name)\n"
    )

    def name_of(*argv: str, cwd: Path = tmp_path) -> str:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    imported = "import sys; sys.path.insert(0, ''); import shop.jobs; print(shop.jobs.app.name)"
    assert name_of(sys.executable, "shop/jobs.py") == "shop.jobs"
    assert name_of(sys.executable, "-m", "shop.jobs") == "shop.jobs"
    assert name_of(sys.executable, "-c", imported) == "shop.jobs"
    assert name_of(sys.executable, str(package / "jobs.py"), cwd=package) == "jobs"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert name_of(sys.executable, str(package / "jobs.py"), cwd=elsewhere) == "jobs"


async def run_jobs(app: taskflow.TaskFlow, task: taskflow.Task[[], None]) -> None:
    """Three jobs on a worker of ``app``, which lists itself among the app's live workers."""
    jobs = [await task.enqueue() for _ in range(3)]
    async with app.worker() as worker:
        [live] = await taskflow.live_workers(app.redis, app.name)
        assert live.id == worker.id
        for job in jobs:
            await job.result(timeout=10)


async def evaluated(app: taskflow.TaskFlow, rule: str, value: str) -> dict[str, str]:
    """The rule's state once the app's worker has measured ``value`` for it."""
    fast = FAST_WORKER.model_copy(update={"alert_interval": timedelta(milliseconds=20)})
    async with app.worker(settings=fast):

        async def measured() -> bool:
            return (await app.alerts.state(rule)).get("last_value") == value

        await until(measured, timeout=10)
    return await app.alerts.state(rule)


@pytest.mark.asyncio
async def test_two_apps_on_one_redis_keep_their_workers_metrics_and_alerts_apart(
    redis: Redis,
) -> None:
    tag = uuid.uuid4().hex[:8]
    billing = build(f"billing-{tag}", f"q-billing-{tag}")
    search = build(f"search-{tag}", f"q-search-{tag}")
    tasks: dict[str, taskflow.Task[[], None]] = {}
    for app, task_name in ((billing, f"charge_{tag}"), (search, f"index_{tag}")):

        async def work() -> None:
            return None

        tasks[app.name] = app.task(name=task_name)(work)
    backlog = f"q-backlog-{tag}"  # one job waits there; no worker serves it
    try:
        async with billing, search:
            for app in (billing, search):
                await run_jobs(app, tasks[app.name])
            for app in (billing, search):

                async def flushed(app: taskflow.TaskFlow = app) -> bool:
                    summaries = await app.metrics.summaries(since=WINDOW)
                    return sum(s.count for s in summaries) == 3

                await until(flushed, timeout=10)
                listed = {s.task for s in await app.metrics.summaries(since=WINDOW)}
                assert listed == {tasks[app.name].name}  # not the other app's task

            # one rule name in both apps: over the backlog in billing, over nothing in search
            await redis.zadd(keys.queue(backlog), {"waiting": 1})
            for app, queue in ((billing, backlog), (search, f"q-empty-{tag}")):
                condition = Condition(metric="queue_depth", queue=queue, op=">=", threshold=1)
                app.alerts.add_rule(AlertRule(name="backlog", conditions=[condition]))
            assert (await evaluated(billing, "backlog", "1.0"))["state"] == "firing"
            assert (await evaluated(search, "backlog", "0.0")).get("state", "ok") == "ok"
            [fired] = await billing.alerts.history(since=WINDOW)
            assert fired.rule == "backlog" and fired.event == "firing"
            assert await search.alerts.history(since=WINDOW) == []
            with pytest.raises(AlertNotFound):  # one app's alert id is unknown to the other
                await search.alerts.ack(fired.alert_id, by="ada")
            assert await billing.alerts.ack(fired.alert_id, by="ada") == "backlog"
            # reset forgets the state and the alert id (the history stays): ack is refused
            await billing.alerts.reset("backlog")
            assert await billing.alerts.state("backlog") == {}
            with pytest.raises(AlertNotFound):
                await billing.alerts.ack(fired.alert_id, by="ada")
            assert [r.event for r in await billing.alerts.history(since=WINDOW)] == [
                "firing",
                "acknowledged",
            ]
    finally:
        for app in (billing, search):
            doomed = [k async for k in redis.scan_iter(match=app.keys.prefix + "*")]
            if doomed:
                await redis.delete(*doomed)
            await redis.delete(keys.queue(app.settings.default_queue))
        await redis.delete(keys.queue(backlog))
