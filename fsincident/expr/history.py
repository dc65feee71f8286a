"""Bounded in-memory history per (source, metric): a table of label sets and a column per snapshot.

Memory is ``rows × columns × 8`` bytes per metric. A metric that rules read only at the instant keeps two
columns; a metric read by window functions keeps the columns of its longest ``window + offset`` (the
*fine* tier, one column per snapshot, at most ``FINE_COLUMNS``); spans longer than ``COARSE_FROM`` are
also kept in a *coarse* tier of at most ``COARSE_COLUMNS`` columns, each the last value of its bucket
(enough for day/week offsets, seasonal baselines and SLO windows). Columns are kept chronological and
contiguous so window functions work on views, never on copies of the whole history.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np

from fsincident.core import Labels

FINE_COLUMNS = 4096
COARSE_COLUMNS = 2048
COARSE_FROM = 6 * 3600.0
STALE_BITS = 0x7FF0000000000002  # Prometheus' staleness marker: a NaN with these bits ends a series at once
ROW_TTL = 3600.0  # a series silent this long (or the metric's span, if longer) is forgotten
_UIDS = itertools.count(1)


class Table:
    """Rows of label sets; ``uid`` names the table, ``version`` changes whenever its rows change."""

    __slots__ = ("_index", "labels", "uid", "version")

    def __init__(self, labels: list[Labels] | None = None):
        self.labels: list[Labels] = labels if labels is not None else []
        self._index: dict[Labels, int] | None = None
        self.uid = next(_UIDS)
        self.version = 0

    @property
    def index(self) -> dict[Labels, int]:
        """Label set -> row (built on first use for derived tables)."""
        if self._index is None:
            self._index = {lab: i for i, lab in enumerate(self.labels)}
        return self._index

    def __len__(self) -> int:
        return len(self.labels)


class Tier:
    """Chronological columns ``ts[lo:n]`` / ``vals[:, lo:n]``; a column every ``stride`` seconds at most."""

    __slots__ = ("lo", "max_columns", "n", "span", "stride", "ts", "vals")

    def __init__(self, rows: int, span: float, max_columns: int, stride: float):
        self.span = span
        self.stride = stride
        self.max_columns = max_columns
        cap = 4
        self.ts = np.full(cap, np.nan)
        self.vals = np.full((max(rows, 4), cap), np.nan)
        self.lo = 0
        self.n = 0

    def grow_rows(self, rows: int) -> None:
        if rows <= self.vals.shape[0]:
            return
        new = np.full((max(rows, int(self.vals.shape[0] * 1.5) + 4), self.vals.shape[1]), np.nan)
        new[: self.vals.shape[0], :] = self.vals
        self.vals = new

    def _make_room(self) -> None:
        """Free a column at the end: shift out expired columns, or grow by a quarter, or drop the oldest."""
        cap = self.vals.shape[1]
        if self.n < cap:
            return
        live = self.n - self.lo
        if self.lo > 0 and live < cap * 0.9:
            self.vals[:, :live] = self.vals[:, self.lo : self.n]
            self.ts[:live] = self.ts[self.lo : self.n]
            self.lo, self.n = 0, live
            return
        new_cap = min(max(int(live * 1.25) + 2, 4), self.max_columns)
        if new_cap <= cap:  # at the cap: drop the oldest columns
            keep = max(1, min(live, self.max_columns) - max(1, self.max_columns // 16))
            self.vals[:, :keep] = self.vals[:, self.n - keep : self.n]
            self.ts[:keep] = self.ts[self.n - keep : self.n]
            self.lo, self.n = 0, keep
            return
        vals = np.full((self.vals.shape[0], new_cap), np.nan)
        vals[:, :live] = self.vals[:, self.lo : self.n]
        ts = np.full(new_cap, np.nan)
        ts[:live] = self.ts[self.lo : self.n]
        self.vals, self.ts = vals, ts
        self.lo, self.n = 0, live

    def append(self, at: float, rows: np.ndarray, values: np.ndarray, nrows: int) -> None:
        self.grow_rows(nrows)
        if self.n > self.lo and self.stride > 0 and at // self.stride == self.ts[self.n - 1] // self.stride:
            col = self.n - 1  # same bucket: the newest value wins, the column moves to the newest time
            if at < self.ts[col]:
                return
            self.ts[col] = at
            self.vals[:, col] = np.nan
        else:
            if self.n > self.lo and at <= self.ts[self.n - 1]:
                return  # out of order or repeated snapshot
            self._make_room()
            col = self.n
            self.n += 1
            self.ts[col] = at
            self.vals[:, col] = np.nan
        if len(rows):
            self.vals[rows, col] = values
        # retention: drop columns older than the span (keep one before it for rate/instant lookups)
        cut = at - self.span
        lo = int(np.searchsorted(self.ts[self.lo : self.n], cut, side="right")) + self.lo - 1
        if lo > self.lo:
            self.lo = lo

    def keep_rows(self, idx: np.ndarray) -> None:
        vals = np.full((max(len(idx), 4), self.vals.shape[1]), np.nan)
        vals[: len(idx)] = self.vals[idx]
        self.vals = vals

    def view(self, nrows: int) -> tuple[np.ndarray, np.ndarray]:
        self.grow_rows(nrows)
        return self.ts[self.lo : self.n], self.vals[:nrows, self.lo : self.n]

    def oldest(self) -> float:
        return float(self.ts[self.lo]) if self.n > self.lo else math.inf

    def nbytes(self) -> int:
        return int(self.vals.nbytes + self.ts.nbytes)


class MetricHistory:
    """One metric of one source: its label table, a fine tier and (for long spans) a coarse tier."""

    __slots__ = ("_next_sweep", "coarse", "fine", "last_at", "last_seen", "row_ttl", "span", "table")

    def __init__(self, span: float, row_ttl: float = 0.0):
        self.table = Table()
        self.table._index = {}
        self.span = 0.0
        self.row_ttl = ROW_TTL
        self.fine: Tier | None = None
        self.coarse: Tier | None = None
        self.last_at = -math.inf
        self.last_seen = np.full(4, np.nan)
        self._next_sweep = -math.inf
        self.set_span(span, row_ttl)

    def set_span(self, span: float, row_ttl: float = 0.0) -> None:
        """Resize retention to ``span`` seconds (a reload may lengthen or shorten it; data is kept).

        A series without samples for ``max(span, row_ttl, ROW_TTL)`` seconds is forgotten.
        """
        span = max(0.0, float(span))
        self.row_ttl = max(span, float(row_ttl), ROW_TTL)
        if self.fine is None:
            self.fine = Tier(0, span, FINE_COLUMNS, 0.0)
        self.fine.span = span
        if span > COARSE_FROM:
            stride = span / (COARSE_COLUMNS - 8)
            if self.coarse is None:
                self.coarse = Tier(len(self.table), span, COARSE_COLUMNS, stride)
            self.coarse.span, self.coarse.stride = span, stride
        else:
            self.coarse = None
        self.span = span

    def ingest(self, at: float, series: Mapping[Labels, float]) -> None:
        """Append one snapshot (a series missing from it reads as 'no sample'); older snapshots are ignored."""
        if at <= self.last_at:
            return
        self.last_at = at
        table = self.table
        index = table.index
        n0 = len(table.labels)
        rows = np.empty(len(series), dtype=np.intp)
        for i, lab in enumerate(series):
            r = index.get(lab)
            if r is None:
                r = len(table.labels)
                index[lab] = r
                table.labels.append(lab)
            rows[i] = r
        if len(table.labels) != n0:
            table.version += 1
        values = np.fromiter(series.values(), dtype=np.float64, count=len(series))
        nrows = len(table.labels)
        if nrows > len(self.last_seen):
            grown = np.full(max(nrows, int(len(self.last_seen) * 1.5) + 4), np.nan)
            grown[: len(self.last_seen)] = self.last_seen
            self.last_seen = grown
        self.last_seen[rows[~np.isnan(values)]] = at
        for tier in (self.fine, self.coarse):
            if tier is not None:
                tier.append(at, rows, values, nrows)
        if at >= self._next_sweep:
            self._next_sweep = at + min(600.0, self.row_ttl / 4 + 1)
            self._forget(at - self.row_ttl)

    def _forget(self, before: float) -> None:
        """Drop the rows last seen before ``before`` (series that went away); the table gets a new uid."""
        n = len(self.table)
        seen = self.last_seen[:n]
        keep = ~(seen < before)  # never-seen rows (NaN) stay until they age like the others
        never = np.isnan(seen)
        if never.any():
            self.last_seen[:n][never] = self.last_at
        if keep.all():
            return
        idx = np.flatnonzero(keep)
        labels = [self.table.labels[i] for i in idx.tolist()]
        table = Table(labels)
        table._index = {lab: i for i, lab in enumerate(labels)}
        self.table = table
        last = np.full(max(len(idx), 4), np.nan)
        last[: len(idx)] = seen[idx]
        self.last_seen = last
        for tier in (self.fine, self.coarse):
            if tier is not None:
                tier.keep_rows(idx)

    def seen_before(self, when: float) -> np.ndarray:
        """1.0 for rows whose last sample is at or before ``when`` (silent since), NaN otherwise."""
        n = len(self.table)
        seen = self.last_seen[:n]
        with np.errstate(invalid="ignore"):
            return np.where(seen <= when, 1.0, np.nan)

    def latest(self) -> np.ndarray:
        """Each row's value in the newest snapshot (NaN where it had none)."""
        tier = self.fine
        assert tier is not None
        nrows = len(self.table)
        if tier.n == tier.lo:
            return np.full(nrows, np.nan)
        tier.grow_rows(nrows)
        return tier.vals[:nrows, tier.n - 1]

    def view(self, start: float) -> tuple[np.ndarray, np.ndarray]:
        """Columns covering ``start`` onwards: the fine tier if it reaches back that far, else the coarse one."""
        nrows = len(self.table)
        fine = self.fine
        assert fine is not None
        if self.coarse is not None and fine.oldest() > start and self.coarse.oldest() < fine.oldest():
            return self.coarse.view(nrows)
        return fine.view(nrows)

    def nbytes(self) -> int:
        """Bytes held by the value arrays of both tiers."""
        return sum(t.nbytes() for t in (self.fine, self.coarse) if t is not None)
