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
    "ALERT_HISTORY",
    "ALERT_IDS",
    "SYSTEM_STREAM",
    "WORKERS",
    "alert_state",
    "failures",
    "in_progress",
    "job",
    "metrics_bucket",
    "notify",
    "queue",
    "queue_name_of",
    "result",
    "retry",
    "wake_channel",
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


def wake_channel(queue_name: str) -> str:
    """Pub/sub channel on which enqueues wake a queue's idle workers."""
    return "taskflow:wake:" + queue(queue_name)


def notify(job_or_run_id: str) -> str:
    """Holds the channel of a client waiting for this job or run to finish."""
    return "taskflow:notify:" + job_or_run_id


SYSTEM_STREAM = "taskflow:metrics:system"
"""Stream of system samples from every worker (fields: worker, host, sample JSON)."""


def metrics_bucket(width_s: int, start_ms: int) -> str:
    """Hash of job metrics for one resolution (bucket width) and one time bucket."""
    return f"taskflow:metrics:{width_s}s:{start_ms}"


ALERT_HISTORY = "taskflow:alerts:history"
"""Capped stream of alert events: firing, suppressed, resolved, acknowledged."""
ALERT_IDS = "taskflow:alerts:ids"
"""Hash alert id -> rule name."""
ALERT_STATE_PREFIX = "taskflow:alert:state:"


def alert_state(rule: str) -> str:
    """Hash holding one rule's state: ok, pending, firing or acknowledged, and its alert."""
    return ALERT_STATE_PREFIX + rule


def worker(worker_id: str) -> str:
    """A worker's heartbeat record, expiring unless renewed."""
    return "taskflow:worker:" + worker_id


# -- graph runs: one key family per run, sharing the hash tag {run_id} -------------------

RUN_FIELDS = (
    "meta",  # hash: graph, status, total, done, failed, cancelled, cancel, times, retention
    "nodes",  # hash idx -> JSON spec: name, task, queue, trigger, parents, data parents, template
    "state",  # hash idx -> NodeState value
    "pending",  # hash idx -> parents not yet ended
    "bad",  # hash idx -> parents that ended failed, upstream_failed or cancelled
    "skip",  # hash idx -> parents that ended skipped
    "static",  # hash idx -> what the scripts need, one value: see lua/graph_lib.lua `static`
    "results",  # hash idx -> JSON result (value, or error data)
    "timing",  # hash "idx:s|f|w|a" -> started ms, finished ms, worker id, attempt
)


def run(run_id: str, part: str) -> str:
    """One key of a run's family; every key of a run hashes to the same cluster slot."""
    return f"taskflow:run:{{{run_id}}}:{part}"


def run_keys(run_id: str) -> list[str]:
    """All keys of a run, in RUN_FIELDS order."""
    return [run(run_id, part) for part in RUN_FIELDS]


def node_job_id(run_id: str, index: int) -> str:
    """The arq job id of a graph node; a re-run reuses it."""
    return f"{run_id}.{index}"
