"""The rule language's sandbox: random expressions and bytes never escape, never hang, never blow up memory.

Every expression either compiles or is refused with an ExprError; every compiled one evaluates through a
RuleSet over a small random history and fails, if at all, only as errors in ``res.errors`` that name the
rule's file, line and key. Escapes and blow-ups are refused at compile time with a message, and a bad
expression in a rules file names that file and line.
"""

from __future__ import annotations

import dataclasses
import math
import random
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fsincident.config import Rule, load
from fsincident.core import ConfigError, Labels
from fsincident.evaluation.rules import RuleSet
from fsincident.expr import CompiledExpr, ExprError, compile_expr

from .guard import cpu_bound

SOURCE = "fz"
LABEL_VALUES = ["a", "b", "i1", "i2", "", "aaaaaaaa", "job"]
RULE_FILE = "rules.d/x.yaml"
MAIN_YAML = f"sources:\n  - {{name: {SOURCE}, type: push}}\n"
R0 = "groups[0].rules[0]"
COMPILE_CPU = 2.0  # seconds of CPU one compile may take before it counts as a hang
EVAL_CPU = 3.0  # ... and one RuleSet build, ingest and evaluation
EVAL_MEMORY = 64 * 2**20  # bytes one evaluation over the small history may allocate at its peak


def rule_file(expr: str) -> str:
    """A rules file whose only rule ``A`` (group ``g``, source ``fz``) has ``expr`` on line 6."""
    quoted = "'" + expr.replace("'", "''") + "'"
    return f"groups:\n  - name: g\n    source: {SOURCE}\n    rules:\n      - alert: A\n        expr: {quoted}\n"


def load_dir(root: Path, expr: str):  # type: ignore[no-untyped-def]
    """Write fsincident.yaml and rules.d/x.yaml (rule ``A`` with ``expr`` on line 6) and load them."""
    (root / "rules.d").mkdir(parents=True, exist_ok=True)
    (root / "fsincident.yaml").write_text(MAIN_YAML, encoding="utf-8")
    (root / RULE_FILE).write_text(rule_file(expr), encoding="utf-8")
    return load(root, environ={})


@pytest.fixture(scope="module")
def template_rule(tmp_path_factory: pytest.TempPathFactory) -> Rule:
    """A Rule built by the real loader, to copy with other expressions (file and line as a user wrote them)."""
    cfg = load_dir(tmp_path_factory.mktemp("tmpl"), "x > 1")
    (rule,) = cfg.rules
    return rule


# ----------------------------------------------------------------------------------------------- the grammar

METRICS = ["cpu", "mem", "x", "value", "http_requests_total", "nosuch"]
NUMBERS = [
    "0", "1", "-1", "2.5", "0.5", "90", "1e-308", "1e15", "999999999999999", "-0.0", "nan", "inf", "1_000", "0x10",
    "4000000", "1e308", "10000000000000000", "1e400",
]  # fmt: skip
DURATIONS = ["5m", "1h", "15s", "1d", "1w", "0s", "-5m", "1y", "99999999w", "5", "", "1h30m", "5M", "1.5h", "ms"]
LABEL_LISTS = ["job", "instance,job", "", ",", "__name__", "job, instance", "no such", "x" * 200]
SELECTORS = [
    'cpu{job="a"}', 'cpu{job=~"a.*"}', 'cpu{job!~"(a|b)"}', "cpu", '{job="a"}', "cpu{", 'cpu{job=~"["}',
    'cpu{job="a",job="b"}', 'nosuch{x="y"}', 'mem{instance!="i1"}', 'x{job=~"(a+)+"}', "", "}{",
]  # fmt: skip
STRINGS = st.one_of(
    st.sampled_from(DURATIONS + LABEL_LISTS + SELECTORS), st.text(max_size=12), st.just("a" * 4097)
).map(repr)
FUNCTIONS = [
    "sum", "avg", "min", "max", "count", "stddev", "quantile", "abs", "round", "clamp", "isnan", "select", "rate",
    "increase", "delta", "deriv", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "last_over_time", "stddev_over_time", "quantile_over_time", "changes", "resets", "offset",
    "absent", "nodata", "zscore", "ewma_zscore", "baseline", "spike", "flatline", "predict_linear", "time_to", "on",
    "ignoring", "unless", "scalar",
]  # fmt: skip
UNKNOWN_FUNCTIONS = ["eval", "exec", "__import__", "getattr", "open", "len", "sorted", "type", "globals", "vars"]
KEYWORDS = ["by", "without", "offset", "seasons", "width", "key", "x"]
ALLOWED_BINOPS = [
    " + ",
    " - ",
    " * ",
    " / ",
    " // ",
    " % ",
    " > ",
    " < ",
    " >= ",
    " <= ",
    " == ",
    " != ",
    " and ",
    " or ",
]
FORBIDDEN_BINOPS = [" ** ", " << ", " >> ", " & ", " | ", " ^ ", " @ ", " is ", " in ", " not in "]
ATTRIBUTES = ["__class__", "__dict__", "__globals__", "__subclasses__", "__mro__", "__init__", "real", "format"]

