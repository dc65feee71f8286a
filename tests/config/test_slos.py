"""slos: in rules.d files: generated burn-rate rules and budget expressions, and every problem located."""

from __future__ import annotations

import math
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsincident.config import Config, load
from fsincident.config.slo import DEFAULT_BURN_ALERTS, duration_text
from fsincident.core import ConfigError, Severity
from fsincident.expr import compile_expr

from .conftest import BASE, ConfDir

# An SLO ``api`` on source ``local`` at 99.9%, starting on line 2; its other keys follow from line 5.
HEAD = (
    "slos:",  # 1
    "  - name: api",  # 2
    "    source: local",  # 3
    "    objective: 99.9",  # 4
)
GOOD_TOTAL = ("    good: ok_total", "    total: requests_total")
S0 = "slos[0]"


def _slo(conf: ConfDir, *lines: str) -> str:
    return conf.rules(*HEAD, *lines)


def _ratio(good: str, total: str, window: str, by: str = "") -> str:
    return f'(1 - sum(increase({good}, "{window}"){by}) / sum(increase({total}, "{window}"){by}))'


def _render(cfg: Config, key: str, name: str, value: float | None) -> str:
    rule = next(r for r in cfg.rules if r.key == key)
    return rule.annotations[name].render(value=value, labels={}, alertname=rule.alert, severity=rule.severity.value)


# --- what an SLO generates -------------------------------------------------------------------------------------


def test_defaults_generate_the_four_burn_rate_rules(conf: ConfDir):
    f = _slo(conf, *GOOD_TOTAL)
    cfg = conf.load()
    (slo,) = cfg.slos
    assert (slo.name, slo.objective, slo.window, slo.source, slo.interval) == (
        "api",
        0.999,
        timedelta(days=30),
        "local",
        timedelta(minutes=1),
    )
    assert (slo.indicator, slo.by, slo.labels, slo.file, slo.line) == ("good/total", (), {}, f, 2)
    assert math.isclose(slo.error_budget, 0.001)
    assert slo.rules == ("api/SLOBurnRate1h", "api/SLOBurnRate6h", "api/SLOBurnRate1d", "api/SLOBurnRate3d")
    assert cfg.slo("api") is slo and cfg.slo("nope") is None
    (group,) = cfg.groups
    assert (group.name, group.interval, group.source, group.file) == ("api", timedelta(minutes=1), "local", f)
    assert [r.key for r in group.rules] == list(slo.rules) == [r.key for r in cfg.rules]
    expected = [
        ("1h", "5m", "0.0144", Severity.CRITICAL),
        ("6h", "30m", "0.006", Severity.CRITICAL),
        ("1d", "2h", "0.003", Severity.WARNING),
        ("3d", "6h", "0.001", Severity.WARNING),
    ]
    for rule, (long, short, threshold, severity) in zip(group.rules, expected, strict=True):
        assert rule.expr.text == (
            f"{_ratio('ok_total', 'requests_total', long)} > {threshold} and "
            f"{_ratio('ok_total', 'requests_total', short)} > {threshold}"
        )
        assert set(rule.expr.metrics) == {"ok_total", "requests_total"}
        assert rule.labels == {"slo": "api", "severity": severity.value, "long_window": long, "short_window": short}
        assert (rule.severity, rule.slo, rule.file, rule.line, rule.source) == (severity, "api", f, 2, "local")
        assert (rule.for_, rule.keep_firing_for, rule.query, rule.resolve_expr) == (
            timedelta(0),
            timedelta(0),
            None,
            None,
        )
        assert set(rule.annotations) == {"summary", "description"}
    assert [(a.alert, a.factor, a.threshold) for a in slo.alerts] == [
        ("SLOBurnRate1h", 14.4, 0.0144),
        ("SLOBurnRate6h", 6.0, 0.006),
        ("SLOBurnRate1d", 3.0, 0.003),
        ("SLOBurnRate3d", 1.0, 0.001),
    ]
    assert slo.budget_expr.text == f"1 - {_ratio('ok_total', 'requests_total', '30d')} / 0.001"
    assert slo.ratio_expr(timedelta(hours=6)) == _ratio("ok_total", "requests_total", "6h")


def test_defaults_are_the_workbook_windows():
    assert [(duration_text(long), duration_text(short), f, s.value) for long, short, f, s in DEFAULT_BURN_ALERTS] == [
        ("1h", "5m", 14.4, "critical"),
        ("6h", "30m", 6.0, "critical"),
        ("1d", "2h", 3.0, "warning"),
        ("3d", "6h", 1.0, "warning"),
    ]


