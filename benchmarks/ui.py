"""Web UI page times with 10 000 incidents in the database, on SQLite and on PostgreSQL.

The database is seeded in bulk with SQL before the daemon starts (``seed``): ``INCIDENTS`` incidents over the
last 30 days (about 4 % triggered, 4 % acknowledged, the rest resolved; critical/warning/info; five teams, forty
services), each with 1-3 alerts, a timeline of 2-7 events (triggered, escalated, pages sent or failed, acks,
notes, resolved), 1-2 outbox rows and their notification attempts; a few silences and schedule overrides; and a
week of series history (1 min fine tier for 2 days, 15 min coarse tier for 7 days) of the metric the rules read.
Then the real ``fsincident run`` starts on it, the client signs in through ``/ui/login`` like a browser, and every
page is requested ``--samples`` times (after ``WARMUP`` requests; the pages in turn, so a burst of other load hits
all alike) on one keep-alive connection. For each page: the server time from ``Server-Timing: app;dur=`` and the
client time (request sent to body read), p50/p95/max, and PASS/FAIL for the budget (server p95 <=
``BUDGET_MS``). The CSV export downloads every matching row, so it is reported apart and not held to the budget.

PostgreSQL is ``FSINCIDENT_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``); a uniquely named
database is created there and dropped afterwards. Loopback only. Run alone with ``.venv/bin/python
benchmarks/ui.py [--only sqlite|postgresql] [--samples N] [--incidents N] [--profile PAGE ...]``; it prints a
table and writes ``benchmarks/results/ui.json``. ``--profile`` runs the daemon in-process instead and prints
where the named pages spend their time (pyinstrument's call tree when it is installed, else cProfile).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import math
import os
import random
import re
import sys
import tempfile
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile, result, running  # noqa: E402
from benchmarks.delivery import pg_database, sqlite_database  # noqa: E402
from tests.helpers import DaemonProcess, Exposition, Receiver, free_port  # noqa: E402

INCIDENTS = 10_000
SAMPLES = 40
WARMUP = 3
CSV_SAMPLES = 5
BUDGET_MS = 100.0
BACKENDS = ("sqlite", "postgresql")
SERVER_TIMING = re.compile(r"\bapp;dur=([0-9.]+)")

ALERTNAMES = [
    "QueueBacklog",
    "HighLatency",
    "ErrorRate",
    "DiskFull",
    "MemoryPressure",
    "CertExpiry",
    "ReplicationLag",
    "PodCrashLooping",
    "TargetDown",
    "SlowQueries",
    "BackupFailed",
    "HighCPU",
]
TEAMS = ["app", "db", "web", "storage", "net"]
SEVERITIES = [("critical", 0.2), ("warning", 0.5), ("info", 0.3)]
USERS = ["alice", "bob", "carol", "dave"]
QUEUES = ["orders", "mail", "billing", "search", "exports", "thumbnails"]

CONFIG = """
listen: 127.0.0.1:{port}
database: {db}
sources:
  - {name: app, type: scrape, url: "{exposition}/metrics", interval: 5s}
channels:
  - {name: ops, urls: ["{hook}/ops"]}
users:
  - {name: alice, timezone: Europe/Berlin, contacts: ["{hook}/alice"]}
  - {name: bob, timezone: America/New_York, contacts: ["{hook}/bob"]}
  - {name: carol, timezone: UTC, contacts: ["{hook}/carol"]}
  - {name: dave, timezone: Asia/Tokyo, contacts: ["{hook}/dave"]}
schedules:
  - name: primary
    timezone: Europe/Berlin
    layers:
      - {rotation: weekly, handoff: "Mon 09:00", start: 2026-01-05, users: [alice, bob, carol]}
      - rotation: daily
        handoff: "20:00"
        start: 2026-01-05
        users: [dave, carol]
        restrictions: [{days: [sat, sun], from: "20:00", to: "08:00"}]
  - name: database
    timezone: UTC
    layers:
      - {rotation: daily, handoff: "08:00", start: 2026-01-05, users: [carol, dave]}
escalation_policies:
  - name: app
    steps:
      - {after: 0m, notify: ["schedule:primary", "channel:ops"]}
      - {after: 30m, notify: ["user:bob"]}
routes:
  - {match: {team: app}, escalation_policy: app}
  - {notify: ["channel:ops"]}
