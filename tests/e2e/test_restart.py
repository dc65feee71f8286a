"""A restart keeps rule state: a pending alert fires on its original schedule; a firing one does not page again."""

from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.harness import (
    incident,
    kinds,
    log_events,
    make_config,
    parse_ts,
    rules_yaml,
    scrape_source,
    wait_timeline,
    wait_until,
)
from tests.helpers import free_port

pytestmark = pytest.mark.slow

FOR = 3.0

RULES = rules_yaml(
    f"""\
      - alert: QueueBacklog
        expr: queue_depth > 100
        for: {FOR:g}s
        severity: critical
"""
)


def _alert(d) -> dict | None:
    status, body = d.api("GET", "/api/v1/rules")
    assert status == 200, body
    alerts = body["groups"][0]["rules"][0]["alerts"]
    return alerts[0] if alerts else None


def _restart(d, how: str, spawn, cfg, port):
    if how == "kill9":
        d.kill9()
    else:
        assert d.stop(signal.SIGTERM) == 0
    d2 = spawn(cfg, port)
    d2.token = d.token
    return d2


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_restart_keeps_pending_and_firing_state(tmp_path, exposition, receiver, spawn, how):
    exposition.set("queue_depth", 5, queue="orders")
    port = free_port()
    cfg = make_config(
        tmp_path / "cfg",
        port=port,
        database=f"sqlite:///{tmp_path}/state.db",
        sources=scrape_source(exposition.url),
        channel_urls=[receiver.apprise_url("ops")],
        rules=RULES,
    )
    d = spawn(cfg, port)
    d.token = d.create_token("read")

    exposition.set("queue_depth", 500, queue="orders")
    pending = wait_until(lambda: (a := _alert(d)) and a["state"] == "pending" and a, 10, "a pending alert")
    active_since = parse_ts(pending["active_since"])
    time.sleep(max(0.0, active_since + 1.5 - time.time()))
    d = _restart(d, how, spawn, cfg, port)
    restarted = parse_ts([e for e in log_events(d) if e.get("event") == "daemon_started"][-1]["timestamp"])

    msgs = receiver.wait_for(lambda m: len(m) >= 1)
    iid = d.wait_incidents(lambda i: len(i) == 1)[0]["id"]
    inc = wait_timeline(d, iid, "notify_sent")
    fired = parse_ts(inc["alerts"][0]["starts_at"])
    print(f"\n{how}: pending at 0, restarted at {restarted - active_since:.2f}s, fired at {fired - active_since:.2f}s")
    # Fired once `for` had elapsed since the original activation, carried over the restart (or at the first
    # evaluation after the restart when that is later): a forgotten pending state would have started counting
    # again at the first evaluation after the restart and fired no earlier than `restarted + FOR`.
    assert fired >= active_since + FOR - 0.01, (fired - active_since, fired - restarted)
    assert fired < restarted + FOR - 0.3, (fired - active_since, fired - restarted)
    assert parse_ts(_alert(d)["active_since"]) == active_since
    assert len(receiver.received) == 1, [m["title"] for m in msgs]

    # Already firing: restart once more the same way (the other parameter covers the other way); the alert stays
    # firing, the incident open, no second page (neither from before the restart nor after it).
    d = _restart(d, how, spawn, cfg, port)
    time.sleep(3.0)  # three evaluation cycles with the series still over the threshold
    a = _alert(d)
    assert a["state"] == "firing" and parse_ts(a["active_since"]) == active_since
    assert len(receiver.received) == 1, [m["title"] for m in receiver.received]
    status, body = d.api("GET", "/api/v1/incidents")
    assert status == 200, body
    assert [(i["id"], i["state"]) for i in body["incidents"]] == [(iid, "triggered")]
    k = kinds(incident(d, iid))
    assert k.count("triggered") == 1 and k.count("notify_sent") == 1, k
    assert d.stop() == 0
