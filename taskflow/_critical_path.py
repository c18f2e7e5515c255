"""The critical path of a graph run (pure: no I/O), and its aggregation over many runs.

Classic critical-path method on the run's DAG, each node weighted by its run time: a
forward pass gives each node's earliest start and finish, a backward pass its latest, and
the slack (latest start minus earliest start) of the nodes on the longest path is 0.
Arithmetic is in integer microseconds, so ties are exact; a tie is broken towards the
lowest node index. :meth:`taskflow.RunHandle.critical_path` reads a run and calls
:func:`critical_path_of`; :func:`slowest_dependencies` aggregates paths per task.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ._dag import NodeState

__all__ = (
    "CriticalPath",
    "PathNode",
    "TaskShare",
    "TimedNode",
    "critical_path_of",
    "slowest_dependencies",
)

_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STILL_GOING = frozenset({NodeState.RUNNING, NodeState.RETRYING})


class TimedNode(Protocol):
    """What the computation needs of a node; :class:`taskflow.NodeStatus` has it all."""

    @property
    def name(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def task(self) -> str: ...
    @property
    def state(self) -> NodeState: ...
    @property
    def parents(self) -> Sequence[str]: ...
    @property
    def started(self) -> datetime | None: ...
    @property
    def finished(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class PathNode:
    """One node of a critical path.

    ``run_time`` is finished minus started of its last attempt in seconds; for a node still
    running (or between attempts) the time since its last attempt started; 0 for a node that
    did not run (``ran`` is false: pending, queued, skipped, upstream_failed, cancelled
    before it started). ``wait`` is its start minus the latest finish of its parents (a
    root's: minus the run's submission), never below 0; None if it did not start.
    """

    name: str
    index: int
    task: str
    state: NodeState
    run_time: float
    wait: float | None
    started: datetime | None
    finished: datetime | None

    @property
    def ran(self) -> bool:
        """Whether the node started (its run time counts)."""
        return self.started is not None and self.state not in _NOT_STARTED


_NOT_STARTED = frozenset({NodeState.PENDING, NodeState.QUEUED})


@dataclass(frozen=True, slots=True)
class CriticalPath:
    """The longest chain of dependent nodes of a run, weighted by run time.

    :ivar nodes: the path, first node first.
    :ivar length: the sum of the path's run times, in seconds.
    :ivar wall_time: the run's end (or, if ``partial``, now) minus its submission, seconds.
    :ivar queue_wait: ``wall_time - length`` (never below 0): the part of the wall time
        that was not work on the critical path — queue waits, retries' earlier attempts and
        backoff, release overhead. Speeding up nodes can win back at most ``length``.
    :ivar slack: every node's slack in seconds (0 on the path): how much longer it could
        have run without making the path longer.
    :ivar bottleneck: the node of the path with the longest run time (the first if tied),
        None if nothing on the path ran.
    :ivar partial: some node had not ended; running nodes count with their time so far.
    """

    nodes: list[PathNode]
    length: float
    wall_time: float
    queue_wait: float
    slack: dict[str, float] = field(default_factory=dict)
    bottleneck: PathNode | None = None
    partial: bool = False


@dataclass(frozen=True, slots=True)
class TaskShare:
    """One task's part of the critical paths of several runs (see slowest_dependencies).

    :ivar share: its run time on the paths over the sum of the paths' lengths (0 to 1).
    :ivar wall_share: the same run time over the sum of the runs' wall times.
    :ivar run_time: its total run time on the paths, seconds.
    :ivar paths: how many of the paths it is on.
    """

    task: str
    share: float
    wall_share: float
    run_time: float
    paths: int


def _us(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _US


def _seconds(us: int) -> float:
    return us / 1_000_000


def _weight(node: TimedNode, now: int) -> int:
    """A node's run time (µs): last attempt's finish minus start, or its time so far."""
    if node.started is None or node.state in _NOT_STARTED:
        return 0
    if node.finished is not None and node.state.terminal:
        return max(0, _us(node.finished) - _us(node.started))
    if node.state in _STILL_GOING:
        return max(0, now - _us(node.started))
    return 0


def _order(nodes: Sequence[TimedNode], index: dict[str, int]) -> list[int]:
    """Positions in ``nodes`` so that parents come first; ties by node index (Kahn)."""
    children: list[list[int]] = [[] for _ in nodes]
    indegree = [0] * len(nodes)
    for pos, node in enumerate(nodes):
        for parent in set(node.parents):
            if parent not in index:
                raise ValueError(f"node {node.name!r} has parent {parent!r}, not among the nodes")
            children[index[parent]].append(pos)
            indegree[pos] += 1
    ready = [(node.index, pos) for pos, node in enumerate(nodes) if not indegree[pos]]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, pos = heapq.heappop(ready)
        order.append(pos)
        for child in children[pos]:
            indegree[child] -= 1
            if not indegree[child]:
                heapq.heappush(ready, (nodes[child].index, child))
    if len(order) != len(nodes):
        stuck = sorted(nodes[p].name for p in range(len(nodes)) if indegree[p])
        raise ValueError(f"nodes {stuck[:5]!r} are on a cycle or below one; a run is a DAG")
    return order


def critical_path_of(
    nodes: Iterable[TimedNode],
    *,
    submitted: datetime | None = None,
    finished: datetime | None = None,
    now: datetime | None = None,
) -> CriticalPath:
    """The critical path of a run's nodes; O(nodes + edges).

    :param nodes: every node of the run (parents are named, and must be among them).
    :param submitted: when the run was submitted (default: the earliest start).
    :param finished: when the run ended (default: the latest finish, or ``now`` while a
        node has not ended).
    :param now: the time running nodes are measured to (default: the current time).
    :raises ValueError: no nodes, a duplicate name, an unknown parent, a cycle.
    """
    seq = list(nodes)
    if not seq:
        raise ValueError("a critical path needs at least one node, got none")
    index: dict[str, int] = {}
    for pos, node in enumerate(seq):
        if node.name in index:
            raise ValueError(f"node name {node.name!r} appears twice")
        index[node.name] = pos
    now_us = _us(now if now is not None else datetime.now(UTC))
    order = _order(seq, index)
    weight = [_weight(node, now_us) for node in seq]
    parents = [[index[p] for p in dict.fromkeys(node.parents)] for node in seq]
    children: list[list[int]] = [[] for _ in seq]
    for pos, ps in enumerate(parents):
        for p in ps:
            children[p].append(pos)
    earliest = [0] * len(seq)  # earliest finish
    for pos in order:
        start = max((earliest[p] for p in parents[pos]), default=0)
        earliest[pos] = start + weight[pos]
    length = max(earliest)
    latest = [0] * len(seq)  # latest finish
    for pos in reversed(order):
        latest[pos] = min((latest[c] - weight[c] for c in children[pos]), default=length)
    path = _walk(seq, parents, earliest, weight, length)
    partial = any(not node.state.terminal for node in seq)
    begin, end = _span(seq, submitted, finished, now_us, partial)
    path_nodes = [_path_node(seq[pos], weight[pos], seq, parents[pos], begin) for pos in path]
    wall = max(0, end - begin)
    ran = [n for n in path_nodes if n.run_time > 0]
    return CriticalPath(
        nodes=path_nodes,
        length=_seconds(length),
        wall_time=_seconds(wall),
        queue_wait=_seconds(max(0, wall - length)),
        slack={node.name: _seconds(latest[pos] - earliest[pos]) for pos, node in enumerate(seq)},
        bottleneck=max(ran, key=lambda n: n.run_time) if ran else None,
        partial=partial,
    )


def _walk(
    seq: Sequence[TimedNode],
    parents: list[list[int]],
    earliest: list[int],
    weight: list[int],
    length: int,
) -> list[int]:
    """The path, back from the lowest-index node finishing at ``length``, each step to the
    lowest-index parent finishing as the node (earliest) starts."""
    pos = min((p for p in range(len(seq)) if earliest[p] == length), key=lambda p: seq[p].index)
    path = [pos]
    while parents[pos]:
        start = earliest[pos] - weight[pos]
        pos = min((p for p in parents[pos] if earliest[p] == start), key=lambda p: seq[p].index)
        path.append(pos)
    path.reverse()
    return path


def _span(
    seq: Sequence[TimedNode],
    submitted: datetime | None,
    finished: datetime | None,
    now: int,
    partial: bool,
) -> tuple[int, int]:
    """The run's submission and end (µs), defaulted from the nodes' stamps."""
    starts = [_us(n.started) for n in seq if n.started is not None]
    ends = [_us(n.finished) for n in seq if n.finished is not None]
    begin = _us(submitted) if submitted is not None else min(starts, default=now)
    if finished is not None:
        return begin, _us(finished)
    return begin, now if partial else max(ends, default=begin)


def _path_node(
    node: TimedNode, weight: int, seq: Sequence[TimedNode], parents: list[int], begin: int
) -> PathNode:
    wait = None
    if node.started is not None and node.state not in _NOT_STARTED:
        ends = [_us(f) for p in parents if (f := seq[p].finished) is not None]
        wait = _seconds(max(0, _us(node.started) - max(ends, default=begin)))
    return PathNode(
        name=node.name,
        index=node.index,
        task=node.task,
        state=node.state,
        run_time=_seconds(weight),
        wait=wait,
        started=node.started,
        finished=node.finished,
    )


def slowest_dependencies(paths: Iterable[CriticalPath]) -> list[TaskShare]:
    """Per task, its share of the critical-path length of ``paths`` (runs of any graphs),
    largest share first (ties by task name): a task that dominates the runs it is in is a
    slow dependency. Paths of length 0 add nothing.
    """
    time_of: dict[str, int] = {}
    count: dict[str, int] = {}
    total = wall = 0
    for path in paths:
        total += round(path.length * 1_000_000)
        wall += round(path.wall_time * 1_000_000)
        on_path: dict[str, int] = {}
        for node in path.nodes:
            on_path[node.task] = on_path.get(node.task, 0) + round(node.run_time * 1_000_000)
        for task, us in on_path.items():
            time_of[task] = time_of.get(task, 0) + us
            count[task] = count.get(task, 0) + 1
    shares = [
        TaskShare(
            task=task,
            share=us / total if total else 0.0,
            wall_share=us / wall if wall else 0.0,
            run_time=_seconds(us),
            paths=count[task],
        )
        for task, us in time_of.items()
    ]
    return sorted(shares, key=lambda s: (-s.share, s.task))
