"""The numerical core of insights: trends, forecasts, threshold crossings, queueing advice.

Pure functions, no Redis. Every random series is seeded, so each figure asserted here is
the same on every run; the bounds say how far from the nominal rate a seeded run may be.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import lfilter

from taskflow.insights.stats import (
    advise,
    erlang_c,
    forecast,
    mean_wait,
    time_to_threshold,
    trend,
)

MINUTE = 60.0
DAY_OF_MINUTES = np.arange(24 * 60) * MINUTE  # 1-minute buckets over 24 h


def _lognormal_run_times(rng: np.random.Generator, level: np.ndarray) -> np.ndarray:
    """Per-minute mean run times whose level follows ``level`` (lognormal noise, cv ~0.5)."""
    return level * rng.lognormal(mean=-0.125, sigma=0.5, size=len(level))


# -- trend ------------------------------------------------------------------------------


def test_a_level_that_doubles_is_a_significant_rise() -> None:
    rng = np.random.default_rng(14)
    values = _lognormal_run_times(rng, np.linspace(1.0, 2.0, len(DAY_OF_MINUTES)))
    found = trend(DAY_OF_MINUTES, values)
    assert found is not None
    assert (found.direction, found.significant) == ("rising", True)
    assert found.p_value < 1e-6
    # the slope's standard error here is ~0.08 of the start level: allow 3 of them
    assert found.relative_change == pytest.approx(1.0, abs=0.25)
    assert found.slope == pytest.approx((found.end - found.start) / DAY_OF_MINUTES[-1])
    assert found.n == len(DAY_OF_MINUTES)
    assert "Theil-Sen" in found.method and "Mann-Kendall" in found.method


def test_a_level_that_halves_is_a_significant_fall() -> None:
    rng = np.random.default_rng(15)
    values = _lognormal_run_times(rng, np.linspace(2.0, 1.0, len(DAY_OF_MINUTES)))
    found = trend(DAY_OF_MINUTES, values)
    assert found is not None
    assert (found.direction, found.significant) == ("falling", True)
    assert found.relative_change == pytest.approx(-0.5, abs=0.12)


def test_flat_noise_rarely_raises_a_false_alarm() -> None:
    # 50 seeded flat series at level 0.05: false alarms ~ Binomial(50, 0.05), mean 2.5,
    # sd 1.54; the bound is level + 3 binomial standard errors, 0.05 + 3 * 0.0308 = 0.142,
    # i.e. at most 7 of 50 (the seeded run gives 2 of 50)
    rng = np.random.default_rng(1400)
    alarms = 0
    for _ in range(50):
        found = trend(DAY_OF_MINUTES, _lognormal_run_times(rng, np.ones(len(DAY_OF_MINUTES))))
        assert found is not None
        alarms += found.significant
        assert found.direction == ("flat" if not found.significant else found.direction)
    assert alarms / 50 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 50)


def test_autocorrelated_flat_noise_is_corrected_for() -> None:
    # AR(1) noise (phi 0.7) fools the plain Mann-Kendall test about 1 time in 5 at n 1440
    # (its statistic's variance is 5.7 times the iid one); the Hamed-Rao correction brings
    # the seeded rate down to 5 of 50, against a bound of level + 3 standard errors
    rng = np.random.default_rng(1401)
    alarms = 0
    for _ in range(50):
        noise = lfilter([1.0], [1.0, -0.7], rng.normal(size=len(DAY_OF_MINUTES)))
        found = trend(DAY_OF_MINUTES, 10 + noise)
        assert found is not None
        alarms += found.significant
    assert alarms <= 7


def test_trend_ignores_non_finite_points_and_needs_eight() -> None:
    times = [float(i) for i in range(10)]
    values = [float(i) for i in range(10)]
    values[3] = math.nan
    times[5] = math.inf
    found = trend(times, values)
    assert found is not None and found.n == 8
    assert found.slope == pytest.approx(1.0)
    assert trend(times[:9], values[:9]) is None  # 7 finite points
    assert trend([1.0] * 10, list(range(10))) is None  # no time span
    assert trend([], []) is None


def test_trend_relative_change_is_zero_when_the_start_is_zero() -> None:
    found = trend([float(i) for i in range(20)], [float(i) for i in range(20)])
    assert found is not None and found.start == 0.0  # a fitted start of 0: no ratio
    assert found.relative_change == 0.0 and found.direction == "rising"


def test_trend_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="level must be within"):
        trend([1.0] * 8, [1.0] * 8, level=1.5)
    with pytest.raises(ValueError, match="one length"):
        trend([1.0] * 8, [1.0] * 9)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(-1e3, 1e3), min_size=8, max_size=60),
    shift=st.integers(-(10**9), 10**9),
    power=st.integers(-8, 8),
)
def test_trend_is_invariant_to_shifting_times_and_scaling_values(
    values: list[float], shift: int, power: int
) -> None:
    times = [float(60 * i) for i in range(len(values))]
    scale = 2.0**power  # exact in binary floating point, so ties stay ties
    base = trend(times, values)
    moved = trend([t + shift for t in times], [v * scale for v in values])
    assert base is not None and moved is not None
    assert moved.p_value == pytest.approx(base.p_value, rel=1e-6, abs=1e-12)
    assert moved.direction == base.direction
    assert moved.slope == pytest.approx(base.slope * scale, rel=1e-6, abs=1e-9)


# -- forecast ---------------------------------------------------------------------------


def _coverage(kind: str, seed: int, series: int = 100, length: int = 200, ahead: int = 20) -> float:
    """Share of held-out values inside the 80 % intervals, over ``series`` seeded series
    and every horizon 1..``ahead`` steps."""
    rng = np.random.default_rng(seed)
    inside = total = 0
    times = np.arange(length + ahead) * MINUTE
    for _ in range(series):
        if kind == "linear":
            truth = 5 + rng.uniform(-0.02, 0.02) * np.arange(length + ahead)
            truth = truth + rng.normal(0, rng.uniform(0.5, 2), length + ahead)
        else:  # random walk with drift
            truth = np.cumsum(rng.uniform(-0.2, 0.2) + rng.normal(0, 1, length + ahead))
        result = forecast(times[:length], truth[:length], horizon=ahead * MINUTE, level=0.8)
        assert result is not None and len(result.times) == ahead
        assert result.times == pytest.approx(list(times[length:]))
        held = truth[length:]
        inside += int(np.sum((held >= result.lower) & (held <= result.upper)))
        total += ahead
    return inside / total


@pytest.mark.parametrize(("kind", "seed"), [("linear", 2024), ("random walk", 2025)])
def test_eighty_percent_intervals_cover_about_eighty_percent(kind: str, seed: int) -> None:
    # 100 series x 20 horizons = 2,000 held-out values per kind (the horizons of one series
    # are correlated, so the effective sample is nearer 100: standard error ~0.04); the
    # seeded runs give 0.806 (linear trend + Gaussian noise) and 0.769 (random walk with
    # drift; the intervals leave out the drift's estimation error)
    assert 0.70 <= _coverage(kind, seed) <= 0.90


def test_forecast_resamples_irregular_series_and_fills_gaps() -> None:
    rng = np.random.default_rng(7)
    times = np.sort(rng.uniform(0, 3600, 120))
    times = times[(times < 1200) | (times > 1800)]  # a 10-minute gap
    values = 3 + times / 600 + rng.normal(0, 0.1, len(times))
    result = forecast(times, values, horizon=600, step=60)
    assert result is not None
    assert result.step == 60 and result.times[0] == pytest.approx(times[-1] + 60)
    assert result.point[-1] == pytest.approx(3 + (times[-1] + 600) / 600, abs=0.5)
    assert all(
        lo <= p <= hi for lo, p, hi in zip(result.lower, result.point, result.upper, strict=True)
    )


def test_forecast_needs_ten_points_and_valid_arguments() -> None:
    assert forecast(list(range(9)), list(range(9)), horizon=5) is None
    assert forecast([0.0, 1.0] * 3 + [math.nan] * 5, list(range(11)), horizon=5) is None
    for bad in ({"horizon": 0}, {"horizon": 5, "level": 1.0}, {"horizon": 5, "step": -1}):
        with pytest.raises(ValueError, match="must be"):
            forecast(list(range(20)), list(range(20)), **bad)


def test_forecast_floor_clips_the_interval() -> None:
    times = np.arange(50) * MINUTE
    result = forecast(times, np.linspace(5, 0.5, 50), horizon=3600, floor=0.0)
    assert result is not None and min(result.lower) == 0.0 and min(result.point) >= 0.0


def test_daily_seasonality_only_with_two_seasons() -> None:
    rng = np.random.default_rng(11)
    step = 300.0
    times = np.arange(3 * 288) * step  # three days of 5-minute buckets
    daily = 3 * np.sin(2 * np.pi * times / 86400)
    values = 10 + daily + rng.normal(0, 0.5, len(times))
    seasonal = forecast(times, values, horizon=6 * 3600, season=86400)
    assert seasonal is not None and seasonal.method.startswith("seasonal profile")
    future = np.array(seasonal.times)
    expected = 10 + 3 * np.sin(2 * np.pi * future / 86400)
    assert np.max(np.abs(np.array(seasonal.point) - expected)) < 1.0
    short = forecast(times[:400], values[:400], horizon=3600, season=86400)  # 1.4 days
    assert short is not None and "no seasonality" in short.method


# -- time to threshold ------------------------------------------------------------------


def test_time_to_threshold_on_a_clean_line_is_the_analytic_time() -> None:
    times = np.arange(100) * MINUTE
    values = 2 + 0.01 * times  # 61.4 at the last point
    crossing = time_to_threshold(times, values, 100.0, horizon=7200)
    assert crossing is not None and crossing.direction == "up"
    analytic = (100.0 - values[-1]) / 0.01  # 3860 s
    for found in (crossing.point, crossing.lower, crossing.upper):
        assert found == pytest.approx(analytic, abs=1.0)
    falling = time_to_threshold(times, 100 - 0.01 * times, 20.0, horizon=7200)
    assert falling is not None and falling.direction == "down"
    assert falling.point == pytest.approx((100 - 0.01 * times[-1] - 20) / 0.01, abs=1.0)


def test_time_to_threshold_beyond_the_horizon_is_none() -> None:
    times = np.arange(100) * MINUTE
    crossing = time_to_threshold(times, 2 + 0.01 * times, 100.0, horizon=3600)
    assert crossing is not None
    assert (crossing.point, crossing.lower, crossing.upper) == (None, None, None)
    flat = time_to_threshold(times, np.full(100, 5.0), 6.0)  # horizon: the history's span
    assert flat is not None and flat.point is None and flat.horizon == times[-1]


def test_time_to_threshold_bands_bracket_the_point() -> None:
    rng = np.random.default_rng(21)
    times = np.arange(300) * MINUTE
    values = 10 + 0.002 * times + rng.normal(0, 1, 300)
    crossing = time_to_threshold(times, values, 60.0, horizon=6 * 3600)
    assert crossing is not None and crossing.point is not None and crossing.lower is not None
    assert crossing.lower <= crossing.point
    assert crossing.upper is None or crossing.point <= crossing.upper


# -- queueing ---------------------------------------------------------------------------


def _erlang_c_direct(servers: int, load: Fraction) -> Fraction:
    """The textbook closed form, in exact rational arithmetic."""
    tail = load**servers / math.factorial(servers) * servers / (servers - load)
    head = sum(load**k / math.factorial(k) for k in range(servers))
    return tail / (head + tail)


def test_erlang_c_textbook_values() -> None:
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(1, 0.6) == pytest.approx(0.6)  # M/M/1: P(wait) = utilisation
    for servers, load in [(5, Fraction(4)), (10, Fraction(17, 2)), (30, Fraction(25))]:
        assert erlang_c(servers, float(load)) == pytest.approx(
            float(_erlang_c_direct(servers, load)), rel=1e-12
        )
    assert erlang_c(3, 3.0) == 1.0 and erlang_c(3, 7.5) == 1.0 and erlang_c(3, 0.0) == 0.0
    assert 0 < erlang_c(5000, 4900.0) < 1  # no overflow where a**c / c! would


@settings(max_examples=200, deadline=None)
@given(servers=st.integers(1, 300), load=st.floats(0, 400))
def test_erlang_c_is_a_probability_falling_with_servers(servers: int, load: float) -> None:
    now, more = erlang_c(servers, load), erlang_c(servers + 1, load)
    assert 0 <= more <= now <= 1


def test_advice_is_the_fewest_servers_meeting_the_target() -> None:
    advice = advise(arrival_rate=5, service_time=2, target_wait=0.5)
    assert advice.meets_target and advice.predicted_wait <= 0.5
    assert mean_wait(advice.servers - 1, 5, 2) > 0.5
    assert advice.servers == 12 and advice.concurrency * advice.processes >= advice.servers
    assert advice.utilisation == pytest.approx(10 / 12)
    assert advice.wait_probability == pytest.approx(erlang_c(12, 10.0))
    assert any("Erlang C" in note for note in advice.assumptions)


def test_allen_cunneen_and_percentile_targets() -> None:
    plain = advise(arrival_rate=20, service_time=0.5, target_wait=0.05)
    steady = advise(arrival_rate=20, service_time=0.5, target_wait=0.05, service_cv=0.0)
    bursty = advise(arrival_rate=20, service_time=0.5, target_wait=0.05, service_cv=3.0)
    assert steady.servers <= plain.servers <= bursty.servers
    assert any("Allen-Cunneen" in note for note in bursty.assumptions)
    p95 = advise(arrival_rate=20, service_time=0.5, target_wait=0.05, percentile=0.95)
    assert p95.servers >= plain.servers and p95.predicted_wait_percentile is not None
    assert p95.predicted_wait_percentile <= 0.05


def test_cpu_bound_work_scales_processes_not_concurrency() -> None:
    io = advise(arrival_rate=50, service_time=0.2, target_wait=0.1, cores=16)
    cpu = advise(arrival_rate=50, service_time=0.2, target_wait=0.1, cpu_share=1.0, cores=16)
    assert io.processes == 1 and io.concurrency == io.servers
    assert cpu.concurrency == 1 and cpu.processes == cpu.servers == io.servers
    half = advise(arrival_rate=50, service_time=0.2, target_wait=0.1, cpu_share=0.5, cores=16)
    assert half.concurrency == 2 and half.processes == math.ceil(half.servers / 2)
    starved = advise(arrival_rate=50, service_time=0.2, target_wait=0.1, cpu_share=1.0, cores=4)
    assert not starved.meets_target and any("add cores" in n for n in starved.assumptions)


def test_no_arrivals_needs_one_server_and_no_wait() -> None:
    advice = advise(arrival_rate=0, service_time=3, target_wait=1)
    assert (advice.servers, advice.concurrency, advice.processes) == (1, 1, 1)
    assert advice.predicted_wait == 0 and advice.wait_probability == 0 and advice.meets_target


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"arrival_rate": -1.0}, "arrival_rate must be .* got -1.0"),
        ({"arrival_rate": math.nan}, "arrival_rate .* got nan"),
        ({"service_time": 0.0}, "service_time must be a finite number > 0, got 0.0"),
        ({"target_wait": 0.0}, "target_wait must be .* > 0, got 0.0"),
        ({"target_wait": -2.0}, "target_wait .* got -2.0"),
        ({"service_cv": -0.5}, "service_cv .* got -0.5"),
        ({"cpu_share": 1.5}, "cpu_share .* <= 1, got 1.5"),
        ({"cores": 0}, "cores must be an integer >= 1, got 0"),
        ({"max_concurrency": 0}, "max_concurrency .* got 0"),
        ({"percentile": 1.0}, "percentile must be within"),
    ],
)
def test_advise_rejects_bad_input_naming_it(arguments: dict[str, float], named: str) -> None:
    call: dict[str, float] = {"arrival_rate": 1.0, "service_time": 1.0, "target_wait": 1.0}
    with pytest.raises(ValueError, match=named):
        advise(**{**call, **arguments})  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.0, 200.0),
    more=st.floats(0.0, 50.0),
    service=st.floats(0.01, 5.0),
    target=st.floats(0.001, 10.0),
    cv=st.none() | st.floats(0.0, 3.0),
)
def test_advice_grows_with_the_arrival_rate(
    rate: float, more: float, service: float, target: float, cv: float | None
) -> None:
    low = advise(arrival_rate=rate, service_time=service, target_wait=target, service_cv=cv)
    high = advise(arrival_rate=rate + more, service_time=service, target_wait=target, service_cv=cv)
    assert low.servers <= high.servers
    assert low.meets_target and low.servers > low.offered_load
    if low.servers > 1:  # the fewest: one fewer misses the target
        assert mean_wait(low.servers - 1, rate, service, 1.0 if cv is None else cv) > target
