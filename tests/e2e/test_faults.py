"""Delivery under faults, against the real ``fsincident run`` process and local receivers (loopback only).

* a receiver that is down for a while (connection refused), then back: every page arrives, in order per incident;
* a receiver answering 500: retries with growing backoff, then a dead letter (state ``failed``, ``notify_dead`` on
  the timeline, ``fsincident_notify_dead_letters_total``), a copy to the fallback channel, and the notification log
  of ``GET /api/v1/incidents/{id}/notifications`` listing every attempt;
* a receiver hanging past ``delivery.timeout``: the attempt is a timeout retry, then dead letter + fallback; and a
  hanging destination must not delay the healthy destinations next to it;
* ``kill -9`` of the daemon at random moments of a storm of 500 incidents, 20 times: every page arrives at least
  once; the repeats (sends in flight at a kill) are counted and reported.

Each test prints one ``FIGURES`` line (the measured numbers docs/reliability.md reports).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    CountingReceiver,
    incident,
    kinds,
    log_events,
    metric,
    metrics_text,
    outbox_rows,
    parse_ts,
    wait_metric,
    wait_timeline,
    wait_until,
)
from tests.helpers import DaemonProcess, free_port

pytestmark = pytest.mark.slow

PAGE_TITLE = re.compile(r"^\[(TRIGGERED|ACKNOWLEDGED|RESOLVED)\] #(\d+) ")
KIND_OF = {"TRIGGERED": "trigger", "ACKNOWLEDGED": "acknowledge", "RESOLVED": "resolve"}
ANY_INCIDENT = re.compile(r"#(\d+)\b")


# ---------------------------------------------------------------------- peers and config


class Flaky:
    """A webhook receiver on a fixed port that can be taken down (connection refused) and brought back; what it
    received while up, across its lives, is kept in one list."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[dict[str, Any]] = []
        self.hits: list[tuple[float, int]] = []
        self._server: CountingReceiver | None = None

    def up(self) -> Flaky:
        srv = CountingReceiver(self.port)
        srv.received, srv.hits = self.received, self.hits  # one record across restarts
        self._server = srv.start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def apprise_url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"


def write_config(
    directory: Path,
    *,
    port: int,
    channels: list[str],
    delivery: str,
) -> Path:
    """fsincident.yaml for alerts pushed to ``/api/v2/alerts``: one incident per alert (every label groups), no
    group_wait, everything routed to ``channel:ops``; ``channels`` are flow-style YAML mappings."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (
        f"listen: 127.0.0.1:{port}\n"
        f"database: sqlite:///{directory}/state.db\n"
        "channels:\n" + "".join(f"  - {c}\n" for c in channels) + "routes:\n"
        "  - {notify: ['channel:ops'], group_wait: 0s, repeat_interval: 24h}\n"
        f"delivery: {delivery}\n"
    )
    (directory / "fsincident.yaml").write_text(text)
    return directory


def am_time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def alerts(names: range, alertname: str, *, hours: float = 1.0) -> list[dict[str, Any]]:
    """Alertmanager v2 alerts, one per ``n``, firing for ``hours``."""
    now = datetime.now(UTC)
    return [
        {
            "labels": {"alertname": alertname, "n": str(n), "severity": "critical"},
            "annotations": {"summary": f"{alertname} {n}"},
            "startsAt": am_time(now - timedelta(seconds=5)),
            "endsAt": am_time(now + timedelta(hours=hours)),
        }
        for n in names
    ]


def post_alerts(d: DaemonProcess, body: list[dict[str, Any]]) -> None:
    """POST ``body`` to ``/api/v2/alerts`` with ``d``'s token; AssertionError unless answered 200."""
    status, answer = d.api("POST", "/api/v2/alerts", body)
    assert status == 200, answer


def start(d: DaemonProcess, timeout: float = 30) -> float:
    """Start ``d`` and wait for ``/readyz`` polling every 20 ms (DaemonProcess polls every 100 ms); returns the
    seconds it took."""
    t0 = time.monotonic()
    d.start(wait=False)
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if d.proc is not None and d.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {d.proc.returncode}:\n{d.logs()[-3000:]}")
        try:
            with urllib.request.urlopen(d.url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"daemon not ready in {timeout}s:\n{d.logs()[-3000:]}")


