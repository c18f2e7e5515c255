"""Graph orchestration of taskflow against raw arq: a chain of 200 and a 1 -> 1,000 -> 1 fan.

Run from the repository root::

    python benchmarks/graph.py [--chain 200] [--fan 1000] [--runs 3]
                               [--redis-url URL | --private-redis]

Each system gets ONE worker process per run, concurrency 100, started and warmed up (one
job through it) before anything is timed, and stopped with SIGTERM afterwards.

- taskflow: the native graph. ``g.add`` builds the chain (each step takes the previous
  step's result) or the fan (1 seed, 1,000 leaves taking the seed's result, 1 join taking
  all 1,000 leaf results), then ``await g.submit()`` and ``await run.wait()`` (its default
  polling: 1 ms doubling up to 50 ms). Worker: ``python -m taskflow --log-level WARNING
  worker benchmarks.graph:app --queue <unique> --concurrency 100`` (default 50 ms idle poll).
- arq: arq has no dependencies, so the client drives the same orchestration: enqueue step
  i+1 after awaiting step i's result; for the fan, enqueue the seed, await it, enqueue the
  1,000 leaves one by one, await their results one by one, enqueue the join with all 1,000
  results, await it. Every wait is ``Job.result(poll_delay=0.01)``: arq's default 0.5 s
  would dominate. Worker: arq's ``Worker(max_jobs=100, poll_delay=0.01, burst=False)``,
  logging at WARNING, taskflow's orjson ``job_serializer``/``job_deserializer``.

Per scenario: total wall time at the client (graph building, submission and waiting
included); per-hop latencies from the start/finish timestamps the workers record (ms
resolution); Redis commands per node from INFO commandstats (whole server, workers' idle
polling and the client's waiting included, this script's own INFO calls excluded); Redis
CPU, worker process CPU (from /proc) and client CPU per node. The two systems alternate
within each run; tables show medians over ``--runs``.

Timing figures belong here, never in tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: make `benchmarks.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncio
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis

import taskflow
from benchmarks import common
from benchmarks.common import median
from taskflow._protocol import keys
from taskflow.graph import Graph
from taskflow.serde import arq_deserializer, arq_serializer

ARQ_POLL = 0.01  # arq worker poll_delay and client Job.result(poll_delay=...)
RUN_RETENTION = timedelta(seconds=30)  # a finished run's keys expire this long after it ends
TIMEOUT = 120.0


# -- the tasks, for both systems ----------------------------------------------------------


def build_app(redis_url: str | None = None) -> taskflow.TaskFlow:
    tf = taskflow.TaskFlow(
        redis_url=redis_url, settings=taskflow.Settings(run_retention=RUN_RETENTION)
    )

    @tf.task(name="step")
    async def step(x: int) -> int:
        return x + 1

    @tf.task(name="seed")
    async def seed() -> int:
        return 1

    @tf.task(name="leaf")
    async def leaf(seed: int, i: int) -> int:
        return seed + i

    @tf.task(name="join")
    async def join(values: list[int]) -> int:
        return sum(values)

    return tf


app = build_app()  # what `python -m taskflow worker benchmarks.graph:app` serves


async def arq_step(ctx: dict[str, Any], x: int) -> int:
    return x + 1


async def arq_seed(ctx: dict[str, Any]) -> int:
    return 1


async def arq_leaf(ctx: dict[str, Any], seed: int, i: int) -> int:
    return seed + i


async def arq_join(ctx: dict[str, Any], values: list[int]) -> int:
    return sum(values)


def arq_worker(queue_key: str, url: str) -> None:
    from arq.worker import func

    functions = [
        func(arq_step, name="step"),
        func(arq_seed, name="seed"),
        func(arq_leaf, name="leaf"),
        func(arq_join, name="join"),
    ]
    common.run_arq_worker(functions, queue_key, url, burst=False, poll_delay=ARQ_POLL)


def expected(scenario: str, n: int) -> int:
    return n if scenario == "chain" else sum(1 + i for i in range(n))


# -- one system's side of one run ---------------------------------------------------------

Timeline = tuple[list[int], list[int]]  # start and finish ms of each node, in node order


class TaskflowSide:
    """The native graph: build, submit, wait."""

    def __init__(self, url: str, queue: str, redis: Redis) -> None:
        self.client = build_app(url)
        self.queue = queue
        self.redis = redis
        self.runs: list[tuple[str, int]] = []  # run id, nodes
        self.submitted = 0.0  # wall clock when the latest graph was submitted

    async def __aenter__(self) -> TaskflowSide:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    def argv(self, url: str) -> list[str]:
        return common.taskflow_worker_argv("benchmarks.graph:app", self.queue)

    async def _submit_and_wait(self, g: Graph) -> dict[str, Any]:
        run = await g.submit()
        self.submitted = time.time()
        self.runs.append((run.run_id, len(g)))
        return await run.wait(timeout=TIMEOUT)

    async def warm_up(self) -> None:
        g = self.client.graph("bench-warmup")
        g.add(self.client.get_task("seed"), queue=self.queue)
        await self._submit_and_wait(g)

    async def chain(self, n: int) -> int:
        step = self.client.get_task("step")
        g = self.client.graph("bench-chain")
        node = g.add(step, 0, name="s0", queue=self.queue)
        for i in range(1, n):
            node = g.add(step, node, name=f"s{i}", queue=self.queue)
        return int((await self._submit_and_wait(g))[node.name])

    async def fan(self, n: int) -> int:
        seed, leaf, join = (self.client.get_task(t) for t in ("seed", "leaf", "join"))
        g = self.client.graph("bench-fan")
        root = g.add(seed, name="seed", queue=self.queue)
        leaves = [g.add(leaf, root, i, name=f"leaf{i}", queue=self.queue) for i in range(n)]
        g.add(join, leaves, name="join", queue=self.queue)
        return int((await self._submit_and_wait(g))["join"])

    async def timeline(self) -> Timeline:
        run_id, n = self.runs[-1]
        raw = await self.redis.hgetall(keys.run(run_id, "timing"))  # type: ignore[misc]
        t = {
            k.decode(): int(v)
            for k, v in raw.items()
            if b":" in k and not k.endswith((b":w", b":a"))
        }
        return [t[f"{i}:s"] for i in range(n)], [t[f"{i}:f"] for i in range(n)]

    def created(self) -> tuple[list[str], list[str], str]:
        """Job ids, other keys and the queue key this side may have created."""
        ids = [keys.node_job_id(run_id, i) for run_id, n in self.runs for i in range(n)]
        run_keys = [k for run_id, _ in self.runs for k in keys.run_keys(run_id)]
        return ids, run_keys, common.taskflow_queue_key(self.queue)


class ArqSide:
    """The client drives the graph: enqueue, await the result, enqueue the next."""

    def __init__(self, url: str, queue: str, redis: Redis) -> None:
        self.url = url
        self.queue_key = common.arq_queue_key(queue)
        self.redis = redis
        self.ids: list[str] = []
        self.last: list[str] = []  # job ids of the latest scenario, in node order
        self.pool: Any = None
        self.submitted = 0.0  # wall clock when the latest scenario's first job was enqueued

    async def __aenter__(self) -> ArqSide:
        from arq.connections import RedisSettings, create_pool

        self.pool = await create_pool(
            RedisSettings.from_dsn(self.url),
            job_serializer=arq_serializer,
            job_deserializer=arq_deserializer,
            default_queue_name=self.queue_key,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.aclose()

    def argv(self, url: str) -> list[str]:
        return common.arq_worker_argv(str(Path(__file__).resolve()), self.queue_key, url)

    async def _enqueue(self, name: str, *args: Any) -> Any:
        job = await self.pool.enqueue_job(name, *args)
        assert job is not None
        if not self.last:
            self.submitted = time.time()
        self.ids.append(job.job_id)
        self.last.append(job.job_id)
        return job

    async def warm_up(self) -> None:
        await (await self._enqueue("seed")).result(timeout=TIMEOUT, poll_delay=ARQ_POLL)

    async def chain(self, n: int) -> int:
        self.last = []
        x = 0
        for _ in range(n):
            x = await (await self._enqueue("step", x)).result(poll_delay=ARQ_POLL)
        return x

    async def fan(self, n: int) -> int:
        self.last = []
        seed = await (await self._enqueue("seed")).result(poll_delay=ARQ_POLL)
        jobs = [await self._enqueue("leaf", seed, i) for i in range(n)]
        values = [await job.result(poll_delay=ARQ_POLL) for job in jobs]
        return int(await (await self._enqueue("join", values)).result(poll_delay=ARQ_POLL))

    async def timeline(self) -> Timeline:
        return await common.result_times(self.redis, self.last)

    def created(self) -> tuple[list[str], list[str], str]:
        return self.ids, [], self.queue_key


Side = TaskflowSide | ArqSide
SIDES: dict[str, Callable[[str, str, Redis], Side]] = {
    f"taskflow {taskflow.__version__}": TaskflowSide,
    f"arq {common.arq_version()}": ArqSide,
}


# -- measuring ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    system: str
    scenario: str  # chain | fan
    nodes: int
    total_s: float
    hops: dict[str, float]  # latencies in ms from the workers' timestamps
    commands: Counter[str] = field(compare=False)
    redis_cpu_s: float
    worker_cpu_s: float
    client_cpu_s: float

    def __getattr__(self, name: str) -> float:  # hop latencies, for _median
        if name.startswith("hop_"):
            return self.hops[name[4:]]
        raise AttributeError(name)

    @property
    def per_hop_ms(self) -> float:
        return self.total_s * 1000 / self.nodes

    @property
    def cmds_per_node(self) -> float:
        return sum(self.commands.values()) / self.nodes

    @property
    def redis_cpu_us(self) -> float:
        return self.redis_cpu_s / self.nodes * 1e6

    @property
    def worker_cpu_ms(self) -> float:
        return self.worker_cpu_s / self.nodes * 1000

    @property
    def client_cpu_ms(self) -> float:
        return self.client_cpu_s / self.nodes * 1000


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hops(scenario: str, timeline: Timeline, wall: tuple[float, float, float]) -> dict[str, float]:
    """Latencies in ms; ``wall`` is the client's clock at start, submission and end."""
    st, ft = timeline
    began, submitted, ended = (t * 1000 for t in wall)
    hops = {
        "submit": submitted - began,  # building and submitting; arq: the first enqueue
        "pickup": st[0] - submitted,  # until the first node starts in the worker
    }
    if scenario == "chain":
        # mean, not median: the timestamps have 1 ms resolution and a handoff takes less
        hops["handoff"] = statistics.fmean(st[i + 1] - ft[i] for i in range(len(st) - 1))
    else:
        leaves_st, leaves_ft = st[1:-1], ft[1:-1]
        hops["out"] = min(leaves_st) - ft[0]
        hops["leaves"] = max(leaves_ft) - min(leaves_st)
        hops["in"] = st[-1] - max(leaves_ft)
    hops["notice"] = ended - ft[-1]  # last node's finish until the client has the result
    return hops


