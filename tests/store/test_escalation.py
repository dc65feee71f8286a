"""Escalation on the real store (SQLite and PostgreSQL), with an injected clock: the incidents stage and the
escalation module together — steps, contact delays and urgency, acks, ack timeouts, auto-resolve, manual
escalate/reassign, restarts and two instances racing for the same step."""

from __future__ import annotations

import asyncio
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from fsincident import config as config_mod
from fsincident.app import routes_of
from fsincident.core import FakeClock, Labels, TransitionError
from fsincident.escalation.schedules import ScheduleService
from fsincident.escalation.service import BadTarget, EscalationService
from fsincident.incidents.service import IncidentService
from fsincident.notify.outbox import Notifiers
from fsincident.obs import Metrics
from fsincident.routing.tree import route
from fsincident.store import Store
from fsincident.store.tables import AlertTransition, Incident, IncidentEvent, Outbox

CONFIG = """
listen: 127.0.0.1:1
channels:
  - {name: ops, urls: ["json://127.0.0.1:1/ops"]}
users:
  - name: alice
    contacts:
      - json://127.0.0.1:1/alice
      - {url: "json://127.0.0.1:1/alice-sms", after: 5m, urgency: high}
      - {url: "json://127.0.0.1:1/alice-low", urgency: low}
  - {name: bob, contacts: ["json://127.0.0.1:1/bob"]}
  - {name: carol, contacts: ["json://127.0.0.1:1/carol"]}
  - {name: dave, contacts: [{url: "json://127.0.0.1:1/dave", urgency: high}]}
schedules:
  - name: primary
    timezone: UTC
    layers:
      - {rotation: daily, handoff: "00:00", start: 2026-01-01, users: [carol]}
  - name: nights
    timezone: UTC
    layers:
      - rotation: daily
        handoff: "00:00"
        start: 2026-01-01
        users: [bob]
        restrictions: [{from: "22:00", to: "06:00"}]
escalation_policies:
  - name: infra
    repeat: 1
    repeat_after: 10m
    ack_timeout: 30m
    auto_resolve_after: 1d
    steps:
      - {after: 0m, notify: ["user:alice", "channel:ops"]}
      - {after: 15m, notify: ["schedule:primary"]}
      - {after: 20m, notify: ["user:bob"]}
  - name: nights
    steps:
      - {after: 0s, notify: ["schedule:nights", "user:dave"]}
routes:
  - {match: {team: infra}, escalation_policy: infra, group_by: [alertname]}
  - {match: {team: nights}, escalation_policy: nights}
  - {match: {team: direct}, notify: ["schedule:primary", "user:alice"]}
  - {notify: ["channel:ops"]}
"""

MIN = timedelta(minutes=1)


def render(kind: str, inc: dict[str, Any], alerts: list[dict[str, Any]], actor: str | None, note: str | None):
    return f"[{kind}] #{inc['id']}", f"{len(alerts)} alert(s); by {actor}"


class Stack:
    """The incidents stage and the escalation module of one daemon instance, on their own Store."""

    def __init__(self, url: str, clock: FakeClock, config: config_mod.Config):
        self.store = Store(url)
        metrics = Metrics()
        notifiers = Notifiers(config)
        routes = routes_of(config)
        self.schedules = ScheduleService(self.store, clock, metrics, config)
        self.esc = EscalationService(
            self.store,
            clock,
            metrics,
            config,
            self.schedules,
            render_page=lambda *a: self.incidents.render_page(*a),
            destinations=notifiers.destinations,
        )
        self.incidents = IncidentService(
            self.store,
            clock,
            metrics,
            render=render,
            destinations=notifiers.destinations,
            route=lambda labels: route(routes, labels),
            escalation=self.esc,
        )

    async def close(self) -> None:
        await self.store.close()


@pytest.fixture
def cfg(tmp_path: Path) -> config_mod.Config:
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "fsincident.yaml").write_text(textwrap.dedent(CONFIG))
    return config_mod.load(d)


@pytest.fixture
async def stack(store, db_url, clock, cfg):
    st = Stack(db_url, clock, cfg)
    yield st
    await st.close()


