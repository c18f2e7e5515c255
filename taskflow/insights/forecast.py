"""Forecasts with prediction intervals, and when a forecast crosses a threshold.

Holt's linear trend, fitted as the state-space model ETS(A,A,N) by maximum likelihood
(statsmodels' ETSModel), whose prediction intervals have a closed form. With a season
(e.g. daily) and two full seasons of history, a smoothed seasonal profile is removed
first and added back to the forecast.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from ._series import Series, finite_points, require_extra

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ("MIN_POINTS", "Crossing", "Forecast", "forecast", "time_to_threshold")

MIN_POINTS: Final = 10
"""Fewer finite points (or resampled steps) than this and forecast() returns None."""
HOLT: Final = (
    "Holt's linear trend (ETS A,A,N, maximum likelihood) with analytic prediction intervals"
)
PROFILE_SMOOTHING: Final = 24
"""The seasonal profile is averaged over 1/24 of the season (an hour of a day)."""


@dataclass(frozen=True, slots=True)
class Forecast:
    """Point forecasts and prediction intervals at ``times`` (same clock as the input)."""

    horizon: float
    """Seconds past the last observation."""
    times: list[float]
    point: list[float]
    lower: list[float]
    upper: list[float]
    level: float
    """Probability that a future value falls within [lower, upper] (one time at a time)."""
    method: str
    step: float = math.nan
    """Seconds between forecast times (the resampled series' spacing)."""
    n: int = 0
    """Finite observations used."""
    last_time: float = math.nan
    last_value: float = math.nan
    """The resampled series' last value (at ``last_time``)."""


@dataclass(frozen=True, slots=True)
class Crossing:
    """Seconds from the last observation until a forecast first reaches a threshold.

    ``lower`` is the earliest plausible time (the interval band nearer the threshold
    crosses), ``upper`` the latest (the farther band crosses), ``point`` the point
    forecast's. None means: not within the horizon.
    """

    point: float | None
    lower: float | None
    upper: float | None
    level: float
    method: str
    threshold: float = math.nan
    direction: Literal["up", "down"] = "up"
    """"up" when the threshold is above the last value (a rise reaches it), else "down"."""
    horizon: float = math.nan


def _resample(
    t: NDArray[np.float64], y: NDArray[np.float64], step: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A regular series ending at the last observation: the mean of the observations in
    each step-wide bucket ``(end - step, end]``; empty buckets (gaps) are filled by linear
    interpolation between the neighbouring buckets."""
    import numpy as np

    count = int(math.floor((t[-1] - t[0]) / step + 1e-9)) + 1
    index = np.clip(np.ceil((t[-1] - t) / step - 1e-9).astype(np.int64), 0, count - 1)
    sums = np.bincount(index, weights=y, minlength=count)[::-1]
    counts = np.bincount(index, minlength=count)[::-1]
    grid = t[-1] - step * np.arange(count)[::-1]
    seen = counts > 0
    values = np.interp(grid, grid[seen], sums[seen] / counts[seen])
    return grid, values


def _profile(y: NDArray[np.float64], period: int) -> tuple[NDArray[np.float64], float]:
    """A zero-mean seasonal profile (one value per phase, aligned to the series' start) and
    the variance of its estimate per phase: classical decomposition (deviations from a
    centred moving average of one period), averaged per phase over the seasons, then over
    a circular window of period / PROFILE_SMOOTHING phases."""
    import numpy as np

    kernel = np.ones(period) / period
    if period % 2 == 0:  # a 2 x period moving average keeps an even window centred
        kernel = np.convolve(kernel, [0.5, 0.5])
    level = np.convolve(y, kernel, mode="valid")
    offset = (len(kernel) - 1) // 2
    deviations = y[offset : offset + len(level)] - level
    phases = (np.arange(len(level)) + offset) % period
    sums = np.bincount(phases, weights=deviations, minlength=period)
    counts = np.maximum(np.bincount(phases, minlength=period), 1)
    raw = sums / counts
    width = max(1, period // PROFILE_SMOOTHING)
    window = np.ones(width) / width
    padded = np.concatenate([raw[-width:], raw, raw[:width]])
    smooth = np.convolve(padded, window, mode="same")[width : width + period]
    smooth -= smooth.mean()
    noise = float(np.var(deviations - raw[phases]))
    return smooth, noise / (float(counts.mean()) * width)


def _holt(
    y: NDArray[np.float64], steps: int, level: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """ETS(A,A,N) fitted by maximum likelihood: point forecasts and interval bounds."""
    import numpy as np
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    with warnings.catch_warnings():  # convergence chatter on near-perfect fits
        warnings.simplefilter("ignore")
        fitted = ETSModel(pd.Series(y), error="add", trend="add").fit(disp=False)
        frame = fitted.get_prediction(start=len(y), end=len(y) + steps - 1).summary_frame(
            alpha=1 - level
        )
    return (
        np.asarray(frame["mean"], dtype=np.float64),
        np.asarray(frame["pi_lower"], dtype=np.float64),
        np.asarray(frame["pi_upper"], dtype=np.float64),
    )


def forecast(
    times: Series,
    values: Series,
    *,
    horizon: float,
    step: float | None = None,
    level: float = 0.8,
    season: float | None = None,
    floor: float | None = None,
) -> Forecast | None:
    """Forecast ``values`` (at ``times``, seconds) up to ``horizon`` seconds past the last
    observation, with ``level`` prediction intervals.

    The model wants a regular series: observations are averaged into buckets ``step``
    seconds wide ending at the last observation (``step`` defaults to the median spacing of
    the observations), and empty buckets are filled by linear interpolation between their
    neighbours (long gaps therefore look smoother than they were). NaN and infinite points
    are ignored. ``season`` (seconds, e.g. 86400) adds a seasonal profile when at least two
    full seasons of history exist; the ``method`` says whether it was used. ``floor`` clips
    the forecast and its interval from below (0 for durations and counts). None when fewer
    than ``MIN_POINTS`` points or steps remain.

    The intervals assume the model is right and its parameters are known: they do not
    widen for parameter uncertainty, and a change of regime inside the horizon escapes them.
    """
    _check_forecast_args(horizon, step, level, season)
    require_extra()
    import numpy as np

    t, y = finite_points(times, values)
    if len(t) < MIN_POINTS:
        return None
    if step is None:
        gaps = np.diff(t)
        gaps = gaps[gaps > 0]
        if not len(gaps):
            return None
        step = float(np.median(gaps))
    grid, series = _resample(t, y, step)
    if len(grid) < MIN_POINTS:
        return None
    steps = max(1, math.ceil(horizon / step - 1e-9))
    point, lower, upper, method = _model(series, steps, level, season, step)
    if floor is not None:
        point, lower, upper = (np.maximum(a, floor) for a in (point, lower, upper))
    return Forecast(
        horizon=horizon,
        times=[float(grid[-1] + step * k) for k in range(1, steps + 1)],
        point=point.tolist(),
        lower=lower.tolist(),
        upper=upper.tolist(),
        level=level,
        method=method,
        step=step,
        n=len(t),
        last_time=float(grid[-1]),
        last_value=float(series[-1]),
    )


def _model(
    series: NDArray[np.float64], steps: int, level: float, season: float | None, step: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], str]:
    import numpy as np
    from scipy import stats

    period = round(season / step) if season is not None else 0
    if period < 2 or len(series) < 2 * period:
        method = HOLT
        if season is not None:
            method += f"; no seasonality (fewer than 2 seasons of {season:g} s of history)"
        return (*_holt(series, steps, level), method)
    profile, variance = _profile(series, period)
    phases = np.arange(len(series) + steps) % period
    point, lower, upper = _holt(series - profile[phases[: len(series)]], steps, level)
    ahead = profile[phases[len(series) :]]
    z = float(stats.norm.ppf(0.5 + level / 2))
    half = np.hypot((upper - lower) / 2, z * math.sqrt(variance))  # plus the profile's error
    centre = point + ahead
    seasons = len(series) / period
    method = (
        f"seasonal profile of {season:g} s ({seasons:.1f} seasons, smoothed over "
        f"{max(1, period // PROFILE_SMOOTHING)} steps) removed, then {HOLT}"
    )
    return centre, centre - half, centre + half, method


def _check_forecast_args(
    horizon: float, step: float | None, level: float, season: float | None
) -> None:
    if not 0 < horizon < math.inf:
        raise ValueError(f"horizon must be a finite number of seconds > 0, got {horizon!r}")
    if step is not None and not 0 < step < math.inf:
        raise ValueError(f"step must be a finite number of seconds > 0, got {step!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be within (0, 1), got {level!r}")
    if season is not None and not 0 < season < math.inf:
        raise ValueError(f"season must be a finite number of seconds > 0, got {season!r}")


def time_to_threshold(
    times: Series,
    values: Series,
    threshold: float,
    *,
    level: float = 0.8,
    horizon: float | None = None,
    step: float | None = None,
    season: float | None = None,
) -> Crossing | None:
    """Seconds from the last observation until the forecast reaches ``threshold``.

    The direction is set by the last (resampled) value: a threshold above it is reached
    by a rise, one below it by a fall. Forecast paths start at the last value and are
    linear between forecast steps. ``horizon`` defaults to the span of the history (a
    forecast further out than the data behind it says little). None when forecast() is.
    """
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if horizon is None:
        require_extra()
        t, _ = finite_points(times, values)
        if len(t) < 2 or t[-1] <= t[0]:
            return None
        horizon = float(t[-1] - t[0])
    result = forecast(times, values, horizon=horizon, step=step, level=level, season=season)
    if result is None:
        return None
    up = threshold >= result.last_value
    near, far = (result.upper, result.lower) if up else (result.lower, result.upper)
    crossings = [_first_crossing(result, path, threshold, up) for path in (result.point, near, far)]
    return Crossing(
        point=crossings[0],
        lower=crossings[1],
        upper=crossings[2],
        level=level,
        method=result.method + "; linear between forecast steps",
        threshold=threshold,
        direction="up" if up else "down",
        horizon=horizon,
    )


def _first_crossing(
    result: Forecast, path: list[float], threshold: float, up: bool
) -> float | None:
    """The first offset (seconds past the last observation, within the horizon) at which
    ``path``, starting from the last value, reaches the threshold."""
    sign = 1.0 if up else -1.0
    previous_t, previous_v = 0.0, result.last_value
    for when, value in zip(result.times, path, strict=True):
        offset = when - result.last_time
        if sign * (value - threshold) >= 0:
            gap = value - previous_v
            fraction = 1.0 if gap == 0 else (threshold - previous_v) / gap
            crossing = previous_t + min(max(fraction, 0.0), 1.0) * (offset - previous_t)
            return crossing if crossing <= result.horizon else None
        previous_t, previous_v = offset, value
    return None
