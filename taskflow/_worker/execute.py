"""Running one claimed job: decode, validate, call the body, decide, write the outcome.

Nothing here raises into the worker: every path ends in exactly one finish-script call
(done, retry or requeue), retried through Redis outages.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import anyio
import orjson
from redis.exceptions import RedisError

from .._clock import ms_to_datetime, now_ms
from .._protocol import keys
from .._protocol.codecs import (
    CorruptPayload,
    JobPayload,
    JobResult,
    check_size,
    corrupt_error,
    decode_job,
    dumps,
    encode_exception,
    encode_result,
)
from .._protocol.scripts import Claimed, FinishReply, NodeVerdict, claim_token
from .._registry import parse_json
from .._retry import decide, lost_attempts
from ..connection import CONNECTION_ERRORS
from ..errors import ArgumentError, FailureKind, PayloadTooLarge, Retry, SerializationError
from ..runs import node_arguments, settle_run, start_node
from ..task import JobContext, Task, _current
from .meter import JobSample, Metered, rss_bytes

if TYPE_CHECKING:
    from .._client import Client
    from .._protocol.keys import AppKeys
    from ..config import WorkerSettings
    from .batcher import Batcher
    from .services import Health, JobObserver


class Runner(Protocol):
    """What running one job needs from its worker (the Worker is one)."""

    @property
    def id(self) -> str: ...

    @property
    def app(self) -> Client: ...

    @property
    def settings(self) -> WorkerSettings: ...

    @property
    def batcher(self) -> Batcher: ...

    @property
    def health(self) -> Health: ...

    @property
    def observers(self) -> Sequence[JobObserver]: ...

    @property
    def abandon_finishes(self) -> bool:
        """True once a stopping worker gives up writing outcomes (Redis is unreachable)."""
        ...

    def note_outcome(self, outcome: Outcome) -> None: ...

    def note_stale(self, outcome: Outcome) -> None:
        """Count ``outcome``, already noted, as stale instead: its finish was refused."""
        ...

    def skip_job(self, job_id: str, task: str) -> bool:
        """Claim other jobs than ``job_id`` for a while (its ``task`` is not registered
        here); True the first time this worker meets ``task``."""
        ...


__all__ = ("Outcome", "Runner", "Slot", "execute")

logger = logging.getLogger("taskflow.worker")


@dataclass(slots=True)
class Slot:
    """A running job: its claim, and the cancel scope around its body."""

    claim: Claimed
    scope: anyio.CancelScope | None = None
    interrupt: Literal["abort", "drain"] | None = None
    finishing: bool = False  #: its outcome is being written; its lease needs no renewal
    task: str = ""  #: its task's name, once its body started
    started_ms: int = 0  #: when its body started (0: not yet)
    deadline_ms: float = math.inf  #: when its body's timeout ends (inf: no timeout)
    run: float = 0.0  #: wall seconds in the body
    cpu: float = 0.0  #: CPU seconds of the body's own steps (when metrics are on)
    rss: int = 0  #: process RSS when the body started


@dataclass(frozen=True, slots=True)
class Outcome:
    mode: Literal["done", "retry", "requeue"]
    status: str = ""  # for mode "done": succeeded | failed | cancelled
    value: Any = None
    delay: float = 0.0  # for mode "retry"
    retryable: bool = field(default=False, compare=False)
    score_ms: int | None = None  # for mode "requeue": put back at this score (default now)
    reason: str = ""  # for mode "requeue": why, for the log


def _error(kind: FailureKind, message: str) -> dict[str, str]:
    return {"type": kind.value, "message": message, "traceback": ""}


def _failed(value: dict[str, Any]) -> Outcome:
    return Outcome("done", "failed", value)


async def execute(worker: Runner, slot: Slot) -> None:
    """Run ``slot``'s job to one outcome and record it."""
    claim = slot.claim
    start = now_ms()
    payload: JobPayload | None = None
    task: Task[Any, Any] | None = None
    try:
        payload, task, outcome = _prepare(worker, claim)
        if outcome is None and task is not None and claim.failures:
            outcome = await _after_overdue(worker, claim, task)
        if outcome is not None and _is_job_lost(outcome):
            outcome = await _lease_lost(worker, claim, outcome)
        if outcome is None:
            assert payload is not None and task is not None
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "job %s %s started (queue %s, attempt %d)",
                    claim.job_id,
                    task.name,
                    claim.queue,
                    claim.attempt,
                )
            outcome = await _run_body(worker, slot, payload, task)
    except Exception as exc:  # a bug in taskflow itself must not take the worker down
        logger.exception("internal error running job %s", claim.job_id)
        outcome = _failed(encode_exception(exc))
    node = payload.graph if payload is not None else keys.parse_node_job_id(claim.job_id)
    await _record(worker, slot, payload, task, outcome, start, node)


