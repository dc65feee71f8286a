"""Delivery against a misbehaving receiver: retry with backoff until it recovers; a 4xx fails at once."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.e2e.harness import (
    kinds,
    make_config,
    metric,
    outbox_rows,
    rules_yaml,
    scrape_source,
    wait_metric,
    wait_timeline,
)
from tests.helpers import free_port

pytestmark = pytest.mark.slow

RULES = rules_yaml(
    """\
      - alert: QueueBacklog
        expr: queue_depth > 100
        severity: critical
"""
)


def _start(tmp_path, exposition, receiver, spawn, delivery):
    exposition.set("queue_depth", 5, queue="orders")
    port = free_port()
    cfg = make_config(
        tmp_path / "cfg",
        port=port,
        database=f"sqlite:///{tmp_path}/state.db",
        sources=scrape_source(exposition.url),
        channel_urls=[receiver.apprise_url("ops")],
        rules=RULES,
        delivery=delivery,
    )
    d = spawn(cfg, port)
    d.token = d.create_token("read")
    return d


def test_receiver_down_then_back_retries_until_delivered(tmp_path, exposition, receiver, spawn):
    receiver.status = 500
    d = _start(tmp_path, exposition, receiver, spawn, "{initial_backoff: 200ms, max_backoff: 1s, max_attempts: 50}")
    exposition.set("queue_depth", 500, queue="orders")
    iid = d.wait_incidents(lambda i: len(i) == 1)[0]["id"]
    wait_timeline(d, iid, "notify_retry", 3)
    assert receiver.received == []
    receiver.status = 200
    msgs = receiver.wait_for(lambda m: len(m) >= 1)
    assert msgs[0]["title"].startswith(f"[TRIGGERED] #{iid} ")
    inc = wait_timeline(d, iid, "notify_sent")
    k = kinds(inc)
    retries = [e for e in inc["timeline"] if e["kind"] == "notify_retry"]
    assert len(retries) >= 3
    assert k.index("notify_sent") > max(i for i, x in enumerate(k) if x == "notify_retry")
    assert all("HTTP 500" in (e["note"] or "") for e in retries), retries
    attempts = [e["data"]["attempt"] for e in inc["timeline"] if e["kind"] in ("notify_retry", "notify_sent")]
    assert attempts == list(range(1, len(attempts) + 1)), attempts
    # Backoff: failed attempts are spaced, not hammered (initial 200 ms with jitter 0.5-1.0, capped at 1 s).
    hits = [t for t, _ in receiver.hits]
    gaps = [b - a for a, b in itertools.pairwise(hits)]
    assert min(gaps) >= 0.09, gaps
    assert max(gaps) <= 3.0, gaps
    assert len(receiver.received) == 1
    rows = outbox_rows(tmp_path / "state.db")
    assert [(r["state"], r["attempts"]) for r in rows] == [("sent", len(attempts))]
    text = wait_metric(d, "fsincident_notify_deliveries_total", 1, channel="channel:ops", result="sent")
    assert metric(text, "fsincident_notify_deliveries_total", channel="channel:ops", result="retry") == len(retries)
    assert d.stop() == 0


def test_permanent_failure_is_not_retried(tmp_path, exposition, receiver, spawn):
    receiver.status = 404
    d = _start(tmp_path, exposition, receiver, spawn, "{initial_backoff: 200ms, max_backoff: 1s}")
    exposition.set("queue_depth", 500, queue="orders")
    iid = d.wait_incidents(lambda i: len(i) == 1)[0]["id"]
    inc = wait_timeline(d, iid, "notify_failed")
    failed = [e for e in inc["timeline"] if e["kind"] == "notify_failed"]
    assert len(failed) == 1 and "HTTP 404" in failed[0]["note"], failed
    assert failed[0]["data"]["attempt"] == 1
    assert "notify_retry" not in kinds(inc)
    text = wait_metric(d, "fsincident_notify_deliveries_total", 1, channel="channel:ops", result="failed")
    assert metric(text, "fsincident_notify_deliveries_total", channel="channel:ops", result="retry") is None
    # Nothing more is attempted: one request reached the receiver, the row is failed for good.
    time.sleep(2.0)
    assert len(receiver.hits) == 1, receiver.hits
    rows = outbox_rows(tmp_path / "state.db")
    assert [(r["state"], r["attempts"]) for r in rows] == [("failed", 1)]
    assert "404" in rows[0]["last_error"]
    assert d.stop() == 0
