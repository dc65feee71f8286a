"""rules.d/*.yaml problems: expressions, durations, references, duplicates, labels, annotations, odd shapes."""

from __future__ import annotations

import pytest

from fsincident.expr import FUNCTIONS

from .conftest import RULE_HEAD, ConfDir

FUNCS = ", ".join(sorted(FUNCTIONS))  # the message lists every function there is
assert {"abs", "max", "min", "round"} <= set(FUNCTIONS)
R0 = "groups[0].rules[0]"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("x > > 1", "syntax error: invalid syntax (column 5)"),
        ("x >", "syntax error: invalid syntax (column 4)"),  # end of input, not column 1
        ("(x > 1", "syntax error: '(' was never closed (column 1)"),
        ("x > 1 and x ** 2 > 4", "'**' is not allowed (unbounded); use multiplication (column 11)"),
        ("sqrt(x) > 1", f"unknown function 'sqrt' (available: {FUNCS}) (column 1)"),
        ("x > 1 and __import__('os') == 0", f"unknown function '__import__' (available: {FUNCS}) (column 11)"),
        ("1 > 0", "expression reads no metric"),
        ("labels.job == 'api'", "expression reads no metric"),
        ("x[0] > 1", "subscripts are not allowed; use labels.NAME or select('metric{label=\"value\"}') (column 1)"),
        ("x.real > 1", "attribute access is only allowed as labels.NAME (column 1)"),
        ("labels.__class__ == x", "invalid label name '__class__' (column 1)"),
        ("x >> 2 > 1", "'>>' is not allowed (column 1)"),
        ("x > 10000000000000000", "number 10000000000000000 is too large (column 5)"),
        ("[y for y in x] == 1", "comprehensions are not allowed (column 1)"),
    ],
)
def test_expr_problem(conf: ConfDir, expr: str, message: str):
    f = conf.rule(f'        expr: "{expr}"')
    assert conf.problems() == [f"{f}:6: {R0}.expr: {message}"]


def test_expr_empty(conf: ConfDir):
    f = conf.rule("        expr: ''")
    assert conf.problems() == [f"{f}:6: {R0}.expr: expression is empty"]
    f = conf.rule("        expr: \"''\"")  # a string constant, still no metric
    assert conf.problems() == [f"{f}:6: {R0}.expr: expression reads no metric"]


def test_query_rules(conf: ConfDir):
    f = conf.rule("        query: up", "        expr: value > 1")
    assert conf.problems() == [f"{f}:6: {R0}.query: source 'local' (type host) does not run queries"]
    f = conf.rule("        query: up", "        expr: up > 1")
    assert conf.problems() == [
        f"{f}:6: {R0}.query: source 'local' (type host) does not run queries",
        f"{f}:7: {R0}.expr: a query rule's expr may only use value and labels",
    ]


def test_expr_nested_too_deeply(conf: ConfDir):
    f = conf.rule("        expr: " + "-" * 300 + "x > 1")
    assert conf.problems() == [f"{f}:6: {R0}.expr: expression is nested more than 100 levels deep (column 99)"]
    f = conf.rule("        expr: " + " + ".join(["x"] * 150) + " > 1")
    assert conf.problems() == [f"{f}:6: {R0}.expr: expression is nested more than 100 levels deep"]


def test_expr_value_only_rule_is_fine(conf: ConfDir):
    conf.rule("        expr: value > 1 and labels.job != 'x'")
    assert conf.load().rules[0].expr.metrics == ()


def test_expr_wrong_type_and_missing(conf: ConfDir):
    f = conf.rule("        expr: [x]")
    assert conf.problems() == [f"{f}:6: {R0}.expr: Input should be a valid string"]
    f = conf.rule("        for: 1m")
    assert conf.problems() == [f"{f}:5: {R0}.expr: required key is missing"]


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("for: yes", "for", "invalid duration True"),
        ("for: 5x", "for", "invalid duration '5x' (use e.g. 30s, 5m, 1h30m, 1d)"),
        ("for: [1]", "for", "invalid duration [1] (use e.g. 30s, 5m, 1h30m, 1d)"),
        ("for: -5", "for", "invalid duration -5: must not be negative"),
        ("for: .inf", "for", "invalid duration inf"),
        ("for: 99999999999999999999", "for", "invalid duration 99999999999999999999: too large"),
        ("keep_firing_for: 9999999999999d", "keep_firing_for", "invalid duration '9999999999999d': too large"),
        ("keep_firing_for: -1m", "keep_firing_for", "invalid duration '-1m' (use e.g. 30s, 5m, 1h30m, 1d)"),
        ("severity: high", "severity", "Input should be 'info', 'warning' or 'critical'"),
        ("severity: CRITICAL", "severity", "Input should be 'info', 'warning' or 'critical'"),
        ("summary: oops", "summary", "unknown key"),
        ("Expr: x", "Expr", "unknown key"),
        ("source: nope", "source", "unknown source 'nope'"),
        ("source: 'not a name'", "source", "invalid name 'not a name': use letters, digits, '_', '.', '-'"),
        ("labels: [team]", "labels", "Input should be a valid dictionary"),
        ("labels: {alertname: X}", "labels.alertname", "label 'alertname' is set by fsincident"),
        ("labels: {team: [a, b]}", "labels.team", "Input should be a valid string"),
        ("annotations: {summary: '{{ value '}", "annotations.summary", None),
        ("annotations: {summary: 5}", "annotations.summary", "Input should be a valid string"),
        ("annotations: summary", "annotations", "Input should be a valid dictionary"),
    ],
)
def test_rule_key_problem(conf: ConfDir, line: str, key: str, message: str | None):
    f = conf.rule("        expr: x > 1", f"        {line}")
    if message is None:
        message = "template error: unexpected end of template, expected 'end of print statement'."
    assert conf.problems() == [f"{f}:7: {R0}.{key}: {message}"]


