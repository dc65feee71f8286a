"""PagerDuty Events API v2 (``POST /v2/enqueue``) on the real in-process daemon: trigger -> acknowledge -> resolve
by dedup_key drives one incident; invalid events get PagerDuty's 400 with every error; unknown keys are refused."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from fsincident import config as config_mod
from fsincident.app import Daemon
from tests.helpers import free_port, write_config

KEY = "e93facc04764012d7bfb002500d5d1a6"
OTHER_KEY = "R0UTINGKEY-of-the-infra-team"


class PD:
    """The daemon and a client that speaks the Events API (no bearer token: the routing key is the credential)."""

    def __init__(self, daemon: Daemon, http: aiohttp.ClientSession, base: str, token: str):
        self.daemon, self.http, self.base, self.token = daemon, http, base, token

    async def send(self, body: Any, path: str = "/v2/enqueue", raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.http.post(self.base + path, data=data, headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.json(content_type=None)

    async def event(self, action: str, dedup_key: str | None = None, key: str = KEY, **payload: Any) -> str:
        body: dict[str, Any] = {"routing_key": key, "event_action": action}
        if dedup_key is not None:
            body["dedup_key"] = dedup_key
        if action == "trigger":
            body["payload"] = {
                "summary": "DISK at 99%",
                "source": "db01.example.com",
                "severity": "critical",
                **payload,
            }
        status, answer = await self.send(body)
        assert status == 202, answer
        assert answer["status"] == "success" and answer["message"] == "Event processed"
        return answer["dedup_key"]

    async def incidents(self, dedup_key: str) -> list[dict[str, Any]]:
        return [i for i in await self.daemon.incidents.list(limit=1000) if i["labels"].get("dedup_key") == dedup_key]

    async def wait(self, dedup_key: str, state: str, count: int = 1) -> list[dict[str, Any]]:
        """The incidents of ``dedup_key`` once the newest is in ``state`` and there are ``count`` of them."""
        for _ in range(300):
            found = await self.incidents(dedup_key)
            if len(found) == count and found[0]["state"] == state:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError(f"{dedup_key}: wanted {count} incident(s), the newest {state}; got {found}")


@asynccontextmanager
async def running_pd(d: Path, database: str) -> AsyncIterator[PD]:
    """The real Daemon with two PagerDuty integrations on a free port, and a client; stopped afterwards."""
    port = free_port()
    cfg = write_config(
        d / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: {database}
        integrations:
          - {{name: payments, type: pagerduty, routing_key: "${{PD_KEY}}", labels: {{team: payments}}}}
          - {{name: infra, type: pagerduty, routing_key: "{OTHER_KEY}", labels: {{team: infra, severity: warning}}}}
        routes:
          - {{notify: []}}
        """,
    )
    daemon = Daemon(config_mod.load(cfg, environ={"PD_KEY": KEY}))
    await daemon.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            token = await daemon.store.create_token("reader", ["read"], daemon.clock.now())
            yield PD(daemon, http, f"http://127.0.0.1:{port}", token)
    finally:
        await daemon.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pd(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PD]:
    d = tmp_path_factory.mktemp("pd")
    async with running_pd(d, f"sqlite:///{d}/state.db") as client:
        yield client


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_trigger_acknowledge_resolve_drive_one_incident(pd: PD) -> None:
    dk = await pd.event("trigger", "srv01/mysql", component="mysql", group="prod-datapipe", **{"class": "disk"})
    assert dk == "srv01/mysql"
    [inc] = await pd.wait(dk, "triggered")
    assert inc["labels"]["team"] == "payments" and inc["labels"]["alertname"] == "disk"
    assert await pd.event("acknowledge", dk) == dk
    [acked] = await pd.wait(dk, "acknowledged")
    assert acked["id"] == inc["id"] and acked["acknowledged_by"] == "pagerduty:payments"
    await pd.event("trigger", dk)  # a repeated trigger adds to the open alert: still the same incident
    assert await pd.event("resolve", dk) == dk
    [done] = await pd.wait(dk, "resolved")
    assert done["id"] == inc["id"]
    full = await pd.daemon.incidents.get(inc["id"])
    assert len(full["alerts"]) == 1 and full["alerts"][0]["origin"] == "pagerduty:payments"
    assert [e["kind"] for e in full["timeline"]].count("acknowledged") <= 1
    # Resolved means closed: the same key triggers a new incident, as on PagerDuty.
    await pd.event("trigger", dk)
    [newer, older] = await pd.wait(dk, "triggered", count=2)
    assert older["id"] == inc["id"] and newer["id"] != inc["id"]
    await pd.event("resolve", dk)
    await pd.wait(dk, "resolved", count=2)


