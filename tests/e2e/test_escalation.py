"""Escalation policies with the real daemon: a webhook receiver per user shows pages arriving step by step and
stopping at the ack (a delayed contact method queued before the ack included), a restart between steps that
neither repeats nor skips one, an ack timeout that pages again, and the CLI's escalate and reassign."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.e2e.harness import CountingReceiver, incident, kinds, outbox_rows, rules_yaml, scrape_source, wait_timeline
from tests.helpers import DaemonProcess, Exposition, free_port, run_cli

pytestmark = pytest.mark.slow

USERS = ("alice", "bob", "carol")

RULES = rules_yaml(
    """\
      - alert: QueueBacklog
        expr: queue_depth > 100
        severity: critical
        labels: {team: infra}
"""
)


@pytest.fixture
def people():
    """One webhook receiver per user."""
    rcv = {u: CountingReceiver().start() for u in USERS}
    yield rcv
    for r in rcv.values():
        r.stop()


def _config(
    tmp_path: Path, port: int, exposition: Exposition, people: dict[str, CountingReceiver], policy: str
) -> Path:
    d = tmp_path / "cfg"
    (d / "rules.d").mkdir(parents=True, exist_ok=True)
    a, b, c = (people[u] for u in USERS)
    (d / "fsincident.yaml").write_text(
        f"""
listen: 127.0.0.1:{port}
database: sqlite:///{tmp_path}/state.db
sources:
{scrape_source(exposition.url)}
users:
  - name: alice
    timezone: Europe/Berlin
    contacts:
      - "{a.apprise_url("now")}"
      - {{url: "{a.apprise_url("late")}", after: 4s, urgency: high}}
      - {{url: "{a.apprise_url("low")}", urgency: low}}
  - {{name: bob, contacts: ["{b.apprise_url("now")}"]}}
  - {{name: carol, contacts: ["{c.apprise_url("now")}"]}}
schedules:
  - name: primary
    timezone: Europe/Berlin
    layers:
      - {{rotation: daily, handoff: "09:00", start: 2026-01-01, users: [alice]}}
escalation_policies:
  - name: infra
{policy}
routes:
  - {{match: {{team: infra}}, escalation_policy: infra}}
