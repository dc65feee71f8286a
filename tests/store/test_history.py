"""The series history (``history:``) on SQLite and PostgreSQL with an injected clock: exact buckets, tiers, the
downsampler, retention, the series cap, restart continuity (clean stop and crash) and replay frames."""

from __future__ import annotations

import itertools
import math
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select

from fsincident import config as config_mod
from fsincident.config import HistoryOptions
from fsincident.core import FakeClock, Labels
from fsincident.history import HistoryError, HistoryService, wanted_metrics
from fsincident.matchers import Matcher
from fsincident.obs import Metrics
from fsincident.plugins import Snapshot
from fsincident.store import Store
from fsincident.store.tables import SeriesHistory
from tests.helpers import write_config

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a day boundary: every chunk of both tiers starts here
OPTS = HistoryOptions(
    step=timedelta(seconds=10),
    keep=timedelta(hours=1),
    coarse_step=timedelta(minutes=1),
    coarse_keep=timedelta(days=1),
    max_series=50,
)
A = Labels({"queue": "orders"})
B = Labels({"queue": "mail"})


class Rig:
    """A HistoryService fed by hand-made snapshots of source ``app`` at times of a fake clock."""

    def __init__(self, store: Store, clock: FakeClock, options: HistoryOptions = OPTS):
        self.store, self.clock, self.options = store, clock, options
        self.snaps: dict[str, Snapshot] = {}
        self.metrics = Metrics()
        self.svc = self.new()

    def new(self) -> HistoryService:
        svc = HistoryService(self.store, self.clock, self.metrics, self.snaps.get)
        svc.configure(self.options, {"app": {"queue_depth", "other"}}, {"app": "scrape", "prom": "prometheus"})
        return svc

    async def at(self, seconds: float, metrics: dict[str, dict[Labels, float]] | None = None) -> None:
        """Move the clock to T0 + ``seconds``, publish a snapshot with ``metrics`` (if given) and tick."""
        self.clock._now = T0 + timedelta(seconds=seconds)
        if metrics is not None:
            self.snaps["app"] = Snapshot("app", at=self.clock.now(), metrics=metrics)
        await self.svc.tick(self.clock.now())

    async def series(self, start: float, end: float, metric: str = "queue_depth", **kw):
        return await self.svc.range(
            "app", metric, start=T0 + timedelta(seconds=start), end=T0 + timedelta(seconds=end), **kw
        )

    async def rows(self) -> list[SeriesHistory]:
        async with self.store.read() as s:
            return list((await s.exec(select(SeriesHistory).order_by(col(SeriesHistory.chunk_start)))).all())

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels or None) or 0.0


def pts(data) -> list[tuple[float, float, float, float]]:
    """Points as (seconds after T0, avg, min, max)."""
    return [(t - T0.timestamp(), a, lo, hi) for t, a, lo, hi in data.points]


@pytest.fixture
def rig(store, clock) -> Rig:
    return Rig(store, clock)


async def test_fine_buckets_are_exact_average_min_and_max(rig):
    for t, v in [(0, 1.0), (3, 2.0), (6, 6.0), (10, 4.0), (14, 8.0)]:
        await rig.at(t, {"queue_depth": {A: v, B: 100 + v}})
    (a, b) = sorted(await rig.series(0, 60), key=lambda d: d.labels["queue"], reverse=True)
    assert a.labels == {"queue": "orders"} and b.labels == {"queue": "mail"}
    assert pts(a) == [(0, 3.0, 1.0, 6.0)]  # the open bucket [10, 20) is not written yet
    assert pts(b) == [(0, 103.0, 101.0, 106.0)]
    await rig.at(20)  # the clock passes the bucket's end: completed without a new sample
    assert pts((await rig.series(0, 60, matchers=[Matcher.make("queue", "=", "orders")]))[0]) == [
        (0, 3.0, 1.0, 6.0),
        (10, 6.0, 4.0, 8.0),
    ]
    rows = [r for r in await rig.rows() if r.tier == 0]
    assert len(rows) == 2 and {r.step_seconds for r in rows} == {10}  # one chunk row per series
    assert struct.unpack("<6f", rows[0].points)[:3] in [(3.0, 1.0, 6.0), (103.0, 101.0, 106.0)]
    assert rig.sample("fsincident_history_buckets_written_total", tier="fine") == 4
    assert rig.sample("fsincident_history_series") == 2
    # The same snapshot seen twice counts once.
    await rig.at(21, {"queue_depth": {A: 10.0}})
    await rig.svc.tick(rig.clock.now())
    await rig.at(30)
    assert pts((await rig.series(20, 29, matchers=[Matcher.make("queue", "=", "orders")]))[0]) == [
        (20, 10.0, 10.0, 10.0)
    ]


