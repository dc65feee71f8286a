"""Numeric kernels of the rule language's window functions, vectorised over every series of one metric.

Every kernel takes the whole retained history of one metric — ``ts`` (k,) ascending unix seconds and
``vals`` (rows, k) with NaN for "no sample" — plus the evaluation time ``end`` (already shifted by any
``offset``) and a ``window`` in seconds, and returns a float64 array of shape (rows,) with NaN where the
result is undefined. A window holds the samples with ``end - window < t <= end`` (left-open, as in
Prometheus); it is cut out of the history with a binary search on ``ts`` and only that column slice
(a view) is touched. There is no Python loop over rows; NaN gaps may sit anywhere in any row. Rows are
processed in blocks of about ``CHUNK_ELEMENTS`` window cells, each copied once into a small contiguous
array: reductions over a row-strided view are several times slower, and the blocks bound the temporary
memory of long windows. Blocks without gaps take faster paths (sums as BLAS matrix-vector products).
Means, variances and regressions work on deviations from each row's first sample, which makes them exact
for constant rows (a flat series has slope 0 and standard deviation 0, not 1e-17) at the price of losing
values about 1e16 times smaller than that first sample in the same row. Kernels never emit numpy warnings.

Prometheus facts these kernels follow (read from ``promql/functions.go`` and ``promql/quantile.go``,
restated here in our own words):

* ``rate``/``increase``/``delta`` need at least two samples in the window. The raw result is the last
  value minus the first. For counters (``rate``, ``increase``) every decrease between consecutive samples
  is treated as a reset, and the value just before the drop is added back. The result is then
  extrapolated: the average spacing is (last time - first time) / (samples - 1); if the gap between the
  window start and the first sample is below 1.1 x that spacing the result is stretched to the window
  start, otherwise only by half a spacing; the same rule applies independently at the window end. For
  counters, if the result is positive and the first value is not negative, the stretch towards the
  start is capped at the point where the line through the samples would hit zero
  (sampled span x first value / result), so a counter is never extrapolated below zero. The scaling
  factor is (span + stretch at start + stretch at end) / span; ``rate`` further divides by the window.
* ``deriv`` and ``predict_linear`` are an ordinary least-squares line through the window's samples
  (times in seconds); a window whose values are all equal gives slope 0 and that value (NaN if it is
  infinite). ``predict_linear`` in Prometheus measures time relative to the evaluation timestamp and
  returns slope x horizon + intercept there. Prometheus' evaluation timestamp does not move with
  ``offset``; ours is ``end``, which does (the caller adds the offset to ``horizon`` for exact parity).
* ``stddev_over_time`` is the population standard deviation; one sample gives 0.
* ``quantile_over_time`` sorts the values, takes rank = q x (n - 1) and interpolates linearly between
  the values at floor(rank) and the next index (clamped to the last); q < 0 gives -Inf, q > 1 gives +Inf,
  q NaN gives NaN.
* ``changes`` counts consecutive sample pairs whose values differ, ``resets`` pairs where the value
  decreased; a single sample gives 0, no sample gives no result.
* Over-time aggregations of an empty window give no result (NaN here), including ``count_over_time``.

Our own (non-Prometheus) kernels and their documented choices:

* ``zscore``: robust z-score of the window's latest sample against the window's median and MAD
  (median of absolute deviations from the median): (x - median) / (1.4826 x MAD). Needs at least 3
  samples. When MAD is 0 the result is 0 if x equals the median, else +Inf or -Inf by the sign of the
  deviation (a flat series that moves is infinitely surprising).
* ``ewma``: exponentially weighted mean of the window's samples with span s = max(1, samples / 2), i.e.
  alpha = 2 / (s + 1); sample weights are (1 - alpha) ** age where age counts newer samples in the window
  (the latest has age 0), normalised to sum 1 (the "adjusted" EWMA). Because alpha scales with the sample
  count, the oldest sample always weighs about e**-4 of the newest, whatever the scrape interval.
* ``ewma_zscore``: the latest sample against the EWMA mean and the weighted (biased) standard deviation
  of the window's other samples, with s computed from those other samples; needs at least 3 samples in
  the window. A standard deviation of 0 is handled like a MAD of 0 in ``zscore``.
* ``spike``: mean over (end - window, end] divided by the mean over (end - 2 window, end - window];
  NaN when either mean is missing or the previous mean is 0.
* ``flatline``: 1.0 for rows with at least 2 samples in the window, spanning at least half of it, whose
  values are all equal; else NaN.
* ``time_to``: with the least-squares line of ``deriv``, the seconds from ``end`` until the line reaches
  the threshold, when the threshold lies ahead of the latest sample in the direction of travel (0 if
  the line already passed it). 0 when the latest sample equals the threshold, or when it lies beyond
  the threshold in the direction of travel and some sample of the window was still short of it (the
  series crossed it inside the window). NaN when the slope is 0 or the series moves away from a
  threshold it has not crossed in the window (e.g. free disk space that grows, with threshold 0).
* ``baseline``: for k = 1..seasons the mean of the samples in (end - k period - width / 2,
  end - k period + width / 2]; the median of the seasons that have samples, NaN if none.
* ``nodata``: 1.0 for rows with no sample in the window but at least one at or before the window
  start (rows that appear only after ``end`` do not count), else NaN.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "EXTRA_ARGS",
    "KERNELS",
    "avg_over_time",
    "baseline",
    "changes",
    "count_over_time",
    "delta",
    "deriv",
    "ewma",
    "ewma_zscore",
    "flatline",
    "increase",
    "instant",
    "last_over_time",
    "max_over_time",
    "min_over_time",
    "nodata",
    "predict_linear",
    "quantile_over_time",
    "rate",
    "resets",
    "spike",
    "stddev_over_time",
    "sum_over_time",
    "time_to",
    "zscore",
]

MAD_SCALE = 1.4826  # makes the MAD of normally distributed data an estimate of its standard deviation
CHUNK_ELEMENTS = 1 << 16  # rows are processed in blocks of about this many window cells (cache-sized)
_COLUMN_LOOP_MAX = 32  # up to this many columns, per-column vector ops beat numpy's short-row reductions


def _quiet(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Run a kernel with numpy floating-point warnings off: NaN/Inf results are the documented output."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper


class _Win:
    """One block of rows of one window: a contiguous copy of the samples plus presence bookkeeping.

    ``absent`` (NaN cells) and ``present_f`` (1.0/0.0) exist only when some row has a gap; a *dense* block
    (every cell present) takes the fast paths.
    """

    __slots__ = (
        "_fi",
        "_li",
        "absent",
        "dense",
        "hist",
        "k",
        "lo",
        "n",
        "ones",
        "present_f",
        "rows",
        "rowsum",
        "t",
        "v",
    )

    def __init__(self, t: np.ndarray, hist: np.ndarray, lo: int):
        self.t = t
        self.lo = lo
        self.hist = hist
        self.v = np.ascontiguousarray(hist[:, lo : lo + t.shape[0]])
        self.rows, self.k = self.v.shape
        self.ones = np.ones(self.k)
        self.rowsum = self.v @ self.ones  # NaN exactly for rows with a gap (or with +Inf and -Inf)
        self.dense = self.k > 0 and not bool(np.isnan(self.rowsum).any())
        self._fi: np.ndarray | None = None
        self._li: np.ndarray | None = None
        if self.dense:
            self.absent = None
            self.present_f = None
            self.n = np.full(self.rows, float(self.k))
        else:
            self.absent = np.isnan(self.v)
            self.present_f = (~self.absent).astype(np.float64)
            self.n = self.present_f @ self.ones

    def nan(self) -> np.ndarray:
        return np.full(self.rows, np.nan)

    def need(self, out: np.ndarray, count: int) -> np.ndarray:
        """``out`` with NaN for rows holding fewer than ``count`` samples."""
        if not self.dense or self.k < count:
            out[self.n < count] = np.nan
        return out

    def first_idx(self) -> np.ndarray:
        if self._fi is None:
            if self.dense:
                self._fi = np.zeros(self.rows, np.intp)
            else:
                self._fi = (~self.absent).argmax(axis=1)
        return self._fi

    def last_idx(self) -> np.ndarray:
        if self._li is None:
            if self.dense:
                self._li = np.full(self.rows, self.k - 1, np.intp)
            else:
                self._li = self.k - 1 - (~self.absent[:, ::-1]).argmax(axis=1)
        return self._li

    def first(self) -> np.ndarray:
        """Each row's oldest value in the window (NaN for empty rows)."""
        if self.dense:
            return self.v[:, 0]
        return self.v[np.arange(self.rows), self.first_idx()]

    def last(self) -> np.ndarray:
        """Each row's latest value in the window (NaN for empty rows)."""
        if self.dense:
            return self.v[:, -1]
        return self.v[np.arange(self.rows), self.last_idx()]

    def ref(self) -> np.ndarray:
        """A per-row shift (the first value when finite, else 0): keeps sums of constant rows exact."""
        f = self.first()
        return np.where(np.isfinite(f), f, 0.0)

    def shifted(self, ref: np.ndarray) -> np.ndarray:
        """``v - ref`` per row, 0 where there is no sample."""
        d = self.v - ref[:, None]
        if not self.dense:
            np.copyto(d, 0.0, where=self.absent)
        return d

    def filled(self, fill: float) -> np.ndarray:
        """The values with ``fill`` where there is no sample."""
        return self.v if self.dense else np.where(self.absent, fill, self.v)

    def prev(self) -> np.ndarray:
        """(rows, k-1): for column j+1, the latest value present at or before column j (NaN if none)."""
        if self.dense:
            return self.v[:, :-1]
        if self.k <= _COLUMN_LOOP_MAX:
            f = self.v[:, :-1].copy()
            for j in range(1, self.k - 1):
                np.copyto(f[:, j], f[:, j - 1], where=self.absent[:, j])
            return f
        idx = np.where(self.absent[:, :-1], 0, np.arange(self.k - 1, dtype=np.intp))
        np.maximum.accumulate(idx, axis=1, out=idx)
        return np.take_along_axis(self.v, idx, axis=1)


