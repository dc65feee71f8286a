"""POST /api/v1/incidents/{id}/escalate and /reassign against the real in-process daemon: scopes, JSON errors,
409s, and the pages and timeline entries they cause."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.api.conftest import Api, serve
from tests.helpers import Receiver, free_port, write_config

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _config(directory: Path, port: int, receiver: Receiver) -> Path:
    return write_config(
        directory / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{directory}/state.db
        channels:
          - {{name: ops, urls: ["{receiver.apprise_url("ops")}"]}}
        users:
          - {{name: alice, contacts: ["{receiver.apprise_url("alice")}"]}}
          - {{name: bob, contacts: ["{receiver.apprise_url("bob")}"]}}
          - {{name: dave, contacts: [{{url: "{receiver.apprise_url("dave")}", urgency: high}}]}}
        schedules:
          - name: primary
            timezone: UTC
            layers:
              - {{rotation: daily, handoff: "00:00", start: 2026-01-01, users: [bob]}}
        escalation_policies:
          - name: infra
            steps:
              - {{after: 0s, notify: ["user:alice"]}}
              - {{after: 1h, notify: ["schedule:primary"]}}
              - {{after: 2h, notify: ["channel:ops"]}}
        routes:
          - {{match: {{team: infra}}, escalation_policy: infra}}
          - {{notify: ["channel:ops"]}}
        """,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    directory = tmp_path_factory.mktemp("esc")
    receiver = Receiver().start()
    port = free_port()
    try:
        async with serve(_config(directory, port, receiver), port, None, receiver) as a:
            yield a
    finally:
        receiver.stop()


async def pages_to(api: Api, path: str, iid: int, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    """Wait until ``n`` trigger pages of incident ``iid`` reached ``/path``; returns them."""
    prefix = f"[TRIGGERED] #{iid} "
    for _ in range(int(timeout / 0.05)):
        got = [m for m in api.receiver.received if m["_path"] == f"/{path}" and m.get("title", "").startswith(prefix)]
        if len(got) >= n:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"{n} pages of #{iid} to /{path} not received; got {[m.get('title') for m in got]}")


def events(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in body["timeline"] if e["kind"] == kind]


async def test_escalate_and_reassign_need_the_ack_scope(api):
    iid = await api.incident(team="infra")
    for action, body in (("escalate", {}), ("reassign", {"to": "user:bob"})):
        path = f"/api/v1/incidents/{iid}/{action}"
        status, err, _ = await api.call("POST", path, json=body)
        assert status == 401 and set(err) == {"error", "detail"}
        for scope in ("read", "ingest"):
            status, err, _ = await api.call("POST", path, json=body, scope=scope)
            assert status == 403 and "lacks scope 'ack'" in err["error"]
    status, inc, _ = await api.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert events(inc, "escalated")[1:] == [] and events(inc, "reassigned") == []