async def test_acknowledge_right_after_trigger(pd: PD) -> None:
    dk = f"fast-{uuid.uuid4().hex[:8]}"
    await pd.event("trigger", dk)
    await pd.event("acknowledge", dk)  # no wait in between: the incident may not exist yet when it arrives
    [inc] = await pd.wait(dk, "acknowledged")
    assert inc["acknowledged_by"] == "pagerduty:payments"
    await pd.event("resolve", dk)
    await pd.wait(dk, "resolved")


async def test_alert_labels_and_annotations(pd: PD) -> None:
    dk = await pd.event(
        "trigger",
        key=OTHER_KEY,
        severity="error",
        component="postgres",
        custom_details={"ping time": "1500ms", "load avg": 0.75},
        timestamp="2015-07-17T08:42:58.315+0000",
    )
    assert re.fullmatch(r"[0-9a-f]{32}", dk)  # generated when a trigger has none, as PagerDuty does
    [inc] = await pd.wait(dk, "triggered")
    full = await pd.daemon.incidents.get(inc["id"])
    [alert] = full["alerts"]
    assert alert["labels"] == {
        "alertname": "infra",
        "severity": "warning",  # the integration's labels win over the event's
        "source": "db01.example.com",
        "component": "postgres",
        "dedup_key": dk,
        "integration": "infra",
        "team": "infra",
    }
    assert alert["annotations"]["summary"] == "DISK at 99%"
    assert alert["annotations"]["pagerduty_severity"] == "error"
    assert json.loads(alert["annotations"]["custom_details"]) == {"ping time": "1500ms", "load avg": 0.75}
    assert alert["starts_at"] == "2015-07-17T08:42:58.315000Z"
    await pd.event("resolve", dk, key=OTHER_KEY)
    await pd.wait(dk, "resolved")


async def test_severity_mapping_and_context(pd: PD) -> None:
    dk = await pd.event(
        "trigger",
        f"sev-{uuid.uuid4().hex[:8]}",
        severity="error",
    )
    [inc] = await pd.wait(dk, "triggered")
    assert inc["labels"]["severity"] == "critical" and inc["labels"]["alertname"] == "payments"
    body = {
        "routing_key": KEY,
        "event_action": "trigger",
        "dedup_key": dk,
        "payload": {"summary": "now with links", "source": "db01", "severity": "info"},
        "links": [{"href": "https://example.com/", "text": "Link text"}],
        "images": [{"src": "https://example.com/a.png", "alt": "graph"}],
        "client": "Sample Monitoring Service",
        "client_url": "https://monitoring.example.com",
    }
    status, answer = await pd.send(body, path="/v2/enqueue/")
    assert status == 202 and answer["dedup_key"] == dk
    [again] = await pd.wait(dk, "triggered")
    assert again["id"] == inc["id"]
    # The ingested alert (what GET /api/v2/alerts shows) has the new annotations and keeps its identity.
    [alert] = [a for a in pd.daemon.ingest.firing() if a.labels.get("dedup_key") == dk]
    assert alert.labels["severity"] == "critical" and alert.origin == "pagerduty:payments"
    assert alert.annotations["summary"] == "now with links" and alert.annotations["pagerduty_severity"] == "info"
    assert json.loads(alert.annotations["links"]) == body["links"]
    assert json.loads(alert.annotations["images"]) == body["images"]
    assert alert.annotations["client"] == "Sample Monitoring Service"
    assert alert.generator_url == "https://monitoring.example.com"
    await pd.event("resolve", dk)
    await pd.wait(dk, "resolved")


async def test_concurrent_triggers_of_one_key_make_one_alert(pd: PD) -> None:
    dk = f"burst-{uuid.uuid4().hex[:8]}"
    sevs = ["critical", "warning", "error", "info"] * 5
    await asyncio.gather(*(pd.event("trigger", dk, severity=sev) for sev in sevs))
    [inc] = await pd.wait(dk, "triggered")
    assert len([a for a in pd.daemon.ingest.firing() if a.labels.get("dedup_key") == dk]) == 1
    assert len((await pd.daemon.incidents.get(inc["id"]))["alerts"]) == 1
    await pd.event("resolve", dk)
    await pd.wait(dk, "resolved")
    assert [a for a in pd.daemon.ingest.firing() if a.labels.get("dedup_key") == dk] == []


