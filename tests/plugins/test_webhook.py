"""``type: webhook`` against real local peers: the payload equals what the real Alertmanager 0.25 sends to a webhook
for the same alerts (captured from the Debian binary), statuses map to retryable or permanent failures, secrets
stay out of destinations, and the daemon's own pages arrive in Alertmanager's format."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fsincident import config as config_mod
from fsincident import plugins
from fsincident.app import Daemon
from fsincident.core import ConfigError, Labels, NotifyError, isoformat
from fsincident.notify.channels.webhook import ZERO_TIME, WebhookNotifier, WebhookOptions, alertmanager_payload, go_time
from fsincident.plugins import Message
from fsincident.store.tables import AlertTransition
from tests.helpers import ThreadedServer, free_port, write_config

AM_BIN = shutil.which("prometheus-alertmanager")
EXTERNAL = "http://am.example:9093"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


class Hook(ThreadedServer):
    """Records every POST (path, headers, JSON body); answers ``statuses[path]`` (200 by default) after ``delay``."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.statuses: dict[str, int] = {}
        self.delay = 0.0
        self._lock = threading.Lock()
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        super().__init__(app)

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            self.got.append({"path": request.path, "headers": dict(request.headers), "body": json.loads(raw)})
        status = self.statuses.get(request.path, 200)
        return web.Response(status=status, text="ok" if status < 300 else "refused: bad payload")

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [g["body"] for g in self.got if g["path"] == path]

    def wait(self, path: str, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.bodies(path)
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{path}: wanted {n} payloads in {timeout}s, got {self.bodies(path)}")


@pytest.fixture(scope="module")
def hook():
    h = Hook().start()
    yield h
    h.stop()


# ---------------------------------------------------------------------- the same alerts, posted to the real AM

T0 = (datetime.now(UTC) - timedelta(minutes=3)).replace(microsecond=123000)
ALERTS = [
    {"labels": {"alertname": "Mem", "instance": "b", "zz": "1"}, "annotations": {"summary": "b", "team": "x"}},
    {"labels": {"alertname": "Mem", "job": "node", "instance": "c"}, "annotations": {"summary": "c", "team": "x"}},
    {
        "labels": {"alertname": "Mem", "instance": "a", "severity": "critical"},
        "annotations": {"team": "x"},
        "generatorURL": "http://prom.example/graph?g0.expr=up",
    },
    {"labels": {"alertname": "Mem", "aaa": "q"}, "annotations": {"team": "x"}},
]


def _am_time(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _post(url: str, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(
        url + "/api/v2/alerts", json.dumps(alerts).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


@pytest.fixture(scope="module")
def am(hook: Hook, tmp_path_factory: pytest.TempPathFactory):
    """The real Alertmanager 0.25 with two webhook receivers (all alerts / ``max_alerts: 2``) posting to ``hook``;
    yields its payloads: [firing, after one alert resolved] for each receiver, and the resolve time."""
    if AM_BIN is None:
        pytest.skip("prometheus-alertmanager is not installed (scripts/install-peers.sh)")
    d = tmp_path_factory.mktemp("am")
    (d / "am.yml").write_text(
        f"""
route:
  receiver: all
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - {{receiver: all, continue: true}}
    - {{receiver: two}}
receivers:
  - name: all
    webhook_configs: [{{url: "{hook.url}/am/all", send_resolved: true}}]
  - name: two
    webhook_configs: [{{url: "{hook.url}/am/two", send_resolved: true, max_alerts: 2}}]
"""
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            AM_BIN,
            f"--config.file={d / 'am.yml'}",
            f"--storage.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            f"--web.external-url={EXTERNAL}/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(d / "am.log", "wb"),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("alertmanager did not start: " + (d / "am.log").read_text()[-2000:])
            time.sleep(0.05)
        _post(url, [{**a, "startsAt": _am_time(T0)} for a in ALERTS])
        hook.wait("/am/all", 1)
        hook.wait("/am/two", 1)
        ended = datetime.now(UTC).replace(microsecond=456000) - timedelta(seconds=1)
        resolved = {**ALERTS[2], "startsAt": _am_time(T0), "endsAt": _am_time(ended)}
        _post(url, [resolved])
        yield {"all": hook.wait("/am/all", 2)[:2], "two": hook.wait("/am/two", 2)[:2], "ended": ended}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def page_data(receiver: str, resolved_at: datetime | None = None) -> dict[str, Any]:
    """``Message.data`` as the incidents stage writes it, for ``ALERTS`` (the third one resolved at ``resolved_at``)."""
    alerts = []
    for i, a in enumerate(ALERTS):
        done = resolved_at is not None and i == 2
        alerts.append(
            {
                "fingerprint": Labels(a["labels"]).fingerprint,
                "alertname": "Mem",
                "origin": "alertmanager",
                "labels": a["labels"],
                "annotations": a["annotations"],
                "value": None,
                "state": "resolved" if done else "firing",
                "starts_at": isoformat(T0),
                "ends_at": isoformat(resolved_at) if done else None,
                "generator_url": a.get("generatorURL", ""),
            }
        )
    return {
        "incident": {"id": 7, "title": "Mem", "state": "triggered", "labels": {"alertname": "Mem"}},
        "alerts": alerts,
        "group_key": "0123456789abcdef0123456789abcdef",
        "group_labels": {"alertname": "Mem"},
        "receiver": receiver,
        "reason": "trigger",
        "external_url": EXTERNAL,
    }


def notifier(url: str, **kw: Any) -> WebhookNotifier:
    return WebhookNotifier(WebhookOptions(name="hook", type="webhook", url=url, **kw))


def assert_same_as_alertmanager(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Field by field: the same keys in the same order, the same types, and equal values except the opaque group
    key and alert fingerprints (ours come from our own hashing)."""
    assert list(ours) == list(theirs)
    for key in theirs:
        assert type(ours[key]) is type(theirs[key]), key
    for key in ("receiver", "status", "groupLabels", "commonLabels", "commonAnnotations", "externalURL", "version"):
        assert ours[key] == theirs[key], key
    assert ours["truncatedAlerts"] == theirs["truncatedAlerts"]
    assert len(ours["alerts"]) == len(theirs["alerts"])
    for mine, real in zip(ours["alerts"], theirs["alerts"], strict=True):
        assert list(mine) == list(real)
        for key in real:
            assert type(mine[key]) is type(real[key]), key
        for key in ("status", "labels", "annotations", "startsAt", "endsAt", "generatorURL"):
            assert mine[key] == real[key], (key, mine, real)
        assert re.fullmatch(r"[0-9a-f]{16}", mine["fingerprint"]) and re.fullmatch(r"[0-9a-f]{16}", real["fingerprint"])
        assert RFC3339.match(mine["startsAt"]) and (RFC3339.match(mine["endsAt"]) or mine["endsAt"] == ZERO_TIME)
    assert isinstance(ours["groupKey"], str) and ours["groupKey"]


@pytest.mark.parametrize("receiver", ["all", "two"])
async def test_payload_equals_alertmanagers(am: dict[str, Any], hook: Hook, receiver: str) -> None:
    firing, mixed = am[receiver]
    n = notifier(f"{hook.url}/ours/{receiver}", max_alerts=2 if receiver == "two" else 0)
    await n.send(0, Message("t", "b", "trigger", data=page_data(receiver)), 5)
    # The group's update after one alert ended (the incident is still open: a trigger-kind page).
    await n.send(0, Message("t", "b", "trigger", data=page_data(receiver, am["ended"])), 5)
    ours = hook.wait(f"/ours/{receiver}", 2)
    assert_same_as_alertmanager(ours[0], firing)
    assert_same_as_alertmanager(ours[1], mixed)
    # What the comparison covers: Alertmanager's alert order (job, instance, labels), the zero endsAt of firing
    # alerts, common labels/annotations over the alerts sent, and truncation.
    assert [a["labels"].get("instance") for a in firing["alerts"]][: 2 if receiver == "two" else 4] == [
        "c",
        "a",
        "b",
        None,
    ][: 2 if receiver == "two" else 4]
    assert firing["truncatedAlerts"] == (2 if receiver == "two" else 0)
    assert mixed["status"] == "firing" and [a["status"] for a in mixed["alerts"]][:2] == ["firing", "resolved"]
    assert ours[0]["commonAnnotations"] == firing["commonAnnotations"] == {"team": "x"}


async def test_request_like_alertmanagers(am: dict[str, Any], hook: Hook) -> None:
    """Method, content type and a compact JSON body, as Alertmanager posts them."""
    with hook._lock:
        theirs = next(g for g in hook.got if g["path"] == "/am/all")
    n = notifier(f"{hook.url}/ours/headers")
    await n.send(0, Message("t", "b", "trigger", data=page_data("all")), 5)
    [ours] = [g for g in hook.got if g["path"] == "/ours/headers"]
    assert ours["headers"]["Content-Type"] == theirs["headers"]["Content-Type"] == "application/json"
    assert ours["headers"]["User-Agent"].startswith("fsincident")


# ---------------------------------------------------------------------- pure payload rules


def test_go_time() -> None:
    assert go_time("2026-01-02T03:04:05Z") == "2026-01-02T03:04:05Z"
    assert go_time("2026-01-02T03:04:05.120000+00:00") == "2026-01-02T03:04:05.12Z"
    assert go_time("2026-01-02T04:04:05.000001+01:00") == "2026-01-02T03:04:05.000001Z"
    assert go_time(None) == ZERO_TIME
    with pytest.raises(ValueError):
        go_time("yesterday")


def test_send_resolved_off_drops_resolved_alerts() -> None:
    data = page_data("r", datetime.now(UTC))
    body = alertmanager_payload(data, send_resolved=False)
    assert body is not None and [a["status"] for a in body["alerts"]] == ["firing"] * 3
    only_resolved = {**data, "alerts": [a for a in data["alerts"] if a["state"] == "resolved"]}
    assert alertmanager_payload(only_resolved, send_resolved=False) is None
    body = alertmanager_payload(only_resolved)
    assert body is not None and body["status"] == "resolved" and body["alerts"][0]["endsAt"] != ZERO_TIME


async def test_resolve_notice_reports_every_alert_resolved(hook: Hook) -> None:
    """An incident resolved by hand while alerts still fire: the receiver is told the group is resolved."""
    data = page_data("r", datetime(2026, 5, 4, 10, 0, 1, tzinfo=UTC))
    data["incident"] = {**data["incident"], "state": "resolved", "resolved_at": "2026-05-04T10:00:02.5Z"}
    await notifier(hook.url + "/manual").send(0, Message("t", "b", "resolve", data=data), 5)
    [body] = hook.wait("/manual", 1)
    assert body["status"] == "resolved" and {a["status"] for a in body["alerts"]} == {"resolved"}
    ends = sorted(a["endsAt"] for a in body["alerts"])
    assert ends == ["2026-05-04T10:00:01Z"] + ["2026-05-04T10:00:02.5Z"] * 3


# ---------------------------------------------------------------------- statuses, errors, secrets


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (401, True), (404, True), (408, False), (413, True), (425, False), (429, False), (500, False)],
)
async def test_status_codes(hook: Hook, status: int, permanent: bool) -> None:
    path = f"/status/{status}"
    hook.statuses[path] = status
    with pytest.raises(NotifyError) as e:
        await notifier(hook.url + path).send(0, Message("t", "b", "trigger", data=page_data("r")), 5)
    assert e.value.permanent is permanent
    assert str(e.value).startswith(f"HTTP {status}") and "refused: bad payload" in str(e.value)


async def test_2xx_is_success(hook: Hook) -> None:
    hook.statuses["/status/204"] = 204
    await notifier(hook.url + "/status/204").send(0, Message("t", "b", "trigger", data=page_data("r")), 5)


async def test_timeout_and_refused_are_retryable(hook: Hook) -> None:
    hook.delay = 1.0
    try:
        n = notifier(hook.url + "/slow", timeout="200ms")
        t0 = time.monotonic()
        with pytest.raises(NotifyError) as e:
            await n.send(0, Message("t", "b", "trigger", data=page_data("r")), 10)
        assert e.value.permanent is False and "timed out after 0.2s" in str(e.value)
        assert time.monotonic() - t0 < 0.9
    finally:
        hook.delay = 0.0
    with pytest.raises(NotifyError) as e:
        refused = notifier(f"http://127.0.0.1:{free_port()}/x")
        await refused.send(0, Message("t", "b", "trigger", data=page_data("r")), 2)
    assert e.value.permanent is False


async def test_what_alertmanager_format_cannot_carry(hook: Hook) -> None:
    n = notifier(hook.url + "/skip")
    # Alertmanager has no acknowledgement: its receivers never get one (recorded as sent, nothing posted).
    await n.send(0, Message("t", "b", "acknowledge", data=page_data("r")), 5)
    with pytest.raises(NotifyError) as e:
        await n.send(0, Message("On call now: alice", "b", "info"), 5)  # a handoff notice has no alerts
    assert e.value.permanent is True and "format alertmanager" in str(e.value)
    with pytest.raises(NotifyError) as e:
        await n.send(1, Message("t", "b", "trigger", data=page_data("r")), 5)
    assert e.value.permanent is True
    assert hook.bodies("/skip") == []


async def test_json_format(hook: Hook) -> None:
    n = notifier(hook.url + "/json", format="json", max_alerts=3, send_resolved=False)
    await n.send(0, Message("Mem firing", "body text", "trigger", "critical", data=page_data("r")), 5)
    await n.send(0, Message("Mem resolved", "b", "resolve", data=page_data("r", datetime.now(UTC))), 5)
    await n.send(0, Message("On call now: alice", "handoff", "info"), 5)
    first, notice = hook.wait("/json", 2)
    assert first["version"] == "1" and first["kind"] == "trigger" and first["title"] == "Mem firing"
    assert first["severity"] == "critical" and first["body"] == "body text" and first["incident"]["id"] == 7
    assert len(first["alerts"]) == 3 and first["truncated_alerts"] == 1 and first["receiver"] == "r"
    assert notice["kind"] == "info" and notice["incident"] is None and notice["alerts"] == []


async def test_credentials_headers_and_redaction(hook: Hook) -> None:
    token = "s3cr3t-Bearer-token-value"
    n = notifier(
        f"http://bob:pa55word@127.0.0.1:{hook.port}/hooks/T0001/XyZ0123456789abcdef",
        headers={"X-Api-Key": token, "X-Team": "ops"},
    )
    assert n.destinations() == [f"http://127.0.0.1:{hook.port}/***"]
    secrets = n.secrets()
    for s in (token, "pa55word", "XyZ0123456789abcdef"):
        assert s in secrets
    assert "ops" not in secrets and "hooks" not in secrets
    await n.send(0, Message("t", "b", "trigger", data=page_data("r")), 5)
    [got] = [g for g in hook.got if g["path"].startswith("/hooks/")]
    assert got["headers"]["X-Api-Key"] == token and got["headers"]["X-Team"] == "ops"
    assert got["headers"]["Authorization"] == "Basic Ym9iOnBhNTV3b3Jk"


def test_registered_and_config(tmp_path: Path) -> None:
    assert plugins.notifiers.get("webhook") is WebhookNotifier
    good = write_config(
        tmp_path / "good",
        """
        channels:
          - {name: am, type: webhook, url: "${HOOK_URL}", headers: {Authorization: "Bearer ${HOOK_TOKEN}"}}
          - {name: js, type: webhook, url: "https://hooks.example/x", format: json, max_alerts: 5, timeout: 3s}
        routes:
          - {notify: ["channel:am", "channel:js"]}
        """,
    )
    cfg = config_mod.load(good, environ={"HOOK_URL": "http://127.0.0.1:1/h", "HOOK_TOKEN": "tok-123456"})
    am, js = cfg.channels
    assert am.format == "alertmanager" and am.send_resolved is True
    assert am.headers["Authorization"] == "Bearer tok-123456"
    assert js.format == "json" and js.max_alerts == 5 and js.timeout == timedelta(seconds=3)
    bad = write_config(
        tmp_path / "bad",
        """
        channels:
          - {name: a, type: webhook, url: "ftp://x/"}
          - {name: b, type: webhook, url: "http://x/", format: slack}
          - {name: c, type: webhook, url: "http://x/", headers: {"Bad Name": v}}
          - {name: d, type: webhook, url: "http://x/", max_alerts: -1}
          - {name: e, type: webhook}
          - {name: f, type: webhook, url: "http://x/", timeout: 0s}
        """,
    )
    with pytest.raises(ConfigError) as e:
        config_mod.load(bad)
    text = str(e.value)
    for expected in (
        ":3: channels[0].url: URL scheme should be 'http' or 'https'",
        ":4: channels[1].format: Input should be 'alertmanager' or 'json', got 'slack'",
        ":5: channels[2].headers: invalid header name 'Bad Name'",
        ":6: channels[3].max_alerts: Input should be greater than or equal to 0",
        ":7: channels[4].url: required key is missing",
        ":8: channels[5].timeout: timeout must be positive",
    ):
        assert expected in text, text


# ---------------------------------------------------------------------- the daemon's own pages


async def test_daemon_pages_in_alertmanager_format(hook: Hook, tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp_path}/state.db
        external_url: https://oncall.example.com
        channels:
          - {{name: am, type: webhook, url: "{hook.url}/daemon"}}
        routes:
          - {{receiver: team-x, notify: ["channel:am"], group_by: [alertname], group_wait: 300ms}}
        """,
    )
    daemon = Daemon(config_mod.load(cfg))
    await daemon.start()
    try:
        now = daemon.clock.now()
        async with daemon.store.session() as s:
            for inst in ("b", "a"):
                lab = {"alertname": "DiskFull", "instance": inst, "job": "node"}
                s.add(
                    AlertTransition(
                        fingerprint=Labels(lab).fingerprint,
                        alertname="DiskFull",
                        origin="test",
                        labels=lab,
                        annotations={"summary": f"disk full on {inst}"},
                        value=1.0,
                        state="firing",
                        at=now,
                    )
                )
        daemon.engine.kick("incidents")
        [body] = await asyncio.to_thread(hook.wait, "/daemon", 1)
    finally:
        await daemon.stop()
    assert list(body) == [
        "receiver",
        "status",
        "alerts",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "version",
        "groupKey",
        "truncatedAlerts",
    ]
    assert body["version"] == "4" and body["status"] == "firing" and body["truncatedAlerts"] == 0
    assert body["groupLabels"] == {"alertname": "DiskFull"} and body["receiver"] == "team-x"
    # The page's data carries ``external_url`` once the incidents stage adds it; "" (as Alertmanager without
    # --web.external-url) until then.
    assert body["externalURL"] in ("https://oncall.example.com", "")
    assert body["commonLabels"] == {"alertname": "DiskFull", "job": "node"} and body["commonAnnotations"] == {}
    assert [a["labels"]["instance"] for a in body["alerts"]] == ["a", "b"]
    for a in body["alerts"]:
        assert a["status"] == "firing" and a["endsAt"] == ZERO_TIME and RFC3339.match(a["startsAt"])
        assert a["fingerprint"] == Labels(a["labels"]).fingerprint
