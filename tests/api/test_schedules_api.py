"""Schedules through the HTTP API of the real in-process daemon (its clock fixed at Wed 2026-03-04 12:00 UTC):
who is on call, shifts, overrides with their audit trail, iCalendar feeds, scopes and JSON errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any
from urllib.parse import quote

import icalendar
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsincident import config as config_mod
from fsincident.core import FakeClock
from fsincident.escalation.schedules import parse_instant
from tests.api.conftest import Api, serve
from tests.helpers import Exposition, Receiver, free_port, write_config

module_loop = pytest.mark.asyncio(loop_scope="module")
"""Every async test here runs in the loop of the module's daemon (the property tests at the end are sync)."""

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday; Berlin is on CET (UTC+1) until 29 March

# primary: weekly from Mon 2026-01-05 09:00 Berlin: alice, bob, carol, alice, ... so the week of Mon
# 2026-03-02 (week 8) is carol's, from 08:00 UTC that Monday to 08:00 UTC the next.
# secondary: daily at 08:00 UTC from 2026-01-05: carol on even days since then, dave on odd ones;
# 2026-03-04 is day 58 (carol).
CONFIG = """
listen: 127.0.0.1:{port}
database: sqlite:///{db}
users:
  - {{name: alice, timezone: Europe/Berlin, contacts: ["{hook}/alice"]}}
  - {{name: bob, timezone: America/New_York, contacts: ["{hook}/bob"]}}
  - {{name: carol}}
  - {{name: dave}}
  - {{name: erin}}
schedules:
  - name: primary
    timezone: Europe/Berlin
    layers:
      - {{rotation: weekly, handoff: "Mon 09:00", start: 2026-01-05, users: [alice, bob, carol]}}
  - name: secondary
    timezone: UTC
    layers:
      - {{rotation: daily, handoff: "08:00", start: 2026-01-05, users: [carol, dave]}}
"""


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def t(day: int, hour: int = 0, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def assert_error(status: int, body: Any, headers: Any, expected: int) -> None:
    assert status == expected, (status, body)
    assert headers["Content-Type"].startswith("application/json")
    assert isinstance(body, dict) and set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """The real Daemon with two schedules, a clock fixed at NOW, and one token per scope."""
    directory = tmp_path_factory.mktemp("schedules")
    exposition, receiver = Exposition().start(), Receiver().start()
    port = free_port()
    cfg = write_config(
        directory / "cfg",
        CONFIG.format(port=port, db=directory / "state.db", hook=f"json://127.0.0.1:{receiver.port}"),
    )
    try:
        async with serve(cfg, port, exposition, receiver, clock=FakeClock(NOW)) as a:
            yield a
    finally:
        exposition.stop()
        receiver.stop()


async def oncall(api: Api, schedule: str, at: datetime) -> list[dict[str, Any]]:
    status, body, _ = await api.call("GET", f"/api/v1/oncall?schedule={schedule}&at={quote(iso(at))}", scope="read")
    assert status == 200, body
    return body["oncall"]


async def create(api: Api, schedule: str = "primary", scope: str = "ack", **fields: Any) -> tuple[int, Any]:
    body = {k.rstrip("_"): iso(v) if isinstance(v, datetime) else v for k, v in fields.items()}
    status, out, _ = await api.call("POST", f"/api/v1/schedules/{schedule}/overrides", scope=scope, json=body)
    return status, out


async def delete(api: Api, oid: int, schedule: str = "primary", **body: Any) -> tuple[int, Any]:
    status, out, _ = await api.call("DELETE", f"/api/v1/schedules/{schedule}/overrides/{oid}", scope="ack", json=body)
    return status, out


# ---------------------------------------------------------------------- who is on call


@module_loop
async def test_oncall_answers_in_the_exact_shape(api):
    status, body, headers = await api.call(
        "GET", "/api/v1/oncall?schedule=primary&at=2026-03-04T12:00:00Z", scope="read"
    )
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert body == {
        "schedule": "primary",
        "at": "2026-03-04T12:00:00Z",
        "oncall": [{"user": "carol", "layer": 1, "from": "2026-03-02T08:00:00Z", "until": "2026-03-09T08:00:00Z"}],
    }


@module_loop
async def test_oncall_without_schedule_lists_every_schedule_at_now(api):
    status, body, _ = await api.call("GET", "/api/v1/oncall", scope="read")
    assert status == 200
    assert body == {
        "at": "2026-03-04T12:00:00Z",
        "schedules": [
            {
                "schedule": "primary",
                "at": "2026-03-04T12:00:00Z",
                "oncall": [
                    {"user": "carol", "layer": 1, "from": "2026-03-02T08:00:00Z", "until": "2026-03-09T08:00:00Z"}
                ],
            },
            {
                "schedule": "secondary",
                "at": "2026-03-04T12:00:00Z",
                "oncall": [
                    {"user": "carol", "layer": 1, "from": "2026-03-04T08:00:00Z", "until": "2026-03-05T08:00:00Z"}
                ],
            },
        ],
    }


@pytest.mark.parametrize(
    "at",
    [
        "2026-03-09T09:00:00%2B01:00",  # an encoded '+'
        "2026-03-09T09:00:00+01:00",  # a raw '+' arrives as a space
        "2026-03-09T08:00:00Z",
        "2026-03-09T08:00:00.000+00:00",
        "now%2B5d",  # relative to the daemon's clock: 2026-03-09T12:00Z
    ],
)
@module_loop
async def test_at_takes_offsets_and_relative_times(api, at):
    status, body, _ = await api.call("GET", f"/api/v1/oncall?schedule=primary&at={at}", scope="read")
    assert status == 200, body
    assert [e["user"] for e in body["oncall"]] == ["alice"]
    assert body["oncall"][0]["from"] == "2026-03-09T08:00:00Z"


@module_loop
async def test_handoffs_keep_local_time_across_dst(api):
    # Berlin goes to CEST on 29 March: the Monday 09:00 handoff moves from 08:00 to 07:00 UTC.
    [entry] = await oncall(api, "primary", t(31))
    assert entry["from"] == "2026-03-30T07:00:00Z"
    assert entry["until"] == "2026-04-06T07:00:00Z"


@pytest.mark.parametrize(
    "at",
    [
        "yesterday",
        "2026-03-04T12:00:00",
        "2026-13-01T00:00Z",
        "now+5 parsecs",
        "now+",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+14:00",
        "now+2900000d",
    ],
)
@module_loop
async def test_bad_at_is_a_400(api, at):
    status, body, headers = await api.call("GET", f"/api/v1/oncall?schedule=primary&at={quote(at)}", scope="read")
    assert_error(status, body, headers, 400)
    assert "at" in body["error"]


@module_loop
async def test_an_empty_at_means_now(api):
    status, body, _ = await api.call("GET", "/api/v1/oncall?schedule=primary&at=", scope="read")
    assert status == 200 and body["at"] == "2026-03-04T12:00:00Z"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/oncall?schedule=nope",
        "/api/v1/schedules/nope",
        "/api/v1/schedules/nope/shifts",
        "/api/v1/schedules/nope/overrides",
        "/api/v1/schedules/nope.ics",
    ],
)
@module_loop
async def test_unknown_schedule_is_a_json_404(api, path):
    status, body, headers = await api.call("GET", path, scope="read")
    assert_error(status, body, headers, 404)
    assert "nope" in body["error"]