async def _timed(
    system: str,
    scenario: str,
    nodes: int,
    side: Side,
    meter: common.Meter,
    pid: int,
    body: Callable[[], Awaitable[int]],
) -> Sample:
    calls0, cpu0 = await meter.snapshot()
    worker0, client0 = _proc_cpu(pid), time.process_time()
    began, start = time.time(), time.perf_counter()
    value = await asyncio.wait_for(body(), TIMEOUT)
    total, ended = time.perf_counter() - start, time.time()
    client1, worker1 = time.process_time(), _proc_cpu(pid)
    calls1, cpu1 = await meter.snapshot()
    want = expected(scenario, nodes - 2 if scenario == "fan" else nodes)
    if value != want:
        raise RuntimeError(f"{system} {scenario}: result {value}, expected {want}")
    return Sample(
        system=system,
        scenario=scenario,
        nodes=nodes,
        total_s=total,
        hops=_hops(scenario, await side.timeline(), (began, side.submitted, ended)),
        commands=meter.net(calls0, calls1),
        redis_cpu_s=cpu1 - cpu0,
        worker_cpu_s=worker1 - worker0,
        client_cpu_s=client1 - client0,
    )


async def measure(system: str, url: str, chain: int, fan: int, redis: Redis) -> list[Sample]:
    queue = f"bench-graph-{uuid.uuid4().hex[:12]}"
    meter = common.Meter(redis)
    side = SIDES[system](url, queue, redis)
    try:
        async with side, common.worker_process(side.argv(url), common.worker_env(url)) as proc:
            await asyncio.wait_for(side.warm_up(), 60)
            samples = [
                await _timed(
                    system, "chain", chain, side, meter, proc.pid, lambda: side.chain(chain)
                ),
                await _timed(system, "fan", fan + 2, side, meter, proc.pid, lambda: side.fan(fan)),
            ]
    finally:
        left = await _cleanup_side(side, redis)
    if left:
        print(f"WARNING: {system}: {left} keys left after cleanup", flush=True)
    return samples


