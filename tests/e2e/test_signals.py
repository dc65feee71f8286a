"""Signals on the real process: SIGHUP reloads (a bad config keeps the old one), SIGTERM drains and exits 0."""

from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.harness import (
    incident,
    kinds,
    log_events,
    make_config,
    metric,
    metrics_text,
    outbox_rows,
    rules_yaml,
    scrape_source,
    wait_metric,
    wait_timeline,
    wait_until,
)
from tests.helpers import free_port

pytestmark = pytest.mark.slow


def rule(threshold: int) -> str:
    return rules_yaml(
        f"""\
      - alert: QueueBacklog
        expr: queue_depth > {threshold}
        severity: critical
"""
    )


def _config(tmp_path, exposition, receiver, rules, delivery=None):
    port = free_port()
    cfg = make_config(
        tmp_path / "cfg",
        port=port,
        database=f"sqlite:///{tmp_path}/state.db",
        sources=scrape_source(exposition.url),
        channel_urls=[receiver.apprise_url("ops")],
        rules=rules,
        delivery=delivery,
    )
    return cfg, port


def _exprs(d) -> list[str]:
    status, body = d.api("GET", "/api/v1/rules")
    assert status == 200, body
    return [r["expr"] for g in body["groups"] for r in g["rules"]]


def test_sighup_reloads_rules_and_keeps_old_ones_when_broken(tmp_path, exposition, receiver, spawn):
    exposition.set("queue_depth", 75, queue="orders")
    cfg, port = _config(tmp_path, exposition, receiver, rule(100))
    d = spawn(cfg, port)
    d.token = d.create_token("read")
    assert _exprs(d) == ["queue_depth > 100"]
    time.sleep(2.5)  # a few cycles with 75 < 100: nothing fires
    assert receiver.received == []

    (cfg / "rules.d" / "app.yaml").write_text(rule(50))
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: _exprs(d) == ["queue_depth > 50"], 10, "the reloaded rule")
    msgs = receiver.wait_for(lambda m: len(m) == 1)
    assert msgs[0]["title"].startswith("[TRIGGERED] ")
    assert metric(metrics_text(d), "fsincident_config_last_reload_successful") == 1

    broken = rule(50).replace("queue_depth > 50", "queue_depth >")
    (cfg / "rules.d" / "app.yaml").write_text(broken)
    line = next(i for i, t in enumerate(broken.splitlines(), 1) if "expr:" in t)
    d.proc.send_signal(signal.SIGHUP)
    wait_metric(d, "fsincident_config_last_reload_successful", 0)
    failed = wait_until(
        lambda: [e for e in log_events(d) if e.get("event") == "config_reload_failed"], 5, "config_reload_failed"
    )
    problems = " ".join(failed[0].get("problems", []))
    assert f"rules.d/app.yaml:{line}:" in problems, failed[0]
    assert "expr" in problems, failed[0]
    assert failed[0]["level"] == "error"
    # Still running, still on the previous rules, still firing that incident (no resolve, no second page).
    assert d.proc.poll() is None
    assert _exprs(d) == ["queue_depth > 50"]
    time.sleep(2.0)
    status, body = d.api("GET", "/api/v1/incidents")
    assert status == 200, body
    assert [i["state"] for i in body["incidents"]] == ["triggered"]
    assert len(receiver.received) == 1

    # Fixing the file and reloading again sets the metric back to 1.
    (cfg / "rules.d" / "app.yaml").write_text(rule(60))
    d.proc.send_signal(signal.SIGHUP)
    wait_metric(d, "fsincident_config_last_reload_successful", 1)
    assert _exprs(d) == ["queue_depth > 60"]
    assert d.stop() == 0


def test_sigterm_exits_promptly(tmp_path, exposition, receiver, spawn):
    exposition.set("queue_depth", 5, queue="orders")
    cfg, port = _config(tmp_path, exposition, receiver, rule(100))
    d = spawn(cfg, port)
    time.sleep(1.5)  # let sources and groups run
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    took = time.monotonic() - t0
    assert took < 10, f"SIGTERM took {took:.1f}s"
    events = [e.get("event") for e in log_events(d)]
    assert "daemon_stopped" in events
    assert not [e for e in log_events(d) if e.get("level") in ("error", "critical")]


def test_sigterm_waits_for_inflight_delivery(tmp_path, exposition, receiver, spawn):
    exposition.set("queue_depth", 5, queue="orders")
    receiver.delay = 2.0
    cfg, port = _config(tmp_path, exposition, receiver, rule(100))
    d = spawn(cfg, port)
    token = d.token = d.create_token("read")
    exposition.set("queue_depth", 500, queue="orders")
    wait_until(lambda: receiver.hits, 20, "the page to reach the receiver")
    assert receiver.received == []  # the receiver is still sitting on it
    assert d.stop(signal.SIGTERM) == 0
    assert len(receiver.received) == 1
    rows = outbox_rows(tmp_path / "state.db")
    assert [(r["kind"], r["state"], r["attempts"]) for r in rows] == [("trigger", "sent", 1)]
    events = [e.get("event") for e in log_events(d)]
    assert events.index("delivery_sent") < events.index("daemon_stopped")

    receiver.delay = 0
    d2 = spawn(cfg, port)
    d2.token = token
    iid = d2.wait_incidents(lambda i: len(i) == 1)[0]["id"]
    inc = wait_timeline(d2, iid, "notify_sent")
    time.sleep(3.0)  # several delivery and evaluation cycles: nothing is sent again
    assert len(receiver.hits) == 1 and len(receiver.received) == 1
    assert kinds(incident(d2, iid)).count("notify_sent") == 1
    assert inc["state"] == "triggered"
    assert d2.stop() == 0