Case = tuple[str, bool]  # (expression text, whether it contains a construct that must be refused)

ATOMS = st.one_of(
    st.sampled_from(METRICS),
    st.sampled_from(NUMBERS),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(-1e6, 1e6).map(repr),
    st.sampled_from(["labels.job", "labels.instance", "labels.nope"]),
).map(lambda t: (t, False))
STRING_ARGS = STRINGS.map(lambda t: (t, False))


def _bad(*cases: Case) -> bool:
    return any(bad for _, bad in cases)


def _call(name: str, args: list[Case], kwargs: list[tuple[str, Case]]) -> Case:
    text = ", ".join([*(a for a, _ in args), *(f"{k}={v}" for k, (v, _) in kwargs)])
    return f"{name}({text})", _bad(*args, *(v for _, v in kwargs))


def _allowed(inner: st.SearchStrategy[Case]) -> st.SearchStrategy[Case]:
    """Constructs the language has (with odd operands): operators, calls with odd arguments, label filters."""
    arg = st.one_of(inner, STRING_ARGS)
    return st.one_of(
        st.tuples(inner, st.sampled_from(ALLOWED_BINOPS), inner).map(
            lambda t: (f"({t[0][0]}{t[1]}{t[2][0]})", _bad(t[0], t[2]))
        ),
        st.tuples(st.sampled_from(["-", "+", "not "]), inner).map(lambda t: (f"{t[0]}({t[1][0]})", t[1][1])),
        st.tuples(
            st.sampled_from(FUNCTIONS),
            st.lists(arg, max_size=4),
            st.lists(st.tuples(st.sampled_from(KEYWORDS), arg), max_size=2, unique_by=lambda kv: kv[0]),
        ).map(lambda t: _call(*t)),
        # window functions with a plausible first argument, so that many reach the history
        st.tuples(st.sampled_from(FUNCTIONS[12:35]), st.sampled_from(METRICS), st.sampled_from(DURATIONS)).map(
            lambda t: (f"{t[0]}({t[1]}, {t[2]!r})", False)
        ),
        st.tuples(st.sampled_from(SELECTORS), st.sampled_from(["> 0", "< 1", "!= 3"])).map(
            lambda t: (f"select({t[0]!r}) {t[1]}", False)
        ),
        st.tuples(inner, st.sampled_from(["job", "instance"]), st.text(max_size=4)).map(
            lambda t: (f"({t[0][0]} and labels.{t[1]} == {t[2]!r})", t[0][1])
        ),
        st.tuples(st.sampled_from(["on", "ignoring"]), st.sampled_from(LABEL_LISTS), inner, inner).map(
            lambda t: (f"{t[0]}({t[1]!r}, {t[2][0]} / {t[3][0]})", _bad(t[2], t[3]))
        ),
        st.tuples(inner, inner).map(lambda t: (f"({t[0][0]} > {t[1][0]} > 0)", _bad(*t))),  # chained comparison
    )


