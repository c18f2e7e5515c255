"""taskflow against its peers (raw arq, SAQ, taskiq, streaq) on the same five workloads.

Run from the repository root, after ``pip install -e '.[bench]'``::

    python benchmarks/peers.py [--private-redis | --redis-url URL] [--runs 3]
                               [--only taskflow,taskflow@baseline,arq,saq,taskiq,streaq]
                               [--workloads drain,roundtrip,chain,fan,sleep]
                               [--baseline PATH]

Workloads, each on a new, unique queue, with ONE worker process per system (a real
subprocess this script starts; concurrency 100, logging at WARNING):

- **drain**: 20,000 no-op jobs are enqueued, then the worker starts; jobs/s is
  20,000 / (last job body's end - first job body's start), both taken inside the worker.
- **sleep**: the same with 20,000 jobs that each ``await asyncio.sleep(0.01)``.
- **roundtrip**: 300 sequential ``step(x) -> x + 1`` jobs on an idle, warmed-up worker, each
  timed from just before the enqueue to the result in the waiting client; p50 and p99.
- **chain**: 200 steps, each taking the previous step's result; total and ms per hop.
- **fan**: 1 seed -> 1,000 leaves (each taking the seed's result) -> 1 join taking all
  1,000 leaf results; total.

The chain and fan use a system's own mechanism where it has one, else the client drives
them; the "mechanism" table says which. Every system's module (``benchmarks/peer_*.py``)
says exactly how it enqueues, waits and runs its worker. A system whose libraries do not
import shows "not installed"; a workload that fails shows "failed" and the run goes on.

Per workload: Redis commands per job (``INFO commandstats``, whole server, commands inside
Lua scripts and functions included, this script's own INFO calls excluded; enqueueing,
the worker's start-up, its idle polling and the client's waiting included), Redis CPU per
job (``INFO cpu``), worker CPU per job (drain and sleep: between the first and the last
job body, measured inside the worker; others: the worker process over the workload), and,
while draining, the worker's peak RSS (psutil samples every 20 ms and the kernel's VmHWM).
Tables show medians over ``--runs``, with each system's ratio to taskflow.

``--baseline PATH`` (another checkout of taskflow, e.g. ``git archive REV | tar -x -C PATH``)
adds the system **taskflow@baseline**, measured right after taskflow in every run: the same
``benchmarks/peer_taskflow.py``, worker and client, importing ``taskflow`` from ``PATH``
instead. Both taskflow systems then run their clients in child processes of their own
(``benchmarks/peer_remote.py``), as their workers are, each with its checkout first on
``sys.path``; the summary says where each imported taskflow from.

Timing figures belong here, never in tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make `benchmarks.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import contextlib
import functools
import importlib
import json
import math
import os
import re
import signal
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import psutil
from redis.asyncio import Redis

from benchmarks.common import Meter, cleanup, server_url
from benchmarks.peer_common import CONCURRENCY, EXPECT_ENV, POLL, PROBE_ENV, expected_fan
from benchmarks.peer_remote import RemotePeer

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "taskflow@baseline"  # taskflow imported from --baseline PATH
SYSTEMS = ("taskflow", BASELINE, "arq", "saq", "taskiq", "streaq")
WORKLOADS = ("drain", "roundtrip", "chain", "fan", "sleep")
SETTLE = 0.3  # seconds after the last job body before the closing INFO snapshot
WORKER_TIMEOUT = 300.0  # seconds a drain may take
RSS_EVERY = 0.02  # seconds between RSS samples


# -- the systems --------------------------------------------------------------------------


@dataclass
class System:
    key: str  # taskflow, taskflow@baseline, arq, ...
    module: ModuleType | RemotePeer | None
    error: str = ""  # why it is not installed
    env: dict[str, str] = field(default_factory=dict)  # for its worker and remote client

    @property
    def name(self) -> str:
        if not self.module:
            return self.key
        name, base = str(self.module.NAME), self.key.partition("@")[0]
        # taskflow@baseline: "taskflow@baseline 0.1.0"
        return self.key + name.removeprefix(base) if name.startswith(base) else name


def load(key: str, baseline: Path | None, tmp: Path) -> System:
    """Import ``benchmarks.peer_<key>``; a failing import marks the system not installed.

    With ``baseline``, the taskflow systems import it in child processes, each with its own
    checkout first on ``sys.path``: this one for taskflow, ``baseline`` for taskflow@baseline.
    """
    try:
        if baseline is None or key not in ("taskflow", BASELINE):
            return System(key, importlib.import_module(f"benchmarks.peer_{key}"))
        env = _import_env(ROOT if key == "taskflow" else _only_taskflow(baseline, tmp))
        peer = RemotePeer.load("benchmarks.peer_taskflow", "taskflow", env, tmp)
        return System(key, peer, env=env)
    except Exception as exc:  # any import failure, not only ImportError: never crash
        return System(key, None, f"{type(exc).__name__}: {exc}")


def _only_taskflow(checkout: Path, tmp: Path) -> Path:
    """A directory holding nothing but a link to the checkout's ``taskflow`` package, so
    that ``benchmarks`` still comes from this checkout."""
    path = tmp / "baseline-path"
    path.mkdir(exist_ok=True)
    link = path / "taskflow"
    if not link.is_symlink():
        link.symlink_to(checkout.resolve() / "taskflow", target_is_directory=True)
    return path


def _import_env(first: Path) -> dict[str, str]:
    """The environment of a process that imports ``taskflow`` from ``first`` and
    ``benchmarks`` from this checkout: both ahead of site-packages (an editable install of
    this checkout included), with neither the working directory nor the script's first."""
    path = list(dict.fromkeys([str(first), str(ROOT)]))
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONSAFEPATH="1", PYTHONPATH=os.pathsep.join(path))


