"""Analytics over a large incident history: the 90-day report over 100 000 incidents, the scheduled report's
render and a postmortem draft, on SQLite and on PostgreSQL.

The database is seeded in bulk with SQLAlchemy core ``insert`` (executemany in batches) before the daemon starts
(``seed``): ``INCIDENTS`` incidents opened over the last ``DAYS`` days (plus 3 % older ones the report must leave
out), 720 alert groups (12 rules x 30 services x 2 environments, Zipf-weighted; a tenth of them flap: short
incidents in bursts, so re-opens within ``analytics.flap_window``), more incidents in working hours than at night
or at weekends. Each incident has 1-3 alerts (starting before the incident where the rule has a ``for:``: the time
to detect), a timeline as the daemon writes it (``triggered``, ``alert_firing``, ``escalated`` step 0 with the
on-call ``users``/``oncall`` and step 1 when nobody acknowledged within 15 minutes, ``notify_sent``,
``acknowledged``, ``retriggered`` after an ack, notes, ``alert_resolved``, ``resolved`` by ``fsincident`` or a
person), outbox rows (trigger pages to ``user:NAME`` with one row per contact method and to ``channel:ops``,
acknowledge/resolve notices) and the notification attempts of the pages. The series ``probe_success`` of two
services is recorded for the whole period (0 while their ``ProbeFailed`` incidents were open), for the series-based
SLA and the postmortem chart.

Then the real ``fsincident run`` starts on it (``analytics:`` services, working hours, users in five time zones,
two schedules, two escalation policies, a weekly ``reports:`` entry, a ``time_to`` rule for the capacity section)
and the client requests, on one keep-alive connection after a warm-up request:

- ``GET /api/v1/analytics/report?period=90d`` (every section), each section alone, the 7-day report, the CSV export;
- ``check_summary``: the summary of the seeded period (explicit ``from``/``to``) against the same counts taken from
  the seeded rows (``expected_summary``): the figures are checked, not only timed;
- ``POST /api/v1/reports/weekly/send`` (the scheduled report built with its charts and queued);
- ``GET /api/v1/incidents/{id}/postmortem`` of a ``ProbeFailed`` incident (Markdown with the chart), and as JSON.

Before the requests it measures the idle daemon's CPU on the seeded database; after them it stops the daemon and
starts one in this process on the same database for the server-side times of ``AnalyticsService.report`` (90 days),
``ReportScheduler.build`` (report + charts), ``Renderer.report`` (HTML and text) and ``analytics.postmortem.draft``.

The API sends no ``Server-Timing``: the server time is the time to the response's headers (aiohttp serialises the
whole JSON answer before it sends them), the client time the time to the last byte. Goal: the 90-day report in
<= ``BUDGET_S`` seconds.

PostgreSQL is ``FSINCIDENT_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``); a uniquely named
database is created there and dropped afterwards. Loopback only. Run with ``.venv/bin/python benchmarks/run.py
--only analytics`` or alone with ``.venv/bin/python benchmarks/analytics.py [--only sqlite|postgresql] [--incidents
N] [--samples N]``; it prints a table and writes ``benchmarks/results/analytics.json``. ``--seed-only [--db URL]``
seeds (and with ``--db`` keeps) a database and prints the row counts; ``--profile [--db URL]`` runs the daemon
in-process and prints where ``AnalyticsService.report`` spends its time (``Phases``: per section, per load/figures
function and SQL statement; then cProfile), on a fresh seed or on the database ``--db`` seeded before.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import http.client
import json
import math
import os
import random
import statistics
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

from benchmarks.common import result, running, stop  # noqa: E402
from benchmarks.delivery import pg_database, sqlite_database  # noqa: E402
from tests.helpers import DaemonProcess, Exposition, Receiver, free_port  # noqa: E402

INCIDENTS = 100_000
DAYS = 90
OLDER = 0.03  # share of extra incidents opened before the period (the report must skip them)
SAMPLES = 3
BUDGET_S = 2.0
IDLE_S = 10.0  # seconds over which the idle daemon's CPU use is measured
BACKENDS = ("sqlite", "postgresql")
SECTIONS = ("summary", "response", "daily", "fatigue", "oncall", "sla", "capacity", "incidents")
BATCH = 5000
SYSTEM = "fsincident"

# (alertname, severity, team hint or None for the service's team, for: seconds, share of the rule's groups that flap)
RULES = [
    ("HighLatency", "warning", None, 300, 0.1),
    ("ErrorRate", "critical", None, 120, 0.1),
    ("ProbeFailed", "critical", None, 0, 0.0),
    ("PodCrashLooping", "warning", "app", 0, 0.4),
    ("QueueBacklog", "warning", "app", 600, 0.2),
    ("ReplicationLag", "critical", "db", 300, 0.1),
    ("SlowQueries", "info", "db", 900, 0.3),
    ("DiskFull", "critical", "storage", 0, 0.0),
    ("BackupFailed", "warning", "storage", 0, 0.0),
    ("TargetDown", "critical", "net", 60, 0.2),
    ("CertExpiry", "info", "web", 0, 0.0),
    ("HighCPU", "info", None, 600, 0.3),
]
TEAMS = ["app", "db", "web", "storage", "net"]
SERVICES = [(f"svc-{k:02d}", TEAMS[k % len(TEAMS)]) for k in range(30)]
ENVS = ["prod", "staging"]
PROBED = ["svc-00", "svc-05"]  # services whose probe_success series is recorded (series SLA, postmortem chart)
# name, time zone, contact methods (one outbox row per method and page)
USERS = [
    ("alice", "Europe/Berlin", 2),
    ("bob", "America/New_York", 1),
    ("carol", "UTC", 2),
    ("dave", "Asia/Tokyo", 1),
    ("erin", "Europe/London", 1),
    ("frank", "America/Los_Angeles", 1),
]
CONTACTS = {u: n for u, _, n in USERS}
PRIMARY = ["alice", "bob", "carol", "erin"]  # weekly, Mon 09:00 Europe/Berlin
DATABASE = ["carol", "dave", "frank"]  # daily, 08:00 UTC
POLICY = {"app": ("app", "primary", PRIMARY, "bob"), "db": ("db", "database", DATABASE, "alice")}
ROUTE = {"app": 0, "db": 1}

CONFIG = """
listen: 127.0.0.1:{port}
database: {db}
sources:
  - {name: app, type: scrape, url: "{exposition}/metrics", interval: 10s}
channels:
  - {name: ops, urls: ["{hook}/ops"]}
