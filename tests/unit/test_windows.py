"""Window kernels: hand-computed values, Prometheus' rate extrapolation, and agreement with slow per-row references."""

from __future__ import annotations

import ast
import inspect
import itertools
import math
import statistics
from fractions import Fraction
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fsincident.expr import windows as W

from .guard import cpu_bound

pytestmark = pytest.mark.filterwarnings("error")  # a numpy RuntimeWarning from a kernel fails the test

NAN = math.nan
INF = math.inf


def col(*values: float) -> np.ndarray:
    """One row of samples as a (1, k) matrix; None means "no sample"."""
    return np.array([[NAN if v is None else v for v in values]], dtype=np.float64)


def minutes(k: int, start: float = 0.0) -> np.ndarray:
    return start + 60.0 * np.arange(k)


def one(fn, ts, vals, end, window, *extra) -> float:
    out = fn(ts, vals, end, window, *extra)
    assert out.shape == (vals.shape[0],)
    return float(out[0])


# ----------------------------------------------------------------------------------- rate / increase / delta


def test_promtool_series_rate_is_ten_per_minute():
    ts = minutes(11)  # input_series '0+10x10' at a 1m interval: 0, 10, ..., 100
    vals = col(*range(0, 101, 10))
    assert one(W.rate, ts, vals, 600.0, 300.0) == pytest.approx(10 / 60, rel=1e-12)
    assert one(W.increase, ts, vals, 600.0, 300.0) == pytest.approx(50.0, rel=1e-12)
    assert one(W.delta, ts, vals, 600.0, 300.0) == pytest.approx(50.0, rel=1e-12)
    # at 2m the window (-3m, 2m] holds 0, 10, 20; extrapolation toward the start stops at the counter's zero
    assert one(W.increase, ts, vals, 120.0, 300.0) == pytest.approx(20.0, rel=1e-12)


def test_counter_reset_adds_back_the_value_before_the_drop():
    ts = minutes(5)
    vals = col(0, 10, 20, 5, 15)
    # window (-1m, 4m]: 15 - 0 + 20 = 35; starting at 0 the counter is not extrapolated before its first sample
    assert one(W.increase, ts, vals, 240.0, 300.0) == pytest.approx(35.0, rel=1e-12)
    assert one(W.rate, ts, vals, 240.0, 300.0) == pytest.approx(35.0 / 300.0, rel=1e-12)
    assert one(W.delta, ts, vals, 240.0, 300.0) == pytest.approx(15.0 * 300.0 / 240.0, rel=1e-12)
    assert one(W.resets, ts, vals, 240.0, 300.0) == 1.0


def test_far_from_the_window_start_extrapolates_half_an_interval():
    ts = minutes(6, start=300.0)  # samples 5m..10m, window (0, 10m]: first sample 5m after the start
    vals = col(0, 10, 20, 30, 40, 50)
    # span 300 s, average interval 60 s -> 30 s of extrapolation at the start, none at the end
    assert one(W.delta, ts, vals, 600.0, 600.0) == pytest.approx(50.0 * 330.0 / 300.0, rel=1e-12)
    # and at the end, when the last sample is long before the window end
    assert one(W.delta, ts, vals, 900.0, 900.0) == pytest.approx(50.0 * 360.0 / 300.0, rel=1e-12)


def test_counter_is_not_extrapolated_below_zero():
    ts = np.array([120.0, 180.0, 240.0])
    vals = col(2, 12, 22)
    # half an interval (30 s) would reach -3; the line hits zero 12 s before the first sample instead
    assert one(W.increase, ts, vals, 240.0, 240.0) == pytest.approx(20.0 * 132.0 / 120.0, rel=1e-12)
    assert one(W.delta, ts, vals, 240.0, 240.0) == pytest.approx(20.0 * 150.0 / 120.0, rel=1e-12)


def test_rate_with_gaps_uses_each_rows_own_first_and_last_sample():
    ts = minutes(6)
    vals = np.vstack(
        [col(0, None, 20, 30, None, None), col(None, None, 0, None, 30, 50), col(None, 5, None, None, None, None)]
    )
    got = W.increase(ts, vals, 300.0, 360.0)
    # row 0: 30 over 180 s, average interval 90 s; the start gap (60 s) is capped at the zero point 0 s before the
    # first sample; the end gap (120 s) is over 1.1 intervals -> half an interval (45 s)
    assert got[0] == pytest.approx(30.0 * 225.0 / 180.0, rel=1e-12)
    # row 1: 50 over 180 s, avg 90 s; start gap 180 s -> 45 s but the zero point is 0 s away; end gap 0
    assert got[1] == pytest.approx(50.0, rel=1e-12)
    assert math.isnan(got[2])  # a single sample has no rate


