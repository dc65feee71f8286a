"""Loading the facts of a period with column selects and SQL aggregates (no ORM objects), fast on 100k incidents.

Times come back as Unix seconds (milliseconds) computed by the database (``julianday`` on SQLite, ``extract(epoch
...)`` on PostgreSQL), so no datetime is parsed per row. One plain row per incident comes back; what the outbox,
the alerts and the timeline add (pages, first alert start, re-triggers, escalations, notes, pages to people) is
aggregated with ``GROUP BY`` over the period's id range, one query per table (no correlated subquery per incident),
and the services' outage spans come from one query for all services. Rows are fetched straight from the driver.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from fsincident.analytics.records import NONE_GROUP, IncidentRecord
from fsincident.matchers import Matcher
from fsincident.store.tables import Alert, Incident, IncidentEvent, Outbox

UNPAGED_STATES = ("cancelled", "muted")
"""Outbox states of trigger rows that reached nobody: not counted as pages."""


def epoch(column: Any, sqlite: bool) -> Any:
    """SQL for a timestamp column as Unix seconds (float, millisecond precision on SQLite)."""
    if sqlite:  # julianday keeps SQLite's millisecond precision (to within 50 µs): whole milliseconds again
        return sa.cast((sa.func.julianday(column) - 2440587.5) * 86400000.0 + 0.5, sa.Integer) / 1000.0
    # date_part computes in double precision: the same value as extract's exact numeric cast to float, cheaper
    return sa.func.date_part("epoch", column, type_=sa.Float)


def json_text(column: Any, key: str, sqlite: bool) -> Any:
    """SQL for a string member of a JSON object column (NULL when missing); ``key`` must be a label name."""
    if sqlite:  # json_extract returns the text itself; a CAST around it would cost a third more
        return sa.func.json_extract(column, f'$."{key}"')
    return column[key].as_string()


def group_expr(group_by: str, sqlite: bool) -> Any:
    """SQL for an incident's group: ``severity``, ``rule`` (the alertname label), ``route`` (the route's receiver)
    or any label."""
    if group_by == "severity":
        return col(Incident.severity)
    if group_by == "rule":
        return json_text(Incident.labels, "alertname", sqlite)
    if group_by == "route":
        return json_text(Incident.grouping, "receiver", sqlite)
    return json_text(Incident.labels, group_by, sqlite)


def _in_period(start: datetime, end: datetime) -> list[Any]:
    return [col(Incident.created_at) >= start, col(Incident.created_at) < end]


def _paged() -> list[Any]:
    return [col(Outbox.kind) == "trigger", col(Outbox.state).not_in(UNPAGED_STATES)]


async def incidents(
    s: AsyncSession, sqlite: bool, start: datetime, end: datetime, group_by: str
) -> dict[int, IncidentRecord]:
    """The incidents opened in ``[start, end)`` by id, with their group and rule, one plain row per incident
    (``apply_pages``, ``apply_first_alerts`` and ``apply_timeline`` add what the other tables say)."""
    grp = _or_none(group_expr(group_by, sqlite))
    rule = grp if group_by == "rule" else _or_none(json_text(Incident.labels, "alertname", sqlite))
    q = sa.select(
        col(Incident.id),
        epoch(Incident.created_at, sqlite),
        epoch(Incident.acknowledged_at, sqlite),
        epoch(Incident.resolved_at, sqlite),
        col(Incident.state),
        col(Incident.severity),
        grp,
        rule,
        col(Incident.group_key),
        col(Incident.resolved_by),
    ).where(*_in_period(start, end))
    recs = list(itertools.starmap(IncidentRecord, await _rows(s, q)))  # the row is the record's first fields
    return {r.id: r for r in recs}


def _or_none(expr: Any) -> Any:
    """SQL: a group name as text, ``(none)`` when missing or empty."""
    return sa.func.coalesce(sa.func.nullif(expr, ""), NONE_GROUP)


async def first_alerts(s: AsyncSession, sqlite: bool, ids: tuple[int, int]) -> list[tuple[int, float]]:
    """``(incident_id, earliest alert start)`` of the incidents in the id range (grouped over the alert table's
    incident_id index, not a subquery per incident)."""
    a = Alert
    q = (
        sa.select(col(a.incident_id), epoch(sa.func.min(col(a.starts_at)), sqlite))
        .where(*_between(col(a.incident_id), ids))
        .group_by(col(a.incident_id))
    )
    return [(i, t) for i, t in await _rows(s, q) if t is not None]


def apply_first_alerts(recs: dict[int, IncidentRecord], firsts: list[tuple[int, float]]) -> None:
    """Set the time to detect of the records whose first alert started before the incident opened."""
    get = recs.get
    for iid, first in firsts:
        r = get(iid)
        if r is not None and r.created > first:
            r.ttd = r.created - first


async def pages(
    s: AsyncSession, sqlite: bool, ids: tuple[int, int], people: bool = True
) -> tuple[Counter[int], list[tuple[int, str, float]]]:
    """The pages of the incidents in the id range, one per (incident, event, target) of their trigger rows that
    reached someone: ``(pages per incident, [(incident_id, user, first queue time)] of the pages to people)``
    (``user:NAME`` targets; a schedule's page is stored as its on-call user's). One grouped scan of the outbox
    serves both; the queue time is only computed for people's pages (and not at all without ``people``)."""
    o = Outbox
    tgt = col(o.target)
    is_person = tgt.startswith("user:")
    first = sa.case((is_person, epoch(sa.func.min(col(o.created_at)), sqlite))) if people else sa.null()
    q = (
        sa.select(col(o.incident_id), tgt, first)
        .where(*_between(col(o.incident_id), ids), *_paged())
        .group_by(col(o.incident_id), col(o.event_id), tgt)
    )
    rows = await _rows(s, q)
    per_incident = Counter(map(itemgetter(0), rows))
    # PageRecord-shaped tuples; only a person's page has a time
    return per_incident, [(iid, target[5:], at) for iid, target, at in rows if at is not None]