def _start_alertmanager(binary: str, d: Path, port: int) -> subprocess.Popen[bytes]:
    with open(d / "am.log", "wb") as log:
        return subprocess.Popen(
            [
                binary,
                f"--config.file={d / 'am.yml'}",
                f"--storage.path={d / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def test_real_alertmanager_pages_fsincident(pd: PD, tmp_path: Path) -> None:
    """The real Alertmanager 0.25's ``pagerduty_configs`` pointed at /v2/enqueue: its trigger opens an incident,
    its resolve (when the alert ends) resolves it."""
    am_bin = shutil.which("prometheus-alertmanager")
    if am_bin is None:
        pytest.skip("prometheus-alertmanager is not installed (scripts/install-peers.sh)")
    (tmp_path / "am.yml").write_text(
        f"""
route: {{receiver: pd, group_by: [alertname], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}
receivers:
  - name: pd
    pagerduty_configs:
      - {{routing_key: "{KEY}", url: "{pd.base}/v2/enqueue", send_resolved: true}}
"""
    )
    port = free_port()
    am = f"http://127.0.0.1:{port}"
    proc = _start_alertmanager(am_bin, tmp_path, port)
    try:
        name = f"AmPaged{uuid.uuid4().hex[:6]}"
        alert = {"labels": {"alertname": name, "instance": "db1"}, "annotations": {"summary": "db1 is down"}}
        for _ in range(300):
            try:
                async with pd.http.post(am + "/api/v2/alerts", json=[alert]) as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("alertmanager did not start: " + (tmp_path / "am.log").read_text()[-2000:])

        async def ours(state: str) -> dict[str, Any]:
            for _ in range(400):
                found = [i for i in await pd.daemon.incidents.list(limit=1000) if name in i["title"]]
                if found and found[0]["state"] == state:
                    return found[0]
                await asyncio.sleep(0.025)
            raise AssertionError(
                f"no {state} incident for {name}: {found}; " + (tmp_path / "am.log").read_text()[-2000:]
            )

        inc = await ours("triggered")  # titled by Alertmanager's summary "[FIRING:1] NAME (db1)"
        # Alertmanager sends no class (alertname = the integration's name) and severity "error" (-> critical).
        assert inc["labels"]["alertname"] == "payments" and inc["labels"]["severity"] == "critical"
        assert inc["labels"]["team"] == "payments" and re.fullmatch(r"[0-9a-f]{64}", inc["labels"]["dedup_key"])
        ended = {**alert, "endsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
        async with pd.http.post(am + "/api/v2/alerts", json=[ended]) as r:
            assert r.status == 200
        done = await ours("resolved")
        assert done["id"] == inc["id"]
    finally:
        await asyncio.to_thread(_stop, proc)


async def test_follow_ups_for_unknown_keys_are_dropped(pd: PD) -> None:
    for action in ("acknowledge", "resolve"):
        assert await pd.event(action, "never-triggered") == "never-triggered"
    assert await pd.incidents("never-triggered") == []


INVALID = "invalid event", "Event object is invalid"
BAD_SEVERITY = "'payload.severity' is invalid (must be one of the following: 'critical', 'warning', 'error' or 'info')"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, ["'routing_key' cannot be blank", "'event_action' is missing or blank"]),
        (
            {"routing_key": KEY, "event_action": "trigger"},
            ["'payload' is missing or blank"],
        ),
        (
            {"routing_key": KEY, "event_action": "trigger", "payload": {}},
            [
                "'payload.summary' is missing or blank",
                "'payload.severity' is missing or blank",
                "'payload.source' is missing or blank",
            ],
        ),
        (
            {
                "routing_key": KEY,
                "event_action": "trigger",
                "payload": {"summary": "s", "source": "h", "severity": "x"},
            },
            ["'payload.severity' is invalid (must be one of the following: 'critical', 'warning', 'error' or 'info')"],
        ),
        (
            {
                "routing_key": KEY,
                "event_action": "trigger",
                "payload": {"summary": "s", "source": "h", "severity": [1]},
            },
            ["'payload.severity' is invalid (must be one of the following: 'critical', 'warning', 'error' or 'info')"],
        ),
        (
            {"routing_key": KEY, "event_action": "page"},
            ["'event_action' is invalid (must be one of the following: 'trigger', 'acknowledge' or 'resolve')"],
        ),
        ({"routing_key": KEY, "event_action": "acknowledge"}, ["'dedup_key' is missing or blank"]),
        ({"routing_key": KEY, "event_action": "resolve", "dedup_key": "  "}, ["'dedup_key' is missing or blank"]),
        (
            {"routing_key": KEY, "event_action": "resolve", "dedup_key": "k" * 256},
            ["'dedup_key' is too long (maximum is 255 characters)"],
        ),
        (
            {"routing_key": 5, "event_action": "resolve", "dedup_key": 7},
            ["'routing_key' must be a string", "'dedup_key' must be a string"],
        ),
        (
            {
                "routing_key": KEY,
                "event_action": "trigger",
                "payload": {"summary": "x" * 1025, "source": "h", "severity": "info", "timestamp": "soon"},
            },
            [
                "'payload.summary' is too long (maximum is 1024 characters)",
                "'payload.timestamp' is invalid (must be an ISO 8601 timestamp)",
            ],
        ),
        (
            {
                "routing_key": KEY,
                "event_action": "trigger",
                "payload": {"summary": "s\u0000", "source": "h", "severity": "info", "component": 3},
                "links": [{"text": "no href"}, "x"],
                "images": {"src": "https://x/"},
            },
            [
                "'payload.summary' contains a NUL character or an unpaired surrogate",
                "'payload.component' must be a string",
                "'links[0].href' is missing or blank",
                "'links[1]' must be an object",
                "'images' must be an array",
            ],
        ),
    ],
)
async def test_invalid_events(pd: PD, body: dict[str, Any], errors: list[str]) -> None:
    status, answer = await pd.send(body)
    assert status == 400
    assert answer == {"status": INVALID[0], "message": INVALID[1], "errors": errors}