@pytest.fixture
def daemons():
    """Daemons started by a test; teardown kills any still running."""
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.kill9()


@pytest.fixture
def flaky():
    made: list[Flaky] = []

    def make() -> Flaky:
        f = Flaky()
        made.append(f)
        return f

    yield make
    for f in made:
        f.down()


def pages(received: list[dict[str, Any]]) -> dict[int, list[str]]:
    """The notification kinds each incident's messages carried, in arrival order."""
    out: dict[int, list[str]] = defaultdict(list)
    for m in received:
        match = PAGE_TITLE.match(m.get("title", ""))
        if match:
            out[int(match.group(2))].append(KIND_OF[match.group(1)])
    return out


def notifications(d: DaemonProcess, iid: int) -> list[dict[str, Any]]:
    """``GET /api/v1/incidents/{id}/notifications``: the outbox rows of the incident, each with its attempts."""
    status, body = d.api("GET", f"/api/v1/incidents/{iid}/notifications")
    assert status == 200, body
    return body["notifications"] if isinstance(body, dict) else body


def figures(name: str, **values: Any) -> None:
    """One line the docs' figures table is built from (pytest -s shows it)."""
    print(f"\nFIGURES {name}: " + json.dumps(values, sort_keys=True))


# ---------------------------------------------------------------------- 1. receiver down, then back


def test_receiver_down_then_back_delivers_every_page_in_order(tmp_path, daemons, flaky):
    """Pages queued while the receiver refuses connections arrive once it is back: triggers first; then acks and
    resolves queued during a second outage arrive in order (trigger → acknowledge → resolve per incident)."""
    n = 5
    rcv = flaky()  # down: nothing listens on its port yet
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg",
        port=port,
        channels=[f"{{name: ops, urls: [{json.dumps(rcv.apprise_url())}]}}"],
        delivery="{timeout: 1s, initial_backoff: 100ms, max_backoff: 400ms, max_attempts: 1000}",
    )
    d = DaemonProcess(cfg, port)
    daemons.append(d)
    start(d)
    d.token = d.create_token("admin")
    post_alerts(d, alerts(range(n), "ReceiverDown"))
    incs = d.wait_incidents(lambda i: len(i) == n)
    ids = sorted(i["id"] for i in incs)
    for iid in ids:  # every trigger page has failed a few times against the closed port
        inc = wait_timeline(d, iid, "notify_retry", 2)
        notes = [e["note"] or "" for e in inc["timeline"] if e["kind"] == "notify_retry"]
        assert all("connection" in note.lower() for note in notes), notes

    t_up = time.time()
    rcv.up()
    wait_until(lambda: all(pages(rcv.received).get(i) == ["trigger"] for i in ids), 20, "every trigger page")
    recover_1 = max(m["_at"] for m in rcv.received) - t_up

    # Second outage: acknowledge and resolve every incident while the receiver is down; the notices queue up
    # behind each other per incident and are retried.
    rcv.down()
    for iid in ids:
        for action in ("ack", "resolve"):
            status, body = d.api("POST", f"/api/v1/incidents/{iid}/{action}", {"note": "fault test"})
            assert status == 200, body
    for iid in ids:  # each acknowledge notice has failed at least once
        wait_until(
            lambda i=iid: any(
                e["kind"] == "notify_retry" and e["data"]["notification"] == "acknowledge"
                for e in incident(d, i)["timeline"]
            ),
            20,
            f"a failed acknowledge notice of incident {iid}",
            step=0.1,
        )
    time.sleep(0.5)  # let backoff grow a little
    t_up = time.time()
    rcv.up()
    want = ["trigger", "acknowledge", "resolve"]
    got = wait_until(
        lambda: (p := pages(rcv.received)) and all(p.get(i) == want for i in ids) and p,
        20,
        "acknowledge and resolve notices in order",
    )
    recover_2 = max(m["_at"] for m in rcv.received) - t_up
    assert set(got) == set(ids), got
    # A message can reach the receiver a moment before its send is recorded: wait for the records.
    rows = wait_until(
        lambda: (r := outbox_rows(tmp_path / "cfg" / "state.db")) and all(x["state"] != "sending" for x in r) and r,
        10,
        "every notice recorded",
        step=0.05,
    )
    assert {(r["kind"], r["state"]) for r in rows} == {(k, "sent") for k in want}, rows
    assert len(rows) == 3 * n
    retries = Counter(r["kind"] for r in rows for _ in range(r["attempts"] - 1))
    time.sleep(0.3)
    assert all(v == want for v in pages(rcv.received).values())  # nothing more arrived: no duplicate
    figures(
        "receiver_down",
        incidents=n,
        messages=len(rcv.received),
        failed_attempts=dict(retries),
        seconds_to_deliver_after_back=[round(recover_1, 2), round(recover_2, 2)],
    )
    assert d.stop() == 0


