"""No secret reaches a log line, an error, an API response, a page or a template's context.

A secret in a channel URL never reaches the log or the API, even at debug level and through failures; a full run
with secrets planted everywhere (channel and contact URLs, a webhook's headers, sources' credentials, the API
token, a PagerDuty routing key, the link key, the chat-ops secrets) is scanned byte by byte.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import json
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import pytest

from tests.e2e.harness import (
    incident,
    log_events,
    make_config,
    metrics_text,
    rules_yaml,
    scrape_source,
    wait_metric,
    wait_timeline,
    wait_until,
)
from tests.helpers import free_port, run_cli

SECRET = "PlantedSecret123"

RULES = rules_yaml(
    """\
      - alert: QueueBacklog
        expr: queue_depth > 100
        severity: critical
"""
)


@pytest.mark.slow
def test_secret_in_channel_url_is_never_logged_or_served(tmp_path, monkeypatch, exposition, receiver, spawn):
    monkeypatch.setenv("HOOK_PASSWORD", SECRET)  # the daemon and the token CLI both expand ${HOOK_PASSWORD}
    exposition.set("queue_depth", 500, queue="orders")
    receiver.status = 500
    dead = free_port()  # nothing listens here: connection refused
    port = free_port()
    urls = [
        f"json://user:{SECRET}@127.0.0.1:{receiver.port}/hook",  # answers 500
        "json://user:${HOOK_PASSWORD}@127.0.0.1:" + str(dead) + "/hook",  # from the environment
    ]
    cfg = make_config(
        tmp_path / "cfg",
        port=port,
        database=f"sqlite:///{tmp_path}/state.db",
        sources=scrape_source(exposition.url),
        channel_urls=urls,
        rules=RULES,
        delivery="{timeout: 2s, initial_backoff: 100ms, max_backoff: 300ms, max_attempts: 3}",
        extra="log_level: debug\n",
    )
    d = spawn(cfg, port)
    d.token = d.create_token("read")
    iid = d.wait_incidents(lambda i: len(i) == 1)[0]["id"]
    inc = wait_timeline(d, iid, "notify_failed", 2)  # both destinations give up after 3 attempts
    assert len(receiver.hits) == 3
    assert receiver.received == []
    notes = [e["note"] for e in inc["timeline"] if e["kind"] in ("notify_retry", "notify_failed")]
    assert any("HTTP 500" in n for n in notes) and any("connection error" in n for n in notes), notes

    # A reload that fails on the channel (an unknown key next to the secret URL) must not echo it either.
    main = (cfg / "fsincident.yaml").read_text()
    (cfg / "fsincident.yaml").write_text(main.replace("{name: ops, urls:", "{name: ops, colour: red, urls:"))
    d.proc.send_signal(signal.SIGHUP)
    wait_metric(d, "fsincident_config_last_reload_successful", 0)
    wait_until(lambda: any(e.get("event") == "config_reload_failed" for e in log_events(d)), 5, "reload failure")

    responses = []
    for path in ("/api/v1/incidents", f"/api/v1/incidents/{iid}", "/api/v1/rules", "/api/v2/alerts"):
        status, body = d.api("GET", path)
        assert status < 500, (path, status, body)
        responses.append(json.dumps(body))
    responses.append(json.dumps(incident(d, iid)))
    responses.append(metrics_text(d))
    assert d.stop() == 0

    log = d.logs()
    events = [e.get("event") for e in log_events(d)]
    assert "delivery_retry" in events and "delivery_failed" in events
    assert len(log) > 1000 and '"level": "debug"' in log  # debug lines were written and scanned too
    assert SECRET not in log, [line for line in log.splitlines() if SECRET in line][:3]
    for text in responses:
        assert SECRET not in text, text[:2000]
    # The destination is still identifiable, in its redacted form.
    assert f"127.0.0.1:{receiver.port}" in responses[1]


def test_scrape_credentials_are_registered_as_secrets(tmp_path):
    """A bearer token in a scrape source's headers is hidden by the daemon's log redactor."""
    from fsincident.app import Daemon
    from fsincident.config import load

    (tmp_path / "fsincident.yaml").write_text(
        f"database: sqlite:///{tmp_path}/s.db\n"
        "sources:\n"
        "  - name: app\n"
        "    type: scrape\n"
        "    url: http://user:UrlSecret987@127.0.0.1:9/metrics\n"
        "    headers: {Authorization: 'Bearer HeaderSecret654'}\n"
    )
    daemon = Daemon(load(tmp_path))
    daemon._set_secrets(daemon.config)
    line = daemon.redactor.scrub("Authorization: Bearer HeaderSecret654 to http://user:UrlSecret987@127.0.0.1:9/")
    assert "HeaderSecret654" not in line and "UrlSecret987" not in line


# ------------------------------------------------------------------------------------------- the full run
#
# Distinct random secrets are planted in every place the configuration can hold one; then the real daemon is
# driven through everything that can print, log, answer or send (a page delivered and a page failing to a dead
# letter, signed links, chat-ops, the CLI, a reload, every GET endpoint, error responses). Every byte that came
# out is scanned for every secret, as written and in its URL-encoded, base64 and hex forms.

TEMPLATE_NAMES = ("title", "message", "chat", "email_subject", "email.html", "email.txt", "digest")
CONTEXT_NAMES = (
    "kind", "kind_label", "incident", "alerts", "firing", "resolved", "reason", "actor", "note", "external_url",
    "links", "recipient", "destination", "target", "channel", "group", "data", "digest", "items", "pages",
    "rows", "count", "config", "settings", "options", "env", "environ", "secrets", "secret", "url", "urls",
    "style", "format", "message", "title", "body", "now", "user", "users", "token", "key", "markdown", "shown",
    "incidents", "alert", "page", "request", "daemon", "store", "signer",
)  # fmt: skip
DUMP = "CTXDUMP\n" + "\n".join(f"{{% if {n} is defined %}}{n}={{{{ {n} }}}}{{% endif %}}" for n in CONTEXT_NAMES)
"""A template that prints every name it may be given (one a line: SMTP refuses lines over 1000 characters)."""


def _secret(tag: str) -> str:
    """A random secret, recognisable in a failure message by its tag."""
    return f"{tag}{secrets.token_hex(10)}"


def _forms(value: str, user: str | None = None) -> dict[str, str]:
    """The ways a secret can show up: as written, URL-encoded, base64 (also of ``user:secret``, basic auth), hex."""
    out = {
        "raw": value,
        "url-encoded": quote(value, safe=""),
        "form-encoded": quote_plus(value),
        "base64": base64.b64encode(value.encode()).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(value.encode()).decode().rstrip("="),
        "hex": value.encode().hex(),
    }
    if user is not None:
        out["basic-auth"] = base64.b64encode(f"{user}:{value}".encode()).decode().rstrip("=")
    return out


class Output:
    """Everything that came out of the run, labelled by where it came from."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, text: Any) -> None:
        self.items.append((where, text if isinstance(text, str) else json.dumps(text, default=str)))

    def leaks(self, planted: dict[str, tuple[str, str | None]]) -> list[str]:
        found = []
        for name, (value, user) in planted.items():
            for where, text in self.items:
                for form, shown in _forms(value, user).items():
                    at = text.find(shown)
                    if at >= 0:
                        found.append(f"{name} ({form}) in {where}: ...{text[max(at - 150, 0) : at + 80]}...")
                        break  # one form per place is enough to say
        return found


