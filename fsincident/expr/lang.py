"""The rule language: a validated subset of Python syntax compiled once into a tree of vector operations.

Values are scalars (float), strings (only as arguments) and instant vectors (:class:`Vector`). NaN means
"absent" throughout: comparisons are filters (``x > 90`` keeps x's series above 90, with x's value), and a
rule fires for every series present in its result.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fsincident.core import parse_duration
from fsincident.expr import windows
from fsincident.expr.history import STALE_BITS, MetricHistory, Table
from fsincident.expr.vector import (
    AGGREGATIONS,
    DEFAULT_MATCH,
    Caches,
    ExprError,
    LabelFilter,
    Match,
    Vector,
    aggregate,
    align,
    set_and,
    set_or,
    set_unless,
)
from fsincident.matchers import MatcherError, Selector, parse_selector

MAX_CONSTANT = 10**15
MAX_LENGTH = 4096
MAX_DEPTH = 100
MAX_ROUND_DIGITS = 100
DEFAULT_LOOKBACK = 300.0  # seconds an offset() lookup may reach back for a sample, like Prometheus
NODATA_MEMORY = 86400.0  # nodata() reports a silent series for this long before forgetting it

# Names with a fixed meaning; every other bare name is a metric of the rule's source.
RESERVED = frozenset({"value", "labels", "True", "False", "None", "nan", "inf"})
CONSTANTS = {"nan": math.nan, "inf": math.inf, "True": 1.0, "False": 0.0}

# Window functions: name -> (extra positional parameters after the metric, whether the window comes last).
WINDOW_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "rate": (),
    "increase": (),
    "delta": (),
    "deriv": (),
    "avg_over_time": (),
    "min_over_time": (),
    "max_over_time": (),
    "sum_over_time": (),
    "count_over_time": (),
    "last_over_time": (),
    "stddev_over_time": (),
    "changes": (),
    "resets": (),
    "nodata": (),
    "zscore": (),
    "ewma": (),
    "ewma_zscore": (),
    "spike": (),
    "flatline": (),
}

# name -> signature shown in errors
FUNCTIONS: dict[str, str] = {
    **{n: f"{n}(metric, window[, offset=])" for n in WINDOW_FUNCTIONS},
    "quantile_over_time": "quantile_over_time(q, metric, window[, offset=])",
    "predict_linear": "predict_linear(metric, window, horizon[, offset=])",
    "time_to": "time_to(metric, threshold, window[, offset=])",
    "baseline": "baseline(metric, period[, seasons=3, width='30m'])",
    "offset": "offset(metric, duration)",
    "absent": "absent(metric)",
    "select": "select('metric{label=\"value\", ...}')",
    "sum": "sum(v[, by=|without=])",
    "avg": "avg(v[, by=|without=])",
    "min": "min(v[, by=|without=]) or min(a, b)",
    "max": "max(v[, by=|without=]) or max(a, b)",
    "count": "count(v[, by=|without=])",
    "stddev": "stddev(v[, by=|without=])",
    "quantile": "quantile(q, v[, by=|without=])",
    "on": 'on("label,...", a OP b)',
    "ignoring": 'ignoring("label,...", a OP b)',
    "unless": "unless(a, b)",
    "abs": "abs(x)",
    "round": "round(x[, digits])",
    "clamp": "clamp(x, lo, hi)",
    "clamp_min": "clamp_min(x, lo)",
    "clamp_max": "clamp_max(x, hi)",
    "scalar": "scalar(v)",
    "time": "time()",
    "isnan": "isnan(x)",
    "float": "float(x)",
    "int": "int(x)",
    "str": "str(x)",
}

_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_CMP: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Gt: (">", operator.gt),
    ast.Lt: ("<", operator.lt),
    ast.GtE: (">=", operator.ge),
    ast.LtE: ("<=", operator.le),
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
}

_FORBIDDEN_HINTS = {
    ast.Pow: "'**' is not allowed (unbounded); use multiplication",
    ast.LShift: "'<<' is not allowed (unbounded)",
    ast.RShift: "'>>' is not allowed",
    ast.BitAnd: "'&' is not allowed; use 'and'",
    ast.BitOr: "'|' is not allowed; use 'or'",
    ast.BitXor: "'^' is not allowed",
    ast.Invert: "'~' is not allowed",
    ast.MatMult: "'@' is not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.Subscript: "subscripts are not allowed; use labels.NAME or select('metric{label=\"value\"}')",
    ast.NamedExpr: "':=' is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Set: "set literals are not allowed",
    ast.Tuple: 'tuples are not allowed; write label lists as one string: by="job,instance"',
    ast.List: 'list literals are not allowed; write label lists as one string: by="job,instance"',
    ast.JoinedStr: "f-strings are not allowed",
    ast.Starred: "'*' arguments are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.Slice: "slices are not allowed",
}


class Context(Protocol):
    """What an evaluation reads: the time, the metrics of the rule's source and the shared caches."""

    now: float
    lookback: float | None
    cache: Caches
    seen: int

    def metric(self, name: str) -> MetricHistory | None: ...


