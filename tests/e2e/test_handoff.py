"""Handoff notices from the real daemon: the incoming person hears "You are now on call" at the handoff,
once, through their own contacts (the local webhook receiver); a restart neither repeats nor skips one."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.harness import CountingReceiver, wait_until
from tests.helpers import DaemonProcess, free_port, write_config

pytestmark = pytest.mark.slow

TITLE = "You are now on call for primary"


def config(tmp_path: Path, receiver: Any, port: int, layer: str, timezone: str = "UTC") -> Path:
    hook = f"json://127.0.0.1:{receiver.port}"
    return write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp_path}/state.db
        users:
          - {{name: alice, timezone: Europe/Berlin, contacts: ["{hook}/alice"]}}
          - {{name: bob, timezone: Asia/Kolkata, contacts: ["{hook}/bob", {{url: "{hook}/bob-sms", urgency: high}}]}}
          - {{name: carol, contacts: ["{hook}/carol"]}}
        schedules:
          - name: primary
            timezone: {timezone}
            layers:
              - {layer}
        """,
    )


def notices(receiver: Any, path: str) -> list[dict[str, Any]]:
    return [m for m in receiver.received if m["_path"] == path]


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def handoff_rows(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM outbox WHERE kind = 'handoff' ORDER BY id")]
    finally:
        con.close()


def current(d: Any) -> str:
    status, body = d.api("GET", "/api/v1/oncall?schedule=primary")
    assert status == 200, body
    return body["oncall"][0]["user"]


# A daily layer of alice and carol whose last handoff was a minute or two ago: a fresh start must not announce it.
def recent_daily_layer() -> str:
    past = datetime.now(UTC) - timedelta(minutes=2)
    start = (past - timedelta(days=1)).date()
    return f'{{rotation: daily, handoff: "{past:%H:%M}", start: {start}, users: [alice, carol]}}'


def test_override_handoffs_notify_the_incoming_person_once(tmp_path, receiver, spawn):
    port = free_port()
    d = spawn(config(tmp_path, receiver, port, recent_daily_layer()), port)
    d.token = d.create_token("ack")
    before = current(d)
    time.sleep(1.5)
    assert receiver.received == [], "a fresh start announced a handoff of the past"

    start = datetime.now(UTC) + timedelta(seconds=3)
    end = start + timedelta(seconds=4)
    status, ov = d.api(
        "POST", "/api/v1/schedules/primary/overrides", {"who": "bob", "from": iso(start), "to": iso(end)}
    )
    assert status == 201, ov

    receiver.wait_for(lambda m: notices(receiver, "/bob"), timeout=15)
    [incoming] = notices(receiver, "/bob")
    assert incoming["title"] == TITLE
    assert f"Handed over by {before}." in incoming["message"]
    assert " IST" in incoming["message"]  # in bob's own time zone
    assert start.timestamp() <= incoming["_at"] < start.timestamp() + 3, (incoming["_at"], start)

    receiver.wait_for(lambda m: notices(receiver, f"/{before}"), timeout=15)
    [back] = notices(receiver, f"/{before}")
    assert back["title"] == TITLE and "Handed over by bob." in back["message"]
    assert end.timestamp() <= back["_at"] < end.timestamp() + 3

    time.sleep(1.5)
    assert len(notices(receiver, "/bob")) == 1
    assert notices(receiver, "/bob-sms") == []  # a contact only for high urgency gets no notice
    assert len(receiver.received) == 2
    rows = handoff_rows(tmp_path / "state.db")
    assert [(r["target"], r["incident_id"], r["state"]) for r in rows] == [
        ("user:bob", None, "sent"),
        (f"user:{before}", None, "sent"),
    ]


def test_a_restart_neither_repeats_nor_skips_a_notice(tmp_path, receiver, spawn):
    port = free_port()
    cfg = config(tmp_path, receiver, port, recent_daily_layer())
    d = spawn(cfg, port)
    d.token = d.create_token("ack")
    before = current(d)
    start = datetime.now(UTC) + timedelta(seconds=2)
    end = start + timedelta(seconds=6)
    status, ov = d.api(
        "POST", "/api/v1/schedules/primary/overrides", {"who": "bob", "from": iso(start), "to": iso(end)}
    )
    assert status == 201, ov
    receiver.wait_for(lambda m: notices(receiver, "/bob"), timeout=15)
    # A send reaches the receiver a moment before it is recorded; a kill in between is a legitimate
    # at-least-once repeat, so kill only once the notice is recorded as sent.
    db = tmp_path / "state.db"
    wait_until(lambda: [r["state"] for r in handoff_rows(db)] == ["sent"], 10, "bob's notice recorded as sent")
    d.kill9()  # down through the end of the override: the handoff back happens while nobody runs
    wait_until(lambda: datetime.now(UTC) > end + timedelta(seconds=1), 15, "the override's end")
    assert notices(receiver, f"/{before}") == []

    d2 = spawn(cfg, port)
    receiver.wait_for(lambda m: notices(receiver, f"/{before}"), timeout=15)
    time.sleep(2)
    assert len(notices(receiver, "/bob")) == 1, "the notice sent before the restart was repeated"
    [back] = notices(receiver, f"/{before}")
    assert "Handed over by bob." in back["message"]
    assert len(receiver.received) == 2
    assert d2.stop() == 0


@pytest.fixture(scope="module", autouse=True)
def rotation(tmp_path_factory):
    """A daemon whose configured rotation hands off at the next whole minute at least 12 s away, started before
    this module's other tests so that the wait for the handoff runs alongside them, not after them: a daily
    layer in Asia/Kolkata (UTC+05:30). Yields (daemon, receiver, the handoff time, what it said at start)."""
    tz = ZoneInfo("Asia/Kolkata")
    now = datetime.now(tz)
    at = (now + timedelta(seconds=12)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    # alice took over yesterday at this time, so today's handoff goes to carol.
    start = at.date() - timedelta(days=1)
    layer = f'{{rotation: daily, handoff: "{at:%H:%M}", start: {start}, users: [alice, carol]}}'
    tmp_path = tmp_path_factory.mktemp("rotation")
    rcv = CountingReceiver().start()
    port = free_port()
    d = DaemonProcess(config(tmp_path, rcv, port, layer, timezone="Asia/Kolkata"), port)
    try:
        d.start()
        d.token = d.create_token("read")
        status, body = d.api("GET", "/api/v1/oncall?schedule=primary")
        assert datetime.now(tz) < at, "the daemon started too slowly to see the handoff coming"
        yield d, rcv, at, (status, body)
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.kill9()
        rcv.stop()


def test_a_configured_rotation_announces_its_handoff_at_local_wall_clock_time(rotation):
    """The module's ``rotation`` daemon: before the handoff alice is on call until ``at``; at ``at`` carol hears
    it, in time, once."""
    d, receiver, at, (status, body) = rotation
    assert status == 200 and body["oncall"][0]["user"] == "alice", body
    assert body["oncall"][0]["until"] == iso(at)

    timeout = (at - datetime.now(UTC)).total_seconds() + 10
    receiver.wait_for(lambda m: notices(receiver, "/carol"), timeout=max(timeout, 10))
    [notice] = notices(receiver, "/carol")
    assert notice["title"] == TITLE and "Handed over by alice." in notice["message"]
    assert at.timestamp() <= notice["_at"] < at.timestamp() + 3, (notice["_at"], at)
    assert iso(at + timedelta(days=1)) in notice["message"]  # until this time tomorrow
    assert current(d) == "carol"
    assert notices(receiver, "/alice") == []
