"""AnalyticsService on a seeded incident history with answers worked out by hand (SQLite and PostgreSQL).

The week of Monday 2026-03-02 (UTC). Incidents opened in it:

  A  Mon 01:00  api  HighLatency critical  ack +5m, resolved +30m by alice; alert started 2m before (TTD 120 s);
                re-open (F of the same group resolved 30 min before); escalated steps 0 and 1 (1 counts);
                pages: alice (2 destinations = 1 page) + channel:ops at step 0, bob at step 1, a cancelled carol
  B  Tue 10:00  api  HighLatency warning   resolved +10m by the system (TTA = TTR = 600 s)
  C  Tue 10:20  api  HighLatency warning   resolved +20m by the system; re-open (B resolved 10 min before)
  D  Sat 03:00  db   DiskFull    critical  ack +20m, still open; a manual escalation paging bob (counts)
  E  Sun 00:00  -    DiskFull    info      open, re-triggered once, a note; a page to channel:ops (no event)
Outside: F (opened the Sunday before, resolved Mon 00:30, critical api: 30 min of SLA downtime) and H (opened at
the period's end).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fsincident import config as config_mod
from fsincident.analytics.service import AnalyticsError, AnalyticsService
from fsincident.core import FakeClock
from fsincident.store import Store
from fsincident.store.tables import Alert, Incident, IncidentEvent, Outbox
from tests.helpers import write_config

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
END = T0 + timedelta(days=7)
NOW = END + timedelta(hours=1)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def _config(tmp_path: Path, extra: str = "") -> config_mod.Config:
    d = write_config(
        tmp_path / "cfg",
        f"""
        database: sqlite:///{tmp_path}/unused.db
        channels:
          - {{name: ops, urls: ["json://127.0.0.1:9/x"]}}
        users:
          - {{name: alice, timezone: Europe/Berlin}}
          - {{name: bob, timezone: UTC}}
          - {{name: carol}}
        routes:
          - {{notify: ["channel:ops"]}}
        analytics:
          flap_count: 2
          services:
            - {{name: api, target: 99.9, matchers: ['service="api"']}}
            - {{name: db, target: 99.0, matchers: ['service="db"'], severities: [critical, warning]}}
        {extra}
        """,
    )
    return config_mod.load(d)


async def _shifts(start: datetime, end: datetime) -> list[tuple[str, str, datetime, datetime]]:
    raw = [
        ("primary", "alice", T0 - timedelta(days=1), T0 + timedelta(days=2)),
        ("primary", "bob", T0 + timedelta(days=2), T0 + timedelta(days=9)),
        ("secondary", "alice", T0 + timedelta(days=1), T0 + timedelta(days=3)),
    ]
    return [(s, u, max(a, start), min(b, end)) for s, u, a, b in raw if a < end and b > start]


def _inc(
    created: datetime,
    *,
    gk: str,
    sev: str,
    labels: dict[str, str],
    acked: datetime | None = None,
    resolved: datetime | None = None,
    by: str | None = None,
    receiver: str = "ops",
) -> Incident:
    state = "resolved" if resolved else "acknowledged" if acked else "triggered"
    return Incident(
        group_key=gk,
        open_key=None if resolved else gk,
        title=f"{labels.get('alertname')} {labels.get('service', '')}".strip(),
        state=state,
        severity=sev,
        labels=labels,
        targets=["channel:ops"],
        created_at=created,
        updated_at=resolved or acked or created,
        acknowledged_at=acked,
        acknowledged_by="alice" if acked else None,
        resolved_at=resolved,
        resolved_by=by,
        grouping={"receiver": receiver},
    )


def _page(
    iid: int, ev: int | None, target: str, at: datetime, idx: int = 0, state: str = "sent", kind: str = "trigger"
):
    return Outbox(
        incident_id=iid,
        event_id=ev,
        target=target,
        dest_index=idx,
        kind=kind,
        title="t",
        body="b",
        state=state,
        next_attempt_at=at,
        created_at=at,
    )


async def seed(store: Store) -> dict[str, int]:
    """The history of the module docstring; returns the incident ids by letter."""
    lat = {"alertname": "HighLatency", "service": "api"}
    ids: dict[str, int] = {}
    async with store.session() as s:
        incs = {
            "F": _inc(T0 - timedelta(days=1), gk="gk-a", sev="critical", labels=lat, resolved=T0 + 30 * M, by="x"),
            "A": _inc(
                T0 + H,
                gk="gk-a",
                sev="critical",
                labels=lat,
                acked=T0 + H + 5 * M,
                resolved=T0 + H + 30 * M,
                by="alice",
            ),
            "B": _inc(
                T0 + 34 * H, gk="gk-b", sev="warning", labels=lat, resolved=T0 + 34 * H + 10 * M, by="fsincident"
            ),
            "C": _inc(
                T0 + 34 * H + 20 * M,
                gk="gk-b",
                sev="warning",
                labels=lat,
                resolved=T0 + 34 * H + 40 * M,
                by="fsincident",
            ),
            "D": _inc(
                T0 + timedelta(days=5, hours=3),
                gk="gk-d",
                sev="critical",
                labels={"alertname": "DiskFull", "service": "db"},
                acked=T0 + timedelta(days=5, hours=3, minutes=20),
                receiver="dba",
            ),
            "E": _inc(T0 + timedelta(days=6), gk="gk-e", sev="info", labels={"alertname": "DiskFull"}),
            "H": _inc(END, gk="gk-h", sev="critical", labels=lat),
        }
        for inc in incs.values():
            s.add(inc)
        await s.flush()
        ids = {k: v.id for k, v in incs.items()}  # type: ignore[misc]
        a, d, e = ids["A"], ids["D"], ids["E"]
        s.add(
            Alert(
                incident_id=a,
                fingerprint="fa",
                alertname="HighLatency",
                origin="r",
                labels=lat,
                state="resolved",
                starts_at=T0 + H - 2 * M,
                updated_at=T0,
            )
        )
        s.add(
            Alert(
                incident_id=d,
                fingerprint="fd",
                alertname="DiskFull",
                origin="r",
                labels={},
                state="firing",
                starts_at=T0 + timedelta(days=5, hours=3, seconds=1),
                updated_at=T0,
            )
        )
        ev = [
            IncidentEvent(
                incident_id=a,
                at=T0 + H,
                kind="escalated",
                actor="fsincident",
                data={"step": 0, "loop": 0, "manual": False},
            ),
            IncidentEvent(
                incident_id=a,
                at=T0 + H + 15 * M,
                kind="escalated",
                actor="fsincident",
                data={"step": 1, "loop": 0, "manual": False},
            ),
            IncidentEvent(incident_id=a, at=T0 + H + 5 * M, kind="acknowledged", actor="alice"),
            IncidentEvent(
                incident_id=d,
                at=T0 + timedelta(days=5, hours=3, minutes=2),
                kind="escalated",
                actor="carol",
                data={"step": 0, "loop": 0, "manual": True},
            ),
            IncidentEvent(incident_id=e, at=T0 + timedelta(days=6, minutes=5), kind="retriggered", actor="fsincident"),
            IncidentEvent(
                incident_id=e, at=T0 + timedelta(days=6, minutes=6), kind="note", actor="bob", note="looking"
            ),
            IncidentEvent(incident_id=a, at=T0 + H + 30 * M, kind="resolved", actor="alice"),
        ]
        for x in ev:
            s.add(x)
        await s.flush()
        a0, a1, d0 = ev[0].id, ev[1].id, ev[3].id
        for row in [
            _page(a, a0, "user:alice", T0 + H, 0),
            _page(a, a0, "user:alice", T0 + H + 2 * M, 1),  # a second destination of the same page
            _page(a, a0, "channel:ops", T0 + H),
            _page(a, a0, "user:carol", T0 + H, state="cancelled"),
            _page(a, a1, "user:bob", T0 + H + 15 * M),
            _page(a, None, "channel:ops", T0 + H + 30 * M, kind="resolve"),
            _page(d, d0, "user:bob", T0 + timedelta(days=5, hours=3, minutes=2)),
            _page(e, None, "channel:ops", T0 + timedelta(days=6)),
            _page(ids["H"], None, "user:alice", END),
        ]:
            s.add(row)
    return ids


@pytest.fixture
async def svc(store: Store, tmp_path: Path) -> AnalyticsService:
    cfg = _config(tmp_path)
    return AnalyticsService(store, FakeClock(NOW), lambda: cfg, shifts=_shifts)


async def test_report_matches_the_hand_worked_answers(store: Store, svc: AnalyticsService) -> None:
    ids = await seed(store)
    rep = await svc.report(T0, END)
    assert rep["period"] == {"from": "2026-03-02T00:00:00Z", "to": "2026-03-09T00:00:00Z", "seconds": 604800.0}
    assert rep["group_by"] == "service" and rep["timezone"] == "UTC"
    assert rep["generated_at"] == "2026-03-09T01:00:00Z"
    s = rep["summary"]
    assert {k: s[k] for k in ("incidents", "acknowledged", "resolved", "open", "pages")} == {
        "incidents": 5,
        "acknowledged": 2,
        "resolved": 3,
        "open": 2,
        "pages": 5,
    }
    assert (s["escalations"], s["retriggers"], s["reopens"]) == (2, 1, 2)
    assert s["mtta_seconds"] == {"median": 900.0, "p90": 1200.0, "n": 4}
    assert s["mttr_seconds"] == {"median": 1200.0, "p90": 1680.0, "n": 3}
    assert s["ttd_seconds"] == {"median": 120.0, "p90": 120.0, "n": 1}
    assert s["acked_within"] == {"seconds": 900.0, "count": 2, "percent": 40.0}

    groups = {r["group"]: r for r in rep["response"]}
    assert [r["group"] for r in rep["response"]] == ["api", "(none)", "db"]
    assert groups["api"]["incidents"] == 3 and groups["api"]["pages"] == 3 and groups["api"]["reopens"] == 2
    assert groups["api"]["mttr_seconds"] == {"median": 1200.0, "p90": 1680.0, "n": 3}
    assert groups["db"]["mtta_seconds"] == {"median": 1200.0, "p90": 1200.0, "n": 1}
    assert groups["(none)"]["retriggers"] == 1 and groups["(none)"]["open"] == 1
    for key in ("incidents", "acknowledged", "resolved", "open", "pages", "escalations", "retriggers", "reopens"):
        assert sum(r[key] for r in rep["response"]) == s[key], key

    daily = {d["date"]: d for d in rep["daily"]}
    assert len(rep["daily"]) == 7
    assert daily["2026-03-02"] == {"date": "2026-03-02", "incidents": 1, "by_severity": {"critical": 1}}
    assert daily["2026-03-03"]["by_severity"] == {"warning": 2}
    assert daily["2026-03-04"]["incidents"] == 0
    assert daily["2026-03-08"]["by_severity"] == {"info": 1}

    rules = {r["rule"]: r for r in rep["fatigue"]["rules"]}
    assert rules["HighLatency"] == {
        "rule": "HighLatency",
        "incidents": 3,
        "pages": 3,
        "acted": 1,
        "acted_percent": 33.33,
        "rarely_acted": False,
        "reopens": 2,
        "retriggers": 0,
        "flapping": True,  # flap_count 2
    }
    assert rules["DiskFull"]["acted"] == 2 and rules["DiskFull"]["retriggers"] == 1
    assert rules["DiskFull"]["flapping"] is False
    people = {p["user"]: p for p in rep["fatigue"]["people"]}
    # alice: Mon 02:00 in Berlin (night); bob: Mon 01:15 UTC (night) and Sat 03:02 UTC (night, weekend).
    assert people == {
        "alice": {"user": "alice", "pages": 1, "night": 1, "weekend": 0, "out_of_hours": 1},
        "bob": {"user": "bob", "pages": 2, "night": 2, "weekend": 1, "out_of_hours": 2},
    }
    oncall = {o["user"]: o for o in rep["oncall"]}
    assert oncall["alice"] == {
        "user": "alice",
        "hours_on_call": 72.0,
        "shifts": 2,
        "pages": 1,
        "out_of_hours_pages": 1,
        "night_pages": 1,
        "weekend_pages": 0,
    }
    assert oncall["bob"]["hours_on_call"] == 120.0 and oncall["bob"]["weekend_pages"] == 1

    sla = {r["service"]: r for r in rep["sla"]}
    assert sla["api"] == {
        "service": "api",
        "source": "incidents",
        "target_percent": 99.9,
        "uptime_percent": 99.4048,
        "downtime_seconds": 3600.0,
        "budget_seconds": 604.8,
        "budget_left_seconds": -2995.2,
        "budget_left_percent": -495.24,
        "incidents": 2,
        "coverage_percent": 100.0,
    }
    assert sla["db"]["downtime_seconds"] == 45 * 3600.0 and sla["db"]["incidents"] == 1
    assert rep["capacity"] == [] or isinstance(rep["capacity"], list)

    listed = rep["incidents"]
    assert [i["id"] for i in listed] == [ids[k] for k in "EDCBA"]
    a = listed[-1]
    assert a["created_at"] == "2026-03-02T01:00:00Z" and a["acknowledged_at"] == "2026-03-02T01:05:00Z"
    assert (a["tta_seconds"], a["ttr_seconds"], a["group"]) == (300.0, 1800.0, "api")
    assert a["labels"] == {"alertname": "HighLatency", "service": "api"} and a["title"] == "HighLatency api"
    assert listed[0]["tta_seconds"] is None and listed[0]["group"] == "(none)"


async def test_groupings_sections_and_parameters(store: Store, svc: AnalyticsService) -> None:
    await seed(store)
    for group_by, names in [
        ("severity", {"critical", "warning", "info"}),
        ("rule", {"HighLatency", "DiskFull"}),
        ("route", {"ops", "dba"}),
        ("team", {"(none)"}),
    ]:
        rep = await svc.report(T0, END, group_by=group_by, sections=["response"])
        assert set(rep) == {"period", "group_by", "generated_at", "timezone", "response"}
        assert {r["group"] for r in rep["response"]} == names
        assert sum(r["incidents"] for r in rep["response"]) == 5
    rep = await svc.report(T0, END, sections=["summary"], ack_within=timedelta(minutes=20))
    assert rep["summary"]["acked_within"] == {"seconds": 1200.0, "count": 4, "percent": 80.0}
    assert "daily" in rep and "fatigue" not in rep
    assert (await svc.report(T0, END, sections=["incidents"], limit=2))["incidents"][0]["severity"] == "info"
    assert await svc.section("oncall", T0, END) == (await svc.report(T0, END))["oncall"]
    for kwargs, param in [
        ({"group_by": "bad label"}, "group_by"),
        ({"sections": ["nope"]}, "sections"),
        ({"limit": 0}, "limit"),
        ({"ack_within": timedelta(seconds=-1)}, "ack_within"),
    ]:
        with pytest.raises(AnalyticsError) as e:
            await svc.report(T0, END, **kwargs)
        assert e.value.param == param
    with pytest.raises(AnalyticsError):
        await svc.report(END, T0)
    with pytest.raises(AnalyticsError):
        await svc.report(T0 - timedelta(days=401), T0)


async def test_adjacent_periods_add_up(store: Store, svc: AnalyticsService) -> None:
    await seed(store)
    whole = (await svc.report(T0, END, sections=["summary"]))["summary"]
    for cut in (T0 + 34 * H + 10 * M, T0 + timedelta(days=5), T0 + H):
        a = (await svc.report(T0, cut, sections=["summary"]))["summary"]
        b = (await svc.report(cut, END, sections=["summary"]))["summary"]
        for key in ("incidents", "acknowledged", "resolved", "open", "pages", "escalations", "retriggers", "reopens"):
            assert a[key] + b[key] == whole[key], (cut, key)


async def test_an_empty_period(store: Store, svc: AnalyticsService) -> None:
    rep = await svc.report(T0, END)
    assert rep["summary"]["incidents"] == 0 and rep["summary"]["mtta_seconds"] == {"median": None, "p90": None, "n": 0}
    assert rep["summary"]["acked_within"]["percent"] is None
    assert rep["response"] == [] and rep["incidents"] == [] and rep["fatigue"] == {"rules": [], "people": []}
    assert {o["user"] for o in rep["oncall"]} == {"alice", "bob"}
    assert rep["sla"][0]["uptime_percent"] == 100.0 and rep["sla"][0]["budget_left_percent"] == 100.0


class _History:
    """A stand-in for HistoryService.range: a probe that was down for the first 10 of every 60 minutes, recorded
    for the second half of the period only."""

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []

    async def range(
        self, source: str, metric: str, matchers: Any = (), *, start: datetime, end: datetime, max_points: int = 400
    ):
        self.asked.append((source, metric, tuple(str(m) for m in matchers), start, end))
        half = start + (end - start) / 2
        pts = []
        t = half
        while t < end:
            pts.append((t.timestamp(), 0.0 if t.minute < 10 else 1.0, 0.0, 1.0))
            t += M
        return [type("SeriesData", (), {"labels": {"job": "web"}, "points": pts})()]


async def test_sla_from_a_series(store: Store, tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        """
        sources:
          - {name: blackbox, type: push}
        """,
    )
    svc_opts = cfg.analytics.services[0].model_copy(update={"series": 'probe_success{job="web"}', "source": "blackbox"})
    cfg.analytics.services[0] = svc_opts
    history = _History()
    svc = AnalyticsService(store, FakeClock(NOW), lambda: cfg, history=history, shifts=_shifts)
    await seed(store)
    [api, db] = (await svc.report(T0, END, sections=["sla"]))["sla"]
    assert history.asked[0][:3] == ("blackbox", "probe_success", ('job="web"',))
    assert api["source"] == "series" and api["coverage_percent"] == 50.0
    assert api["uptime_percent"] == pytest.approx(100 * 50 / 60, abs=1e-3)
    assert api["downtime_seconds"] == pytest.approx(302400 / 6, abs=1)  # 10 of 60 minutes of the covered half
    assert api["incidents"] == 2  # the incidents matching the service are still counted
    assert db["source"] == "incidents"


async def test_parallel_and_sequential_loading_agree(store: Store, svc: AnalyticsService) -> None:
    await seed(store)
    together = await svc.report(T0, END, group_by="rule")
    svc.parallel = False
    assert await svc.report(T0, END, group_by="rule") == together


async def test_days_are_counted_in_the_asked_time_zone(store: Store, svc: AnalyticsService) -> None:
    await seed(store)
    rep = await svc.report(T0, END, sections=["summary"], timezone="America/New_York")
    assert rep["timezone"] == "America/New_York"
    days = {d["date"]: d["incidents"] for d in rep["daily"]}
    # A opened 2026-03-02 01:00 UTC = 1 March 20:00 in New York; the period starts there on 1 March 19:00.
    assert min(days) == "2026-03-01" and days["2026-03-01"] == 1
    assert sum(days.values()) == rep["summary"]["incidents"] == 5
    with pytest.raises(AnalyticsError) as e:
        await svc.report(T0, END, timezone="Mars/Olympus")
    assert e.value.param == "timezone"
