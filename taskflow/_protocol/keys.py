"""Every Redis key, key prefix and pub/sub channel taskflow reads, writes or publishes on.

This module is the Redis contract's single source of names. Job keys follow arq's layout
exactly (``arq:job:<id>``, ``arq:in-progress:<id>``, ``arq:result:<id>``, ``arq:retry:<id>``,
``arq:abort``, queue sorted sets), so plain arq clients and workers interoperate; taskflow's
own keys start with ``taskflow:``. Lua scripts never spell a name: they receive keys in
KEYS, and the few they can only derive at run time (a job id found while claiming, a child
released by a finishing node) they build from the prefixes in :data:`LUA_PREFIXES`, which
the script loader hands them (see ``scripts.py``).
"""

from __future__ import annotations

import re
from typing import Final

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
    "APP_NAME_PATTERN",
    "APP_PREFIX",
    "AppKeys",
    "ATTEMPT_COUNTER_TTL_S",
    "DONE_CHANNEL_PREFIX",
    "FAILURES_PREFIX",
    "IN_PROGRESS_PREFIX",
    "JOB_PREFIX",
    "LUA_PREFIXES",
    "CANCEL_BUDGET",
    "CLAIM_NODE_STARTS",
    "INLINE_PARENTS",
    "ROOTS",
    "SETTLE_BUDGET",
    "PAUSED",
    "PAUSED_CHANNEL",
    "REAPING",
    "REAP_ABOVE",
    "REAP_GRACE_MS",
    "RETRY_BUDGET",
    "SETTLING",
    "SUBMIT_CHUNK",
    "NODE_JOB_ID_LUA_PATTERN",
    "NODE_JOB_SEP",
    "NOTIFY_PREFIX",
    "RESULT_PREFIX",
    "RETRY_PREFIX",
    "RUN_FIELDS",
    "RUN_PREFIX",
    "WAKE_PREFIX",
    "done_channel",
    "failures",
    "in_progress",
    "job",
    "node_job_id",
    "notify",
    "parse_node_job_id",
    "queue",
    "queue_name_of",
    "result",
    "retry",
    "run",
    "run_keys",
    "wake_channel",
)

# -- arq's job keys -------------------------------------------------------------------------

JOB_PREFIX: Final = job_key_prefix  #: ``arq:job:<id>``, the job's payload
IN_PROGRESS_PREFIX: Final = in_progress_key_prefix  #: the claim: holds the claimer's token
RESULT_PREFIX: Final = result_key_prefix  #: ``arq:result:<id>``, the finished job's record
RETRY_PREFIX: Final = retry_key_prefix  #: arq's attempt counter, incremented on every claim
ABORT: Final[str] = abort_jobs_ss
"""arq's sorted set of job ids a client asked to abort (score: when)."""
ATTEMPT_COUNTER_TTL_S: Final = 88400
"""Expiry of a job's attempt and failure counters, as arq sets on ``arq:retry:<id>``."""

_QUEUE_PREFIX: Final = default_queue_name + ":"


def queue(name: str) -> str:
    """Sorted-set key of a taskflow queue: ``default`` is arq's own ``arq:queue``."""
    return default_queue_name if name == "default" else _QUEUE_PREFIX + name


def queue_name_of(key: str) -> str:
    """Inverse of :func:`queue`."""
    if key == default_queue_name:
        return "default"
    return key.removeprefix(_QUEUE_PREFIX)


def job(job_id: str) -> str:
    return JOB_PREFIX + job_id


def in_progress(job_id: str) -> str:
    return IN_PROGRESS_PREFIX + job_id


def result(job_id: str) -> str:
    return RESULT_PREFIX + job_id


def retry(job_id: str) -> str:
    """arq's attempt counter: incremented on every claim."""
    return RETRY_PREFIX + job_id


# -- taskflow's per-job keys and channels ---------------------------------------------------

