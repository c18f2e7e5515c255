"""taskflow quickstart: four tasks, 200 jobs, one in-process worker, a live progress bar.

Run it with ``python examples/quickstart.py``. It uses the Redis at ``TASKFLOW_REDIS_URL``
(default ``redis://localhost:6379/0``); when nothing answers there and the ``embedded`` extra
is installed, ``async with app`` starts a private redis-server for this process instead.

What it shows:

* ``fetch_page`` and ``make_thumbnail``: ordinary tasks with simulated I/O latency;
* ``sync_inventory``: fails on its first attempt and succeeds when retried, using
  ``taskflow.current_job().attempt``;
* ``parse_legacy_report``: fails every time, so it fails for good once its retries are spent;
* a summary table built from each job's stored result record (``JobHandle.info()``).

It exits 0 when every job ended as expected, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import taskflow
from taskflow import JobResult

QUEUE = "quickstart"

# The Redis URL comes from TASKFLOW_REDIS_URL (or the default); results are kept 10 minutes.
app = taskflow.TaskFlow(settings=taskflow.Settings(result_ttl=timedelta(minutes=10)))


@app.task(queue=QUEUE, timeout=5)
async def fetch_page(url: str) -> dict[str, Any]:
    """Pretend to download a page: network latency, then a small parsed payload."""
    await asyncio.sleep(random.uniform(0.1, 1.2))
    body = f"<html><title>{url}</title>{'lorem ipsum ' * random.randint(50, 500)}</html>"
    return {"url": url, "status": 200, "bytes": len(body), "title": url.rsplit("/", 1)[-1]}


def downscale(image_id: int, width: int, height: int, max_side: int) -> dict[str, Any]:
    """Nearest-neighbour resize of a synthetic 1/16-size preview; CPU-bound, so run in a thread."""
    w, h = max(1, width // 16), max(1, height // 16)
    pixels = bytes((x * 31 + y * 17 + image_id) % 256 for y in range(h) for x in range(w))
    scale = min(1.0, max_side / max(width, height))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    thumb = bytes(pixels[(ty * h // th) * w + tx * w // tw] for ty in range(th) for tx in range(tw))
    return {
        "id": image_id,
        "width": round(width * scale),
        "height": round(height * scale),
        "sha256": hashlib.sha256(thumb).hexdigest()[:12],
    }


@app.task(queue=QUEUE)
async def make_thumbnail(
    image_id: int, width: int, height: int, max_side: int = 256
) -> dict[str, Any]:
    """Load an image (simulated latency), then resize it off the event loop."""
    await asyncio.sleep(random.uniform(0.05, 0.3))
    return await asyncio.to_thread(downscale, image_id, width, height, max_side)


@app.task(queue=QUEUE, retries=3, backoff=taskflow.Backoff(base=0.1, cap=0.5))
async def sync_inventory(sku: str) -> str:
    """Push a stock level to a flaky partner API: the first attempt always fails."""
    job = taskflow.current_job()
    await asyncio.sleep(random.uniform(0.02, 0.1))
    if job.attempt == 1:
        raise ConnectionError(f"partner API timed out syncing {sku}")
    return f"{sku} synced on attempt {job.attempt} of {job.max_attempts}"


@app.task(queue=QUEUE, retries=2, backoff=taskflow.Backoff(base=0.05, cap=0.2))
async def parse_legacy_report(path: str) -> int:
    """A task that can never succeed: every attempt fails, so the job ends failed."""
    await asyncio.sleep(0.01)
    raise ValueError(f"{path}: unsupported encoding 'EBCDIC'")


# job mix: (task, arguments) -- 200 jobs in all
def planned_jobs() -> list[tuple[taskflow.Task[Any, Any], dict[str, Any]]]:
    rng = random.Random(7)
    jobs: list[tuple[taskflow.Task[Any, Any], dict[str, Any]]] = []
    jobs += [(fetch_page, {"url": f"https://example.com/articles/{i}"}) for i in range(100)]
    jobs += [
        (
            make_thumbnail,
            {"image_id": i, "width": rng.randint(300, 4000), "height": rng.randint(300, 3000)},
        )
        for i in range(50)
    ]
    jobs += [(sync_inventory, {"sku": f"SKU-{i:04d}"}) for i in range(40)]
    jobs += [(parse_legacy_report, {"path": f"/exports/2019/report-{i}.dat"}) for i in range(10)]
    rng.shuffle(jobs)
    return jobs


EXPECTED = {
    "fetch_page": "succeeded",
    "make_thumbnail": "succeeded",
    "sync_inventory": "succeeded",
    "parse_legacy_report": "failed",
}


async def wait_for_results(
    handles: list[taskflow.JobHandle[Any]],
    on_finished: Callable[[JobResult], None],
    deadline: float,
) -> dict[str, JobResult]:
    """Poll result records until every job has one (or ``deadline`` seconds pass)."""
    records: dict[str, JobResult] = {}
    pending = list(handles)
    stop_at = time.monotonic() + deadline
    while pending and time.monotonic() < stop_at:
        still: list[taskflow.JobHandle[Any]] = []
        for start in range(0, len(pending), 25):  # a few reads at a time, not 200 at once
            chunk = pending[start : start + 25]
            for handle, record in zip(
                chunk, await asyncio.gather(*(h.info() for h in chunk)), strict=True
            ):
                if record is None:
                    still.append(handle)
                else:
                    records[handle.job_id] = record
                    on_finished(record)
        pending = still
        if pending:
            await asyncio.sleep(0.05)
    return records


def summary_table(records: list[JobResult]) -> Table:
    by_task: dict[str, list[JobResult]] = defaultdict(list)
    for record in records:
        by_task[record.task].append(record)
    table = Table(
        title="taskflow quickstart: results by task",
        caption="times: wall time of each job's final attempt, from its result record",
    )
    for column in ("task", "jobs", "succeeded", "failed", "retried attempts"):
        table.add_column(column, justify="left" if column == "task" else "right")
    table.add_column("mean ms", justify="right")
    table.add_column("max ms", justify="right")
    for task, rows in sorted(by_task.items()):
        walls = [r.finish_ms - r.start_ms for r in rows]  # the last attempt's wall time
        table.add_row(
            task,
            str(len(rows)),
            str(sum(r.status == "succeeded" for r in rows)),
            str(sum(r.status == "failed" for r in rows)),
            str(sum(r.attempt - 1 for r in rows)),
            f"{statistics.fmean(walls):.0f}",
            str(max(walls)),
        )
    return table


class Reporter:
    """A rich progress bar on a terminal; plain progress lines otherwise (CI, pipes)."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.total = total
        self.done = self.failed = 0
        self.started = time.perf_counter()
        self.progress: Progress | None = None
        if console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[outcome]}"),
                TimeElapsedColumn(),
                console=console,
            )
            self.bar = self.progress.add_task("jobs", total=total, outcome="")

    def __enter__(self) -> Reporter:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def finished(self, record: JobResult) -> None:
        before = self.done * 4 // self.total
        self.done += 1
        self.failed += record.status != "succeeded"
        outcome = f"[green]{self.done - self.failed} ok[/] [red]{self.failed} failed[/]"
        if self.progress is not None:
            self.progress.update(self.bar, advance=1, outcome=outcome)
        elif self.done * 4 // self.total > before:  # a line at each quarter
            self.console.print(
                f"progress: {self.done}/{self.total} finished ({self.done - self.failed} "
                f"succeeded, {self.failed} failed) after {time.perf_counter() - self.started:.1f}s"
            )


