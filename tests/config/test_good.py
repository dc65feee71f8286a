"""Directories that load: the shipped examples, a config using every section, env expansion, templates."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from fsincident.config import load
from fsincident.core import ConfigError, Severity

from .conftest import BASE, ConfDir

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPS_CHAT_URL", "FSINCIDENT_CONFIG")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_examples_load():
    cfg = load(EXAMPLES, environ={})
    assert [s.name for s in cfg.sources] == ["local", "self"]
    assert [(s.name, s.type) for s in cfg.sources] == [("local", "host"), ("self", "scrape")]
    assert cfg.channel("ops-chat").urls == ["json://127.0.0.1:9099/fsincident"]
    assert [g.name for g in cfg.groups] == ["host", "self", "fsincident-api"]
    assert [r.key for r in cfg.rules][:6] == [
        "host/HostHighCPU",
        "host/HostLowMemory",
        "host/HostDiskFull",
        "host/HostDiskFullSoon",
        "host/HostHighLoad",
        "self/FsincidentDeliveryFailing",
    ]
    assert [s.name for s in cfg.slos] == ["fsincident-api"]
    assert (cfg.host, cfg.port) == ("127.0.0.1", 9095)
    assert cfg.files[0] == str(EXAMPLES / "fsincident.yaml")


def test_examples_check_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "fsincident", "check", "--config", str(EXAMPLES)],
        capture_output=True,
        text=True,
        env=_cli_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"ok: 2 sources, 1 channels, 2 routes, 3 rule groups, 10 rules ({EXAMPLES})\n"
    assert proc.stderr == ""


def test_example_rule_tests_pass():
    proc = subprocess.run(
        [sys.executable, "-m", "fsincident", "test", str(EXAMPLES / "tests" / "host_test.yml")],
        capture_output=True,
        text=True,
        env=_cli_env(),
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS (6 alert tests)" in proc.stdout


def test_full_config_values(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "listen: 0.0.0.0:9200",
        "database: postgresql://fsi@db.example.com/fsi",
        "external_url: https://oncall.example.com/",
        "log_level: debug",
        "delivery: {timeout: 5s, max_attempts: 3, initial_backoff: 1s, max_backoff: 1m, concurrency: 2, lease: 30s}",
        "sources:",
        "  - name: web",
        "    type: scrape",
        "    url: http://127.0.0.1:9100/metrics",
        "    headers: {Authorization: Bearer x}",
        "    labels: {dc: fra}",
        "    interval: 1m30s",
        "    timeout: 2s",
        "  - {name: local, type: host, mounts: [/], interfaces: [eth0], labels: {role: db}}",
        "channels:",
        "  - {name: ops, type: apprise, urls: ['json://127.0.0.1:9099/a', 'json://127.0.0.1:9099/b']}",
        "users:",
        "  - {name: alice, timezone: Europe/Berlin, contacts: ['json://127.0.0.1:9099/alice']}",
        "routes:",
        "  - {match: {team: infra, up: 1, ok: true}, notify: ['user:alice'], group_by: [alertname, '...']}",
        "  - {notify: ['channel:ops'], auto_resolve: false}",
    )
    conf.write(
        "rules.d/host.yml",
        "groups:",
        "  - name: host",
        "    interval: 30s",
        "    source: local",
        "    rules:",
        "      - alert: HighCPU",
        "        expr: cpu_usage_percent > 90 and labels.cpu != 'total'",
        "        for: 2m",
        "        keep_firing_for: 1m",
        "        severity: critical",
        "        labels: {team: infra, tier: 1}",
        "        annotations:",
        "          summary: 'CPU {{ value | round(1) }}% on {{ labels.instance }}'",
        "      - alert: Scraped",
        "        source: web",
        "        expr: up == 0",
    )
    cfg = conf.load()
    assert (cfg.listen, cfg.host, cfg.port) == ("0.0.0.0:9200", "0.0.0.0", 9200)
    assert cfg.database == "postgresql://fsi@db.example.com/fsi"
    assert cfg.external_url == "https://oncall.example.com"
    assert cfg.log_level == "debug"
    assert cfg.delivery.max_attempts == 3 and cfg.delivery.lease == timedelta(seconds=30)
    web = cfg.source("web")
    assert web.interval == timedelta(seconds=90) and web.timeout == timedelta(seconds=2)
    assert web.headers == {"Authorization": "Bearer x"} and web.labels == {"dc": "fra"}
    assert cfg.source("local").mounts == ["/"]
    assert cfg.channel("ops").urls == ["json://127.0.0.1:9099/a", "json://127.0.0.1:9099/b"]
    assert cfg.user("alice").timezone == "Europe/Berlin"
    assert cfg.routes[0].match == {"team": "infra", "up": "1", "ok": "true"}
    assert cfg.routes[0].group_by == ["alertname", "..."]
    assert cfg.routes[1].auto_resolve is False
    (group,) = cfg.groups
    assert group.interval == timedelta(seconds=30) and group.file == str(conf.root / "rules.d" / "host.yml")
    cpu, scraped = group.rules
    assert cpu.source == "local" and cpu.for_ == timedelta(minutes=2) and cpu.keep_firing_for == timedelta(minutes=1)
    assert cpu.severity is Severity.CRITICAL
    assert cpu.labels == {"team": "infra", "tier": "1", "severity": "critical"}
    assert cpu.annotations["summary"].render(value=93.44, labels={"instance": "db1"}) == "CPU 93.4% on db1"
    assert cpu.expr.metrics == ("cpu_usage_percent",)
    assert (cpu.file, cpu.line) == (group.file, 6)
    assert scraped.source == "web" and scraped.severity is Severity.WARNING and scraped.for_ == timedelta(0)
    assert scraped.labels == {"severity": "warning"}


def test_empty_directory_uses_defaults(conf: ConfDir):
    cfg = conf.load()
    assert cfg.listen == "127.0.0.1:9095"
    assert cfg.external_url == "http://127.0.0.1:9095"
    assert cfg.sources == () and cfg.groups == () and cfg.templates == {}


def test_empty_files_are_empty_sections(conf: ConfDir):
    conf.write("fsincident.yaml", "# nothing yet")
    conf.write("rules.d/empty.yaml")
    conf.write("rules.d/comment.yaml", "# later")
    conf.write("rules.d/nogroups.yaml", "groups: []")
    assert conf.load().groups == ()


def test_rule_files_load_in_name_order(conf: ConfDir):
    conf.write("fsincident.yaml", *BASE)
    for name in ("20-b.yaml", "10-a.yml", "30-c.yaml"):
        group = name[3]
        conf.write(f"rules.d/{name}", "groups:", f"  - {{name: {group}, source: local, rules: []}}")
    conf.write("rules.d/notes.txt", "not: [a rule file")
    assert [g.name for g in conf.load().groups] == ["a", "b", "c"]


def test_env_value_is_expanded(conf: ConfDir):
    conf.write("fsincident.yaml", "channels:", "  - {name: ops, urls: ['${OPS_URL}']}", "listen: ${HOST}:${PORT}")
    cfg = conf.load({"OPS_URL": "json://127.0.0.1:9099/x", "HOST": "127.0.0.2", "PORT": "9333"})
    assert cfg.channel("ops").urls == ["json://127.0.0.1:9099/x"]
    assert cfg.listen == "127.0.0.2:9333"


def test_env_default_used_when_unset_and_ignored_when_set(conf: ConfDir):
    conf.write("fsincident.yaml", "listen: ${LISTEN:-127.0.0.1:9999}", "external_url: ${URL:-}")
    cfg = conf.load()
    assert cfg.listen == "127.0.0.1:9999"
    assert cfg.external_url == "http://127.0.0.1:9999"  # an empty external_url falls back to listen
    assert conf.load({"LISTEN": "127.0.0.1:7000"}).listen == "127.0.0.1:7000"


def test_env_comes_from_the_process_by_default(conf: ConfDir, monkeypatch: pytest.MonkeyPatch):
    conf.write("fsincident.yaml", "listen: ${FSI_TEST_LISTEN}")
    monkeypatch.setenv("FSI_TEST_LISTEN", "127.0.0.1:9444")
    assert load(conf.root).listen == "127.0.0.1:9444"
    monkeypatch.delenv("FSI_TEST_LISTEN")
    with pytest.raises(ConfigError):
        load(conf.root)


def test_template_overrides_load(conf: ConfDir):
    conf.write("templates/title.j2", "[{{ incident.severity }}] {{ incident.title }}")
    conf.write("templates/message.j2", "{% for a in alerts %}{{ a }}", "{% endfor %}")
    cfg = conf.load()
    assert sorted(cfg.templates) == ["message", "title"]
    assert cfg.templates["title"].render(incident={"severity": "critical", "title": "x"}) == "[critical] x"
