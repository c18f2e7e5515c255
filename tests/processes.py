"""Subprocesses for the tests that run real workers
(``python -m taskflow worker tests.apps.<module>:app``) against the test Redis.

Each worker's output goes to a file in the test's tmp_path. When the test ends, ``Workers``
kills the survivors and prints every log (pytest shows it when the test fails).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self

import anyio
from redis.asyncio import Redis

import taskflow
from taskflow.connection import EmbeddedRedis
from tests.apps.shared import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment, with ``TASKFLOW_TEST_REDIS_URL`` and ``extra`` set."""
    return {**os.environ, "TASKFLOW_TEST_REDIS_URL": REDIS_URL, **extra}


# a private network namespace with only loopback up: nothing listens on localhost:6379 there,
# as on a machine without Redis (unshare -r maps the caller to root in a user namespace)
WITHOUT_REDIS = ("unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh")


def network_without_redis() -> bool:
    """Whether commands can run prefixed by :data:`WITHOUT_REDIS` here."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = [*WITHOUT_REDIS, sys.executable, "-c", "pass"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def free_port() -> int:
    """A loopback TCP port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A real private redis-server on a loopback port, in its own directory: it can be
    killed (SIGKILL, as a crash) and started again on the same port and data, so that its
    AOF, if ``--appendonly yes`` is among ``options``, is what it comes back with."""

    def __init__(self, *options: str) -> None:
        binary = EmbeddedRedis.binary() or shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("no redis-server binary: install 'taskflow-redis[embedded]'")
        self.port, self.workdir = free_port(), tempfile.mkdtemp(prefix="taskflow-test-redis-")
        self.argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.argv += ["--dir", self.workdir, "--appendonly", "no", *options]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server {' '.join(self.argv[1:])} did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last save; what is on disk is what there is."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def redis_server(*options: str) -> Iterator[int]:
    """A real private redis-server on a free loopback port, with ``options`` (such as
    ``--requirepass x``), no persistence; yields its port and stops it after."""
    server = RedisProcess(*options)
    try:
        server.start()
        yield server.port
    finally:
        server.stop()


def run(
    argv: Sequence[str], env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` from the repository root to its end; its output is captured as text."""
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    queues: list[str]
    app_name: str  #: TaskFlow.name of the app it serves: the module that builds it

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        assert self.proc.poll() is None, f"worker exited early:\n{self.log()}"
        self.proc.send_signal(signum)

    async def wait(self, timeout: float) -> int:
        """The exit code, waiting up to ``timeout`` seconds."""
        with anyio.move_on_after(timeout):
            while True:
                if self.proc.poll() is not None:
                    break
                await anyio.sleep(0.02)
        code = self.proc.poll()
        assert code is not None, f"worker {self.pid} still running after {timeout}s:\n{self.log()}"
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@dataclass
class Workers:
    """Starts worker subprocesses serving ``app``; on exit, kills survivors and prints every log.

    Test modules subclass it with a ``start_live`` that passes their app's environment, and
    use it as ``with Workers(tmp_path, APP) as workers:`` in a fixture.
    """

    tmp_path: Path
    app: str  # module:attribute
    started: list[WorkerProcess] = field(default_factory=list)

    def spawn(
        self,
        queues: Sequence[str],
        *,
        concurrency: int,
        env: Mapping[str, str],
        extra: Sequence[str] = (),
        supervise: bool = False,
    ) -> WorkerProcess:
        """Start a worker on ``queues`` with ``env`` added to the test environment; unless
        ``supervise``, with ``--no-supervise`` (the process is the worker itself)."""
        argv = [sys.executable, "-m", "taskflow", "--log-level", "INFO", "worker", self.app]
        for queue in queues:
            argv += ["--queue", queue]
        argv += ["--concurrency", str(concurrency), *extra]
        if not supervise:
            argv.append("--no-supervise")
        log_path = self.tmp_path / f"worker-{len(self.started)}.log"
        log_file = log_path.open("wb")
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=child_env(**env, PYTHONUNBUFFERED="1"),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # signals come from the test only
        )
        worker = WorkerProcess(proc, log_path, log_file, list(queues), self.app.partition(":")[0])
        self.started.append(worker)
        return worker

    def by_pid(self, pid: int) -> WorkerProcess:
        return next(w for w in self.started if w.pid == pid)

    def logs(self) -> str:
        return "".join(
            f"\n----- worker pid {w.pid} exit {w.proc.poll()} -----\n{w.log()}"
            for w in self.started
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.started:
            try:
                worker.kill()
            finally:
                worker.log_file.close()
            header = f"worker pid {worker.pid} queues {worker.queues} exit {worker.proc.returncode}"
            log = worker.log_path.read_text(errors="replace")
            sys.stdout.write(f"\n----- {header} -----\n{log}")


async def wait_live(redis: Redis, worker: WorkerProcess, timeout: float = 20.0) -> None:
    """Wait until the worker's heartbeat says it serves its queues."""
    with anyio.move_on_after(timeout):
        while True:
            assert worker.proc.poll() is None, f"worker exited at startup:\n{worker.log()}"
            for info in await taskflow.live_workers(redis, worker.app_name):
                if info.pid == worker.pid and set(worker.queues) <= set(info.queues):
                    return
            await anyio.sleep(0.05)
    raise AssertionError(f"worker {worker.pid} not live after {timeout}s:\n{worker.log()}")