@module_loop
async def test_unknown_schedule_404_for_writes_too(api):
    status, body = await create(api, "nope", who="dave", from_=t(5), to=t(6))
    assert status == 404 and "nope" in body["error"], body
    status, body = await delete(api, 1, "nope")
    assert status == 404 and "nope" in body["error"], body


# ---------------------------------------------------------------------- schedules and shifts


@module_loop
async def test_schedules_list_their_layers(api):
    status, body, _ = await api.call("GET", "/api/v1/schedules", scope="read")
    assert status == 200
    assert [s["name"] for s in body["schedules"]] == ["primary", "secondary"]
    primary = body["schedules"][0]
    assert primary["timezone"] == "Europe/Berlin"
    [layer] = primary["layers"]
    assert layer["layer"] == 1 and layer["rotation"] == "weekly" and layer["handoff"] == "Mon 09:00"
    assert layer["users"] == ["alice", "bob", "carol"] and layer["start"] == "2026-01-05"
    status, one, _ = await api.call("GET", "/api/v1/schedules/secondary", scope="read")
    assert status == 200 and one == body["schedules"][1]
    assert one["layers"][0]["handoff"] == "08:00"


@module_loop
async def test_shifts_tile_the_range(api):
    path = "/api/v1/schedules/primary/shifts?from=2026-03-01T00:00:00Z&to=2026-03-20T00:00:00Z"
    status, body, _ = await api.call("GET", path, scope="read")
    assert status == 200, body
    assert body == {
        "schedule": "primary",
        "from": "2026-03-01T00:00:00Z",
        "to": "2026-03-20T00:00:00Z",
        "shifts": [
            {"user": "bob", "layer": 1, "from": "2026-03-01T00:00:00Z", "until": "2026-03-02T08:00:00Z"},
            {"user": "carol", "layer": 1, "from": "2026-03-02T08:00:00Z", "until": "2026-03-09T08:00:00Z"},
            {"user": "alice", "layer": 1, "from": "2026-03-09T08:00:00Z", "until": "2026-03-16T08:00:00Z"},
            {"user": "bob", "layer": 1, "from": "2026-03-16T08:00:00Z", "until": "2026-03-20T00:00:00Z"},
        ],
    }