def _http(
    out: Output, method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """One request; its status line, headers and body are recorded in ``out``; returns (status, body)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    text = raw.decode(errors="replace")
    where = f"{method} {urlsplit(url).path[:60]} -> {status}"
    out.add(where + " (headers)", "\n".join(f"{k}: {v}" for k, v in hdrs.items()))
    out.add(where, text)
    return status, text


def _run_cli(out: Output, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    res = run_cli(*args, env=env, cwd=cwd)
    out.add(f"fsincident {' '.join(args[:3])} (stdout)", res.stdout)
    out.add(f"fsincident {' '.join(args[:3])} (stderr)", res.stderr)
    return res


class Smtp:
    """A real SMTP server (aiosmtpd) that asks for a password and keeps the text of every mail it receives."""

    def __init__(self, password: str):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.mails: list[str] = []
        smtp = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                parts = [str(msg["Subject"])]
                for part in msg.walk():
                    if not part.is_multipart():
                        payload = part.get_payload(decode=True) or b""
                        parts.append(payload.decode(errors="replace"))
                smtp.mails.append("\n".join(parts))
                return "250 OK"

        def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            return AuthResult(success=getattr(data, "password", b"") == password.encode(), auth_data=data)

        self.port = free_port()
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=self.port, authenticator=auth, auth_require_tls=False
        )

    def __enter__(self) -> Smtp:
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()


def _link_tokens(text: str) -> list[str]:
    return re.findall(r"/l/([A-Za-z0-9_-]{40,})", text)


def _token_payload(token: str) -> str:
    """What a link token carries in the clear (its recipient), decoded."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return raw.decode("utf-8", errors="replace")


def _get_routes(iid: int) -> list[str]:
    """Every GET route of the API with its placeholders filled (new endpoints are covered as they land)."""
    from fsincident.api import ApiContext, build_app

    app = build_app(ApiContext(None, None, None, None, lambda: True))  # type: ignore[arg-type]
    fill = {"id": str(iid), "name": "primary", "token": "x" * 60}
    paths = set()
    for route in app.router.routes():
        if route.method != "GET":
            continue
        path = route.resource.canonical if route.resource else ""
        path = path.replace("/users/{name}", "/users/alice").replace("/heartbeats/{name}", "/heartbeats/backup")
        for key, value in fill.items():
            path = path.replace("{" + key + "}", value)
        if "{" not in path:
            paths.add(path)
    return sorted(paths)


@pytest.mark.slow
def test_no_planted_secret_leaves_a_full_run(tmp_path, monkeypatch, exposition, receiver, spawn):
    s = {
        "ops_password": _secret("OpsPw"),
        "ops_path_token": _secret("OpsPath"),
        "ops_query_token": _secret("OpsQuery"),
        "dead_path_token": _secret("DeadPath"),
        "dead_header": _secret("DeadHdr"),
        "mail_password": _secret("Ml/Pw+"),  # characters that must be URL-encoded in the apprise URL
        "alice_password": _secret("AlicePw"),
        "fallback_password": _secret("FbPw"),
        "webhook_path_token": _secret("WhPath"),
        "webhook_bearer": _secret("WhBearer"),
        "scrape_password": _secret("ScrapePw"),
        "scrape_bearer": _secret("ScrapeBearer"),
        "down_password": _secret("DownPw"),
        "down_api_key": _secret("DownKey"),
        "prometheus_token": _secret("PromTok"),
        "heartbeat_key": _secret("HbKey"),
        "pagerduty_routing_key": _secret("PdKey"),
        "link_secret": _secret("LinkSecret"),
        "slack_signing_secret": _secret("SlackSig"),
        "mattermost_token": _secret("MmTok"),
    }
    # Credentials a client got wrong: answers and logs must not echo them either.
    wrong = {
        "wrong_api_token": _secret("WrongApi"),
        "wrong_mattermost_token": _secret("WrongMm"),
        "wrong_routing_key": _secret("WrongPd"),
        "wrong_heartbeat_key": _secret("WrongHb"),
    }
    users = {
        "ops_password": "opsuser",
        "mail_password": "alice",
        "alice_password": "alice",
        "fallback_password": "fb",
        "scrape_password": "scraper",
        "down_password": "downer",
    }
    port, dead, down = free_port(), free_port(), free_port()
    cfg_dir = tmp_path / "cfg"
    env = {  # half of the secrets come from the environment, half are written in the file
        "FSINCIDENT_LINK_SECRET": s["link_secret"],
        "SLACK_SIGNING_SECRET": s["slack_signing_secret"],
        "MATTERMOST_TOKEN": s["mattermost_token"],
        "OPS_PASSWORD": s["ops_password"],
        "PD_KEY": s["pagerduty_routing_key"],
        "SCRAPE_PASSWORD": s["scrape_password"],
    }
    for k, v in env.items():  # the daemon and every CLI run expand them
        monkeypatch.setenv(k, v)
    out = Output()
    exposition.set("queue_depth", 500, queue="orders")
    with Smtp(s["mail_password"]) as smtp:
        rcv = receiver.url
        mail = f"mailto://alice:{quote(s['mail_password'], safe='')}@127.0.0.1:{smtp.port}"
        ops_urls = [
            f"json://opsuser:${{OPS_PASSWORD}}@127.0.0.1:{receiver.port}/ops/{s['ops_path_token']}"
            f"?-token={s['ops_query_token']}",
            f"json://127.0.0.1:{dead}/dead/{s['dead_path_token']}?+X-Api-Key={s['dead_header']}",
            f"{mail}?to=ops@example.com&from=fsincident@example.com&mode=insecure",
        ]
        main = f"""\
listen: 127.0.0.1:{port}
database: sqlite:///{tmp_path}/state.db
log_level: debug
delivery: {{timeout: 2s, initial_backoff: 100ms, max_backoff: 200ms, max_attempts: 2, fallback: channel:fallback}}
sources:
  - name: app
    type: scrape
    url: "http://scraper:${{SCRAPE_PASSWORD}}@127.0.0.1:{exposition.port}/metrics"
    interval: 1s
  - name: bearer
    type: scrape
    url: "{exposition.url}/metrics"
    headers: {{Authorization: "Bearer {s["scrape_bearer"]}"}}
    interval: 1s
  - name: down
    type: scrape
    url: "http://downer:{s["down_password"]}@127.0.0.1:{down}/metrics"
    headers: {{X-Api-Key: "{s["down_api_key"]}"}}
    interval: 1s
    down_after: 1
  - name: prom
    type: prometheus
    url: "http://127.0.0.1:{down}"
    interval: 1s
    bearer_token: "{s["prometheus_token"]}"
  - name: cron
    type: heartbeat
    checks:
      - {{name: backup, period: 1h, secret: "{s["heartbeat_key"]}"}}
channels:
  - name: ops
    urls: {json.dumps(ops_urls)}
    rate_limit: {{max: 1, per: 1m, digest: 1s}}  # the warning pages after the first wait for a digest
  - name: fallback
    urls: ["json://fb:{s["fallback_password"]}@127.0.0.1:{receiver.port}/fallback"]
  - name: hook
    type: webhook
    url: "{rcv}/wh/{s["webhook_path_token"]}"
    headers: {{Authorization: "Bearer {s["webhook_bearer"]}"}}
users:
  - name: alice
    contacts:
      - "{mail}?to=alice@example.com&from=fsincident@example.com&mode=insecure"
      - "json://alice:{s["alice_password"]}@127.0.0.1:{receiver.port}/alice"
schedules:
  - name: primary
    timezone: UTC
    layers:
      - {{rotation: weekly, handoff: "Mon 09:00", users: [alice]}}
routes:
  - {{notify: ["channel:ops", "user:alice", "channel:hook"]}}
integrations:
  - {{name: pd, type: pagerduty, routing_key: "${{PD_KEY}}", labels: {{team: pd}}}}
links: {{secret: "${{FSINCIDENT_LINK_SECRET}}", ttl: 1h}}
chatops:
  slack: {{signing_secret: "${{SLACK_SIGNING_SECRET}}"}}
  mattermost: {{token: "${{MATTERMOST_TOKEN}}"}}
  users: {{U012ABCDEF: alice}}
"""
        rules = rules_yaml(
            """\
      - alert: QueueBacklog
        expr: queue_depth > 100
        severity: critical
        annotations: {summary: "backlog {{ value }} on {{ labels.instance }}"}
      - alert: DownSource
        source: down
        expr: up == 0
      - alert: PromQuery
        source: prom
        query: up == 0
        expr: value > 0
"""
        )
        cfg_dir.mkdir()
        (cfg_dir / "fsincident.yaml").write_text(main)
        (cfg_dir / "rules.d").mkdir()
        (cfg_dir / "rules.d" / "app.yaml").write_text(rules)
        (cfg_dir / "templates").mkdir()
        for name in TEMPLATE_NAMES:  # every template dumps every name it is given
            (cfg_dir / "templates" / f"{name}.j2").write_text(DUMP + "\n")

        res = _run_cli(out, "check", "--config", str(cfg_dir), env=env, cwd=cfg_dir)
        assert res.returncode == 0, res.stdout + res.stderr

        started = time.monotonic()
        d = spawn(cfg_dir, port)
        d.token = d.create_token("admin")
        token = d.token
        planted = {k: (v, users.get(k)) for k, v in {**s, **wrong}.items()}
        # The token is printed once by ``token create``; after that it is a secret like the others.
        planted["api_token"] = (token, None)

        # A rule fires: pages to the receiver (channel, user, webhook) and by mail; the dead destination fails.
        incs = d.wait_incidents(lambda i: any(x["title"].startswith("QueueBacklog") for x in i))
        iid = next(x["id"] for x in incs if x["title"].startswith("QueueBacklog"))
        receiver.wait_for(lambda m: {"/alice", "/wh/" + s["webhook_path_token"]} <= {x["_path"] for x in m})
        receiver.wait_for(lambda m: any(x["_path"].startswith("/ops/") for x in m))
        wait_timeline(d, iid, "notify_dead")  # the dead destination's dead letter
        wait_until(lambda: any(m["_path"] == "/fallback" for m in receiver.received), 10, "the fallback page")

        # The warning page over the rate limit went out in a digest (digest.j2 dumps its context too).
        digests = receiver.wait_for(
            lambda m: [x for x in m if x["_path"].startswith("/ops/") and "DIGEST" in x.get("title", "")]
        )
        digests = [x for x in digests if x["_path"].startswith("/ops/") and "DIGEST" in x.get("title", "")]
        assert any("items=" in x.get("message", "") for x in digests), digests

        # The override templates were used (else the dump proves nothing), and gave nothing away.
        dumped = [m for m in receiver.received if "CTXDUMP" in json.dumps(m)]
        assert dumped and any("incident=" in json.dumps(m) for m in dumped), receiver.received[:2]

        # PagerDuty Events v2 with the routing key, and with a wrong one.
        pd_event = {
            "event_action": "trigger",
            "payload": {"summary": "disk full", "source": "db1", "severity": "critical"},
        }
        hdr = {"Content-Type": "application/json"}
        st, _ = _http(
            out,
            "POST",
            d.url + "/v2/enqueue",
            body=json.dumps({**pd_event, "routing_key": s["pagerduty_routing_key"]}).encode(),
            headers=hdr,
        )
        assert st == 202
        st, _ = _http(
            out,
            "POST",
            d.url + "/v2/enqueue",
            body=json.dumps({**pd_event, "routing_key": wrong["wrong_routing_key"]}).encode(),
            headers=hdr,
        )
        assert 400 <= st < 500
        pd = d.wait_incidents(lambda i: any(x["labels"].get("team") == "pd" for x in i))
        pd_id = next(x["id"] for x in pd if x["labels"].get("team") == "pd")

        # Heartbeat pings with the check's key, and with a wrong one.
        assert _http(out, "GET", f"{d.url}/api/v1/heartbeats/backup?key={s['heartbeat_key']}")[0] == 200
        assert _http(out, "GET", f"{d.url}/api/v1/heartbeats/backup?key={wrong['wrong_heartbeat_key']}")[0] == 401

        # A signed link from a page: GET shows the confirmation page, POST acknowledges.
        tokens = [t for m in receiver.received for t in _link_tokens(json.dumps(m))]
        tokens += [t for m in smtp.mails for t in _link_tokens(m)]
        for t in tokens:  # a token carries its recipient in the clear: never a destination's secret
            out.add("link token payload", _token_payload(t))
        ack_link = next((t for t in tokens if _claim_action(t, s["link_secret"]) == ("ack", iid)), None)
        assert ack_link is not None, f"no ack link for incident {iid} in the pages; tokens: {tokens[:3]}"
        st, page = _http(out, "GET", f"{d.url}/l/{ack_link}")
        assert st == 200, page
        st, page = _http(
            out,
            "POST",
            f"{d.url}/l/{ack_link}",
            body=b"name=Alice+Link",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert st == 200, page
        _http(
            out,
            "POST",
            f"{d.url}/l/{ack_link}",
            body=b"",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        _http(out, "GET", f"{d.url}/l/{ack_link[:-3]}abc")  # a bad signature

        # Acknowledge through the API.
        st, body = d.api("POST", f"/api/v1/incidents/{pd_id}/ack", {"by": "alice", "note": "looking"})
        out.add("ack", body)
        assert st == 200, body

        # Chat-ops: a Slack-signed resolve, a Mattermost oncall and help; bad signature, wrong token.
        def slack(text: str, secret: str = s["slack_signing_secret"]) -> tuple[int, str]:
            form = urlencode(
                {
                    "command": "/fsincident",
                    "text": text,
                    "user_id": "U012ABCDEF",
                    "user_name": "alice.chat",
                    "channel_name": "ops",
                    "team_id": "T1",
                }
            ).encode()
            ts = str(int(time.time()))
            sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + form, hashlib.sha256).hexdigest()
            return _http(
                out,
                "POST",
                d.url + "/api/v1/chatops/slack",
                body=form,
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Slack-Request-Timestamp": ts,
                    "X-Slack-Signature": sig,
                },
            )

        def mattermost(text: str, token: str = s["mattermost_token"]) -> tuple[int, str]:
            form = urlencode(
                {"token": token, "command": "/fsincident", "text": text, "user_name": "alice", "channel_name": "ops"}
            ).encode()
            return _http(
                out,
                "POST",
                d.url + "/api/v1/chatops/mattermost",
                body=form,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )

        st, text = slack(f"resolve {iid} fixed by scaling")
        assert st == 200 and "in_channel" in text, text
        st, text = mattermost("oncall primary")
        assert st == 200, text
        st, text = mattermost("help")
        assert st == 200, text
        st, text = mattermost("silence 1h alertname=Nothing -- secrets test")
        assert st == 200, text
        assert slack("help", secret=_secret("NotTheSecret"))[0] == 401
        assert mattermost("help", token=wrong["wrong_mattermost_token"])[0] == 401

        # Error responses: bad token, bad bodies, unknown ids, bad parameters.
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        _http(out, "GET", d.url + "/api/v1/incidents", headers={"Authorization": f"Bearer {wrong['wrong_api_token']}"})
        _http(out, "GET", d.url + "/api/v1/incidents")
        _http(out, "POST", d.url + f"/api/v1/incidents/{iid}/ack", body=b"{not json", headers=auth)
        _http(out, "POST", d.url + f"/api/v1/incidents/{iid}/ack", body=b'{"secret": 1}', headers=auth)
        _http(out, "POST", d.url + "/api/v1/incidents/999999/resolve", body=b"{}", headers=auth)
        _http(out, "GET", d.url + "/api/v1/incidents?state=bogus", headers=auth)
        _http(out, "GET", d.url + "/api/v1/oncall?schedule=nope", headers=auth)
        _http(out, "POST", d.url + "/api/v2/alerts", body=b'[{"labels": 5}]', headers=auth)
        _http(out, "POST", d.url + "/api/v1/silences", body=b'{"matchers": []}', headers=auth)
        _http(out, "POST", d.url + f"/api/v1/incidents/{iid}/reassign", body=b'{"to": "channel:nope"}', headers=auth)
        _http(out, "POST", d.url + "/api/v1/chatops/slack", body=b"text=help")
        _http(out, "POST", d.url + "/v2/enqueue", body=b"[]", headers={"Content-Type": "application/json"})
        _http(out, "GET", d.url + "/l/not-a-token")
        _http(out, "GET", d.url + "/api/v1/nothing-here", headers=auth)

        # The CLI, all at once (each run pays Python's start-up): render two channels' pages, a client command,
        # and check of a broken copy of the config that has secrets next to its errors.
        broken = tmp_path / "broken"
        shutil.copytree(cfg_dir, broken, ignore=shutil.ignore_patterns("*.log", "*.db*"))
        text = (broken / "fsincident.yaml").read_text()
        text = text.replace("  - name: ops\n", "  - name: ops\n    colour: red\n")
        text = text.replace(f"{mail}?to=alice", f"nosuch://alice:{s['mail_password']}@x/?to=alice")
        text = text.replace("links: {secret:", "links: {ttl: forever, secret:")
        text = text.replace(
            'token: "${MATTERMOST_TOKEN}"', f'token: "${{MATTERMOST_TOKEN}}", tok: "{s["mattermost_token"]}"'
        )
        (broken / "fsincident.yaml").write_text(text)
        cli_env = {**env, "FSINCIDENT_URL": d.url, "FSINCIDENT_TOKEN": token}
        runs = [
            *(("render", "--incident", str(iid), "--channel", ch, "--config", str(cfg_dir)) for ch in ("ops", "hook")),
            ("incidents", "show", str(iid)),
            ("check", "--config", str(broken)),
        ]
        with ThreadPoolExecutor(len(runs)) as pool:
            results = list(pool.map(lambda args: run_cli(*args, env=cli_env, cwd=cfg_dir), runs))
        for args, res in zip(runs, results, strict=True):
            out.add(f"fsincident {' '.join(args[:3])} (stdout)", res.stdout)
            out.add(f"fsincident {' '.join(args[:3])} (stderr)", res.stderr)
            if args[0] == "check":
                assert res.returncode == 1 and "colour" in res.stderr, res.stderr
            else:
                assert res.returncode == 0, (args, res.stdout, res.stderr)

        # A reload that works, one that fails (the running config stays), and one that works again.
        good = (cfg_dir / "fsincident.yaml").read_text()
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(e.get("event") == "config_reloaded" for e in log_events(d)), 10, "the reload")
        (cfg_dir / "fsincident.yaml").write_text(text)
        d.proc.send_signal(signal.SIGHUP)
        wait_metric(d, "fsincident_config_last_reload_successful", 0)
        (cfg_dir / "fsincident.yaml").write_text(good)
        d.proc.send_signal(signal.SIGHUP)
        wait_metric(d, "fsincident_config_last_reload_successful", 1)

        # Every GET endpoint, once the down source's error reached its SourceDown alert's annotations and the
        # failing query its rule's health.
        d.wait_incidents(lambda i: any(x["labels"].get("source") == "down" for x in i))
        wait_until(lambda: "query to" in json.dumps(d.api("GET", "/api/v1/rules")[1]), 10, "the query rule's error")
        paths = [
            *_get_routes(iid),
            "/api/v1/incidents?state=acknowledged",
            f"/api/v1/incidents/{pd_id}",
            f"/api/v1/incidents/{pd_id}/notifications",
            "/api/v1/oncall?schedule=primary",
            "/api/v2/alerts?active=true",
        ]
        for path in paths:
            st, body = _http(out, "GET", d.url + path, headers={"Authorization": f"Bearer {token}"})
            assert st < 500, (path, st, body[:500])
        wait_until(lambda: len(smtp.mails) >= 2, 20, "two mails (channel ops and user alice)")
        assert all("CTXDUMP" in m for m in smtp.mails), smtp.mails[0][:300]
        assert d.stop() == 0

    elapsed = time.monotonic() - started
    out.add("daemon log", d.logs())
    for i, m in enumerate(receiver.received):
        out.add(f"receiver message {i} to {m['_path'][:12]}", {k: v for k, v in m.items() if k != "_path"})
    for i, m in enumerate(smtp.mails):
        out.add(f"mail {i}", m)
    # At rest too: the database (and its backups) holds pages, attempts and timelines, never a credential.
    con = sqlite3.connect(f"file:{tmp_path}/state.db?mode=ro", uri=True)
    try:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            rows = con.execute(f'SELECT * FROM "{table}"').fetchall()
            out.add(f"database table {table}", "\n".join(repr(r) for r in rows))
    finally:
        con.close()

    leaks = out.leaks(planted)
    (tmp_path / "leaks.txt").write_text("\n\n".join(leaks))
    (tmp_path / "scanned.txt").write_text("\n".join(f"{w} ({len(t)} chars)" for w, t in out.items))
    assert not leaks, f"{len(leaks)} leaks:\n" + "\n".join(leaks[:20])
    # The scan saw the interesting things: debug logs, failures, deliveries, the dump, the link and chat pages.
    log = d.logs()
    assert '"level": "debug"' in log and "config_reload_failed" in log
    assert any(w.startswith("POST /api/v1/chatops/slack -> 200") for w, _ in out.items)
    assert elapsed < 60, elapsed


