"""The delivery pipeline: each claimed outbox row runs through dedup → mute → rate-limit → render → send → record.

Every stage has one signature, ``async def __call__(d: Delivery) -> Delivery | None``: it hands the delivery on,
or stops it (None) after recording why. Recording is one transaction that moves the claimed row on (a
compare-and-set on its state and attempt number, so a replica that lost its lease records nothing), writes one
``notification_attempt`` row (the notification log) and, for incident rows, the timeline events.

Outcomes: ``sent``; ``retry`` (backoff with jitter, within the target's budget); ``failed`` (a dead letter:
permanent error, last attempt, or still failing ``retry_for`` after queueing; a copy goes to the fallback
target); ``muted``/``held`` (silences, time intervals); ``bundled`` (over a rate limit, into a digest);
``superseded`` (the same page already went out, or a newer one for the same destination is due);
``cancelled`` (a digest with nothing left to carry).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from fsincident import plugins
from fsincident.core import NotifyError, ensure_utc
from fsincident.notify.ratelimit import (
    MAX_DIGEST_ITEMS,
    Key,
    backoff,
    digest_delay,
    digest_item,
    digest_text,
    high_urgency,
    over_limit,
    verdict,
)
from fsincident.obs import get_logger
from fsincident.sandbox import no_mentions
from fsincident.store.tables import Alert, Incident, IncidentEvent, NotificationAttempt, Outbox
from fsincident.timeintervals import OUTSIDE_ACTIVE, muted_by_intervals

if TYPE_CHECKING:
    from fsincident.notify.outbox import Deliverer

log = get_logger("fsincident.notify")

HOLD_RECHECK = timedelta(minutes=1)  # how often a page held by a time interval looks again
SEND_GRACE = 2.0  # seconds past the delivery timeout before a hanging notifier is given up on
RATE_RECHECK = timedelta(seconds=1)  # a raw destination over its limit only by sends in flight looks again
ACTOR = "fsincident"
REPORT_KINDS = frozenset({"report", "handoff_summary"})
"""Outbox kinds rendered from ``data`` by the report templates, with the PNG charts of ``data`` attached."""


@dataclass(eq=False)
class Delivery:
    """One claimed outbox row on its way through the stages."""

    row: Outbox
    notifier: Any
    destination: str  # redacted
    started_at: datetime
    t0: float = field(default_factory=time.perf_counter)
    message: plugins.Message | None = None
    error: NotifyError | None = None
    items: list[Outbox] = field(default_factory=list)  # the bundled rows a digest carries
    reserved: Key | None = None  # counted against the destination's rate limit until recorded

    @property
    def key(self) -> Key:
        return (self.row.target, self.row.dest_index)


class Stage(Protocol):
    async def __call__(self, d: Delivery) -> Delivery | None: ...


class LeaseLost(Exception):
    """The claimed row was taken over (its lease expired): the new owner records the outcome."""


def style_of(notifier: Any, index: int) -> str:
    """The template style of a destination (``style(index)`` of the notifier, else ``text``); never fails."""
    fn = getattr(notifier, "style", None)
    if not callable(fn):
        return "text"
    try:
        return str(fn(index) or "text")
    except Exception:
        return "text"


def takes_digests(notifier: Any, index: int) -> bool:
    """True when a destination can be sent a digest: its notifier declares a template style other than ``raw``
    (webhooks and notifiers without ``style`` get machine payloads, so over a rate limit their pages wait)."""
    return callable(getattr(notifier, "style", None)) and style_of(notifier, index) != "raw"


def _event(row: Outbox, now: datetime, kind: str, note: str | None, data: dict[str, Any]) -> IncidentEvent:
    return IncidentEvent(
        incident_id=row.incident_id,  # type: ignore[arg-type]
        at=now,
        kind=kind,
        actor=ACTOR,
        note=note[:4000] if note else None,
        data=data,
    )


class Recorder:
    """Writes the outcome of a delivery: the row's new state, the notification log row and timeline events."""

    def __init__(self, ctx: Deliverer):
        self.ctx = ctx

    def attempt(self, d: Delivery, result: str, error: str | None, now: datetime) -> NotificationAttempt:
        row = d.row
        return NotificationAttempt(
            outbox_id=row.id,  # type: ignore[arg-type]
            incident_id=row.incident_id,
            target=row.target,
            dest_index=row.dest_index,
            destination=d.destination[:1000],
            kind=row.kind,
            attempt=row.attempts,
            replica=self.ctx.replica[:200],
            started_at=d.started_at,
            finished_at=now,
            duration_ms=round((time.perf_counter() - d.t0) * 1000.0, 3),
            result=result,
            error=error[:2000] if error else None,
        )

    async def cas(self, s: AsyncSession, row: Outbox, values: Mapping[str, Any]) -> None:
        """Move the claimed row on; raises LeaseLost when another replica took it over."""
        res = await s.exec(  # type: ignore[call-overload]
            sa.update(Outbox)
            .where(col(Outbox.id) == row.id, col(Outbox.state) == "sending", col(Outbox.attempts) == row.attempts)
            .values(lease_until=None, **values)
        )
        if res.rowcount != 1:
            raise LeaseLost

    async def conclude(
        self,
        d: Delivery,
        result: str,
        values: Mapping[str, Any],
        *,
        error: str | None = None,
        events: Sequence[tuple[str, str | None, dict[str, Any]]] = (),
        log_attempt: bool = True,
        extra: Callable[[AsyncSession, datetime], Awaitable[None]] | None = None,
    ) -> bool:
        """Record ``result`` in one transaction; False (and nothing written) when the lease was lost."""
        now = self.ctx.clock.now()
        try:
            async with self.ctx.store.session() as s:
                await self.cas(s, d.row, values)
                if log_attempt:
                    s.add(self.attempt(d, result, error, now))
                if d.row.incident_id is not None:
                    for kind, note, data in events:
                        s.add(_event(d.row, now, kind, note, data))
                if extra is not None:
                    await extra(s, now)
        except LeaseLost:
            log.info("delivery_lease_lost", outbox_id=d.row.id, target=d.row.target, attempt=d.row.attempts)
            return False
        self.ctx.metrics.deliveries.labels(d.row.target, result).inc()
        return True


