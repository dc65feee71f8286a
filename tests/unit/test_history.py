"""The metric history: float32 offsets rebased on the window, preallocation, retention, row expiry, exact mode."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from fsincident.core import Labels
from fsincident.expr import windows as W
from fsincident.expr.history import COARSE_COLUMNS, FINE_COLUMNS, HEADROOM, ROW_TTL, STALE_BITS, MetricHistory

pytestmark = pytest.mark.filterwarnings("error")  # no numpy RuntimeWarning from ingest or views

T0 = 1.7e9
STEP = 15.0
STALE = float(np.array([STALE_BITS], dtype=np.uint64).view(np.float64)[0])


def lab(i: int) -> Labels:
    return Labels({"i": str(i)})


_LABELS = [lab(i) for i in range(2000)]


def feed(h: MetricHistory, at: float, values) -> None:
    h.ingest(at, dict(zip(_LABELS, np.asarray(values, dtype=np.float64).tolist(), strict=False)))


def read(h: MetricHistory, start: float) -> tuple[np.ndarray, np.ndarray]:
    """The window from ``start`` as (ts, float64 values (rows, k))."""
    ts, vals = h.view(start)
    return ts, np.asarray(vals, dtype=np.float64)


# ------------------------------------------------------------------------------------------ precision


def test_counters_growing_for_days_stay_precise_relative_to_the_window():
    """Three days of counters at 15 s with a 1 h span: every retained value stays within 1e-6 of the hour's increase.

    A float32 value of the counter itself would be off by up to 64 (at 1e9) or 65536 (at 1e12); offsets from a
    base that follows the counter only carry the last hour's increase, rounded again at each rebase.
    """
    rates = np.array([0.5, 37.0, 1e3, 2.5e5])  # per second
    start = np.array([0.0, 1e6, 3e9, 1e12])
    h = MetricHistory(3600.0)
    worst = 0.0
    last = 3 * 86400 // int(STEP)
    for k in range(last + 1):
        at = T0 + k * STEP
        feed(h, at, start + rates * (k * STEP))
        if k % 613 == 0 or k == last:
            ts, vals = read(h, at - 3600.0)
            assert ts[-1] == at and (ts[0] <= at - 3600.0 or ts[0] == T0)
            expect = start[:, None] + rates[:, None] * (ts - T0)
            err = np.abs(vals - expect).max(axis=1) / (rates * 3600.0)
            worst = max(worst, float(err.max()))
            assert (err <= 1e-6).all(), (k, err)
            if k < 20:
                continue
            got = W.rate(ts, h.view(at - 3600.0)[1], at, 300.0)
            assert np.all(np.abs(got - rates) <= 1e-6 * rates * 3600.0 / 300.0), (k, got)
    assert h.fine is not None and h.fine.vals.dtype == np.float32 and not h.exact
    assert worst > 0.0  # (the values really went through float32)


def test_unix_timestamp_gauges_stay_exact_to_well_under_a_second():
    h = MetricHistory(3600.0)
    worst = 0.0
    for k in range(86400 // int(STEP)):  # a day
        at = 1.8e9 + k * STEP
        feed(h, at, [at, 1.8e9 + k // 4, 1.8e9 + 0.001 * k])  # the time; a second every minute; a millisecond
        if k % 401 == 0:
            ts, vals = read(h, at - 3600.0)
            expect = np.vstack([ts, 1.8e9 + (ts - 1.8e9) // 60, 1.8e9 + 0.001 * (ts - 1.8e9) / STEP])
            worst = max(worst, float(np.abs(vals - expect).max()))
    assert worst < 1e-3  # seconds
    assert h.latest()[0] == at  # the newest snapshot is kept as ingested


def test_constant_rows_are_exact():
    h = MetricHistory(600.0)
    for k in range(200):
        feed(h, T0 + k * STEP, [0.1, 1e15 + 1, -3.3e-7, 5.0 if k < 100 else 6.0])
    ts, vals = read(h, T0 + 199 * STEP - 600.0)
    assert (vals[0] == 0.1).all() and (vals[1] == 1e15 + 1).all() and (vals[2] == -3.3e-7).all()
    assert (vals[3] == 6.0).all()
    assert W.stddev_over_time(ts, h.view(0.0)[1], ts[-1], 600.0).tolist() == [0.0] * 4
    assert W.deriv(ts, h.view(0.0)[1], ts[-1], 600.0).tolist() == [0.0] * 4


def test_latest_is_the_snapshot_as_ingested_and_read_only():
    h = MetricHistory(300.0)
    feed(h, T0, [1.0, 2.0])
    h.ingest(T0 + STEP, {lab(0): 0.1 + 0.2, lab(2): math.pi})
    latest = h.latest()
    assert latest.dtype == np.float64 and latest.shape == (3,)
    assert latest[0] == 0.1 + 0.2 and math.isnan(latest[1]) and latest[2] == math.pi
    with pytest.raises(ValueError, match="read-only"):
        latest[0] = 1.0


# ----------------------------------------------------------------------------------------- allocation


def test_tiers_are_sized_from_the_step_and_never_regrown():
    rows = len(_LABELS)
    h = MetricHistory(3600.0)
    base = np.arange(rows, dtype=np.float64)
    for k in range(6):
        feed(h, T0 + k * STEP, base + k)
    tier = h.fine
    assert tier is not None and tier.step == STEP
    cols = math.ceil(3600.0 / STEP * HEADROOM) + 4
    assert tier.vals.shape == (cols, rows)
    arr = tier.vals
    steady = h.nbytes()
    assert steady == pytest.approx(rows * cols * 4, rel=0.02)  # float32, plus a base and a newest value a row
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        for k in range(6, 500):  # two hours: from the second on, columns are shifted out every ~26 snapshots
            feed(h, T0 + k * STEP, base + k)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tier.vals is arr and h.nbytes() == steady  # no regrowth, no new array
    assert peak - start < 0.5 * steady  # peak memory stays near the steady memory (a regrowth needs twice it)
    ts, vals = read(h, T0 + 499 * STEP - 3600.0)
    assert np.array_equal(vals, base[:, None] + (ts - T0) / STEP)


def test_snapshots_coming_faster_regrow_the_tier():
    h = MetricHistory(600.0)
    at = T0
    for k in range(50):  # a minute apart
        at += 60.0
        feed(h, at, [k, -k])
    assert h.fine is not None and h.fine.vals.shape[0] == math.ceil(600 / 60 * HEADROOM) + 4
    for k in range(50, 200):  # 5 s apart
        at += 5.0
        feed(h, at, [k, -k])
    ts, vals = read(h, at - 600.0)
    assert ts[0] <= at - 600.0 < ts[1] and len(ts) == 600 / 5 + 1
    assert np.array_equal(vals[0], np.arange(200 - len(ts), 200)) and np.array_equal(vals[1], -vals[0])


def test_a_burst_of_first_snapshots_does_not_keep_a_huge_tier():
    h = MetricHistory(3600.0)
    at = T0
    for k in range(5):  # the step is learned from these: 0.1 s
        at += 0.1
        feed(h, at, [k] * 100)
    assert h.fine is not None and h.fine.step == pytest.approx(0.1)
    for k in range(5, 400):  # then every 15 s
        at += STEP
        feed(h, at, [k] * 100)
    tier = h.fine
    assert tier.step == STEP and tier.vals.shape[0] <= 2 * (math.ceil(3600 / STEP * HEADROOM) + 4)
    assert tier.n <= math.ceil(3600 / STEP * 1.125) + 6  # columns ever written (and so memory committed) stay few
    ts, vals = read(h, at - 3600.0)
    assert ts[0] <= at - 3600.0 and (vals == (ts[None, :] - ts[-1]) / STEP + 399).all()


# ---------------------------------------------------------------------------------- retention and rows


def test_retention_keeps_the_span_and_one_sample_before_it():
    h = MetricHistory(300.0)
    for k in range(100):
        feed(h, T0 + k * STEP, [k])
    now = T0 + 99 * STEP
    ts, vals = read(h, now - 300.0)
    assert ts[0] == now - 300.0 and ts[-1] == now and len(ts) == 21
    assert vals[0].tolist() == list(range(79, 100))
    assert W.increase(ts, h.view(now - 300.0)[1], now, 300.0)[0] == pytest.approx(20.0, rel=1e-12)
    h.set_span(60.0)
    feed(h, now + STEP, [100])
    assert len(h.view(0.0)[0]) == 5  # shortened: older columns go at the next snapshot
    h.set_span(900.0)
    for k in range(101, 180):
        feed(h, T0 + k * STEP, [k])
    ts, vals = read(h, 0.0)
    assert len(ts) == 61 and vals[0].tolist() == list(range(119, 180))


def test_repeated_and_out_of_order_snapshots_are_ignored():
    h = MetricHistory(300.0)
    feed(h, T0, [1.0])
    feed(h, T0 + STEP, [2.0])
    feed(h, T0 + STEP, [5.0])
    feed(h, T0 + 1.0, [6.0])
    ts, vals = read(h, 0.0)
    assert ts.tolist() == [T0, T0 + STEP] and vals[0].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("kept", [3, 90])  # most rows go (the arrays shrink) / a few go (compacted in place)
def test_silent_rows_are_forgotten_and_the_others_keep_their_values(kept):
    h = MetricHistory(600.0)
    rows = 100
    at = T0
    for k in range(40):
        at = T0 + k * STEP
        feed(h, at, np.arange(rows) * 1000.0 + k)
    uid = h.table.uid
    for k in range(40, 40 + int(ROW_TTL / STEP) + 60):  # only the first ``kept`` rows report
        at = T0 + k * STEP
        h.ingest(at, {lab(i): i * 1000.0 + k for i in range(kept)})
    assert len(h.table) == kept and h.table.uid != uid
    assert h.table.labels == [lab(i) for i in range(kept)]
    ts, vals = read(h, at - 600.0)
    assert vals.shape == (kept, len(ts))
    expect = np.arange(kept)[:, None] * 1000.0 + (ts - T0) / STEP
    assert np.array_equal(vals, expect)
    assert h.latest().tolist() == (np.arange(kept) * 1000.0 + k).tolist()
    h.ingest(at + STEP, {lab(1000): 7.0, lab(0): 1.0})  # a new row after the compaction starts empty
    ts, vals = read(h, 0.0)
    assert np.isnan(vals[kept, :-1]).all() and vals[kept, -1] == 7.0


def test_long_spans_are_read_from_the_coarse_tier():
    h = MetricHistory(8 * 3600.0)
    at = T0
    for k in range(9 * 3600 // 5):  # nine hours, a snapshot every 5 s: more columns than the fine tier holds
        at = T0 + k * 5.0
        feed(h, at, [k, 1e9 + k])
    assert h.fine is not None and h.fine.vals.shape[0] == FINE_COLUMNS
    assert h.coarse is not None and h.coarse.vals.shape[0] == COARSE_COLUMNS
    ts, vals = read(h, at - 8 * 3600.0)  # the coarse tier: a column per bucket of 8 h / 1920 = 15 s
    assert ts[0] <= at - 8 * 3600.0 and ts[-1] == at
    assert np.all(np.diff(ts)[:-1] == 15.0)  # (the newest bucket's column moves with its newest snapshot)
    assert np.array_equal(vals[0], (ts - T0) / 5.0) and np.array_equal(vals[1], 1e9 + (ts - T0) / 5.0)
    fine_ts, fine = read(h, at - 600.0)  # short windows: the fine tier, every snapshot
    assert fine_ts[-1] == at and np.all(np.diff(fine_ts) == 5.0) and len(fine_ts) > 3600
    assert np.array_equal(fine[0], (fine_ts - T0) / 5.0)


# ------------------------------------------------------------------------------------------- exact mode


def test_exact_histories_keep_float64_bits_and_staleness_markers():
    h = MetricHistory(600.0, exact=True)
    for k in range(60):
        h.ingest(T0 + k * STEP, {lab(0): 0.1 * k, lab(1): STALE if k == 59 else 1.0 / 3.0})
    ts, vals = h.view(T0)
    assert isinstance(vals, np.ndarray) and vals.dtype == np.float64
    assert vals[0].tolist() == [0.1 * k for k in range(60 - len(ts), 60)]
    assert vals[1, -1:].view(np.uint64)[0] == STALE_BITS
    assert (vals[1, :-1] == 1.0 / 3.0).all()


def test_a_staleness_marker_makes_a_history_exact():
    h = MetricHistory(600.0)
    for k in range(30):
        feed(h, T0 + k * STEP, [10.0 + k, 5.0])
    assert not h.exact and isinstance(h.view(0.0)[1], W.Offsets)
    h.ingest(T0 + 30 * STEP, {lab(0): 40.0, lab(1): STALE})
    assert h.exact
    ts, vals = h.view(0.0)
    assert isinstance(vals, np.ndarray) and vals.dtype == np.float64
    assert vals[0].tolist() == [10.0 + k for k in range(31 - len(ts), 31)]
    assert vals[1, -1:].view(np.uint64)[0] == STALE_BITS and (vals[1, :-1] == 5.0).all()
    feed(h, T0 + 31 * STEP, [41.0, 0.1])
    assert h.view(0.0)[1][1, -1] == 0.1


def test_values_too_large_for_float32_offsets_make_a_history_exact():
    h = MetricHistory(600.0)
    feed(h, T0, [1.0, 0.0])
    feed(h, T0 + STEP, [2.0, -3e38])
    assert h.exact
    assert read(h, 0.0)[1].tolist() == [[1.0, 2.0], [0.0, -3e38]]
    inf = MetricHistory(600.0)
    feed(inf, T0, [math.inf, 1.0])
    feed(inf, T0 + STEP, [-math.inf, 2.0])
    assert not inf.exact  # infinities are kept as float32 offsets
    assert read(inf, 0.0)[1].tolist() == [[math.inf, -math.inf], [1.0, 2.0]]


def test_views_do_not_copy_the_history():
    h = MetricHistory(600.0)
    for k in range(30):
        feed(h, T0 + k * STEP, [k, 2 * k])
    ts, vals = h.view(0.0)
    assert isinstance(vals, W.Offsets) and vals.shape == (2, len(ts))
    assert h.fine is not None and np.shares_memory(vals.off, h.fine.vals)
    exact = MetricHistory(600.0, exact=True)
    for k in range(30):
        feed(exact, T0 + k * STEP, [k, 2 * k])
    ts, vals = exact.view(0.0)
    assert exact.fine is not None and np.shares_memory(vals, exact.fine.vals)
