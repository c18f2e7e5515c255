"""Type checkers catch a wrong call of a task: mypy run over a snippet of right and wrong calls.

Each line that must be an error ends with ``# E: <code>``; every other line must be clean.
One mypy run checks them all (the run is the slow part, a few seconds with a cold cache).
"""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import taskflow

app = taskflow.TaskFlow()


@app.task
async def send_email(to: str, subject: str = "") -> bool:
    return True


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task
async def keyword_only(*, to: str) -> None: ...


async def main() -> None:
    # enqueue: checked against the task's signature, result type carried by the handle
    job = await send_email.enqueue("a@b.c", subject="hi")
    sent: bool = await job.result()
    await send_email.enqueue(42)  # E: arg-type
    await send_email.enqueue("a@b.c", subject=1)  # E: arg-type
    await send_email.enqueue("a@b.c", cc="x")  # E: call-arg
    await add.enqueue(1)  # E: call-arg
    text: str = await job.result()  # E: assignment

    # with_options(...).enqueue: the same checks, options typed too
    later = send_email.with_options(delay=10, job_id="welcome-42", queue="bulk")
    await later.enqueue("a@b.c", subject="hi")
    await send_email.with_options(delay=timedelta(minutes=1)).enqueue("a@b.c")
    await send_email.with_options(defer_until=datetime.now(UTC)).enqueue(to="a@b.c")
    await later.enqueue(42)  # E: arg-type
    await later.enqueue("a@b.c", subject=b"hi")  # E: arg-type
    await send_email.with_options(delay=b"10").enqueue("a@b.c")  # E: arg-type
    await send_email.with_options(dealy=10).enqueue("a@b.c")  # E: call-arg
    n: int = await (await add.with_options(queue="q").enqueue(1, 2)).result()
    s: str = await (await add.with_options(queue="q").enqueue(1, 2)).result()  # E: assignment

    # enqueue_many: task.call(...) is checked; (args, kwargs) pairs are not
    await send_email.enqueue_many([send_email.call("a@b.c"), (("c@d.e",), {})])
    await send_email.enqueue_many(send_email.call(a, subject="hi") for a in ["a", "b"])
    await send_email.enqueue_many([send_email.call(42)])  # E: arg-type
    await send_email.enqueue_many([add.call(1, 2)])  # E: list-item
    await later.enqueue_many([add.call(1, 2)])  # E: list-item

    # map: values checked against a single-argument task's parameter
    mapped: list[taskflow.JobHandle[bool]] = await send_email.map(["a@b.c", "c@d.e"])
    await later.map(["a@b.c"])
    await send_email.map([1, 2])  # E: list-item
    await later.map([1])  # E: list-item
    await keyword_only.map(["a@b.c"])  # E: misc, arg-type
"""

_MARK = re.compile(r"# E: ([\w, -]+)$")
_ERROR = re.compile(r"^[^:]+:(\d+): error: .*\[([\w-]+)\]$")


def test_mypy_checks_enqueue_calls(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    expected = {
        (number, code.strip())
        for number, line in enumerate(SNIPPET.splitlines(), start=1)
        if (mark := _MARK.search(line))
        for code in mark[1].split(",")
    }
    stdout, stderr, status = api.run(
        [
            str(snippet),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            "--show-error-codes",
            "--no-pretty",
            "--hide-error-context",
            "--no-error-summary",
        ]
    )
    assert stderr == ""
    reported = {
        (int(match[1]), match[2]) for line in stdout.splitlines() if (match := _ERROR.match(line))
    }
    assert reported == expected, stdout
    assert status == 1