@pytest.mark.parametrize(
    ("objective", "thresholds"),
    [
        ("99.9", ["0.0144", "0.006", "0.003", "0.001"]),
        ("99.5", ["0.072", "0.03", "0.015", "0.005"]),
        ("99", ["0.144", "0.06", "0.03", "0.01"]),
        ("99.99", ["0.00144", "0.0006", "0.0003", "0.0001"]),
        ("95", ["0.72", "0.3", "0.15", "0.05"]),
    ],
)
def test_thresholds_are_factor_times_error_budget(conf: ConfDir, objective: str, thresholds: list[str]):
    conf.rules("slos:", "  - name: api", "    source: local", f"    objective: {objective}", *GOOD_TOTAL)
    cfg = conf.load()
    assert [r.expr.text.rsplit(" > ", 1)[1] for r in cfg.rules] == thresholds
    assert [a.threshold for a in cfg.slos[0].alerts] == [float(t) for t in thresholds]


def test_selectors_and_by_labels(conf: ConfDir):
    _slo(
        conf,
        "    errors: 'http_requests_total{code=~\"5..\"}'",
        "    total: select('http_requests_total{job=\"api\"}')",
        "    by: [service, region]",
    )
    cfg = conf.load()
    slo = cfg.slos[0]
    assert (slo.indicator, slo.by) == ("errors/total", ("service", "region"))
    err, tot, by = "select('http_requests_total{code=~\"5..\"}')", "select('http_requests_total{job=\"api\"}')", ""
    by = ', by="service,region"'
    assert slo.ratio_template == f'(sum(increase({err}, "{{window}}"){by}) / sum(increase({tot}, "{{window}}"){by}))'
    assert cfg.rules[0].expr.text == (
        f'(sum(increase({err}, "1h"){by}) / sum(increase({tot}, "1h"){by})) > 0.0144 and '
        f'(sum(increase({err}, "5m"){by}) / sum(increase({tot}, "5m"){by})) > 0.0144'
    )
    assert cfg.rules[0].expr.metrics == ("http_requests_total",)


def test_error_ratio_template(conf: ConfDir):
    ratio = 'sum(rate(select("req_total{code=~\\"5..\\"}"), "{window}")) / sum(rate(req_total, "{window}"))'
    _slo(conf, "    window: 7d", f"    error_ratio: '{ratio}'")
    cfg = conf.load()
    slo = cfg.slos[0]
    assert (slo.indicator, slo.window) == ("error_ratio", timedelta(days=7))
    assert [r.alert for r in cfg.rules] == ["SLOBurnRate1h", "SLOBurnRate6h", "SLOBurnRate1d", "SLOBurnRate3d"]
    one = "(" + ratio.replace("{window}", "1h") + ")"
    five = "(" + ratio.replace("{window}", "5m") + ")"
    assert cfg.rules[0].expr.text == f"{one} > 0.0144 and {five} > 0.0144"
    assert slo.budget_expr.text == "1 - (" + ratio.replace("{window}", "7d") + ") / 0.001"


def test_explicit_alerts_labels_and_annotations(conf: ConfDir):
    f = _slo(
        conf,
        *GOOD_TOTAL,
        "    window: 28d",
        "    interval: 30s",
        "    labels: {team: api, tier: '1'}",
        "    annotations: {runbook: 'https://wiki/slo/{{ labels.slo }}', summary: 'api burns'}",
        "    alerts:",  # 10
        "      - {long: 2h, short: 10m, factor: 10, severity: critical}",  # 11
        "      - {long: 2h, short: 20m, factor: 5, alert: ApiSlowBurn}",  # 12
    )
    cfg = conf.load()
    group = cfg.groups[0]
    assert group.interval == timedelta(seconds=30)
    shared = {"team": "api", "tier": "1", "slo": "api"}
    assert [(r.alert, r.severity, r.labels) for r in group.rules] == [
        (
            "SLOBurnRate2h",
            Severity.CRITICAL,
            {**shared, "severity": "critical", "long_window": "2h", "short_window": "10m"},
        ),
        (
            "ApiSlowBurn",
            Severity.WARNING,
            {**shared, "severity": "warning", "long_window": "2h", "short_window": "20m"},
        ),
    ]
    assert [r.expr.text.rsplit(" > ", 1)[1] for r in group.rules] == ["0.01", "0.005"]
    assert all(r.line == 2 and r.file == f for r in group.rules)
    assert _render(cfg, "api/ApiSlowBurn", "summary", 0.1) == "api burns"
    rule = group.rules[0]
    assert rule.annotations["runbook"].render(value=1.0, labels={"slo": "api"}, alertname="x", severity="x") == (
        "https://wiki/slo/api"
    )
    assert "description" in rule.annotations


