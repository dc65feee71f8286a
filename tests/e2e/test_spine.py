"""The whole spine with the real daemon process: threshold -> page -> ack -> clear -> resolved -> restart."""

from __future__ import annotations

import pytest

from tests.helpers import DaemonProcess, Exposition, Receiver, free_port, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def peers():
    exp = Exposition().start()
    rcv = Receiver().start()
    yield exp, rcv
    exp.stop()
    rcv.stop()


def test_threshold_page_ack_clear_resolve_restart(tmp_path, peers):
    exp, rcv = peers
    exp.set("queue_depth", 5, queue="orders")
    exp.set("queue_depth", 3, queue="mail")
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp_path}/state.db
        sources:
          - {{name: app, type: scrape, url: "{exp.url}/metrics", interval: 1s}}
        channels:
          - {{name: ops, urls: ["{rcv.apprise_url("ops")}"]}}
        routes:
          - {{notify: ["channel:ops"]}}
        """,
        {
            "app.yaml": """
            groups:
              - name: app
                interval: 1s
                source: app
                rules:
                  - alert: QueueBacklog
                    expr: queue_depth > 100
                    severity: critical
                    annotations:
                      summary: "{{ labels.queue }} queue has {{ value | round(0) }} jobs"
            """
        },
    )
    d = DaemonProcess(cfg, port).start()
    try:
        d.token = d.create_token("ack")
        exp.set("queue_depth", 500, queue="orders")
        msgs = rcv.wait_for(lambda m: len(m) >= 1)
        assert "TRIGGERED" in msgs[0]["title"]
        assert "orders queue has 500 jobs" in msgs[0]["message"]
        incs = d.wait_incidents(lambda i: len(i) == 1)
        iid = incs[0]["id"]
        assert incs[0]["state"] == "triggered"
        assert incs[0]["labels"]["queue"] == "orders"

        status, body = d.api("POST", f"/api/v1/incidents/{iid}/ack", {"by": "alice", "note": "looking"})
        assert status == 200 and body["state"] == "acknowledged" and body["acknowledged_by"] == "alice"
        rcv.wait_for(lambda m: any("ACKNOWLEDGED" in x["title"] for x in m))

        exp.set("queue_depth", 1, queue="orders")
        rcv.wait_for(lambda m: any("RESOLVED" in x["title"] for x in m))
        d.wait_incidents(lambda i: i[0]["state"] == "resolved")
        assert len(rcv.received) == 3  # trigger, ack, resolve: nothing twice
    finally:
        assert d.stop() == 0
    d2 = DaemonProcess(cfg, port).start()
    try:
        d2.token = d.token
        status, inc = d2.api("GET", f"/api/v1/incidents/{iid}")
        assert status == 200
        assert inc["state"] == "resolved"
        kinds = [e["kind"] for e in inc["timeline"]]
        for k in ("triggered", "acknowledged", "alert_resolved", "resolved", "notify_sent"):
            assert k in kinds, kinds
        assert inc["alerts"][0]["state"] == "resolved"
    finally:
        d2.stop()