def test_invalid_label_names_are_located_per_label(conf: ConfDir):
    f = conf.rule(
        "        expr: x > 1",  # 6
        "        labels:",  # 7
        "          team: infra",  # 8
        "          bad-name: x",  # 9
        "          alertname: Y",  # 10
        "          9lives: x",  # 11
    )
    assert conf.problems() == [
        f"{f}:9: {R0}.labels.bad-name: invalid label name 'bad-name'",
        f"{f}:11: {R0}.labels.9lives: invalid label name '9lives'",
    ]
    f = conf.rule("        expr: x > 1", "        labels:", "          alertname: Y")
    assert conf.problems() == [f"{f}:8: {R0}.labels.alertname: label 'alertname' is set by fsincident"]


def test_annotation_template_error_is_located(conf: ConfDir):
    f = conf.rule(
        "        expr: x > 1",  # 6
        "        annotations:",  # 7
        "          summary: ok {{ value }}",  # 8
        "          runbook: '{% if value > 1 %}big'",  # 9
    )
    assert conf.problems() == [
        f"{f}:9: {R0}.annotations.runbook: template error: Unexpected end of template. Jinja was looking for the "
        "following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'.",
    ]


def test_alert_name(conf: ConfDir):
    f = conf.rule("        expr: x > 1", "      - alert: High CPU", "        expr: x > 1")
    assert conf.problems() == [
        f"{f}:7: groups[0].rules[1].alert: invalid alert name 'High CPU': use letters, digits and '_', "
        "not starting with a digit",
    ]
    f = conf.rules(*RULE_HEAD[:4], "      - expr: x > 1")
    assert conf.problems() == [f"{f}:5: {R0}.alert: required key is missing"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("interval: 5x", "invalid duration '5x' (use e.g. 30s, 5m, 1h30m, 1d)"),
        ("interval: [1]", "invalid duration [1] (use e.g. 30s, 5m, 1h30m, 1d)"),
        ("interval: 0s", "interval must be positive"),
        ("interval: 0", "interval must be positive"),
        ("interval: -15s", "invalid duration '-15s' (use e.g. 30s, 5m, 1h30m, 1d)"),
    ],
)
def test_group_interval(conf: ConfDir, line: str, message: str):
    f = conf.rules("groups:", "  - name: g", "    source: local", f"    {line}", "    rules: []")
    assert conf.problems() == [f"{f}:4: groups[0].interval: {message}"]


def test_unknown_keys_in_group_and_file(conf: ConfDir):
    f = conf.rules(
        "group:",  # 1
        "  - name: x",  # 2
        "groups:",  # 3
        "  - name: g",  # 4
        "    source: local",  # 5
        "    rule: []",  # 6
    )
    assert conf.problems() == [f"{f}:1: group: unknown key", f"{f}:6: groups[0].rule: unknown key"]


def test_group_source_unknown(conf: ConfDir):
    f = conf.rules("groups:", "  - name: g", "    source: nope", "    rules:", "      - {alert: A, expr: x > 1}")
    assert conf.problems() == [f"{f}:3: groups[0].source: unknown source 'nope'"]


def test_rule_source_overrides_group_source(conf: ConfDir):
    f = conf.rules(
        "groups:",  # 1
        "  - name: g",  # 2
        "    source: local",  # 3
        "    rules:",  # 4
        "      - {alert: A, expr: x > 1, source: web}",  # 5
        "      - {alert: B, expr: x > 1, source: nope}",  # 6
    )
    assert conf.problems() == [f"{f}:6: groups[0].rules[1].source: unknown source 'nope'"]