async def fire(st: Stack, clock: FakeClock, state: str = "firing", alertname: str = "DiskFull", **labels: str) -> None:
    full = {"alertname": alertname, "severity": "critical", **labels}
    async with st.store.session() as s:
        s.add(
            AlertTransition(
                fingerprint=Labels(full).fingerprint,
                alertname=alertname,
                origin=f"rule:{alertname}",
                labels=full,
                annotations={},
                value=1.0,
                state=state,
                at=clock.now(),
            )
        )
    await st.incidents.tick(clock.now())


async def rows(st: Stack, model: Any, *where: Any) -> list[Any]:
    async with st.store.session() as s:
        return list((await s.exec(select(model).where(*where).order_by(col(model.id)))).all())


async def the_incident(st: Stack) -> Incident:
    [inc] = await rows(st, Incident)
    return inc


async def pages(st: Stack, *where: Any) -> list[tuple[str, int]]:
    return [(o.target, o.dest_index) for o in await rows(st, Outbox, col(Outbox.kind) == "trigger", *where)]


async def events(st: Stack, kind: str) -> list[IncidentEvent]:
    return await rows(st, IncidentEvent, col(IncidentEvent.kind) == kind)


async def at(st: Stack, clock: FakeClock, when: timedelta, start) -> bool:
    clock._now = start + when
    return await st.esc.tick(clock.now())


async def test_a_policy_pages_step_by_step_with_contact_delays_and_urgency(stack, clock):
    t0 = clock.now()
    await fire(stack, clock, team="infra", instance="a")
    inc = await the_incident(stack)
    assert inc.escalation_policy == "infra" and inc.esc_step == 0 and inc.esc_reason == "step"
    assert inc.resolve_due_at is not None
    assert await pages(stack) == []  # the incidents stage leaves paging to the policy

    await at(stack, clock, timedelta(0), t0)
    rows0 = await rows(stack, Outbox)
    # alice: the at-once method and the 5-minute high-urgency one (critical), not the low-urgency one
    assert [(o.target, o.dest_index, o.next_attempt_at.replace(tzinfo=None)) for o in rows0] == [
        ("user:alice", 0, t0.replace(tzinfo=None)),
        ("user:alice", 1, (t0 + 5 * MIN).replace(tzinfo=None)),
        ("channel:ops", 0, t0.replace(tzinfo=None)),
    ]
    inc = await the_incident(stack)
    assert inc.targets == ["user:alice", "channel:ops"]

    await at(stack, clock, 14 * MIN, t0)
    assert len(await pages(stack)) == 3  # step 1 is not due yet
    await at(stack, clock, 15 * MIN, t0)
    assert (await pages(stack))[3:] == [("user:carol", 0)]  # schedule:primary -> carol on call
    await at(stack, clock, 20 * MIN, t0)
    assert (await pages(stack))[4:] == [("user:bob", 0)]
    await at(stack, clock, 29 * MIN, t0)
    assert len(await pages(stack)) == 5
    await at(stack, clock, 30 * MIN, t0)  # second pass: 20m (last step) + 10m (repeat_after)
    assert (await pages(stack))[5:] == [("user:alice", 0), ("user:alice", 1), ("channel:ops", 0)]
    await at(stack, clock, 50 * MIN, t0)
    assert len(await pages(stack)) == 10
    await at(stack, clock, timedelta(hours=5), t0)
    assert len(await pages(stack)) == 10  # two passes, then nothing

    esc = await events(stack, "escalated")
    assert [(e.data["loop"], e.data["step"]) for e in esc] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert esc[1].data["users"] == ["carol"] and esc[1].data["targets"] == ["schedule:primary"]
    inc = await the_incident(stack)
    assert inc.esc_due_at is None
    assert inc.targets == ["user:alice", "channel:ops", "user:carol", "user:bob"]


async def test_ack_cancels_every_pending_page_and_stops_the_policy(stack, clock):
    t0 = clock.now()
    await fire(stack, clock, team="infra", instance="a")
    await at(stack, clock, timedelta(0), t0)
    async with stack.store.session() as s:  # the channel page failed once and waits for its retry
        await s.exec(
            sa.update(Outbox)
            .where(col(Outbox.target) == "channel:ops")
            .values(attempts=1, next_attempt_at=t0 + MIN, last_error="boom")
        )
    clock._now = t0 + 30 * timedelta(seconds=1)
    inc = await the_incident(stack)
    out = await stack.incidents.ack(inc.id, "alice")
    assert out["escalation"]["due"] == "ack_timeout"
    assert {o.state for o in await rows(stack, Outbox, col(Outbox.kind) == "trigger")} == {"cancelled"}
    [cancelled] = await events(stack, "notifications_cancelled")
    assert cancelled.data["count"] == 3
    for minutes in (15, 20, 29):
        await at(stack, clock, minutes * MIN, t0)
    assert len(await pages(stack)) == 3 and len(await events(stack, "escalated")) == 1
    inc = await the_incident(stack)
    assert inc.esc_reason == "ack_timeout" and inc.esc_due_at is not None


