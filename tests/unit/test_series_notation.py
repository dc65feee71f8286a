"""promtool's input series notation: expanding values (``1+2x3``, ``_x2``, ``stale``) and series selectors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsincident.core import Labels
from fsincident.evaluation.replay import STALE
from fsincident.evaluation.ruletest import (
    MAX_SAMPLES,
    expand_values,
    format_prom_duration,
    parse_prom_duration,
    parse_series,
)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # the examples of Prometheus' documentation
        ("-2+4x3", [-2, 2, 6, 10]),
        (" 1-2x4", [1, -1, -3, -5, -7]),
        (" 1x4", [1, 1, 1, 1, 1]),
        (" 1 _x3 stale", [1, None, None, None, STALE]),
        # and the example test file's
        ("1+0x6 0 0 0 0 0 0 0 0", [1] * 7 + [0] * 8),
        ("10+10x2 30+20x5", [10, 20, 30, 30, 50, 70, 90, 110, 130]),
        ("10+10x7 10+30x4", [10, 20, 30, 40, 50, 60, 70, 80, 10, 40, 70, 100, 130]),
        ("_", [None]),
        ("_x0", []),
        ("0x0", [0]),
        ("", []),
        ("1e3 2.5e-1 .5 +7 -0", [1000, 0.25, 0.5, 7, 0]),
        ("1e3+1e3x2", [1000, 2000, 3000]),
        ("1.5-0.5x3", [1.5, 1.0, 0.5, 0.0]),
        ("Inf -Inf +Inf", [math.inf, -math.inf, math.inf]),
        ("Infx1", [math.inf, math.inf]),
        ("STALE stale", [STALE, STALE]),
    ],
)
def test_expanding_notation(text, want):
    assert expand_values(text) == want


def test_nan_is_a_value_not_a_missing_sample():
    got = expand_values("NaN nan NaNx1")
    assert len(got) == 4 and all(isinstance(v, float) and math.isnan(v) for v in got)


def test_numbers_from_yaml_are_accepted():
    assert expand_values(5) == [5.0]
    assert expand_values(None) == []


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("1+x3", "'1+x3' (item 1)"),
        ("1 2+3", "'2+3' (item 2)"),  # a step needs a count
        ("1 abc", "'abc' (item 2)"),
        ("1x", "'1x' (item 1)"),
        ("1+2x-3", "'1+2x-3' (item 1)"),
        ("_+1x2", "'_+1x2' (item 1)"),
        ("1,2", "'1,2' (item 1)"),
    ],
)
def test_invalid_items_are_named(text, bad):
    with pytest.raises(ValueError, match="invalid value") as e:
        expand_values(text)
    assert bad in str(e.value)
    assert "a+bxn" in str(e.value)


def test_huge_counts_are_refused_before_allocating():
    with pytest.raises(ValueError, match=f"more than {MAX_SAMPLES} samples"):
        expand_values("1+0x100000000000")
    with pytest.raises(ValueError, match="more than"):
        expand_values("_x100000000000")


@given(
    a=st.integers(-1000, 1000),
    b=st.integers(-1000, 1000),
    n=st.integers(0, 300),
)
def test_step_notation_is_n_plus_one_values_b_apart(a, b, n):
    sign = "+" if b >= 0 else "-"
    got = expand_values(f"{a}{sign}{abs(b)}x{n}")
    assert got == [float(a + i * b) for i in range(n + 1)]


ITEM = st.one_of(
    st.integers(-50, 50).map(lambda v: (str(v), [float(v)])),
    st.integers(0, 20).map(lambda n: (f"_x{n}", [None] * n)),
    st.just(("_", [None])),
    st.just(("stale", [STALE])),
    st.tuples(st.integers(-9, 9), st.integers(0, 9), st.integers(0, 9)).map(
        lambda t: (f"{t[0]}+{t[1]}x{t[2]}", [float(t[0] + i * t[1]) for i in range(t[2] + 1)])
    ),
)


@given(st.lists(ITEM, max_size=12))
def test_items_concatenate(items):
    text = " ".join(t for t, _ in items)
    want = [v for _, vals in items for v in vals]
    assert expand_values(text) == want


# ---------------------------------------------------------------------------- series selectors


def test_series_with_labels():
    assert parse_series('go_goroutines{job="prometheus", instance="localhost:9090"}') == (
        "go_goroutines",
        Labels({"job": "prometheus", "instance": "localhost:9090"}),
    )


def test_series_forms():
    assert parse_series("up") == ("up", Labels())
    assert parse_series("up{}") == ("up", Labels())
    assert parse_series('{__name__="up", job="a"}') == ("up", Labels({"job": "a"}))
    assert parse_series("job:up:sum{job='a',}") == ("job:up:sum", Labels({"job": "a"}))
    assert parse_series('up{path="a\\"b\\\\c\\nd"}') == ("up", Labels({"path": 'a"b\\c\nd'}))


def test_empty_label_value_is_no_label():
    assert parse_series('up{job="a", env=""}') == ("up", Labels({"job": "a"}))


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ('up{job=~"a"}', "exact labels"),
        ('up{job!="a"}', "exact labels"),
        ('{job="a"}', "metric name"),
        ('up{job="a"', "expected ',' or '}'"),
        ("up{job=a}", "quoted value"),
        ('up{job="a", job="b"}', "given twice"),
        ("", "empty"),
    ],
)
def test_bad_series_say_why(text, msg):
    with pytest.raises(ValueError, match="series") as e:
        parse_series(text)
    assert msg in str(e.value)


LABEL_VALUES = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), LABEL_VALUES, max_size=5))
def test_series_round_trip(labels):
    labels = {k: v for k, v in labels.items() if k != "__name__"}
    inner = ", ".join(
        f'{k}="' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"' for k, v in labels.items()
    )
    assert parse_series(f"metric_x{{{inner}}}") == ("metric_x", Labels(labels))


# ---------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "ms"),
    [("0", 0), (0, 0), ("1m", 60_000), ("1h30m", 5_400_000), ("1d", 86_400_000), ("1w", 604_800_000),
     ("1y", 31_536_000_000), ("500ms", 500), ("1m30s", 90_000)],
)  # fmt: skip
def test_prometheus_durations(text, ms):
    assert parse_prom_duration(text) == ms


@pytest.mark.parametrize("text", ["", "5", "1.5m", "m", "1m1h", "-1m", True, "1 m"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_prom_duration(text)


@given(st.integers(0, 10**13))
def test_duration_format_round_trips(ms):
    assert parse_prom_duration(format_prom_duration(ms)) == ms