# ---------------------------------------------------------------------- stages


class Dedup:
    """Drops a page that already went out (same incident, target, destination, kind and event) or that a newer,
    already due page for the same incident, target, destination and kind supersedes."""

    def __init__(self, ctx: Deliverer, rec: Recorder):
        self.ctx, self.rec = ctx, rec

    async def __call__(self, d: Delivery) -> Delivery | None:
        row = d.row
        if row.incident_id is None or row.kind == "digest":
            return d
        same = (
            col(Outbox.incident_id) == row.incident_id,
            col(Outbox.target) == row.target,
            col(Outbox.dest_index) == row.dest_index,
            col(Outbox.kind) == row.kind,
            col(Outbox.id) != row.id,
        )
        why = None
        async with self.ctx.store.read() as s:
            if row.event_id is not None:
                dup = (
                    await s.exec(
                        select(Outbox.id)
                        .where(*same, col(Outbox.event_id) == row.event_id, col(Outbox.state) == "sent")
                        .limit(1)
                    )
                ).first()
                if dup is not None:
                    why = f"superseded: the same notification already went out (#{dup})"
            if why is None:
                newer = (
                    await s.exec(
                        select(Outbox.id)
                        .where(
                            *same,
                            col(Outbox.id) > row.id,
                            col(Outbox.state) == "pending",
                            col(Outbox.next_attempt_at) <= d.started_at,
                        )
                        .limit(1)
                    )
                ).first()
                if newer is not None:
                    why = f"superseded by the newer notification #{newer}"
        if why is None:
            return d
        values = {"state": "cancelled", "last_error": why, "attempts": row.attempts - 1}
        if await self.rec.conclude(d, "superseded", values, error=why):
            log.info("delivery_superseded", incident_id=row.incident_id, target=row.target, outbox_id=row.id)
        return None