async def test_coarse_tier_serves_ranges_older_than_keep(rig):
    # Two minutes of samples every 5 s: value = seconds; fine buckets avg t+2.5, coarse = mean of fine averages.
    for t in range(0, 120, 5):
        await rig.at(t, {"queue_depth": {A: float(t)}})
    await rig.at(125)
    fine = pts((await rig.series(0, 120))[0])
    assert fine[0] == (0, 2.5, 0.0, 5.0) and len(fine) == 12
    # Within keep: the fine tier; start beyond keep: the coarse tier (one bucket per minute).
    rig.clock._now = T0 + timedelta(minutes=90)
    coarse = await rig.svc.range("app", "queue_depth", start=T0 - timedelta(minutes=1), end=T0 + timedelta(minutes=5))
    assert pts(coarse[0]) == [(0, 27.5, 0.0, 55.0), (60, 87.5, 60.0, 115.0)]
    recent = await rig.svc.range("app", "queue_depth", start=T0 + timedelta(minutes=40), end=rig.clock.now())
    assert recent == []  # the fine tier has nothing in the last 50 minutes


async def test_downsampling_merges_buckets_within_max_points(rig):
    for i in range(100):  # 100 fine buckets, one sample each: value i, plus a spike in bucket 37
        await rig.at(i * 10, {"queue_depth": {A: 1000.0 if i == 37 else float(i)}})
    await rig.at(1000)
    full = pts((await rig.series(0, 999, max_points=1000))[0])
    assert len(full) == 100
    small = pts((await rig.series(0, 999, max_points=10))[0])
    assert len(small) <= 10
    assert max(p[3] for p in small) == 1000.0 and min(p[2] for p in small) == 0.0
    # Equal-width slots of whole buckets; each slot's average is the mean of the buckets in it.
    widths = {b[0] - a[0] for a, b in itertools.pairwise(small)}
    assert len(widths) == 1
    (w,) = widths
    for t, avg, lo, hi in small:
        inside = [p for p in full if t <= p[0] < t + w]
        assert avg == pytest.approx(sum(p[1] for p in inside) / len(inside))
        assert (lo, hi) == (min(p[2] for p in inside), max(p[3] for p in inside))


async def test_gaps_break_the_line(rig):
    await rig.at(0, {"queue_depth": {A: 1.0}})
    await rig.at(10, {"queue_depth": {A: 2.0}})
    await rig.at(50, {"queue_depth": {A: 3.0}})
    await rig.at(60)
    got = pts((await rig.series(0, 60))[0])
    assert [p[0] for p in got] == [0, 10, 20, 50]
    assert math.isnan(got[2][1]) and got[3][1] == 3.0


async def test_retention_deletes_expired_chunks_of_each_tier(rig):
    for t in range(0, 180, 10):
        await rig.at(t, {"queue_depth": {A: 1.0}})
    await rig.at(200)
    assert {r.tier for r in await rig.rows()} == {0, 1}
    assert rig.sample("fsincident_history_chunks", tier="fine") == 1
    # keep 1h (+ the chunk length: whole chunks go): the fine chunk goes, the coarse one stays.
    await rig.at(2 * 3600)
    assert {r.tier for r in await rig.rows()} == {1}
    assert rig.sample("fsincident_history_chunks", tier="fine") == 0
    assert rig.sample("fsincident_history_chunks", tier="coarse") == 1
    assert rig.sample("fsincident_history_bytes", tier="coarse") == 3 * 12
    # coarse_keep 1d (+ a 96-minute chunk).
    await rig.at(26 * 3600)
    assert await rig.rows() == []
    assert rig.sample("fsincident_history_series") == 0


async def test_series_beyond_max_series_are_not_recorded_and_counted(store, clock):
    rig = Rig(store, clock, OPTS.model_copy(update={"max_series": 3}))
    labels = [Labels({"queue": f"q{i}"}) for i in range(5)]
    for t in (0, 5, 10):
        await rig.at(t, {"queue_depth": {lab: 1.0 for lab in labels}})
    await rig.at(20)
    assert len(await rig.series(0, 20)) == 3
    assert rig.sample("fsincident_history_series") == 3
    assert rig.sample("fsincident_history_series_dropped_total") == 2  # each refused series counted once
    # The cap holds across a restart: the stored series count.
    rig.svc = rig.new()
    await rig.at(30, {"queue_depth": {Labels({"queue": "new"}): 1.0}})
    await rig.at(40)
    assert len({r.series for r in await rig.rows()}) == 3


