"""The incidents pages of the web UI: the filtered, sortable list (with CSV/JSON exports), an incident's detail
(alerts, timeline with the notification log, a chart of the triggering series) and its actions.

Filtering, counting and paging happen in SQL: state, severity, the time range and ``=`` label matchers are
``WHERE`` clauses (labels through the JSON column); only regular-expression matchers are checked in Python, over
the ids and the matched labels of the rows SQL already selected. A page loads 50 incidents.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from aiohttp import web
from sqlmodel import col, select

from fsincident.analytics.postmortem import rule_of as _rule_of
from fsincident.analytics.postmortem import series_matchers as _series_matchers
from fsincident.analytics.postmortem import simple_threshold
from fsincident.api import MAX_ID
from fsincident.api.notifications import notifications_of
from fsincident.core import TransitionError, ensure_utc, isoformat, storable_text
from fsincident.escalation.service import BadTarget
from fsincident.escalation.service import NotFound as EscalationNotFound
from fsincident.incidents.service import NotFound
from fsincident.matchers import Matcher, MatcherError, parse_matcher_list
from fsincident.obs import get_logger
from fsincident.store.tables import Incident
from fsincident.ui import (
    PREFIX,
    UiError,
    config_of,
    ctx_of,
    display_tz,
    form,
    page,
    redirect,
    render,
    session_of,
)
from fsincident.ui.silences import matchers_link

log = get_logger("fsincident.ui.incidents")

PAGE_SIZE = 50
EXPORT_CAP = 100_000
EXPORT_CHUNK = 500
MAX_NOTE = 4000
STATES = ("triggered", "acknowledged", "resolved")
SEVERITIES = ("critical", "warning", "info")
RANGES: dict[str, timedelta | None] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "all": None,
}
SORTS = ("id", "created_at", "severity", "state", "title")
EXPORT_COLUMNS = (
    "id",
    "title",
    "state",
    "severity",
    "created_at",
    "acknowledged_at",
    "acknowledged_by",
    "resolved_at",
    "resolved_by",
    "labels",
)
DONE = {
    "acknowledged": "Acknowledged.",
    "resolved": "Resolved.",
    "escalated": "Escalated: the next step of the policy was paged.",
    "reassigned": "Reassigned: the target was paged.",
    "noted": "Note added.",
}
_SEV_RANK = sa.case((col(Incident.severity) == "critical", 3), (col(Incident.severity) == "warning", 2), else_=1)
_STATE_RANK = sa.case((col(Incident.state) == "triggered", 0), (col(Incident.state) == "acknowledged", 1), else_=2)


# ---------------------------------------------------------------------------------------------- filters


@dataclass
class Filters:
    """The list's filters, sort and page as read from the query string."""

    state: str = ""
    severity: str = ""
    match: str = ""
    matchers: tuple[Matcher, ...] = ()
    range: str = "all"
    start: datetime | None = None
    end: datetime | None = None
    from_text: str = ""
    to_text: str = ""
    sort: str = "id"
    dir: str = "desc"
    page: int = 1
    errors: list[str] = field(default_factory=list)

    @property
    def sql_matchers(self) -> list[Matcher]:
        """Matchers SQL checks exactly: ``=``, ``!=`` and ``=~`` with a list of literal alternatives."""
        return [m for m in self.matchers if m.op in ("=", "!=") or _alternatives(m) is not None]

    @property
    def py_matchers(self) -> list[Matcher]:
        """The other regular-expression matchers (checked in Python after an SQL prefilter on a literal prefix)."""
        return [m for m in self.matchers if m.op not in ("=", "!=") and _alternatives(m) is None]

    def params(self, **changes: Any) -> dict[str, str]:
        """The query parameters that reproduce these filters (with ``changes``), without defaults."""
        p = {
            "state": self.state,
            "severity": self.severity,
            "match": self.match,
            "range": "" if self.range in ("all", "custom") else self.range,
            "from": self.from_text,
            "to": self.to_text,
            "sort": "" if self.sort == "id" else self.sort,
            "dir": "" if self.dir == "desc" else self.dir,
            "page": "" if self.page == 1 else str(self.page),
        }
        p.update({k: str(v) for k, v in changes.items()})
        return {k: v for k, v in p.items() if v}

    def url(self, base: str = f"{PREFIX}/incidents", **changes: Any) -> str:
        q = urlencode(self.params(**changes))
        return f"{base}?{q}" if q else base

    def where(self) -> list[Any]:
        conds: list[Any] = []
        if self.state:
            conds.append(col(Incident.state) == self.state)
        if self.severity:
            conds.append(col(Incident.severity) == self.severity)
        if self.start is not None:
            conds.append(col(Incident.created_at) >= self.start)
        if self.end is not None:
            conds.append(col(Incident.created_at) < self.end)
        for m in self.sql_matchers:  # a missing label matches as the empty string
            value = Incident.labels[m.name].as_string()  # type: ignore[index]
            alts = _alternatives(m)
            if alts is not None:
                conds.append(value.in_(alts))
            elif m.op == "=":
                conds.append(value == m.value if m.value else sa.or_(value.is_(None), value == ""))
            else:
                conds.append(sa.or_(value.is_(None), value != m.value) if m.value else value != "")
        for m in self.py_matchers:
            prefix = _literal_prefix(m)
            if prefix:  # a prefilter only (LIKE may ignore case, ``_`` is a wildcard): Python decides
                conds.append(Incident.labels[m.name].as_string().like(prefix + "%"))  # type: ignore[index]
        return conds

    def order(self) -> list[Any]:
        key = {
            "id": col(Incident.id),
            "created_at": col(Incident.created_at),
            "severity": _SEV_RANK,
            "state": _STATE_RANK,
            "title": col(Incident.title),
        }[self.sort]
        first = key.asc() if self.dir == "asc" else key.desc()
        tie = col(Incident.id).asc() if self.dir == "asc" else col(Incident.id).desc()
        return [first] if self.sort == "id" else [first, tie]