FAILURES_PREFIX: Final = "taskflow:failures:"
NOTIFY_PREFIX: Final = "taskflow:notify:"
WAKE_PREFIX: Final = "taskflow:wake:"
DONE_CHANNEL_PREFIX: Final = "taskflow:done:"


def failures(job_id: str) -> str:
    """taskflow's count of failed attempts, to tell failures from lost workers."""
    return FAILURES_PREFIX + job_id


def lease_lost(job_id: str) -> str:
    """JSON note of the last attempt of a job that lost its lease while its worker lived."""
    return f"taskflow:lease-lost:{job_id}"


def wake_channel(queue_name: str) -> str:
    """Pub/sub channel on which enqueues wake a queue's idle workers."""
    return WAKE_PREFIX + queue(queue_name)


def notify(job_or_run_id: str) -> str:
    """Set of the channels of clients waiting for this job or run to finish."""
    return NOTIFY_PREFIX + job_or_run_id


def done_channel(listener_id: str) -> str:
    """The channel one app's result listener subscribes to (see ``_listener.py``)."""
    return DONE_CHANNEL_PREFIX + listener_id


# -- per-application keys: workers, metrics, alerts ----------------------------------------

APP_PREFIX: Final = "taskflow:app:"
WILL_KEEP_MS: Final = 10 * 60 * 1000
"""How long a worker's will (``AppKeys.will``) outlives its lease."""
MONITOR_EVENTS_CAP: Final = 1000
"""Events kept in ``AppKeys.monitor_events`` (approximately: XADD MAXLEN ~)."""
APP_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
"""What an app name may be: it is spelled into key names."""


