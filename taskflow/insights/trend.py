"""Trend detection: Theil-Sen slope with a Mann-Kendall test.

Both are rank-based: one outlier (a slow job in a per-minute p95) moves neither, and no
distribution is assumed for the noise. Metric series are autocorrelated (a slow hour is
slow for a while), which makes the plain Mann-Kendall test call trends that are not
there, so the variance of its statistic is inflated by the Hamed-Rao (1998) correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from ._series import Series, finite_points, require_extra

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ("MIN_POINTS", "Trend", "trend")

MIN_POINTS: Final = 8
"""Fewer finite points than this and trend() returns None."""
MAX_POINTS: Final = 2048
"""Longer series are averaged over runs of consecutive points down to this many (the
pairwise statistics cost n squared)."""
METHOD: Final = (
    "Theil-Sen slope, Mann-Kendall test (ties corrected, Hamed-Rao autocorrelation correction)"
)


@dataclass(frozen=True, slots=True)
class Trend:
    """A monotonic trend in a series, and whether it is statistically significant."""

    direction: Literal["rising", "falling", "flat"]
    """"flat" whenever the trend is not significant."""
    slope: float
    """Units of the series per second (Theil-Sen: the median of the pairwise slopes)."""
    relative_change: float
    """Fitted change over the window / |fitted value at its start|; 0 when that is ~0."""
    p_value: float
    """Two-sided p-value of the Mann-Kendall test."""
    level: float
    """The significance level used."""
    significant: bool
    """``p_value < level``."""
    n: int
    """Finite points used (before any averaging of long series)."""
    method: str
    start: float = math.nan
    """Fitted value at the first time."""
    end: float = math.nan
    """Fitted value at the last time."""
    kendall_tau: float = 0.0
    """Kendall's rank correlation of value with time (-1..1): the trend's consistency."""


def trend(times: Series, values: Series, *, level: float = 0.05) -> Trend | None:
    """Test ``values`` (at ``times``, seconds from any origin) for a monotonic trend.

    Points with a NaN or infinite time or value are ignored; None when fewer than
    ``MIN_POINTS`` remain or all times are equal. ``level`` is the test's significance level.

    >>> t = [60.0 * i for i in range(30)]
    >>> trend(t, [10 + 0.01 * x for x in t]).direction
    'rising'
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be within (0, 1), got {level!r}")
    require_extra()
    import numpy as np
    from scipy import stats

    t, y = finite_points(times, values)
    n = len(t)
    if n < MIN_POINTS or t[0] == t[-1]:
        return None
    t, y = _condense(t, y)
    fit = stats.theilslopes(y, t)
    slope, intercept = float(fit.slope), float(fit.intercept)
    s, variance = _mann_kendall(y)
    variance *= _hamed_rao_factor(y - slope * t, level)
    z = 0.0 if s == 0 else (s - math.copysign(1, s)) / math.sqrt(variance)
    p_value = float(2 * stats.norm.sf(abs(z)))
    pairs = len(y) * (len(y) - 1) / 2
    start = intercept + slope * float(t[0])
    end = intercept + slope * float(t[-1])
    scale = float(np.max(np.abs(y)))
    relative = 0.0 if abs(start) <= 1e-12 * max(scale, 1e-300) else (end - start) / abs(start)
    significant = p_value < level
    direction: Literal["rising", "falling", "flat"] = "flat"
    if significant and s != 0:
        direction = "rising" if s > 0 else "falling"
    return Trend(
        direction=direction,
        slope=slope,
        relative_change=relative,
        p_value=p_value,
        level=level,
        significant=significant,
        n=n,
        method=METHOD,
        start=start,
        end=end,
        kendall_tau=s / pairs,
    )


def _condense(
    t: NDArray[np.float64], y: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """At most MAX_POINTS points: means over runs of consecutive points."""
    import numpy as np

    if len(t) <= MAX_POINTS:
        return t, y
    groups = np.array_split(np.arange(len(t)), MAX_POINTS)
    return (
        np.array([t[g].mean() for g in groups]),
        np.array([y[g].mean() for g in groups]),
    )


def _mann_kendall(y: NDArray[np.float64]) -> tuple[float, float]:
    """The Mann-Kendall statistic S (concordant minus discordant pairs, in time order) and
    its variance under no trend, corrected for ties in the values."""
    import numpy as np

    n = len(y)
    s = 0.0
    for i in range(n - 1):  # one row of the pair matrix at a time: O(n) memory
        s += float(np.sign(y[i + 1 :] - y[i]).sum())
    _, counts = np.unique(y, return_counts=True)
    ties = float(np.sum(counts * (counts - 1.0) * (2 * counts + 5)))
    variance = (n * (n - 1.0) * (2 * n + 5) - ties) / 18
    return s, max(variance, 1e-12)


def _hamed_rao_factor(residuals: NDArray[np.float64], level: float) -> float:
    """Hamed-Rao's variance inflation ``n / n*`` from the autocorrelations of the ranks of
    the detrended series, summed over the leading run of significant lags (lag 1, 2, ...
    up to the first one within the white-noise bound, at most n/4). Hamed-Rao keep every
    significant lag; summing stray long lags made the factor noisy and biased low (the
    sample autocorrelations of a series sum to -1/2). Never below 1: the correction never
    makes the test more liberal than the plain one."""
    import numpy as np
    from scipy import stats

    n = len(residuals)
    ranks = stats.rankdata(residuals)
    ranks = ranks - ranks.mean()
    denominator = float(np.dot(ranks, ranks))
    if denominator == 0 or n < 8:
        return 1.0
    lags = np.arange(1, n // 4 + 1)
    size = 1 << (2 * n - 1).bit_length()  # FFT autocorrelation: O(n log n) for every lag
    spectrum = np.fft.rfft(ranks, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[lags] / denominator
    bound = float(stats.norm.ppf(1 - level / 2)) / math.sqrt(n)
    inside = np.flatnonzero(np.abs(acf) <= bound)
    run = int(inside[0]) if len(inside) else len(lags)
    lags, acf = lags[:run], acf[:run]
    weights = (n - lags) * (n - lags - 1.0) * (n - lags - 2.0)
    total = float(np.sum(weights * acf))
    return max(1.0, 1 + 2 * total / (n * (n - 1.0) * (n - 2.0)))
