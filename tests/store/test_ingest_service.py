"""The ingest service on SQLite and PostgreSQL: one transition per start and end, re-posts answered from memory
while the stored end is far enough ahead, expiry by the engine module, restarts, two instances on one database."""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import col, select

from fsincident.core import FakeClock, Labels, ensure_utc
from fsincident.ingest.service import (
    FLUSH_AHEAD,
    MIN_AHEAD,
    NEVER,
    IncomingAlert,
    IngestService,
    fingerprint,
)
from fsincident.obs import Metrics
from fsincident.store import Store
from fsincident.store.tables import AlertTransition, IngestedAlert

MIN = timedelta(minutes=1)


def service(store: Store, clock: FakeClock, resolve_timeout: timedelta = 5 * MIN) -> IngestService:
    svc = IngestService(store, clock, Metrics(), resolve_timeout)
    svc.kicks = 0  # type: ignore[attr-defined]

    def kick() -> None:
        svc.kicks += 1  # type: ignore[attr-defined]

    svc.kick_incidents = kick
    return svc


def alert(n: int = 1, *, starts: Any = None, ends: Any = None, **annotations: str) -> IncomingAlert:
    return IncomingAlert({"alertname": "Disk", "instance": f"host-{n}"}, dict(annotations), starts, ends, "http://p/g")


async def transitions(store: Store) -> list[tuple[str, str, Any]]:
    async with store.session() as s:
        rows = (await s.exec(select(AlertTransition).order_by(col(AlertTransition.id)))).all()
    return [(r.fingerprint, r.state, ensure_utc(r.at)) for r in rows]


async def stored(store: Store, fp: str) -> IngestedAlert | None:
    async with store.session() as s:
        return await s.get(IngestedAlert, fp)


@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=6))
def test_fingerprint_is_the_label_set_fingerprint(labels: dict[str, str]) -> None:
    assert fingerprint(labels) == Labels(labels).fingerprint


async def test_new_alert_fires_once_and_reposts_stay_in_memory(store: Store, clock: FakeClock) -> None:
    svc = service(store, clock)
    t0 = clock.now()
    a = alert(ends=t0 + 4 * MIN, summary="full")
    assert await svc.post([a], "alertmanager", t0) == 1
    fp = fingerprint(a.labels)
    assert await transitions(store) == [(fp, "firing", t0)]
    row = await stored(store, fp)
    assert row is not None and row.state == "firing" and row.origin == "alertmanager"
    assert row.labels == a.labels and row.annotations == {"summary": "full"} and row.generator_url == "http://p/g"
    assert ensure_utc(row.starts_at) == t0 and ensure_utc(row.ends_at) == t0 + 4 * MIN
    assert svc.kicks == 1  # type: ignore[attr-defined]

    # Prometheus re-posts a minute later with a later end: nothing is written (the stored end is 3m ahead).
    clock.advance(MIN)
    again = alert(starts=t0, ends=clock.now() + 4 * MIN, summary="full")
    assert await svc.post([again], "alertmanager", clock.now()) == 0
    assert await transitions(store) == [(fp, "firing", t0)]
    assert ensure_utc((await stored(store, fp)).ends_at) == t0 + 4 * MIN  # type: ignore[union-attr]
    [view] = svc.firing()
    assert view.ends_at == clock.now() + 4 * MIN and view.updated_at == clock.now()

    # Once the stored end is less than half of the new lifetime ahead, the new end is written at once.
    clock.advance(2 * MIN)
    await svc.post([alert(starts=t0, ends=clock.now() + 4 * MIN, summary="full")], "alertmanager", clock.now())
    assert ensure_utc((await stored(store, fp)).ends_at) == clock.now() + 4 * MIN  # type: ignore[union-attr]
    assert await transitions(store) == [(fp, "firing", t0)]

    # Changed annotations are written at once too.
    await svc.post([alert(starts=t0, ends=clock.now() + 4 * MIN, summary="fuller")], "alertmanager", clock.now())
    assert (await stored(store, fp)).annotations == {"summary": "fuller"}  # type: ignore[union-attr]
    await svc.close()


