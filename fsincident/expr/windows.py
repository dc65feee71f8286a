"""Numeric kernels of the rule language's window functions, vectorised over every series of one metric.

Every kernel takes the whole retained history of one metric — ``ts`` (k,) ascending unix seconds and
``vals`` (rows, k) with NaN for "no sample" — plus the evaluation time ``end`` (already shifted by any
``offset``) and a ``window`` in seconds, and returns a float64 array of shape (rows,) with NaN where the
result is undefined. ``vals`` is a float64 array of any memory layout, or an :class:`Offsets` (the
history's float32 offsets from a float64 base per row). A window holds the samples with
``end - window < t <= end`` (left-open, as in Prometheus); it is cut out of the history with a binary
search on ``ts`` and only that column slice is touched. There is no Python loop over rows; NaN gaps may
sit anywhere in any row. Kernels never emit numpy warnings.

How they compute. Rows are processed in blocks of about ``CHUNK_ELEMENTS`` window cells, each copied once
into a reusable *time-major* float64 buffer ``v[sample, series]``: per-series quantities are then vectors
over the block's series, and every step (sums, minima, shifts, comparisons of consecutive samples) is a
vector operation over all series at once, fast for short windows and long ones alike (numpy's reductions
along short rows are slow). The history is stored time-major too, so the copy reads contiguous memory.
Blocks without gaps take faster paths (sums as BLAS matrix-vector products). For an :class:`Offsets`
the block holds the offsets and the base is added to each result that is a value (a mean, a minimum, a
quantile, a prediction), not to differences, slopes or counts: no kernel materialises float64 values of
the whole window, and results are those of the exact values ``offset + base`` up to float64 rounding.
Means, variances and regressions work on deviations from each row's first sample, which makes them exact
for constant rows (a flat series has slope 0 and standard deviation 0, not 1e-17) at the price of losing
values about 1e16 times smaller than that first sample in the same row. Sort-based kernels (quantiles,
``zscore``) sort each row once (float32 when the values are float32 offsets, which orders them exactly as
their float64 values); ``zscore`` finds the median absolute deviation in the sorted row by a binary
search (the deviations form two sorted runs either side of the median), without a second sort.

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
    "Offsets",
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
CHUNK_ELEMENTS = 1 << 18  # rows are processed in blocks of about this many window cells (cache-sized)
_COLUMN_LOOP_MAX = 32  # up to this many samples, EWMA weights of gappy rows are built sample by sample


class Offsets:
    """A (rows, k) matrix of float64 values held time-major as float32 offsets from a float64 base per row.

    ``off`` is (k, rows): ``off[j, i]`` is sample j of row i, and its value is ``float64(off[j, i]) +
    base[i]`` (how the history stores values; see ``fsincident.expr.history``). Every kernel accepts it in
    place of a float64 array and never materialises the whole matrix. Indexing with rows and a column
    slice gives another ``Offsets`` (views, no copy); any other indexing, ``np.asarray`` and ``view`` give
    float64 values.
    """

    __slots__ = ("base", "off")
    ndim = 2
    dtype = np.dtype(np.float64)

    def __init__(self, off: np.ndarray, base: np.ndarray):
        self.off = off
        self.base = base

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.off.shape[1]), int(self.off.shape[0]))

    def __len__(self) -> int:
        return int(self.off.shape[1])

    def __getitem__(self, key: Any) -> Any:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        off = self.off[cols, rows]
        base = self.base[rows]
        if off.ndim == 2:
            return Offsets(off, base)
        return np.add(off, base, dtype=np.float64)

    def isnan(self) -> np.ndarray:
        """(rows, k) booleans: no sample."""
        return np.isnan(self.off).T

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.add(self.off, self.base, dtype=np.float64).T
        return out if dtype is None else out.astype(dtype, copy=False)

    def view(self, dtype: Any) -> np.ndarray:
        return np.asarray(self).view(dtype)


Matrix = np.ndarray | Offsets  # what kernels accept as ``vals``


def _isnan(vals: Any) -> np.ndarray:
    return vals.isnan() if isinstance(vals, Offsets) else np.isnan(vals)


def _slab(vals: Matrix, r0: int, r1: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Time-major view (hi - lo, r1 - r0) of rows ``r0:r1``, columns ``lo:hi``, and the base to add (or None)."""
    if isinstance(vals, Offsets):
        return vals.off[lo:hi, r0:r1], vals.base[r0:r1]
    return vals[r0:r1, lo:hi].T, None