async def test_an_ack_timeout_retriggers_and_restarts_the_policy(stack, clock):
    t0 = clock.now()
    await fire(stack, clock, team="infra", instance="a")
    await at(stack, clock, timedelta(0), t0)
    await at(stack, clock, 15 * MIN, t0)
    inc = await the_incident(stack)
    clock._now = t0 + 16 * MIN
    await stack.incidents.ack(inc.id, "carol")
    clock._now = t0 + 45 * MIN
    assert not await stack.incidents.tick(clock.now())  # 29 minutes after the ack: not yet
    clock._now = t0 + 46 * MIN
    assert await stack.incidents.tick(clock.now())
    inc = await the_incident(stack)
    assert inc.state == "triggered" and inc.acknowledged_by is None
    [timeout] = await events(stack, "ack_timeout")
    assert timeout.data["acknowledged_by"] == "carol" and "30m" in timeout.note
    assert (inc.esc_step, inc.esc_loop, inc.esc_reason) == (0, 0, "step")
    await stack.esc.tick(clock.now())
    esc = await events(stack, "escalated")
    assert [(e.data["loop"], e.data["step"]) for e in esc] == [(0, 0), (0, 1), (0, 0)]
    assert (await pages(stack, col(Outbox.state) == "pending"))[:1] == [("user:alice", 0)]


async def test_a_new_alert_on_an_acknowledged_incident_restarts_the_policy(stack, clock):
    t0 = clock.now()
    await fire(stack, clock, team="infra", instance="a")
    await at(stack, clock, timedelta(0), t0)
    inc = await the_incident(stack)
    await stack.incidents.ack(inc.id, "alice")
    clock._now = t0 + 5 * MIN
    await fire(stack, clock, team="infra", instance="b")  # same group (alertname): re-triggers
    inc = await the_incident(stack)
    assert inc.state == "triggered" and inc.esc_reason == "step"
    assert await pages(stack, col(Outbox.state) == "pending") == []  # the incidents stage pages nobody itself
    await stack.esc.tick(clock.now())
    assert await pages(stack, col(Outbox.state) == "pending") == [
        ("user:alice", 0),
        ("user:alice", 1),
        ("channel:ops", 0),
    ]
    await at(stack, clock, 19 * MIN, t0)  # step 1 of the new pass is due 15 minutes after the re-trigger
    assert len(await events(stack, "escalated")) == 2
    await at(stack, clock, 20 * MIN, t0)
    assert len(await events(stack, "escalated")) == 3


async def test_auto_resolve_after(stack, clock):
    t0 = clock.now()
    await fire(stack, clock, team="infra", instance="a")
    await at(stack, clock, timedelta(0), t0)
    clock._now = t0 + timedelta(hours=23, minutes=59)
    await stack.incidents.tick(clock.now())
    assert (await the_incident(stack)).state == "triggered"
    clock._now = t0 + timedelta(days=1)
    await stack.incidents.tick(clock.now())
    inc = await the_incident(stack)
    assert inc.state == "resolved" and inc.resolved_by == "fsincident"
    [resolved] = await events(stack, "resolved")
    assert resolved.note == "auto-resolve timeout"
    assert inc.esc_due_at is None and inc.resolve_due_at is None


async def test_a_restart_runs_overdue_steps_once_in_order(store, db_url, clock, cfg):
    t0 = clock.now()
    first = Stack(db_url, clock, cfg)
    try:
        await fire(first, clock, team="infra", instance="a")
        await at(first, clock, timedelta(0), t0)
    finally:
        await first.close()
    # Down from 1 to 25 minutes: steps 1 (15m) and 2 (20m) came due meanwhile.
    second = Stack(db_url, clock, cfg)
    try:
        await at(second, clock, 25 * MIN, t0)
        await at(second, clock, 25 * MIN, t0)
        esc = await events(second, "escalated")
        assert [(e.data["loop"], e.data["step"]) for e in esc] == [(0, 0), (0, 1), (0, 2)]
        assert (await pages(second))[3:] == [("user:carol", 0), ("user:bob", 0)]
        inc = await the_incident(second)
        assert inc.esc_due_at.replace(tzinfo=None) == (t0 + 30 * MIN).replace(tzinfo=None)
    finally:
        await second.close()