def _prepare(
    worker: Runner, claim: Claimed
) -> tuple[JobPayload | None, Task[Any, Any] | None, Outcome | None]:
    if claim.bad is not None:
        return None, None, _failed(_error(FailureKind.UNREADABLE_JOB, claim.bad[:2000]))
    if claim.payload is None:
        return (
            None,
            None,
            _failed(_error(FailureKind.JOB_EXPIRED, "job payload expired before it ran")),
        )
    try:
        payload = decode_job(claim.payload, worker.app.settings.max_payload_bytes)
    except CorruptPayload as exc:
        return None, None, _failed(corrupt_error(exc))
    if claim.aborted:
        return (
            payload,
            None,
            Outcome("done", "cancelled", _error(FailureKind.ABORTED, "aborted before it started")),
        )
    task = worker.app.tasks.get(payload.task)
    if task is None:
        return payload, None, _unknown_task(worker, claim, payload)
    lost = lost_attempts(claim.attempt, claim.failures)
    if lost >= worker.settings.max_worker_deaths:
        message = (
            f"its worker died during {lost} attempts (max_worker_deaths="
            f"{worker.settings.max_worker_deaths}): a poison job?"
        )
        return payload, task, _failed(_error(FailureKind.JOB_LOST, message))
    return payload, task, None


def _is_job_lost(outcome: Outcome) -> bool:
    return isinstance(outcome.value, dict) and outcome.value.get("type") == FailureKind.JOB_LOST


async def _note_lease_lost(worker: Runner, claim: Claimed, run: float) -> None:
    """This attempt lost its lease while its worker lived: leave a note, so that the attempt
    that gives up on the job says so instead of "its worker died"."""
    note = {
        "attempt": claim.attempt,
        "run_s": round(run, 3),
        "loop_stall_s": round(worker.health.loop_stall, 3),
        "lease_s": worker.settings.lease.total_seconds(),
        "worker": worker.id,
    }
    ttl_ms = int(worker.app.settings.job_ttl.total_seconds() * 1000)
    try:
        earlier = parse_json(await worker.app.redis.get(keys.lease_lost(claim.job_id)))
        if earlier is not None and earlier.get("attempt") == claim.attempt:
            return  # the monitor failed this attempt as overdue: its note says more
        await worker.app.redis.set(keys.lease_lost(claim.job_id), dumps(note), px=ttl_ms)
    except (RedisError, OSError) as exc:  # a note only: the job goes on without it
        logger.debug("job %s: lease-lost note not written: %s", claim.job_id, exc)


