"""Aware UTC datetimes survive a round trip through both backends, and compare correctly in SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import col, select

from fsincident.core import ensure_utc
from fsincident.store.tables import Incident, Outbox

MOMENTS = [
    datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=UTC),  # just before the EU DST switch
    datetime(2026, 3, 29, 1, 0, 0, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
]


async def test_aware_utc_round_trip(store):
    ids = []
    async with store.session() as s:
        for i, t in enumerate(MOMENTS):
            inc = Incident(
                group_key=f"g{i}",
                open_key=f"g{i}",
                title="t",
                state="acknowledged",
                severity="warning",
                created_at=t,
                updated_at=t + timedelta(microseconds=1),
                acknowledged_at=t,
            )
            s.add(inc)
            await s.flush()
            ids.append(inc.id)
    async with store.session() as s:
        rows = (await s.exec(select(Incident).where(col(Incident.id).in_(ids)).order_by(col(Incident.id)))).all()
    assert len(rows) == len(MOMENTS)
    for row, t in zip(rows, MOMENTS, strict=True):
        for got, want in (
            (row.created_at, t),
            (row.updated_at, t + timedelta(microseconds=1)),
            (row.acknowledged_at, t),
        ):
            norm = ensure_utc(got)
            assert norm == want
            assert norm.utcoffset() == timedelta(0)
        assert row.resolved_at is None and ensure_utc(row.resolved_at) is None


async def test_sql_comparisons_on_aware_datetimes(store):
    """``next_attempt_at <= now`` (how the outbox finds due rows) is exact to the microsecond on both backends."""
    t = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    async with store.session() as s:
        us = timedelta(microseconds=1)
        for i, dt in enumerate((t - us, t, t + us, t + timedelta(days=1))):
            s.add(
                Outbox(
                    target="channel:ops",
                    dest_index=i,
                    kind="trigger",
                    title="x",
                    body="y",
                    state="pending",
                    next_attempt_at=dt,
                    created_at=t,
                )
            )
    async with store.session() as s:
        due = (await s.exec(select(Outbox.dest_index).where(col(Outbox.next_attempt_at) <= t))).all()
        latest = (await s.exec(select(Outbox.next_attempt_at).order_by(col(Outbox.next_attempt_at).desc()))).first()
    assert sorted(due) == [0, 1]
    assert ensure_utc(latest) == t + timedelta(days=1)