ui:
  refresh: 30s
  cards:
    - {title: Orders queue, series: 'queue_depth{queue="orders"}', source: app, unit: jobs, warn: 50, crit: 100}
    - {title: All queues, series: queue_depth, reduce: sum}
    - {title: Worst queue, series: queue_depth, reduce: max, warn: 200, crit: 400}
history:
  step: 1m
  keep: 2d
  coarse_step: 15m
  coarse_keep: 30d
"""

RULES = """
groups:
  - name: bench
    interval: 5s
    source: app
    rules:
      - alert: QueueBacklog
        expr: queue_depth > 100
        severity: critical
        labels: {team: app}
        annotations: {summary: "{{ labels.queue }} has {{ value }} jobs"}
      - alert: QueueSlow
        expr: queue_depth > 1000
        for: 5m
        severity: warning
"""


# ---------------------------------------------------------------------------------------------- seeding


def _weighted(rng: random.Random, pairs: list[tuple[str, float]]) -> str:
    return rng.choices([p for p, _ in pairs], weights=[w for _, w in pairs])[0]


def _hex(*parts: object) -> str:
    return hashlib.sha256("\xff".join(map(str, parts)).encode()).hexdigest()


def incident_rows(n: int, now: datetime, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """Rows for the tables incident, alert, incident_event, outbox and notification_attempt (ids assigned here)."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in ("incident", "alert", "event", "outbox", "attempt")}
    alert_id = event_id = outbox_id = attempt_id = 0
    for i in range(1, n + 1):
        # Older incidents are sparser: an exponential age, capped at 30 days.
        age = min(30 * 86400.0, rng.expovariate(1 / (5 * 86400.0)))
        created = now - timedelta(seconds=age)
        roll = rng.random()
        state = "triggered" if roll < 0.04 else "acknowledged" if roll < 0.08 else "resolved"
        severity = _weighted(rng, SEVERITIES)
        alertname = rng.choice(ALERTNAMES)
        team = rng.choice(TEAMS)
        service = f"svc-{rng.randrange(40):02d}"
        env = "prod" if rng.random() < 0.7 else "staging"
        labels = {"alertname": alertname, "severity": severity, "team": team, "service": service, "env": env}
        gkey = _hex("bench", i)[:32]
        acked = state != "triggered" and rng.random() < 0.6
        acked_at = created + timedelta(seconds=rng.uniform(30, 1200)) if acked else None
        acked_by = rng.choice(USERS) if acked else None
        resolved_at = created + timedelta(seconds=rng.uniform(300, 4 * 3600)) if state == "resolved" else None
        if resolved_at is not None and resolved_at > now:
            resolved_at = now
        if acked_at is not None and acked_at > now:
            acked_at = now
        resolved_by = (rng.choice(USERS) if rng.random() < 0.3 else "fsincident") if resolved_at else None
        updated = resolved_at or acked_at or created
        out["incident"].append(
            {
                "id": i,
                "group_key": gkey,
                "open_key": gkey if state != "resolved" else None,
                "title": f"{alertname}: {service} ({env})",
                "state": state,
                "severity": severity,
                "labels": labels,
                "route": 0 if team == "app" else 1,
                "targets": ["schedule:primary", "channel:ops"] if team == "app" else ["channel:ops"],
                "auto_resolve": True,
                "created_at": created,
                "updated_at": updated,
                "acknowledged_at": acked_at,
                "acknowledged_by": acked_by,
                "resolved_at": resolved_at,
                "resolved_by": resolved_by,
                "escalation_policy": "app" if team == "app" else None,
                "esc_step": 1 if team == "app" else 0,
                "esc_loop": 0,
                "grouping": {"receiver": "ops", "group_wait": 0.0, "group_interval": 300.0},
            }
        )
        events: list[tuple[datetime, str, str | None, str | None, dict[str, Any]]] = []
        for k in range(rng.choice((1, 1, 2, 3))):
            alert_id += 1
            instance = f"host-{rng.randrange(200):03d}:9100"
            alabels = {**labels, "instance": instance, "job": "node"}
            fp = _hex("bench-alert", i, k)[:16]
            value = round(rng.uniform(90, 900), 1)
            starts = created + timedelta(seconds=k * rng.uniform(0, 120))
            out["alert"].append(
                {
                    "id": alert_id,
                    "incident_id": i,
                    "fingerprint": fp,
                    "alertname": alertname,
                    "origin": f"rule:bench/{alertname}",
                    "labels": alabels,
                    "annotations": {"summary": f"{service} on {instance}: {value}"},
                    "value": value,
                    "state": "resolved" if resolved_at else "firing",
                    "starts_at": starts,
                    "ends_at": resolved_at,
                    "updated_at": resolved_at or starts,
                }
            )
            events.append(
                (
                    starts,
                    "triggered",
                    "fsincident",
                    None,
                    {"fingerprint": fp, "labels": alabels, "value": value, "origin": f"rule:bench/{alertname}"},
                )
            )
        if team == "app":
            events.append(
                (
                    created,
                    "escalated",
                    "fsincident",
                    "step 1 of 2, pass 1 of 1",
                    {"policy": "app", "step": 0, "loop": 0, "targets": ["schedule:primary", "channel:ops"]},
                )
            )
        for target in out["incident"][-1]["targets"][: rng.choice((1, 2))]:
            target = "user:bob" if target.startswith("schedule:") else target
            outbox_id += 1
            failed = rng.random() < 0.03
            sent_at = created + timedelta(seconds=rng.uniform(0.1, 2))
            dest = f"json://127.0.0.1/{target.split(':', 1)[1]}"
            out["outbox"].append(
                {
                    "id": outbox_id,
                    "incident_id": i,
                    "event_id": None,
                    "target": target,
                    "dest_index": 0,
                    "kind": "trigger",
                    "severity": severity,
                    "title": f"[TRIGGERED] #{i} {alertname}: {service} ({severity})",
                    "body": f"1 alert firing, severity {severity}.\n- {service}",
                    "state": "failed" if failed else "sent",
                    "attempts": 3 if failed else 1,
                    "next_attempt_at": sent_at,
                    "last_error": "HTTP 503 from the receiver" if failed else None,
                    "created_at": created,
                    "sent_at": None if failed else sent_at,
                    "data": None,
                    "claimed_by": "bench:1",
                }
            )
            for a in range(1, (3 if failed else 1) + 1):
                attempt_id += 1
                fin = sent_at + timedelta(seconds=a * 5)
                out["attempt"].append(
                    {
                        "id": attempt_id,
                        "outbox_id": outbox_id,
                        "incident_id": i,
                        "target": target,
                        "dest_index": 0,
                        "destination": dest,
                        "kind": "trigger",
                        "attempt": a,
                        "replica": "bench:1",
                        "started_at": fin - timedelta(milliseconds=120),
                        "finished_at": fin,
                        "duration_ms": 120.0,
                        "result": "failed" if failed else "sent",
                        "error": "HTTP 503 from the receiver" if failed else None,
                    }
                )
            kind = "notify_failed" if failed else "notify_sent"
            events.append(
                (sent_at, kind, "fsincident", None, {"target": target, "notification": "trigger", "attempt": 1})
            )
        if acked_at is not None:
            events.append((acked_at, "acknowledged", acked_by, "looking", {"via": rng.choice(["api", "ui", "chat"])}))
        if rng.random() < 0.15:
            t = (acked_at or created) + timedelta(seconds=rng.uniform(10, 600))
            events.append((min(t, now), "note", rng.choice(USERS), "restarted the worker; watching", {}))
        if resolved_at is not None:
            events.append((resolved_at, "resolved", resolved_by, "all alerts resolved", {}))
        for at, kind, actor, note, data in sorted(events, key=lambda e: e[0]):
            event_id += 1
            out["event"].append(
                {
                    "id": event_id,
                    "incident_id": i,
                    "at": at,
                    "kind": kind,
                    "actor": actor,
                    "note": note,
                    "data": data,
                }
            )
    return out


