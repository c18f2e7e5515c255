"""Graph runs in Redis: atomic submission, run handles, status, waiting, cancelling.

The release of children happens in the workers, in ``lua/finish_node.lua``: one script
per finished node stores its result, sets its state and releases or settles its children.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import anyio
import orjson
from redis.exceptions import RedisError

from ._clock import ms_to_datetime, now_ms
from ._critical_path import CriticalPath, critical_path_of
from ._dag import Node, NodeState, RunState, encode_template, node_refs, resolve_template
from ._protocol import keys
from ._protocol.codecs import (
    check_size,
    encode_node_job,
    encode_node_spec,
    encode_node_static,
)
from ._protocol.scripts import Caller, FinishReply, NodeStart, NodeVerdict
from .errors import GraphFailed, ResultTimeout, RunNotFound, redis_errors

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from ._client import Client
    from .graph import Graph

__all__ = (
    "NodeArguments",
    "NodeStatus",
    "RunHandle",
    "RunStatus",
    "node_arguments",
    "settle_run",
    "start_node",
    "submit_graph",
)

logger = logging.getLogger("taskflow.graph")

_READ_CHUNK = 1000
"""Fields per command when a client reads a big run (status, a wide join's parents)."""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One node of a run, as stored in Redis."""

    name: str
    index: int
    task: str
    queue: str
    state: NodeState
    parents: list[str]
    data_parents: list[str]
    attempt: int
    started: datetime | None
    finished: datetime | None
    worker: str | None
    error: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class RunStatus:
    """A run and its nodes."""

    run_id: str
    graph: str
    state: RunState
    total: int
    done: int
    created: datetime
    finished: datetime | None
    nodes: dict[str, NodeStatus] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Nodes per state."""
        out: dict[str, int] = {}
        for node in self.nodes.values():
            out[node.state.value] = out.get(node.state.value, 0) + 1
        return out


def _spec(node: Node, limit: int) -> bytes:
    args, kwargs = node.task.signature.encode_template(
        node.args,
        node.kwargs,
        is_deferred=lambda value: any(True for _ in node_refs(value)),
        encode_deferred=encode_template,
    )
    spec = encode_node_spec(
        name=node.name,
        task=node.task.name,
        queue=node.queue,
        trigger=node.trigger.value,
        parents=[p.index for p in node.parents],
        data_parents=[p.index for p in node.data_parents],
        args=args,
        kwargs=kwargs,
    )
    return check_size(f"arguments of node {node.name!r}", spec, limit)


@dataclass(frozen=True, slots=True)
class NodeArguments:
    """What a worker learns when it starts a node: run it with these arguments, or not."""

    verdict: NodeVerdict
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


async def start_node(
    app: Client,
    run_id: str,
    index: int,
    worker_id: str,
    attempt: int,
    via: Caller | None = None,
) -> NodeArguments:
    """Mark a node running and build its arguments from its parents' results.

    A data parent that did not succeed (possible under ``all_done``/``any_failed``) is
    passed as ``None``.
    """
    start = await app.scripts.node_start(run_id, index, worker_id, now_ms(), attempt, via)
    return await node_arguments(app, run_id, start)


async def node_arguments(app: Client, run_id: str, start: NodeStart) -> NodeArguments:
    """A node's call arguments from its start (by the claim script, or node_start.lua).

    A wide join's parents come separately (``start.fetch``), ``_READ_CHUNK`` per command:
    they have all ended, so reading them in several commands sees what one would.
    """
    if start.verdict is not NodeVerdict.RUN:
        return NodeArguments(start.verdict)
    spec = orjson.loads(start.spec)
    parents = start.parents
    if start.fetch:
        parents = await _parent_results(app, run_id, spec["data"])
    results: dict[int, Any] = {}
    for parent, state, raw in parents:
        succeeded = state == b"succeeded" and raw is not None
        results[parent] = orjson.loads(raw) if succeeded and raw is not None else None
    return NodeArguments(
        NodeVerdict.RUN,
        resolve_template(spec["a"], results),
        resolve_template(spec["k"], results),
    )


async def _parent_results(
    app: Client, run_id: str, parents: list[int]
) -> tuple[tuple[int, bytes | None, bytes | None], ...]:
    out: list[tuple[int, bytes | None, bytes | None]] = []
    for start in range(0, len(parents), _READ_CHUNK):
        chunk = parents[start : start + _READ_CHUNK]
        async with app.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.run(run_id, "state"), chunk)
            pipe.hmget(keys.run(run_id, "results"), chunk)
            states, results = await pipe.execute()
        out += zip(chunk, states, results, strict=True)
    return tuple(out)


async def submit_graph(graph: Graph) -> RunHandle:
    """Persist the graph and release its roots.

    The run's hashes are written ``keys.SUBMIT_CHUNK`` fields per command; then one script
    writes its meta (the run exists from then on, complete) and releases its roots a budget
    per call, resumed by any worker should this process die in between. A failure before
    the meta is written leaves no run: what was written is deleted (or expires).
    """
    graph.validate()
    app = graph.app
    settings = app.settings
    run_id = uuid.uuid4().hex
    now = now_ms()
    hashes, meta = _run_hashes(graph, run_id, now)
    max_age = _ms(settings.run_max_age)
    try:
        async with app.redis.pipeline(transaction=False) as pipe:
            for part, mapping in hashes.items():
                items = list(mapping.items())
                for start in range(0, len(items), keys.SUBMIT_CHUNK):
                    pipe.hset(
                        keys.run(run_id, part),
                        mapping=dict(items[start : start + keys.SUBMIT_CHUNK]),
                    )
                if items:
                    pipe.pexpire(keys.run(run_id, part), max_age)
            await pipe.execute()
        reply = await app.scripts.submit_run(
            run_id,
            meta,
            total=len(graph.nodes),
            now_ms=now,
            expiry_ms=_ms(settings.job_ttl),
            lease_ms=_ms(settings.worker.lease),
            max_age_ms=max_age,
        )
        if reply is None:
            raise RuntimeError(f"graph run {run_id}: its hashes were not all written")
    except BaseException:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await app.redis.delete(*keys.run_keys(run_id))
        raise
    if reply is FinishReply.MORE:
        await settle_run(app, run_id, settings.worker.lease)
    return RunHandle(app, run_id, graph)


async def settle_run(app: Client, run_id: str, lease: timedelta) -> None:
    """Go on with what ``run_id`` has left half-way (roots or children to release, nodes to
    cancel), a budget per script call, so Redis serves other clients in between. On a Redis
    error it stops: the run stays in the settling set, and any worker resumes it once
    ``lease`` has passed."""
    settings = app.settings
    reply = FinishReply.MORE
    try:
        while reply is FinishReply.MORE:
            reply = await app.scripts.settle_more(
                run_id,
                now_ms(),
                _ms(settings.run_retention),
                _ms(settings.job_ttl),
                _ms(lease),
            )
    except (RedisError, OSError) as exc:
        logger.warning("run %s: settling its nodes paused (%s); it will be resumed", run_id, exc)


def _ms(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


def _run_hashes(
    graph: Graph, run_id: str, now: int
) -> tuple[dict[str, dict[Any, Any]], dict[str, Any]]:
    """The run's hashes but its meta, field by field (see :data:`keys.RUN_FIELDS`), and its
    meta."""
    settings = graph.app.settings
    limit = settings.max_payload_bytes
    children: dict[int, list[int]] = {}
    for node in graph.nodes:
        for parent in node.parents:
            children.setdefault(parent.index, []).append(node.index)
    hashes: dict[str, dict[Any, Any]] = {part: {} for part in keys.RUN_FIELDS if part != "meta"}
    nodes, state, pending, static = (hashes[p] for p in ("nodes", "state", "pending", "static"))
    roots: list[int] = []
    for node in graph.nodes:
        i = node.index
        nodes[i] = _spec(node, limit)
        job = encode_node_job(node.task.name, run_id, i, now)
        static[i] = encode_node_static(
            node.trigger.value,
            keys.queue(node.queue),
            children.get(i, []),
            [p.index for p in node.data_parents],
            job,
        )
        state[i] = NodeState.PENDING.value
        # a root waits for ROOTS, the virtual node whose release of its children is theirs
        pending[i] = len(node.parents) or 1
        if not node.parents:
            roots.append(i)
    static[keys.ROOTS] = encode_node_static("", "", roots, [], b"")
    # hashes the scripts fill later exist from the start, with the run's expiry: a write to
    # a field keeps a key's TTL, so no script has to set one (see _PLACEHOLDER)
    for part in ("bad", "skip", "results", "timing"):
        hashes[part][_PLACEHOLDER] = b""
    meta = {
        "graph": graph.name,
        "status": RunState.RUNNING.value,
        "total": len(graph.nodes),
        "done": 0,
        "failed": 0,
        "cancelled": 0,
        "created_ms": now,
        "retention_ms": _ms(settings.run_retention),
    }
    return hashes, meta


class RunHandle:
    """A submitted run; re-attach from any process with ``app.run_handle(run_id)``."""

    def __init__(self, app: Client, run_id: str, graph: Graph | None = None) -> None:
        self.app = app
        self.run_id = run_id
        self._graph = graph
        self._last: RunStatus | None = None
        self._specs: dict[bytes, bytes] | None = None

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id}>"

    @redis_errors
    async def status(self) -> RunStatus:
        """Every node's state, attempts, timestamps and worker; errors of failed nodes.

        A big run is read ``_READ_CHUNK`` fields per command (pipelined), so no single read
        holds Redis up; the nodes' specs, which never change, are read once per handle.

        :raises RunNotFound: the run was never submitted, or its state expired.
        """
        meta = await cast(
            "Awaitable[dict[bytes, bytes]]", self.app.redis.hgetall(keys.run(self.run_id, "meta"))
        )
        if not meta:
            raise RunNotFound(self.run_id)
        indexes = [str(i) for i in range(int(meta[b"total"]))]
        if self._specs is None:
            self._specs = await self._fields("nodes", indexes)
        states = await self._fields("state", indexes)
        timing = await self._fields(
            "timing", [f"{i}:{part}" for i in indexes for part in ("s", "f", "w", "a")]
        )
        bad = [i.decode() for i, s in states.items() if s.decode() in _NOT_SUCCEEDED]
        errors = {int(i): orjson.loads(r) for i, r in (await self._fields("results", bad)).items()}
        status = _build_status(self.run_id, meta, self._specs, states, timing, errors)
        self._last = status
        return status

    async def _fields(self, part: str, fields: list[Any]) -> dict[bytes, bytes]:
        """The fields of one of the run's hashes that are set, ``_READ_CHUNK`` per HMGET."""
        if not fields:
            return {}
        key = keys.run(self.run_id, part)
        async with self.app.redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(fields), _READ_CHUNK):
                pipe.hmget(key, fields[start : start + _READ_CHUNK])
            chunks = await pipe.execute()
        values = (value for chunk in chunks for value in chunk)
        return {
            str(name).encode(): value
            for name, value in zip(fields, values, strict=True)
            if value is not None
        }

    @redis_errors
    async def wait(
        self, timeout: float | None = None, *, poll_interval: float = 0.25
    ) -> dict[str, Any]:
        """Wait for the run to end; return ``{node name: result}`` of the nodes that succeeded.

        :raises GraphFailed: a node failed, was cancelled or never ran because of one.
        :raises ResultTimeout: the run did not end within ``timeout`` seconds.
        :raises RunNotFound: the run is unknown or expired.
        """
        meta_key = keys.run(self.run_id, "meta")
        listener = await self.app.result_listener()
        future = listener.expect(self.run_id)
        notify = True
        try:
            with anyio.move_on_after(timeout):
                while True:
                    async with self.app.redis.pipeline(transaction=False) as pipe:
                        if notify:  # before the read, so the run's end is certain to reach us
                            pipe.sadd(keys.notify(self.run_id), listener.channel)
                            pipe.expire(keys.notify(self.run_id), int(timeout or 86400) + 1)
                        pipe.hget(meta_key, "status")
                        state = (await pipe.execute())[-1]
                    notify = False
                    if state is None:
                        raise RunNotFound(self.run_id)
                    if RunState(state.decode()).final:
                        await cast(
                            "Awaitable[int]",
                            self.app.redis.srem(keys.notify(self.run_id), listener.channel),
                        )
                        return await self._outcome()
                    await listener.wait(future, poll_interval)
                    if future.done():
                        future = listener.expect(self.run_id)
        finally:
            listener.forget(self.run_id, future)
        raise ResultTimeout(self.run_id, timeout or 0.0, what="run")

    async def _outcome(self) -> dict[str, Any]:
        status = await self.status()
        succeeded = {
            str(n.index).encode(): n.name
            for n in status.nodes.values()
            if n.state is NodeState.SUCCEEDED
        }
        raw = await self._fields("results", [i.decode() for i in succeeded])
        results = {succeeded[i]: orjson.loads(r) for i, r in raw.items()}
        failed = {
            n.name: n.error or {"type": "?", "message": n.state.value}
            for n in status.nodes.values()
            if n.state.value in _NOT_SUCCEEDED and n.state is not NodeState.SKIPPED
        }
        if failed:
            states = {n.name: n.state.value for n in status.nodes.values()}
            raise GraphFailed(self.run_id, failed, states, results)
        return results

    @redis_errors
    async def cancel(self, timeout: float = 5.0) -> RunStatus:
        """Cancel the run: nothing starts after this returns; running nodes are aborted.

        Waits up to ``timeout`` seconds for running nodes to stop; returns the status.
        """
        settings = self.app.settings
        retention, lease = _ms(settings.run_retention), _ms(settings.worker.lease)
        more = True
        while more:  # CANCEL_BUDGET nodes per call; nothing starts after the first
            reply = await self.app.scripts.cancel_run(self.run_id, now_ms(), retention, lease)
            if reply is None:
                raise RunNotFound(self.run_id)
            _, more = reply
        with anyio.move_on_after(timeout):
            while True:
                status = await self.status()
                if status.state.final:
                    return status
                await anyio.sleep(0.02)
        return await self.status()

    @redis_errors
    async def critical_path(self) -> CriticalPath:
        """The run's critical path: the longest chain of dependent nodes by run time, its
        length against the run's wall time, the slack of every node and the bottleneck.

        Read as :meth:`status` reads (in chunks); while the run goes on, the path is
        ``partial`` and running nodes count with their time so far. See
        :func:`taskflow.critical_path_of` for the definitions.

        :raises RunNotFound: the run was never submitted, or its state expired.
        """
        status = await self.status()
        return critical_path_of(
            status.nodes.values(),
            submitted=status.created,
            finished=status.finished,
            now=ms_to_datetime(now_ms()),
        )

    def to_mermaid(self) -> str:
        """The run as a Mermaid flowchart; node states (from the last ``status()``) as classes.

        Order-only edges are dotted. Before any ``status()`` call, states are unknown.
        """
        return _mermaid(self._graph, self._last)