# ------------------------------------------------------------------------------------------------ nodes


class Node:
    col: int = 0

    def ev(self, ctx: Context) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def fail(self, message: str) -> ExprError:
        return ExprError(message, column=self.col)


@dataclass
class Const(Node):
    value: Any
    col: int = 0

    def ev(self, ctx: Context) -> Any:
        return self.value


_EMPTY = Table()


@dataclass
class MetricRef(Node):
    """A metric (bare name or select()) read at the evaluation instant."""

    selector: Selector
    col: int = 0

    def mask(self, hist: MetricHistory, cache: Caches) -> np.ndarray | None:
        if not self.selector.matchers:
            return None
        t = hist.table
        key = ("sel", t.uid, t.version, len(t), self.selector)
        m = cache.get(key)
        if m is None:
            m = np.fromiter((self.selector.matches(lab) for lab in t.labels), dtype=bool, count=len(t))
            cache.put(key, m)
        return m

    def restrict(self, hist: MetricHistory, values: np.ndarray, ctx: Context) -> Vector:
        m = self.mask(hist, ctx.cache)
        if m is not None:
            values = np.where(m, values, np.nan)
        return Vector(hist.table, values)

    def ev(self, ctx: Context) -> Vector:
        hist = ctx.metric(self.selector.metric or "")
        if hist is None:
            return Vector(_EMPTY, np.empty(0))
        if ctx.lookback is None:
            values = hist.latest()
        else:
            ts, vals = hist.view(ctx.now - ctx.lookback)
            values = _unless_stale(ts, vals, ctx.now, ctx.lookback, windows.instant(ts, vals, ctx.now, ctx.lookback))
        v = self.restrict(hist, values, ctx)
        ctx.seen += int(np.count_nonzero(~np.isnan(v.values)))
        return v


def _unless_stale(ts: np.ndarray, vals: np.ndarray, end: float, lookback: float, values: np.ndarray) -> np.ndarray:
    """NaN for rows whose newest entry in the lookback window is a staleness marker (the series ended)."""
    lo = int(np.searchsorted(ts, end - lookback, side="right"))
    hi = int(np.searchsorted(ts, end, side="right"))
    if hi <= lo:
        return values
    w = vals[:, lo:hi]
    stale = w.view(np.uint64) == STALE_BITS
    if not stale.any():
        return values
    k = w.shape[1]
    has = ~np.isnan(w)
    last_valid = np.where(has.any(axis=1), k - 1 - has[:, ::-1].argmax(axis=1), -1)
    last_stale = np.where(stale.any(axis=1), k - 1 - stale[:, ::-1].argmax(axis=1), -1)
    return np.where(last_stale > last_valid, np.nan, values)


@dataclass
class LabelRef(Node):
    name: str
    col: int = 0

    def ev(self, ctx: Context) -> Any:
        raise self.fail(f'labels.{self.name} can only be compared with a string: labels.{self.name} == "value"')


def _num(x: Any, node: Node) -> Any:
    if isinstance(x, Vector | float):
        return x
    if isinstance(x, bool | int):
        return float(x)
    if isinstance(x, str):
        raise node.fail(f"a string ({x[:40]!r}) is not a number here")
    if isinstance(x, LabelFilter):
        raise node.fail("a label comparison can only be combined with 'and'")
    raise node.fail(f"unexpected {type(x).__name__}")


def _scalar_op(fn: Callable[[Any, Any], Any], a: float, b: float) -> float:
    with np.errstate(all="ignore"):
        return float(fn(np.float64(a), np.float64(b)))


@dataclass
class Arith(Node):
    op: type
    left: Node
    right: Node
    match: Match = DEFAULT_MATCH
    col: int = 0

    def ev(self, ctx: Context) -> Any:
        a = _num(self.left.ev(ctx), self.left)
        b = _num(self.right.ev(ctx), self.right)
        fn = _ARITH[self.op]
        if isinstance(a, float) and isinstance(b, float):
            return _scalar_op(fn, a, b)
        with np.errstate(all="ignore"):
            if isinstance(a, Vector) and isinstance(b, Vector):
                table, av, bv = align(a, b, self.match, ctx.cache)
                return Vector(table, fn(av, bv))
            if isinstance(a, Vector):
                return Vector(a.table, fn(a.values, b))
            return Vector(b.table, fn(a, b.values))


