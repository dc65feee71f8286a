"""``fsincident test`` in-process: promtool-compatible semantics, comparison, diffs and located file problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fsincident.core import Labels
from fsincident.evaluation.replay import Replay, ReplayError, load_rule_files
from fsincident.evaluation.ruletest import Expected, Got, compare_alerts, run_file

DATA = Path(__file__).resolve().parent.parent / "data" / "ruletest"

RULES = """
groups:
  - name: example
    rules:
      - alert: InstanceDown
        expr: up == 0
        for: 5m
        labels: {severity: page}
        annotations:
          summary: "Instance {{ labels.instance }} down"
      - alert: HighLoad
        expr: load > 90
        resolve_expr: load < 80
        annotations:
          summary: "load {{ value }}"
"""


def write(tmp_path: Path, test: str, rules: str = RULES) -> str:
    (tmp_path / "rules.yml").write_text(textwrap.dedent(rules))
    path = tmp_path / "test.yml"
    path.write_text(textwrap.dedent(test))
    return str(path)


def run(tmp_path: Path, test: str, rules: str = RULES, **kw):
    return run_file(write(tmp_path, test, rules), **kw)


# ---------------------------------------------------------------------------- Prometheus' own example


def test_prometheus_documentation_example_passes_unchanged_apart_from_rule_files():
    res = run_file(str(DATA / "prometheus_example_test.yml"))
    assert res.problems == [] and res.failures == []
    assert res.cases == 1
    assert res.skipped == 1  # its promql_expr_test


def test_prometheus_example_with_strict_fails_on_the_promql_case():
    res = run_file(str(DATA / "prometheus_example_test.yml"), strict=True)
    assert len(res.failures) == 1
    assert "promql_expr_test cannot run (PromQL is not supported): 'go_goroutines > 5'" in res.failures[0]


def test_prometheus_example_detects_a_wrong_expectation(tmp_path):
    text = (DATA / "prometheus_example_test.yml").read_text()
    text = text.replace("rule_files:\n    - prometheus_example_rules.yml", f"rule_files: ['{DATA}/*_rules.yml']")
    text = text.replace("eval_time: 10m", "eval_time: 12m")  # by 12m node_exporter's instance fires too
    path = tmp_path / "t.yml"
    path.write_text(text)
    res = run_file(str(path))
    assert len(res.failures) == 1
    assert "alertname InstanceDown, eval_time 12m: expected 1 alert, got 2 alerts firing" in res.failures[0]
    assert '+ unexpected: {instance="localhost:9100", job="node_exporter", severity="page"}' in res.failures[0]


# ---------------------------------------------------------------------------- evaluation semantics


def test_for_and_the_eval_time_grid(tmp_path):
    # Evaluations at 0, 1m, 2m, …; a case is checked against the last evaluation at or before its eval_time.
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        tests:
          - interval: 1m
            input_series:
              - series: 'up{instance="a"}'
                values: '0x10'
            alert_rule_test:
              - eval_time: 4m
                alertname: InstanceDown
              - eval_time: 5m59s
                alertname: InstanceDown
                exp_alerts:
                  - exp_labels: {instance: a, severity: page}
                    exp_annotations: {summary: Instance a down}
        """,
    )
    assert res.ok, res.failures
    assert res.cases == 2


def test_a_pending_alert_is_not_firing_and_the_diff_says_so(tmp_path):
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        tests:
          - name: early
            input_series:
              - {series: 'up{instance="a"}', values: '0x10'}
            alert_rule_test:
              - eval_time: 4m59s
                alertname: InstanceDown
                exp_alerts:
                  - exp_labels: {instance: a, severity: page}
                    exp_annotations: {summary: Instance a down}
        """,
    )
    assert len(res.failures) == 1
    msg = res.failures[0]
    assert msg.startswith("test 'early' (tests[0]), alertname InstanceDown, eval_time 4m59s: expected 1 alert, got 0")
    assert '- missing:    {instance="a", severity="page"} (pending since 0s, for: 5m)' in msg


def test_lookback_keeps_a_series_for_five_minutes(tmp_path):
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - {series: 'load{host="h"}', values: '95 _x10'}
            alert_rule_test:
              - eval_time: 4m
                alertname: HighLoad
                exp_alerts:
                  - exp_labels: {host: h}
                    exp_annotations: {summary: load 95.0}
              - eval_time: 6m
                alertname: HighLoad
        """,
    )
    assert res.ok, res.failures


