"""Instant vectors over a label table, and the set operations on them: joins, and/or/unless, aggregation.

A :class:`Vector` is dense over its table: ``values[i]`` is row i's value, NaN where the row has no sample.
Everything expensive (matching label keys, grouping) is computed once per table version and presence
pattern and cached, so a steady state cycle is a handful of numpy operations per rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fsincident.core import FsIncidentError, Labels
from fsincident.expr.history import Table


class ExprError(FsIncidentError):
    """An expression is invalid (at load) or failed to evaluate (at run time)."""

    def __init__(self, message: str, *, column: int | None = None):
        super().__init__(message)
        self.column = column


class Vector:
    """Values (NaN = absent) for each row of ``table``."""

    __slots__ = ("table", "values")

    def __init__(self, table: Table, values: np.ndarray):
        self.table = table
        self.values = values

    def present(self) -> np.ndarray:
        """Boolean mask of rows with a value."""
        return ~np.isnan(self.values)

    def items(self) -> list[tuple[Labels, float]]:
        """The present series as (labels, value) pairs."""
        idx = np.flatnonzero(self.present())
        return [(self.table.labels[i], float(self.values[i])) for i in idx]


@dataclass(frozen=True)
class Match:
    """Label matching of a binary operation: all labels (default), ``on`` some, or ``ignoring`` some."""

    mode: str = "all"  # all | on | ignoring
    names: tuple[str, ...] = ()

    def key(self) -> Callable[[Labels], Hashable]:
        if self.mode == "on":
            names = self.names
            return lambda lab: tuple(lab.get(n, "") for n in names)
        if self.mode == "ignoring":
            ign = frozenset(self.names)
            return lambda lab: tuple(kv for kv in lab.items() if kv[0] not in ign)
        return lambda lab: lab

    def describe(self) -> str:
        return "all labels" if self.mode == "all" else f"{self.mode}({','.join(self.names)})"


DEFAULT_MATCH = Match()


@dataclass(frozen=True)
class LabelFilter:
    """``labels.NAME == "v"`` / ``!=``: a row filter applied by ``and``."""

    name: str
    op: str
    value: str

    def mask(self, table: Table, cache: Caches) -> np.ndarray:
        key = ("lf", table.uid, table.version, len(table), self)
        m = cache.get(key)
        if m is None:
            vals = [lab.get(self.name, "") for lab in table.labels]
            eq = np.fromiter((v == self.value for v in vals), dtype=bool, count=len(vals))
            m = eq if self.op == "==" else ~eq
            cache.put(key, m)
        return m


class Caches:
    """Bounded memos shared by all rules of a RuleSet.

    ``get``/``put`` hold derived structures whose keys include table uid/version and presence (join maps, masks,
    groupings), within a byte budget; ``result``/``keep`` hold window-function results for one evaluation instant,
    so rules (and ``resolve_expr``) that compute the same window at the same time compute it once.
    """

    def __init__(self, limit: int = 4096, budget: int = 128 << 20):
        self._d: dict[Hashable, Any] = {}
        self.limit = limit
        self.budget = budget
        self._bytes = 0
        self._now: float | None = None
        self._results: dict[Hashable, Any] = {}

    def get(self, key: Hashable) -> Any:
        return self._d.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        size = _nbytes(value)
        if len(self._d) >= self.limit or self._bytes + size > self.budget:
            self._d.clear()
            self._bytes = 0
        self._d[key] = value
        self._bytes += size

    def result(self, now: float, key: Hashable) -> Any:
        return self._results.get(key) if now == self._now else None

    def keep(self, now: float, key: Hashable, value: Any) -> None:
        if now != self._now:
            self._results.clear()
            self._now = now
        self._results[key] = value


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value) + 64
    if isinstance(value, Table):
        return 64 * len(value) + 64
    return 64


def _pair_key(kind: str, a: Vector, b: Vector, match: Match) -> tuple:
    ta, tb = a.table, b.table
    return (kind, ta.uid, ta.version, tb.uid, tb.version, match, _presence_key(a), _presence_key(b))


def _presence_key(v: Vector) -> int:
    return hash(np.packbits(~np.isnan(v.values)).tobytes())


def align(a: Vector, b: Vector, match: Match, cache: Caches) -> tuple[Table, np.ndarray, np.ndarray]:
    """Pair a's and b's series on their match keys; returns (result table, a values, b values) aligned.

    One-to-one or many-to-one: the result has the rows (labels) of the side with several series per key.
    Raises ExprError for many-to-many.
    """
    if a.table is b.table and match.mode == "all":
        return a.table, a.values, b.values
    key = _pair_key("join", a, b, match)
    hit = cache.get(key)
    if hit is None:
        try:
            hit = _build_join(a, b, match)
        except ExprError as e:
            hit = e
        cache.put(key, hit)
    if isinstance(hit, ExprError):
        raise ExprError(str(hit))
    side, idx = hit
    if side == "a":
        bv = np.where(idx >= 0, b.values[np.maximum(idx, 0)] if len(b.values) else np.nan, np.nan)
        return a.table, a.values, bv
    av = np.where(idx >= 0, a.values[np.maximum(idx, 0)] if len(a.values) else np.nan, np.nan)
    return b.table, av, b.values


def _keys(v: Vector, kf: Callable[[Labels], Hashable]) -> tuple[dict[Hashable, int], Hashable | None]:
    out: dict[Hashable, int] = {}
    dup = None
    labels = v.table.labels
    for i in np.flatnonzero(~np.isnan(v.values)).tolist():
        k = kf(labels[i])
        if k in out:
            dup = k
        else:
            out[k] = i
    return out, dup


def _build_join(a: Vector, b: Vector, match: Match) -> tuple[str, np.ndarray]:
    kf = match.key()
    bmap, bdup = _keys(b, kf)
    if bdup is None:
        idx = np.full(len(a.table), -1, dtype=np.intp)
        labels = a.table.labels
        for i in np.flatnonzero(~np.isnan(a.values)).tolist():
            j = bmap.get(kf(labels[i]))
            if j is not None:
                idx[i] = j
        return "a", idx
    amap, adup = _keys(a, kf)
    if adup is not None:
        raise ExprError(
            f"many-to-many matching on {match.describe()}: several series on both sides share {_show(bdup)}; "
            'use on("...") or ignoring("...") to choose the labels to match on, or aggregate one side'
        )
    idx = np.full(len(b.table), -1, dtype=np.intp)
    labels = b.table.labels
    for j in np.flatnonzero(~np.isnan(b.values)).tolist():
        i = amap.get(kf(labels[j]))
        if i is not None:
            idx[j] = i
    return "b", idx


def _show(key: Hashable) -> str:
    if isinstance(key, Labels):
        return repr(key)
    if isinstance(key, tuple) and all(isinstance(x, tuple) for x in key):
        return "{" + ", ".join(f'{k}="{v}"' for k, v in key) + "}"
    return repr(key)


def set_and(a: Vector, b: Vector, match: Match, cache: Caches) -> Vector:
    """a's series that have a matching series in b (values from a)."""
    keep = _matched(a, b, match, cache)
    return Vector(a.table, np.where(keep, a.values, np.nan))


