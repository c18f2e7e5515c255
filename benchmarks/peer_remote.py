"""A peer's client in a process of its own, for ``benchmarks/peers.py --baseline PATH``.

``taskflow@baseline`` must import ``taskflow`` from another checkout, and this process has
already imported the one under test; so with ``--baseline`` both taskflow systems run their
client (``benchmarks.peer_taskflow.Client``) in a child process, started with the
environment that puts the right checkout first on ``sys.path``, as their workers are.
peers.py talks to the child through :class:`RemoteClient`, which has the ``Client``'s
methods. The child reads one JSON request a line on stdin, runs the requests as they come,
and writes one JSON reply a line on stdout. It times each round trip itself, so that the
pipe stays out of the round-trip figures; the other figures take seconds.

    python -m benchmarks.peer_remote serve MODULE URL QUEUE      # the child
    python -m benchmarks.peer_remote describe MODULE PACKAGE     # the module's NAME, CHAIN,
                                                                 # FAN, ENQUEUE; PACKAGE's path

Standard library only, besides the peer module the child imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 2**28  # bytes a line may take: a drain's clean-up list names 20,000 ids
CLOSE_TIMEOUT = 60.0  # seconds the child may take to close its client and exit


# -- the harness's side -------------------------------------------------------------------


class RemotePeer:
    """A peer module whose clients run in child processes started with ``env``.

    NAME, CHAIN, FAN and ENQUEUE are what the module says in such a child; the worker's
    command line is the module's own, from this process (it holds only ``sys.executable``,
    the module's name and the queue: the worker imports with ``env`` too).
    """

    def __init__(self, module: ModuleType, info: dict[str, str], env: dict[str, str], logs: Path):
        self.module, self.env, self.logs = module, env, logs
        self.NAME, self.CHAIN, self.FAN = info["NAME"], info["CHAIN"], info["FAN"]
        self.ENQUEUE = info["ENQUEUE"]
        self.SOURCE = info["source"]  # the directory the child imported PACKAGE from

    @classmethod
    def load(cls, module: str, package: str, env: dict[str, str], logs: Path) -> RemotePeer:
        """``module`` as imported in a child with ``env``; raises when it does not import."""
        argv = [sys.executable, "-m", __name__, "describe", module, package]
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            raise RuntimeError(f"{module} does not import in a child process: {lines[-1]}")
        info: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
        return cls(importlib.import_module(module), info, env, logs)

    def worker_argv(self, url: str, queue: str) -> list[str]:
        return list(self.module.worker_argv(url, queue))

    def Client(self, url: str, queue: str) -> RemoteClient:  # named as in a peer module
        log = self.logs / f"{queue}.client.log"
        return RemoteClient(self.module.__name__, url, queue, self.env, log)


class RemoteClient:
    """A peer module's ``Client(url, queue)`` in a child process, with the same methods."""

    def __init__(self, module: str, url: str, queue: str, env: dict[str, str], log: Path):
        self.module, self.url, self.queue, self.env, self.log = module, url, queue, env, log
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._sent = 0
        self._created: dict[str, Any] = {}

    async def __aenter__(self) -> RemoteClient:
        argv = [sys.executable, "-m", __name__, "serve", self.module, self.url, self.queue]
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=LIMIT,
            )
        self._reader = asyncio.create_task(self._read())
        try:
            await self._call("open")
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            self._created = await asyncio.wait_for(self._call("close"), CLOSE_TIMEOUT)
        finally:
            await self._stop()

    async def enqueue_bulk(self, name: str, n: int) -> None:
        await self._call("enqueue_bulk", name, n)

    async def timed_roundtrip(self, x: int) -> tuple[Any, float]:
        """The round trip's result and its milliseconds, as the child measured them."""
        value, ms = await self._call("roundtrip", x)
        return value, float(ms)

    async def roundtrip(self, x: int) -> Any:
        return (await self.timed_roundtrip(x))[0]

    async def chain(self, n: int) -> Any:
        return await self._call("chain", n)

    async def fan(self, n: int) -> Any:
        return await self._call("fan", n)

    def created(self) -> dict[str, Any]:
        """What the child's client said, when it closed, it may have left in Redis."""
        return self._created

    async def _call(self, op: str, *args: Any) -> Any:
        assert self.proc is not None and self.proc.stdin is not None
        assert self._reader is not None
        if self._reader.done():
            raise RuntimeError(self._exited())
        self._sent += 1
        request_id = self._sent
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            line = json.dumps({"id": request_id, "op": op, "args": args}) + "\n"
            self.proc.stdin.write(line.encode())
            await self.proc.stdin.drain()
            return await future
        finally:
            del self._pending[request_id]

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            reply = json.loads(line)
            future = self._pending.get(reply["id"])
            if future is None or future.done():
                continue  # its caller gave up (a timeout)
            if "error" in reply:
                future.set_exception(RuntimeError(reply["error"]))
            else:
                future.set_result(reply["result"])
        await self.proc.wait()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError(self._exited()))

    def _exited(self) -> str:
        assert self.proc is not None
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        return f"client process exited with status {self.proc.returncode}\n{tail}"

    async def _stop(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), CLOSE_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)


