"""Escalation as an engine module: runs the due steps of each triggered incident's policy, and the manual
``escalate`` and ``reassign`` actions.

The decisions are the pure functions of :mod:`fsincident.escalation.policy`. Each incident's steps run in one
transaction that claims them with a compare-and-set on the incident's escalation state (after ``SELECT ... FOR
UPDATE SKIP LOCKED`` on PostgreSQL) and writes the timeline events and outbox rows of the pages in the same
commit, so two instances never run the same step and a ``kill -9`` neither repeats nor skips one. Targets are
resolved (schedules to the on-call user, users to their contact methods) before that transaction: on-call lookups
read SQL themselves, and SQLite allows one writer at a time. The incidents stage resolves a route's own targets
the same way, inside its transaction (``page_targets``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from fsincident.config import Config, EscalationPolicy
from fsincident.core import Clock, FsIncidentError, IncidentState, TransitionError, ensure_utc
from fsincident.escalation import policy as pol
from fsincident.escalation.oncall import oncall
from fsincident.escalation.schedules import CONTEXT, load_overrides
from fsincident.obs import Metrics, get_logger
from fsincident.store import Store
from fsincident.store.tables import Incident, IncidentEvent, Outbox

log = get_logger("fsincident.escalation")

SYSTEM_ACTOR = "fsincident"
BATCH = 100
OPEN = (IncidentState.TRIGGERED.value, IncidentState.ACKNOWLEDGED.value)
CLAIM_ATTEMPTS = 3  # a manual action retries its compare-and-set this often when a step ran concurrently

RenderPageFn = Callable[
    [AsyncSession, Incident, str, str | None, str | None], Awaitable[tuple[str, str, dict[str, Any]]]
]
DestinationsFn = Callable[[str], int]


class OnCall(Protocol):
    """Who is on call (``escalation.schedules.ScheduleService``)."""

    async def oncall(self, name: str, at: datetime) -> list[Any]: ...


class NotFound(FsIncidentError):
    """No incident with that id."""


class EscalationFailed(FsIncidentError):
    """Some due steps could not run (the reason is logged per incident); they are retried with backoff."""


class BadTarget(FsIncidentError):
    """A reassign target that is malformed or not configured."""


@dataclass
class Resolved:
    """Targets resolved at page time: outbox rows to queue, targets that paged nobody, users paged."""

    pages: list[tuple[str, int, timedelta]] = field(default_factory=list)  # (target, dest_index, delay)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (target, reason)
    users: list[str] = field(default_factory=list)
    oncall: list[dict[str, Any]] = field(default_factory=list)  # who each schedule resolved to, incl. overrides

    @property
    def paged(self) -> list[str]:
        return list(dict.fromkeys(t for t, _, _ in self.pages))


def state_of(inc: Incident) -> pol.EscState:
    """The pure escalation state of a stored incident."""
    started = ensure_utc(inc.esc_started_at) or ensure_utc(inc.created_at)
    assert started is not None
    return pol.EscState(inc.esc_step, inc.esc_loop, started, ensure_utc(inc.esc_due_at), inc.esc_reason)


def columns(state: pol.EscState) -> dict[str, Any]:
    """The incident columns that store ``state``."""
    return {
        "esc_step": state.step,
        "esc_loop": state.loop,
        "esc_started_at": state.started_at,
        "esc_due_at": state.due_at,
        "esc_reason": state.reason,
    }


def _step_note(p: EscalationPolicy, step: pol.DueStep) -> str:
    return f"step {step.step + 1} of {len(p.steps)}, pass {step.loop + 1} of {p.repeat + 1}"


class EscalationService:
    """The engine module ``escalation``; also the escalation hooks of the incidents stage (``opened``,
    ``restarted``, ``acknowledged``) and the manual ``escalate`` / ``reassign`` actions."""

    name = "escalation"

    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        config: Config,
        schedules: OnCall,
        render_page: RenderPageFn,
        destinations: DestinationsFn,
        kick_delivery: Callable[[], None] = lambda: None,
    ):
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.config = config
        self.schedules = schedules
        self.render_page = render_page
        self.destinations = destinations
        self.kick_delivery = kick_delivery

    def configure(self, config: Config) -> None:
        """Use a reloaded config: policies, users and their contacts (steps of open incidents keep their pointer)."""
        self.config = config

    # ------------------------------------------------------------------ hooks of the incidents stage

    def opened(self, policy: str, now: datetime) -> dict[str, Any] | None:
        """Columns of a new incident on a route with ``policy``; None when no such policy is configured."""
        p = self.config.policy(policy)
        if p is None:
            return None
        out = {"escalation_policy": policy, **columns(pol.start(now))}
        out["resolve_due_at"] = now + p.auto_resolve_after if p.auto_resolve_after else None
        return out

    def restarted(self, policy: str, now: datetime) -> dict[str, Any] | None:
        """Columns of a re-triggered incident: the policy starts again at step 0; None for an unknown policy."""
        if self.config.policy(policy) is None:
            return None
        return columns(pol.start(now))

    def acknowledged(self, policy: str, now: datetime) -> dict[str, Any]:
        """Columns of an acknowledged incident: no step is due, only the policy's ack timeout (if it has one)."""
        p = self.config.policy(policy)
        st = pol.acknowledge(p.ack_timeout if p is not None else None, pol.EscState(0, 0, now, None), now)
        return {"esc_due_at": st.due_at, "esc_reason": st.reason}

    # ------------------------------------------------------------------ the engine module

    async def tick(self, now: datetime) -> bool:
        """Run the due steps of up to BATCH incidents, one transaction each; True when any incident was due."""
        q = (
            select(Incident.id)
            .where(
                col(Incident.esc_reason) == pol.STEP,
                col(Incident.esc_due_at) <= now,
                col(Incident.state) == IncidentState.TRIGGERED.value,
            )
            .order_by(col(Incident.esc_due_at), col(Incident.id))
            .limit(BATCH)
        )
        async with self.store.session() as s:
            ids = list((await s.exec(q)).all())
        paged, failed = False, 0
        for iid in ids:
            try:
                paged |= await self._run_due(iid, now)
            except Exception:
                # One broken incident must not stop the others; its due time is unchanged, so it is retried.
                log.exception("escalation_failed", incident_id=iid)
                failed += 1
        if paged:
            self.kick_delivery()
        if failed:
            raise EscalationFailed(f"{failed} of {len(ids)} due incidents failed to escalate")  # the engine backs off
        return bool(ids)

    async def sleep_hint(self, now: datetime) -> float | None:
        """Seconds until the earliest due step of a triggered incident, None when none is scheduled."""
        async with self.store.read() as s:
            v = (
                await s.exec(
                    select(sa.func.min(Incident.esc_due_at)).where(
                        col(Incident.esc_reason) == pol.STEP,
                        col(Incident.state) == IncidentState.TRIGGERED.value,
                    )
                )
            ).one()
        due = ensure_utc(v)
        return None if due is None else (due - now).total_seconds()

    async def _run_due(self, iid: int, now: datetime) -> bool:
        inc = await self._load(iid)
        if inc is None or inc.state != IncidentState.TRIGGERED.value or inc.esc_reason != pol.STEP:
            return False
        before = state_of(inc)
        p = self.config.policy(inc.escalation_policy or "")
        if p is None:
            # The policy was removed by a reload: stop escalating (the pages already sent stand) and say so.
            async with self.store.session() as s:
                locked = await self._claim(s, inc, replace(before, due_at=None, reason=None))
                if locked is not None:
                    why = f"escalation policy {inc.escalation_policy!r} is no longer configured"
                    self._event(
                        s, locked, now, "escalation_stopped", SYSTEM_ACTOR, why, {"policy": inc.escalation_policy}
                    )
            log.warning("escalation_policy_missing", incident_id=iid, policy=inc.escalation_policy)
            return False
        plan = pol.plan(p, before, now, triggered=True)
        resolved = [await self.resolve_targets(step.targets, inc.severity, now) for step in plan.steps]
        async with self.store.session() as s:
            locked = await self._claim(s, inc, plan.state)
            if locked is None:
                return False  # acknowledged, resolved, escalated by hand or run by another instance meanwhile
            queued = 0
            for step, res in zip(plan.steps, resolved, strict=True):
                queued += await self._page(s, locked, p, step, res, now, SYSTEM_ACTOR, None)
        return queued > 0

    # ------------------------------------------------------------------ manual actions

    async def escalate(
        self, incident_id: int, by: str, note: str | None = None, data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run the incident's next step now (``data`` is added to the timeline event); raises NotFound, or
        TransitionError (409) when the incident is resolved, has no escalation policy, or every step of every pass
        has run."""
        for _ in range(CLAIM_ATTEMPTS):
            now = self.clock.now()
            inc = await self._load(incident_id)
            if inc is None:
                raise NotFound(f"incident {incident_id} not found")
            if inc.state == IncidentState.RESOLVED.value:
                raise TransitionError("incident is resolved")
            if not inc.escalation_policy:
                raise TransitionError("incident has no escalation policy; reassign it to page someone")
            p = self.config.policy(inc.escalation_policy)
            if p is None:
                raise TransitionError(f"escalation policy {inc.escalation_policy!r} is no longer configured")
            before = state_of(inc)
            plan = pol.escalate(p, before, now)
            if not plan.steps:
                raise TransitionError(
                    f"every step of policy {p.name!r} has run ({p.repeat + 1} passes); reassign it to page someone"
                )
            after = plan.state
            if inc.state != IncidentState.TRIGGERED.value:
                # An acknowledged incident stays acknowledged: the step pages, nothing more is scheduled.
                after = replace(after, due_at=before.due_at, reason=before.reason)
            [step] = plan.steps
            res = await self.resolve_targets(step.targets, inc.severity, now)
            async with self.store.session() as s:
                locked = await self._claim(s, inc, after, states=OPEN, wait=True)
                if locked is None:
                    continue  # a step ran or the incident changed meanwhile: decide again
                queued = await self._page(s, locked, p, step, res, now, by, note, data)
            log.info("incident_escalated", incident_id=incident_id, actor=by, step=step.step, loop=step.loop)
            if queued:
                self.kick_delivery()
            return {"step": step.step, "loop": step.loop, "paged": res.paged, "users": res.users}
        raise TransitionError("the incident changed while escalating it; try again")

    async def reassign(
        self, incident_id: int, to: str, by: str, note: str | None = None, data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Page ``to`` (user:, schedule: or channel:) now and record who reassigned (``data`` is added to the
        timeline event); the incident keeps its state.

        Raises BadTarget for a malformed or unknown target, NotFound, or TransitionError (409) when the incident
        is resolved or ``to`` resolves to nobody who can be paged now.
        """
        self.check_target(to)
        now = self.clock.now()
        inc = await self._load(incident_id)
        if inc is None:
            raise NotFound(f"incident {incident_id} not found")
        if inc.state == IncidentState.RESOLVED.value:
            raise TransitionError("incident is resolved")
        res = await self.resolve_targets((to,), inc.severity, now)
        if not res.pages:
            reasons = "; ".join(f"{t}: {why}" for t, why in res.skipped)
            raise TransitionError(f"nobody to page: {reasons}")
        async with self.store.session() as s:
            q = select(Incident).where(Incident.id == incident_id)
            if not self.store.is_sqlite:
                q = q.with_for_update()
            locked = (await s.exec(q)).first()
            if locked is None:
                raise NotFound(f"incident {incident_id} not found")
            if locked.state == IncidentState.RESOLVED.value:
                raise TransitionError("incident is resolved")
            info = {"to": to, "paged": res.paged, "users": res.users, "oncall": res.oncall, "state": locked.state}
            locked.updated_at = now
            s.add(locked)
            self.metrics.incident_events.labels("reassigned").inc()
            ev = self._event(s, locked, now, "reassigned", by, note, {**(data or {}), **info})
            await self._queue(s, locked, res, ev, now, by, note)
        log.info("incident_reassigned", incident_id=incident_id, actor=by, target=to)
        self.kick_delivery()
        return {"to": to, "paged": res.paged, "users": res.users}

    def check_target(self, target: str) -> None:
        """Raise BadTarget unless ``target`` is ``user:``, ``schedule:`` or ``channel:`` with a configured name."""
        kind, _, name = target.partition(":") if isinstance(target, str) else ("", "", "")
        if kind not in ("user", "schedule", "channel") or not name:
            raise BadTarget(f"invalid target {target!r}: write user:NAME, schedule:NAME or channel:NAME")
        exists = {
            "user": lambda: self.config.user(name) is not None,
            "schedule": lambda: self.config.schedule(name) is not None,
            "channel": lambda: self.config.channel(name) is not None,
        }[kind]()
        if not exists:
            raise BadTarget(f"unknown {kind} {name!r}")

    # ------------------------------------------------------------------ targets and pages

    async def page_targets(
        self, s: AsyncSession, targets: Iterable[str], severity: str, now: datetime
    ) -> tuple[list[tuple[str, int, timedelta]], list[tuple[str, str]], list[str]]:
        """The incidents stage's hook for a route's own targets, resolved inside its transaction ``s``: the outbox
        rows to queue ``(target, dest_index, delay)``, the targets that page nobody with the reason, the users."""
        res = await self.resolve_targets(targets, severity, now, session=s)
        return res.pages, res.skipped, res.users

    async def resolve_targets(
        self, targets: Iterable[str], severity: str, now: datetime, session: AsyncSession | None = None
    ) -> Resolved:
        """Resolve targets at page time: a schedule to its on-call user, a user to the contact methods for the
        incident's urgency (each delayed by its ``after``), a channel to its URLs; never raises for config.

        With ``session`` the schedule overrides are read in that transaction (the caller holds the write lock).
        """
        out = Resolved()
        for target in targets:
            kind, _, name = target.partition(":")
            if kind == "schedule":
                sch = self.config.schedule(name)
                if sch is None:
                    out.skipped.append((target, f"schedule {name!r} is not configured"))
                    continue
                if session is None:
                    try:
                        shifts = await self.schedules.oncall(name, now)
                    except KeyError:  # removed by a reload that the schedule service saw first
                        out.skipped.append((target, f"schedule {name!r} is not configured"))
                        continue
                else:
                    shifts = oncall(sch, await load_overrides(session, name, now - CONTEXT, now + CONTEXT), now)
                if not shifts:
                    out.skipped.append((target, f"nobody is on call for schedule {name!r}"))
                    continue
                for sh in shifts:
                    self._user(sh.user, severity, out, via=target)
                    out.oncall.append({"schedule": name, "user": sh.user, "layer": sh.layer, "override": sh.override})
            elif kind == "user":
                self._user(name, severity, out)
            else:
                n = self.destinations(target)
                if n == 0:
                    out.skipped.append((target, f"{target} has no destinations"))
                out.pages.extend((target, i, timedelta(0)) for i in range(n))
        unique: dict[tuple[str, int], tuple[str, int, timedelta]] = {}
        for page in out.pages:  # a user reached twice (directly and on call) is paged once
            unique.setdefault((page[0], page[1]), page)
        out.pages = list(unique.values())
        return out

    def _user(self, user: str, severity: str, out: Resolved, via: str | None = None) -> None:
        target = f"user:{user}"
        if self.config.user(user) is None:
            out.skipped.append((via or target, f"user {user!r} is not configured"))
            return
        contacts = self.config.contacts(user)
        urgency = pol.urgency_of(severity)
        chosen = [(i, c) for i, c in enumerate(contacts) if c.applies(urgency)]
        if not chosen:
            why = "has no contact methods" if not contacts else f"has no contact method for {urgency} urgency"
            out.skipped.append((target, f"user {user!r} {why}"))
            return
        if user not in out.users:
            out.users.append(user)
        out.pages.extend((target, i, c.after) for i, c in chosen)

    async def _page(
        self,
        s: AsyncSession,
        inc: Incident,
        p: EscalationPolicy,
        step: pol.DueStep,
        res: Resolved,
        now: datetime,
        actor: str,
        note: str | None,
        extra: dict[str, Any] | None = None,
    ) -> int:
        data = {
            **(extra or {}),
            "policy": p.name,
            "step": step.step,
            "loop": step.loop,
            "targets": list(step.targets),
            "paged": res.paged,
            "users": res.users,
            "oncall": res.oncall,
            "manual": actor != SYSTEM_ACTOR,
        }
        text = _step_note(p, step) + (f": {note}" if note else "")
        inc.updated_at = now
        s.add(inc)
        ev = self._event(s, inc, now, "escalated", actor, text, data)
        self.metrics.incident_events.labels("escalated").inc()
        return await self._queue(s, inc, res, ev, now, actor, note, step)

    async def _queue(
        self,
        s: AsyncSession,
        inc: Incident,
        res: Resolved,
        ev: IncidentEvent,
        now: datetime,
        actor: str,
        note: str | None,
        step: pol.DueStep | None = None,
    ) -> int:
        where = {"step": step.step, "loop": step.loop} if step is not None else {}
        for target, why in res.skipped:
            self._event(s, inc, now, "notify_skipped", SYSTEM_ACTOR, why, {"target": target, **where})
        if not res.pages:
            return 0
        new = [t for t in res.paged if t not in inc.targets]
        if new:
            inc.targets = [*inc.targets, *new]  # a new list: the JSON column is saved only when reassigned
            s.add(inc)
        await s.flush()
        title, body, page = await self.render_page(s, inc, "trigger", actor, note)
        for target, index, delay in res.pages:
            s.add(
                Outbox(
                    incident_id=inc.id,
                    event_id=ev.id,
                    target=target,
                    dest_index=index,
                    kind="trigger",
                    severity=inc.severity,
                    title=title,
                    body=body,
                    state="pending",
                    next_attempt_at=now + delay,
                    created_at=now,
                    data=page,
                )
            )
        return len(res.pages)

    # ------------------------------------------------------------------ store helpers

    async def _load(self, iid: int) -> Incident | None:
        async with self.store.session() as s:
            return await s.get(Incident, iid)

    async def _claim(
        self,
        s: AsyncSession,
        inc: Incident,
        after: pol.EscState,
        *,
        states: tuple[str, ...] = (IncidentState.TRIGGERED.value,),
        wait: bool = False,
    ) -> Incident | None:
        """Move the incident's escalation state from what ``inc`` shows to ``after`` unless somebody changed it
        meanwhile; returns the incident as loaded in ``s`` (None when the claim failed)."""
        if not self.store.is_sqlite:
            q = select(Incident.id).where(Incident.id == inc.id).with_for_update(skip_locked=not wait)
            if (await s.exec(q)).first() is None:
                return None  # another instance (or an ack) holds the incident right now
        cond = [
            col(Incident.id) == inc.id,
            col(Incident.state).in_(states),
            col(Incident.esc_step) == inc.esc_step,
            col(Incident.esc_loop) == inc.esc_loop,
            _eq(col(Incident.esc_reason), inc.esc_reason),
            _eq(col(Incident.esc_due_at), inc.esc_due_at),
            _eq(col(Incident.esc_started_at), inc.esc_started_at),
        ]
        res = await s.exec(  # type: ignore[call-overload]
            sa.update(Incident).where(*cond).values(**columns(after)).execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:
            return None
        return await s.get(Incident, inc.id, populate_existing=True)

    def _event(
        self,
        s: AsyncSession,
        inc: Incident,
        now: datetime,
        kind: str,
        actor: str,
        note: str | None,
        data: dict[str, Any],
    ) -> IncidentEvent:
        ev = IncidentEvent(incident_id=inc.id, at=now, kind=kind, actor=actor, note=note, data=data)  # type: ignore[arg-type]
        s.add(ev)
        return ev


def _eq(column: Any, value: Any) -> Any:
    return column.is_(None) if value is None else column == value