def test_stale_ends_a_series_at_once(tmp_path):
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        tests:
          - input_series:
              - {series: 'load{host="h"}', values: '95 stale'}
            alert_rule_test:
              - eval_time: 0m
                alertname: HighLoad
                exp_alerts:
                  - exp_labels: {host: h}
                    exp_annotations: {summary: load 95.0}
              - eval_time: 1m
                alertname: HighLoad
        """,
    )
    assert res.ok, res.failures


def test_hysteresis_replays_like_the_daemon(tmp_path):
    # fires above 90, resolves only below 80
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        tests:
          - input_series:
              - {series: 'load{host="h"}', values: '95 85 85 75'}
            alert_rule_test:
              - eval_time: 2m
                alertname: HighLoad
                exp_alerts:
                  - exp_labels: {host: h}
                    exp_annotations: {summary: load 95.0}
              - eval_time: 3m
                alertname: HighLoad
        """,
    )
    assert res.ok, res.failures


def test_window_functions_see_every_sample(tmp_path):
    rules = """
    groups:
      - name: g
        rules:
          - alert: Busy
            expr: rate(requests_total, "5m") > 0.9
    """
    # samples every 15s, evaluations every minute: 60 requests a minute is 1/s
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        evaluation_interval: 1m
        tests:
          - interval: 15s
            input_series:
              - {series: 'requests_total{job="api"}', values: '0+15x40 600x40'}
            alert_rule_test:
              - eval_time: 6m
                alertname: Busy
                exp_alerts:
                  - exp_labels: {job: api}
              - eval_time: 20m
                alertname: Busy
        """,
        rules,
    )
    assert res.ok, res.failures


def test_nodata_alerting_replays_like_the_daemon(tmp_path):
    rules = """
    groups:
      - name: g
        rules:
          - {alert: Heartbeat, expr: heartbeat < 0, nodata: alerting}
    """
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        tests:
          - input_series:
              - {series: 'heartbeat{app="a"}', values: '1 1 _x10'}
            alert_rule_test:
              - {eval_time: 5m, alertname: Heartbeat}
              - eval_time: 6m
                alertname: Heartbeat
                exp_alerts:
                  - exp_labels: {reason: nodata}
                    exp_annotations: {detail: no series of heartbeat, summary: no series of heartbeat}
        """,
        rules,
    )
    assert res.ok, res.failures


def test_alerts_of_every_rule_with_the_name_are_compared_together(tmp_path):
    rules = """
    groups:
      - name: a
        rules:
          - {alert: Down, expr: up == 0, labels: {team: a}}
      - name: b
        rules:
          - {alert: Down, expr: up == 0, labels: {team: b}, severity: critical}
    """
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        tests:
          - input_series:
              - {series: up, values: '0'}
            alert_rule_test:
              - eval_time: 0s
                alertname: Down
                exp_alerts:
                  - exp_labels: {team: b, severity: critical}
                  - exp_labels: {team: a}
        """,
        rules,
    )
    assert res.ok, res.failures


def test_yaml_scalars_in_expected_labels_are_label_text(tmp_path):
    rules = """
    groups:
      - name: g
        rules:
          - {alert: Errors, expr: http_errors > 0}
    """
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        tests:
          - input_series:
              - {series: 'http_errors{code="500", canary="true"}', values: '3'}
            alert_rule_test:
              - eval_time: 0s
                alertname: Errors
                exp_alerts:
                  - exp_labels: {code: 500, canary: true}
        """,
        rules,
    )
    assert res.ok, res.failures


def test_start_timestamp_moves_samples_and_evaluations_together(tmp_path):
    rules = """
    groups:
      - name: g
        rules:
          - alert: Stuck
            expr: flatline(queue, "3m") > 0
    """
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        tests:
          - start_timestamp: "2024-05-01T00:00:00Z"
            input_series:
              - {series: 'queue{q="a"}', values: '1 2 3 3 3 3 3'}
            alert_rule_test:
              - eval_time: 2m
                alertname: Stuck
              - eval_time: 6m
                alertname: Stuck
                exp_alerts:
                  - exp_labels: {q: a}
        """,
        rules,
    )
    assert res.ok, res.failures


RATIO_RULES = """
groups:
  - name: g
    rules:
      - alert: Ratio
        expr: on("job", errors / requests) > 0.5
