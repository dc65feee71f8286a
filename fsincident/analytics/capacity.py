"""The capacity report (issue #9): every series a ``predict_linear`` or ``time_to`` rule watches, ranked by the time
until it reaches the rule's threshold, and a trend chart per series.

How a row is computed. The compiled expression of every rule is walked for ``predict_linear`` and ``time_to`` call
nodes. For each call, the metric it reads is rebuilt as the rule engine holds it — a
:class:`~fsincident.expr.MetricHistory` of the call's window (``window + offset``) — from the recorded series history
(``history.range``: the fine or coarse buckets, at most ``MAX_POINTS`` per series, each bucket average placed in the
middle of its bucket; on a ``prometheus`` source a range query) with the source's current snapshot appended as the
newest column. The call node itself is then evaluated on that history with the expression engine at ``now`` (so a
selector, ``offset=`` and the kernels behave exactly as in the daemon), and per series:

* ``current``: the newest sample (at most the call's window + offset old); ``trend_per_hour``: the least-squares
  slope of the call's window (``deriv``) per hour; ``value``: the call's value (the prediction, or the seconds);
* ``time_to(m, threshold, window)``: ``threshold`` is the call's argument and ``seconds_to_exhaustion`` the call's
  value (None when NaN: flat, moving away, or beyond the threshold for its whole window);
* ``predict_linear(m, window, horizon)``: the threshold is the other side of the comparison the call is part of
  (``predict_linear(...) < 0``: a number, or a series paired as the engine pairs them), the direction is the
  comparison's (``<``: exhausted when the line falls to the threshold, ``>``: when it rises to it), and
  ``seconds_to_exhaustion`` is when the window's least-squares line reaches the threshold: 0 when the line is
  already past it (even when it is heading back), None when it is heading away (or the call is not compared with a
  threshold, or only with ``==``/``!=``). While the line is not past the threshold, the rule fires exactly when that
  time is within its horizon (``horizon_seconds``; for ``time_to(...) < N`` it is N).

Rows are ranked by ``seconds_to_exhaustion`` (None last), then by rule and labels. ``query:`` rules whose call reads
``value`` use a range query of the rule's query when the source runs them; otherwise they are left out.
"""

from __future__ import annotations

import ast
import asyncio
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from fsincident.config import Config, Rule
from fsincident.core import FsIncidentError, Labels, ensure_utc, isoformat
from fsincident.expr import Caches, ExprError, Table, Vector
from fsincident.expr import windows as kernels
from fsincident.expr.lang import Cmp, Node, Window
from fsincident.matchers import Matcher
from fsincident.obs import get_logger

log = get_logger("fsincident.analytics.capacity")

CAPACITY_FUNCTIONS = ("predict_linear", "time_to")
"""The rule-language calls whose series the capacity report lists."""
MAX_POINTS = 720
"""History points read per series for one call's window (buckets are merged beyond that)."""
CHART_POINTS = 400
"""History points per series drawn in a capacity chart."""

_UP = {ast.Gt: "up", ast.GtE: "up", ast.Lt: "down", ast.LtE: "down"}
_PAST: dict[type, Callable[[float, float], bool]] = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
}
_MIRROR = {ast.Gt: ast.Lt, ast.GtE: ast.LtE, ast.Lt: ast.Gt, ast.LtE: ast.GtE}
_QUERY = "\x00query"


@dataclass(frozen=True, eq=False)
class Watch:
    """One ``predict_linear``/``time_to`` call of a rule: the node, the comparison it is part of, and its text."""

    rule: Rule
    call: Window
    compare: Cmp | None
    """The comparison whose one side is the call (``predict_linear(...) < 0``), else None."""
    call_left: bool
    text: str

    @property
    def metric(self) -> str:
        return self.call.ref.selector.metric or ""

    @property
    def query(self) -> str | None:
        """The rule's ``query:`` when the call reads its result (``value``), else None."""
        return self.rule.query if self.rule.query is not None and self.metric == "value" else None

    @property
    def key(self) -> tuple[Any, ...]:
        """What to load for this call: one read serves every call with the same key."""
        if self.query is not None:
            return (self.rule.source, _QUERY, self.query)
        return (self.rule.source, self.metric, self.call.ref.selector.matchers)


def _children(node: Node) -> Iterator[Node]:
    for f in fields(node):  # type: ignore[arg-type]
        v = getattr(node, f.name)
        if isinstance(v, Node):
            yield v
        elif isinstance(v, list | tuple):
            yield from (x for x in v if isinstance(x, Node))


