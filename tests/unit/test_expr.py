"""The rule language: what compiles, what it evaluates to over series, and what it refuses."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import pytest

from fsincident.config import Rule
from fsincident.core import Labels, Severity
from fsincident.evaluation.rules import RuleSet
from fsincident.expr import ExprError, compile_expr


def L(**kw: str) -> Labels:
    return Labels(kw)


def make_rule(expr: str, *, resolve: str | None = None, labels: dict | None = None, alert: str = "A") -> Rule:
    r = Rule(
        group="g",
        alert=alert,
        source="s",
        expr=compile_expr(expr),
        query=None,
        for_=timedelta(0),
        keep_firing_for=timedelta(0),
        severity=Severity.WARNING,
        labels=labels or {},
        annotations={},
        file="rules.d/x.yaml",
        line=7,
    )
    if resolve is not None:
        r = replace(r, resolve_expr=compile_expr(resolve))
    return r


CPU = {L(host="a", job="web"): 95.0, L(host="b", job="web"): 50.0, L(host="c", job="db"): 99.0}
MEM = {L(host="a", job="web"): 0.5, L(host="b", job="web"): 0.25, L(host="c", job="db"): 1.0}


def run(expr: str, snaps: list[dict] | None = None, *, step: float = 15.0) -> dict[Labels, float]:
    """Evaluate ``expr`` after feeding the snapshots (default: one snapshot of CPU and MEM)."""
    rule = make_rule(expr)
    rs = RuleSet([rule])
    snaps = snaps if snaps is not None else [{"cpu": CPU, "mem": MEM}]
    t = 1000.0
    for i, snap in enumerate(snaps):
        t = 1000.0 + i * step
        rs.ingest("s", t, snap)
    res = rs.evaluate(rule, t)
    assert not res.errors, res.errors
    return {series: value for _, value, series in res.active.values()}


# ------------------------------------------------------------------------------------------- selection


def test_threshold_keeps_series_with_their_value():
    assert run("cpu > 90") == {L(host="a", job="web"): 95.0, L(host="c", job="db"): 99.0}


def test_scalar_on_the_left_keeps_the_series_value():
    assert run("90 < cpu") == {L(host="a", job="web"): 95.0, L(host="c", job="db"): 99.0}


@pytest.mark.parametrize(
    ("selector", "hosts"),
    [
        ('cpu{job="web"}', {"a", "b"}),
        ('cpu{job!="web"}', {"c"}),
        ('cpu{host=~"a|c"}', {"a", "c"}),
        ('cpu{host!~"a|c"}', {"b"}),
        ('cpu{host=~"a."}', set()),  # anchored: "a." does not match "a"
        ('cpu{missing=""}', {"a", "b", "c"}),  # an absent label matches the empty string
        ('{__name__="cpu", job="db"}', {"c"}),
    ],
)
def test_select_matchers(selector, hosts):
    out = run(f"select('{selector}') > 0")
    assert {lab["host"] for lab in out} == hosts


def test_label_filter_with_and():
    assert set(run('cpu > 0 and labels.job == "db"')) == {L(host="c", job="db")}
    assert set(run('labels.job != "db" and cpu > 60')) == {L(host="a", job="web")}


# ------------------------------------------------------------------------------------------- arithmetic and joins


def test_vector_arithmetic_joins_on_equal_labels():
    out = run("cpu * mem")
    assert out == {L(host="a", job="web"): 47.5, L(host="b", job="web"): 12.5, L(host="c", job="db"): 99.0}


def test_unmatched_series_drop_out_of_a_join():
    mem = {L(host="a", job="web"): 2.0}
    assert run("cpu / mem", [{"cpu": CPU, "mem": mem}]) == {L(host="a", job="web"): 47.5}


def test_on_and_ignoring_choose_the_matching_labels():
    cores = {L(host="a"): 2.0, L(host="c"): 4.0}
    snaps = [{"cpu": CPU, "cores": cores}]
    assert run("cpu / cores", snaps) == {}  # label sets differ: nothing matches
    assert run('on("host", cpu / cores)', snaps) == {L(host="a", job="web"): 47.5, L(host="c", job="db"): 24.75}
    assert run('ignoring("job", cpu / cores)', snaps) == {L(host="a", job="web"): 47.5, L(host="c", job="db"): 24.75}


def test_many_to_one_takes_the_labels_of_the_many_side():
    per_job = {L(job="web"): 10.0, L(job="db"): 100.0}
    out = run('on("job", cpu - limit) > 0', [{"cpu": CPU, "limit": per_job}])
    assert out == {L(host="a", job="web"): 85.0, L(host="b", job="web"): 40.0}
    out = run('on("job", limit < cpu)', [{"cpu": CPU, "limit": per_job}])
    assert set(out) == {L(host="a", job="web"), L(host="b", job="web")}


def test_many_to_many_is_an_error_naming_the_rule():
    rule = make_rule('on("job", cpu / cpu2)')
    rs = RuleSet([rule])
    rs.ingest("s", 1000.0, {"cpu": CPU, "cpu2": CPU})
    res = rs.evaluate(rule, 1000.0)
    assert res.active == {}
    assert len(res.errors) == 1
    assert res.errors[0].startswith("rules.d/x.yaml:7: g/A: expr: many-to-many matching on on(job)")


def test_division_by_zero_gives_inf_like_prometheus():
    assert run("cpu / 0 > 1") == {lab: math.inf for lab in CPU}


def test_and_or_unless():
    hot = {L(host="a", job="web"): 1.0}
    snaps = [{"cpu": CPU, "hot": hot}]
    assert set(run("cpu and hot", snaps)) == {L(host="a", job="web")}
    assert set(run("unless(cpu, hot)", snaps)) == {L(host="b", job="web"), L(host="c", job="db")}
    both = run("cpu > 98 or hot", snaps)
    assert both == {L(host="c", job="db"): 99.0, L(host="a", job="web"): 1.0}
    assert run("cpu > 90 and cpu < 98") == {L(host="a", job="web"): 95.0}
    assert run("90 < cpu < 98") == {L(host="a", job="web"): 95.0}


# ------------------------------------------------------------------------------------------- aggregation


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum(cpu, by="job")', {L(job="web"): 145.0, L(job="db"): 99.0}),
        ('avg(cpu, by="job")', {L(job="web"): 72.5, L(job="db"): 99.0}),
        ('min(cpu, by="job")', {L(job="web"): 50.0, L(job="db"): 99.0}),
        ('max(cpu, by="job")', {L(job="web"): 95.0, L(job="db"): 99.0}),
        ('count(cpu, by="job")', {L(job="web"): 2.0, L(job="db"): 1.0}),
        ('stddev(cpu, by="job")', {L(job="web"): 22.5, L(job="db"): 0.0}),
        ('quantile(0.5, cpu, by="job")', {L(job="web"): 72.5, L(job="db"): 99.0}),
        ("sum(cpu)", {L(): 244.0}),
        ('count(cpu, without="host")', {L(job="web"): 2.0, L(job="db"): 1.0}),
        ('max(cpu, by="job,host") > 90', {L(job="web", host="a"): 95.0, L(job="db", host="c"): 99.0}),
        ("max(cpu, mem) > 90", {L(host="a", job="web"): 95.0, L(host="c", job="db"): 99.0}),
    ],
)
def test_aggregations(expr, expected):
    assert run(expr) == pytest.approx(expected)


def test_aggregation_of_filtered_series_only_counts_present_ones():
    assert run('count(cpu > 90, by="job")') == {L(job="web"): 1.0, L(job="db"): 1.0}


# ------------------------------------------------------------------------------------------- windows


def counter(per_step: float, steps: int, reset_at: int | None = None) -> list[dict]:
    out, v = [], 0.0
    for i in range(steps):
        if reset_at is not None and i == reset_at:
            v = 0.0
        out.append({"req": {L(job="api"): v}})
        v += per_step
    return out


def test_rate_increase_and_reset_correction():
    snaps = counter(150.0, 41)  # +150 per 15 s = 10/s
    assert run('rate(req, "5m")', snaps) == {L(job="api"): pytest.approx(10.0)}
    assert run('increase(req, "5m")', snaps) == {L(job="api"): pytest.approx(3000.0)}
    assert run('rate(req, "5m")', counter(150.0, 41, reset_at=35)) == {L(job="api"): pytest.approx(10.0, rel=0.06)}


def test_over_time_and_offset():
    snaps = [{"t": {L(x="1"): float(i)}} for i in range(241)]  # 0..240, one per 15 s: an hour
    assert run('max_over_time(t, "5m")', snaps) == {L(x="1"): 240.0}
    assert run('min_over_time(t, "5m")', snaps) == {L(x="1"): 221.0}
    assert run('avg_over_time(t, "1m")', snaps) == {L(x="1"): 238.5}
    assert run('count_over_time(t, "1m")', snaps) == {L(x="1"): 4.0}
    assert run('offset(t, "30m")', snaps) == {L(x="1"): 120.0}
    assert run('max_over_time(t, "5m", offset="30m")', snaps) == {L(x="1"): 120.0}
    assert run('t - offset(t, "1h")', snaps) == {L(x="1"): 240.0}


def test_forecast_disk_full():
    # 1 GB/min growth, 10 GB left: full in 10 minutes
    snaps = [{"free": {L(dev="sda"): 30e9 - i * 0.25e9}} for i in range(81)]
    assert run('time_to(free, 0, "20m")', snaps) == {L(dev="sda"): pytest.approx(600.0)}
    assert run('predict_linear(free, "20m", "4m") < 7e9', snaps) == {L(dev="sda"): pytest.approx(6e9)}
    assert run('time_to(free, 0, "20m") < 4 * 3600', snaps) != {}


def test_absent_and_nodata():
    assert run("absent(select('cpu{job=\"mail\"}'))") == {L(job="mail"): 1.0}
    assert run("absent(cpu)") == {}
    gone = [{"cpu": CPU}] + [{"cpu": {L(host="a", job="web"): 1.0}}] * 25
    assert set(run('nodata(cpu, "5m")', gone)) == {L(host="b", job="web"), L(host="c", job="db")}


def test_anomaly_functions_flag_the_odd_series():
    calm = [{"lat": {L(s="x"): 100.0 + (i % 3), L(s="y"): 100.0 + (i % 3)}} for i in range(60)]
    calm.append({"lat": {L(s="x"): 100.0, L(s="y"): 500.0}})
    assert set(run('zscore(lat, "15m") > 5', calm)) == {L(s="y")}
    assert set(run('spike(lat, "1m") > 1.5', calm)) == {L(s="y")}
    flat = [{"g": {L(s="x"): 7.0, L(s="y"): float(i)}} for i in range(30)]
    assert set(run('flatline(g, "5m")', flat)) == {L(s="x")}


# ------------------------------------------------------------------------------------------- hysteresis


def test_resolve_expr_holds_a_firing_series_until_it_is_true():
    rule = make_rule("cpu > 90", resolve="cpu < 80")
    rs = RuleSet([rule])
    lab = L(host="a")

    def at(t: float, v: float | None, firing: set[str]) -> set[str]:
        rs.ingest("s", t, {"cpu": {} if v is None else {lab: v}})
        return set(rs.evaluate(rule, t, firing).active)

    fired = at(1, 95, set())
    assert len(fired) == 1
    assert at(2, 85, fired) == fired  # between the thresholds: still firing
    assert at(3, 85, set()) == set()  # not firing: 85 does not start it
    assert at(4, 79, fired) == set()  # resolve_expr holds
    assert at(5, 95, set()) == fired
    assert at(6, None, fired) == set()  # the series vanished: resolves like any vanished series


# ------------------------------------------------------------------------------------------- compile time


@pytest.mark.parametrize(
    ("text", "metrics"),
    [
        ("cpu > 90", ("cpu",)),
        ("mem_avail / mem_total < 0.05", ("mem_avail", "mem_total")),
        ("b > 1 and a < 2 and b < 3", ("b", "a")),
        ("max(x, y) > z", ("x", "y", "z")),
        ('value > 1 and labels.job == "n"', ()),
        ('rate(select(\'http_total{code=~"5.."}\'), "5m") / rate(http_total, "5m")', ("http_total",)),
        ('sum(rate(a, "1m"), by="job") > 1 or absent(b)', ("a", "b")),
    ],
)
def test_metrics_in_source_order(text, metrics):
    c = compile_expr(text)
    assert c.metrics == metrics


def test_history_span_is_the_longest_window_plus_offset():
    c = compile_expr('rate(x, "5m") > 1 and avg_over_time(x, "1h", offset="1d") > 2 and spike(y, "10m") > 3')
    assert c.span_seconds("x") == 3600 + 86400
    assert c.span_seconds("y") == 1200
    assert c.span_seconds("z") == 0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("2**1000", "'**'"),
        ("a ** 2 > 1", "'**'"),
        ("a << 3", "'<<'"),
        ("a >> 3", "'>>'"),
        ("a & b", "'&'"),
        ("a = 5", "syntax"),
        ("1; 2", "syntax"),
        ("a.__class__", "attribute"),
        ("labels.__class__", "label name"),
        ("select.__globals__", "attribute"),
        ("().__class__", "tuples"),
        ("open('x')", "unknown function 'open'"),
        ("__import__('os')", "unknown function '__import__'"),
        ("a.b()", "only named functions"),
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
        ('f"{a}" == "1"', "f-strings"),
        ("a > 1j", "not allowed"),
        ("x" * 5000, "longer than"),
        ('rate(a, "5x")', "the window"),
        ('rate(a, "0s")', "longer than 0s"),
        ('rate(a + b, "5m")', "needs a metric name"),
        ('rate(a, "5m", "1m")', "use rate(metric, window"),
        ('rate(a, "5m", foo="1m")', "no argument 'foo'"),
        ('avg_over_time(a, "900d")', "at most 400d"),
        ("select('a{b=~\"(\"}')", "invalid regular expression"),
        ("select('a{b~\"x\"}')", "expected one of"),
        ("select('{b=\"x\"}')", "needs a metric name"),
        ('sum(a, by="job", without="x")', "not both"),
        ('sum(a, by="job-name")', "invalid label name"),
        ('sum(a, by=["job"])', "label lists as one string"),
        ('on("job", a)', "wraps an operation"),
        ('baseline(a, "1d", seasons=50)', "seasons"),
        ("labels", "use labels.NAME"),
        ("rate > 1", "is a function"),
        ("sum(*a)", "'*' arguments"),
        ('cpu + "x"', "cannot be used in arithmetic"),
        ('"a" * 1000000000 > cpu', "cannot be used in arithmetic"),
        ("labels.job + 1 > 0 and cpu", "cannot be used in arithmetic"),
        ('labels.job > "a" and cpu', "with == or !="),
        ('cpu > "a"', "with == or !="),
        ('-labels.job == "a" and cpu', "negated"),
    ],
)
def test_rejected_at_compile_time(text, fragment):
    with pytest.raises(ExprError) as ei:
        compile_expr(text)
    assert fragment in str(ei.value)


def test_error_columns_count_characters_not_bytes():
    text = "sum(select('größe{ort=\"köln\"}'), by=cpu)"
    with pytest.raises(ExprError) as ei:
        compile_expr(text)
    assert text[ei.value.column :] == "cpu)"


def test_errors_have_a_column():
    with pytest.raises(ExprError) as ei:
        compile_expr("a > > 1")
    assert ei.value.column is not None and ei.value.column >= 2
    with pytest.raises(ExprError) as ei:
        compile_expr('cpu > 1 and rate(x, "5q") > 2')
    assert ei.value.column == len("cpu > 1 and rate(x, ")  # the argument, not the whole expression


@pytest.mark.parametrize(
    "text",
    [
        'cpu > 0 or labels.job == "a"',
        'int("x") > 1 and cpu',
        "round(cpu, -1000) > 0",
        "not cpu",
        "cpu if cpu else mem",
        'quantile(cpu, cpu, by="job")',
        'on("job", cpu / mem2) or cpu',
    ],
)
def test_run_time_failures_are_reported_not_raised(text):
    rule = make_rule(text)
    rs = RuleSet([rule])
    rs.ingest("s", 1000.0, {"cpu": CPU, "mem": MEM, "mem2": MEM})
    res = rs.evaluate(rule, 1000.0)
    assert res.active == {}
    assert res.errors and res.errors[0].startswith("rules.d/x.yaml:7: g/A: expr: ")


def test_compiled_once_evaluates_many_times_with_changing_values():
    rule = make_rule('on("host", cpu / mem) > 100')
    rs = RuleSet([rule])
    for i in range(50):
        mem = {**MEM, L(host="a", job="web"): 0.5 if i % 2 else 1.0}
        rs.ingest("s", 1000.0 + i, {"cpu": CPU, "mem": mem})
        got = {s for _, _, s in rs.evaluate(rule, 1000.0 + i).active.values()}
        expected = {L(host="b", job="web")} | ({L(host="a", job="web")} if i % 2 else set())
        assert got == expected
