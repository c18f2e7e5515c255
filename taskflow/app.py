"""The :class:`TaskFlow` app: the client core plus workers, metrics and alerts."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from ._client import Client
from ._worker import Service, Worker
from .alerts import AlertEvaluator, AlertManager
from .config import WorkerSettings, build
from .metrics import Metrics, MetricsRecorder, SystemCollector
from .metrics.summary import SummaryLogger

__all__ = ("TaskFlow",)


class TaskFlow(Client):
    """A taskflow application: declare tasks on it, open it, enqueue, run workers.

    :param redis_url: overrides ``settings.redis_url`` and ``TASKFLOW_REDIS_URL``.
    :param settings: everything else; defaults from the environment.
    :param redis: a client to borrow instead of opening one; never closed by the app.

    Example::

        app = taskflow.TaskFlow(redis_url="redis://localhost:6379/0")

        @app.task(queue="emails", retries=3)
        async def send_email(to: str, subject: str) -> dict: ...

        async with app:
            job = await send_email.enqueue("a@b.c", subject="hi")
            print(await job.result(timeout=5))
    """

    _alerts: AlertManager | None = None

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
        metrics = self.settings.metrics
        if metrics.enabled:
            worker.add_service(MetricsRecorder(metrics))
            worker.add_service(SystemCollector())
        worker.add_service(AlertEvaluator(self.alerts, merged.alert_interval.total_seconds()))
        if merged.summary_interval > timedelta(0):
            worker.add_service(SummaryLogger(merged.summary_interval.total_seconds()))
        for service in services:
            worker.add_service(service)
        return worker