def _forbidden(inner: st.SearchStrategy[Case]) -> st.SearchStrategy[Case]:
    """Constructs that must be refused at compile time wherever they appear."""
    text = inner.map(lambda c: c[0])
    return st.one_of(
        st.tuples(text, st.sampled_from(FORBIDDEN_BINOPS), text).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
        text.map(lambda x: f"~({x})"),
        st.tuples(st.sampled_from(UNKNOWN_FUNCTIONS), st.lists(inner, max_size=2)).map(lambda t: _call(*t, [])[0]),
        st.tuples(text, st.sampled_from(ATTRIBUTES)).map(lambda t: f"({t[0]}).{t[1]}"),
        st.sampled_from(ATTRIBUTES[:6]).map(lambda a: f"labels.{a}"),
        st.sampled_from(FUNCTIONS).map(lambda f: f"{f}.__globals__"),
        st.tuples(text, text).map(lambda t: f"{t[0]}[{t[1]}]"),
        text.map(lambda x: f"(lambda q: {x})"),
        text.map(lambda x: f"[q for q in {x}]"),
        text.map(lambda x: f"(q for q in {x})"),
        text.map(lambda x: f"{{q: 1 for q in {x}}}"),
        text.map(lambda x: f"(w := {x})"),
        text.map(lambda x: f'f"{{{x}}}"'),
        st.tuples(text, text).map(lambda t: f"{{{t[0]}: {t[1]}}}"),
        st.tuples(text, text).map(lambda t: f"({t[0]}, {t[1]})"),
        st.tuples(text, text).map(lambda t: f"[{t[0]}, {t[1]}]"),
        st.tuples(text, text).map(lambda t: f"{{{t[0]}, {t[1]}}}"),
        text.map(lambda x: f"abs(*{x})"),
        text.map(lambda x: f"abs(**{x})"),
        text.map(lambda x: f"({x})[1:2]"),
        st.sampled_from(['"a" * 1000000000', '"a" + "b"', "b'x' > 1", "1j + x", "... > x", "x > 10 ** 9"]),
    ).map(lambda t: (t, True))


def _extend(inner: st.SearchStrategy[Case]) -> st.SearchStrategy[Case]:
    # Mostly allowed constructs around the occasional forbidden one, so that most expressions reach evaluation.
    return st.integers(0, 5).flatmap(lambda i: _forbidden(inner) if i == 0 else _allowed(inner))


EXPRESSIONS: st.SearchStrategy[Case] = st.recursive(ATOMS, _extend, max_leaves=12)


# A grammar of mostly well-formed expressions (valid durations, label lists, argument counts), so that most
# of them compile and reach the history with odd data: the evaluation property needs them.
WINDOW_1 = [f for f in FUNCTIONS[12:35] if f not in ("quantile_over_time", "offset", "absent", "select")]
GOOD_DURATIONS = st.sampled_from(["1m", "5m", "1h", "15s", "1d", "30s"]).map(repr)
GOOD_METRIC = st.one_of(
    st.sampled_from(METRICS[:5]), st.sampled_from(SELECTORS[:3] + SELECTORS[9:10]).map(lambda t: f"select({t!r})")
)
GOOD_ATOMS = st.one_of(
    GOOD_METRIC, st.sampled_from(["0", "1", "50", "90", "0.5", "-1", "nan", "inf", "1e300", "1e-300"])
).map(lambda t: (t, False))


