"""Silences over the API (our v1 and Alertmanager's v2), the Muter (silences + inhibition) and expiry notices,
against the real in-process daemon."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from fsincident.config.model import SilencesOptions
from fsincident.store.tables import Alert, AuditLog, Incident, Outbox
from tests.api.conftest import Api, serve
from tests.helpers import Exposition, Receiver, free_port, write_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

AM_KEYS = ["id", "status", "updatedAt", "comment", "createdBy", "endsAt", "matchers", "startsAt"]
AM_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """One daemon with an inhibition rule and expiry notices, for the whole module."""
    tmp = tmp_path_factory.mktemp("silences")
    receiver, exposition = Receiver().start(), Exposition().start()
    port = free_port()
    cfg = write_config(
        tmp / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp}/state.db
        channels:
          - {{name: ops, urls: ["{receiver.apprise_url("ops")}"]}}
        routes:
          - {{notify: ["channel:ops"]}}
        inhibit_rules:
          - source_matchers: ['severity="critical"']
            target_matchers: ['severity="warning"']
            equal: [alertname]
        """,
    )
    try:
        async with serve(cfg, port, exposition, receiver) as a:
            yield a
    finally:
        receiver.stop()
        exposition.stop()


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def postable(matchers: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    body = {
        "matchers": matchers
        if matchers is not None
        else [{"name": "alertname", "value": f"A{uuid.uuid4().hex[:8]}", "isRegex": False}],
        "startsAt": iso(now),
        "endsAt": iso(now + timedelta(hours=1)),
        "createdBy": "tester",
        "comment": "maintenance",
    }
    body.update(kw)
    return body


async def v1_add(api: Api, *matchers: Any, **kw: Any) -> dict[str, Any]:
    body = {"matchers": list(matchers), "duration": "1h", "comment": "test", **kw}
    status, res, _ = await api.call("POST", "/api/v1/silences", scope="ack", json=body)
    assert status == 201, res
    return res


# ---------------------------------------------------------------------- v1


async def test_v1_create_get_list_expire_with_audit(api):
    created = await v1_add(api, 'alertname="DiskFull"', 'instance=~"db[0-9]+"', created_by="alice", comment="swap disk")
    assert created["state"] == "active"
    assert created["matchers"] == ['alertname="DiskFull"', 'instance=~"db[0-9]+"']
    assert created["created_by"] == "alice" and created["comment"] == "swap disk"
    starts = datetime.fromisoformat(created["starts_at"].replace("Z", "+00:00"))
    ends = datetime.fromisoformat(created["ends_at"].replace("Z", "+00:00"))
    assert ends - starts == timedelta(hours=1)
    sid = created["id"]
    assert uuid.UUID(sid)

    status, got, _ = await api.call("GET", f"/api/v1/silences/{sid}", scope="read")
    assert status == 200 and got == created
    status, listed, _ = await api.call("GET", "/api/v1/silences?state=active", scope="read")
    assert status == 200 and sid in [s["id"] for s in listed["silences"]]

    status, expired, _ = await api.call("DELETE", f"/api/v1/silences/{sid}", scope="ack", json={"by": "bob"})
    assert status == 200 and expired["state"] == "expired" and expired["id"] == sid
    status, listed, _ = await api.call("GET", "/api/v1/silences?state=expired", scope="read")
    assert sid in [s["id"] for s in listed["silences"]]
    status, listed, _ = await api.call("GET", "/api/v1/silences?state=active", scope="read")
    assert sid not in [s["id"] for s in listed["silences"]]
    # Expiring again changes nothing.
    status, again, _ = await api.call("DELETE", f"/api/v1/silences/{sid}", scope="ack")
    assert status == 200 and again["ends_at"] == expired["ends_at"]

    status, audit, _ = await api.call("GET", f"/api/v1/audit?object=silence:{sid}", scope="admin")
    assert status == 200
    assert [(a["action"], a["actor"]) for a in reversed(audit["audit"])] == [
        ("silence_create", "alice"),
        ("silence_expire", "bob"),
    ]


async def test_v1_times_and_defaults(api):
    start = datetime.now(UTC) + timedelta(hours=2)
    res = await v1_add(api, "job=api", starts_at=iso(start), ends_at=iso(start + timedelta(minutes=30)), duration=None)
    assert res["state"] == "pending" and res["created_by"] == "test-ack"  # the token's name
    res = await v1_add(api, "job=api2", duration=None, ends_at="now+2h")
    assert res["state"] == "active"
    res = await v1_add(api, {"name": "job", "value": "api.*", "isRegex": True, "isEqual": False}, "env=prod")
    assert res["matchers"] == ['job!~"api.*"', 'env="prod"']
    _, listed, _ = await api.call("GET", "/api/v1/silences?state=pending", scope="read")
    assert {s["state"] for s in listed["silences"]} == {"pending"}
    _, listed, _ = await api.call("GET", "/api/v1/silences", scope="read")
    states = [s["state"] for s in listed["silences"]]
    assert states == sorted(states, key=["active", "pending", "expired"].index)  # Alertmanager's order


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"duration": "1h", "comment": "x"}, "field 'matchers' is required"),
        ({"matchers": [], "duration": "1h", "comment": "x"}, "field 'matchers' is required"),
        ({"matchers": ["1a=b"], "duration": "1h", "comment": "x"}, "matchers[0]"),
        ({"matchers": ['a=~"("'], "duration": "1h", "comment": "x"}, "matchers[0]: invalid regular expression"),
        ({"matchers": [5], "duration": "1h", "comment": "x"}, "matchers[0]"),
        ({"matchers": ['a=""'], "duration": "1h", "comment": "x"}, "must not match the empty string"),
        ({"matchers": ["a=b"], "duration": "1h"}, "field 'comment' is required"),
        ({"matchers": ["a=b"], "duration": "1h", "comment": "  "}, "field 'comment' is required"),
        ({"matchers": ["a=b"], "comment": "x"}, "field 'ends_at' or 'duration' is required"),
        ({"matchers": ["a=b"], "comment": "x", "duration": "1h", "ends_at": "now+1h"}, "not both"),
        ({"matchers": ["a=b"], "comment": "x", "duration": "soon"}, "field 'duration'"),
        ({"matchers": ["a=b"], "comment": "x", "duration": "0s"}, "must be positive"),
        ({"matchers": ["a=b"], "comment": "x", "ends_at": "now-1h"}, "end time can't be in the past"),
        ({"matchers": ["a=b"], "comment": "x", "ends_at": "2026-01-01"}, "field 'ends_at'"),
        ({"matchers": ["a=b"], "comment": "x", "starts_at": "now+2h", "ends_at": "now+1h"}, "start time must be"),
        ({"matchers": ["a=b"], "comment": "x", "duration": "1h", "extra": 1}, "unknown field 'extra'"),
        ({"matchers": ["a=b"], "comment": "x" * 10_001, "duration": "1h"}, "comment is longer"),
        ({"matchers": ["a=b"], "comment": "a\u0000b", "duration": "1h"}, "NUL"),
        ({"matchers": ["a=b"], "comment": "x", "duration": "99999999d"}, "duration"),
    ],
)
async def test_v1_refuses_bad_silences(api, body, message):
    status, res, _ = await api.call("POST", "/api/v1/silences", scope="ack", json=body)
    assert status == 400, res
    assert set(res) == {"error", "detail"} and message in res["error"], res