# ---------------------------------------------------------------------- 2. receiver answering 500


def _dead_letter_setup(tmp_path, daemons, flaky, *, channel_extra: str, delivery: str) -> tuple:
    primary, fallback = flaky().up(), flaky().up()
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg",
        port=port,
        channels=[
            f"{{name: ops, urls: [{json.dumps(primary.apprise_url('ops'))}]{channel_extra}}}",
            f"{{name: fallback, urls: [{json.dumps(fallback.apprise_url('fallback'))}]}}",
        ],
        delivery=delivery,
    )
    d = DaemonProcess(cfg, port)
    daemons.append(d)
    start(d)
    d.token = d.create_token("admin")
    return d, primary, fallback


def _check_dead_letter(d: DaemonProcess, iid: int, fallback: Flaky, attempts: int, db: Path) -> dict[str, Any]:
    """The common end of a dead letter: state failed, timeline notify_dead, the metric, the fallback's copy and the
    notification log; returns some figures."""
    inc = wait_timeline(d, iid, "notify_dead")
    dead = [e for e in inc["timeline"] if e["kind"] == "notify_dead"]
    assert len(dead) == 1, dead
    assert dead[0]["data"]["target"] == "channel:ops", dead[0]
    assert dead[0]["data"]["fallback"] == "channel:fallback", dead[0]
    assert "notify_fallback" in kinds(inc), kinds(inc)
    wait_metric(d, "fsincident_notify_dead_letters_total", 1, target="channel:ops")
    got = wait_until(
        lambda: [m for m in fallback.received if (x := ANY_INCIDENT.search(m.get("title", ""))) and int(x[1]) == iid],
        20,
        "the dead letter's copy at the fallback channel",
    )
    assert len(got) == 1, got
    rows = {r["id"]: r for r in outbox_rows(db)}
    original = [r for r in rows.values() if r["target"] == "channel:ops"]
    assert [(r["state"], r["attempts"]) for r in original] == [("failed", attempts)], original
    copy = wait_until(
        lambda: [r for r in outbox_rows(db) if r["fallback_for"] is not None and r["state"] == "sent"],
        10,
        "the fallback row sent",
    )
    assert len(copy) == 1 and copy[0]["fallback_for"] == original[0]["id"], copy
    assert copy[0]["target"] == "channel:fallback", copy
    # The notification log: every attempt of the original, then the copy's delivery.
    log = notifications(d, iid)
    by_id = {row["id"]: row for row in log}
    assert set(by_id) == {original[0]["id"], copy[0]["id"]}, log
    assert by_id[original[0]["id"]]["state"] == "failed" and by_id[copy[0]["id"]]["fallback_for"] == original[0]["id"]
    tried = by_id[original[0]["id"]]["log"]
    assert [a["attempt"] for a in tried] == list(range(1, attempts + 1)), tried
    assert [a["result"] for a in tried] == ["retry"] * (attempts - 1) + ["failed"], tried
    assert [a["result"] for a in by_id[copy[0]["id"]]["log"]] == ["sent"], by_id[copy[0]["id"]]
    dead_at = parse_ts(dead[0]["at"])
    return {"dead_at": dead_at, "attempts_log": tried, "copy_at": got[0]["_at"]}