async def _lease_lost(worker: Runner, claim: Claimed, outcome: Outcome) -> Outcome:
    """JOB_LOST, or LEASE_LOST when an earlier attempt left a note that its worker lived."""
    try:
        raw = await worker.app.redis.get(keys.lease_lost(claim.job_id))
    except (RedisError, OSError):
        return outcome
    if raw is None:
        return outcome
    note = orjson.loads(raw)
    message = (
        f"attempt {note['attempt']} lost its lease while its worker ({note['worker']}) "
        f"lived: its body ran {note['run_s']:g}s against a {note['lease_s']:g}s lease, and "
        f"the event loop was seen blocked for up to {note['loop_stall_s']:g}s (a body that "
        "does not await? run blocking code with anyio.to_thread.run_sync)"
    )
    return _failed(_error(FailureKind.LEASE_LOST, message))


async def _after_overdue(worker: Runner, claim: Claimed, task: Task[Any, Any]) -> Outcome | None:
    """When the monitor failed the previous attempt (over its timeout on a worker whose event
    loop was blocked: ``lua/release_overdue.lua``), apply the task's retry policy to that
    timeout: None runs this attempt as the retry (at once: the timeout has already waited),
    else the job fails for good with the timeout."""
    try:
        note = parse_json(await worker.app.redis.get(keys.lease_lost(claim.job_id)))
    except (RedisError, OSError):
        return None
    if note is None or note.get("kind") != "overdue" or note.get("attempt") != claim.attempt - 1:
        return None
    timeout, blocked = note.get("timeout_s", "?"), note.get("blocked_s", "?")
    exc = TimeoutError(
        f"{task.name} exceeded its timeout of {timeout}s on worker {note.get('worker', '?')}, "
        f"whose event loop was blocked (for {blocked}s when attempt {claim.attempt - 1} was "
        "failed): a body that does not await? run blocking code with "
        "anyio.to_thread.run_sync"
    )
    # the failure is already counted (the release did): decide as its attempt would have
    before = replace(claim, failures=claim.failures - 1)
    outcome = _retry_or_fail(task, before, exc, None, task.options.retry_on)
    if outcome.mode == "retry":
        logger.warning("job %s: retrying at once after %s", claim.job_id, exc)
        return None
    return outcome


def _unknown_task(worker: Runner, claim: Claimed, payload: JobPayload) -> Outcome:
    """Put the job back for a worker that has its task (a rolling deploy), keeping its due
    time, until ``unknown_task_window`` has passed since then; after that it fails."""
    window = worker.settings.unknown_task_window.total_seconds()
    # the claim's score is when the job was due: its enqueue time, its deferral, or (put
    # back by this rule) the same due time again
    waited = max(0, now_ms() - claim.score) / 1000
    if waited < window:
        if worker.skip_job(claim.job_id, payload.task):
            logger.warning(
                "task %r is not registered on this worker: its jobs are put back for workers "
                "that have it (a rolling deploy?), each failing as UnknownTask once "
                "unknown_task_window=%gs has passed since it was due",
                payload.task,
                window,
            )
        reason = f"task {payload.task!r} is not registered here (fails in {window - waited:.0f}s)"
        return Outcome("requeue", score_ms=min(claim.score, now_ms()), reason=reason)
    known = ", ".join(sorted(worker.app.tasks)) or "none"
    message = (
        f"no task named {payload.task!r} on this worker; registered: {known} (no worker ran it "
        f"within unknown_task_window={window:g}s)"
    )
    return _failed(_error(FailureKind.UNKNOWN_TASK, message))


async def _arguments(
    worker: Runner, claim: Claimed, payload: JobPayload, task: Task[Any, Any]
) -> tuple[list[Any], dict[str, Any]] | Outcome:
    """Validated call arguments; a graph node's come from its parents' results."""
    raw_args, raw_kwargs = payload.args, payload.kwargs
    if payload.graph is not None:
        run_id, index = payload.graph
        if claim.node_start is not None:  # the claim script started the node already
            start = await node_arguments(worker.app, run_id, claim.node_start)
        else:
            start = await start_node(
                worker.app, run_id, index, worker.id, claim.attempt, via=worker.batcher
            )
        if start.verdict is not NodeVerdict.RUN:
            return _not_started(start.verdict)
        raw_args, raw_kwargs = start.args, start.kwargs
    try:
        return task.signature.decode(raw_args, raw_kwargs)
    except ArgumentError as exc:
        return _failed(encode_exception(exc))