class AppKeys:
    """The keys one application owns: its worker registry, metrics and alert state.

    Two apps on one Redis (say ``billing`` and ``search``) keep these apart; jobs, queues
    and graph runs keep arq's layout and are shared by name.
    """

    __slots__ = (
        "alert_history",
        "alert_ids",
        "alert_state_prefix",
        "app",
        "custom_meta",
        "dead_letters",
        "error_groups",
        "evictions",
        "monitor_events",
        "monitor_stuck",
        "queue_depths",
        "monitor_turn",
        "schedule_changes",
        "schedule_prefix",
        "schedules",
        "prefix",
        "probes",
        "system_stream",
        "workers",
    )

    def __init__(self, app: str) -> None:
        if not APP_NAME_PATTERN.match(app):
            raise ValueError(
                f"app name {app!r} is not valid: use 1 to 100 letters, digits, '_', '.' or '-'"
            )
        self.app = app
        self.prefix = f"{APP_PREFIX}{app}:"
        self.workers = self.prefix + "workers"
        """Sorted set of the app's worker ids by last heartbeat."""
        self.system_stream = self.prefix + "metrics:system"
        """Stream of system samples from the app's workers (fields: worker, sample JSON)."""
        self.alert_history = self.prefix + "alerts:history"
        """Capped stream of alert events: firing, suppressed, resolved, acknowledged."""
        self.alert_ids = self.prefix + "alerts:ids"
        """Hash alert id -> rule name."""
        self.alert_state_prefix = self.prefix + "alert:state:"
        self.dead_letters = self.prefix + "dead"
        """Sorted set job id -> when it failed for good (ms): the app's dead letters."""
        self.error_groups = self.prefix + "errors"
        """Hash of failures for good grouped by task and error type (``<group>:n|first|...``)."""
        self.schedules = self.prefix + "schedules"
        """Hash schedule name -> its definition (JSON, ``schedules.manager``)."""
        self.schedule_prefix = self.prefix + "schedule:"
        self.schedule_changes = self.prefix + "schedules:changed"
        """Channel: a schedule was added, changed, paused, resumed or removed."""
        self.evictions = self.prefix + "redis:evicted"
        """Sorted set ``<ms>:<worker id>:<keys evicted since its last look>`` -> when (ms)."""
        self.monitor_turn = self.prefix + "monitor:turn"
        """The worker id running this interval's monitor pass (SET NX PX: one per interval)."""
        self.queue_depths = self.prefix + "metrics:queues"
        """Stream of queue depth samples, one entry per monitor pass (field ``d``: JSON
        ``{"t": metrics-clock ms, "q": {queue: [ready, total]}}``)."""
        self.monitor_stuck = self.prefix + "monitor:stuck"
        """The last pass's stuck jobs (JSON list of kind, queue, task, count), for alerts."""
        self.monitor_events = self.prefix + "monitor:events"
        """Capped stream of what the monitor saw and did (field ``e``: an event's JSON)."""
        self.custom_meta = self.prefix + "custom:meta"
        """Hash custom metric name -> its declaration (JSON: kind, help, labels, buckets)."""
        self.probes = self.prefix + "probes"
        """Hash probe name -> its latest result (JSON, ``taskflow.probes``)."""

    def __repr__(self) -> str:
        return f"AppKeys({self.app!r})"

    def worker(self, worker_id: str) -> str:
        """A worker's heartbeat record, expiring unless renewed."""
        return f"{self.prefix}worker:{worker_id}"

    def will(self, worker_id: str) -> str:
        """A worker's last heartbeat record, kept ``WILL_KEEP_MS`` past its lease: what a dead
        worker was running, for the monitor to report."""
        return f"{self.prefix}will:{worker_id}"

    def metrics_bucket(self, width_s: int, start_ms: int) -> str:
        """Hash of job metrics for one resolution (bucket width) and one time bucket."""
        return f"{self.prefix}metrics:{width_s}s:{start_ms}"

    def custom_bucket(self, width_s: int, start_ms: int) -> str:
        """Hash of custom metrics (``app.metrics.counter`` and kin) for one resolution and
        one time bucket; fields ``<metric>\\x1f<label values JSON>\\x1f<part>``."""
        return f"{self.prefix}custom:{width_s}s:{start_ms}"

    def probe_history(self, name: str) -> str:
        """List of a probe's latest results (JSON), newest first, capped."""
        return f"{self.prefix}probe:{name}:history"

    def probe_turn(self, name: str) -> str:
        """The claim on a probe's current interval: ``SET NX PX`` by the worker that runs it."""
        return f"{self.prefix}probe:{name}:turn"

    def dead_letter(self, job_id: str) -> str:
        """Hash of one dead letter: the job's payload as stored, and its record (JSON)."""
        return f"{self.prefix}dead:{job_id}"

    def schedule_state(self, name: str) -> str:
        """Hash of one schedule's state: next tick, last tick and job, paused, skip counts."""
        return self.schedule_prefix + name

    def alert_state(self, rule: str) -> str:
        """Hash holding one rule's state: ok, pending, firing or acknowledged, and its alert."""
        return self.alert_state_prefix + rule


# -- graph runs: one key family per run, sharing the hash tag {run_id} -------------------

RUN_PREFIX: Final = "taskflow:run:"
RUN_FIELDS: Final = (
    "meta",  # hash: graph, status, total, done, failed, cancelled, cancel, times, retention
    "nodes",  # hash idx -> JSON spec: name, task, queue, trigger, parents, data parents, args
    "state",  # hash idx -> NodeState value
    "pending",  # hash idx -> parents not yet ended
    "bad",  # hash idx -> parents that ended failed, upstream_failed or cancelled
    "skip",  # hash idx -> parents that ended skipped
    "static",  # hash idx -> what the scripts need, one value: codecs.encode_node_static
    "results",  # hash idx -> JSON result (value, or error data)
    "timing",  # hash "idx:s|f|w|a" -> started ms, finished ms, worker id, attempt
    "settle",  # list of JSON [node, state, children done]: trigger rules still to apply
)

PAUSED: Final = "taskflow:paused"
"""Set of queue names paused by ``app.queue(name).pause()``: workers claim nothing from them."""

PAUSED_CHANNEL: Final = "taskflow:paused:changed"
"""Channel: the paused set changed (workers re-read it at once)."""