@module_loop
async def test_shifts_default_to_the_next_14_days(api):
    status, body, _ = await api.call("GET", "/api/v1/schedules/secondary/shifts", scope="read")
    assert status == 200
    assert (body["from"], body["to"]) == ("2026-03-04T12:00:00Z", "2026-03-18T12:00:00Z")
    shifts = body["shifts"]
    assert len(shifts) == 15  # the rest of today's shift, 13 whole days, and half of the last
    assert shifts[0]["from"] == body["from"] and shifts[-1]["until"] == body["to"]
    for a, b in pairwise(shifts):
        assert a["until"] == b["from"] and a["user"] != b["user"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2026-03-05T00:00:00Z&to=2026-03-05T00:00:00Z", "before"),
        ("from=2026-03-06T00:00:00Z&to=2026-03-05T00:00:00Z", "before"),
        ("from=2026-01-01T00:00:00Z&to=2027-03-01T00:00:00Z", "400 days"),
        ("from=soon", "from"),
        ("from=9999-01-01T00:00:00Z", "range"),
        ("from=1969-12-31T00:00:00Z&to=1970-01-02T00:00:00Z", "range"),
    ],
)
@module_loop
async def test_bad_shift_ranges_are_400(api, query, message):
    status, body, headers = await api.call("GET", f"/api/v1/schedules/primary/shifts?{query}", scope="read")
    assert_error(status, body, headers, 400)
    assert message in body["error"]


# ---------------------------------------------------------------------- overrides


@module_loop
async def test_an_override_wins_only_inside_its_range(api):
    status, ov = await create(api, who="dave", from_=t(5), to=t(6), note="swap with carol", by="alice")
    assert status == 201, ov
    oid = ov["id"]
    assert ov == {
        "id": oid,
        "schedule": "primary",
        "who": "dave",
        "replaces": None,
        "from": "2026-03-05T00:00:00Z",
        "to": "2026-03-06T00:00:00Z",
        "note": "swap with carol",
        "created_by": "alice",
        "created_at": "2026-03-04T12:00:00Z",
    }
    try:
        assert await oncall(api, "primary", t(5, 12)) == [
            {
                "user": "dave",
                "layer": 2,
                "from": "2026-03-05T00:00:00Z",
                "until": "2026-03-06T00:00:00Z",
                "override": oid,
            }
        ]
        # Just before it, carol's shift ends where the override starts; at its end (exclusive) she is back.
        assert await oncall(api, "primary", t(4, 23, 59)) == [
            {"user": "carol", "layer": 1, "from": "2026-03-02T08:00:00Z", "until": "2026-03-05T00:00:00Z"}
        ]
        assert await oncall(api, "primary", t(6)) == [
            {"user": "carol", "layer": 1, "from": "2026-03-06T00:00:00Z", "until": "2026-03-09T08:00:00Z"}
        ]
        # Other schedules are not affected.
        assert [e["user"] for e in await oncall(api, "secondary", t(5, 12))] == ["dave"]
        status, body, _ = await api.call(
            "GET", "/api/v1/schedules/primary/shifts?from=2026-03-04T00:00:00Z&to=2026-03-07T00:00:00Z", scope="read"
        )
        assert [(s["user"], s.get("override")) for s in body["shifts"]] == [
            ("carol", None),
            ("dave", oid),
            ("carol", None),
        ]
    finally:
        status, _ = await delete(api, oid)
        assert status == 200
    assert [e["user"] for e in await oncall(api, "primary", t(5, 12))] == ["carol"]


@module_loop
async def test_an_override_with_replaces_applies_only_while_that_user_is_on(api):
    # erin replaces alice from Thu 5 March to Thu 12 March: carol's days stay hers, alice's week is erin's.
    status, ov = await create(api, who="erin", replaces="alice", from_=t(5), to=t(12))
    assert status == 201, ov
    try:
        assert [e["user"] for e in await oncall(api, "primary", t(7))] == ["carol"]
        [entry] = await oncall(api, "primary", t(10))
        assert (entry["user"], entry["override"]) == ("erin", ov["id"])
        assert (entry["from"], entry["until"]) == ("2026-03-09T08:00:00Z", "2026-03-12T00:00:00Z")
        assert [e["user"] for e in await oncall(api, "primary", t(12, 1))] == ["alice"]
    finally:
        assert (await delete(api, ov["id"]))[0] == 200