# -- one sample ---------------------------------------------------------------------------


@dataclass
class Sample:
    jobs: int  # what the per-job figures divide by
    value: float  # drain/sleep jobs/s, roundtrip p50 ms, chain/fan total s
    extra: float  # drain/sleep enqueue s, roundtrip p99 ms, chain ms per hop, fan: nan
    commands: Counter[str] = field(repr=False)
    redis_cpu_s: float
    worker_cpu_s: float
    rss_mb: float = math.nan

    @property
    def cmds_per_job(self) -> float:
        return sum(self.commands.values()) / self.jobs

    @property
    def redis_cpu_us(self) -> float:
        return self.redis_cpu_s / self.jobs * 1e6

    @property
    def worker_cpu_ms(self) -> float:
        return self.worker_cpu_s / self.jobs * 1000


@dataclass(frozen=True)
class Sizes:
    drain: int
    sleep: int
    roundtrips: int
    chain: int
    fan: int


def _queue(key: str, workload: str) -> str:
    system = re.sub(r"[^0-9A-Za-z_.:-]", "-", key)  # taskflow@baseline: taskflow-baseline
    return f"peers-{system}-{workload}-{uuid.uuid4().hex[:10]}"


class Worker:
    """One worker subprocess: output to a log file, RSS sampled, stopped with SIGTERM."""

    def __init__(
        self, system: System, url: str, queue: str, log: Path, probe: Path | None, jobs: int
    ) -> None:
        assert system.module is not None
        self.argv, self.env = system.module.worker_argv(url, queue), system.env
        self.url, self.log, self.probe, self.jobs = url, log, probe, jobs
        self.proc: asyncio.subprocess.Process | None = None
        self.peak = 0
        self._sampler: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Worker:
        env = dict(self.env or os.environ, TASKFLOW_REDIS_URL=self.url, TASKFLOW_EMBEDDED="never")
        env.pop(PROBE_ENV, None)
        env.pop(EXPECT_ENV, None)
        if self.probe is not None:
            env.update({PROBE_ENV: str(self.probe), EXPECT_ENV: str(self.jobs)})
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=ROOT, env=env, stdout=out, stderr=out
            )
        self._sampler = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None and self._sampler is not None
        self._sampler.cancel()
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(self.pid)
            while True:
                self.peak = max(self.peak, proc.memory_info().rss)
                await asyncio.sleep(RSS_EVERY)

    def peak_mb(self) -> float:
        """Peak RSS so far: the larger of the samples and the kernel's high-water mark."""
        hwm = 0
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
        return max(self.peak, hwm) / 2**20

    def cpu_s(self) -> float:
        try:
            times = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return math.nan
        return float(times.user + times.system)

    def check(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise RuntimeError(f"worker exited with status {self.proc.returncode}")

    async def alive(self, work: Awaitable[Any], timeout: float) -> Any:
        """Await ``work``, but fail at once if the worker exits, and after ``timeout``."""
        assert self.proc is not None
        task = asyncio.ensure_future(work)
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            done, _ = await asyncio.wait(
                {task, exited}, timeout=timeout, return_when="FIRST_COMPLETED"
            )
            if task in done:
                return task.result()
            self.check()
            raise TimeoutError(f"no result in {timeout:g}s")
        finally:
            task.cancel()
            exited.cancel()

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


_WORDS = re.compile(rb"[^0-9A-Za-z_-]+")  # what separates the ids in a key's name


async def _delete(redis: Redis, created: dict[str, Any]) -> None:
    """Delete what a client says it may have created (ids, keys, key patterns, and
    ``owners``: ids, each key whose name holds one of them as a word)."""
    if created.get("queue_key"):
        await cleanup(redis, list(created.get("arq_ids", [])), created["queue_key"])
    for chunk in _chunks(list(created.get("keys", [])), 500):
        await redis.unlink(*chunk)
    for pattern in created.get("patterns", []):
        await _unlink_scanned(redis, pattern, lambda key: True)
    owners = {str(i).encode() for i in created.get("owners", [])}
    if owners:
        await _unlink_scanned(redis, "*", lambda key: not owners.isdisjoint(_WORDS.split(key)))


async def _unlink_scanned(redis: Redis, pattern: str, doomed: Callable[[bytes], bool]) -> None:
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=1000):
        if doomed(key):
            batch.append(key)
        if len(batch) >= 500:
            await redis.unlink(*batch)
            batch = []
    if batch:
        await redis.unlink(*batch)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _read_probe(path: Path) -> dict[str, float] | None:
    """The probe's figures, once the worker has written them (a small local file)."""
    try:
        data: dict[str, float] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