async def test_unknown_routing_key(pd: PD) -> None:
    status, answer = await pd.send(
        {
            "routing_key": "0" * 32,
            "event_action": "trigger",
            "payload": {"summary": "s", "source": "h", "severity": "info"},
        }
    )
    assert status == 400
    assert answer == {"status": INVALID[0], "message": INVALID[1], "errors": ["Invalid routing key"]}


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"", b'{"a": NaN}', b"\xff\xfe"])
async def test_unrecognized_bodies(pd: PD, raw: bytes) -> None:
    status, answer = await pd.send(None, raw=raw)
    assert status == 400 and answer["status"] == "Unrecognized object"
    assert answer["message"] == "Event object format is unrecognized" and len(answer["errors"]) == 1


async def test_size_limit(pd: PD) -> None:
    body = {
        "routing_key": KEY,
        "event_action": "trigger",
        "payload": {"summary": "big", "source": "h", "severity": "info", "custom_details": {"x": "y" * 530_000}},
    }
    status, answer = await pd.send(body)
    assert status == 400 and answer["errors"] == ["Event object is larger than 512 KB"]
    body["payload"]["custom_details"] = {"x": "y" * 500_000}  # under 512 KB: accepted
    body["dedup_key"] = "big-one"
    status, answer = await pd.send(body)
    assert status == 202, answer
    await pd.event("resolve", "big-one")


async def test_no_token_needed_and_other_methods(pd: PD) -> None:
    async with pd.http.get(pd.base + "/v2/enqueue") as r:
        assert r.status == 405 and "error" in await r.json()
    # A bearer token is ignored (the routing key is what counts).
    async with pd.http.post(
        pd.base + "/v2/enqueue",
        json={"routing_key": "nope", "event_action": "resolve", "dedup_key": "a"},
        headers={"Authorization": f"Bearer {pd.token}"},
    ) as r:
        assert r.status == 400 and (await r.json())["errors"] == ["Invalid routing key"]


async def test_routing_keys_are_secrets(pd: PD) -> None:
    assert pd.daemon.redactor.scrub(f"key={KEY} other={OTHER_KEY}") == "key=*** other=***"
    status, _ = await pd.send({"routing_key": KEY, "event_action": "resolve", "dedup_key": "x"})
    assert status == 202
    async with pd.http.get(pd.base + "/metrics") as r:
        text = await r.text()
    assert 'fsincident_ingest_alerts_total{origin="pagerduty",result="invalid"}' in text
    assert KEY not in text


@pytest_asyncio.fixture(loop_scope="module")
async def pd_backend(db_url: str, tmp_path: Path) -> AsyncIterator[PD]:
    async with running_pd(tmp_path, db_url) as client:
        yield client


async def test_on_each_backend(pd_backend: PD) -> None:
    """The dedup_key lookup (a JSON label in SQL) and the whole cycle on SQLite and PostgreSQL alike."""
    pd = pd_backend
    dk = await pd.event("trigger", "backend/1")
    await pd.wait(dk, "triggered")
    await pd.event("acknowledge", dk)
    await pd.wait(dk, "acknowledged")
    await pd.event("resolve", dk)
    await pd.wait(dk, "resolved")
    for raw in (b'{"dedup_key": "a\\u0000b"}', b'{"dedup_key": "\\ud800"}'):
        body = json.loads(raw) | {"routing_key": KEY, "event_action": "resolve"}
        status, answer = await pd.send(None, raw=json.dumps(body).encode())
        assert status == 400 and answer["errors"] == ["'dedup_key' contains a NUL character or an unpaired surrogate"]