def test_receiver_500_retries_with_growing_backoff_then_dead_letter_and_fallback(tmp_path, daemons, flaky):
    """A receiver answering 500 gets exactly the channel's budget of attempts, spaced by a growing backoff; then the
    page is a dead letter and its copy reaches the channel's fallback."""
    attempts = 5
    d, primary, fallback = _dead_letter_setup(
        tmp_path,
        daemons,
        flaky,
        channel_extra=f", max_attempts: {attempts}, fallback: 'channel:fallback'",
        delivery="{timeout: 2s, initial_backoff: 200ms, max_backoff: 10s, max_attempts: 50}",
    )
    primary._server.status = 500  # type: ignore[union-attr]
    post_alerts(d, alerts(range(1), "Answers500"))
    iid = d.wait_incidents(lambda i: len(i) == 1)[0]["id"]
    out = _check_dead_letter(d, iid, fallback, attempts, tmp_path / "cfg" / "state.db")
    # Exactly the budget reached the receiver (the channel's max_attempts, not delivery's 50); nothing arrived.
    assert [s for _, s in primary.hits] == [500] * attempts, primary.hits
    assert primary.received == []
    # Backoff: initial 200 ms doubling, times a jitter of 0.5-1.0, so gap k lies in [0.1, 0.2] * 2**k seconds
    # (plus the daemon's scheduling slack), and every gap is at least as long as the one before it.
    times = [t for t, _ in primary.hits]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for k, gap in enumerate(gaps):
        assert 0.1 * 2**k - 0.02 <= gap <= 0.2 * 2**k + 1.0, (k, gaps)
    for a, b in itertools.pairwise(gaps):
        assert b >= a - 0.3, gaps  # gap k+1 >= 0.2 * 2**k >= gap k, give or take the scheduling slack
    assert gaps[-1] >= 2 * gaps[0], gaps
    inc = incident(d, iid)
    ks = kinds(inc)
    assert ks.count("notify_retry") == attempts - 1 and "notify_dead" in ks, ks
    assert all("500" in (e["note"] or "") for e in inc["timeline"] if e["kind"] == "notify_retry")
    text = metrics_text(d)
    assert metric(text, "fsincident_notify_dead_letters_total", target="channel:fallback") in (None, 0.0)
    figures(
        "receiver_500",
        attempts_before_dead=len(primary.hits),
        backoff_gaps_s=[round(g, 3) for g in gaps],
        fallback_latency_s=round(out["copy_at"] - out["dead_at"], 3),
    )
    assert d.stop() == 0


# ---------------------------------------------------------------------- 3. receiver hanging past the timeout


def test_receiver_hanging_past_timeout_is_a_timeout_retry_then_dead_letter(tmp_path, daemons, flaky):
    """A receiver that never answers within ``delivery.timeout``: each attempt is a timeout retry of about that
    length, then a dead letter whose copy reaches ``delivery.fallback``."""
    attempts = 3
    d, primary, fallback = _dead_letter_setup(
        tmp_path,
        daemons,
        flaky,
        channel_extra="",  # the budget and the fallback come from delivery:
        delivery=(
            f"{{timeout: 500ms, initial_backoff: 100ms, max_backoff: 200ms, max_attempts: {attempts},"
            " fallback: 'channel:fallback'}"
        ),
    )
    primary._server.delay = 4  # type: ignore[union-attr]  # far past delivery.timeout (500 ms)
    post_alerts(d, alerts(range(1), "Hangs"))
    iid = d.wait_incidents(lambda i: len(i) == 1)[0]["id"]
    out = _check_dead_letter(d, iid, fallback, attempts, tmp_path / "cfg" / "state.db")
    assert len(primary.hits) == attempts, primary.hits  # each attempt reached the receiver and was given up on
    assert primary.received == []
    log = out["attempts_log"]
    for a in log:
        assert "timeout" in (a["error"] or "").lower() or "timed out" in (a["error"] or "").lower(), (a["error"], a)
        # An attempt lasts about delivery.timeout, not the receiver's 4 s.
        assert 0.4 <= a["duration_ms"] / 1000 <= 3.0, a
    retries = [e for e in incident(d, iid)["timeline"] if e["kind"] == "notify_retry"]
    assert len(retries) == attempts - 1 and all("time" in (e["note"] or "").lower() for e in retries), retries
    figures(
        "receiver_hangs",
        attempts_before_dead=len(primary.hits),
        attempt_seconds=[round(a["duration_ms"] / 1000, 3) for a in log],
        fallback_latency_s=round(out["copy_at"] - out["dead_at"], 3),
    )
    assert d.stop() == 0


