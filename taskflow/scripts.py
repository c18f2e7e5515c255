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

__all__ = ("Claimed", "Scripts")


def _source(name: str) -> str:
    return resources.files("taskflow").joinpath("lua", f"{name}.lua").read_text("utf-8")


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
        self._claim: AsyncScript = redis.register_script(_source("claim"))
        self._finish: AsyncScript = redis.register_script(_source("finish"))
        self._abort: AsyncScript = redis.register_script(_source("abort"))
        self._renew: AsyncScript = redis.register_script(_source("renew"))

    async def enqueue(
        self, job_id: str, queue: str, payload: bytes, expiry_ms: int, score_ms: int
    ) -> bool:
        """Write the job and add it to its queue; False if the id is taken."""
        done = await self._enqueue(
            keys=[keys.job(job_id), keys.result(job_id), keys.queue(queue)],
            args=[job_id, payload, max(expiry_ms, 1), score_ms],
        )
        return bool(done)

    async def claim(
        self, queues: list[str], now_ms: int, limit: int, token: str, lease_ms: int
    ) -> list[Claimed]:
        reply: list[Any] = await self._claim(
            keys=[keys.queue(q) for q in queues], args=[now_ms, limit, token, lease_ms]
        )
        claimed = []
        for i in range(0, len(reply), 7):
            qi, job_id, payload, attempt, failures, score, aborted = reply[i : i + 7]
            claimed.append(
                Claimed(
                    job_id=job_id.decode(),
                    queue=queues[int(qi) - 1],
                    payload=payload,
                    attempt=int(attempt),
                    failures=int(failures),
                    score=int(float(score)),
                    aborted=bool(aborted),
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
    ) -> int:
        """1 applied, 2 already finished (a repeated call), 0 claim lost."""
        reply = await self._finish(
            keys=_job_keys(job_id, queue),
            args=[token, mode, job_id, result, result_ttl_ms, score_ms],
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

    async def renew(self, job_ids: list[str], token: str, lease_ms: int) -> list[str]:
        """Renew leases; return the ids whose claim was lost."""
        if not job_ids:
            return []
        lost = await self._renew(
            keys=[keys.in_progress(j) for j in job_ids], args=[token, lease_ms]
        )
        return [job_ids[int(i) - 1] for i in lost]