SETTLING: Final = "taskflow:settling"
"""Sorted set of run ids with rules still to apply (``run:{id}:settle``), by the time by
which the worker applying them should be done; any worker resumes one past that time."""

SETTLE_BUDGET: Final = 100
"""Children one script call visits at most when a node ends: a 1 -> 10,000 fan is released
over 100 calls of a few ms each, not one that stalls Redis for 170 ms."""

REAPING: Final = "taskflow:reaping"
"""Sorted set of run ids of big ended runs, by when their retention ends: a worker deletes
their keys with UNLINK (freed off Redis's main thread), since letting a 50,000-node run's
hashes expire would free them in one 35-50 ms step."""

REAP_ABOVE: Final = 1000
"""Runs with more nodes than this are reaped (see REAPING); smaller ones just expire."""

REAP_GRACE_MS: Final = 24 * 3600 * 1000
"""A reaped run's keys still expire this long after its retention, should no worker be
there to reap it."""

CLAIM_NODE_STARTS: Final = 25
"""Graph nodes one claim call starts at most (plain jobs: up to the claim's limit, 50): a
claim of 50 node jobs on a 50,000-node run took up to 7.4 ms."""

CANCEL_BUDGET: Final = 150
"""Nodes one call of cancel_run.lua (or its continuation) visits: cancelling a 50,000-node
run is 334 calls of a few ms, not one of 900 ms."""

INLINE_PARENTS: Final = 32
"""A node start returns its data parents' results with it up to this many; a node with more
(a wide join) reads them itself in chunks, so its start stays one short call."""

RETRY_BUDGET: Final = 20_000
"""Node states one retry of a dead graph node reads at most (``lua/retry_node.lua``): the
nodes below it that its failure settled, and the parents of those whose counts it
recomputes. A retry that would read more is refused: it must be one atomic call."""

SUBMIT_CHUNK: Final = 1000
"""Fields per command when a graph is written at submission (a 50,000-node graph is written
in many short commands, none of which holds Redis for long)."""

ROOTS: Final = "r"
"""The field of a run's static hash listing its roots as the children of a virtual node
that succeeded at submission: roots are released by the same budgeted, resumable settling
as any node's children."""


def run(run_id: str, part: str) -> str:
    """One key of a run's family; every key of a run hashes to the same cluster slot."""
    return f"{RUN_PREFIX}{{{run_id}}}:{part}"


def run_keys(run_id: str) -> list[str]:
    """All keys of a run, in RUN_FIELDS order (the order the graph scripts expect)."""
    return [run(run_id, part) for part in RUN_FIELDS]


NODE_JOB_SEP: Final = "."
_NODE_JOB_ID: Final = re.compile(r"^([0-9a-f]{32})\.(\d+)$")
NODE_JOB_ID_LUA_PATTERN: Final = "^(%x+)%.(%d+)$"
"""The same shape as :func:`parse_node_job_id` accepts, as a Lua pattern."""


def node_job_id(run_id: str, index: int) -> str:
    """The arq job id of a graph node (``<run id>.<index>``); a re-run reuses it."""
    return f"{run_id}{NODE_JOB_SEP}{index}"


def parse_node_job_id(job_id: str) -> tuple[str, int] | None:
    """``(run id, node index)`` if ``job_id`` names a graph node's job, else None."""
    match = _NODE_JOB_ID.match(job_id)
    return (match[1], int(match[2])) if match else None


LUA_PREFIXES: Final = {
    "job": JOB_PREFIX,
    "in_progress": IN_PROGRESS_PREFIX,
    "retry": RETRY_PREFIX,
    "failures": FAILURES_PREFIX,
    "notify": NOTIFY_PREFIX,
    "wake": WAKE_PREFIX,
    "run": RUN_PREFIX,
    "settling": SETTLING,
    "reaping": REAPING,
}
"""Prefixes of the keys and channels a script can only name at run time, by Lua name."""