def history_rows(
    now: datetime,
    rng: random.Random,
    instance: str,
    days: float = 7,
    fine_days: float = 2,
    recent: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """series_history rows of ``queue_depth{queue=...}`` on source ``app``: a daily wave with noise and bursts;
    a queue named in ``recent`` climbs to that value over the last 40 minutes (where the live scrape goes on)."""
    from fsincident.core import Labels
    from fsincident.history import buckets as bk
    from fsincident.history.service import series_id

    rows = []
    end = now.timestamp()
    for q_i, queue in enumerate(QUEUES):
        labels = {"queue": queue, "instance": instance, "job": "app"}
        fp = series_id("app", "queue_depth", Labels(labels))
        base = 12 + 9 * q_i
        phase = rng.uniform(0, 2 * math.pi)
        bursts = [end - rng.uniform(0, days * 86400) for _ in range(6)]

        target = (recent or {}).get(queue)

        def value(
            t: float, base: float = base, phase: float = phase, bursts: list[float] = bursts, target: Any = target
        ) -> float:
            wave = base * (1 + 0.6 * math.sin(2 * math.pi * t / 86400 + phase))
            burst = sum(400 * math.exp(-(((t - b) / 1800) ** 2)) for b in bursts)
            v = max(0.0, wave + burst + rng.gauss(0, base * 0.08))
            if target is not None and t > end - 2400:
                w = min(1.0, (t - (end - 2400)) / 900)
                v = (1 - w) * v + w * target * (1 + rng.gauss(0, 0.03))
            return v

        for tier, step, span, per in (
            (0, 60, fine_days * 86400, bk.FINE_PER_CHUNK),
            (1, 900, days * 86400, bk.COARSE_PER_CHUNK),
        ):
            chunks: dict[float, bytearray] = {}
            t = bk.floor_to(end - span, step)
            while t < end - step:
                width = step * per
                cs = bk.floor_to(t, width)
                vs = [value(t + k * step / 4) for k in range(4)]
                bk.put(chunks.setdefault(cs, bytearray()), int((t - cs) // step), (sum(vs) / 4, min(vs), max(vs)))
                t += step
            for cs, data in chunks.items():
                rows.append(
                    {
                        "series": fp,
                        "source": "app",
                        "metric": "queue_depth",
                        "labels": labels,
                        "tier": tier,
                        "chunk_start": datetime.fromtimestamp(cs, UTC),
                        "step_seconds": step,
                        "points": bytes(data),
                        "updated_at": now,
                    }
                )
    return rows


def other_rows(now: datetime) -> dict[str, list[dict[str, Any]]]:
    """A few silences (active, pending, expired) and schedule overrides."""
    silences = []
    for k, (start, end, matchers, comment) in enumerate(
        [
            (-2, 6, [("team", "=", "storage"), ("env", "=", "staging")], "staging storage migration"),
            (-1, 2, [("alertname", "=", "CertExpiry")], "renewal in progress"),
            (20, 30, [("service", "=~", "svc-0[1-3]")], "planned maintenance window"),
            (-30, -20, [("alertname", "=", "BackupFailed")], "backup host replaced"),
        ]
    ):
        silences.append(
            {
                "id": f"00000000-0000-4000-8000-{k:012d}",
                "matchers": [
                    {"name": n, "value": v, "isRegex": "~" in op, "isEqual": not op.startswith("!")}
                    for n, op, v in matchers
                ],
                "starts_at": now + timedelta(hours=start),
                "ends_at": now + timedelta(hours=end),
                "created_by": USERS[k % len(USERS)],
                "comment": comment,
                "created_at": now + timedelta(hours=min(start, 0) - 1),
                "updated_at": now + timedelta(hours=min(start, 0) - 1),
                "expiry_handled": end < 0,
            }
        )
    overrides = [
        {
            "schedule": "primary",
            "who": "dave",
            "replaces": None,
            "starts_at": now + timedelta(days=2, hours=3),
            "ends_at": now + timedelta(days=3),
            "note": "covering for a day off",
            "created_by": "alice",
            "created_at": now - timedelta(days=1),
        }
    ]
    return {"silence": silences, "schedule_override": overrides}


async def seed(
    url: str, n: int, now: datetime, *, instance: str, seed_: int = 8, recent: dict[str, float] | None = None
) -> dict[str, int]:
    """Migrate ``url`` and bulk-insert the demo/benchmark rows; returns the row counts per table."""
    import sqlalchemy as sa

    from fsincident.store import Store
    from fsincident.store.tables import (
        Alert,
        Incident,
        IncidentEvent,
        NotificationAttempt,
        Outbox,
        ScheduleOverride,
        SeriesHistory,
        Silence,
    )

    rng = random.Random(seed_)
    rows = incident_rows(n, now, rng)
    extra = other_rows(now)
    history = history_rows(now, rng, instance, recent=recent)
    tables = [
        (Incident, rows["incident"]),
        (Alert, rows["alert"]),
        (IncidentEvent, rows["event"]),
        (Outbox, rows["outbox"]),
        (NotificationAttempt, rows["attempt"]),
        (Silence, extra["silence"]),
        (ScheduleOverride, extra["schedule_override"]),
        (SeriesHistory, history),
    ]
    store = Store(url)
    try:
        await store.upgrade()
        async with store.session() as s:
            conn = await s.connection()
            for model, data in tables:
                table = model.__table__  # type: ignore[attr-defined]
                for k in range(0, len(data), 2000):
                    await conn.execute(sa.insert(table), data[k : k + 2000])
            if not store.is_sqlite:  # explicit ids: move the sequences past them
                for name in ("incident", "alert", "incident_event", "outbox", "notification_attempt"):
                    await conn.execute(
                        sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")
                    )
        if not store.is_sqlite:
            async with store.engine.connect() as c:
                await c.execute(sa.text("ANALYZE"))
                await c.commit()
    finally:
        await store.close()
    return {model.__tablename__: len(data) for model, data in tables}  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------- the daemon


def write_bench_config(tmp: Path, db: str, exposition: Exposition, receiver: Receiver) -> tuple[Path, int]:
    """The benchmark daemon's config folder under ``tmp`` (a free port, ``db``, the local peers); (folder, port)."""
    cfg = tmp / "cfg"
    (cfg / "rules.d").mkdir(parents=True)
    port = free_port()
    text = textwrap.dedent(CONFIG)
    for key, value in {
        "{port}": str(port),
        "{db}": db,
        "{exposition}": exposition.url,
        "{hook}": f"json://127.0.0.1:{receiver.port}",
    }.items():
        text = text.replace(key, value)
    (cfg / "fsincident.yaml").write_text(text)
    (cfg / "rules.d" / "bench.yaml").write_text(textwrap.dedent(RULES))
    return cfg, port


@contextmanager
def ui_daemon(db: str, n: int, exposition: Exposition, receiver: Receiver) -> Iterator[tuple[DaemonProcess, str]]:
    """Seed ``db``, start the real daemon on it; yields it and an ``ack`` token."""
    with tempfile.TemporaryDirectory(prefix="fsi-bench-ui-") as tmp:
        cfg, port = write_bench_config(Path(tmp), db, exposition, receiver)
        t0 = time.monotonic()
        counts = asyncio.run(seed(db, n, datetime.now(UTC), instance=f"127.0.0.1:{exposition.port}"))
        print(f"  ui: seeded {counts} in {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
        with running(DaemonProcess(cfg, port)) as d:
            yield d, d.create_token("ack", name="bench-ui")


class UiClient:
    """One keep-alive connection with a signed-in session cookie."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.cookie = ""

    def sign_in(self, token: str) -> None:
        """POST the login form as a browser would; RuntimeError unless it answers 303 with a cookie."""
        body = urllib.parse.urlencode({"token": token, "next": "/ui/"})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        self.conn.request("POST", "/ui/login", body=body, headers=headers)
        resp = self.conn.getresponse()
        resp.read()
        cookie = resp.getheader("Set-Cookie") or ""
        if resp.status != 303 or not cookie:
            raise RuntimeError(f"sign-in answered {resp.status} without a cookie")
        self.cookie = cookie.split(";", 1)[0]

    def get(self, path: str) -> tuple[int, float | None, float, int]:
        """(status, server ms from Server-Timing, client ms, body bytes)."""
        t0 = time.perf_counter()
        self.conn.request("GET", path, headers={"Cookie": self.cookie})
        resp = self.conn.getresponse()
        body = resp.read()
        client = (time.perf_counter() - t0) * 1000
        m = SERVER_TIMING.search(resp.getheader("Server-Timing") or "")
        return resp.status, float(m.group(1)) if m else None, client, len(body)

    def close(self) -> None:
        self.conn.close()


def pages(n: int) -> list[tuple[str, list[str]]]:
    """(name, paths to cycle through) for every page measured."""
    details = [f"/ui/incidents/{i}" for i in range(n // 2, n // 2 + 40)]
    matcher = urllib.parse.quote('team="db"')
    return [
        ("overview", ["/ui/"]),
        ("incidents", ["/ui/incidents"]),
        ("incidents_filtered", [f"/ui/incidents?state=resolved&severity=critical&match={matcher}&range=30d"]),
        ("incidents_sorted_p50", ["/ui/incidents?sort=title&dir=asc&page=50"]),
        ("incident_detail", details),
        ("rules", ["/ui/rules"]),
        ("rule_preview_6h", ["/ui/rules/bench/QueueBacklog?range=6h"]),
        ("silences", ["/ui/silences"]),
        ("silence_new", [f"/ui/silences/new?matchers={matcher}"]),
        ("silence_preview", [f"/ui/silences/preview?matchers={matcher}"]),
        ("oncall", ["/ui/oncall"]),
        ("schedule", ["/ui/oncall/primary"]),
        ("user", ["/ui/users/alice"]),
        ("explore_1h", ["/ui/explore?source=app&metric=queue_depth&range=1h"]),
        ("explore_7d", ["/ui/explore?source=app&metric=queue_depth&range=7d"]),
    ]


def measure(client: UiClient, pages_: list[tuple[str, list[str]]], samples: int, warmup: int) -> dict[str, Any]:
    """Request the pages in turn (round-robin, so a burst of other load on the machine hits all of them alike):
    per page name its server and client times, statuses and body size of the last answer."""
    out: dict[str, Any] = {
        name: {"server": [], "client": [], "statuses": set(), "bytes": 0, "path": paths[0]} for name, paths in pages_
    }
    for k in range(-warmup, samples):
        for name, paths in pages_:
            m = out[name]
            status, srv, cli, m["bytes"] = client.get(paths[k % len(paths)])
            m["statuses"].add(status)
            if k >= 0:
                m["client"].append(cli)
                if srv is not None:
                    m["server"].append(srv)
    for m in out.values():
        m["statuses"] = sorted(m["statuses"])
    return out


def one_backend(backend: str, n: int, samples: int) -> list[dict[str, Any]]:
    exposition = Exposition().start()
    receiver = Receiver().start()
    for k, q in enumerate(QUEUES):
        exposition.set("queue_depth", 500 if q == "orders" else 10 + k, queue=q)
    db_cm = pg_database() if backend == "postgresql" else sqlite_database()
    out = []
    try:
        with db_cm as db, ui_daemon(db, n, exposition, receiver) as (d, token):
            client = UiClient(d.port)
            try:
                client.sign_in(token)
                for name, m in measure(client, pages(n), samples, WARMUP).items():
                    out.append({"backend": backend, "page": name, **m})
                for name, m in measure(client, [("export_csv_all", ["/ui/incidents.csv"])], CSV_SAMPLES, 1).items():
                    out.append({"backend": backend, "page": name, **m})
            finally:
                client.close()
    finally:
        exposition.stop()
        receiver.stop()
    return out


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values)}


def run(incidents: int = INCIDENTS, samples: int = SAMPLES, only: list[str] | None = None) -> list[dict[str, object]]:
    """Every backend (or ``only`` those): result rows for benchmarks/run.py, one per page and backend (server
    p95 as the value, the rest as detail)."""
    rows: list[dict[str, object]] = []
    for backend in [b for b in BACKENDS if not only or b in only]:
        t0 = time.monotonic()
        load = round(os.getloadavg()[0], 2)
        for m in one_backend(backend, incidents, samples):
            srv, cli = _stats(m["server"]), _stats(m["client"])
            csv = m["page"].startswith("export_csv")
            ok = m["statuses"] == [200] and srv["p95"] <= BUDGET_MS
            rows.append(
                result(
                    f"ui_{backend}_{m['page']}_server_p95",
                    srv["p95"],
                    "ms",
                    backend=backend,
                    page=m["page"],
                    path=m["path"],
                    incidents=incidents,
                    samples=len(m["client"]),
                    statuses=m["statuses"],
                    bytes=m["bytes"],
                    server_p50=round(srv["p50"], 2),
                    server_max=round(srv["max"], 2),
                    client_p50=round(cli["p50"], 2),
                    client_p95=round(cli["p95"], 2),
                    client_max=round(cli["max"], 2),
                    budget_ms=None if csv else BUDGET_MS,
                    verdict="n/a" if csv else ("PASS" if ok else "FAIL"),
                    load_avg_1m=load,
                )
            )
        print(f"  ui: {backend} took {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> None:
    head = f"{'backend':<10} {'page':<22} {'srv p50':>8} {'srv p95':>8} {'srv max':>8} {'cli p50':>8} {'cli p95':>8}"
    print(head + f" {'cli max':>8} {'KiB':>7}  status  verdict")
    for r in rows:
        kib = r["bytes"] / 1024
        print(
            f"{r['backend']:<10} {r['page']:<22} {r['server_p50']:>8.1f} {r['value']:>8.1f} {r['server_max']:>8.1f}"
            f" {r['client_p50']:>8.1f} {r['client_p95']:>8.1f} {r['client_max']:>8.1f} {kib:>7.1f}"
            f"  {','.join(map(str, r['statuses'])):<6}  {r['verdict']}"
        )


# ---------------------------------------------------------------------------------------------- profiling


def profile(names: list[str], n: int, samples: int, backend: str = "sqlite") -> None:
    """Run the daemon in this process on a seeded database and print where each page spends its time (pyinstrument's
    call tree when it is installed, else cProfile's top functions by own time)."""
    import cProfile
    import pstats

    import aiohttp

    from fsincident import config as config_mod
    from fsincident.app import Daemon

    try:  # optional: pip install pyinstrument (async-friendly call trees); else cProfile's flat list
        from pyinstrument import Profiler
    except ImportError:
        Profiler = None  # type: ignore[assignment,misc]

    exposition = Exposition().start()
    receiver = Receiver().start()
    for k, q in enumerate(QUEUES):
        exposition.set("queue_depth", 500 if q == "orders" else 10 + k, queue=q)
    db_cm = pg_database() if backend == "postgresql" else sqlite_database()
    try:
        with db_cm as db, tempfile.TemporaryDirectory(prefix="fsi-bench-ui-prof-") as tmp:
            cfg, port = write_bench_config(Path(tmp), db, exposition, receiver)
            asyncio.run(seed(db, n, datetime.now(UTC), instance=f"127.0.0.1:{exposition.port}"))

            async def go() -> None:
                daemon = Daemon(config_mod.load(cfg))
                await daemon.start()
                try:
                    token = await daemon.store.create_token("prof", ["ack"], daemon.clock.now())
                    jar = aiohttp.CookieJar(unsafe=True)
                    async with aiohttp.ClientSession(cookie_jar=jar) as http:
                        base = f"http://127.0.0.1:{port}"
                        async with http.post(f"{base}/ui/login", data={"token": token, "next": "/ui/"}) as r:
                            await r.read()
                        wanted = dict(pages(n))
                        wanted["export_csv_all"] = ["/ui/incidents.csv"]
                        for name in names:
                            paths = wanted[name]
                            for p in paths[:WARMUP]:
                                async with http.get(base + p) as r:
                                    await r.read()
                            if Profiler is not None:  # a sampling profiler: the whole thread, server included
                                prof = Profiler(interval=0.0005, async_mode="disabled")
                                prof.start()
                            else:
                                prof = cProfile.Profile()
                                prof.enable()
                            for k in range(samples):
                                async with http.get(base + paths[k % len(paths)]) as r:
                                    await r.read()
                            print(f"\n===== {name} ({samples} requests) =====")
                            if Profiler is not None:
                                prof.stop()
                                text = prof.output_text(unicode=False, color=False, show_all=False)
                                print("\n".join(text.splitlines()[:120]))
                            else:
                                prof.disable()
                                st = pstats.Stats(prof).sort_stats("tottime")
                                st.print_stats(r"fsincident|sqlalchemy|jinja2|aiosqlite|asyncpg", 30)
                finally:
                    await daemon.stop()

            asyncio.run(go())
    finally:
        exposition.stop()
        receiver.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=BACKENDS, help="these backends only")
    ap.add_argument("--samples", type=int, default=SAMPLES, help=f"requests per page after the warm-up ({SAMPLES})")
    ap.add_argument("--incidents", type=int, default=INCIDENTS, help=f"incidents seeded ({INCIDENTS})")
    ap.add_argument("--profile", nargs="+", metavar="PAGE", help="profile these pages in-process instead")
    args = ap.parse_args()
    if args.profile:
        profile(args.profile, args.incidents, args.samples, (args.only or ["sqlite"])[0])
        return 0
    t0 = time.monotonic()
    rows = run(args.incidents, args.samples, args.only)
    table(rows)
    out = ROOT / "benchmarks" / "results" / "ui.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 1),
        "machine": {"cpus": os.cpu_count()},
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)} ({report['seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
