"""The Redis contract: one source of key names, scripts that declare their keys, enum replies.

The Lua scripts are scanned for key literals; the node job id is built and parsed by one
pair of functions, and the Lua pattern the scripts use agrees with the Python parser on
real Redis; every wrapper's reply comes back as its enum.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from importlib import resources

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

import taskflow
from taskflow._protocol import keys
from taskflow._protocol.scripts import (
    AbortReply,
    AckReply,
    FinishReply,
    NodeVerdict,
    Scripts,
    claim_token,
    lua_source,
)
from taskflow.errors import FailureKind
from tests.apps.shared import REDIS_URL

LUA_DIR = resources.files("taskflow._protocol").joinpath("lua")
LUA_FILES = sorted(p.name for p in LUA_DIR.iterdir() if p.name.endswith(".lua"))
LIBRARIES = {"job_lib.lua", "node_lib.lua", "graph_lib.lua"}
_STRING = re.compile(r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|\[\[.*?\]\]""", re.S)


def _code(text: str) -> str:
    """Lua source without its comments (so headers may name keys in prose)."""
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def _literals(text: str) -> list[str]:
    return [m.group(0)[1:-1] for m in _STRING.finditer(_code(text))]


FORBIDDEN = {
    "arq:",
    "taskflow:",
    *keys.LUA_PREFIXES.values(),
    keys.ABORT,
    *(kind.value for kind in FailureKind),
    *(f"{part}" for part in ("taskflow.Cancelled", "taskflow.Skipped")),
}


def test_lua_dir_holds_the_scripts() -> None:
    assert {"claim.lua", "finish.lua", "finish_node.lua", "enqueue.lua"} <= set(LUA_FILES)


@pytest.mark.parametrize("name", LUA_FILES)
def test_no_key_literal_in_lua(name: str) -> None:
    text = LUA_DIR.joinpath(name).read_text("utf-8")
    bad = [lit for lit in _literals(text) if any(f in lit for f in FORBIDDEN)]
    assert bad == [], f"{name} spells key names or failure kinds: {bad}"


@pytest.mark.parametrize("name", sorted(set(LUA_FILES) - LIBRARIES))
def test_every_script_header_lists_keys_argv_and_reply(name: str) -> None:
    header = LUA_DIR.joinpath(name).read_text("utf-8").split("\n\n", 1)[0]
    lines = [line for line in header.splitlines() if line.startswith("--")]
    assert any(line.startswith("-- KEYS:") for line in lines), name
    assert any(line.startswith("-- ARGV:") for line in lines), name
    assert any("Returns" in line for line in lines), name


def test_scanner_catches_a_planted_literal() -> None:
    planted = "local k = 'arq:job:' .. id -- a comment naming arq:job: is fine"
    assert [lit for lit in _literals(planted) if any(f in lit for f in FORBIDDEN)] == ["arq:job:"]
    assert _literals("-- only 'taskflow:x' in a comment") == []


def test_loaded_source_carries_the_generated_names() -> None:
    source = lua_source("claim")
    for name, prefix in keys.LUA_PREFIXES.items():
        assert f"local P_{name.upper()} = '{prefix}'" in source
    for kind in FailureKind:
        assert f"local KIND_{kind.name} = '{kind.value}'" in source
    assert f"ATTEMPT_TTL = {keys.ATTEMPT_COUNTER_TTL_S}" in source
    assert "local function settle" not in source  # only scripts that end nodes load it
    assert "local function settle" in lua_source("finish_node")


@given(st.uuids().map(lambda u: u.hex), st.integers(min_value=0, max_value=10**6))
def test_node_job_id_round_trip(run_id: str, index: int) -> None:
    assert keys.parse_node_job_id(keys.node_job_id(run_id, index)) == (run_id, index)


@pytest.mark.parametrize(
    "job_id", ["abc", "x" * 32 + ".1", uuid.uuid4().hex, uuid.uuid4().hex + ".", "1.2.3"]
)
def test_plain_job_ids_are_not_nodes(job_id: str) -> None:
    assert keys.parse_node_job_id(job_id) is None


@pytest_asyncio.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_lua_pattern_agrees_with_python_parser(redis: Redis) -> None:
    run = uuid.uuid4().hex
    ids = [
        keys.node_job_id(run, 0),
        keys.node_job_id(run, 12345),
        run,
        f"{run}.x",
        "plain-job",
        f"{run.upper()}.1",
        f"{run}.1.2",
    ]
    script = (
        f"local m, n = string.match(ARGV[1], '{keys.NODE_JOB_ID_LUA_PATTERN}') "
        "if m then return {m, n} end return false"
    )
    for job_id in ids:
        reply = await redis.eval(script, 0, job_id)  # type: ignore[misc]
        lua = (reply[0].decode(), int(reply[1])) if reply else None
        parsed = keys.parse_node_job_id(job_id)
        # Lua's %x also takes upper case; Python's parser is the stricter one: an id Lua
        # would take as a node but Python not is never produced by node_job_id
        assert lua == parsed or (parsed is None and job_id == f"{run.upper()}.1"), job_id