@dataclass
class Cmp(Node):
    op: type
    left: Node
    right: Node
    match: Match = DEFAULT_MATCH
    col: int = 0

    def ev(self, ctx: Context) -> Any:
        sym, fn = _CMP[self.op]
        if isinstance(self.left, LabelRef) or isinstance(self.right, LabelRef):
            ref, other_node = (self.left, self.right) if isinstance(self.left, LabelRef) else (self.right, self.left)
            other = other_node.ev(ctx) if not isinstance(other_node, LabelRef) else None
            if sym not in ("==", "!=") or not isinstance(other, str):
                raise self.fail(f"labels.{ref.name} can only be compared with == or != to a string")  # type: ignore[attr-defined]
            return LabelFilter(ref.name, sym, other)  # type: ignore[attr-defined]
        a = self.left.ev(ctx)
        b = self.right.ev(ctx)
        if isinstance(a, str) and isinstance(b, str):
            return 1.0 if fn(a, b) else math.nan
        a = _num(a, self.left)
        b = _num(b, self.right)
        with np.errstate(all="ignore"):
            if isinstance(a, float) and isinstance(b, float):
                return a if fn(a, b) else math.nan
            if isinstance(a, Vector) and isinstance(b, Vector):
                table, av, bv = align(a, b, self.match, ctx.cache)
                return Vector(table, np.where(fn(av, bv), av, np.nan))
            if isinstance(a, Vector):
                return Vector(a.table, np.where(fn(a.values, b), a.values, np.nan))
            return Vector(b.table, np.where(fn(a, b.values), b.values, np.nan))


