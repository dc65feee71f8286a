"""A secret in a channel URL never reaches the log or the API, even at debug level and through failures."""

from __future__ import annotations

import json
import signal

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
from tests.helpers import free_port

pytestmark = pytest.mark.slow

SECRET = "PlantedSecret123"

RULES = rules_yaml(
    """\
      - alert: QueueBacklog
        expr: queue_depth > 100
        severity: critical
"""
)


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