def test_left_open_window_excludes_a_sample_exactly_at_the_start():
    ts = minutes(3)
    vals = col(100, 1, 2)
    assert one(W.count_over_time, ts, vals, 120.0, 120.0) == 2.0
    assert one(W.min_over_time, ts, vals, 120.0, 120.0) == 1.0
    assert one(W.instant, ts, vals, 120.0, 60.0) == 2.0
    assert math.isnan(one(W.instant, ts, vals, 179.0, 50.0))  # latest sample 59 s old, lookback 50 s


# ------------------------------------------------------------------------------------------ forecasting


def test_deriv_and_predict_linear_on_a_line():
    ts = 1.7e9 + 15.0 * np.arange(40)
    vals = col(*(5.0 + 2.0 * (t - ts[0]) for t in ts))
    end = float(ts[-1])
    assert one(W.deriv, ts, vals, end, 600.0) == pytest.approx(2.0, rel=1e-9)
    expected = 5.0 + 2.0 * (end + 3600.0 - ts[0])
    assert one(W.predict_linear, ts, vals, end, 600.0, 3600.0) == pytest.approx(expected, rel=1e-9)


def test_constant_series_has_exactly_zero_slope():
    ts = minutes(10)
    vals = col(*[0.1] * 10)
    assert one(W.deriv, ts, vals, 540.0, 600.0) == 0.0
    assert one(W.predict_linear, ts, vals, 540.0, 600.0, 1e6) == 0.1
    assert one(W.avg_over_time, ts, vals, 540.0, 600.0) == 0.1
    assert one(W.stddev_over_time, ts, vals, 540.0, 600.0) == 0.0


def test_time_to_disk_full():
    ts = minutes(11)
    falling = col(*(100.0 - 5.0 * i for i in range(11)))  # 100 -> 50 free, -5 per minute
    rising = col(*(50.0 + 5.0 * i for i in range(11)))
    crossed = col(*(-20.0 + 5.0 * i for i in range(11)))  # rising through 0 inside the window
    stuck = col(*[0.0] * 11)
    flat = col(*[7.0] * 11)
    vals = np.vstack([falling, rising, crossed, stuck, flat])
    got = W.time_to(ts, vals, 600.0, 3600.0, 0.0)
    assert got[0] == pytest.approx(600.0, rel=1e-9)  # 50 left at 5 per minute
    assert math.isnan(got[1])  # moving away from 0
    assert got[2] == 0.0  # already past 0 in the direction of travel
    assert got[3] == 0.0  # at the threshold
    assert math.isnan(got[4])  # slope 0
    assert W.time_to(ts, vals, 600.0, 3600.0, 150.0)[1] == pytest.approx(600.0, rel=1e-9)  # 50 to go at 5/min


# ------------------------------------------------------------------------------------ aggregations over time


def test_aggregations_by_hand():
    ts = minutes(8)
    vals = np.vstack([col(2, 4, 4, 4, 5, 5, 7, 9), col(None, 1, None, 2, 3, None, 4, None)])
    end, window = 420.0, 480.0
    assert list(W.avg_over_time(ts, vals, end, window)) == [5.0, 2.5]
    assert list(W.sum_over_time(ts, vals, end, window)) == [40.0, 10.0]
    assert list(W.min_over_time(ts, vals, end, window)) == [2.0, 1.0]
    assert list(W.max_over_time(ts, vals, end, window)) == [9.0, 4.0]
    assert list(W.count_over_time(ts, vals, end, window)) == [8.0, 4.0]
    assert list(W.last_over_time(ts, vals, end, window)) == [9.0, 4.0]
    assert W.stddev_over_time(ts, vals, end, window)[0] == pytest.approx(2.0, rel=1e-12)  # population
    assert W.stddev_over_time(ts, vals, end, window)[1] == pytest.approx(math.sqrt(1.25), rel=1e-12)