def test_hanging_destination_does_not_delay_the_others(tmp_path, daemons, flaky):
    """A destination that hangs must not take the healthy destinations of the same channel down with it: each of
    them gets every page at once, with no timeout, retry or dead letter."""
    n = 12
    hang, healthy = flaky().up(), flaky().up()
    hang._server.delay = 5  # type: ignore[union-attr]  # past apprise's own 4 s socket timeout
    port = free_port()
    urls = [hang.apprise_url("hang"), healthy.apprise_url("ok")]
    cfg = write_config(
        tmp_path / "cfg",
        port=port,
        channels=[f"{{name: ops, urls: {json.dumps(urls)}}}"],
        delivery="{timeout: 1s, initial_backoff: 200ms, max_backoff: 1s, max_attempts: 3, concurrency: 8}",
    )
    d = DaemonProcess(cfg, port)
    daemons.append(d)
    start(d)
    d.token = d.create_token("admin")
    t0 = time.time()
    post_alerts(d, alerts(range(n), "HangAndHealthy"))
    db = tmp_path / "cfg" / "state.db"
    rows = wait_until(
        lambda: (r := outbox_rows(db)) and len(r) == 2 * n and all(x["state"] in ("sent", "failed") for x in r) and r,
        60,
        "every outbox row settled",
        step=0.2,
    )
    healthy_rows = [r for r in rows if r["dest_index"] == 1]
    at_healthy = pages(healthy.received)
    figures(
        "hang_and_healthy",
        healthy_states=dict(Counter(r["state"] for r in healthy_rows)),
        healthy_attempts=sum(r["attempts"] for r in healthy_rows),
        healthy_pages=sum(len(v) for v in at_healthy.values()),
        healthy_latency_s=round(max((m["_at"] for m in healthy.received), default=t0) - t0, 2),
        hang_hits=len(hang.hits),
    )
    assert all(r["state"] == "sent" and r["attempts"] == 1 for r in healthy_rows), healthy_rows
    assert all(v == ["trigger"] for v in at_healthy.values()) and len(at_healthy) == n, at_healthy
    assert d.stop() == 0


# ---------------------------------------------------------------------- 4. kill -9 during a storm


STORM = 500
KILLS = 20
CONCURRENCY = 8
BATCH = 25  # alerts posted per life of the daemon
CHUNK = 5  # alerts per request


class Poster(threading.Thread):
    """Posts the storm's alerts to ``/api/v2/alerts``, batch ``i`` once ``release()`` was called ``i + 1`` times
    (once per life of the daemon), re-posting a batch until it is answered 200 as Prometheus does: the daemon may
    be killed, or still starting, at any moment."""

    def __init__(self, d: DaemonProcess, body: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.d, self.body = d, body
        self.post_retries = 0
        self.released = threading.Semaphore(0)
        self.done = threading.Event()
        self.stop = threading.Event()

    def release(self) -> None:
        self.released.release()

    def run(self) -> None:
        for i in range(0, len(self.body), CHUNK):
            if i % BATCH == 0:
                while not self.released.acquire(timeout=0.1):
                    if self.stop.is_set():
                        return
            else:
                time.sleep(0.1)  # a batch arrives over half a second, so a kill may land amid it
            data = json.dumps(self.body[i : i + CHUNK]).encode()
            while not self.stop.is_set():
                req = urllib.request.Request(self.d.url + "/api/v2/alerts", data=data, method="POST")
                req.add_header("Authorization", f"Bearer {self.d.token}")
                req.add_header("Content-Type", "application/json")
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError, ConnectionError):
                    pass
                self.post_retries += 1
                time.sleep(0.02)
        self.done.set()