@module_loop
async def test_override_create_and_delete_are_audited(api):
    status, ov = await create(api, who="bob", from_=t(20), to=t(21))
    assert status == 201
    assert ov["created_by"] == "test-ack"  # no "by": the token's name
    status, deleted = await delete(api, ov["id"], by="carol")
    assert status == 200 and deleted == ov
    status, body, _ = await api.call("GET", "/api/v1/audit?limit=2", scope="admin")
    assert status == 200
    newest, before = body["audit"]
    assert newest["id"] > before["id"]
    assert {k: newest[k] for k in ("actor", "action", "object", "data")} == {
        "actor": "carol",
        "action": "override.delete",
        "object": "schedule:primary",
        "data": ov,
    }
    assert {k: before[k] for k in ("actor", "action", "object", "data")} == {
        "actor": "test-ack",
        "action": "override.create",
        "object": "schedule:primary",
        "data": ov,
    }
    assert newest["at"] == "2026-03-04T12:00:00Z"
    # Deleting again, an unknown id, a non-integer or another schedule's override: 404.
    for path in (
        f"primary/overrides/{ov['id']}",
        "primary/overrides/999999",
        "primary/overrides/x",
        "primary/overrides/99999999999",
    ):
        status, body, headers = await api.call("DELETE", f"/api/v1/schedules/{path}", scope="ack")
        assert_error(status, body, headers, 404)
    status, other = await create(api, "secondary", who="dave", from_=t(20), to=t(21))
    assert status == 201
    status, body = await delete(api, other["id"], "primary")
    assert status == 404
    assert (await delete(api, other["id"], "secondary"))[0] == 200
    status, body, _ = await api.call("GET", "/api/v1/audit?limit=1&object=schedule:secondary", scope="admin")
    assert body["audit"][0]["action"] == "override.delete" and body["audit"][0]["data"]["id"] == other["id"]


@module_loop
async def test_list_overrides_by_range(api):
    ids = []
    for day in (6, 8, 10):
        status, ov = await create(api, who="dave", from_=t(day), to=t(day + 1))
        assert status == 201
        ids.append(ov["id"])
    try:
        status, body, _ = await api.call("GET", "/api/v1/schedules/primary/overrides", scope="read")
        assert status == 200 and [o["id"] for o in body["overrides"]] == ids
        q = "from=2026-03-07T00:00:00Z&to=2026-03-09T00:00:00Z"
        status, body, _ = await api.call("GET", f"/api/v1/schedules/primary/overrides?{q}", scope="read")
        assert [o["id"] for o in body["overrides"]] == [ids[1]]
        status, body, _ = await api.call("GET", "/api/v1/schedules/secondary/overrides", scope="read")
        assert body == {"schedule": "secondary", "overrides": []}
    finally:
        for oid in ids:
            assert (await delete(api, oid))[0] == 200


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"who": "mallory", "from": "2026-03-05T00:00:00Z", "to": "2026-03-06T00:00:00Z"}, "mallory"),
        (
            {"who": "dave", "replaces": "mallory", "from": "2026-03-05T00:00:00Z", "to": "2026-03-06T00:00:00Z"},
            "mallory",
        ),
        ({"who": "dave", "replaces": "dave", "from": "2026-03-05T00:00:00Z", "to": "2026-03-06T00:00:00Z"}, "other"),
        ({"who": "dave", "from": "2026-03-06T00:00:00Z", "to": "2026-03-05T00:00:00Z"}, "before"),
        ({"who": "dave", "from": "2026-03-06T00:00:00Z", "to": "2026-03-06T00:00:00Z"}, "before"),
        ({"who": "dave", "from": "2026-03-05T00:00:00Z", "to": "2027-03-07T00:00:00Z"}, "year"),
        ({"who": "dave", "from": "2026-03-01T00:00:00Z", "to": "2026-03-04T12:00:00Z"}, "past"),
        ({"who": "dave", "from": "2026-03-05T00:00:00", "to": "2026-03-06T00:00:00Z"}, "offset"),
        ({"who": "dave", "from": "next week", "to": "2026-03-06T00:00:00Z"}, "from"),
        ({"who": "dave", "from": "8999-06-01T00:00:00Z", "to": "9999-01-01T00:00:00Z"}, "range"),
        ({"who": "dave", "to": "2026-03-06T00:00:00Z"}, "from"),
        ({"from": "2026-03-05T00:00:00Z", "to": "2026-03-06T00:00:00Z"}, "who"),
        ({"who": "dave", "from": "2026-03-05T00:00:00Z", "to": "2026-03-06T00:00:00Z", "until": "x"}, "until"),
        ({"who": 7, "from": "2026-03-05T00:00:00Z", "to": "2026-03-06T00:00:00Z"}, "who"),
        ({"who": "dave", "from": "2026-03-05T00:00:00Z", "to": "2026-03-06T00:00:00Z", "note": "x" * 2001}, "note"),
        ({"who": "dave", "from": "2026-03-05T00:00:00Z", "to": "2026-03-06T00:00:00Z", "note": "a\x00b"}, "NUL"),
    ],
)
@module_loop
async def test_bad_overrides_are_400_and_store_nothing(api, fields, message):
    before = (await api.call("GET", "/api/v1/audit?limit=1", scope="admin"))[1]["audit"]
    status, body, headers = await api.call("POST", "/api/v1/schedules/primary/overrides", scope="ack", json=fields)
    assert_error(status, body, headers, 400)
    assert message in body["error"], body
    assert (await api.call("GET", "/api/v1/audit?limit=1", scope="admin"))[1]["audit"] == before