def test_quantile_over_time_interpolates_like_prometheus():
    ts = minutes(4)
    vals = col(4, 1, 3, 2)
    assert one(W.quantile_over_time, ts, vals, 180.0, 300.0, 0.5) == 2.5
    assert one(W.quantile_over_time, ts, vals, 180.0, 300.0, 0.9) == pytest.approx(3.7, rel=1e-12)
    assert one(W.quantile_over_time, ts, vals, 180.0, 300.0, 0.0) == 1.0
    assert one(W.quantile_over_time, ts, vals, 180.0, 300.0, 1.0) == 4.0
    assert one(W.quantile_over_time, ts, vals, 180.0, 300.0, -0.1) == -INF
    assert one(W.quantile_over_time, ts, vals, 180.0, 300.0, 1.1) == INF
    assert math.isnan(one(W.quantile_over_time, ts, vals, 900.0, 300.0, 1.1))  # no samples: no result


def test_changes_and_resets_skip_gaps():
    ts = minutes(7)
    vals = col(1, None, 1, 2, None, 1, 1)
    assert one(W.changes, ts, vals, 360.0, 420.0) == 2.0
    assert one(W.resets, ts, vals, 360.0, 420.0) == 1.0
    assert one(W.changes, ts, col(None, None, None, None, None, None, 3), 360.0, 420.0) == 0.0
    assert math.isnan(one(W.changes, ts, col(*[None] * 7), 360.0, 420.0))


def test_nodata_only_for_series_seen_before():
    ts = minutes(10)
    vals = np.vstack(
        [
            col(1, 1, 1, 1, None, None, None, None, None, None),  # went silent
            col(*[None] * 10),  # never seen
            col(*[1] * 10),  # alive
            col(None, None, None, None, None, None, None, None, None, 1),  # appears after `end`
        ]
    )
    got = W.nodata(ts, vals, 480.0, 300.0)
    assert got[0] == 1.0
    assert np.isnan(got[1:]).all()


# ------------------------------------------------------------------------------------------- anomalies


def test_zscore_uses_median_and_mad():
    ts = minutes(5)
    assert one(W.zscore, ts, col(1, 2, 3, 4, 100), 240.0, 300.0) == pytest.approx(97 / 1.4826, rel=1e-12)
    assert one(W.zscore, ts, col(5, 5, 5, 5, 6), 240.0, 300.0) == INF  # MAD 0, latest off the median
    assert one(W.zscore, ts, col(5, 5, 5, 5, 4), 240.0, 300.0) == -INF
    assert one(W.zscore, ts, col(5, 6, 5, 5, 5), 240.0, 300.0) == 0.0
    assert math.isnan(one(W.zscore, ts, col(None, None, None, 1, 100), 240.0, 300.0))  # too few samples


def test_ewma_weights_halve_the_sample_count_as_span():
    ts = minutes(4)
    vals = col(1, 2, 3, 10)
    # 4 samples: span 2, alpha 2/3, weights 1, 1/3, 1/9, 1/27 from the newest -> (10 + 1 + 2/9 + 1/27) / (40/27)
    assert one(W.ewma, ts, vals, 180.0, 240.0) == pytest.approx(7.6, rel=1e-12)
    # latest (10) against 1, 2, 3: span 1.5, alpha 0.8, weights 1, 0.2, 0.04 from 3 back to 1
    w = [0.04, 0.2, 1.0]
    mean = (0.04 * 1 + 0.2 * 2 + 3) / sum(w)
    std = math.sqrt(sum(wi * (x - mean) ** 2 for wi, x in zip(w, [1, 2, 3], strict=True)) / sum(w))
    assert one(W.ewma_zscore, ts, vals, 180.0, 240.0) == pytest.approx((10 - mean) / std, rel=1e-12)
    assert one(W.ewma_zscore, ts, col(3, 3, 3, 4), 180.0, 240.0) == INF
    assert one(W.ewma_zscore, ts, col(3, 3, 3, 3), 180.0, 240.0) == 0.0