async def _wait_for_probe(worker: Worker, path: Path) -> dict[str, float]:
    deadline = time.perf_counter() + WORKER_TIMEOUT
    while (seen := _read_probe(path)) is None:
        worker.check()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not drained in {WORKER_TIMEOUT:g}s")
        await asyncio.sleep(0.02)
    return seen


async def measure_drain(
    system: System, url: str, redis: Redis, task: str, n: int, tmp: Path
) -> Sample:
    """Enqueue ``n`` jobs of ``task``, then start the worker and time it draining them."""
    mod = system.module
    assert mod is not None
    queue = _queue(system.key, task)
    probe = tmp / f"{queue}.json"
    meter = Meter(redis)
    client = mod.Client(url, queue)
    try:
        async with client:
            calls0, cpu0 = await meter.snapshot()
            start = time.perf_counter()
            await client.enqueue_bulk(task, n)
            enqueue_s = time.perf_counter() - start
            worker = Worker(system, url, queue, tmp / f"{queue}.log", probe, n)
            async with worker:
                try:
                    seen = await _wait_for_probe(worker, probe)
                    await asyncio.sleep(SETTLE)
                    calls1, cpu1 = await meter.snapshot()
                except Exception as exc:
                    raise RuntimeError(f"{exc}\n{worker.tail()}") from exc
                rss = worker.peak_mb()
    finally:
        await _delete(redis, client.created())
    return Sample(
        jobs=n,
        value=n / seen["wall"],
        extra=enqueue_s,
        commands=meter.net(calls0, calls1),
        redis_cpu_s=cpu1 - cpu0,
        worker_cpu_s=seen["cpu"] * n / max(n - 1, 1),
        rss_mb=rss,
    )