async def test_two_instances_never_run_the_same_step(store, db_url, clock, cfg):
    t0 = clock.now()
    a, b = Stack(db_url, clock, cfg), Stack(db_url, clock, cfg)
    try:
        for n in range(4):
            await fire(a, clock, alertname=f"Disk{n}", team="infra")
        for minutes in (0, 15, 20, 30, 45, 50):
            clock._now = t0 + minutes * MIN
            await asyncio.gather(*(x.esc.tick(clock.now()) for x in (a, b, a, b)))
        esc = await events(a, "escalated")
        seen = [(e.incident_id, e.data["loop"], e.data["step"]) for e in esc]
        assert len(seen) == len(set(seen)) == 4 * 6
        assert len(await pages(a)) == 4 * 10
    finally:
        await a.close()
        await b.close()


async def test_manual_escalate(stack, clock):
    t0 = clock.now()
    await fire(stack, clock, team="infra", instance="a")
    await at(stack, clock, timedelta(0), t0)
    inc = await the_incident(stack)
    clock._now = t0 + MIN
    done = await stack.esc.escalate(inc.id, "erin", "db is down")
    assert (done["step"], done["users"]) == (1, ["carol"])
    [e] = [e for e in await events(stack, "escalated") if e.data["step"] == 1]
    assert e.actor == "erin" and "db is down" in e.note and e.data["manual"] is True
    inc = await the_incident(stack)
    # The following step keeps its 5-minute gap after the manual one.
    assert inc.esc_due_at.replace(tzinfo=None) == (t0 + 6 * MIN).replace(tzinfo=None)
    await at(stack, clock, 5 * MIN, t0)
    assert len(await events(stack, "escalated")) == 2
    await at(stack, clock, 6 * MIN, t0)
    assert len(await events(stack, "escalated")) == 3

    # On an acknowledged incident: the step pages, the incident stays acknowledged, nothing is scheduled.
    await stack.incidents.ack(inc.id, "bob")
    done = await stack.esc.escalate(inc.id, "bob")
    assert (done["step"], done["loop"]) == (0, 1)
    inc = await the_incident(stack)
    assert inc.state == "acknowledged" and inc.esc_reason == "ack_timeout"
    for _ in range(2):
        await stack.esc.escalate(inc.id, "bob")
    with pytest.raises(TransitionError, match="every step"):
        await stack.esc.escalate(inc.id, "bob")
    await stack.incidents.resolve(inc.id, "bob")
    with pytest.raises(TransitionError, match="resolved"):
        await stack.esc.escalate(inc.id, "bob")


async def test_escalate_without_a_policy_is_refused(stack, clock):
    await fire(stack, clock, team="other")
    inc = await the_incident(stack)
    assert inc.escalation_policy is None
    assert await pages(stack) == [("channel:ops", 0)]  # a route without a policy pages at once, as before
    with pytest.raises(TransitionError, match="no escalation policy"):
        await stack.esc.escalate(inc.id, "x")


async def test_reassign(stack, clock):
    t0 = clock.now()
    await fire(stack, clock, team="infra", instance="a")
    await at(stack, clock, timedelta(0), t0)
    inc = await the_incident(stack)
    await stack.incidents.ack(inc.id, "alice")
    done = await stack.esc.reassign(inc.id, "schedule:primary", "alice", "needs a DBA")
    assert done == {"to": "schedule:primary", "paged": ["user:carol"], "users": ["carol"]}
    inc = await the_incident(stack)
    assert inc.state == "acknowledged"  # a reassign keeps the ack
    assert "user:carol" in inc.targets
    [e] = await events(stack, "reassigned")
    assert (e.actor, e.note, e.data["to"]) == ("alice", "needs a DBA", "schedule:primary")
    assert (await pages(stack, col(Outbox.state) == "pending")) == [("user:carol", 0)]

    with pytest.raises(BadTarget, match="unknown user"):
        await stack.esc.reassign(inc.id, "user:nobody", "alice")
    with pytest.raises(BadTarget, match="invalid target"):
        await stack.esc.reassign(inc.id, "carol", "alice")
    async with stack.store.session() as s:  # dave is paged for high urgency only: make the incident low urgency
        await s.exec(sa.update(Incident).values(severity="warning"))
    with pytest.raises(TransitionError, match=r"nobody to page.*low urgency"):
        await stack.esc.reassign(inc.id, "user:dave", "alice")
    with pytest.raises(TransitionError, match="nobody is on call"):
        await stack.esc.reassign(inc.id, "schedule:nights", "alice")


