"""A restart of the real daemon keeps a heartbeat check's last ping: two `fsincident run` processes on one
database, with a pause between them (end to end: it waits on real time, so it runs with the end-to-end tests)."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest

from tests.helpers import DaemonProcess, Receiver, free_port, write_config
from tests.plugins.test_heartbeat import MAIN, RULES, SECRET, _titles


@pytest.fixture
def hb_receiver():
    r = Receiver().start()
    yield r
    r.stop()


def _evaluated(d: DaemonProcess, token: str) -> dict[str, Any]:
    """The rules of the second daemon once it has evaluated both checks (it may start slowly on a busy machine)."""
    deadline = time.monotonic() + 10
    while True:
        status, body = d.api("GET", "/api/v1/rules", token=token)
        assert status == 200, body
        rules = {r["name"]: r for r in body["groups"][0]["rules"]}
        if rules["JobMissing"]["series_evaluated"] == 2 or time.monotonic() > deadline:
            assert rules["JobMissing"]["series_evaluated"] == 2, rules["JobMissing"]
            return rules
        time.sleep(0.1)


@pytest.mark.slow
def test_restart_keeps_the_last_ping(tmp_path, hb_receiver):
    receiver = hb_receiver
    port = free_port()
    main = MAIN.replace("RECEIVER", receiver.apprise_url("ops"))
    main = main.replace("period: 2s, grace: 1s", "period: 12s, grace: 4s")  # late 16 s after a ping
    main = main.replace("{port}", str(port)).replace("{db}", f"sqlite:///{tmp_path}/state.db")
    rules = {"hb.yaml": RULES["hb.yaml"] + "      - {alert: PingAge, expr: heartbeat_last_ping_age_seconds >= 0}\n"}
    cfg = write_config(tmp_path / "cfg", main, rules)
    d = DaemonProcess(cfg, port).start()
    d.token = d.create_token("ingest")
    try:
        first_seen = time.monotonic()
        while True:  # pings keep "quick" healthy until well past first seen + 8 s
            status, body = d.api("POST", "/api/v1/heartbeats/quick")
            assert status == 200, body
            pinged = time.monotonic()
            if pinged - first_seen > 10:
                break
            time.sleep(1)
    finally:
        assert d.stop() == 0
    time.sleep(3)  # down for a while: a restart that forgot everything would count the age from its own start
    restarted = time.monotonic()
    d2 = DaemonProcess(cfg, port).start()
    try:
        reader = d2.create_token("read")
        # Had the restart forgotten the ping (but not when the check was first seen), "quick" would be late at once.
        # (12 s after the last ping: a forgotten ping would count from first seen, 16 s before now or more; the
        # margin to the real deadline, 16 s after the ping, covers a slow start of the second daemon.)
        while time.monotonic() - pinged < 12:
            time.sleep(0.2)
        assert _titles(receiver.received, "TRIGGERED", "quick") == [], [m["title"] for m in receiver.received]
        rules_by_name = _evaluated(d2, reader)
        assert rules_by_name["JobMissing"]["state"] == "inactive", rules_by_name["JobMissing"]
        # The age is counted from the ping before the restart: it was evaluated after the restart, so it is at
        # least the time from the ping to the restart (an age counted from the restart could not be; a bound that
        # holds however long collection and evaluation lag on a loaded machine).
        ages = {a["labels"]["check"]: a["value"] for a in rules_by_name["PingAge"]["alerts"]}
        assert restarted - pinged <= ages["quick"] <= time.monotonic() - pinged, ages
        # No more pings: now it is really late, and pages.
        receiver.wait_for(lambda m: _titles(m, "TRIGGERED", "quick"), timeout=15)
        assert time.monotonic() - pinged >= 16
        with urllib.request.urlopen(f"{d2.url}/api/v1/heartbeats/hourly/fail?key={SECRET}", timeout=10) as r:
            assert r.status == 200
        receiver.wait_for(lambda m: _titles(m, "TRIGGERED", "hourly"), timeout=15)
    finally:
        assert d2.stop() == 0
    assert SECRET not in d2.logs()