async def _timed(
    meter: Meter, worker: Worker, jobs: int, body: Callable[[], Awaitable[tuple[float, float]]]
) -> Sample:
    calls0, cpu0 = await meter.snapshot()
    wcpu0 = worker.cpu_s()
    value, extra = await worker.alive(body(), WORKER_TIMEOUT)
    wcpu1 = worker.cpu_s()
    calls1, cpu1 = await meter.snapshot()
    return Sample(jobs, value, extra, meter.net(calls0, calls1), cpu1 - cpu0, wcpu1 - wcpu0)


async def measure_latency(
    system: System, url: str, redis: Redis, workloads: list[str], sizes: Sizes, tmp: Path
) -> dict[str, Sample | str]:
    """Round trips, chain and fan on one warmed-up worker; a failed workload maps to its error."""
    mod = system.module
    assert mod is not None
    queue = _queue(system.key, "latency")
    meter = Meter(redis)
    client = mod.Client(url, queue)
    out: dict[str, Sample | str] = {}

    async def roundtrips() -> tuple[float, float]:
        took = []
        for i in range(sizes.roundtrips):
            value, ms = await _roundtrip(client, i)
            took.append(ms)
            _expect(value, i + 1)
        return statistics.median(took), _p99(took)

    async def chain() -> tuple[float, float]:
        start = time.perf_counter()
        _expect(await client.chain(sizes.chain), sizes.chain)
        total = time.perf_counter() - start
        return total, total * 1000 / sizes.chain

    async def fan() -> tuple[float, float]:
        start = time.perf_counter()
        _expect(await client.fan(sizes.fan), expected_fan(sizes.fan))
        return time.perf_counter() - start, math.nan

    bodies = {
        "roundtrip": (sizes.roundtrips, roundtrips),
        "chain": (sizes.chain, chain),
        "fan": (sizes.fan + 2, fan),
    }
    worker = Worker(system, url, queue, tmp / f"{queue}.log", None, 0)
    try:
        async with client, worker:
            try:
                _expect(await worker.alive(client.roundtrip(0), 120), 1)  # warm-up
            except Exception as exc:
                raise RuntimeError(f"warm-up: {_why(exc)}\n{worker.tail()}") from exc
            dead = ""
            for name in workloads:
                jobs, body = bodies[name]
                if dead:
                    out[name] = dead
                    continue
                try:
                    out[name] = await _timed(meter, worker, jobs, body)
                except Exception as exc:
                    out[name] = f"{_why(exc)}\n{worker.tail()}"
                    with contextlib.suppress(RuntimeError):
                        worker.check()
                        continue
                    dead = f"not run: the worker died during {name}"
    finally:
        await _delete(redis, client.created())
    return out


async def _roundtrip(client: Any, x: int) -> tuple[Any, float]:
    """One round trip's result and milliseconds; a client in a child process times it there."""
    timed = getattr(client, "timed_roundtrip", None)
    if timed is not None:
        value, ms = await timed(x)
        return value, float(ms)
    start = time.perf_counter()
    value = await client.roundtrip(x)
    return value, (time.perf_counter() - start) * 1000


def _expect(value: object, want: int) -> None:
    if value != want:
        raise RuntimeError(f"wrong result {value!r}, expected {want}")


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]


# -- the runs -----------------------------------------------------------------------------

Results = dict[tuple[str, str], list[Sample | str]]  # (system key, workload) -> one per run


