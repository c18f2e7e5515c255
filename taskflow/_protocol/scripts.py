"""One typed wrapper per server-side Lua script in ``lua/``: KEYS built here, replies as enums.

Each script is loaded as: constants generated from ``keys.py`` and ``errors.py`` (so Lua
never spells a key prefix or a failure kind), then the shared libraries it needs
(:data:`_INCLUDES`: ``job_lib.lua``, ``node_lib.lua``, ``graph_lib.lua``, each written once),
then the script itself. Each script's header lists its KEYS and ARGV exactly as the wrapper
here passes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, Protocol

from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from ..errors import FailureKind
from . import keys

if TYPE_CHECKING:
    from arq.connections import ArqRedis
    from redis.asyncio.client import Pipeline
    from redis.commands.core import AsyncScript

__all__ = (
    "AbortReply",
    "AckReply",
    "AlertAction",
    "Caller",
    "Claimed",
    "FinishMode",
    "FinishReply",
    "NodeStart",
    "NodeVerdict",
    "RetryReply",
    "Scripts",
    "lua_source",
)

FinishMode = Literal["done", "retry", "requeue"]


class FinishReply(IntEnum):
    """What ``finish.lua`` and ``finish_node.lua`` did."""

    CLAIM_LOST = 0  #: the caller's lease lapsed and another worker took the job
    APPLIED = 1
    ALREADY_FINISHED = 2  #: a repeated call: the job already ended
    RUN_GONE = 3  #: (graph nodes) the run's state expired or was never there
    MORE = 4  #: (graph nodes) applied; children are left to settle: call settle_more


class AbortReply(IntEnum):
    """What ``abort.lua`` did."""

    NOT_FOUND = -1
    ALREADY_FINISHED = 0
    CANCELLED = 1  #: it was queued: removed, with a cancelled result
    SIGNALLED = 2  #: it is running: flagged for its worker


class NodeVerdict(StrEnum):
    """Whether a worker may run a graph node it claimed (``node_lib.lua``'s node_start)."""

    RUN = "run"
    CANCELLED = "cancelled"  #: the run is being cancelled
    GONE = "gone"  #: the run's state expired or was never there
    ENDED = "ended"  #: the node already reached a terminal state


class RetryReply(StrEnum):
    """What ``retry_node.lua`` did with a dead graph node (all but OK: nothing)."""

    OK = "ok"  #: back on a queue; detail: how many nodes below it were brought back
    RUN_GONE = "run_gone"  #: the run's state expired (or was deleted)
    CANCELLED = "cancelled"  #: the run was cancelled
    NOT_FAILED = "not_failed"  #: the node is not failed (detail: its state): retried already?
    NO_LETTER = "no_letter"  #: no dead letter for it
    SETTLING = "settling"  #: the run is still applying rules of ended nodes: try again
    TOO_BIG = "too_big"  #: more than detail (keys.RETRY_BUDGET) node states to read


class AlertAction(StrEnum):
    """What ``alert_step.lua`` decided for one evaluation of one rule."""

    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"  #: firing, nothing to send now
    ACKNOWLEDGED = "acknowledged"
    NOTIFY_FIRING = "notify_firing"  #: this worker sends the firing notice
    NOTIFY_RESOLVED = "notify_resolved"  #: this worker sends the resolved notice


class AckReply(StrEnum):
    """What ``alert_ack.lua`` did."""

    OK = "ok"
    UNKNOWN = "unknown"
    RESOLVED = "resolved"
    ACKNOWLEDGED = "acknowledged"  #: already acknowledged


class Caller(Protocol):
    """Runs a script call for a wrapper, e.g. in a shared pipeline (the worker's batcher)."""

    async def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class NodeStart:
    """A node start's reply: the verdict and, to run it, its spec and parents' results."""

    verdict: NodeVerdict
    spec: bytes = b""
    parents: tuple[tuple[int, bytes | None, bytes | None], ...] = ()  #: index, state, result
    #: more than keys.INLINE_PARENTS data parents: read their states and results separately
    fetch: bool = False

    @classmethod
    def parse(cls, reply: list[Any]) -> NodeStart:
        verdict = NodeVerdict(reply[0].decode())
        if verdict is not NodeVerdict.RUN:
            return cls(verdict)
        if len(reply) == 3 and reply[2] == b"fetch":
            return cls(verdict, reply[1], fetch=True)
        parents = tuple(
            (int(reply[j]), reply[j + 1], reply[j + 2]) for j in range(2, len(reply), 3)
        )
        return cls(verdict, reply[1], parents)


def claim_token(worker_id: str, attempt: int) -> str:
    """What a claim's in-progress key holds, and its finish must show: the worker and the
    attempt, so that only the current attempt's finish is applied (fencing per claim)."""
    return f"{worker_id}:{attempt}"


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job this worker now holds the claim on."""

    job_id: str
    queue: str
    payload: bytes | None
    attempt: int
    failures: int
    score: int
    aborted: bool
    node_start: NodeStart | None = None  #: a graph node's start, done by the claim itself
    #: why the job's keys (or, with an empty job_id, the queue's key) cannot be read: a key
    #: of the wrong type or a counter that is not a number; the worker fails that job alone
    bad: str | None = None


def _lua_string(value: str) -> str:
    if any(c in value for c in "'\\\n"):
        raise ValueError(f"cannot embed {value!r} in a Lua string")
    return f"'{value}'"


def _prelude() -> str:
    # plain locals, not tables: every call of a script runs this, and a constant costs a
    # register load where a table would be built anew each time
    lines = ["-- generated by taskflow/_protocol/scripts.py from keys.py and errors.py"]
    lines += [f"local P_{n.upper()} = {_lua_string(p)}" for n, p in keys.LUA_PREFIXES.items()]
    lines += [f"local KIND_{k.name} = {_lua_string(k.value)}" for k in FailureKind]
    lines.append(f"local ATTEMPT_TTL = {keys.ATTEMPT_COUNTER_TTL_S}")
    lines.append(f"local SETTLE_BUDGET = {keys.SETTLE_BUDGET}")
    lines.append(f"local CANCEL_BUDGET = {keys.CANCEL_BUDGET}")
    lines.append(f"local CLAIM_NODE_STARTS = {keys.CLAIM_NODE_STARTS}")
    lines.append(f"local REAP_ABOVE = {keys.REAP_ABOVE}")
    lines.append(f"local REAP_GRACE_MS = {keys.REAP_GRACE_MS}")
    lines.append(f"local INLINE_PARENTS = {keys.INLINE_PARENTS}")
    lines.append(f"local RETRY_BUDGET = {keys.RETRY_BUDGET}")
    lines.append(f"local ROOTS = {_lua_string(keys.ROOTS)}")
    lines.append(f"local NODE_JOB_ID = {_lua_string(keys.NODE_JOB_ID_LUA_PATTERN)}")
    lines.append(f"local NODE_JOB_SEP = {_lua_string(keys.NODE_JOB_SEP)}")
    lines.append(f"local RUN_KEYS = {len(keys.RUN_FIELDS)}")
    lines += [f"local RUN_{f.upper()} = {n}" for n, f in enumerate(keys.RUN_FIELDS, 1)]
    parts = ", ".join(f"base .. {_lua_string(field)}" for field in keys.RUN_FIELDS)
    lines += [
        "-- the key family of a run, in keys.RUN_FIELDS order (keys.run_keys)",
        "local function run_keys(run_id)",
        "  local base = P_RUN .. '{' .. run_id .. '}:'",
        f"  return {{{parts}}}",
        "end",
    ]
    return "\n".join(lines)


def _file(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")


_INCLUDES: dict[str, tuple[str, ...]] = {
    "claim": ("node_lib",),
    "node_start": ("node_lib",),
    "finish": ("job_lib",),
    "abort": ("job_lib",),
    "release_overdue": ("job_lib",),
    "finish_node": ("job_lib", "node_lib", "graph_lib"),
    "cancel_run": ("job_lib", "node_lib", "graph_lib"),
    "submit_run": ("job_lib", "node_lib", "graph_lib"),
    "settle_more": ("job_lib", "node_lib", "graph_lib"),
    "retry_node": ("job_lib", "node_lib", "graph_lib"),
}
"""The shared libraries each script needs, in load order (a library costs every call of a
script that loads it, so a script loads only what it uses)."""


@cache
def lua_source(name: str) -> str:
    """The full source of script ``name`` as loaded into Redis (prelude and libraries)."""
    parts = [_prelude(), *(_file(lib) for lib in _INCLUDES.get(name, ())), _file(name)]
    return "\n".join(parts)


def release_overdue_keys(job_id: str, queue: str) -> list[str]:
    """``release_overdue.lua``'s KEYS (also called from the loop watch's thread)."""
    return [
        keys.in_progress(job_id),
        keys.queue(queue),
        keys.retry(job_id),
        keys.failures(job_id),
        keys.lease_lost(job_id),
    ]


def _job_keys(job_id: str, queue: str) -> list[str]:
    """finish.lua's and abort.lua's KEYS."""
    return [
        keys.in_progress(job_id),
        keys.job(job_id),
        keys.retry(job_id),
        keys.result(job_id),
        keys.queue(queue),
        keys.ABORT,
        keys.failures(job_id),
        keys.notify(job_id),
    ]


# a write refused inside a script comes back as a generic script error; these are the
# refusals that mean "not now" (retry later), raised as redis-py's own classes for them
_REFUSALS: tuple[tuple[str, type[ResponseError]], ...] = (
    ("-OOM ", OutOfMemoryError),
    ("-READONLY ", ReadOnlyError),
)


def _refusal(exc: ResponseError) -> ResponseError:
    text = str(exc)
    for marker, kind in _REFUSALS:
        if marker in text and not isinstance(exc, kind):
            return kind(text)
    return exc


class Scripts:
    """The scripts registered on one client (EVALSHA, loading on first use)."""

    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis

        def load(name: str) -> AsyncScript:
            return redis.register_script(lua_source(name))

        self._enqueue = load("enqueue")
        self._metrics_flush = load("metrics_flush")
        self._alert_step = load("alert_step")
        self._alert_ack = load("alert_ack")
        self._claim = load("claim")
        self._finish = load("finish")
        self._abort = load("abort")
        self._renew = load("renew")
        self._release_overdue = load("release_overdue")
        self._queue_heads = load("queue_heads")
        self._worker_gone = load("worker_gone")
        self._node_start = load("node_start")
        self._finish_node = load("finish_node")
        self._settle_more = load("settle_more")
        self._cancel_run = load("cancel_run")
        self._retry_node = load("retry_node")
        self._submit_run = load("submit_run")
        self._queue_move = load("queue_move")
        self._queue_purge = load("queue_purge")
        self._schedule_register = load("schedule_register")
        self._schedule_fire = load("schedule_fire")

    @staticmethod
    async def _call(
        script: AsyncScript,
        keys: list[Any],
        args: list[Any],
        via: Caller | None = None,
        pipe: Pipeline | None = None,
    ) -> Any:
        if pipe is not None:
            # queued in the caller's pipeline (redis-py loads the script before MULTI, so
            # EVALSHA cannot fail half-way with NOSCRIPT); the reply comes from execute()
            return await script(keys=keys, args=args, client=pipe)
        try:
            if via is None:
                return await script(keys=keys, args=args)
            return await via.call(script, keys, args)
        except ResponseError as exc:
            refusal = _refusal(exc)
            if refusal is exc:
                raise
            raise refusal from exc

    # -- jobs -----------------------------------------------------------------------------

    async def enqueue(
        self,
        queue: str,
        expiry_ms: int,
        jobs: list[tuple[str, bytes, int]],
        *,
        pipe: Pipeline | None = None,
    ) -> list[bool]:
        """Write jobs ``(id, payload, score ms)`` and add them to ``queue``; for each, False
        if its id was taken. Wakes the queue's idle workers.

        With ``pipe``, the call is only queued there (its reply comes from ``execute``)
        and an empty list is returned.
        """
        script_keys = [keys.queue(queue)]
        args: list[Any] = [max(expiry_ms, 1)]
        for job_id, payload, score in jobs:
            script_keys += [keys.job(job_id), keys.result(job_id)]
            args += [job_id, payload, score]
        flags = await self._call(self._enqueue, script_keys, args, pipe=pipe)
        return [] if pipe is not None else [bool(f) for f in flags]

    async def claim(
        self,
        queues: list[str],
        now_ms: int,
        limit: int,
        token: str,
        lease_ms: int,
        via: Caller | None = None,
        skip: list[str] | tuple[str, ...] = (),
    ) -> list[Claimed]:
        """Claim up to ``limit`` ready jobs across ``queues`` (served in that order).

        A claim with ``bad`` set names a job (or, with an empty ``job_id``, a queue) whose
        keys are of the wrong type: the script carried on past it instead of failing. Jobs
        in ``skip`` are passed by (their task is not registered on this worker)."""
        reply: list[Any] = await self._call(
            self._claim,
            [*(keys.queue(q) for q in queues), keys.ABORT],
            [now_ms, limit, token, lease_ms, *skip],
            via,
        )
        claimed = []
        for i in range(0, len(reply), 9):
            qi, job_id, payload, attempt, failures, score, aborted, node, bad = reply[i : i + 9]
            queue = queues[int(qi) - 1]
            if not job_id:  # the queue key itself cannot be read
                claimed.append(Claimed("", queue, None, 0, 0, 0, False, bad=bad.decode()))
                continue
            claimed.append(
                Claimed(
                    job_id=job_id.decode(),
                    queue=queue,
                    payload=payload or None,
                    attempt=int(attempt),
                    failures=int(failures),
                    score=int(float(score)),
                    aborted=bool(aborted),
                    node_start=NodeStart.parse(node) if node else None,
                    bad=bad.decode() if bad else None,
                )
            )
        return claimed

    async def finish(
        self,
        job_id: str,
        queue: str,
        token: str,
        mode: FinishMode,
        *,
        result: bytes = b"",
        result_ttl_ms: int = -1,
        score_ms: int = 0,
        dead: tuple[keys.AppKeys, bytes, int, int, str, str] | None = None,
        via: Caller | None = None,
    ) -> FinishReply:
        """End one attempt of a plain job (see ``lua/finish.lua``); ``dead``: it failed for
        good, keep it as a dead letter of that app: ``(app keys, record, retention ms,
        now ms, error group, error sample)``."""
        script_keys = _job_keys(job_id, queue)
        args: list[Any] = [token, mode, job_id, result, result_ttl_ms, score_ms]
        if dead is not None:
            app, record, keep_ms, now, group, sample = dead
            script_keys += [app.dead_letters, app.dead_letter(job_id), app.error_groups]
            args += [record, keep_ms, now, group, sample]
        reply = await self._call(self._finish, script_keys, args, via)
        return FinishReply(int(reply))

    async def abort(
        self, job_id: str, queue: str, cancelled: bytes, result_ttl_ms: int, now_ms: int
    ) -> AbortReply:
        """Cancel a queued job, or flag a running one for its worker."""
        reply = await self._call(
            self._abort, _job_keys(job_id, queue), [job_id, cancelled, result_ttl_ms, now_ms]
        )
        return AbortReply(int(reply))

    async def renew(
        self, jobs: list[tuple[str, str, str]], lease_ms: int, now_ms: int
    ) -> list[str]:
        """Renew leases of ``(job id, queue, claim token)`` triples; return the ids whose
        claim was lost."""
        if not jobs:
            return []
        pairs: list[str] = []
        args: list[Any] = [lease_ms, now_ms]
        for job_id, queue, token in jobs:
            pairs += [keys.in_progress(job_id), keys.queue(queue)]
            args += [job_id, token]
        lost = await self._call(self._renew, pairs, args)
        return [jobs[int(i) - 1][0] for i in lost]

    async def release_overdue(
        self, job_id: str, queue: str, token: str, now_ms: int, note: bytes, note_ttl_ms: int
    ) -> bool:
        """Fail the attempt ``token`` holds of a job over its timeout on a blocked worker and
        put the job back (see ``lua/release_overdue.lua``); False if the claim moved on."""
        reply = await self._call(
            self._release_overdue,
            release_overdue_keys(job_id, queue),
            [token, job_id, now_ms, note, note_ttl_ms],
        )
        return bool(int(reply))

    async def queue_heads(
        self, queues: list[str], now_ms: int, head: int, prefix: int
    ) -> list[list[tuple[str, float, bytes]]]:
        """Per queue, its oldest ``head`` ready jobs: ``(id, score, the first ``prefix``
        bytes of its payload)`` (``lua/queue_heads.lua``)."""
        if not queues:
            return []
        reply = await self._call(
            self._queue_heads, [keys.queue(q) for q in queues], [now_ms, head, prefix]
        )
        out: list[list[tuple[str, float, bytes]]] = []
        i = 0
        for _ in queues:
            n = int(reply[i])
            i += 1
            jobs = []
            for _ in range(n):
                job, score, start = reply[i], reply[i + 1], reply[i + 2]
                jobs.append((job.decode(), float(score), bytes(start)))
                i += 3
            out.append(jobs)
        return out

    async def worker_gone(
        self, app: keys.AppKeys, worker_id: str, event: bytes, keep_ms: int
    ) -> bool:
        """Note a dead worker once (``lua/worker_gone.lua``); False if it is not dead or was
        noted already."""
        script_keys = [app.worker(worker_id), app.workers, app.will(worker_id), app.monitor_events]
        args = [worker_id, event, keys.MONITOR_EVENTS_CAP, keep_ms]
        return bool(int(await self._call(self._worker_gone, script_keys, args)))

    # -- graph runs -----------------------------------------------------------------------

    async def node_start(
        self,
        run_id: str,
        index: int,
        worker_id: str,
        now_ms: int,
        attempt: int,
        via: Caller | None = None,
    ) -> NodeStart:
        """Mark a node running; its spec and parents' results, or why not."""
        reply: list[Any] = await self._call(
            self._node_start, keys.run_keys(run_id), [index, worker_id, now_ms, attempt], via
        )
        return NodeStart.parse(reply)

    async def finish_node(
        self,
        run_id: str,
        index: int,
        queue: str,
        token: str,
        mode: FinishMode,
        *,
        state: str = "",
        result: bytes = b"",
        now_ms: int,
        score_ms: int = 0,
        retention_ms: int,
        expiry_ms: int,
        lease_ms: int,
        dead: tuple[keys.AppKeys, bytes, int, int, str, str] | None = None,
        via: Caller | None = None,
    ) -> FinishReply:
        """End one attempt of a graph node's job and release or settle its children
        (``MORE``: children are left; go on with :meth:`settle_more`); ``dead``: it failed
        for good, keep it as a dead letter, as :meth:`finish` does."""
        job_id = keys.node_job_id(run_id, index)
        script_keys = [
            *keys.run_keys(run_id),
            keys.notify(run_id),
            keys.in_progress(job_id),
            keys.job(job_id),
            keys.retry(job_id),
            keys.queue(queue),
            keys.ABORT,
            keys.failures(job_id),
        ]
        args = [
            token,
            mode,
            job_id,
            index,
            state,
            result,
            now_ms,
            score_ms,
            run_id,
            retention_ms,
            expiry_ms,
            lease_ms,
        ]
        if dead is not None:
            app, record, keep_ms, now, group, sample = dead
            script_keys += [app.dead_letters, app.dead_letter(job_id), app.error_groups]
            args += [record, keep_ms, now, group, sample]
        return FinishReply(int(await self._call(self._finish_node, script_keys, args, via)))

    async def submit_run(
        self,
        run_id: str,
        meta: dict[str, Any],
        *,
        total: int,
        now_ms: int,
        expiry_ms: int,
        lease_ms: int,
        max_age_ms: int,
    ) -> FinishReply | None:
        """Open a run whose other hashes are written: ``APPLIED``, ``MORE`` (roots are left
        to release: go on with :meth:`settle_more`), or None: refused, since a hash is
        incomplete or the run exists already."""
        script_keys = [*keys.run_keys(run_id), keys.notify(run_id)]
        args: list[Any] = [run_id, now_ms, expiry_ms, lease_ms, max_age_ms, total]
        for field_name, value in meta.items():
            args += [field_name, value]
        reply = int(await self._call(self._submit_run, script_keys, args))
        return FinishReply(reply) if reply else None

    async def settle_more(
        self, run_id: str, now_ms: int, retention_ms: int, expiry_ms: int, lease_ms: int
    ) -> FinishReply:
        """Go on with what run ``run_id`` has left half-way, a budget per call: trigger rules
        to apply (children or roots to release), then nodes a cancel has to visit.
        ``APPLIED`` when nothing is left, ``MORE`` otherwise, ``RUN_GONE``."""
        script_keys = [*keys.run_keys(run_id), keys.notify(run_id), keys.ABORT]
        args = [run_id, now_ms, retention_ms, expiry_ms, lease_ms]
        return FinishReply(int(await self._call(self._settle_more, script_keys, args)))

    async def settling(self, now_ms: int, limit: int = 20) -> list[str]:
        """Runs with work left half-way whose worker is past due (it may have died)."""
        ids = await self.redis.zrangebyscore(keys.SETTLING, "-inf", now_ms, start=0, num=limit)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def reap(self, now_ms: int, limit: int = 20) -> list[str]:
        """Delete (UNLINK) the keys of big runs whose retention has ended; their ids."""
        due = await self.redis.zrangebyscore(keys.REAPING, "-inf", now_ms, start=0, num=limit)
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in due]
        if ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                for run_id in ids:
                    pipe.unlink(*keys.run_keys(run_id))
                pipe.zrem(keys.REAPING, *ids)
                await pipe.execute()
        return ids

    async def cancel_run(
        self, run_id: str, now_ms: int, retention_ms: int, lease_ms: int
    ) -> tuple[int, bool] | None:
        """Cancel a run, or go on cancelling it: the running nodes this call signalled and
        whether nodes are left to visit (call again), or None if the run is unknown."""
        signalled, more = await self._call(
            self._cancel_run,
            [*keys.run_keys(run_id), keys.notify(run_id), keys.ABORT],
            [run_id, now_ms, retention_ms, lease_ms],
        )
        return None if int(signalled) < 0 else (int(signalled), bool(int(more)))

    async def retry_node(
        self,
        app: keys.AppKeys,
        run_id: str,
        index: int,
        queue: str,
        *,
        now_ms: int,
        expiry_ms: int,
        max_age_ms: int,
    ) -> tuple[RetryReply, str]:
        """Put a dead graph node back on ``queue`` as a new first attempt, bringing back the
        nodes below it that its failure settled (``lua/retry_node.lua``): ``(reply,
        detail)``."""
        job_id = keys.node_job_id(run_id, index)
        script_keys = [
            *keys.run_keys(run_id),
            keys.notify(run_id),
            app.dead_letters,
            app.dead_letter(job_id),
            keys.queue(queue),
            keys.job(job_id),
            keys.retry(job_id),
            keys.failures(job_id),
            keys.lease_lost(job_id),
        ]
        reply = await self._call(
            self._retry_node, script_keys, [run_id, index, now_ms, expiry_ms, max_age_ms]
        )
        return RetryReply(reply[0].decode()), reply[1].decode()

    # -- queue operations ------------------------------------------------------------------

    async def queue_move(
        self, source: str, destination: str, limit: int, offset: int
    ) -> tuple[int, int, int]:
        """Move up to ``limit`` waiting jobs: ``(moved, held passed by, left to look at)``."""
        reply = await self._call(
            self._queue_move, [keys.queue(source), keys.queue(destination)], [limit, offset]
        )
        return int(reply[0]), int(reply[1]), int(reply[2])

    async def queue_purge(
        self, queue: str, before_ms: int, limit: int, offset: int
    ) -> tuple[int, int, bool]:
        """Delete up to ``limit`` jobs due at or before ``before_ms``: ``(purged, held passed
        by, more may be left)``."""
        reply = await self._call(self._queue_purge, [keys.queue(queue)], [before_ms, limit, offset])
        return int(reply[0]), int(reply[1]), bool(int(reply[2]))

    # -- schedules ------------------------------------------------------------------------

    async def schedule_register(
        self,
        app: keys.AppKeys,
        name: str,
        definition: bytes,
        version: str,
        first_ms: int | None,
        pipe: Pipeline | None = None,
    ) -> Any:
        """Store a schedule's definition; 1 if its cursor was (re)set to ``first_ms``, else
        0 (in ``pipe``, the reply comes from its execute())."""
        return await self._call(
            self._schedule_register,
            [app.schedules, app.schedule_state(name)],
            [name, definition, version, "" if first_ms is None else first_ms],
            pipe=pipe,
        )

    async def schedule_fire(
        self,
        app: keys.AppKeys,
        name: str,
        queue: str,
        *,
        due_ms: int,
        next_ms: int | None,
        version: str,
        now_ms: int,
        overlap: bool,
        expiry_ms: int,
        missed: int,
        jobs: list[tuple[str, bytes, int]],
        pipe: Pipeline | None = None,
    ) -> Any:
        """Fire the tick due at ``due_ms`` if no other worker has: ``(outcome, enqueued)``
        (``lua/schedule_fire.lua``); in ``pipe``, the reply comes from its execute()."""
        args: list[Any] = [
            due_ms,
            "" if next_ms is None else next_ms,
            version,
            now_ms,
            1 if overlap else 0,
            expiry_ms,
            missed,
        ]
        for job_id, payload, score in jobs:
            args += [job_id, payload, score]
        script_keys = [app.schedule_state(name), keys.queue(queue)]
        return await self._call(self._schedule_fire, script_keys, args, pipe=pipe)

    # -- metrics and alerts ---------------------------------------------------------------

    async def metrics_flush(self, buckets: dict[str, tuple[int, list[Any]]]) -> None:
        """Add aggregated metrics: bucket key -> (ttl ms, flat ``kind, field, value`` ops)."""
        args: list[Any] = []
        for ttl, ops in buckets.values():
            args += [ttl, len(ops) // 3, *ops]
        await self._call(self._metrics_flush, list(buckets), args)

    async def alert_step(
        self, app: keys.AppKeys, rule: str, args: list[Any]
    ) -> tuple[AlertAction, str, str]:
        """One evaluation of one of ``app``'s rules (ARGV as ``lua/alert_step.lua`` lists,
        rule name 7th); ``(action, alert id, started ms)``."""
        reply = await self._call(
            self._alert_step, [app.alert_state(rule), app.alert_history, app.alert_ids], args
        )
        action, alert_id, started = (part.decode() for part in reply)
        return AlertAction(action), alert_id, started

    async def alert_ack(
        self, app: keys.AppKeys, alert_id: str, by: str, note: str, now_ms: int, history_max: int
    ) -> tuple[AckReply, str]:
        """Acknowledge one of ``app``'s firing alerts: ``(OK, rule)`` or ``(reason, "")``."""
        reply = await self._call(
            self._alert_ack,
            [app.alert_ids, app.alert_history],
            [alert_id, by, note, now_ms, history_max, app.alert_state_prefix],
        )
        status, detail = (part.decode() for part in reply)
        if status == "ok":
            return AckReply.OK, detail
        return AckReply(detail), ""