async def test_defaults_and_merging(store: Store, clock: FakeClock) -> None:
    svc = service(store, clock, resolve_timeout=5 * MIN)
    t0 = clock.now()
    await svc.post([alert()], "alertmanager", t0)  # no startsAt, no endsAt: now .. now + resolve_timeout
    [v] = svc.firing()
    assert (v.starts_at, v.ends_at) == (t0, t0 + 5 * MIN)
    clock.advance(MIN)
    # A later post with an earlier start keeps the earliest start; the default end moves on.
    await svc.post([alert(starts=t0 - MIN)], "alertmanager", clock.now())
    [v] = svc.firing()
    assert (v.starts_at, v.ends_at) == (t0 - MIN, clock.now() + 5 * MIN)
    # An explicit end later than a newer default one wins.
    await svc.post([alert(ends=clock.now() + 30 * MIN)], "alertmanager", clock.now())
    await svc.post([alert()], "alertmanager", clock.now())
    [v] = svc.firing()
    assert v.ends_at == clock.now() + 30 * MIN
    # Only the start was fired: one transition, at the first start.
    assert [s for _, s, _ in await transitions(store)] == ["firing"]
    await svc.close()


async def test_resolved_post_ends_the_alert_and_refires(store: Store, clock: FakeClock) -> None:
    svc = service(store, clock)
    t0 = clock.now()
    a = alert(ends=t0 + 4 * MIN)
    fp = fingerprint(a.labels)
    await svc.post([a], "alertmanager", t0)
    clock.advance(30)
    ended = t0 + timedelta(seconds=20)
    assert await svc.post([alert(starts=t0, ends=ended)], "alertmanager", clock.now()) == 1
    assert await transitions(store) == [(fp, "firing", t0), (fp, "resolved", ended)]
    row = await stored(store, fp)
    assert row.state == "resolved" and ensure_utc(row.ends_at) == ended  # type: ignore[union-attr]
    assert svc.firing() == []
    # A resolved alert that is not firing changes nothing.
    assert await svc.post([alert(starts=t0, ends=ended)], "alertmanager", clock.now()) == 0
    assert len(await transitions(store)) == 2
    # Firing again starts it again.
    clock.advance(MIN)
    await svc.post([alert(ends=clock.now() + 4 * MIN)], "alertmanager", clock.now())
    assert [s for _, s, _ in await transitions(store)] == ["firing", "resolved", "firing"]
    assert (await stored(store, fp)).state == "firing"  # type: ignore[union-attr]
    await svc.close()


async def test_expiry_flush_and_sleep_hint(store: Store, clock: FakeClock) -> None:
    svc = service(store, clock)
    t0 = clock.now()
    a, b = alert(1, ends=t0 + 4 * MIN), alert(2, ends=t0 + 2 * MIN)
    await svc.post([a, b], "alertmanager", t0)
    assert await svc.sleep_hint(t0) == 120.0
    assert await svc.tick(t0) is False
    # b expires: resolved at its end.
    clock.advance(2 * MIN)
    assert await svc.tick(clock.now()) is True
    fa, fb = fingerprint(a.labels), fingerprint(b.labels)
    assert (fb, "resolved", t0 + 2 * MIN) in await transitions(store)
    assert [v.fingerprint for v in svc.firing()] == [fa]
    # a is refreshed in memory only (stored end t0+4m is >= half the new lifetime ahead) ...
    clock.advance(10)
    await svc.post([alert(1, starts=t0, ends=clock.now() + 2 * MIN)], "alertmanager", clock.now())
    assert ensure_utc((await stored(store, fa)).ends_at) == t0 + 4 * MIN  # type: ignore[union-attr]
    new_end = clock.now() + 2 * MIN
    # ... and the module writes the new end shortly before the stored one passes.
    hint = await svc.sleep_hint(clock.now())
    assert hint is not None and hint == (t0 + 4 * MIN - FLUSH_AHEAD - clock.now()).total_seconds()
    clock.advance(hint)
    assert await svc.tick(clock.now()) is True
    assert ensure_utc((await stored(store, fa)).ends_at) == new_end  # type: ignore[union-attr]
    clock.advance(t0 + 4 * MIN + timedelta(seconds=1) - clock.now())
    assert await svc.tick(clock.now()) is False  # a is still firing: its stored end moved
    clock.advance(new_end - clock.now())
    assert await svc.tick(clock.now()) is True
    assert (fa, "resolved", new_end) in await transitions(store)
    assert svc.firing() == [] and await svc.sleep_hint(clock.now()) is None
    await svc.close()


