"""Schedules as a service: overrides kept in SQL (with an audit trail), who is on call, shift listings,
and the engine module that queues a notice to the incoming person at every handoff.

The calculations are the pure functions of :mod:`fsincident.escalation.oncall`; this module loads
the facts (the configured schedule and the overrides stored in SQL), calls them, and persists.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from fsincident.config import Config, Schedule
from fsincident.core import Clock, FsIncidentError, ensure_utc, isoformat, parse_duration, storable_text
from fsincident.escalation.oncall import Override, Shift, final_shifts, handoffs, oncall
from fsincident.obs import Metrics, get_logger
from fsincident.store import Store
from fsincident.store.tables import AuditLog, Outbox, ScheduleOverride, ScheduleState

log = get_logger("fsincident.schedules")

MAX_OVERRIDE = timedelta(days=366)
"""The longest override (a year, leap years included)."""
CONTEXT = timedelta(days=400)
"""Overrides this far around an instant or range are loaded: they can bound the shift that contains it."""
MAX_RANGE = timedelta(days=400)
"""The longest range a shift listing may cover."""
SYSTEM_ACTOR = "fsincident"
LOOKAHEAD = timedelta(minutes=2)
"""How far ahead the handoff notifier looks for the next handoff, to wake up right at it."""
_EPS = timedelta(microseconds=1)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Times outside [EARLIEST, LATEST) are refused: calculations around them would leave datetime's range."""


class ScheduleError(FsIncidentError):
    """A schedule request that cannot be honoured; ``status`` is the HTTP status (400, 404 or 409)."""

    def __init__(self, message: str, status: int = 400, detail: Any = None):
        super().__init__(message)
        self.message, self.status, self.detail = message, status, detail


class UnknownSchedule(KeyError):
    """No schedule of that name is configured."""

    def __str__(self) -> str:
        return f"schedule {self.args[0]!r} is not configured"


# ---------------------------------------------------------------------- pure helpers

_RELATIVE = re.compile(r"^now\s*(?:([+-])\s*(\S+))?$", re.IGNORECASE)
_PLUS_AS_SPACE = re.compile(r"^(.+[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}(?::?\d{2})?)$")