def _claim_action(token: str, key: str) -> tuple[str, int] | None:
    """(action, incident id) of a link token signed with ``key``; None when it does not verify."""
    from fsincident.notify.links import LinkError, LinkSigner

    try:
        claim = LinkSigner(key.encode(), timedelta(hours=1)).verify(token, datetime.now(UTC))
    except LinkError:
        return None
    return claim.action, claim.incident_id


def test_every_template_context_name_is_in_the_dump(monkeypatch):
    """The names the renderer gives templates are all printed by the full run's dump template (a name added
    later must be added to CONTEXT_NAMES, so that the full run checks it for secrets too)."""
    from fsincident.notify import render
    from fsincident.sandbox import CompiledTemplate

    seen: set[str] = set()
    original = CompiledTemplate.render

    def spy(self: CompiledTemplate, **context: Any) -> str:
        seen.update(context)
        return original(self, **context)

    monkeypatch.setattr(CompiledTemplate, "render", spy)
    r = render.Renderer()
    links = {"ack": "http://x/l/a", "resolve": "http://x/l/r", "incident": "http://x/i/1"}
    for style in render.STYLES:
        for kind in ("trigger", "acknowledge", "resolve"):
            r.page(style, kind, render.sample_page(), links, "channel:ops")
    for style in ("chat", "text", "email"):
        r.digest(style, render.sample_digest(), "channel:ops")
    assert {"incident", "alerts", "links", "recipient", "items"} <= seen
    assert seen <= set(CONTEXT_NAMES), sorted(seen - set(CONTEXT_NAMES))