async def main() -> int:
    console = Console() if sys.stdout.isatty() else Console(width=110)
    handler: logging.Handler = (
        RichHandler(console=console, show_path=False)
        if console.is_terminal
        else logging.StreamHandler()
    )
    if not console.is_terminal:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    # parse_legacy_report fails on purpose, ten times: the worker would log each final failure
    # at ERROR with its traceback; the summary table below reports them instead
    logging.getLogger("taskflow.worker").setLevel(logging.CRITICAL)

    async with app:  # connects; falls back to an embedded redis-server if allowed and needed
        url, embedded = app.redis_url, app.embedded
        where = "embedded, private to this process" if embedded else "a shared server"
        console.print(f"Redis: {url} ({where})")
        jobs = planned_jobs()
        async with app.worker(queues=[QUEUE], concurrency=50):
            started = time.perf_counter()
            with Reporter(console, len(jobs)) as reporter:
                handles = [await task.enqueue(**kwargs) for task, kwargs in jobs]
                records = await wait_for_results(handles, reporter.finished, deadline=60)
            elapsed = time.perf_counter() - started

    console.print(summary_table(list(records.values())))
    console.print(
        f"Redis {url} (embedded: {'yes' if embedded else 'no'}); {len(records)}/{len(jobs)} jobs "
        f"finished in {elapsed:.2f}s, {len(records) / elapsed:.0f} jobs/s with concurrency 50"
    )
    wrong = [r for r in records.values() if EXPECTED[r.task] != r.status]
    if len(records) < len(jobs) or wrong:
        console.print(
            f"[red]unexpected: {len(jobs) - len(records)} unfinished, {len(wrong)} wrong outcomes"
        )
        return 1
    console.print(
        "[green]every job ended as expected[/]: the 10 parse_legacy_report failures are "
        "planted (a real worker logs each at ERROR with its traceback; see docs/workers.md)"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except taskflow.RedisUnavailable as exc:  # no server, or one that refused: say which
        sys.exit(f"error: {exc}")
