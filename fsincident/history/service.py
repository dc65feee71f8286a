"""The series history: samples the sources' snapshots into fine and coarse buckets kept in SQL, and reads them back
(or runs range queries on ``prometheus`` sources) for the web UI's charts and rule previews.

Recording (the engine module, leader only): whenever a source's snapshot is newer than the last one seen, every
wanted ``(source, metric)`` series gets its value added to the open fine bucket (``history.step``). A fine bucket is
completed when a sample of a later bucket arrives or the clock passes its end; it is then written into its chunk
row (``series_history``, 60 fine buckets per row) and folded into the open coarse bucket (``history.coarse_step``,
96 per row), whose average is the mean of its fine buckets' averages. Every tick writes the chunks it changed with
one upsert each, all in one transaction. A chunk first touched by this process is merged with the stored row, so a
restart continues its chunks; on start the open coarse bucket is rebuilt from the stored fine buckets, so a
``kill -9`` loses at most the open fine bucket. ``close()`` writes the open buckets as they are.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from fsincident import plugins
from fsincident.config import Config, HistoryOptions
from fsincident.core import FsIncidentError, Labels, SourceError, ensure_utc
from fsincident.history import buckets as bk
from fsincident.matchers import Matcher, MatcherError, parse_selector
from fsincident.obs import Metrics, get_logger
from fsincident.store import Store
from fsincident.store.tables import SeriesHistory

log = get_logger("fsincident.history")

RETENTION_EVERY = 60.0
"""Seconds (of the daemon's clock) between retention runs, which also refresh the size gauges."""
MAX_FRAMES = 5000
"""Frames (evaluation times) one ``frames`` call on a ``prometheus`` source asks for at most."""
CATALOG_TTL = 60.0
"""Seconds the metric names a ``prometheus`` source knows are cached for ``catalog``."""
MAX_REFUSED = 100_000
"""Refused series remembered (so each is counted once); beyond that they are counted again."""

RangeQuery = Callable[[str, str, datetime, datetime, float], Awaitable[list[tuple[Labels, list[tuple[float, float]]]]]]
LabelValues = Callable[[str, str], Awaitable[list[str]]]
Frame = tuple[float, dict[str, dict[Labels, float]]]


class HistoryError(FsIncidentError):
    """A history read that cannot be answered (unknown source, bad range, peer failure); ``message`` is fit for a
    user and holds no secret."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class SeriesData:
    labels: dict[str, str]
    points: list[tuple[float, float, float, float]]
    """``(unix seconds, avg, min, max)``, chronological; a NaN point marks a gap."""


@dataclass
class _Series:
    fp: str
    source: str
    metric: str
    labels: Labels
    seen: float = 0.0
    fine: bk.Acc | None = None
    coarse: bk.Acc | None = None
    chunks: dict[int, tuple[float, bytearray]] = field(default_factory=dict)


@dataclass
class _Dirty:
    series: _Series
    tier: int
    start: float
    data: bytearray
    fresh: bool  # created by this process: merge with the stored row before writing


def series_id(source: str, metric: str, labels: Labels) -> str:
    """The ``series`` fingerprint of a source, metric and label set (32 hex digits, stable across processes)."""
    h = hashlib.sha256(f"{source}\xff{metric}\xff{labels.fingerprint}".encode())
    return h.hexdigest()[:32]


def wanted_metrics(config: Config) -> dict[str | None, set[str]]:
    """The metric names to record per source (key None: on every source that has them): what the rules (not
    ``query:`` rules), SLO budgets and ``ui.cards`` read. Never fails for a loaded config."""
    out: dict[str | None, set[str]] = {}
    for g in config.groups:
        for r in g.rules:
            if r.query is not None:
                continue
            names = set(r.expr.metrics)
            if r.resolve_expr is not None:
                names.update(r.resolve_expr.metrics)
            out.setdefault(r.source, set()).update(names)
    for slo in config.slos:
        out.setdefault(slo.source, set()).update(slo.budget_expr.metrics)
    for card in config.ui.cards:
        try:
            metric = parse_selector(card.series).metric
        except MatcherError:
            continue
        if metric:
            out.setdefault(card.source, set()).add(metric)
    return {k: v for k, v in out.items() if v}


class HistoryService:
    """Records the wanted series into ``series_history`` (engine module ``history``, leader only) and answers the
    UI's range, frame and catalog reads."""

    name = "history"

    def __init__(
        self,
        store: Store,
        clock: Any,
        metrics: Metrics,
        snapshots: Callable[[str], plugins.Snapshot | None],
        *,
        query_range: RangeQuery | None = None,
        label_values: LabelValues | None = None,
    ):
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.snapshots = snapshots
        self.query_range = query_range
        self.label_values = label_values
        self.options = HistoryOptions()
        self._set_steps()
        self._kinds: dict[str, str] = {}
        self._wanted: dict[str | None, set[str]] = {}
        self._names: dict[str, tuple[float, list[str]]] = {}  # metric names of prometheus sources, cached
        self._reset()

    # ------------------------------------------------------------------ configuration

    def configure(
        self, options: HistoryOptions, wanted: Mapping[str | None, Collection[str]], kinds: Mapping[str, str]
    ) -> None:
        """Record ``wanted`` (source, or None for every source, → metric names) with ``options``; ``kinds`` maps
        each configured source to its ``type``. A change of the steps starts new chunks. Never fails."""
        if (options.step, options.coarse_step) != (self.options.step, self.options.coarse_step):
            self._reset()
        self.options = options
        self._set_steps()
        self._kinds = dict(kinds)
        self._names = {}
        self._wanted = {k: set(v) for k, v in wanted.items()}

    def reset(self) -> None:
        """Forget the in-memory buckets (a replica that stops or starts leading: the stored rows are the truth)."""
        self._reset()

    def _reset(self) -> None:
        self._series: dict[tuple[str, str, Labels], _Series] = {}
        self._refused: set[tuple[str, str, Labels]] = set()
        self._admitted: set[str] = set()
        self._resume: dict[str, tuple[bk.Acc | None, tuple[float, tuple[float, float, float]] | None]] = {}
        self._dirty: dict[tuple[str, int, float], _Dirty] = {}
        self._last_at: dict[str, datetime] = {}
        self._loaded = False
        self._swept: float | None = None
        self._retained: float | None = None
        self._written = [0, 0]  # buckets per tier not yet added to the counter

    def _set_steps(self) -> None:
        """Cache the tiers' steps and chunk lengths in whole seconds (a fractional step is rounded down)."""
        step = max(1, int(self.options.step.total_seconds()))
        self._step = step
        self._cstep = max(step, int(self.options.coarse_step.total_seconds()) // step * step)
        self._steps = (self._step, self._cstep)
        self._chunk_lengths = (self._step * bk.FINE_PER_CHUNK, self._cstep * bk.COARSE_PER_CHUNK)

    def _tier_step(self, tier: int) -> int:
        return self._steps[tier]

    def _chunk_seconds(self, tier: int) -> int:
        return self._chunk_lengths[tier]

    def source_kind(self, source: str) -> str | None:
        """The ``type`` of configured source ``source``, or None when there is none of that name."""
        return self._kinds.get(source)

    # ------------------------------------------------------------------ engine module

    async def tick(self, now: datetime) -> bool:
        """Sample new snapshots, complete due buckets and write changed chunks in one transaction; raises on a
        database error (the buckets stay in memory and are written by the next tick)."""
        if not self.options.enabled:
            return False
        t_now = now.timestamp()
        if not self._loaded:
            await self._load(t_now)
        anywhere = self._wanted.get(None, set())
        for source, kind in self._kinds.items() if self._wanted else ():
            if kind == "prometheus":
                continue  # read through range queries instead
            names = self._wanted.get(source, set()) | anywhere
            if not names:
                continue
            snap = self.snapshots(source)
            if snap is None or snap.at is None or self._last_at.get(source) == snap.at:
                continue
            self._last_at[source] = snap.at
            t = snap.at.timestamp()
            for metric in names:
                for labels, value in (snap.metrics.get(metric) or {}).items():
                    self._add(source, metric, labels, t, value)
        step = self._step
        bucket = bk.floor_to(t_now, step)
        if bucket != self._swept:
            self._swept = bucket
            self._sweep(t_now)
        if self._dirty or self._retained is None or t_now - self._retained >= RETENTION_EVERY:
            await self._write(t_now)
        return False

    async def sleep_hint(self, now: datetime) -> float | None:
        """Seconds until the open fine buckets end (they are written then)."""
        if not self.options.enabled:
            return None
        t = now.timestamp()
        return bk.floor_to(t, self._step) + self._step - t + 0.01

    async def close(self) -> None:
        """Write the open (partial) buckets as they are; raises on a database error."""
        if not self.options.enabled or not self._loaded:
            return
        for s in self._series.values():
            fine = s.fine.triple() if s.fine is not None else None
            if fine is not None and s.fine is not None:
                self._store(s, 0, s.fine.start, fine)
            coarse = bk.Acc(s.coarse.start, s.coarse.n, s.coarse.total, s.coarse.lo, s.coarse.hi) if s.coarse else None
            if fine is not None and s.fine is not None:
                cb = bk.floor_to(s.fine.start, self._cstep)
                if coarse is None or coarse.start != cb:
                    if coarse is not None and coarse.triple() is not None:
                        self._store(s, 1, coarse.start, coarse.triple())  # type: ignore[arg-type]
                    coarse = bk.Acc(cb)
                coarse.add_bucket(*fine)
            if coarse is not None and (tri := coarse.triple()) is not None:
                self._store(s, 1, coarse.start, tri)
        await self._write(self.clock.now().timestamp(), retention=False)

    # ------------------------------------------------------------------ recording

    async def _load(self, t_now: float) -> None:
        """Read which series have rows (the ``max_series`` cap counts them) and the stored fine buckets of the open
        coarse bucket (to rebuild it and the open fine bucket after a restart); raises on a database error."""
        step, cstep = self._step, self._cstep
        cb = bk.floor_to(t_now, cstep)
        fb = bk.floor_to(t_now, step)
        since = bk.floor_to(cb, self._chunk_seconds(0))
        async with self.store.read() as s:
            fps = (await s.exec(select(SeriesHistory.series).distinct())).all()
            rows = (
                await s.exec(
                    select(
                        SeriesHistory.series,
                        SeriesHistory.chunk_start,
                        SeriesHistory.step_seconds,
                        SeriesHistory.points,
                    ).where(
                        col(SeriesHistory.tier) == 0,
                        col(SeriesHistory.chunk_start) >= _dt(since),
                        col(SeriesHistory.chunk_start) <= _dt(fb),
                    )
                )
            ).all()
        self._admitted = set(fps)
        resume: dict[str, tuple[bk.Acc | None, tuple[float, tuple[float, float, float]] | None]] = {}
        for fp, start, row_step, points in sorted(rows, key=lambda r: ensure_utc(r[1])):  # type: ignore[arg-type,return-value]
            if row_step != step:
                continue
            acc, seed = resume.get(fp, (None, None))
            for t, avg, lo, hi in bk.decode(points, ensure_utc(start).timestamp(), step):  # type: ignore[union-attr]
                if t == fb:
                    seed = (t, (avg, lo, hi))
                elif cb <= t < fb:
                    acc = acc or bk.Acc(cb)
                    acc.add_bucket(avg, lo, hi)
            resume[fp] = (acc, seed)
        self._resume = resume
        self._loaded = True
        self.metrics.series_history_series.set(len(self._admitted))

    def _add(self, source: str, metric: str, labels: Any, t: float, value: float) -> None:
        if not isinstance(labels, Labels):
            labels = Labels(labels)
        key = (source, metric, labels)
        s = self._series.get(key)
        if s is None:
            if key in self._refused:
                return
            s = self._admit(key, t)
            if s is None:
                return
        if not math.isfinite(value):
            return
        b = bk.floor_to(t, self._step)
        if s.fine is not None and s.fine.start != b:
            if b < s.fine.start:
                return  # older than the open bucket (the clock went back): ignored
            self._complete_fine(s)
        if s.fine is None:
            s.fine = bk.Acc(b)
        s.fine.add(value)
        s.seen = t

    def _admit(self, key: tuple[str, str, Labels], t: float) -> _Series | None:
        source, metric, labels = key
        fp = series_id(source, metric, labels)
        if fp not in self._admitted:
            if len(self._admitted) >= self.options.max_series:
                if len(self._refused) < MAX_REFUSED:
                    self._refused.add(key)
                self.metrics.series_history_dropped.inc()
                return None
            self._admitted.add(fp)
            self.metrics.series_history_series.set(len(self._admitted))
        s = _Series(fp, source, metric, labels, seen=t)
        acc, seed = self._resume.pop(fp, (None, None))
        s.coarse = acc
        if seed is not None:
            s.fine = bk.Acc(seed[0])
            s.fine.add_bucket(*seed[1])
        self._series[key] = s
        return s

    def _complete_fine(self, s: _Series) -> None:
        acc, s.fine = s.fine, None
        tri = acc.triple() if acc is not None else None
        if acc is None or tri is None:
            return
        self._store(s, 0, acc.start, tri)
        cstep = self._cstep
        cb = bk.floor_to(acc.start, cstep)
        if s.coarse is not None and s.coarse.start != cb:
            self._complete_coarse(s)
        if s.coarse is None:
            s.coarse = bk.Acc(cb)
        s.coarse.add_bucket(*tri)
        if acc.start + self._step >= cb + cstep:
            self._complete_coarse(s)  # the coarse bucket's last fine bucket

    def _complete_coarse(self, s: _Series) -> None:
        acc, s.coarse = s.coarse, None
        if acc is not None and (tri := acc.triple()) is not None:
            self._store(s, 1, acc.start, tri)

    def _sweep(self, t_now: float) -> None:
        """Complete the buckets whose time is over; forget series not seen for a coarse step once written."""
        step, cstep = self._step, self._cstep
        gone = []
        for key, s in self._series.items():
            if s.fine is not None and s.fine.start + step <= t_now:
                self._complete_fine(s)
            if s.coarse is not None and s.coarse.start + cstep <= t_now:
                self._complete_coarse(s)
            if s.fine is None and s.coarse is None and t_now - s.seen > cstep + step:
                gone.append(key)
        for key in gone:
            del self._series[key]
        if self._refused and len(self._admitted) < self.options.max_series:
            self._refused.clear()  # room again (retention removed series): refused ones may be admitted

    def _store(self, s: _Series, tier: int, bucket_start: float, triple: tuple[float, float, float]) -> None:
        step = self._tier_step(tier)
        cs = bk.floor_to(bucket_start, self._chunk_seconds(tier))
        cur = s.chunks.get(tier)
        fresh = False
        if cur is None or cur[0] != cs:
            if cur is not None and cs < cur[0]:
                return  # a bucket of a chunk already closed (the clock went back): ignored
            cur = (cs, bytearray())
            s.chunks[tier] = cur
            fresh = True
        bk.put(cur[1], int((bucket_start - cs) // step), triple)
        key = (s.fp, tier, cs)
        prev = self._dirty.get(key)
        self._dirty[key] = _Dirty(s, tier, cs, cur[1], fresh or (prev is not None and prev.fresh))
        self._written[tier] += 1

    async def _write(self, t_now: float, *, retention: bool = True) -> None:
        """Upsert the changed chunks (merging fresh ones with stored rows) and, when due, delete expired chunks and
        refresh the gauges; all in one transaction. Raises on a database error (nothing is lost: the chunks stay
        dirty)."""
        dirty = self._dirty
        due = retention and (self._retained is None or t_now - self._retained >= RETENTION_EVERY)
        if not dirty and not due:
            return
        now = datetime.fromtimestamp(t_now, UTC)
        async with self.store.session() as s:
            fresh: dict[tuple[int, float], list[_Dirty]] = {}
            for d in dirty.values():
                if d.fresh:
                    fresh.setdefault((d.tier, d.start), []).append(d)
            for (tier, start), items in fresh.items():
                by_fp = {d.series.fp: d for d in items}
                for i in range(0, len(items), 500):
                    part = [d.series.fp for d in items[i : i + 500]]
                    q = select(SeriesHistory.series, SeriesHistory.step_seconds, SeriesHistory.points).where(
                        col(SeriesHistory.series).in_(part),
                        col(SeriesHistory.tier) == tier,
                        col(SeriesHistory.chunk_start) == _dt(start),
                    )
                    for fp, row_step, points in (await s.exec(q)).all():
                        if row_step == self._tier_step(tier):
                            _merge(by_fp[fp].data, points)
            conn = await s.connection()
            new = [
                {
                    "series": d.series.fp,
                    "source": d.series.source,
                    "metric": d.series.metric,
                    "labels": dict(d.series.labels),
                    "tier": d.tier,
                    "chunk_start": _dt(d.start),
                    "step_seconds": self._tier_step(d.tier),
                    "points": bytes(d.data),
                    "updated_at": now,
                }
                for d in dirty.values()
                if d.fresh
            ]
            if new:
                await conn.execute(self._upsert(), new)
            known = [d for d in dirty.values() if not d.fresh]
            if known and not self.store.is_sqlite:  # one statement: asyncpg would run an executemany row by row
                await conn.execute(
                    _PG_UPDATE,
                    {
                        "s": [d.series.fp for d in known],
                        "t": [d.tier for d in known],
                        "c": [_dt(d.start) for d in known],
                        "p": [bytes(d.data) for d in known],
                        "at": now,
                    },
                )
            elif known:  # rows this process wrote before: a plain update (what was stored is in memory)
                params = [
                    {"k_series": d.series.fp, "k_tier": d.tier, "k_start": _dt(d.start), "k_points": bytes(d.data)}
                    for d in known
                ]
                await conn.execute(_UPDATE.values(updated_at=now), params)
            if due:
                await self._retain(s, t_now)
        for d in dirty.values():
            d.fresh = False
        self._dirty = {}
        for tier, name in ((0, "fine"), (1, "coarse")):
            if self._written[tier]:
                self.metrics.series_history_buckets.labels(name).inc(self._written[tier])
                self._written[tier] = 0
        if due:
            self._retained = t_now

    def _upsert(self) -> Any:
        table = SeriesHistory.__table__  # type: ignore[attr-defined]
        ins = sqlite.insert(table) if self.store.is_sqlite else postgresql.insert(table)
        return ins.on_conflict_do_update(
            index_elements=["series", "tier", "chunk_start"],
            set_={
                "points": ins.excluded.points,
                "updated_at": ins.excluded.updated_at,
                "step_seconds": ins.excluded.step_seconds,
                "labels": ins.excluded.labels,
            },
        )

    async def _retain(self, session: Any, t_now: float) -> None:
        table = SeriesHistory.__table__  # type: ignore[attr-defined]
        s = await session.connection()
        for tier, keep in ((0, self.options.keep), (1, self.options.coarse_keep)):
            cutoff = t_now - keep.total_seconds() - self._chunk_seconds(tier)
            await s.execute(sa.delete(table).where(table.c.tier == tier, table.c.chunk_start < _dt(cutoff)))
        stats = (
            await s.execute(
                sa.select(table.c.tier, sa.func.count(), sa.func.sum(sa.func.length(table.c.points))).group_by(
                    table.c.tier
                )
            )
        ).all()
        for tier in (0, 1):
            count, size = next(((c, b) for t, c, b in stats if t == tier), (0, 0))
            name = "fine" if tier == 0 else "coarse"
            self.metrics.series_history_chunks.labels(name).set(count or 0)
            self.metrics.series_history_bytes.labels(name).set(size or 0)
        fps = (await s.execute(sa.select(table.c.series).distinct())).scalars().all()
        self._admitted = set(fps) | {x.fp for x in self._series.values()}
        self.metrics.series_history_series.set(len(self._admitted))

    # ------------------------------------------------------------------ reads

    def _tier_for(self, start: datetime, now: datetime) -> int:
        return 0 if start >= now - self.options.keep else 1

    def _check(self, source: str, start: datetime, end: datetime) -> str:
        kind = self._kinds.get(source)
        if kind is None:
            raise HistoryError(f"no source named {source!r}")
        if end <= start:
            raise HistoryError("the end of the range must be after its start")
        return kind

    async def range(
        self,
        source: str,
        metric: str,
        matchers: Sequence[Matcher] = (),
        *,
        start: datetime,
        end: datetime,
        max_points: int = 400,
    ) -> list[SeriesData]:
        """Series of ``metric`` on ``source`` whose labels satisfy ``matchers``, at most ``max_points`` points each
        (buckets merged: weighted mean of averages, min of mins, max of maxes), from the fine tier when ``start``
        is within ``history.keep`` else the coarse one; a ``prometheus`` source runs a range query. Raises
        HistoryError (a message fit for a user) for an unknown source, a bad range or a failed query."""
        kind = self._check(source, start, end)
        max_points = max(3, max_points)
        if kind == "prometheus":
            return await self._prom_range(source, metric, matchers, start, end, max_points)
        tier = self._tier_for(start, self.clock.now())
        step = self._tier_step(tier)
        width = bk.slot_width(start.timestamp(), end.timestamp(), step, max_points)
        out = []
        for labels, arr in (await self._read(source, [metric], matchers, tier, start, end)).get(metric, {}).items():
            merged = bk.downsample_array(arr, width)
            out.append(SeriesData(dict(labels), bk.with_gaps(merged, width)))
        return sorted(out, key=lambda d: sorted(d.labels.items()))

    async def _read(
        self,
        source: str,
        metrics: Sequence[str],
        matchers: Sequence[Matcher],
        tier: int,
        start: datetime,
        end: datetime,
    ) -> dict[str, dict[Labels, np.ndarray]]:
        """Per metric and series the stored buckets in ``[start, end]`` as a chronological ``(n, 4)`` array of
        ``t, avg, min, max`` (empty buckets left out); raises HistoryError when the database cannot be read."""
        lo, hi = start.timestamp(), end.timestamp()
        since = _dt(lo - self._chunk_seconds(tier))
        q = select(
            SeriesHistory.metric,
            SeriesHistory.labels,
            SeriesHistory.chunk_start,
            SeriesHistory.step_seconds,
            SeriesHistory.points,
        ).where(
            col(SeriesHistory.source) == source,
            col(SeriesHistory.metric).in_(list(metrics)),
            col(SeriesHistory.tier) == tier,
            col(SeriesHistory.chunk_start) > since,
            col(SeriesHistory.chunk_start) <= end,
        )
        try:
            async with self.store.read() as s:
                rows = (await s.exec(q)).all()
        except Exception as e:
            log.exception("history_read_failed", source=source)
            raise HistoryError(f"the history could not be read: {type(e).__name__}") from None
        parts: dict[str, dict[Labels, list[np.ndarray]]] = {}
        for metric, labels, chunk_start, row_step, points in rows:
            if not all(m.matches(labels.get(m.name, "")) for m in matchers):
                continue
            cs = ensure_utc(chunk_start).timestamp()  # type: ignore[union-attr]
            arr = bk.decode_array(points, cs, row_step)
            arr = arr[(arr[:, 0] >= lo) & (arr[:, 0] <= hi)]
            if len(arr):
                parts.setdefault(metric, {}).setdefault(Labels(labels), []).append(arr)
        out: dict[str, dict[Labels, np.ndarray]] = {}
        for metric, series_map in parts.items():
            for labels, chunks in series_map.items():
                a = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
                out.setdefault(metric, {})[labels] = a[np.argsort(a[:, 0], kind="stable")]
        return out

    async def _prom_range(
        self, source: str, metric: str, matchers: Sequence[Matcher], start: datetime, end: datetime, max_points: int
    ) -> list[SeriesData]:
        step = max(1, math.ceil((end - start).total_seconds() / (max_points - 1)))
        out = [
            SeriesData(dict(labels), [(t, v, v, v) for t, v in points])
            for labels, points in await self._range_query(source, _selector(metric, matchers), start, end, step)
        ]
        return sorted(out, key=lambda d: sorted(d.labels.items()))

    async def _range_query(
        self, source: str, promql: str, start: datetime, end: datetime, step: float
    ) -> list[tuple[Labels, list[tuple[float, float]]]]:
        if self.query_range is None:
            raise HistoryError(f"source {source!r} does not run range queries")
        try:
            return await self.query_range(source, promql, start, end, step)
        except SourceError as e:
            raise HistoryError(f"source {source!r}: {e}") from None

    async def frames(self, source: str, metrics: Sequence[str], *, start: datetime, end: datetime) -> list[Frame]:
        """Chronological frames ``(t, {metric: {labels: avg}})`` of ``metrics`` on ``source`` for replaying rules:
        one per stored bucket of the tier covering the range (per range-query step on a ``prometheus`` source).
        Raises HistoryError like :meth:`range`."""
        kind = self._check(source, start, end)
        frames: dict[float, dict[str, dict[Labels, float]]] = {}
        if kind == "prometheus":
            step = max(1, math.ceil((end - start).total_seconds() / MAX_FRAMES))
            for metric in dict.fromkeys(metrics):
                for labels, points in await self._range_query(source, metric, start, end, step):
                    for t, v in points:
                        if not math.isnan(v):
                            frames.setdefault(t, {}).setdefault(metric, {})[labels] = v
        else:
            tier = self._tier_for(start, self.clock.now())
            for metric, series in (
                await self._read(source, list(dict.fromkeys(metrics)), (), tier, start, end)
            ).items():
                for labels, arr in series.items():
                    for t, avg in zip(arr[:, 0].tolist(), arr[:, 1].tolist(), strict=True):
                        frames.setdefault(t, {}).setdefault(metric, {})[labels] = avg
        return sorted(frames.items(), key=lambda f: f[0])

    async def catalog(self) -> dict[str, list[str]]:
        """Per configured source the metric names with history (for a ``prometheus`` source the names the peer
        knows; none when it cannot be asked). Raises HistoryError when the database cannot be read."""
        out: dict[str, list[str]] = {name: [] for name in self._kinds}
        try:
            async with self.store.read() as s:
                pairs = (await s.exec(select(SeriesHistory.source, SeriesHistory.metric).distinct())).all()
        except Exception as e:
            log.exception("history_read_failed")
            raise HistoryError(f"the history could not be read: {type(e).__name__}") from None
        for source, metric in pairs:
            if source in out and self._kinds[source] != "prometheus":
                out[source].append(metric)
        for source, kind in self._kinds.items():
            if kind == "prometheus" and self.label_values is not None:
                cached = self._names.get(source)
                if cached is not None and self.clock.monotonic() - cached[0] < CATALOG_TTL:
                    out[source] = cached[1]
                    continue
                try:
                    out[source] = await self.label_values(source, "__name__")
                except SourceError as e:
                    log.warning("history_catalog_failed", source=source, error=str(e))
                    continue
                self._names[source] = (self.clock.monotonic(), out[source])
        return {k: sorted(set(v)) for k, v in out.items()}


_T = SeriesHistory.__table__  # type: ignore[attr-defined]
_UPDATE = (
    sa.update(_T)
    .where(
        _T.c.series == sa.bindparam("k_series"),
        _T.c.tier == sa.bindparam("k_tier"),
        _T.c.chunk_start == sa.bindparam("k_start"),
    )
    .values(points=sa.bindparam("k_points"))
)


_PG_UPDATE = sa.text(
    "UPDATE series_history AS h SET points = v.p, updated_at = :at FROM unnest(CAST(:s AS varchar[]), "
    "CAST(:t AS integer[]), CAST(:c AS timestamptz[]), CAST(:p AS bytea[])) AS v(s, t, c, p) "
    "WHERE h.series = v.s AND h.tier = v.t AND h.chunk_start = v.c"
)


_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _selector(metric: str, matchers: Iterable[Matcher]) -> str:
    """The PromQL selector of ``metric`` and ``matchers``; raises HistoryError for a name that is not a metric name
    (anything else would let the caller run arbitrary PromQL on the peer)."""
    if not _METRIC_NAME.fullmatch(metric):
        raise HistoryError(f"{metric!r} is not a metric name")
    inner = ",".join(str(m) for m in matchers)
    return f"{metric}{{{inner}}}" if inner else metric


def _merge(data: bytearray, stored: bytes) -> None:
    """Fill the empty buckets of ``data`` from the stored row's bytes (what this process wrote wins)."""
    n = len(stored) // bk.BUCKET_BYTES
    for i in range(n):
        if bk.get(data, i) is None and (tri := bk.get(stored, i)) is not None:
            bk.put(data, i, tri)


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)