users:
{users}
schedules:
  - name: primary
    timezone: Europe/Berlin
    layers:
      - {rotation: weekly, handoff: "Mon 09:00", start: 2025-01-06, users: [alice, bob, carol, erin]}
  - name: database
    timezone: UTC
    layers:
      - {rotation: daily, handoff: "08:00", start: 2025-01-06, users: [carol, dave, frank]}
escalation_policies:
  - name: app
    steps:
      - {after: 0m, notify: ["schedule:primary", "channel:ops"]}
      - {after: 15m, notify: ["user:bob"]}
  - name: db
    steps:
      - {after: 0m, notify: ["schedule:database"]}
      - {after: 15m, notify: ["user:alice"]}
routes:
  - {match: {team: app}, escalation_policy: app}
  - {match: {team: db}, escalation_policy: db}
  - {notify: ["channel:ops"]}
history:
  step: 1m
  keep: 2d
  coarse_step: 15m
  coarse_keep: 100d
analytics:
  ack_within: 15m
  flap_window: 1h
  flap_count: 3
  group_by: service
  services:
{services}
reports:
  - name: weekly
    schedule: "0 7 1 1 *"
    timezone: Europe/Berlin
    period: 90d
    to: ["channel:ops"]
    group_by: team
"""

RULES_YAML = """
groups:
  - name: bench
    interval: 30s
    source: app
    rules:
{rules}
  - name: capacity
    interval: 30s
    source: app
    rules:
      - alert: DiskFillingUp
        expr: time_to(disk_free_bytes, 0, "1h") < 4 * 3600
        severity: warning
"""

# The metric each seeded rule reads on the live source; served below the thresholds so nothing fires meanwhile.
RULE_EXPR = {
    "HighLatency": "latency_seconds > 2",
    "ErrorRate": "error_ratio > 0.05",
    "ProbeFailed": "probe_success == 0",
    "PodCrashLooping": "restarts > 5",
    "QueueBacklog": "queue_depth > 1000",
    "ReplicationLag": "replication_lag_seconds > 60",
    "SlowQueries": "slow_queries > 10",
    "DiskFull": "disk_used_ratio > 0.95",
    "BackupFailed": "backup_ok == 0",
    "TargetDown": "up == 0",
    "CertExpiry": "cert_days_left < 7",
    "HighCPU": "cpu_ratio > 0.9",
}
LIVE_VALUES = {
    "latency_seconds": 0.2,
    "error_ratio": 0.001,
    "probe_success": 1,
    "restarts": 0,
    "queue_depth": 10,
    "replication_lag_seconds": 1,
    "slow_queries": 0,
    "disk_used_ratio": 0.5,
    "backup_ok": 1,
    "up": 1,
    "cert_days_left": 60,
    "cpu_ratio": 0.3,
}


# ---------------------------------------------------------------------------------------------- seeding


def _hex(*parts: object) -> str:
    return hashlib.sha256("\xff".join(map(str, parts)).encode()).hexdigest()


def _hour_weight(t: float) -> float:
    """Relative incident rate at UTC epoch seconds ``t``: busier in (European) working hours, quieter at weekends."""
    hour = (t // 3600) % 24
    weekday = (t // 86400 + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    w = 1.0 if 7 <= hour < 19 else 0.45
    return w * (0.5 if weekday >= 5 else 1.0)


def _times(rng: random.Random, m: int, start: float, end: float, flappy: bool) -> list[float]:
    """``m`` sorted opening times in ``[start, end)``: diurnal for most groups, in bursts for flapping ones."""
    out: list[float] = []
    if flappy:
        while len(out) < m:
            t = rng.uniform(start, end)
            for _ in range(min(m - len(out), rng.randint(3, 8))):
                t += rng.uniform(300, 2400)
                if t < end:
                    out.append(t)
    else:
        while len(out) < m:
            t = rng.uniform(start, end)
            if rng.random() < _hour_weight(t):
                out.append(t)
    out.sort()
    return out


def _shares(n: int, weights: list[float], cap: int) -> list[int]:
    """``n`` split in proportion to ``weights``, no share over ``cap`` (a group opens at most every few hours on
    average, so its incidents fit in the period one after another); the rest goes to the biggest shares."""
    counts = [0] * len(weights)
    left, free = n, set(range(len(weights)))
    while left > 0 and free:
        total = sum(weights[k] for k in free)
        step = {k: min(cap - counts[k], max(1, round(left * weights[k] / total))) for k in free}
        for k in sorted(free, key=lambda k: -weights[k]):
            take = min(step[k], left)
            counts[k] += take
            left -= take
            if counts[k] >= cap:
                free.discard(k)
            if left == 0:
                break
    return counts


def _oncall(schedule: str, t: float) -> str:
    """Who the seeded schedules have on call at ``t`` (close to the configured rotations, good enough here)."""
    if schedule == "primary":
        weeks = int((t - 1735977600) // (7 * 86400))  # 2025-01-06 (a Monday) 00:00 UTC
        return PRIMARY[weeks % len(PRIMARY)]
    days = int((t - 1736150400) // 86400)  # 2025-01-06 08:00 UTC
    return DATABASE[days % len(DATABASE)]


class Rows:
    """The rows of every seeded table, with the next id of each."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {
            k: [] for k in ("incident", "alert", "incident_event", "outbox", "notification_attempt", "series_history")
        }
        self.ids = {k: 0 for k in self.tables}

    def add(self, table: str, row: dict[str, Any]) -> int:
        self.ids[table] += 1
        row["id"] = self.ids[table]
        self.tables[table].append(row)
        return row["id"]


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def incident_rows(
    n: int, now: datetime, rng: random.Random, days: int = DAYS, instance: str = "127.0.0.1:9100"
) -> tuple[Rows, dict[str, Any]]:
    """The incident history (see the module's docstring); also per probed service its outage spans."""
    rows = Rows()
    end = now.timestamp()
    start = end - days * 86400
    keys = [
        (rule, svc, team, env)
        for rule in RULES
        for svc, team in SERVICES
        for env in ENVS
        if rule[2] is None or rule[2] == team
    ]
    rng.shuffle(keys)
    counts = _shares(n, [1 / (k + 1) ** 0.6 for k in range(len(keys))], cap=max(1, int(days * 24 / 5)))
    outages: dict[str, list[tuple[float, float]]] = {s: [] for s in PROBED}
    pending: list[tuple[float, tuple[Any, ...], bool]] = []
    for (rule, svc, team, env), m in zip(keys, counts, strict=True):
        flappy = rng.random() < rule[4]
        for t in _times(rng, m, start, end, flappy):
            pending.append((t, (rule, svc, team, env), flappy))
        for t in _times(rng, max(0, round(m * OLDER)), start - 10 * 86400, start, flappy):
            pending.append((t, (rule, svc, team, env), flappy))
    # Open incidents in time order (ids increase with created_at as in the daemon); one open incident per group.
    pending.sort(key=lambda p: p[0])
    free_at: dict[tuple[Any, ...], float] = {}
    for t0, key, flappy in pending:
        t = max(t0, free_at.get(key, 0.0) + rng.uniform(1, 60))
        if t >= end:
            continue
        r_end = _incident(rows, rng, t, key, flappy, end, instance)
        free_at[key] = r_end if r_end is not None else math.inf
        (rule, svc, _team, env) = key
        if rule[0] == "ProbeFailed" and svc in outages and env == "prod":
            outages[svc].append((t, r_end if r_end is not None else end))
    return rows, {"outages": outages, "start": start, "end": end}