def _rowmin(a: np.ndarray) -> np.ndarray:
    if 1 < a.shape[1] <= _COLUMN_LOOP_MAX:
        out = a[:, 0].copy()
        for j in range(1, a.shape[1]):
            np.minimum(out, a[:, j], out=out)
        return out
    return a.min(axis=1)


def _rowmax(a: np.ndarray) -> np.ndarray:
    if 1 < a.shape[1] <= _COLUMN_LOOP_MAX:
        out = a[:, 0].copy()
        for j in range(1, a.shape[1]):
            np.maximum(out, a[:, j], out=out)
        return out
    return a.max(axis=1)


def _columns(ts: np.ndarray, vals: np.ndarray, lo_t: float, hi_t: float) -> tuple[int, int]:
    """Column range [lo, hi) of the samples with ``lo_t < t <= hi_t``; ValueError if the shapes disagree."""
    if vals.ndim != 2 or ts.ndim != 1 or vals.shape[1] != ts.shape[0]:
        raise ValueError(f"history shapes do not match: ts {ts.shape}, vals {vals.shape}")
    lo = int(np.searchsorted(ts, lo_t, side="right"))
    return lo, max(lo, int(np.searchsorted(ts, hi_t, side="right")))


def _run(
    ts: np.ndarray, vals: np.ndarray, lo_t: float, hi_t: float, fn: Callable[..., np.ndarray], *args: Any
) -> np.ndarray:
    """Cut the window ``lo_t < t <= hi_t`` out of the history and apply ``fn(_Win, *args)`` block by block."""
    lo, hi = _columns(ts, vals, lo_t, hi_t)
    rows = vals.shape[0]
    out = np.empty(rows)
    if rows == 0:
        return out
    t = ts[lo:hi]
    step = max(64, CHUNK_ELEMENTS // max(hi - lo, 1))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        out[r0:r1] = fn(_Win(t, vals[r0:r1], lo), *args)
    return out


def _sorted_quantile(s: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    """Prometheus' interpolated quantile of each row of ``s`` (sorted, NaN last, ``n`` valid entries)."""
    rank = q * (n - 1.0)
    fl = np.floor(rank)
    lo = np.maximum(0.0, fl)
    hi = np.minimum(n - 1.0, lo + 1.0)
    weight = rank - fl
    last_col = s.shape[1] - 1
    lo_i = np.clip(lo, 0, last_col).astype(np.intp)[:, None]
    hi_i = np.clip(hi, 0, last_col).astype(np.intp)[:, None]
    a = np.take_along_axis(s, lo_i, axis=1)[:, 0]
    b = np.take_along_axis(s, hi_i, axis=1)[:, 0]
    out = a * (1.0 - weight) + b * weight
    out[n == 0] = np.nan
    return out


def _ratio_or_inf(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and where den == 0: 0 if num == 0 else ±Inf by the sign of num."""
    out = num / den
    zero = den == 0
    if zero.any():
        out[zero] = np.where(num[zero] == 0, 0.0, np.copysign(np.inf, num[zero]))
    return out


# ------------------------------------------------------------------------------------------ instant values


def _latest(ts: np.ndarray, vals: np.ndarray, lo_t: float, hi_t: float) -> np.ndarray:
    """Latest sample per row in ``lo_t < t <= hi_t``: newest column first, older ones only for rows still empty."""
    lo, hi = _columns(ts, vals, lo_t, hi_t)
    out = np.full(vals.shape[0], np.nan)
    if hi == lo or vals.shape[0] == 0:
        return out
    out[:] = vals[:, hi - 1]
    todo = np.flatnonzero(np.isnan(out))
    for j in range(hi - 2, lo - 1, -1):
        if not todo.size:
            break
        got = vals[todo, j]
        found = ~np.isnan(got)
        out[todo[found]] = got[found]
        todo = todo[~found]
    return out


@_quiet
def last_over_time(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Each row's latest sample in the window; NaN for rows without one."""
    return _latest(ts, vals, end - window, end)


@_quiet
def instant(ts: np.ndarray, vals: np.ndarray, end: float, lookback: float) -> np.ndarray:
    """Each row's latest sample with ``end - lookback < t <= end``; NaN for rows without one."""
    return _latest(ts, vals, end - lookback, end)


# ---------------------------------------------------------------------------------- rate / increase / delta


def _extrapolated(w: _Win, end: float, window: float, counter: bool, per_second: bool) -> np.ndarray:
    if w.k < 2:
        return w.nan()
    fv, lv = w.first(), w.last()
    ft, lt = w.t[w.first_idx()], w.t[w.last_idx()]
    result = lv - fv
    if counter:
        prev = w.prev()
        drop = w.v[:, 1:] < prev  # False wherever either side is missing
        if drop.any():
            result = result + np.where(drop, prev, 0.0) @ w.ones[1:]
    sampled = lt - ft
    avg = sampled / (w.n - 1.0)
    threshold = avg * 1.1
    to_start = ft - (end - window)
    to_end = end - lt
    to_start = np.where(to_start >= threshold, avg / 2.0, to_start)
    if counter:
        to_zero = np.where((result > 0) & (fv >= 0), sampled * (fv / result), to_start)
        to_start = np.where(to_zero < to_start, to_zero, to_start)
    to_end = np.where(to_end >= threshold, avg / 2.0, to_end)
    factor = (sampled + to_start + to_end) / sampled
    if per_second:
        factor /= window
    return w.need(result * factor, 2)


@_quiet
def rate(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Per-second counter increase, reset-corrected and extrapolated like Prometheus; NaN below 2 samples."""
    return _run(ts, vals, end - window, end, _extrapolated, end, window, True, True)


@_quiet
def increase(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Counter increase over the window, reset-corrected and extrapolated like Prometheus; NaN below 2 samples."""
    return _run(ts, vals, end - window, end, _extrapolated, end, window, True, False)


@_quiet
def delta(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Gauge change over the window, extrapolated like Prometheus (no reset handling); NaN below 2 samples."""
    return _run(ts, vals, end - window, end, _extrapolated, end, window, False, False)


# ------------------------------------------------------------------------------------------ least squares


def _regression(w: _Win, end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row least-squares line through (t - end, value): (slope, mean x, mean y); NaN below 2 samples."""
    x = w.t - end
    centre = float(x.mean())
    xc = x - centre  # centred for conditioning
    ref = w.ref()
    y = w.shifted(ref)  # 0 where absent, exactly 0 everywhere for a constant row
    n = w.n
    if w.dense:
        sx, sxx = float(xc.sum()), float(xc @ xc)
    else:
        sx, sxx = w.present_f @ xc, w.present_f @ (xc * xc)
    sy, sxy = y @ w.ones, y @ xc
    slope = (sxy - sx * sy / n) / (sxx - sx * sx / n)
    return slope, centre + sx / n, ref + sy / n


def _deriv(w: _Win, end: float) -> np.ndarray:
    if w.k < 2:
        return w.nan()
    return w.need(_regression(w, end)[0], 2)


def _predict(w: _Win, end: float, horizon: float) -> np.ndarray:
    if w.k < 2:
        return w.nan()
    slope, xm, ym = _regression(w, end)
    return w.need(ym + slope * (horizon - xm), 2)


def _time_to(w: _Win, end: float, thr: float) -> np.ndarray:
    if w.k < 2:
        return w.nan()
    slope, xm, ym = _regression(w, end)
    latest = w.last()
    ahead = thr - latest
    up, down = slope > 0, slope < 0
    out = np.full(w.rows, np.nan)
    toward = ((ahead > 0) & up) | ((ahead < 0) & down)
    at_end = ym[toward] - slope[toward] * xm[toward]
    out[toward] = np.maximum((thr - at_end) / slope[toward], 0.0)
    # beyond the threshold in the direction of travel: 0 if some window sample was still short of it
    rising_past = np.flatnonzero(up & (ahead < 0))
    if rising_past.size:
        low = _rowmin(w.filled(np.inf)[rising_past])
        out[rising_past[low < thr]] = 0.0
    falling_past = np.flatnonzero(down & (ahead > 0))
    if falling_past.size:
        high = _rowmax(w.filled(-np.inf)[falling_past])
        out[falling_past[high > thr]] = 0.0
    out[ahead == 0] = 0.0
    return w.need(out, 2)


@_quiet
def deriv(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Least-squares slope per second of each row's samples in the window; NaN below 2 samples."""
    return _run(ts, vals, end - window, end, _deriv, end)


@_quiet
def predict_linear(ts: np.ndarray, vals: np.ndarray, end: float, window: float, horizon: float) -> np.ndarray:
    """Value of the window's least-squares line at ``end + horizon``; NaN below 2 samples."""
    return _run(ts, vals, end - window, end, _predict, end, float(horizon))


@_quiet
def time_to(ts: np.ndarray, vals: np.ndarray, end: float, window: float, threshold: float) -> np.ndarray:
    """Seconds until the window's least-squares line reaches ``threshold`` (rules in the module doc); NaN if never."""
    return _run(ts, vals, end - window, end, _time_to, end, float(threshold))


# ------------------------------------------------------------------------------------ aggregations over time


def _avg(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    ref = w.ref()
    return w.need(ref + (w.shifted(ref) @ w.ones) / w.n, 1)


def _sum(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    return w.need(w.rowsum if w.dense else w.filled(0.0) @ w.ones, 1)


def _count(w: _Win) -> np.ndarray:
    return w.need(w.n.copy(), 1)


def _min(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    return w.need(_rowmin(w.filled(np.inf)), 1)


def _max(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    return w.need(_rowmax(w.filled(-np.inf)), 1)


def _stddev(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    y = w.shifted(w.ref())  # deviations from the first sample: no cancellation beyond the data's own range
    sy = y @ w.ones
    syy = np.einsum("ij,ij->i", y, y)
    var = np.maximum((syy - sy * sy / w.n) / w.n, 0.0)
    return w.need(np.sqrt(var), 1)


def _quantile(w: _Win, q: float) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    if math.isnan(q) or q < 0 or q > 1:
        return w.need(np.full(w.rows, math.nan if math.isnan(q) else math.copysign(math.inf, q)), 1)
    return _sorted_quantile(np.sort(w.v, axis=1), w.n, q)


def _changes(w: _Win, kind: str) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    if w.k == 1:
        return w.need(np.zeros(w.rows), 1)
    prev = w.prev()
    if kind == "resets":
        hit = w.v[:, 1:] < prev  # False wherever either side is missing
    else:
        hit = w.v[:, 1:] != prev
        if not w.dense:
            hit &= ~(w.absent[:, 1:] | np.isnan(prev))
    return w.need(np.count_nonzero(hit, axis=1).astype(np.float64), 1)


@_quiet
def avg_over_time(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Mean of each row's samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _avg)


@_quiet
def sum_over_time(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Sum of each row's samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _sum)


@_quiet
def count_over_time(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Number of each row's samples in the window; NaN (no result) for rows without samples."""
    return _run(ts, vals, end - window, end, _count)


@_quiet
def min_over_time(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Smallest of each row's samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _min)


@_quiet
def max_over_time(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Largest of each row's samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _max)


@_quiet
def stddev_over_time(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Population standard deviation of each row's samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _stddev)


@_quiet
def quantile_over_time(ts: np.ndarray, vals: np.ndarray, end: float, window: float, q: float) -> np.ndarray:
    """Prometheus' interpolated q-quantile of each row's window (±Inf outside 0..1); NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _quantile, float(q))


@_quiet
def changes(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Number of times consecutive samples in the window differ; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _changes, "changes")


@_quiet
def resets(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Number of decreases between consecutive samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _changes, "resets")


def _nodata(w: _Win) -> np.ndarray:
    out = w.nan()
    if w.lo == 0:
        return out
    silent = np.flatnonzero(w.n == 0)
    if silent.size:
        seen = (~np.isnan(w.hist[silent, : w.lo])).any(axis=1)
        out[silent[seen]] = 1.0
    return out


@_quiet
def nodata(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """1.0 for rows with no sample in the window but one at or before its start; NaN otherwise."""
    return _run(ts, vals, end - window, end, _nodata)


# --------------------------------------------------------------------------------------------- anomalies


def _zscore(w: _Win) -> np.ndarray:
    if w.k < 3:
        return w.nan()
    med = _sorted_quantile(np.sort(w.v, axis=1), w.n, 0.5)
    dev = np.abs(w.v - med[:, None])  # absent cells stay NaN and sort last
    mad = _sorted_quantile(np.sort(dev, axis=1), w.n, 0.5)
    return w.need(_ratio_or_inf(w.last() - med, MAD_SCALE * mad), 3)


def _decay(used: np.ndarray | float) -> np.ndarray | float:
    """1 - alpha for an EWMA over ``used`` samples: span = max(1, used / 2), alpha = 2 / (span + 1)."""
    span = np.maximum(1.0, np.asarray(used, dtype=np.float64) / 2.0)
    return (span - 1.0) / (span + 1.0)


def _ewma_stats(w: _Win, skip_latest: bool) -> tuple[np.ndarray, np.ndarray]:
    """(weighted mean, weighted population std) per row; ``skip_latest`` leaves each row's newest sample out."""
    k, drop = w.k, int(skip_latest)
    ref = w.ref()
    y = w.shifted(ref)
    if w.dense:
        ages = np.arange(k - 1, -1, -1, dtype=np.float64) - drop  # the newest column has age -drop
        wv = np.where(ages >= 0, float(_decay(k - drop)) ** np.maximum(ages, 0.0), 0.0)
        total = float(wv.sum())
        m = (y @ wv) / total
        var = ((y * y) @ wv) / total - m * m
        return ref + m, np.sqrt(np.maximum(var, 0.0))
    used_f = w.present_f
    if skip_latest:
        used_f = used_f.copy()
        used_f[np.arange(w.rows), w.last_idx()] = 0.0
    d = _decay(np.maximum(w.n - drop, 0.0))
    if k <= _COLUMN_LOOP_MAX:  # newest to oldest: a used sample takes the running weight, which then decays
        wt = np.empty_like(used_f)
        running = np.ones(w.rows)
        shrink = 1.0 - d
        for j in range(k - 1, -1, -1):
            col = used_f[:, j]
            np.multiply(running, col, out=wt[:, j])
            running *= 1.0 - col * shrink
    else:
        newer = np.cumsum(used_f[:, ::-1], axis=1)[:, ::-1]  # used samples at or after each column
        wt = d[:, None] ** np.maximum(newer - 1.0, 0.0) * used_f
    total = wt @ w.ones
    wy = wt * y
    m = (wy @ w.ones) / total
    var = np.einsum("ij,ij->i", wy, y) / total - m * m
    return ref + m, np.sqrt(np.maximum(var, 0.0))


def _ewma(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    return w.need(_ewma_stats(w, skip_latest=False)[0], 1)


def _ewma_zscore(w: _Win) -> np.ndarray:
    if w.k < 3:
        return w.nan()
    mean, std = _ewma_stats(w, skip_latest=True)
    return w.need(_ratio_or_inf(w.last() - mean, std), 3)


def _flatline(w: _Win, window: float) -> np.ndarray:
    if w.k < 2:
        return w.nan()
    span = w.t[w.last_idx()] - w.t[w.first_idx()]
    ref = w.first()
    same = w.v == ref[:, None]
    if not w.dense:
        same |= w.absent
    flat = same.all(axis=1) & (span >= window / 2.0) & (w.n >= 2)
    return np.where(flat, 1.0, np.nan)


@_quiet
def zscore(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Robust z-score (median/MAD) of each row's latest sample against its window; NaN below 3 samples."""
    return _run(ts, vals, end - window, end, _zscore)


@_quiet
def ewma(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Exponentially weighted mean of each row's window (span = samples / 2); NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _ewma)


@_quiet
def ewma_zscore(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """(latest - EWMA mean) / EWMA std of the window's earlier samples; NaN below 3 samples in the window."""
    return _run(ts, vals, end - window, end, _ewma_zscore)


@_quiet
def spike(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """Mean of the window over the mean of the window before it; NaN if either is missing or the earlier is 0."""
    cur = _run(ts, vals, end - window, end, _avg)
    prev = _run(ts, vals, end - 2 * window, end - window, _avg)
    out = cur / prev
    out[prev == 0] = np.nan
    return out


@_quiet
def flatline(ts: np.ndarray, vals: np.ndarray, end: float, window: float) -> np.ndarray:
    """1.0 for rows whose ≥ 2 window samples span at least half the window and are all equal; else NaN."""
    return _run(ts, vals, end - window, end, _flatline, float(window))


@_quiet
def baseline(ts: np.ndarray, vals: np.ndarray, end: float, period: float, seasons: int, width: float) -> np.ndarray:
    """Median over k = 1..seasons of the mean within width/2 of ``end - k*period``; NaN where no season has samples."""
    seasons = int(seasons)
    rows = vals.shape[0]
    if seasons < 1 or rows == 0:
        return np.full(rows, np.nan)
    means = np.empty((rows, seasons))
    for s in range(seasons):
        centre = end - (s + 1) * period
        means[:, s] = _run(ts, vals, centre - width / 2.0, centre + width / 2.0, _avg)
    present = np.count_nonzero(~np.isnan(means), axis=1).astype(np.float64)
    return _sorted_quantile(np.sort(means, axis=1), present, 0.5)


KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "instant": instant,
    "rate": rate,
    "increase": increase,
    "delta": delta,
    "deriv": deriv,
    "predict_linear": predict_linear,
    "time_to": time_to,
    "avg_over_time": avg_over_time,
    "min_over_time": min_over_time,
    "max_over_time": max_over_time,
    "sum_over_time": sum_over_time,
    "count_over_time": count_over_time,
    "last_over_time": last_over_time,
    "stddev_over_time": stddev_over_time,
    "quantile_over_time": quantile_over_time,
    "changes": changes,
    "resets": resets,
    "nodata": nodata,
    "zscore": zscore,
    "ewma_zscore": ewma_zscore,
    "ewma": ewma,
    "spike": spike,
    "flatline": flatline,
    "baseline": baseline,
}

# Extra positional arguments each kernel takes after (ts, vals, end, window); for ``instant`` the window is
# the lookback and for ``baseline`` it is the season period.
EXTRA_ARGS: dict[str, tuple[str, ...]] = {name: () for name in KERNELS}
EXTRA_ARGS.update(
    {
        "predict_linear": ("horizon",),
        "time_to": ("threshold",),
        "quantile_over_time": ("q",),
        "baseline": ("seasons", "width"),
    }
)