"""

RATIO_TEST = """
rule_files: [rules.yml]
tests:
  - input_series:
      - {series: 'errors{code="500", job="a"}', values: '1'}
      - {series: 'errors{code="502", job="a"}', values: '1'}
%s
    alert_rule_test:
      - {eval_time: 0s, alertname: Ratio}
"""


def test_evaluation_errors_fail_the_test_naming_the_rule(tmp_path):
    one_to_many = "      - {series: 'requests{job=\"a\"}', values: '10'}"
    assert run(tmp_path, RATIO_TEST % one_to_many, RATIO_RULES).ok  # no error, and 0.1 does not fire
    many_to_many = (
        "      - {series: 'requests{job=\"a\", x=\"1\"}', values: '1'}\n"
        "      - {series: 'requests{job=\"a\", x=\"2\"}', values: '1'}"
    )
    res = run(tmp_path, RATIO_TEST % many_to_many, RATIO_RULES)
    assert len(res.failures) == 1, res
    assert "tests[0], time 0s: rule evaluation failed:" in res.failures[0]
    assert "rules.yml:5: g/Ratio: expr:" in res.failures[0]


# ---------------------------------------------------------------------------- file problems


def test_test_file_problems_are_located(tmp_path):
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        tests:
          - interval: 1x
            input_series:
              - {series: 'up{a=~"b"}', values: '1'}
              - {series: up, values: '1 2+x3'}
            alert_rule_test:
              - {eval_time: 1m}
            bogus: 1
        """,
    )
    assert not res.ok and res.failures == []
    text = "\n".join(res.problems)
    assert "test.yml:4: tests[0].interval: invalid duration '1x'" in text
    assert "test.yml:10: tests[0].bogus: unknown key" in text


def test_bad_start_timestamp_is_located(tmp_path):
    res = run(tmp_path, "rule_files: [rules.yml]\ntests:\n  - start_timestamp: yesterday\n")
    assert res.problems == [
        f"{tmp_path / 'test.yml'}:3: tests[0].start_timestamp: invalid start_timestamp 'yesterday': "
        "write Unix seconds or RFC 3339"
    ]


def test_series_problems_are_located(tmp_path):
    res = run(
        tmp_path,
        """
        rule_files: [rules.yml]
        tests:
          - input_series:
              - {series: 'up{a=~"b"}', values: '1'}
              - {series: up, values: '1 2+x3'}
            alert_rule_test:
              - {eval_time: 1m}
        """,
    )
    text = "\n".join(res.problems)
    assert "test.yml:5: tests[0].input_series[0].series: invalid series 'up{a=~\"b\"}'" in text
    assert "test.yml:6: tests[0].input_series[1].values: invalid value '2+x3' (item 2)" in text
    assert "test.yml:8: tests[0].alert_rule_test[0]: alertname is required" in text


def test_rule_file_problems_use_the_daemons_validation(tmp_path):
    rules = """
    groups:
      - name: g
        rules:
          - alert: Bad
            expr: cpu ** 2 > 1
    """
    res = run(tmp_path, "rule_files: [rules.yml]\ntests: []\n", rules)
    assert any("rules.yml:6: groups[0].rules[0].expr: '**' is not allowed" in p for p in res.problems), res.problems


def test_missing_rule_files_and_unknown_groups(tmp_path):
    res = run(tmp_path, "rule_files: [nope*.yml]\ngroup_eval_order: [x, x]\n")
    text = "\n".join(res.problems)
    assert "test.yml:1: rule_files[0]: no file matches 'nope*.yml'" in text
    assert "test.yml:2: group_eval_order[1]: group 'x' is repeated" in text
    res = run(tmp_path, "rule_files: [rules.yml]\ngroup_eval_order: [nope]\n")
    assert res.problems == ["test.yml:2: group_eval_order[0]: no group 'nope' in the rule files".replace(
        "test.yml", str(tmp_path / "test.yml"))]  # fmt: skip


