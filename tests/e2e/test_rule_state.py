"""Hysteresis with the real daemon, and rule state (pending, hysteresis hold) surviving SIGTERM and kill -9."""

from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.harness import (
    incident,
    kinds,
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
      - alert: HotCpu
        expr: cpu > 90
        resolve_expr: cpu < 80
        for: {FOR:g}s
        severity: critical
"""
)


def _rule(d) -> dict:
    status, body = d.api("GET", "/api/v1/rules")
    assert status == 200, body
    return body["groups"][0]["rules"][0]


def _alert(d) -> dict | None:
    alerts = _rule(d)["alerts"]
    return alerts[0] if alerts else None


def _restart(d, how: str, spawn, cfg, port):
    if how == "kill9":
        d.kill9()
    else:
        assert d.stop(signal.SIGTERM) == 0
    d2 = spawn(cfg, port)
    d2.token = d.token
    return d2


def _titles(receiver) -> list[str]:
    return [m.get("title", "") for m in receiver.received]


def _stays(d, receiver, seconds: float, state: str, value: float, pages: int) -> None:
    """For ``seconds`` (several evaluation cycles): the alert keeps ``state`` with ``value``, no new message."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        a = _alert(d)
        assert a is not None and a["state"] == state and a["value"] == value, a
        assert len(receiver.received) == pages, _titles(receiver)
        time.sleep(0.25)


@pytest.fixture
def daemon(tmp_path, exposition, receiver, spawn):
    exposition.set("cpu", 50, host="web1")
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
    return d, cfg, port


def test_fires_above_90_stays_firing_at_85_resolves_below_80(daemon, exposition, receiver):
    d, _, _ = daemon
    rule = wait_until(lambda: (r := _rule(d))["last_evaluation"] and r, 10, "a first evaluation")
    assert rule["resolve_expr"] == "cpu < 80" and rule["expr"] == "cpu > 90"

    exposition.set("cpu", 85, host="web1")  # between the thresholds, never fired: nothing happens
    time.sleep(1.5)
    assert _alert(d) is None

    exposition.set("cpu", 95, host="web1")
    receiver.wait_for(lambda m: len(m) == 1)
    assert "TRIGGERED" in _titles(receiver)[0]
    assert _alert(d)["state"] == "firing"

    exposition.set("cpu", 85, host="web1")  # below the firing threshold, above the resolve one: held
    wait_until(lambda: _alert(d)["value"] == 85, 5, "the held alert to show the current value")
    _stays(d, receiver, 3.0, "firing", 85, pages=1)

    exposition.set("cpu", 70, host="web1")
    receiver.wait_for(lambda m: len(m) == 2)
    assert "RESOLVED" in _titles(receiver)[1], _titles(receiver)
    assert _alert(d) is None
    iid = d.wait_incidents(lambda i: len(i) == 1 and i[0]["state"] == "resolved")[0]["id"]
    assert kinds(incident(d, iid)).count("triggered") == 1

    exposition.set("cpu", 85, host="web1")  # resolved: 85 is not > 90, so no new alert
    time.sleep(2.0)
    assert _alert(d) is None and len(receiver.received) == 2, _titles(receiver)


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_restarts_keep_pending_and_hysteresis_hold(daemon, exposition, receiver, spawn, how):
    d, cfg, port = daemon
    wait_until(lambda: _rule(d)["last_evaluation"], 10, "a first evaluation")

    # Pending across a restart: fires `for` after the original activation, not after the restart.
    exposition.set("cpu", 95, host="web1")
    pending = wait_until(lambda: (a := _alert(d)) and a["state"] == "pending" and a, 10, "a pending alert")
    active_since = parse_ts(pending["active_since"])
    time.sleep(max(0.0, active_since + 1.0 - time.time()))
    d = _restart(d, how, spawn, cfg, port)
    restarted = time.time()
    receiver.wait_for(lambda m: len(m) >= 1)
    iid = d.wait_incidents(lambda i: len(i) == 1)[0]["id"]
    fired = parse_ts(wait_timeline(d, iid, "notify_sent")["alerts"][0]["starts_at"])
    assert active_since + FOR - 0.01 <= fired < restarted + FOR - 0.3, (fired - active_since, fired - restarted)

    # Held by hysteresis across a restart: still firing at 85, no second page, no resolve.
    exposition.set("cpu", 85, host="web1")
    wait_until(lambda: _alert(d)["value"] == 85, 5, "the held alert to show 85")
    d = _restart(d, how, spawn, cfg, port)
    wait_until(lambda: _rule(d)["last_evaluation"] and _alert(d)["value"] == 85, 10, "an evaluation after restart")
    _stays(d, receiver, 3.0, "firing", 85, pages=1)
    assert parse_ts(_alert(d)["active_since"]) == active_since
    assert incident(d, iid)["state"] == "triggered"

    exposition.set("cpu", 70, host="web1")
    receiver.wait_for(lambda m: len(m) == 2)
    assert "RESOLVED" in _titles(receiver)[1], _titles(receiver)
    time.sleep(1.0)
    assert len(receiver.received) == 2, _titles(receiver)
    k = kinds(incident(d, iid))
    assert k.count("triggered") == 1 and k.count("resolved") == 1, k
    assert d.stop() == 0
