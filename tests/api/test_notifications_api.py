"""``GET /api/v1/incidents/{id}/notifications`` against the real in-process daemon: a page to an unreachable channel
becomes a dead letter whose copy reaches the fallback channel, and the log shows every attempt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from fsincident.store.tables import Incident
from tests.api.conftest import Api, serve
from tests.helpers import Receiver, free_port, write_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

PASSWORD = "s3cr3t-webhook-pass"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    tmp = tmp_path_factory.mktemp("notifications")
    port, dead = free_port(), free_port()  # nothing listens on ``dead``
    receiver = Receiver().start()
    cfg = write_config(
        tmp / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp}/state.db
        delivery: {{timeout: 2s}}
        channels:
          - {{name: ops, urls: ["json://bot:{PASSWORD}@127.0.0.1:{dead}/ops"], max_attempts: 1,
              fallback: "channel:mail"}}
          - {{name: mail, urls: ["{receiver.apprise_url("mail")}"]}}
        routes:
          - {{notify: ["channel:ops"]}}
        """,
    )
    try:
        async with serve(cfg, port, None, receiver) as a:
            yield a
    finally:
        receiver.stop()


async def notifications(api: Api, iid: int, want: int = 2) -> list[dict[str, Any]]:
    """The incident's notifications once ``want`` of them are settled (sent or failed)."""
    for _ in range(300):
        status, body, _ = await api.call("GET", f"/api/v1/incidents/{iid}/notifications", scope="read")
        assert status == 200, body
        settled = [n for n in body["notifications"] if n["state"] in ("sent", "failed")]
        if len(settled) >= want:
            return body["notifications"]  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"notifications never settled: {body}")


async def test_dead_letter_and_fallback_copy_with_their_attempts(api: Api):
    iid = await api.incident(team="db")
    dead, copy = await notifications(api, iid)
    assert set(dead) == {
        "id",
        "target",
        "dest_index",
        "destination",
        "kind",
        "severity",
        "state",
        "attempts",
        "created_at",
        "next_attempt_at",
        "sent_at",
        "last_error",
        "fallback_for",
        "digest_id",
        "claimed_by",
        "log",
    }
    assert (dead["target"], dead["kind"], dead["state"], dead["attempts"]) == ("channel:ops", "trigger", "failed", 1)
    assert dead["claimed_by"] == api.daemon.replica and dead["fallback_for"] is None
    assert dead["last_error"] and dead["sent_at"] is None
    [attempt] = dead["log"]
    assert set(attempt) == {
        "id",
        "attempt",
        "result",
        "replica",
        "destination",
        "started_at",
        "finished_at",
        "duration_ms",
        "error",
    }
    assert (attempt["attempt"], attempt["result"], attempt["replica"]) == (1, "failed", api.daemon.replica)
    assert attempt["destination"] == dead["destination"] and "127.0.0.1" in attempt["destination"]

    assert (copy["target"], copy["state"], copy["fallback_for"]) == ("channel:mail", "sent", dead["id"])
    assert [a["result"] for a in copy["log"]] == ["sent"]
    assert copy["sent_at"] is not None
    [msg] = [m for m in api.receiver.received if m["_path"] == "/mail"]
    assert msg["message"].startswith("Could not be delivered to channel:ops")

    status, inc, _ = await api.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert status == 200
    kinds = [e["kind"] for e in inc["timeline"]]
    assert {"notify_failed", "notify_dead", "notify_fallback", "notify_sent"} <= set(kinds)

    # No secret anywhere: not in the answer, not on /metrics.
    status, raw, _ = await api.call("GET", f"/api/v1/incidents/{iid}/notifications", scope="read")
    assert status == 200
    assert PASSWORD not in str(raw) and PASSWORD not in str(inc)
    status, metrics, _ = await api.call("GET", "/metrics")
    assert status == 200
    assert 'fsincident_notify_dead_letters_total{target="channel:ops"} 1.0' in metrics
    assert PASSWORD not in metrics


async def test_unknown_incident_and_auth(api: Api):
    status, body, _ = await api.call("GET", "/api/v1/incidents/999999/notifications", scope="read")
    assert status == 404 and body["error"] == "incident 999999 not found"
    status, body, _ = await api.call("GET", "/api/v1/incidents/abc/notifications", scope="read")
    assert status == 404 and "error" in body
    status, body, _ = await api.call("GET", "/api/v1/incidents/1/notifications")
    assert status == 401
    status, body, _ = await api.call("GET", "/api/v1/incidents/1/notifications", scope="ingest")
    assert status == 403


async def test_an_incident_without_notifications(api: Api):
    async with api.daemon.store.session() as s:
        now = api.daemon.clock.now()
        inc = Incident(
            group_key="quiet",
            open_key="quiet",
            title="quiet",
            state="triggered",
            severity="info",
            targets=[],
            created_at=now,
            updated_at=now,
        )
        s.add(inc)
        await s.flush()
        iid = inc.id
    status, body, _ = await api.call("GET", f"/api/v1/incidents/{iid}/notifications", scope="read")
    assert (status, body) == (200, {"notifications": []})