def _walk(node: Node, parent: Node | None = None) -> Iterator[tuple[Node, Node | None]]:
    stack: list[tuple[Node, Node | None]] = [(node, parent)]
    while stack:
        n, p = stack.pop()
        yield n, p
        stack.extend((c, n) for c in reversed(list(_children(n))))


def _call_texts(text: str) -> dict[tuple[str, int], str]:
    """The source text of each function call in ``text`` by (name, column in UTF-8 bytes, as the compiler sees)."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return {}
    out = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in CAPACITY_FUNCTIONS:
            out[(n.func.id, n.col_offset)] = ast.get_source_segment(text, n) or n.func.id
    return out


def watched(config: Config) -> list[Watch]:
    """Every ``predict_linear``/``time_to`` call of the config's rules, in rule order; never fails."""
    out: list[Watch] = []
    for rule in config.rules:
        texts: dict[tuple[str, int], str] | None = None
        for node, parent in _walk(rule.expr.root):
            if not (isinstance(node, Window) and node.name in CAPACITY_FUNCTIONS):
                continue
            if texts is None:
                texts = _call_texts(rule.expr.text)
            compare = parent if isinstance(parent, Cmp) and (parent.left is node or parent.right is node) else None
            left = compare is not None and compare.left is node
            text = texts.get((node.name, node.col), node.name)
            out.append(Watch(rule, node, compare, left, text))
    return out


# ------------------------------------------------------------------------------------------------ loading

Points = list[tuple[Labels, np.ndarray, np.ndarray]]
"""Per series: its labels, chronological unix seconds and values (finite values only)."""


@dataclass
class _Loaded:
    """A call's recorded data per series, or a note why there is none."""

    series: Points
    error: str | None = None


def _points(series: Sequence[tuple[Any, Sequence[Sequence[float]]]], mid: bool, end: float) -> Points:
    """Finite points per series; with ``mid`` each bucket (named by its start) moves to its middle (the last one to
    the middle of its part before ``end``)."""
    out: Points = []
    for labels, pts in series:
        if not len(pts):
            continue
        arr = np.asarray(pts, dtype=np.float64)[:, :2]
        arr = arr[np.isfinite(arr[:, 1])]
        if len(arr):
            out.append((labels if isinstance(labels, Labels) else Labels(labels), arr[:, 0], arr[:, 1]))
    if mid and out:
        times = np.unique(np.concatenate([ts for _, ts, _ in out]))
        if len(times) > 1:
            width = float(np.min(np.diff(times)))
            out = [(lab, ts + np.minimum(width, np.maximum(0.0, end - ts)) / 2, v) for lab, ts, v in out]
    return out


async def _load(history: Any, watch: Watch, start: datetime, end: datetime) -> _Loaded:
    """Read the call's history in ``[start, end]``; a history that cannot answer gives no points and a note."""
    if history is None:
        return _Loaded([], "no series history (history is disabled)")
    source = watch.rule.source
    try:
        if watch.query is not None:
            query_range = getattr(history, "query_range", None)
            if query_range is None:
                return _Loaded([], f"source {source!r} does not run range queries")
            step = max(1, math.ceil((end - start).total_seconds() / (MAX_POINTS - 1)))
            result = await query_range(source, watch.query, start, end, step)
            return _Loaded(_points(result, False, end.timestamp()))
        data = await history.range(
            source, watch.metric, watch.call.ref.selector.matchers, start=start, end=end, max_points=MAX_POINTS
        )
    except FsIncidentError as e:
        return _Loaded([], getattr(e, "message", None) or str(e))
    kind = getattr(history, "source_kind", lambda _s: None)(source)
    return _Loaded(_points([(d.labels, d.points) for d in data], kind != "prometheus", end.timestamp()))


# ------------------------------------------------------------------------------------------------ evaluation


class _Ctx:
    """The expression context of one call: its metric's recorded points; other metrics from the snapshot."""

    def __init__(self, now: float, cache: Caches, lookup: Callable[[str], Any]):
        self.now = now
        self.lookback: float | None = None
        self.cache = cache
        self.seen = 0
        self._lookup = lookup

    def metric(self, name: str) -> Any:
        return self._lookup(name)