def set_unless(a: Vector, b: Vector, match: Match, cache: Caches) -> Vector:
    """a's series that have no matching series in b."""
    keep = _matched(a, b, match, cache)
    return Vector(a.table, np.where(keep, np.nan, a.values))


def _matched(a: Vector, b: Vector, match: Match, cache: Caches) -> np.ndarray:
    if a.table is b.table and match.mode == "all":
        return ~np.isnan(b.values)
    key = _pair_key("and", a, b, match)
    m = cache.get(key)
    if m is None:
        kf = match.key()
        keys = {kf(b.table.labels[j]) for j in np.flatnonzero(~np.isnan(b.values)).tolist()}
        m = np.zeros(len(a.table), dtype=bool)
        labels = a.table.labels
        for i in np.flatnonzero(~np.isnan(a.values)).tolist():
            if kf(labels[i]) in keys:
                m[i] = True
        cache.put(key, m)
    return m


def set_or(a: Vector, b: Vector, match: Match, cache: Caches) -> Vector:
    """All of a's series, plus b's series that match none of a's."""
    if a.table is b.table and match.mode == "all":
        return Vector(a.table, np.where(np.isnan(a.values), b.values, a.values))
    key = _pair_key("or", a, b, match)
    hit = cache.get(key)
    if hit is None:
        kf = match.key()
        akeys = {kf(a.table.labels[i]) for i in np.flatnonzero(~np.isnan(a.values)).tolist()}
        extra = [j for j in np.flatnonzero(~np.isnan(b.values)).tolist() if kf(b.table.labels[j]) not in akeys]
        table = Table(list(a.table.labels) + [b.table.labels[j] for j in extra])
        hit = (table, np.asarray(extra, dtype=np.intp))
        cache.put(key, hit)
    table, extra = hit
    return Vector(table, np.concatenate([a.values, b.values[extra]]))


