"""Two ``fsincident run`` replicas on one PostgreSQL database: every page exactly once while both live, nothing
lost when one is killed mid-storm (repeats only of pages in flight on it), and leader failover in seconds."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.harness import CountingReceiver, log_events, metric, metrics_text, wait_until
from tests.helpers import DaemonProcess, Exposition, free_port

pytestmark = pytest.mark.slow

WAVE = 300
WAVE2 = 200
BATCH = 25
CONCURRENCY = 4
DELIVERY = (
    f"{{timeout: 1s, lease: 3s, initial_backoff: 200ms, max_backoff: 1s, max_attempts: 1000, "
    f"concurrency: {CONCURRENCY}}}"
)
STORM_ID = re.compile(r"storm (w\d+-\d+)\b")
FIGURES = os.environ.get("FSINCIDENT_FIGURES")  # a markdown file to keep the figures in (for docs/reliability.md)


def replica_config(directory: Path, *, port: int, database: str, hook: str, scrape: str) -> Path:
    """fsincident.yaml of one replica: alerts from /api/v2/alerts and one rule (``Canary``), one incident per
    alert, everything paged to ``channel:ops`` at once and never repeated."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fsincident.yaml").write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"database: {database}\n"
        f'sources:\n  - {{name: app, type: scrape, url: "{scrape}/metrics", interval: 500ms}}\n'
        f"channels:\n  - {{name: ops, urls: [{json.dumps(hook)}]}}\n"
        "routes:\n  - {notify: ['channel:ops'], group_wait: 0s, repeat_interval: 24h}\n"
        f"delivery: {DELIVERY}\n"
    )
    (directory / "rules.d").mkdir(exist_ok=True)
    (directory / "rules.d" / "app.yaml").write_text(
        "groups:\n  - name: app\n    interval: 500ms\n    source: app\n    rules:\n"
        "      - alert: Canary\n        expr: canary > 0\n        severity: critical\n"
        '        annotations: {summary: "canary is up"}\n'
    )
    return directory


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def storm(wave: int, n: int = WAVE) -> list[dict[str, Any]]:
    """``n`` critical Alertmanager alerts ``storm w{wave}-{i}``, firing for an hour."""
    now = datetime.now(UTC)
    return [
        {
            "labels": {"alertname": "Storm", "n": f"w{wave}-{i}", "severity": "critical"},
            "annotations": {"summary": f"storm w{wave}-{i}"},
            "startsAt": _ts(now - timedelta(seconds=5)),
            "endsAt": _ts(now + timedelta(hours=1)),
        }
        for i in range(n)
    ]


