"""``app.dead_letters``: jobs that failed for good, kept to inspect, retry or purge.

A job whose last attempt fails (retries exhausted, an error not retried, invalid
arguments, a corrupt payload, a task no worker ran within ``unknown_task_window``, a job
whose workers kept dying) is kept for ``Settings.dead_letter_ttl`` (7 days) by the script
that records its failure: its payload as stored, and its error, attempts and times. Retry
puts the same job (same id) back on its queue, or another, as a new first attempt.

A graph node that fails for good is kept the same way, with its run and node. Retrying it
(``lua/retry_node.lua``, one atomic call) runs it again in its run, and brings back the
nodes below it that never ran because it failed: they run once it succeeds, and the run,
running again, ends as its nodes now do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import orjson

from ._clock import ms_to_datetime, now_ms
from ._options import check_queue
from ._protocol import keys
from ._protocol.codecs import CorruptPayload, decode_job
from ._protocol.scripts import RetryReply
from .errors import ConfigurationError, JobNotFound, RetryRefused, redis_errors
from .task import JobHandle

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Sequence

    from ._client import Client

__all__ = ("DeadLetter", "DeadLetters", "ErrorGroup")

_PAGE = 200
_Found = list[tuple[str, "DeadLetter"]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job that failed for good."""

    job_id: str
    task: str
    queue: str
    error: dict[str, Any]  #: type, message, traceback (as the job's result holds them)
    attempts: int
    enqueued: datetime
    started: datetime
    failed: datetime
    worker: str
    args: list[Any]  #: as stored (JSON); empty if the payload could not be decoded
    kwargs: dict[str, Any]
    run_id: str | None = None  #: a graph node's run (None for a plain job)
    node: str | None = None  #: a graph node's name (``NodeStatus.name``)
    node_index: int | None = None  #: a graph node's index (``NodeStatus.index``)

    @property
    def reason(self) -> str:
        """The error's type, e.g. ``ValueError`` or ``taskflow.UnknownTask``."""
        return str(self.error.get("type", "?"))

    @property
    def message(self) -> str:
        return str(self.error.get("message", ""))


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """Failures for good of one task with one error type: a burst is one line."""

    task: str
    error_type: str
    count: int
    first_seen: datetime
    last_seen: datetime
    sample: str  #: the latest one's message and traceback (truncated)


