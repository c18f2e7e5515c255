"""The pure graph model (taskflow/graph.py): no Redis, no I/O.

Random DAGs are built the only way a user can build one: each new node draws its parents
from the nodes already added, as data arguments (bare, in lists, in dicts, as keywords)
or as ``after=`` order-only edges. The expected edges are computed from that plan, not
from the model, and the model is checked against them.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import taskflow
from taskflow._dag import (
    _LITERAL_KEY,
    REF_KEY,
    Node,
    Trigger,
    encode_template,
    resolve_template,
)
from taskflow.errors import GraphCycle, GraphError
from taskflow.graph import Graph
from taskflow.runs import RunHandle


def _app() -> taskflow.TaskFlow:
    # never opened: building graphs touches no Redis
    return taskflow.TaskFlow(
        settings=taskflow.Settings(redis_url="redis://127.0.0.1:6379/0", embedded="never")
    )


app = _app()


@app.task
async def combine(*args: Any, **kwargs: Any) -> Any:
    return [args, kwargs]


@app.task
async def pair(left: int, right: int) -> int:
    return left + right


@app.task
async def one(x: Any) -> Any:
    return x


other_app = _app()


@other_app.task(name="combine")
async def foreign_combine(*args: Any, **kwargs: Any) -> Any:
    return None


async def not_a_task(x: int) -> int:
    return x


# -- random DAG plans -----------------------------------------------------------------------


@dataclass(frozen=True)
class NodePlan:
    """How node ``i`` is added: which earlier nodes it refers to, and how."""

    positional: tuple[Any, ...]  # each item: ("node", j) | ("list", (j, ...)) | ("lit", value)
    keywords: tuple[tuple[str, Any], ...]  # same items, plus ("dict", ((key, j), ...))
    after: tuple[int, ...]
    trigger: str


literals = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5)


@functools.cache
def _item_strategies(i: int) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    """Strategies for one argument of node ``i``: positional, and keyword (also dicts)."""
    lit = st.tuples(st.just("lit"), literals)
    if not i:
        return lit, lit
    earlier = st.integers(0, i - 1)
    item = st.one_of(
        lit,
        st.tuples(st.just("node"), earlier),
        st.tuples(st.just("list"), st.lists(earlier, max_size=3).map(tuple)),
    )
    pairs = st.lists(
        st.tuples(st.sampled_from("abc"), earlier), max_size=3, unique_by=lambda kv: kv[0]
    )
    return item, st.one_of(item, st.tuples(st.just("dict"), pairs.map(tuple)))


@functools.cache
def node_plans(i: int) -> st.SearchStrategy[NodePlan]:
    item, kw_item = _item_strategies(i)
    kw_names = st.lists(st.sampled_from(["k0", "k1", "k2"]), unique=True, max_size=2)
    keywords = kw_names.flatmap(
        lambda names: st.tuples(*(st.tuples(st.just(n), kw_item) for n in names))
    )
    after = st.lists(st.integers(0, i - 1), max_size=2).map(tuple) if i else st.just(())
    return st.builds(
        NodePlan,
        st.lists(item, max_size=3).map(tuple),
        keywords,
        after,
        st.sampled_from([t.value for t in Trigger]),
    )


@st.composite
def dag_plans(draw: st.DrawFn, max_nodes: int = 14) -> list[NodePlan]:
    n = draw(st.integers(1, max_nodes))
    return [draw(node_plans(i)) for i in range(n)]


def _value(item: Any, nodes: list[Node]) -> Any:
    kind, payload = item
    if kind == "lit":
        return payload
    if kind == "node":
        return nodes[payload]
    if kind == "list":
        return [nodes[j] for j in payload]
    return {key: nodes[j] for key, j in payload}


def _refs(item: Any) -> Iterator[int]:
    kind, payload = item
    if kind == "node":
        yield payload
    elif kind == "list":
        yield from payload
    elif kind == "dict":
        yield from (j for _, j in payload)


def build(plan: list[NodePlan], name: str = "g") -> Graph:
    graph = app.graph(name)
    nodes: list[Node] = []
    for i, p in enumerate(plan):
        args = [_value(item, nodes) for item in p.positional]
        kwargs = {k: _value(item, nodes) for k, item in p.keywords}
        node = graph.add(
            combine,
            *args,
            name=f"n{i}",
            trigger=p.trigger,
            after=[nodes[j] for j in p.after],
            **kwargs,
        )
        nodes.append(node)
    return graph


def data_edges(plan: list[NodePlan]) -> set[tuple[int, int]]:
    out = set()
    for i, p in enumerate(plan):
        for item in (*p.positional, *(item for _, item in p.keywords)):
            out |= {(j, i) for j in _refs(item)}
    return out


def all_edges(plan: list[NodePlan]) -> set[tuple[int, int]]:
    return data_edges(plan) | {(j, i) for i, p in enumerate(plan) for j in p.after}


def descendants(edges: set[tuple[int, int]], start: int) -> set[int]:
    """Nodes reachable from ``start`` along edges (start itself excluded)."""
    seen: set[int] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        for p, c in edges:
            if p == node and c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def snapshot(graph: Graph) -> tuple[Any, ...]:
    """Everything observable about a graph's structure."""
    return (
        [n.name for n in graph.nodes],
        [[p.name for p in n.parents] for n in graph.nodes],
        [[p.name for p in n.data_parents] for n in graph.nodes],
        [[c.name for c in graph.children(n)] for n in graph.nodes],
        [n.name for n in graph.topological_order()],
        [[n.name for n in level] for level in graph.levels()],
    )


