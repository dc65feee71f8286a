"""The incidents stage: turns alert transitions into incidents, timeline events and outbox rows.

Every change to an incident is written in one transaction together with its timeline events and
the outbox rows of the notifications it causes, so a crash loses no page and no acknowledgement.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from fsincident.core import (
    Clock,
    FsIncidentError,
    IncidentState,
    Routed,
    Severity,
    TransitionError,
    ensure_utc,
    format_duration,
    isoformat,
)
from fsincident.incidents import state as transitions
from fsincident.obs import Metrics, get_logger
from fsincident.store import Store
from fsincident.store.tables import Alert, AlertTransition, Incident, IncidentEvent, IngestedAlert, Outbox

log = get_logger("fsincident.incidents")

RenderFn = Callable[[str, dict[str, Any], list[dict[str, Any]], str | None, str | None], tuple[str, str]]
DestinationsFn = Callable[[str], int]
Guard = Callable[[AsyncSession, Incident], Awaitable[None]]  # checks/adds rows inside a manual transition
RouteFn = Callable[[dict[str, str]], list[Routed]]

SYSTEM_ACTOR = "fsincident"
BATCH = 200
BATCH_SECONDS = 0.05  # a batch's transaction stops taking transitions after this long (the rest: next tick)
ESCALATING = "step"  # ``incident.esc_reason`` while the escalation module pages the incident's policy steps
ACK_TIMEOUT = "ack_timeout"
AUTO_RESOLVE_NOTE = "auto-resolve timeout"


class EscalationHooks(Protocol):
    """What the incidents stage asks the escalation stage (``escalation.service.EscalationService``): the
    incident columns to store when an incident on a policy route opens, re-triggers or is acknowledged, and
    the pages for a route's own targets (schedules resolved to the on-call user, users to their contact
    methods), resolved inside the incidents transaction ``s``."""

    def opened(self, policy: str, now: datetime) -> dict[str, Any] | None: ...

    def restarted(self, policy: str, now: datetime) -> dict[str, Any] | None: ...

    def acknowledged(self, policy: str, now: datetime) -> dict[str, Any]: ...

    async def page_targets(
        self, s: AsyncSession, targets: Iterable[str], severity: str, now: datetime
    ) -> tuple[list[tuple[str, int, timedelta]], list[tuple[str, str]], list[str]]: ...


class NotFound(FsIncidentError):
    """No incident with that id."""


_REASON_NOTES = {
    "update": "alerts joined or left the group: notifying the group again",
    "repeat": "still firing and not acknowledged: repeating the notification",
    "unmuted": "no longer muted while still firing: notifying again",
}


def _chunks(items: list[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _grouping(inc: Incident, key: str) -> float | None:
    """A number from the incident's ``grouping`` (set from its route at creation); None when absent."""
    v = (inc.grouping or {}).get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _sev(labels: dict[str, str]) -> str:
    v = labels.get("severity", "warning")
    return v if v in Severity.__members__.values() else "warning"


def incident_dict(inc: Incident) -> dict[str, Any]:
    """The API form of an incident."""
    return {
        "id": inc.id,
        "title": inc.title,
        "state": inc.state,
        "severity": inc.severity,
        "labels": inc.labels,
        "created_at": isoformat(inc.created_at),
        "updated_at": isoformat(inc.updated_at),
        "acknowledged_at": isoformat(inc.acknowledged_at),
        "acknowledged_by": inc.acknowledged_by,
        "resolved_at": isoformat(inc.resolved_at),
        "resolved_by": inc.resolved_by,
        "targets": inc.targets,
        "auto_resolve": inc.auto_resolve,
        "escalation_policy": inc.escalation_policy,
        "escalation": _escalation_dict(inc),
        "auto_resolve_at": isoformat(inc.resolve_due_at),
    }


def _escalation_dict(inc: Incident) -> dict[str, Any] | None:
    """Where the incident's policy stands: the next step (0-based ``step`` of pass ``loop``) and what is due when."""
    if not inc.escalation_policy:
        return None
    return {
        "step": inc.esc_step,
        "loop": inc.esc_loop,
        "pass_started_at": isoformat(inc.esc_started_at),
        "due_at": isoformat(inc.esc_due_at),
        "due": inc.esc_reason if inc.esc_due_at is not None else None,
    }