@module_loop
async def test_an_override_may_start_in_the_past_and_last_a_year(api):
    status, ov = await create(api, who="erin", from_=t(4, 11), to=t(4, 11) + timedelta(days=366))
    assert status == 201, ov
    try:
        [entry] = await oncall(api, "primary", NOW)
        assert (entry["user"], entry["from"]) == ("erin", "2026-03-04T11:00:00Z")
    finally:
        assert (await delete(api, ov["id"]))[0] == 200


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"who": "dave"', b"\xff\xfe"])
@module_loop
async def test_malformed_override_bodies_are_400(api, raw):
    status, body, headers = await api.call("POST", "/api/v1/schedules/primary/overrides", scope="ack", data=raw)
    assert_error(status, body, headers, 400)


# ---------------------------------------------------------------------- scopes


@pytest.mark.parametrize(
    ("method", "path", "needs"),
    [
        ("GET", "/api/v1/oncall", "read"),
        ("GET", "/api/v1/schedules", "read"),
        ("GET", "/api/v1/schedules/primary", "read"),
        ("GET", "/api/v1/schedules/primary/shifts", "read"),
        ("GET", "/api/v1/schedules/primary/overrides", "read"),
        ("POST", "/api/v1/schedules/primary/overrides", "ack"),
        ("DELETE", "/api/v1/schedules/primary/overrides/1", "ack"),
        ("GET", "/api/v1/audit", "admin"),
    ],
)
@module_loop
async def test_scopes(api, method, path, needs):
    status, body, headers = await api.call(method, path)
    assert_error(status, body, headers, 401)
    order = ["ingest", "read", "ack", "admin"]
    for scope in order:
        status, body, headers = await api.call(method, path, scope=scope, json={} if method != "GET" else None)
        allowed = scope == "admin" or (scope != "ingest" and order.index(scope) >= order.index(needs))
        if allowed:
            assert status not in (401, 403), (scope, status, body)
        else:
            assert_error(status, body, headers, 403)


@module_loop
async def test_token_in_the_query_is_refused_outside_calendar_feeds(api):
    token = api.tokens["admin"]
    for path in ("/api/v1/oncall", "/api/v1/schedules", "/api/v1/audit", "/api/v1/incidents"):
        status, body, headers = await api.call("GET", f"{path}?token={token}")
        assert_error(status, body, headers, 401)


@pytest.mark.parametrize("limit", ["0", "10001", "x", "-1"])
@module_loop
async def test_bad_audit_limit_is_400(api, limit):
    status, body, headers = await api.call("GET", f"/api/v1/audit?limit={limit}", scope="admin")
    assert_error(status, body, headers, 400)


# ---------------------------------------------------------------------- iCalendar


def parse_feed(raw: bytes) -> tuple[icalendar.Calendar, list[icalendar.Event]]:
    cal = icalendar.Calendar.from_ical(raw)
    assert cal.name == "VCALENDAR"
    assert str(cal["VERSION"]) == "2.0" and "fsincident" in str(cal["PRODID"])
    events = list(cal.walk("VEVENT"))
    for ev in events:
        for key in ("DTSTART", "DTEND", "DTSTAMP"):
            value = ev.decoded(key)
            assert isinstance(value, datetime) and value.utcoffset() == timedelta(0), (key, value)
    # No floating times and no local-time zones: every date-time is written in UTC ("...Z").
    for line in raw.decode().splitlines():
        if line.startswith(("DTSTART", "DTEND", "DTSTAMP")):
            assert line.endswith("Z") and "TZID" not in line, line
    return cal, events