async def _cleanup_side(side: Side, redis: Redis) -> int:
    """Delete every key the side may have created; return how many still exist."""
    ids, others, queue_key = side.created()
    await common.cleanup(redis, ids, queue_key)  # job, result, retry, in-progress, failures, queue
    for chunk in common.chunks(others, 500):
        await redis.unlink(*chunk)
    every = [p + i for i in ids for p in common.KEY_PREFIXES] + others
    every += [queue_key, queue_key + ":health-check"]
    return sum([int(await redis.exists(*chunk)) for chunk in common.chunks(every, 500)])


# -- report -------------------------------------------------------------------------------


def _pick(samples: list[Sample], system: str, scenario: str) -> list[Sample]:
    return [s for s in samples if s.system == system and s.scenario == scenario]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _costs(runs: list[Sample]) -> list[str]:
    return [
        f"{median(runs, 'cmds_per_node'):.1f}",
        f"{median(runs, 'redis_cpu_us'):.0f}",
        f"{median(runs, 'worker_cpu_ms'):.3f}",
        f"{median(runs, 'client_cpu_ms'):.3f}",
    ]


COST_HEAD = "Redis cmds/node | Redis CPU/node (us) | worker CPU/node (ms) | client CPU/node (ms)"


# (header, Sample attribute, format) of each scenario's latency columns
LATENCY_COLUMNS = {
    "chain": [
        ("total (s)", "total_s", ".3f"),
        ("per hop (ms)", "per_hop_ms", ".2f"),
        ("submit (ms)", "hop_submit", ".0f"),
        ("pickup (ms)", "hop_pickup", ".0f"),
        ("handoff (ms)", "hop_handoff", ".2f"),
        ("notice (ms)", "hop_notice", ".0f"),
    ],
    "fan": [
        ("total (s)", "total_s", ".3f"),
        ("submit (ms)", "hop_submit", ".0f"),
        ("pickup (ms)", "hop_pickup", ".0f"),
        ("fan-out (ms)", "hop_out", ".0f"),
        ("leaves (ms)", "hop_leaves", ".0f"),
        ("fan-in (ms)", "hop_in", ".0f"),
        ("notice (ms)", "hop_notice", ".0f"),
    ],
}