class DeadLetters:
    """The app's dead letters, from any process with the app open."""

    def __init__(self, app: Client) -> None:
        self.app = app

    @redis_errors
    async def list(
        self,
        *,
        queue: str | None = None,
        task: str | None = None,
        run_id: str | None = None,
        limit: int = 50,
    ) -> list[DeadLetter]:
        """The newest first, up to ``limit``, of a queue, task or graph run if given."""
        if not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit={limit!r} must be a positive integer")
        out: list[DeadLetter] = []
        async for letter in self._scan(newest_first=True):
            if (
                (queue is None or letter.queue == queue)
                and (task is None or letter.task == task)
                and (run_id is None or letter.run_id == run_id)
            ):
                out.append(letter)
                if len(out) >= limit:
                    break
        return out

    @redis_errors
    async def errors(self) -> Sequence[ErrorGroup]:
        """Failures for good grouped by task and error type, the most frequent first (kept
        while failures keep coming: a group leaves ``dead_letter_ttl`` after the app's last
        failure)."""
        raw = await cast(
            "Awaitable[dict[bytes, bytes]]", self.app.redis.hgetall(self.app.keys.error_groups)
        )
        fields: dict[str, dict[str, str]] = {}
        for key, value in raw.items():
            group, _, part = key.decode().rpartition(":")
            fields.setdefault(group, {})[part] = value.decode()
        out = []
        for group, f in fields.items():
            task, _, error_type = group.partition("\x1f")
            out.append(
                ErrorGroup(
                    task=task,
                    error_type=error_type,
                    count=int(f.get("n", 0)),
                    first_seen=ms_to_datetime(int(f.get("first", 0))),
                    last_seen=ms_to_datetime(int(f.get("last", 0))),
                    sample=f.get("sample", ""),
                )
            )
        return sorted(out, key=lambda g: (-g.count, g.task, g.error_type))

    @redis_errors
    async def count(self) -> int:
        """How many dead letters are kept (expired ones may count until the next write)."""
        return int(await cast("Awaitable[int]", self.app.redis.zcard(self.app.keys.dead_letters)))

    @redis_errors
    async def get(self, job_id: str) -> DeadLetter:
        """One dead letter; :class:`JobNotFound` if there is none under ``job_id``."""
        found = await self._read([job_id])
        if not found:
            raise JobNotFound(job_id)
        return found[0][1]

    @redis_errors
    async def retry(self, job_id: str, *, queue: str | None = None) -> JobHandle[Any]:
        """Put the job back on its queue (or ``queue``) as it was enqueued, under the same
        id, as a new first attempt; it leaves the dead letters. Its old result is deleted,
        so a waiter gets the new one.

        A graph node runs again in its run (wait on ``app.run_handle(letter.run_id)``: a
        node's job has no result of its own); the nodes below it that never ran because it
        failed run once it succeeds, and the run, running again, ends as its nodes now do.

        :raises JobNotFound: no dead letter ``job_id``.
        :raises RetryRefused: a graph node whose run expired or was cancelled, that is no
            longer failed (retried already), or whose retry is too big for one call.
        """
        raw = await cast(
            "Awaitable[dict[bytes, bytes]]",
            self.app.redis.hgetall(self.app.keys.dead_letter(job_id)),
        )
        if not raw or not raw.get(b"record"):
            raise JobNotFound(job_id)
        record = orjson.loads(raw[b"record"])
        target = queue or record["queue"]
        check_queue(target)
        if record.get("run") is not None:
            await self._retry_node(job_id, record["run"], int(record["node"]), target)
            return JobHandle(self.app, job_id, record["task"], target)
        if not raw.get(b"payload"):
            raise JobNotFound(job_id)
        now = now_ms()
        expiry = int(self.app.settings.job_ttl.total_seconds() * 1000)
        async with self.app.redis.pipeline(transaction=True) as pipe:
            pipe.delete(
                keys.result(job_id),
                keys.retry(job_id),
                keys.failures(job_id),
                keys.lease_lost(job_id),
            )
            pipe.set(keys.job(job_id), raw[b"payload"], px=expiry)
            pipe.zadd(keys.queue(target), {job_id: now})
            pipe.zrem(self.app.keys.dead_letters, job_id)
            pipe.delete(self.app.keys.dead_letter(job_id))
            pipe.publish(keys.wake_channel(target), "1")
            await pipe.execute()
        return JobHandle(self.app, job_id, record["task"], target)

    async def _retry_node(self, job_id: str, run_id: str, index: int, queue: str) -> None:
        settings = self.app.settings
        reply, detail = await self.app.scripts.retry_node(
            self.app.keys,
            run_id,
            index,
            queue,
            now_ms=now_ms(),
            expiry_ms=int(settings.job_ttl.total_seconds() * 1000),
            max_age_ms=int(settings.run_max_age.total_seconds() * 1000),
        )
        if reply is RetryReply.OK:
            return
        if reply is RetryReply.NO_LETTER:
            raise JobNotFound(job_id)
        reasons = {
            RetryReply.RUN_GONE: f"its graph run {run_id!r} expired (runs are kept for "
            "Settings.run_retention after they end); submit the graph again",
            RetryReply.CANCELLED: f"its graph run {run_id!r} was cancelled",
            RetryReply.NOT_FAILED: f"node {index} of run {run_id!r} is {detail}, not failed "
            "(retried already?)",
            RetryReply.SETTLING: f"its graph run {run_id!r} is still applying the trigger "
            "rules of a node that just ended; try again in a few seconds",
            RetryReply.TOO_BIG: f"bringing back the nodes below it would read over {detail} "
            "node states in one call; submit the graph again",
        }
        raise RetryRefused(job_id, reasons[reply])

    @redis_errors
    async def purge(
        self,
        *,
        older_than: timedelta = timedelta(0),
        queue: str | None = None,
        task: str | None = None,
    ) -> int:
        """Delete the dead letters that failed more than ``older_than`` ago (all by
        default), of a queue or task if given; returns how many."""
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise ConfigurationError(f"older_than={older_than!r} must be a timedelta >= 0")
        cutoff = ms_to_datetime(now_ms() - int(older_than.total_seconds() * 1000))
        doomed = [
            letter.job_id
            async for letter in self._scan(newest_first=False)
            if letter.failed <= cutoff
            and (queue is None or letter.queue == queue)
            and (task is None or letter.task == task)
        ]
        for start in range(0, len(doomed), _PAGE):
            chunk = doomed[start : start + _PAGE]
            async with self.app.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.app.keys.dead_letters, *chunk)
                pipe.delete(*[self.app.keys.dead_letter(j) for j in chunk])
                await pipe.execute()
        return len(doomed)

    # -- internals ----------------------------------------------------------------------

    async def _scan(self, *, newest_first: bool) -> AsyncIterator[DeadLetter]:
        redis, index = self.app.redis, self.app.keys.dead_letters
        start = 0
        while True:
            if newest_first:
                ids = await redis.zrevrange(index, start, start + _PAGE - 1)
            else:
                ids = await redis.zrange(index, start, start + _PAGE - 1)
            if not ids:
                return
            found = await self._read([i.decode() for i in ids])
            gone = len(ids) - len(found)
            for _, letter in found:
                yield letter
            if gone:  # their records expired: drop them from the index
                live = {job_id for job_id, _ in found}
                dead = [i for i in ids if i.decode() not in live]
                await redis.zrem(index, *dead)
            start += len(ids) - gone

    async def _read(self, job_ids: Sequence[str]) -> Sequence[tuple[str, DeadLetter]]:
        async with self.app.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self.app.keys.dead_letter(job_id), ["payload", "record", "node"])
            rows = await pipe.execute()
        out: _Found = []
        limit = self.app.settings.max_payload_bytes
        for job_id, (payload, record, node) in zip(job_ids, rows, strict=True):
            if record is None:
                continue
            data = orjson.loads(record)
            args: list[Any] = []
            kwargs: dict[str, Any] = {}
            if payload:
                try:
                    decoded = decode_job(payload, limit)
                    args, kwargs = decoded.args, decoded.kwargs
                except CorruptPayload:
                    pass
            out.append(
                (
                    job_id,
                    DeadLetter(
                        job_id=job_id,
                        task=data["task"],
                        queue=data["queue"],
                        error=data["error"] if isinstance(data["error"], dict) else {},
                        attempts=data["attempts"],
                        enqueued=ms_to_datetime(data["enqueue_ms"]),
                        started=ms_to_datetime(data["start_ms"]),
                        failed=ms_to_datetime(data["failed_ms"]),
                        worker=data["worker"],
                        args=args,
                        kwargs=kwargs,
                        run_id=data.get("run"),
                        node=node.decode() if node is not None else None,
                        node_index=data.get("node"),
                    ),
                )
            )
        return out
