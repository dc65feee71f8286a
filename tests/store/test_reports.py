"""Scheduled reports and shift summaries against SQLite and PostgreSQL, with an injected clock: a cron fire queues
one row per destination once (no repeat after a restart, only the latest missed fire after downtime, one set when two
instances race), the period follows the report's time zone through DST, a failing report is recorded and retried,
and a handoff queues "what happened during your shift" to the outgoing and the incoming person."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest
from PIL import Image
from sqlmodel import col, select

from fsincident import config as config_mod
from fsincident.analytics.reports import ReportScheduler, UnknownReport
from fsincident.core import FakeClock
from fsincident.escalation.schedules import HandoffNotifier, ScheduleService
from fsincident.escalation.service import EscalationService
from fsincident.notify.outbox import Notifiers
from fsincident.notify.render import sample_report
from fsincident.obs import Metrics
from fsincident.store import Store
from fsincident.store.tables import Incident, IncidentEvent, Outbox, ReportState
from tests.helpers import write_config

CONFIG = """
database: {db}
channels:
  - {{name: ops, urls: ["json://127.0.0.1:9/ops"]}}
users:
  - name: alice
    timezone: Europe/Berlin
    contacts: ["json://127.0.0.1:9/a", {{url: "json://127.0.0.1:9/a-sms", urgency: high}}]
  - {{name: bob, contacts: ["json://127.0.0.1:9/b"]}}
schedules:
  - name: primary
    timezone: UTC
    layers:
      - {{rotation: daily, handoff: "08:00", start: 2026-01-05, users: [alice, bob]}}
analytics:
  handoff_summary: true
reports:
  - name: weekly
    title: Weekly ops report
    schedule: "0 8 * * mon"
    timezone: Europe/Berlin
    period: week
    to: [channel:ops, user:alice, schedule:primary]
    sections: [summary, response, sla, incidents]
    group_by: team