def _plausible(inner: st.SearchStrategy[Case]) -> st.SearchStrategy[Case]:
    by = st.sampled_from(['by="job"', 'without="instance"', 'by="job,instance"', 'by=""'])
    offset = st.sampled_from(["", ', offset="5m"', ', offset="1d"'])
    return st.one_of(
        st.tuples(inner, st.sampled_from(ALLOWED_BINOPS), inner).map(
            lambda t: (f"({t[0][0]}{t[1]}{t[2][0]})", _bad(t[0], t[2]))
        ),
        st.tuples(st.sampled_from(WINDOW_1), GOOD_METRIC, GOOD_DURATIONS, offset).map(
            lambda t: (f"{t[0]}({t[1]}, {t[2]}{t[3]})", False)
        ),
        st.tuples(GOOD_METRIC, GOOD_DURATIONS).map(lambda t: (f"offset({t[0]}, {t[1]})", False)),
        st.tuples(st.sampled_from(["0.5", "0.9", "0", "1", "2"]), GOOD_METRIC, GOOD_DURATIONS).map(
            lambda t: (f"quantile_over_time({t[0]}, {t[1]}, {t[2]})", False)
        ),
        st.tuples(GOOD_METRIC, GOOD_DURATIONS, GOOD_DURATIONS).map(
            lambda t: (f"predict_linear({t[0]}, {t[1]}, {t[2]})", False)
        ),
        st.tuples(GOOD_METRIC, st.sampled_from(["0", "100", "-1"]), GOOD_DURATIONS).map(
            lambda t: (f"time_to({t[0]}, {t[1]}, {t[2]})", False)
        ),
        st.tuples(GOOD_METRIC, st.integers(1, 3)).map(
            lambda t: (f'baseline({t[0]}, "1h", seasons={t[1]}, width="10m")', False)
        ),
        st.tuples(st.sampled_from(["sum", "avg", "min", "max", "count", "stddev"]), inner, by).map(
            lambda t: (f"{t[0]}({t[1][0]}, {t[2]})", t[1][1])
        ),
        st.tuples(st.sampled_from(["0.5", "0.99", "-1", "2"]), inner, by).map(
            lambda t: (f"quantile({t[0]}, {t[1][0]}, {t[2]})", t[1][1])
        ),
        st.tuples(st.sampled_from(["abs", "isnan"]), inner).map(lambda t: (f"{t[0]}({t[1][0]})", t[1][1])),
        st.tuples(inner, st.integers(-3, 3)).map(lambda t: (f"round({t[0][0]}, {t[1]})", t[0][1])),
        st.tuples(inner, inner).map(lambda t: (f"clamp({t[0][0]}, 0, 100)", t[0][1])),
        st.tuples(st.sampled_from(["min", "max", "unless"]), inner, inner).map(
            lambda t: (f"{t[0]}({t[1][0]}, {t[2][0]})", _bad(t[1], t[2]))
        ),
        st.tuples(
            st.sampled_from(["on", "ignoring"]), st.sampled_from(['"job"', '"instance"', '"cpu"']), inner, inner
        ).map(lambda t: (f"{t[0]}({t[1]}, {t[2][0]} / {t[3][0]})", _bad(t[2], t[3]))),
        st.tuples(inner, st.sampled_from(LABEL_VALUES)).map(
            lambda t: (f"({t[0][0]} and labels.job != {t[1]!r})", t[0][1])
        ),
        st.tuples(GOOD_METRIC).map(lambda t: (f"absent({t[0]})", False)),
    )


PLAUSIBLE: st.SearchStrategy[Case] = st.recursive(GOOD_ATOMS, _plausible, max_leaves=8)


def _compile(text: str) -> CompiledExpr | None:
    """compile_expr(text) under the CPU guard: the compiled expression, or None when refused with a message."""
    with cpu_bound(COMPILE_CPU):
        try:
            return compile_expr(text)
        except ExprError as e:
            assert str(e), f"empty message for {text!r}"
            assert e.column is None or 0 <= e.column <= len(text), (text, e.column)
            return None


# ----------------------------------------------------------------------------------------------- compile


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSIONS)
def test_random_expressions_compile_or_raise_expr_error(case: tuple[str, bool]):
    text, forbidden = case
    compiled = _compile(text)
    event(f"forbidden={forbidden} compiled={compiled is not None}")
    if forbidden:
        assert compiled is None, f"compiled an expression with a forbidden construct: {text!r}"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200).map(lambda b: b.decode("latin-1")), st.text(max_size=200)))