@module_loop
async def test_schedule_feed_has_one_event_per_shift(api):
    status, raw, headers = await api.call("GET", "/api/v1/schedules/secondary.ics", scope="read")
    assert status == 200
    assert headers["Content-Type"] == "text/calendar; charset=utf-8"
    _, events = parse_feed(raw.encode())
    # now-30d .. now+90d, widened to whole shifts: 4 Feb 08:00 .. 3 June 08:00 UTC (119 daily shifts).
    assert len(events) == 121
    assert events[0].decoded("DTSTART") == datetime(2026, 2, 2, 8, tzinfo=UTC)
    assert ev_end(events[-1]) == datetime(2026, 6, 3, 8, tzinfo=UTC)
    starts = [ev.decoded("DTSTART") for ev in events]
    for a, b in pairwise(events):
        assert ev_end(a) == b.decoded("DTSTART")
    uids = [str(ev["UID"]) for ev in events]
    assert len(set(uids)) == len(uids)
    today = next(ev for ev in events if ev.decoded("DTSTART") == t(4, 8))
    assert str(today["SUMMARY"]) == "On call: carol (secondary)"
    assert ev_end(today) == t(5, 8)
    # The same shifts as the API's listing.
    q = f"from={quote(iso(starts[0]))}&to={quote(iso(ev_end(events[-1])))}"
    status, body, _ = await api.call("GET", f"/api/v1/schedules/secondary/shifts?{q}", scope="read")
    assert [(s["user"], s["from"], s["until"]) for s in body["shifts"]] == [
        (str(ev["SUMMARY"]).removeprefix("On call: ").split(" ")[0], iso(ev.decoded("DTSTART")), iso(ev_end(ev)))
        for ev in events
    ]
    # Fetched again, the feed keeps its UIDs (calendar apps update events instead of duplicating them).
    status, raw2, _ = await api.call("GET", "/api/v1/schedules/secondary.ics", scope="read")
    assert [str(ev["UID"]) for ev in parse_feed(raw2.encode())[1]] == uids


def ev_end(ev: icalendar.Event) -> datetime:
    return ev.decoded("DTEND")


@module_loop
async def test_user_feed_has_that_users_shifts_across_schedules(api):
    status, ov = await create(api, "primary", who="dave", from_=t(5), to=t(6))
    assert status == 201
    try:
        status, raw, headers = await api.call("GET", "/api/v1/users/dave.ics", scope="read")
        assert status == 200 and headers["Content-Type"] == "text/calendar; charset=utf-8"
        _, events = parse_feed(raw.encode())
        summaries = {str(ev["SUMMARY"]) for ev in events}
        assert summaries == {"On call: dave (secondary)", "On call: dave (primary)"}
        primary = [ev for ev in events if str(ev["SUMMARY"]) == "On call: dave (primary)"]
        assert [(ev.decoded("DTSTART"), ev_end(ev)) for ev in primary] == [(t(5), t(6))]
        assert "override" in str(primary[0]["DESCRIPTION"])
        starts = [ev.decoded("DTSTART") for ev in events]
        assert starts == sorted(starts)
        # alice is only in primary; her feed has no secondary events and no one else's.
        status, raw, _ = await api.call("GET", "/api/v1/users/alice.ics", scope="read")
        _, events = parse_feed(raw.encode())
        assert events and {str(ev["SUMMARY"]) for ev in events} == {"On call: alice (primary)"}
        # erin is in no schedule: a valid, empty calendar.
        status, raw, _ = await api.call("GET", "/api/v1/users/erin.ics", scope="read")
        assert status == 200 and parse_feed(raw.encode())[1] == []
    finally:
        assert (await delete(api, ov["id"]))[0] == 200
    status, body, headers = await api.call("GET", "/api/v1/users/mallory.ics", scope="read")
    assert_error(status, body, headers, 404)


@module_loop
async def test_feeds_take_the_token_in_the_query(api):
    for path in ("/api/v1/schedules/primary.ics", "/api/v1/users/alice.ics"):
        status, raw, _ = await api.call("GET", f"{path}?token={api.tokens['read']}")
        assert status == 200 and parse_feed(raw.encode())[1]
        status, body, headers = await api.call("GET", path)
        assert_error(status, body, headers, 401)
        status, body, headers = await api.call("GET", f"{path}?token=fsi_wrong")
        assert_error(status, body, headers, 401)
        status, body, headers = await api.call("GET", f"{path}?token={api.tokens['ingest']}")
        assert_error(status, body, headers, 403)
        status, body, headers = await api.call("GET", path, headers={"Authorization": "Basic x"})
        assert_error(status, body, headers, 401)