class Mute:
    """The route's time intervals and the silences/inhibitions: inside a mute interval (or outside the active
    ones) a page waits and looks again a minute later; when every alert of the incident is silenced or inhibited
    the page is dropped as ``muted``. A page whose incident was acknowledged or resolved after it was claimed
    (the claim checked it an instant before) is cancelled here, before it is sent."""

    def __init__(self, ctx: Deliverer, rec: Recorder):
        self.ctx, self.rec = ctx, rec

    async def __call__(self, d: Delivery) -> Delivery | None:
        row = d.row
        if row.incident_id is None or row.kind == "digest":
            return d
        ctx = self.ctx
        now = ctx.clock.now()
        async with ctx.store.read() as s:
            inc = await s.get(Incident, row.incident_id)
            if inc is None:
                return d
            stale = row.kind == "trigger" and is_stale(inc, row)
            grouping = inc.grouping or {}
            alerts = (
                []
                if stale
                else (await s.exec(select(Alert.labels, Alert.state).where(col(Alert.incident_id) == inc.id))).all()
            )
        if stale:
            why = "cancelled: incident acknowledged or resolved"
            if await self.rec.conclude(d, "cancelled", {"state": "cancelled", "last_error": why}, error=why):
                log.info("delivery_cancelled", incident_id=row.incident_id, target=row.target, outbox_id=row.id)
            return None
        # The firing alerts decide; a notice about an incident with none firing goes by all of its alerts.
        labels = [dict(lbl) for lbl, st in alerts if st == "firing"] or [dict(lbl) for lbl, _ in alerts]
        window = muted_by_intervals(
            ctx.intervals,
            grouping.get("mute_time_intervals") or (),
            grouping.get("active_time_intervals") or (),
            now,
        )
        if window is not None:
            await self._hold(d, now, window)
            return None
        if ctx.muter is None or not labels:
            return d
        statuses = await ctx.muter.status(labels, now)
        if not statuses or not all(st.muted for st in statuses):
            return d
        silenced = sorted({i for st in statuses for i in st.silenced_by})
        inhibited = sorted({i for st in statuses for i in st.inhibited_by})
        why = "silenced by " + ", ".join(silenced) if silenced else "inhibited by " + ", ".join(inhibited)
        data = {
            "target": row.target,
            "notification": row.kind,
            "silenced_by": silenced,
            "inhibited_by": inhibited,
            "outbox_id": row.id,
        }
        values = {"state": "muted", "last_error": f"muted: {why}"[:2000]}
        if await self.rec.conclude(d, "muted", values, error=why, events=[("notify_muted", why, data)]):
            log.info("delivery_muted", incident_id=row.incident_id, target=row.target, reason=why)
        return None

    async def _hold(self, d: Delivery, now: datetime, window: str) -> None:
        """Put a page back for a minute (not counted as an attempt); the timeline and the log say so once."""
        row = d.row
        first = not (row.last_error or "").startswith("held:")
        note = (
            f"held by time interval {window}"
            if window != OUTSIDE_ACTIVE
            else "held: outside the route's active_time_intervals"
        )
        values = {
            "state": "pending",
            "attempts": row.attempts - 1,
            "next_attempt_at": now + HOLD_RECHECK,
            "last_error": f"held: {window}"[:2000],
        }
        events = [("notify_held", note, {"target": row.target, "notification": row.kind, "time_interval": window})]
        ok = await self.rec.conclude(d, "held", values, error=note, events=events if first else (), log_attempt=first)
        if ok and first:
            log.info("delivery_held", incident_id=row.incident_id, target=row.target, time_interval=window)