class _Matrix:
    """One metric's rows as the expression engine reads a :class:`~fsincident.expr.MetricHistory` (its label
    ``table``, ``view``, ``latest``, ``seen_before``, ``last_at``), held as one float64 ``(rows, columns)`` matrix
    built at once from the recorded points and the snapshot (an exact history; no per-column ingest)."""

    def __init__(self, series: Points, snap_at: float | None, snap: Mapping[Labels, float] | None):
        labels = [lab for lab, _, _ in series]
        index = {lab: i for i, lab in enumerate(labels)}
        parts = [ts for _, ts, _ in series]
        newest = max((float(ts[-1]) for ts in parts if len(ts)), default=-math.inf)
        use_snap = snap_at is not None and bool(snap) and snap_at > newest
        if use_snap:
            assert snap is not None
            for lab in snap:
                if lab not in index:
                    index[lab] = len(labels)
                    labels.append(lab)
            parts.append(np.array([snap_at]))
        self.ts = np.unique(np.concatenate(parts)) if parts else np.empty(0)
        self.vals = np.full((len(labels), len(self.ts)), np.nan)
        for i, (_, ts, v) in enumerate(series):
            self.vals[i, np.searchsorted(self.ts, ts)] = v
        if use_snap:
            assert snap is not None
            rows = np.fromiter((index[lab] for lab in snap), dtype=np.intp, count=len(snap))
            self.vals[rows, -1] = np.fromiter(snap.values(), dtype=np.float64, count=len(snap))
        self.table = Table(labels)
        self.table._index = index
        self.last_at = float(self.ts[-1]) if len(self.ts) else -math.inf

    def view(self, start: float) -> tuple[np.ndarray, np.ndarray]:
        return self.ts, self.vals

    def latest(self) -> np.ndarray:
        if not len(self.ts):
            return np.full(len(self.table), np.nan)
        return self.vals[:, -1]

    def seen_before(self, when: float) -> np.ndarray:
        seen = np.where(np.isnan(self.vals), -np.inf, self.ts[None, :]).max(axis=1, initial=-np.inf)
        return np.where(np.isfinite(seen) & (seen <= when), 1.0, np.nan)


def _snapshot_metrics(snapshot: Callable[[str], Any] | None, source: str) -> tuple[float | None, Mapping[str, Any]]:
    snap = snapshot(source) if snapshot is not None else None
    if snap is None or getattr(snap, "at", None) is None or getattr(snap, "error", None):
        return None, {}
    return snap.at.timestamp(), snap.metrics


def _as_labels(series: Mapping[Any, float]) -> dict[Labels, float]:
    return {k if isinstance(k, Labels) else Labels(k): float(v) for k, v in series.items()}


def _thresholds(other: Any, match: Any) -> Callable[[Labels], float | None]:
    """Per series, the threshold the other side of a comparison gives it: a number for every series, or the value
    of the other side's series with the same match key (all labels, or the comparison's ``on``/``ignoring``), as
    the engine pairs them; None where nothing pairs (or several series do)."""
    if isinstance(other, Vector):
        kf = match.key()
        pairs: dict[Any, float | None] = {}
        for lab, v in other.items():
            k = kf(lab)
            pairs[k] = None if k in pairs else _finite(v)
        return lambda lab: pairs.get(kf(lab))
    value = _finite(other) if isinstance(other, float | int) else None
    return lambda _lab: value