def test_random_text_and_bytes_compile_or_raise_expr_error(text: str):
    _compile(text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_bytes_with_an_expression_prefix(junk: bytes):
    _compile("x > 1 and " + junk.decode("utf-8", errors="surrogateescape"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("().__class__", "not allowed"),
        ("(x).__class__ > 1", "attribute"),
        ("labels.__dict__ == x", "label name"),
        ("labels._labels == x", "label name"),
        ("select.__globals__", "attribute"),
        ("rate.__globals__", "attribute"),
        ("x.__class__.__mro__ > 1", "attribute"),
        ("x > 1 and ''.__class__.__base__", "attribute"),
        ('f"{x}" > 1', "not allowed"),
        ('f"{x.__class__}" == x', "not allowed"),
        ("(lambda: x)() > 1", "lambda"),
        ("[y for y in x] > 1", "comprehension"),
        ("x > 1 and {y for y in x}", "comprehension"),
        ("(y := x) > 1", ":="),
        ("x ** 2 > 1", "'**'"),
        ("x > 9 ** 9 ** 9", "'**'"),
        ("x << 2 > 1", "'<<'"),
        ("x > 1 << 100000", "'<<'"),
        ("x > 10000000000000000000000", "too large"),
        ("x > 1e300", "too large"),
        ('x > 1 and "a" * 10 ** 9', "'**'"),
        ('x > len("a" * 999999999999999)', ""),
        ("__import__('os').system('true') > 1", "function"),
        ("eval('1') > x", "unknown function"),
        ("getattr(x, '__class__') > 1", "unknown function"),
        ("x[0] > 1", "subscript"),
        ("x(1) > 1", "unknown function"),
        ("labels['job'] == x", "subscript"),
        ("abs(*x) > 1", ""),
        ("x > 1; x < 2", "syntax"),
        ("x = 1", "syntax"),
        ("(yield x) > 1", ""),
        ("await x > 1", ""),
    ],
)
def test_escapes_and_blowups_are_refused_at_compile_with_a_message(text: str, fragment: str):
    with cpu_bound(COMPILE_CPU), pytest.raises(ExprError) as ei:
        compile_expr(text)
    assert str(ei.value).strip()
    assert fragment.lower() in str(ei.value).lower(), str(ei.value)


@pytest.mark.parametrize(
    "text",
    [
        "(" * 300 + "x" + ")" * 300 + " > 1",
        "-" * 3000 + "x > 1",
        "abs(" * 200 + "x" + ")" * 200 + " > 1",
        "x" + " + x" * 1500 + " > 1",
        "not " * 900 + "x",
        "x > 1 and " * 450 + "x > 1",
        "x" * 5000 + " > 1",
        "'" + "a" * 10000 + "' > x",
    ],
)
def test_deep_or_long_expressions_are_refused_quickly(text: str):
    with cpu_bound(COMPILE_CPU), pytest.raises(ExprError):
        compile_expr(text)


# ----------------------------------------------------------------------------------------------- evaluation


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[float, dict[str, dict[Labels, float]]]]:
    """A few snapshots of a few metrics, with odd values (NaN, inf, huge, negative) and series coming and going."""
    series = draw(
        st.lists(
            st.fixed_dictionaries(
                {"job": st.sampled_from(LABEL_VALUES)},
                optional={"instance": st.sampled_from(LABEL_VALUES), "cpu": st.sampled_from(["0", "1"])},
            ).map(Labels),
            min_size=1,
            max_size=6,
            unique=True,
        )
    )
    value = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, 95.0, -1.0, 1e300, 1e-300])
    )
    steps = draw(st.integers(1, 12))
    start = draw(st.sampled_from([1_700_000_000.0, 0.0, 15.0]))
    gaps = draw(st.lists(st.sampled_from([15.0, 1.0, 60.0, 3600.0, 0.0, -15.0]), min_size=steps, max_size=steps))
    out = []
    at = start
    for gap in gaps:
        at += gap
        snap = {
            m: {lab: draw(value) for lab in series if draw(st.integers(0, 4))}
            for m in ("cpu", "mem", "x", "value", "http_requests_total")
            if draw(st.integers(0, 5))
        }
        out.append((at, snap))
    return out


def _evaluate(rule: Rule, history, now_offsets: list[float]):  # type: ignore[no-untyped-def]
    """Build a RuleSet for ``rule``, ingest ``history`` and evaluate at a few times; returns the results."""
    results = []
    tracemalloc.start()
    try:
        with cpu_bound(EVAL_CPU):
            rs = RuleSet([rule])
            for at, snap in history:
                rs.ingest(SOURCE, at, snap)
            last = history[-1][0] if history else 0.0
            for off in now_offsets:
                results.append(rs.evaluate(rule, last + off))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < EVAL_MEMORY, f"{rule.expr.text!r} allocated {peak / 2**20:.0f} MiB"
    return results