async def test_v1_scopes_and_unknown_ids(api):
    body = {"matchers": ["a=b"], "duration": "1h", "comment": "x"}
    assert (await api.call("POST", "/api/v1/silences", scope="read", json=body))[0] == 403
    assert (await api.call("POST", "/api/v1/silences", json=body))[0] == 401
    assert (await api.call("GET", "/api/v1/silences"))[0] == 401
    assert (await api.call("DELETE", f"/api/v1/silences/{uuid.uuid4()}", scope="read"))[0] == 403
    for sid in (str(uuid.uuid4()), "nope", "1" * 300):
        status, res, _ = await api.call("GET", f"/api/v1/silences/{sid}", scope="read")
        assert status == 404 and set(res) == {"error", "detail"}
        status, res, _ = await api.call("DELETE", f"/api/v1/silences/{sid}", scope="ack")
        assert status == 404 and set(res) == {"error", "detail"}
    status, res, _ = await api.call("GET", "/api/v1/silences?state=bogus", scope="read")
    assert status == 400 and res["detail"] == {"allowed": ["active", "pending", "expired"]}


# ---------------------------------------------------------------------- Alertmanager v2


async def test_v2_post_get_shape_is_alertmanagers(api):
    body = postable(
        [
            {"name": "alertname", "value": "Shape", "isRegex": False},
            {"name": "job", "value": "api.*", "isRegex": True},
            {"name": "env", "value": "dev", "isRegex": False, "isEqual": False},
        ],
        startsAt="2020-01-01T00:00:00Z",  # in the past: starts now, as in Alertmanager
    )
    status, res, _ = await api.call("POST", "/api/v2/silences", scope="ack", json=body)
    assert status == 200 and list(res) == ["silenceID"], res
    sid = res["silenceID"]
    status, sil, _ = await api.call("GET", f"/api/v2/silence/{sid}", scope="read")
    assert status == 200
    assert list(sil) == AM_KEYS
    assert sil["id"] == sid and sil["status"] == {"state": "active"}
    assert sil["comment"] == "maintenance" and sil["createdBy"] == "tester"
    assert sil["matchers"] == [
        {"isEqual": True, "isRegex": False, "name": "alertname", "value": "Shape"},
        {"isEqual": True, "isRegex": True, "name": "job", "value": "api.*"},
        {"isEqual": False, "isRegex": False, "name": "env", "value": "dev"},
    ]
    for key in ("startsAt", "endsAt", "updatedAt"):
        assert AM_TIME.match(sil[key]), sil[key]
    assert sil["startsAt"] > "2026"
    status, listed, _ = await api.call("GET", "/api/v2/silences", scope="read")
    assert status == 200 and isinstance(listed, list)
    assert [s for s in listed if s["id"] == sid] == [sil]
    # v1 shows the same silence in our form.
    status, v1, _ = await api.call("GET", f"/api/v1/silences/{sid}", scope="read")
    assert v1["matchers"] == ['alertname="Shape"', 'job=~"api.*"', 'env!="dev"']