def graph_edges(graph: Graph) -> set[tuple[int, int]]:
    return {(p.index, n.index) for n in graph.nodes for p in n.parents}


# -- structure ----------------------------------------------------------------------------


@given(dag_plans())
def test_edges_match_the_plan(plan: list[NodePlan]) -> None:
    graph = build(plan)
    assert len(graph) == len(plan)
    assert graph_edges(graph) == all_edges(plan)
    for node in graph.nodes:
        assert len(node.parents) == len({p.index for p in node.parents}), "repeated parent"
        expected_data = {j for j, i in data_edges(plan) if i == node.index}
        assert {p.index for p in node.data_parents} == expected_data
        assert node.trigger == Trigger(plan[node.index].trigger)
        kids = {c.index for c in graph.children(node)}
        assert kids == {i for j, i in all_edges(plan) if j == node.index}
    assert {n.index for n in graph.roots()} == {
        i for i in range(len(plan)) if not any(c == i for _, c in all_edges(plan))
    }
    graph.validate()


@given(dag_plans())
def test_topological_order_respects_every_edge(plan: list[NodePlan]) -> None:
    graph = build(plan)
    order = graph.topological_order()
    assert sorted(n.index for n in order) == list(range(len(plan)))  # each node exactly once
    position = {n.index: k for k, n in enumerate(order)}
    for parent, child in all_edges(plan):
        assert position[parent] < position[child]


@given(dag_plans())
def test_levels_partition_the_nodes(plan: list[NodePlan]) -> None:
    graph = build(plan)
    levels = graph.levels()
    flat = [n.index for level in levels for n in level]
    assert sorted(flat) == list(range(len(plan)))  # a partition: every node once
    assert all(levels), "no empty level"
    level_of = {n.index: k for k, level in enumerate(levels) for n in level}
    for parent, child in all_edges(plan):
        assert level_of[parent] < level_of[child]
    assert {n.index for n in levels[0]} == {n.index for n in graph.roots()}
    for node in graph.nodes:  # the longest distance from a root: some parent is one level up
        if node.parents:
            assert max(level_of[p.index] for p in node.parents) == level_of[node.index] - 1


# -- cycles -------------------------------------------------------------------------------


def _assert_real_loop(cycle: list[str], edges: set[tuple[str, str]]) -> None:
    assert len(cycle) >= 2
    assert cycle[0] == cycle[-1]
    for a, b in itertools.pairwise(cycle):
        assert (a, b) in edges, f"{a} -> {b} is not an edge of {cycle}"