def _incident_ids(db: Path) -> set[int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {r[0] for r in con.execute("SELECT id FROM incident")}
    finally:
        con.close()


def _at_least(ids: set[int], n: int) -> set[int] | None:
    return ids if len(ids) >= n else None


def _all_sent(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]] | None:
    return rows if len(rows) == n and all(r["state"] == "sent" for r in rows) else None


def _covering(got: dict[int, list[str]], ids: set[int]) -> dict[int, list[str]] | None:
    return got if ids <= {i for i, ks in got.items() if "trigger" in ks} else None


def test_kill9_during_storm_of_500_incidents_delivers_every_page(tmp_path, daemons):
    seed = int(os.environ.get("FSINCIDENT_FAULTS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    rcv = CountingReceiver().start()
    rcv.delay = 0.05  # a send takes a moment: pages are in flight when a kill lands
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg",
        port=port,
        channels=[f"{{name: ops, urls: [{json.dumps(rcv.apprise_url('ops'))}]}}"],
        delivery=(
            f"{{timeout: 1s, lease: 3s, initial_backoff: 200ms, max_backoff: 1s, max_attempts: 1000,"
            f" concurrency: {CONCURRENCY}}}"
        ),
    )
    db = cfg / "state.db"
    try:
        d = DaemonProcess(cfg, port)
        daemons.append(d)
        t_start = time.monotonic()
        start(d)
        d.token = d.create_token("ingest")
        poster = Poster(d, alerts(range(STORM), "Storm"))  # 20 batches of 25: one per life but the last
        poster.start()
        lives: list[float] = []
        starts: list[float] = []
        try:
            for _ in range(KILLS):
                poster.release()
                life = rng.uniform(0.1, 1.5)
                time.sleep(life)
                d.kill9()
                lives.append(round(life, 2))
                starts.append(start(d))
            t_last = time.monotonic()
            poster.join(30)
        finally:
            poster.stop.set()
        assert poster.done.is_set(), "the storm was not accepted"
        ids = wait_until(lambda: _at_least(_incident_ids(db), STORM), 30, f"{STORM} incidents")
        assert len(ids) == STORM, len(ids)
        got = wait_until(lambda: _covering(pages(rcv.received), ids), 40, "a trigger page for every incident")
        covered = time.monotonic() - t_last
        # Rows whose send was in flight at the last kill are sent again once their lease expired.
        rows = wait_until(lambda: _all_sent(outbox_rows(db), STORM), 20, "every outbox row sent")
        drain = time.monotonic() - t_last
        total = time.monotonic() - t_start
    finally:
        rcv.stop()
    triggers = {iid: ks.count("trigger") for iid, ks in got.items()}
    repeated = {iid: c for iid, c in triggers.items() if c > 1}
    extra = sum(c - 1 for c in triggers.values())
    figures(
        "kill9_storm",
        seed=seed,
        incidents=STORM,
        kills=KILLS,
        concurrency=CONCURRENCY,
        pages_received=sum(triggers.values()),
        duplicates=extra,
        repeated_incidents=len(repeated),
        claimed_again_after_lease=sum(1 for r in rows if r["attempts"] > 1),
        lives_s=lives,
        start_s=[round(s, 2) for s in starts],
        post_retries=poster.post_retries,
        every_page_arrived_after_last_restart_s=round(covered, 2),
        outbox_drained_after_last_restart_s=round(drain, 2),
        total_s=round(total, 1),
    )
    assert set(triggers) == ids, set(triggers) ^ ids
    assert {r["incident_id"] for r in rows} == ids
    # A page repeats only when its send was in flight at a kill: at most `concurrency` per kill.
    assert extra <= KILLS * CONCURRENCY, (extra, repeated, seed)
    bad = [e for e in log_events(d) if e.get("level") in ("error", "critical") or "raw" in e]
    assert not bad, bad[:5]
    assert d.stop() == 0