# ------------------------------------------------------------------------------------------- the fixes, in-process


@pytest.mark.parametrize(
    ("url", "hidden", "kept"),
    [
        (  # a webhook key in the path and a token in a GET parameter of a generic json:// URL
            "json://u:Pw1Secret@127.0.0.1:9/hook/TokPathSecret123?-token=QuerySecret456",
            ["TokPathSecret123", "QuerySecret456", "Pw1Secret", base64.b64encode(b"u:Pw1Secret").decode()],
            ["127.0.0.1:9", "/hook/"],
        ),
        (  # apprise's custom header (+) and payload (:) parameters
            "json://127.0.0.1:9/hook?:key=PayloadSecret789&+X-Api-Key=HdrSecret111&format=markdown",
            ["PayloadSecret789", "HdrSecret111"],
            ["/hook"],
        ),
        (
            "mailto://alice:Ml%2FPw%2Bx9@127.0.0.1:25?to=ops@example.com&from=fs@example.com",
            ["Ml/Pw+x9", "Ml%2FPw%2Bx9"],
            ["127.0.0.1"],
        ),
    ],
)
def test_apprise_url_keys_in_path_and_query_are_secrets(url, hidden, kept):
    from fsincident.appriseurl import redact, secret_parts

    parts, shown = secret_parts(url), redact(url)
    for s in hidden:
        assert s in parts and s not in shown, (s, parts, shown)
    for k in kept:
        assert k in shown
    assert not {"hook", "markdown", "127.0.0.1", "ops@example.com"} & set(parts)