async def test_v2_filter_is_alertmanagers(api):
    tag = uuid.uuid4().hex[:8]
    body = postable(
        [{"name": "alertname", "value": tag, "isRegex": False}, {"name": "job", "value": "a|b", "isRegex": True}]
    )
    sid = (await api.call("POST", "/api/v2/silences", scope="ack", json=body))[1]["silenceID"]

    async def ids(*filters: str) -> Any:
        status, res, _ = await api.call(
            "GET", "/api/v2/silences?" + "&".join(f"filter={f}" for f in filters), scope="read"
        )
        return [s["id"] for s in res] if status == 200 else (status, res)

    from urllib.parse import quote

    assert await ids(quote(f'alertname="{tag}"')) == [sid]
    assert await ids(quote(f"alertname={tag}")) == [sid]
    assert await ids(quote(f'alertname="{tag}"'), quote('job=~"a|b"')) == [sid]
    assert await ids(quote(f'alertname=~"{tag}"')) == []  # the silence has alertname=, not =~
    assert await ids(quote(f'alertname="{tag}"'), quote("job=a")) == []
    assert await ids(quote("1a=x")) == (400, "bad matcher format: 1a=x")


async def test_v2_update_in_place_or_replace(api):
    body = postable()
    sid = (await api.call("POST", "/api/v2/silences", scope="ack", json=body))[1]["silenceID"]
    sil = (await api.call("GET", f"/api/v2/silence/{sid}", scope="read"))[1]

    # Same matchers and start: updated in place (new end and comment), as amtool silence update does.
    later = iso((datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0))
    upd = {**body, "id": sid, "startsAt": sil["startsAt"], "endsAt": later, "comment": "longer"}
    status, res, _ = await api.call("POST", "/api/v2/silences", scope="ack", json=upd)
    assert status == 200 and res == {"silenceID": sid}
    now_sil = (await api.call("GET", f"/api/v2/silence/{sid}", scope="read"))[1]
    assert now_sil["comment"] == "longer" and now_sil["endsAt"] == later.replace("Z", ".000Z")

    # Other matchers: the old silence expires and a new one replaces it.
    repl = {**upd, "matchers": [{"name": "alertname", "value": "Other", "isRegex": False}]}
    status, res, _ = await api.call("POST", "/api/v2/silences", scope="ack", json=repl)
    assert status == 200 and res["silenceID"] != sid
    assert (await api.call("GET", f"/api/v2/silence/{sid}", scope="read"))[1]["status"]["state"] == "expired"
    new = (await api.call("GET", f"/api/v2/silence/{res['silenceID']}", scope="read"))[1]
    assert new["status"]["state"] == "active" and new["matchers"][0]["value"] == "Other"

    # An expired silence is never updated: posting its id creates a new one.
    status, res2, _ = await api.call("POST", "/api/v2/silences", scope="ack", json={**body, "id": sid})
    assert status == 200 and res2["silenceID"] not in (sid, res["silenceID"])

    # A pending silence may move its start, but not into the past.
    start = datetime.now(UTC) + timedelta(hours=5)
    pend = postable(startsAt=iso(start), endsAt=iso(start + timedelta(hours=1)))
    pid = (await api.call("POST", "/api/v2/silences", scope="ack", json=pend))[1]["silenceID"]
    moved = {**pend, "id": pid, "startsAt": iso(start + timedelta(minutes=10))}
    assert (await api.call("POST", "/api/v2/silences", scope="ack", json=moved))[1] == {"silenceID": pid}
    back = {**pend, "id": pid, "startsAt": iso(datetime.now(UTC) - timedelta(minutes=1))}
    res3 = (await api.call("POST", "/api/v2/silences", scope="ack", json=back))[1]
    assert res3["silenceID"] != pid
    assert (await api.call("GET", f"/api/v2/silence/{pid}", scope="read"))[1]["status"]["state"] == "expired"

    status, res, _ = await api.call("POST", "/api/v2/silences", scope="ack", json={**body, "id": str(uuid.uuid4())})
    assert (status, res) == (404, "silence not found")