@settings(suppress_health_check=[HealthCheck.filter_too_much])
@given(dag_plans(), st.data())
def test_add_edge_closing_a_loop_is_rejected(plan: list[NodePlan], data: st.DataObject) -> None:
    edges = all_edges(plan)
    candidates = [(a, d) for a in range(len(plan)) for d in descendants(edges, a)]
    assume(candidates)
    ancestor, descendant = data.draw(st.sampled_from(candidates))
    graph = build(plan)
    before = snapshot(graph)
    # descendant -> ancestor closes ancestor -> ... -> descendant -> ancestor
    with pytest.raises(GraphCycle) as info:
        graph.add_edge(graph.nodes[descendant], graph.nodes[ancestor])
    named = {(f"n{p}", f"n{c}") for p, c in edges} | {(f"n{descendant}", f"n{ancestor}")}
    _assert_real_loop(info.value.cycle, named)
    assert f"n{descendant}" in info.value.cycle and f"n{ancestor}" in info.value.cycle
    assert " -> ".join(info.value.cycle) in str(info.value)
    assert isinstance(info.value, GraphError)
    assert snapshot(graph) == before


@given(dag_plans(), st.data())
def test_self_loop_is_rejected(plan: list[NodePlan], data: st.DataObject) -> None:
    graph = build(plan)
    before = snapshot(graph)
    node = graph.nodes[data.draw(st.integers(0, len(plan) - 1))]
    with pytest.raises(GraphCycle) as info:
        graph.add_edge(node, node)
    assert info.value.cycle == [node.name, node.name]
    assert snapshot(graph) == before


@given(dag_plans(), st.data())
def test_add_edge_that_keeps_a_dag_is_accepted(plan: list[NodePlan], data: st.DataObject) -> None:
    edges = all_edges(plan)
    candidates = [
        (p, c)
        for p in range(len(plan))
        for c in range(len(plan))
        if p != c and p not in descendants(edges, c)
    ]
    assume(candidates)
    parent, child = data.draw(st.sampled_from(candidates))
    graph = build(plan)
    graph.add_edge(graph.nodes[parent], graph.nodes[child])
    graph.add_edge(graph.nodes[parent], graph.nodes[child])  # a repeat changes nothing
    assert graph_edges(graph) == edges | {(parent, child)}
    new = graph.nodes[child]
    assert [p.index for p in new.parents].count(parent) == 1
    position = {n.index: k for k, n in enumerate(graph.topological_order())}
    assert all(position[p] < position[c] for p, c in graph_edges(graph))


def test_cycle_through_several_nodes_names_the_loop() -> None:
    graph = app.graph("loop")
    a = graph.add(one, 1, name="a")
    b = graph.add(one, a, name="b")
    c = graph.add(one, b, name="c")
    with pytest.raises(GraphCycle) as info:
        graph.add_edge(c, a)
    assert info.value.cycle == ["a", "b", "c", "a"]
    assert "a -> b -> c -> a" in str(info.value)
    assert a.parents == [] and graph.children(c) == []


def test_topological_order_names_a_loop_made_behind_its_back() -> None:
    # add_edge never lets one in; a graph edited by hand still cannot pass validate()
    graph = app.graph("sneaky")
    a = graph.add(one, 1, name="a")
    b = graph.add(one, a, name="b")
    a.parents.append(b)
    graph._children.setdefault(b.index, []).append(a)
    with pytest.raises(GraphCycle) as info:
        graph.validate()
    _assert_real_loop(info.value.cycle, {("a", "b"), ("b", "a")})


# -- rejected nodes -------------------------------------------------------------------------


def _unchanged_after(graph: Graph, match: str | None, **add: Any) -> GraphError:
    before = snapshot(graph)
    task = add.pop("task")
    args = add.pop("args", ())
    with pytest.raises(GraphError, match=match) as info:
        graph.add(task, *args, **add)
    assert snapshot(graph) == before
    return info.value


def test_duplicate_name_is_rejected() -> None:
    graph = app.graph("dup")
    graph.add(one, 1)  # named after the task
    _unchanged_after(graph, r"'one'", task=one, args=(2,))
    graph.add(one, 2, name="second")
    err = _unchanged_after(graph, r"'second'", task=one, args=(3,), name="second")
    assert "already has a node" in str(err)


def test_foreign_node_as_argument_is_rejected() -> None:
    mine, theirs = app.graph("mine"), app.graph("theirs")
    local = mine.add(one, 1, name="local")
    stranger = theirs.add(one, 1, name="stranger")
    for args in ((stranger,), ([local, stranger],), ({"x": [stranger]},)):
        err = _unchanged_after(mine, r"'stranger'", task=one, args=args, name="user")
        assert "'theirs'" in str(err) and "'user'" in str(err)
    _unchanged_after(mine, r"'stranger'", task=one, args=(1,), name="user", after=[stranger])
    _unchanged_after(mine, r"'stranger'", task=one, args=(1,), name="user", after=[local, stranger])
    _unchanged_after(mine, r"'stranger'", task=combine, name="user", k=stranger)