def test_generated_annotations_explain_the_burn(conf: ConfDir):
    _slo(conf, *GOOD_TOTAL)
    cfg = conf.load()
    assert _render(cfg, "api/SLOBurnRate1h", "summary", 0.02) == (
        "SLO api: error budget burning 20.0x as fast as sustainable over the last 1h (alert above 14.4x)"
    )
    assert _render(cfg, "api/SLOBurnRate1h", "description", 0.02) == (
        "The error ratio of SLO api is 2.0% over the last 1h, and above 1.44% over the last 5m too. "
        "The objective of 99.9% over 30d allows 0.1% errors (the error budget); burning it 14.4x as fast as "
        "sustainable spends 2% of it per 1h and all of it in 2d2h."
    )
    assert _render(cfg, "api/SLOBurnRate3d", "description", 0.001).endswith(
        "burning it 1x as fast as sustainable spends 10% of it per 3d and all of it in 30d."
    )
    assert _render(cfg, "api/SLOBurnRate6h", "summary", None) == (
        "SLO api: error budget burning ?x as fast as sustainable over the last 6h (alert above 6x)"
    )


@pytest.mark.parametrize(
    ("window", "alerts"),
    [
        ("1h", ["SLOBurnRate1h"]),
        ("12h", ["SLOBurnRate1h", "SLOBurnRate6h"]),
        ("1d", ["SLOBurnRate1h", "SLOBurnRate6h", "SLOBurnRate1d"]),
        ("3d", ["SLOBurnRate1h", "SLOBurnRate6h", "SLOBurnRate1d", "SLOBurnRate3d"]),
    ],
)
def test_default_alerts_longer_than_the_window_are_left_out(conf: ConfDir, window: str, alerts: list[str]):
    _slo(conf, *GOOD_TOTAL, f"    window: {window}")
    assert [r.alert for r in conf.load().rules] == alerts


def test_source_defaults_to_the_only_source(conf: ConfDir):
    conf.write("fsincident.yaml", "sources:", "  - {name: only, type: host}")
    conf.write("rules.d/s.yaml", "slos:", "  - {name: api, objective: 99, good: ok_total, total: requests_total}")
    cfg = conf.load()
    assert cfg.slos[0].source == "only"
    assert {r.source for r in cfg.rules} == {"only"}


def test_slos_and_groups_in_one_file_and_across_files(conf: ConfDir):
    conf.rules(
        "groups:",
        "  - name: host",
        "    source: local",
        "    rules: [{alert: A, expr: x > 1}]",
        "slos:",
        "  - {name: web, source: web, objective: 99, good: ok_total, total: requests_total, alerts: "
        "[{long: 1h, short: 5m, factor: 14.4}]}",
        name="a.yaml",
    )
    conf.write("rules.d/b.yaml", "slos:", "  - {name: db, source: local, objective: 99.5, errors: e, total: t}")
    cfg = conf.load()
    assert [g.name for g in cfg.groups] == ["host", "web", "db"]
    assert [s.name for s in cfg.slos] == ["web", "db"]
    assert [r.key for r in cfg.rules][:2] == ["host/A", "web/SLOBurnRate1h"]
    assert [r.slo for r in cfg.rules][:3] == [None, "web", "db"]


# --- problems --------------------------------------------------------------------------------------------------

