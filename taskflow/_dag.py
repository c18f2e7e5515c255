"""The pure graph model: nodes, edges, validation, topological order and levels.

No I/O and no app: a :class:`Dag` checks its tasks against a registry mapping it is given.
:class:`taskflow.Graph` (in ``graph.py``) adds submission.

A node is one call of a task. Passing a node (or a list or dict holding nodes) as an
argument of another node makes a data edge: the parent's result is passed in its place.
``after=`` adds order-only edges. Trigger rules decide what a child does when a parent does
not succeed.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Protocol

from .errors import ConfigurationError, GraphCycle, GraphError

if TYPE_CHECKING:
    from ._arguments import Signature


class _Options(Protocol):
    @property
    def queue(self) -> str: ...


class TaskLike(Protocol):
    """What the model needs of a task: its name, default queue and signature."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> _Options: ...

    @property
    def signature(self) -> Signature: ...


__all__ = (
    "MAX_NODES",
    "REF_KEY",
    "Dag",
    "Node",
    "NodeState",
    "RunState",
    "Trigger",
    "encode_template",
    "node_refs",
    "resolve_template",
)

MAX_NODES: Final = 100_000
REF_KEY: Final = "__taskflow_node__"
"""Marker of a parent reference inside a stored argument template."""
_LITERAL_KEY: Final = "__taskflow_literal__"
_NAME = re.compile(r"^[A-Za-z0-9_.:\-\[\]@/ ]{1,200}$")


class Trigger(StrEnum):
    """When a node runs, given how its parents ended."""

    ALL_SUCCESS = "all_success"  #: every parent succeeded (default)
    ALL_DONE = "all_done"  #: every parent ended, however
    ANY_FAILED = "any_failed"  #: every parent ended and at least one failed
    NONE_FAILED = "none_failed"  #: every parent ended and none failed (skipped is fine)


class RunState(StrEnum):
    """A graph run's state. The last three are final."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"  #: every node succeeded or was skipped
    FAILED = "failed"  #: a node failed (or never ran because one did)
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self is not RunState.RUNNING


class NodeState(StrEnum):
    """A node's state in a run. The last five are terminal."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        NodeState.SUCCEEDED,
        NodeState.FAILED,
        NodeState.CANCELLED,
        NodeState.SKIPPED,
        NodeState.UPSTREAM_FAILED,
    }
)


@dataclass(eq=False, slots=True)
class Node:
    """One task call in a graph. Build with :meth:`Graph.add`; pass it to later nodes."""

    graph: Dag
    index: int
    name: str
    task: TaskLike
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    trigger: Trigger
    queue: str
    parents: list[Node] = field(default_factory=list)  # data and order parents, no repeats
    data_parents: list[Node] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<Node {self.name!r} task={self.task.name}>"

    def __hash__(self) -> int:
        return id(self)