def test_foreign_node_in_add_edge_is_rejected() -> None:
    mine, theirs = app.graph("mine"), app.graph("theirs")
    local = mine.add(one, 1, name="local")
    stranger = theirs.add(one, 1, name="stranger")
    before_mine, before_theirs = snapshot(mine), snapshot(theirs)
    with pytest.raises(GraphError, match="'stranger'"):
        mine.add_edge(stranger, local)
    with pytest.raises(GraphError, match="'stranger'"):
        mine.add_edge(local, stranger)
    assert snapshot(mine) == before_mine and snapshot(theirs) == before_theirs


def test_task_of_another_app_is_rejected() -> None:
    graph = app.graph("g")
    err = _unchanged_after(graph, r"'combine'", task=foreign_combine, args=(1,))
    assert "not registered" in str(err)


@pytest.mark.parametrize(
    "bad",
    [not_a_task, lambda x: x, print, "combine", None],
    ids=["coro", "lambda", "builtin", "str", "none"],
)
def test_non_task_callables_are_rejected(bad: Any) -> None:
    graph = app.graph("g")
    err = _unchanged_after(graph, None, task=bad, args=(1,))
    assert repr(bad) in str(err)


@pytest.mark.parametrize("trigger", ["all_failed", "ALL_SUCCESS", "", "one_success", 3])
def test_bad_trigger_is_rejected(trigger: Any) -> None:
    graph = app.graph("g")
    err = _unchanged_after(graph, None, task=one, args=(1,), trigger=trigger)
    assert repr(trigger) in str(err)
    for valid in Trigger:
        assert valid.value in str(err)


def test_triggers_accept_names_and_members() -> None:
    graph = app.graph("g")
    root = graph.add(one, 1, name="root")
    for rule in Trigger:
        assert graph.add(one, root, name=f"s-{rule.value}", trigger=rule.value).trigger is rule
        assert graph.add(one, root, name=f"m-{rule.value}", trigger=rule).trigger is rule
    assert graph["root"].trigger is Trigger.ALL_SUCCESS


def test_bad_arity_is_rejected() -> None:
    graph = app.graph("g")
    root = graph.add(one, 1, name="root")
    err = _unchanged_after(graph, r"'right'", task=pair, args=(root,), name="half")
    assert "'half'" in str(err) and "missing" in str(err)
    err = _unchanged_after(graph, r"pair", task=pair, args=(1, 2, 3), name="three")
    assert "'three'" in str(err)
    err = _unchanged_after(graph, r"'nope'", task=pair, args=(1, 2), name="kw", nope=root)
    assert "'kw'" in str(err)
    err = _unchanged_after(graph, r"'x'", task=one, name="none")
    assert "missing" in str(err)


def test_bad_after_value_is_rejected() -> None:
    graph = app.graph("g")
    graph.add(one, 1, name="root")
    err = _unchanged_after(graph, r"after=", task=one, args=(1,), name="c", after=["root"])
    assert "'root'" in str(err)


@pytest.mark.parametrize("name", ["", "a\nb", "x" * 201, 'quote"d', "tab\t"])
def test_bad_node_name_is_rejected(name: str) -> None:
    graph = app.graph("g")
    err = _unchanged_after(graph, None, task=one, args=(1,), name=name)
    assert repr(name) in str(err)


def test_unknown_node_lookup_names_it() -> None:
    graph = app.graph("g")
    graph.add(one, 1, name="there")
    assert graph["there"].name == "there"
    with pytest.raises(GraphError, match="'missing'"):
        graph["missing"]


def test_empty_graph_fails_validation() -> None:
    with pytest.raises(GraphError, match="'empty'"):
        app.graph("empty").validate()


def test_data_and_order_edge_to_the_same_parent_is_one_edge() -> None:
    graph = app.graph("g")
    a = graph.add(one, 1, name="a")
    b = graph.add(combine, a, [a], {"x": a}, name="b", after=[a, a])
    assert b.parents == [a] and b.data_parents == [a]
    assert graph.children(a) == [b]