_LITERAL = re.compile(r"[A-Za-z0-9_\-:/ ]+")


def _alternatives(m: Matcher) -> list[str] | None:
    """For ``label=~"a|b|c"`` with only literal alternatives: the values it matches (exactly); else None."""
    if m.op != "=~":
        return None
    alts = m.value.split("|")
    return alts if all(_LITERAL.fullmatch(a) for a in alts) else None


def _literal_prefix(m: Matcher) -> str | None:
    """For ``label=~"literal.*"``: the literal every match starts with; else None."""
    if m.op != "=~" or not m.value.endswith(".*"):
        return None
    head = m.value[:-2]
    return head if _LITERAL.fullmatch(head) else None


def _parse_time(text: str, tz: ZoneInfo, what: str) -> datetime:
    """``2026-12-05T10:00`` (in the display zone) or ISO 8601 with an offset; raises ValueError saying what."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a time: write 2026-12-05T10:00 or 2026-12-05") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    try:
        return dt.astimezone(UTC)
    except (OverflowError, ValueError):  # 0001-01-01 east of UTC, 9999-12-31 west of it: outside datetime's range
        raise ValueError(f"{what} {text!r} is out of range: pick a time between the years 1 and 9999") from None


def parse_filters(query: Mapping[str, str], matches: Sequence[str], now: datetime, tz: ZoneInfo) -> Filters:
    """Read the list's query string; problems are collected in ``errors`` (the caller answers 400)."""
    f = Filters()
    errors = f.errors
    state = (query.get("state") or "").strip()
    if state and state not in STATES:
        errors.append(f"state {state!r} is not one of {', '.join(STATES)}")
    else:
        f.state = state
    sev = (query.get("severity") or "").strip()
    if sev and sev not in SEVERITIES:
        errors.append(f"severity {sev!r} is not one of {', '.join(SEVERITIES)}")
    else:
        f.severity = sev
    texts = [t.strip() for t in matches if t and t.strip()]
    f.match = ", ".join(texts)
    if sum(len(t) for t in texts) > 2000:
        errors.append("the label matchers are longer than 2000 characters")
    elif not all(storable_text(t) for t in texts):  # PostgreSQL refuses NUL in a bound value (a 500, not a 400)
        errors.append("the label matchers contain a NUL character")
    else:
        try:
            f.matchers = tuple(m for t in texts for m in parse_matcher_list(t))
        except MatcherError as e:
            errors.append(f"label matchers: {e}")
    rng = (query.get("range") or "all").strip()
    if rng not in RANGES:
        errors.append(f"range {rng!r} is not one of {', '.join(RANGES)}")
        rng = "all"
    f.range = rng
    span = RANGES[rng]
    if span is not None:
        f.start = now - span
    f.from_text = (query.get("from") or "").strip()
    f.to_text = (query.get("to") or "").strip()
    try:
        if f.from_text:
            f.start, f.range = _parse_time(f.from_text, tz, "from"), "custom"
        if f.to_text:
            f.end, f.range = _parse_time(f.to_text, tz, "to"), "custom"
            if not f.from_text and span is None:
                f.start = None
    except ValueError as e:
        errors.append(str(e))
    if f.start is not None and f.end is not None and f.end <= f.start:
        errors.append("'to' must be after 'from'")
    sort = (query.get("sort") or "id").strip()
    if sort not in SORTS:
        errors.append(f"sort {sort!r} is not one of {', '.join(SORTS)}")
    else:
        f.sort = sort
    d = (query.get("dir") or "desc").strip()
    if d not in ("asc", "desc"):
        errors.append(f"dir {d!r} is not asc or desc")
    else:
        f.dir = d
    raw_page = (query.get("page") or "1").strip()
    try:
        f.page = int(raw_page)
        if not 1 <= f.page <= 1_000_000:
            raise ValueError
    except ValueError:
        errors.append(f"page {raw_page!r} is not a page number")
        f.page = 1
    return f