def _absent(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


@dataclass
class SetOp(Node):
    kind: str  # and | or | unless
    left: Node
    right: Node
    match: Match = DEFAULT_MATCH
    col: int = 0

    def ev(self, ctx: Context) -> Any:
        a = self.left.ev(ctx)
        if self.kind == "and" and _absent(a):
            return math.nan
        b = self.right.ev(ctx)
        if isinstance(a, LabelRef | str) or isinstance(b, LabelRef | str):
            raise self.fail(f"'{self.kind}' needs numbers, series or label comparisons on both sides")
        if self.kind == "and":
            if isinstance(b, LabelFilter) and isinstance(a, Vector):
                return Vector(a.table, np.where(b.mask(a.table, ctx.cache), a.values, np.nan))
            if isinstance(a, LabelFilter) and isinstance(b, Vector):
                return Vector(b.table, np.where(a.mask(b.table, ctx.cache), b.values, np.nan))
            if isinstance(a, LabelFilter) or isinstance(b, LabelFilter):
                raise self.fail('a label comparison must be combined with series: x > 1 and labels.job == "api"')
            a, b = _num(a, self.left), _num(b, self.right)
            if isinstance(a, Vector) and isinstance(b, Vector):
                return set_and(a, b, self.match, ctx.cache)
            if isinstance(a, Vector):  # vector and scalar: the scalar's presence decides
                return a if not _absent(b) else Vector(a.table, np.full(len(a.values), np.nan))
            if isinstance(b, Vector):
                return b
            return b if not _absent(b) else math.nan
        if isinstance(a, LabelFilter) or isinstance(b, LabelFilter):
            raise self.fail(f"a label comparison can only be combined with 'and', not '{self.kind}'")
        a, b = _num(a, self.left), _num(b, self.right)
        if self.kind == "or":
            if isinstance(a, Vector) and isinstance(b, Vector):
                return set_or(a, b, self.match, ctx.cache)
            if isinstance(a, float) and isinstance(b, float):
                return b if _absent(a) else a
            raise self.fail("'or' needs two series or two numbers")
        if isinstance(a, Vector) and isinstance(b, Vector):
            return set_unless(a, b, self.match, ctx.cache)
        raise self.fail("unless() needs two series")


@dataclass
class Neg(Node):
    operand: Node
    col: int = 0

    def ev(self, ctx: Context) -> Any:
        x = _num(self.operand.ev(ctx), self.operand)
        return Vector(x.table, -x.values) if isinstance(x, Vector) else -x


@dataclass
class Not(Node):
    operand: Node
    col: int = 0

    def ev(self, ctx: Context) -> Any:
        x = _num(self.operand.ev(ctx), self.operand)
        if isinstance(x, Vector):
            raise self.fail("'not' works on numbers only; for series use absent(m) or unless(a, b)")
        return 1.0 if (math.isnan(x) or x == 0) else math.nan


@dataclass
class IfElse(Node):
    test: Node
    body: Node
    orelse: Node
    col: int = 0

    def ev(self, ctx: Context) -> Any:
        t = _num(self.test.ev(ctx), self.test)
        if isinstance(t, Vector):
            raise self.fail("the condition of 'x if c else y' must be a number, not series")
        return self.body.ev(ctx) if not (math.isnan(t) or t == 0) else self.orelse.ev(ctx)


@dataclass
class Window(Node):
    """A window function over a metric's history."""

    name: str
    ref: MetricRef
    window: float
    offset: float = 0.0
    extra: tuple[float, ...] = ()
    span: float = 0.0
    col: int = 0

    def ev(self, ctx: Context) -> Vector:
        hist = ctx.metric(self.ref.selector.metric or "")
        if hist is None:
            return Vector(_EMPTY, np.empty(0))
        end = ctx.now - self.offset
        start = ctx.now - self.span
        ts, vals = hist.view(start)
        if self.name == "nodata":
            v = self.ref.restrict(hist, hist.seen_before(end - self.window), ctx)
            ctx.seen += len(v.values)
            return v
        key = (hist.table.uid, hist.table.version, hist.last_at, self.name, self.window, self.offset, self.extra)
        values = ctx.cache.result(ctx.now, key)
        if values is None:
            if self.name == "offset":
                step = float(np.median(np.diff(ts))) if len(ts) > 2 else 0.0
                lookback = max(ctx.lookback or 0.0, DEFAULT_LOOKBACK, 2 * step)
                values = windows.instant(ts, vals, end, lookback)
            else:
                values = windows.KERNELS[self.name](ts, vals, end, self.window, *self.extra)
            ctx.cache.keep(ctx.now, key, values)
        v = self.ref.restrict(hist, np.asarray(values, dtype=np.float64), ctx)
        ctx.seen += int(np.count_nonzero(~np.isnan(v.values)))
        return v


@dataclass
class Absent(Node):
    ref: MetricRef
    col: int = 0
    _table: Table | None = None

    def ev(self, ctx: Context) -> Vector:
        if self._table is None:
            from fsincident.core import Labels

            self._table = Table([Labels(self.ref.selector.equalities())])
        v = self.ref.ev(ctx)
        gone = not bool(np.any(~np.isnan(v.values)))
        return Vector(self._table, np.array([1.0 if gone else math.nan]))


@dataclass
class Aggregate(Node):
    kind: str
    arg: Node
    by: tuple[str, ...] | None = None
    without: tuple[str, ...] | None = None
    q: Node | None = None
    col: int = 0

    def ev(self, ctx: Context) -> Vector:
        v = self.arg.ev(ctx)
        if not isinstance(v, Vector):
            raise self.fail(f"{self.kind}() aggregates series, not {type(v).__name__}")
        q = None
        if self.q is not None:
            qv = _num(self.q.ev(ctx), self.q)
            if isinstance(qv, Vector):
                raise self.fail("the quantile must be a number")
            q = qv
        return aggregate(self.kind, v, ctx.cache, by=self.by, without=self.without, q=q)


_ELEMENTWISE: dict[str, Callable[..., Any]] = {
    "abs": np.abs,
    "min": np.fmin,
    "max": np.fmax,
    "clamp_min": np.maximum,
    "clamp_max": np.minimum,
}


@dataclass
class Func(Node):
    name: str
    args: list[Node] = field(default_factory=list)
    col: int = 0

    def ev(self, ctx: Context) -> Any:
        vals = [_num(a.ev(ctx), a) if self.name not in ("str",) else a.ev(ctx) for a in self.args]
        name = self.name
        if name == "time":
            return float(ctx.now)
        if name == "scalar":
            v = vals[0]
            if isinstance(v, Vector):
                p = v.values[~np.isnan(v.values)]
                return float(p[0]) if len(p) == 1 else math.nan
            return v
        if name in ("float", "int", "str", "isnan"):
            x = vals[0]
            if isinstance(x, Vector):
                raise self.fail(f"{name}() works on numbers, not series")
            if name == "isnan":
                return 1.0 if isinstance(x, float) and math.isnan(x) else math.nan
            if name == "str":
                raise self.fail("str() is not supported in expressions")
            try:
                return float(int(x)) if name == "int" else float(x)
            except (ValueError, OverflowError) as e:
                raise self.fail(f"{name}(): {e}") from None
        if name == "round":
            x = vals[0]
            nd = vals[1] if len(vals) > 1 else 0.0
            if isinstance(nd, Vector) or math.isnan(nd) or abs(nd) > MAX_ROUND_DIGITS:
                raise self.fail(f"round: digits must be a number within ±{MAX_ROUND_DIGITS}")
            if isinstance(x, Vector):
                return Vector(x.table, np.round(x.values, int(nd)))
            return round(x, int(nd)) if math.isfinite(x) else x
        if name == "clamp":
            x, lo, hi = vals
            if isinstance(lo, Vector) or isinstance(hi, Vector):
                raise self.fail("clamp bounds must be numbers")
            if isinstance(x, Vector):
                return Vector(x.table, np.clip(x.values, lo, hi))
            return min(max(x, lo), hi)
        fn = _ELEMENTWISE[name]
        with np.errstate(all="ignore"):
            if len(vals) == 1:
                x = vals[0]
                return Vector(x.table, fn(x.values)) if isinstance(x, Vector) else float(fn(x))
            a, b = vals
            if isinstance(a, Vector) and isinstance(b, Vector):
                table, av, bv = align(a, b, DEFAULT_MATCH, ctx.cache)
                out = fn(av, bv)
                out[np.isnan(av) | np.isnan(bv)] = np.nan
                return Vector(table, out)
            if isinstance(a, Vector):
                return Vector(a.table, fn(a.values, b))
            if isinstance(b, Vector):
                return Vector(b.table, fn(a, b.values))
            return float(fn(a, b))


# ------------------------------------------------------------------------------------------------ compile


@dataclass
class CompiledExpr:
    """A validated, compiled expression; ``metrics`` are the metric names it reads (``value`` excluded)."""

    text: str
    metrics: tuple[str, ...]
    root: Node = field(repr=False)
    presence: Node = field(repr=False)
    spans: dict[str, float] = field(default_factory=dict, repr=False)
    ttls: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def primary(self) -> str | None:
        return self.metrics[0] if self.metrics else None

    def span_seconds(self, metric: str) -> float:
        """Seconds of history this expression needs for ``metric`` (0 = the instant only)."""
        return self.spans.get(metric, 0.0)

    def evaluate(self, ctx: Context) -> Vector | float:
        """Evaluate at ``ctx.now``; raises ExprError (never another type) for any run-time failure."""
        return _run(self.root, ctx)

    def evaluate_presence(self, ctx: Context) -> Vector | float:
        """The series the expression's value comes from (the left side of a top-level comparison)."""
        return _run(self.presence, ctx)


def _run(node: Node, ctx: Context) -> Any:
    try:
        out = node.ev(ctx)
    except ExprError:
        raise
    except (ArithmeticError, TypeError, ValueError, KeyError, IndexError, RecursionError, MemoryError) as e:
        raise ExprError(f"{type(e).__name__}: {e}") from None
    if isinstance(out, LabelFilter):
        raise ExprError("a label comparison alone selects nothing: combine it with series using 'and'")
    if isinstance(out, str):
        raise ExprError("the expression evaluates to a string, not series or a number")
    if isinstance(out, bool | int):
        out = float(out)
    return out


def _check_depth(tree: ast.AST) -> None:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExprError(
                f"expression is nested more than {MAX_DEPTH} levels deep", column=getattr(node, "col_offset", None)
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _duration(node: ast.AST, what: str) -> float:
    col = getattr(node, "col_offset", None)
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str | int | float)) or isinstance(
        node.value, bool
    ):
        raise ExprError(f'{what} must be a duration string such as "5m"', column=col)
    try:
        d = parse_duration(node.value).total_seconds()
    except ValueError as e:
        raise ExprError(f"{what}: {e}", column=col) from None
    if d > 400 * 86400:
        raise ExprError(f"{what}: at most 400d", column=col)
    return d