def apply_pages(recs: dict[int, IncidentRecord], counts: dict[int, int]) -> None:
    """Set the page counts of the records."""
    get = recs.get
    for iid, n in counts.items():
        r = get(iid)
        if r is not None:
            r.pages = n


async def id_range(s: AsyncSession, start: datetime, end: datetime) -> tuple[int, int] | None:
    """The smallest and largest id of the incidents opened in ``[start, end)`` (None when there are none); ids grow
    with time, so the range is tight, and rows of incidents outside the period that fall in it are skipped."""
    q = sa.select(sa.func.min(col(Incident.id)), sa.func.max(col(Incident.id))).where(*_in_period(start, end))
    [(lo, hi)] = list(await _rows(s, q))
    return None if lo is None else (int(lo), int(hi))


def _between(column: Any, ids: tuple[int, int]) -> list[Any]:
    return [column >= ids[0], column <= ids[1]]


async def event_counts(s: AsyncSession, sqlite: bool, ids: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """``(incident_id, re-triggers, escalations past the first step, notes)`` of the incidents in the id range that
    have any."""
    e = IncidentEvent
    kind = col(e.kind)
    past_first = sa.and_(
        kind == "escalated",
        sa.or_(
            sa.func.coalesce(e.data["step"].as_integer(), 0) > 0,  # type: ignore[index]
            sa.func.coalesce(e.data["loop"].as_integer(), 0) > 0,  # type: ignore[index]
            sa.func.coalesce(e.data["manual"].as_boolean(), sa.false()),  # type: ignore[index]
        ),
    )

    q = sa.select(col(e.incident_id), kind).where(
        kind.in_(("retriggered", "note", "escalated")),  # the (kind, incident_id) index: these kinds only
        *_between(col(e.incident_id), ids),
        sa.or_(kind.in_(("retriggered", "note")), past_first),
    )
    # Counted here, not with GROUP BY: grouping by incident_id would make SQLite walk every event of the range in
    # the incident_id index (three times slower), and the rows are few (the rarer kinds only).
    acc: dict[int, list[int]] = {}
    slot = {"retriggered": 0, "escalated": 1, "note": 2}
    for iid, k in await _rows(s, q):
        c = acc.get(iid)
        if c is None:
            c = acc[iid] = [0, 0, 0]
        c[slot[k]] += 1
    return [(i, c[0], c[1], c[2]) for i, c in sorted(acc.items())]


async def first_acks(s: AsyncSession, sqlite: bool, incident_ids: list[int]) -> list[tuple[int, int, float | None]]:
    """``(incident_id, acknowledgements, first one's time)`` of the given (re-triggered) incidents."""
    e = IncidentEvent
    out: list[tuple[int, int, float | None]] = []
    for k in range(0, len(incident_ids), 5000):  # a few: looked up by the incident_id index
        q = (
            sa.select(col(e.incident_id), sa.func.count(), sa.func.min(epoch(e.at, sqlite)))
            .where(col(e.kind) == "acknowledged", col(e.incident_id).in_(incident_ids[k : k + 5000]))
            .group_by(col(e.incident_id))
        )
        out.extend((int(i), int(n or 0), t) for i, n, t in await _rows(s, q))
    return out


async def timeline(s: AsyncSession, sqlite: bool, ids: tuple[int, int]) -> tuple[list[Any], list[Any]]:
    """The timeline facts of the id range: event counts, and the acknowledgements of the re-triggered incidents
    (whose ``acknowledged_at`` a re-trigger cleared)."""
    counts = await event_counts(s, sqlite, ids)
    return counts, await first_acks(s, sqlite, [c[0] for c in counts if c[1]])


def apply_timeline(recs: dict[int, IncidentRecord], counts: list[Any], acks: list[Any]) -> None:
    """Add re-triggers, escalations, notes, and acknowledgements (the first one when earlier) to the records."""
    for iid, retrig, esc, notes in counts:
        r = recs.get(iid)
        if r is not None:
            r.retriggers, r.escalations, r.notes = retrig, esc, notes
    for iid, n, first in acks:
        r = recs.get(iid)
        if r is not None:
            r.ack_events = n
            if first is not None and (r.acked is None or first < r.acked):
                r.acked = first


async def resolved_before(
    s: AsyncSession, sqlite: bool, start: datetime, end: datetime, window: timedelta
) -> list[tuple[int, str, float]]:
    """``(id, group_key, resolved)`` of incidents opened before the period that resolved at most ``window`` before
    its start (or in it): the ones a period's incident can be a re-open of."""
    q = sa.select(col(Incident.id), col(Incident.group_key), epoch(Incident.resolved_at, sqlite)).where(
        col(Incident.created_at) < start,
        col(Incident.resolved_at) >= start - window,
        col(Incident.resolved_at) < end,
    )
    return [(int(i), gk, t) for i, gk, t in await _rows(s, q)]


def mark_reopens(recs: dict[int, IncidentRecord], before: list[tuple[int, str, float]], window: timedelta) -> None:
    """Mark re-opens: an incident whose group key had another incident resolved within ``window`` before it
    opened (among the period's incidents and ``before``)."""
    resolved: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for r in recs.values():
        if r.resolved is not None:
            resolved[r.group_key].append((r.resolved, r.id))
    for iid, gk, t in before:
        resolved[gk].append((t, iid))
    times: dict[str, tuple[list[float], list[int]]] = {}
    for gk, v in resolved.items():
        v.sort()
        times[gk] = ([t for t, _ in v], [i for _, i in v])
    w = window.total_seconds()
    for r in recs.values():
        tv = times.get(r.group_key)
        if tv is None:
            continue
        ts, ids = tv
        i = bisect.bisect_right(ts, r.created) - 1  # the latest resolve at or before the opening
        while i >= 0 and ts[i] >= r.created - w:
            if ids[i] != r.id:
                r.reopen = True
                break
            i -= 1


async def outage_spans(
    s: AsyncSession,
    sqlite: bool,
    start: datetime,
    end: datetime,
    services: Sequence[tuple[str, Sequence[str], Sequence[Matcher]]],
) -> dict[str, list[tuple[float, float | None]]]:
    """Per service ``(name, severities, matchers)``: the ``(opened, resolved or None)`` of the incidents of its
    severities whose labels satisfy its matchers and that overlap ``[start, end)``. One query for all services
    reads the times, the severity and the matched label values of the incidents overlapping the period (bounded by
    the resolved_at and created_at indexes); the matchers are tested here, once per distinct set of values."""
    out: dict[str, list[tuple[float, float | None]]] = {name: [] for name, _, _ in services}
    sevs = sorted({str(x) for _, ss, _ in services for x in ss})
    if not services or not sevs:
        return out
    names = sorted({m.name for _, _, ms in services for m in ms})
    q = sa.select(
        epoch(Incident.created_at, sqlite),
        epoch(Incident.resolved_at, sqlite),
        col(Incident.severity),
        *[json_text(Incident.labels, n, sqlite) for n in names],
    ).where(
        col(Incident.created_at) < end,
        sa.or_(col(Incident.resolved_at).is_(None), col(Incident.resolved_at) > start),
        col(Incident.severity).in_(sevs),
    )
    rules = [(out[name], frozenset(str(x) for x in ss), ms) for name, ss, ms in services]
    where: dict[tuple[Any, ...], list[list[tuple[float, float | None]]]] = {}
    for row in await _rows(s, q):
        key = tuple(row[2:])
        lists = where.get(key)
        if lists is None:
            labels = {n: ("" if v is None else str(v)) for n, v in zip(names, key[1:], strict=True)}
            lists = where[key] = [
                spans for spans, ss, ms in rules if key[0] in ss and all(m.matches(labels[m.name]) for m in ms)
            ]
        for spans in lists:
            spans.append((row[0], row[1]))
    return out


async def incident_rows(s: AsyncSession, start: datetime, end: datetime, limit: int) -> list[tuple[Any, ...]]:
    """``(id, title, labels)`` of the newest ``limit`` incidents opened in ``[start, end)``, newest first."""
    q = (
        sa.select(col(Incident.id), col(Incident.title), col(Incident.labels))
        .where(*_in_period(start, end))
        .order_by(col(Incident.created_at).desc(), col(Incident.id).desc())
        .limit(limit)
    )
    conn = await s.connection()
    return [tuple(r) for r in await conn.execute(q)]


async def _rows(s: AsyncSession, q: Any) -> Any:
    """Run a Core select in the session's transaction straight on the driver (aiosqlite ``execute_fetchall``,
    asyncpg ``fetch``): plain tuples, none of SQLAlchemy's per-row result processing (a third of the time on 100k
    rows). The statement is rendered with literal values: every value in these queries is a number, a time, a
    validated label name or a configured severity, and SQLAlchemy quotes them."""
    conn = await s.connection()
    sql = str(q.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if conn.dialect.name == "sqlite":
        return await driver.execute_fetchall(sql)  # type: ignore[union-attr]
    return await driver.fetch(sql)  # type: ignore[union-attr]


def utc(t: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with a ``Z`` (milliseconds when not whole), or None."""
    if t is None:
        return None
    dt = datetime.fromtimestamp(round(t, 3), UTC)
    text = dt.isoformat(timespec="milliseconds" if dt.microsecond else "seconds")
    return text.replace("+00:00", "Z")
