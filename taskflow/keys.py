"""Every Redis key name taskflow reads or writes.

Job keys follow arq's layout exactly (``arq:job:<id>``, ``arq:in-progress:<id>``,
``arq:result:<id>``, ``arq:retry:<id>``, ``arq:abort``, queue sorted sets), so plain arq
clients and workers interoperate. taskflow's own keys start with ``taskflow:``.
"""

from __future__ import annotations

from arq.constants import (
    abort_jobs_ss,
    default_queue_name,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

__all__ = (
    "ABORT",
    "WORKERS",
    "failures",
    "in_progress",
    "job",
    "queue",
    "queue_name_of",
    "result",
    "retry",
    "worker",
)

ABORT: str = abort_jobs_ss
WORKERS = "taskflow:workers"
_QUEUE_PREFIX = default_queue_name + ":"


def queue(name: str) -> str:
    """Sorted-set key of a taskflow queue: ``default`` is arq's own ``arq:queue``."""
    return default_queue_name if name == "default" else _QUEUE_PREFIX + name


def queue_name_of(key: str) -> str:
    """Inverse of :func:`queue`."""
    if key == default_queue_name:
        return "default"
    return key.removeprefix(_QUEUE_PREFIX)


def job(job_id: str) -> str:
    return job_key_prefix + job_id


def in_progress(job_id: str) -> str:
    return in_progress_key_prefix + job_id


def result(job_id: str) -> str:
    return result_key_prefix + job_id


def retry(job_id: str) -> str:
    """arq's attempt counter: incremented on every claim."""
    return retry_key_prefix + job_id


def failures(job_id: str) -> str:
    """taskflow's count of failed attempts, to tell failures from lost workers."""
    return "taskflow:failures:" + job_id


def worker(worker_id: str) -> str:
    """A worker's heartbeat record, expiring unless renewed."""
    return "taskflow:worker:" + worker_id