"""
    )
    (d / "rules.d" / "app.yaml").write_text(RULES)
    return d


def pages(r: CountingReceiver, path: str = "now") -> list[float]:
    """Arrival times of the trigger pages at ``/path``."""
    return [m["_at"] for m in list(r.received) if m["_path"] == f"/{path}" and m["title"].startswith("[TRIGGERED]")]


def wait_pages(r: CountingReceiver, n: int, path: str = "now", timeout: float = 15) -> list[float]:
    r.wait_for(lambda _: len(pages(r, path)) >= n, timeout)
    return pages(r, path)


def escalated(d: DaemonProcess, iid: int) -> list[tuple[int, int]]:
    return [(e["data"]["loop"], e["data"]["step"]) for e in incident(d, iid)["timeline"] if e["kind"] == "escalated"]


def _start(tmp_path, exposition, people, spawn, policy: str) -> tuple[DaemonProcess, Path, int]:
    exposition.set("queue_depth", 5, queue="orders")
    port = free_port()
    cfg = _config(tmp_path, port, exposition, people, policy)
    d = spawn(cfg, port)
    d.token = d.create_token("ack")
    return d, cfg, port


def test_pages_arrive_in_order_and_stop_at_the_ack(tmp_path, exposition, people, spawn):
    policy = """\
    steps:
      - {after: 0s, notify: ["schedule:primary"]}
      - {after: 2s, notify: ["user:bob"]}
      - {after: 6s, notify: ["user:carol"]}"""
    d, _, _ = _start(tmp_path, exposition, people, spawn, policy)
    exposition.set("queue_depth", 500, queue="orders")
    [t_alice] = wait_pages(people["alice"], 1)  # schedule:primary -> alice, on call
    [t_bob] = wait_pages(people["bob"], 1)
    assert 1.5 <= t_bob - t_alice <= 3.5, t_bob - t_alice
    iid = d.wait_incidents(lambda i: len(i) == 1)[0]["id"]
    status, body = d.api("POST", f"/api/v1/incidents/{iid}/ack", {"by": "bob", "note": "on it"})
    acked = time.time()
    assert status == 200 and body["state"] == "acknowledged", body
    assert acked < t_alice + 4, "the ack came too late to test the delayed contact method"

    # Past carol's step (6s) and alice's delayed contact method (4s): no page arrives after the ack.
    time.sleep(max(0.0, t_alice + 7.5 - time.time()))
    assert pages(people["carol"]) == []
    assert pages(people["alice"], "late") == []
    assert pages(people["alice"], "low") == []  # a critical incident never uses a low-urgency method
    assert all(t < acked for u in USERS for t in pages(people[u]))
    inc = incident(d, iid)
    assert escalated(d, iid) == [(0, 0), (0, 1)]
    [cancelled] = [e for e in inc["timeline"] if e["kind"] == "notifications_cancelled"]
    assert cancelled["data"]["count"] >= 1
    late = [
        r
        for r in outbox_rows(tmp_path / "state.db")
        if (r["target"], r["dest_index"], r["kind"]) == ("user:alice", 1, "trigger")
    ]
    assert [r["state"] for r in late] == ["cancelled"]
    assert inc["escalation"]["due_at"] is None and inc["targets"] == ["user:alice", "user:bob"]
    # The ack notice goes to everyone who was paged, and only to them.
    people["bob"].wait_for(lambda m: any(x["title"].startswith("[ACKNOWLEDGED]") for x in m), 10)
    people["alice"].wait_for(lambda m: any(x["title"].startswith("[ACKNOWLEDGED]") for x in m), 10)
    assert people["carol"].received == []


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_a_restart_between_steps_neither_repeats_nor_skips_one(tmp_path, exposition, people, spawn, how):
    policy = """\
    steps:
      - {after: 0s, notify: ["user:alice"]}
      - {after: 3s, notify: ["user:bob"]}
      - {after: 7s, notify: ["user:carol"]}"""
    d, cfg, port = _start(tmp_path, exposition, people, spawn, policy)
    exposition.set("queue_depth", 500, queue="orders")
    [t_alice] = wait_pages(people["alice"], 1)
    iid = d.wait_incidents(lambda i: len(i) == 1)[0]["id"]
    wait_timeline(d, iid, "notify_sent")  # alice's page is recorded as sent before the daemon goes away
    if how == "kill9":
        d.kill9()
    else:
        assert d.stop(signal.SIGTERM) == 0
    # Stay down until bob's step (3s) is overdue: it must run once, at start-up.
    time.sleep(max(0.0, t_alice + 3.5 - time.time()))
    restarted = time.time()
    d2 = spawn(cfg, port)
    d2.token = d.token
    [t_bob] = wait_pages(people["bob"], 1)
    [t_carol] = wait_pages(people["carol"], 1)
    assert t_bob >= restarted
    assert t_carol >= t_alice + 7 - 0.5, t_carol - t_alice  # carol's step keeps its time across the restart
    time.sleep(1.5)
    assert [len(pages(people[u])) for u in USERS] == [1, 1, 1]
    assert escalated(d2, iid) == [(0, 0), (0, 1), (0, 2)]
    assert incident(d2, iid)["escalation"]["due_at"] is None


def test_ack_timeout_pages_again_and_the_cli_escalates_and_reassigns(tmp_path, exposition, people, spawn):
    policy = """\
    ack_timeout: 2s
    steps:
      - {after: 0s, notify: ["user:alice"]}
      - {after: 30s, notify: ["user:bob"]}"""
    d, cfg, _ = _start(tmp_path, exposition, people, spawn, policy)
    exposition.set("queue_depth", 500, queue="orders")
    wait_pages(people["alice"], 1)
    iid = d.wait_incidents(lambda i: len(i) == 1)[0]["id"]
    status, _ = d.api("POST", f"/api/v1/incidents/{iid}/ack", {"by": "alice"})
    assert status == 200
    acked = time.time()
    second = wait_pages(people["alice"], 2)[1]
    assert 1.5 <= second - acked <= 5, second - acked
    inc = wait_timeline(d, iid, "ack_timeout")
    assert inc["state"] == "triggered" and inc["acknowledged_at"] is None
    assert kinds(inc).index("ack_timeout") > kinds(inc).index("acknowledged")
    assert escalated(d, iid) == [(0, 0), (0, 0)]  # the policy started again at step 0

    env = {"FSINCIDENT_URL": d.url, "FSINCIDENT_TOKEN": d.token or ""}
    res = run_cli("incidents", "escalate", str(iid), "--by", "erin", "--note", "bob knows", env=env, cwd=cfg)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"#{iid} is triggered; paged step 2: user:bob"
    wait_pages(people["bob"], 1, timeout=5)  # now, not 30 s after the re-trigger

    res = run_cli("incidents", "reassign", str(iid), "--to", "user:carol", "--note", "handover", env=env, cwd=cfg)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"#{iid} is triggered; paged user:carol: user:carol"
    wait_pages(people["carol"], 1, timeout=5)
    res = run_cli("incidents", "reassign", str(iid), env=env, cwd=cfg)
    assert res.returncode == 2 and "--to" in res.stderr
    res = run_cli("incidents", "reassign", str(iid), "--to", "user:zed", env=env, cwd=cfg)
    assert res.returncode == 1 and "HTTP 400: unknown user 'zed'" in res.stderr

    status, _ = d.api("POST", f"/api/v1/incidents/{iid}/resolve", {})
    assert status == 200
    res = run_cli("incidents", "escalate", str(iid), env=env, cwd=cfg)
    assert res.returncode == 1 and "HTTP 409: cannot escalate: incident is resolved" in res.stderr
    inc = incident(d, iid)
    [reassigned] = [e for e in inc["timeline"] if e["kind"] == "reassigned"]
    assert (reassigned["note"], reassigned["data"]["users"]) == ("handover", ["carol"])