async def run_system(
    system: System, url: str, redis: Redis, workloads: list[str], sizes: Sizes, tmp: Path
) -> dict[str, Sample | str]:
    out: dict[str, Sample | str] = {}
    for name, task, n in (("drain", "noop", sizes.drain), ("sleep", "sleep", sizes.sleep)):
        if name in workloads:
            try:
                out[name] = await measure_drain(system, url, redis, task, n, tmp)
            except Exception as exc:
                out[name] = _why(exc) + "\n" + str(exc).partition("\n")[2]
    latency: list[str] = [w for w in ("roundtrip", "chain", "fan") if w in workloads]
    if latency:
        try:
            out.update(await measure_latency(system, url, redis, latency, sizes, tmp))
        except Exception as exc:
            out.update(dict.fromkeys(latency, _why(exc) + "\n" + str(exc).partition("\n")[2]))
    return out


def _progress(run: int, runs: int, system: System, workload: str, got: Sample | str) -> None:
    head = f"run {run}/{runs} {system.name} {workload}:"
    if isinstance(got, str):
        print(f"{head} FAILED {got}", flush=True)
        return
    figures = {
        "drain": f"{got.value:,.0f} jobs/s (enqueue {got.extra:.2f} s)",
        "sleep": f"{got.value:,.0f} jobs/s (enqueue {got.extra:.2f} s)",
        "roundtrip": f"p50 {got.value:.2f} ms, p99 {got.extra:.2f} ms",
        "chain": f"{got.value:.3f} s, {got.extra:.2f} ms/hop",
        "fan": f"{got.value:.3f} s",
    }[workload]
    rss = f", RSS {got.rss_mb:.0f} MB" if not math.isnan(got.rss_mb) else ""
    print(
        f"{head} {figures}, {got.cmds_per_job:.2f} cmds/job, Redis CPU "
        f"{got.redis_cpu_us:.0f} us/job, worker CPU {got.worker_cpu_ms:.3f} ms/job{rss}",
        flush=True,
    )


async def bench(
    args: argparse.Namespace, systems: list[System], url: str, private: bool, tmp: Path
) -> None:
    sizes = Sizes(args.drain_jobs, args.sleep_jobs, args.roundtrips, args.chain, args.fan)
    redis = Redis.from_url(url)
    results: Results = {}
    began, load0 = time.perf_counter(), os.getloadavg()[0]
    try:
        version = (await redis.info("server"))["redis_version"]
        idle_meter = Meter(redis)  # the server's own idle CPU, counted in every Redis CPU figure
        _, idle0 = await idle_meter.snapshot()
        await asyncio.sleep(1)
        _, idle1 = await idle_meter.snapshot()
        if int(str(version).split(".")[0]) < 7:
            print(f"WARNING: Redis {version}; the figures assume Redis 7 (streaq needs it)")
        for system in systems:
            if system.module is None:
                print(f"{system.key}: not installed ({system.error})", flush=True)
        for run in range(1, args.runs + 1):
            for system in systems:  # interleaved, so drift hits every system alike
                if system.module is None:
                    continue
                got = await run_system(system, url, redis, args.workloads, sizes, tmp)
                for workload in args.workloads:
                    results.setdefault((system.key, workload), []).append(got[workload])
                    _progress(run, args.runs, system, workload, got[workload])
        left = sorted(k.decode() for k in await redis.keys("*")) if private else None
    finally:
        await redis.aclose()
    print(
        f"\nOne worker process per system, concurrency {CONCURRENCY}, polls {POLL * 1000:g} ms "
        f"where a system polls, logging at WARNING; median of {args.runs} run(s); Redis "
        f"{version} at {url}; {os.cpu_count()} CPUs, 1-min load {load0:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; Redis idle CPU {(idle1 - idle0) * 1e6:.0f} us/s "
        f"(included in the Redis CPU figures); {time.perf_counter() - began:.0f} s in all"
    )
    sources = [
        f"{system.name} from {system.module.SOURCE}"
        for system in systems
        if isinstance(system.module, RemotePeer)
    ]
    if sources:
        print(f"Imported {', '.join(sources)}; clients in child processes.")
    Report(systems, args.workloads, results, sizes).print()
    if left is not None:
        shown = ", ".join(left[:8]) + (", ..." if len(left) > 8 else "")
        print(f"\nkeys left in the private Redis after cleanup: {len(left)} {shown}".rstrip())