def _print_tables(samples: list[Sample], chain: int, fan: int) -> None:
    tf, arq = SIDES
    titles = {
        "chain": f"Chain of {chain:,} (each step takes the previous step's result)",
        "fan": f"Fan 1 -> {fan:,} -> 1 (the join takes all {fan:,} leaf results)",
    }
    for scenario, columns in LATENCY_COLUMNS.items():
        print(f"\n{titles[scenario]}\n")
        print(_row(["system", *(c[0] for c in columns), COST_HEAD]))
        print("|---" + "|---:" * (len(columns) + 4) + "|")
        for system in SIDES:
            runs = _pick(samples, system, scenario)
            cells = [format(median(runs, attr), fmt) for _, attr, fmt in columns]
            print(_row([system, *cells, *_costs(runs)]))
    print()
    for scenario in ("chain", "fan"):
        a, t = _pick(samples, arq, scenario), _pick(samples, tf, scenario)
        ratios = ", ".join(
            f"{label} {median(a, attr) / median(t, attr):.2f}" for label, attr in RATIOS
        )
        print(f"ratio arq/taskflow, {scenario}: {ratios}")


RATIOS = (
    ("total", "total_s"),
    ("Redis cmds/node", "cmds_per_node"),
    ("worker CPU/node", "worker_cpu_ms"),
)