def with_noop(
    make_app: type[taskflow.TaskFlow],
) -> tuple[taskflow.TaskFlow, taskflow.Task[[], None]]:
    """An unopened app with one task that does nothing."""
    app = make_app()

    @app.task
    async def noop() -> None:
        return None

    return app, noop


@pytest.mark.asyncio
async def test_replies_are_enums(make_app: type[taskflow.TaskFlow], queue_name: str) -> None:
    app, noop = with_noop(make_app)
    async with app:
        scripts: Scripts = app.scripts
        handle = await noop.enqueue()
        reply = await scripts.finish(handle.job_id, queue_name, "not-my-token", "done")
        assert reply is FinishReply.CLAIM_LOST
        claimed = await scripts.claim([queue_name], 2**41, 10, "token-1", 10_000)
        assert [c.job_id for c in claimed] == [handle.job_id]
        assert await scripts.abort(handle.job_id, queue_name, b"{}", 1000, 0) is (
            AbortReply.SIGNALLED
        )
        token = claim_token("token-1", claimed[0].attempt)
        done = await scripts.finish(handle.job_id, queue_name, token, "done")
        assert done is FinishReply.APPLIED
        again = await scripts.finish(handle.job_id, queue_name, token, "done")
        assert again in (FinishReply.CLAIM_LOST, FinishReply.ALREADY_FINISHED)
        missing = await scripts.abort(uuid.uuid4().hex, queue_name, b"{}", 1000, 0)
        assert missing is AbortReply.NOT_FOUND
        start = await scripts.node_start(uuid.uuid4().hex, 0, "w", 0, 1)
        assert start.verdict is NodeVerdict.GONE
        assert await scripts.cancel_run(uuid.uuid4().hex, 0, 1000, 1000) is None
        verdict, rule = await scripts.alert_ack(app.keys, uuid.uuid4().hex, "ada", "", 0, 10)
        assert (verdict, rule) == (AckReply.UNKNOWN, "")
        await app.redis.zrem(keys.ABORT, handle.job_id)
        await app.redis.delete(keys.result(handle.job_id))


def test_failure_kind_is_matched_from_task_failed() -> None:
    error = {"type": "taskflow.JobLost", "message": "m", "traceback": ""}
    assert taskflow.TaskFailed("j", "t", error).kind is taskflow.FailureKind.JOB_LOST
    own = {"type": "ValueError", "message": "m", "traceback": ""}
    assert taskflow.TaskFailed("j", "t", own).kind is None


@pytest.mark.asyncio
async def test_lua_run_keys_equal_python_run_keys(redis: Redis) -> None:
    from taskflow._protocol.scripts import _prelude

    run_id = uuid.uuid4().hex
    reply = await redis.eval(  # type: ignore[misc]
        _prelude() + "\nreturn run_keys(ARGV[1])", 0, run_id
    )
    assert [k.decode() for k in reply] == keys.run_keys(run_id)


@pytest.mark.asyncio
async def test_a_claim_is_fenced_per_attempt(
    make_app: type[taskflow.TaskFlow], queue_name: str
) -> None:
    """A worker whose lease lapsed and that claimed the job again holds the new attempt only:
    the older attempt's finish (same worker) is refused, the current one's applied."""
    app, noop = with_noop(make_app)
    async with app:
        scripts: Scripts = app.scripts
        handle = await noop.enqueue()
        [first] = await scripts.claim([queue_name], 2**41, 10, "w", 10_000)
        assert await app.redis.get(keys.in_progress(handle.job_id)) == b"w:1"
        await app.redis.delete(keys.in_progress(handle.job_id))  # the lease lapses
        [second] = await scripts.claim([queue_name], 2**42, 10, "w", 10_000)
        assert (first.attempt, second.attempt) == (1, 2)
        stale = await scripts.finish(handle.job_id, queue_name, claim_token("w", 1), "done")
        assert stale is FinishReply.CLAIM_LOST
        assert await scripts.renew([(handle.job_id, queue_name, claim_token("w", 1))], 10_000, 0)
        current = await scripts.finish(handle.job_id, queue_name, claim_token("w", 2), "done")
        assert current is FinishReply.APPLIED