def _number(node: ast.AST, what: str) -> float:
    col = getattr(node, "col_offset", None)
    neg = False
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        neg, node = True, node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return -float(node.value) if neg else float(node.value)
    raise ExprError(f"{what} must be a number", column=col)


def _label_list(node: ast.AST, what: str) -> tuple[str, ...]:
    col = getattr(node, "col_offset", None)
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        raise ExprError(f'{what} must be a string of label names: "job,instance"', column=col)
    names = tuple(n.strip() for n in node.value.split(",") if n.strip())
    for n in names:
        if not n.isidentifier() or n.startswith("__"):
            raise ExprError(f"{what}: invalid label name {n!r}", column=col)
    return names


def _is_text(node: Node) -> bool:
    return isinstance(node, LabelRef) or (isinstance(node, Const) and isinstance(node.value, str))


class _Compiler:
    def __init__(self) -> None:
        self.metrics: list[str] = []
        self.spans: dict[str, float] = {}
        self.ttls: dict[str, float] = {}

    def ref(self, node: ast.AST, fname: str) -> MetricRef:
        col = getattr(node, "col_offset", 0)
        if isinstance(node, ast.Name) and node.id not in RESERVED - {"value"} and node.id not in CONSTANTS:
            sel = Selector(node.id)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "select"
            and len(node.args) == 1
            and not node.keywords
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            try:
                sel = parse_selector(node.args[0].value)
            except MatcherError as e:
                raise ExprError(f"select(): {e}", column=col) from None
        else:
            raise ExprError(f"{fname}() needs a metric name or select('metric{{...}}') as its metric", column=col)
        assert sel.metric is not None
        if sel.metric != "value" and sel.metric not in self.metrics:
            self.metrics.append(sel.metric)
        self.spans.setdefault(sel.metric, 0.0)
        return MetricRef(sel, col=col)

    def keep(self, metric: str, ttl: float) -> None:
        self.ttls[metric] = max(self.ttls.get(metric, 0.0), ttl)

    def need(self, metric: str, span: float) -> None:
        self.spans[metric] = max(self.spans.get(metric, 0.0), span)

    def match_of(self, call: ast.Call) -> tuple[Match, ast.AST]:
        name = call.func.id  # type: ignore[attr-defined]
        if len(call.args) != 2 or call.keywords:
            raise ExprError(f"use {FUNCTIONS[name]}", column=call.col_offset)
        names = _label_list(call.args[0], f"{name}()")
        inner = call.args[1]
        if not isinstance(inner, ast.BinOp | ast.Compare | ast.BoolOp) and not (
            isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id == "unless"
        ):
            raise ExprError(
                f"{name}() wraps an operation between two series, e.g. {FUNCTIONS[name]}", column=call.col_offset
            )
        return Match(name, names), inner

    def node(self, n: ast.AST, match: Match = DEFAULT_MATCH) -> Node:
        col = getattr(n, "col_offset", 0)
        if isinstance(n, ast.Expression):
            return self.node(n.body)
        if isinstance(n, ast.Constant):
            v = n.value
            if isinstance(v, bool):
                return Const(1.0 if v else 0.0, col)
            if isinstance(v, int | float):
                if abs(v) > MAX_CONSTANT:
                    raise ExprError(f"number {v!r} is too large", column=col)
                return Const(float(v), col)
            if isinstance(v, str):
                if len(v) > MAX_LENGTH:
                    raise ExprError("string constant is too long", column=col)
                return Const(v, col)
            if v is None:
                return Const(math.nan, col)
            raise ExprError(f"constant {v!r} is not allowed", column=col)
        if isinstance(n, ast.Name):
            if n.id in CONSTANTS:
                return Const(CONSTANTS[n.id], col)
            if n.id == "None":
                return Const(math.nan, col)
            if n.id == "labels":
                raise ExprError("use labels.NAME", column=col)
            if n.id in FUNCTIONS:
                raise ExprError(f"{n.id} is a function: {FUNCTIONS[n.id]}", column=col)
            return self.ref(n, "?")
        if isinstance(n, ast.Attribute):
            if not (isinstance(n.value, ast.Name) and n.value.id == "labels"):
                raise ExprError("attribute access is only allowed as labels.NAME", column=col)
            if n.attr.startswith("_"):
                raise ExprError(f"invalid label name {n.attr!r}", column=col)
            return LabelRef(n.attr, col)
        if isinstance(n, ast.BinOp):
            if type(n.op) not in _ARITH:
                raise ExprError(_FORBIDDEN_HINTS.get(type(n.op), f"{type(n.op).__name__} is not allowed"), column=col)
            left, right = self.node(n.left), self.node(n.right)
            for side in (left, right):
                if _is_text(side):
                    raise ExprError("strings and labels.NAME cannot be used in arithmetic", column=side.col or col)
            return Arith(type(n.op), left, right, match, col)
        if isinstance(n, ast.UnaryOp):
            if isinstance(n.op, ast.USub):
                operand = self.node(n.operand)
                if _is_text(operand):
                    raise ExprError("strings and labels.NAME cannot be negated", column=col)
                return Neg(operand, col)
            if isinstance(n.op, ast.UAdd):
                return self.node(n.operand)
            if isinstance(n.op, ast.Not):
                return Not(self.node(n.operand), col)
            raise ExprError(_FORBIDDEN_HINTS.get(type(n.op), f"{type(n.op).__name__} is not allowed"), column=col)
        if isinstance(n, ast.Compare):
            if len(n.ops) != 1:
                # a < b < c: each comparison filters, joined with 'and'
                parts = []
                left = n.left
                for op, right in zip(n.ops, n.comparators, strict=True):
                    parts.append(ast.Compare(left=left, ops=[op], comparators=[right], col_offset=col))
                    left = right
                node = self.node(parts[0], match)
                for p in parts[1:]:
                    node = SetOp("and", node, self.node(p, match), match, col)
                return node
            op = type(n.ops[0])
            if op not in _CMP:
                raise ExprError(f"{type(n.ops[0]).__name__} comparison is not allowed", column=col)
            left, right = self.node(n.left), self.node(n.comparators[0])
            if _is_text(left) or _is_text(right):
                if not (_is_text(left) and _is_text(right)) or op not in (ast.Eq, ast.NotEq):
                    raise ExprError(
                        'strings can only be compared to labels.NAME with == or !=: labels.job == "api"', column=col
                    )
            return Cmp(op, left, right, match, col)
        if isinstance(n, ast.BoolOp):
            kind = "and" if isinstance(n.op, ast.And) else "or"
            node = self.node(n.values[0])
            for v in n.values[1:]:
                node = SetOp(kind, node, self.node(v), match, col)
            return node
        if isinstance(n, ast.IfExp):
            return IfElse(self.node(n.test), self.node(n.body), self.node(n.orelse), col)
        if isinstance(n, ast.Call):
            return self.call(n, match)
        hint = _FORBIDDEN_HINTS.get(type(n))
        raise ExprError(hint or f"{type(n).__name__} is not allowed in an expression", column=col)

    def call(self, n: ast.Call, match: Match) -> Node:
        col = n.col_offset
        if not isinstance(n.func, ast.Name):
            raise ExprError("only named functions can be called", column=col)
        name = n.func.id
        if name not in FUNCTIONS:
            raise ExprError(f"unknown function {name!r} (available: {', '.join(sorted(FUNCTIONS))})", column=col)
        usage = f"use {FUNCTIONS[name]}"
        kw = {k.arg: k.value for k in n.keywords}
        if None in kw:
            raise ExprError("'**' arguments are not allowed", column=col)
        args = n.args

        def no_kw(*allowed: str) -> None:
            for k in kw:
                if k not in allowed:
                    raise ExprError(f"{name}() has no argument {k!r}; {usage}", column=col)

        if name in ("on", "ignoring"):
            m, inner = self.match_of(n)
            return self.node(inner, m)
        if name == "select":
            no_kw()
            ref = self.ref(n, name)
            return ref
        if name == "unless":
            no_kw()
            if len(args) != 2:
                raise ExprError(usage, column=col)
            return SetOp("unless", self.node(args[0]), self.node(args[1]), match, col)
        if name == "absent":
            no_kw()
            if len(args) != 1:
                raise ExprError(usage, column=col)
            return Absent(self.ref(args[0], name), col)
        if name == "offset":
            no_kw()
            if len(args) != 2:
                raise ExprError(usage, column=col)
            ref = self.ref(args[0], name)
            off = _duration(args[1], "offset")
            w = Window("offset", ref, 0.0, off, (), off + DEFAULT_LOOKBACK, col)
            self.need(ref.selector.metric or "", w.span)
            return w
        if name in WINDOW_FUNCTIONS or name in ("quantile_over_time", "predict_linear", "time_to"):
            no_kw("offset")
            extra: tuple[float, ...] = ()
            if name == "quantile_over_time":
                if len(args) != 3:
                    raise ExprError(usage, column=col)
                extra = (_number(args[0], "the quantile"),)
                mnode, wnode = args[1], args[2]
            elif name == "predict_linear":
                if len(args) != 3:
                    raise ExprError(usage, column=col)
                mnode, wnode = args[0], args[1]
                extra = (_duration(args[2], "the horizon"),)
            elif name == "time_to":
                if len(args) != 3:
                    raise ExprError(usage, column=col)
                mnode, wnode = args[0], args[2]
                extra = (_number(args[1], "the threshold"),)
            else:
                if len(args) != 2:
                    raise ExprError(usage, column=col)
                mnode, wnode = args
            ref = self.ref(mnode, name)
            window = _duration(wnode, "the window")
            if window <= 0:
                raise ExprError("the window must be longer than 0s", column=col)
            off = _duration(kw["offset"], "offset") if "offset" in kw else 0.0
            span = off + window * (2 if name == "spike" else 1)
            if name == "nodata":
                span = 0.0
                self.keep(ref.selector.metric or "", window + NODATA_MEMORY)
            w = Window(name, ref, window, off, extra, span, col)
            self.need(ref.selector.metric or "", span)
            return w
        if name == "baseline":
            no_kw("seasons", "width")
            if len(args) != 2:
                raise ExprError(usage, column=col)
            ref = self.ref(args[0], name)
            period = _duration(args[1], "the period")
            seasons = _number(kw["seasons"], "seasons") if "seasons" in kw else 3.0
            if seasons != int(seasons) or not 1 <= seasons <= 12:
                raise ExprError("seasons must be a whole number from 1 to 12", column=col)
            width = _duration(kw["width"], "width") if "width" in kw else 1800.0
            if period <= 0 or width <= 0:
                raise ExprError("the period and width must be longer than 0s", column=col)
            span = seasons * period + width
            w = Window("baseline", ref, period, 0.0, (seasons, width), span, col)
            self.need(ref.selector.metric or "", span)
            return w
        if name in AGGREGATIONS:
            no_kw("by", "without")
            if "by" in kw and "without" in kw:
                raise ExprError(f"{name}(): give by= or without=, not both", column=col)
            by = _label_list(kw["by"], "by") if "by" in kw else None
            without = _label_list(kw["without"], "without") if "without" in kw else None
            if name in ("min", "max") and len(args) == 2 and not kw:
                return Func(name, [self.node(a) for a in args], col)
            if name == "quantile":
                if len(args) != 2:
                    raise ExprError(usage, column=col)
                return Aggregate(name, self.node(args[1]), by, without, self.node(args[0]), col)
            if len(args) != 1:
                raise ExprError(usage, column=col)
            return Aggregate(name, self.node(args[0]), by, without, None, col)
        no_kw()
        arity = {"time": (0, 0), "round": (1, 2), "clamp": (3, 3), "clamp_min": (2, 2), "clamp_max": (2, 2)}.get(
            name, (1, 1)
        )
        if not arity[0] <= len(args) <= arity[1]:
            raise ExprError(usage, column=col)
        return Func(name, [self.node(a) for a in args], col)


