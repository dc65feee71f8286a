"""Sources through the whole daemon: this host's own figures, and a large scraped exposition."""

from __future__ import annotations

import re
import socket

import pytest

from tests.e2e.harness import log_events, make_config, rules_yaml, scrape_source
from tests.helpers import free_port

pytestmark = pytest.mark.slow


def test_host_source_fires_for_this_host(tmp_path, receiver, spawn):
    port = free_port()
    rules = rules_yaml(
        """\
      - alert: HostHasCpus
        expr: cpu_count > 0
        annotations:
          summary: "{{ labels.instance }} has {{ value }} CPUs"
""",
        source="local",
    )
    cfg = make_config(
        tmp_path / "cfg",
        port=port,
        database=f"sqlite:///{tmp_path}/state.db",
        sources="  - {name: local, type: host, interval: 1s}",
        channel_urls=[receiver.apprise_url("ops")],
        rules=rules,
    )
    d = spawn(cfg, port)
    d.token = d.create_token("read")
    incs = d.wait_incidents(lambda i: len(i) == 1)
    host = socket.gethostname()
    assert incs[0]["labels"]["instance"] == host
    assert incs[0]["labels"]["alertname"] == "HostHasCpus"
    msgs = receiver.wait_for(lambda m: len(m) == 1)
    m = re.search(rf"{re.escape(host)} has (\d+)\.0 CPUs", msgs[0]["title"])
    assert m and int(m.group(1)) >= 1, msgs[0]
    status, body = d.api("GET", "/api/v1/rules")
    assert status == 200, body
    (rule,) = body["groups"][0]["rules"]
    assert rule["state"] == "firing" and rule["health"] == "ok"
    assert d.stop() == 0


def test_large_scrape_is_read_whole(tmp_path, exposition, receiver, spawn):
    """A body of a few hundred kB arrives in several reads; the scrape must not parse a truncated prefix."""
    for n in range(10_000):
        exposition.set("shard_lag", 0, shard=f"shard-{n:05d}", zone=f"zone-{n % 7}")
    assert len(exposition.text()) > 400_000
    exposition.set("shard_lag", 99, shard="shard-09999", zone="zone-3")  # the very last line
    port = free_port()
    rules = rules_yaml(
        """\
      - alert: ShardLag
        expr: shard_lag > 10
"""
    )
    cfg = make_config(
        tmp_path / "cfg",
        port=port,
        database=f"sqlite:///{tmp_path}/state.db",
        sources=scrape_source(exposition.url),
        channel_urls=[receiver.apprise_url("ops")],
        rules=rules,
    )
    d = spawn(cfg, port)
    d.token = d.create_token("read")
    incs = d.wait_incidents(lambda i: len(i) == 1)
    assert incs[0]["labels"]["shard"] == "shard-09999"
    status, body = d.api("GET", "/api/v1/rules")
    assert status == 200, body
    (rule,) = body["groups"][0]["rules"]
    assert rule["health"] == "ok" and rule["series_evaluated"] == 10_000, rule
    assert not [e for e in log_events(d) if e.get("event") == "source_failed"]
    assert d.stop() == 0