async def test_escalate_runs_the_next_step_now(api):
    iid = await api.incident(team="infra")
    await pages_to(api, "alice", iid, 1)  # step 1 at once
    status, body, _ = await api.call(
        "POST", f"/api/v1/incidents/{iid}/escalate", scope="ack", json={"by": "erin", "note": "db looks down"}
    )
    assert status == 200, body
    assert body["escalated"] == {"step": 1, "loop": 0, "paged": ["user:bob"], "users": ["bob"]}
    assert body["state"] == "triggered" and "user:bob" in body["targets"]
    [manual] = [e for e in events(body, "escalated") if e["data"]["manual"]]
    assert (manual["actor"], manual["data"]["targets"]) == ("erin", ["schedule:primary"])
    assert "db looks down" in manual["note"]
    await pages_to(api, "bob", iid, 1)  # the on-call user of schedule:primary

    status, body, _ = await api.call("POST", f"/api/v1/incidents/{iid}/escalate", scope="ack", json={})
    assert status == 200 and body["escalated"]["paged"] == ["channel:ops"]
    assert events(body, "escalated")[-1]["actor"] == "test-ack"  # "by" defaults to the token's name
    status, err, _ = await api.call("POST", f"/api/v1/incidents/{iid}/escalate", scope="ack")
    assert status == 409 and "every step of policy 'infra' has run" in err["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{", 400, "malformed JSON body"),
        (b"[]", 400, "the body must be a JSON object"),
        (b'{"who": "x"}', 400, "unknown field 'who'"),
        (b'{"note": 5}', 400, "field 'note' must be a str"),
        (b'{"to": "user:bob"}', 400, "unknown field 'to'"),
    ],
)
async def test_escalate_rejects_bad_bodies(api, body, status, message):
    iid = await api.incident(team="infra")
    got, err, _ = await api.call(
        "POST",
        f"/api/v1/incidents/{iid}/escalate",
        scope="ack",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert (got, err["error"]) == (status, message)


async def test_escalate_refuses_what_cannot_escalate(api):
    for bad in ("999999", "abc", "0"):
        status, err, _ = await api.call("POST", f"/api/v1/incidents/{bad}/escalate", scope="ack")
        assert status == 404 and "not found" in err["error"]
    plain = await api.incident(team="other")
    status, err, _ = await api.call("POST", f"/api/v1/incidents/{plain}/escalate", scope="ack")
    assert status == 409 and "no escalation policy" in err["error"]
    done = await api.resolved_incident()
    status, err, _ = await api.call("POST", f"/api/v1/incidents/{done}/escalate", scope="ack")
    assert status == 409 and err["error"] == "cannot escalate: incident is resolved"


async def test_reassign_pages_the_target_and_keeps_the_ack(api):
    iid = await api.incident(team="infra")
    await pages_to(api, "alice", iid, 1)
    status, body, _ = await api.call("POST", f"/api/v1/incidents/{iid}/ack", scope="ack", json={"by": "alice"})
    assert status == 200 and body["state"] == "acknowledged"
    status, body, _ = await api.call(
        "POST",
        f"/api/v1/incidents/{iid}/reassign",
        scope="ack",
        json={"to": "schedule:primary", "by": "alice", "note": "needs a DBA"},
    )
    assert status == 200, body
    assert body["reassigned"] == {"to": "schedule:primary", "paged": ["user:bob"], "users": ["bob"]}
    assert body["state"] == "acknowledged" and body["acknowledged_by"] == "alice"
    [ev] = events(body, "reassigned")
    assert (ev["actor"], ev["note"], ev["data"]["to"]) == ("alice", "needs a DBA", "schedule:primary")
    await pages_to(api, "bob", iid, 1)
    # Later notices reach everyone who was paged: the resolve notice goes to alice and bob.
    status, body, _ = await api.call("POST", f"/api/v1/incidents/{iid}/resolve", scope="ack", json={})
    assert status == 200
    for who in ("alice", "bob"):
        for _ in range(200):
            if any(
                m["_path"] == f"/{who}" and m["title"].startswith(f"[RESOLVED] #{iid} ") for m in api.receiver.received
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no resolve notice for {who}")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "field 'to' is required"),
        ({"to": 5}, 400, "field 'to' must be a str"),
        ({"to": "bob"}, 400, "invalid target 'bob': write user:NAME, schedule:NAME or channel:NAME"),
        ({"to": "team:db"}, 400, "invalid target 'team:db': write user:NAME, schedule:NAME or channel:NAME"),
        ({"to": "user:nobody"}, 400, "unknown user 'nobody'"),
        ({"to": "schedule:nope"}, 400, "unknown schedule 'nope'"),
        ({"to": "channel:nope"}, 400, "unknown channel 'nope'"),
        (
            {"to": "user:dave"},
            409,
            "cannot reassign: nobody to page: user:dave: user 'dave' has no contact method for low urgency",
        ),
    ],
)
async def test_reassign_rejects_bad_targets(api, body, status, message):
    iid = await api.incident(team="infra")
    got, err, _ = await api.call("POST", f"/api/v1/incidents/{iid}/reassign", scope="ack", json=body)
    assert (got, err["error"]) == (status, message)
    assert set(err) == {"error", "detail"}


async def test_reassign_refuses_a_resolved_or_missing_incident(api):
    done = await api.resolved_incident()
    status, err, _ = await api.call("POST", f"/api/v1/incidents/{done}/reassign", scope="ack", json={"to": "user:bob"})
    assert status == 409 and err["error"] == "cannot reassign: incident is resolved"
    status, err, _ = await api.call("POST", "/api/v1/incidents/424242/reassign", scope="ack", json={"to": "user:bob"})
    assert status == 404


async def test_reassign_without_a_policy_pages_too(api):
    iid = await api.incident(team="other")
    status, body, _ = await api.call(
        "POST", f"/api/v1/incidents/{iid}/reassign", scope="ack", json={"to": "user:alice"}
    )
    assert status == 200 and body["state"] == "triggered" and body["escalation"] is None
    await pages_to(api, "alice", iid, 1)