@pytest.mark.parametrize(
    ("body", "status", "payload"),
    [
        ({"matchers": []}, 422, {"code": 612, "message": "matchers in body should have at least 1 items"}),
        ({"createdBy": None}, 422, {"code": 602, "message": "createdBy in body is required"}),
        ({"comment": None}, 422, {"code": 602, "message": "comment in body is required"}),
        ({"endsAt": None}, 422, {"code": 602, "message": "endsAt in body is required"}),
        (
            {"matchers": [{"name": "a", "value": "x"}]},
            422,
            {"code": 602, "message": "matchers.0.isRegex in body is required"},
        ),
        (
            {"matchers": [{"name": "a", "value": "", "isRegex": False}]},
            400,
            "silence invalid: at least one matcher must not match the empty string",
        ),
        (
            {"matchers": [{"name": "1a", "value": "x", "isRegex": False}]},
            400,
            'silence invalid: invalid label matcher 0: invalid label name "1a"',
        ),
        ({"startsAt": "2099-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z"}, 400, None),
        ({"startsAt": "2020-01-01T00:00:00Z", "endsAt": "2021-01-01T00:00:00Z"}, 400, None),
    ],
)
async def test_v2_errors_are_alertmanagers(api, body, status, payload):
    sent = {k: v for k, v in postable(**body).items() if v is not None}
    got, res, _ = await api.call("POST", "/api/v2/silences", scope="ack", json=sent)
    assert got == status, res
    if payload is not None:
        assert res == payload
    else:
        assert isinstance(res, str) and res.startswith("Failed to create silence: ")