# -- argument templates ---------------------------------------------------------------------

TEMPLATE_APP_GRAPH = app.graph("templates")
TEMPLATE_NODES = [TEMPLATE_APP_GRAPH.add(one, i, name=f"t{i}") for i in range(5)]
RESULTS: dict[int, Any] = {
    0: 42,
    1: "text",
    2: None,
    3: {REF_KEY: 7, "x": [1]},  # a result that looks like a marker stays as it is
    4: [1, {"a": None}],
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
marker_keys = st.sampled_from([REF_KEY, _LITERAL_KEY, "a", "b", ""]) | st.text(max_size=6)
templated = st.recursive(
    json_scalars | st.sampled_from(TEMPLATE_NODES),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(marker_keys, inner, max_size=4)
    ),
    max_leaves=25,
)


def substituted(value: Any) -> Any:
    """What a child should receive: nodes replaced by their results, tuples as lists."""
    if isinstance(value, Node):
        return RESULTS[value.index]
    if isinstance(value, list | tuple):
        return [substituted(v) for v in value]
    if isinstance(value, dict):
        return {k: substituted(v) for k, v in value.items()}
    return value


def same(a: Any, b: Any) -> bool:
    """Equality that tells 1 from 1.0 and True from 1, recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(templated)
def test_template_round_trip(value: Any) -> None:
    encoded = encode_template(value)
    wire = orjson.loads(orjson.dumps(encoded))  # what is stored is plain JSON
    assert same(wire, encoded)
    assert same(resolve_template(wire, RESULTS), substituted(value))


@given(st.dictionaries(marker_keys, json_scalars, min_size=1, max_size=4))
def test_user_dicts_with_marker_keys_are_never_mistaken_for_references(value: Any) -> None:
    wrapped = {"user": value, "list": [value], "node": TEMPLATE_NODES[0]}
    resolved = resolve_template(orjson.loads(orjson.dumps(encode_template(wrapped))), RESULTS)
    assert same(resolved, {"user": value, "list": [value], "node": 42})


def test_template_markers() -> None:
    node = TEMPLATE_NODES[3]
    assert encode_template(node) == {REF_KEY: 3}
    assert encode_template((node, [node])) == [{REF_KEY: 3}, [{REF_KEY: 3}]]
    literal = {REF_KEY: 3}
    assert encode_template(literal) == {_LITERAL_KEY: {REF_KEY: 3}}
    assert resolve_template(encode_template(literal), RESULTS) == {REF_KEY: 3}
    assert resolve_template(encode_template({_LITERAL_KEY: node}), RESULTS) == {
        _LITERAL_KEY: RESULTS[3]
    }


# -- Mermaid before submission ----------------------------------------------------------------


def _mermaid_of(graph: Graph) -> str:
    # a handle that never called status(): the graph's shape without states
    return RunHandle(app, "0" * 32, graph).to_mermaid()


@given(dag_plans())
def test_mermaid_lists_every_node_and_edge(plan: list[NodePlan]) -> None:
    graph = build(plan)
    text = _mermaid_of(graph)
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "flowchart TD"
    for i in range(len(plan)):
        assert f'n{i}["n{i}"]' in lines
    data = data_edges(plan)
    solid = {line for line in lines if " --> " in line}
    dotted = {line for line in lines if " -.-> " in line}
    assert solid == {f"n{p} --> n{c}" for p, c in data}
    assert dotted == {f"n{p} -.-> n{c}" for p, c in all_edges(plan) - data}
    assert len([line for line in lines if "-->" in line or "-.->" in line]) == len(all_edges(plan))
    assert not any(":::" in line for line in lines if line.startswith("n"))  # no states yet


def test_mermaid_edge_from_add_edge_is_dotted_and_labels_are_quoted() -> None:
    graph = app.graph("m")
    a = graph.add(one, 1, name="fetch [raw]")
    b = graph.add(one, a, name="parse")
    c = graph.add(one, 2, name="report")
    graph.add_edge(b, c)
    text = _mermaid_of(graph)
    assert 'n0["fetch [raw]"]' in text
    assert "n0 --> n1" in text
    assert "n1 -.-> n2" in text
