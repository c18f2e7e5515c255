"""Graphs of task calls bound to an app: build with :meth:`TaskFlow.graph`, then ``submit``.

The model itself (nodes, edges, trigger rules, validation, ordering) is pure and lives in
``_dag.py``; this class adds the app the graph belongs to and its submission.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._dag import MAX_NODES, REF_KEY, Dag, Node, NodeState, RunState, Trigger
from .errors import redis_errors
from .runs import RunHandle, submit_graph

if TYPE_CHECKING:
    from ._client import Client

__all__ = ("MAX_NODES", "REF_KEY", "Graph", "Node", "NodeState", "RunState", "Trigger")


class Graph(Dag):
    """A DAG of task calls, built in memory and submitted as one run.

    Example::

        g = app.graph("nightly-report")
        raw = g.add(fetch, "https://example.com/data.csv")
        rows = g.add(parse, raw, name="parse")
        parts = [g.add(enrich, rows, region=r, name=f"enrich-{r}") for r in regions]
        total = g.add(aggregate, parts, trigger="all_done")
        run = await g.submit()
        print(await run.wait(timeout=60))
    """

    def __init__(self, app: Client, name: str) -> None:
        super().__init__(name, app.tasks)
        self.app = app

    @redis_errors
    async def submit(self) -> RunHandle:
        """Validate, persist the whole graph and enqueue its roots atomically; return the run.

        :raises GraphError: the graph is empty, has a cycle or a foreign node.
        :raises PayloadTooLarge: a node's arguments are over ``max_payload_bytes``.
        """
        return await submit_graph(self)