def test_parsing_an_apprise_url_logs_nothing(caplog):
    """apprise logs ``Loaded JSON URL: <path and query>`` when it parses; our own parsing (config checks, redaction,
    secret discovery) runs before the redactor knows the URL, so it must not log."""
    import logging

    from fsincident.appriseurl import check_apprise_url, redact, secret_parts

    url = "json://127.0.0.1:9/hook/TokPathSecret123?-token=QuerySecret456"
    with caplog.at_level(logging.DEBUG, logger="apprise"):
        assert check_apprise_url(url) is None
        redact(url)
        secret_parts(url)
    assert "QuerySecret456" not in caplog.text and "TokPathSecret123" not in caplog.text
    with caplog.at_level(logging.DEBUG, logger="apprise"):  # apprise's own logging still works
        import apprise

        apprise.Apprise.instantiate(url)
    assert "Loaded JSON URL" in caplog.text


async def test_scrape_password_stays_out_of_labels_and_errors():
    """The ``instance`` label is host:port (labels reach pages and the API), and a failed scrape's error (shown by
    ``/api/v1/rules``) names the URL without its password."""
    from fsincident.core import SourceError
    from fsincident.sources.scrape import ScrapeOptions, ScrapeSource

    port = free_port()  # nothing listens
    src = ScrapeSource(ScrapeOptions(name="s", type="scrape", url=f"http://u:LabelSecret42@127.0.0.1:{port}/metrics"))
    assert src._extra["instance"] == f"127.0.0.1:{port}"
    with pytest.raises(SourceError) as e:
        await src.collect(datetime.now(UTC))
    assert "LabelSecret42" not in str(e.value) and f"127.0.0.1:{port}" in str(e.value)
    if src._session is not None:
        await src._session.close()