# -- report -------------------------------------------------------------------------------


class Report:
    def __init__(
        self, systems: list[System], workloads: list[str], results: Results, sizes: Sizes
    ) -> None:
        self.systems, self.workloads, self.results, self.sizes = systems, workloads, results, sizes

    def samples(self, key: str, workload: str) -> list[Sample] | None:
        """The successful samples, or None when any run failed."""
        got = self.results.get((key, workload), [])
        ok = [s for s in got if isinstance(s, Sample)]
        return ok if ok and len(ok) == len(got) else None

    def median(self, key: str, workload: str, attr: str) -> float:
        runs = self.samples(key, workload)
        if runs is None:
            return math.nan
        return statistics.median(float(getattr(s, attr)) for s in runs)

    def failure(self, key: str, workload: str) -> str:
        for got in self.results.get((key, workload), []):
            if isinstance(got, str):
                return got.splitlines()[0]
        return ""

    def ratio(self, key: str, workload: str, attr: str) -> str:
        if key == "taskflow":
            return ""
        mine, tf = self.median(key, workload, attr), self.median("taskflow", workload, attr)
        if math.isnan(mine) or math.isnan(tf) or tf == 0:
            return ""
        return f" ({mine / tf:.2f}x)"

    def cell(self, key: str, workload: str) -> str:
        if workload not in self.workloads:
            return "-"
        if self.samples(key, workload) is None:
            return "failed"
        value = self.median(key, workload, "value")
        extra = self.median(key, workload, "extra")
        ratio = self.ratio(key, workload, "value")
        if workload in ("drain", "sleep"):
            return f"{value:,.0f}{ratio}"
        if workload == "roundtrip":
            return f"{value:.1f} / {extra:.1f}{ratio}"
        if workload == "chain":
            return f"{value:.2f} s, {extra:.1f} ms/hop{ratio}"
        return f"{value:.2f}{ratio}"

    def rows(self, cells: Callable[[System], list[str]]) -> None:
        for system in self.systems:
            if system.module is None:
                print(_row([system.key, "not installed", *[""] * (self.width - 2)]))
            else:
                print(_row([system.name, *cells(system)]))

    width = 0

    def table(
        self, head: list[str], cells: Callable[[System], list[str]], align: str = "---:"
    ) -> None:
        self.width = len(head)
        print(_row(head))
        print("|---" + f"|{align}" * (len(head) - 1) + "|")
        self.rows(cells)

    def print(self) -> None:
        s = self.sizes
        print(
            "\nMedians; (x) = this system's figure / taskflow's (round trip: of the p50). "
            "jobs/s: higher is better; ms, s and MB: lower is better.\n"
        )
        head = [
            "system",
            f"drain {s.drain:,} no-ops (jobs/s)",
            f"round trip x{s.roundtrips} p50 / p99 (ms)",
            f"chain of {s.chain}",
            f"fan 1 -> {s.fan:,} -> 1 (s)",
            f"sleep 10 ms x{s.sleep:,} (jobs/s)",
            "worker RSS, drain (MB)",
        ]

        def main(system: System) -> list[str]:
            rss = self.median(system.key, "drain", "rss_mb")
            order = ("drain", "roundtrip", "chain", "fan", "sleep")
            cells = [self.cell(system.key, w) for w in order]
            rss_cell = (
                "-" if math.isnan(rss) else f"{rss:.0f}{self.ratio(system.key, 'drain', 'rss_mb')}"
            )
            return [*cells, rss_cell]

        self.table(head, main)
        print("\nHow each system runs the chain and the fan, and enqueues the drain's jobs\n")
        self.table(
            ["system", "chain", "fan", "drain and sleep: enqueue"],
            lambda sy: [sy.module.CHAIN, sy.module.FAN, sy.module.ENQUEUE] if sy.module else [],
            align="---",
        )
        for title, attr, fmt in (
            (f"Redis commands per job (fan: per node, {s.fan + 2:,})", "cmds_per_job", ".2f"),
            ("Redis CPU per job (us)", "redis_cpu_us", ".0f"),
            ("Worker CPU per job (ms)", "worker_cpu_ms", ".3f"),
        ):
            print(f"\n{title}\n")
            self.table(["system", *self.workloads], functools.partial(self.costs, attr, fmt))
        self.details()

    def costs(self, attr: str, fmt: str, system: System) -> list[str]:
        return [self.cost(system.key, w, attr, fmt) for w in self.workloads]

    def cost(self, key: str, workload: str, attr: str, fmt: str) -> str:
        value = self.median(key, workload, attr)
        if math.isnan(value):
            return "failed" if self.samples(key, workload) is None else "-"
        return format(value, fmt) + self.ratio(key, workload, attr)

    def details(self) -> None:
        failures = [
            f"  {key} {w}: {self.failure(key, w)}"
            for key in (s.key for s in self.systems)
            for w in self.workloads
            if self.failure(key, w)
        ]
        if failures:
            print("\nFailures (first per workload):")
            print("\n".join(failures))
        print("\nRedis commands per job in the drain, by command (all runs):")
        for system in self.systems:
            runs = self.samples(system.key, "drain")
            if runs:
                total: Counter[str] = sum((r.commands for r in runs), Counter())
                count = sum(r.jobs for r in runs)
                parts = [
                    f"{c} {n / count:.2f}" for c, n in total.most_common() if n / count >= 0.01
                ]
                print(f"  {system.name}: " + ", ".join(parts))
        print("Per run, drain jobs/s | round trip p50 ms | chain s | fan s | sleep jobs/s:")
        for system in self.systems:
            if system.module is None:
                continue
            parts = []
            for w in ("drain", "roundtrip", "chain", "fan", "sleep"):
                got = self.results.get((system.key, w), [])
                parts.append(" ".join(_short(g) for g in got) or "-")
            print(f"  {system.name}: " + " | ".join(parts))