async def _run_body(
    worker: Runner, slot: Slot, payload: JobPayload, task: Task[Any, Any]
) -> Outcome:
    claim = slot.claim
    arguments = _not_begun(slot) or await _arguments(worker, claim, payload, task)
    if isinstance(arguments, Outcome):
        return arguments
    args, kwargs = arguments
    options = task.options
    context = JobContext(
        job_id=claim.job_id,
        task=task.name,
        queue=claim.queue,
        attempt=claim.attempt,
        max_attempts=options.retries + 1,
        enqueue_time=ms_to_datetime(payload.enqueue_ms),
        worker_id=worker.id,
        **_tick(payload),
    )
    token = _current.set(context)
    outcome: Outcome | None = None
    try:
        # one scope serves the timeout (its deadline) and abort/drain (cancel() with a reason)
        with anyio.CancelScope(deadline=_started(slot, task)) as scope:
            slot.scope = scope
            if slot.interrupt is not None:  # interrupted before its body started
                scope.cancel()
            started = time.perf_counter()
            metered = Metered(_coroutine(task, args, kwargs)) if worker.observers else None
            try:
                if metered is not None:
                    slot.rss = rss_bytes()
                    value = await metered
                else:
                    value = await task.fn(*args, **kwargs)
            except Retry as exc:
                outcome = _retry_or_fail(task, claim, exc, exc.delay)
            except Exception as exc:
                outcome = _retry_or_fail(task, claim, exc, None, options.retry_on)
            else:
                outcome = Outcome("done", "succeeded", value)
    finally:
        slot.run = time.perf_counter() - started
        slot.cpu = metered.cpu if metered is not None else 0.0
        slot.scope = None
        _current.reset(token)
    if outcome is not None and (outcome.status == "succeeded" or slot.interrupt is None):
        return outcome
    if slot.interrupt == "abort":
        return Outcome("done", "cancelled", _error(FailureKind.ABORTED, "aborted while running"))
    if slot.interrupt == "drain":
        return Outcome("requeue")
    timeout = TimeoutError(f"{task.name} exceeded its timeout of {options.timeout:g}s")
    return _retry_or_fail(task, claim, timeout, None, options.retry_on)


def _started(slot: Slot, task: Task[Any, Any]) -> float:
    """Note the body's start and timeout on its slot (the heartbeat record lists them);
    returns the timeout's deadline on anyio's clock."""
    timeout = task.options.timeout
    slot.task, slot.started_ms = task.name, now_ms()
    if timeout:
        slot.deadline_ms = slot.started_ms + timeout * 1000
    return anyio.current_time() + timeout if timeout else math.inf


def _not_begun(slot: Slot) -> Outcome | None:
    """The outcome of a job interrupted before its body started: it must not start at all
    (a body runs up to its first await before a cancelled scope stops it, and that first
    step may be what kills workers)."""
    if slot.interrupt == "drain":
        return Outcome("requeue")
    if slot.interrupt == "abort":
        return Outcome(
            "done", "cancelled", _error(FailureKind.ABORTED, "aborted before it started")
        )
    return None


def _tick(payload: JobPayload) -> dict[str, Any]:
    """A schedule's job's context fields (its schedule, tick and missed ticks)."""
    if payload.tick is None:
        return {}
    name, tick_ms, missed = payload.tick
    return {"schedule": name, "tick": ms_to_datetime(tick_ms), "missed_ticks": missed}


def _coroutine(
    task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]
) -> Coroutine[Any, Any, Any]:
    # @app.task accepts only coroutine functions, so calling one gives a coroutine
    return cast("Coroutine[Any, Any, Any]", task.fn(*args, **kwargs))