# ------------------------------------------------------------------------------------------------ aggregation

AGGREGATIONS = ("sum", "avg", "min", "max", "count", "stddev", "quantile")


def _groups(table: Table, by: tuple[str, ...] | None, without: tuple[str, ...] | None, cache: Caches):
    key = ("grp", table.uid, table.version, len(table), by, without)
    hit = cache.get(key)
    if hit is None:
        gmap: dict[Labels, int] = {}
        gid = np.empty(len(table), dtype=np.intp)
        out: list[Labels] = []
        ign = frozenset(without or ())
        for i, lab in enumerate(table.labels):
            if by is not None:
                g = Labels({n: lab[n] for n in by if n in lab})
            elif without is not None:
                g = Labels([kv for kv in lab.items() if kv[0] not in ign])
            else:
                g = Labels()
            j = gmap.get(g)
            if j is None:
                j = gmap[g] = len(out)
                out.append(g)
            gid[i] = j
        hit = (gid, Table(out))
        cache.put(key, hit)
    return hit


def aggregate(
    kind: str,
    v: Vector,
    cache: Caches,
    *,
    by: tuple[str, ...] | None = None,
    without: tuple[str, ...] | None = None,
    q: float | None = None,
) -> Vector:
    """Aggregate v's present series per group (``by`` labels kept, or ``without`` labels dropped, or all)."""
    gid, out = _groups(v.table, by, without, cache)
    n = len(out)
    present = ~np.isnan(v.values)
    g = gid[: len(v.values)][present]
    x = v.values[present]
    cnt = np.bincount(g, minlength=n).astype(np.float64)
    empty = cnt == 0
    with np.errstate(all="ignore"):
        if kind == "count":
            res = cnt
        elif kind in ("sum", "avg", "stddev"):
            s = np.bincount(g, weights=x, minlength=n)
            res = s if kind == "sum" else s / cnt
            if kind == "stddev":
                d = x - res[g]
                res = np.sqrt(np.bincount(g, weights=d * d, minlength=n) / cnt)
        elif kind == "min":
            res = np.full(n, np.inf)
            np.minimum.at(res, g, x)
        elif kind == "max":
            res = np.full(n, -np.inf)
            np.maximum.at(res, g, x)
        elif kind == "quantile":
            res = _quantile(g, x, n, float(q if q is not None else math.nan))
        else:  # pragma: no cover - guarded at compile time
            raise ExprError(f"unknown aggregation {kind!r}")
    res = np.asarray(res, dtype=np.float64)
    res[empty] = np.nan
    return Vector(out, res)


def _quantile(g: np.ndarray, x: np.ndarray, n: int, q: float) -> np.ndarray:
    res = np.full(n, np.nan)
    if math.isnan(q):
        return res
    order = np.lexsort((x, g))
    gs, xs = g[order], x[order]
    starts = np.searchsorted(gs, np.arange(n), side="left")
    ends = np.searchsorted(gs, np.arange(n), side="right")
    for k in range(n):
        s, e = int(starts[k]), int(ends[k])
        if e <= s:
            continue
        if q < 0:
            res[k] = -math.inf
        elif q > 1:
            res[k] = math.inf
        else:
            rank = q * (e - s - 1)
            lo = math.floor(rank)
            hi = min(lo + 1, e - s - 1)
            w = rank - lo
            res[k] = xs[s + lo] * (1 - w) + xs[s + hi] * w
    return res
