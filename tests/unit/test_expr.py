"""Rule expressions: what compiles, what it evaluates to, and that nothing escapes the sandbox."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsincident.expr import CompiledExpr, ExprError, LabelView, compile_expr, truthy

from .guard import cpu_bound

NAMES = {"a": 2.0, "b": 0.5, "cpu": 93.25, "value": 2.0, "labels": LabelView({"instance": "x", "job": "node"})}


def ev(text: str, **names):
    return compile_expr(text, require_metric=False).evaluate({**NAMES, **names})


# ----------------------------------------------------------------------------------------------- table tests


def test_comparison_with_labels():
    c = compile_expr('a > 1 and labels.instance == "x"')
    assert c.evaluate(NAMES) is True
    assert c.evaluate({**NAMES, "labels": LabelView({"instance": "y"})}) is False
    assert c.evaluate({**NAMES, "a": 0.5}) is False


def test_missing_label_is_empty_string():
    assert ev('labels.nope == ""') is True


def test_value_is_left_side_of_top_level_comparison():
    c = compile_expr("a / b < 0.05")
    assert c.value({"a": 1.0, "b": 4.0}) == 0.25
    assert c.evaluate({"a": 1.0, "b": 4.0}) is False


def test_value_without_comparison_is_primary_metric():
    c = compile_expr("cpu and mem")
    assert c.value({"cpu": 7.0, "mem": 1.0}) == 7.0


def test_value_of_chained_comparison_is_primary_metric():
    c = compile_expr("1 < cpu < 3")
    assert c.value({"cpu": 2.0}) == 2.0


def test_value_failure_is_none_not_an_exception():
    c = compile_expr("a / b > 1")
    assert c.value({"a": 1.0, "b": 0.0}) is None
    c = compile_expr('labels.instance == "x"', require_metric=False)
    assert c.value({"labels": LabelView({"instance": "x"})}) is None


@pytest.mark.parametrize(
    ("text", "metrics"),
    [
        ("cpu > 90", ("cpu",)),
        ("mem_avail / mem_total < 0.05", ("mem_avail", "mem_total")),
        ("b > 1 and a < 2 and b < 3", ("b", "a")),
        ("max(x, y) > z", ("x", "y", "z")),
        ("x if y > 0 else z", ("x", "y", "z")),
        ('value > 1 and labels.job == "n"', ()),
        ("isnan(load) or load > nan", ("load",)),
        ("abs(round(cpu, 1)) > inf", ("cpu",)),
    ],
)
def test_metrics_in_source_order(text, metrics):
    c = compile_expr(text)
    assert c.metrics == metrics
    assert c.primary == (metrics[0] if metrics else None)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("2**1000", "'**'"),
        ("a ** 2 > 1", "'**'"),
        ("a << 3", "'<<'"),
        ("a >> 3", "'>>'"),
        ("a = 5", "syntax"),
        ("1; 2", "syntax"),
        ("a.__class__", "attribute"),
        ("labels.__class__", "label name"),
        ("labels._labels", "label name"),
        ("open('x')", "unknown function 'open'"),
        ("__import__('os')", "unknown function '__import__'"),
        ("a.b()", "unknown function"),
        ("lambda: 1", "lambda"),
        ("a[0]", "subscript"),
        ("[x for x in a]", "comprehension"),
        ("{1: 2}", "dict"),
        ("(b := 3)", "':='"),
        ("10000000000000000 > a", "too large"),
        ("a > 1e300", "too large"),
        ("1 > 2", "no metric"),
        ("   ", "empty"),
        ("a >", "syntax"),
        ("a" + " + a" * 200, "nested"),
        ("-" * 3000 + "a", "nested"),
        ('labels.job in ("a", "b")', "tuple"),
        ('labels.job in ["a", "b"]', "list"),
        ('f"{a}" == "1"', "not allowed"),
        ("a > 1j", "not allowed"),
        ("x" * 5000, "longer than"),
    ],
)
def test_rejected_at_compile_time(text, fragment):
    with pytest.raises(ExprError) as ei:
        compile_expr(text)
    assert fragment in str(ei.value)


def test_syntax_error_has_a_column():
    with pytest.raises(ExprError) as ei:
        compile_expr("a > > 1")
    assert ei.value.column is not None and ei.value.column >= 2


@pytest.mark.parametrize(
    "text",
    [
        "a / 0 > 1",
        "a // 0",
        "a % 0",
        "missing_metric > 1",
        'int("x") > 1',
        "round(1, -100000000) > 0",
        'round("x")',
        'int(float("inf"))',
        '"%0999999999d" % 1 == ""',
        "max() > 1",
        'a + "x"',
        "labels + 1",
        'isnan("x")',
        '"a" * 99999 * ("a" * 99999) == ""',
        "labels.instance * labels.job",
    ],
)
def test_run_time_failures_are_expr_errors(text):
    with cpu_bound(2):
        with pytest.raises(ExprError):
            ev(text)


def test_division_by_zero_names_the_problem():
    with pytest.raises(ExprError, match="ZeroDivisionError"):
        compile_expr("a / b > 1").evaluate({"a": 1.0, "b": 0.0})


def test_nan_and_inf_are_usable():
    assert ev("isnan(nan)") is True
    assert ev("a < inf") is True
    assert ev("-inf < a") is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a * 2 + 1", 5.0),
        ("max(a, b, 7)", 7),
        ("round(cpu, 1)", 93.2),
        ("round(cpu)", 93),
        ("abs(b - a)", 1.5),
        ('str(int(a)) + "x"', "2x"),
        ('"x" in labels.instance', True),
        ('"node" if labels.job == "node" else "other"', "node"),
        ("7 % 3", 1),
        ("not b", False),
        ("a if b > 1 else -a", -2.0),
        ('"ab" * 3', "ababab"),
    ],
)
def test_evaluates(text, expected):
    assert ev(text) == expected


def test_string_repetition_is_capped():
    with pytest.raises(ExprError):
        ev('"ab" * 100000')


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (float("nan"), False),
        (math.nan, False),
        (0.0, False),
        (0, False),
        ("", False),
        (None, False),
        (False, False),
        (1e-9, True),
        (-1.0, True),
        (float("inf"), True),
        (True, True),
        ("x", True),
    ],
)
def test_truthy(result, expected):
    assert truthy(result) is expected


def test_nan_expression_never_alerts():
    c = compile_expr("a * 1")
    assert truthy(c.evaluate({"a": float("nan")})) is False
    assert truthy(compile_expr("a > 1").evaluate({"a": float("nan")})) is False


def test_compiled_once_evaluates_many_times():
    c = compile_expr("a > b")
    assert isinstance(c, CompiledExpr)
    assert [c.evaluate({"a": x, "b": 5}) for x in range(10)] == [x > 5 for x in range(10)]


# ----------------------------------------------------------------------------------------------- fuzzing

# Two grammars: one mostly of allowed constructs (so that many expressions get as far as evaluation, with big
# numbers, long strings and odd types), and a hostile one that mixes in every construct that must be refused.
SAFE_ATOMS = st.sampled_from(
    [
        "a", "b", "cpu", "value", "labels", "nan", "inf", "True", "None", "x_undefined",
        "0", "1", "-1", "2.5", "1e15", "1e-308", "999999999999999", "4000000", "0.0",
        '""', '"x"', '"%s"', '"%0999999999d"', '"{}"', '"a" * 99999', "labels.instance", "labels.job",
    ]
)  # fmt: skip
HOSTILE_ATOMS = st.sampled_from(
    [
        "10000000000000000", "1e308", "1j", "b'x'", "...", '"{0.__class__}"',
        "abs", "int", "str", "round", "__import__", "__builtins__", "eval", "exec", "open", "getattr", "type",
        "globals", "labels.__class__", "labels._labels", "labels.__dict__", "labels.format", "labels.mro",
        "labels.func_globals",
    ]
)  # fmt: skip
SAFE_BINOPS = st.sampled_from(
    ["+", "-", "*", "/", "//", "%", "<", ">", "==", "!=", "<=", ">=", " and ", " or ", " in ", " not in "]
)
HOSTILE_BINOPS = st.sampled_from(["**", "<<", ">>", "&", "|", "^", "@", " is ", " is not "])
SAFE_UNARY = st.sampled_from(["-", "+", "not "])
FUNCS = st.sampled_from(["abs", "int", "str", "round", "max", "min", "float", "isnan"])
HOSTILE_FUNCS = st.sampled_from(["eval", "__import__", "getattr", "print", "f", "labels.x", "(abs)"])
ATTRS = st.sampled_from(["__class__", "__dict__", "__globals__", "__subclasses__", "__mro__", "real", "format", "x"])


def _safe(inner):
    return st.one_of(
        st.tuples(inner, SAFE_BINOPS, inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
        st.tuples(SAFE_UNARY, inner).map(lambda t: f"{t[0]}{t[1]}"),
        st.tuples(FUNCS, st.lists(inner, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.tuples(inner, st.integers(2, 12)).map(lambda t: "*".join([t[0]] * t[1])),
        st.tuples(inner, st.integers(2, 12)).map(lambda t: "+".join([t[0]] * t[1])),
    )


def _hostile(inner):
    refused = st.one_of(
        st.tuples(inner, HOSTILE_BINOPS, inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
        inner.map(lambda x: f"~{x}"),
        st.tuples(HOSTILE_FUNCS, st.lists(inner, max_size=2)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(inner, ATTRS).map(lambda t: f"({t[0]}).{t[1]}"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        inner.map(lambda x: f"(lambda q: {x})"),
        st.tuples(inner, inner).map(lambda t: f"[{t[0]} for q in {t[1]}]"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]} for q in {t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"{{{t[0]}: {t[1]}}}"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]}, {t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"[{t[0]}, {t[1]}]"),
        inner.map(lambda x: f"(w := {x})"),
        inner.map(lambda x: f'f"{{{x}}}"'),
    )
    # Mostly allowed constructs around the occasional hostile one, so hostile names reach evaluation.
    return st.integers(0, 4).flatmap(lambda i: refused if i == 0 else _safe(inner))


SAFE_EXPRESSIONS = st.recursive(SAFE_ATOMS, _safe, max_leaves=30)
HOSTILE_EXPRESSIONS = st.recursive(st.one_of(SAFE_ATOMS, HOSTILE_ATOMS), _hostile, max_leaves=25)
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**15), 10**15),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
)


def _check_outcome(text: str, names: dict) -> None:
    started = time.process_time()
    with cpu_bound(3):
        try:
            c = compile_expr(text, require_metric=False)
        except ExprError:
            return
        try:
            result = c.evaluate(names)
        except ExprError:
            result = None
        value = c.value(names)
    assert time.process_time() - started < 2.5, text
    if isinstance(result, str):
        assert len(result) <= 100_000, text
    assert value is None or isinstance(value, float)
    truthy(result)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SAFE_EXPRESSIONS, VALUES, VALUES)
def test_fuzz_allowed_constructs_only_expr_errors(text, a, b):
    _check_outcome(text, {**NAMES, "a": a, "b": b})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HOSTILE_EXPRESSIONS, VALUES)
def test_fuzz_hostile_constructs_only_expr_errors(text, a):
    _check_outcome(text, {**NAMES, "a": a})


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_fuzz_arbitrary_text_only_expr_errors(text):
    _check_outcome(text, NAMES)


NESTINGS = [("-", ""), ("not ", ""), ("(", ")"), ("abs(", ")"), ("1+", ""), ("", "+1"), ("(a if b else ", ")")]


@pytest.mark.filterwarnings("ignore::SyntaxWarning")
@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NESTINGS), st.integers(1, 1500), st.lists(st.sampled_from(["a", "(", ")", "+", "-", "not "])))
def test_fuzz_deep_nesting_only_expr_errors(wrap, depth, noise):
    prefix, suffix = wrap
    _check_outcome(prefix * depth + "a" + "".join(noise) + suffix * depth, NAMES)


@pytest.mark.parametrize(("prefix", "suffix"), NESTINGS)
def test_moderate_nesting_still_works(prefix, suffix):
    c = compile_expr(prefix * 40 + "a" + suffix * 40)
    c.evaluate(NAMES)


def test_long_flat_sum_evaluates():
    assert compile_expr(" + ".join(["a"] * 50)).evaluate(NAMES) == 100.0
