"""Silences as a service: stored in SQL with an audit trail, cached in memory, and the daemon's Muter.

``status`` answers for label sets whether active silences or inhibition rules mute them right now (the delivery
stage and the Alertmanager API ask). Silences are cached and re-read from SQL after every write and every few
seconds (two daemons may share one database); the firing alerts that can inhibit others are re-read at most once a
second. The engine module (``tick``) handles each ended silence once: with ``silences.expiry_notice`` it asks the
incidents stage to page again the still-triggered incidents it had kept quiet (alertmanager#730).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prometheus_client import Gauge
from sqlmodel import col, select

from fsincident.config import Config
from fsincident.core import Clock, FsIncidentError, MuteStatus, ensure_utc, isoformat, storable_text
from fsincident.matchers import Matcher, MatcherError
from fsincident.obs import Metrics, get_logger
from fsincident.silences import match
from fsincident.silences.match import ActiveSilence, Inhibitor, InhibitRule, SourceAlert
from fsincident.store import Store
from fsincident.store.tables import Alert, AuditLog, Incident, IncidentEvent, Outbox, Silence

log = get_logger("fsincident.silences")

REFRESH = 5.0
"""Seconds between re-reads of the silences from SQL (writes through this daemon re-read at once)."""
SOURCES_TTL = 1.0
"""Seconds the firing alerts that may inhibit others are cached."""
RETENTION = timedelta(hours=120)
"""Expired silences are deleted this long after they ended (Alertmanager's default ``--data.retention``)."""
GC_EVERY = 60.0
BATCH = 50
MAX_MATCHERS = 100
MAX_VALUE = 4096
MAX_COMMENT = 10_000
MAX_AUTHOR = 200
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
SYSTEM_ACTOR = "fsincident"


class SilenceError(FsIncidentError):
    """A silence request that cannot be honoured; ``status`` is the HTTP status (400 or 404)."""

    def __init__(self, message: str, status: int = 400, detail: Any = None):
        super().__init__(message)
        self.message, self.status, self.detail = message, status, detail


def ms(dt: datetime) -> datetime:
    """``dt`` in UTC, cut to whole milliseconds (the precision Alertmanager's API shows, so times round-trip)."""
    dt = dt.astimezone(UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def stored_matchers(row: Silence) -> tuple[Matcher, ...]:
    """The compiled matchers of a stored silence; raises MatcherError or ValueError for a corrupt row."""
    return tuple(match.matcher_from_am(m) for m in row.matchers)


def silence_state(row: Silence, now: datetime) -> str:
    """``pending``, ``active`` or ``expired`` at ``now``."""
    return match.state(ensure_utc(row.starts_at), ensure_utc(row.ends_at), now)  # type: ignore[arg-type]


def silence_dict(row: Silence, now: datetime) -> dict[str, Any]:
    """Our API form of a silence (``/api/v1/silences``): matchers as text such as ``alertname="Disk"``."""
    try:
        texts = [str(m) for m in stored_matchers(row)]
    except (MatcherError, ValueError):
        texts = [str(m) for m in row.matchers]
    return {
        "id": row.id,
        "state": silence_state(row, now),
        "matchers": texts,
        "starts_at": isoformat(row.starts_at),
        "ends_at": isoformat(row.ends_at),
        "created_by": row.created_by,
        "comment": row.comment,
        "created_at": isoformat(row.created_at),
        "updated_at": isoformat(row.updated_at),
    }


def sort_key(row: Silence, now: datetime) -> tuple[int, float]:
    """Alertmanager's listing order: active (ending first), pending (starting first), expired (latest first)."""
    st = silence_state(row, now)
    ends, starts = ensure_utc(row.ends_at), ensure_utc(row.starts_at)
    if st == match.ACTIVE:
        return (0, ends.timestamp())  # type: ignore[union-attr]
    if st == match.PENDING:
        return (1, starts.timestamp())  # type: ignore[union-attr]
    return (2, -ends.timestamp())  # type: ignore[union-attr]


def _compile(row: Silence) -> ActiveSilence | None:
    try:
        ms_ = stored_matchers(row)
    except (MatcherError, ValueError) as e:  # written by hand into the database; it mutes nothing
        log.warning("silence_unreadable", silence=row.id, error=str(e))
        return None
    return ActiveSilence(row.id, ms_, ensure_utc(row.starts_at), ensure_utc(row.ends_at))  # type: ignore[arg-type]


def _rules(config: Config) -> tuple[InhibitRule, ...]:
    return tuple(
        match.compile_rule(r.source_matchers, r.target_matchers, r.source_match, r.target_match, r.equal)
        for r in config.inhibit_rules
    )


def _gauge(metrics: Metrics) -> Gauge:
    return metrics.silences


class SilenceService:
    """Creates, updates, lists and expires silences (audited); answers whether label sets are muted (``Muter``)."""

    name = "silences"

    def __init__(self, store: Store, clock: Clock, metrics: Metrics, config: Config):
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.config = config
        self.kick_incidents: Callable[[], None] = lambda: None
        """Called after incidents were marked to be paged again (the daemon kicks the incidents stage)."""
        self.on_change: Callable[[], None] = lambda: None
        """Called after a silence was written (the daemon kicks this module, so an expiry is handled at once)."""
        self._rules = _rules(config)
        self._silences: tuple[ActiveSilence, ...] = ()
        self._loaded: float | None = None
        self._lock = asyncio.Lock()
        self._inhibitor: tuple[float, Inhibitor] | None = None
        self._inhibit_lock = asyncio.Lock()
        self._gc_at: float | None = None
        self._gauge = _gauge(metrics)

    def configure(self, config: Config) -> None:
        """Use a reloaded config (inhibition rules, expiry notices) from now on; raises MatcherError only for
        matchers the loader should have refused."""
        rules = _rules(config)
        self.config, self._rules, self._inhibitor = config, rules, None

    # ------------------------------------------------------------------ cache

    async def refresh(self) -> None:
        """Re-read the silences not yet ended from SQL; raises on a database error."""
        async with self._lock:
            now = self.clock.now()
            async with self.store.read() as s:
                rows = (await s.exec(select(Silence).where(col(Silence.ends_at) > now))).all()
            self._silences = tuple(c for c in (_compile(r) for r in rows) if c is not None)
            self._loaded = self.clock.monotonic()

    async def _current(self) -> tuple[ActiveSilence, ...]:
        if self._loaded is None or self.clock.monotonic() - self._loaded >= REFRESH:
            await self.refresh()
        return self._silences

    async def _inhibition(self) -> Inhibitor | None:
        if not self._rules:
            return None
        cached = self._inhibitor
        if cached is not None and self.clock.monotonic() - cached[0] < SOURCES_TTL:
            return cached[1]
        async with self._inhibit_lock:
            cached = self._inhibitor
            if cached is not None and self.clock.monotonic() - cached[0] < SOURCES_TTL:
                return cached[1]
            rules = self._rules
            q = (
                select(Alert.fingerprint, Alert.labels)
                .join(Incident, col(Incident.id) == col(Alert.incident_id))
                .where(col(Alert.state) == "firing", col(Incident.state) != "resolved")
            )
            async with self.store.read() as s:
                rows = (await s.exec(q)).all()
            inhibitor = Inhibitor(rules, (SourceAlert(fp, labels) for fp, labels in rows))
            if rules is self._rules:
                self._inhibitor = (self.clock.monotonic(), inhibitor)
            return inhibitor

    # ------------------------------------------------------------------ Muter

    async def status(self, label_sets: list[Mapping[str, str]], now: datetime) -> list[MuteStatus]:
        """Per label set: the active silences and the firing alert that mute it at ``now`` (``core.Muter``);
        raises only on a database error."""
        silences = await self._current()
        inhibitor = await self._inhibition()
        return _statuses(silences, inhibitor, label_sets, now)

    # ------------------------------------------------------------------ writes

    async def put(
        self,
        *,
        matchers: Sequence[Matcher],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
        silence_id: str | None = None,
        duration: timedelta | None = None,
    ) -> Silence:
        """Create a silence, or with ``silence_id`` update it as Alertmanager does (in place when only its end,
        comment or author change, else expire it and create a new one); raises SilenceError (400, or 404 for an
        unknown id). With ``duration`` the silence ends that long after it really starts (a start in the past is
        moved to now), so "2h" is two hours even when the clock moved on since the caller computed ``ends_at``."""
        now = self.clock.now()
        if duration is not None:
            ends_at = max(ms(starts_at), ms(now)) + duration
        for when in (starts_at, ends_at):
            if not EARLIEST <= when < LATEST:
                raise SilenceError("times must be between the years 1970 and 8999")
        starts_at, ends_at = ms(starts_at), ms(ends_at)
        if ends_at < now:
            raise SilenceError("end time can't be in the past")
        if ends_at <= starts_at:
            raise SilenceError("start time must be before end time")
        self._check(matchers, created_by, comment)
        am = [match.matcher_to_am(m) for m in matchers]
        created_by = created_by.strip() or SYSTEM_ACTOR
        async with self.store.session() as s:
            prev = None
            if silence_id is not None:
                q = select(Silence).where(col(Silence.id) == silence_id)
                if not self.store.is_sqlite:
                    q = q.with_for_update()
                prev = (await s.exec(q)).first()
                if prev is None:
                    raise SilenceError("silence not found", 404)
            if prev is not None and _can_update(prev, am, starts_at, ends_at, now):
                before = silence_dict(prev, now)
                prev.matchers, prev.ends_at, prev.comment, prev.created_by = am, ends_at, comment, created_by
                prev.starts_at, prev.updated_at = starts_at, now
                s.add(prev)
                await s.flush()
                self._audit(s, now, created_by, "silence_update", prev, {"before": before})
                row = prev
            else:
                if prev is not None and silence_state(prev, now) != match.EXPIRED:
                    self._expire_row(s, prev, now, created_by, replaced=True)
                row = Silence(
                    id=str(uuid.uuid4()),
                    matchers=am,
                    starts_at=max(starts_at, ms(now)),
                    ends_at=ends_at,
                    created_by=created_by,
                    comment=comment,
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
                await s.flush()
                self._audit(s, now, created_by, "silence_create", row, {"replaces": silence_id} if prev else {})
        log.info("silence_saved", silence=row.id, actor=created_by, matchers=[str(m) for m in matchers])
        await self._written()
        return row

    def _check(self, matchers: Sequence[Matcher], created_by: str, comment: str) -> None:
        if len(matchers) > MAX_MATCHERS:
            raise SilenceError(f"a silence has at most {MAX_MATCHERS} matchers")
        why = match.problems(matchers)
        if why:
            raise SilenceError(f"silence invalid: {why}")
        for i, m in enumerate(matchers):
            if len(m.value) > MAX_VALUE:
                raise SilenceError(f"silence invalid: invalid label matcher {i}: value longer than {MAX_VALUE}")
        if len(comment) > MAX_COMMENT:
            raise SilenceError(f"comment is longer than {MAX_COMMENT} characters")
        if len(created_by) > MAX_AUTHOR:
            raise SilenceError(f"createdBy is longer than {MAX_AUTHOR} characters")
        for what, text in (("comment", comment), ("createdBy", created_by)):
            if not storable_text(text):
                raise SilenceError(f"{what} contains a NUL character or an unpaired surrogate")

    async def expire(self, silence_id: str, by: str) -> Silence:
        """End a silence now (a pending one never starts); an expired one is left as it is. Raises SilenceError
        404 for an unknown id."""
        now = self.clock.now()
        by = by.strip()[:MAX_AUTHOR] or SYSTEM_ACTOR
        async with self.store.session() as s:
            q = select(Silence).where(col(Silence.id) == silence_id)
            if not self.store.is_sqlite:
                q = q.with_for_update()
            row = (await s.exec(q)).first()
            if row is None:
                raise SilenceError("silence not found", 404)
            if silence_state(row, now) == match.EXPIRED:
                return row
            self._expire_row(s, row, now, by)
        log.info("silence_expired", silence=silence_id, actor=by)
        await self._written()
        return row

    def _expire_row(self, s: Any, row: Silence, now: datetime, by: str, replaced: bool = False) -> None:
        if silence_state(row, now) == match.PENDING:
            row.starts_at = now
        row.ends_at, row.updated_at = now, now
        s.add(row)
        self._audit(s, now, by, "silence_expire", row, {"replaced": True} if replaced else {})

    def _audit(self, s: Any, now: datetime, actor: str, action: str, row: Silence, extra: dict[str, Any]) -> None:
        data = {**silence_dict(row, now), **extra}
        s.add(AuditLog(at=now, actor=actor[:MAX_AUTHOR], action=action, object=f"silence:{row.id}", data=data))

    async def _written(self) -> None:
        try:
            await self.refresh()
        except Exception:  # the write is committed; the next refresh picks it up
            log.exception("silence_refresh_failed")
        self.on_change()

    # ------------------------------------------------------------------ reads

    async def get(self, silence_id: str) -> Silence:
        """One silence; raises SilenceError 404."""
        async with self.store.read() as s:
            row = await s.get(Silence, silence_id)
        if row is None:
            raise SilenceError("silence not found", 404)
        return row

    async def list(self, state: str | None = None, filters: Sequence[Matcher] = ()) -> list[Silence]:
        """Silences (expired ones until deleted after ``RETENTION``) in Alertmanager's order, optionally of one
        state and containing every ``filters`` matcher; never fails but on a database error."""
        now = self.clock.now()
        async with self.store.read() as s:
            rows = (await s.exec(select(Silence))).all()
        out = []
        for r in rows:
            if state is not None and silence_state(r, now) != state:
                continue
            if filters:
                try:
                    own = stored_matchers(r)
                except (MatcherError, ValueError):
                    continue
                if not match.filter_matches(filters, own):
                    continue
            out.append(r)
        out.sort(key=lambda r: sort_key(r, now))
        return out

    # ------------------------------------------------------------------ engine module

    async def tick(self, now: datetime) -> bool:
        """Refresh the cache, handle silences that ended (expiry notices), delete long-expired ones; True when
        ended silences were handled (more may be waiting)."""
        if self._loaded is None or self.clock.monotonic() - self._loaded >= REFRESH:
            await self.refresh()
            await self._count(now)
        did = await self._handle_ended(now)
        if self._gc_at is None or self.clock.monotonic() - self._gc_at >= GC_EVERY:
            self._gc_at = self.clock.monotonic()
            await self._gc(now)
        return did

    async def sleep_hint(self, now: datetime) -> float | None:
        """Seconds until the next silence starts or ends (so its end is handled right then), or None."""
        nxt = [t for s in self._silences for t in (s.starts_at, s.ends_at) if t > now]
        return (min(nxt) - now).total_seconds() if nxt else None

    async def _count(self, now: datetime) -> None:
        async with self.store.read() as s:
            expired = (await s.exec(select(sa.func.count()).where(col(Silence.ends_at) <= now))).one()
        pending = sum(1 for x in self._silences if x.starts_at > now)
        active = sum(1 for x in self._silences if x.starts_at <= now < x.ends_at)
        self._gauge.labels("active").set(active)
        self._gauge.labels("pending").set(pending)
        self._gauge.labels("expired").set(int(expired))  # type: ignore[call-overload]

    async def _handle_ended(self, now: datetime) -> bool:
        q = (
            select(Silence.id)
            .where(col(Silence.ends_at) <= now, col(Silence.expiry_handled).is_(False))
            .order_by(col(Silence.ends_at))
            .limit(BATCH)
        )
        async with self.store.read() as s:
            ids = list((await s.exec(q)).all())
        if not ids:
            return False
        # Warm the caches outside the transactions below, which then decide from memory.
        silences = await self._current()
        inhibitor = await self._inhibition()
        paged = 0
        for sid in ids:
            paged += await self._ended(sid, now, silences, inhibitor)
        if paged:
            self.kick_incidents()
        await self._count(now)
        return True

    async def _ended(
        self, sid: str, now: datetime, silences: tuple[ActiveSilence, ...], inhibitor: Inhibitor | None
    ) -> int:
        """Mark one ended silence handled (compare-and-set: one daemon wins) and, with expiry notices, mark the
        triggered incidents it kept quiet that are no longer muted to be paged again; returns how many."""
        events = 0
        async with self.store.session() as s:
            res = await s.exec(  # type: ignore[call-overload]
                sa.update(Silence)
                .where(col(Silence.id) == sid, col(Silence.expiry_handled).is_(False))
                .values(expiry_handled=True)
            )
            if res.rowcount != 1:
                return 0
            row = await s.get(Silence, sid)
            if row is None or not self.config.silences.expiry_notice:
                return 0
            compiled = _compile(row)
            if compiled is None or compiled.starts_at >= compiled.ends_at:  # expired before it started: muted nothing
                return 0
            muted = select(Outbox.incident_id).where(col(Outbox.state) == "muted")
            q = select(Incident).where(col(Incident.state) == "triggered", col(Incident.id).in_(muted))
            if not self.store.is_sqlite:
                q = q.with_for_update()
            incidents = {i.id: i for i in (await s.exec(q)).all()}
            if not incidents:
                return 0
            alerts = (
                await s.exec(
                    select(Alert).where(col(Alert.incident_id).in_(list(incidents)), col(Alert.state) == "firing")
                )
            ).all()
            by_incident: dict[int, list[Alert]] = {}
            for a in alerts:
                by_incident.setdefault(a.incident_id, []).append(a)
            for iid, firing in by_incident.items():
                was = [a for a in firing if match.matches(compiled.matchers, a.labels)]
                if not was:
                    continue
                statuses = _statuses(silences, inhibitor, [a.labels for a in firing], now)
                if all(st.muted for st in statuses):
                    continue
                inc = incidents[iid]
                due = ensure_utc(inc.notify_due_at)
                if due is None or due > now:
                    inc.notify_due_at, inc.notify_reason = now, "unmuted"
                inc.updated_at = now
                s.add(inc)
                s.add(
                    IncidentEvent(
                        incident_id=iid,
                        at=now,
                        kind="silence_expired",
                        actor=SYSTEM_ACTOR,
                        note=f"silence {sid} ended while its alerts still fire",
                        data={
                            "silence_id": sid,
                            "matchers": [str(m) for m in compiled.matchers],
                            "fingerprints": sorted(a.fingerprint for a in was),
                        },
                    )
                )
                events += 1
        if events:
            self.metrics.incident_events.labels("silence_expired").inc(events)
            log.info("silence_expiry_notice", silence=sid, incidents=events)
        return events

    async def _gc(self, now: datetime) -> None:
        async with self.store.session() as s:
            res = await s.exec(  # type: ignore[call-overload]
                sa.delete(Silence).where(col(Silence.ends_at) < now - RETENTION, col(Silence.expiry_handled).is_(True))
            )
        if res.rowcount:
            log.info("silences_deleted", count=res.rowcount, older_than=str(RETENTION))


def _statuses(
    silences: Sequence[ActiveSilence],
    inhibitor: Inhibitor | None,
    label_sets: Sequence[Mapping[str, str]],
    now: datetime,
) -> list[MuteStatus]:
    active = [s for s in silences if s.starts_at <= now < s.ends_at]
    out = []
    for labels in label_sets:
        sb = match.silenced_by(active, labels, now) if active else ()
        ib = inhibitor.inhibited_by(labels) if inhibitor is not None else ()
        out.append(MuteStatus(sb, ib))
    return out


def _can_update(prev: Silence, am: list[dict[str, Any]], starts_at: datetime, ends_at: datetime, now: datetime) -> bool:
    """Alertmanager's rule: same matchers; an active silence keeps its start and may not end in the past; a
    pending one may not start in the past; an expired one is never updated."""
    if list(prev.matchers) != am:
        return False
    st = silence_state(prev, now)
    if st == match.ACTIVE:
        return starts_at == ensure_utc(prev.starts_at) and ends_at >= now
    if st == match.PENDING:
        return starts_at >= now
    return False