def alert_dict(a: Alert) -> dict[str, Any]:
    return {
        "fingerprint": a.fingerprint,
        "alertname": a.alertname,
        "origin": a.origin,
        "labels": a.labels,
        "annotations": a.annotations,
        "value": a.value,
        "state": a.state,
        "starts_at": isoformat(a.starts_at),
        "ends_at": isoformat(a.ends_at),
    }


def event_dict(e: IncidentEvent) -> dict[str, Any]:
    return {"id": e.id, "at": isoformat(e.at), "kind": e.kind, "actor": e.actor, "note": e.note, "data": e.data}


def _title(alertname: str, labels: dict[str, str], annotations: dict[str, str]) -> str:
    summary = annotations.get("summary")
    if summary:
        return f"{alertname}: {summary}"[:500]
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
    return (f"{alertname} ({shown})" if shown else alertname)[:500]


class IncidentService:
    """Applies named transitions; ``tick`` processes queued alert transitions, the API calls ack/resolve."""

    name = "incidents"

    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        render: RenderFn,
        destinations: DestinationsFn,
        route: RouteFn,
        kick_delivery: Callable[[], None] = lambda: None,
        escalation: EscalationHooks | None = None,
        kick_escalation: Callable[[], None] = lambda: None,
    ):
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.render = render
        self.destinations = destinations
        self.kick_delivery = kick_delivery
        self.route = route
        self.escalation = escalation
        self.kick_escalation = kick_escalation
        self.external_url = ""  # the config's external_url, set by the app (for links in structured pages)
        self._gauges_at = 0.0
        self._escalate = False  # set when a committed change starts or restarts a policy: kick the module

    # ------------------------------------------------------------------ the engine module

    async def tick(self, now: datetime) -> bool:
        """Process a batch of alert transitions in id order, then due ack timeouts and auto-resolves; True when
        there was work."""
        notified = False
        async with self.store.read() as s:  # look before taking the write lock: most ticks find nothing
            pending = (
                await s.exec(select(AlertTransition.id).where(col(AlertTransition.processed_at).is_(None)).limit(1))
            ).first()
        count = 0
        if pending is not None:
            count, notified = await self._batch(now)
        if notified:
            self.kick_delivery()
        self._kick_escalation()
        timers = await self._timers(now)
        if count or timers or time.monotonic() - self._gauges_at > 5:
            await self._update_gauges()
        return bool(count) or timers

    async def _batch(self, now: datetime) -> tuple[int, bool]:
        """Process up to BATCH queued alert transitions in one transaction; (how many, whether pages were queued).
        The batch is cut short after BATCH_SECONDS so other writers (the ingest API) never wait long for SQLite."""
        notified = False
        started = time.monotonic()
        async with self.store.session() as s:
            q = (
                select(AlertTransition)
                .where(col(AlertTransition.processed_at).is_(None))
                .order_by(col(AlertTransition.id))
                .limit(BATCH)
            )
            if not self.store.is_sqlite:
                q = q.with_for_update(skip_locked=True)
            rows = (await s.exec(q)).all()
            routed, open_ = await self._prefetch(s, rows)
            done = 0
            for tr in rows:
                if tr.state == "firing":
                    for r in routed[id(tr)]:  # one group per handling route (several with ``continue``)
                        notified |= await self._fired_in(s, tr, r, now, open_)
                else:
                    notified |= await self._resolved(s, tr, now)
                tr.processed_at = now
                s.add(tr)
                done += 1
                if time.monotonic() - started > BATCH_SECONDS:
                    break
        return done, notified

    def _kick_escalation(self) -> None:
        if self._escalate:
            self._escalate = False
            self.kick_escalation()

    async def sleep_hint(self, now: datetime) -> float | None:
        """Seconds until the earliest ack timeout or auto-resolve is due; None when none is."""
        async with self.store.read() as s:
            ack = (
                await s.exec(
                    select(sa.func.min(Incident.esc_due_at)).where(
                        col(Incident.esc_reason) == ACK_TIMEOUT,
                        col(Incident.state) == IncidentState.ACKNOWLEDGED.value,
                    )
                )
            ).one()
            res = (
                await s.exec(select(sa.func.min(Incident.resolve_due_at)).where(col(Incident.open_key).is_not(None)))
            ).one()
            grp = (
                await s.exec(select(sa.func.min(Incident.notify_due_at)).where(col(Incident.open_key).is_not(None)))
            ).one()
        due = [d for d in (ensure_utc(ack), ensure_utc(res), ensure_utc(grp)) if d is not None]
        return (min(due) - now).total_seconds() if due else None

    # ------------------------------------------------------------------ timers

    async def _timers(self, now: datetime) -> bool:
        """Re-trigger incidents whose ack timed out and resolve those whose auto-resolve time came; True if any."""
        due = sa.or_(
            sa.and_(
                col(Incident.esc_reason) == ACK_TIMEOUT,
                col(Incident.esc_due_at) <= now,
                col(Incident.state) == IncidentState.ACKNOWLEDGED.value,
            ),
            sa.and_(col(Incident.resolve_due_at) <= now, col(Incident.open_key).is_not(None)),
            sa.and_(col(Incident.notify_due_at) <= now, col(Incident.open_key).is_not(None)),
        )
        async with self.store.read() as s:
            ids = list((await s.exec(select(Incident.id).where(due).order_by(col(Incident.id)).limit(BATCH))).all())
        did = False
        for iid in ids:
            notified = False
            async with self.store.session() as s:
                q = select(Incident).where(Incident.id == iid, due)
                if not self.store.is_sqlite:
                    q = q.with_for_update(skip_locked=True)
                inc = (await s.exec(q)).first()
                if inc is None:
                    continue  # acted on meanwhile (or locked by another instance that acts on it)
                resolve_at = ensure_utc(inc.resolve_due_at)
                group_at = ensure_utc(inc.notify_due_at)
                if group_at is not None and group_at <= now and (resolve_at is None or resolve_at > now):
                    notified = await self._group_notification(s, inc, now)
                elif resolve_at is not None and resolve_at <= now:
                    decision = transitions.resolve(IncidentState(inc.state))
                    notified = await self._apply(s, inc, decision, now, SYSTEM_ACTOR, AUTO_RESOLVE_NOTE, {})
                    log.info("incident_auto_resolved", incident_id=iid)
                elif inc.esc_reason == ACK_TIMEOUT and inc.state == IncidentState.ACKNOWLEDGED.value:
                    decision = transitions.Decision(IncidentState.TRIGGERED, (ACK_TIMEOUT,), "trigger")
                    acked_at, acked_by = ensure_utc(inc.acknowledged_at), inc.acknowledged_by
                    waited = format_duration(now - acked_at) if acked_at else "the ack timeout"
                    note = f"not resolved {waited} after the acknowledgement by {acked_by}; paging again"
                    data = {"acknowledged_by": acked_by, "acknowledged_at": isoformat(acked_at)}
                    notified = await self._apply(s, inc, decision, now, SYSTEM_ACTOR, note, data)
                    log.info("incident_ack_timeout", incident_id=iid, actor=acked_by)
                did = True
            if notified:
                self.kick_delivery()
            self._kick_escalation()
        return did

    async def _prefetch(
        self, s: AsyncSession, rows: Sequence[AlertTransition]
    ) -> tuple[dict[int, list[Routed]], dict[str, Incident]]:
        """Route the batch's firing transitions (by ``id()`` of the row) and load the open incidents of all their
        groups in one query (by group key; a group without one is absent)."""
        routed = {id(tr): self.route(tr.labels) for tr in rows if tr.state == "firing"}
        keys = sorted({r.group_key for rs in routed.values() for r in rs})
        open_: dict[str, Incident] = {}
        for chunk in _chunks(keys, 500):
            q = select(Incident).where(col(Incident.open_key).in_(chunk)).order_by(col(Incident.id))
            if not self.store.is_sqlite:
                q = q.with_for_update()  # an ack in flight must not be overwritten by these transitions
            for inc in (await s.exec(q)).all():
                open_[inc.open_key] = inc  # type: ignore[index]
        return routed, open_

    async def _fired_in(
        self, s: AsyncSession, tr: AlertTransition, routed: Routed, now: datetime, open_: dict[str, Incident]
    ) -> bool:
        gkey = routed.group_key
        inc = open_.get(gkey)
        if inc is not None and inc.open_key != gkey:
            inc = None  # resolved earlier in this batch
        if inc is None:
            glabels = dict(routed.group_labels)
            glabels.setdefault("alertname", tr.alertname)
            inc = Incident(
                group_key=gkey,
                open_key=gkey,
                title=_title(tr.alertname, glabels, tr.annotations),
                state=IncidentState.TRIGGERED.value,
                severity=_sev(tr.labels),
                labels=glabels,
                route=routed.route,
                targets=list(routed.targets),
                auto_resolve=routed.auto_resolve,
                grouping=routed.grouping(),
                created_at=now,
                updated_at=now,
            )
            if routed.escalation_policy and self.escalation is not None:
                # The escalation module pages the policy's steps; an unknown policy (a route and policy removed
                # by a reload in between) falls back to paging the route's own targets.
                start = now + routed.group_wait  # group_wait delays the first step like a first notification
                for k, v in (self.escalation.opened(routed.escalation_policy, start) or {}).items():
                    setattr(inc, k, v)
            s.add(inc)
            await s.flush()
            open_[gkey] = inc
            decision = transitions.open_incident()
            alert = None
        else:
            alert = (
                await s.exec(select(Alert).where(Alert.incident_id == inc.id, Alert.fingerprint == tr.fingerprint))
            ).first()
            if alert is not None and alert.state == "firing":
                alert.value, alert.annotations, alert.updated_at = tr.value, tr.annotations, now
                s.add(alert)
                return False  # a repeated firing transition (e.g. after a restart) changes nothing
            decision = transitions.alert_fired(IncidentState(inc.state))
            if Severity(_sev(tr.labels)).rank > Severity(inc.severity).rank:
                inc.severity = _sev(tr.labels)
        if alert is None:
            alert = Alert(
                incident_id=inc.id,  # type: ignore[arg-type]
                fingerprint=tr.fingerprint,
                alertname=tr.alertname,
                origin=tr.origin,
                starts_at=tr.at,
                state="firing",
                updated_at=now,
            )
        alert.labels, alert.annotations, alert.value = tr.labels, tr.annotations, tr.value
        alert.state, alert.starts_at, alert.ends_at, alert.updated_at = "firing", tr.at, None, now
        s.add(alert)
        data = {"fingerprint": tr.fingerprint, "labels": tr.labels, "value": tr.value, "origin": tr.origin}
        return await self._apply(s, inc, decision, now, SYSTEM_ACTOR, None, data)

    async def _resolved(self, s: AsyncSession, tr: AlertTransition, now: datetime) -> bool:
        q = (
            select(Alert, Incident)
            .join(Incident, col(Incident.id) == col(Alert.incident_id))
            .where(Alert.fingerprint == tr.fingerprint, Alert.state == "firing")
        )
        if not self.store.is_sqlite:
            q = q.with_for_update()
        rows = (await s.exec(q)).all()
        notified = False
        for alert, inc in rows:
            alert.state, alert.ends_at, alert.updated_at = "resolved", tr.at, now
            s.add(alert)
            await s.flush()
            left = (
                await s.exec(
                    select(sa.func.count())
                    .select_from(Alert)
                    .where(Alert.incident_id == inc.id, Alert.state == "firing")
                )
            ).one()
            decision = transitions.alert_resolved(IncidentState(inc.state), int(left), inc.auto_resolve)
            note = "all alerts resolved" if "resolved" in decision.events else None
            data = {"fingerprint": tr.fingerprint, "labels": tr.labels, "value": tr.value}
            notified |= await self._apply(s, inc, decision, now, SYSTEM_ACTOR, note, data)
        return notified

    # ------------------------------------------------------------------ responders

    async def ack(
        self,
        incident_id: int,
        by: str,
        note: str | None = None,
        data: dict[str, Any] | None = None,
        guard: Guard | None = None,
    ) -> dict[str, Any]:
        """Acknowledge; raises NotFound, or TransitionError for a resolved incident. Idempotent when acked.
        ``data`` goes into the timeline event; ``guard`` runs first in the same transaction (see _manual)."""
        return await self._manual(incident_id, transitions.ack, by, note, data, guard)

    async def resolve(
        self,
        incident_id: int,
        by: str,
        note: str | None = None,
        data: dict[str, Any] | None = None,
        guard: Guard | None = None,
    ) -> dict[str, Any]:
        """Resolve by hand; raises NotFound. Resolving a resolved incident changes nothing. ``data`` and
        ``guard`` as for :meth:`ack`."""
        return await self._manual(incident_id, transitions.resolve, by, note, data, guard)

    async def add_note(
        self, incident_id: int, by: str, note: str, data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Add a ``note`` event (by ``by``, with ``data``) to the incident's timeline, in any state; raises NotFound."""
        now = self.clock.now()
        async with self.store.session() as s:
            inc = await s.get(Incident, incident_id)
            if inc is None:
                raise NotFound(f"incident {incident_id} not found")
            inc.updated_at = now
            s.add(inc)
            s.add(
                IncidentEvent(incident_id=incident_id, at=now, kind="note", actor=by, note=note, data=dict(data or {}))
            )
            self.metrics.incident_events.labels("note").inc()
            out = incident_dict(inc)
        log.info("incident_note", incident_id=incident_id, actor=by)
        return out

    async def ack_alerts(self, fingerprints: Iterable[str], by: str, note: str | None = None) -> list[int]:
        """Acknowledge every open, triggered incident in which one of ``fingerprints`` fires (PagerDuty's
        ``acknowledge`` by dedup_key); returns their ids, [] when there is none. Never raises for unknown ones."""
        fps = list(dict.fromkeys(fingerprints))
        if not fps:
            return []
        async with self.store.read() as s:
            ids = (
                await s.exec(
                    select(Incident.id)
                    .join(Alert, col(Alert.incident_id) == col(Incident.id))
                    .where(
                        col(Alert.fingerprint).in_(fps),
                        col(Alert.state) == "firing",
                        col(Incident.state) == IncidentState.TRIGGERED.value,
                    )
                    .distinct()
                )
            ).all()
        done = []
        for iid in sorted(i for i in ids if i is not None):
            try:
                await self.ack(iid, by, note)
            except (NotFound, TransitionError):
                continue  # resolved or gone meanwhile
            done.append(iid)
        return done

    async def _manual(
        self,
        incident_id: int,
        fn: Callable[[IncidentState], transitions.Decision],
        by: str,
        note: str | None,
        data: dict[str, Any] | None = None,
        guard: Guard | None = None,
    ) -> dict[str, Any]:
        """Apply ``fn`` to the (locked) incident; ``guard(s, inc)`` runs first in the same transaction and may
        raise to refuse (nothing is written) or add rows that commit together with the transition."""
        now = self.clock.now()
        async with self.store.session() as s:
            q = select(Incident).where(Incident.id == incident_id)
            if not self.store.is_sqlite:
                q = q.with_for_update()
            inc = (await s.exec(q)).first()
            if inc is None:
                raise NotFound(f"incident {incident_id} not found")
            if guard is not None:
                await guard(s, inc)
            decision = fn(IncidentState(inc.state))
            notified = await self._apply(s, inc, decision, now, by, note, dict(data or {}))
            out = incident_dict(inc)
        if decision.changed:
            log.info("incident_" + decision.events[-1], incident_id=incident_id, actor=by)
        if notified:
            self.kick_delivery()
        self._kick_escalation()
        return out

    # ------------------------------------------------------------------ shared

    async def _apply(
        self,
        s: AsyncSession,
        inc: Incident,
        decision: transitions.Decision,
        now: datetime,
        actor: str,
        note: str | None,
        data: dict[str, Any],
    ) -> bool:
        if not decision.changed:
            return False
        prev = inc.state
        inc.state = decision.state.value
        inc.updated_at = now
        if decision.state == IncidentState.ACKNOWLEDGED and prev != IncidentState.ACKNOWLEDGED.value:
            inc.acknowledged_at, inc.acknowledged_by = now, actor
        if decision.state == IncidentState.RESOLVED and prev != IncidentState.RESOLVED.value:
            inc.resolved_at, inc.resolved_by, inc.open_key = now, actor, None
        if decision.state == IncidentState.TRIGGERED and prev == IncidentState.ACKNOWLEDGED.value:
            inc.acknowledged_at, inc.acknowledged_by = None, None
        self._escalation_columns(inc, prev, decision.state, now)
        if decision.state != IncidentState.TRIGGERED:
            inc.notify_due_at, inc.notify_reason = None, None  # group updates and repeats stop on ack/resolve
        s.add(inc)
        last_event: IncidentEvent | None = None
        for kind in decision.events:
            manual = kind in ("acknowledged", "resolved", ACK_TIMEOUT)
            ev = IncidentEvent(
                incident_id=inc.id,  # type: ignore[arg-type]
                at=now,
                kind=kind,
                actor=actor if manual or kind in ("retriggered",) else SYSTEM_ACTOR,
                note=note if manual else None,
                data=data,
            )
            s.add(ev)
            last_event = ev
            self.metrics.incident_events.labels(kind).inc()
        await s.flush()
        if decision.state != IncidentState.TRIGGERED and decision.state.value != prev:
            # Pages not yet sent are pointless once someone acted or the problem went away.
            await self._cancel_pending_pages(s, inc, now)
        if decision.notify is None:
            if decision.state == IncidentState.TRIGGERED and {"alert_firing", "alert_resolved"} & set(decision.events):
                self._schedule_update(inc, now)
            return False
        if decision.notify == "trigger" and inc.esc_reason == ESCALATING:
            self._escalate = True
            return False  # the escalation module pages the policy's steps, starting now
        if decision.notify == "trigger" and inc.notified_at is None:
            wait_until = ensure_utc(inc.created_at) + timedelta(seconds=_grouping(inc, "group_wait") or 0)
            if wait_until > now:  # group_wait: gather the group's first alerts into one first notification
                inc.notify_due_at, inc.notify_reason = wait_until, "trigger"
                s.add(inc)
                return False
        return await self._enqueue(s, inc, decision.notify, now, actor, note, last_event)

    def _schedule_update(self, inc: Incident, now: datetime) -> None:
        """An alert joined or left a triggered group that was notified: send the group again, at most once per
        ``group_interval`` (a pending repeat or update that is due sooner stays)."""
        if inc.notified_at is None or inc.escalation_policy or not inc.targets:
            return  # not notified yet (group_wait gathers it), or a policy pages this incident
        interval = timedelta(seconds=_grouping(inc, "group_interval") or 0)
        at = max(ensure_utc(inc.notified_at) + interval, now)  # type: ignore[operator]
        due = ensure_utc(inc.notify_due_at)
        if due is None or inc.notify_reason == "repeat" or at < due:
            inc.notify_due_at, inc.notify_reason = at, "update"

    async def _group_notification(self, s: AsyncSession, inc: Incident, now: datetime) -> bool:
        """A due group notification: the delayed first one (``trigger``), an ``update`` after alerts joined or
        left, a ``repeat``, or ``unmuted`` after a silence ended while the group still fires."""
        reason = inc.notify_reason or "trigger"
        inc.notify_due_at, inc.notify_reason = None, None
        s.add(inc)
        if inc.state != IncidentState.TRIGGERED.value:
            return False
        if inc.escalation_policy and self.escalation is not None:
            if reason == "unmuted":  # the policy starts over: its pages were muted
                fields = self.escalation.restarted(inc.escalation_policy, now)
                for k, v in (fields or {}).items():
                    setattr(inc, k, v)
                ev = IncidentEvent(
                    incident_id=inc.id,  # type: ignore[arg-type]
                    at=now,
                    kind="renotify",
                    actor=SYSTEM_ACTOR,
                    note="no longer muted while still firing: the escalation policy starts again",
                    data={"reason": reason},
                )
                s.add(ev)
                self._escalate = fields is not None
            return False
        if reason == "trigger":  # the first notification, held back by group_wait
            return await self._enqueue(s, inc, "trigger", now, SYSTEM_ACTOR, None, None, reason)
        ev = IncidentEvent(
            incident_id=inc.id,  # type: ignore[arg-type]
            at=now,
            kind="group_" + reason if reason in ("update", "repeat") else "renotify",
            actor=SYSTEM_ACTOR,
            note=_REASON_NOTES.get(reason),
            data={"reason": reason},
        )
        s.add(ev)
        await s.flush()
        # This notification carries the group as it is now: an older one still waiting (held by a time interval,
        # or retrying an unreachable channel) would only repeat it, so it goes.
        await s.exec(  # type: ignore[call-overload]
            sa.update(Outbox)
            .where(col(Outbox.incident_id) == inc.id, col(Outbox.kind) == "trigger", col(Outbox.state) == "pending")
            .values(state="cancelled", last_error="cancelled: superseded by a newer notification")
        )
        return await self._enqueue(s, inc, "trigger", now, SYSTEM_ACTOR, None, ev, reason)

    def _escalation_columns(self, inc: Incident, prev: str, state: IncidentState, now: datetime) -> None:
        """Keep the escalation state in step with the incident's: an ack stops the steps (leaving only the ack
        timeout), a re-trigger starts the policy again at step 0, a resolve clears everything."""
        if state == IncidentState.RESOLVED:
            inc.esc_due_at, inc.esc_reason, inc.resolve_due_at = None, None, None
            return
        if not inc.escalation_policy or self.escalation is None:
            return
        fields: dict[str, Any] | None = None
        if state == IncidentState.ACKNOWLEDGED and prev != IncidentState.ACKNOWLEDGED.value:
            fields = self.escalation.acknowledged(inc.escalation_policy, now)
        elif state == IncidentState.TRIGGERED and prev == IncidentState.ACKNOWLEDGED.value:
            fields = self.escalation.restarted(inc.escalation_policy, now)
            if fields is None:  # the policy is gone: page everyone paged so far instead
                fields = {"esc_due_at": None, "esc_reason": None}
        for k, v in (fields or {}).items():
            setattr(inc, k, v)

    async def _cancel_pending_pages(self, s: AsyncSession, inc: Incident, now: datetime) -> None:
        # Every page not yet handed to a notifier: first attempts, retries, delayed contact methods and pages
        # bundled into a rate limit's digest alike.
        res = await s.exec(  # type: ignore[call-overload]
            sa.update(Outbox)
            .where(
                col(Outbox.incident_id) == inc.id,
                col(Outbox.kind) == "trigger",
                col(Outbox.state).in_(("pending", "bundled")),
            )
            .values(state="cancelled", last_error="cancelled: incident " + inc.state)
        )
        if res.rowcount:
            s.add(
                IncidentEvent(
                    incident_id=inc.id,  # type: ignore[arg-type]
                    at=now,
                    kind="notifications_cancelled",
                    actor=SYSTEM_ACTOR,
                    data={"count": res.rowcount},
                )
            )

    async def _enqueue(
        self,
        s: AsyncSession,
        inc: Incident,
        kind: str,
        now: datetime,
        actor: str,
        note: str | None,
        event: IncidentEvent | None,
        reason: str | None = None,
    ) -> bool:
        if kind == "trigger":
            # Whatever happens below, the group counts as notified now: updates wait a group_interval from here.
            inc.notified_at = now
            every = _grouping(inc, "repeat_interval")
            if every and not inc.escalation_policy:
                inc.notify_due_at, inc.notify_reason = now + timedelta(seconds=every), "repeat"
            else:  # this page carries the group as it is now: nothing else is due
                inc.notify_due_at, inc.notify_reason = None, None
            s.add(inc)
        if not inc.targets:
            return False
        if kind == "trigger":
            pages, skipped = await self._trigger_pages(s, inc, now)
        else:
            pages, skipped = await self._notice_pages(s, inc)
        for target, why in skipped:
            s.add(
                IncidentEvent(
                    incident_id=inc.id,  # type: ignore[arg-type]
                    at=now,
                    kind="notify_skipped",
                    actor=SYSTEM_ACTOR,
                    note=why,
                    data={"target": target},
                )
            )
        if not pages:
            return False
        title, body, page = await self.render_page(s, inc, kind, actor, note, reason)
        for target, i, delay in pages:
            s.add(
                Outbox(
                    incident_id=inc.id,
                    event_id=event.id if event else None,
                    target=target,
                    dest_index=i,
                    kind=kind,
                    severity=inc.severity,
                    title=title,
                    body=body,
                    state="pending",
                    next_attempt_at=now + delay,
                    created_at=now,
                    data=page,
                )
            )
        return True

    async def _trigger_pages(
        self, s: AsyncSession, inc: Incident, now: datetime
    ) -> tuple[list[tuple[str, int, timedelta]], list[tuple[str, str]]]:
        """Pages of a route's own targets: schedules resolved to the on-call user and users to their contact
        methods (delays, urgency) by the escalation stage; without it, every URL of each target at once."""
        if self.escalation is None:
            pages: list[tuple[str, int, timedelta]] = []
            skipped = []
            for target in inc.targets:
                n = self.destinations(target)
                if n == 0:
                    skipped.append((target, f"{target} has no destinations"))
                pages.extend((target, i, timedelta(0)) for i in range(n))
            return pages, skipped
        pages, skipped, users = await self.escalation.page_targets(s, inc.targets, inc.severity, now)
        new = [f"user:{u}" for u in users if f"user:{u}" not in inc.targets]
        if new:
            inc.targets = [*inc.targets, *new]  # so later notices reach the on-call users who were paged
            s.add(inc)
        return pages, skipped

    async def _notice_pages(
        self, s: AsyncSession, inc: Incident
    ) -> tuple[list[tuple[str, int, timedelta]], list[tuple[str, str]]]:
        """Acknowledge/resolve notices go to every channel of the incident and, of each user, to the contact
        methods that were paged (not one that a delay or the urgency kept silent); schedules were resolved."""
        paged = (
            await s.exec(
                select(Outbox.target, Outbox.dest_index)
                .where(
                    col(Outbox.incident_id) == inc.id,
                    col(Outbox.kind) == "trigger",
                    col(Outbox.state) != "cancelled",
                )
                .distinct()
            )
        ).all()
        pages: list[tuple[str, int, timedelta]] = []
        skipped = []
        for target in inc.targets:
            if target.startswith("schedule:"):
                continue  # paged as the user on call, who is among the targets
            n = self.destinations(target)
            if n == 0:
                skipped.append((target, f"{target} has no destinations"))
            elif target.startswith("user:"):
                pages.extend((target, i, timedelta(0)) for i in sorted({i for t, i in paged if t == target}) if i < n)
            else:
                pages.extend((target, i, timedelta(0)) for i in range(n))
        return pages, skipped

    async def render_page(
        self,
        s: AsyncSession,
        inc: Incident,
        kind: str,
        actor: str | None,
        note: str | None,
        reason: str | None = None,
    ) -> tuple[str, str, dict[str, Any]]:
        """Title, body and structured data (``Outbox.data``) of a ``kind`` notification about ``inc``, with its
        alerts (read in ``s``); ``reason`` says why a group is notified (trigger, update, repeat, unmuted)."""
        # One query: the alerts, with the generator URL and the latest annotations of ingested ones.
        rows = (
            await s.exec(
                select(Alert, IngestedAlert.generator_url, IngestedAlert.annotations)
                .outerjoin(IngestedAlert, col(IngestedAlert.fingerprint) == col(Alert.fingerprint))
                .where(Alert.incident_id == inc.id)
                .order_by(col(Alert.id))
            )
        ).all()
        incident = incident_dict(inc)
        listed = []
        for a, url, fresh in rows:
            d = alert_dict(a)
            d["generator_url"] = url or ""
            if fresh:
                d["annotations"] = fresh
            listed.append(d)
        try:
            title, body = self.render(kind, {**incident, "notify_reason": reason or kind}, listed, actor, note)
        except Exception as e:  # a page must never be lost (or the stage wedged) because a template failed
            log.warning("render_failed", incident_id=inc.id, error=str(e)[:300])
            title = f"[{kind.upper()}] #{inc.id} {inc.title}"
            lines = [f"- {a['alertname'] or 'alert'} {a['state']}: {a['labels']}" for a in listed[:20]]
            body = "\n".join([f"{kind} ({reason or kind}), severity {inc.severity}", *lines])
        data = {
            "incident": incident,
            "alerts": listed,
            "group_key": inc.group_key,
            "group_labels": dict(inc.labels),
            "receiver": (inc.grouping or {}).get("receiver") or ",".join(inc.targets) or "none",
            "reason": reason or kind,
            "external_url": self.external_url,
            "actor": actor,  # who acknowledged/resolved, and their note: the templates show them
            "note": note,
        }
        return title, body, data

    async def _update_gauges(self) -> None:
        self._gauges_at = time.monotonic()
        async with self.store.read() as s:
            rows = (
                await s.exec(
                    select(Incident.state, sa.func.count())
                    .where(col(Incident.open_key).is_not(None))
                    .group_by(Incident.state)
                )
            ).all()
        counts = {"triggered": 0, "acknowledged": 0}
        counts.update({st: n for st, n in rows})
        for st, n in counts.items():
            self.metrics.incidents_open.labels(st).set(n)

    # ------------------------------------------------------------------ queries

    async def list(self, state: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        async with self.store.read() as s:
            q = select(Incident).order_by(col(Incident.id).desc()).limit(limit)
            if state:
                q = q.where(Incident.state == state)
            return [incident_dict(i) for i in (await s.exec(q)).all()]

    async def get(self, incident_id: int) -> dict[str, Any]:
        """An incident with its alerts and timeline; raises NotFound."""
        async with self.store.read() as s:
            inc = await s.get(Incident, incident_id)
            if inc is None:
                raise NotFound(f"incident {incident_id} not found")
            alerts = (await s.exec(select(Alert).where(Alert.incident_id == incident_id).order_by(col(Alert.id)))).all()
            events = (
                await s.exec(
                    select(IncidentEvent)
                    .where(IncidentEvent.incident_id == incident_id)
                    .order_by(col(IncidentEvent.id))
                )
            ).all()
        out = incident_dict(inc)
        out["alerts"] = [alert_dict(a) for a in alerts]
        out["timeline"] = [event_dict(e) for e in events]
        return out