async def test_v2_malformed_bodies_and_ids(api):
    for raw in (b"xx", b"[]", b'{"matchers": "x"}', b'{"startsAt": 5}'):
        status, res, _ = await api.call("POST", "/api/v2/silences", scope="ack", data=raw)
        assert status in (400, 422) and isinstance(res, dict) and set(res) == {"code", "message"}, (raw, res)
    bad = postable(startsAt="yesterday")
    status, res, _ = await api.call("POST", "/api/v2/silences", scope="ack", json=bad)
    assert status == 400 and res["message"].startswith('parsing silence body from "" failed')
    status, res, _ = await api.call("GET", "/api/v2/silence/nope", scope="read")
    assert (status, res) == (422, {"code": 601, "message": 'silenceID in path must be of type uuid: "nope"'})
    missing = str(uuid.uuid4())
    assert (await api.call("GET", f"/api/v2/silence/{missing}", scope="read"))[:2] == (404, "silence not found")
    assert (await api.call("DELETE", f"/api/v2/silence/{missing}", scope="ack"))[:2] == (404, "silence not found")
    assert (await api.call("DELETE", "/api/v2/silence/nope", scope="ack"))[0] == 422
    assert (await api.call("POST", "/api/v2/silences", scope="read", json=postable()))[0] == 403
    assert (await api.call("GET", "/api/v2/silences"))[0] == 401


async def test_v2_delete_expires_and_is_idempotent(api):
    sid = (await api.call("POST", "/api/v2/silences", scope="ack", json=postable()))[1]["silenceID"]
    status, res, _ = await api.call("DELETE", f"/api/v2/silence/{sid}", scope="ack")
    assert (status, res) == (200, None)
    assert (await api.call("GET", f"/api/v2/silence/{sid}", scope="read"))[1]["status"]["state"] == "expired"
    assert (await api.call("DELETE", f"/api/v2/silence/{sid.replace('-', '').upper()}", scope="ack"))[0] == 200


# ---------------------------------------------------------------------- Muter


async def test_status_silences_and_inhibition(api):
    svc = api.daemon.silences
    tag = uuid.uuid4().hex[:8]
    warn = {"alertname": tag, "severity": "warning", "instance": "a"}
    s1 = await v1_add(api, f"alertname={tag}", 'instance="a"')
    s2 = await v1_add(api, f'alertname=~"{tag}|x"')
    await v1_add(api, f"alertname={tag}", starts_at="now+1h", duration="1h")  # pending: mutes nothing yet
    now = api.daemon.clock.now()
    [st, other] = await svc.status([warn, {"alertname": "Unrelated", "severity": "warning"}], now)
    assert st.silenced_by == tuple(sorted([s1["id"], s2["id"]])) and st.inhibited_by == ()
    assert not other.muted

    # A firing critical alert of an open incident inhibits warnings with the same alertname (not other names).
    await api.incident(alertname=tag, severity="critical")
    crit_fp = await _fingerprint(api, tag, "critical")

    async def inhibited() -> Any:
        for _ in range(100):
            [got, unrelated] = await svc.status([warn, {"alertname": "Else", "severity": "warning"}], now)
            if got.inhibited_by:
                return got, unrelated
            await asyncio.sleep(0.05)
        raise AssertionError("never inhibited")

    got, unrelated = await inhibited()
    assert got.inhibited_by == (crit_fp,) and unrelated.inhibited_by == ()
    # The critical alert itself is not inhibited (and the silences above do not match it: no instance label).
    [crit] = await svc.status([{"alertname": tag, "severity": "critical", "serial": "x"}], now)
    assert crit.inhibited_by == () and crit.silenced_by == (s2["id"],)


async def _fingerprint(api: Api, alertname: str, severity: str) -> str:
    async with api.daemon.store.session() as s:
        rows = (await s.exec(select(Alert).where(Alert.alertname == alertname))).all()
    return next(a.fingerprint for a in rows if a.labels.get("severity") == severity)


# ---------------------------------------------------------------------- expiry notices


async def _muted_incident(api: Api, **labels: str) -> int:
    """A triggered incident whose page the delivery stage held back (an outbox row in state ``muted``)."""
    iid = await api.incident(**labels)
    now = api.daemon.clock.now()
    async with api.daemon.store.session() as s:
        s.add(
            Outbox(
                incident_id=iid,
                target="channel:ops",
                kind="trigger",
                title="t",
                body="b",
                state="muted",
                next_attempt_at=now,
                created_at=now,
            )
        )
    return iid


async def _timeline(api: Api, iid: int) -> list[dict[str, Any]]:
    status, inc, _ = await api.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert status == 200
    return inc["timeline"]


