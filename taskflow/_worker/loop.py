"""The worker: one anyio task group owning the job loop and its services.

Jobs are claimed in batches with one script call across every served queue, following
arq's lock protocol, and run under one concurrency limit. Services (batcher, waker,
heartbeat, abort watcher, and what features add: metrics, alerts, schedules) are children
of the same task group, each given a :class:`ServiceContext` (see ``services.py``).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import signal
import socket
import time
import uuid
from collections import Counter
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import anyio
from anyio.abc import TaskGroup, TaskStatus
from redis.exceptions import RedisError

from .._clock import now_ms
from .._protocol import keys
from .._registry import add_event
from .._retry import lost_attempts
from ..config import WorkerSettings
from ..connection import CONNECTION_ERRORS
from ..errors import ConfigurationError, LifecycleError, unwrapped
from .abort import AbortWatcher
from .batcher import Batcher
from .execute import Outcome, Slot, execute
from .heartbeat import Heartbeat
from .loopwatch import LoopWatch
from .memory import MemoryPolicyWatch
from .pauses import PauseWatch
from .services import Health, JobObserver, Service, ServiceContext
from .settler import Settler
from .waker import Waker

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._client import Client
    from .._protocol.scripts import Claimed

__all__ = ("Worker",)

_SKIP_SECONDS = 2.0  # how long a job of a task this worker lacks is left to other workers
_SKIP_MAX = 200  # job ids passed to one claim call
# jobs one claim call takes at most: a claim that starts graph nodes costs ~100-200 us each,
# and no script may hold Redis for long (a worker with more free slots claims again at once)
_CLAIM_MAX = 50

logger = logging.getLogger("taskflow.worker")


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class Worker:
    """Runs jobs from one or more queues. Build it with :meth:`TaskFlow.worker`.

    Use ``async with app.worker(...):`` to run it in the background of the current task
    (leaving the block drains it), or ``await worker.run()`` to run until SIGTERM/SIGINT.
    """

    def __init__(
        self,
        app: Client,
        settings: WorkerSettings,
        *,
        services: Iterable[Service] = (),
        observers: Iterable[JobObserver] = (),
    ) -> None:
        self.app = app
        self.settings = settings
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.queues = list(settings.queues)
        self.health = Health(settings.reconnect_backoff_cap.total_seconds())
        self.batcher = Batcher()
        self.observers: list[JobObserver] = list(observers)
        #: the core services, then those added by features and users, started in order
        self.services: list[Service] = [
            self.batcher,
            Waker(),
            Heartbeat(),
            LoopWatch(),
            AbortWatcher(),
            PauseWatch(),
            MemoryPolicyWatch(),
            Settler(),
        ]
        for service in services:
            self.add_service(service)
        self.paused: frozenset[str] = frozenset()  #: of its queues, those it claims nothing from
        self._broken_logged: dict[str, float] = {}  #: queue -> when its error was last logged
        self._skipped: dict[str, float] = {}  #: job id -> until when claims pass it by
        self._missing_tasks: set[str] = set()  #: task names met here but not registered
        self.running: dict[str, Slot] = {}
        self._successors: dict[str, Slot] = {}
        self.counts: Counter[str] = Counter()
        self.started_ms = 0
        self.abandon_finishes = False
        self._hurry = False  # a second signal: skip the grace period
        self._grace: anyio.CancelScope | None = None
        self._state = _State.NEW
        self._stop = anyio.Event()
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._loop_done = anyio.Event()
        self._jobs: TaskGroup | None = None
        self._outer: TaskGroup | None = None
        self._owns_app = False

    @property
    def is_running(self) -> bool:
        """Started and not stopped (its job loop and services are up)."""
        return self._state is _State.RUNNING

    def add_service(self, service: Service) -> None:
        """Run ``service`` beside the job loop; only before the worker starts.

        A service that is also a :class:`JobObserver` is told about every finished attempt.

        :raises LifecycleError: the worker has started.
        :raises ConfigurationError: ``service`` lacks ``name`` or ``run``.
        """
        if self._state is not _State.NEW:
            raise LifecycleError(f"worker {self.id} has started; add services before")
        if not isinstance(service, Service):
            raise ConfigurationError(
                f"{service!r} is not a service: it needs a `name` and "
                "`async def run(self, ctx, *, task_status)`"
            )
        self.services.append(service)
        if isinstance(service, JobObserver) and service not in self.observers:
            self.observers.append(service)

    def context(self) -> ServiceContext:
        """What this worker's services receive."""
        return ServiceContext(
            worker_id=self.id,
            queues=tuple(self.queues),
            settings=self.settings,
            client=self.app,
            health=self.health,
            jobs=self,
            wake=self.wake,
            set_paused=self.set_paused,
        )

    def __repr__(self) -> str:
        return f"<Worker {self.id} queues={self.queues} concurrency={self.settings.concurrency}>"

    # -- lifecycle ------------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[Worker] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`stop`, then drain. Signals ``task_status`` once claiming."""
        if self._state is not _State.NEW:
            raise LifecycleError(
                f"worker {self.id} is {self._state.value}; build a new one with app.worker()"
            )
        self._state = _State.RUNNING
        self.started_ms = now_ms()
        self.app.redis  # noqa: B018 - raises LifecycleError early if the app is not open
        try:
            with unwrapped():
                await self._serve(task_status)
        finally:
            self._state = _State.STOPPED
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._deregister()
            logger.info("worker %s stopped: %s", self.id, dict(self.counts))

    async def _serve(self, task_status: TaskStatus[Worker]) -> None:
        async with anyio.create_task_group() as outer:
            context = self.context()
            for service in self.services:
                await outer.start(partial(service.run, context), name=service.name)
            async with anyio.create_task_group() as jobs:
                self._jobs = jobs
                jobs.start_soon(self._job_loop)
                logger.info(
                    "worker %s serving %s, concurrency %d",
                    self.id,
                    self.queues,
                    self.settings.concurrency,
                )
                task_status.started(self)
                await self._stop.wait()
                await self._drain()
            outer.cancel_scope.cancel()

    def wake(self) -> None:
        """Look at the queues now rather than after the poll interval."""
        self._wake.set()

    def stop(self) -> None:
        """Ask the worker to drain and stop; returns at once."""
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Run until SIGTERM or SIGINT (a second signal skips the grace period)."""
        with unwrapped():
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_signals)
                await self.serve()
                tg.cancel_scope.cancel()

    async def __aenter__(self) -> Worker:
        if not self.app.is_open:
            await self.app.__aenter__()
            self._owns_app = True
        self._outer = anyio.create_task_group()
        try:
            await self._outer.__aenter__()
            try:
                await self._outer.start(self.serve)
            except BaseException as exc:
                with unwrapped():
                    await self._outer.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        except BaseException:
            # the worker never started, so __aexit__ will not run: close what we opened
            if self._owns_app:
                self._owns_app = False
                with anyio.CancelScope(shield=True):
                    await self.app.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        assert self._outer is not None
        try:
            # the body's own error comes out as itself (``except ArgumentError`` matches), a
            # service's lone error likewise; two errors at once stay a group
            with unwrapped():
                await self._outer.__aexit__(exc_type, exc, tb)
        finally:
            if self._owns_app:
                self._owns_app = False
                with anyio.CancelScope(shield=True):  # closes even when leaving on cancellation
                    await self.app.aclose()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self._stop.is_set():
                    logger.warning(
                        "second %s: skipping the grace period", signal.Signals(signum).name
                    )
                    self.hurry()
                else:
                    logger.info("%s: draining", signal.Signals(signum).name)
                    self.stop()

    # -- the job loop ---------------------------------------------------------------------

    async def _job_loop(self) -> None:
        lease_ms = int(self.settings.lease.total_seconds() * 1000)
        poll = self.settings.poll_interval.total_seconds()
        cap = self.settings.reconnect_backoff_cap.total_seconds()
        order = list(self.queues)
        try:
            await self._claim_until_stopped(order, lease_ms, poll, cap)
        finally:
            self._loop_done.set()

    async def _claim_until_stopped(
        self, order: list[str], lease_ms: int, poll: float, cap: float
    ) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            free = self.settings.concurrency - len(self.running) - len(self._successors)
            if free <= 0:
                await self._sleep(None)
                continue
            limit = min(free, _CLAIM_MAX)
            serving = [q for q in order if q not in self.paused] if self.paused else order
            if not serving:  # every queue paused: wait for a resume (it wakes the loop)
                await self._sleep(poll)
                continue
            try:
                claimed = await self.app.scripts.claim(
                    serving,
                    now_ms(),
                    limit,
                    self.id,
                    lease_ms,
                    via=self.batcher,
                    skip=self._skip(),
                )
            except CONNECTION_ERRORS as exc:
                self.health.redis_failed("claiming", exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, cap)
                continue
            except RedisError as exc:  # whatever Redis answers, the job loop goes on
                logger.error("claiming jobs failed: %s; retrying in %.2fs", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, cap)
                continue
            self.health.redis_ok()
            backoff = 0.05
            order.append(order.pop(0))  # rotate, so no queue starves the others
            suspect = next(
                (c for c in claimed if c.job_id and lost_attempts(c.attempt, c.failures)), None
            )
            if suspect is not None:
                await self._isolate(suspect, claimed)
                continue
            for claim in claimed:
                if claim.job_id:
                    self._start(Slot(claim))
                else:
                    self._broken_queue(claim)
            started = sum(1 for claim in claimed if claim.node_start is not None)
            # the queues are drained (the claim was not cut short by its node-start budget):
            # wait for a wake-up or a poll
            if len(claimed) < limit and started < keys.CLAIM_NODE_STARTS:
                await self._sleep(poll)

    async def _isolate(self, suspect: Claimed, claimed: list[Claimed]) -> None:
        """A job whose worker died during an earlier attempt may be what kills workers (a
        poison job): it runs with no job claimed beside it, so that it takes no other job
        down with it. The rest of its claim goes back at once, their attempts given back,
        and nothing more is claimed until it ends."""
        for claim in claimed:
            if claim is suspect:
                continue
            if not claim.job_id:
                self._broken_queue(claim)
                continue
            slot = Slot(claim)
            slot.interrupt = "drain"  # never starts its body: requeued at once
            self._start(slot)
        # put back before the suspect starts: should it kill this process, they are safe
        others = {c.job_id for c in claimed if c is not suspect and c.job_id}
        while others & self.running.keys() and not self._stop.is_set():
            await self._sleep(None)
        logger.info(
            "job %s: its worker died during an earlier attempt; running it with no new job "
            "beside it (attempt %d)",
            suspect.job_id,
            suspect.attempt,
        )
        recovered = {
            "kind": "recovered",
            "job": suspect.job_id,
            "queue": suspect.queue,
            "attempt": suspect.attempt,
            "worker": self.id,
        }
        await self.health.call(
            "noting a recovered job",
            add_event(self.app.redis, self.app.keys, recovered, self.app.settings.event_retention),
        )
        self._start(Slot(suspect))
        while suspect.job_id in self.running and not self._stop.is_set():
            await self._sleep(None)

    def set_paused(self, paused: frozenset[str]) -> None:
        """Claim nothing from ``paused`` (of this worker's queues) from the next claim on."""
        paused = paused & frozenset(self.queues)
        if paused != self.paused:
            for queue in sorted(paused - self.paused):
                logger.info("queue %s paused: no more claims from it", queue)
            for queue in sorted(self.paused - paused):
                logger.info("queue %s resumed", queue)
            self.paused = paused
            self.wake()

    def skip_job(self, job_id: str, task: str) -> bool:
        """Pass ``job_id`` by in claims for a few seconds: its ``task`` is not registered
        here, and another worker may have it. True the first time ``task`` is met."""
        self._skipped[job_id] = time.monotonic() + _SKIP_SECONDS
        first = task not in self._missing_tasks
        self._missing_tasks.add(task)
        return first

    def _skip(self) -> list[str]:
        if not self._skipped:
            return []
        now = time.monotonic()
        for job_id in [j for j, until in self._skipped.items() if until <= now]:
            del self._skipped[job_id]
        return list(self._skipped)[:_SKIP_MAX]

    def _broken_queue(self, claim: Claimed) -> None:
        """A queue whose key cannot be read: say so once a minute, serve the others."""
        last = self._broken_logged.get(claim.queue, -math.inf)
        if time.monotonic() - last >= 60:
            self._broken_logged[claim.queue] = time.monotonic()
            logger.error("queue %r cannot be read and is skipped: %s", claim.queue, claim.bad)

    async def _sleep(self, seconds: float | None) -> None:
        with anyio.move_on_after(seconds):
            await self._wake.wait()
        self._wake = anyio.Event()

    def _start(self, slot: Slot) -> None:
        job_id = slot.claim.job_id
        if job_id in self.running:
            # a job retried with no delay can be claimed again before its previous attempt
            # has left `running`: start it when that attempt is done
            self._successors[job_id] = slot
            return
        if self._hurry:
            slot.interrupt = "drain"  # never starts its body: requeued at once
        self.running[job_id] = slot
        if self._idle.is_set():  # busy again (an event per transition, not per job)
            self._idle = anyio.Event()
        assert self._jobs is not None
        self._jobs.start_soon(self._run_slot, slot, name=f"job {job_id}")

    async def _run_slot(self, slot: Slot) -> None:
        job_id = slot.claim.job_id
        try:
            await execute(self, slot)
        finally:
            del self.running[job_id]
            successor = self._successors.pop(job_id, None)
            if successor is not None:
                self._start(successor)
            self._wake.set()
            if not self.running:
                self._idle.set()

    def note_outcome(self, outcome: Outcome) -> None:
        self.counts[outcome.status or outcome.mode] += 1

    def note_stale(self, outcome: Outcome) -> None:
        self.counts[outcome.status or outcome.mode] -= 1
        self.counts["stale"] += 1

    # -- interruption and shutdown --------------------------------------------------------

    def hurry(self) -> None:
        """Stop now: skip what is left of the grace period and requeue running jobs."""
        self._hurry = True
        self.stop()
        if self._grace is not None:
            self._grace.cancel()
        self._interrupt_all("drain")

    def interrupt(self, job_id: str, reason: Literal["abort", "drain"]) -> bool:
        """Cancel a running job's body; ``reason`` is "abort" or "drain".

        A job whose body has not started yet is marked, and never starts.
        """
        slot = self.running.get(job_id)
        if slot is None or slot.finishing or slot.interrupt is not None:
            return False
        slot.interrupt = "abort" if reason == "abort" else "drain"
        if slot.scope is not None:
            slot.scope.cancel()
        return True

    def _interrupt_all(self, reason: Literal["abort", "drain"]) -> None:
        for job_id in list(self.running):
            self.interrupt(job_id, reason)
        for slot in self._successors.values():
            slot.interrupt = "drain"

    async def _drain(self) -> None:
        await self._loop_done.wait()
        if not self.running:
            return
        grace = self.settings.grace_period.total_seconds()
        logger.info("draining: %d jobs running, grace period %gs", len(self.running), grace)
        if not self._hurry:
            with anyio.move_on_after(grace) as self._grace:
                await self._idle.wait()
        if self.running:
            logger.warning("grace period over: requeueing %d running jobs", len(self.running))
            self._hurry = True
            self._interrupt_all("drain")
            with anyio.move_on_after(grace + 5):
                await self._idle.wait()
        if self.running:
            # Redis is unreachable: stop retrying; the leases lapse and other workers re-run them
            self.abandon_finishes = True
            logger.error(
                "abandoning %d jobs; they run again once their leases lapse", len(self.running)
            )

    async def _deregister(self) -> None:
        try:
            async with self.app.redis.pipeline(transaction=False) as pipe:
                pipe.delete(self.app.keys.worker(self.id), self.app.keys.will(self.id))
                pipe.zrem(self.app.keys.workers, self.id)
                await pipe.execute()
        except (RedisError, OSError, LifecycleError) as exc:
            logger.warning("could not remove heartbeat of %s: %s", self.id, exc)