class RateLimit:
    """At most ``max`` sends per ``per`` to each destination of a channel with ``rate_limit``: a critical page
    goes anyway; a low-urgency one joins the destination's pending digest (created ``digest`` ahead), or waits for
    room on a destination that takes no digests (see :func:`takes_digests`)."""

    def __init__(self, ctx: Deliverer, rec: Recorder):
        self.ctx, self.rec = ctx, rec
        # Destinations known to be full: (max, per) of the limit counted, and until when. Sends in the window only
        # leave it when the oldest of them turns ``per`` old, so until then a storm's pages need not count again.
        self._full: dict[Key, tuple[tuple[int, timedelta], datetime]] = {}

    async def _count(self, key: Key, limit: int, per: timedelta, now: datetime) -> tuple[int, datetime | None]:
        """Sends to destination ``key`` in the last ``per`` (from the notification log, every replica's), and when
        the oldest of them was recorded; raises on a database error."""
        full = self._full.get(key)
        if full is not None and full[0] == (limit, per) and now < full[1]:
            return limit, full[1] - per
        target, index = key
        async with self.ctx.store.read() as s:
            sent, oldest = (
                await s.exec(
                    select(sa.func.count(), sa.func.min(NotificationAttempt.finished_at)).where(
                        col(NotificationAttempt.target) == target,
                        col(NotificationAttempt.dest_index) == index,
                        col(NotificationAttempt.result) == "sent",
                        col(NotificationAttempt.finished_at) > now - per,
                    )
                )
            ).one()
        oldest = ensure_utc(oldest)
        if sent >= limit and oldest is not None:
            if len(self._full) > 10_000:
                self._full.clear()
            self._full[key] = ((limit, per), oldest + per)
        return sent, oldest

    async def __call__(self, d: Delivery) -> Delivery | None:
        row = d.row
        ctx = self.ctx
        rl = ctx.channel_option(row.target, "rate_limit")
        if rl is None or row.kind == "digest" or row.kind in REPORT_KINDS or d.notifier is None:
            return d  # a scheduled report is never bundled into a digest (it would lose its charts)
        key = d.key
        if high_urgency(row.severity):  # never delayed, never bundled: no need to count (nor to wait for the lock)
            ctx.reservations.reserve(key)
            d.reserved = key
            return d
        now = ctx.clock.now()
        async with ctx.reservations.lock(key):
            # Sends in flight first, then the log: a send recorded (and released) while the count runs is then
            # counted twice at worst, never missed (its row may be newer than the count's snapshot).
            in_flight = ctx.reservations.count(key)
            sent, oldest = await self._count(key, rl.max, rl.per, now)
            if not over_limit(sent, in_flight, rl.max):
                ctx.reservations.reserve(key)
                d.reserved = key
                return d
            if not takes_digests(d.notifier, row.dest_index):
                at = max(oldest + rl.per, now + RATE_RECHECK) if oldest is not None else now + RATE_RECHECK
                await self._wait(d, at, rl.max, rl.per)
                return None
            await self._bundle(d, now, digest_delay(rl.per, rl.digest), rl.max, rl.per)
        return None

    async def _wait(self, d: Delivery, at: datetime, limit: int, per: timedelta) -> None:
        row = d.row
        first = not (row.last_error or "").startswith("rate limited:")
        why = f"rate limited: {limit} per {per}; waits until {at.isoformat()}"
        values = {"state": "pending", "attempts": row.attempts - 1, "next_attempt_at": at, "last_error": why}
        await self.rec.conclude(d, "held", values, error=why, log_attempt=first)

    async def _bundle(self, d: Delivery, now: datetime, delay: timedelta, limit: int, per: timedelta) -> None:
        row = d.row
        ctx = self.ctx
        try:
            async with ctx.store.session() as s:
                q = (
                    select(Outbox.id)
                    .where(
                        col(Outbox.target) == row.target,
                        col(Outbox.dest_index) == row.dest_index,
                        col(Outbox.kind) == "digest",
                        col(Outbox.state) == "pending",
                        col(Outbox.fallback_for).is_(None),
                    )
                    .order_by(col(Outbox.id))
                    .limit(1)
                )
                if not ctx.store.is_sqlite:
                    # Locked until this page is bundled into it: a replica claiming the digest meanwhile skips it
                    # (SKIP LOCKED), and one that claimed it first makes this select find no pending digest (a new
                    # one is made). Unlocked, the page could join a digest already rendered and be stranded.
                    q = q.with_for_update()
                digest_id = (await s.exec(q)).first()
                due = now + delay
                if digest_id is None:
                    digest = Outbox(
                        incident_id=None,
                        target=row.target,
                        dest_index=row.dest_index,
                        kind="digest",
                        severity="info",
                        title="digest",
                        body="",
                        state="pending",
                        next_attempt_at=due,
                        created_at=now,
                        data={"rate_limit": {"max": limit, "per": per.total_seconds()}},
                    )
                    s.add(digest)
                    await s.flush()
                    digest_id = digest.id
                else:
                    due = ensure_utc(
                        (await s.exec(select(Outbox.next_attempt_at).where(col(Outbox.id) == digest_id))).one()
                    )
                why = f"bundled into digest #{digest_id} (rate limit {limit} per {per})"
                await self.rec.cas(
                    s,
                    row,
                    {"state": "bundled", "digest_id": digest_id, "attempts": row.attempts - 1, "last_error": why},
                )
                s.add(self.rec.attempt(d, "bundled", why, now))
                if row.incident_id is not None:
                    data = {
                        "target": row.target,
                        "destination": d.destination,
                        "notification": row.kind,
                        "outbox_id": row.id,
                        "digest_id": digest_id,
                        "due": due.isoformat() if due else None,
                    }
                    s.add(_event(row, now, "notify_bundled", why, data))
        except LeaseLost:
            return
        ctx.metrics.deliveries.labels(row.target, "bundled").inc()
        ctx.metrics.bundled.labels(row.target).inc()
        log.info("delivery_bundled", incident_id=row.incident_id, target=row.target, digest_id=digest_id)