def parse_instant(text: str, now: datetime, *, local: bool = False) -> datetime:
    """``now``, ``now+2h``, ``now-1d`` or ISO 8601 as an aware UTC datetime; raises ValueError saying what is wrong.

    A time without a UTC offset is an error, or with ``local`` a time in this machine's time zone.
    """
    s = text.strip()
    m = _RELATIVE.match(s)
    if m:
        if not m.group(1):
            return _bounded(now.astimezone(UTC), text)
        delta = parse_duration(m.group(2))
        try:
            return _bounded((now + delta if m.group(1) == "+" else now - delta).astimezone(UTC), text)
        except OverflowError:
            raise ValueError(f"{text[:64]!r} is out of range") from None
    # A '+' in a URL query arrives as a space: put the UTC offset's sign back.
    p = _PLUS_AS_SPACE.match(s)
    if p:
        s = f"{p.group(1)}+{p.group(2)}"
    if s.endswith(("z", "Z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"{text[:64]!r} is not ISO 8601 (nor now, now+DURATION, now-DURATION)") from None
    if dt.tzinfo is None and not local:
        raise ValueError(f"{text[:64]!r} needs a UTC offset (e.g. 2026-01-05T09:00:00+01:00 or ...Z)")
    try:
        # A naive datetime's astimezone() takes it as the machine's local time (DST included).
        return _bounded(dt.astimezone(UTC), text)
    except (OverflowError, OSError):
        raise ValueError(f"{text[:64]!r} is out of range") from None


def _bounded(dt: datetime, text: str) -> datetime:
    if not EARLIEST <= dt < LATEST:
        raise ValueError(f"{text[:64]!r} is out of range (years 1970 to 8999)")
    return dt


def shift_dict(shift: Shift) -> dict[str, Any]:
    """The API form of a shift: ``{"user", "layer", "from", "until"}`` plus ``"override"`` for an override's shift."""
    out: dict[str, Any] = {
        "user": shift.user,
        "layer": shift.layer,
        "from": isoformat(shift.start),
        "until": isoformat(shift.end),
    }
    if shift.override is not None:
        out["override"] = shift.override
    return out


def override_dict(row: ScheduleOverride) -> dict[str, Any]:
    """The API form of a stored override."""
    return {
        "id": row.id,
        "schedule": row.schedule,
        "who": row.who,
        "replaces": row.replaces,
        "from": isoformat(row.starts_at),
        "to": isoformat(row.ends_at),
        "note": row.note,
        "created_by": row.created_by,
        "created_at": isoformat(row.created_at),
    }


def audit_dict(row: AuditLog) -> dict[str, Any]:
    """The API form of an audit log row."""
    return {
        "id": row.id,
        "at": isoformat(row.at),
        "actor": row.actor,
        "action": row.action,
        "object": row.object,
        "data": row.data,
    }


def layer_dict(layer: Any) -> dict[str, Any]:
    """The API form of a configured layer (its rotation, handoff time, start, users and restrictions)."""
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    every = getattr(layer, "every", None)
    handoff_day = getattr(layer, "handoff_day", None)
    handoff = layer.handoff.strftime("%H:%M")
    return {
        "layer": layer.number,
        "rotation": layer.rotation,
        "every": int(every.total_seconds()) if every is not None else None,
        "handoff": f"{days[handoff_day].capitalize()} {handoff}" if handoff_day is not None else handoff,
        "start": layer.start.isoformat(),
        "users": list(layer.users),
        "restrictions": [
            {
                "days": [days[d] for d in sorted(r.days)],
                "from": r.start.strftime("%H:%M"),
                "to": r.end.strftime("%H:%M"),
            }
            for r in layer.restrictions
        ],
    }


def _to_override(row: ScheduleOverride) -> Override:
    return Override(
        id=row.id,  # type: ignore[arg-type]
        who=row.who,
        start=ensure_utc(row.starts_at),  # type: ignore[arg-type]
        end=ensure_utc(row.ends_at),  # type: ignore[arg-type]
        replaces=row.replaces,
    )


async def load_overrides(s: AsyncSession, schedule: str, start: datetime, end: datetime) -> list[Override]:
    """The overrides of ``schedule`` that overlap ``[start, end)``, in start order."""
    rows = (
        await s.exec(
            select(ScheduleOverride)
            .where(
                col(ScheduleOverride.schedule) == schedule,
                col(ScheduleOverride.starts_at) < end,
                col(ScheduleOverride.ends_at) > start,
            )
            .order_by(col(ScheduleOverride.starts_at), col(ScheduleOverride.id))
        )
    ).all()
    return [_to_override(r) for r in rows]


# ---------------------------------------------------------------------- the service


@dataclass(frozen=True)
class UserShift:
    """A final shift of one schedule (for per-user listings across schedules)."""

    schedule: str
    shift: Shift


class ScheduleService:
    """Answers who is on call and lists shifts (config + SQL overrides); creates and deletes overrides with audit."""

    def __init__(self, store: Store, clock: Clock, metrics: Metrics, config: Config):
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.config = config
        self.on_change: Callable[[], None] = lambda: None
        """Called after an override was created or deleted (the daemon kicks the handoff notifier)."""

    def configure(self, config: Config) -> None:
        """Use a reloaded config from now on (never fails)."""
        self.config = config
        self.on_change()

    # ------------------------------------------------------------------ config

    @property
    def schedules(self) -> tuple[Schedule, ...]:
        return tuple(self.config.schedules)

    def schedule(self, name: str) -> Schedule:
        """The configured schedule ``name``; raises UnknownSchedule (a KeyError)."""
        try:
            sch = self.config.schedule(name)
        except KeyError:
            sch = None
        if sch is None:
            raise UnknownSchedule(name)
        return sch

    def is_user(self, name: str) -> bool:
        return self.config.user(name) is not None

    # ------------------------------------------------------------------ queries

    async def oncall(self, name: str, at: datetime) -> list[Shift]:
        """Who is on call for ``name`` at ``at`` ([] or one final Shift); raises UnknownSchedule (a KeyError)."""
        sch = self.schedule(name)
        at = at.astimezone(UTC)
        async with self.store.session() as s:
            overrides = await load_overrides(s, name, at - CONTEXT, at + CONTEXT)
        return oncall(sch, overrides, at)

    async def oncall_all(self, at: datetime) -> list[tuple[str, list[Shift]]]:
        """Who is on call at ``at`` for every configured schedule, in config order (never fails for config)."""
        at = at.astimezone(UTC)
        out = []
        async with self.store.session() as s:
            for sch in self.schedules:
                overrides = await load_overrides(s, sch.name, at - CONTEXT, at + CONTEXT)
                out.append((sch.name, oncall(sch, overrides, at)))
        return out

    async def shifts(self, name: str, start: datetime, end: datetime, *, whole: bool = False) -> list[Shift]:
        """The final shifts of ``name`` in ``[start, end)``; raises UnknownSchedule, or ScheduleError for a bad range.

        With ``whole`` the first and last shifts keep their true bounds instead of being cut at the range.
        """
        sch = self.schedule(name)
        async with self.store.session() as s:
            return await self._shifts(s, sch, start, end, whole)

    async def user_shifts(self, user: str, start: datetime, end: datetime, *, whole: bool = False) -> list[UserShift]:
        """``user``'s final shifts in ``[start, end)`` in all schedules; raises ScheduleError 404 for unknown users."""
        if not self.is_user(user):
            raise ScheduleError(f"user {user!r} is not configured", 404)
        out: list[UserShift] = []
        async with self.store.session() as s:
            for sch in self.schedules:
                for sh in await self._shifts(s, sch, start, end, whole):
                    if sh.user == user:
                        out.append(UserShift(sch.name, sh))
        out.sort(key=lambda u: (u.shift.start, u.schedule))
        return out

    async def all_shifts(self, start: datetime, end: datetime) -> list[tuple[str, str, datetime, datetime]]:
        """Every schedule's final shifts cut to ``[start, end)`` as ``(schedule, user, start, end)``, in schedule
        then time order (for on-call load reports); raises ScheduleError for a bad or over-long range."""
        out: list[tuple[str, str, datetime, datetime]] = []
        async with self.store.read() as s:  # reads only: a long report must not hold the write lock
            for sch in self.schedules:
                for sh in await self._shifts(s, sch, start, end, False):
                    out.append((sch.name, sh.user, sh.start, sh.end))
        return out

    async def _shifts(self, s: AsyncSession, sch: Schedule, start: datetime, end: datetime, whole: bool) -> list[Shift]:
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if end <= start:
            raise ScheduleError("'from' must be before 'to'")
        if end - start > MAX_RANGE:
            raise ScheduleError(f"a shift listing covers at most {MAX_RANGE.days} days")
        overrides = await load_overrides(s, sch.name, start - CONTEXT, end + CONTEXT)
        if whole:
            # Widen to the shifts containing the ends, so an export's events keep stable bounds (and UIDs).
            first = oncall(sch, overrides, start)
            last = oncall(sch, overrides, end)
            if first:
                start = min(start, first[0].start)
            if last:
                end = max(end, last[0].end)
        return final_shifts(sch, overrides, start, end)

    # ------------------------------------------------------------------ overrides

    async def create_override(
        self,
        name: str,
        *,
        who: str,
        start: datetime,
        end: datetime,
        by: str,
        replaces: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Store an override and its audit row in one transaction; raises UnknownSchedule or ScheduleError (400)."""
        self.schedule(name)
        now = self.clock.now()
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        problems = []
        if not self.is_user(who):
            problems.append(f"'who': user {who!r} is not configured")
        if replaces is not None and not self.is_user(replaces):
            problems.append(f"'replaces': user {replaces!r} is not configured")
        if replaces is not None and replaces == who:
            problems.append("'replaces' must name someone other than 'who'")
        if problems:
            raise ScheduleError(problems[0], 400, {"problems": problems, "users": [u.name for u in self.config.users]})
        if end <= start:
            raise ScheduleError("'from' must be before 'to'")
        if end - start > MAX_OVERRIDE:
            raise ScheduleError("an override lasts at most a year (366 days)")
        if end <= now:
            raise ScheduleError("the override is entirely in the past", 400, {"now": isoformat(now)})
        if note is not None and len(note) > 2000:
            raise ScheduleError("'note' is longer than 2000 characters")
        for field, value in (("by", by), ("note", note)):
            if value is not None and not storable_text(value):
                raise ScheduleError(f"{field!r} contains a NUL character or an unpaired surrogate")
        by = by.strip()[:200] or SYSTEM_ACTOR
        async with self.store.session() as s:
            row = ScheduleOverride(
                schedule=name,
                who=who,
                replaces=replaces,
                starts_at=start,
                ends_at=end,
                note=note,
                created_by=by,
                created_at=now,
            )
            s.add(row)
            await s.flush()
            out = override_dict(row)
            s.add(AuditLog(at=now, actor=by, action="override.create", object=f"schedule:{name}", data=out))
        log.info("override_created", schedule=name, override=out["id"], who=who, actor=by)
        self.on_change()
        return out

    async def list_overrides(
        self, name: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Overrides of ``name`` overlapping ``[start, end)`` (default: those not yet over); raises UnknownSchedule."""
        self.schedule(name)
        start = start.astimezone(UTC) if start is not None else self.clock.now()
        q = select(ScheduleOverride).where(
            col(ScheduleOverride.schedule) == name, col(ScheduleOverride.ends_at) > start
        )
        if end is not None:
            q = q.where(col(ScheduleOverride.starts_at) < end.astimezone(UTC))
        async with self.store.session() as s:
            rows = (await s.exec(q.order_by(col(ScheduleOverride.starts_at), col(ScheduleOverride.id)))).all()
        return [override_dict(r) for r in rows]

    async def delete_override(self, name: str, override_id: int, by: str) -> dict[str, Any]:
        """Delete an override and write its audit row in one transaction; raises UnknownSchedule, ScheduleError 404."""
        self.schedule(name)
        now = self.clock.now()
        by = by.strip()[:200] or SYSTEM_ACTOR
        async with self.store.session() as s:
            row = await s.get(ScheduleOverride, override_id)
            if row is None or row.schedule != name:
                raise ScheduleError(f"override {override_id} of schedule {name!r} not found", 404)
            out = override_dict(row)
            res = await s.exec(  # type: ignore[call-overload]
                sa.delete(ScheduleOverride).where(col(ScheduleOverride.id) == override_id)
            )
            if res.rowcount != 1:  # deleted concurrently
                raise ScheduleError(f"override {override_id} of schedule {name!r} not found", 404)
            s.add(AuditLog(at=now, actor=by, action="override.delete", object=f"schedule:{name}", data=out))
        log.info("override_deleted", schedule=name, override=override_id, actor=by)
        self.on_change()
        return out

    async def audit(self, limit: int = 100, object_: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` audit rows (optionally of one object), newest first."""
        q = select(AuditLog).order_by(col(AuditLog.id).desc()).limit(limit)
        if object_:
            q = q.where(col(AuditLog.object) == object_)
        async with self.store.session() as s:
            rows = (await s.exec(q)).all()
        return [audit_dict(r) for r in rows]


# ---------------------------------------------------------------------- handoff notices


def on_call_until(sch: Schedule, overrides: Sequence[Override], at: datetime, user: str) -> datetime | None:
    """When ``user``, on call at ``at``, next goes off call (across layer changes that keep them on), or None
    when that is more than a year away; never fails for aware datetimes."""
    span = timedelta(days=1)
    while True:
        end = at + span
        cur = at
        for sh in final_shifts(sch, overrides, at, end):
            if sh.start != cur or sh.user != user:
                return cur
            cur = sh.end
        if cur < end:
            return cur
        if span >= MAX_OVERRIDE:
            return None
        span = min(span * 8, MAX_OVERRIDE)


SUMMARY_SPAN = timedelta(days=31)
"""A shift summary looks back at most this far for the start of the outgoing person's shift."""

SummaryFn = Callable[[AsyncSession, str, str, str, datetime, datetime, datetime], Awaitable[int]]
"""``(session, schedule, outgoing, incoming, shift_start, handoff_at, now) -> rows queued``: queues a shift summary
in the notifier's transaction (the daemon wires the analytics stage's; escalation never imports it)."""


def shift_start(sch: Schedule, overrides: Sequence[Override], at: datetime, user: str) -> datetime:
    """When ``user``, on call until the handoff at ``at``, went on call (their contiguous final shifts, at most
    SUMMARY_SPAN back); ``at`` itself when they were not on call just before it. Never fails for aware datetimes."""
    start = at
    for sh in reversed(final_shifts(sch, overrides, at - SUMMARY_SPAN, at)):
        if sh.user != user or sh.end != start:
            break
        start = sh.start
    return start


def _local(dt: datetime | None, tz: str) -> str:
    if dt is None:
        return "further notice"
    try:
        zone = ZoneInfo(tz)
    except Exception:
        zone = ZoneInfo("UTC")
    return dt.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")


class HandoffNotifier:
    """The engine module that queues "you are now on call" notices to the incoming person of every handoff.

    Per schedule, ``schedule_state.last_handoff_at`` marks how far notices were queued; each tick
    queues the handoffs in ``(last_handoff_at, now]`` and moves the mark in the same transaction,
    so a restart neither repeats nor skips a notice. The first run only records ``now``.
    """

    name = "handoffs"

    def __init__(
        self,
        schedules: ScheduleService,
        destinations: Callable[[str], int],
        kick_delivery: Callable[[], None] = lambda: None,
        summary: SummaryFn | None = None,
    ):
        self.schedules = schedules
        self.store = schedules.store
        self.destinations = destinations
        self.kick_delivery = kick_delivery
        self.summary = summary
        """Queues the shift summary of each handoff in the same transaction (``analytics.handoff_summary``)."""
        self._next: datetime | None = None

    async def tick(self, now: datetime) -> bool:
        """Queue the notices of every handoff since the last tick; True when any was queued."""
        now = now.astimezone(UTC)
        queued = 0
        nxt: datetime | None = None
        for sch in self.schedules.schedules:
            try:
                n, upcoming = await self._schedule(sch, now)
            except (sa.exc.IntegrityError, _Lost):  # another instance got there first; its notices count
                continue
            queued += n
            if upcoming is not None and (nxt is None or upcoming < nxt):
                nxt = upcoming
        self._next = nxt
        if queued:
            self.kick_delivery()
        return queued > 0

    async def sleep_hint(self, now: datetime) -> float | None:
        """Seconds until the next known handoff, so its notice is queued right at it."""
        return None if self._next is None else (self._next - now).total_seconds()

    async def _schedule(self, sch: Schedule, now: datetime) -> tuple[int, datetime | None]:
        queued = 0
        async with self.store.session() as s:
            q = select(ScheduleState).where(col(ScheduleState.schedule) == sch.name)
            if not self.store.is_sqlite:
                q = q.with_for_update()
            state = (await s.exec(q)).first()
            last = ensure_utc(state.last_handoff_at) if state is not None else None
            overrides = await load_overrides(s, sch.name, (last or now) - CONTEXT, now + CONTEXT)
            current = next((sh.user for sh in oncall(sch, overrides, now)), None)
            if state is None or last is None:
                # First run: nothing in the past is announced.
                if state is None:
                    s.add(ScheduleState(schedule=sch.name, last_handoff_at=now, announced_user=current))
                else:
                    state.last_handoff_at, state.announced_user = now, current
                    s.add(state)
                log.info("handoffs_started", schedule=sch.name, at=isoformat(now))
            elif last < now:
                announced = state.announced_user
                for at, outgoing, incoming in handoffs(sch, overrides, last, now + _EPS):
                    at = at.astimezone(UTC)
                    if not last < at <= now:
                        continue
                    queued += self._queue(s, sch, overrides, at, outgoing, incoming, now)
                    queued += await self._summary(s, sch, overrides, at, outgoing, incoming, now)
                    announced = incoming
                if current is not None and current != announced:
                    # Who is on call changed without a handoff inside (last, now]: an override created with a
                    # start in the past, an override deleted mid-shift, a reload. Tell the person on call now.
                    queued += self._queue(s, sch, overrides, now, announced, current, now)
                res = await s.exec(  # type: ignore[call-overload]
                    sa.update(ScheduleState)
                    .where(col(ScheduleState.schedule) == sch.name, col(ScheduleState.last_handoff_at) == last)
                    .values(last_handoff_at=now, announced_user=current)
                )
                if res.rowcount != 1:
                    # Another instance advanced the mark first: roll back, its notices are the ones that count.
                    raise _Lost()
            upcoming = [
                at.astimezone(UTC)
                for at, _, _ in handoffs(sch, overrides, now, now + LOOKAHEAD)
                if at.astimezone(UTC) > now
            ]
        return queued, min(upcoming, default=None)

    def _queue(
        self,
        s: AsyncSession,
        sch: Schedule,
        overrides: Sequence[Override],
        at: datetime,
        outgoing: str | None,
        incoming: str,
        now: datetime,
    ) -> int:
        shift = next((sh for sh in oncall(sch, overrides, at) if sh.user == incoming), None)
        until = on_call_until(sch, overrides, at, incoming)
        if until is not None and until <= now:
            # The shift is already over (the daemon was down through it): "you are now on call" would be false.
            log.warning("handoff_notice_stale", schedule=sch.name, user=incoming, at=isoformat(at))
            return 0
        target = f"user:{incoming}"
        indices = self._contacts(incoming)
        if not indices:
            log.warning("handoff_notice_skipped", schedule=sch.name, target=target, reason="no contacts")
            return 0
        user = self.schedules.config.user(incoming)
        tz = getattr(user, "timezone", None) or sch.timezone
        title = f"You are now on call for {sch.name}"
        lines = [
            f"You are on call for {sch.name} from {_local(at, tz)} until {_local(until, tz)}.",
            f"Handed over by {outgoing}." if outgoing else "Nobody was on call before you.",
        ]
        if shift is not None and shift.override is not None:
            lines.append(f"This shift is override #{shift.override}.")
        lines.append(f"(UTC: {isoformat(at)} to {isoformat(until) or 'open end'})")
        for i in indices:
            s.add(
                Outbox(
                    incident_id=None,
                    event_id=None,
                    target=target,
                    dest_index=i,
                    kind="handoff",
                    severity="info",
                    title=title,
                    body="\n".join(lines),
                    state="pending",
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        log.info("handoff_notice_queued", schedule=sch.name, target=target, at=isoformat(at), outgoing=outgoing)
        return len(indices)

    async def _summary(
        self,
        s: AsyncSession,
        sch: Schedule,
        overrides: Sequence[Override],
        at: datetime,
        outgoing: str | None,
        incoming: str,
        now: datetime,
    ) -> int:
        """Queue the outgoing shift's summary through the injected ``summary`` (0 without one or an outgoing
        person); a database error rolls the whole tick back (retried), any other failure only loses the summary."""
        if self.summary is None or not outgoing or outgoing == incoming:
            return 0
        start = shift_start(sch, overrides, at, outgoing)
        try:
            return await self.summary(s, sch.name, outgoing, incoming, start, at, now)
        except sa.exc.SQLAlchemyError:
            raise
        except Exception:
            log.exception("handoff_summary_failed", schedule=sch.name, target=f"user:{outgoing}")
            return 0

    def _contacts(self, user: str) -> list[int]:
        """The destination indexes a handoff notice goes to: every contact not restricted to high urgency."""
        n = self.destinations(f"user:{user}")
        contacts = self.schedules.config.contacts(user)
        if len(contacts) != n:  # the delivery stage has another view of this user: all its destinations
            return list(range(n))
        return [i for i, c in enumerate(contacts) if c.applies("low")]


class _Lost(FsIncidentError):
    """The compare-and-set on ``schedule_state`` touched no row."""