def _quiet(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Run a kernel with numpy floating-point warnings off: NaN/Inf results are the documented output."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper


def _count0(b: np.ndarray) -> np.ndarray:
    """Number of True per column of a (k, rows) boolean array, as float64."""
    if b.shape[0] < 1 << 16:
        return b.view(np.uint8).sum(axis=0, dtype=np.uint16).astype(np.float64)
    return np.count_nonzero(b, axis=0).astype(np.float64)


class _Win:
    """One block of rows of one window, time-major: ``v[j, i]`` is sample j of the block's row i.

    ``v`` is a float64 copy of ``src`` (made on first use; sort-based kernels work on ``src`` directly) and
    ``base`` (None, or one float64 per row) what to add to it to get values. ``absent`` (NaN cells) exists
    only when some row has a gap; a *dense* block (every cell present) takes the fast paths.
    """

    __slots__ = (
        "_absent",
        "_buf",
        "_dense",
        "_fi",
        "_li",
        "_n",
        "_pf",
        "_v",
        "base",
        "hist",
        "k",
        "lo",
        "ones",
        "r0",
        "rows",
        "src",
        "t",
        "total",
    )

    def __init__(self, t: np.ndarray, src: np.ndarray, base: np.ndarray | None, hist: Any, r0: int, lo: int, buf: Any):
        self.t = t
        self.src = src
        self.base = base
        self.hist = hist  # the whole history (this block's rows start at r0)
        self.r0 = r0
        self.lo = lo
        self.k, self.rows = src.shape
        self.ones = np.ones(self.k)
        self._buf = buf
        self._v: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self._dense: bool | None = None
        self._absent: np.ndarray | None = None
        self._n: np.ndarray | None = None
        self._pf: np.ndarray | None = None
        self._fi: np.ndarray | None = None
        self._li: np.ndarray | None = None

    # -------------------------------------------------------------------------------- samples and gaps

    @property
    def v(self) -> np.ndarray:
        """The float64 copy of the block (in a buffer reused from block to block)."""
        if self._v is None:
            size = self.k * self.rows
            if self._buf is not None and self._buf[0] is not None and self._buf[0].size >= size:
                v = self._buf[0][:size].reshape(self.k, self.rows)
            else:
                v = np.empty((self.k, self.rows))
                if self._buf is not None:
                    self._buf[0] = v.reshape(-1)
            np.copyto(v, self.src)
            self._v = v
        return self._v

    @property
    def dense(self) -> bool:
        """No gap in any row (decided with one BLAS pass over ``v`` if it exists, else on ``src``)."""
        if self._dense is None:
            if self.k == 0:
                self._dense = False
            elif self._v is not None:
                self.total = self.ones @ self._v  # NaN exactly for rows with a gap (or with +Inf and -Inf)
                self._dense = not bool(np.isnan(self.total).any())
            else:  # the same test on the stored samples, without a float64 copy
                ones = self.ones.astype(np.float32) if self.src.dtype == np.float32 else self.ones
                self._dense = not bool(np.isnan(ones @ self.src).any())
        return self._dense

    def sums(self) -> np.ndarray:
        """Per-row sums of ``v`` (a dense block)."""
        return self.total if self.total is not None else self.ones @ self.v

    @property
    def absent(self) -> np.ndarray:
        """(k, rows) booleans, no sample (only asked for when the block is not dense)."""
        if self._absent is None:
            self._absent = np.isnan(self._v if self._v is not None else self.src)
        return self._absent

    @property
    def n(self) -> np.ndarray:
        """Samples per row (float64)."""
        if self._n is None:
            self._n = np.full(self.rows, float(self.k)) if self.dense else _count0(~self.absent)
        return self._n

    @property
    def present_f(self) -> np.ndarray:
        """(k, rows) 1.0 where there is a sample, else 0.0."""
        if self._pf is None:
            self._pf = (~self.absent).astype(np.float64)
        return self._pf

    def nan(self) -> np.ndarray:
        return np.full(self.rows, np.nan)

    def need(self, out: np.ndarray, count: int) -> np.ndarray:
        """``out`` with NaN for rows holding fewer than ``count`` samples."""
        if not self.dense or self.k < count:
            out[self.n < count] = np.nan
        return out

    def value(self, x: np.ndarray) -> np.ndarray:
        """Per-row quantities in the block's units (offsets) -> values."""
        return x if self.base is None else x + self.base

    def level(self, x: float) -> float | np.ndarray:
        """A value (e.g. a threshold) in the block's units, per row."""
        return x if self.base is None else x - self.base

    def first_idx(self) -> np.ndarray:
        if self._fi is None:
            self._fi = np.zeros(self.rows, np.intp) if self.dense else (~self.absent).argmax(axis=0)
        return self._fi

    def last_idx(self) -> np.ndarray:
        if self._li is None:
            if self.dense:
                self._li = np.full(self.rows, self.k - 1, np.intp)
            else:
                self._li = self.k - 1 - (~self.absent[::-1]).argmax(axis=0)
        return self._li

    def first(self) -> np.ndarray:
        """Each row's oldest sample in the window, in block units (NaN for empty rows)."""
        if self.dense:
            return self.src[0].astype(np.float64)
        return self.src[self.first_idx(), np.arange(self.rows)].astype(np.float64)

    def last(self) -> np.ndarray:
        """Each row's latest sample in the window, in block units (NaN for empty rows)."""
        if self.dense:
            return self.src[-1].astype(np.float64)
        return self.src[self.last_idx(), np.arange(self.rows)].astype(np.float64)

    def ref(self) -> np.ndarray:
        """A per-row shift (the first sample when finite, else 0): keeps sums of constant rows exact."""
        f = self.first()
        return np.where(np.isfinite(f), f, 0.0)

    def shifted(self, ref: np.ndarray, inplace: bool = False) -> np.ndarray:
        """``v - ref`` per row, 0 where there is no sample; ``inplace`` overwrites ``v`` (not to be used after)."""
        v = self.v
        dense = self.dense
        if inplace:
            np.subtract(v, ref, out=v)
            d = v
            self._v = None
        else:
            d = v - ref
        if not dense:
            np.copyto(d, 0.0, where=self.absent)
        return d

    def filled(self, fill: float) -> np.ndarray:
        """The samples with ``fill`` where there is none."""
        if self.dense:
            return self.v
        d = self.v.copy()
        np.copyto(d, fill, where=self.absent)
        return d

    def prev(self, a: np.ndarray) -> np.ndarray:
        """(k-1, rows) from ``a`` (``v`` or ``src``): for sample j+1, the latest sample present at or before j."""
        if self.dense:
            return a[:-1]
        f = a[:-1].copy()
        absent = self.absent
        for j in range(1, self.k - 1):  # a vector operation over the block's rows per sample
            np.copyto(f[j], f[j - 1], where=absent[j])
        return f

    def latest_sample(self) -> np.ndarray:
        """Like ``last`` but read from ``src`` (no float64 copy of the block)."""
        out = self.src[-1].astype(np.float64)
        todo = np.flatnonzero(np.isnan(out))
        if todo.size:
            sub = self.src[:, todo]
            idx = self.k - 1 - (~np.isnan(sub[::-1])).argmax(axis=0)
            out[todo] = sub[idx, np.arange(todo.size)]  # NaN for rows without samples
        return out

    def sorted_rows(self) -> np.ndarray:
        """(rows, k): each row's samples in ascending order, NaN last (float32 for float32 offsets)."""
        s = np.array(self.src.T, order="C", copy=True)
        s.sort(axis=1)
        return s


def _columns(ts: np.ndarray, vals: Matrix, lo_t: float, hi_t: float) -> tuple[int, int]:
    """Column range [lo, hi) of the samples with ``lo_t < t <= hi_t``; ValueError if the shapes disagree."""
    if vals.ndim != 2 or ts.ndim != 1 or vals.shape[1] != ts.shape[0]:
        raise ValueError(f"history shapes do not match: ts {ts.shape}, vals {vals.shape}")
    lo = int(np.searchsorted(ts, lo_t, side="right"))
    return lo, max(lo, int(np.searchsorted(ts, hi_t, side="right")))


def _run(
    ts: np.ndarray, vals: Matrix, lo_t: float, hi_t: float, fn: Callable[..., np.ndarray], *args: Any
) -> np.ndarray:
    """Cut the window ``lo_t < t <= hi_t`` out of the history and apply ``fn(_Win, *args)`` block by block."""
    lo, hi = _columns(ts, vals, lo_t, hi_t)
    rows = vals.shape[0]
    out = np.empty(rows)
    if rows == 0:
        return out
    t = ts[lo:hi]
    step = max(64, CHUNK_ELEMENTS // max(hi - lo, 1))
    buf: list[np.ndarray | None] = [None]  # the float64 block buffer, reused from block to block
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        src, base = _slab(vals, r0, r1, lo, hi)
        out[r0:r1] = fn(_Win(t, src, base, vals, r0, lo, buf), *args)
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
    a = np.take_along_axis(s, lo_i, axis=1)[:, 0].astype(np.float64)
    b = np.take_along_axis(s, hi_i, axis=1)[:, 0].astype(np.float64)
    out = a * (1.0 - weight) + b * weight
    out[n == 0] = np.nan
    return out


def _sorted_count(s: np.ndarray) -> np.ndarray:
    """Valid (non-NaN) entries per row of ``s`` (sorted, NaN last), as float64."""
    rows, k = s.shape
    n = np.full(rows, float(k))
    if k:
        short = np.flatnonzero(np.isnan(s[:, -1]))
        if short.size:
            n[short] = np.isnan(s[short]).argmax(axis=1)
    return n


def _sorted_mad(s: np.ndarray, n: np.ndarray, med: np.ndarray) -> np.ndarray:
    """Interpolated median of ``|x - med|`` over each row's ``n`` valid sorted values ``s`` (finite values).

    With m = floor((n - 1) / 2) (the median's lower index) the values at indices <= m give deviations
    that grow leftwards and the others deviations that grow rightwards: two sorted runs. The m-th smallest
    deviation (and the next one) is found by a binary search on how many of the m + 1 smallest come from
    the left run, for all rows at once (about log2(k) vector steps, no second sort). The results are the
    deviations themselves, so they equal those of sorting ``|x - med|``.
    """
    rows, k = s.shape
    flat = s.reshape(-1)
    rank = 0.5 * (n - 1.0)
    m = np.floor(rank)
    weight = rank - m
    want = m.astype(np.intp) + 1  # how many smallest deviations to take (the last one is the m-th)
    a = want  # left run: indices m, m-1, ..., 0 (deviation med - x)
    b = n.astype(np.intp) - want  # right run: indices m+1 .. n-1 (deviation x - med)
    left0 = np.arange(rows, dtype=np.intp) * k + want - 1  # flat index of the left run's first element
    right0 = left0 + 1
    lo = np.maximum(0, want - b)  # bounds on i, the number taken from the left run
    hi = np.minimum(want, a)
    rj = right0 + want - 1  # flat index of the right run's j-th smallest is rj - i (j = want - i)
    for _ in range(int((hi - lo).max(initial=0)).bit_length()):
        mid = (lo + hi) >> 1
        # take more from the left while the right run's j-th smallest exceeds the left run's (mid+1)-th
        more = flat[rj - mid] - med > med - flat[left0 - mid]
        more &= lo < hi
        lo = np.where(more, mid + 1, lo)
        hi = np.where(more, hi, mid)
    i = lo
    j = want - i
    last = flat.size - 1  # (indices of the runs' ends, clipped where a run is empty: those values are unused)
    kth = np.where(i > 0, med - flat[np.clip(left0 - i + 1, 0, last)], -np.inf)
    kth = np.maximum(kth, np.where(j > 0, flat[np.clip(right0 + j - 1, 0, last)] - med, -np.inf))
    nxt = np.minimum(
        np.where(i < a, med - flat[np.clip(left0 - i, 0, last)], np.inf),
        np.where(j < b, flat[np.clip(right0 + j, 0, last)] - med, np.inf),
    )
    nxt = np.where(want <= n - 1, nxt, kth)
    return kth * (1.0 - weight) + nxt * weight


def _ratio_or_inf(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and where den == 0: 0 if num == 0 else ±Inf by the sign of num."""
    out = num / den
    zero = den == 0
    if zero.any():
        out[zero] = np.where(num[zero] == 0, 0.0, np.copysign(np.inf, num[zero]))
    return out


def _at(x: float | np.ndarray, idx: np.ndarray) -> float | np.ndarray:
    return x[idx] if isinstance(x, np.ndarray) else x


def _reduce_rows(op: np.ufunc, a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``op.reduce`` over the samples of the rows ``idx`` of a time-major block (all rows if that is cheaper)."""
    if idx.size * 4 >= a.shape[1]:
        return op.reduce(a, axis=0)[idx].astype(np.float64)
    return op.reduce(a[:, idx], axis=0).astype(np.float64)


# ------------------------------------------------------------------------------------------ instant values


def _latest(ts: np.ndarray, vals: Matrix, lo_t: float, hi_t: float) -> np.ndarray:
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
def last_over_time(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Each row's latest sample in the window; NaN for rows without one."""
    return _latest(ts, vals, end - window, end)


@_quiet
def instant(ts: np.ndarray, vals: Matrix, end: float, lookback: float) -> np.ndarray:
    """Each row's latest sample with ``end - lookback < t <= end``; NaN for rows without one."""
    return _latest(ts, vals, end - lookback, end)


# ---------------------------------------------------------------------------------- rate / increase / delta


def _extrapolated(w: _Win, end: float, window: float, counter: bool, per_second: bool) -> np.ndarray:
    if w.k < 2:
        return w.nan()
    if counter:
        _ = w.v  # needed below: lets ``dense`` use it
    fv, lv = w.first(), w.last()
    ft, lt = w.t[w.first_idx()], w.t[w.last_idx()]
    result = lv - fv
    if counter:
        prev = w.prev(w.v)
        drop = w.v[1:] < prev  # False wherever either side is missing
        if drop.any():
            if w.dense and w.total is not None and bool(np.isfinite(w.total).all()):
                kept = prev * drop  # all finite: a product, much faster than np.where on a random mask
            else:
                kept = np.where(drop, prev, 0.0)
            result = result + w.ones[1:] @ kept
            if w.base is not None:  # each reset adds the value before it: offset + base
                result = result + _count0(drop) * w.base
        fv = w.value(fv)
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
def rate(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Per-second counter increase, reset-corrected and extrapolated like Prometheus; NaN below 2 samples."""
    return _run(ts, vals, end - window, end, _extrapolated, end, window, True, True)


@_quiet
def increase(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Counter increase over the window, reset-corrected and extrapolated like Prometheus; NaN below 2 samples."""
    return _run(ts, vals, end - window, end, _extrapolated, end, window, True, False)


@_quiet
def delta(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Gauge change over the window, extrapolated like Prometheus (no reset handling); NaN below 2 samples."""
    return _run(ts, vals, end - window, end, _extrapolated, end, window, False, False)


# ------------------------------------------------------------------------------------------ least squares


def _regression(w: _Win, end: float, keep: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row least-squares line through (t - end, sample): (slope, mean x, mean y in block units).

    ``keep``: leave ``w.v`` intact (else it is overwritten with the deviations).
    """
    x = w.t - end
    centre = float(x.mean())
    xc = x - centre  # centred for conditioning
    _ = w.v
    ref = w.ref()
    y = w.shifted(ref, inplace=not keep)  # 0 where absent, exactly 0 everywhere for a constant row
    n = w.n
    if w.dense:
        sx, sxx = float(xc.sum()), float(xc @ xc)
    else:
        pf = w.present_f
        sx, sxx = xc @ pf, (xc * xc) @ pf
    sy, sxy = np.stack([w.ones, xc]) @ y
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
    return w.need(w.value(ym + slope * (horizon - xm)), 2)


def _time_to(w: _Win, end: float, thr: float) -> np.ndarray:
    if w.k < 2:
        return w.nan()
    _ = w.v  # (before ``last``, so that ``dense`` uses it)
    latest = w.last()
    slope, xm, ym = _regression(w, end, keep=True)
    level = w.level(thr)  # the threshold in block units (per row for offsets)
    ahead = level - latest
    up, down = slope > 0, slope < 0
    out = np.full(w.rows, np.nan)
    toward = ((ahead > 0) & up) | ((ahead < 0) & down)
    at_end = ym[toward] - slope[toward] * xm[toward]
    out[toward] = np.maximum((_at(level, toward) - at_end) / slope[toward], 0.0)
    # beyond the threshold in the direction of travel: 0 if some window sample was still short of it
    rising_past = np.flatnonzero(up & (ahead < 0))
    if rising_past.size:
        low = _reduce_rows(np.fmin, w.v, rising_past)
        out[rising_past[low < _at(level, rising_past)]] = 0.0
    falling_past = np.flatnonzero(down & (ahead > 0))
    if falling_past.size:
        high = _reduce_rows(np.fmax, w.v, falling_past)
        out[falling_past[high > _at(level, falling_past)]] = 0.0
    out[ahead == 0] = 0.0
    return w.need(out, 2)


@_quiet
def deriv(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Least-squares slope per second of each row's samples in the window; NaN below 2 samples."""
    return _run(ts, vals, end - window, end, _deriv, end)


@_quiet
def predict_linear(ts: np.ndarray, vals: Matrix, end: float, window: float, horizon: float) -> np.ndarray:
    """Value of the window's least-squares line at ``end + horizon``; NaN below 2 samples."""
    return _run(ts, vals, end - window, end, _predict, end, float(horizon))


@_quiet
def time_to(ts: np.ndarray, vals: Matrix, end: float, window: float, threshold: float) -> np.ndarray:
    """Seconds until the window's least-squares line reaches ``threshold`` (rules in the module doc); NaN if never."""
    return _run(ts, vals, end - window, end, _time_to, end, float(threshold))


# ------------------------------------------------------------------------------------ aggregations over time


def _avg(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    _ = w.v
    ref = w.ref()
    return w.need(w.value(ref + (w.ones @ w.shifted(ref, inplace=True)) / w.n), 1)


def _sum(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    _ = w.v
    total = w.sums() if w.dense else w.ones @ w.filled(0.0)
    if w.base is not None:
        total = total + w.n * w.base
    return w.need(total, 1)


def _count(w: _Win) -> np.ndarray:
    return w.need(w.n.copy(), 1)


def _min(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    return w.value(np.fmin.reduce(w.src, axis=0).astype(np.float64))  # NaN only for rows without samples


def _max(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    return w.value(np.fmax.reduce(w.src, axis=0).astype(np.float64))


def _stddev(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    _ = w.v
    y = w.shifted(w.ref(), inplace=True)  # deviations from the first sample: no cancellation beyond the data's range
    sy = w.ones @ y
    syy = np.einsum("ji,ji->i", y, y)
    var = np.maximum((syy - sy * sy / w.n) / w.n, 0.0)
    return w.need(np.sqrt(var), 1)


def _quantile(w: _Win, q: float) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    s = w.sorted_rows()
    n = _sorted_count(s)
    if math.isnan(q) or q < 0 or q > 1:
        out = np.full(w.rows, math.nan if math.isnan(q) else math.copysign(math.inf, q))
        out[n == 0] = np.nan
        return out
    return w.value(_sorted_quantile(s, n, q))


def _changes(w: _Win, kind: str) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    if w.k == 1:
        return w.need(np.zeros(w.rows), 1)
    prev = w.prev(w.src)  # comparisons read the samples as they are stored (float32 offsets compare exactly)
    if kind == "resets":
        hit = w.src[1:] < prev  # False wherever either side is missing
    else:
        hit = w.src[1:] != prev
        if not w.dense:
            hit &= ~(w.absent[1:] | np.isnan(prev))
    return w.need(_count0(hit), 1)


@_quiet
def avg_over_time(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Mean of each row's samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _avg)


@_quiet
def sum_over_time(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Sum of each row's samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _sum)


@_quiet
def count_over_time(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Number of each row's samples in the window; NaN (no result) for rows without samples."""
    return _run(ts, vals, end - window, end, _count)


@_quiet
def min_over_time(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Smallest of each row's samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _min)


@_quiet
def max_over_time(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Largest of each row's samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _max)


@_quiet
def stddev_over_time(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Population standard deviation of each row's samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _stddev)


@_quiet
def quantile_over_time(ts: np.ndarray, vals: Matrix, end: float, window: float, q: float) -> np.ndarray:
    """Prometheus' interpolated q-quantile of each row's window (±Inf outside 0..1); NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _quantile, float(q))


@_quiet
def changes(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Number of times consecutive samples in the window differ; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _changes, "changes")


@_quiet
def resets(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Number of decreases between consecutive samples in the window; NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _changes, "resets")


def _nodata(w: _Win) -> np.ndarray:
    out = w.nan()
    if w.lo == 0:
        return out
    silent = np.flatnonzero(w.n == 0)
    if silent.size:
        seen = ~_isnan(w.hist[w.r0 + silent, : w.lo]).all(axis=1)
        out[silent[seen]] = 1.0
    return out


@_quiet
def nodata(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """1.0 for rows with no sample in the window but one at or before its start; NaN otherwise."""
    return _run(ts, vals, end - window, end, _nodata)


# --------------------------------------------------------------------------------------------- anomalies


def _zscore(w: _Win) -> np.ndarray:
    if w.k < 3:
        return w.nan()
    s = w.sorted_rows()
    n = _sorted_count(s)
    med = _sorted_quantile(s, n, 0.5)
    ok = n >= 3
    r = np.arange(w.rows)
    lowest = s[:, 0].astype(np.float64)
    highest = s[r, np.clip(n.astype(np.intp) - 1, 0, w.k - 1)].astype(np.float64)
    odd = np.flatnonzero(ok & ~(np.isfinite(lowest) & np.isfinite(highest)))
    mad = _sorted_mad(s, n, med)
    if odd.size:  # infinite samples: deviations from an infinite median are NaN, sort them as the reference does
        dev = np.abs(s[odd].astype(np.float64) - med[odd, None])
        dev.sort(axis=1)
        mad[odd] = _sorted_quantile(dev, n[odd], 0.5)
    out = _ratio_or_inf(w.latest_sample() - med, MAD_SCALE * mad)
    out[~ok] = np.nan
    return out


def _decay(used: np.ndarray | float) -> np.ndarray | float:
    """1 - alpha for an EWMA over ``used`` samples: span = max(1, used / 2), alpha = 2 / (span + 1)."""
    span = np.maximum(1.0, np.asarray(used, dtype=np.float64) / 2.0)
    return (span - 1.0) / (span + 1.0)


def _ewma_stats(w: _Win, skip_latest: bool) -> tuple[np.ndarray, np.ndarray]:
    """(weighted mean in block units, weighted population std) per row; ``skip_latest`` leaves out the newest."""
    k, drop = w.k, int(skip_latest)
    _ = w.v
    ref = w.ref()
    y = w.shifted(ref, inplace=True)
    if w.dense:
        ages = np.arange(k - 1, -1, -1, dtype=np.float64) - drop  # the newest sample has age -drop
        wv = np.where(ages >= 0, float(_decay(k - drop)) ** np.maximum(ages, 0.0), 0.0)
        total = float(wv.sum())
        m = (wv @ y) / total
        var = (wv @ np.multiply(y, y, out=y)) / total - m * m  # y is a scratch copy: square it in place
        return ref + m, np.sqrt(np.maximum(var, 0.0))
    used_f = w.present_f
    if skip_latest:
        used_f = used_f.copy()
        used_f[w.last_idx(), np.arange(w.rows)] = 0.0
    d = _decay(np.maximum(w.n - drop, 0.0))
    if k <= _COLUMN_LOOP_MAX:  # newest to oldest: a used sample takes the running weight, which then decays
        wt = np.empty_like(used_f)
        running = np.ones(w.rows)
        shrink = 1.0 - d
        for j in range(k - 1, -1, -1):
            col = used_f[j]
            np.multiply(running, col, out=wt[j])
            running *= 1.0 - col * shrink
    else:
        newer = np.cumsum(used_f[::-1], axis=0)[::-1]  # used samples at or after each sample
        wt = d ** np.maximum(newer - 1.0, 0.0) * used_f
    total = w.ones @ wt
    wy = wt * y
    m = (w.ones @ wy) / total
    var = np.einsum("ji,ji->i", wy, y) / total - m * m
    return ref + m, np.sqrt(np.maximum(var, 0.0))


def _ewma(w: _Win) -> np.ndarray:
    if w.k == 0:
        return w.nan()
    return w.need(w.value(_ewma_stats(w, skip_latest=False)[0]), 1)


def _ewma_zscore(w: _Win) -> np.ndarray:
    if w.k < 3:
        return w.nan()
    _ = w.v
    latest = w.last()
    mean, std = _ewma_stats(w, skip_latest=True)
    return w.need(_ratio_or_inf(latest - mean, std), 3)


def _flatline(w: _Win, window: float) -> np.ndarray:
    if w.k < 2:
        return w.nan()
    span = w.t[w.last_idx()] - w.t[w.first_idx()]
    same = w.src == w.first()
    if not w.dense:
        same |= w.absent
    flat = same.all(axis=0) & (span >= window / 2.0) & (w.n >= 2)
    return np.where(flat, 1.0, np.nan)


@_quiet
def zscore(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Robust z-score (median/MAD) of each row's latest sample against its window; NaN below 3 samples."""
    return _run(ts, vals, end - window, end, _zscore)


@_quiet
def ewma(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Exponentially weighted mean of each row's window (span = samples / 2); NaN for rows without samples."""
    return _run(ts, vals, end - window, end, _ewma)


@_quiet
def ewma_zscore(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """(latest - EWMA mean) / EWMA std of the window's earlier samples; NaN below 3 samples in the window."""
    return _run(ts, vals, end - window, end, _ewma_zscore)


@_quiet
def spike(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """Mean of the window over the mean of the window before it; NaN if either is missing or the earlier is 0."""
    cur = _run(ts, vals, end - window, end, _avg)
    prev = _run(ts, vals, end - 2 * window, end - window, _avg)
    out = cur / prev
    out[prev == 0] = np.nan
    return out


@_quiet
def flatline(ts: np.ndarray, vals: Matrix, end: float, window: float) -> np.ndarray:
    """1.0 for rows whose ≥ 2 window samples span at least half the window and are all equal; else NaN."""
    return _run(ts, vals, end - window, end, _flatline, float(window))


@_quiet
def baseline(ts: np.ndarray, vals: Matrix, end: float, period: float, seasons: int, width: float) -> np.ndarray:
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