def post_until_ok(replicas: list[DaemonProcess], batch: list[dict[str, Any]], first: int, token: str) -> str:
    """Post ``batch`` to a replica, the next one when it is down (as a load balancer would); returns its url."""
    data = json.dumps(batch).encode()
    deadline = time.time() + 30
    i = first
    while time.time() < deadline:
        d = replicas[i % len(replicas)]
        req = urllib.request.Request(d.url + "/api/v2/alerts", data=data, method="POST")
        req.add_header("Authorization", f"Bearer {token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return d.url
        except (urllib.error.URLError, OSError):
            pass
        i += 1
        time.sleep(0.05)
    raise AssertionError("no replica took the alerts")


def pages(received: list[dict[str, Any]], wave: int | None = None) -> Counter[str]:
    """How many pages arrived per storm alert (of ``wave``)."""
    out: Counter[str] = Counter()
    for m in received:
        ids = set(STORM_ID.findall(f"{m.get('title', '')}\n{m.get('message', '')}"))
        for i in ids:
            if wave is None or i.startswith(f"w{wave}-"):
                out[i] += 1
    return out


def readyz(d: DaemonProcess) -> dict[str, Any]:
    with urllib.request.urlopen(d.url + "/readyz", timeout=2) as r:
        return json.loads(r.read())


def role(d: DaemonProcess) -> str | None:
    try:
        return readyz(d).get("role")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def sql(url: str, query: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(query))
        finally:
            await conn.close()

    return asyncio.run(run())


def settled(url: str) -> None:
    """Wait until no outbox row is pending or sending: no page can come (again) after that."""
    q = "SELECT count(*) AS n FROM outbox WHERE state IN ('pending', 'sending')"
    wait_until(lambda: sql(url, q)[0]["n"] == 0, 30, "an empty outbox", step=0.2)


def sent_by(d: DaemonProcess) -> int:
    """Pages this replica reports as sent (its log)."""
    return sum(1 for e in log_events(d) if e.get("event") == "delivery_sent")


def errors(d: DaemonProcess) -> list[dict[str, Any]]:
    return [e for e in log_events(d) if e.get("level") in ("error", "critical") or "raw" in e]


def record(section: str, lines: list[str]) -> None:
    """Keep the figures of a run in ``$FSINCIDENT_FIGURES`` when set (replacing the section of an earlier run)."""
    if not FIGURES:
        return
    path = Path(FIGURES)
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- figures:{section} -->", f"<!-- /figures:{section} -->"
    block = "\n".join([start, *lines, end])
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = (text.rstrip() + "\n\n" if text else "") + block + "\n"
    path.write_text(text)


@pytest.fixture
def cluster(tmp_path, pg_url):
    """Two replicas A (started first: the leader) and B on one PostgreSQL database, a webhook receiver and an
    exposition for the Canary rule; teardown kills whatever still runs."""
    rcv = CountingReceiver().start()
    exp = Exposition().start()
    exp.set("canary", 0)
    made: list[DaemonProcess] = []

    def replica(name: str) -> DaemonProcess:
        port = free_port()
        cfg = replica_config(tmp_path / name, port=port, database=pg_url, hook=rcv.apprise_url("ops"), scrape=exp.url)
        d = DaemonProcess(cfg, port)
        made.append(d)
        return d

    a = replica("a").start()
    b = replica("b").start()
    a.token = a.create_token("ingest")
    yield a, b, rcv, exp, pg_url
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.kill9()
    rcv.stop()
    exp.stop()


def test_two_replicas_page_once_and_a_kill_loses_nothing(cluster):
    a, b, rcv, _, pg_url = cluster
    assert (role(a), role(b)) == ("leader", "follower")
    assert metric(metrics_text(a), "fsincident_leader") == 1.0
    assert metric(metrics_text(b), "fsincident_leader") == 0.0
    token = a.token
    assert token
    t_start = time.monotonic()

    # (a) A storm while both live: alerts posted to both replicas, pages sent by both, each exactly once.
    rcv.delay = 0.05
    body = storm(1)
    for i in range(0, WAVE, BATCH):
        post_until_ok([a, b], body[i : i + BATCH], i // BATCH, token)
    rcv.wait_for(lambda m: len(pages(m, 1)) >= WAVE, timeout=60)
    took1 = time.monotonic() - t_start
    settled(pg_url)
    wave1 = pages(rcv.received, 1)
    dup1 = {k: c for k, c in wave1.items() if c > 1}
    by_a, by_b = sent_by(a), sent_by(b)
    claimed = {r["claimed_by"]: r["n"] for r in sql(pg_url, _CLAIMED) if r["claimed_by"]}
    print(
        f"\ntwo replicas, both alive: {len(wave1)} alerts, {sum(wave1.values())} pages in {took1:.1f}s, "
        f"{len(dup1)} duplicates; "
        f"sent by A {by_a}, by B {by_b}; claimed_by {claimed or '(not recorded)'}"
    )
    assert len(wave1) == WAVE and not dup1, dup1
    if claimed:
        assert len(claimed) == 2, claimed
    else:
        assert by_a > 0 and by_b > 0, "both replicas deliver"

    # (b) A second storm; the leader A is killed (-9) while its pages are on the wire. B takes over the
    # leadership, the incidents left, and after the lease expires the pages A held.
    rcv.delay = 0.1
    body = storm(2, WAVE2)
    hits = len(rcv.hits)
    poster = threading.Thread(
        target=lambda: [post_until_ok([a, b], body[i : i + BATCH], i // BATCH, token) for i in range(0, WAVE2, BATCH)]
    )
    poster.start()
    wait_until(lambda: len(rcv.hits) >= hits + WAVE2 // 3, 30, "a third of the second storm on the wire")
    sent_before = sent_by(a)
    t_kill = time.monotonic()
    a.kill9()
    wait_until(lambda: role(b) == "leader", 10, "B leads")
    failover = time.monotonic() - t_kill
    poster.join(60)
    t2 = time.monotonic()
    rcv.wait_for(lambda m: len(pages(m, 2)) >= WAVE2, timeout=60)
    took2 = time.monotonic() - t2
    settled(pg_url)
    wave2 = pages(rcv.received, 2)
    lost = {f"w2-{i}" for i in range(WAVE2)} - set(wave2)
    dup2 = {k: c for k, c in wave2.items() if c > 1}
    reclaimed = sql(pg_url, "SELECT count(*) AS n FROM outbox WHERE attempts > 1")[0]["n"]
    triggers = sql(
        pg_url,
        "SELECT o.attempts, i.labels->>'n' AS n FROM outbox o JOIN incident i ON i.id = o.incident_id "
        "WHERE o.kind = 'trigger'",
    )
    attempts_of = {r["n"]: r["attempts"] for r in triggers}
    total = time.monotonic() - t_start
    print(
        f"one replica killed mid-storm: {len(wave2)} alerts, {sum(wave2.values())} pages, {len(lost)} lost, "
        f"{len(dup2)} duplicates {dup2}; A had sent {sent_before} pages; rows claimed again after a lease ran out: "
        f"{reclaimed}; leader failover {failover:.1f}s; the rest took {took2:.1f}s after it; storms {total:.1f}s"
    )
    record(
        "storm",
        [
            f"- Two replicas, both alive: {WAVE} alerts posted to both, {sum(wave1.values())} pages, "
            f"**{len(dup1)} duplicates**, 0 lost; pages sent by A {by_a}, by B {by_b}.",
            f"- Leader killed (`kill -9`) mid-storm of {WAVE2}: **{len(lost)} lost**, {len(dup2)} duplicates "
            f"(pages in flight on the killed replica; {reclaimed} rows claimed again after its 3 s leases ran "
            f"out, concurrency {CONCURRENCY}); the survivor led after {failover:.1f}s.",
        ],
    )
    assert not lost, sorted(lost)
    assert len(dup2) <= CONCURRENCY, dup2
    for n in dup2:  # a repeat is a page A was sending when it died, claimed again after its lease
        assert attempts_of.get(n, 0) >= 2, (n, attempts_of.get(n))
    assert failover < 5, failover
    assert not errors(b), errors(b)[:5]
    assert b.stop() == 0


_CLAIMED = "SELECT claimed_by, count(*) AS n FROM outbox WHERE state = 'sent' GROUP BY claimed_by"


def test_killing_the_leader_hands_rule_evaluation_to_the_follower(cluster):
    a, b, rcv, exp, _ = cluster
    assert (role(a), role(b)) == ("leader", "follower")
    time.sleep(1.0)  # a few evaluations on A: Canary inactive
    t_kill = time.monotonic()
    a.kill9()
    exp.set("canary", 1)
    wait_until(lambda: role(b) == "leader", 10, "the follower leads", step=0.02)
    failover = time.monotonic() - t_kill
    got = rcv.wait_for(lambda m: any("canary is up" in m_.get("message", "") for m_ in m), timeout=15)
    fired = time.monotonic() - t_kill
    acquired = [e for e in log_events(b) if e.get("event") == "leader_acquired"]
    print(f"\nleader kill -9: follower led after {failover:.2f}s, a rule alert paged {fired:.2f}s after the kill")
    record(
        "failover",
        [
            f"- Leader killed (`kill -9`): the follower led after {failover:.2f}s; a rule alert that started at "
            f"the kill paged {fired:.2f}s after it.",
        ],
    )
    assert failover < 5, failover
    assert len(acquired) == 1 and acquired[0]["replica"].endswith(f":{b.proc.pid}")  # type: ignore[union-attr]
    assert metric(metrics_text(b), "fsincident_leader") == 1.0
    assert sum(1 for m in got if "canary is up" in m.get("message", "")) == 1
    assert not errors(b), errors(b)[:5]
    assert b.stop() == 0


def test_a_second_daemon_on_one_sqlite_file_refuses_to_start(tmp_path):
    db = tmp_path / "state.db"
    made = []
    try:
        for name in ("one", "two"):
            port = free_port()
            cfg = tmp_path / name
            cfg.mkdir()
            (cfg / "fsincident.yaml").write_text(f"listen: 127.0.0.1:{port}\ndatabase: sqlite:///{db}\n")
            made.append(DaemonProcess(cfg, port))
        first, second = made
        first.start()
        assert readyz(first) == {"status": "ready", "role": "leader"}
        second.start(wait=False)
        assert second.proc is not None
        assert second.proc.wait(30) != 0
        second.stop()
        [failed] = [e for e in log_events(second) if e.get("event") == "start_failed"]
        assert str(db) in failed["error"] and "SQLite is single-node" in failed["error"], failed
        assert "use PostgreSQL to run replicas" in failed["error"]
        assert readyz(first)["status"] == "ready"  # the first one runs on, untouched
        assert first.stop() == 0
    finally:
        for d in made:
            if d.proc is not None and d.proc.poll() is None:
                d.kill9()
