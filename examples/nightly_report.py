"""A realistic graph: fetch -> parse -> enrich per region in parallel -> aggregate -> report.

Run it with ``python examples/nightly_report.py``. The worker in this process releases each
node the moment its parents finish; the client only submits the graph and watches. One
region's enrichment fails on purpose: ``aggregate`` runs anyway (trigger ``all_done``, the
failed region arrives as ``None``), while ``publish``, which needs every region
(``all_success``), ends ``upstream_failed`` without running. The run's final picture is
printed as a Mermaid flowchart.

It exits 0 when the run ended as designed (``GraphFailed`` naming exactly the planted
failure and the node that depended on it), 1 otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import sys
import time
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.live import Live
from rich.table import Table

import taskflow

QUEUE = "nightly-report"
REGIONS = ["eu-west", "eu-north", "us-east", "us-west", "ap-south", "ap-east", "sa-east"]
BROKEN_REGION = "sa-east"  # its enrichment service is "down" tonight

app = taskflow.TaskFlow(
    settings=taskflow.Settings(
        result_ttl=timedelta(minutes=10), run_retention=timedelta(minutes=30)
    )
)


class Sale(BaseModel):
    order_id: int
    region: str
    amount_cents: int


@app.task(queue=QUEUE, timeout=10)
async def fetch(url: str, rows: int) -> list[str]:
    """Download the day's CSV export (simulated: latency, then deterministic rows)."""
    await asyncio.sleep(0.4)
    rng = random.Random(url)
    return [f"{i},{rng.choice(REGIONS)},{rng.randint(500, 50_000)}" for i in range(rows)]


@app.task(queue=QUEUE)
async def parse(lines: list[str]) -> list[Sale]:
    """Parse CSV lines into validated records; children receive them as typed models."""
    await asyncio.sleep(0.2)
    sales = []
    for line in lines:
        order_id, region, amount = line.split(",")
        sales.append(Sale(order_id=int(order_id), region=region, amount_cents=int(amount)))
    return sales


@app.task(queue=QUEUE, retries=2, backoff=taskflow.Backoff(base=0.2, cap=0.5))
async def enrich(sales: list[Sale], region: str) -> dict[str, Any]:
    """Look up exchange rates and risk scores for one region (simulated remote service)."""
    await asyncio.sleep(random.uniform(0.3, 1.0))
    if region == BROKEN_REGION:
        raise ConnectionError(f"risk service for {region} refused the connection")
    mine = [s for s in sales if s.region == region]
    digest = hashlib.sha256(",".join(str(s.order_id) for s in mine).encode()).hexdigest()
    return {
        "region": region,
        "orders": len(mine),
        "revenue_cents": sum(s.amount_cents for s in mine),
        "risk_batch": digest[:12],
    }


@app.task(queue=QUEUE)
async def aggregate(parts: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Totals over the regions that made it; missing regions are listed, not guessed."""
    await asyncio.sleep(0.1)
    done = [p for p in parts if p is not None]
    return {
        "regions": len(done),
        "missing": len(parts) - len(done),
        "orders": sum(p["orders"] for p in done),
        "revenue_cents": sum(p["revenue_cents"] for p in done),
    }


@app.task(queue=QUEUE)
async def audit(lines: list[str]) -> int:
    """An independent check of the raw export: number of lines."""
    await asyncio.sleep(0.3)
    return len(lines)


@app.task(queue=QUEUE)
async def report(totals: dict[str, Any], checked: int) -> str:
    """Render the morning report."""
    return (
        f"{totals['orders']} orders, {totals['revenue_cents'] / 100:,.2f} in revenue from "
        f"{totals['regions']} regions ({totals['missing']} missing); {checked} lines audited"
    )


@app.task(queue=QUEUE)
async def publish(parts: list[dict[str, Any]]) -> str:
    """Publish per-region figures: only when every region is there."""
    return f"published {len(parts)} regions"


def build() -> taskflow.Graph:
    g = app.graph("nightly-report")
    raw = g.add(fetch, "https://example.com/exports/sales.csv", rows=5_000)
    sales = g.add(parse, raw)
    parts = [g.add(enrich, sales, region=r, name=f"enrich-{r}") for r in REGIONS]
    totals = g.add(aggregate, parts, trigger="all_done")
    checked = g.add(audit, raw)
    g.add(report, totals, checked)
    g.add(publish, parts)
    return g


def progress_table(status: taskflow.RunStatus, elapsed: float) -> Table:
    table = Table(title=f"run {status.run_id[:8]} - {status.state} - {elapsed:.1f}s")
    for column in ("node", "state", "attempt", "worker"):
        table.add_column(column)
    colours = {
        "succeeded": "green",
        "failed": "red",
        "upstream_failed": "yellow",
        "running": "cyan",
        "retrying": "magenta",
    }
    for node in status.nodes.values():
        colour = colours.get(node.state.value, "white")
        table.add_row(
            node.name,
            f"[{colour}]{node.state.value}[/]",
            str(node.attempt or ""),
            (node.worker or "")[-8:],
        )
    return table


async def watch(run: taskflow.RunHandle, console: Console) -> taskflow.RunStatus:
    """Show the run's nodes live until it ends (a line per change when not on a terminal)."""
    started = time.perf_counter()
    last = ""
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            status = await run.status()
            elapsed = time.perf_counter() - started
            if console.is_terminal:
                live.update(progress_table(status, elapsed), refresh=True)
            else:
                counts = ", ".join(f"{k} {v}" for k, v in sorted(status.counts.items()))
                if counts != last:
                    console.print(f"{elapsed:5.1f}s  {counts}")
                    last = counts
            if status.state != "running":
                if not console.is_terminal:
                    console.print(progress_table(status, elapsed))
                return status
            await asyncio.sleep(0.1)


async def main() -> int:
    console = Console() if sys.stdout.isatty() else Console(width=110)
    logging.basicConfig(level=logging.WARNING)
    async with app, app.worker(queues=[QUEUE], concurrency=20):
        graph = build()
        console.print(
            f"[bold]{graph.name}[/]: {len(graph)} nodes in {len(graph.levels())} "
            f"levels, Redis at {app.redis_url}"
        )
        console.print(
            f"[dim]planted failure: the risk service for {BROKEN_REGION} is down tonight, so "
            f"enrich-{BROKEN_REGION} fails after its retries (the worker logs it at ERROR) "
            "and publish does not run[/]"
        )
        run = await graph.submit()
        status = await watch(run, console)
        try:
            await run.wait(timeout=30)
            failed: set[str] = set()
        except taskflow.GraphFailed as exc:
            failed = set(exc.failed)
            console.print(f"[yellow]run ended {status.state}:[/] {exc}")
            console.print(f"report: [bold]{exc.results.get('report')}[/]")
        console.print("\nMermaid picture of the finished run (paste into any Mermaid viewer):")
        console.print(run.to_mermaid(), markup=False, highlight=False)
    expected = {f"enrich-{BROKEN_REGION}", "publish"}
    if failed != expected or status.nodes["report"].state != "succeeded":
        console.print(f"[red]unexpected outcome: failed={sorted(failed)}[/]")
        return 1
    console.print(
        f"[green]as designed:[/] only the planted failure (enrich-{BROKEN_REGION}) and the node "
        "that needs it (publish) failed; the report was built from the other regions"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except taskflow.RedisUnavailable as exc:  # no server, or one that refused: say which
        sys.exit(f"error: {exc}")