def filters_of(request: web.Request) -> Filters:
    """The request's filters; raises UiError 400 listing every invalid value."""
    ctx = ctx_of(request)
    f = parse_filters(request.query, request.query.getall("match", []), ctx.incidents.clock.now(), display_tz(request))
    if f.errors:
        raise UiError(400, "Invalid filter", "; ".join(f.errors) + ".")
    return f


def _labels_match(labels: Mapping[str, Any] | None, matchers: Sequence[Matcher]) -> bool:
    lab = labels or {}
    return all(m.matches(str(lab.get(m.name) or "")) for m in matchers)


async def matching_ids(request: web.Request, f: Filters, *, offset: int, limit: int) -> tuple[list[int], int]:
    """Ids of the incidents ``f`` selects, in its order (``limit`` from ``offset``), and how many match in all."""
    store = ctx_of(request).store
    conds = f.where()
    py = f.py_matchers
    async with store.read() as s:
        if not py:
            total = (await s.exec(select(sa.func.count()).select_from(Incident).where(*conds))).one()
            q = select(Incident.id).where(*conds).order_by(*f.order()).offset(offset).limit(limit)
            ids = [i for i in (await s.exec(q)).all() if i is not None]
            return ids, int(total)
        # Only the labels the matchers read, extracted by the database: decoding every label set is much slower.
        names = sorted({m.name for m in py})
        cols = [Incident.labels[n].as_string() for n in names]  # type: ignore[index]
        rows = (await s.exec(select(Incident.id, *cols).where(*conds).order_by(*f.order()))).all()  # type: ignore[call-overload]
    # Label values repeat (team, service, host): each distinct combination is matched once (re2 calls are costly).
    seen: dict[tuple[Any, ...], bool] = {}
    hit = []
    for r in rows:
        key = tuple(r[1:])
        ok = seen.get(key)
        if ok is None:
            ok = seen[key] = _labels_match(dict(zip(names, key, strict=True)), py)
        if ok and r[0] is not None:
            hit.append(r[0])
    return hit[offset : offset + limit], len(hit)


async def load(request: web.Request, ids: Sequence[int]) -> list[Incident]:
    """The incidents with ``ids``, in that order."""
    if not ids:
        return []
    async with ctx_of(request).store.read() as s:
        rows = (await s.exec(select(Incident).where(col(Incident.id).in_(list(ids))))).all()
    by_id = {r.id: r for r in rows}
    return [by_id[i] for i in ids if i in by_id]


# ---------------------------------------------------------------------------------------------- list