_PLACEHOLDER = b"_"
"""A field that makes a run's later-filled hashes exist (and expire) from submission on."""

_NOT_SUCCEEDED = frozenset({"failed", "cancelled", "skipped", "upstream_failed"})


def _build_status(
    run_id: str,
    meta: dict[bytes, bytes],
    nodes: dict[bytes, bytes],
    states: dict[bytes, bytes],
    timing: dict[bytes, bytes],
    errors: dict[int, dict[str, Any]],
) -> RunStatus:
    m = {k.decode(): v.decode() for k, v in meta.items()}
    specs = {int(i): orjson.loads(raw) for i, raw in nodes.items()}
    names = {i: spec["name"] for i, spec in specs.items()}
    t = {k.decode(): v.decode() for k, v in timing.items()}

    def stamp(key: str) -> datetime | None:
        return ms_to_datetime(int(t[key])) if key in t else None

    out: dict[str, NodeStatus] = {}
    for i in sorted(specs):
        spec = specs[i]
        out[spec["name"]] = NodeStatus(
            name=spec["name"],
            index=i,
            task=spec["task"],
            queue=spec["queue"],
            state=NodeState(states[str(i).encode()].decode()),
            parents=[names[p] for p in spec["parents"]],
            data_parents=[names[p] for p in spec["data"]],
            attempt=int(t.get(f"{i}:a", 0)),
            started=stamp(f"{i}:s"),
            finished=stamp(f"{i}:f"),
            worker=t.get(f"{i}:w"),
            error=errors.get(i),
        )
    return RunStatus(
        run_id=run_id,
        graph=m.get("graph", ""),
        state=RunState(m.get("status", RunState.RUNNING.value)),
        total=int(m.get("total", 0)),
        done=int(m.get("done", 0)),
        created=ms_to_datetime(int(m.get("created_ms", 0))),
        finished=ms_to_datetime(int(m["finished_ms"])) if "finished_ms" in m else None,
        nodes=out,
    )