async def _wait_handled(api: Api, sid: str) -> None:
    from fsincident.store.tables import Silence

    for _ in range(200):
        async with api.daemon.store.session() as s:
            row = await s.get(Silence, sid)
        if row is not None and row.expiry_handled:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"silence {sid} never handled")


async def test_expiry_notice_pages_again_when_no_longer_muted(api):
    tag = uuid.uuid4().hex[:8]
    iid = await _muted_incident(api, alertname=tag, team="db")
    sid = (await v1_add(api, f"alertname={tag}"))["id"]
    assert (await api.call("DELETE", f"/api/v1/silences/{sid}", scope="ack"))[0] == 200
    await _wait_handled(api, sid)
    events = [e for e in await _timeline(api, iid) if e["kind"] == "silence_expired"]
    assert len(events) == 1 and events[0]["data"]["silence_id"] == sid
    assert events[0]["data"]["matchers"] == [f'alertname="{tag}"']
    async with api.daemon.store.session() as s:
        inc = await s.get(Incident, iid)
    # The incidents stage pages it (and may already have cleared the due time).
    assert inc.notify_reason == "unmuted" or inc.notified_at is not None


async def test_no_notice_while_still_muted_or_not_triggered(api):
    tag = uuid.uuid4().hex[:8]
    still = await _muted_incident(api, alertname=tag, which="still")
    acked = await _muted_incident(api, alertname=tag, which="acked")
    unrelated = await _muted_incident(api, alertname=tag + "x")
    assert (await api.call("POST", f"/api/v1/incidents/{acked}/ack", scope="ack", json={}))[0] == 200
    sid = (await v1_add(api, f"alertname={tag}"))["id"]
    await v1_add(api, f"alertname={tag}", 'which="still"')  # keeps muting one of them
    assert (await api.call("DELETE", f"/api/v1/silences/{sid}", scope="ack"))[0] == 200
    await _wait_handled(api, sid)
    for iid in (still, acked, unrelated):
        assert "silence_expired" not in [e["kind"] for e in await _timeline(api, iid)], iid


async def test_no_notice_for_a_silence_expired_before_it_started(api):
    tag = uuid.uuid4().hex[:8]
    iid = await _muted_incident(api, alertname=tag)  # muted by something else before
    sid = (await v1_add(api, f"alertname={tag}", starts_at="now+1h"))["id"]
    assert (await api.call("DELETE", f"/api/v1/silences/{sid}", scope="ack"))[0] == 200
    await _wait_handled(api, sid)
    assert "silence_expired" not in [e["kind"] for e in await _timeline(api, iid)]


async def test_expiry_notice_can_be_turned_off(api):
    svc = api.daemon.silences
    old = svc.config
    svc.configure(dataclasses.replace(old, silences=SilencesOptions(expiry_notice=False)))
    try:
        tag = uuid.uuid4().hex[:8]
        iid = await _muted_incident(api, alertname=tag)
        sid = (await v1_add(api, f"alertname={tag}"))["id"]
        assert (await api.call("DELETE", f"/api/v1/silences/{sid}", scope="ack"))[0] == 200
        await _wait_handled(api, sid)
        assert "silence_expired" not in [e["kind"] for e in await _timeline(api, iid)]
    finally:
        svc.configure(old)


async def test_silence_ending_by_time_is_handled_once(api):
    tag = uuid.uuid4().hex[:8]
    iid = await _muted_incident(api, alertname=tag)
    sid = (await v1_add(api, f"alertname={tag}", duration="300ms"))["id"]
    await _wait_handled(api, sid)  # woken by sleep_hint at the end, not by a write
    await api.daemon.silences.tick(api.daemon.clock.now())  # a second pass (another daemon) does nothing more
    events = [e for e in await _timeline(api, iid) if e["kind"] == "silence_expired"]
    assert [e["data"]["silence_id"] for e in events] == [sid]
    async with api.daemon.store.session() as s:
        audit = (await s.exec(select(AuditLog).where(AuditLog.object == f"silence:{sid}"))).all()
    assert [a.action for a in audit] == ["silence_create"]