async def test_nobody_on_call_and_urgency_mismatch_are_in_the_timeline(stack, clock):
    await fire(stack, clock, team="nights", severity="warning")
    await stack.esc.tick(clock.now())
    skipped = await events(stack, "notify_skipped")
    notes = sorted(e.note for e in skipped)
    assert notes == [
        "nobody is on call for schedule 'nights'",
        "user 'dave' has no contact method for low urgency",
    ]
    [esc] = await events(stack, "escalated")
    assert esc.data["paged"] == [] and esc.data["users"] == []
    assert (await the_incident(stack)).esc_due_at is None  # a one-step policy without repeat is done


async def test_an_ack_landing_while_a_step_resolves_its_targets_wins(stack, clock):
    """The step reads the incident, resolves its targets (outside any transaction), then claims it; an ack that
    commits in between makes the claim fail, so nothing of that step is queued."""
    await fire(stack, clock, team="infra", instance="a")
    inc = await the_incident(stack)
    resolve = stack.esc.resolve_targets

    async def ack_meanwhile(*args: Any, **kwargs: Any):
        res = await resolve(*args, **kwargs)
        await stack.incidents.ack(inc.id, "alice")
        return res

    stack.esc.resolve_targets = ack_meanwhile  # type: ignore[method-assign]
    await stack.esc.tick(clock.now())
    assert await pages(stack) == [] and await events(stack, "escalated") == []
    assert (await the_incident(stack)).state == "acknowledged"


async def test_a_route_without_a_policy_resolves_schedules_and_contact_rules_at_once(stack, clock):
    t0 = clock.now()
    await fire(stack, clock, team="direct")
    out = await rows(stack, Outbox)
    assert [
        (o.target, o.dest_index, (o.next_attempt_at.replace(tzinfo=None) - t0.replace(tzinfo=None))) for o in out
    ] == [
        ("user:carol", 0, timedelta(0)),
        ("user:alice", 0, timedelta(0)),
        ("user:alice", 1, 5 * MIN),
    ]
    inc = await the_incident(stack)
    assert inc.targets == ["schedule:primary", "user:alice", "user:carol"] and inc.escalation_policy is None
    async with stack.store.session() as s:  # the at-once pages went out
        await s.exec(sa.update(Outbox).where(col(Outbox.dest_index) == 0).values(state="sent", attempts=1))
    await stack.incidents.ack(inc.id, "carol")
    assert [(o.target, o.dest_index, o.state) for o in await rows(stack, Outbox, col(Outbox.kind) == "trigger")] == [
        ("user:carol", 0, "sent"),
        ("user:alice", 0, "sent"),
        ("user:alice", 1, "cancelled"),
    ]
    # The ack notice reaches the contact methods that were paged, not the delayed one that never was.
    notices = await rows(stack, Outbox, col(Outbox.kind) == "acknowledge")
    assert sorted((o.target, o.dest_index) for o in notices) == [("user:alice", 0), ("user:carol", 0)]
    assert await events(stack, "notify_skipped") == []


async def test_a_page_through_an_override_names_it_in_the_timeline(stack, clock):
    t0 = clock.now()
    ov = await stack.schedules.create_override(
        "primary", who="bob", start=t0 - MIN, end=t0 + timedelta(hours=2), by="carol", note="swap"
    )
    await fire(stack, clock, team="infra", instance="a")
    await at(stack, clock, 15 * MIN, t0)  # step 0 and step 1 (schedule:primary) are due
    esc = await events(stack, "escalated")
    assert esc[1].data["targets"] == ["schedule:primary"] and esc[1].data["users"] == ["bob"]
    assert esc[1].data["oncall"] == [{"schedule": "primary", "user": "bob", "layer": 2, "override": ov["id"]}]
    assert ("user:bob", 0) in await pages(stack)
