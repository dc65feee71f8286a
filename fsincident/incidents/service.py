"""The incidents stage: turns alert transitions into incidents, timeline events and outbox rows.

Every change to an incident is written in one transaction together with its timeline events and
the outbox rows of the notifications it causes, so a crash loses no page and no acknowledgement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from fsincident.core import Clock, FsIncidentError, IncidentState, Routed, Severity, isoformat
from fsincident.incidents import state as transitions
from fsincident.obs import Metrics, get_logger
from fsincident.store import Store
from fsincident.store.tables import Alert, AlertTransition, Incident, IncidentEvent, Outbox

log = get_logger("fsincident.incidents")

RenderFn = Callable[[str, dict[str, Any], list[dict[str, Any]], str | None, str | None], tuple[str, str]]
DestinationsFn = Callable[[str], int]
RouteFn = Callable[[dict[str, str]], Routed]

SYSTEM_ACTOR = "fsincident"
BATCH = 200


class NotFound(FsIncidentError):
    """No incident with that id."""


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
    ):
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.render = render
        self.destinations = destinations
        self.kick_delivery = kick_delivery
        self.route = route
        self._gauges_at = 0.0

    # ------------------------------------------------------------------ the engine module

    async def tick(self, now: datetime) -> bool:
        """Process a batch of alert transitions in id order; True when there was work."""
        notified = False
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
            for tr in rows:
                if tr.state == "firing":
                    notified |= await self._fired(s, tr, now)
                else:
                    notified |= await self._resolved(s, tr, now)
                tr.processed_at = now
                s.add(tr)
        if notified:
            self.kick_delivery()
        if rows or time.monotonic() - self._gauges_at > 5:
            await self._update_gauges()
        return bool(rows)

    async def _fired(self, s: AsyncSession, tr: AlertTransition, now: datetime) -> bool:
        routed = self.route(tr.labels)
        gkey = routed.group_key
        q = select(Incident).where(Incident.open_key == gkey)
        if not self.store.is_sqlite:
            q = q.with_for_update()  # an ack in flight must not be overwritten by this transition
        inc = (await s.exec(q)).first()
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
                created_at=now,
                updated_at=now,
            )
            s.add(inc)
            await s.flush()
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

    async def ack(self, incident_id: int, by: str, note: str | None = None) -> dict[str, Any]:
        """Acknowledge; raises NotFound, or TransitionError for a resolved incident. Idempotent when acked."""
        return await self._manual(incident_id, transitions.ack, by, note)

    async def resolve(self, incident_id: int, by: str, note: str | None = None) -> dict[str, Any]:
        """Resolve by hand; raises NotFound. Resolving a resolved incident changes nothing."""
        return await self._manual(incident_id, transitions.resolve, by, note)

    async def _manual(
        self, incident_id: int, fn: Callable[[IncidentState], transitions.Decision], by: str, note: str | None
    ) -> dict[str, Any]:
        now = self.clock.now()
        async with self.store.session() as s:
            q = select(Incident).where(Incident.id == incident_id)
            if not self.store.is_sqlite:
                q = q.with_for_update()
            inc = (await s.exec(q)).first()
            if inc is None:
                raise NotFound(f"incident {incident_id} not found")
            decision = fn(IncidentState(inc.state))
            notified = await self._apply(s, inc, decision, now, by, note, {})
            out = incident_dict(inc)
        if decision.changed:
            log.info("incident_" + decision.events[-1], incident_id=incident_id, actor=by)
        if notified:
            self.kick_delivery()
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
        s.add(inc)
        last_event: IncidentEvent | None = None
        for kind in decision.events:
            manual = kind in ("acknowledged", "resolved")
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
        if decision.state != IncidentState.TRIGGERED:
            # Pages not yet sent are pointless once someone acted or the problem went away.
            await self._cancel_pending_pages(s, inc, now)
        if decision.notify is None:
            return False
        return await self._enqueue(s, inc, decision.notify, now, actor, note, last_event)

    async def _cancel_pending_pages(self, s: AsyncSession, inc: Incident, now: datetime) -> None:
        res = await s.exec(  # type: ignore[call-overload]
            sa.update(Outbox)
            .where(
                col(Outbox.incident_id) == inc.id,
                col(Outbox.kind) == "trigger",
                col(Outbox.state) == "pending",
                col(Outbox.attempts) == 0,
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
    ) -> bool:
        if not inc.targets:
            return False
        alerts = (await s.exec(select(Alert).where(Alert.incident_id == inc.id).order_by(col(Alert.id)))).all()
        title, body = self.render(kind, incident_dict(inc), [alert_dict(a) for a in alerts], actor, note)
        queued = 0
        for target in inc.targets:
            n = self.destinations(target)
            if n == 0:
                s.add(
                    IncidentEvent(
                        incident_id=inc.id,  # type: ignore[arg-type]
                        at=now,
                        kind="notify_skipped",
                        actor=SYSTEM_ACTOR,
                        note=f"{target} has no destinations",
                        data={"target": target},
                    )
                )
                continue
            for i in range(n):
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
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
                queued += 1
        return queued > 0

    async def _update_gauges(self) -> None:
        self._gauges_at = time.monotonic()
        async with self.store.session() as s:
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
        async with self.store.session() as s:
            q = select(Incident).order_by(col(Incident.id).desc()).limit(limit)
            if state:
                q = q.where(Incident.state == state)
            return [incident_dict(i) for i in (await s.exec(q)).all()]

    async def get(self, incident_id: int) -> dict[str, Any]:
        """An incident with its alerts and timeline; raises NotFound."""
        async with self.store.session() as s:
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
