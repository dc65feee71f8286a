"""The Deliverer on the real store with a real apprise channel posting to a local webhook receiver."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from fsincident.config.model import DeliveryOptions
from fsincident.core import FakeClock, ensure_utc
from fsincident.notify.channels.apprise import AppriseNotifier, AppriseOptions
from fsincident.notify.outbox import Deliverer
from fsincident.obs import Metrics
from fsincident.store import Store
from fsincident.store.tables import Incident, IncidentEvent, Outbox
from tests.helpers import Receiver

OPTIONS = DeliveryOptions(
    timeout=timedelta(seconds=5),
    max_attempts=3,
    initial_backoff=timedelta(seconds=10),
    max_backoff=timedelta(minutes=5),
    concurrency=8,
    lease=timedelta(minutes=2),
)


class Channels:
    """The slice of ``Notifiers`` the Deliverer uses: one apprise channel ``channel:ops`` per receiver path."""

    def __init__(self, receiver: Receiver, paths: int = 1):
        opts = AppriseOptions(name="ops", urls=[receiver.apprise_url(f"ops{i}") for i in range(paths)])
        self.by_target: dict[str, Any] = {"channel:ops": AppriseNotifier(opts)}

    def destinations(self, target: str) -> int:
        n = self.by_target.get(target)
        return len(n.destinations()) if n is not None else 0

    def describe(self, target: str, index: int) -> str:
        n = self.by_target.get(target)
        return n.destinations()[index] if n is not None else target


@pytest.fixture(scope="module")
def receiver():
    rcv = Receiver().start()
    yield rcv
    rcv.stop()


@pytest.fixture
def rcv(receiver):
    receiver.received.clear()
    receiver.status = 200
    receiver.delay = 0.0
    yield receiver
    receiver.status = 200


def deliverer(store: Store, clock: FakeClock, rcv: Receiver, paths: int = 1, **opts: Any) -> Deliverer:
    return Deliverer(store, clock, Metrics(), Channels(rcv, paths), OPTIONS.model_copy(update=opts))  # type: ignore[arg-type]


async def new_incident(store: Store, clock: FakeClock, key: str = "g") -> int:
    async with store.session() as s:
        inc = Incident(
            group_key=key,
            open_key=key,
            title=f"incident {key}",
            state="triggered",
            severity="critical",
            targets=["channel:ops"],
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        s.add(inc)
        await s.flush()
        return inc.id  # type: ignore[return-value]


async def enqueue(store: Store, clock: FakeClock, incident_id: int | None, n: int = 1, **kw: Any) -> list[int]:
    ids = []
    async with store.session() as s:
        for i in range(n):
            row = Outbox(
                incident_id=incident_id,
                target=kw.get("target", "channel:ops"),
                dest_index=kw.get("dest_index", 0),
                kind=kw.get("kind", "trigger"),
                severity="critical",
                title=kw.get("title", f"page {i}"),
                body="body",
                state="pending",
                next_attempt_at=clock.now(),
                created_at=clock.now(),
            )
            s.add(row)
            await s.flush()
            ids.append(row.id)
    return ids


async def outbox(store: Store) -> list[Outbox]:
    async with store.session() as s:
        return list((await s.exec(select(Outbox).order_by(col(Outbox.id)))).all())


async def timeline(store: Store, incident_id: int) -> list[IncidentEvent]:
    async with store.session() as s:
        q = select(IncidentEvent).where(IncidentEvent.incident_id == incident_id).order_by(col(IncidentEvent.id))
        return list((await s.exec(q)).all())


async def test_sent_row_is_recorded_with_a_timeline_event(store, clock, rcv):
    iid = await new_incident(store, clock)
    [oid] = await enqueue(store, clock, iid, title="DiskFull TRIGGERED")
    d = deliverer(store, clock, rcv)
    assert await d.tick(clock.now()) is True
    [row] = await outbox(store)
    assert (row.state, row.attempts, row.lease_until, row.last_error) == ("sent", 1, None, None)
    assert ensure_utc(row.sent_at) == clock.now()
    [msg] = rcv.received
    assert (msg["title"], msg["message"], msg["type"], msg["_path"]) == (
        "DiskFull TRIGGERED",
        "body",
        "failure",
        "/ops0",
    )
    [ev] = await timeline(store, iid)
    assert (ev.kind, ev.actor) == ("notify_sent", "fsincident")
    assert ev.data == {
        "target": "channel:ops",
        "destination": rcv.apprise_url("ops0"),
        "notification": "trigger",
        "attempt": 1,
        "outbox_id": oid,
    }
    assert await d.tick(clock.now()) is False  # nothing left


async def test_concurrent_claims_never_return_the_same_row(store, clock, rcv, db_url):
    """Two deliverers (two engines, as two daemons would have) claim at once: every row goes to exactly one."""
    iid = await new_incident(store, clock)
    ids = []
    for dest in range(12):  # distinct destinations, so ordering does not hold rows back
        ids += await enqueue(store, clock, iid, dest_index=dest)
    other_store = Store(db_url)
    try:
        a, b = deliverer(store, clock, rcv), deliverer(other_store, clock, rcv)
        for _ in range(3):
            got_a, got_b = await asyncio.gather(a.claim(clock.now(), 5), b.claim(clock.now(), 5))
            ids_a, ids_b = {r.id for r in got_a}, {r.id for r in got_b}
            assert not ids_a & ids_b
            assert len(ids_a) == len(got_a) and len(ids_b) == len(got_b)
        # Everything was claimed exactly once, and no further claim finds anything while the leases hold.
        rows = await outbox(store)
        assert {r.state for r in rows} == {"sending"}
        assert {r.attempts for r in rows} == {1}
        assert await a.claim(clock.now(), 100) == [] and await b.claim(clock.now(), 100) == []
    finally:
        await other_store.close()


async def test_claim_is_compare_and_set(store, clock, rcv, db_url):
    """Many rounds of racing single-row claims: each row is handed out once, never twice."""
    iid = await new_incident(store, clock)
    for dest in range(20):
        await enqueue(store, clock, iid, dest_index=dest)
    stores = [Store(db_url) for _ in range(3)]
    try:
        ds = [deliverer(st, clock, rcv) for st in (store, *stores)]
        seen: list[int] = []
        for _ in range(10):
            batches = await asyncio.gather(*(d.claim(clock.now(), 1) for d in ds))
            seen += [r.id for batch in batches for r in batch]
        assert len(seen) == len(set(seen)) == 20
    finally:
        for st in stores:
            await st.close()


async def test_expired_lease_is_claimed_again(store, clock, rcv):
    """A crash between sending and recording repeats the notification; it is never dropped."""
    iid = await new_incident(store, clock)
    [oid] = await enqueue(store, clock, iid)
    crashed = deliverer(store, clock, rcv)
    [row] = await crashed.claim(clock.now(), 10)
    # The "crashed" daemon sent the page but died before recording it.
    await crashed.notifiers.by_target["channel:ops"].send(0, _message(row), 5)
    assert len(rcv.received) == 1

    survivor = deliverer(store, clock, rcv)
    clock.advance(timedelta(minutes=1))  # lease still held
    assert await survivor.claim(clock.now(), 10) == []
    clock.advance(timedelta(minutes=1, seconds=1))  # lease (2 min) expired
    assert await survivor.tick(clock.now()) is True
    [done] = await outbox(store)
    assert (done.id, done.state, done.attempts) == (oid, "sent", 2)
    assert len(rcv.received) == 2  # repeated, not dropped

    # The old owner recording late changes nothing: its attempt number no longer matches.
    await crashed._record(row, None)
    assert [e.kind for e in await timeline(store, iid)] == ["notify_sent"]
    assert (await outbox(store))[0].attempts == 2


async def test_orphaned_leases_released_at_start_are_claimed_at_once(store, clock, rcv):
    """A single-node restart releases the rows its killed predecessor held: they go out now, not after the lease."""
    iid = await new_incident(store, clock)
    [oid] = await enqueue(store, clock, iid)
    [_] = await deliverer(store, clock, rcv).claim(clock.now(), 10)  # the process that held it was killed
    restarted = deliverer(store, clock, rcv)
    assert await restarted.claim(clock.now(), 10) == []  # the lease (2 min) still holds
    assert await restarted.release_orphaned_leases(clock.now()) == 1
    clock.advance(timedelta(milliseconds=1))
    assert await restarted.tick(clock.now()) is True
    [done] = await outbox(store)
    assert (done.id, done.state) == (oid, "sent") and len(rcv.received) == 1
    assert await restarted.release_orphaned_leases(clock.now()) == 0


def _message(row: Outbox) -> Any:
    from fsincident.plugins import Message

    return Message(title=row.title, body=row.body, kind=row.kind, severity=row.severity)


async def test_server_error_is_retried_with_backoff(store, clock, rcv):
    iid = await new_incident(store, clock)
    await enqueue(store, clock, iid)
    d = deliverer(store, clock, rcv)
    rcv.status = 500
    start = clock.now()
    assert await d.tick(start) is True
    [row] = await outbox(store)
    assert (row.state, row.attempts, row.lease_until) == ("pending", 1, None)
    assert "500" in row.last_error
    due = ensure_utc(row.next_attempt_at)
    # backoff: initial 10 s scaled by a random 0.5–1.0
    assert start + timedelta(seconds=5) <= due <= start + timedelta(seconds=10)
    assert await d.claim(clock.now(), 10) == []  # not due yet
    [ev] = await timeline(store, iid)
    assert (ev.kind, ev.data["attempt"]) == ("notify_retry", 1)
    assert "500" in ev.note
    assert rcv.received == []

    rcv.status = 200
    clock.advance(due - start)
    assert await d.tick(clock.now()) is True
    [row] = await outbox(store)
    assert (row.state, row.attempts, row.last_error) == ("sent", 2, None)
    assert [e.kind for e in await timeline(store, iid)] == ["notify_retry", "notify_sent"]
    assert len(rcv.received) == 1


async def test_client_error_is_permanent(store, clock, rcv):
    iid = await new_incident(store, clock)
    await enqueue(store, clock, iid)
    d = deliverer(store, clock, rcv)
    rcv.status = 404
    assert await d.tick(clock.now()) is True
    [row] = await outbox(store)
    assert (row.state, row.attempts) == ("failed", 1)
    assert "404" in row.last_error
    # The failed attempt, then the verdict: a dead letter (no fallback configured).
    ev, dead = await timeline(store, iid)
    assert (ev.kind, ev.data["attempt"]) == ("notify_failed", 1)
    assert (dead.kind, dead.data["reason"], dead.data["fallback"]) == ("notify_dead", "permanent error", None)
    clock.advance(timedelta(hours=1))
    assert await d.tick(clock.now()) is False


async def test_too_many_requests_is_retried(store, clock, rcv):
    iid = await new_incident(store, clock)
    await enqueue(store, clock, iid)
    rcv.status = 429
    await deliverer(store, clock, rcv).tick(clock.now())
    [row] = await outbox(store)
    assert (row.state, row.attempts) == ("pending", 1)


async def test_max_attempts_then_failed(store, clock, rcv):
    iid = await new_incident(store, clock)
    await enqueue(store, clock, iid)
    d = deliverer(store, clock, rcv, max_attempts=3)
    rcv.status = 503
    for _ in range(3):
        assert await d.tick(clock.now()) is True
        clock.advance(timedelta(minutes=10))
    [row] = await outbox(store)
    assert (row.state, row.attempts) == ("failed", 3)
    assert [(e.kind, e.data["attempt"]) for e in await timeline(store, iid)] == [
        ("notify_retry", 1),
        ("notify_retry", 2),
        ("notify_failed", 3),
        ("notify_dead", 3),
    ]
    assert await d.tick(clock.now()) is False
    assert rcv.received == []


async def test_unknown_target_fails_permanently(store, clock, rcv):
    iid = await new_incident(store, clock)
    await enqueue(store, clock, iid, target="channel:removed")
    await deliverer(store, clock, rcv).tick(clock.now())
    [row] = await outbox(store)
    assert (row.state, row.attempts) == ("failed", 1)
    assert "no longer configured" in row.last_error
    assert [e.kind for e in await timeline(store, iid)] == ["notify_failed", "notify_dead"]


async def test_same_incident_and_destination_deliver_in_id_order(store, clock, rcv):
    iid = await new_incident(store, clock)
    # Three notifications of different kinds (a newer due page of the same kind would supersede an older one).
    ids = []
    for i, kind in enumerate(("trigger", "acknowledge", "resolve")):
        ids += await enqueue(store, clock, iid, kind=kind, title=f"page {i}")
    [other] = await enqueue(store, clock, iid, dest_index=1)  # another destination is not held back
    d = deliverer(store, clock, rcv, paths=2)

    claimed = await d.claim(clock.now(), 10)
    assert sorted(r.id for r in claimed) == [ids[0], other]
    await d._record(next(r for r in claimed if r.id == other), None)
    # While the first row is sending (or pending a retry), later rows for that destination wait.
    assert await d.claim(clock.now(), 10) == []
    async with store.session() as s:
        await s.exec(
            sa.update(Outbox)
            .where(col(Outbox.id) == ids[0])
            .values(state="pending", lease_until=None, next_attempt_at=clock.now() + timedelta(minutes=5))
        )
    assert await d.claim(clock.now(), 10) == []
    clock.advance(timedelta(minutes=5))
    [again] = await d.claim(clock.now(), 10)
    assert again.id == ids[0]
    # Finish them all through tick: the receiver sees the rows in id order.
    async with store.session() as s:
        await s.exec(sa.update(Outbox).values(state="pending", lease_until=None, attempts=0))
    rcv.received.clear()
    for _ in range(6):
        await d.tick(clock.now())
    assert [m["title"] for m in rcv.received if m["_path"] == "/ops0"] == ["page 0", "page 1", "page 2"]
    assert {r.state for r in await outbox(store)} == {"sent"}


async def test_failed_row_does_not_block_the_next(store, clock, rcv):
    iid = await new_incident(store, clock)
    ids = await enqueue(store, clock, iid, n=2)
    async with store.session() as s:  # the second page is due a second later (a due one would supersede the first)
        await s.exec(
            sa.update(Outbox).where(col(Outbox.id) == ids[1]).values(next_attempt_at=clock.now() + timedelta(seconds=1))
        )
    d = deliverer(store, clock, rcv)
    rcv.status = 400
    await d.tick(clock.now())
    rcv.status = 200
    clock.advance(timedelta(seconds=1))
    await d.tick(clock.now())
    rows = await outbox(store)
    assert [(r.id, r.state) for r in rows] == [(ids[0], "failed"), (ids[1], "sent")]
    assert [e.kind for e in await timeline(store, iid)] == ["notify_failed", "notify_dead", "notify_sent"]
