"""The mergeable log-bucketed histogram behind job metrics (pure, no Redis).

Quantiles read back must be within ``RELATIVE_ERROR`` of the exact value at the same rank
(the lower rank ``floor(q * (n - 1))``, as histogram.py defines it), and merging must be
associative, commutative and the same as building one histogram from the union.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from taskflow.metrics import RELATIVE_ERROR, Histogram
from taskflow.metrics.histogram import MIN_VALUE, ZERO, bucket_of, value_of

QUANTILES = (0.0, 0.5, 0.9, 0.95, 0.99, 1.0)
# the representative value is exactly RELATIVE_ERROR away at a bucket's edges; allow for the
# rounding of log() and pow() there
BOUND = RELATIVE_ERROR * (1 + 1e-9)

values = st.floats(min_value=1e-6, max_value=1e4, allow_nan=False, allow_infinity=False)
samples = st.lists(st.one_of(values, st.just(0.0)), min_size=1, max_size=2000)
small_samples = st.lists(st.one_of(values, st.just(0.0)), max_size=200)


def exact(values: list[float], q: float) -> float:
    """The value at the lower rank floor(q * (n - 1)) of ``values``."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def assert_same(a: Histogram, b: Histogram) -> None:
    """Equal buckets, count, min and max; totals equal up to float rounding."""
    assert a.buckets == b.buckets
    assert a.count == b.count
    assert a.minimum == b.minimum
    assert a.maximum == b.maximum
    assert a.total == pytest.approx(b.total, rel=1e-12, abs=1e-9)


# -- quantiles ------------------------------------------------------------------------------


@given(samples)
@example([0.0])
@example([1e-6, 1e4])
@example([1.0] * 7 + [2.0])
def test_quantiles_are_within_the_relative_error_of_the_exact_ones(xs: list[float]) -> None:
    h = Histogram.of(xs)
    assert h.count == len(xs)
    assert h.minimum == min(xs) and h.maximum == max(xs)
    assert h.total == pytest.approx(math.fsum(xs), rel=1e-9, abs=1e-12)
    for q in QUANTILES:
        got = h.quantile(q)
        want = exact(xs, q)
        assert got is not None
        assert abs(got - want) <= BOUND * want, (q, got, want)
        assert min(xs) <= got <= max(xs)  # clamped to the exact extremes


@given(st.lists(st.floats(min_value=0, max_value=MIN_VALUE), min_size=1, max_size=50), values)
def test_values_at_or_below_min_value_are_off_by_at_most_min_value(
    tiny: list[float], big: float
) -> None:
    xs = [*tiny, big]
    h = Histogram.of(xs)
    for q in QUANTILES:
        got, want = h.quantile(q), exact(xs, q)
        assert got is not None
        assert abs(got - want) <= BOUND * want + MIN_VALUE


@given(samples, st.floats(min_value=0, max_value=1))
def test_any_quantile_is_within_the_relative_error(xs: list[float], q: float) -> None:
    got, want = Histogram.of(xs).quantile(q), exact(xs, q)
    assert got is not None
    assert abs(got - want) <= BOUND * want


@given(samples)
def test_quantiles_are_monotone_in_q(xs: list[float]) -> None:
    h = Histogram.of(xs)
    got = [h.quantile(q) for q in (0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1)]
    assert got == sorted(got)  # type: ignore[type-var]


def test_empty_histogram() -> None:
    h = Histogram()
    assert h.count == 0 and h.mean is None
    assert all(h.quantile(q) is None for q in QUANTILES)


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan])
def test_quantile_outside_zero_one_is_rejected(q: float) -> None:
    with pytest.raises(ValueError, match="quantile"):
        Histogram.of([1.0]).quantile(q)


def test_mean_is_exact() -> None:
    assert Histogram.of([1.0, 2.0, 6.0]).mean == 3.0


@given(values, st.integers(min_value=1, max_value=1000))
def test_add_times_is_adding_repeatedly(x: float, times: int) -> None:
    once = Histogram()
    once.add(x, times)
    repeated = Histogram.of([x] * times)
    assert_same(once, repeated)


# -- merging --------------------------------------------------------------------------------


@given(small_samples, small_samples)
def test_merge_is_commutative(xs: list[float], ys: list[float]) -> None:
    a, b = Histogram.of(xs), Histogram.of(ys)
    assert_same(a.merge(b), b.merge(a))


@given(small_samples, small_samples, small_samples)
def test_merge_is_associative(xs: list[float], ys: list[float], zs: list[float]) -> None:
    a, b, c = Histogram.of(xs), Histogram.of(ys), Histogram.of(zs)
    assert_same(a.merge(b).merge(c), a.merge(b.merge(c)))
    assert_same(Histogram.merged([a, b, c]), a.merge(b).merge(c))


@given(small_samples, small_samples)
def test_merge_equals_the_histogram_of_the_union(xs: list[float], ys: list[float]) -> None:
    a, b = Histogram.of(xs), Histogram.of(ys)
    union = Histogram.of(xs + ys)
    merged = a.merge(b)
    assert_same(merged, union)
    for q in QUANTILES:
        assert merged.quantile(q) == union.quantile(q)
        if xs or ys:
            got, want = merged.quantile(q), exact(xs + ys, q)
            assert got is not None and abs(got - want) <= BOUND * want


@given(small_samples, small_samples)
def test_merge_leaves_its_inputs_alone(xs: list[float], ys: list[float]) -> None:
    a, b = Histogram.of(xs), Histogram.of(ys)
    a.merge(b)
    assert_same(a, Histogram.of(xs))
    assert_same(b, Histogram.of(ys))


@given(st.lists(small_samples, max_size=6))
def test_merged_of_many_equals_the_union(parts: list[list[float]]) -> None:
    union = [x for part in parts for x in part]
    assert_same(Histogram.merged(Histogram.of(p) for p in parts), Histogram.of(union))


def test_merging_empty_histograms_is_the_identity() -> None:
    a = Histogram.of([0.5, 2.0])
    assert_same(a.merge(Histogram()), a)
    assert_same(Histogram().merge(a), a)
    assert_same(Histogram.merged([]), Histogram())


# -- buckets --------------------------------------------------------------------------------


@given(st.floats(min_value=MIN_VALUE, max_value=1e300, exclude_min=True))
def test_bucket_round_trip_is_within_the_relative_error(x: float) -> None:
    assert abs(value_of(bucket_of(x)) - x) <= BOUND * x


@given(values, values)
def test_buckets_are_monotone(x: float, y: float) -> None:
    lo, hi = sorted((x, y))
    assert bucket_of(lo) <= bucket_of(hi)


@pytest.mark.parametrize("x", [0.0, MIN_VALUE, MIN_VALUE / 2, 5e-324])
def test_values_at_or_below_min_value_share_the_zero_bucket(x: float) -> None:
    assert bucket_of(x) == ZERO
    assert value_of(ZERO) == 0.0


def test_min_value_is_the_edge_of_the_zero_bucket() -> None:
    assert bucket_of(MIN_VALUE * 1.0001) != ZERO


@pytest.mark.parametrize("bad", [-1.0, -1e-12, -0.5e-9, math.nan, -math.inf, math.inf])
def test_negative_and_nan_values_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        bucket_of(bad)
    h = Histogram.of([1.0])
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        h.add(bad)
    assert_same(h, Histogram.of([1.0]))  # nothing half-added