# ---------------------------------------------------------------------- time arguments


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(8999, 12, 30), timezones=st.just(UTC)))
def test_parse_instant_reads_back_iso_even_with_a_url_decoded_plus(dt):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_instant(iso(dt), now) == dt
    for offset in ("+05:30", "-03:00", "+00:00"):
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:])
        local = dt.astimezone(timezone(sign * timedelta(hours=hours, minutes=minutes)))
        text = local.isoformat()
        assert parse_instant(text, now) == dt
        assert parse_instant(text.replace("+", " "), now) == dt


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["s", "m", "h", "d"]), st.sampled_from("+-"))
def test_parse_instant_relative(n, unit, sign):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    seconds = n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    try:
        expected = now + timedelta(seconds=seconds if sign == "+" else -seconds)
    except OverflowError:
        expected = None
    if expected is None or not datetime(1970, 1, 1, tzinfo=UTC) <= expected < datetime(9000, 1, 1, tzinfo=UTC):
        # Out of range: a ValueError (a 400 in the API), never another exception.
        with pytest.raises(ValueError, match="out of range"):
            parse_instant(f"now{sign}{n}{unit}", now)
        return
    assert parse_instant(f"now{sign}{n}{unit}", now) == expected
    assert parse_instant(f"NOW {sign} {n}{unit}", now) == expected


# ---------------------------------------------------------------------- handoff notices, on both backends

NOTICE_CONFIG = """
database: {db}
users:
  - name: alice
    timezone: Europe/Berlin
    contacts: ["json://127.0.0.1:9/a", {{url: "json://127.0.0.1:9/a-sms", urgency: high}}]
  - {{name: bob, contacts: ["json://127.0.0.1:9/b"]}}
schedules:
  - name: primary
    timezone: UTC
    layers:
      - {{rotation: daily, handoff: "08:00", start: 2026-01-05, users: [alice, bob]}}
"""


async def _handoff_rows(store: Any) -> list[tuple[str, int, str]]:
    from sqlmodel import col, select

    from fsincident.store.tables import Outbox

    async with store.session() as s:
        rows = (await s.exec(select(Outbox).where(Outbox.kind == "handoff").order_by(col(Outbox.id)))).all()
    for r in rows:
        assert r.incident_id is None and r.state == "pending" and r.title == "You are now on call for primary"
    return [(r.target, r.dest_index, r.body) for r in rows]


async def test_handoff_notices_are_queued_once_per_handoff(tmp_path, db_url):
    """Drives HandoffNotifier with an injected clock (alice has even days since 5 Jan, 08:00 UTC, bob odd ones)."""
    from fsincident.escalation.schedules import HandoffNotifier, ScheduleService
    from fsincident.notify.outbox import Notifiers
    from fsincident.obs import Metrics
    from fsincident.store import Store

    cfg = config_mod.load(write_config(tmp_path / "cfg", NOTICE_CONFIG.format(db=db_url)))
    clock = FakeClock(t(4, 7, 59))  # bob's shift, a minute before alice's
    store = Store(db_url)
    await store.upgrade()
    try:
        svc = ScheduleService(store, clock, Metrics(), cfg)
        notifiers = Notifiers(cfg)
        kicks: list[int] = []

        def notifier() -> HandoffNotifier:
            return HandoffNotifier(svc, notifiers.destinations, kick_delivery=lambda: kicks.append(1))

        first = notifier()
        assert await first.tick(clock.now()) is False  # the first run only records now
        assert await first.sleep_hint(clock.now()) == 60.0
        assert await _handoff_rows(store) == []

        clock.advance(timedelta(seconds=61))
        assert await first.tick(clock.now()) is True and kicks == [1]
        [(target, index, body)] = await _handoff_rows(store)
        assert (target, index) == ("user:alice", 0)  # not her high-urgency-only contact
        assert "until Thu 2026-03-05 09:00 CET" in body and "Handed over by bob." in body
        assert await first.tick(clock.now()) is False  # no repeat
        assert await notifier().tick(clock.now()) is False  # nor after a "restart"

        clock.advance(t(5, 8) - clock.now())  # a handoff exactly at now counts
        assert await notifier().tick(clock.now()) is True
        rows = await _handoff_rows(store)
        assert [r[:2] for r in rows] == [("user:alice", 0), ("user:bob", 0)]
        assert "Handed over by alice." in rows[-1][2]

        # Down for three days: only the handoff whose shift is still running is announced.
        clock.advance(timedelta(days=3, hours=1))
        assert await notifier().tick(clock.now()) is True
        rows = await _handoff_rows(store)
        assert [r[:2] for r in rows][2:] == [("user:alice", 0)]
        assert "from Sun 2026-03-08 09:00 CET" in rows[-1][2]

        # Two instances at the same moment: one set of notices.
        clock.advance(t(9, 8, 0) + timedelta(seconds=1) - clock.now())
        a, b = notifier(), notifier()
        done = await asyncio.gather(a.tick(clock.now()), b.tick(clock.now()))
        assert sorted(done) == [False, True]
        assert [r[:2] for r in await _handoff_rows(store)][3:] == [("user:bob", 0)]

        # An override whose start is already past changes who is on call with no handoff ahead: still announced,
        # and deleting it mid-shift announces the person who is back on call.
        clock.advance(timedelta(hours=2))
        ov = await svc.create_override(
            "primary", who="alice", start=clock.now() - timedelta(hours=1), end=clock.now() + timedelta(hours=3), by="x"
        )
        assert await notifier().tick(clock.now()) is True
        rows = await _handoff_rows(store)
        assert [r[:2] for r in rows][4:] == [("user:alice", 0)] and "Handed over by bob." in rows[-1][2]
        assert await notifier().tick(clock.now()) is False
        clock.advance(timedelta(minutes=30))
        await svc.delete_override("primary", ov["id"], by="x")
        assert await notifier().tick(clock.now()) is True
        rows = await _handoff_rows(store)
        assert [r[:2] for r in rows][5:] == [("user:bob", 0)] and "Handed over by alice." in rows[-1][2]
    finally:
        await store.close()