class Render:
    """Builds the message for the destination's style: the renderer's page (with signed ack/resolve links in
    trigger pages when a link signer is configured), else the stored title and body; a digest lists the rows
    still bundled into it (cancelling those whose incident was acknowledged or resolved since)."""

    def __init__(self, ctx: Deliverer, rec: Recorder):
        self.ctx, self.rec = ctx, rec

    async def __call__(self, d: Delivery) -> Delivery | None:
        row = d.row
        if d.notifier is None:
            return d  # the send stage records that the target is gone
        style = style_of(d.notifier, row.dest_index)
        if row.kind == "digest":
            return await self._digest(d, style)
        if row.kind in REPORT_KINDS:
            return self._report(d, style)
        links = self._links(row, d.started_at)
        rendered = None
        renderer = self.ctx.renderer
        data = row.data or {}
        if renderer is not None and style != "raw" and data.get("incident"):
            try:
                rendered = renderer.page(style, row.kind, data, links, row.target)
            except Exception as e:  # a page is never lost to a renderer bug: the stored text goes
                log.warning("render_failed", outbox_id=row.id, error=str(e)[:300])
        if rendered is not None:
            title, body, fmt = rendered.title, rendered.body, rendered.format
        else:
            title, body, fmt = row.title, row.body, "text"
            extra = [
                f"{label}: {links[k]}" for k, label in (("ack", "Acknowledge"), ("resolve", "Resolve")) if k in links
            ]
            if extra:
                body = body + "\n\n" + "\n".join(extra)
        fb = data.get("fallback") if isinstance(data.get("fallback"), Mapping) else None
        if row.fallback_for is not None and fb:
            body = _prepend(
                fmt,
                f"Could not be delivered to {fb.get('target')} ({fb.get('error') or 'failed'}); sent here instead.",
                body,
            )
        d.message = plugins.Message(
            title=title,
            body=body,
            kind=row.kind,
            severity=row.severity,
            data=row.data or None,
            format=fmt,
            links=links or None,
        )
        return d

    def _report(self, d: Delivery, style: str) -> Delivery:
        """A scheduled report or shift summary: the renderer's HTML (e-mail) or text (elsewhere) from the row's
        ``data``, else the stored text; the row's PNG charts go along as attachments."""
        row = d.row
        data = row.data or {}
        rendered = None
        renderer = self.ctx.renderer
        if renderer is not None and hasattr(renderer, "report"):
            try:
                rendered = renderer.report(style, row.kind, data, row.target)
            except Exception as e:  # a report is never lost to a renderer bug: the stored text goes
                log.warning("render_failed", outbox_id=row.id, error=str(e)[:300])
        if rendered is not None:
            title, body, fmt = rendered.title, rendered.body, rendered.format
        else:
            title, body, fmt = row.title, row.body, "text"
            if style == "chat":  # the stored text lists incident titles too: no channel-wide pings
                title, body = no_mentions(title), no_mentions(body)
        d.message = plugins.Message(
            title=title,
            body=body,
            kind=row.kind,
            severity=row.severity,
            data={k: v for k, v in data.items() if k != "charts"} or None,
            format=fmt,
            attachments=attachments_of(data),
        )
        return d

    def _links(self, row: Outbox, now: datetime) -> dict[str, str]:
        ctx = self.ctx
        if row.incident_id is None:
            return {}
        links: dict[str, str] = {}
        if ctx.signer is not None and row.kind == "trigger":
            try:
                links.update(ctx.signer.links(ctx.link_base, row.incident_id, row.target, now))
            except Exception as e:  # the page goes without links rather than not at all
                log.warning("link_signing_failed", outbox_id=row.id, error=type(e).__name__)
        if links:
            links["incident"] = f"{ctx.link_base.rstrip('/')}/api/v1/incidents/{row.incident_id}"
        return links

    async def _digest(self, d: Delivery, style: str) -> Delivery | None:
        row = d.row
        ctx = self.ctx
        snapshot = (row.data or {}).get("items")
        if isinstance(snapshot, list):  # a dead digest's copy to the fallback carries its items
            items = [dict(i) for i in snapshot]
        else:
            d.items = await self._gather(row)
            items = [digest_item(r) for r in d.items]
        if not items:
            why = "cancelled: nothing left in the digest"

            async def release(s: AsyncSession, at: datetime) -> None:  # a page never stays in a dropped digest
                await requeue_bundled(s, row.id, [], at)  # type: ignore[arg-type]

            await self.rec.conclude(d, "cancelled", {"state": "cancelled", "last_error": why}, error=why, extra=release)
            return None
        rendered = None
        if ctx.renderer is not None and hasattr(ctx.renderer, "digest"):
            try:
                rendered = ctx.renderer.digest(style, items, row.target)
            except Exception as e:
                log.warning("render_failed", outbox_id=row.id, error=str(e)[:300])
        if rendered is not None:
            title, body, fmt = rendered.title, rendered.body, rendered.format
        else:
            title, body = digest_text(items)
            fmt = "text"
        severity = "critical" if any(high_urgency(i.get("severity")) for i in items) else "warning"
        d.message = plugins.Message(
            title=title,
            body=body,
            kind="digest",
            severity=severity,
            data={"items": items[:MAX_DIGEST_ITEMS], "count": len(items)},
            format=fmt,
        )
        return d

    async def _gather(self, row: Outbox) -> list[Outbox]:
        """The rows still bundled into digest ``row``, oldest first; bundled pages whose incident was
        acknowledged or resolved since they were queued are cancelled here."""
        async with self.ctx.store.session() as s:
            await s.exec(  # type: ignore[call-overload]
                sa.update(Outbox)
                .where(
                    col(Outbox.digest_id) == row.id,
                    col(Outbox.state) == "bundled",
                    col(Outbox.kind) == "trigger",
                    stale_page(),
                )
                .values(state="cancelled", last_error="cancelled: incident acknowledged or resolved")
                .execution_options(synchronize_session=False)
            )
            rows = (
                await s.exec(
                    select(Outbox)
                    .where(col(Outbox.digest_id) == row.id, col(Outbox.state) == "bundled")
                    .order_by(col(Outbox.id))
                )
            ).all()
        return list(rows)


