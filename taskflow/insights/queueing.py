"""Queueing advice: how many concurrent slots, split into how many worker processes.

Erlang C (M/M/c) gives the chance that a job waits and the mean wait for ``c`` servers;
Allen-Cunneen rescales the wait for non-exponential service times. Pure Python, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ("Advice", "advise", "erlang_c", "mean_wait")

_MAX_EXTRA_SERVERS = 100_000
"""How far past the offered load the search for enough servers goes before giving up."""


def erlang_c(servers: int, offered_load: float) -> float:
    """P(wait > 0) in an M/M/c queue with ``servers`` servers and ``offered_load`` Erlangs.

    Computed from the Erlang B recursion ``B(k) = a B(k-1) / (k + a B(k-1))``, which never
    forms ``a**c / c!`` and so stays exact for thousands of servers. Returns 1.0 when the
    load is at or above the number of servers (the queue grows without bound).

    >>> round(erlang_c(2, 1.0), 6)
    0.333333
    """
    if isinstance(servers, bool) or not isinstance(servers, int) or servers < 1:
        raise ValueError(f"servers must be an integer >= 1, got {servers!r}")
    if not 0 <= offered_load < math.inf:
        raise ValueError(f"offered_load must be finite and >= 0, got {offered_load!r}")
    if offered_load >= servers:
        return 1.0
    if offered_load == 0:
        return 0.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return servers * blocking / (servers - offered_load * (1 - blocking))


def mean_wait(
    servers: int, arrival_rate: float, service_time: float, service_cv: float = 1.0
) -> float:
    """Mean queue wait (seconds) for ``servers`` servers: Erlang C's ``C / (c mu - lambda)``,
    times the Allen-Cunneen factor ``(1 + cv**2) / 2`` (1 for exponential service, cv 1).
    Infinite when the load reaches the servers."""
    load = arrival_rate * service_time
    if load >= servers:
        return math.inf
    waits = erlang_c(servers, load)
    return waits * service_time / (servers - load) * (1 + service_cv**2) / 2


def _wait_quantile(
    servers: int, load: float, service_time: float, factor: float, q: float
) -> float:
    """The ``q`` quantile of the wait: M/M/c's ``P(W > t) = C exp(-(c - a) t / S)``, with
    the time scale stretched by the Allen-Cunneen factor."""
    if load >= servers:
        return math.inf
    waits = erlang_c(servers, load)
    if waits <= 1 - q:
        return 0.0
    return math.log(waits / (1 - q)) * service_time * factor / (servers - load)


@dataclass(frozen=True, slots=True)
class Advice:
    """A worker configuration for a measured load, with the queueing prediction behind it."""

    concurrency: int
    """Concurrent jobs per worker process."""
    processes: int
    """Worker processes (``concurrency * processes >= servers``)."""
    servers: int
    """Concurrent slots needed in total: the ``c`` of M/M/c."""
    utilisation: float
    """Mean share of the slots busy: offered load / servers."""
    predicted_wait: float
    """Mean queue wait (seconds) with ``servers`` slots; inf when the load cannot be served."""
    wait_probability: float
    """P(wait > 0), Erlang C."""
    target_wait: float
    meets_target: bool
    offered_load: float = 0.0
    """Arrival rate times mean service time: the mean number of busy slots."""
    cpu_cores_needed: float = 0.0
    """Mean CPU cores the jobs keep busy (offered load times cpu_share)."""
    percentile: float | None = None
    """When set, target_wait bounds this quantile of the wait instead of its mean."""
    predicted_wait_percentile: float | None = None
    """The wait at ``percentile`` with ``servers`` slots (when percentile is set)."""
    assumptions: list[str] = field(default_factory=list)
    """What the prediction assumes and where the advice is limited; show it with the answer."""


def _check(
    name: str, value: float, *, low: float, high: float = math.inf, open_low: bool = False
) -> None:
    ok = (low < value if open_low else low <= value) and value <= high and math.isfinite(value)
    if not ok:
        bound = f"> {low}" if open_low else f">= {low}"
        if high < math.inf:
            bound += f" and <= {high}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _check_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _validate(
    arrival_rate: float,
    service_time: float,
    target_wait: float,
    service_cv: float | None,
    cpu_share: float,
    cores: int,
    max_concurrency: int,
    percentile: float | None,
) -> None:
    _check("arrival_rate", arrival_rate, low=0)
    _check("service_time", service_time, low=0, open_low=True)
    _check("target_wait", target_wait, low=0, open_low=True)
    if service_cv is not None:
        _check("service_cv", service_cv, low=0)
    _check("cpu_share", cpu_share, low=0, high=1)
    _check_int("cores", cores)
    _check_int("max_concurrency", max_concurrency)
    if percentile is not None and not 0 < percentile < 1:
        raise ValueError(f"percentile must be within (0, 1), got {percentile!r}")


def _per_process(cpu_share: float, max_concurrency: int) -> int:
    """Slots one process can run: an asyncio process computes on one core, so CPU work caps
    it at ``1 / cpu_share`` concurrent jobs."""
    if cpu_share <= 0:
        return max_concurrency
    return max(1, min(max_concurrency, math.floor(1 / cpu_share + 1e-9)))


def advise(
    *,
    arrival_rate: float,
    service_time: float,
    target_wait: float,
    service_cv: float | None = None,
    cpu_share: float = 0.0,
    cores: int = 1,
    max_concurrency: int = 1000,
    percentile: float | None = None,
) -> Advice:
    """The fewest concurrent slots whose predicted queue wait meets ``target_wait``, split
    into worker processes.

    ``arrival_rate`` is jobs per second, ``service_time`` the mean run time in seconds,
    ``service_cv`` the run time's coefficient of variation (None: exponential, cv 1),
    ``cpu_share`` the CPU seconds a job uses per wall second (0..1), ``cores`` the CPU
    cores the workers share and ``max_concurrency`` the most jobs one process may run.
    ``target_wait`` bounds the mean wait, or its ``percentile`` quantile when given.

    Raises ValueError naming a value that is negative, NaN, infinite or out of range.

    >>> advise(arrival_rate=5, service_time=2, target_wait=0.5).servers
    12
    """
    _validate(
        arrival_rate,
        service_time,
        target_wait,
        service_cv,
        cpu_share,
        cores,
        max_concurrency,
        percentile,
    )
    cv = 1.0 if service_cv is None else service_cv
    factor = (1 + cv**2) / 2
    load = arrival_rate * service_time
    notes = _assumptions(service_cv, cpu_share, percentile)

    def predicted(c: int) -> float:
        if percentile is not None:
            return _wait_quantile(c, load, service_time, factor, percentile)
        return mean_wait(c, arrival_rate, service_time, cv)

    servers = math.floor(load) + 1
    limit = servers + _MAX_EXTRA_SERVERS
    while predicted(servers) > target_wait and servers < limit:
        servers += 1
    per_process = _per_process(cpu_share, max_concurrency)
    processes = math.ceil(servers / per_process)
    concurrency = math.ceil(servers / processes)
    cpu_needed = load * cpu_share
    wait = mean_wait(servers, arrival_rate, service_time, cv)
    quantile = predicted(servers) if percentile is not None else None
    meets = predicted(servers) <= target_wait
    if cpu_needed >= cores:
        notes.append(
            f"the jobs need {cpu_needed:.3g} CPU cores on average but {cores} are available: "
            "no configuration keeps up; add cores or hosts (the waits above assume enough CPU)"
        )
        meets = False
    elif servers * cpu_share > cores:
        notes.append(
            f"with all {servers} slots busy the jobs would need {servers * cpu_share:.3g} cores "
            f"(of {cores}): at peaks run times stretch and waits exceed the prediction"
        )
    if processes > cores and cpu_share > 0:
        notes.append(f"{processes} processes share {cores} cores; spread them over hosts")
    return Advice(
        concurrency=concurrency,
        processes=processes,
        servers=servers,
        utilisation=load / servers,
        predicted_wait=wait,
        wait_probability=erlang_c(servers, load),
        target_wait=target_wait,
        meets_target=meets,
        offered_load=load,
        cpu_cores_needed=cpu_needed,
        percentile=percentile,
        predicted_wait_percentile=quantile,
        assumptions=notes,
    )


def _assumptions(service_cv: float | None, cpu_share: float, percentile: float | None) -> list[str]:
    notes = [
        "M/M/c (Erlang C) approximation: a steady state at the measured mean rates",
        "Poisson arrivals: bursts larger than random make waits longer than predicted",
    ]
    if service_cv is None:
        notes.append("exponential service times (cv 1); pass service_cv to correct for it")
    else:
        notes.append(
            f"Allen-Cunneen correction for the measured service-time cv {service_cv:.3g}: "
            f"waits scaled by (1 + cv^2) / 2 = {(1 + service_cv**2) / 2:.3g}"
        )
    if percentile is not None:
        notes.append(f"the target bounds the {percentile:.0%} quantile of the wait (M/M/c tail)")
    if cpu_share > 0:
        notes.append(
            f"a process computes on one core: at cpu_share {cpu_share:.3g} it runs at most "
            f"{_per_process(cpu_share, 10**9)} jobs at once, so CPU-bound work adds processes"
        )
    notes.append("slots are interchangeable: one queue, any worker may take any job")
    return notes
