"""Rule keys resolve_expr and flapping: loaded onto config.Rule, every problem located at its key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from .conftest import ConfDir

R0 = "groups[0].rules[0]"


def test_defaults_are_off(conf: ConfDir):
    conf.rule("        expr: x > 90")
    rule = conf.load().rules[0]
    assert (rule.resolve_expr, rule.flap_window, rule.flap_changes, rule.slo) == (None, timedelta(0), 0, None)


def test_resolve_expr_and_flapping_are_loaded(conf: ConfDir):
    conf.rule(
        "        expr: x > 90",  # 6
        "        resolve_expr: x < 80",  # 7
        "        flapping: {window: 30m, changes: 4}",  # 8
    )
    rule = conf.load().rules[0]
    assert rule.expr.text == "x > 90"
    assert rule.resolve_expr is not None
    assert rule.resolve_expr.text == "x < 80"
    assert rule.resolve_expr.metrics == ("x",)
    assert (rule.flap_window, rule.flap_changes) == (timedelta(minutes=30), 4)


def test_flapping_in_block_style(conf: ConfDir):
    conf.rule("        expr: x > 90", "        flapping:", "          window: 1h30m", "          changes: 2")
    rule = conf.load().rules[0]
    assert (rule.flap_window, rule.flap_changes) == (timedelta(hours=1, minutes=30), 2)


def test_resolve_expr_other_metric_and_non_comparison_expr_are_fine(conf: ConfDir):
    conf.rule("        expr: x", "        resolve_expr: y < 1 and x < 80")
    rule = conf.load().rules[0]
    assert rule.resolve_expr is not None and set(rule.resolve_expr.metrics) == {"x", "y"}


def test_resolve_expr_problem_is_located_at_its_line(conf: ConfDir):
    f = conf.rule("        expr: x > 90", "        for: 1m", "        resolve_expr: x <")
    assert conf.problems() == [f"{f}:8: {R0}.resolve_expr: syntax error: invalid syntax (column 4)"]


def test_resolve_expr_and_expr_problems_are_both_reported(conf: ConfDir):
    f = conf.rule("        expr: x >", "        resolve_expr: x <")
    assert conf.problems() == [
        f"{f}:6: {R0}.expr: syntax error: invalid syntax (column 4)",
        f"{f}:7: {R0}.resolve_expr: syntax error: invalid syntax (column 4)",
    ]


def test_resolve_expr_problem_reported_even_when_the_rule_is_otherwise_invalid(conf: ConfDir):
    f = conf.rule("        expr: x > 1", "        severity: urgent", "        resolve_expr: x <")
    assert conf.problems() == [
        f"{f}:7: {R0}.severity: Input should be 'info', 'warning' or 'critical'",
        f"{f}:8: {R0}.resolve_expr: syntax error: invalid syntax (column 4)",
    ]


def test_resolve_expr_must_read_a_metric(conf: ConfDir):
    f = conf.rule("        expr: x > 1", "        resolve_expr: 1 < 2")
    assert conf.problems() == [f"{f}:7: {R0}.resolve_expr: expression reads no metric"]


def test_resolve_expr_of_a_query_rule_may_only_use_value(conf: ConfDir):
    conf.write("fsincident.yaml", "sources:", "  - {name: prom, type: prometheus, url: 'http://127.0.0.1:9090'}")
    f = conf.write(
        "rules.d/r.yaml",
        "groups:",
        "  - name: g",
        "    source: prom",
        "    rules:",
        "      - alert: A",  # 5
        "        query: up",  # 6
        "        expr: value > 90",  # 7
        "        resolve_expr: value < 80",  # 8
    )
    rule = conf.load().rules[0]
    assert rule.resolve_expr is not None and rule.resolve_expr.text == "value < 80"
    conf.write(
        "rules.d/r.yaml",
        "groups:",
        "  - name: g",
        "    source: prom",
        "    rules:",
        "      - alert: A",  # 5
        "        query: up",  # 6
        "        expr: value > 90",  # 7
        "        resolve_expr: up < 80",  # 8
    )
    assert conf.problems() == [f"{f}:8: {R0}.resolve_expr: a query rule's resolve_expr may only use value and labels"]


@pytest.mark.parametrize(
    ("lines", "line", "key", "message"),
    [
        (("flapping: {window: 30m}",), 7, "flapping.changes", "required key is missing"),
        (("flapping: {changes: 3}",), 7, "flapping.window", "required key is missing"),
        (("flapping: {window: 30m, changes: 1}",), 7, "flapping.changes", "Input should be greater than or equal to 2"),
        (("flapping: {window: 30m, changes: 0}",), 7, "flapping.changes", "Input should be greater than or equal to 2"),
        (
            ("flapping: {window: 30m, changes: 2.5}",),
            7,
            "flapping.changes",
            "Input should be a valid integer, got a number with a fractional part",
        ),
        (("flapping: {window: 0s, changes: 3}",), 7, "flapping.window", "window must be positive"),
        (("flapping: {window: 0, changes: 3}",), 7, "flapping.window", "window must be positive"),
        (
            ("flapping: {window: soon, changes: 3}",),
            7,
            "flapping.window",
            "invalid duration 'soon' (use e.g. 30s, 5m, 1h30m, 1d)",
        ),
        (("flapping: {window: 30m, changes: 3, count: 2}",), 7, "flapping.count", "unknown key"),
        (("flapping: yes",), 7, "flapping", "Input should be a valid dictionary"),
        (("flapping: [30m, 4]",), 7, "flapping", "Input should be a valid dictionary"),
        (("flapping:", "          window: 30m", "          changes: -3"), 9, "flapping.changes", None),
        (("resolve_expr: [x]",), 7, "resolve_expr", "Input should be a valid string"),
    ],
)
def test_flapping_and_resolve_expr_key_problems(
    conf: ConfDir, lines: tuple[str, ...], line: int, key: str, message: str | None
):
    f = conf.rule("        expr: x > 1", *(f"        {lines[0]}", *lines[1:]))
    message = message or "Input should be greater than or equal to 2"
    assert conf.problems() == [f"{f}:{line}: {R0}.{key}: {message}"]


def test_flapping_empty_names_both_keys(conf: ConfDir):
    f = conf.rule("        expr: x > 1", "        flapping: {}")
    assert conf.problems() == [
        f"{f}:7: {R0}.flapping.changes: required key is missing",
        f"{f}:7: {R0}.flapping.window: required key is missing",
    ]


def test_flapping_problems_do_not_hide_other_rules(conf: ConfDir):
    f = conf.rule(
        "        expr: x > 1",  # 6
        "        flapping: {window: 0s, changes: 3}",  # 7
        "      - alert: B",  # 8
        "        expr: x > 1",  # 9
        "        flapping: {window: 5m, changes: 1}",  # 10
    )
    assert conf.problems() == [
        f"{f}:7: {R0}.flapping.window: window must be positive",
        f"{f}:10: groups[0].rules[1].flapping.changes: Input should be greater than or equal to 2",
    ]