def test_spike_flatline_and_baseline():
    ts = minutes(20)
    vals = np.vstack(
        [
            col(*[10] * 10, *[30] * 10),  # triples
            col(*[0] * 10, *[5] * 10),  # previous mean 0
            col(*[None] * 10, *[5] * 10),  # no previous window
        ]
    )
    got = W.spike(ts, vals, 1140.0, 600.0)
    assert got[0] == 3.0
    assert np.isnan(got[1:]).all()

    flat = np.vstack([col(*[7] * 20), col(*[7] * 19, 8), col(*[None] * 16, 7, 7, 7, 7), col(*[None] * 19, 7)])
    assert np.array_equal(W.flatline(ts, flat, 1140.0, 600.0), [1.0, NAN, NAN, NAN], equal_nan=True)
    assert np.array_equal(W.flatline(ts, flat, 1140.0, 300.0), [1.0, NAN, 1.0, NAN], equal_nan=True)

    day = 86400.0
    bts = np.array([0.0, 600.0, day, day + 600.0, 2 * day, 2 * day + 600.0, 3 * day])
    bvals = np.vstack([col(10, 10, 20, 20, 30, 30, 99), col(10, 10, None, None, 40, 40, 99), col(*[None] * 6, 99)])
    got = W.baseline(bts, bvals, 3 * day + 300.0, day, 3, 1200.0)
    assert got[0] == 20.0  # median of the three previous days around the same time
    assert got[1] == 25.0  # a missing day: median of the two others
    assert math.isnan(got[2])


# --------------------------------------------------------------------------------------- shapes and API


@pytest.mark.parametrize("name", sorted(W.KERNELS))
def test_degenerate_shapes_give_nan_of_the_right_shape(name):
    fn, extra = W.KERNELS[name], [0.5] * len(W.EXTRA_ARGS[name])
    if name == "baseline":
        extra = [2, 60.0]
    assert fn(np.empty(0), np.empty((3, 0)), 100.0, 60.0, *extra).shape == (3,)
    assert np.isnan(fn(np.empty(0), np.empty((3, 0)), 100.0, 60.0, *extra)).all()
    assert fn(minutes(3), np.empty((0, 3)), 100.0, 60.0, *extra).shape == (0,)
    far = fn(minutes(3), np.ones((2, 3)), 1e6, 60.0, *extra)
    assert np.isnan(far).all() or name == "nodata"
    with pytest.raises(ValueError, match="shapes"):
        fn(minutes(3), np.ones((2, 4)), 100.0, 60.0, *extra)


def test_extra_args_match_signatures():
    assert set(W.KERNELS) == set(W.EXTRA_ARGS)
    for name, fn in W.KERNELS.items():
        params = list(inspect.signature(fn).parameters)
        assert len(params) == 4 + len(W.EXTRA_ARGS[name]), name
    assert W.EXTRA_ARGS["quantile_over_time"] == ("q",)
    assert W.EXTRA_ARGS["predict_linear"] == ("horizon",)
    assert W.EXTRA_ARGS["time_to"] == ("threshold",)


def test_module_imports_only_numpy_and_the_standard_library():
    tree = ast.parse(inspect.getsource(W))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", "numpy", "math", "functools", "collections", "typing"}


def test_strided_history_views_give_the_same_results():
    rng = np.random.default_rng(7)
    ts = 15.0 * np.arange(64)
    big = np.full((40, 100), np.nan)
    big[:30, 10:74] = np.cumsum(rng.integers(0, 8, (30, 64)), axis=1) / 4  # exact in float32 too
    big[:30, 10:74][rng.random((30, 64)) < 0.2] = np.nan
    view = big[:30, 10:74]  # a strided row-major view
    dense = np.ascontiguousarray(view)
    tm = np.full((100, 40), np.nan)  # time-major, like the history's exact tiers: vals[lo:n, :rows].T
    tm[10:74, :30] = dense.T
    time_major = tm[10:74, :30].T
    offsets = W.Offsets(tm[10:74, :30].astype(np.float32), np.zeros(30))  # float32 offsets, base 0
    for name, fn in W.KERNELS.items():
        extra = {"predict_linear": (60.0,), "time_to": (20.0,), "quantile_over_time": (0.3,), "baseline": (2, 60.0)}
        args = (float(ts[-1]), 300.0, *extra.get(name, ()))
        want = fn(ts, dense, *args)
        assert np.array_equal(fn(ts, view, *args), want, equal_nan=True), name
        assert np.array_equal(fn(ts, time_major, *args), want, equal_nan=True), name
        assert np.array_equal(fn(ts, offsets, *args), want, equal_nan=True), name


