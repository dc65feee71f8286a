"""The delivery pipeline on the real store (SQLite and PostgreSQL) with real apprise channels posting to local
webhook receivers: the notification log, retry budgets, dead letters and their fallback copies, rate limits with
digests, cancelling on acknowledge, and superseded pages."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from fsincident.config.model import DeliveryOptions
from fsincident.core import FakeClock, NotifyError, ensure_utc
from fsincident.incidents.service import IncidentService
from fsincident.notify import pipeline
from fsincident.notify.channels.apprise import AppriseNotifier, AppriseOptions
from fsincident.notify.outbox import Deliverer
from fsincident.notify.render import Renderer
from fsincident.obs import Metrics
from fsincident.plugins import Message, RateLimitOptions
from fsincident.store import Store
from fsincident.store.tables import Incident, IncidentEvent, NotificationAttempt, Outbox
from tests.helpers import Receiver

OPTIONS = DeliveryOptions(
    timeout=timedelta(seconds=5),
    max_attempts=3,
    initial_backoff=timedelta(seconds=10),
    max_backoff=timedelta(minutes=5),
    concurrency=8,
    lease=timedelta(minutes=2),
)
OPS, MAIL, ALICE = "channel:ops", "channel:mail", "user:alice"


class Targets:
    """The slice of ``Notifiers`` the Deliverer uses, over explicit notifiers."""

    def __init__(self, by_target: dict[str, Any]):
        self.by_target = by_target

    def destinations(self, target: str) -> int:
        n = self.by_target.get(target)
        return len(n.destinations()) if n is not None else 0

    def describe(self, target: str, index: int) -> str:
        n = self.by_target.get(target)
        return n.destinations()[index] if n is not None else target

    def secrets(self) -> list[str]:
        return []


def apprise(name: str, rcv: Receiver, paths: int = 1, **opts: Any) -> AppriseNotifier:
    return AppriseNotifier(
        AppriseOptions(name=name, urls=[rcv.apprise_url(f"{name}{i}") for i in range(paths)], **opts)
    )


@pytest.fixture(scope="module")
def receivers():
    a, b = Receiver().start(), Receiver().start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def peers(receivers):
    for r in receivers:
        r.received.clear()
        r.status, r.delay = 200, 0.0
    yield receivers
    for r in receivers:
        r.status, r.delay = 200, 0.0


def deliverer(
    store: Store, clock: FakeClock, targets: dict[str, Any], replica: str = "test-a", **opts: Any
) -> Deliverer:
    return Deliverer(
        store,
        clock,
        Metrics(),
        Targets(targets),  # type: ignore[arg-type]
        OPTIONS.model_copy(update=opts),
        replica=replica,
        renderer=Renderer(),
    )


async def new_incident(store: Store, clock: FakeClock, key: str = "g", severity: str = "warning") -> int:
    async with store.session() as s:
        inc = Incident(
            group_key=key,
            open_key=key,
            title=f"incident {key}",
            state="triggered",
            severity=severity,
            targets=[OPS],
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        s.add(inc)
        await s.flush()
        return inc.id  # type: ignore[return-value]


async def enqueue(store: Store, clock: FakeClock, incident_id: int | None, **kw: Any) -> int:
    async with store.session() as s:
        row = Outbox(
            incident_id=incident_id,
            event_id=kw.get("event_id"),
            target=kw.get("target", OPS),
            dest_index=kw.get("dest_index", 0),
            kind=kw.get("kind", "trigger"),
            severity=kw.get("severity", "warning"),
            title=kw.get("title", f"page of #{incident_id}"),
            body="body",
            state="pending",
            next_attempt_at=clock.now() + kw.get("delay", timedelta(0)),
            created_at=clock.now(),
        )
        s.add(row)
        await s.flush()
        return row.id  # type: ignore[return-value]


async def drain(d: Deliverer, clock: FakeClock) -> None:
    for _ in range(100):
        if not await d.tick(clock.now()):
            return
    raise AssertionError("delivery never went idle")


async def outbox(store: Store) -> list[Outbox]:
    async with store.read() as s:
        return list((await s.exec(select(Outbox).order_by(col(Outbox.id)))).all())


async def attempts(store: Store, outbox_id: int | None = None) -> list[NotificationAttempt]:
    async with store.read() as s:
        q = select(NotificationAttempt).order_by(col(NotificationAttempt.id))
        if outbox_id is not None:
            q = q.where(col(NotificationAttempt.outbox_id) == outbox_id)
        return list((await s.exec(q)).all())


async def kinds(store: Store, incident_id: int) -> list[str]:
    async with store.read() as s:
        q = select(IncidentEvent.kind).where(IncidentEvent.incident_id == incident_id).order_by(col(IncidentEvent.id))
        return list((await s.exec(q)).all())


def metric(d: Deliverer, name: str, **labels: str) -> float:
    return d.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_every_attempt_is_in_the_notification_log(store, clock, peers):
    ops, _ = peers
    iid = await new_incident(store, clock)
    oid = await enqueue(store, clock, iid)
    d = deliverer(store, clock, {OPS: apprise("ops", ops)})
    ops.status = 503
    await drain(d, clock)
    [row] = await outbox(store)
    assert (row.state, row.claimed_by) == ("pending", "test-a")
    ops.status = 200
    clock.advance(timedelta(seconds=10))
    other = deliverer(store, clock, {OPS: apprise("ops", ops)}, replica="test-b")
    await drain(other, clock)
    [row] = await outbox(store)
    assert (row.state, row.attempts, row.claimed_by) == ("sent", 2, "test-b")
    log = await attempts(store, oid)
    assert [(a.attempt, a.result, a.replica) for a in log] == [(1, "retry", "test-a"), (2, "sent", "test-b")]
    first, second = log
    assert first.incident_id == iid and first.target == OPS and first.kind == "trigger"
    assert first.destination == ops.apprise_url("ops0")  # redacted by the notifier (no secret in a json:// URL)
    assert "503" in first.error and second.error is None
    assert ensure_utc(second.finished_at) == clock.now() and second.duration_ms >= 0
    assert await kinds(store, iid) == ["notify_retry", "notify_sent"]


async def test_dead_letter_goes_to_the_fallback_channel(store, clock, peers):
    ops, mail = peers
    iid = await new_incident(store, clock)
    oid = await enqueue(store, clock, iid, title="DiskFull")
    d = deliverer(
        store, clock, {OPS: apprise("ops", ops, max_attempts=2, fallback=MAIL), MAIL: apprise("mail", mail, paths=2)}
    )
    ops.status = 500
    await drain(d, clock)
    clock.advance(timedelta(seconds=10))
    await drain(d, clock)  # the second (last) attempt fails: a dead letter, copied to both mail destinations
    rows = await outbox(store)
    assert [(r.id, r.target, r.dest_index, r.state, r.fallback_for) for r in rows] == [
        (oid, OPS, 0, "failed", None),
        (oid + 1, MAIL, 0, "sent", oid),
        (oid + 2, MAIL, 1, "sent", oid),
    ]
    assert ops.received == []
    assert sorted(m["_path"] for m in mail.received) == ["/mail0", "/mail1"]
    for m in mail.received:
        assert m["title"] == "DiskFull"
        assert m["message"].startswith("Could not be delivered to channel:ops (failure: HTTP 500)")
    assert await kinds(store, iid) == [
        "notify_retry",
        "notify_failed",
        "notify_dead",
        "notify_fallback",
        "notify_sent",
        "notify_sent",
    ]
    async with store.read() as s:
        dead = (await s.exec(select(IncidentEvent).where(IncidentEvent.kind == "notify_dead"))).one()
        fb = (await s.exec(select(IncidentEvent).where(IncidentEvent.kind == "notify_fallback"))).one()
    assert (dead.data["reason"], dead.data["fallback"]) == ("gave up after 2 attempts", MAIL)
    assert (fb.data["target"], fb.data["from"], fb.data["copies"]) == (MAIL, OPS, [oid + 1, oid + 2])
    assert metric(d, "fsincident_notify_dead_letters_total", target=OPS) == 1
    assert [a.result for a in await attempts(store, oid)] == ["retry", "failed"]


async def test_a_fallback_copy_is_never_copied_again(store, clock, peers):
    ops, mail = peers
    iid = await new_incident(store, clock)
    await enqueue(store, clock, iid)
    targets = {OPS: apprise("ops", ops, max_attempts=1, fallback=MAIL), MAIL: apprise("mail", mail, fallback=OPS)}
    d = deliverer(store, clock, targets, max_attempts=1)
    ops.status = mail.status = 400  # permanent everywhere
    await drain(d, clock)
    rows = await outbox(store)
    assert [(r.target, r.state, r.fallback_for) for r in rows] == [(OPS, "failed", None), (MAIL, "failed", rows[0].id)]
    assert (await kinds(store, iid)).count("notify_fallback") == 1


async def test_no_fallback_to_the_same_target(store, clock, peers):
    ops, _ = peers
    iid = await new_incident(store, clock)
    await enqueue(store, clock, iid)
    d = deliverer(store, clock, {OPS: apprise("ops", ops, fallback=OPS)})
    ops.status = 404
    await drain(d, clock)
    assert [r.state for r in await outbox(store)] == ["failed"]
    assert "notify_fallback" not in await kinds(store, iid)


async def test_retry_for_makes_a_dead_letter_at_its_deadline(store, clock, peers):
    ops, _ = peers
    iid = await new_incident(store, clock)
    oid = await enqueue(store, clock, iid)
    d = deliverer(store, clock, {OPS: apprise("ops", ops, max_attempts=100, retry_for=timedelta(seconds=30))})
    ops.status = 503
    start = clock.now()
    deadline = start + timedelta(seconds=30)
    for _ in range(20):
        await drain(d, clock)
        [row] = await outbox(store)
        if row.state != "pending":
            break
        due = ensure_utc(row.next_attempt_at)
        assert due <= deadline  # a retry is never due after the deadline
        clock.advance(due - clock.now())
    assert row.state == "failed"
    assert clock.now() == deadline  # the last try happened right at the deadline
    log = await attempts(store, oid)
    assert [a.result for a in log] == ["retry"] * (len(log) - 1) + ["failed"]
    assert 3 <= len(log) < 10
    async with store.read() as s:
        dead = (await s.exec(select(IncidentEvent).where(IncidentEvent.kind == "notify_dead"))).one()
    assert dead.data["reason"] == "still failing 30s after it was queued"


async def test_max_attempts_per_channel_over_the_delivery_default(store, clock, peers):
    ops, mail = peers
    iid = await new_incident(store, clock)
    ch = await enqueue(store, clock, iid, target=OPS)
    user = await enqueue(store, clock, iid, target=ALICE)
    targets = {OPS: apprise("ops", ops, max_attempts=1), ALICE: apprise("alice", mail)}
    d = deliverer(store, clock, targets, max_attempts=3)  # users go by the delivery default
    ops.status = mail.status = 503
    for _ in range(4):
        await drain(d, clock)
        clock.advance(timedelta(minutes=10))
    state = {r.id: (r.state, r.attempts) for r in await outbox(store)}
    assert state == {ch: ("failed", 1), user: ("failed", 3)}


async def test_a_hanging_notifier_times_out(store, clock, monkeypatch):
    monkeypatch.setattr(pipeline, "SEND_GRACE", 0.05)

    class Hangs:
        def destinations(self) -> list[str]:
            return ["hangs"]

        async def send(self, index: int, message: Message, timeout: float) -> None:
            await asyncio.sleep(60)

    iid = await new_incident(store, clock)
    await enqueue(store, clock, iid)
    d = deliverer(store, clock, {OPS: Hangs()}, timeout=timedelta(milliseconds=100))
    await drain(d, clock)
    [row] = await outbox(store)
    assert (row.state, row.last_error) == ("pending", "timed out after 0.1s")


async def test_rate_limit_bundles_low_urgency_pages_into_one_digest(store, clock, peers):
    ops, _ = peers
    limit = RateLimitOptions(max=2, per=timedelta(minutes=1), digest=timedelta(minutes=5))
    d = deliverer(store, clock, {OPS: apprise("ops", ops, rate_limit=limit)})
    ids = []
    for i in range(50):
        ids.append(await new_incident(store, clock, f"g{i}"))
        await enqueue(store, clock, ids[-1], title=f"low {i}")
    await drain(d, clock)
    assert len(ops.received) == 2  # the limit: two posts a minute
    rows = await outbox(store)
    [digest] = [r for r in rows if r.kind == "digest"]
    assert (digest.state, digest.incident_id, ensure_utc(digest.next_attempt_at)) == (
        "pending",
        None,
        clock.now() + timedelta(minutes=5),
    )
    bundled = [r for r in rows if r.state == "bundled"]
    assert len(bundled) == 48 and {r.digest_id for r in bundled} == {digest.id}
    assert "notify_bundled" in await kinds(store, bundled[0].incident_id)  # type: ignore[arg-type]

    # A critical page during the limit goes at once, past the bundle.
    crit = await new_incident(store, clock, "crit", severity="critical")
    await enqueue(store, clock, crit, title="CRITICAL now", severity="critical")
    clock.advance(timedelta(seconds=1))
    await drain(d, clock)
    assert [m["title"] for m in ops.received][-1] == "CRITICAL now"
    assert len(ops.received) == 3

    clock.advance(timedelta(minutes=5))
    await drain(d, clock)
    assert len(ops.received) == 4
    msg = ops.received[-1]
    assert msg["title"] == "[DIGEST] 48 notifications about 48 incidents"
    assert all(f"- {r.title} (" in msg["message"] for r in bundled)  # every bundled page is listed
    rows = await outbox(store)
    assert {r.state for r in rows} == {"sent"}
    assert metric(d, "fsincident_notify_digests_total", target=OPS) == 1
    assert metric(d, "fsincident_notify_bundled_total", target=OPS) == 48
    sent_items = [r for r in rows if r.digest_id == digest.id]
    assert len(sent_items) == 48 and all(r.sent_at is not None for r in sent_items)
    assert (await kinds(store, sent_items[0].incident_id))[-1] == "notify_sent"  # type: ignore[arg-type]
    assert [a.result for a in await attempts(store, digest.id)] == ["sent"]


async def test_acknowledge_cancels_pending_and_bundled_pages(store, clock, peers):
    ops, _ = peers
    limit = RateLimitOptions(max=1, per=timedelta(minutes=1))
    # One at a time, so the oldest page is the one the limit lets through (concurrent ones race for it).
    d = deliverer(store, clock, {OPS: apprise("ops", ops, paths=2, rate_limit=limit)}, concurrency=1)
    first, acked, resolved = [await new_incident(store, clock, k) for k in ("a", "b", "c")]
    for iid in (first, acked, resolved):
        await enqueue(store, clock, iid)
    later = await enqueue(store, clock, acked, dest_index=1, delay=timedelta(minutes=3))  # a delayed contact
    await drain(d, clock)
    assert len(ops.received) == 1
    states = {r.id: r.state for r in await outbox(store)}
    assert sorted(states.values()) == ["bundled", "bundled", "pending", "pending", "sent"]

    svc = IncidentService(
        store, clock, Metrics(), render=Renderer().render, destinations=lambda t: 1, route=lambda labels: []
    )
    clock.advance(timedelta(seconds=1))
    await svc.ack(acked, "alice")
    async with store.session() as s:  # resolved behind the stage's back: the digest drops its page too
        await s.exec(
            sa.update(Incident).where(col(Incident.id) == resolved).values(state="resolved", resolved_at=clock.now())
        )
    rows = {r.id: r for r in await outbox(store)}
    assert rows[later].state == "cancelled"
    assert [r.state for r in rows.values() if r.incident_id == acked and r.kind == "trigger"] == [
        "cancelled",
        "cancelled",
    ]
    clock.advance(timedelta(minutes=5))
    await drain(d, clock)
    assert len(ops.received) == 1  # no digest: nothing was left in it
    rows = {r.id: r for r in await outbox(store)}
    [digest] = [r for r in rows.values() if r.kind == "digest"]
    assert (digest.state, digest.last_error) == ("cancelled", "cancelled: nothing left in the digest")
    assert {r.state for r in rows.values() if r.incident_id in (acked, resolved)} == {"cancelled"}


async def test_a_newer_due_page_supersedes_an_older_one(store, clock, peers):
    ops, _ = peers
    iid = await new_incident(store, clock)
    old = await enqueue(store, clock, iid, title="old")
    new = await enqueue(store, clock, iid, title="new")
    d = deliverer(store, clock, {OPS: apprise("ops", ops)})
    await drain(d, clock)
    assert [m["title"] for m in ops.received] == ["new"]
    rows = {r.id: r for r in await outbox(store)}
    assert (rows[old].state, rows[new].state) == ("cancelled", "sent")
    assert rows[old].last_error == f"superseded by the newer notification #{new}"
    [a] = await attempts(store, old)
    assert (a.result, a.attempt) == ("superseded", 1)


async def test_the_same_page_is_not_sent_twice(store, clock, peers):
    ops, _ = peers
    iid = await new_incident(store, clock)
    async with store.session() as s:
        ev = IncidentEvent(incident_id=iid, at=clock.now(), kind="triggered", actor="fsincident")
        s.add(ev)
        await s.flush()
        eid = ev.id
    await enqueue(store, clock, iid, event_id=eid)
    d = deliverer(store, clock, {OPS: apprise("ops", ops)})
    await drain(d, clock)
    again = await enqueue(store, clock, iid, event_id=eid)  # e.g. queued twice for the same event
    await drain(d, clock)
    assert len(ops.received) == 1
    [a] = await attempts(store, again)
    assert a.result == "superseded"


async def test_a_lost_lease_records_nothing(store, clock, peers):
    ops, _ = peers
    iid = await new_incident(store, clock)
    await enqueue(store, clock, iid)
    a = deliverer(store, clock, {OPS: apprise("ops", ops)})
    [row] = await a.claim(clock.now(), 10)
    clock.advance(timedelta(minutes=3))  # the lease (2 min) expired: another replica takes the row
    b = deliverer(store, clock, {OPS: apprise("ops", ops)}, replica="test-b")
    await drain(b, clock)
    await a._record(row, NotifyError("late"))
    assert [(x.result, x.replica) for x in await attempts(store)] == [("sent", "test-b")]


async def test_trigger_pages_carry_signed_links_bound_to_the_recipient(store, clock, peers):
    from fsincident.notify.links import LinkSigner

    ops, _ = peers
    signer = LinkSigner(b"k" * 32, timedelta(hours=1))
    iid = await new_incident(store, clock)
    page = {"incident": {"id": iid, "title": "DiskFull", "severity": "warning", "state": "triggered"}, "alerts": []}
    trigger = await enqueue(store, clock, iid, title="stored title")
    async with store.session() as s:
        await s.exec(sa.update(Outbox).where(col(Outbox.id) == trigger).values(data=page))
    d = deliverer(store, clock, {OPS: apprise("ops", ops)})
    d.configure(d.notifiers, d.options, signer=signer, link_base="http://fsi.example/")  # type: ignore[arg-type]
    await drain(d, clock)
    [msg] = ops.received
    assert "DiskFull" in msg["title"]
    tokens = [w.split("/l/")[1] for w in msg["message"].split() if w.startswith("http://fsi.example/l/")]
    claims = {signer.verify(t, clock.now()).action: signer.verify(t, clock.now()) for t in tokens}
    assert set(claims) == {"ack", "resolve"}
    assert {(c.incident_id, c.recipient) for c in claims.values()} == {(iid, OPS)}

    # A notice (and a page whose template data is missing) goes as stored; only trigger pages get action links.
    ops.received.clear()
    await enqueue(store, clock, iid, kind="resolve", title="resolved")
    await drain(d, clock)
    [msg] = ops.received
    assert (msg["title"], msg["message"]) == ("resolved", "body")


async def test_a_dead_digest_goes_to_the_fallback_with_its_items(store, clock, peers):
    ops, mail = peers
    limit = RateLimitOptions(max=1, per=timedelta(minutes=1))
    targets = {OPS: apprise("ops", ops, rate_limit=limit, fallback=MAIL), MAIL: apprise("mail", mail)}
    d = deliverer(store, clock, targets)
    ids = [await new_incident(store, clock, f"g{i}") for i in range(3)]
    for iid in ids:
        await enqueue(store, clock, iid, title=f"low {iid}")
    await drain(d, clock)
    assert len(ops.received) == 1
    ops.status = 400  # the digest is refused for good
    clock.advance(timedelta(minutes=1))
    await drain(d, clock)
    rows = await outbox(store)
    [digest] = [r for r in rows if r.kind == "digest" and r.target == OPS]
    [copy] = [r for r in rows if r.fallback_for == digest.id]
    assert (digest.state, copy.state, copy.target, copy.kind) == ("failed", "sent", MAIL, "digest")
    items = [r for r in rows if r.digest_id == digest.id]
    assert [r.state for r in items] == ["failed", "failed"]
    assert "notify_dead" in await kinds(store, items[0].incident_id)  # type: ignore[arg-type]
    [msg] = mail.received
    assert msg["title"] == "[DIGEST] 2 notifications about 2 incidents"
    assert all(r.title in msg["message"] for r in items)  # which page went first depends on the race


async def test_a_machine_receiver_over_its_limit_waits_instead_of_a_digest(store, clock, peers):
    from fsincident.notify.channels.webhook import WebhookNotifier, WebhookOptions

    ops, _ = peers
    limit = RateLimitOptions(max=1, per=timedelta(minutes=1))
    hook = WebhookNotifier(
        WebhookOptions(name="hook", type="webhook", url=f"{ops.url}/hook", format="json", rate_limit=limit)
    )
    d = deliverer(store, clock, {"channel:hook": hook})
    start = clock.now()
    ids = [
        await enqueue(store, clock, await new_incident(store, clock, f"g{i}"), target="channel:hook") for i in range(3)
    ]
    await drain(d, clock)
    assert len(ops.received) == 1
    rows = await outbox(store)
    assert not [r for r in rows if r.kind == "digest"]
    assert len([r for r in rows if r.state == "pending"]) == 2
    # Over the limit by a send still in flight, a page looks again a second later; by recorded sends, it waits
    # until the oldest of them leaves the window.
    clock.advance(timedelta(seconds=1))
    await drain(d, clock)
    waiting = [r for r in await outbox(store) if r.state == "pending"]
    assert {ensure_utc(r.next_attempt_at) for r in waiting} == {start + timedelta(minutes=1)}
    assert len(ops.received) == 1
    for minute in (1, 2):
        clock.advance(start + timedelta(minutes=minute) - clock.now())
        await drain(d, clock)
        clock.advance(timedelta(seconds=1))
        await drain(d, clock)
        assert len(ops.received) == 1 + minute
    assert {r.state for r in await outbox(store)} == {"sent"}
    log = [a.result for a in await attempts(store) if a.outbox_id in ids]
    assert sorted(log) == ["held", "held", "sent", "sent", "sent"]  # each waiting page is logged once


async def test_a_claim_never_waits_for_rows_another_replica_holds(store, clock, peers, db_url):
    """Rows another replica's transaction holds are skipped, a page made stale by an ack included: a claim never
    waits for another replica's rows (so two replicas claiming at once cannot deadlock), and the stale page is
    cancelled once it is free."""
    if store.is_sqlite:
        pytest.skip("SQLite has one writer at a time")
    import asyncpg

    ops, _ = peers
    acked = await new_incident(store, clock, "acked")
    stale = await enqueue(store, clock, acked)
    live = await enqueue(store, clock, await new_incident(store, clock, "live"))
    clock.advance(timedelta(seconds=1))
    async with store.session() as s:
        await s.exec(
            sa.update(Incident)
            .where(col(Incident.id) == acked)
            .values(state="acknowledged", acknowledged_at=clock.now())
        )
    d = deliverer(store, clock, {OPS: apprise("ops", ops)})
    conn = await asyncpg.connect(db_url)
    try:
        tr = conn.transaction()
        await tr.start()
        await conn.execute("SELECT id FROM outbox WHERE id = $1 FOR UPDATE", stale)
        claimed = await asyncio.wait_for(d.claim(clock.now(), 10), 10)
        assert [r.id for r in claimed] == [live]
        await tr.rollback()
    finally:
        await conn.close()
    assert await d.claim(clock.now(), 10) == []
    rows = {r.id: r for r in await outbox(store)}
    assert (rows[stale].state, rows[stale].last_error) == ("cancelled", "cancelled: incident acknowledged or resolved")


async def test_a_page_that_joins_a_digest_too_late_is_never_stranded(store, clock, peers):
    """A page bundled into a digest after the digest gathered its pages (another replica saw it still pending)
    goes back to the queue when the digest is dropped for having nothing left: a bundled page always ends up sent,
    cancelled or dead."""
    ops, _ = peers
    limit = RateLimitOptions(max=1, per=timedelta(minutes=1))
    d = deliverer(store, clock, {OPS: apprise("ops", ops, rate_limit=limit)}, concurrency=1)
    a, b, c = [await new_incident(store, clock, k) for k in ("a", "b", "c")]
    await enqueue(store, clock, a, title="page a")
    await enqueue(store, clock, b, title="page b")
    await drain(d, clock)
    [digest] = [r for r in await outbox(store) if r.kind == "digest"]
    late = await enqueue(store, clock, c, title="page c", delay=timedelta(days=1))
    clock.advance(timedelta(seconds=1))
    async with store.session() as s:  # b is acknowledged: its bundled page is dropped, the digest has nothing left
        await s.exec(
            sa.update(Incident).where(col(Incident.id) == b).values(state="acknowledged", acknowledged_at=clock.now())
        )
    render = d.stages[3]
    gather = render._gather  # type: ignore[attr-defined]

    async def gather_then_a_late_page_joins(row: Outbox) -> list[Outbox]:
        items = await gather(row)
        async with store.session() as s:
            await s.exec(sa.update(Outbox).where(col(Outbox.id) == late).values(state="bundled", digest_id=row.id))
        return items

    render._gather = gather_then_a_late_page_joins  # type: ignore[attr-defined]
    clock.advance(timedelta(minutes=1))
    await drain(d, clock)
    rows = {r.id: r for r in await outbox(store)}
    assert rows[digest.id].state == "cancelled"
    assert (rows[late].state, rows[late].digest_id) == ("sent", None)
    assert [m["title"] for m in ops.received] == ["page a", "page c"]


async def test_a_digest_does_not_claim_a_page_acknowledged_while_it_was_sent(store, clock, peers):
    """A bundled page whose incident is acknowledged while its digest is on the wire stays cancelled: neither its
    state nor its timeline says it was sent."""
    limit = RateLimitOptions(max=1, per=timedelta(minutes=1))
    svc = IncidentService(
        store, clock, Metrics(), render=Renderer().render, destinations=lambda t: 1, route=lambda labels: []
    )
    ids = [await new_incident(store, clock, k) for k in ("a", "b", "c")]
    sent: list[Message] = []

    class Chat:
        options = AppriseOptions(name="ops", urls=["json://127.0.0.1:9/x"], rate_limit=limit)

        def destinations(self) -> list[str]:
            return ["chat"]

        def style(self, index: int) -> str:
            return "chat"

        async def send(self, index: int, message: Message, timeout: float) -> None:
            sent.append(message)
            if message.kind == "digest":
                await svc.ack(ids[2], "alice")  # acknowledged while the digest is being sent

    d = deliverer(store, clock, {OPS: Chat()}, concurrency=1)
    for iid in ids:
        await enqueue(store, clock, iid, title=f"page {iid}")
    await drain(d, clock)
    clock.advance(timedelta(minutes=1))
    await drain(d, clock)
    assert [m.kind for m in sent] == ["trigger", "digest"]
    rows = {r.incident_id: r for r in await outbox(store) if r.kind == "trigger"}
    assert (rows[ids[1]].state, rows[ids[2]].state) == ("sent", "cancelled")
    assert (await kinds(store, ids[1]))[-1] == "notify_sent"
    assert "notify_sent" not in await kinds(store, ids[2])


async def test_a_critical_page_never_waits_for_the_rate_limit(store, clock, peers):
    """A critical page neither counts recent sends nor waits while a low-urgency page of the same destination is
    being counted (goalert#4188)."""
    ops, _ = peers
    limit = RateLimitOptions(max=1, per=timedelta(minutes=1))
    d = deliverer(store, clock, {OPS: apprise("ops", ops, rate_limit=limit)})
    crit = await new_incident(store, clock, "crit", severity="critical")
    await enqueue(store, clock, crit, severity="critical", title="CRITICAL")
    async with d.reservations.lock((OPS, 0)):  # held by a low-urgency page's count
        assert await asyncio.wait_for(d.tick(clock.now()), 10)
    assert [m["title"] for m in ops.received] == ["CRITICAL"]


def test_notifier_secrets_and_destinations_are_parsed_once():
    """Every delivery names its (redacted) destination and every failed attempt's error is scrubbed with the
    notifiers' secrets: both parse URLs, so they are computed once per config, not once per page of a storm."""
    from types import SimpleNamespace

    from fsincident.notify.outbox import Notifiers

    calls: list[str] = []

    class Parses:
        def secrets(self) -> list[str]:
            calls.append("secrets")
            return ["s3cr3t-value"]

        def destinations(self) -> list[str]:
            calls.append("destinations")
            return ["json://host/***"]

    n = Notifiers(SimpleNamespace(channels=[], users=[]))  # type: ignore[arg-type]
    n.by_target["channel:x"] = Parses()
    assert n.secrets() == n.secrets() == ["s3cr3t-value"]
    for _ in range(3):
        assert n.describe("channel:x", 0) == "json://host/***" and n.destinations("channel:x") == 1
    assert (n.describe("channel:x", 5), n.describe("channel:gone", 0), n.destinations("channel:gone")) == (
        "channel:x",
        "channel:gone",
        0,
    )
    assert sorted(calls) == ["destinations", "secrets"]


async def test_a_storm_over_the_rate_limit_does_not_count_sends_for_every_page(store, clock, peers):
    """Once a destination is full it stays full until its oldest send leaves the window: the pages of a storm
    are bundled without counting the notification log again for each of them."""
    ops, _ = peers
    limit = RateLimitOptions(max=2, per=timedelta(minutes=1), digest=timedelta(minutes=5))
    d = deliverer(store, clock, {OPS: apprise("ops", ops, rate_limit=limit)})
    for i in range(60):
        await enqueue(store, clock, await new_incident(store, clock, f"g{i}"), title=f"low {i}")
    counts: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "count(" in statement.lower() and "notification_attempt" in statement:
            counts.append(statement)

    sa.event.listen(store.read_engine.sync_engine, "before_cursor_execute", count)
    try:
        await drain(d, clock)
    finally:
        sa.event.remove(store.read_engine.sync_engine, "before_cursor_execute", count)
    rows = await outbox(store)
    assert len(ops.received) == 2 and len([r for r in rows if r.state == "bundled"]) == 58
    assert len(counts) <= OPTIONS.concurrency + 2, len(counts)  # the first batch counts; then it is known full


async def test_a_page_acknowledged_between_claim_and_send_is_not_sent(store, clock, peers):
    """The claim checks a page is still wanted; an acknowledgement landing right after it (before the send)
    cancels the page all the same."""
    ops, _ = peers
    iid = await new_incident(store, clock)
    oid = await enqueue(store, clock, iid)
    d = deliverer(store, clock, {OPS: apprise("ops", ops)})
    [row] = await d.claim(clock.now(), 10)
    clock.advance(timedelta(seconds=1))
    svc = IncidentService(
        store, clock, Metrics(), render=Renderer().render, destinations=lambda t: 1, route=lambda labels: []
    )
    await svc.ack(iid, "alice")
    await d._deliver(row)
    assert ops.received == []
    rows = {r.id: r for r in await outbox(store)}
    assert (rows[oid].state, rows[oid].last_error) == ("cancelled", "cancelled: incident acknowledged or resolved")
    assert [a.result for a in await attempts(store, oid)] == ["cancelled"]