"""


def t(day: int, hour: int = 0, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


class FakeAnalytics:
    """The AnalyticsService surface the scheduler uses: store, clock, config() and report()."""

    def __init__(self, store: Store, clock: FakeClock, cfg: Any):
        self.store, self.clock, self.cfg = store, clock, cfg
        self.history = None
        self.calls: list[tuple[datetime, datetime, str | None, list[str]]] = []
        self.fail: Exception | None = None
        self.zones: list[str | None] = []  # the time zone each report's days were asked in

    def config(self) -> Any:
        return self.cfg

    async def report(
        self, start: datetime, end: datetime, *, group_by=None, sections=None, limit=100, timezone=None
    ) -> dict:
        if self.fail is not None:
            raise self.fail
        self.calls.append((start, end, group_by, list(sections or [])))
        self.zones.append(timezone)
        rep = sample_report()["report"]
        rep["period"] = {"from": start.isoformat(), "to": end.isoformat(), "seconds": (end - start).total_seconds()}
        rep["generated_at"] = self.clock.now().isoformat()  # when the figures (capacity too) were computed
        # 150 incidents, more than a queued report keeps: like AnalyticsService, the summary counts them all and
        # the incidents section lists only the newest ``limit``.
        rep["summary"] = {**rep["summary"], "incidents": 150}
        rep["incidents"] = (rep["incidents"] * 150)[:limit]
        return rep


class Rig:
    def __init__(self, store: Store, clock: FakeClock, cfg: Any):
        self.store, self.clock, self.cfg = store, clock, cfg
        self.analytics = FakeAnalytics(store, clock, cfg)
        self.notifiers = Notifiers(cfg)
        self.schedules = ScheduleService(store, clock, Metrics(), cfg)
        self.escalation = EscalationService(
            store, clock, Metrics(), cfg, self.schedules, render_page=None, destinations=self.notifiers.destinations
        )
        self.kicks = 0

    async def resolve(self, targets, now, session):
        res = await self.escalation.resolve_targets(targets, "info", now, session=session)
        return [(target, index) for target, index, _ in res.pages]

    def scheduler(self) -> ReportScheduler:
        """A fresh scheduler, as after a restart."""

        def kick() -> None:
            self.kicks += 1

        return ReportScheduler(self.analytics, resolve=self.resolve, kick_delivery=kick)

    async def rows(self, kind: str = "report") -> list[Outbox]:
        async with self.store.read() as s:
            return list((await s.exec(select(Outbox).where(Outbox.kind == kind).order_by(col(Outbox.id)))).all())

    async def state(self, name: str = "weekly") -> ReportState | None:
        async with self.store.read() as s:
            return await s.get(ReportState, name)


@pytest.fixture
async def rig(tmp_path, db_url) -> AsyncIterator[Rig]:
    cfg = config_mod.load(write_config(tmp_path / "cfg", CONFIG.format(db=db_url)))
    store = Store(db_url)
    await store.upgrade()
    try:
        yield Rig(store, FakeClock(t(2, 6)), cfg)  # Monday 2 March, 07:00 in Berlin
    finally:
        await store.close()


async def test_a_cron_fire_queues_the_report_once(rig: Rig):
    clock = rig.clock
    sched = rig.scheduler()
    assert await sched.tick(clock.now()) is False  # the first run only records now
    assert await rig.rows() == []
    assert (await rig.state()).last_fire_at is not None
    assert await sched.sleep_hint(clock.now()) == 3600.0  # 08:00 CET is 07:00 UTC

    clock.advance(timedelta(minutes=59, seconds=59))
    assert await sched.tick(clock.now()) is False
    clock.advance(timedelta(seconds=1))  # a fire exactly at now counts
    assert await sched.tick(clock.now()) is True and rig.kicks == 1
    # The previous whole week (Monday to Monday) in Berlin.
    assert rig.analytics.calls == [(t(22, 23, month=2), t(1, 23), "team", ["summary", "response", "sla", "incidents"])]
    assert rig.analytics.zones == ["Europe/Berlin"]  # the report's days are Berlin days, not analytics.timezone's
    rows = await rig.rows()
    # ops' one URL, alice's low-urgency contact (not her high-urgency-only one), and the schedule's on-call person
    # (bob until 08:00 UTC: alice has even days since 5 January).
    assert [(r.target, r.dest_index) for r in rows] == [("channel:ops", 0), ("user:alice", 0), ("user:bob", 0)]
    for r in rows:
        assert r.state == "pending" and r.incident_id is None and r.severity == "info"
        assert r.title == "Weekly ops report: 2026-02-23 to 2026-03-01"
        assert r.next_attempt_at is not None
        assert "Incidents: 150" in r.body  # the plain text kept for when every template fails
        data = r.data
        assert data["name"] == "weekly" and data["timezone"] == "Europe/Berlin"
        assert len(data["report"]["incidents"]) == 100 and data["report"]["incidents_total"] == 150
        names = [c["name"] for c in data["charts"]]
        assert names == ["incidents-per-day", "response-by-group", "sla-uptime"]
        for c in data["charts"]:
            assert Image.open(BytesIO(base64.b64decode(c["png_base64"]))).format == "PNG"
    st = await rig.state()
    assert st.last_fire_at.replace(tzinfo=UTC) == t(2, 7) and st.last_error is None

    assert await sched.tick(clock.now()) is False  # no repeat
    assert await rig.scheduler().tick(clock.now()) is False  # nor after a restart
    assert len(await rig.rows()) == 3
    assert await sched.sleep_hint(clock.now()) == 7 * 86400.0


async def test_after_downtime_only_the_latest_missed_fire_is_queued(rig: Rig):
    clock = rig.clock
    await rig.scheduler().tick(clock.now())
    clock.advance(timedelta(days=20, hours=5))  # down through three Monday fires: 2, 9 and 16 March
    assert await rig.scheduler().tick(clock.now()) is True
    assert [c[:2] for c in rig.analytics.calls] == [(t(8, 23), t(15, 23))]
    # Who is on call is asked now (alice since 08:00), not at the missed fire time (bob): a late report goes to the
    # person on call when it is queued.
    assert [(r.target, r.dest_index) for r in await rig.rows()] == [("channel:ops", 0), ("user:alice", 0)]
    assert await rig.scheduler().tick(clock.now()) is False


async def test_the_period_follows_the_reports_zone_through_dst(rig: Rig):
    clock = rig.clock
    await rig.scheduler().tick(clock.now())
    # Berlin's summer time starts on Sunday 29 March: Monday 30 March 08:00 CEST is 06:00 UTC.
    clock.advance(t(30, 5, 59) - clock.now())
    sched = rig.scheduler()
    await sched.tick(clock.now())
    rig.analytics.calls.clear()
    assert await sched.sleep_hint(clock.now()) == 60.0
    clock.advance(timedelta(minutes=1))
    assert await sched.tick(clock.now()) is True
    [(start, end, _, _)] = rig.analytics.calls
    assert (start, end) == (t(22, 23), t(29, 22))  # Monday 00:00 CET to Monday 00:00 CEST: 167 hours
    assert end - start == timedelta(hours=167)
    assert (await rig.rows())[-1].title == "Weekly ops report: 2026-03-23 to 2026-03-29"


async def test_two_instances_queue_one_set(rig: Rig):
    clock = rig.clock
    await rig.scheduler().tick(clock.now())
    clock.advance(timedelta(hours=1))
    a, b = rig.scheduler(), rig.scheduler()
    done = await asyncio.gather(a.tick(clock.now()), b.tick(clock.now()))
    assert sorted(done) == [False, True]
    assert len(await rig.rows()) == 3


async def test_a_failing_report_is_recorded_and_retried(rig: Rig):
    clock = rig.clock
    sched = rig.scheduler()
    await sched.tick(clock.now())
    clock.advance(timedelta(hours=1))
    rig.analytics.fail = RuntimeError("database on fire")
    assert await sched.tick(clock.now()) is False
    st = await rig.state()
    assert st.last_error == "RuntimeError: database on fire"
    assert st.last_fire_at.replace(tzinfo=UTC) == t(2, 6)  # not advanced: nothing was queued
    assert await sched.sleep_hint(clock.now()) == 60.0  # the retry, a minute later
    rig.analytics.fail = None
    clock.advance(timedelta(seconds=30))
    assert await sched.tick(clock.now()) is False  # still backing off
    clock.advance(timedelta(seconds=30))
    assert await sched.tick(clock.now()) is True
    st = await rig.state()
    assert st.last_error is None and st.last_fire_at.replace(tzinfo=UTC) == t(2, 7)
    assert len(await rig.rows()) == 3


async def test_send_now_and_listing(rig: Rig):
    clock = rig.clock
    sched = rig.scheduler()
    await sched.tick(clock.now())
    out = await sched.send_now("weekly")
    assert out == {
        "report": "weekly",
        "period": {"from": "2026-02-22T23:00:00Z", "to": "2026-03-01T23:00:00Z"},
        "queued": 3,
    }
    assert (await rig.state()).last_fire_at.replace(tzinfo=UTC) == t(2, 6)  # the schedule is untouched
    with pytest.raises(UnknownReport):
        await sched.send_now("nope")
    [listed] = await sched.listing()
    assert listed["name"] == "weekly" and listed["next_at"] == "2026-03-02T07:00:00Z"
    assert listed["last_fire_at"] is None and listed["to"] == [  # the first start's mark is not a fire
        "channel:ops",
        "user:alice",
        "schedule:primary",
    ]
    clock.advance(timedelta(hours=1))  # the 07:00 UTC fire (08:00 in Berlin)
    assert await sched.tick(clock.now()) is True
    [listed] = await sched.listing()
    assert listed["last_fire_at"] == "2026-03-02T07:00:00Z" and listed["last_queued_at"] == "2026-03-02T07:00:00Z"


async def _incident(s, iid_title: str, created: datetime, **kw: Any) -> Incident:
    inc = Incident(
        group_key=iid_title[:60],
        title=iid_title,
        state=kw.pop("state", "triggered"),
        severity="critical",
        created_at=created,
        updated_at=created,
        **kw,
    )
    s.add(inc)
    await s.flush()
    return inc


async def test_a_handoff_sends_both_people_a_summary_of_the_shift(rig: Rig):
    """alice is on call from 2 March 08:00 to 3 March 08:00 UTC; at the handoff to bob both get her shift's story."""
    clock = rig.clock
    async with rig.store.session() as s:
        old = await _incident(s, "old and still open", t(1, 9), targets=["user:bob"])
        a = await _incident(s, "acked by alice", t(2, 10), targets=["user:alice"], state="acknowledged")
        a.acknowledged_at, a.acknowledged_by = t(2, 10, 5), "alice"
        b = await _incident(s, "resolved in the shift", t(2, 11), targets=["user:alice"], state="resolved")
        b.resolved_at, b.resolved_by = t(2, 12), "alice"
        await _incident(s, "someone else's", t(2, 13), targets=["channel:ops"])
        await _incident(s, "after the shift", t(3, 9), targets=["user:alice"])
        events = []
        for inc in (a, a, b):  # a was paged twice (two events), each page to both of alice's destinations
            ev = IncidentEvent(incident_id=inc.id, at=inc.created_at, kind="escalated", actor="fsincident")
            s.add(ev)
            await s.flush()
            events.append((inc, ev.id))
        for inc, event_id in events:
            for index in (0, 1):
                s.add(
                    Outbox(
                        incident_id=inc.id,
                        event_id=event_id,
                        target="user:alice",
                        dest_index=index,
                        kind="trigger",
                        title="x",
                        body="x",
                        state="sent",
                        next_attempt_at=inc.created_at,
                        created_at=inc.created_at + timedelta(seconds=1 if inc is b else index),
                    )
                )
        _ = old
    reports = rig.scheduler()

    def notifier() -> HandoffNotifier:
        return HandoffNotifier(rig.schedules, rig.notifiers.destinations, summary=reports.handoff_summary)

    clock.advance(t(3, 7, 59) - clock.now())
    assert await notifier().tick(clock.now()) is False
    clock.advance(timedelta(minutes=1))
    assert await notifier().tick(clock.now()) is True
    rows = await rig.rows("handoff_summary")
    assert [(r.target, r.dest_index) for r in rows] == [("user:alice", 0), ("user:bob", 0)]
    summary = rows[0].data["summary"]
    assert rows[0].title == "Shift summary for primary: alice handed over to bob"
    assert (summary["from"], summary["to"]) == ("2026-03-02T08:00:00Z", "2026-03-03T08:00:00Z")
    assert (summary["outgoing"], summary["incoming"], summary["schedule"]) == ("alice", "bob", "primary")
    assert summary["counts"] == {"opened": 2, "acknowledged": 1, "resolved": 1, "still_open": 1, "pages": 3}
    assert summary["all_incidents"] == {"opened": 3, "acknowledged": 1, "resolved": 1, "still_open": 3}
    assert [i["title"] for i in summary["still_open"]] == ["acked by alice"]
    assert "still open 1" in rows[0].body
    assert await notifier().tick(clock.now()) is False  # once per handoff
    assert len(await rig.rows("handoff_summary")) == 2
    assert len(await rig.rows("handoff")) == 1  # bob's "you are now on call" notice still goes