def test_offsets_read_as_float64_values():
    off = np.array([[0.5, -1.0, np.nan], [0.25, 2.0, 3.0]], dtype=np.float32)  # time-major: 2 samples x 3 rows
    base = np.array([100.0, 1e9, -7.0])
    m = W.Offsets(off, base)
    values = np.array([[100.5, 100.25], [1e9 - 1.0, 1e9 + 2.0], [np.nan, -4.0]])
    assert m.shape == (3, 2) and m.ndim == 2 and len(m) == 3
    assert np.array_equal(np.asarray(m), values, equal_nan=True)
    assert np.asarray(m).dtype == np.float64
    assert np.array_equal(m[:, 1], values[:, 1])  # a column
    assert np.array_equal(m[np.array([2, 0]), 0], values[[2, 0], 0], equal_nan=True)  # rows of a column
    assert np.array_equal(m[1], values[1])  # a row
    sub = m[1:, :1]  # rows and a column slice: still offsets, no copy
    assert isinstance(sub, W.Offsets) and np.shares_memory(sub.off, off)
    assert np.array_equal(np.asarray(sub), values[1:, :1], equal_nan=True)
    assert np.array_equal(m.isnan(), np.isnan(values))
    assert m.view(np.uint64).shape == (3, 2)  # what a staleness check reads


@pytest.mark.parametrize("name", sorted(W.KERNELS))
def test_degenerate_offsets_give_nan_of_the_right_shape(name):
    extra = [2, 60.0] if name == "baseline" else [0.5] * len(W.EXTRA_ARGS[name])
    empty = W.Offsets(np.empty((0, 3), np.float32), np.zeros(3))
    assert np.isnan(W.KERNELS[name](np.empty(0), empty, 100.0, 60.0, *extra)).shape == (3,)
    none = W.Offsets(np.empty((3, 0), np.float32), np.zeros(0))
    assert W.KERNELS[name](minutes(3), none, 100.0, 60.0, *extra).shape == (0,)


def test_mad_by_binary_search_equals_sorting_the_deviations():
    rng = np.random.default_rng(11)
    for k in (1, 2, 3, 4, 5, 8, 31, 64, 241):
        s = rng.integers(-20, 20, (400, k)).astype(np.float64) / 4  # many ties
        s[rng.random(s.shape) < 0.3] = np.nan
        s.sort(axis=1)
        n = np.count_nonzero(~np.isnan(s), axis=1).astype(np.float64)
        med = W._sorted_quantile(s, n, 0.5)
        dev = np.sort(np.abs(s - med[:, None]), axis=1)
        want = W._sorted_quantile(dev, n, 0.5)
        got = W._sorted_mad(s, n, med)
        ok = n >= 1
        assert np.array_equal(got[ok], want[ok]), k
        assert np.array_equal(W._sorted_count(s), n)