def compile_expr(text: str, *, require_metric: bool = True) -> CompiledExpr:
    """Validate and compile ``text`` once; raises ExprError with a column for any syntax or safety problem."""
    if not isinstance(text, str) or not text.strip():
        raise ExprError("expression is empty")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression is longer than {MAX_LENGTH} characters")
    src = text.strip()
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError as e:
        raise ExprError(f"syntax error: {e.msg}", column=e.offset - 1 if e.offset else len(src)) from None
    except (RecursionError, MemoryError, ValueError):
        raise ExprError(f"expression is nested more than {MAX_DEPTH} levels deep") from None
    try:
        return _compile_tree(src, tree, require_metric)
    except ExprError as e:
        if e.column is not None:  # the ast counts UTF-8 bytes; report characters
            e.column = len(src.encode("utf-8", "surrogatepass")[: e.column].decode("utf-8", "ignore"))
        raise


def _compile_tree(src: str, tree: ast.Expression, require_metric: bool) -> CompiledExpr:
    _check_depth(tree)
    for node in ast.walk(tree):  # forbidden constructs first, wherever they are
        hint = _FORBIDDEN_HINTS.get(type(node))
        if hint:
            raise ExprError(hint, column=getattr(node, "col_offset", None))
        op = getattr(node, "op", None)
        if isinstance(node, ast.BinOp | ast.UnaryOp) and type(op) in _FORBIDDEN_HINTS:
            raise ExprError(_FORBIDDEN_HINTS[type(op)], column=node.col_offset)
    comp = _Compiler()
    root = comp.node(tree)
    presence = root.left if isinstance(root, Cmp) else root  # where an alert's value comes from
    reads_value = "value" in comp.spans
    if require_metric and not comp.metrics and not reads_value:
        raise ExprError("expression reads no metric")
    return CompiledExpr(src, tuple(comp.metrics), root, presence, dict(comp.spans), dict(comp.ttls))


def expr_metrics(compiled: CompiledExpr) -> Mapping[str, float]:
    """Metric name -> seconds of history needed (includes ``value``)."""
    return compiled.spans
