"""Typed wrappers around the server-side Lua scripts in ``taskflow/lua``.

Each script is one atomic step of arq's protocol; see the comment at the top of each file.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from . import keys

if TYPE_CHECKING:
    from arq.connections import ArqRedis
    from redis.commands.core import AsyncScript

    from .batcher import Batcher

__all__ = ("Claimed", "Scripts")


def _source(name: str) -> str:
    return resources.files("taskflow").joinpath("lua", f"{name}.lua").read_text("utf-8")


def _node_source(name: str) -> str:
    return _source("node_lib") + "\n" + _source(name)


def _graph_source(name: str) -> str:
    return _source("graph_lib") + "\n" + _source(name)


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
    node_start: list[Any] | None = None  #: a graph node's start, done by the claim itself


FinishMode = Literal["done", "retry", "requeue"]


def _job_keys(job_id: str, queue: str) -> list[str]:
    return [
        keys.in_progress(job_id),
        keys.job(job_id),
        keys.retry(job_id),
        keys.result(job_id),
        keys.queue(queue),
        keys.ABORT,
        keys.failures(job_id),
    ]


class Scripts:
    """The scripts registered on one client (EVALSHA, loading on first use)."""

    def __init__(self, redis: ArqRedis) -> None:
        self._enqueue: AsyncScript = redis.register_script(_source("enqueue"))
        self.enqueue_script = self._enqueue  # for callers that pipeline several enqueues
        self.metrics_flush_script: AsyncScript = redis.register_script(_source("metrics_flush"))
        self.alert_step_script: AsyncScript = redis.register_script(_source("alert_step"))
        self.alert_ack_script: AsyncScript = redis.register_script(_source("alert_ack"))
        self._claim: AsyncScript = redis.register_script(_node_source("claim"))
        self._finish: AsyncScript = redis.register_script(_source("finish"))
        self._abort: AsyncScript = redis.register_script(_source("abort"))
        self._renew: AsyncScript = redis.register_script(_source("renew"))
        self._node_start: AsyncScript = redis.register_script(_node_source("node_start"))
        self._finish_node: AsyncScript = redis.register_script(_graph_source("finish_node"))
        self._cancel_run: AsyncScript = redis.register_script(_graph_source("cancel_run"))

    async def enqueue(
        self, queue: str, expiry_ms: int, jobs: list[tuple[str, bytes, int]]
    ) -> list[bool]:
        """Write jobs ``(id, payload, score ms)`` and add them to ``queue``; for each, False
        if its id was taken. Wakes the queue's idle workers."""
        args: list[Any] = [max(expiry_ms, 1)]
        for job_id, payload, score in jobs:
            args += [job_id, payload, score]
        flags = await self._enqueue(keys=[keys.queue(queue)], args=args)
        return [bool(f) for f in flags]

    async def claim(
        self,
        queues: list[str],
        now_ms: int,
        limit: int,
        token: str,
        lease_ms: int,
        via: Batcher | None = None,
    ) -> list[Claimed]:
        reply: list[Any] = await self._call(
            self._claim, [keys.queue(q) for q in queues], [now_ms, limit, token, lease_ms], via
        )
        claimed = []
        for i in range(0, len(reply), 8):
            qi, job_id, payload, attempt, failures, score, aborted, node = reply[i : i + 8]
            claimed.append(
                Claimed(
                    job_id=job_id.decode(),
                    queue=queues[int(qi) - 1],
                    payload=payload,
                    attempt=int(attempt),
                    failures=int(failures),
                    score=int(float(score)),
                    aborted=bool(aborted),
                    node_start=node,
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
        via: Batcher | None = None,
    ) -> int:
        """1 applied, 2 already finished (a repeated call), 0 claim lost."""
        reply = await self._call(
            self._finish,
            _job_keys(job_id, queue),
            [token, mode, job_id, result, result_ttl_ms, score_ms],
            via,
        )
        return int(reply)

    async def abort(
        self, job_id: str, queue: str, cancelled: bytes, result_ttl_ms: int, now_ms: int
    ) -> int:
        """0 already finished, 1 cancelled, 2 signalled to its worker, -1 not found."""
        reply = await self._abort(
            keys=_job_keys(job_id, queue), args=[job_id, cancelled, result_ttl_ms, now_ms]
        )
        return int(reply)

    async def renew(
        self, jobs: list[tuple[str, str]], token: str, lease_ms: int, now_ms: int
    ) -> list[str]:
        """Renew leases of ``(job id, queue)`` pairs; return the ids whose claim was lost."""
        if not jobs:
            return []
        pairs: list[str] = []
        for job_id, queue in jobs:
            pairs += [keys.in_progress(job_id), keys.queue(queue)]
        lost = await self._renew(
            keys=pairs, args=[token, lease_ms, now_ms, *(job_id for job_id, _ in jobs)]
        )
        return [jobs[int(i) - 1][0] for i in lost]

    @staticmethod
    async def _call(
        script: AsyncScript, keys: list[Any], args: list[Any], via: Batcher | None
    ) -> Any:
        if via is None:
            return await script(keys=keys, args=args)
        return await via.call(script, keys, args)

    # -- graph runs -----------------------------------------------------------------------

    async def node_start(
        self,
        run_id: str,
        index: int,
        worker_id: str,
        now_ms: int,
        attempt: int,
        via: Batcher | None = None,
    ) -> list[Any]:
        """Mark a node running; ``['run', spec, parent, state, result, ...]`` or why not."""
        reply: list[Any] = await self._call(
            self._node_start,
            keys.run_keys(run_id),
            [index, worker_id, now_ms, attempt, run_id],
            via,
        )
        return reply

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
        via: Batcher | None = None,
    ) -> int:
        """1 applied, 2 already applied, 0 claim lost, 3 run gone."""
        job_id = keys.node_job_id(run_id, index)
        job_keys = [
            keys.in_progress(job_id),
            keys.job(job_id),
            keys.retry(job_id),
            keys.queue(queue),
            keys.ABORT,
            keys.failures(job_id),
        ]
        reply = await self._call(
            self._finish_node,
            [*keys.run_keys(run_id), *job_keys],
            [
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
            ],
            via,
        )
        return int(reply)

    async def cancel_run(self, run_id: str, now_ms: int, retention_ms: int) -> int:
        """Running nodes signalled to abort, or -1 if the run is unknown."""
        reply = await self._cancel_run(
            keys=keys.run_keys(run_id), args=[run_id, now_ms, retention_ms]
        )
        return int(reply)