def test_row_blocks_do_not_change_results(monkeypatch):
    rng = np.random.default_rng(3)
    ts = 15.0 * np.arange(40)
    vals = np.cumsum(rng.random((300, 40)), axis=1)
    vals[rng.random(vals.shape) < 0.1] = np.nan
    vals[::7] = np.cumsum(rng.random((43, 40)), axis=1)  # some dense rows, so blocks differ in kind
    whole = {name: _call(name, ts, vals, float(ts[-1]), 300.0) for name in W.KERNELS}
    monkeypatch.setattr(W, "CHUNK_ELEMENTS", 1)  # 64-row blocks
    for name in W.KERNELS:
        blocks = _call(name, ts, vals, float(ts[-1]), 300.0)
        np.testing.assert_allclose(blocks, whole[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_large_history_is_fast_enough():
    rng = np.random.default_rng(5)
    ts = 1.7e9 + 15.0 * np.arange(240)
    vals = np.cumsum(rng.random((20_000, 240)), axis=1)
    with cpu_bound(20.0):
        for name in W.KERNELS:
            _call(name, ts, vals, float(ts[-1]), 300.0)


# ------------------------------------------------------------------------------ slow per-row references


def _call(name: str, ts, vals, end, window, extra=None):
    defaults = {"predict_linear": (600.0,), "time_to": (50.0,), "quantile_over_time": (0.9,), "baseline": (2, 120.0)}
    return W.KERNELS[name](ts, vals, end, window, *(extra if extra is not None else defaults.get(name, ())))


def samples(ts, row, lo, hi):
    return [(float(t), float(v)) for t, v in zip(ts, row, strict=True) if lo < t <= hi and not math.isnan(v)]


def ref_extrapolated(s, end, window, counter, per_second):
    if len(s) < 2:
        return NAN
    result = s[-1][1] - s[0][1]
    if counter:
        for (_, a), (_, b) in itertools.pairwise(s):
            if b < a:
                result += a
    first_t, last_t = s[0][0], s[-1][0]
    sampled = last_t - first_t
    avg = sampled / (len(s) - 1)
    to_start, to_end = first_t - (end - window), end - last_t
    if to_start >= avg * 1.1:
        to_start = avg / 2
    if counter and result > 0 and s[0][1] >= 0:
        to_start = min(to_start, sampled * (s[0][1] / result))
    if to_end >= avg * 1.1:
        to_end = avg / 2
    factor = (sampled + to_start + to_end) / sampled
    return result * factor / window if per_second else result * factor


def ref_line(s, end):
    """Exact least-squares line in x = t - end: (slope, mean x, mean y) as Fractions."""
    xs = [Fraction(t) - Fraction(end) for t, _ in s]
    ys = [Fraction(v) for _, v in s]
    xm, ym = sum(xs) / len(s), sum(ys) / len(s)
    sxx = sum((x - xm) ** 2 for x in xs)
    sxy = sum((x - xm) * (y - ym) for x, y in zip(xs, ys, strict=True))
    return sxy / sxx, xm, ym


def ref_time_to(s, end, thr):
    if len(s) < 2:
        return NAN
    slope, xm, ym = ref_line(s, end)
    latest = s[-1][1]
    if latest == thr:
        return 0.0
    if slope == 0:
        return NAN
    if (thr > latest) == (slope > 0):
        return max(float((Fraction(thr) - (ym - slope * xm)) / slope), 0.0)
    short = [v for _, v in s if (v < thr if slope > 0 else v > thr)]
    return 0.0 if short else NAN


def ref_quantile(values, q):
    if not values:
        return NAN
    if q < 0:
        return -INF
    if q > 1:
        return INF
    v = sorted(values)
    rank = q * (len(v) - 1)
    lo = max(0, math.floor(rank))
    hi = min(len(v) - 1, lo + 1)
    weight = rank - math.floor(rank)
    return v[lo] * (1 - weight) + v[hi] * weight


def ref_mean(values):
    return float(sum(Fraction(v) for v in values) / len(values)) if values else NAN


def ref_ewma(values):
    """Adjusted EWMA mean and population std (exact given the weights); None without values."""
    if not values:
        return None
    span = max(1.0, len(values) / 2)
    alpha = 2 / (span + 1)
    weights = [Fraction((1 - alpha) ** age) for age in range(len(values) - 1, -1, -1)]
    total = sum(weights)
    mean = sum(w * Fraction(v) for w, v in zip(weights, values, strict=True)) / total
    var = sum(w * (Fraction(v) - mean) ** 2 for w, v in zip(weights, values, strict=True)) / total
    return mean, math.sqrt(var)


def ref_ratio(num, den):
    if den == 0:
        return 0.0 if num == 0 else math.copysign(INF, num)
    return float(num / den)


def reference(name, ts, row, end, window, extra):
    s = samples(ts, row, end - window, end)
    v = [x for _, x in s]
    match name:
        case "instant" | "last_over_time":
            return v[-1] if v else NAN
        case "rate" | "increase" | "delta":
            return ref_extrapolated(s, end, window, name != "delta", name == "rate")
        case "deriv":
            return float(ref_line(s, end)[0]) if len(s) >= 2 else NAN
        case "predict_linear":
            if len(s) < 2:
                return NAN
            slope, xm, ym = ref_line(s, end)
            return float(ym + slope * (Fraction(extra[0]) - xm))
        case "time_to":
            return ref_time_to(s, end, extra[0])
        case "avg_over_time":
            return ref_mean(v)
        case "sum_over_time":
            return math.fsum(v) if v else NAN
        case "count_over_time":
            return float(len(v)) if v else NAN
        case "min_over_time":
            return min(v) if v else NAN
        case "max_over_time":
            return max(v) if v else NAN
        case "stddev_over_time":
            return statistics.pstdev(v) if v else NAN
        case "quantile_over_time":
            return ref_quantile(v, extra[0])
        case "changes":
            return float(sum(a != b for a, b in itertools.pairwise(v))) if v else NAN
        case "resets":
            return float(sum(b < a for a, b in itertools.pairwise(v))) if v else NAN
        case "nodata":
            before = [t for t, x in zip(ts, row, strict=True) if t <= end - window and not math.isnan(x)]
            return 1.0 if before and not v else NAN
        case "zscore":
            if len(v) < 3:
                return NAN
            med = ref_quantile(v, 0.5)
            mad = ref_quantile([abs(x - med) for x in v], 0.5)
            return ref_ratio(v[-1] - med, 1.4826 * mad)
        case "ewma":
            stats = ref_ewma(v)
            return float(stats[0]) if stats else NAN
        case "ewma_zscore":
            if len(v) < 3:
                return NAN
            mean, std = ref_ewma(v[:-1])
            return (
                ref_ratio(Fraction(v[-1]) - mean, std) if std == 0 else float((Fraction(v[-1]) - mean) / Fraction(std))
            )
        case "spike":
            prev = ref_mean([x for _, x in samples(ts, row, end - 2 * window, end - window)])
            return NAN if prev == 0 or math.isnan(prev) else ref_mean(v) / prev
        case "flatline":
            ok = len(s) >= 2 and s[-1][0] - s[0][0] >= window / 2 and min(v) == max(v)
            return 1.0 if ok else NAN
        case "baseline":
            seasons, width = extra
            means = []
            for k in range(1, seasons + 1):
                centre = end - k * window
                got = [x for _, x in samples(ts, row, centre - width / 2, centre + width / 2)]
                if got:
                    means.append(ref_mean(got))
            return ref_quantile(means, 0.5)
    raise AssertionError(name)


def tolerance(name, ts, row, end, window, expected, got, extra) -> bool:
    """Whether kernel output ``got`` matches the reference ``expected`` (rtol 1e-9, atol scaled to the data)."""
    if math.isnan(expected) or math.isnan(got):
        return math.isnan(expected) and math.isnan(got)
    if math.isinf(expected) or math.isinf(got):
        return expected == got
    scale = 1.0 + float(np.nanmax(np.abs(row), initial=0.0))
    rtol, atol = 1e-9, 1e-9 * scale
    if name == "predict_linear":
        atol *= 1.0 + abs(extra[0])
    if name == "time_to" and got != 0.0:  # seconds = distance / slope: rounding in the slope scales with 1/slope
        slope = abs(float(ref_line(samples(ts, row, end - window, end), end)[0]))
        rtol += 1e-10 * scale / slope
        atol += 1e-10 * scale / slope
    return abs(got - expected) <= rtol * abs(expected) + atol


# ------------------------------------------------------------------------------------------- strategies

QUARTERS = st.integers(-400, 400).map(lambda i: i / 4)  # exact in binary: ties and equal values happen
# Kernels compute deviations from each row's first sample in float64, so a value ~1e16 times smaller than another in
# the same row is lost; metrics do not mix such magnitudes, and the data here stays within six orders of magnitude.
FLOATS = st.one_of(st.just(0.0), st.floats(1e-3, 1e3), st.floats(-1e3, -1e-3))


@st.composite
def histories(draw, counters: bool = False):
    rows = draw(st.integers(1, 5))
    k = draw(st.integers(0, 24))
    steps = draw(st.lists(st.sampled_from([1.0, 7.5, 15.0, 15.0, 30.0, 60.0, 61.0]), min_size=k, max_size=k))
    ts = 1.7e9 + np.cumsum(steps) if k else np.empty(0)
    values = QUARTERS if draw(st.booleans()) else FLOATS
    vals = np.empty((rows, k))
    for r in range(rows):
        if counters:
            incs = draw(st.lists(st.integers(0, 50), min_size=k, max_size=k))
            row, total = [], 0.0
            for inc in incs:
                total = float(inc) if inc > 45 else total + inc  # occasional reset
                row.append(total)
        else:
            row = draw(st.lists(values, min_size=k, max_size=k))
        gaps = draw(st.lists(st.integers(0, 3), min_size=k, max_size=k))
        vals[r] = [NAN if g == 0 else x for g, x in zip(gaps, row, strict=True)]
    if k and draw(st.booleans()):
        end = float(draw(st.sampled_from(list(ts))))
    else:
        end = 1.7e9 + draw(st.integers(-100, 1600))
    window = float(draw(st.sampled_from([1, 15, 30, 59, 60, 61, 120, 300, 450, 900, 3600])))
    return ts, vals, end, window


def _extra(name, data, ts, vals):
    if name == "quantile_over_time":
        return (data.draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 0.99, 1.0, -0.5, 1.5])),)
    if name == "predict_linear":
        return (data.draw(st.sampled_from([0.0, 60.0, 3600.0, -300.0])),)
    if name == "time_to":
        present = vals[~np.isnan(vals)]
        choices = [0.0, 100.0, -50.0] + ([float(present[0]), float(present[-1])] if present.size else [])
        return (data.draw(st.sampled_from(choices)),)
    if name == "baseline":
        return (data.draw(st.integers(1, 4)), data.draw(st.sampled_from([15.0, 60.0, 200.0])))
    return ()