def node_refs(value: Any) -> Iterator[Node]:
    """Nodes referenced anywhere inside an argument (lists, tuples, dicts, nested)."""
    if isinstance(value, Node):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from node_refs(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from node_refs(item)


def encode_template(value: Any) -> Any:
    """An argument with nodes replaced by ``{REF_KEY: index}`` markers, JSON-ready."""
    if isinstance(value, Node):
        return {REF_KEY: value.index}
    if isinstance(value, list | tuple):
        return [encode_template(v) for v in value]
    if isinstance(value, dict):
        encoded = {k: encode_template(v) for k, v in value.items()}
        # a user dict that looks like a marker is wrapped, so it is never mistaken for one
        return {_LITERAL_KEY: encoded} if REF_KEY in value or _LITERAL_KEY in value else encoded
    return value


def resolve_template(value: Any, results: Mapping[int, Any]) -> Any:
    """Inverse of :func:`encode_template`, with each marker replaced by its parent's result."""
    if isinstance(value, list):
        return [resolve_template(v, results) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and REF_KEY in value:
            return results[value[REF_KEY]]
        if len(value) == 1 and _LITERAL_KEY in value:
            return {k: resolve_template(v, results) for k, v in value[_LITERAL_KEY].items()}
        return {k: resolve_template(v, results) for k, v in value.items()}
    return value


class Dag:
    """A DAG of task calls, built in memory; the base of :class:`taskflow.Graph`.

    :param name: the graph's name, shown in run status.
    :param tasks: the registry the nodes' tasks must belong to (name -> task).
    """

    def __init__(self, name: str, tasks: Mapping[str, TaskLike]) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(
                f"graph name {name!r} is invalid: use 1-200 letters, digits, spaces and _.:-[]@/"
            )
        self.name = name
        self._tasks = tasks
        self.nodes: list[Node] = []
        self._by_name: dict[str, Node] = {}
        self._children: dict[int, list[Node]] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} nodes={len(self.nodes)}>"

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise GraphError(f"graph {self.name!r} has no node named {name!r}") from None

    # -- building -------------------------------------------------------------------------

    def add(
        self,
        task: TaskLike,
        /,
        *args: Any,
        name: str | None = None,
        trigger: Trigger | str = Trigger.ALL_SUCCESS,
        after: Iterable[Node] = (),
        queue: str | None = None,
        **kwargs: Any,
    ) -> Node:
        """Add a call of ``task``; nodes among the arguments become its data parents.

        :param name: unique in the graph; defaults to the task's name.
        :param trigger: ``all_success`` (default), ``all_done``, ``any_failed``, ``none_failed``.
        :param after: nodes that must end first without passing their results.
        :param queue: overrides the task's queue for this node.
        :raises GraphError: duplicate name, foreign node, unknown task, bad arguments.
        """
        self._check_task(task)
        node_name = name if name is not None else task.name
        if not isinstance(node_name, str) or not _NAME.match(node_name):
            raise GraphError(f"node name {node_name!r} is invalid: 1-200 letters, digits, _.:-[]@/")
        if node_name in self._by_name:
            raise GraphError(
                f"graph {self.name!r} already has a node named {node_name!r}; pass name= to add "
                "another call of the same task"
            )
        if len(self.nodes) >= MAX_NODES:
            raise GraphError(f"graph {self.name!r} is at the {MAX_NODES}-node cap")
        try:
            rule = Trigger(trigger)
        except ValueError:
            valid = ", ".join(t.value for t in Trigger)
            raise GraphError(f"trigger {trigger!r} is invalid; use one of {valid}") from None
        data_parents = _unique([*node_refs(args), *node_refs(kwargs)])
        order_parents = list(after)
        for parent in (*data_parents, *order_parents):
            self._check_own(parent, node_name)
        _check_binding(task, args, kwargs, node_name)
        node = Node(
            graph=self,
            index=len(self.nodes),
            name=node_name,
            task=task,
            args=tuple(args),
            kwargs=dict(kwargs),
            trigger=rule,
            queue=queue or task.options.queue,
            parents=_unique([*data_parents, *order_parents]),
            data_parents=data_parents,
        )
        self.nodes.append(node)
        self._by_name[node_name] = node
        for parent in node.parents:
            self._children.setdefault(parent.index, []).append(node)
        return node

    def add_edge(self, parent: Node, child: Node) -> None:
        """Add an order-only edge: ``child`` waits for ``parent`` to end.

        :raises GraphCycle: the edge would close a loop; the message names it.
        """
        self._check_own(parent, child.name)
        self._check_own(child, parent.name)
        if parent is child:
            raise GraphCycle([child.name, child.name])
        if parent in child.parents:
            return
        path = self._path(child, parent)
        if path is not None:
            raise GraphCycle([*[n.name for n in path], child.name])
        child.parents.append(parent)
        self._children.setdefault(parent.index, []).append(child)

    def _path(self, start: Node, goal: Node) -> list[Node] | None:
        """A path start -> ... -> goal along child edges, if any (iterative DFS)."""
        stack: list[tuple[Node, list[Node]]] = [(start, [start])]
        seen = {start.index}
        while stack:
            node, path = stack.pop()
            if node is goal:
                return path
            for child in self._children.get(node.index, []):
                if child.index not in seen:
                    seen.add(child.index)
                    stack.append((child, [*path, child]))
        return None

    def _check_task(self, task: TaskLike) -> None:
        name = getattr(task, "name", None)
        if not isinstance(name, str) or self._tasks.get(name) is not task:
            if not hasattr(task, "signature"):
                raise GraphError(f"graph nodes call tasks registered with @app.task, got {task!r}")
            raise GraphError(f"task {task.name!r} is not registered on this graph's app")

    def _check_own(self, node: Node, user: str) -> None:
        if not isinstance(node, Node):
            raise GraphError(f"node {user!r}: after= takes nodes, got {node!r}")
        if node.graph is not self:
            raise GraphError(
                f"node {user!r} refers to node {node.name!r} of graph {node.graph.name!r}, "
                f"not of graph {self.name!r}"
            )

    # -- reading --------------------------------------------------------------------------

    def children(self, node: Node) -> list[Node]:
        return list(self._children.get(node.index, []))

    def roots(self) -> list[Node]:
        return [n for n in self.nodes if not n.parents]

    def validate(self) -> None:
        """Check the whole graph: not empty, no cycle (named), every node our own. No I/O.

        :raises GraphError: or its subclass :class:`GraphCycle`.
        """
        if not self.nodes:
            raise GraphError(f"graph {self.name!r} has no nodes")
        for node in self.nodes:
            self._check_task(node.task)
            for parent in node.parents:
                self._check_own(parent, node.name)
        self.topological_order()

    def topological_order(self) -> list[Node]:
        """Nodes so that every parent comes before its children; ties in insertion order.

        :raises GraphCycle: naming one loop, as ``a -> b -> c -> a``.
        """
        indegree = [len(n.parents) for n in self.nodes]
        ready = [n.index for n in self.nodes if indegree[n.index] == 0]
        heapq.heapify(ready)
        order: list[Node] = []
        while ready:
            node = self.nodes[heapq.heappop(ready)]
            order.append(node)
            for child in self._children.get(node.index, []):
                indegree[child.index] -= 1
                if indegree[child.index] == 0:
                    heapq.heappush(ready, child.index)
        if len(order) != len(self.nodes):
            raise GraphCycle(
                self._find_cycle({n.index for n in self.nodes} - {n.index for n in order})
            )
        return order

    def _find_cycle(self, remaining: set[int]) -> list[str]:
        # every node left after Kahn's algorithm has a parent also left: walk parents to a repeat
        node = self.nodes[min(remaining)]
        seen: dict[int, int] = {}
        walk: list[Node] = []
        while node.index not in seen:
            seen[node.index] = len(walk)
            walk.append(node)
            node = next(p for p in node.parents if p.index in remaining)
        loop = walk[seen[node.index] :]
        names = [n.name for n in reversed(loop)]
        return [*names, names[0]]

    def levels(self) -> list[list[Node]]:
        """Nodes grouped by longest distance from a root: level 0 are the roots."""
        depth: dict[int, int] = {}
        for node in self.topological_order():
            depth[node.index] = max((depth[p.index] + 1 for p in node.parents), default=0)
        grouped: list[list[Node]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for node in self.nodes:
            grouped[depth[node.index]].append(node)
        return grouped


def _unique(nodes: Sequence[Node]) -> list[Node]:
    seen: set[int] = set()
    out = []
    for node in nodes:
        if id(node) not in seen:
            seen.add(id(node))
            out.append(node)
    return out


def _check_binding(
    task: TaskLike, args: tuple[Any, ...], kwargs: dict[str, Any], node: str
) -> None:
    """Arguments must fit the signature (types are checked at submit and by the worker)."""
    try:
        task.signature.bind(args, kwargs)
    except TypeError as exc:
        raise GraphError(f"node {node!r}: {task.name}(): {exc}") from None