def attachments_of(data: Mapping[str, Any]) -> tuple[plugins.Attachment, ...]:
    """The PNG charts of a report row's ``data`` (``charts: [{"name", "png_base64"}]``) as attachments; a chart that
    does not decode is left out (never fails)."""
    out = []
    charts = data.get("charts") if isinstance(data, Mapping) else None
    for i, c in enumerate(charts if isinstance(charts, list) else ()):
        try:
            content = base64.b64decode(str(c["png_base64"]), validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            continue
        name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in str(c.get("name") or f"chart-{i + 1}"))
        out.append(plugins.Attachment(name=f"{name[:80] or f'chart-{i + 1}'}.png", content=content))
    return tuple(out)


def is_stale(inc: Incident, row: Outbox) -> bool:
    """True when incident ``inc`` was resolved, or acknowledged after outbox ``row`` was queued (as
    :func:`stale_page` says in SQL); never fails."""
    if inc.state == "resolved":
        return True
    acked, queued = ensure_utc(inc.acknowledged_at), ensure_utc(row.created_at)
    return inc.state == "acknowledged" and acked is not None and queued is not None and acked >= queued


async def requeue_bundled(s: AsyncSession, digest_id: int, carried: Sequence[Any], now: datetime) -> None:
    """Rows still bundled into digest ``digest_id`` that it did not carry (``carried`` ids) go back to the queue
    (and through the rate limit again): a bundled page always ends up sent, cancelled or dead."""
    await s.exec(  # type: ignore[call-overload]
        sa.update(Outbox)
        .where(
            col(Outbox.digest_id) == digest_id,
            col(Outbox.state) == "bundled",
            col(Outbox.id).not_in(list(carried)),
        )
        .values(state="pending", digest_id=None, next_attempt_at=now, last_error=None)
        .execution_options(synchronize_session=False)
    )


def stale_page(row: Any = Outbox) -> Any:
    """SQL: the incident of outbox row ``row`` (the table, or an alias of it) was resolved, or acknowledged after
    the row was queued."""
    return (
        sa.select(Incident.id)
        .where(
            col(Incident.id) == row.incident_id,
            sa.or_(
                col(Incident.state) == "resolved",
                sa.and_(
                    col(Incident.state) == "acknowledged",
                    col(Incident.acknowledged_at) >= row.created_at,
                ),
            ),
        )
        .exists()
    )


def _prepend(fmt: str, note: str, body: str) -> str:
    if fmt == "html":
        import html

        return f"<p><strong>{html.escape(note)}</strong></p>\n{body}"
    if fmt == "markdown":
        return f"**{note}**\n\n{body}"
    return f"{note}\n\n{body}"


