"""``fsincident test`` through the installed entry point: exit codes, the success report and the failure diff."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "ruletest"
ENTRY = Path(sys.executable).parent / "fsincident"


def fsincident(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "fsincident"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=dict(os.environ))


def test_prometheus_example_passes():
    r = fsincident("test", "prometheus_example_test.yml", cwd=DATA)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[:3] == [
        "Unit Testing: prometheus_example_test.yml",
        "  SUCCESS (1 alert test)",
        "  skipped 1 promql_expr_test case (PromQL is not supported; --strict makes this a failure)",
    ]


def test_strict_fails_on_promql_cases():
    r = fsincident("test", "--strict", str(DATA / "prometheus_example_test.yml"))
    assert r.returncode == 1
    assert "  FAILED:" in r.stdout
    assert "tests[0]: promql_expr_test cannot run (PromQL is not supported): 'go_goroutines > 5'" in r.stdout


def test_failure_prints_a_diff_and_exits_1():
    r = fsincident("test", str(DATA / "failing_test.yml"))
    assert r.returncode == 1, r.stdout + r.stderr
    want = """\
  FAILED:
    test 'node exporter down' (tests[0]), alertname InstanceDown, eval_time 12m: expected 1 alert, got 2 alerts firing
        ~ annotations differ for {instance="localhost:9090", job="prometheus", severity="page"}:
            summary:
              expected: "Instance localhost:9090 is down"
              got:      "Instance localhost:9090 down"
        + unexpected: {instance="localhost:9100", job="node_exporter", severity="page"}
              annotations: {description="localhost:9100 of job node_exporter has been down for more than 5 minutes.", \
summary="Instance localhost:9100 down"}
"""
    assert want in r.stdout
    assert "AnotherInstanceDown" not in r.stdout  # the passing case is not reported


def test_several_files_any_failure_fails():
    r = fsincident("test", str(DATA / "prometheus_example_test.yml"), str(DATA / "failing_test.yml"))
    assert r.returncode == 1
    assert r.stdout.count("Unit Testing:") == 2
    assert "SUCCESS" in r.stdout and "FAILED" in r.stdout


def test_invalid_file_exits_2_with_located_problems(tmp_path):
    (tmp_path / "t.yml").write_text(
        "rule_files: [missing.yml]\ntests:\n  - input_series:\n      - {series: up, values: '1 x'}\n"
    )
    r = fsincident("test", "t.yml", cwd=tmp_path)
    assert r.returncode == 2
    assert "  INVALID:" in r.stdout
    assert "t.yml:1: rule_files[0]: no file matches 'missing.yml'" in r.stdout
    assert "t.yml:4: tests[0].input_series[0].values: invalid value 'x' (item 2)" in r.stdout


def test_usage_errors_exit_2_and_help_lists_the_commands():
    r = fsincident("test")
    assert r.returncode == 2 and "FILE" in r.stderr
    r = fsincident("--help")
    assert "test " in r.stdout and "backtest" in r.stdout
