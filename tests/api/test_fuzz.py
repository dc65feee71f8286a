"""Fuzz the incident endpoints: random ids, bodies and tokens never produce a 5xx, and every 4xx is JSON."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yarl import URL

pytestmark = pytest.mark.asyncio(loop_scope="module")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Control characters and lone surrogates too: json.dumps escapes them (\u0000, \ud800), the server decodes them.
# (A surrogate pair is a valid character; an unpaired high surrogate such as \ud800 is not.)
awkward_text = st.text(
    st.sampled_from(["\ud800", "\udbff", "\x00", "a", "é", "\u2028"]) | st.characters(categories=["Cs", "Cc", "So"]),
    max_size=40,
)
fieldish = st.dictionaries(
    st.sampled_from(["by", "note", "By", "notes", "", "id"]),
    st.one_of(st.text(max_size=60), awkward_text, st.integers(), st.none(), st.lists(st.text(max_size=5), max_size=2)),
    max_size=3,
)
bodies = st.one_of(
    fieldish.map(lambda v: json.dumps(v).encode()),
    st.none(),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    fieldish.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=100).map(str.encode),
)
NEW = object()  # a fresh triggered incident, so acks and resolves really write what the fuzzer sent
segments = st.one_of(
    st.just(NEW),
    st.just(NEW),
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["1", "2", "3", "0", "-0", "+1", " 1", "1_0", "１", "٣", "1e2", "NaN", "..", ".", "%", "?x"]),
)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segment=segments,
    action=st.sampled_from(["ack", "resolve", None]),
    body=bodies,
    scope=st.sampled_from(["read", "ack", "admin", "ingest", None, "bogus"]),
    content_type=st.sampled_from(["application/json", "text/plain", None]),
)
async def test_incident_endpoints_never_5xx(api, segment, action, body, scope, content_type):
    if segment is NEW:
        segment = str(await api.incident())
    path = "/api/v1/incidents/" + quote(segment, safe="") + (f"/{action}" if action else "")
    headers: dict[str, str] = {}
    if scope is not None:
        headers["Authorization"] = f"Bearer {api.tokens.get(scope, 'fsi_bogus')}"
    if content_type:
        headers["Content-Type"] = content_type
    method = "POST" if action else "GET"
    async with api.http.request(method, URL(api.base + path, encoded=True), data=body, headers=headers) as r:
        status = r.status
        raw = await r.read()
    assert status < 500, (path, body, status, raw[:300])
    decoded: Any = json.loads(raw)
    if status >= 400:
        assert isinstance(decoded, dict) and isinstance(decoded.get("error"), str), decoded
        assert set(decoded) == {"error", "detail"}
    else:
        assert status == 200 and isinstance(decoded, dict) and isinstance(decoded["id"], int)


@settings(max_examples=60, deadline=None, database=None)
@given(
    query=st.dictionaries(
        st.sampled_from(["state", "limit", "x"]),
        st.one_of(st.text(max_size=12), st.integers(-5, 20000).map(str), st.sampled_from(["triggered", "resolved"])),
        max_size=3,
    )
)
async def test_list_query_never_5xx(api, query):
    async with api.http.get(
        api.base + "/api/v1/incidents", params=query, headers={"Authorization": f"Bearer {api.tokens['read']}"}
    ) as r:
        status, body = r.status, await r.json(content_type=None)
    assert status in (200, 400), (query, status, body)
    if status == 400:
        assert set(body) == {"error", "detail"}
    else:
        assert isinstance(body["incidents"], list)


field_values = st.one_of(st.text(max_size=80), awkward_text, st.text(min_size=3990, max_size=4010), st.integers())
ack_bodies = st.fixed_dictionaries({}, optional={"by": field_values | st.none(), "note": field_values | st.none()})


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    action=st.sampled_from(["ack", "resolve"]),
    body=st.one_of(ack_bodies.map(lambda v: json.dumps(v).encode()), ack_bodies.map(json.dumps), bodies),
    twice=st.booleans(),
)
@example(action="ack", body=b'{"by": "\\ud800"}', twice=False)
@example(action="resolve", body=b'{"note": "a\\u0000b"}', twice=False)
@example(action="ack", body=b"[" * 50_000, twice=False)
async def test_ack_and_resolve_bodies_never_5xx(api, action, body, twice):
    """Each example acts on a fresh triggered incident, so whatever the body says is really written."""
    fresh: list[int] = api.__dict__.setdefault("fresh", [])
    if not fresh:
        fresh.extend(await api.incidents(50))
    iid = fresh.pop()
    path = f"{api.base}/api/v1/incidents/{iid}/{action}"
    headers = {"Authorization": f"Bearer {api.tokens['ack']}", "Content-Type": "application/json"}
    for _ in range(2 if twice else 1):
        async with api.http.post(path, data=body, headers=headers) as r:
            status, raw = r.status, await r.read()
        assert status in (200, 400, 409), (body, status, raw[:300])
        decoded = json.loads(raw)
        if status == 200:
            assert decoded["id"] == iid and decoded["state"] in ("acknowledged", "resolved")
        else:
            assert set(decoded) == {"error", "detail"} and isinstance(decoded["error"], str)