async def test_a_restart_continues_the_chunks_and_keeps_the_flushed_partial_bucket(rig):
    for t, v in [(0, 1.0), (5, 3.0), (10, 5.0), (12, 7.0)]:
        await rig.at(t, {"queue_depth": {A: v}})
    await rig.svc.close()  # clean stop: the open bucket [10, 20) is written as it is
    second = rig.new()
    got = await second.range("app", "queue_depth", start=T0, end=T0 + timedelta(seconds=60))
    assert pts(got[0]) == [(0, 2.0, 1.0, 3.0), (10, 6.0, 5.0, 7.0)]
    # The new instance continues: same chunk row, the old buckets kept, the partial one completed.
    rig.svc = second
    for t, v in [(15, 9.0), (25, 11.0), (61, 0.0)]:
        await rig.at(t, {"queue_depth": {A: v}})
    await rig.at(70)
    got = pts((await rig.series(0, 60))[0])
    # The flushed partial bucket counts as one sample of its average (its min and max stay exact): (6 + 9) / 2.
    assert got[:3] == [(0, 2.0, 1.0, 3.0), (10, 7.5, 5.0, 9.0), (20, 11.0, 11.0, 11.0)]
    assert len([r for r in await rig.rows() if r.tier == 0]) == 1
    # The coarse bucket [0, 60) was rebuilt from the stored fine buckets: the mean of 2, 7 and 11.
    rig.clock._now = T0 + timedelta(hours=2)
    coarse = await rig.svc.range("app", "queue_depth", start=T0 - timedelta(minutes=1), end=T0 + timedelta(seconds=59))
    assert pts(coarse[0]) == [(0, pytest.approx((2 + 7.5 + 11) / 3), 1.0, 11.0)]


async def test_a_crash_loses_at_most_the_open_fine_bucket(rig):
    for t, v in [(0, 1.0), (10, 2.0), (20, 3.0), (25, 4.0)]:
        await rig.at(t, {"queue_depth": {A: v}})
    rig.svc = rig.new()  # kill -9: the first instance is gone without a flush
    for t, v in [(40, 5.0), (60, 6.0)]:
        await rig.at(t, {"queue_depth": {A: v}})
    await rig.at(70)
    fine = pts((await rig.series(0, 70))[0])
    assert [p[0] for p in fine] == [0, 10, 20, 40, 50, 60]  # [20, 30) was lost: a gap (NaN points break lines)
    assert math.isnan(fine[2][1]) and math.isnan(fine[4][1]) and fine[3][1] == 5.0
    rig.clock._now = T0 + timedelta(hours=2)
    coarse = await rig.svc.range("app", "queue_depth", start=T0 - timedelta(minutes=1), end=T0 + timedelta(seconds=59))
    assert pts(coarse[0]) == [(0, pytest.approx(8 / 3), 1.0, 5.0)]  # buckets 1, 2 (before) and 5 (after)


async def test_frames_replay_every_bucket_of_several_metrics(rig):
    for t in (0, 10, 20):
        await rig.at(t, {"queue_depth": {A: t + 1.0, B: t + 2.0}, "other": {Labels(): -t}})
    await rig.at(30)
    frames = await rig.svc.frames("app", ["queue_depth", "other"], start=T0, end=T0 + timedelta(seconds=30))
    assert [t - T0.timestamp() for t, _ in frames] == [0, 10, 20]
    assert frames[1][1] == {"queue_depth": {A: 11.0, B: 12.0}, "other": {Labels(): -10.0}}
    assert await rig.svc.catalog() == {"app": ["other", "queue_depth"], "prom": []}


async def test_reads_refuse_unknown_sources_and_empty_ranges(rig):
    with pytest.raises(HistoryError, match="no source named 'nope'"):
        await rig.svc.range("nope", "x", start=T0, end=T0 + timedelta(hours=1))
    with pytest.raises(HistoryError, match="end of the range"):
        await rig.svc.range("app", "x", start=T0, end=T0)
    with pytest.raises(HistoryError, match="does not run range queries"):
        await rig.svc.range("prom", "x", start=T0, end=T0 + timedelta(hours=1))
    assert rig.svc.source_kind("prom") == "prometheus" and rig.svc.source_kind("nope") is None


async def test_disabled_history_records_nothing(store, clock):
    rig = Rig(store, clock, OPTS.model_copy(update={"enabled": False}))
    for t in (0, 10, 20):
        await rig.at(t, {"queue_depth": {A: 1.0}})
    assert await rig.rows() == []


def test_wanted_metrics_come_from_rules_slos_and_cards(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        """\
database: sqlite:///x.db
sources:
  - {name: app, type: scrape, url: "http://127.0.0.1:9/metrics"}
  - {name: prom, type: prometheus, url: "http://127.0.0.1:9"}
ui:
  cards:
    - {title: Depth, series: 'queue_age_seconds{queue="orders"}'}
    - {title: Mem, series: mem_used, source: app}
""",
        {
            "r.yaml": """\
groups:
  - name: app
    source: app
    rules:
      - alert: Backlog
        expr: queue_depth > 100
        resolve_expr: queue_depth < 50 and workers > 0
      - alert: Prom
        source: prom
        query: sum(up)
        expr: value < 1
"""
        },
    )
    cfg = config_mod.load(tmp_path)
    assert wanted_metrics(cfg) == {"app": {"queue_depth", "workers", "mem_used"}, None: {"queue_age_seconds"}}