NO_INDICATOR = "no indicator: set good + total, errors + total, or error_ratio"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (("    goal: 3", *GOOD_TOTAL), ["5: slos[0].goal: unknown key"]),
        ((), [f"2: slos[0]: {NO_INDICATOR}"]),
        (("    total: requests_total",), [f"2: slos[0]: {NO_INDICATOR}"]),
        (("    good: ok_total",), ["2: slos[0].total: required with good"]),
        (("    errors: e_total",), ["2: slos[0].total: required with errors"]),
        (
            (*GOOD_TOTAL, "    errors: e_total"),
            ["7: slos[0].errors: only one indicator: good + total, errors + total, or error_ratio (also given: good)"],
        ),
        (
            ("    error_ratio: 'x / y'",),
            [
                "5: slos[0].error_ratio: must contain {window} where the window goes, e.g. "
                'sum(rate(errors_total, "{window}")) / sum(rate(requests_total, "{window}"))'
            ],
        ),
        (
            ("    error_ratio: 'sum(rate(e, \"{window}\"))'", "    total: t"),
            ["6: slos[0].total: not used with error_ratio (write it into error_ratio)"],
        ),
        (
            ("    error_ratio: 'sum(rate(e, \"{window}\"))'", "    by: [service]"),
            ["6: slos[0].by: not used with error_ratio (aggregate inside error_ratio)"],
        ),
        (
            ("    error_ratio: 'rate(e, \"{window}\") >'",),
            ["5: slos[0].error_ratio: syntax error: invalid syntax (column 22)"],
        ),
        ((*GOOD_TOTAL, "    window: 0s"), ["7: slos[0].window: window must be positive"]),
        (
            (*GOOD_TOTAL, "    window: 30m"),
            [
                "7: slos[0].window: window 30m is shorter than every default burn-rate window (the shortest is 1h): "
                "set alerts:"
            ],
        ),
        (
            (*GOOD_TOTAL, "    window: 400d"),
            ["7: slos[0].window: window must be at most 366d (its counters are kept in memory that long)"],
        ),
        (
            (*GOOD_TOTAL, "    window: soon"),
            ["7: slos[0].window: invalid duration 'soon' (use e.g. 30s, 5m, 1h30m, 1d)"],
        ),
        ((*GOOD_TOTAL, "    interval: 0s"), ["7: slos[0].interval: interval must be positive"]),
        ((*GOOD_TOTAL, "    labels: {slo: x}"), ["7: slos[0].labels.slo: label 'slo' is set by fsincident"]),
        (
            (*GOOD_TOTAL, "    labels: {long_window: x}"),
            ["7: slos[0].labels.long_window: label 'long_window' is set by fsincident"],
        ),
        ((*GOOD_TOTAL, "    labels: {bad-name: x}"), ["7: slos[0].labels.bad-name: invalid label name 'bad-name'"]),
        ((*GOOD_TOTAL, "    by: [service, service]"), ["7: slos[0].by[1]: duplicate label name 'service'"]),
        ((*GOOD_TOTAL, "    by: [ok, bad-name]"), ["7: slos[0].by[1]: invalid label name 'bad-name'"]),
        ((*GOOD_TOTAL, "    by: service"), ["7: slos[0].by: Input should be a valid list"]),
        (
            (*GOOD_TOTAL, "    annotations: {summary: '{{ value '}"),
            [
                "7: slos[0].annotations.summary: template error: unexpected end of template, "
                "expected 'end of print statement'."
            ],
        ),
        (("    good: 5", "    total: t"), ["5: slos[0].good: Input should be a valid string"]),
        (
            ("    good: ''", "    total: t"),
            [
                "5: slos[0].good: must be a counter's metric name or a selector such as "
                "'http_requests_total{code=~\"5..\"}' or select('http_requests_total{code=~\"5..\"}')"
            ],
        ),
        (
            ("    good: ok_total", "    total: select(requests_total)"),
            [
                "6: slos[0].total: must be a counter's metric name or a selector such as "
                "'http_requests_total{code=~\"5..\"}' or select('http_requests_total{code=~\"5..\"}')"
            ],
        ),
        (
            ("    good: ok_total", "    total: \"select('a', 'b')\""),
            [
                "6: slos[0].total: must be a counter's metric name or a selector such as "
                "'http_requests_total{code=~\"5..\"}' or select('http_requests_total{code=~\"5..\"}')"
            ],
        ),
        (
            ("    alerts: []", *GOOD_TOTAL),
            ["5: slos[0].alerts: must list at least one alert (leave alerts: out for the defaults)"],
        ),
        (
            (*GOOD_TOTAL, "    window: 1d", "    alerts: [{long: 3d, short: 6h, factor: 1}]"),
            ["8: slos[0].alerts[0].long: long window 3d is longer than the SLO window 1d"],
        ),
        (
            (*GOOD_TOTAL, "    alerts: [{long: 1h, short: 1h, factor: 1}]"),
            ["7: slos[0].alerts[0].short: short window 1h must be shorter than long window 1h"],
        ),
        (
            (*GOOD_TOTAL, "    alerts: [{long: 1h, short: 1.5s, factor: 1}]"),
            ["7: slos[0].alerts[0].short: short window 1.5s is not a whole number of seconds"],
        ),
        (
            (*GOOD_TOTAL, "    alerts: [{long: 1h, short: 5m, factor: 0}]"),
            ["7: slos[0].alerts[0].factor: factor must be a positive number, got 0.0"],
        ),
        (
            (*GOOD_TOTAL, "    alerts: [{long: 1h, short: 5m, factor: .nan}]"),
            ["7: slos[0].alerts[0].factor: factor must be a positive number, got nan"],
        ),
        (
            (*GOOD_TOTAL, "    alerts: [{long: 1h, short: 5m, factor: 1000}]"),
            [
                "7: slos[0].alerts[0].factor: factor 1000 x error budget 0.001 = 1: "
                "the error ratio can never exceed that"
            ],
        ),
        (
            (*GOOD_TOTAL, "    alerts: [{long: 1h, short: 5m}]"),
            ["7: slos[0].alerts[0].factor: required key is missing"],
        ),
        (
            (*GOOD_TOTAL, "    alerts: [{long: 1h, short: 5m, factor: 2, severity: page}]"),
            ["7: slos[0].alerts[0].severity: Input should be 'info', 'warning' or 'critical'"],
        ),
        (
            (*GOOD_TOTAL, "    alerts: [{long: 1h, short: 5m, factor: 2, alert: Fast Burn}]"),
            [
                "7: slos[0].alerts[0].alert: invalid alert name 'Fast Burn': use letters, digits and '_', "
                "not starting with a digit"
            ],
        ),
        (
            (
                *GOOD_TOTAL,
                "    alerts:",
                "      - {long: 1h, short: 5m, factor: 14}",
                "      - {long: 1h, short: 10m, factor: 9}",
            ),
            ["9: slos[0].alerts[1].long: duplicate alert 'SLOBurnRate1h': set alert: to tell them apart"],
        ),
        (
            (
                *GOOD_TOTAL,
                "    alerts:",
                "      - {long: 1h, short: 5m, factor: 14, alert: Fast}",
                "      - {long: 6h, short: 10m, factor: 9, alert: Fast}",
            ),
            ["9: slos[0].alerts[1].alert: duplicate alert 'Fast'"],
        ),
    ],
)
def test_slo_problem(conf: ConfDir, lines: tuple[str, ...], expected: list[str]):
    f = _slo(conf, *lines)
    assert conf.problems() == [f"{f}:{e}" for e in expected]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("objective: 100", "objective must be a percentage between 0 and 100 (exclusive), e.g. 99.9, got 100.0"),
        ("objective: 0", "objective must be a percentage between 0 and 100 (exclusive), e.g. 99.9, got 0.0"),
        ("objective: -5", "objective must be a percentage between 0 and 100 (exclusive), e.g. 99.9, got -5.0"),
        ("objective: .inf", "objective must be a percentage between 0 and 100 (exclusive), e.g. 99.9, got inf"),
        ("objective: 99.9%", "Input should be a valid number, unable to parse string as a number"),
        ("objective: [99]", "Input should be a valid number"),
    ],
)
def test_objective_problem(conf: ConfDir, line: str, message: str):
    f = conf.rules("slos:", "  - name: api", "    source: local", f"    {line}", *GOOD_TOTAL)
    assert conf.problems() == [f"{f}:4: {S0}.objective: {message}"]


