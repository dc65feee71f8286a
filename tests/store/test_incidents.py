"""IncidentService on the real store (no HTTP): transitions -> incidents, alerts, timeline and outbox rows."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from fsincident.config.model import DeliveryOptions, RouteOptions
from fsincident.core import FakeClock, Labels, TransitionError
from fsincident.incidents.service import IncidentService, NotFound
from fsincident.notify.outbox import Deliverer
from fsincident.obs import Metrics
from fsincident.routing.tree import build, route
from fsincident.store import Store
from fsincident.store.tables import Alert, AlertTransition, Incident, IncidentEvent, Outbox

ROUTES = build(
    [
        RouteOptions(match={"team": "db"}, notify=["channel:ops"], group_by=["alertname", "cluster"]),
        RouteOptions(match={"team": "batch"}, notify=["channel:ops"], group_by=["alertname"], auto_resolve=False),
        RouteOptions(notify=["channel:ops", "channel:nowhere"]),
    ]
)


def render(kind: str, inc: dict[str, Any], alerts: list[dict[str, Any]], actor: str | None, note: str | None):
    return f"[{kind}] {inc['title']}", f"{len(alerts)} alert(s); by {actor}; note {note}"


def make_service(store: Store, clock: FakeClock) -> IncidentService:
    return IncidentService(
        store,
        clock,
        Metrics(),
        render=render,
        destinations=lambda target: 1 if target == "channel:ops" else 0,
        route=lambda labels: route(ROUTES, labels),
    )


@pytest.fixture
def svc(store, clock) -> IncidentService:
    return make_service(store, clock)


async def transition(store: Store, clock: FakeClock, state: str, alertname: str = "DiskFull", **labels: str) -> str:
    """Queue one alert transition as evaluation would; returns the series fingerprint."""
    full = {"alertname": alertname, **labels}
    fp = Labels(full).fingerprint
    async with store.session() as s:
        s.add(
            AlertTransition(
                fingerprint=fp,
                alertname=alertname,
                origin=f"rule:{alertname}",
                labels=full,
                annotations={"summary": f"{alertname} on {labels.get('instance', '?')}"},
                value=95.0,
                state=state,
                at=clock.now(),
            )
        )
    return fp


async def step(svc: IncidentService, clock: FakeClock) -> bool:
    """One engine step: tick until every queued transition is processed (a batch stops taking transitions after
    BATCH_SECONDS, so on a slow machine one tick may leave some for the next)."""
    clock.advance(timedelta(seconds=10))
    did = await svc.tick(clock.now())
    for _ in range(100):
        async with svc.store.read() as s:
            left = (await s.exec(select(AlertTransition.id).where(col(AlertTransition.processed_at).is_(None)))).first()
        if left is None:
            break
        did = await svc.tick(clock.now()) or did
    return did


async def rows(store: Store, model: Any, *where: Any) -> list[Any]:
    async with store.session() as s:
        q = select(model).where(*where) if where else select(model)
        return list((await s.exec(q.order_by(col(model.id)))).all())


async def kinds(store: Store, incident_id: int) -> list[str]:
    return [e.kind for e in await rows(store, IncidentEvent, IncidentEvent.incident_id == incident_id)]


async def snapshot(store: Store) -> dict[str, int]:
    out = {}
    async with store.session() as s:
        for model in (Incident, Alert, IncidentEvent, Outbox):
            out[model.__tablename__] = (await s.exec(select(sa.func.count()).select_from(model))).one()
    return out


async def test_firing_opens_one_incident(store, clock, svc):
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    assert await step(svc, clock) is True
    [inc] = await rows(store, Incident)
    assert inc.state == "triggered"
    assert inc.labels == {"alertname": "DiskFull", "cluster": "c1"}
    assert inc.open_key == inc.group_key
    assert inc.targets == ["channel:ops"]
    assert inc.title == "DiskFull: DiskFull on a"
    [alert] = await rows(store, Alert)
    assert (alert.incident_id, alert.state, alert.labels["instance"]) == (inc.id, "firing", "a")
    assert await kinds(store, inc.id) == ["triggered"]
    [out] = await rows(store, Outbox)
    assert (out.incident_id, out.kind, out.state, out.target, out.dest_index, out.attempts) == (
        inc.id,
        "trigger",
        "pending",
        "channel:ops",
        0,
        0,
    )
    assert out.title == f"[trigger] {inc.title}"
    # All transitions were consumed: the next tick has no work.
    assert all(t.processed_at is not None for t in await rows(store, AlertTransition))
    assert await step(svc, clock) is False


async def test_repeated_firing_changes_nothing(store, clock, svc):
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    before = await snapshot(store)
    [inc_before] = await rows(store, Incident)
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    assert await step(svc, clock) is True  # work was done (the transition was consumed) ...
    assert await snapshot(store) == before  # ... but no row was added
    [inc] = await rows(store, Incident)
    assert inc.state == "triggered" and inc.updated_at == inc_before.updated_at


async def test_second_series_of_the_group_joins_the_incident(store, clock, svc):
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    await transition(store, clock, "firing", team="db", cluster="c1", instance="b")
    await transition(store, clock, "firing", team="db", cluster="c2", instance="a")  # another group
    await step(svc, clock)
    incs = await rows(store, Incident)
    assert len(incs) == 2
    first, other = incs
    assert [a.labels["instance"] for a in await rows(store, Alert, Alert.incident_id == first.id)] == ["a", "b"]
    assert await kinds(store, first.id) == ["triggered", "alert_firing"]
    assert other.labels["cluster"] == "c2"
    # Joining a triggered incident does not page again.
    assert len(await rows(store, Outbox, Outbox.incident_id == first.id)) == 1


async def test_default_grouping_is_one_incident_per_series_and_skips_dead_targets(store, clock, svc):
    await transition(store, clock, "firing", instance="a")
    await transition(store, clock, "firing", instance="b")
    await step(svc, clock)
    incs = await rows(store, Incident)
    assert len(incs) == 2
    for inc in incs:
        assert inc.targets == ["channel:ops", "channel:nowhere"]
        assert [o.target for o in await rows(store, Outbox, Outbox.incident_id == inc.id)] == ["channel:ops"]
        assert await kinds(store, inc.id) == ["triggered", "notify_skipped"]


async def test_resolves_only_when_all_alerts_resolved(store, clock, svc):
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    await transition(store, clock, "firing", team="db", cluster="c1", instance="b")
    await step(svc, clock)
    [inc] = await rows(store, Incident)

    await transition(store, clock, "resolved", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    [inc] = await rows(store, Incident)
    assert inc.state == "triggered" and inc.open_key is not None
    states = {a.labels["instance"]: a.state for a in await rows(store, Alert)}
    assert states == {"a": "resolved", "b": "firing"}
    assert [o.kind for o in await rows(store, Outbox)] == ["trigger"]

    await transition(store, clock, "resolved", team="db", cluster="c1", instance="b")
    await step(svc, clock)
    [inc] = await rows(store, Incident)
    assert inc.state == "resolved"
    assert inc.open_key is None
    assert inc.resolved_at is not None and inc.resolved_by == "fsincident"
    assert all(a.state == "resolved" and a.ends_at is not None for a in await rows(store, Alert))
    assert await kinds(store, inc.id) == [
        "triggered",
        "alert_firing",
        "alert_resolved",
        "alert_resolved",
        "resolved",
        "notifications_cancelled",
    ]
    outbox = await rows(store, Outbox)
    assert [(o.kind, o.state) for o in outbox] == [("trigger", "cancelled"), ("resolve", "pending")]


async def test_without_auto_resolve_the_incident_stays_open(store, clock, svc):
    await transition(store, clock, "firing", alertname="JobLate", team="batch", job="x")
    await step(svc, clock)
    await transition(store, clock, "resolved", alertname="JobLate", team="batch", job="x")
    await step(svc, clock)
    [inc] = await rows(store, Incident)
    assert inc.auto_resolve is False
    assert inc.state == "triggered" and inc.open_key is not None and inc.resolved_at is None
    [alert] = await rows(store, Alert)
    assert alert.state == "resolved"
    assert [o.kind for o in await rows(store, Outbox)] == ["trigger"]
    # A human resolves it.
    out = await svc.resolve(inc.id, "alice", "done")
    assert out["state"] == "resolved" and out["resolved_by"] == "alice"


async def test_ack_cancels_unsent_page_and_queues_acknowledge(store, clock, svc):
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    [inc] = await rows(store, Incident)
    clock.advance(timedelta(seconds=5))
    out = await svc.ack(inc.id, "alice", "on it")
    assert out["state"] == "acknowledged"
    assert out["acknowledged_by"] == "alice"
    assert out["acknowledged_at"] == clock.now().isoformat().replace("+00:00", "Z")
    outbox = await rows(store, Outbox)
    assert [(o.kind, o.state) for o in outbox] == [("trigger", "cancelled"), ("acknowledge", "pending")]
    assert outbox[0].last_error == "cancelled: incident acknowledged"
    assert "by alice; note on it" in outbox[1].body
    events = await rows(store, IncidentEvent, IncidentEvent.incident_id == inc.id)
    assert [e.kind for e in events] == ["triggered", "acknowledged", "notifications_cancelled"]
    assert (events[1].actor, events[1].note) == ("alice", "on it")
    assert outbox[1].event_id == events[1].id

    # Acknowledging again is a no-op.
    before = await snapshot(store)
    clock.advance(timedelta(seconds=5))
    again = await svc.ack(inc.id, "bob", "me too")
    assert again["state"] == "acknowledged" and again["acknowledged_by"] == "alice"
    assert again["acknowledged_at"] == out["acknowledged_at"]
    assert await snapshot(store) == before


async def test_ack_cancels_a_page_waiting_for_its_retry(store, clock, svc):
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    [inc] = await rows(store, Incident)
    async with store.session() as s:  # the deliverer tried once and would retry
        await s.exec(sa.update(Outbox).values(attempts=1, last_error="HTTP 500"))
    await svc.ack(inc.id, "alice")
    outbox = await rows(store, Outbox)
    assert [(o.kind, o.state) for o in outbox] == [("trigger", "cancelled"), ("acknowledge", "pending")]


async def test_page_in_flight_during_an_ack_is_not_retried(store, clock, svc):
    """A page being sent when the incident is acknowledged fails: its retry is cancelled, never sent."""
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    [inc] = await rows(store, Incident)
    async with store.session() as s:  # the deliverer holds it (sending) while the ack lands
        await s.exec(sa.update(Outbox).values(state="sending", attempts=1, lease_until=clock.now()))
    await svc.ack(inc.id, "alice")
    async with store.session() as s:  # the attempt failed: back to pending for a retry
        await s.exec(
            sa.update(Outbox).where(Outbox.kind == "trigger").values(state="pending", next_attempt_at=clock.now())
        )
    deliverer = Deliverer(store, clock, Metrics(), SimpleNamespace(by_target={}), DeliveryOptions())  # type: ignore[arg-type]
    claimed = await deliverer.claim(clock.now(), 10)
    # The page never arrived, so neither does a notice that it was acknowledged.
    assert claimed == []
    outbox = await rows(store, Outbox)
    assert [(o.kind, o.state) for o in outbox] == [("trigger", "cancelled"), ("acknowledge", "cancelled")]
    assert outbox[1].last_error == "cancelled: no page reached this target"


async def test_ack_of_resolved_incident_raises(store, clock, svc):
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    await transition(store, clock, "resolved", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    [inc] = await rows(store, Incident)
    assert inc.state == "resolved"
    before = await snapshot(store)
    with pytest.raises(TransitionError):
        await svc.ack(inc.id, "alice")
    assert await snapshot(store) == before
    # Resolving a resolved incident changes nothing either, and unknown ids are NotFound.
    assert (await svc.resolve(inc.id, "alice"))["state"] == "resolved"
    assert await snapshot(store) == before
    with pytest.raises(NotFound):
        await svc.ack(inc.id + 1000, "alice")
    with pytest.raises(NotFound):
        await svc.get(inc.id + 1000)


async def test_new_alert_retriggers_acknowledged_incident(store, clock, svc):
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    [inc] = await rows(store, Incident)
    await svc.ack(inc.id, "alice")
    await transition(store, clock, "firing", team="db", cluster="c1", instance="b")
    await step(svc, clock)
    [inc] = await rows(store, Incident)
    assert inc.state == "triggered"
    assert inc.acknowledged_at is None and inc.acknowledged_by is None
    assert await kinds(store, inc.id) == [
        "triggered",
        "acknowledged",
        "notifications_cancelled",
        "alert_firing",
        "retriggered",
    ]
    assert [(o.kind, o.state) for o in await rows(store, Outbox)] == [
        ("trigger", "cancelled"),
        ("acknowledge", "pending"),
        ("trigger", "pending"),
    ]
    # The re-triggered incident can be acknowledged again.
    assert (await svc.ack(inc.id, "bob"))["acknowledged_by"] == "bob"


async def test_after_resolve_the_group_opens_a_new_incident(store, clock, svc):
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    [first] = await rows(store, Incident)
    await svc.resolve(first.id, "alice", "fixed")
    await transition(store, clock, "firing", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    first, second = await rows(store, Incident)
    assert second.id != first.id
    assert first.group_key == second.group_key
    assert (first.state, first.open_key) == ("resolved", None)
    assert (second.state, second.open_key) == ("triggered", second.group_key)
    assert await kinds(store, second.id) == ["triggered"]

    # The series clearing now resolves the new incident; the old one stays resolved.
    await transition(store, clock, "resolved", team="db", cluster="c1", instance="a")
    await step(svc, clock)
    first, second = await rows(store, Incident)
    assert first.state == second.state == "resolved"
    assert first.resolved_by == "alice" and second.resolved_by == "fsincident"

    listed = await svc.list()
    assert [i["id"] for i in listed] == [second.id, first.id]
    assert [i["id"] for i in await svc.list(state="resolved", limit=1)] == [second.id]
    full = await svc.get(second.id)
    assert [a["state"] for a in full["alerts"]] == ["resolved"]
    assert [e["kind"] for e in full["timeline"]][:1] == ["triggered"]


async def test_open_key_is_unique(store, clock):
    now = clock.now()

    def inc(key: str | None) -> Incident:
        return Incident(group_key="k", open_key=key, title="t", state="triggered", severity="warning",
                        created_at=now, updated_at=now)  # fmt: skip

    async with store.session() as s:
        s.add_all([inc(None), inc(None), inc("k")])  # any number of closed incidents per group
    with pytest.raises(sa.exc.IntegrityError):
        async with store.session() as s:
            s.add(inc("k"))
    assert len(await rows(store, Incident)) == 3


async def test_two_services_never_open_two_incidents_for_one_group(store, clock, db_url):
    """Two daemons on one database: the same group's first alerts still end up in one incident."""
    other_store = Store(db_url)
    try:
        a, b = make_service(store, clock), make_service(other_store, clock)
        for i in range(4):
            await transition(store, clock, "firing", team="db", cluster="c1", instance=str(i))
        results = await asyncio.gather(a.tick(clock.now()), b.tick(clock.now()), return_exceptions=True)
        # A lost race on the open_key is an IntegrityError that rolls back that tick; nothing else may fail.
        assert all(not isinstance(r, BaseException) or isinstance(r, sa.exc.IntegrityError) for r in results), results
        for _ in range(5):
            if not await a.tick(clock.now()):
                break
        [inc] = await rows(store, Incident)
        assert len(await rows(store, Alert)) == 4
        assert all(t.processed_at is not None for t in await rows(store, AlertTransition))
        assert len(await rows(store, Outbox)) == 1
        assert inc.state == "triggered"
    finally:
        await other_store.close()