def test_rule_without_any_source(conf: ConfDir):
    f = conf.rules(
        "groups:",  # 1
        "  - name: g",  # 2
        "    rules:",  # 3
        "      - {alert: A, expr: x > 1, source: local}",  # 4
        "      - alert: B",  # 5
        "        expr: x > 1",  # 6
    )
    assert conf.problems() == [f"{f}:5: groups[0].rules[1]: no source: set source: on the rule or its group"]


def test_duplicate_alert_in_group(conf: ConfDir):
    f = conf.rule(
        "        expr: x > 1",  # 6
        "      - alert: B",  # 7
        "        expr: x > 1",  # 8
        "      - alert: A",  # 9
        "        expr: y > 1",  # 10
        "  - name: other",  # 11
        "    source: local",  # 12
        "    rules:",  # 13
        "      - {alert: A, expr: x > 1}",  # 14  (the same alert in another group is fine)
    )
    assert conf.problems() == [f"{f}:9: groups[0].rules[2].alert: duplicate alert 'A' in group 'g'"]


def test_duplicate_group_in_one_file(conf: ConfDir):
    f = conf.rules(
        "groups:",
        "  - {name: g, source: local, rules: []}",
        "  - {name: h, source: local, rules: []}",
        "  - {name: g, source: local, rules: []}",
    )
    assert conf.problems() == [f"{f}:4: groups[2].name: duplicate group name 'g' (also in {f})"]


def test_duplicate_group_across_files(conf: ConfDir):
    a = conf.rules("groups:", "  - name: shared", "    source: local", "    rules: []", name="a.yaml")
    b = conf.write("rules.d/b.yaml", "# the same group again", "groups:", "  - name: shared", "    rules: []")
    assert conf.problems() == [f"{b}:3: groups[0].name: duplicate group name 'shared' (also in {a})"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (("- groups: []",), ["1: must be a mapping with a groups: list"]),
        (("just text",), ["1: must be a mapping with a groups: list"]),
        (("groups: 5",), ["1: groups: Input should be a valid list"]),
        (("groups:",), ["1: groups: Input should be a valid list"]),
        (("groups:", "  - g"), ["2: groups[0]: Input should be a valid dictionary"]),
        (("groups:", "  - name: g", "    rules:"), ["3: groups[0].rules: Input should be a valid list"]),
        (("groups:", "  - name: g", "    rules: 5"), ["3: groups[0].rules: Input should be a valid list"]),
        (
            ("groups:", "  - name: g", "    rules:", "      -"),
            ["4: groups[0].rules[0]: Input should be a valid dictionary"],
        ),
        (
            ("groups:", "  - name: g", "    rules: [x > 1]"),
            ["3: groups[0].rules[0]: Input should be a valid dictionary"],
        ),
        (("groups:", "  - {name: [g]}"), ["2: groups[0].name: Input should be a valid string"]),
        (("groups:", "  - {rules: []}"), ["2: groups[0].name: required key is missing"]),
    ],
)
def test_odd_rule_file_shapes(conf: ConfDir, lines: tuple[str, ...], expected: list[str]):
    f = conf.rules(*lines)
    assert conf.problems() == [f"{f}:{e}" for e in expected]


def test_every_rule_problem_in_a_file_is_reported(conf: ConfDir):
    f = conf.rules(
        "groups:",  # 1
        "  - name: g",  # 2
        "    source: local",  # 3
        "    interval: 0s",  # 4
        "    rules:",  # 5
        "      - alert: A",  # 6
        "        expr: x >",  # 7
        "        severity: urgent",  # 8
        "      - alert: B",  # 9
        "        expr: sqrt(x) > 1",  # 10
        "        labels: {alertname: C}",  # 11
        "      - alert: C",  # 12
        "        expr: x > 1",  # 13
        "        source: gone",  # 14
        "        annotations: {s: '{{'}",  # 15
    )
    assert conf.problems() == [
        f"{f}:4: groups[0].interval: interval must be positive",
        f"{f}:7: groups[0].rules[0].expr: syntax error: invalid syntax (column 4)",
        f"{f}:8: groups[0].rules[0].severity: Input should be 'info', 'warning' or 'critical'",
        f"{f}:10: groups[0].rules[1].expr: unknown function 'sqrt' (available: {FUNCS}) (column 1)",
        f"{f}:11: groups[0].rules[1].labels.alertname: label 'alertname' is set by fsincident",
        f"{f}:14: groups[0].rules[2].source: unknown source 'gone'",
        f"{f}:15: groups[0].rules[2].annotations.s: template error: unexpected 'end of template'",
    ]