@pytest.mark.parametrize(
    ("objective", "factor", "threshold"),
    [
        ("99.99999999999", "14.4", "0.00000000000144"),
        ("99.999999999999", "14.4", "1.44e-13"),
        ("99.9", "1e-200", "1e-203"),
    ],
)
def test_extreme_thresholds_load_and_render(conf: ConfDir, objective: str, factor: str, threshold: str):
    conf.rules(
        "slos:",
        "  - name: api",
        "    source: local",
        f"    objective: {objective}",
        *GOOD_TOTAL,
        f"    alerts: [{{long: 1h, short: 5m, factor: {factor}, alert: Burn}}]",
    )
    cfg = conf.load()
    (rule,) = cfg.rules
    assert rule.expr.text.rsplit(" > ", 1)[1] == threshold
    assert math.isclose(cfg.slos[0].alerts[0].threshold, float(threshold))
    assert "all of it in" in _render(cfg, "api/Burn", "description", 0.5)


def test_objective_too_low_for_the_default_alerts(conf: ConfDir):
    f = conf.rules("slos:", "  - name: api", "    source: local", "    objective: 90", *GOOD_TOTAL)
    assert conf.problems() == [
        f"{f}:4: {S0}.objective: the default 1h/5m alert fires above 14.4 x error budget 0.1 = 1.44, "
        "an error ratio that cannot happen: set alerts: for an objective this low"
    ]
    conf.rules(
        "slos:",
        "  - name: api",
        "    source: local",
        "    objective: 90",
        *GOOD_TOTAL,
        "    alerts: [{long: 1h, short: 5m, factor: 5}]",
    )
    assert [r.expr.text.rsplit(" > ", 1)[1] for r in conf.load().rules] == ["0.5"]