_COLOURS = {
    "pending": "fill:#eeeeee,stroke:#999999",
    "queued": "fill:#e8f0fe,stroke:#4a7bd0",
    "running": "fill:#fff4ce,stroke:#d4a017",
    "retrying": "fill:#ffe2b8,stroke:#d48a17",
    "succeeded": "fill:#d4edda,stroke:#28a745",
    "failed": "fill:#f8d7da,stroke:#dc3545",
    "cancelled": "fill:#e2e3e5,stroke:#6c757d",
    "skipped": "fill:#f1f1f1,stroke:#bbbbbb,stroke-dasharray:3",
    "upstream_failed": "fill:#fbe3d4,stroke:#e8743b",
}


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def _mermaid(graph: Graph | None, status: RunStatus | None) -> str:
    lines = ["flowchart TD"]
    edges: list[tuple[int, int, bool]] = []
    if status is not None:
        index = {n.name: n.index for n in status.nodes.values()}
        for ns in status.nodes.values():
            lines.append(f'    n{ns.index}["{_label(ns.name)}"]:::{ns.state.value}')
            data = set(ns.data_parents)
            edges += [(index[p], ns.index, p in data) for p in ns.parents]
    elif graph is not None:
        for node in graph.nodes:
            lines.append(f'    n{node.index}["{_label(node.name)}"]')
            data_ids = {p.index for p in node.data_parents}
            edges += [(p.index, node.index, p.index in data_ids) for p in node.parents]
    for parent, child, is_data in edges:
        lines.append(f"    n{parent} {'-->' if is_data else '-.->'} n{child}")
    lines += [f"    classDef {state} {style}" for state, style in _COLOURS.items()]
    return "\n".join(lines)
