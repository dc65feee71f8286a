"""Inputs whose trouble depends on the database: the API answers 4xx on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json

import pytest

from .conftest import running_api


@pytest.fixture
async def api(db_url, tmp_path):
    async with running_api(tmp_path, db_url) as a:
        yield a


async def test_backend_specific_bad_input_is_4xx(api):
    iid = await api.incident()
    # ids beyond a 32-bit INTEGER (PostgreSQL's incident.id) are simply not found
    for raw in (str(2**31 - 1), str(2**31), str(2**40), str(2**62)):
        for method, path in (("GET", f"/api/v1/incidents/{raw}"), ("POST", f"/api/v1/incidents/{raw}/ack")):
            status, body, _ = await api.call(method, path, scope="admin")
            assert status == 404 and set(body) == {"error", "detail"}, (raw, status, body)
    # NUL (PostgreSQL rejects it in text) and lone surrogates (not UTF-8) are refused before the database
    for raw in (b'{"by": "a\\u0000b"}', b'{"note": "x\\u0000"}', b'{"by": "\\ud800"}', b'{"note": "\\udc80"}'):
        status, body, _ = await api.call(
            "POST", f"/api/v1/incidents/{iid}/ack", scope="ack", data=raw, headers={"Content-Type": "application/json"}
        )
        assert status == 400 and set(body) == {"error", "detail"}, (raw, status, body)
    # a secret with control characters or undecodable bytes is just a wrong token
    for secret in (b"\xff\xfe", b"fsi_\xc3\x28", "ünï".encode()):
        status, body = await api.raw(
            b"GET /api/v1/incidents HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
            + secret
            + b"\r\n\r\n"
        )
        assert status == 401 and set(body) == {"error", "detail"}, (secret, status, body)
    # and the ordinary path works on this backend
    note = "ünïcødé ✓ " + "x" * 3980
    status, body, _ = await api.call(
        "POST", f"/api/v1/incidents/{iid}/ack", scope="ack", data=json.dumps({"by": "Zoë", "note": note})
    )
    assert status == 200 and body["acknowledged_by"] == "Zoë"
    status, inc, _ = await api.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert any(e["note"] == note for e in inc["timeline"])
    status, body, _ = await api.call("POST", f"/api/v1/incidents/{iid}/resolve", scope="ack")
    assert status == 200 and body["state"] == "resolved"
    status, body, _ = await api.call("POST", f"/api/v1/incidents/{iid}/ack", scope="ack")
    assert status == 409