def _short(got: Sample | str) -> str:
    if isinstance(got, str):
        return "failed"
    return f"{got.value:,.0f}" if got.value >= 100 else f"{got.value:.3g}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# -- command line -------------------------------------------------------------------------


def _names(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
        return [n for n in allowed if n in names]  # canonical order

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per system (default 3)")
    parser.add_argument(
        "--only",
        type=_names(SYSTEMS),
        help=f"{','.join(SYSTEMS)} (default: all; {BASELINE} only with --baseline)",
    )
    parser.add_argument(
        "--workloads", type=_names(WORKLOADS), default=list(WORKLOADS), help=",".join(WORKLOADS)
    )
    parser.add_argument("--drain-jobs", type=int, default=20_000)
    parser.add_argument("--sleep-jobs", type=int, default=20_000)
    parser.add_argument("--roundtrips", type=int, default=300)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--fan", type=int, default=1000)
    parser.add_argument(
        "--redis-url", default=os.environ.get("TASKFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="start a private redis-server, so other clients cannot skew the Redis counters",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="PATH",
        help=f"another checkout of taskflow, measured as {BASELINE} right after taskflow",
    )
    args = parser.parse_args()
    if args.only is None:
        args.only = [key for key in SYSTEMS if key != BASELINE or args.baseline]
    if BASELINE in args.only and args.baseline is None:
        parser.error(f"{BASELINE} needs --baseline PATH")
    if args.baseline and not (args.baseline / "taskflow" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: no taskflow package there")
    baseline = args.baseline if BASELINE in args.only else None
    with server_url(args) as url, tempfile.TemporaryDirectory(prefix="taskflow-peers-") as tmp:
        systems = [load(key, baseline, Path(tmp)) for key in args.only]
        asyncio.run(bench(args, systems, url, args.private_redis, Path(tmp)))


if __name__ == "__main__":
    main()
