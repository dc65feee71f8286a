"""The jinja2 sandbox for annotations and notification templates: strict, capped, never hangs on arithmetic."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsincident.sandbox import MAX_OUTPUT, CompiledTemplate, TemplateProblem

from .guard import cpu_bound


def render(source: str, **context) -> str:
    return CompiledTemplate(source).render(**context)


def refused_quickly(source: str, **context) -> TemplateProblem:
    """Compiling and rendering ``source`` raises TemplateProblem within 2 s of wall time."""
    started = time.monotonic()
    with cpu_bound(5), pytest.raises(TemplateProblem) as ei:
        render(source, **context)
    assert time.monotonic() - started < 2
    return ei.value


@pytest.mark.parametrize(
    "source",
    [
        "{{ 9 ** (9 ** 9) }}",
        "{{ 4000000 ** 4000000 }}",
        "{{ 10 ** 64 ** 2 }}",
        "{{ (10 ** 13) ** 2 }}",
        '{{ "a" * 10**7 }}',
        '{{ 10**7 * "a" }}',
        "{{ [1] * 10**9 }}",
        '{{ ["a" * 100000] * 100000 }}',
        "{{ [[1] * 100000] * 100000 }}",
        '{{ [["a" * 100000]] * 100000 }}',
        "{% set x = 9 ** 9 %}{{ x ** x }}",
        '{{ "a" ** 2 }}',
    ],
)
def test_arithmetic_bombs_fail_fast(source):
    problem = refused_quickly(source)
    assert "refused" in str(problem)


def test_repetition_within_the_cap_renders():
    assert render('{{ "ab" * 3 }}') == "ababab"
    assert render("{{ [0] * 3 }}") == "[0, 0, 0]"
    assert render("{{ 2 ** 10 }}") == "1024"
    assert len(render('{{ "a" * 50000 }}')) == 50000


def test_output_is_truncated():
    out = render('{{ "a" * 100000 }}')
    assert len(out) == MAX_OUTPUT + 1 and out.endswith("…")


@pytest.mark.parametrize("source", ["{{ missing }}", "{{ labels.missing }}", "{{ missing | round(1) }}"])
def test_undefined_is_an_error(source):
    with pytest.raises(TemplateProblem, match=r"undefined|has no attribute 'missing'"):
        render(source, labels={"instance": "x"})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ value | round(1) }}", "93.5"),
        ("{{ value | round(2) }}", "93.46"),
        ("{{ value | round }}", "93"),
        ("{{ value | round(0) }}", "93"),
        ("{{ big | round(-2) }}", "1200"),
        ('{{ "n/a" | round(1) }}', "n/a"),
        ("{{ none | round(1) }}", "None"),
    ],
)
def test_round_filter(source, expected):
    assert render(source, value=93.456, big=1234.5, none=None) == expected


@pytest.mark.parametrize(
    "source",
    [
        "{{ labels.__class__ }}",
        "{{ value.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ labels.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ labels.update({'a': 1}) }}",
        "{{ items.append(1) }}",
    ],
)
def test_unsafe_access_is_refused(source):
    problem = refused_quickly(source, labels={"a": "b"}, value=1.0, items=[])
    assert "unsafe" in str(problem) or "refused" in str(problem) or "undefined" in str(problem)


def test_syntax_error_at_compile_time_names_the_line():
    with pytest.raises(TemplateProblem) as ei:
        CompiledTemplate("line one\n{{ value + }}")
    assert ei.value.line == 2


@pytest.mark.parametrize("source", ["{{ 1 / 0 }}", "{{ 1 // 0 }}", "{{ 1 % 0 }}", "{{ 10.0 ** 64 * 1e300 ** 2 }}"])
def test_arithmetic_errors_are_template_problems(source):
    with pytest.raises(TemplateProblem):
        render(source)


def test_renders_context():
    source = "{{ alertname }} on {{ labels.instance }}: {{ value | round(1) }}"
    out = render(source, alertname="CPU", labels={"instance": "h1"}, value=91.04)
    assert out == "CPU on h1: 91.0"


# ----------------------------------------------------------------------------------------------- fuzzing

NUMBERS = st.sampled_from(
    ["0", "1", "2", "9", "64", "65", "99", "10**12", "999999999999", "10**13", "9**9", "1.5", "-3"]
)
OPS = st.sampled_from(["*", "**", "+", "-", "//", "%", "/"])


def _arith(inner):
    return st.one_of(
        st.tuples(inner, OPS, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda x: f"(-{x})"),
        inner.map(lambda x: f'("ab" * {x})'),
        inner.map(lambda x: f"([1, [2]] * {x})"),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(NUMBERS, _arith, max_leaves=12))
def test_fuzz_big_int_arithmetic_never_hangs(expr):
    started = time.process_time()
    with cpu_bound(3):
        try:
            out = render("{{ " + expr + " }}")
        except TemplateProblem:
            out = ""
    assert time.process_time() - started < 2, expr
    assert len(out) <= MAX_OUTPUT + 1


@pytest.mark.parametrize(
    "source",
    [
        '{{ "x" | center(10**9) }}',
        '{{ "x" | indent(10**9) }}',
        '{{ "%999999999d" | format(1) }}',
        '{{ "%999999999d" % 1 }}',
        '{{ "{:>999999999}".format(1) }}',
        '{{ "%.999999999f" % 1 }}',
    ],
)
def test_width_bombs_refused_fast(source):
    t0 = time.monotonic()
    with pytest.raises(TemplateProblem, match="limited"):
        CompiledTemplate(source).render()
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize(
    ("source", "out"),
    [
        ('{{ "x" | center(5) }}', "  x  "),
        ('{{ "%5.1f" | format(3.14159) }}', "  3.1"),
        ('{{ "{:>3}".format(1) }}', "  1"),
    ],
)
def test_ordinary_widths_still_work(source, out):
    assert CompiledTemplate(source).render() == out