def test_source_errors_are_scrubbed_of_the_source_secrets():
    """Whatever a source kind puts in its error, the runner stores it without the credentials the kind declares."""
    from fsincident.core import SystemClock
    from fsincident.obs import Metrics
    from fsincident.sources.runner import SourceRunner
    from fsincident.sources.scrape import ScrapeOptions, ScrapeSource

    runner = SourceRunner(SystemClock(), Metrics(), lambda name: None)  # type: ignore[arg-type,return-value]
    opts = ScrapeOptions(name="s", type="scrape", url="http://127.0.0.1:9/m", headers={"X-Token": "HdrSecret4242"})
    runner.sources["s"] = ScrapeSource(opts)
    snap = runner.snapshots.setdefault("s", __import__("fsincident.plugins").plugins.Snapshot(source="s"))
    runner._failed("s", snap, datetime.now(UTC), "refused with X-Token HdrSecret4242")
    assert snap.error == "refused with X-Token ***"


def test_redactor_add_keeps_earlier_secrets():
    from fsincident.obs import Redactor

    r = Redactor()
    r.set(["oldsecret"])
    r.add(["newsecret", "ab"])
    assert r.scrub("oldsecret newsecret ab") == "*** *** ab"


async def test_a_failed_reload_keeps_hiding_the_running_config_secrets(tmp_path):
    """Secrets of a config that was replaced (or of a reload that failed half-way) stay hidden: pages in flight and
    the still-running config may name them."""
    from fsincident.app import Daemon
    from fsincident.config import load

    def write(secret: str) -> None:
        (tmp_path / "fsincident.yaml").write_text(
            f"database: sqlite:///{tmp_path}/s.db\n"
            f"channels:\n  - {{name: ops, urls: ['json://u:{secret}@127.0.0.1:9/hook']}}\n"
            "routes:\n  - {notify: ['channel:ops']}\n"
        )

    write("FirstSecret111")
    daemon = Daemon(load(tmp_path))
    daemon._set_secrets(daemon.config)
    write("SecondSecret222")
    daemon._set_secrets(load(tmp_path))
    assert daemon.redactor.scrub("FirstSecret111 SecondSecret222") == "*** ***"


async def test_a_generated_link_key_is_hidden_like_a_configured_one(tmp_path):
    """Without ``links.secret`` the daemon generates the link key once and keeps it in the database; the redactor
    learns it as soon as it is read, so it never reaches a log line either."""
    from fsincident.app import Daemon
    from fsincident.config import load

    (tmp_path / "fsincident.yaml").write_text(f"database: sqlite:///{tmp_path}/s.db\n")
    daemon = Daemon(load(tmp_path))
    await daemon.store.upgrade()
    try:
        await daemon._link_signer(daemon.config)
        con = sqlite3.connect(tmp_path / "s.db")
        [(key,)] = con.execute("SELECT value FROM daemon_secret WHERE name = 'link_key'").fetchall()
        con.close()
        assert len(key) >= 16 and daemon.redactor.scrub(f"key {key} end") == "key *** end"
    finally:
        await daemon.store.close()