def _not_started(verdict: NodeVerdict) -> Outcome:
    if verdict is NodeVerdict.GONE:
        return _failed(_error(FailureKind.RUN_NOT_FOUND, "its graph run is unknown or expired"))
    return Outcome("done", "cancelled", _error(FailureKind.CANCELLED, "run cancelled"))


def _retry_or_fail(
    task: Task[Any, Any],
    claim: Claimed,
    exc: BaseException,
    delay: float | None,
    retry_on: tuple[type[BaseException], ...] = (BaseException,),
) -> Outcome:
    """Retry while the policy allows it (``_retry.decide``); otherwise fail with ``exc`` as
    data."""
    options = task.options
    decision = decide(
        failures_before=claim.failures,
        error=exc,
        retries=options.retries,
        backoff=options.backoff,
        retry_on=retry_on,
        delay=delay,
    )
    if decision.retry:
        return Outcome("retry", delay=decision.delay, value=exc)
    error = encode_exception(exc)
    if options.retries and isinstance(exc, retry_on):
        error["message"] += f" (after {decision.failures} failed attempts)"
    return _failed(error)


async def _record(
    worker: Runner,
    slot: Slot,
    payload: JobPayload | None,
    task: Task[Any, Any] | None,
    outcome: Outcome,
    start: int,
    node: tuple[str, int] | None,
) -> None:
    claim = slot.claim
    slot.finishing = True
    finish = now_ms()
    result = b""
    ttl = -1
    score = _score(outcome, finish)
    if node is not None:
        state, result = _node_result(worker, claim, outcome)
    elif outcome.mode == "done":
        result, ttl = _encode(worker, claim, payload, task, outcome, start, finish)
    _log_outcome(claim, payload, outcome, slot.run)
    worker.note_outcome(outcome)
    if worker.observers:
        sample = _sample(slot, payload, outcome, start, finish)
        for observer in worker.observers:
            observer.job_finished(sample)
    settings = worker.app.settings
    if node is not None:
        run_id, index = node
        # a node's error as stored (a result that could not be stored fails it too)
        error = orjson.loads(result) if state == "failed" else None
        dead = _dead_letter(worker, claim, payload, error, start, finish, node)

        async def call() -> FinishReply:
            return await worker.app.scripts.finish_node(
                run_id,
                index,
                claim.queue,
                claim_token(worker.id, claim.attempt),
                outcome.mode,
                state=state,
                result=result,
                now_ms=finish,
                score_ms=score,
                retention_ms=int(settings.run_retention.total_seconds() * 1000),
                expiry_ms=int(settings.job_ttl.total_seconds() * 1000),
                lease_ms=int(worker.settings.lease.total_seconds() * 1000),
                dead=dead,
                via=worker.batcher,
            )
    else:
        failed = outcome.mode == "done" and outcome.status == "failed"
        error = outcome.value if failed else None
        dead = _dead_letter(worker, claim, payload, error, start, finish)

        async def call() -> FinishReply:
            return await worker.app.scripts.finish(
                claim.job_id,
                claim.queue,
                claim_token(worker.id, claim.attempt),
                outcome.mode,
                result=result,
                result_ttl_ms=ttl,
                score_ms=score,
                dead=dead,
                via=worker.batcher,
            )

    reply = await finish_job(worker, claim, call)
    if reply is FinishReply.CLAIM_LOST:
        worker.note_stale(outcome)
        await _note_lease_lost(worker, claim, slot.run)
    elif reply is FinishReply.MORE and node is not None:
        await settle_run(worker.app, node[0], worker.settings.lease)


_SAMPLE_CHARS = 4000  # of an error group's sample: its message and traceback