def _finite(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _evaluate(
    watch: Watch,
    loaded: _Loaded,
    snapshot: Callable[[str], Any] | None,
    now: datetime,
    cache: Caches,
) -> list[dict[str, Any]]:
    """The rows of one call (pure CPU work, run in a thread); raises ExprError when the call cannot be evaluated."""
    call, rule = watch.call, watch.rule
    t_now = now.timestamp()
    snap_at, snap_metrics = _snapshot_metrics(snapshot, rule.source)
    if watch.query is None:
        own = _Matrix(loaded.series, snap_at, _as_labels(snap_metrics.get(watch.metric, {})))
    else:  # a query's result is not in the snapshot
        own = _Matrix(loaded.series, None, None)
    others: dict[str, _Matrix] = {}

    def lookup(name: str) -> Any:
        if name == watch.metric:
            return own
        if name not in others:
            others[name] = _Matrix([], snap_at, _as_labels(snap_metrics.get(name, {})))
        return others[name]

    ctx = _Ctx(t_now, cache, lookup)
    result = call.ev(ctx)  # the engine's own evaluation of the call at now
    table = own.table
    n = len(table)
    if n == 0:
        return []
    if result.table is table:
        values = np.asarray(result.values, dtype=np.float64)
    else:  # (the call read nothing: an empty vector)
        values = np.full(n, np.nan)
    end = t_now - call.offset
    ts, vals = own.ts, own.vals
    current = kernels.last_over_time(ts, vals, t_now, call.span)  # the newest sample, whatever the offset
    slope = kernels.deriv(ts, vals, end, call.window)
    fitted = kernels.predict_linear(ts, vals, end, call.window, 0.0)
    mask = call.ref.mask(own, cache)

    other: Any = None
    threshold_of = _thresholds(None, None)
    direction: str | None = None
    past: Callable[[float, float], bool] | None = None
    if watch.compare is not None:
        other_node = watch.compare.right if watch.call_left else watch.compare.left
        try:
            other = other_node.ev(ctx)
        except (ExprError, ArithmeticError, TypeError, ValueError):
            other = None
        threshold_of = _thresholds(other, watch.compare.match)
        op = watch.compare.op if watch.call_left else _MIRROR.get(watch.compare.op)  # as "call OP other"
        direction = _UP.get(op) if op is not None else None
        past = _PAST.get(op) if op is not None else None

    horizon: float | None = None
    if call.name == "predict_linear":
        horizon = call.extra[0]
    elif direction == "down" and not isinstance(other, Vector):
        horizon = _finite(other)  # time_to(...) < 3600: the rule looks this far ahead

    rows = []
    for i in range(n):
        if mask is not None and not mask[i]:
            continue
        cur, val = _finite(current[i]), _finite(values[i])
        if cur is None and val is None:
            continue  # no sample in the window
        labels = table.labels[i]
        s = _finite(slope[i])
        seconds: float | None = None
        threshold: float | None
        if call.name == "time_to":
            threshold = call.extra[0]
            seconds = None if val is None else max(0.0, val - call.offset)
        else:
            threshold = threshold_of(labels)
            line = _finite(fitted[i])
            if threshold is not None and past is not None and line is not None:
                if past(line, threshold):
                    seconds = 0.0
                elif s is not None and ((s > 0) if direction == "up" else (s < 0)):
                    seconds = max(0.0, (threshold - line) / s - call.offset)
        exhausted = None
        if seconds is not None:
            try:
                exhausted = isoformat(now + timedelta(seconds=seconds))
            except OverflowError:
                seconds = None
        rows.append(
            {
                "rule": rule.key,
                "source": rule.source,
                "metric": watch.metric,
                "labels": labels.as_dict(),
                "function": call.name,
                "expr": rule.expr.text,
                "call": watch.text,
                "query": watch.query,
                "threshold": threshold,
                "current": cur,
                "value": val,
                "trend_per_hour": s * 3600.0 if s is not None else None,
                "window_seconds": call.window,
                "horizon_seconds": horizon,
                "seconds_to_exhaustion": seconds,
                "exhausted_at": exhausted,
                "severity": str(rule.severity.value),
            }
        )
    return rows


def _rank(row: Mapping[str, Any]) -> tuple[Any, ...]:
    s = row["seconds_to_exhaustion"]
    return (s is None, s if s is not None else 0.0, row["rule"], sorted(row["labels"].items()), row["call"])


def _compute(
    watches: Sequence[Watch], loaded: Sequence[_Loaded], snapshot: Callable[[str], Any] | None, now: datetime
) -> list[dict[str, Any]]:
    cache = Caches()
    rows: list[dict[str, Any]] = []
    for watch, data in zip(watches, loaded, strict=True):
        try:
            rows.extend(_evaluate(watch, data, snapshot, now, cache))
        except ExprError as e:
            log.warning("capacity_call_failed", rule=watch.rule.key, call=watch.text, error=str(e))
        except Exception:  # a defect in one call costs its rows, not the report
            log.exception("capacity_call_crashed", rule=watch.rule.key, call=watch.text)
    rows.sort(key=_rank)
    return rows


async def capacity_report(
    config: Config, snapshot: Callable[[str], Any], history: Any, now: datetime, *, limit: int = 100
) -> list[dict[str, Any]]:
    """Every series a ``predict_linear``/``time_to`` rule watches, ranked by time to exhaustion (at most ``limit``
    rows); never raises for missing data: a series or source without history is evaluated on what there is (the
    snapshot alone gives no trend) and a history read that fails is logged and skipped."""
    now = ensure_utc(now)  # type: ignore[assignment]
    watches = watched(config)
    if not watches:
        return []
    first: dict[tuple[Any, ...], Watch] = {}
    spans: dict[tuple[Any, ...], float] = {}
    for w in watches:
        first.setdefault(w.key, w)
        spans[w.key] = max(spans.get(w.key, 0.0), w.call.span)
    loaded_by_key: dict[tuple[Any, ...], _Loaded] = {}
    for key, w in first.items():  # one read per metric (or query) and source, for the longest window on it
        data = await _load(history, w, now - timedelta(seconds=spans[key]), now)
        if data.error:
            log.info("capacity_history_unavailable", rule=w.rule.key, source=w.rule.source, reason=data.error)
        loaded_by_key[key] = data
    loaded = [loaded_by_key[w.key] for w in watches]
    rows = await asyncio.to_thread(_compute, watches, loaded, snapshot, now)
    return rows[: max(0, limit)]


# ------------------------------------------------------------------------------------------------ charts


def duration_words(seconds: float) -> str:
    """A duration in its two largest units, rounded down (``3d 4h``, ``2h``, ``45s``); never fails for a number."""
    s = int(max(0.0, seconds)) if math.isfinite(seconds) else 0
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    big = next(i for i, (_, size) in enumerate(units) if s >= size or size == 1)
    parts = []
    for unit, size in units[big : big + 2]:
        n, s = divmod(s, size)
        if n or not parts:
            parts.append(f"{n}{unit}")
    return " ".join(parts)


def chart_title(row: Mapping[str, Any]) -> str:
    """The title of a row's chart: the series and when it is exhausted; never fails for a report row."""
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(row.get("labels", {}).items()))
    name = row.get("query") or row.get("metric") or ""
    series = f"{name}{{{inner}}}" if inner else name
    s = row.get("seconds_to_exhaustion")
    if s is None:
        tail = "not heading to the threshold"
    elif s <= 0:
        tail = "threshold reached"
    else:
        tail = f"threshold in {duration_words(s)}"
    text = f"{row.get('rule', '')}: {series} — {tail}"
    return text if len(text) <= 110 else text[:109] + "…"


