"""Bounded in-memory history per (source, metric): a table of label sets and a column per snapshot.

Retention. A metric that rules read only at the instant keeps a few columns; a metric read by window
functions keeps the columns of its longest ``window + offset`` (the *fine* tier, one column per snapshot,
at most ``FINE_COLUMNS``); spans longer than ``COARSE_FROM`` are also kept in a *coarse* tier of at most
``COARSE_COLUMNS`` columns, each the last value of its bucket (enough for day/week offsets, seasonal
baselines and SLO windows). Columns are kept chronological and contiguous so window functions work on
views, never on copies of the whole history. Each tier is stored time-major (a snapshot is one contiguous
array row), so an append writes contiguous memory and a window is one contiguous slab.

Values. A tier stores float32 *offsets* from a float64 *base* per row (value = offset + base), so memory
is about ``rows × columns × 4`` bytes. A row's base is its first value, and whenever columns are shifted
out (about every tenth of the span, see below) every row is *rebased* on its newest finite value: the
offsets are recomputed in float64 and rounded to float32 again. Offsets therefore only span the values
inside the retained window, and the precision is relative to the variation inside it (float32 keeps 24
bits), not to the magnitude of the values: a counter that grew by 1e6 over the window is kept to ~0.03
(3e-8 of that increase), a unix-timestamp gauge at 1.8e9 that moves a second per second over an hour to
~0.1 ms. A rebase rounds again, so an old value has been rounded about ten times: its error stays below
~1e-6 of the window's variation. Constant rows are exact, as are integers up to 2**24 from the base.
The newest snapshot is also kept as ingested (float64, 8 bytes a row): :meth:`MetricHistory.latest`, the
instant value of most rules and of alert values, is exact.

A history created with ``exact=True`` stores float64 values instead (twice the memory), bit for bit:
replays (rule unit tests and backtests) use it, since their staleness markers are NaNs with a payload
(``STALE_BITS``) that float32 cannot hold and their expected values are compared exactly. A history that
is not exact becomes exact the first time it receives a staleness marker or a finite value whose
magnitude exceeds ``OFFSET_LIMIT`` (offsets between such values could overflow float32).

Allocation. Once the sampling step is known (the median interval of the first columns), a tier is sized
at once to ``span / step × 1.1 + 4`` columns; whenever it is full, the columns that fell out of the span
are shifted out in place, one column at a time (no temporary copy of the tier) — which is when the rows
are rebased — and the array is never regrown while the step holds: peak memory stays at the steady
memory. A tier regrows by a quarter only if snapshots come faster than its size allows (the step is then
learned again). Cells outside the live columns are not initialised (never read, never committed).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np

from fsincident.core import Labels
from fsincident.expr.windows import Offsets

FINE_COLUMNS = 4096
COARSE_COLUMNS = 2048
COARSE_FROM = 6 * 3600.0
STALE_BITS = 0x7FF0000000000002  # Prometheus' staleness marker: a NaN with these bits ends a series at once
ROW_TTL = 3600.0  # a series silent this long (or the metric's span, if longer) is forgotten
OFFSET_LIMIT = 1e37  # a finite value beyond this magnitude makes the history exact (float32 overflows at 3.4e38)
HEADROOM = 1.1  # columns allocated per column the span needs, once the step is known
_STEP_SAMPLES = 3  # column intervals whose median is taken as the step
_UIDS = itertools.count(1)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


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
    """Chronological columns ``ts[lo:n]`` / ``vals[lo:n]``; a column every ``stride`` seconds at most.

    ``vals`` is time-major, (capacity, rows): ``vals[j]`` is the snapshot of column j, contiguous, so an
    append writes one contiguous row and a window is one contiguous slab. It holds float64 values (exact)
    or float32 offsets from ``base`` (one float64 per row); ``newest`` is each row's latest finite value
    (NaN before the first), the base of the next rebase. Cells outside ``lo:n`` are not initialised.
    """

    __slots__ = (
        "_stamps",
        "base",
        "lo",
        "max_columns",
        "n",
        "newest",
        "span",
        "step",
        "stride",
        "ts",
        "vals",
    )

    def __init__(self, rows: int, span: float, max_columns: int, stride: float, exact: bool = False):
        self.span = span
        self.stride = stride
        self.max_columns = max_columns
        self.step = 0.0  # the interval between columns, once learned
        self._stamps: list[float] = []
        cap, r = 4, max(rows, 4)
        self.ts = np.full(cap, np.nan)
        self.vals = np.full((cap, r), np.nan, dtype=np.float64 if exact else np.float32)
        self.base: np.ndarray | None = None if exact else np.zeros(r)
        self.newest: np.ndarray | None = None if exact else np.full(r, np.nan)
        self.lo = 0
        self.n = 0

    @property
    def exact(self) -> bool:
        return self.base is None

    def want(self) -> int:
        """Columns to allocate for the span (0 while the step is unknown)."""
        step = max(self.step, self.stride)
        if step <= 0:
            return 0
        return min(self.max_columns, math.ceil(self.span / step * HEADROOM) + 4)

    # ------------------------------------------------------------------------------------------ rows

    def grow_rows(self, rows: int) -> None:
        have = self.vals.shape[1]
        if rows <= have:
            return
        new_rows = max(rows, have + have // 4 + 4)
        vals = np.empty((self.vals.shape[0], new_rows), dtype=self.vals.dtype)
        lo, n = self.lo, self.n
        vals[lo:n, :have] = self.vals[lo:n]
        vals[lo:n, have:] = np.nan
        self.vals = vals
        if self.base is not None and self.newest is not None:
            self.base = np.concatenate([self.base, np.zeros(new_rows - have)])
            self.newest = np.concatenate([self.newest, np.full(new_rows - have, np.nan)])

    def keep_rows(self, idx: np.ndarray) -> None:
        """Keep only rows ``idx`` (ascending), renumbered 0..len(idx)-1."""
        k, have = len(idx), self.vals.shape[1]
        if k <= have // 2:  # most rows went away: give the memory back
            vals = np.empty((self.vals.shape[0], max(k + k // 4, 4)), dtype=self.vals.dtype)
        else:  # in place (idx[i] >= i, and each gather is copied before it is written)
            vals = self.vals
        for j in range(self.lo, self.n):
            vals[j, :k] = self.vals[j, idx]
        vals[self.lo : self.n, k:] = np.nan
        self.vals = vals
        if self.base is not None and self.newest is not None:
            rows = vals.shape[1]
            base, newest = np.zeros(rows), np.full(rows, np.nan)
            base[:k], newest[:k] = self.base[idx], self.newest[idx]
            self.base, self.newest = base, newest

    # --------------------------------------------------------------------------------------- columns

    def _relocate(self, first: int, cap: int) -> None:
        """Move columns ``first:n`` to ``0:n-first`` (into a new array if ``cap`` differs) and rebase offsets.

        One column at a time (column j + first is never overwritten before it is read), so no temporary
        holds more than one column.
        """
        live = self.n - first
        src = self.vals
        dst = src if cap == src.shape[0] else np.empty((cap, src.shape[1]), dtype=src.dtype)
        ts = self.ts if cap == self.ts.shape[0] else np.empty(cap)
        ts[:live] = self.ts[first : self.n]
        delta = None
        if self.base is not None and self.newest is not None:
            new_base = np.where(np.isfinite(self.newest), self.newest, self.base)
            delta = self.base - new_base
            self.base = new_base
            if not delta.any():
                delta = None
        if delta is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                for j in range(live):  # computed in float64, rounded to float32 on the way out
                    np.add(src[first + j], delta, out=dst[j], casting="same_kind")
        elif dst is not src or first:
            for j in range(live):
                dst[j] = src[first + j]
        self.vals, self.ts = dst, ts
        self.lo, self.n = 0, live

    def _make_room(self, early: bool = False) -> None:
        """Free a column at the end: shift out expired columns, or (re)allocate, or drop the oldest.

        ``early``: the tier holds many more expired columns than its size planned for (the step was
        learned from a burst, or snapshots slowed down): learn the step again and shift out now.
        """
        cap = self.vals.shape[0]
        if self.n < cap and not early:
            return
        live = self.n - self.lo
        slack = max(1, live // 16)
        if self.stride <= 0 and live > 2 * _STEP_SAMPLES and (early or (self.step and self.want() < live + slack)):
            # the snapshots come at another pace than the step predicted: learn it again
            self.step = float(np.median(np.diff(self.ts[self.lo : self.n])))
        want = self.want()
        target = want if want >= live + slack else max(4, int(live * 1.25) + 2)
        target = min(target, self.max_columns)
        if cap > 2 * target and target >= live + slack:  # far too large (a shorter span, a slower pace)
            self._relocate(self.lo, target)
        elif cap >= self.max_columns:
            if live < cap:
                self._relocate(self.lo, cap)
            else:  # at the cap: drop the oldest columns
                self._relocate(self.n - max(1, live - max(1, self.max_columns // 16)), cap)
        elif live + slack <= cap:
            self._relocate(self.lo, cap)  # in place
        else:
            self._relocate(self.lo, target)  # snapshots come faster than planned: grow

    def _learn_step(self, at: float) -> None:
        if self.step:
            return
        self._stamps.append(at)
        if len(self._stamps) > _STEP_SAMPLES:
            self.step = float(np.median(np.diff(self._stamps)))
            self._stamps = []

    def append(self, at: float, rows: np.ndarray, values: np.ndarray, nrows: int) -> None:
        self.grow_rows(nrows)
        if self.n > self.lo and self.stride > 0 and at // self.stride == self.ts[self.n - 1] // self.stride:
            col = self.n - 1  # same bucket: the newest value wins, the column moves to the newest time
            if at < self.ts[col]:
                return
            self.ts[col] = at
        else:
            if self.n > self.lo and at <= self.ts[self.n - 1]:
                return  # out of order or repeated snapshot
            self._learn_step(at)
            self._make_room()
            col = self.n
            self.n += 1
            self.ts[col] = at
        column = self.vals[col]
        column[:] = np.nan
        if len(rows):
            if self.base is None or self.newest is None:
                column[rows] = values
            else:
                fin = np.isfinite(values)
                frows, fvals = (rows, values) if fin.all() else (rows[fin], values[fin])
                fresh = np.isnan(self.newest[frows])
                if fresh.any():  # a row's first finite value is its base
                    self.base[frows[fresh]] = fvals[fresh]
                self.newest[frows] = fvals
                with np.errstate(invalid="ignore"):
                    column[rows] = values - self.base[rows]
        # retention: drop columns older than the span (keep one before it for rate/instant lookups)
        cut = at - self.span
        lo = int(np.searchsorted(self.ts[self.lo : self.n], cut, side="right")) + self.lo - 1
        if lo > self.lo:
            self.lo = lo
            if lo > 4 + (self.n - lo) // 8:  # never, when the size fits the step (it fills up before)
                self._make_room(early=True)

    def make_exact(self) -> None:
        """Switch to float64 values (offsets added to their base), a column at a time."""
        if self.base is None:
            return
        vals = np.empty(self.vals.shape)
        for j in range(self.lo, self.n):
            np.add(self.vals[j], self.base, out=vals[j])
        self.vals = vals
        self.base = None
        self.newest = None

    def view(self, nrows: int) -> tuple[np.ndarray, np.ndarray | Offsets]:
        """(ts, values (nrows, k)): a float64 view (exact) or an Offsets (both time-major underneath)."""
        self.grow_rows(nrows)
        ts = self.ts[self.lo : self.n]
        if self.base is None:
            return ts, self.vals[self.lo : self.n, :nrows].T
        return ts, Offsets(self.vals[self.lo : self.n, :nrows], self.base[:nrows])

    def oldest(self) -> float:
        return float(self.ts[self.lo]) if self.n > self.lo else math.inf

    def nbytes(self) -> int:
        extra = 0 if self.base is None or self.newest is None else self.base.nbytes + self.newest.nbytes
        return int(self.vals.nbytes + self.ts.nbytes + extra)


class MetricHistory:
    """One metric of one source: its label table, a fine tier and (for long spans) a coarse tier.

    ``exact`` keeps float64 values bit for bit (replays); otherwise float32 offsets (module doc).
    """

    __slots__ = (
        "_latest",
        "_next_sweep",
        "coarse",
        "exact",
        "fine",
        "last_at",
        "last_seen",
        "row_ttl",
        "span",
        "table",
    )

    def __init__(self, span: float, row_ttl: float = 0.0, exact: bool = False):
        self.table = Table()
        self.table._index = {}
        self.span = 0.0
        self.row_ttl = ROW_TTL
        self.exact = bool(exact)
        self.fine: Tier | None = None
        self.coarse: Tier | None = None
        self.last_at = -math.inf
        self.last_seen = np.full(4, np.nan)
        self._next_sweep = -math.inf
        self._latest = _frozen(np.empty(0))
        self.set_span(span, row_ttl)

    def set_span(self, span: float, row_ttl: float = 0.0) -> None:
        """Resize retention to ``span`` seconds (a reload may lengthen or shorten it; data is kept).

        A series without samples for ``max(span, row_ttl, ROW_TTL)`` seconds is forgotten.
        """
        span = max(0.0, float(span))
        self.row_ttl = max(span, float(row_ttl), ROW_TTL)
        if self.fine is None:
            self.fine = Tier(0, span, FINE_COLUMNS, 0.0, self.exact)
        self.fine.span = span
        if span > COARSE_FROM:
            stride = span / (COARSE_COLUMNS - COARSE_COLUMNS // 16)  # room to shift columns out at the cap
            if self.coarse is None:
                self.coarse = Tier(len(self.table), span, COARSE_COLUMNS, stride, self.exact)
            self.coarse.span, self.coarse.stride = span, stride
        else:
            self.coarse = None
        self.span = span

    def _tiers(self) -> tuple[Tier, ...]:
        return tuple(t for t in (self.fine, self.coarse) if t is not None)

    def make_exact(self) -> None:
        """Keep float64 values from now on (the float32 offsets held so far are converted)."""
        self.exact = True
        for tier in self._tiers():
            tier.make_exact()

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
        nan = np.isnan(values)
        self.last_seen[rows[~nan]] = at
        latest = np.full(nrows, np.nan)
        latest[rows] = values
        self._latest = _frozen(latest)
        if not self.exact and self._needs_exact(values, nan):
            self.make_exact()
        for tier in self._tiers():
            tier.append(at, rows, values, nrows)
        if at >= self._next_sweep:
            self._next_sweep = at + min(600.0, self.row_ttl / 4 + 1)
            self._forget(at - self.row_ttl)

    @staticmethod
    def _needs_exact(values: np.ndarray, nan: np.ndarray) -> bool:
        """A staleness marker (its NaN payload) or a value too large for float32 offsets."""
        if nan.any() and bool((values[nan].view(np.uint64) == STALE_BITS).any()):
            return True
        with np.errstate(invalid="ignore"):
            big = np.abs(values) > OFFSET_LIMIT
        return bool(big.any()) and bool(np.isfinite(values[big]).any())

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
        self._latest = _frozen(self._latest[idx])
        last = np.full(max(len(idx), 4), np.nan)
        last[: len(idx)] = seen[idx]
        self.last_seen = last
        for tier in self._tiers():
            tier.grow_rows(n)
            tier.keep_rows(idx)

    def seen_before(self, when: float) -> np.ndarray:
        """1.0 for rows whose last sample is at or before ``when`` (silent since), NaN otherwise."""
        n = len(self.table)
        seen = self.last_seen[:n]
        with np.errstate(invalid="ignore"):
            return np.where(seen <= when, 1.0, np.nan)

    def latest(self) -> np.ndarray:
        """Each row's value in the newest snapshot (NaN where it had none): float64 exactly as ingested, read-only.

        (Kept apart from the tiers, 8 bytes a row: instant values, the most read, stay exact.)
        """
        return self._latest

    def view(self, start: float) -> tuple[np.ndarray, np.ndarray | Offsets]:
        """Columns covering ``start`` onwards: the fine tier if it reaches back that far, else the coarse one.

        The values are a float64 array (exact histories) or an :class:`~fsincident.expr.windows.Offsets`
        (float32 offsets and a base per row) that every window kernel reads, a row block at a time.
        """
        nrows = len(self.table)
        fine = self.fine
        assert fine is not None
        if self.coarse is not None and fine.oldest() > start and self.coarse.oldest() < fine.oldest():
            return self.coarse.view(nrows)
        return fine.view(nrows)

    def nbytes(self) -> int:
        """Bytes held by the arrays of both tiers (values, timestamps, per-row bases)."""
        return sum(t.nbytes() for t in self._tiers())