def _incident(
    rows: Rows, rng: random.Random, c: float, key: tuple[Any, ...], flappy: bool, now: float, instance: str
) -> float | None:
    """One incident opened at ``c`` with its alerts, timeline, pages and attempts; returns its resolve time (None
    while it is still open at ``now``)."""
    (alertname, severity, _hint, for_s, _flap), svc, team, env = key
    probed = alertname == "ProbeFailed" and svc in PROBED and env == "prod"
    if flappy:
        duration = rng.uniform(90, 900)
    else:
        duration = min(3 * 86400.0, rng.lognormvariate(math.log(1500), 1.1))
    resolved = c + duration
    is_open = resolved >= now
    ack_p = {"critical": 0.85, "warning": 0.55, "info": 0.2}[severity] * (0.3 if flappy else 1.0)
    ack = c + rng.lognormvariate(math.log(240), 1.0) if rng.random() < ack_p else None
    if ack is not None and (ack >= resolved or ack >= now):
        ack = None
    labels = {"alertname": alertname, "severity": severity, "team": team, "service": svc, "env": env}
    gkey = _hex("bench", alertname, svc, env)[:32]
    policy = POLICY.get(team)
    events: list[tuple[float, str, str | None, str | None, dict[str, Any]]] = []
    pages: list[tuple[float, str, int, str, int]] = []  # (at, target, dest_index, kind, event index)

    def event(at: float, kind: str, actor: str | None = SYSTEM, note: str | None = None, **data: Any) -> int:
        events.append((at, kind, actor, note, data))
        return len(events) - 1

    def page(at: float, targets: list[str], ev: int, kind: str = "trigger") -> None:
        for target in targets:
            n = CONTACTS[target[5:]] if target.startswith("user:") else 1
            for i in range(n):
                pages.append((at, target, i, kind, ev))

    # Alerts: the first one was bad for the rule's ``for:`` (and a group_wait) before the incident opened.
    n_alerts = 1 if probed else rng.choices((1, 2, 3), weights=(65, 25, 10))[0]
    alert_rows = []
    for k in range(n_alerts):
        fp = _hex("alert", alertname, svc, env, k)[:16]
        where = f"{svc}-{k}.{env}:9100"
        starts = c - for_s - rng.uniform(0, 30) if k == 0 else c + rng.uniform(0, duration / 2)
        value = round(rng.uniform(1, 100), 2)
        # A probed service's alert has the labels of its probe_success series (the postmortem charts it).
        alabels = (
            {**labels, "instance": instance, "job": "app"} if probed else {**labels, "instance": where, "job": "node"}
        )
        alert_rows.append((fp, alabels, starts, value))
        if k == 0:
            event(c, "triggered", fingerprint=fp, labels=alabels, value=value, origin=f"rule:bench/{alertname}")
        elif starts < now:
            event(starts, "alert_firing", fingerprint=fp, labels=alabels, value=value)
    # The first pages: the policy's step 0 (the schedule's on-call person and the channel), else the route's channel.
    targets: list[str]
    if policy is not None:
        pname, schedule, _people, step1 = policy
        who = _oncall(schedule, c)
        step0 = [f"user:{who}"] + (["channel:ops"] if pname == "app" else [])
        targets = list(step0)
        ev = event(
            c,
            "escalated",
            note="step 1 of 2, pass 1 of 1",
            policy=pname,
            step=0,
            loop=0,
            targets=[f"schedule:{schedule}"] + (["channel:ops"] if pname == "app" else []),
            paged=step0,
            users=[who],
            oncall=[{"schedule": schedule, "user": who, "layer": 1, "override": False}],
            manual=False,
        )
        page(c, step0, ev)
        if (ack is None or ack > c + 900) and resolved > c + 900 and c + 900 < now:
            at = c + 900
            ev = event(
                at,
                "escalated",
                note="step 2 of 2, pass 1 of 1",
                policy=pname,
                step=1,
                loop=0,
                targets=[f"user:{step1}"],
                paged=[f"user:{step1}"],
                users=[step1],
                oncall=[],
                manual=False,
            )
            page(at, [f"user:{step1}"], ev)
            if f"user:{step1}" not in targets:
                targets.append(f"user:{step1}")
    else:
        targets = ["channel:ops"]
        page(c, targets, 0)
    # A responder acknowledges; now and then an alert fires again afterwards (re-trigger: the ack is cleared, a new
    # page goes out) and someone acknowledges again.
    acked_by = rng.choice([u for u, _, _ in USERS]) if ack is not None else None
    final_ack, final_by = ack, acked_by
    if ack is not None:
        ev = event(ack, "acknowledged", acked_by, "looking", via=rng.choice(["api", "ui", "chat", "link"]))
        page(ack, targets, ev, "acknowledge")
        if rng.random() < (0.25 if flappy else 0.05) and resolved - ack > 120:
            rt = rng.uniform(ack + 30, resolved - 60)
            if rt < now:
                event(rt, "alert_firing", fingerprint=alert_rows[0][0], labels=alert_rows[0][1], value=99.0)
                ev = event(rt, "retriggered")
                page(rt, targets, ev)
                final_ack = final_by = None
                ack2 = rt + rng.uniform(30, 900)
                if ack2 < resolved and ack2 < now:
                    ev = event(ack2, "acknowledged", acked_by, "still on it", via="api")
                    page(ack2, targets, ev, "acknowledge")
                    final_ack, final_by = ack2, acked_by
    if rng.random() < 0.12:
        at = (ack or c) + rng.uniform(10, 600)
        if at < min(resolved, now):
            event(at, "note", rng.choice([u for u, _, _ in USERS]), "restarted the worker; watching")
    resolved_by = None
    if not is_open:
        for fp, _al, _s, _v in alert_rows:
            event(resolved, "alert_resolved", fingerprint=fp)
        resolved_by = SYSTEM if rng.random() < 0.75 else (acked_by or rng.choice([u for u, _, _ in USERS]))
        ev = event(resolved, "resolved", resolved_by, "all alerts resolved" if resolved_by == SYSTEM else "fixed")
        page(resolved, targets, ev, "resolve")
    # Rows, ids in time order within the incident.
    state = "resolved" if not is_open else ("acknowledged" if final_ack is not None else "triggered")
    iid = rows.add(
        "incident",
        {
            "group_key": gkey,
            "open_key": None if not is_open else gkey,
            "title": f"{alertname}: {svc} ({env})",
            "state": state,
            "severity": severity,
            "labels": labels,
            "route": ROUTE.get(team, 2),
            "targets": targets,
            "auto_resolve": True,
            "created_at": _dt(c),
            "updated_at": _dt(max([e[0] for e in events])),
            "acknowledged_at": _dt(final_ack) if final_ack is not None else None,
            "acknowledged_by": final_by,
            "resolved_at": None if is_open else _dt(resolved),
            "resolved_by": resolved_by,
            "escalation_policy": policy[0] if policy else None,
            "esc_step": 1 if policy else 0,
            "esc_loop": 0,
            "grouping": {"receiver": "ops", "group_wait": 30.0, "group_interval": 300.0},
        },
    )
    for fp, alabels, starts, value in alert_rows:
        rows.add(
            "alert",
            {
                "incident_id": iid,
                "fingerprint": fp,
                "alertname": alertname,
                "origin": f"rule:bench/{alertname}",
                "labels": alabels,
                "annotations": {"summary": f"{alertname} on {alabels['instance']}: {value}"},
                "value": value,
                "state": "firing" if is_open else "resolved",
                "starts_at": _dt(starts),
                "ends_at": None if is_open else _dt(resolved),
                "updated_at": _dt(starts if is_open else resolved),
            },
        )
    # Each delivery is on the timeline too (notify_sent / notify_failed with the outbox row's id).
    deliveries = []
    for k, (at, target, index, kind, _ev) in enumerate(pages):
        sent, failed = at + rng.uniform(0.2, 3), rng.random() < 0.01
        deliveries.append((sent, failed))
        if sent < now:
            dest = f"json://127.0.0.1/{target.split(':', 1)[1]}{index}"
            err = "HTTP 503 from the receiver" if failed else None
            base = {"target": target, "destination": dest, "notification": kind, "attempt": 1}
            event(
                sent,
                "notify_failed" if failed else "notify_sent",
                SYSTEM,
                err,
                **base,
                outbox_id=rows.ids["outbox"] + k + 1,
            )
    order = sorted(range(len(events)), key=lambda k: events[k][0])
    event_ids: dict[int, int] = {}
    for k in order:
        at, kind, actor, note, data = events[k]
        event_ids[k] = rows.add(
            "incident_event",
            {"incident_id": iid, "at": _dt(at), "kind": kind, "actor": actor, "note": note, "data": data},
        )
    title = f"#{iid} {alertname}: {svc} ({env})"
    for (at, target, index, kind, ev), (sent, failed) in zip(pages, deliveries, strict=True):
        label = {"trigger": "TRIGGERED", "acknowledge": "ACKNOWLEDGED", "resolve": "RESOLVED"}[kind]
        oid = rows.add(
            "outbox",
            {
                "incident_id": iid,
                "event_id": event_ids[ev],
                "target": target,
                "dest_index": index,
                "kind": kind,
                "severity": severity,
                "title": f"[{label}] {title}",
                "body": f"1 alert firing, severity {severity}.\n- {svc} ({env})",
                "state": "failed" if failed else "sent",
                "attempts": 3 if failed else 1,
                "next_attempt_at": _dt(sent),
                "last_error": "HTTP 503 from the receiver" if failed else None,
                "created_at": _dt(at),
                "sent_at": None if failed else _dt(sent),
                "data": {"incident": {"id": iid, "title": title, "severity": severity, "labels": labels}},
                "claimed_by": "bench:1",
            },
        )
        if kind == "trigger":
            rows.add(
                "notification_attempt",
                {
                    "outbox_id": oid,
                    "incident_id": iid,
                    "target": target,
                    "dest_index": index,
                    "destination": f"json://127.0.0.1/{target.split(':', 1)[1]}{index}",
                    "kind": kind,
                    "attempt": 1,
                    "replica": "bench:1",
                    "started_at": _dt(sent - 0.1),
                    "finished_at": _dt(sent),
                    "duration_ms": 100.0,
                    "result": "failed" if failed else "sent",
                    "error": "HTTP 503 from the receiver" if failed else None,
                },
            )
    return None if is_open else resolved