@page("read")
async def incidents_page(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    f = parse_filters(request.query, request.query.getall("match", []), ctx.incidents.clock.now(), display_tz(request))
    if f.errors:  # the form again, with what is wrong, so it can be corrected
        ids, total, rows = [], 0, []
    else:
        ids, total = await matching_ids(request, f, offset=(f.page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
        rows = await load(request, ids)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    sort_links = {
        key: f.url(sort=key, dir="asc" if f.sort == key and f.dir == "desc" else "desc", page=1) for key in SORTS
    }
    return render(
        request,
        "incidents.html.j2",
        status=400 if f.errors else 200,
        active="incidents",
        title="Incidents",
        live=True,
        extra_css=["incidents.css"],
        f=f,
        rows=[export_row(r) for r in rows],
        total=total,
        pages=pages,
        page_size=PAGE_SIZE,
        states=STATES,
        severities=SEVERITIES,
        ranges=list(RANGES),
        sort_links=sort_links,
        prev_url=f.url(page=f.page - 1) if f.page > 1 else None,
        next_url=f.url(page=f.page + 1) if f.page < pages else None,
        csv_url=f.url(f"{PREFIX}/incidents.csv", page=1),
        json_url=f.url(f"{PREFIX}/incidents.json", page=1),
    )


def export_row(inc: Any) -> dict[str, Any]:
    """One incident (or a row of its export columns) as the list and the exports show it."""
    return {
        "id": inc.id,
        "title": inc.title,
        "state": inc.state,
        "severity": inc.severity,
        "created_at": isoformat(inc.created_at),
        "acknowledged_at": isoformat(inc.acknowledged_at),
        "acknowledged_by": inc.acknowledged_by,
        "resolved_at": isoformat(inc.resolved_at),
        "resolved_by": inc.resolved_by,
        "labels": dict(inc.labels or {}),
    }


async def export_chunk(request: web.Request, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The export rows of ``ids``, in that order (only the exported columns are read)."""
    cols = [getattr(Incident, c) for c in EXPORT_COLUMNS]
    async with ctx_of(request).store.read() as s:
        rows = (await s.exec(select(*cols).where(col(Incident.id).in_(list(ids))))).all()  # type: ignore[call-overload]
    by_id = {r.id: export_row(r) for r in rows}
    return [by_id[i] for i in ids if i in by_id]


async def _export(request: web.Request, kind: str) -> web.StreamResponse:
    f = filters_of(request)
    ids, _ = await matching_ids(request, f, offset=0, limit=EXPORT_CAP)
    stamp = ctx_of(request).incidents.clock.now().strftime("%Y%m%dT%H%M%SZ")
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8" if kind == "csv" else "application/json; charset=utf-8",
            "Content-Disposition": f'attachment; filename="incidents-{stamp}.{kind}"',
        }
    )
    from fsincident.ui import SECURITY_HEADERS  # the middleware adds them after the handler: too late here

    resp.headers.update(SECURITY_HEADERS)
    resp.headers["Cache-Control"] = "no-store"
    await resp.prepare(request)
    if kind == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(EXPORT_COLUMNS)
        for i in range(0, len(ids), EXPORT_CHUNK):
            for row in await export_chunk(request, ids[i : i + EXPORT_CHUNK]):
                row["labels"] = json.dumps(row["labels"], sort_keys=True, ensure_ascii=False)
                w.writerow(["" if row[c] is None else _csv_safe(row[c]) for c in EXPORT_COLUMNS])
            await resp.write(buf.getvalue().encode())
            buf.seek(0)
            buf.truncate()
        if not ids:
            await resp.write(buf.getvalue().encode())
    else:
        await resp.write(b'{"incidents": [')
        first = True
        for i in range(0, len(ids), EXPORT_CHUNK):
            parts = []
            for row in await export_chunk(request, ids[i : i + EXPORT_CHUNK]):
                parts.append(("" if first else ",") + "\n" + json.dumps(row, ensure_ascii=False))
                first = False
            await resp.write("".join(parts).encode())
        await resp.write(f'\n], "count": {len(ids)}, "truncated": {json.dumps(len(ids) >= EXPORT_CAP)}}}\n'.encode())
    await resp.write_eof()
    return resp


def _csv_safe(v: Any) -> Any:
    """Keep spreadsheet programs from running a cell as a formula (text starting with = + - @)."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


@page("read")
async def incidents_csv(request: web.Request) -> web.StreamResponse:
    return await _export(request, "csv")


@page("read")
async def incidents_json(request: web.Request) -> web.StreamResponse:
    return await _export(request, "json")


# ---------------------------------------------------------------------------------------------- detail


@dataclass
class ChartView:
    """What the detail page shows about the triggering series: the chart markup, or why there is none."""

    svg: Any = None
    note: str | None = None
    rule: str | None = None
    threshold: tuple[str, str, float] | None = None


async def incident_chart(request: web.Request, inc: dict[str, Any]) -> ChartView:
    """A line chart of the series whose rule triggered the incident, around the incident; never raises."""
    ctx = ctx_of(request)
    alerts = [a for a in inc["alerts"] if str(a.get("origin") or "").startswith("rule:")]
    if not alerts:
        return ChartView(note="No alert of this incident comes from a rule, so there is no series to chart.")
    cfg = config_of(request)
    origin = alerts[0]["origin"]
    rule = _rule_of(cfg, origin)
    key = origin[len("rule:") :]
    if rule is None:
        return ChartView(note=f"The rule {key} is no longer configured.", rule=key)
    metric = rule.expr.metrics[0] if rule.expr.metrics else None
    if metric is None:
        return ChartView(note=f"The rule {key} reads no metric.", rule=key)
    if ctx.history is None:
        return ChartView(note="Series history is off (history.enabled), so there is no chart.", rule=key)
    now = ctx.incidents.clock.now()
    created = ensure_utc(datetime.fromisoformat(inc["created_at"].replace("Z", "+00:00")))
    resolved = (
        ensure_utc(datetime.fromisoformat(inc["resolved_at"].replace("Z", "+00:00"))) if inc["resolved_at"] else None
    )
    assert created is not None
    until = resolved or now
    start = created - max(timedelta(minutes=30), until - created)
    end = resolved + timedelta(minutes=10) if resolved else now  # never past now: nothing to draw there yet
    alerts_same = [a for a in alerts if a["origin"] == origin][:10]
    lines: list[Any] = []
    try:
        from fsincident.ui import charts  # written alongside; imported here so a missing module breaks one chart

        seen: set[tuple[tuple[str, str], ...]] = set()
        everything: list[Any] | None = None
        for a in alerts_same:
            found = await ctx.history.range(
                rule.source, metric, _series_matchers(a["labels"], rule), start=start, end=end
            )
            if not found:  # an aggregating expression: its alert's labels are not all on the series
                if everything is None:
                    everything = await ctx.history.range(rule.source, metric, (), start=start, end=end)
                found = [sd for sd in everything if all(a["labels"].get(k, v) == v for k, v in sd.labels.items())][:3]
            for sd in found:
                ident = tuple(sorted(sd.labels.items()))
                if ident in seen:
                    continue
                seen.add(ident)
                label = ", ".join(f"{k}={v}" for k, v in ident) or metric
                lines.append(charts.Line(label=f"{metric}{{{label}}}", points=[(p[0], p[1]) for p in sd.points]))
        thr = simple_threshold(rule.expr.text, metric)
        markers = []
        if inc.get("acknowledged_at"):
            acked = datetime.fromisoformat(inc["acknowledged_at"].replace("Z", "+00:00"))
            markers.append((acked.timestamp(), f"acknowledged by {inc.get('acknowledged_by') or '?'}"))
        svg = charts.line_chart(
            lines,
            start.timestamp(),
            end.timestamp(),
            tz=display_tz(request),
            threshold=thr[2] if thr else None,
            spans=[(created.timestamp(), resolved.timestamp() if resolved else None, "firing")],
            markers=markers,
            title=f"{metric} on {rule.source}",
        )
    except Exception as e:  # a chart must never break the incident page
        if type(e).__name__ == "HistoryError":
            return ChartView(note=f"No chart: {e}", rule=key)
        log.exception("incident_chart_failed", incident_id=inc["id"])
        return ChartView(note="The chart could not be drawn (the error is in the daemon's log).", rule=key)
    return ChartView(svg=svg, rule=key, threshold=thr)


def _timeline(events: list[dict[str, Any]], notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Timeline events and notification-log entries (``kind`` ``page``) merged in time order; events first when
    they share a time with pages (the pages they caused follow them)."""
    items: list[tuple[str, int, int, dict[str, Any]]] = []
    for e in events:
        if notes and e["kind"] == "notify_sent":  # the page's own row below says it was sent, with its attempts
            continue
        items.append((e["at"] or "", 0, e["id"] or 0, {**e, "page": None}))
    for n in notes:
        at = n["created_at"] or ""
        items.append(
            (at, 1, n["id"] or 0, {"kind": "page", "at": at, "actor": None, "note": None, "data": {}, "page": n})
        )
    items.sort(key=lambda t: (_sortable(t[0]), t[1], t[2]))
    return [t[3] for t in items]


def _sortable(at: str) -> float:
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _targets(config: Any) -> dict[str, list[str]]:
    if config is None:
        return {"user": [], "schedule": [], "channel": []}
    return {
        "user": [f"user:{u.name}" for u in config.users],
        "schedule": [f"schedule:{s.name}" for s in config.schedules],
        "channel": [f"channel:{c.name}" for c in config.channels],
    }


def _id_of(request: web.Request) -> int:
    raw = request.match_info["id"]
    try:
        v = int(raw)
    except ValueError:
        raise UiError(404, "Incident not found", f"There is no incident {raw!r}: incident ids are numbers.") from None
    if not 1 <= v <= MAX_ID:
        raise UiError(404, "Incident not found", f"There is no incident {raw}.")
    return v


@page("read")
async def incident_page(request: web.Request) -> web.Response:
    iid = _id_of(request)
    ctx = ctx_of(request)
    try:
        inc = await ctx.incidents.get(iid)
    except NotFound:
        raise UiError(404, "Incident not found", f"There is no incident {iid}.") from None
    notes = await notifications_of(request, iid) or []
    chart = await incident_chart(request, inc)
    done = request.query.get("done", "")
    sess = session_of(request)
    return render(
        request,
        "incident.html.j2",
        active="incidents",
        title=f"#{iid} {inc['title']}",
        live=True,
        extra_css=["charts.css", "incidents.css"],
        inc=inc,
        timeline=_timeline(inc["timeline"], notes),
        chart=chart,
        flash=DONE.get(done),
        can_act=sess.can("ack"),
        targets=_targets(config_of(request)),
        has_escalation=ctx.escalation is not None,
        silence_url=matchers_link(inc["labels"]),
    )


# ---------------------------------------------------------------------------------------------- actions


def _note(data: Mapping[str, str]) -> str | None:
    note = (data.get("note") or "").strip()
    if len(note) > MAX_NOTE:
        raise UiError(400, "Note too long", f"A note can have at most {MAX_NOTE} characters.")
    if not storable_text(note):  # as the API refuses it: PostgreSQL cannot store NUL
        raise UiError(400, "Note not stored", "The note contains a NUL character; remove it and try again.")
    return note or None


async def _act(request: web.Request, action: str) -> web.Response:
    iid = _id_of(request)
    data = await form(request)
    note = _note(data)
    ctx = ctx_of(request)
    by = session_of(request).name
    via = {"via": "ui"}
    try:
        if action == "ack":
            await ctx.incidents.ack(iid, by, note, data=via)
            done = "acknowledged"
        elif action == "resolve":
            await ctx.incidents.resolve(iid, by, note, data=via)
            done = "resolved"
        elif action == "note":
            if note is None:
                raise UiError(400, "Empty note", "Write something in the note before adding it.")
            await ctx.incidents.add_note(iid, by, note, data=via)
            done = "noted"
        else:
            if ctx.escalation is None:
                raise UiError(404, "Escalation is not available", "This daemon runs without the escalation stage.")
            if action == "escalate":
                await ctx.escalation.escalate(iid, by, note, data=via)
                done = "escalated"
            else:
                to = (data.get("to") or "").strip()
                if not to:
                    raise UiError(400, "Nobody to reassign to", "Pick a user, schedule or channel to page.")
                await ctx.escalation.reassign(iid, to, by, note, data=via)
                done = "reassigned"
    except (NotFound, EscalationNotFound):
        raise UiError(404, "Incident not found", f"There is no incident {iid}.") from None
    except BadTarget as e:
        raise UiError(400, f"Cannot {action} incident {iid}", _sentence(str(e))) from None
    except TransitionError as e:
        raise UiError(409, f"Cannot {action} incident {iid}", _sentence(str(e))) from None
    raise redirect(f"{PREFIX}/incidents/{iid}?done={done}")


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


@page("ack")
async def act(request: web.Request) -> web.Response:
    """``POST /ui/incidents/{id}/ack|resolve|escalate|reassign|note`` (the route admits only these actions)."""
    return await _act(request, request.match_info["action"])


def add_routes(app: web.Application) -> None:
    """Register this module's pages."""
    r = app.router
    r.add_get(f"{PREFIX}/incidents", incidents_page)
    r.add_get(f"{PREFIX}/incidents.csv", incidents_csv)
    r.add_get(f"{PREFIX}/incidents.json", incidents_json)
    r.add_get(f"{PREFIX}/incidents/{{id}}", incident_page)
    r.add_post(f"{PREFIX}/incidents/{{id}}/{{action:ack|resolve|escalate|reassign|note}}", act)
