"""Mergeable log-bucketed histograms (pure, no I/O).

A value ``v > 0`` falls in bucket ``ceil(log(v) / log(GAMMA))``; every value in a bucket is
within ``RELATIVE_ERROR`` (2 %) of the bucket's representative value, so any quantile read
back is within 2 % of a value that really was at that rank (the DDSketch construction).
Values at or below ``MIN_VALUE`` share one bucket. Buckets are plain counts: merging
histograms is adding counts, which is associative and commutative, so percentiles over any
set of workers and time buckets are exact up to the stated error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

__all__ = ("GAMMA", "MIN_VALUE", "RELATIVE_ERROR", "Histogram", "bucket_of", "value_of")

RELATIVE_ERROR: Final = 0.02
GAMMA: Final = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA: Final = math.log(GAMMA)
MIN_VALUE: Final = 1e-9
"""Values at or below this (e.g. zero) go to bucket ``ZERO``, reported as 0."""
ZERO: Final = -(2**31)


def bucket_of(value: float) -> int:
    """The bucket index of ``value`` (>= 0)."""
    if not 0 <= value < math.inf:  # also rejects NaN
        raise ValueError(f"histogram values must be finite and >= 0, got {value!r}")
    if value <= MIN_VALUE:
        return ZERO
    return math.ceil(math.log(value) / _LOG_GAMMA)


def value_of(bucket: int) -> float:
    """The representative value of a bucket: within RELATIVE_ERROR of all its values."""
    if bucket == ZERO:
        return 0.0
    return 2 * GAMMA**bucket / (GAMMA + 1)


@dataclass(slots=True)
class Histogram:
    """Counts per bucket plus exact count, sum, min and max."""

    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = 0.0

    def add(self, value: float, times: int = 1, index: int | None = None) -> None:
        """Count ``value`` (``times`` times); ``index`` is its bucket if already known."""
        if index is None:
            index = bucket_of(value)
        self.buckets[index] = self.buckets.get(index, 0) + times
        self.count += times
        self.total += value * times
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)

    def merge(self, other: Histogram) -> Histogram:
        """A new histogram holding both (neither input changes)."""
        merged = Histogram(dict(self.buckets), self.count, self.total, self.minimum, self.maximum)
        merged.update(other)
        return merged

    def update(self, other: Histogram) -> None:
        """Add ``other``'s counts into this one."""
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1), within RELATIVE_ERROR; None when empty.

        Uses the lower rank ``floor(q * (count - 1))``, so ``quantile(0)`` is the minimum's
        bucket and ``quantile(1)`` the maximum's; results are clamped to [min, max].
        """
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be within [0, 1], got {q!r}")
        if not self.count:
            return None
        rank = math.floor(q * (self.count - 1))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen > rank:
                return min(max(value_of(index), self.minimum), self.maximum)
        return self.maximum

    @classmethod
    def of(cls, values: Iterable[float]) -> Histogram:
        histogram = cls()
        for value in values:
            histogram.add(value)
        return histogram

    @classmethod
    def merged(cls, histograms: Iterable[Histogram]) -> Histogram:
        out = cls()
        for histogram in histograms:
            out.update(histogram)
        return out