def test_a_notice_says_when_the_person_really_goes_off_call():
    """alice's daily shift is cut into layer pieces by her own lunchtime layer: "until" is when someone else comes."""
    from fsincident.config import Layer, Restriction, Schedule
    from fsincident.escalation.oncall import Override
    from fsincident.escalation.schedules import on_call_until

    d = datetime(2026, 1, 5).date()
    lunch = Restriction(frozenset(range(7)), datetime(2026, 1, 1, 12).time(), datetime(2026, 1, 1, 14).time())
    sch = Schedule(
        "s",
        "UTC",
        (
            Layer(1, "daily", None, None, datetime(2026, 1, 1, 8).time(), d, ("alice", "bob")),
            Layer(2, "daily", None, None, datetime(2026, 1, 1, 8).time(), d, ("alice",), (lunch,)),
        ),
    )
    assert on_call_until(sch, [], t(4, 8), "alice") == t(5, 8)  # day 58: alice's, lunch layer included
    assert on_call_until(sch, [], t(5, 12), "alice") == t(5, 14)  # bob's day: only her lunchtime layer
    ov = Override(1, "alice", t(5, 14), t(5, 16))
    assert on_call_until(sch, [ov], t(5, 12), "alice") == t(5, 16)
    forever = Override(2, "carol", t(5), t(5) + timedelta(days=400))
    assert on_call_until(sch, [forever], t(5), "carol") is None


# ---------------------------------------------------------------------- fuzz: bad input is never a 5xx

times = st.one_of(
    st.text(max_size=30),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])).map(
        lambda d: d.isoformat()
    ),
    st.sampled_from(["now", "now+1h", "now-9999999d", "now+1e3h", "NOW+ 2d", "0001-01-01T00:00:00Z", "+"]),
)
names = st.one_of(st.sampled_from(["primary", "secondary", "alice", "nope", "", ".", "%2F"]), st.text(max_size=12))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(
        [
            "/api/v1/oncall?schedule={name}&at={a}",
            "/api/v1/oncall?at={a}",
            "/api/v1/schedules/{name}/shifts?from={a}&to={b}",
            "/api/v1/schedules/{name}/overrides?from={a}&to={b}",
            "/api/v1/schedules/{name}.ics",
            "/api/v1/users/{name}.ics?token={a}",
            "/api/v1/audit?limit={a}&object={b}",
        ]
    ),
    name=names,
    a=times,
    b=times,
)
@module_loop
async def test_schedule_queries_never_5xx(api, path, name, a, b):
    url = path.format(name=quote(name, safe=""), a=quote(a, safe=""), b=quote(b, safe=""))
    status, body, headers = await api.call("GET", url, scope="admin")
    assert status < 500, (url, status, body)
    if status >= 400:
        assert_error(status, body, headers, status)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.dictionaries(
        st.sampled_from(["who", "from", "to", "replaces", "note", "by", "x"]),
        st.one_of(times, st.sampled_from(["dave", "alice", "nope", ""]), st.integers(), st.none(), st.lists(st.none())),
        max_size=6,
    ),
    target=st.one_of(st.none(), st.text(max_size=12), st.integers(min_value=-(2**40), max_value=2**40).map(str)),
)
@module_loop
async def test_override_writes_never_5xx(api, body, target):
    """POST random bodies (target None) or DELETE random ids; nothing created survives the example."""
    if target is None:
        status, out, headers = await api.call("POST", "/api/v1/schedules/primary/overrides", scope="ack", json=body)
        if status == 201:
            assert (await delete(api, out["id"]))[0] == 200
            return
    else:
        path = f"/api/v1/schedules/primary/overrides/{quote(target, safe='')}"
        status, out, headers = await api.call("DELETE", path, scope="ack", json=body)
    assert 400 <= status < 500, (status, out)
    assert_error(status, out, headers, status)
