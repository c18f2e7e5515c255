"""Service probes (``@app.probe``): declaration rules, and against a real Redis with real
workers, a loopback HTTP service that goes down and comes back, one run per interval
across workers, ``probe_down`` alerts and the ``taskflow status`` table.

Timings are never asserted: "within its interval" is checked as "the first result after
the service stopped is down", which only a probe run each interval can give.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
from rich.console import Console

import taskflow
from taskflow.alerts import AlertRule, Condition
from taskflow.cli.status import render, snapshot
from taskflow.metrics.custom_read import HistogramValue
from taskflow.probes import Check, ProbeRunner, ProbeState
from tests.conftest import FAST_WORKER
from tests.helpers import until
from tests.processes import free_port

EVERY = timedelta(milliseconds=200)


@asynccontextmanager
async def http_service(port: int) -> AsyncIterator[asyncio.Server]:
    """A minimal HTTP server on loopback ``port`` answering 200 to anything."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


def declare_http_probe(app: taskflow.TaskFlow, port: int) -> None:
    @app.probe(every=EVERY, timeout=timedelta(milliseconds=150), name="shop-api")
    async def shop_api() -> str:
        async with httpx.AsyncClient() as http:
            url = f"http://user:hunter2@127.0.0.1:{port}/health?key=s3cret"
            (await http.get(url)).raise_for_status()
        return "healthy"


# -- declaring ------------------------------------------------------------------------------


def test_declaration_errors_name_the_problem() -> None:
    app = taskflow.TaskFlow(name="probe-decl")

    def sync() -> None: ...

    async def takes(x: int) -> None: ...

    async def fine() -> None: ...

    with pytest.raises(taskflow.ConfigurationError, match="needs an `async def`"):
        app.probe(every="30s")(sync)  # type: ignore[arg-type]
    with pytest.raises(taskflow.ConfigurationError, match=r"takes parameters \(x\)"):
        app.probe(every="30s")(takes)  # type: ignore[arg-type]
    with pytest.raises(taskflow.ConfigurationError, match="every='soon' is not a duration"):
        app.probe(every="soon")(fine)
    with pytest.raises(taskflow.ConfigurationError, match="timeout='1m' is longer than every"):
        app.probe(every="30s", timeout="1m")(fine)
    with pytest.raises(taskflow.ConfigurationError, match="probe name 'a b' is not valid"):
        app.probe(every="30s", name="a b")(fine)
    app.probe(every="30s")(fine)
    with pytest.raises(taskflow.ConfigurationError, match="'fine' is already declared"):
        app.probe(every="30s")(fine)
    with pytest.raises(ValueError, match="probe= is for probe_down only"):
        Condition(metric="queue_depth", queue="q", probe="fine", op=">", threshold=0)


# -- running ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_probe_reports_a_service_down_then_up_again(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()
    port = free_port()
    declare_http_probe(app, port)
    async with app, app.worker(), app.worker():  # two workers: one run per interval

        async def state_is(state: ProbeState) -> bool:
            [status] = await app.probes.status()
            return status.state is state

        async with http_service(port):
            await until(lambda: state_is(ProbeState.UP), timeout=10, interval=0.05)
        stopped = datetime.now(UTC)
        await until(lambda: state_is(ProbeState.DOWN), timeout=10, interval=0.05)
        [status] = await app.probes.status()
        assert status.last is not None and status.since is not None
        assert status.since >= stopped - timedelta(milliseconds=5)
        # the first run after the stop found it down (no "up" in between): within its interval
        history = await app.probes.history("shop-api")
        after = [r for r in history if r.at > stopped]
        assert after and not any(r.up for r in after), history
        assert "ConnectError" in status.last.error
        assert "hunter2" not in status.last.error and "s3cret" not in status.last.error

        async with http_service(port):
            await until(lambda: state_is(ProbeState.UP), timeout=10, interval=0.05)
        [status] = await app.probes.status()
        assert status.last is not None
        assert status.last.detail == "healthy" and status.failures == 0 and not status.stale

        async def latency_recorded() -> bool:
            latency = await app.metrics.read(
                "taskflow_probe_latency_seconds", labels={"probe": "shop-api"}
            )
            return isinstance(latency, HistogramValue) and latency.count >= len(history)

        await until(latency_recorded, timeout=10, interval=0.05)


@pytest.mark.asyncio
async def test_of_workers_due_at_once_one_runs_the_probe(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()
    runs: list[int] = []

    @app.probe(every="1h")
    async def counted() -> None:
        runs.append(1)

    async with app:
        runners = [ProbeRunner(app.probes) for _ in range(5)]
        contexts = [app.worker().context() for _ in runners]
        async with anyio.create_task_group() as tg:
            for runner, ctx in zip(runners, contexts, strict=True):
                wait = await runner.step(ctx, tg)
                assert wait > 60  # the winner runs it in an hour; the others when its claim lapses
        assert runs == [1]


@pytest.mark.asyncio
async def test_results_returned_false_raised_or_timed_out_are_down(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()

    @app.probe(every="1h")
    async def says_no() -> bool:
        return False

    @app.probe(every="1h", timeout=timedelta(milliseconds=50))
    async def hangs() -> None:
        await asyncio.sleep(10)

    @app.probe(every="1h")
    async def checks() -> Check:
        return Check(up=False, detail="quota exhausted", latency=0.25)

    @app.probe(every="1h")
    async def raises() -> None:
        raise RuntimeError("token=abc " + "x" * 1000)

    async with app:
        results = {p.name: await app.probes.run(p) for p in app.probes.declared}
    assert results["says_no"].error == "returned False"
    assert results["hangs"].error == "timed out after 0.05s"
    assert (results["checks"].error, results["checks"].latency_ms) == ("quota exhausted", 250)
    assert len(results["raises"].error) <= 300 and results["raises"].error.endswith("…")
    assert not any(r.up for r in results.values())


@pytest.mark.asyncio
async def test_probe_down_fires_an_alert_and_status_shows_the_probe(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()
    port = free_port()  # nothing listens: the probe is down from the start
    declare_http_probe(app, port)
    rule = app.alerts.add_rule(
        AlertRule(
            name="shop-api-down",
            conditions=[Condition(metric="probe_down", probe="shop-api", op=">=", threshold=1)],
        )
    )
    fast = FAST_WORKER.model_copy(update={"alert_interval": timedelta(milliseconds=50)})
    async with app, app.worker(settings=fast):

        async def firing() -> bool:
            return (await app.alerts.state(rule.name)).get("state") == "firing"

        await until(firing, timeout=10, interval=0.05)
        console = Console(width=200, record=True, no_color=True)
        console.print(render(await snapshot(app)))
        screen = console.export_text()
    assert re.search(r"shop-api\s+│\s+DOWN", screen), screen
    assert "ConnectError" in screen


@pytest.mark.asyncio
async def test_status_has_no_probe_table_without_probes(
    named_app: Callable[..., taskflow.TaskFlow],
) -> None:
    app = named_app()
    async with app:
        console = Console(width=200, record=True, no_color=True)
        console.print(render(await snapshot(app)))
    assert "probe" not in console.export_text()