def test_missing_name_objective_and_not_a_mapping(conf: ConfDir):
    f = conf.rules("slos:", "  - {source: local, good: a, total: b}", "  - just text")
    assert conf.problems() == [
        f"{f}:2: {S0}.name: required key is missing",
        f"{f}:2: {S0}.objective: required key is missing",
        f"{f}:3: slos[1]: Input should be a valid dictionary",
    ]
    f = conf.rules("slos: 5")
    assert conf.problems() == [f"{f}:1: slos: Input should be a valid list"]
    f = conf.rules("slos:", "  - {name: 'a b', source: local, objective: 99, good: a, total: b}")
    assert conf.problems() == [f"{f}:2: {S0}.name: invalid name 'a b': use letters, digits, '_', '.', '-'"]


def test_source_problems(conf: ConfDir):
    f = conf.rules("slos:", "  - {name: api, source: nope, objective: 99, good: a, total: b}")
    assert conf.problems() == [f"{f}:2: {S0}.source: unknown source 'nope'"]
    f = conf.rules("slos:", "  - {name: api, objective: 99, good: a, total: b}")  # BASE has two sources
    assert conf.problems() == [
        f"{f}:2: {S0}: no source: set source: (it defaults to the only source when there is one)"
    ]


def test_name_clashes(conf: ConfDir):
    f = conf.rules(
        "groups:",  # 1
        "  - {name: api, source: local, rules: []}",  # 2
        "slos:",  # 3
        "  - {name: api, source: local, objective: 99, good: a, total: b}",  # 4
        "  - {name: db, source: local, objective: 99, good: a, total: b}",  # 5
        "  - {name: db, source: local, objective: 99.9, good: a, total: b}",  # 6
    )
    assert conf.problems() == [
        f"{f}:4: {S0}.name: SLO name 'api' is taken by a group (in {f}); its alerts form a group of that name",
        f"{f}:6: slos[2].name: duplicate SLO name 'db' (also in {f})",
    ]


def test_group_after_an_slo_of_the_same_name(conf: ConfDir):
    a = conf.rules("slos:", "  - {name: api, source: local, objective: 99, good: a, total: b}", name="a.yaml")
    b = conf.write("rules.d/b.yaml", "groups:", "  - {name: api, source: local, rules: []}")
    assert conf.problems() == [
        f"{b}:2: groups[0].name: group name 'api' is taken by an SLO (in {a}); its alerts form a group of that name"
    ]


def test_every_slo_problem_in_a_file_is_reported(conf: ConfDir):
    f = conf.rules(
        "slos:",  # 1
        "  - name: a",  # 2
        "    source: local",  # 3
        "    objective: 99.9",  # 4
        "    good: ok_total",  # 5
        "    errors: e_total",  # 6
        "    window: 1d",  # 7
        "    labels: {severity: page}",  # 8
        "    alerts: [{long: 3d, short: 6h, factor: 1}]",  # 9
        "  - name: b",  # 10
        "    objective: 120",  # 11
        "    weight: 2",  # 12
        "  - name: c",  # 13
        "    source: gone",  # 14
        "    objective: 99",  # 15
        "    interval: 0s",  # 16
    )
    assert conf.problems() == [
        f"{f}:2: {S0}.total: required with good",
        f"{f}:6: {S0}.errors: only one indicator: good + total, errors + total, or error_ratio (also given: good)",
        f"{f}:8: {S0}.labels.severity: label 'severity' is set by fsincident",
        f"{f}:9: {S0}.alerts[0].long: long window 3d is longer than the SLO window 1d",
        f"{f}:11: slos[1].objective: objective must be a percentage between 0 and 100 (exclusive), e.g. 99.9, "
        "got 120.0",
        f"{f}:12: slos[1].weight: unknown key",
        f"{f}:13: slos[2]: {NO_INDICATOR}",
        f"{f}:14: slos[2].source: unknown source 'gone'",
        f"{f}:16: slos[2].interval: interval must be positive",
    ]


