"""The delivery stage: claim outbox rows by compare-and-set, then run each through the pipeline
(:mod:`fsincident.notify.pipeline`: dedup, mute, rate-limit, render, send, record).

A row is ``pending`` until claimed; the claim (an UPDATE that must touch exactly one row) moves it
to ``sending`` with a lease and the name of the claiming replica. A crash after sending but before
recording leaves a ``sending`` row whose lease expires and which is sent again: a page may repeat, it
is never dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from fsincident import plugins
from fsincident.config import Config
from fsincident.config.model import DeliveryOptions, TimeIntervalOptions
from fsincident.core import Clock, Muter, NotifyError, ensure_utc
from fsincident.notify.pipeline import HOLD_RECHECK, Delivery, Stage, stages, stale_page
from fsincident.notify.ratelimit import Budget, Reservations, backoff
from fsincident.obs import Metrics, get_logger
from fsincident.store import Store
from fsincident.store.leader import replica_name
from fsincident.store.tables import Outbox

log = get_logger("fsincident.notify")

ACTIVE = ("pending", "sending")
DEPTH_STATES = ("pending", "sending", "bundled")
GAUGE_EVERY = 5.0  # seconds between outbox-depth refreshes while idle
GAUGE_BUSY = 1.0  # ... and while busy (a storm claims many batches a second: one count per batch would add up)
CLAIM_ROUNDS = 4  # claim transactions per tick when rows turned out stale (each cancelled row makes room)
STALE = "cancelled: incident acknowledged or resolved"
UNANNOUNCED = "cancelled: no page reached this target"

__all__ = ["ACTIVE", "HOLD_RECHECK", "Deliverer", "Notifiers", "backoff"]


def _due(now: datetime) -> Any:
    """SQL: the outbox row is due: pending and due, or sending with its lease expired (its sender died)."""
    return sa.or_(
        sa.and_(col(Outbox.state) == "pending", col(Outbox.next_attempt_at) <= now),
        sa.and_(col(Outbox.state) == "sending", col(Outbox.lease_until) < now),
    )


class Notifiers:
    """The channel and user notifiers of one config; resolves ``channel:NAME`` / ``user:NAME`` targets."""

    def __init__(self, config: Config):
        self.by_target: dict[str, Any] = {}
        self._secrets: list[str] | None = None
        self._described: dict[str, list[str] | None] = {}
        for ch in config.channels:
            cls = plugins.notifiers.get(ch.type)
            self.by_target[f"channel:{ch.name}"] = cls(ch)
        apprise_cls = plugins.notifiers.get("apprise")
        for u in config.users:
            if u.contacts:
                opts = apprise_cls.Options(name=u.name, type="apprise", urls=[c.url for c in u.contacts])
                self.by_target[f"user:{u.name}"] = apprise_cls(opts)

    def _destinations(self, target: str) -> list[str] | None:
        """The redacted destinations of ``target`` (None when unknown), computed once: redacting parses each URL,
        and every delivery names its destination."""
        if target not in self._described:
            n = self.by_target.get(target)
            self._described[target] = list(n.destinations()) if n is not None else None
        return self._described[target]

    def destinations(self, target: str) -> int:
        return len(self._destinations(target) or ())

    def describe(self, target: str, index: int) -> str:
        dests = self._destinations(target)
        if dests is None:
            return target
        return dests[index] if 0 <= index < len(dests) else target

    def secrets(self) -> list[str]:
        """Every secret of the channels' and users' URLs (computed once: it parses every URL, and the delivery
        stage scrubs each failed attempt's error with it); never fails."""
        if self._secrets is None:
            self._secrets = [s for n in self.by_target.values() for s in n.secrets()]
        return list(self._secrets)


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
        *,
        replica: str | None = None,
        renderer: Any = None,
        signer: Any = None,
        link_base: str = "",
    ):
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.notifiers = notifiers
        self.options = options
        self.muter = muter
        self.intervals = {t.name: list(t.time_intervals) for t in time_intervals}
        self.replica = replica or replica_name()
        self.renderer = renderer  # notify.render.Renderer: page(style, kind, data, links, recipient), digest(...)
        self.signer = signer  # notify.links.LinkSigner, or None: pages carry no ack/resolve links
        self.link_base = link_base
        self.reservations = Reservations()
        self.stages: list[Stage] = stages(self)
        self.draining = False
        self._last_depth = 0.0
        self._depth_stale = False  # rows moved since the gauge was last refreshed

    def configure(
        self,
        notifiers: Notifiers,
        options: DeliveryOptions,
        time_intervals: Sequence[TimeIntervalOptions] = (),
        *,
        renderer: Any = None,
        signer: Any = None,
        link_base: str | None = None,
    ) -> None:
        """Use a reloaded config's channels, delivery options, named time intervals, renderer and link signer
        (``renderer``/``signer`` None keep the current ones)."""
        self.notifiers, self.options = notifiers, options
        self.intervals = {t.name: list(t.time_intervals) for t in time_intervals}
        if renderer is not None:
            self.renderer = renderer
        if signer is not None:
            self.signer = signer
        if link_base is not None:
            self.link_base = link_base

    async def tick(self, now: datetime) -> bool:
        if self.draining:
            return False
        rows = await self.claim(now, self.options.concurrency)
        if rows:
            await asyncio.gather(*(self._deliver(r) for r in rows))
        since = time.monotonic() - self._last_depth
        if since > GAUGE_EVERY or (rows and since > GAUGE_BUSY) or (not rows and self._depth_stale):
            await self.update_depth()
        else:
            self._depth_stale = self._depth_stale or bool(rows)
        return bool(rows)

    async def claim(self, now: datetime, limit: int) -> list[Outbox]:
        """Claim up to ``limit`` due rows (oldest first, one at a time per incident and destination).

        A due page queued before its incident was acknowledged (or resolved) is not worth sending any more: one
        that was being sent at that moment (and failed, or whose sender died) is cancelled, not retried; pages
        queued after an ack (reassign, manual escalate) are delivered. An acknowledge/resolve notice goes only
        where the incident's page arrived (not after a group_wait that ended in a resolve, a muted page, or a
        page that failed for good); otherwise it is cancelled. Every write is a compare-and-set on a row this
        transaction selected (on PostgreSQL locked ``FOR UPDATE SKIP LOCKED``): replicas claiming at once never
        wait for each other's rows, so they can neither deadlock nor claim a row twice. Raises on a database
        error."""
        async with self.store.read() as s:  # most ticks find nothing due: look before taking the write lock
            due_now = (await s.exec(select(Outbox.id).where(_due(now)).limit(1))).first()
        if due_now is None:
            return []
        older = sa.orm.aliased(Outbox)
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
        earlier = sa.orm.aliased(Outbox)
        reached = (  # a page of the incident reached the target, or still may (one queued after an ack)
            sa.select(earlier.id)
            .where(
                earlier.incident_id == Outbox.incident_id,
                earlier.target == Outbox.target,
                earlier.kind == "trigger",
                sa.or_(
                    earlier.state == "sent",
                    sa.and_(earlier.state.in_(ACTIVE), ~stale_page(earlier)),
                ),
            )
            .exists()
        )
        claimed: list[Outbox] = []
        lease_until = now + self.options.lease
        cancelled = {STALE: 0, UNANNOUNCED: 0}
        for _ in range(CLAIM_ROUNDS):  # a cancelled row makes room (and may unblock a notice queued behind it)
            want = limit - len(claimed)
            if want <= 0:
                break
            dropped = 0
            async with self.store.session() as s:
                q = (
                    select(Outbox, stale_page().label("stale"), reached.label("reached"))
                    .where(_due(now), ~blocked)
                    .order_by(col(Outbox.next_attempt_at), col(Outbox.id))
                    .limit(want)
                )
                if not self.store.is_sqlite:
                    q = q.with_for_update(skip_locked=True, of=Outbox)  # type: ignore[arg-type]
                candidates = (await s.exec(q)).all()
                for row, stale, has_page in candidates:
                    why = None
                    if row.kind == "trigger" and stale:
                        why = STALE
                    elif row.kind in ("acknowledge", "resolve") and row.incident_id is not None and not has_page:
                        why = UNANNOUNCED
                    # Computed once: the ORM update below already synchronises ``row`` (its attempts are then n+1).
                    attempts = row.attempts + 1
                    values: dict[str, Any] = (
                        {"state": "cancelled", "lease_until": None, "last_error": why}
                        if why is not None
                        else {
                            "state": "sending",
                            "lease_until": lease_until,
                            "attempts": attempts,
                            "claimed_by": self.replica,
                        }
                    )
                    res = await s.exec(  # type: ignore[call-overload]
                        sa.update(Outbox)
                        .where(
                            col(Outbox.id) == row.id,
                            col(Outbox.state) == row.state,
                            col(Outbox.attempts) == row.attempts,
                        )
                        .values(**values)
                    )
                    if res.rowcount != 1:
                        continue
                    if why is not None:
                        cancelled[why] += 1
                        dropped += 1
                        continue
                    row.state, row.lease_until, row.attempts = "sending", lease_until, attempts
                    row.claimed_by = self.replica
                    claimed.append(row)
            if not dropped:
                break
        if cancelled[STALE]:
            log.info("pages_cancelled", count=cancelled[STALE], reason="incident acknowledged or resolved")
        if cancelled[UNANNOUNCED]:
            log.info("notices_cancelled", count=cancelled[UNANNOUNCED], reason="no page reached the target")
        return claimed

    async def _deliver(self, row: Outbox) -> None:
        """Run one claimed row through the stages; a stage that crashes leaves the row to its lease (retried)."""
        d = Delivery(
            row=row,
            notifier=self.notifiers.by_target.get(row.target),
            destination=self.notifiers.describe(row.target, row.dest_index),
            started_at=self.clock.now(),
        )
        try:
            cur: Delivery | None = d
            for stage in self.stages:
                cur = await stage(cur)
                if cur is None:
                    break
        except Exception as e:
            log.error("delivery_stage_failed", outbox_id=row.id, target=row.target, error=self.scrub(str(e))[:300])
        finally:
            if d.reserved is not None:
                self.reservations.release(d.reserved)

    async def _record(self, row: Outbox, error: NotifyError | None) -> None:
        """Record the outcome of a send of claimed ``row`` (the record stage alone)."""
        d = Delivery(
            row=row,
            notifier=self.notifiers.by_target.get(row.target),
            destination=self.notifiers.describe(row.target, row.dest_index),
            started_at=self.clock.now(),
            error=error,
        )
        await self.stages[-1](d)

    # ------------------------------------------------------------------ per-target options

    def channel_option(self, target: str, name: str) -> Any:
        """A channel's own delivery option (``max_attempts``, ``retry_for``, ``fallback``, ``rate_limit``), or None
        (users, unknown targets, unset)."""
        if not target.startswith("channel:"):
            return None
        opts = getattr(self.notifiers.by_target.get(target), "options", None)
        return getattr(opts, name, None)

    def budget(self, target: str) -> Budget:
        """The retry budget of ``target``: the channel's ``max_attempts``/``retry_for`` over ``delivery:``."""
        attempts = self.channel_option(target, "max_attempts") or self.options.max_attempts
        retry_for = self.channel_option(target, "retry_for") or self.options.retry_for
        return Budget(attempts, retry_for)

    def fallback_target(self, row: Outbox) -> str | None:
        """Where a copy of dead letter ``row`` goes: the channel's ``fallback`` or ``delivery.fallback``; None for
        a copy (never a fallback of a fallback), when that is the row's own target, or when it is not configured."""
        if row.fallback_for is not None:
            return None
        fb = self.channel_option(row.target, "fallback") or self.options.fallback
        if not fb or fb == row.target or fb not in self.notifiers.by_target:
            return None
        return str(fb)

    def scrub(self, text: str) -> str:
        """``text`` with every configured secret replaced by ``***``."""
        secrets = getattr(self.notifiers, "secrets", None)
        if callable(secrets):
            for sec in secrets():
                if sec and len(sec) >= 4:
                    text = text.replace(sec, "***")
        return text

    async def release_orphaned_leases(self, now: datetime) -> int:
        """Make rows left in ``sending`` due now (instead of when their lease runs out); only for a store no other
        process delivers from (SQLite, held by its lock file). Returns how many; raises on a database error."""
        async with self.store.session() as s:
            res = await s.exec(  # type: ignore[call-overload]
                sa.update(Outbox)
                .where(col(Outbox.state) == "sending", col(Outbox.lease_until) > now)
                .values(lease_until=now)
            )
        if res.rowcount:
            log.info("orphaned_leases_released", count=res.rowcount)
        return int(res.rowcount or 0)

    async def update_depth(self) -> None:
        self._last_depth, self._depth_stale = time.monotonic(), False
        async with self.store.read() as s:
            rows = (
                await s.exec(
                    select(Outbox.state, sa.func.count())
                    .where(col(Outbox.state).in_(DEPTH_STATES))
                    .group_by(Outbox.state)
                )
            ).all()
        counts = dict.fromkeys(DEPTH_STATES, 0)
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