# -- the child's side ---------------------------------------------------------------------


class _Server:
    """Runs the requests on one ``Client``; each in a task of its own, as they come."""

    def __init__(self, client: Any, out: int) -> None:
        self.client, self.out = client, out
        self.opened = False
        self.tasks: set[asyncio.Task[None]] = set()

    def reply(self, request_id: int, **body: Any) -> None:
        data = (json.dumps({"id": request_id, **body}) + "\n").encode()
        while data:  # blocking writes: the harness reads all the time
            data = data[os.write(self.out, data) :]

    async def run(self, op: str, args: list[Any]) -> Any:
        if op == "open":
            await self.client.__aenter__()
            self.opened = True
            return None
        if op == "roundtrip":
            start = time.perf_counter()
            value = await self.client.roundtrip(*args)
            return [value, (time.perf_counter() - start) * 1000]
        if op in ("enqueue_bulk", "chain", "fan"):
            return await getattr(self.client, op)(*args)
        raise ValueError(f"unknown request {op!r}")

    async def handle(self, request: dict[str, Any]) -> None:
        try:
            result = await self.run(request["op"], request["args"])
        except Exception as exc:
            self.reply(request["id"], error=f"{type(exc).__name__}: {exc}".strip())
        else:
            self.reply(request["id"], result=result)

    async def close(self, request_id: int | None) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            if self.opened:
                await self.client.__aexit__(None, None, None)
        except Exception as exc:
            if request_id is not None:
                self.reply(request_id, error=f"{type(exc).__name__}: {exc}".strip())
            return
        if request_id is not None:
            self.reply(request_id, result=self.client.created())


async def serve(module: str, url: str, queue: str) -> None:
    out = os.dup(1)  # replies go to the harness's pipe; anything printed, to stderr
    os.dup2(2, 1)
    server = _Server(importlib.import_module(module).Client(url, queue), out)
    reader = asyncio.StreamReader(limit=LIMIT)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    closing: int | None = None  # the close request's id; None when stdin just ends
    async for line in reader:
        request = json.loads(line)
        if request["op"] == "close":
            closing = request["id"]
            break
        task = asyncio.create_task(server.handle(request))
        server.tasks.add(task)
        task.add_done_callback(server.tasks.discard)
    await server.close(closing)


def describe(module: str, package: str) -> None:
    mod = importlib.import_module(module)
    path = importlib.import_module(package).__file__
    info = {name: str(getattr(mod, name)) for name in ("NAME", "CHAIN", "FAN", "ENQUEUE")}
    info["source"] = str(Path(path or "").resolve().parent)
    print(json.dumps(info))


def main() -> None:
    command, *rest = sys.argv[1:]
    if command == "serve":
        module, url, queue = rest
        asyncio.run(serve(module, url, queue))
    elif command == "describe":
        module, package = rest
        describe(module, package)
    else:
        raise SystemExit(f"usage: see {__file__}")


if __name__ == "__main__":
    main()