def _dead_letter(
    worker: Runner,
    claim: Claimed,
    payload: JobPayload | None,
    error: Any,
    start: int,
    finish: int,
    node: tuple[str, int] | None = None,
) -> tuple[AppKeys, bytes, int, int, str, str] | None:
    """A job that failed for good (``error`` is not None) is kept as a dead letter
    (``app.dead_letters``): its error, attempts and times here, and a graph node's run and
    index; its payload, as stored (and a node's name), are copied by the script."""
    keep = worker.app.settings.dead_letter_ttl
    if error is None or keep <= timedelta(0):
        return None
    record = {
        "task": payload.task if payload else "",
        "queue": claim.queue,
        "error": error,
        "attempts": claim.attempt,
        "enqueue_ms": payload.enqueue_ms if payload else 0,
        "start_ms": start,
        "failed_ms": finish,
        "worker": worker.id,
    }
    if node is not None:
        record["run"], record["node"] = node
    details = error if isinstance(error, dict) else {}
    group = f"{record['task']}\x1f{details.get('type', '?')}"
    sample = f"{details.get('message', '')}\n{details.get('traceback', '')}"[:_SAMPLE_CHARS]
    keep_ms = int(keep.total_seconds() * 1000)
    return worker.app.keys, dumps(record), keep_ms, finish, group, sample


def _score(outcome: Outcome, finish: int) -> int:
    """Where a retried or requeued job goes back in its queue (ms)."""
    if outcome.mode == "retry":
        return finish + int(outcome.delay * 1000)
    if outcome.mode == "requeue" and outcome.score_ms is not None:
        return outcome.score_ms
    return finish


def _log_outcome(claim: Claimed, payload: JobPayload | None, outcome: Outcome, run: float) -> None:
    """One line per outcome: DEBUG for success, INFO for a retry or a cancellation, ERROR
    with the traceback for a final failure (unknown task, corrupt payload and invalid
    arguments included)."""
    task = payload.task if payload is not None else "?"
    if outcome.mode == "done" and outcome.status == "succeeded":
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("job %s %s succeeded in %.3fs", claim.job_id, task, run)
    elif outcome.mode == "retry":
        exc = outcome.value
        logger.info(
            "job %s %s attempt %d failed, retrying in %.2fs: %s: %s",
            claim.job_id,
            task,
            claim.attempt,
            outcome.delay,
            type(exc).__name__,
            exc,
        )
    elif outcome.mode == "requeue" and outcome.reason:
        logger.debug("job %s %s requeued: %s", claim.job_id, task, outcome.reason)
    elif outcome.mode == "requeue":
        logger.info("job %s %s requeued: the worker is stopping", claim.job_id, task)
    elif isinstance(outcome.value, dict):
        error: dict[str, Any] = outcome.value
        line = "job %s %s %s on attempt %d: %s: %s%s"
        what = (claim.job_id, task, outcome.status, claim.attempt)
        cause = (error.get("type", "?"), error.get("message", ""))
        if outcome.status == "cancelled":
            logger.info(line, *what, *cause, "")
        else:
            trace = str(error.get("traceback") or "").rstrip()
            logger.error(line, *what, *cause, "\n" + trace if trace else "")


def _sample(
    slot: Slot, payload: JobPayload | None, outcome: Outcome, start: int, finish: int
) -> JobSample:
    claim = slot.claim
    rss = rss_bytes() if slot.rss else 0
    return JobSample(
        task=payload.task if payload is not None else "?",
        queue=claim.queue,
        outcome=outcome.status or _MODE_OUTCOME[outcome.mode],
        attempt=claim.attempt,
        finished_ms=finish,
        wait=max(0, start - claim.score) / 1000,
        run=slot.run,
        cpu=slot.cpu,
        memory=max(0, rss - slot.rss) if slot.rss else 0,
        rss=rss,
    )


_MODE_OUTCOME = {"retry": "retrying", "requeue": "requeued", "done": "failed"}


