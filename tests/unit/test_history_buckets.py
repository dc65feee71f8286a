"""The history's pure pieces: the chunk byte format, bucket accumulators and the downsampler (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fsincident.history import buckets as bk

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def _bucket(raw: tuple[int, float, float, float, int]) -> bk.Point:
    slot, x, y, z, w = raw
    lo, avg, hi = sorted((x, y, z))
    return (slot * 10.0, avg, lo, hi, float(w))


def series() -> st.SearchStrategy[list[bk.Point]]:
    """Chronological buckets (t, avg, min, max, weight) with min <= avg <= max on a 10 s grid, gaps allowed."""
    raw = st.tuples(st.integers(0, 5000), values, values, values, st.integers(1, 60))
    return st.lists(raw, min_size=1, max_size=80, unique_by=lambda r: r[0]).map(
        lambda rs: sorted((_bucket(r) for r in rs), key=lambda p: p[0])
    )


@given(series(), st.integers(1, 50))
def test_merging_preserves_min_max_and_the_weighted_mean(points, k):
    merged = bk.downsample(points, 10.0 * k)
    assert min(p[2] for p in merged) == min(p[2] for p in points)
    assert max(p[3] for p in merged) == max(p[3] for p in points)
    total = sum(p[4] for p in points)
    assert sum(p[4] for p in merged) == total
    mean = sum(p[1] * p[4] for p in points) / total
    assert math.isclose(sum(p[1] * p[4] for p in merged) / total, mean, rel_tol=1e-9, abs_tol=1e-6)
    # Chronological, one point per slot, each within its slot's min and max.
    assert [p[0] for p in merged] == sorted({p[0] for p in merged})
    for t, avg, lo, hi, _ in merged:
        assert t % (10.0 * k) == 0
        assert lo - 1e-6 <= avg <= hi + 1e-6


@given(series(), st.integers(3, 1000))
def test_slot_width_keeps_a_range_within_max_points(points, max_points):
    start, end = points[0][0], points[-1][0] + 9
    width = bk.slot_width(start, end, 10, max_points)
    merged = bk.downsample(points, width)
    assert width % 10 == 0 and len(bk.with_gaps(merged, width)) <= max_points


def test_chunks_pack_float32_triples_with_nan_for_empty_buckets():
    chunk = bytearray()
    bk.put(chunk, 2, (1.5, 1.0, 2.0))
    assert len(chunk) == 36 and bk.get(chunk, 0) is None and bk.get(chunk, 2) == (1.5, 1.0, 2.0)
    bk.put(chunk, 0, (1e39, -1e39, 0.1))  # beyond float32: saturates
    assert bk.get(chunk, 0)[:2] == (math.inf, -math.inf)
    assert list(bk.decode(bytes(chunk) + b"\x00", 100.0, 10)) == [
        (100.0, math.inf, -math.inf, bk.get(chunk, 0)[2]),
        (120.0, 1.5, 1.0, 2.0),
    ]


def test_accumulator_averages_and_folds_buckets():
    acc = bk.Acc(0.0)
    assert acc.triple() is None
    for v in (1.0, 2.0, 6.0):
        acc.add(v)
    assert acc.triple() == (3.0, 1.0, 6.0)
    acc.add_bucket(7.0, 0.0, 9.0)
    assert acc.triple() == (4.0, 0.0, 9.0)


@given(series(), st.integers(1, 50))
def test_the_vectorised_reads_agree_with_the_plain_ones(points, k):
    # Page reads decode chunks and merge buckets with numpy; they must give what the plain functions give.
    unit = [(t, avg, lo, hi, 1.0) for t, avg, lo, hi, _ in points]
    arr = np.array([p[:4] for p in unit], dtype=np.float64)
    fast = bk.downsample_array(arr, 10.0 * k)
    slow = bk.downsample(unit, 10.0 * k)
    assert [(p[0], p[2], p[3], p[4]) for p in fast] == [(p[0], p[2], p[3], p[4]) for p in slow]
    for a, b in zip(fast, slow, strict=True):
        assert math.isclose(a[1], b[1], rel_tol=1e-9, abs_tol=1e-6)
    chunk = bytearray()
    for i, (_, avg, lo, hi, _) in enumerate(unit[:60]):
        bk.put(chunk, i * 2, (avg, lo, hi))  # every other bucket empty
    decoded = bk.decode_array(bytes(chunk), 1000.0, 5)
    assert decoded.tolist() == [list(p) for p in bk.decode(bytes(chunk), 1000.0, 5)]