async def test_no_summary_when_switched_off(rig: Rig, tmp_path):
    cfg = rig.cfg.__class__(
        **{**rig.cfg.__dict__, "analytics": rig.cfg.analytics.model_copy(update={"handoff_summary": False})}
    )
    rig.analytics.cfg = cfg
    reports = rig.scheduler()
    n = HandoffNotifier(rig.schedules, rig.notifiers.destinations, summary=reports.handoff_summary)
    rig.clock.advance(t(3, 7, 59) - rig.clock.now())
    await n.tick(rig.clock.now())
    rig.clock.advance(timedelta(minutes=1))
    assert await n.tick(rig.clock.now()) is True
    assert await rig.rows("handoff_summary") == []


async def test_capacity_charts_are_drawn_at_the_time_the_capacity_was_computed(rig: Rig, monkeypatch):
    """The capacity rows are computed now (the fire), not at the period's end (Monday 00:00, 8 hours earlier): their
    charts must end, and project to the exhaustion, from the same instant."""
    import fsincident.analytics.capacity as capacity

    seen: list[datetime] = []

    async def fake_chart(row, history, now, *, lookback=timedelta(days=2), tz="UTC"):
        seen.append(now)
        return b"\x89PNG\r\n\x1a\n"

    monkeypatch.setattr(capacity, "capacity_chart", fake_chart)
    rig.analytics.history = object()
    clock = rig.clock
    sched = rig.scheduler()
    await sched.tick(clock.now())
    clock.advance(timedelta(hours=1))  # Monday 08:00 in Berlin: the weekly fire
    assert await sched.tick(clock.now()) is True
    assert seen == [clock.now()]
    rows = await rig.rows()
    assert "capacity-1" in [c["name"] for c in rows[0].data["charts"]]


async def test_on_call_hours_for_a_report_do_not_wait_for_the_write_lock(rig: Rig):
    """``all_shifts`` (the on-call section of every report) only reads: it neither takes nor waits for the write
    lock that incidents, acks and deliveries need, so a 400-day report cannot hold them up."""
    import time

    held = asyncio.Event()
    release = asyncio.Event()

    async def writer() -> None:
        async with rig.store.session():
            held.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await held.wait()
    try:
        t0 = time.perf_counter()
        shifts = await asyncio.wait_for(rig.schedules.all_shifts(t(2, 8), t(9, 8)), timeout=10)
        elapsed = time.perf_counter() - t0
    finally:
        release.set()
        await task
    assert [(sch, user) for sch, user, _, _ in shifts[:2]] == [("primary", "alice"), ("primary", "bob")]
    assert len(shifts) == 7 and elapsed < 5