def _node_result(worker: Runner, claim: Claimed, outcome: Outcome) -> tuple[str, bytes]:
    """A graph node's final state and the JSON stored for its children and its run."""
    if outcome.mode != "done":
        return "", b""
    try:
        data = dumps(outcome.value)
        check_size(
            f"result of node job {claim.job_id!r}", data, worker.app.settings.max_payload_bytes
        )
        return outcome.status, data
    except (SerializationError, PayloadTooLarge) as exc:
        logger.error("job %s: result not stored: %s", claim.job_id, exc)
        return "failed", dumps(_error(FailureKind.RESULT_NOT_ENCODABLE, str(exc)))


def _encode(
    worker: Runner,
    claim: Claimed,
    payload: JobPayload | None,
    task: Task[Any, Any] | None,
    outcome: Outcome,
    start: int,
    finish: int,
) -> tuple[bytes, int]:
    settings = worker.app.settings
    ttl_td = task.options.result_ttl if task is not None else settings.result_ttl
    ttl = int(ttl_td.total_seconds() * 1000)
    if ttl == 0:
        return b"", -1
    record = JobResult(
        job_id=claim.job_id,
        task=payload.task if payload else "",
        status=outcome.status,
        value=outcome.value,
        attempt=claim.attempt,
        enqueue_ms=payload.enqueue_ms if payload else 0,
        start_ms=start,
        finish_ms=finish,
        queue=claim.queue,
        worker=worker.id,
    )
    args = payload.args if payload else []
    kwargs = payload.kwargs if payload else {}
    limit = settings.max_payload_bytes
    what = f"result of job {claim.job_id!r}"
    try:
        data = encode_result(record, args, kwargs)
        if len(data) > limit and (args or kwargs):
            # arq repeats the arguments in the result; they are the first thing to go
            data = encode_result(record, [], {})
        if outcome.status != "succeeded" and len(data) > limit:
            # a failure record is taskflow's own data: shorten it rather than lose it
            data = encode_result(replace(record, value=_shorten(record.value)), [], {})
            return data, ttl
        return check_size(what, data, limit), ttl
    except (SerializationError, PayloadTooLarge) as exc:
        logger.error("job %s: result not stored: %s", claim.job_id, exc)
        failed = replace(
            record, status="failed", value=_error(FailureKind.RESULT_NOT_ENCODABLE, str(exc))
        )
        return encode_result(failed, [], {}), ttl


def _shorten(error: Any) -> Any:
    """A failure record cut to a few KiB: long strings keep their head."""
    if not isinstance(error, dict):
        return error
    return {
        k: v[:2000] + "..." if isinstance(v, str) and len(v) > 2000 else v for k, v in error.items()
    }


async def finish_job(
    worker: Runner, claim: Claimed, call: Callable[[], Awaitable[FinishReply]]
) -> FinishReply | None:
    """Call a finish script until Redis answers.

    Not shielded: job tasks are never cancelled from outside (abort, drain and timeouts
    cancel only the body's own scope), and should a crash cancel one mid-finish anyway, its
    lease lapses and the job runs again: at-least-once holds without a scope per job.
    """
    delay = 0.05
    cap = worker.settings.reconnect_backoff_cap.total_seconds()
    while not worker.abandon_finishes:
        try:
            reply = await call()
            worker.health.redis_ok()
            break
        except CONNECTION_ERRORS as exc:
            worker.health.redis_failed(f"finishing job {claim.job_id}", exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, cap)
        except RedisError as exc:  # e.g. a key of the wrong type: retrying cannot help
            logger.error(
                "job %s: Redis refused to record its outcome (%s); its lease will lapse and "
                "another attempt will run",
                claim.job_id,
                exc,
            )
            return None
    else:
        return None
    if reply is FinishReply.CLAIM_LOST:
        logger.warning(
            "job %s: attempt %d's outcome dropped as stale: its lease lapsed and a later "
            "attempt (of this or another worker) holds the job",
            claim.job_id,
            claim.attempt,
        )
    return reply