# ---------------------------------------------------------------------- fuzz

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
awkward = st.sampled_from(["", "a=b", "\ud800", "a\x00", "now+1h", "2026-13-01T00:00:00Z", "1e999", "-1s", "9999d"])
v1_bodies = st.fixed_dictionaries(
    {},
    optional={
        "matchers": st.lists(st.one_of(awkward, st.text(max_size=12), json_values), max_size=3),
        "starts_at": st.one_of(awkward, json_values),
        "ends_at": st.one_of(awkward, json_values),
        "duration": st.one_of(awkward, st.sampled_from(["1h", "0", "1ms"]), json_values),
        "comment": st.one_of(awkward, json_values),
        "created_by": st.one_of(awkward, json_values),
    },
)
v2_bodies = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.none(), awkward, st.just(str(uuid.UUID(int=0)))),
        "matchers": st.one_of(
            json_values,
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": st.one_of(awkward, json_values),
                        "value": st.one_of(awkward, json_values),
                        "isRegex": json_values,
                        "isEqual": json_values,
                    },
                ),
                max_size=3,
            ),
        ),
        "startsAt": st.one_of(awkward, json_values, st.just("2026-01-01T00:00:00Z")),
        "endsAt": st.one_of(
            awkward, json_values, st.just("2999-01-01T00:00:00Z"), st.just("9999-12-31T23:59:59-23:59")
        ),
        "createdBy": st.one_of(awkward, json_values),
        "comment": st.one_of(awkward, json_values),
    },
)


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(version=st.sampled_from(["v1", "v2"]), v1=v1_bodies, v2=v2_bodies, raw=st.none() | st.binary(max_size=60))
async def test_post_bodies_never_5xx(api, version, v1, v2, raw):
    path = f"/api/{version}/silences"
    data = raw if raw is not None else json.dumps(v1 if version == "v1" else v2).encode()
    status, res, _ = await api.call("POST", path, scope="ack", data=data, headers={"Content-Type": "application/json"})
    assert status < 500, (data, status, res)
    if version == "v1":
        assert status in (201, 400), res
        if status == 400:
            assert set(res) == {"error", "detail"}
    else:
        assert status in (200, 400, 404, 422), res
        assert isinstance(res, str | dict)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.one_of(awkward, st.text(max_size=20)), max_size=4), st.text(max_size=40))
async def test_queries_and_ids_never_5xx(api, filters, sid):
    from urllib.parse import quote

    def enc(text: str, safe: str = "/") -> str:
        return quote(text.encode("utf-8", "surrogatepass"), safe=safe)  # lone surrogates arrive as invalid UTF-8

    q = "&".join(f"filter={enc(f)}" for f in filters)
    assert (await api.call("GET", f"/api/v2/silences?{q}", scope="read"))[0] in (200, 400)
    for path in (f"/api/v2/silence/{enc(sid, '')}", f"/api/v1/silences/{enc(sid, '')}"):
        if not sid or sid in (".", ".."):
            continue
        assert (await api.call("GET", path, scope="read"))[0] in (200, 404, 405, 422)
        assert (await api.call("DELETE", path, scope="ack"))[0] in (200, 404, 405, 422)


async def test_silenced_page_is_muted_then_sent_when_the_silence_ends(api):
    """The whole path: the delivery stage holds the page back, the silence's end pages the incident again."""
    tag = uuid.uuid4().hex[:8]
    sid = (await v1_add(api, f"alertname={tag}"))["id"]
    iid = await api.incident(alertname=tag)

    async def kinds() -> list[str]:
        return [e["kind"] for e in await _timeline(api, iid)]

    for _ in range(250):
        if "notify_muted" in await kinds():
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"page never muted: {await kinds()}")
    assert not [m for m in api.receiver.received if f"#{iid} " in m.get("title", "")]

    assert (await api.call("DELETE", f"/api/v1/silences/{sid}", scope="ack"))[0] == 200
    got = await asyncio.to_thread(
        api.receiver.wait_for, lambda ms: [m for m in ms if f"#{iid} " in m.get("title", "")], 10
    )
    assert got
    assert "silence_expired" in await kinds()