def projection(
    row: Mapping[str, Any], now: datetime, lookback: timedelta
) -> tuple[list[tuple[datetime, float]], datetime | None]:
    """The dashed line of a row's chart (from ``now`` along the trend, to the threshold when that is at most two
    lookbacks ahead, else two lookbacks long) and the exhaustion time to mark (None when beyond the line's end)."""
    slope = _finite(row.get("trend_per_hour"))
    current = _finite(row.get("current"))
    threshold = _finite(row.get("threshold"))
    seconds = _finite(row.get("seconds_to_exhaustion"))
    if slope is None or current is None:
        return [], None
    per_s = slope / 3600.0
    reach = 2 * lookback.total_seconds()
    start = current
    if seconds is not None and seconds > 0 and threshold is not None and per_s != 0:
        start = threshold - per_s * seconds  # the fitted line at now (it reaches the threshold at exhaustion)
    ahead = min(seconds, reach) if seconds is not None and seconds > 0 else reach / 4
    end = now + timedelta(seconds=ahead)
    mark = None
    if seconds is not None and seconds <= reach:
        mark = now + timedelta(seconds=seconds)
    return [(now, start), (end, start + per_s * ahead)], mark


async def _recorded(row: Mapping[str, Any], history: Any, start: datetime, end: datetime) -> list[tuple[float, float]]:
    labels = dict(row.get("labels") or {})
    if row.get("query"):
        query_range = getattr(history, "query_range", None)
        if query_range is None:
            return []
        step = max(1, math.ceil((end - start).total_seconds() / (CHART_POINTS - 1)))
        result = await query_range(row["source"], row["query"], start, end, step)
        return next((list(pts) for lab, pts in result if dict(lab) == labels), [])
    matchers = [Matcher.make(k, "=", v) for k, v in sorted(labels.items())]
    data = await history.range(row["source"], row["metric"], matchers, start=start, end=end, max_points=CHART_POINTS)
    return next(([(p[0], p[1]) for p in d.points] for d in data if dict(d.labels) == labels), [])


async def capacity_chart(
    row: Mapping[str, Any], history: Any, now: datetime, *, lookback: timedelta = timedelta(days=2), tz: str = "UTC"
) -> bytes | None:
    """A capacity row's recorded series over ``lookback`` with its projection to the threshold, as PNG bytes; None
    when there is no history or it holds nothing for the series (a failed read is logged, never raised)."""
    from fsincident.analytics import charts  # matplotlib only when a chart is drawn

    if history is None:
        return None
    now = ensure_utc(now)  # type: ignore[assignment]
    try:
        pts = await _recorded(row, history, now - lookback, now)
    except FsIncidentError as e:
        log.info("capacity_chart_unavailable", rule=row.get("rule"), reason=getattr(e, "message", None) or str(e))
        return None
    if not any(math.isfinite(v) for _, v in pts):
        return None
    points = [(datetime.fromtimestamp(t, UTC), float(v)) for t, v in pts]
    line, mark = projection(row, now, lookback)
    return await asyncio.to_thread(
        charts.trend_chart,
        points,
        projection=line,
        threshold=_finite(row.get("threshold")),
        exhausted_at=mark,
        title=chart_title(row),
        tz=tz,
    )