def test_unreadable_test_file(tmp_path):
    res = run_file(str(tmp_path / "missing.yml"))
    assert res.problems == [f"{tmp_path / 'missing.yml'}: cannot read: No such file or directory"]


def test_query_rules_cannot_be_replayed(tmp_path):
    rules = """
    groups:
      - name: g
        source: prom
        rules:
          - alert: Q
            query: up == 0
            expr: value > 0
    """
    (tmp_path / "r.yml").write_text(textwrap.dedent(rules))
    groups = load_rule_files([tmp_path / "r.yml"])
    with pytest.raises(ReplayError, match=r"r.yml:6: g/Q: a query: rule cannot be replayed"):
        Replay(groups[0].rules, interval=60)


# ---------------------------------------------------------------------------- replay


def test_replay_reports_transitions_with_rendered_annotations(tmp_path):
    (tmp_path / "r.yml").write_text(textwrap.dedent(RULES))
    rules = [r for g in load_rule_files([tmp_path / "r.yml"]) for r in g.rules]
    rp = Replay(rules, interval=60)
    h = Labels({"host": "h"})
    out = []
    for t, v in enumerate([50, 95, 85, 70]):
        rp.feed(t * 60.0, {"load": {h: float(v)}})
        out += [(tr.alert, tr.state, tr.at, tr.value, tr.annotations) for tr in rp.step(t * 60.0)]
    assert out == [
        ("HighLoad", "firing", 60.0, 95.0, {"summary": "load 95.0"}),
        ("HighLoad", "resolved", 180.0, 85.0, {"summary": "load 95.0"}),
    ]
    assert rp.alerts("HighLoad") == []


# ---------------------------------------------------------------------------- comparison


def test_comparison_ignores_order_but_not_multiplicity():
    a = Got({"alertname": "X", "i": "1"}, {})
    b = Got({"alertname": "X", "i": "2"}, {})
    ea, eb = Expected({"alertname": "X", "i": "1"}, {}), Expected({"alertname": "X", "i": "2"}, {})
    assert compare_alerts([eb, ea], [a, b]) == []
    assert compare_alerts([ea, ea], [a]) == ['- missing:    {i="1"}']
    assert compare_alerts([ea], [a, a]) == ['+ unexpected: {i="1"}']


def test_severity_is_compared_only_when_expected_names_it_or_the_rule_set_another():
    implicit = Got({"alertname": "X", "severity": "warning"}, {}, implicit_severity="warning")
    assert compare_alerts([Expected({"alertname": "X"}, {})], [implicit]) == []
    assert compare_alerts([Expected({"alertname": "X", "severity": "warning"}, {})], [implicit]) == []
    assert compare_alerts([Expected({"alertname": "X", "severity": "critical"}, {})], [implicit]) == [
        '- missing:    {severity="critical"}',
        '+ unexpected: {severity="warning"}',
    ]
    explicit = Got({"alertname": "X", "severity": "page"}, {}, implicit_severity="warning")
    assert compare_alerts([Expected({"alertname": "X"}, {})], [explicit]) != []


def test_annotations_must_match_exactly_and_the_diff_shows_each_difference():
    got = Got({"alertname": "X"}, {"summary": "a", "extra": "e"})
    assert compare_alerts([Expected({"alertname": "X"}, {"summary": "a", "extra": "e"})], [got]) == []
    assert compare_alerts([Expected({"alertname": "X"}, {"summary": "b"})], [got]) == [
        "~ annotations differ for {}:",
        "    extra:",
        "      expected: (none)",
        '      got:      "e"',
        "    summary:",
        '      expected: "b"',
        '      got:      "a"',
    ]


@pytest.mark.parametrize("value", ["inf", ".inf", "1e15", "-5", "9999-01-01T00:00:00Z"])
def test_start_timestamp_out_of_range_is_a_located_problem(tmp_path, value):
    from fsincident.evaluation.ruletest import _start_ms

    with pytest.raises(ValueError, match="start_timestamp"):
        _start_ms(value)


@pytest.mark.parametrize("text", ["1e15", "-1e13", "now-100000000d", "9999-01-01 00:00:00"])
def test_backtest_times_out_of_range_are_refused(text):
    from fsincident.evaluation.backtest import parse_time

    with pytest.raises(ValueError, match=r"out of range|too far"):
        parse_time(text)
