"""The delivery stage: claim outbox rows by compare-and-set, send, record, retry with backoff.

A row is ``pending`` until claimed; the claim (an UPDATE that must touch exactly one row) moves it
to ``sending`` with a lease. A crash after sending but before recording leaves a ``sending`` row
whose lease expires and which is sent again: a page may repeat, it is never dropped.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from fsincident import plugins
from fsincident.config import Config
from fsincident.config.model import DeliveryOptions, TimeIntervalOptions
from fsincident.core import Clock, Muter, NotifyError, ensure_utc
from fsincident.obs import Metrics, get_logger
from fsincident.store import Store
from fsincident.store.tables import Alert, Incident, IncidentEvent, Outbox
from fsincident.timeintervals import OUTSIDE_ACTIVE, muted_by_intervals

log = get_logger("fsincident.notify")

ACTIVE = ("pending", "sending")
HOLD_RECHECK = timedelta(minutes=1)  # how often a page held by a time interval looks again
GAUGE_EVERY = 5.0  # seconds between outbox-depth refreshes while idle


def backoff(attempt: int, options: DeliveryOptions, rnd: Callable[[], float] = random.random) -> timedelta:
    """Exponential backoff with jitter: base * 2**(attempt-1), capped, scaled by a random 0.5–1.0."""
    base = options.initial_backoff.total_seconds() * (2 ** max(attempt - 1, 0))
    capped = min(base, options.max_backoff.total_seconds())
    return timedelta(seconds=capped * (0.5 + 0.5 * rnd()))


class Notifiers:
    """The channel and user notifiers of one config; resolves ``channel:NAME`` / ``user:NAME`` targets."""

    def __init__(self, config: Config):
        self.by_target: dict[str, Any] = {}
        for ch in config.channels:
            cls = plugins.notifiers.get(ch.type)
            self.by_target[f"channel:{ch.name}"] = cls(ch)
        apprise_cls = plugins.notifiers.get("apprise")
        for u in config.users:
            if u.contacts:
                opts = apprise_cls.Options(name=u.name, type="apprise", urls=[c.url for c in u.contacts])
                self.by_target[f"user:{u.name}"] = apprise_cls(opts)

    def destinations(self, target: str) -> int:
        n = self.by_target.get(target)
        return len(n.destinations()) if n is not None else 0

    def describe(self, target: str, index: int) -> str:
        n = self.by_target.get(target)
        if n is None:
            return target
        dests = n.destinations()
        return dests[index] if index < len(dests) else target

    def secrets(self) -> list[str]:
        return [s for n in self.by_target.values() for s in n.secrets()]


class Deliverer:
    """The engine module that drains the outbox; ``draining`` stops new claims while in-flight ones finish."""

    name = "delivery"

    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        notifiers: Notifiers,
        options: DeliveryOptions,
        muter: Muter | None = None,
        time_intervals: Sequence[TimeIntervalOptions] = (),
    ):
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.notifiers = notifiers
        self.options = options
        self.muter = muter
        self.intervals = {t.name: list(t.time_intervals) for t in time_intervals}
        self.draining = False
        self._last_depth = 0.0

    def configure(
        self, notifiers: Notifiers, options: DeliveryOptions, time_intervals: Sequence[TimeIntervalOptions] = ()
    ) -> None:
        """Use a reloaded config's channels, delivery options and named time intervals."""
        self.notifiers, self.options = notifiers, options
        self.intervals = {t.name: list(t.time_intervals) for t in time_intervals}

    async def tick(self, now: datetime) -> bool:
        if self.draining:
            return False
        rows = await self.claim(now, self.options.concurrency)
        if rows:
            await asyncio.gather(*(self._deliver(r) for r in rows))
        if rows or time.monotonic() - self._last_depth > GAUGE_EVERY:
            await self.update_depth()
        return bool(rows)

    async def claim(self, now: datetime, limit: int) -> list[Outbox]:
        """Claim up to ``limit`` due rows (oldest first, one at a time per incident and destination)."""
        async with self.store.read() as s:  # most ticks find nothing due: look before taking the write lock
            due_now = (
                await s.exec(
                    select(Outbox.id)
                    .where(
                        sa.or_(
                            sa.and_(col(Outbox.state) == "pending", col(Outbox.next_attempt_at) <= now),
                            sa.and_(col(Outbox.state) == "sending", col(Outbox.lease_until) < now),
                        )
                    )
                    .limit(1)
                )
            ).first()
        if due_now is None:
            return []
        older = sa.orm.aliased(Outbox)
        due = sa.or_(
            sa.and_(col(Outbox.state) == "pending", col(Outbox.next_attempt_at) <= now),
            sa.and_(col(Outbox.state) == "sending", col(Outbox.lease_until) < now),
        )
        blocked = (
            sa.select(older.id)
            .where(
                older.incident_id == Outbox.incident_id,
                older.target == Outbox.target,
                older.dest_index == Outbox.dest_index,
                older.id < Outbox.id,
                older.state.in_(ACTIVE),
            )
            .exists()
        )
        claimed: list[Outbox] = []
        lease_until = now + self.options.lease
        async with self.store.session() as s:
            # A page queued before its incident was acknowledged (or resolved) is not worth sending any more: one
            # that was being sent at that moment (and failed, or whose sender died) is cancelled, not retried.
            # Pages queued after an ack (reassign, manual escalate) are delivered.
            stale = await s.exec(  # type: ignore[call-overload]
                sa.update(Outbox)
                .where(
                    col(Outbox.kind) == "trigger",
                    due,
                    sa.select(Incident.id)
                    .where(
                        col(Incident.id) == col(Outbox.incident_id),
                        sa.or_(
                            col(Incident.state) == "resolved",
                            sa.and_(
                                col(Incident.state) == "acknowledged",
                                col(Incident.acknowledged_at) >= col(Outbox.created_at),
                            ),
                        ),
                    )
                    .exists(),
                )
                .values(state="cancelled", lease_until=None, last_error="cancelled: incident acknowledged or resolved")
                .execution_options(synchronize_session=False)
            )
            if stale.rowcount:
                log.info("pages_cancelled", count=stale.rowcount, reason="incident acknowledged or resolved")
            # An acknowledge/resolve notice goes only where the incident's page arrived: not after a group_wait
            # that ended in a resolve, a muted page, or a page that failed for good.
            earlier = sa.orm.aliased(Outbox)
            unannounced = await s.exec(  # type: ignore[call-overload]
                sa.update(Outbox)
                .where(
                    col(Outbox.kind).in_(("acknowledge", "resolve")),
                    col(Outbox.incident_id).is_not(None),
                    due,
                    ~sa.select(earlier.id)
                    .where(
                        earlier.incident_id == Outbox.incident_id,
                        earlier.target == Outbox.target,
                        earlier.kind == "trigger",
                        earlier.state.in_(("sent", "pending", "sending")),
                    )
                    .exists(),
                )
                .values(state="cancelled", lease_until=None, last_error="cancelled: no page reached this target")
                .execution_options(synchronize_session=False)
            )
            if unannounced.rowcount:
                log.info("notices_cancelled", count=unannounced.rowcount, reason="no page reached the target")
            q = select(Outbox).where(due, ~blocked).order_by(col(Outbox.next_attempt_at), col(Outbox.id)).limit(limit)
            if not self.store.is_sqlite:
                q = q.with_for_update(skip_locked=True)
            candidates = (await s.exec(q)).all()
            for row in candidates:
                # Computed once: the ORM update below already synchronises ``row`` (its attempts are then n+1).
                attempts = row.attempts + 1
                res = await s.exec(  # type: ignore[call-overload]
                    sa.update(Outbox)
                    .where(
                        col(Outbox.id) == row.id,
                        col(Outbox.state) == row.state,
                        col(Outbox.attempts) == row.attempts,
                    )
                    .values(state="sending", lease_until=lease_until, attempts=attempts)
                )
                if res.rowcount == 1:
                    row.state, row.lease_until, row.attempts = "sending", lease_until, attempts
                    claimed.append(row)
        return claimed

    async def _deliver(self, row: Outbox) -> None:
        target = row.target
        if row.incident_id is not None and await self._held_or_muted(row):
            return
        notifier = self.notifiers.by_target.get(target)
        t0 = time.perf_counter()
        error: NotifyError | None = None
        if notifier is None:
            error = NotifyError(f"{target} is no longer configured", permanent=True)
        else:
            msg = plugins.Message(
                title=row.title, body=row.body, kind=row.kind, severity=row.severity, data=row.data or None
            )
            try:
                await notifier.send(row.dest_index, msg, self.options.timeout.total_seconds())
            except NotifyError as e:
                error = e
            except Exception as e:  # a notifier bug is a failed attempt, recorded and retried
                log.exception("notifier_crashed", target=target)
                error = NotifyError(f"{type(e).__name__}: {e}")
        elapsed = time.perf_counter() - t0
        channel = target
        self.metrics.delivery_seconds.labels(channel).observe(elapsed)
        await self._record(row, error)

    async def _held_or_muted(self, row: Outbox) -> bool:
        """Apply the route's time intervals and the silences/inhibitions to a claimed incident page: inside a
        mute interval (or outside the active ones) the page waits and is tried again a minute later; when every
        alert of the incident is silenced or inhibited the page is dropped as ``muted``. True when not sent now."""
        now = self.clock.now()
        async with self.store.read() as s:
            inc = await s.get(Incident, row.incident_id)
            if inc is None:
                return False
            grouping = inc.grouping or {}
            alerts = (await s.exec(select(Alert.labels, Alert.state).where(col(Alert.incident_id) == inc.id))).all()
        # The firing alerts decide; a notice about an incident with none firing goes by all of its alerts.
        labels = [dict(lbl) for lbl, st in alerts if st == "firing"] or [dict(lbl) for lbl, _ in alerts]
        window = muted_by_intervals(
            self.intervals,
            grouping.get("mute_time_intervals") or (),
            grouping.get("active_time_intervals") or (),
            now,
        )
        if window is not None:
            await self._hold(row, now, window)
            return True
        if self.muter is None or not labels:
            return False
        statuses = await self.muter.status(labels, now)
        if not statuses or not all(st.muted for st in statuses):
            return False
        silenced = sorted({i for st in statuses for i in st.silenced_by})
        inhibited = sorted({i for st in statuses for i in st.inhibited_by})
        why = "silenced by " + ", ".join(silenced) if silenced else "inhibited by " + ", ".join(inhibited)
        async with self.store.session() as s:
            res = await s.exec(  # type: ignore[call-overload]
                sa.update(Outbox)
                .where(col(Outbox.id) == row.id, col(Outbox.state) == "sending", col(Outbox.attempts) == row.attempts)
                .values(state="muted", lease_until=None, last_error=f"muted: {why}"[:2000])
            )
            if res.rowcount != 1:
                return True
            s.add(
                IncidentEvent(
                    incident_id=row.incident_id,  # type: ignore[arg-type]
                    at=now,
                    kind="notify_muted",
                    actor="fsincident",
                    note=why,
                    data={
                        "target": row.target,
                        "notification": row.kind,
                        "silenced_by": silenced,
                        "inhibited_by": inhibited,
                        "outbox_id": row.id,
                    },
                )
            )
        self.metrics.deliveries.labels(row.target, "muted").inc()
        log.info("delivery_muted", incident_id=row.incident_id, target=row.target, reason=why)
        return True

    async def _hold(self, row: Outbox, now: datetime, window: str) -> None:
        """Put a page back for a minute (not counted as an attempt) while a time interval holds its route; the
        timeline says so once."""
        first = not (row.last_error or "").startswith("held:")
        async with self.store.session() as s:
            res = await s.exec(  # type: ignore[call-overload]
                sa.update(Outbox)
                .where(col(Outbox.id) == row.id, col(Outbox.state) == "sending", col(Outbox.attempts) == row.attempts)
                .values(
                    state="pending",
                    lease_until=None,
                    attempts=row.attempts - 1,
                    next_attempt_at=now + HOLD_RECHECK,
                    last_error=f"held: {window}"[:2000],
                )
            )
            if res.rowcount == 1 and first:
                s.add(
                    IncidentEvent(
                        incident_id=row.incident_id,  # type: ignore[arg-type]
                        at=now,
                        kind="notify_held",
                        actor="fsincident",
                        note=f"held by time interval {window}"
                        if window != OUTSIDE_ACTIVE
                        else "held: outside the route's active_time_intervals",
                        data={"target": row.target, "notification": row.kind, "time_interval": window},
                    )
                )
        if first:
            log.info("delivery_held", incident_id=row.incident_id, target=row.target, time_interval=window)

    async def _record(self, row: Outbox, error: NotifyError | None) -> None:
        now = self.clock.now()
        dest = self.notifiers.describe(row.target, row.dest_index)
        if error is None:
            values: dict[str, Any] = {"state": "sent", "sent_at": now, "lease_until": None, "last_error": None}
            result, kind = "sent", "notify_sent"
        elif error.permanent or row.attempts >= self.options.max_attempts:
            values = {"state": "failed", "lease_until": None, "last_error": str(error)[:2000]}
            result, kind = "failed", "notify_failed"
        else:
            delay = backoff(row.attempts, self.options)
            values = {
                "state": "pending",
                "lease_until": None,
                "last_error": str(error)[:2000],
                "next_attempt_at": now + delay,
            }
            result, kind = "retry", "notify_retry"
        async with self.store.session() as s:
            res = await s.exec(  # type: ignore[call-overload]
                sa.update(Outbox)
                .where(col(Outbox.id) == row.id, col(Outbox.state) == "sending", col(Outbox.attempts) == row.attempts)
                .values(**values)
            )
            if res.rowcount != 1:
                return  # our lease was taken over; the new owner records the outcome
            if row.incident_id is not None:
                s.add(
                    IncidentEvent(
                        incident_id=row.incident_id,
                        at=now,
                        kind=kind,
                        actor="fsincident",
                        note=str(error) if error else None,
                        data={
                            "target": row.target,
                            "destination": dest,
                            "notification": row.kind,
                            "attempt": row.attempts,
                            "outbox_id": row.id,
                        },
                    )
                )
        self.metrics.deliveries.labels(row.target, result).inc()
        logf = log.info if error is None else log.warning
        logf(
            "delivery_" + result,
            incident_id=row.incident_id,
            target=row.target,
            channel=dest,
            attempt=row.attempts,
            notification=row.kind,
            error=str(error) if error else None,
        )

    async def update_depth(self) -> None:
        self._last_depth = time.monotonic()
        async with self.store.read() as s:
            rows = (
                await s.exec(
                    select(Outbox.state, sa.func.count()).where(col(Outbox.state).in_(ACTIVE)).group_by(Outbox.state)
                )
            ).all()
        counts = {"pending": 0, "sending": 0}
        counts.update({st: n for st, n in rows})
        for st, n in counts.items():
            self.metrics.outbox_depth.labels(st).set(n)

    async def sleep_hint(self, now: datetime) -> float | None:
        """Seconds until the earliest pending row is due, so a short backoff is not rounded up to the idle poll."""
        if self.draining:
            return None
        async with self.store.read() as s:
            v = (await s.exec(select(sa.func.min(Outbox.next_attempt_at)).where(col(Outbox.state) == "pending"))).one()
        due = ensure_utc(v)
        return None if due is None else (due - now).total_seconds()
