"""The :class:`TaskFlow` app: the client core plus workers, metrics and alerts."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import anyio
from redis.exceptions import RedisError
from typing_extensions import Unpack

from ._client import Client
from ._worker import Service, Worker
from .alerts import AlertEvaluator, AlertManager
from .config import WorkerSettings, build
from .connection import CONNECTION_ERRORS
from .insights.analysis import InsightOptions, Insights
from .insights.report import Report
from .metrics import Metrics, MetricsRecorder, SystemCollector
from .metrics.custom import CustomMetricsFlusher, registry_of
from .metrics.summary import SummaryLogger
from .monitor import Monitor, MonitorService
from .probes import Probe, ProbeRunner, Probes
from .schedules import Misfire, Schedule, Schedules, ScheduleTicker, build_schedule
from .slas import Slas, SlaTarget
from .task import Task

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ("TaskFlow",)

logger = logging.getLogger("taskflow")

_CLOSE_FLUSH = 2.0  # seconds an app's close may spend writing its custom metrics


class TaskFlow(Client):
    """A taskflow application: declare tasks on it, open it, enqueue, run workers.

    :param redis_url: overrides ``settings.redis_url`` and ``TASKFLOW_REDIS_URL``.
    :param settings: everything else; defaults from the environment.
    :param redis: a client to borrow instead of opening one; never closed by the app.
    :param name: scopes the app's keys (worker registry, metrics, alerts, schedules).
    :param routes: queues for tasks that name none, by task-name pattern, as Celery's
        ``task_routes``: ``{"payments.*": "payments"}``; an explicit ``queue=`` wins.

    Example::

        app = taskflow.TaskFlow(redis_url="redis://localhost:6379/0")

        @app.task(queue="emails", retries=3)
        async def send_email(to: str, subject: str) -> dict: ...

        async with app:
            job = await send_email.enqueue("a@b.c", subject="hi")
            print(await job.result(timeout=5))
    """

    _alerts: AlertManager | None = None
    _schedules: Schedules | None = None
    _slas: Slas | None = None
    _probes: Probes | None = None

    async def aclose(self) -> None:
        """Write the custom metrics recorded in this process, then release the connection
        pool (a borrowed client is left open)."""
        if self.is_open:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_FLUSH):
                try:
                    await registry_of(self).flush()
                except CONNECTION_ERRORS as exc:
                    logger.warning("custom metrics not written at close: %s", exc)
                except RedisError as exc:
                    logger.warning("custom metrics refused at close: %s", exc)
        await super().aclose()

    @property
    def probes(self) -> Probes:
        """Service probes: declared ones, and their status and history from any process
        (see :mod:`taskflow.probes`)."""
        if self._probes is None:
            self._probes = Probes(self)
        return self._probes

    def probe(
        self,
        *,
        every: timedelta | float | str,
        timeout: timedelta | float | str | None = None,
        name: str | None = None,
    ) -> Callable[[Callable[[], Awaitable[object]]], Probe]:
        """Declare a health check of an external service, run by the workers once per
        ``every`` across the cluster: up when it returns (None, True, a detail string or a
        :class:`taskflow.probes.Check`), down when it returns False, raises or takes longer
        than ``timeout`` (``every`` by default).

        Example::

            @app.probe(every=timedelta(seconds=30), timeout=timedelta(seconds=5))
            async def gemini() -> None:
                async with httpx.AsyncClient() as http:
                    (await http.get("https://api.example.com/health")).raise_for_status()

        :raises ConfigurationError: not an ``async def`` without parameters, a taken or
            invalid name, a bad duration, or ``timeout`` longer than ``every``.
        """

        def register(fn: Callable[[], Awaitable[object]]) -> Probe:
            return self.probes.declare(fn, every=every, timeout=timeout, name=name)

        return register

    @property
    def slas(self) -> Slas:
        """The app's SLA targets and their check (see :mod:`taskflow.slas`)."""
        if self._slas is None:
            self._slas = Slas(self)
        return self._slas

    def sla(
        self,
        *,
        task: str | Task[Any, Any] | None = None,
        queue: str | None = None,
        run_time_p95: timedelta | None = None,
        wait_p95: timedelta | None = None,
        failure_rate: float | None = None,
        min_throughput_per_min: float | None = None,
    ) -> SlaTarget:
        """Declare SLA targets for a task and/or a queue: run time p95, queue wait p95,
        failure rate (0-1) and minimum attempts per minute; check them with
        ``await app.slas.check(since=...)`` or an alert on ``sla_missed``."""
        name = task.name if isinstance(task, Task) else task
        return self.slas.add(
            SlaTarget(name, queue, run_time_p95, wait_p95, failure_rate, min_throughput_per_min)
        )

    async def insights(
        self, since: timedelta = timedelta(hours=24), **options: Unpack[InsightOptions]
    ) -> Insights:
        """Trends, bottlenecks, forecasts and per-queue advice from the stored metrics (the
        ``insights`` extra: numpy, scipy, statsmodels); the options (``until``,
        ``target_wait``, ``horizon``, ``level``, ``interval``, ``cores``, ``runs``) are
        :func:`taskflow.insights.analysis.insights`'s."""
        from .insights.analysis import insights

        return await insights(self, since, **options)

    async def report(
        self, since: timedelta = timedelta(hours=24), **options: Unpack[InsightOptions]
    ) -> Report:
        """A report on the last ``since``: summary, SLAs, the insights (options as for
        :meth:`insights`; graph ``runs`` name slow dependencies), alerts fired and top
        failures; render it with ``to_json()``, ``to_markdown()`` or ``to_html()``. See
        :mod:`taskflow.insights.report`."""
        from .insights.report import build_report

        return await build_report(self, since, slas=self.slas, alerts=self.alerts, **options)

    def schedule_report(
        self,
        *,
        channels: Sequence[Any],
        every: timedelta | None = None,
        cron: str | None = None,
        tz: str | None = None,
        since: timedelta = timedelta(hours=24),
        name: str = "taskflow-report",
        queue: str | None = None,
    ) -> Schedule:
        """Send the report on the last ``since`` to ``channels`` (the alerts' channels:
        email gets the HTML report, a webhook the JSON, Slack a summary) on a schedule
        (``every`` or ``cron``), run by the workers like any schedule: for example
        ``app.schedule_report(every=timedelta(hours=1), channels=[Email(...)])``.

        :raises ConfigurationError: a channel that cannot take a report, or a bad schedule.
        """
        from .insights.delivery import check_channels, send_report

        check_channels(channels)
        chosen = list(channels)

        async def send(since_seconds: float) -> list[str]:
            report = await self.report(since=timedelta(seconds=since_seconds))
            return await send_report(report, chosen)

        task = self.task(name=f"{name}.send", queue=queue)(send)
        return self.schedule(
            task,
            every=every,
            cron=cron,
            tz=tz,
            args=(since.total_seconds(),),
            name=name,
        )

    @property
    def monitor(self) -> Monitor:
        """Live queue health, workers and stuck jobs (see :mod:`taskflow.monitor`)."""
        return Monitor(self)

    @property
    def schedules(self) -> Schedules:
        """Schedules: declared ones, and add, pause, resume, run_now and list from any
        process (see :mod:`taskflow.schedules`)."""
        if self._schedules is None:
            self._schedules = Schedules(self)
        return self._schedules

    def schedule(
        self,
        task: Task[Any, Any],
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        tz: str | None = None,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        queue: str | None = None,
        jitter: timedelta = timedelta(0),
        start: datetime | None = None,
        end: datetime | None = None,
        misfire: Misfire | str = Misfire.COALESCE,
        max_catchup: int = 100,
        overlap: bool = True,
        grace: timedelta = timedelta(seconds=1),
    ) -> Schedule:
        """Declare a schedule of ``task`` in code; every worker registers it when it starts.

        :param cron: 5 fields (minute hour day-of-month month day-of-week), or 6 with
            seconds last; names such as ``mon-fri`` and ``jan`` work. Read in ``tz``.
        :param every: a fixed interval instead, anchored at ``start`` (the Unix epoch).
        :param tz: an IANA zone for ``cron`` (UTC by default).
        :param args: the call's arguments, checked now as an enqueue checks them.
        :param name: the schedule's name (the task's name by default).
        :param jitter: delay each tick's job by a random amount up to this.
        :param start: no tick before; ``end``: no tick after (aware datetimes).
        :param misfire: ticks missed while no worker ran: ``coalesce`` (one job, told how
            many were missed), ``skip`` (none) or ``all`` (one each, up to ``max_catchup``).
        :param overlap: False skips a tick while the last one's job is queued or running.
        :param grace: a tick fired later than this counts as missed.
        :raises ConfigurationError: an invalid expression, zone, option or name taken.
        :raises ArgumentError: the arguments do not match the task's signature.
        """
        return self.schedules.declare(
            build_schedule(
                task,
                cron=cron,
                every=every,
                tz=tz,
                args=args,
                kwargs=kwargs,
                name=name,
                queue=queue,
                jitter=jitter,
                start=start,
                end=end,
                misfire=misfire,
                max_catchup=max_catchup,
                overlap=overlap,
                grace=grace,
            )
        )

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        queue: str | None = None,
        name: str | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, Awaitable[R]]], Task[P, R]]:
        """Register a coroutine as a task and schedule it: ``@app.periodic(cron="*/30 * * *
        *", queue="matching")``. ``options`` are :meth:`schedule`'s (tz, args, jitter, ...).
        """

        def register(fn: Callable[P, Awaitable[R]]) -> Task[P, R]:
            task = self.task(queue=queue)(fn) if queue else self.task(fn)
            self.schedule(task, cron=cron, every=every, name=name, **options)
            return task

        return register

    @property
    def alerts(self) -> AlertManager:
        """Alert rules, acknowledgement and history (see :mod:`taskflow.alerts`)."""
        if self._alerts is None:
            self._alerts = AlertManager(self)
        return self._alerts

    @property
    def metrics(self) -> Metrics:
        """Cluster-wide job and system metrics (needs the app open to query)."""
        return Metrics(self)

    # -- workers --------------------------------------------------------------------------

    def worker(
        self,
        queues: list[str] | tuple[str, ...] | None = None,
        *,
        concurrency: int | None = None,
        settings: WorkerSettings | None = None,
        services: Iterable[Service] = (),
        siblings: Iterable[Service] | None = None,
    ) -> Worker:
        """A worker for this app, to use as ``async with app.worker(...):`` or ``await w.run()``.

        :param queues: defaults to every queue a registered task uses.
        :param concurrency: overrides ``settings.concurrency``.
        :param settings: the worker's settings; the app's ``settings.worker`` by default.
        :param services: run beside the job loop (see :class:`taskflow.Service`), after the
            core services and the app's metrics recorder, system collector and alert
            evaluator.
        :param siblings: the old name of ``services`` (deprecated).
        """
        if siblings is not None:
            warnings.warn(
                "app.worker(siblings=...) is deprecated; pass services=...",
                DeprecationWarning,
                stacklevel=2,
            )
            services = [*services, *siblings]
        base = settings or self.settings.worker
        updates: dict[str, Any] = {}
        if queues is not None:
            updates["queues"] = tuple(queues)
        elif settings is None:
            updates["queues"] = tuple(self.queues or [self.settings.default_queue])
        if concurrency is not None:
            updates["concurrency"] = concurrency
        merged = build(WorkerSettings, {**base.model_dump(), **updates})
        worker = Worker(self, merged)
        for service in [*self._feature_services(merged), *services]:
            worker.add_service(service)
        return worker

    def _feature_services(self, merged: WorkerSettings) -> list[Service]:
        """The services the app's features add to its workers, in start order."""
        found: list[Service] = []
        metrics = self.settings.metrics
        if metrics.enabled:
            found += [MetricsRecorder(metrics), SystemCollector()]
        found.append(CustomMetricsFlusher(registry_of(self)))
        if self.probes.declared:
            found.append(ProbeRunner(self.probes))
        found.append(AlertEvaluator(self.alerts, merged.alert_interval.total_seconds()))
        if merged.schedules:
            found.append(ScheduleTicker(self.schedules, merged.schedule_retire_after))
        if merged.monitor:
            found.append(MonitorService())
        if merged.summary_interval > timedelta(0):
            found.append(SummaryLogger(merged.summary_interval.total_seconds()))
        return found