class Send:
    """Hands the message to the notifier, bounded by the delivery timeout (plus a little grace)."""

    def __init__(self, ctx: Deliverer):
        self.ctx = ctx

    async def __call__(self, d: Delivery) -> Delivery | None:
        row = d.row
        timeout = self.ctx.options.timeout.total_seconds()
        t0 = time.perf_counter()
        if d.notifier is None:
            d.error = NotifyError(f"{row.target} is no longer configured", permanent=True)
        elif d.message is None:
            d.error = NotifyError("nothing to send", permanent=True)
        else:
            try:
                await asyncio.wait_for(d.notifier.send(row.dest_index, d.message, timeout), timeout + SEND_GRACE)
            except NotifyError as e:
                d.error = e
            except TimeoutError:
                d.error = NotifyError(f"timed out after {timeout:g}s")
            except Exception as e:  # a notifier bug is a failed attempt, recorded and retried
                log.exception("notifier_crashed", target=row.target)
                d.error = NotifyError(f"{type(e).__name__}: {e}")
        self.ctx.metrics.delivery_seconds.labels(row.target).observe(time.perf_counter() - t0)
        return d


class Record:
    """The outcome of a send: sent, a retry within the target's budget, or a dead letter with a copy to the
    fallback target; a digest settles the rows it carried."""

    def __init__(self, ctx: Deliverer, rec: Recorder):
        self.ctx, self.rec = ctx, rec

    async def __call__(self, d: Delivery) -> Delivery | None:
        ctx = self.ctx
        row = d.row
        now = ctx.clock.now()
        delay = backoff(row.attempts, ctx.options)
        v = verdict(d.error, row.attempts, ensure_utc(row.created_at), now, ctx.budget(row.target), delay)  # type: ignore[arg-type]
        err = ctx.scrub(str(d.error))[:2000] if d.error is not None else None
        base = {
            "target": row.target,
            "destination": d.destination,
            "notification": row.kind,
            "attempt": row.attempts,
            "outbox_id": row.id,
        }
        events: list[tuple[str, str | None, dict[str, Any]]] = []
        if v.result == "sent":
            values: dict[str, Any] = {"state": "sent", "sent_at": now, "last_error": None}
            events.append(("notify_sent", None, base))
        elif v.result == "retry":
            values = {"state": "pending", "last_error": err, "next_attempt_at": v.next_at}
            events.append(("notify_retry", err, base))
        else:
            values = {"state": "failed", "last_error": err}
            events.append(("notify_failed", err, base))
        fallback = ctx.fallback_target(row) if v.result == "failed" else None
        copies: list[int] = []

        async def extra(s: AsyncSession, at: datetime) -> None:
            items = await self._settle(s, d, v.result, err, at) if row.kind == "digest" else []
            if v.result != "failed":
                return
            if fallback is not None:
                copies.extend(await self._fallback(s, d, fallback, err, items, at))
            went = fallback if copies else None
            note = f"dead letter: {v.reason}: {err}" + (f"; a copy goes to {went}" if went else "")
            if row.incident_id is not None:
                s.add(_event(row, at, "notify_dead", note, {**base, "reason": v.reason, "fallback": went}))
                if went:
                    data = {"target": went, "from": row.target, "notification": row.kind, "outbox_id": row.id}
                    s.add(
                        _event(
                            row,
                            at,
                            "notify_fallback",
                            f"undeliverable to {row.target}: sent to {went} instead",
                            {**data, "copies": list(copies)},
                        )
                    )

        if not await self.rec.conclude(d, v.result, values, error=err, events=events, extra=extra):
            return None
        if v.result == "failed":
            ctx.metrics.dead_letters.labels(row.target).inc()
        if v.result == "sent" and row.kind == "digest":
            ctx.metrics.digests.labels(row.target).inc()
        logf = log.info if d.error is None else log.warning
        logf(
            "delivery_" + v.result,
            incident_id=row.incident_id,
            target=row.target,
            channel=d.destination,
            attempt=row.attempts,
            notification=row.kind,
            error=err,
            reason=v.reason,
            fallback=fallback if copies else None,
        )
        return d

    async def _settle(self, s: AsyncSession, d: Delivery, result: str, err: str | None, now: datetime) -> list[Outbox]:
        """The rows a digest carried follow its outcome (returned): sent with it, or dead with it (then every row
        still bundled into it); rows bundled into a sent digest after it was rendered go back to the queue (and
        through the rate limit again)."""
        row = d.row
        if result == "retry":
            return []
        items = list(d.items)
        if result == "failed":
            values: dict[str, Any] = {"state": "failed", "last_error": f"the digest #{row.id} failed: {err}"[:2000]}
            items = list(
                (
                    await s.exec(
                        select(Outbox)
                        .where(col(Outbox.digest_id) == row.id, col(Outbox.state) == "bundled")
                        .order_by(col(Outbox.id))
                    )
                ).all()
            )
        else:
            values = {"state": "sent", "sent_at": now, "last_error": None}
        ids = [r.id for r in items]
        if ids and not self.ctx.store.is_sqlite:
            # The incidents first (in id order), as the timeline rows below will: an acknowledgement holding one
            # of them while it cancels a bundled page (which this transaction would hold) must not deadlock.
            incidents = sorted({r.incident_id for r in items if r.incident_id is not None})
            if incidents:
                await s.exec(
                    select(Incident.id)
                    .where(col(Incident.id).in_(incidents))
                    .order_by(col(Incident.id))
                    .with_for_update(key_share=True)
                )
        settled: set[int] = set()
        if ids:
            res = await s.exec(  # type: ignore[call-overload]
                sa.update(Outbox)
                .where(col(Outbox.id).in_(ids), col(Outbox.state) == "bundled", col(Outbox.digest_id) == row.id)
                .values(**values)
                .returning(Outbox.id)
                .execution_options(synchronize_session=False)
            )
            settled = {i for (i,) in res.all()}
        if result == "sent":
            await requeue_bundled(s, row.id, ids, now)  # type: ignore[arg-type]
        # Only the pages this digest settled: one cancelled meanwhile (its incident acknowledged) stays cancelled.
        items = [r for r in items if r.id in settled]
        kind = "notify_sent" if result == "sent" else "notify_dead"
        note = None if result == "sent" else f"dead letter: the digest #{row.id} failed: {err}"
        for item in items:
            if item.incident_id is None:
                continue
            data = {
                "target": row.target,
                "destination": d.destination,
                "notification": item.kind,
                "attempt": row.attempts,
                "outbox_id": item.id,
                "digest_id": row.id,
            }
            s.add(_event(item, now, kind, note, data))
        return items

    async def _fallback(
        self, s: AsyncSession, d: Delivery, target: str, err: str | None, items: list[Outbox], now: datetime
    ) -> list[int]:
        """Queue a copy of dead letter ``d.row`` to each destination of ``target``; the ids of the copies."""
        row = d.row
        notifier = self.ctx.notifiers.by_target.get(target)
        n = len(notifier.destinations()) if notifier is not None else 0
        if n == 0:
            return []
        if row.incident_id is not None and row.kind == "trigger":
            stale = (await s.exec(select(Outbox.id).where(col(Outbox.id) == row.id, stale_page()))).first()
            if stale is not None:
                return []  # acknowledged or resolved meanwhile: nobody needs the page any more
        info = {"target": row.target, "destination": d.destination, "error": err, "outbox_id": row.id}
        if row.kind == "digest":
            listed = [digest_item(r) for r in items] or list((row.data or {}).get("items") or [])
            if not listed:
                return []
            data: dict[str, Any] | None = {"items": listed, "fallback": info}
            body = row.body
        elif row.data:
            data = {**row.data, "fallback": info}
            body = row.body
        else:
            data = None
            body = f"Could not be delivered to {row.target} ({err}); sent here instead.\n\n{row.body}"
        copies = []
        for i in range(n):
            copy = Outbox(
                incident_id=row.incident_id,
                event_id=row.event_id,
                target=target,
                dest_index=i,
                kind=row.kind,
                severity=row.severity,
                title=row.title,
                body=body,
                state="pending",
                next_attempt_at=now,
                created_at=now,
                data=data,
                fallback_for=row.id,
            )
            s.add(copy)
            copies.append(copy)
        await s.flush()
        ids = [c.id for c in copies if c.id is not None]
        return ids


def stages(ctx: Deliverer) -> list[Stage]:
    """The pipeline of ``ctx`` in order: dedup, mute, rate-limit, render, send, record."""
    rec = Recorder(ctx)
    return [Dedup(ctx, rec), Mute(ctx, rec), RateLimit(ctx, rec), Render(ctx, rec), Send(ctx), Record(ctx, rec)]