def _print_details(samples: list[Sample]) -> None:
    print("per run, total (s):")
    for scenario in ("chain", "fan"):
        for system in SIDES:
            runs = _pick(samples, system, scenario)
            print(f"  {scenario} {system}: " + ", ".join(f"{s.total_s:.3f}" for s in runs))
    print("Redis commands per node, by command (all runs, incl. commands inside Lua scripts):")
    for scenario in ("chain", "fan"):
        for system in SIDES:
            runs = _pick(samples, system, scenario)
            breakdown = common.command_breakdown(
                (s.commands for s in runs), sum(s.nodes for s in runs)
            )
            print(f"  {scenario} {system}: {breakdown}")


async def bench(chain: int, fan: int, runs: int, url: str, private: bool) -> None:
    redis = Redis.from_url(url)
    samples: list[Sample] = []
    load = os.getloadavg()[0]
    try:
        version = (await redis.info("server"))["redis_version"]
        for i in range(runs):
            for system in SIDES:  # interleaved, so drift hits both alike
                for s in await measure(system, url, chain, fan, redis):
                    samples.append(s)
                    hops = ", ".join(f"{k} {v:.1f} ms" for k, v in s.hops.items())
                    print(
                        f"run {i + 1}/{runs} {system} {s.scenario}: {s.total_s:.3f} s ({hops}), "
                        f"{s.cmds_per_node:.1f} cmds/node, "
                        f"worker CPU {s.worker_cpu_ms:.3f} ms/node",
                        flush=True,
                    )
        left = await redis.dbsize() if private else None
    finally:
        await redis.aclose()
    print(
        f"\nOne worker process per system, concurrency {common.CONCURRENCY}; arq polls every "
        f"{ARQ_POLL * 1000:g} ms (worker and client); median of {runs} run(s); "
        f"Redis {version} at {url}; 1-min load average {load:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after, {os.cpu_count()} CPUs"
    )
    _print_tables(samples, chain, fan)
    _print_details(samples)
    if left is not None:
        print(f"keys left in the private Redis after cleanup: {left}")


def main() -> None:
    options = common.parser(__doc__)
    options.add_argument("--chain", type=int, default=200, help="chain length (default 200)")
    options.add_argument("--fan", type=int, default=1000, help="fan width (default 1000)")
    args = options.parse_args()
    if args.arq_worker:
        arq_worker(args.arq_worker, args.redis_url)
        return
    with common.server_url(args) as url:
        asyncio.run(bench(args.chain, args.fan, args.runs, url, args.private_redis))


if __name__ == "__main__":
    main()