def probe_rows(
    rows: Rows, outages: dict[str, list[tuple[float, float]]], start: float, end: float, instance: str
) -> None:
    """``probe_success{service}`` history of the probed services: 0 while their prod ``ProbeFailed`` incidents were
    open, else 1; the coarse tier over the whole period, the fine tier over the last two days."""
    from fsincident.core import Labels
    from fsincident.history import buckets as bk
    from fsincident.history.service import series_id

    now = datetime.fromtimestamp(end, UTC)
    for svc, spans in outages.items():
        labels = {"service": svc, "instance": instance, "job": "app"}
        fp = series_id("app", "probe_success", Labels(labels))
        starts = [s for s, _ in spans]

        def up(t: float, spans: list[tuple[float, float]] = spans, starts: list[float] = starts) -> float:
            k = bisect.bisect_right(starts, t) - 1
            return 0.0 if k >= 0 and spans[k][0] <= t < spans[k][1] else 1.0

        for tier, step, span, per in (
            (0, 60, 2 * 86400, bk.FINE_PER_CHUNK),
            (1, 900, end - start, bk.COARSE_PER_CHUNK),
        ):
            chunks: dict[float, bytearray] = {}
            t = bk.floor_to(end - span, step)
            while t < end - step:
                cs = bk.floor_to(t, step * per)
                vs = [up(t + k * step / 6) for k in range(6)]
                bk.put(chunks.setdefault(cs, bytearray()), int((t - cs) // step), (sum(vs) / 6, min(vs), max(vs)))
                t += step
            for cs, data in chunks.items():
                rows.add(
                    "series_history",
                    {
                        "series": fp,
                        "source": "app",
                        "metric": "probe_success",
                        "labels": labels,
                        "tier": tier,
                        "chunk_start": datetime.fromtimestamp(cs, UTC),
                        "step_seconds": step,
                        "points": bytes(data),
                        "updated_at": now,
                    },
                )


def expected_summary(rows: Rows, start: datetime, end: datetime, flap_window: float = 3600) -> dict[str, int]:
    """The summary counts of ``[start, end)`` as the issue's definitions give them, counted straight from the seeded
    rows (a cross-check of the analytics, not only their speed)."""
    incs = {r["id"]: r for r in rows.tables["incident"] if start <= r["created_at"] < end}
    acked: set[int] = set()
    esc = retrig = 0
    for e in rows.tables["incident_event"]:
        if e["incident_id"] not in incs:
            continue
        if e["kind"] == "acknowledged":
            acked.add(e["incident_id"])
        elif e["kind"] == "retriggered":
            retrig += 1
        elif e["kind"] == "escalated" and (e["data"]["step"] > 0 or e["data"]["loop"] > 0 or e["data"]["manual"]):
            esc += 1
    pages = {
        (o["incident_id"], o["event_id"], o["target"])
        for o in rows.tables["outbox"]
        if o["incident_id"] in incs and o["kind"] == "trigger" and o["state"] not in ("cancelled", "muted")
    }
    resolved_at: dict[str, list[tuple[datetime, int]]] = {}
    for r in rows.tables["incident"]:
        if r["resolved_at"] is not None:
            resolved_at.setdefault(r["group_key"], []).append((r["resolved_at"], r["id"]))
    window = timedelta(seconds=flap_window)
    for v in resolved_at.values():
        v.sort()
    reopens = 0
    for r in incs.values():
        v = resolved_at.get(r["group_key"], [])
        k = bisect.bisect_left(v, (r["created_at"] - window, -1))
        reopens += any(i != r["id"] and t <= r["created_at"] for t, i in v[k : k + 3])
    resolved = sum(1 for r in incs.values() if r["resolved_at"] is not None)
    return {
        "incidents": len(incs),
        "acknowledged": len(acked),
        "resolved": resolved,
        "open": len(incs) - resolved,
        "pages": len(pages),
        "escalations": esc,
        "retriggers": retrig,
        "reopens": reopens,
    }


async def seed(url: str, n: int, now: datetime, *, instance: str, seed_: int = 9) -> dict[str, Any]:
    """Migrate ``url`` and bulk-insert the history; returns the row counts per table and the seconds taken."""
    import sqlalchemy as sa

    from fsincident.store import Store, tables

    t0 = time.monotonic()
    rows, info = incident_rows(n, now, random.Random(seed_), instance=instance)
    probe_rows(rows, info["outages"], info["start"], info["end"], instance)
    generated = time.monotonic() - t0
    by_name = {t.name: t for t in tables.metadata.sorted_tables}
    store = Store(url)
    try:
        await store.upgrade()
        async with store.session() as s:
            conn = await s.connection()
            for name, data in rows.tables.items():
                for k in range(0, len(data), BATCH):
                    await conn.execute(sa.insert(by_name[name]), data[k : k + BATCH])
            if not store.is_sqlite:  # explicit ids: move the sequences past them
                for name in rows.tables:
                    await conn.execute(
                        sa.text(
                            f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                            f"(SELECT coalesce(max(id), 1) FROM {name}))"
                        )
                    )
        async with store.engine.connect() as c:
            await c.execute(sa.text("ANALYZE"))
            await c.commit()
    finally:
        await store.close()
    counts = {name: len(data) for name, data in rows.tables.items()}
    in_period = sum(1 for r in rows.tables["incident"] if r["created_at"] >= now - timedelta(days=DAYS))
    probe_ids = [
        r["id"]
        for r in rows.tables["incident"]
        if r["labels"]["alertname"] == "ProbeFailed"
        and r["labels"]["service"] in PROBED
        and r["labels"]["env"] == "prod"
        and r["resolved_at"] is not None
    ]  # in time order: the last one is the newest (charted from the fine tier when within two days)
    t1 = time.monotonic()
    expected = expected_summary(rows, now - timedelta(days=DAYS), now)
    return {
        "rows": counts,
        "incidents_in_period": in_period,
        "now": now,
        "expected": expected,
        "expected_s": round(time.monotonic() - t1, 1),
        "generate_s": round(generated, 1),
        "seconds": round(time.monotonic() - t0, 1),
        "probe_incidents": probe_ids,
        "any_incident": rows.tables["incident"][len(rows.tables["incident"]) // 2]["id"],
    }


# ---------------------------------------------------------------------------------------------- the daemon


def write_config(tmp: Path, db: str, exposition: Exposition, receiver: Receiver) -> tuple[Path, int]:
    """The benchmark daemon's config folder under ``tmp`` (a free port, ``db``, the local peers); (folder, port)."""
    cfg = tmp / "cfg"
    (cfg / "rules.d").mkdir(parents=True)
    port = free_port()
    hook = f"json://127.0.0.1:{receiver.port}"
    users = "\n".join(
        f"  - {{name: {u}, timezone: {tz}, contacts: [{', '.join(json.dumps(f'{hook}/{u}{k}') for k in range(n))}]}}"
        for u, tz, n in USERS
    )
    services = [f"    - {{name: {svc}, target: 99.9, matchers: ['service=\"{svc}\"']}}" for svc, _ in SERVICES[:8]]
    services += [
        f"    - {{name: {svc}-probe, target: 99.5, series: 'probe_success{{service=\"{svc}\"}}', source: app}}"
        for svc in PROBED
    ]
    text = textwrap.dedent(CONFIG)
    for key, value in {
        "{port}": str(port),
        "{db}": db,
        "{exposition}": exposition.url,
        "{hook}": hook,
        "{users}": users,
        "{services}": "\n".join(services),
    }.items():
        text = text.replace(key, value)
    (cfg / "fsincident.yaml").write_text(text)
    rules = "\n".join(
        f"      - alert: {name}\n        expr: {RULE_EXPR[name]}\n        for: {f}s\n        severity: {sev}"
        for name, sev, _t, f, _fl in RULES
    )
    (cfg / "rules.d" / "bench.yaml").write_text(textwrap.dedent(RULES_YAML).replace("{rules}", rules))
    return cfg, port


def exposition_server() -> Exposition:
    """The live source: every metric below its rule's threshold, and a disk that fills (the capacity section)."""
    exp = Exposition().start()
    for metric, value in LIVE_VALUES.items():
        if metric == "probe_success":
            for svc in PROBED:
                exp.set(metric, value, service=svc)
        else:
            exp.set(metric, value, service="svc-00")
    exp.set("disk_free_bytes", 5e9, mount="/data")
    exp.set("disk_free_bytes", 8e10, mount="/")
    return exp


@contextmanager
def bench_daemon(
    db: str, n: int, exposition: Exposition, receiver: Receiver
) -> Iterator[tuple[DaemonProcess, str, dict[str, Any], Path]]:
    """Seed ``db``, start the real daemon on it; yields it, an ``admin`` token, the seed's summary and the config
    folder."""
    with tempfile.TemporaryDirectory(prefix="fsi-bench-analytics-") as tmp:
        cfg, port = write_config(Path(tmp), db, exposition, receiver)
        info = asyncio.run(seed(db, n, datetime.now(UTC), instance=f"127.0.0.1:{exposition.port}"))
        print(f"  analytics: seeded {info['rows']} in {info['seconds']}s", file=sys.stderr, flush=True)
        with running(DaemonProcess(cfg, port)) as d:
            yield d, d.create_token("admin", name="bench-analytics"), info, cfg


class Client:
    """One keep-alive connection with a bearer token."""

    def __init__(self, port: int, token: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str) -> tuple[int, float, float, bytes]:
        """(status, ms to the response headers, ms to the last byte, body)."""
        t0 = time.perf_counter()
        self.conn.request(method, path, headers=self.headers)
        resp = self.conn.getresponse()
        ttfb = (time.perf_counter() - t0) * 1000
        body = resp.read()
        return resp.status, ttfb, (time.perf_counter() - t0) * 1000, body

    def close(self) -> None:
        self.conn.close()


def requests(info: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, method, path) of everything measured."""
    probe = (info["probe_incidents"] or [info["any_incident"]])[-1]
    out = [("report_90d", "GET", "/api/v1/analytics/report?period=90d")]
    out += [(f"section_{s}_90d", "GET", f"/api/v1/analytics/{s}?period=90d") for s in SECTIONS]
    out += [
        ("report_7d", "GET", "/api/v1/analytics/report?period=7d"),
        (
            "check_summary",
            "GET",
            f"/api/v1/analytics/summary?from={_q(info['now'] - timedelta(days=DAYS))}&to={_q(info['now'])}",
        ),
        ("report_90d_csv_summary", "GET", "/api/v1/analytics/summary?period=90d&format=csv"),
        ("scheduled_report_send", "POST", "/api/v1/reports/weekly/send"),
        ("postmortem", "GET", f"/api/v1/incidents/{probe}/postmortem"),
        ("postmortem_json", "GET", f"/api/v1/incidents/{info['any_incident']}/postmortem?format=json"),
    ]
    return out


def _q(t: datetime) -> str:
    return urllib.parse.quote(t.isoformat(timespec="microseconds").replace("+00:00", "Z"))


def check(body: bytes, expected: dict[str, int]) -> dict[str, Any]:
    """The API's summary of the seeded period against the counts taken from the seeded rows: the keys that differ."""
    try:
        got = json.loads(body)
    except ValueError:
        return {"error": "not JSON"}
    got = got.get("summary", got) if isinstance(got, dict) else {}
    return {k: {"expected": v, "got": got.get(k)} for k, v in expected.items() if got.get(k) != v}


def measure(client: Client, info: dict[str, Any], samples: int) -> list[dict[str, Any]]:
    """Each request once to warm up, then ``samples`` times; a 404/405 (route not there yet) is tried once only."""
    out = []
    for name, method, path in requests(info):
        status, ttfb, total, body = client.call(method, path)
        m: dict[str, Any] = {"name": name, "path": path, "statuses": [status], "server": [], "client": []}
        m["bytes"] = len(body)
        if status in (404, 405):
            m["error"] = body[:200].decode(errors="replace")
            out.append(m)
            continue
        if status >= 400:
            m["error"] = body[:300].decode(errors="replace")
        if name == "report_90d":
            m["summary"] = _summary(body)
        if name == "check_summary":
            m["mismatches"] = check(body, info["expected"]) if status == 200 else {"status": status}
        for _ in range(samples if method == "GET" else 1):
            status, ttfb, total, body = client.call(method, path)
            m["statuses"].append(status)
            m["server"].append(ttfb)
            m["client"].append(total)
        m["statuses"] = sorted(set(m["statuses"]))
        out.append(m)
    return out


def _summary(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    s = doc.get("summary") if isinstance(doc, dict) else None
    if not isinstance(s, dict):
        return None
    return {k: s.get(k) for k in ("incidents", "acknowledged", "resolved", "open", "pages", "escalations")}


def idle_cpu(d: DaemonProcess, seconds: float = IDLE_S) -> dict[str, Any]:
    """The daemon's CPU use while nobody asks it anything (its loops over the seeded tables), in percent of a core."""
    from benchmarks.common import cpu_seconds

    time.sleep(2)  # past the start-up work
    c0, t0 = cpu_seconds(d.proc.pid), time.monotonic()  # type: ignore[union-attr]
    time.sleep(seconds)
    pct = 100 * (cpu_seconds(d.proc.pid) - c0) / (time.monotonic() - t0)  # type: ignore[union-attr]
    return {
        "name": "daemon_idle_cpu",
        "path": "(idle)",
        "statuses": [200],
        "server": [pct],
        "client": [pct],
        "bytes": 0,
    }


def in_process(cfg: Path, info: dict[str, Any], samples: int) -> list[dict[str, Any]]:
    """The daemon in this process on the same database (the real one stopped): the server-side times of the 90-day
    ``AnalyticsService.report``, the scheduled report's build (report + charts, ``ReportScheduler.build``) and its
    HTML and text renders (``Renderer.report``), and a postmortem draft (``analytics.postmortem.draft``)."""
    from fsincident import config as config_mod
    from fsincident.analytics import postmortem as pm
    from fsincident.app import Daemon

    async def timed(name: str, fn: Any, n: int = samples) -> dict[str, Any]:
        m: dict[str, Any] = {"name": name, "path": "(in process)", "statuses": [], "server": [], "client": []}
        m["bytes"] = 0
        try:
            value = await fn()  # warm-up
            for _ in range(n):
                t0 = time.perf_counter()
                value = await fn()
                m["server"].append((time.perf_counter() - t0) * 1000)
            m["statuses"] = [200]
            m["bytes"] = len(value) if isinstance(value, bytes | str) else len(json.dumps(value, default=str))
        except Exception as e:  # a part that is not built yet: reported, the others still measured
            m["statuses"], m["error"] = ["error"], f"{type(e).__name__}: {e}"[:300]
        m["client"] = list(m["server"])
        return m

    async def go() -> list[dict[str, Any]]:
        daemon = Daemon(config_mod.load(cfg))
        await daemon.start()
        out = []
        try:
            end = daemon.clock.now()
            start = end - timedelta(days=DAYS)
            out.append(await timed("service_report_90d", lambda: daemon.analytics.report(start, end)))
            reports: Any = daemon.reports
            r = daemon.config.reports[0]
            built: dict[str, Any] = {}

            async def build() -> dict[str, Any]:
                built["data"] = await reports.build(r, start, end, fire_at=end)
                return built["data"]

            out.append(await timed("scheduled_report_build", build, max(1, samples - 1)))

            async def render(style: str) -> str:
                page = daemon.renderer.report(style, "report", built.get("data"), "channel:ops")
                return page.body

            out.append(await timed("scheduled_report_html", lambda: render("email")))
            out.append(await timed("scheduled_report_text", lambda: render("text")))
            iid = (info["probe_incidents"] or [info["any_incident"]])[-1]

            async def draft() -> str:
                inc = await daemon.incidents.get(iid)
                d = await pm.draft(daemon.store, daemon.config, daemon.history, inc, [], daemon.clock.now())
                return d.markdown

            out.append(await timed("postmortem_draft", draft))
        finally:
            await daemon.stop()
        return out

    return asyncio.run(go())


def one_backend(backend: str, n: int, samples: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    exposition = exposition_server()
    receiver = Receiver().start()
    db_cm = pg_database() if backend == "postgresql" else sqlite_database()
    try:
        with db_cm as db, bench_daemon(db, n, exposition, receiver) as (d, token, info, cfg):
            client = Client(d.port, token)
            try:
                measured = [idle_cpu(d)]
                measured += measure(client, info, samples)
            finally:
                client.close()
            stop(d)
            measured += in_process(cfg, info, samples)
            return measured, info
    finally:
        exposition.stop()
        receiver.stop()


def run(incidents: int = INCIDENTS, samples: int = SAMPLES, only: list[str] | None = None) -> list[dict[str, object]]:
    """Every backend (or ``only`` those): result rows for benchmarks/run.py, one per request and backend (the
    median server time in seconds as the value, the rest as detail)."""
    rows: list[dict[str, object]] = []
    for backend in [b for b in BACKENDS if not only or b in only]:
        t0 = time.monotonic()
        load = round(os.getloadavg()[0], 2)
        measured, info = one_backend(backend, incidents, samples)
        rows.append(
            result(
                f"analytics_{backend}_seed",
                info["seconds"],
                "s",
                backend=backend,
                rows=info["rows"],
                incidents_in_period=info["incidents_in_period"],
                generate_s=info["generate_s"],
            )
        )
        for m in measured:
            if m["name"] == "daemon_idle_cpu":
                rows.append(
                    result(
                        f"analytics_{backend}_daemon_idle_cpu",
                        m["server"][0],
                        "%",
                        backend=backend,
                        request=m["name"],
                        seconds=IDLE_S,
                        note="CPU of the idle daemon on the seeded database, percent of one core",
                        load_avg_1m=load,
                    )
                )
                continue
            srv, cli = m["server"], m["client"]
            median = statistics.median(srv) / 1000 if srv else float("nan")
            budget = BUDGET_S if m["name"] in ("report_90d", "service_report_90d") else None
            ok = m["statuses"] in ([200], [202]) and bool(srv)
            verdict = ("PASS" if median <= BUDGET_S else "FAIL") if budget and ok else ("n/a" if ok else "ERROR")
            if m["name"] == "check_summary" and ok:
                verdict = "PASS" if not m.get("mismatches") else "FAIL"
            rows.append(
                result(
                    f"analytics_{backend}_{m['name']}",
                    median,
                    "s",
                    backend=backend,
                    request=m["name"],
                    path=m["path"],
                    incidents=incidents,
                    samples=len(srv),
                    statuses=m["statuses"],
                    bytes=m["bytes"],
                    server_min_s=round(min(srv) / 1000, 3) if srv else None,
                    server_max_s=round(max(srv) / 1000, 3) if srv else None,
                    client_median_s=round(statistics.median(cli) / 1000, 3) if cli else None,
                    budget_s=budget,
                    verdict=verdict,
                    error=m.get("error"),
                    summary=m.get("summary"),
                    mismatches=m.get("mismatches"),
                    load_avg_1m=load,
                )
            )
        print(f"  analytics: {backend} took {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> None:
    head = f"{'backend':<10} {'request':<26} {'server s':>9} {'min':>7} {'max':>7} {'client s':>9} {'KiB':>9}"
    print(head + "  status  verdict")
    for r in rows:
        who = f"{r['backend']:<10} {r.get('request', 'seed'):<26}"
        if r["name"].endswith("_seed"):
            print(f"{who} {r['value']:>9.1f}  rows {r['rows']}")
        elif r["unit"] == "%":
            print(f"{who} {r['value']:>8.1f}%  (idle daemon, {r['seconds']:.0f} s)")
        elif not r["samples"]:
            print(f"{who} {'-':>9} {'':>7} {'':>7} {'':>9} {'':>9}  {r['statuses']}  {r['verdict']}")
        else:
            print(
                f"{who} {r['value']:>9.3f} {r['server_min_s']:>7.3f} {r['server_max_s']:>7.3f}"
                f" {r['client_median_s']:>9.3f} {r['bytes'] / 1024:>9.1f}"
                f"  {','.join(map(str, r['statuses'])):<6}  {r['verdict']}"
            )
            if r.get("mismatches"):
                print(f"{'':<37} differs from the seeded rows: {r['mismatches']}")


# ---------------------------------------------------------------------------------------------- profiling


class Phases:
    """Wall time per phase of ``AnalyticsService.report``: every function of ``analytics.load`` and
    ``analytics.figures`` and the service's own parts are wrapped with a timer, and every SQL statement on the
    store's engines is timed from execute to the end of the cursor's execute (fetching the rows is not in it)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.sql: list[tuple[float, str]] = []
        self._undo: list[tuple[Any, str, Any]] = []

    def add(self, name: str, seconds: float) -> None:
        self.times.setdefault(name, []).append(seconds)

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        import functools
        import inspect

        fn = getattr(owner, attr)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def timed_async(*a: Any, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await fn(*a, **kw)
                finally:
                    self.add(name, time.perf_counter() - t0)

            new: Any = timed_async
        else:

            @functools.wraps(fn)
            def timed(*a: Any, **kw: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    self.add(name, time.perf_counter() - t0)

            new = timed
        self._undo.append((owner, attr, fn))
        setattr(owner, attr, new)

    def _wrap_rows(self, load: Any) -> None:
        fn = load._rows

        async def rows(sess: Any, q: Any) -> Any:
            t0 = time.perf_counter()
            out = await fn(sess, q)
            self.sql.append(
                (time.perf_counter() - t0, f"[driver, {len(out)} rows fetched] " + " ".join(str(q).split()))
            )
            return out

        self._undo.append((load, "_rows", fn))
        load._rows = rows

    def install(self, store: Any) -> None:
        """Wrap the analytics modules' functions and listen to the SQL of ``store``'s engines."""
        import inspect

        from sqlalchemy import event

        from fsincident.analytics import figures, load, service

        for mod in (load, figures):
            for attr, fn in list(vars(mod).items()):
                if inspect.isfunction(fn) and fn.__module__ == mod.__name__ and not attr.startswith("_"):
                    if attr not in ("quantile", "percent", "utc", "epoch", "group_expr", "stats"):
                        self.wrap(mod, attr, f"{mod.__name__.rsplit('.', 1)[1]}.{attr}")
        if hasattr(load, "_rows"):  # the raw-driver path: no cursor events, so time the statements here
            self._wrap_rows(load)
        for attr in ("_shifts", "_sla", "_series", "_capacity"):
            if hasattr(service.AnalyticsService, attr):
                self.wrap(service.AnalyticsService, attr, f"service.{attr}")
        for engine in {store.engine, store.read_engine}:
            sync = engine.sync_engine

            def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                conn.info.setdefault("h5_t0", []).append(time.perf_counter())

            def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                stack = conn.info.get("h5_t0")
                if stack:
                    self.sql.append((time.perf_counter() - stack.pop(), " ".join(statement.split())))

            event.listen(sync, "before_cursor_execute", before)
            event.listen(sync, "after_cursor_execute", after)
            self._undo.append((None, "", (sync, before, after)))

    def uninstall(self) -> None:
        from sqlalchemy import event

        for owner, attr, fn in reversed(self._undo):
            if owner is None:
                sync, before, after = fn
                event.remove(sync, "before_cursor_execute", before)
                event.remove(sync, "after_cursor_execute", after)
            else:
                setattr(owner, attr, fn)
        self._undo.clear()

    def reset(self) -> None:
        self.times.clear()
        self.sql.clear()

    def print(self, title: str, total: float) -> None:
        print(f"\n--- {title}: {total:.3f} s wall; phases (calls, seconds of wall time each; a nested phase is inside")
        print("    its parent's time, and parts the service runs concurrently overlap, so the times add up to more)")
        for name, ts in sorted(self.times.items(), key=lambda kv: -sum(kv[1])):
            print(f"  {name:<32} {len(ts):>4}  {sum(ts):7.3f}")
        sql = self.sql
        print(f"  SQL statements: {len(sql)}, {sum(t for t, _ in sql):.3f} s (the daemon's too; driver: rows fetched)")
        for t, q in sorted(sql, reverse=True)[:8]:
            print(f"    {t:7.3f}  {q[:220]}")


def profile(
    n: int, backend: str = "sqlite", sections: list[str] | None = None, runs: int = 3, url: str | None = None
) -> None:
    """Run the daemon in this process on a seeded database; time ``AnalyticsService.report`` over 90 days whole and
    section by section, phase by phase (``Phases``), then print cProfile's top functions of the whole report (this
    thread only: SQLite's queries run in aiosqlite's thread and show as waiting)."""
    import cProfile
    import pstats

    from fsincident import config as config_mod
    from fsincident.app import Daemon

    exposition = exposition_server()
    receiver = Receiver().start()
    db_cm = pg_database() if backend == "postgresql" else sqlite_database()
    try:
        with db_cm as db, tempfile.TemporaryDirectory(prefix="fsi-bench-analytics-prof-") as tmp:
            cfg, _port = write_config(Path(tmp), url or db, exposition, receiver)
            if url is None:  # else a database seeded before (--seed-only --db URL)
                info = asyncio.run(seed(db, n, datetime.now(UTC), instance=f"127.0.0.1:{exposition.port}"))
                print(f"{backend}: seeded {info['rows']} in {info['seconds']}s (generating {info['generate_s']}s)")

            async def go() -> None:
                daemon = Daemon(config_mod.load(cfg))
                await daemon.start()
                phases = Phases()
                try:
                    svc = daemon.analytics
                    end = daemon.clock.now()
                    start = end - timedelta(days=DAYS)
                    await svc.report(start, end)  # warm-up
                    phases.install(daemon.store)
                    for name in ["all", *(sections or SECTIONS)]:
                        for k in range(runs if name == "all" else 1):
                            phases.reset()
                            t0 = time.perf_counter()
                            rep = await svc.report(start, end, sections=None if name == "all" else [name])
                            phases.print(f"report 90d {name} (run {k + 1})", time.perf_counter() - t0)
                        if name == "all":
                            body = json.dumps(rep, default=str)
                            print(f"  JSON answer: {len(body) / 1024:.0f} KiB, counts {_summary(body.encode())}")
                    phases.uninstall()
                    prof = cProfile.Profile()
                    prof.enable()
                    await svc.report(start, end)
                    prof.disable()
                    st = pstats.Stats(prof)
                    st.sort_stats("tottime").print_stats(r"fsincident|sqlalchemy|json|zoneinfo|datetime", 30)
                finally:
                    phases.uninstall()
                    await daemon.stop()

            asyncio.run(go())
    finally:
        exposition.stop()
        receiver.stop()


def seed_only(n: int, backend: str, url: str | None = None) -> None:
    """Seed a fresh database (or the empty one at ``url``, kept afterwards) and print the row counts and the time
    taken (to work on the seeder, or to look at the queries by hand)."""
    db_cm = pg_database() if backend == "postgresql" else sqlite_database()
    with db_cm as db:
        info = asyncio.run(seed(url or db, n, datetime.now(UTC), instance="127.0.0.1:1"))
    print(json.dumps({k: v for k, v in info.items() if k != "probe_incidents"}, indent=2, default=str))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=BACKENDS, help="these backends only")
    ap.add_argument(
        "--samples", type=int, default=SAMPLES, help=f"requests per measurement after a warm-up ({SAMPLES})"
    )
    ap.add_argument("--incidents", type=int, default=INCIDENTS, help=f"incidents seeded in the period ({INCIDENTS})")
    ap.add_argument("--profile", action="store_true", help="profile AnalyticsService.report in-process instead")
    ap.add_argument("--seed-only", action="store_true", help="only seed a fresh database and count the rows")
    ap.add_argument(
        "--db", metavar="URL", help="--seed-only: seed this (empty) database and keep it; --profile: use it as seeded"
    )
    args = ap.parse_args()
    if args.seed_only:
        if args.db:
            seed_only(args.incidents, "sqlite", args.db)
            return 0
        for backend in args.only or BACKENDS:
            seed_only(args.incidents, backend)
        return 0
    if args.profile:
        profile(args.incidents, (args.only or ["sqlite"])[0], url=args.db)
        return 0
    t0 = time.monotonic()
    rows = run(args.incidents, args.samples, args.only)
    table(rows)
    out = ROOT / "benchmarks" / "results" / "analytics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 1),
        "machine": {"cpus": os.cpu_count()},
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out.relative_to(ROOT)} ({report['seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