def test_an_slo_problem_hides_no_group_problem(conf: ConfDir):
    f = conf.rules(
        "groups:",  # 1
        "  - name: g",  # 2
        "    source: local",  # 3
        "    rules:",  # 4
        "      - {alert: A, expr: x >}",  # 5
        "slos:",  # 6
        "  - {name: api, source: local, objective: 99}",  # 7
    )
    assert conf.problems() == [
        f"{f}:5: groups[0].rules[0].expr: syntax error: invalid syntax (column 4)",
        f"{f}:7: {S0}: {NO_INDICATOR}",
    ]


# --- properties -------------------------------------------------------------------------------------------------

OBJECTIVES = st.decimals(min_value="93.1", max_value="99.9999", places=4, allow_nan=False, allow_infinity=False)
WINDOWS = st.integers(min_value=3, max_value=366)  # days: every default pair fits from 3d on
BY = st.lists(st.sampled_from(["service", "region", "code", "job"]), unique=True, max_size=3)


def _load_one(entry: dict) -> Config:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "rules.d").mkdir()
        (root / "fsincident.yaml").write_text("\n".join(BASE) + "\n")
        (root / "rules.d" / "s.yaml").write_text(yaml.safe_dump({"slos": [entry]}))
        return load(root, environ={})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objective=OBJECTIVES, days=WINDOWS, by=BY, errors=st.booleans())
def test_default_thresholds_and_expressions_for_any_objective(objective, days: int, by: list[str], errors: bool):
    indicator = {"errors": "e_total"} if errors else {"good": 'r_total{code!~"5.."}'}
    entry = {"name": "s", "source": "local", "objective": float(objective), "window": f"{days}d", "by": by}
    cfg = _load_one({**entry, **indicator, "total": "r_total"})
    (slo,) = cfg.slos
    budget = 1 - float(objective) / 100
    assert math.isclose(slo.error_budget, budget, rel_tol=1e-9)
    assert len(cfg.rules) == len(slo.alerts) == 4
    for rule, alert, (long, short, factor, severity) in zip(cfg.rules, slo.alerts, DEFAULT_BURN_ALERTS, strict=True):
        assert (alert.long, alert.short, alert.factor, alert.severity) == (long, short, factor, severity)
        assert math.isclose(alert.threshold, factor * budget, rel_tol=1e-9)
        assert math.isclose(float(rule.expr.text.rsplit(" > ", 1)[1]), factor * budget, rel_tol=1e-9)
        assert compile_expr(rule.expr.text).text == rule.expr.text
        assert set(rule.expr.metrics) == ({"e_total", "r_total"} if errors else {"r_total"})
        if by:
            assert f'by="{",".join(by)}"' in rule.expr.text
    assert f'"{days}d"' in slo.budget_expr.text
    compile_expr(slo.budget_expr.text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    objective=st.floats(min_value=50, max_value=99.999, allow_nan=False),
    pairs=st.lists(
        st.tuples(st.integers(2, 24 * 60), st.integers(1, 600), st.floats(0.01, 40, allow_nan=False)),
        min_size=1,
        max_size=5,
    ),
)
def test_explicit_alert_thresholds(objective: float, pairs: list[tuple[int, int, float]]):
    budget = 1 - objective / 100
    alerts = [
        {"long": f"{m}m", "short": f"{max(1, m * s // 1000)}m", "factor": f, "alert": f"B{i}"}
        for i, (m, s, f) in enumerate(pairs)
    ]
    entry = {"name": "s", "source": "local", "objective": objective, "errors": "e", "total": "t", "alerts": alerts}
    # Thresholds are exact decimals (99.9 -> 0.001, not 0.0010000000000000009), so compare like that.
    exact_budget = (100 - Decimal(repr(objective))) / 100
    possible = all(Decimal(repr(f)) * exact_budget < 1 for _, _, f in pairs)
    try:
        cfg = _load_one(entry)
    except ConfigError:
        assert not possible
        return
    assert possible
    for rule, (_, _, factor) in zip(cfg.rules, pairs, strict=True):
        assert math.isclose(float(rule.expr.text.rsplit(" > ", 1)[1]), factor * budget, rel_tol=1e-9)
        compile_expr(rule.expr.text)