def _check_result(rule: Rule, res, history) -> None:  # type: ignore[no-untyped-def]
    series = sum(len(s) for _, snap in history for s in snap.values())
    assert isinstance(res.evaluated, int) and res.evaluated >= 0
    assert len(res.active) <= series + 1, (rule.expr.text, len(res.active))
    for fp, (alert_labels, value, series_labels) in res.active.items():
        assert isinstance(fp, str)
        assert isinstance(alert_labels, Labels) and isinstance(series_labels, Labels)
        assert value is None or isinstance(value, float)
    prefix = f"{rule.file}:{rule.line}: {rule.group}/{rule.alert}: "
    for err in res.errors:
        assert isinstance(err, str) and err.startswith(prefix), (prefix, err)
        assert len(err) < 10_000, f"{len(err)}-character error for {rule.expr.text!r}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    st.one_of(PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, EXPRESSIONS),
    histories(),
    st.lists(st.sampled_from([0.0, 15.0, 600.0, -30.0, 86400.0]), min_size=1, max_size=3),
)
def test_compiled_expressions_evaluate_without_raising(template_rule: Rule, case, history, now_offsets):
    text, _ = case
    compiled = _compile(text)
    assume(compiled is not None)
    rule = dataclasses.replace(template_rule, expr=compiled)
    for res in _evaluate(rule, history, now_offsets):
        _check_result(rule, res, history)
        event("active" if res.active else "run-time error" if res.errors else "nothing active")


def _window_call(fn: str, metric: str, window: str, offset: str) -> str:
    extra = {
        "quantile_over_time": ("0.9, ", ""),
        "predict_linear": ("", ', "1h"'),
        "time_to": ("", ""),
    }
    pre, post = extra.get(fn, ("", ""))
    if fn == "time_to":
        return f"time_to({metric}, 90, {window!r}{offset})"
    if fn == "baseline":
        width = "1h" if window == "1d" else window
        return f'baseline({metric}, "1d", seasons=2, width={width!r})'  # baseline has no offset=
    return f"{fn}({pre}{metric}, {window!r}{post}{offset})"


@pytest.mark.parametrize("fn", [f for f in FUNCTIONS[12:35] if f not in ("offset", "absent")])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    histories(),
    st.sampled_from(["x", "select('x{job=\"a\"}')", "http_requests_total"]),
    st.sampled_from(["15s", "1m", "5m", "1h", "1d"]),
    st.sampled_from(["", ', offset="1m"', ', offset="1d"']),
    st.sampled_from([0.0, 15.0, 600.0, -30.0]),
)
def test_every_window_function_over_random_histories(template_rule: Rule, fn, history, metric, window, offset, now):
    """Each window, anomaly and forecast function, over odd histories (gaps, NaN, inf, out-of-order snapshots)."""
    text = _window_call(fn, metric, window, offset) + " > 0"
    compiled = _compile(text)
    assert compiled is not None, text
    rule = dataclasses.replace(template_rule, expr=compiled)
    for res in _evaluate(rule, history, [now]):
        _check_result(rule, res, history)


WINDOW_CASES = [
    'rate(x, "99999999w") > 0',
    'avg_over_time(x, "1w", offset="99999999w") > 0',
    'quantile_over_time(1e15, x, "1h") > 0',
    'quantile_over_time(-5, x, "1h") > 0',
    'quantile(nan, x, by="job") > 0',
    'baseline(x, "1w", seasons=999999999, width="1h") > 0',
    'baseline(x, "1s", seasons=100000, width="0s") > 0',
    'predict_linear(x, "1h", "99999999w") > 0',
    'time_to(x, 1e15, "1h") > 0',
    "round(x, 999999999) > 0",
    "round(x, -999999999) > 0",
    "clamp(x, inf, -inf) > 0",
    "x / 0 > 0",
    "x // 0 > 0",
    "x % 0 > 0",
    "x * 999999999999999 * 999999999999999 * 999999999999999 > 0",
    'on("job", x / mem) > 0',
    'count_over_time(x, "0s") > 0',
    'spike(x, "-5m") > 0',
]


@pytest.mark.parametrize("text", WINDOW_CASES)
def test_odd_arguments_are_errors_not_hangs(template_rule: Rule, text: str):
    """Arguments that could hang or blow up memory (huge windows, seasons, digits) are refused or bounded."""
    compiled = _compile(text)
    if compiled is None:
        return
    rule = dataclasses.replace(template_rule, expr=compiled)
    rng = random.Random(text)
    labels = [Labels({"job": j, "instance": i}) for j in ("a", "b", "a" * 30) for i in ("i1", "i2")]
    history = [
        (1_700_000_000.0 + 15 * k, {m: {lab: rng.uniform(-10, 10) for lab in labels} for m in ("x", "mem")})
        for k in range(240)
    ]
    for res in _evaluate(rule, history, [0.0, 3600.0]):
        _check_result(rule, res, history)


