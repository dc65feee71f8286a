"""``fsincident backtest``: CSV input (times known exactly) and a real Prometheus scraping a local exposition."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fsincident.core import Labels
from fsincident.evaluation.backtest import BacktestError, parse_labels, parse_time, read_csv, run, step_times
from fsincident.evaluation.replay import load_rule_files
from tests.helpers import Exposition, free_port

DATA = Path(__file__).resolve().parent.parent / "data" / "ruletest"
RULES = str(DATA / "backtest_rules.yml")
CPU = str(DATA / "backtest_cpu.csv")
ENTRY = Path(sys.executable).parent / "fsincident"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def fsincident(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "fsincident"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=dict(os.environ))


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# ---------------------------------------------------------------------------- input parsing (in-process)


@pytest.mark.parametrize(
    "text",
    ["1714564800", "1714564800.0", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00", "2024-05-01 12:00:00",
     "2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00"],
)  # fmt: skip
def test_times_in_every_accepted_form(text):
    assert parse_time(text) == 1714564800.0


def test_relative_times():
    now = datetime(2024, 5, 8, 12, tzinfo=UTC)
    assert parse_time("now", now=now) == now.timestamp()
    assert parse_time("now-7d", now=now) == 1714564800.0


@pytest.mark.parametrize("text", ["yesterday", "", "nan", "2024-13-01", "now-7x"])
def test_bad_times(text):
    with pytest.raises(ValueError, match="invalid"):
        parse_time(text)


def test_csv_rows_sorted_and_blank_values_are_gaps(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("Timestamp , Value\n60,2\n0,1\n\n120,\n")
    assert read_csv(str(p)) == [(0.0, 1.0), (60.0, 2.0), (120.0, None)]


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("", "empty file"),
        ("time,value\n0,1\n", ":1: the first line must be the header timestamp,value"),
        ("timestamp,value\n", "no samples after the header"),
        ("timestamp,value\n0,1\nsoon,2\n", ":3: invalid time 'soon'"),
        ("timestamp,value\n0,1\n1,x\n", ":3: invalid value 'x'"),
        ("timestamp,value\n0,1,2\n", ":2: expected 2 columns"),
        ("timestamp,value\n0,1\n1970-01-01 00:00:00,2\n", ":3: timestamp 1970-01-01T00:00:00Z repeats line 2"),
    ],
)
def test_csv_errors_name_the_line(tmp_path, text, msg):
    p = tmp_path / "c.csv"
    p.write_text(text)
    with pytest.raises(BacktestError) as e:
        read_csv(str(p))
    assert str(e.value).startswith(str(p))
    assert msg in str(e.value)


def test_labels_and_steps():
    assert parse_labels(["instance=a", "job=x=y"]) == Labels({"instance": "a", "job": "x=y"})
    for bad in (["nolabel"], ["0a=b"], ["a=1", "a=2"]):
        with pytest.raises(ValueError):
            parse_labels(bad)
    assert step_times(0, 2.5, 1) == [0.0, 1.0, 2.0]
    assert step_times(5, 4, 1) == []


# ---------------------------------------------------------------------------- CSV through the CLI


CSV_ARGS = ["backtest", RULES, "--csv", CPU, "--metric", "cpu_usage_percent", "--labels", "instance=web1"]


def test_csv_table_shows_each_firing_and_resolve():
    # cpu is 95 from 12:05 to 12:09 and from 12:15 to the end; for: 2m
    r = fsincident(*CSV_ARGS)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "ALERT    LABELS                                       FIRED AT              RESOLVED AT           DURATION",
        "HighCPU  instance=web1, severity=warning, team=infra  2024-05-01T12:07:00Z  2024-05-01T12:10:00Z  3m",
        "HighCPU  instance=web1, severity=warning, team=infra  2024-05-01T12:17:00Z  (still firing)        >=2m",
        "",
        "2 alerts would have fired from 2024-05-01T12:00:00Z to 2024-05-01T12:19:00Z (20 evaluations); "
        "1 still firing at the end",
    ]
    assert r.stderr == ""


def test_csv_json_is_one_line_per_transition():
    r = fsincident(*CSV_ARGS, "--json")
    assert r.returncode == 0, r.stderr
    labels = {"alertname": "HighCPU", "instance": "web1", "severity": "warning", "team": "infra"}
    assert [json.loads(line) for line in r.stdout.splitlines()] == [
        {"alert": "HighCPU", "labels": labels, "state": "firing", "at": "2024-05-01T12:07:00Z"},
        {"alert": "HighCPU", "labels": labels, "state": "resolved", "at": "2024-05-01T12:10:00Z"},
        {"alert": "HighCPU", "labels": labels, "state": "firing", "at": "2024-05-01T12:17:00Z"},
    ]


def test_csv_with_nothing_firing_says_so(tmp_path):
    (tmp_path / "c.csv").write_text("timestamp,value\n2024-05-01 12:00:00,10\n2024-05-01 12:01:00,20\n")
    r = fsincident("backtest", RULES, "--csv", str(tmp_path / "c.csv"), "--metric", "cpu_usage_percent")
    assert r.returncode == 0
    assert r.stdout.strip() == (
        "no alert would have fired from 2024-05-01T12:00:00Z to 2024-05-01T12:01:00Z (2 evaluations)"
    )


def test_annotation_failures_are_warnings(tmp_path):
    # backtest_rules.yml's summary reads labels.instance, which a CSV without --labels lacks
    r = fsincident(*CSV_ARGS[:6])
    assert r.returncode == 0
    assert "2 alerts would have fired" in r.stdout
    assert r.stderr.startswith("warning (first at 2024-05-01T12:07:00Z): ")
    assert "host/HighCPU: annotation 'summary': template error" in r.stderr


def test_evaluation_errors_are_collected_with_the_first_time(tmp_path):
    (tmp_path / "r.yml").write_text(
        "groups:\n  - name: g\n    rules:\n      - {alert: R, expr: 'on(\"job\", errors / requests) > 0.5'}\n"
    )
    rules = [r for g in load_rule_files([tmp_path / "r.yml"]) for r in g.rules]
    a, b = Labels({"job": "x", "i": "1"}), Labels({"job": "x", "i": "2"})
    ok = {"errors": {a: 1.0}, "requests": {a: 1.0}}
    bad = {"errors": {a: 1.0, b: 1.0}, "requests": {a: 1.0, b: 1.0}}
    res = run([*rules], [(0.0, ok), (60.0, bad), (120.0, bad)], interval=60)
    assert res.evaluations == 3
    # like the daemon, a rule that fails as a whole keeps its state (on_error: keep_state)
    assert [(t.state, t.at) for t in res.transitions] == [("firing", 0.0)]
    ((msg, first),) = res.errors.items()
    assert first == 60.0 and msg.startswith(f"{tmp_path / 'r.yml'}:4: g/R: expr: ")


def test_csv_warns_about_metrics_it_does_not_have(tmp_path):
    r = fsincident(*CSV_ARGS[:4], "--metric", "memory_percent")
    assert r.returncode == 0
    assert "no alert would have fired" in r.stdout
    assert "host/HighCPU reads cpu_usage_percent, which the CSV does not provide" in r.stderr


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--csv", CPU], "--csv needs --metric NAME"),
        (["--metric", "x"], "give either --csv FILE --metric NAME or --prometheus URL"),
        (["--csv", CPU, "--metric", "x", "--prometheus", "http://127.0.0.1:1"], "give either"),
        (["--csv", CPU, "--metric", "x", "--step", "1m"], "--step goes with --prometheus"),
        (["--csv", CPU, "--metric", "x", "--labels", "bad"], "--labels: invalid label 'bad': write name=value"),
        (["--prometheus", "http://127.0.0.1:1", "--start", "0", "--end", "60"], "--prometheus needs --step"),
        (["--prometheus", "http://127.0.0.1:1", "--start", "x", "--end", "60", "--step", "1s"], "invalid time 'x'"),
        (["--prometheus", "http://127.0.0.1:1", "--start", "60", "--end", "0", "--step", "1s"], "--end is before"),
        (["--prometheus", "http://127.0.0.1:1", "--start", "0", "--end", "9", "--step", "0s"], "must be positive"),
        (["--prometheus", "ftp://x", "--start", "0", "--end", "9", "--step", "1s"], "invalid Prometheus URL"),
    ],
)
def test_bad_arguments_exit_2(args, msg):
    r = fsincident("backtest", RULES, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert msg in r.stderr


def test_bad_files_exit_2(tmp_path):
    (tmp_path / "r.yml").write_text("groups:\n  - name: g\n    rules:\n      - {alert: A, expr: 'cpu >'}\n")
    r = fsincident("backtest", str(tmp_path / "r.yml"), "--csv", CPU, "--metric", "cpu")
    assert r.returncode == 2
    assert f"{tmp_path / 'r.yml'}:4: groups[0].rules[0].expr: syntax error" in r.stderr
    (tmp_path / "bad.csv").write_text("timestamp,value\n0,1\n1,one\n")
    r = fsincident("backtest", RULES, "--csv", str(tmp_path / "bad.csv"), "--metric", "cpu")
    assert r.returncode == 2
    assert f"{tmp_path / 'bad.csv'}:3: invalid value 'one'" in r.stderr


def test_query_rules_are_refused(tmp_path):
    (tmp_path / "r.yml").write_text(
        "groups:\n  - name: g\n    source: prom\n    rules:\n      - {alert: Q, query: up, expr: value == 0}\n"
    )
    r = fsincident("backtest", str(tmp_path / "r.yml"), "--csv", CPU, "--metric", "up")
    assert r.returncode == 2
    assert "r.yml:5: g/Q: a query: rule cannot be replayed" in r.stderr


def test_unreachable_prometheus_exits_1_without_leaking_credentials():
    port = free_port()
    r = fsincident(
        "backtest", RULES, "--prometheus", f"http://me:s3cret@127.0.0.1:{port}", "--start", "0", "--end", "60",
        "--step", "15s",
    )  # fmt: skip
    assert r.returncode == 1
    assert f"cannot reach Prometheus at http://127.0.0.1:{port}" in r.stderr
    assert "s3cret" not in r.stderr + r.stdout


# ---------------------------------------------------------------------------- a real Prometheus


USER = "fsi"
PASSWORD = "s3cret-pass"
# bcrypt of PASSWORD (cost 4): Prometheus' --web.config.file only takes hashes.
PASSWORD_HASH = "$2b$04$1iV6IhqtiSFwEB0G84/dqOe88plOg5AWOytt7.DSW.YaOpW4t9Wva"


@pytest.fixture
def prom(tmp_path) -> Iterator[tuple[str, Exposition]]:
    """A private Prometheus with basic auth scraping an Exposition every second; stopped at the end."""
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (bash scripts/install-peers.sh prometheus)")
    exp = Exposition().start()
    exp.set("cpu_usage_percent", 50, host="web1")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs:\n  - {{job_name: host, static_configs: [{{targets: ['127.0.0.1:{exp.port}']}}]}}\n"
    )
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  {USER}: '{PASSWORD_HASH}'\n")
    port = free_port()
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--web.config.file={tmp_path / 'web.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if _has_data(port):
                break
            if time.time() > deadline:
                raise AssertionError(f"prometheus had no data in 30s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, exp
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        exp.stop()


def _has_data(port: int) -> bool:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": "cpu_usage_percent"})
    )
    import base64

    req.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return len(json.loads(r.read())["data"]["result"]) == 1
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return False


@pytest.mark.slow
def test_backtest_against_prometheus_finds_when_the_alert_fired_and_resolved(prom, tmp_path):
    url, exp = prom
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n  - name: host\n    rules:\n"
        "      - {alert: HighCPU, expr: 'cpu_usage_percent > 90', for: 2s}\n"
        "      - {alert: CPUClimbing, expr: 'deriv(cpu_usage_percent, \"4s\") > 5'}\n"
    )
    start = time.time()
    time.sleep(3)
    high = time.time()
    exp.set("cpu_usage_percent", 95, host="web1")
    time.sleep(6)
    low = time.time()
    exp.set("cpu_usage_percent", 50, host="web1")
    time.sleep(4)
    end = time.time()
    iso_start = datetime.fromtimestamp(start, UTC).isoformat()
    r = fsincident(
        "backtest", str(rules), "--prometheus", url, "--start", iso_start, "--end", f"{end:.3f}", "--step", "1s",
        "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    cpu = [e for e in events if e["alert"] == "HighCPU"]
    assert [e["state"] for e in cpu] == ["firing", "resolved"], events
    fired, resolved = (datetime.fromisoformat(e["at"]).timestamp() for e in cpu)
    # scrapes every 1s, evaluations every 1s: the value is seen 0-2s late; for: 2s
    assert high + 2 <= fired <= high + 5, (high, fired)
    assert low <= resolved <= low + 3, (low, resolved)
    assert cpu[0]["labels"] == {
        "alertname": "HighCPU",
        "host": "web1",
        "instance": f"127.0.0.1:{exp.port}",
        "job": "host",
        "severity": "warning",
    }
    # a window function over the same history: the climb is seen once, around the change
    climbing = [e for e in events if e["alert"] == "CPUClimbing"]
    assert [e["state"] for e in climbing] == ["firing", "resolved"], events
    assert high <= datetime.fromisoformat(climbing[0]["at"]).timestamp() <= high + 4
    # the table tells the same story
    r = fsincident("backtest", str(rules), "--prometheus", url, "--start", iso_start, "--end", f"{end:.3f}",
                   "--step", "1s")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("HighCPU")]
    assert len(rows) == 1 and datetime.fromtimestamp(resolved, UTC).strftime("%H:%M:%S") in rows[0]
    assert "2 alerts would have fired" in r.stdout