ODD = st.sampled_from(["", " ", "{window}", "0s", "-1s", "5x", "1.5s", "100", "0", "{{", "x >", "select(", "a-b"])
SCALARS = st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=8) | ODD
VALUES = SCALARS | st.lists(SCALARS, max_size=3) | st.dictionaries(st.text(max_size=5) | ODD, SCALARS, max_size=3)
KEYS = st.sampled_from(
    [
        *("name", "source", "objective", "window", "interval", "good", "errors", "total", "error_ratio", "by"),
        *("labels", "annotations", "alerts", "long", "short", "factor", "severity", "alert"),
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=KEYS, value=VALUES, in_alert=st.booleans())
def test_odd_values_give_config_errors_only(key: str, value, in_alert: bool):
    entry: dict = {"name": "s", "source": "local", "objective": 99.9, "good": "g", "total": "t"}
    alert = {"long": "1h", "short": "5m", "factor": 14.4}
    if in_alert:
        entry["alerts"] = [{**alert, key: value}]
    else:
        entry[key] = value
    try:
        cfg = _load_one(entry)
    except ConfigError as e:
        assert e.problems and all(p.line for p in e.problems)
        return
    for rule in cfg.rules:
        compile_expr(rule.expr.text)


# --- evaluation of the generated rules (with the evaluator's RuleSet) ---------------------------------------------


STEP = 15.0
START = 1_700_000_000.0


def _feed(rs, error_shares: dict[str, float], seconds: float, per_step: float = 1000.0) -> float:
    """Counters requests_total/errors_total per service growing every 15 s; returns the last sample's time."""
    from fsincident.core import Labels

    totals = dict.fromkeys(error_shares, 0.0)
    errors = dict.fromkeys(error_shares, 0.0)
    at = START
    for _ in range(int(seconds / STEP) + 1):
        rs.ingest(
            "local",
            at,
            {
                "requests_total": {Labels({"service": k} if k else {}): v for k, v in totals.items()},
                "errors_total": {Labels({"service": k} if k else {}): v for k, v in errors.items()},
            },
        )
        for k, share in error_shares.items():
            totals[k] += per_step
            errors[k] += per_step * share
        at += STEP
    return at - STEP


def test_burn_rate_rules_fire_on_a_synthetic_counter_history(conf: ConfDir):
    rules_mod = pytest.importorskip("fsincident.evaluation.rules")
    _slo(conf, "    errors: errors_total", "    total: requests_total", "    window: 30d")
    cfg = conf.load()

    def run(error_share: float) -> dict:
        rs = rules_mod.RuleSet(cfg.rules, slos=cfg.slos)
        now = _feed(rs, {"": error_share}, 2 * 3600)  # two hours: longer than the 1h/5m pair
        return {r.alert: rs.evaluate(r, now) for r in cfg.rules}

    high = run(0.02)  # 2% errors: 20x the 0.1% budget
    assert high["SLOBurnRate1h"].errors == []
    (fired,) = high["SLOBurnRate1h"].active.values()
    labels, value, _ = fired
    assert labels["slo"] == "api" and labels["long_window"] == "1h" and labels["alertname"] == "SLOBurnRate1h"
    assert labels["severity"] == "critical"
    assert value is not None and math.isclose(value, 0.02, rel_tol=1e-6)
    low = run(0.0005)  # 0.05% errors: half the budget's pace
    assert all(not res.active and not res.errors for res in low.values())


def test_burn_rate_with_by_labels_fires_per_service(conf: ConfDir):
    rules_mod = pytest.importorskip("fsincident.evaluation.rules")
    _slo(conf, "    errors: errors_total", "    total: requests_total", "    by: [service]")
    cfg = conf.load()
    rs = rules_mod.RuleSet(cfg.rules, slos=cfg.slos)
    now = _feed(rs, {"checkout": 0.02, "search": 0.0005}, 2 * 3600)
    page = next(r for r in cfg.rules if r.alert == "SLOBurnRate1h")
    res = rs.evaluate(page, now)
    assert res.errors == []
    assert [(labels["service"], labels["slo"]) for labels, _, _ in res.active.values()] == [("checkout", "api")]


def test_error_budget_remaining(conf: ConfDir):
    rules_mod = pytest.importorskip("fsincident.evaluation.rules")
    _slo(
        conf,
        "    errors: errors_total",
        "    total: requests_total",
        "    window: 2h",
        "    alerts: [{long: 1h, short: 5m, factor: 14.4}]",
    )
    cfg = conf.load()
    (slo,) = cfg.slos
    for share, remaining in ((0.0005, 0.5), (0.0, 1.0), (0.001, 0.0), (0.02, -19.0)):
        rs = rules_mod.RuleSet(cfg.rules, slos=cfg.slos)
        now = _feed(rs, {"": share}, 2 * 3600)
        (budget,) = rs.evaluate_expr(slo.budget_expr, "local", now, key="slo:api").values()
        assert math.isclose(budget, remaining, rel_tol=1e-6, abs_tol=1e-9), (share, budget)