def test_a_regex_with_catastrophic_backtracking_does_not_hang(template_rule: Rule):
    """A label value that makes a nested-quantifier regex backtrack exponentially is matched in bounded time."""
    compiled = compile_expr("select('x{job=~\"(a+)+b\"}') > 0")
    rule = dataclasses.replace(template_rule, expr=compiled)
    history = [(1_700_000_000.0, {"x": {Labels({"job": "a" * 40}): 1.0, Labels({"job": "aab"}): 1.0}})]
    (res,) = _evaluate(rule, history, [0.0])
    assert [lab["job"] for lab, _, _ in res.active.values()] == ["aab"]


def test_run_time_errors_name_file_line_and_rule(template_rule: Rule):
    """A many-to-many join fails at run time; the error names the rule's file, line, group and alert."""
    rule = dataclasses.replace(template_rule, expr=compile_expr('on("job", x / mem) > 0'))
    two_per_job = {Labels({"job": "a", "instance": i}): 1.0 for i in ("i1", "i2")}
    (res,) = _evaluate(rule, [(1_700_000_000.0, {"x": two_per_job, "mem": two_per_job})], [0.0])
    assert res.active == {}
    assert len(res.errors) == 1
    assert template_rule.file.endswith(RULE_FILE) and template_rule.line in (5, 6)  # the rule's or its expr's line
    assert res.errors[0].startswith(f"{template_rule.file}:{template_rule.line}: g/A: "), res.errors[0]
    assert "many-to-many" in res.errors[0]


@pytest.mark.parametrize(
    "text",
    [
        'x > 1 and "a" * 1000000000',
        'x * "a" * 999999999999999 > 1',
        "labels.job * 1000000000 == x",
        "(labels.job + labels.job) * 999999999999999 == x",
        "x > 1 and labels.job * 100000000",
        "x % 'a%0999999999d' > 1",
        "round(x, 999999999999999) > 1",
    ],
)
def test_string_and_number_blowups_never_build_big_values(template_rule: Rule, text: str):
    """Refused at compile, or a run-time error in res.errors; either way fast and without a big allocation."""
    compiled = _compile(text)
    if compiled is None:
        return
    rule = dataclasses.replace(template_rule, expr=compiled)
    history = [(1_700_000_000.0, {"x": {Labels({"job": "abc"}): 5.0}})]
    (res,) = _evaluate(rule, history, [0.0])
    _check_result(rule, res, history)
    assert res.active == {} and res.errors, text


# ----------------------------------------------------------------------------------------------- config errors


def _problem(root: Path, expr: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_dir(root, expr)
    return [str(p) for p in ei.value.problems]


@pytest.mark.parametrize(
    "expr",
    ["x > > 1", "x.__class__ > 1", "x ** 2 > 1", "nosuchfn(x) > 1", "rate(x) > 1", "sum(x, by=1) > 1", "lambda: x"],
)
def test_config_errors_name_file_line_and_key(tmp_path: Path, expr: str):
    with pytest.raises(ExprError) as ei:
        compile_expr(expr)
    col = "" if ei.value.column is None else f" (column {ei.value.column + 1})"
    assert _problem(tmp_path, expr) == [f"{tmp_path / RULE_FILE}:6: {R0}.expr: {ei.value}{col}"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(EXPRESSIONS)
def test_any_refused_expression_is_located_in_its_file(tmp_path: Path, case: tuple[str, bool]):
    text, _ = case
    assume(text.isprintable() and "$" not in text)  # one YAML line, no ${ENV} expansion
    try:
        with cpu_bound(COMPILE_CPU):
            compile_expr(text)
    except ExprError as e:
        col = "" if e.column is None else f" (column {e.column + 1})"
        expected = [f"{tmp_path / RULE_FILE}:6: {R0}.expr: {e}{col}"]
    else:
        return
    with cpu_bound(COMPILE_CPU * 2):
        assert _problem(tmp_path, text) == expected


def test_nan_results_never_fire(template_rule: Rule):
    rule = dataclasses.replace(template_rule, expr=compile_expr("x > 1"))
    (res,) = _evaluate(rule, [(1_700_000_000.0, {"x": {Labels({"job": "a"}): math.nan}})], [0.0])
    assert res.active == {} and res.errors == []
