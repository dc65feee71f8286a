"""The HTTP API of the real in-process daemon: auth and scopes, JSON errors for every bad input, ops endpoints."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from fsincident.api import ApiContext, build_app

pytestmark = pytest.mark.asyncio(loop_scope="module")


def assert_error(status: int, body: Any, headers: Any, expected: int) -> None:
    """An error is ``{"error": str, "detail": ...}`` as JSON with the expected 4xx status."""
    assert status == expected, (status, body)
    assert headers["Content-Type"].startswith("application/json")
    assert isinstance(body, dict) and set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"]


# ---------------------------------------------------------------------- ops endpoints


async def test_healthz_and_readyz_need_no_token(api):
    status, body, _ = await api.call("GET", "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    status, body, _ = await api.call("GET", "/readyz")
    assert (status, body) == (200, {"status": "ready", "role": "leader"})


async def test_readyz_is_503_until_ready(api):
    d = api.daemon
    ctx = ApiContext(
        store=d.store, incidents=d.incidents, evaluator=d.evaluator, metrics=d.metrics, ready=lambda: False
    )
    async with TestServer(build_app(ctx), host="127.0.0.1") as server:
        status, body, _ = await api.call("GET", str(server.make_url("/readyz")))
    assert (status, body) == (503, {"status": "starting", "role": "leader"})


async def test_metrics_need_no_token(api):
    async with api.http.get(api.base + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    assert "fsincident_config_last_reload_successful 1.0" in text
    assert "fsincident_notify_outbox_depth" in text
    assert "fsincident_api_requests_total" in text


# ---------------------------------------------------------------------- auth and scopes


async def test_missing_token_is_401(api):
    for method, path in (
        ("GET", "/api/v1/incidents"),
        ("GET", "/api/v1/incidents/1"),
        ("POST", "/api/v1/incidents/1/ack"),
        ("POST", "/api/v1/incidents/1/resolve"),
        ("GET", "/api/v1/rules"),
    ):
        status, body, headers = await api.call(method, path)
        assert_error(status, body, headers, 401)


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearer    ", "Basic dXNlcjpwYXNz", "fsi_nobearer", "Token abc", "Bearer fsi_wrong"],
)
async def test_bad_authorization_is_401(api, header):
    status, body, headers = await api.call("GET", "/api/v1/incidents", headers={"Authorization": header})
    assert_error(status, body, headers, 401)


async def test_bad_token_is_401_even_for_an_existing_secret_altered(api):
    status, body, headers = await api.call("GET", "/api/v1/incidents", token=api.tokens["admin"] + "x")
    assert_error(status, body, headers, 401)
    assert api.tokens["admin"] not in json.dumps(body)


async def test_unknown_incident_needs_auth_first(api):
    """No information about incidents leaks without a token: 401, not 404."""
    status, body, headers = await api.call("GET", "/api/v1/incidents/999999")
    assert_error(status, body, headers, 401)


async def test_read_token_cannot_ack_or_resolve(api):
    iid = await api.incident()
    for action in ("ack", "resolve"):
        status, body, headers = await api.call("POST", f"/api/v1/incidents/{iid}/{action}", scope="read", json={})
        assert_error(status, body, headers, 403)
        assert body["detail"] == {"scopes": ["read"]}
    status, inc, _ = await api.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert status == 200 and inc["state"] == "triggered"


async def test_ingest_token_cannot_read_or_ack(api):
    iid = await api.incident()
    for method, path in (
        ("GET", "/api/v1/incidents"),
        ("GET", f"/api/v1/incidents/{iid}"),
        ("GET", "/api/v1/rules"),
        ("POST", f"/api/v1/incidents/{iid}/ack"),
    ):
        status, body, headers = await api.call(method, path, scope="ingest")
        assert_error(status, body, headers, 403)


async def test_ack_token_can_read_and_act(api):
    iid = await api.incident()
    status, body, _ = await api.call("GET", "/api/v1/incidents", scope="ack")
    assert status == 200 and iid in [i["id"] for i in body["incidents"]]
    status, body, _ = await api.call("POST", f"/api/v1/incidents/{iid}/ack", scope="ack")  # empty body
    assert status == 200
    assert (body["state"], body["acknowledged_by"]) == ("acknowledged", "test-ack")


async def test_admin_can_do_everything(api):
    iid = await api.incident()
    for method, path, expected in (
        ("GET", "/api/v1/incidents", 200),
        ("GET", f"/api/v1/incidents/{iid}", 200),
        ("GET", "/api/v1/rules", 200),
        ("POST", f"/api/v1/incidents/{iid}/ack", 200),
        ("POST", f"/api/v1/incidents/{iid}/resolve", 200),
    ):
        status, body, _ = await api.call(method, path, scope="admin", json={"by": "root"} if method == "POST" else None)
        assert status == expected, (path, body)
    assert body["state"] == "resolved" and body["resolved_by"] == "root"


# ---------------------------------------------------------------------- incidents


async def test_incident_shape_with_alerts_and_timeline(api):
    iid = await api.incident(severity="critical", host="db1")
    status, inc, _ = await api.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert status == 200
    for key in ("id", "title", "state", "severity", "labels", "created_at", "acknowledged_at", "resolved_at"):
        assert key in inc
    assert (inc["id"], inc["state"], inc["severity"]) == (iid, "triggered", "critical")
    assert inc["labels"]["host"] == "db1"
    assert inc["created_at"].endswith("Z") and inc["acknowledged_at"] is None and inc["resolved_at"] is None
    [alert] = inc["alerts"]
    assert (alert["state"], alert["labels"]["host"]) == ("firing", "db1")
    assert inc["timeline"][0]["kind"] == "triggered"


async def test_ack_then_resolve_with_note(api):
    iid = await api.incident()
    status, body, _ = await api.call(
        "POST", f"/api/v1/incidents/{iid}/ack", scope="ack", json={"by": "alice", "note": "looking"}
    )
    assert status == 200
    assert (body["state"], body["acknowledged_by"]) == ("acknowledged", "alice")
    status, body, _ = await api.call("POST", f"/api/v1/incidents/{iid}/ack", scope="ack", json={"by": "bob"})
    assert status == 200 and body["acknowledged_by"] == "alice"  # idempotent
    status, body, _ = await api.call("POST", f"/api/v1/incidents/{iid}/resolve", scope="ack", json={"note": None})
    assert status == 200 and body["state"] == "resolved" and body["resolved_by"] == "test-ack"
    status, body, _ = await api.call("POST", f"/api/v1/incidents/{iid}/resolve", scope="ack")
    assert status == 200 and body["state"] == "resolved"  # resolving twice is fine
    status, inc, _ = await api.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    events = [(e["kind"], e["actor"], e["note"]) for e in inc["timeline"]]
    assert ("acknowledged", "alice", "looking") in events
    assert ("resolved", "test-ack", None) in events


async def test_blank_by_falls_back_to_the_token_name(api):
    iid = await api.incident()
    status, body, _ = await api.call("POST", f"/api/v1/incidents/{iid}/ack", scope="ack", json={"by": "   "})
    assert status == 200 and body["acknowledged_by"] == "test-ack"


async def test_ack_of_resolved_incident_is_409(api):
    iid = await api.resolved_incident()
    status, body, headers = await api.call("POST", f"/api/v1/incidents/{iid}/ack", scope="ack", json={"by": "alice"})
    assert_error(status, body, headers, 409)
    assert "resolved" in body["error"]


@pytest.mark.parametrize("raw", ["999999", "0", "-1", "abc", "1.5", "1e3", "0x10", "99999999999999999999999", "%20"])
async def test_unknown_or_non_numeric_incident_is_404(api, raw):
    for method, path in (
        ("GET", f"/api/v1/incidents/{raw}"),
        ("POST", f"/api/v1/incidents/{raw}/ack"),
        ("POST", f"/api/v1/incidents/{raw}/resolve"),
    ):
        status, body, headers = await api.call(method, path, scope="admin", json={} if method == "POST" else None)
        assert_error(status, body, headers, 404)


BAD_BODIES = [
    pytest.param(b"{", id="truncated"),
    pytest.param(b"not json", id="text"),
    pytest.param(b"\xff\xfe\x00", id="bad-utf8"),
    pytest.param(b'{"by": "a",}', id="trailing-comma"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'["by", "alice"]', id="array-of-strings"),
    pytest.param(b'"alice"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"by": "alice", "when": "now"}', id="unknown-field"),
    pytest.param(b'{"By": "alice"}', id="field-case"),
    pytest.param(b'{"by": 5}', id="by-number"),
    pytest.param(b'{"by": ["alice"]}', id="by-list"),
    pytest.param(b'{"by": true}', id="by-bool"),
    pytest.param(b'{"note": {"text": "x"}}', id="note-object"),
    pytest.param(b'{"note": 1e999}', id="note-infinity"),
    pytest.param(json.dumps({"note": "x" * 4001}).encode(), id="note-too-long"),
    pytest.param(b"[" * 100_000, id="deeply-nested"),
    pytest.param(b'{"by": "\\ud800"}', id="lone-surrogate-by"),
    pytest.param(b'{"note": "a\\udfffb"}', id="lone-surrogate-note"),
    pytest.param(b'{"by": "a\\u0000b"}', id="nul-char"),
]


@pytest.mark.parametrize("raw", BAD_BODIES)
async def test_bad_body_is_400(api, raw):
    iid = await api.incident()
    for action in ("ack", "resolve"):
        status, body, headers = await api.call(
            "POST",
            f"/api/v1/incidents/{iid}/{action}",
            scope="ack",
            data=raw,
            headers={"Content-Type": "application/json"},
        )
        assert_error(status, body, headers, 400)
    status, inc, _ = await api.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert inc["state"] == "triggered"  # nothing changed


async def test_error_messages_name_the_problem(api):
    iid = await api.incident()
    path = f"/api/v1/incidents/{iid}/ack"
    _, body, _ = await api.call("POST", path, scope="ack", json={"by": "a", "extra": 1})
    assert body["error"] == "unknown field 'extra'" and body["detail"] == {"allowed": ["by", "note"]}
    _, body, _ = await api.call("POST", path, scope="ack", json={"by": 5})
    assert body["error"] == "field 'by' must be a str"
    _, body, _ = await api.call("POST", path, scope="ack", data=b"{", headers={"Content-Type": "application/json"})
    assert body["error"] == "malformed JSON body" and isinstance(body["detail"], str)
    _, body, _ = await api.call("POST", path, scope="ack", json={"note": "x" * 4001})
    assert "4000" in body["error"]


async def test_note_of_exactly_4000_characters_is_accepted(api):
    iid = await api.incident()
    note = "ü" * 4000
    status, _, _ = await api.call("POST", f"/api/v1/incidents/{iid}/ack", scope="ack", json={"note": note})
    assert status == 200
    _, inc, _ = await api.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert any(e["note"] == note for e in inc["timeline"])


async def test_list_filters_by_state_and_limit(api):
    triggered = await api.incident()
    resolved = await api.resolved_incident()
    status, body, _ = await api.call("GET", "/api/v1/incidents?state=resolved", scope="read")
    assert status == 200
    ids = [i["id"] for i in body["incidents"]]
    assert resolved in ids and triggered not in ids
    assert {i["state"] for i in body["incidents"]} == {"resolved"}
    status, body, _ = await api.call("GET", "/api/v1/incidents?limit=1", scope="read")
    assert status == 200 and len(body["incidents"]) == 1
    assert body["incidents"][0]["id"] >= max(triggered, resolved)  # newest first


@pytest.mark.parametrize("query", ["state=open", "state=", "state=TRIGGERED", "state=triggered%00"])
async def test_bad_state_is_400(api, query):
    status, body, headers = await api.call("GET", f"/api/v1/incidents?{query}", scope="read")
    assert_error(status, body, headers, 400)


@pytest.mark.parametrize(
    "query", ["limit=abc", "limit=", "limit=0", "limit=-1", "limit=10001", "limit=1.5", "limit=9" * 30]
)
async def test_bad_limit_is_400(api, query):
    status, body, headers = await api.call("GET", f"/api/v1/incidents?{query}", scope="read")
    assert_error(status, body, headers, 400)


# ---------------------------------------------------------------------- routing errors


@pytest.mark.parametrize(
    "path", ["/nope", "/api", "/api/v1", "/api/v1/nope", "/api/v1/incidents/1/2/3", "/api/v9/incidents"]
)
async def test_unknown_path_is_404_json(api, path):
    for scope in (None, "admin"):
        status, body, headers = await api.call("GET", path, scope=scope)
        assert_error(status, body, headers, 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/incidents/1/ack"),
        ("PUT", "/api/v1/incidents/1/resolve"),
        ("DELETE", "/api/v1/incidents"),
        ("POST", "/api/v1/incidents"),
        ("PATCH", "/api/v1/incidents/1"),
        ("POST", "/healthz"),
        ("DELETE", "/metrics"),
    ],
)
async def test_wrong_method_is_405_json(api, method, path):
    status, body, headers = await api.call(method, path, scope="admin")
    assert_error(status, body, headers, 405)
    assert "Allow" in headers


# ---------------------------------------------------------------------- rules, and the whole path from a rule


async def test_rules_shape_and_a_rule_made_incident(api):
    """The configured rule fires over the exposition server; the rules view and the incident list show it."""
    firing: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    for _ in range(150):
        status, body, _ = await api.call("GET", "/api/v1/rules", scope="read")
        assert status == 200
        groups = body["groups"]
        firing = [a for g in groups for r in g["rules"] for a in r["alerts"] if a["state"] == "firing"]
        if firing:
            break
        await asyncio.sleep(0.1)
    assert [g["name"] for g in groups] == ["app"]
    [rule] = groups[0]["rules"]
    for key in ("name", "group", "expr", "source", "for", "severity", "labels", "state", "health", "alerts"):
        assert key in rule
    assert (rule["name"], rule["expr"], rule["severity"], rule["state"]) == (
        "QueueBacklog",
        "queue_depth > 100",
        "critical",
        "firing",
    )
    assert rule["health"] == "ok" and rule["last_error"] is None
    [alert] = firing
    assert alert["labels"]["queue"] == "orders" and alert["value"] == 500

    for _ in range(100):
        _, body, _ = await api.call("GET", "/api/v1/incidents?state=triggered", scope="read")
        mine = [i for i in body["incidents"] if i["labels"].get("alertname") == "QueueBacklog"]
        if mine:
            break
        await asyncio.sleep(0.1)
    [inc] = mine
    assert inc["labels"]["queue"] == "orders" and inc["severity"] == "critical"
    assert inc["title"] == "QueueBacklog: orders has 500.0 jobs"


async def test_ack_reaches_the_channel(api):
    """An ack through the API is delivered by the outbox to the real apprise channel (not inside the request)."""
    iid = await api.incident()
    for _ in range(200):  # an ack notice follows only a page that arrived: let the trigger page arrive first
        if any(f"#{iid} " in (m.get("title") or "") for m in api.receiver.received):
            break
        await asyncio.sleep(0.05)
    status, _, _ = await api.call("POST", f"/api/v1/incidents/{iid}/ack", scope="ack", json={"by": "carol"})
    assert status == 200
    for _ in range(200):
        if any("carol" in (m.get("message") or "") for m in api.receiver.received):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"no acknowledge delivered: {[m.get('title') for m in api.receiver.received]}")


async def test_no_5xx_was_counted(api):
    """Nothing above produced an internal error (only the deliberate 503 of an unready /readyz is a 5xx)."""
    async with aiohttp.ClientSession() as http, http.get(api.base + "/metrics") as r:
        text = await r.text()
    bad = [
        line for line in text.splitlines() if line.startswith("fsincident_api_requests_total") and 'status="50' in line
    ]
    bad = [line for line in bad if 'route="/readyz",status="503"' not in line]
    assert bad == []


@pytest.mark.parametrize(
    "auth",
    [b"Bearer \xff\xfe", b"Bearer fsi_\xc3\x28", b"Bearer \xe2\x82", b"Bearer a\x01b", "Bearer ünïcødé".encode()],
)
async def test_undecodable_authorization_header_is_401(api, auth):
    status, body = await api.raw(
        b"GET /api/v1/incidents HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + auth + b"\r\n\r\n",
    )
    assert status in (400, 401), (status, body)
    if status == 401:
        assert set(body) == {"error", "detail"}


async def test_undecodable_path_is_404(api):
    status, body = await api.raw(
        b"GET /api/v1/incidents/%FF%FE HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
        + api.tokens["read"].encode()
        + b"\r\n\r\n",
    )
    assert status == 404 and set(body) == {"error", "detail"}