async def test_restart_keeps_alerts_accepted_and_the_stored_end_far_enough(store: Store, clock: FakeClock) -> None:
    svc = service(store, clock)
    t0 = clock.now()
    await svc.post([alert(i, ends=t0 + 4 * MIN) for i in range(3)], "alertmanager", t0)
    for _ in range(10):  # re-posts every 30 s, as a sender might
        clock.advance(30)
        now = clock.now()
        await svc.post([alert(i, starts=t0, ends=now + 4 * MIN) for i in range(3)], "alertmanager", now)
        async with store.session() as s:
            ends = (await s.exec(select(IngestedAlert.ends_at))).all()
        # Whatever a crash right now would keep is at least half of the lifetime and MIN_AHEAD ahead.
        assert all(ensure_utc(e) >= now + max(2 * MIN, MIN_AHEAD) for e in ends)
    # "Crash": a new service on the same database knows the alerts as firing.
    other = service(store, clock)
    await other.restore()
    assert len(other.firing()) == 3
    assert await other.post([alert(1, starts=t0, ends=clock.now() + 4 * MIN)], "alertmanager", clock.now()) == 0
    assert [s for _, s, _ in await transitions(store)] == ["firing"] * 3
    await svc.close()
    await other.close()


async def test_two_instances_share_the_database(store: Store, clock: FakeClock) -> None:
    a_svc, b_svc = service(store, clock), service(store, clock)
    t0 = clock.now()
    await a_svc.post([alert(1, ends=t0 + 2 * MIN)], "alertmanager", t0)
    fp = fingerprint(alert(1).labels)
    # B gets the same alert (it did not know it): no second firing transition, its later end is stored.
    clock.advance(MIN)
    await b_svc.post([alert(1, starts=t0, ends=clock.now() + 4 * MIN)], "alertmanager", clock.now())
    assert await transitions(store) == [(fp, "firing", t0)]
    # A's memory says the alert ends at t0+2m, but the database says later: A does not resolve it.
    clock.advance(MIN + timedelta(seconds=1))
    await a_svc.tick(clock.now())
    assert await transitions(store) == [(fp, "firing", t0)]
    assert (await stored(store, fp)).state == "firing"  # type: ignore[union-attr]
    # Alerts only B knows are expired by A too when B is gone (a row past its end).
    await b_svc.close()
    clock.advance(4 * MIN)
    a_svc._next_scan = 0.0
    assert await a_svc.tick(clock.now()) is True
    assert [s for _, s, _ in await transitions(store)] == ["firing", "resolved"]
    await a_svc.close()


async def test_resolve_by_fingerprint_and_pagerduty_alerts_do_not_expire(store: Store, clock: FakeClock) -> None:
    svc = service(store, clock)
    t0 = clock.now()
    pd = IncomingAlert({"alertname": "pd", "dedup_key": "k1"}, {"summary": "s"}, None, NEVER, "")
    fp = fingerprint(pd.labels)
    assert await svc.post([pd], "pagerduty:payments", t0) == 1
    clock.advance(timedelta(days=400))
    assert await svc.tick(clock.now()) is False
    assert await svc.resolve([fp, "0000000000000000"], "pagerduty:payments", clock.now()) == 1
    assert await transitions(store) == [(fp, "firing", t0), (fp, "resolved", clock.now())]
    assert await svc.resolve([fp], "pagerduty:payments", clock.now()) == 0
    async with store.session() as s:
        origins = (await s.exec(select(AlertTransition.origin))).all()
    assert set(origins) == {"pagerduty:payments"}
    await svc.close()


async def test_one_request_is_one_transaction(store: Store, clock: FakeClock) -> None:
    svc = service(store, clock)
    t0 = clock.now()
    batch = [alert(i, ends=t0 + 4 * MIN) for i in range(250)] + [alert(0, ends=t0 + 5 * MIN)]  # 0 twice: last wins
    assert await svc.post(batch, "alertmanager", t0) == 250
    async with store.session() as s:
        n = (await s.exec(select(sa.func.count()).select_from(AlertTransition))).one()
        row = await s.get(IngestedAlert, fingerprint(alert(0).labels))
    assert n == 250 and ensure_utc(row.ends_at) == t0 + 5 * MIN  # type: ignore[union-attr]
    assert len(svc.firing()) == 250
    await svc.close()


async def test_times_with_an_offset_are_stored_as_utc(store: Store, clock: FakeClock) -> None:
    svc = service(store, clock)
    t0 = clock.now()
    berlin = timezone(timedelta(hours=1))
    a = alert(starts=(t0 - MIN).astimezone(berlin), ends=(t0 + 4 * MIN).astimezone(berlin))
    await svc.post([a], "pagerduty:x", t0)
    row = await stored(store, fingerprint(a.labels))
    assert ensure_utc(row.starts_at) == t0 - MIN and ensure_utc(row.ends_at) == t0 + 4 * MIN  # type: ignore[union-attr]
    assert await transitions(store) == [(fingerprint(a.labels), "firing", t0 - MIN)]
    await svc.close()
