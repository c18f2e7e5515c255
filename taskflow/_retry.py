"""The one retry decision: what happens after an attempt of a job ends badly. No I/O.

Inputs are the attempt's facts (how many attempts failed before, what ended this one) and
the task's policy (retries, backoff, which exceptions are retried); the output says whether
the job runs again and after how long. The worker's execution calls :func:`decide`; the
Lua scripts only count attempts and failures, they decide nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .config import Backoff

__all__ = ("RetryDecision", "decide", "lost_attempts")


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Run again after ``delay`` seconds, or fail for good after ``failures`` failures."""

    retry: bool
    delay: float
    failures: int  #: failed attempts, this one included


def decide(
    *,
    failures_before: int,
    error: BaseException,
    retries: int,
    backoff: Backoff,
    retry_on: tuple[type[BaseException], ...] = (BaseException,),
    delay: float | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Decide the next step after an attempt that ended with ``error``.

    :param failures_before: failed attempts before this one (lost workers not counted).
    :param retries: extra attempts the policy allows after failures.
    :param backoff: the delay between attempts when ``delay`` is None.
    :param retry_on: exception types that are retried; anything else fails at once.
    :param delay: the delay a body asked for (``taskflow.Retry(delay=...)``).

    Example::

        >>> decide(failures_before=0, error=ValueError(), retries=1,
        ...        backoff=Backoff(jitter=False)).delay
        1.0
    """
    failures = failures_before + 1
    if not isinstance(error, retry_on) or failures > retries:
        return RetryDecision(retry=False, delay=0.0, failures=failures)
    wait = delay if delay is not None else backoff.delay(failures, rng)
    return RetryDecision(retry=True, delay=wait, failures=failures)


def lost_attempts(attempt: int, failures: int) -> int:
    """Attempts before ``attempt`` that ended without an outcome (their worker died)."""
    return max(0, attempt - 1 - failures)