def _ill_conditioned(name, ts, row, end, window) -> bool:
    """time_to near a zero slope: the direction of travel is decided by rounding, so no exact answer exists."""
    if name != "time_to":
        return False
    s = samples(ts, row, end - window, end)
    if len(s) < 2:
        return False
    slope = float(ref_line(s, end)[0])
    scale = 1.0 + max(abs(v) for _, v in s)
    return abs(slope) < 1e-6 * scale


def stored(kind, vals, data):
    """``vals`` as a kernel may receive it, and the float64 values that form reads as.

    ``array``: as is (row-major); ``time_major``: the transposed view of a time-major array, like an exact
    history's; ``offsets``: float32 offsets from a base per row, like the history's. Quarter values get a
    base near the row's first value (optionally 1e5 further away, so offsets are large), exact in float32;
    other values get base 0 and read as their float32 rounding.
    """
    if kind == "array":
        return vals, vals
    tm = np.ascontiguousarray(vals.T)
    if kind == "time_major":
        return tm.T, vals
    rows = vals.shape[0]
    finite = vals[np.isfinite(vals)]
    base = np.zeros(rows)
    if np.array_equal(finite * 4, np.round(finite * 4)):
        far = data.draw(st.sampled_from([0.0, 1e5]))
        for r in range(rows):
            present = vals[r][~np.isnan(vals[r])]
            near = float(present[0]) if present.size else 0.0
            base[r] = near + data.draw(st.integers(-200, 200)) / 4 + far
    off = (tm - base).astype(np.float32)
    reads = off.astype(np.float64).T + base[:, None]
    if base.any():
        assert np.array_equal(reads, vals, equal_nan=True)  # exact by construction
    return W.Offsets(off, base), reads


PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(W.KERNELS))
@PROPERTY
@given(data=st.data())
def test_kernel_matches_slow_reference(name, data):
    counters = name in ("rate", "increase", "resets") and data.draw(st.booleans())
    ts, vals, end, window = data.draw(histories(counters=counters))
    source, vals = stored(data.draw(st.sampled_from(["array", "time_major", "offsets"])), vals, data)
    extra = _extra(name, data, ts, vals)
    wide = data.draw(st.booleans())  # also run the EWMA path meant for windows of many samples
    with patch.object(W, "_COLUMN_LOOP_MAX", 0 if wide else W._COLUMN_LOOP_MAX):
        got = _call(name, ts, source, end, window, extra)
    assert got.shape == (vals.shape[0],) and got.dtype == np.float64
    for r in range(vals.shape[0]):
        if _ill_conditioned(name, ts, vals[r], end, window):
            continue
        expected = reference(name, ts, vals[r], end, window, extra)
        assert tolerance(name, ts, vals[r], end, window, expected, float(got[r]), extra), (
            name,
            r,
            expected,
            float(got[r]),
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rows_are_independent(data):
    ts, vals, end, window = data.draw(histories())
    assume(vals.shape[0] >= 2)
    for name in W.KERNELS:
        extra = _extra(name, data, ts, vals)
        together = _call(name, ts, vals, end, window, extra)
        for r in range(vals.shape[0]):
            if _ill_conditioned(name, ts, vals[r], end, window):
                continue
            alone = float(_call(name, ts, vals[r : r + 1], end, window, extra)[0])
            assert tolerance(name, ts, vals[r], end, window, alone, float(together[r]), extra), (name, r)
