"""The worker layer: the job loop, one job's execution, and the services beside them."""

from __future__ import annotations

from .loop import Worker
from .meter import JobSample
from .services import Health, JobObserver, JobSlots, RunningJob, Service, ServiceContext

__all__ = (
    "Health",
    "JobObserver",
    "JobSample",
    "JobSlots",
    "RunningJob",
    "Service",
    "ServiceContext",
    "Worker",
)
