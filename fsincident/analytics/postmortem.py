"""Postmortem drafts (issue #9): an incident as a self-contained Markdown document with a chart of its series.

The draft holds the summary, the impact window, detection/acknowledgement/resolution times (TTD/TTA/TTR as the
analytics define them), the full timeline, who was paged and when (the outbox and its notification log, destinations
redacted as stored), related incidents, the rule that fired (from the running config) or where an ingested alert came
from, a PNG chart of the series around the incident, and headings for causes, contributing factors and follow-ups.

Everything a user or an alert wrote (titles, labels, annotations, notes, actor names, errors) is escaped: it can
neither inject HTML nor break a table. The caller (the API layer) loads the incident with its alerts and timeline and
its notifications as the API shows them; this module adds related incidents (store), the rule (config) and the
series (an injected history reader), so it imports no other stage.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import col, select

from fsincident.core import ensure_utc
from fsincident.matchers import Matcher, MatcherError
from fsincident.obs import get_logger
from fsincident.store import Store
from fsincident.store.tables import Incident

log = get_logger("fsincident.analytics.postmortem")

SYSTEM_ACTOR = "fsincident"
RELATED_LIMIT = 15
RELATED_WINDOW = timedelta(hours=24)  # "shared labels" looks this far around the incident
RELATED_SCAN = 2000  # at most this many overlapping incidents, and as many neighbours, are compared
SHARED_MIN = 2  # label pairs (severity aside) two incidents must share to be related without overlapping
CHART_LINES = 10
MAX_TIMELINE = 2000  # rows of the timeline / paging tables (a runaway incident stays readable)


# ---------------------------------------------------------------------------------------------- rules


_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_OPS = r">=|<=|==|!=|>|<"
_FLIP = {">": "<", "<": ">", ">=": "<=", "<=": ">=", "==": "==", "!=": "!="}


def simple_threshold(expr: str, metric: str | None = None) -> tuple[str, str, float] | None:
    """``(metric, op, number)`` for an expression that is just ``metric OP number`` or ``number OP metric``
    (read as ``metric OP' number``); None for anything else (never raises)."""
    if not isinstance(expr, str) or len(expr) > 500:
        return None
    name = re.escape(metric) if metric else r"[a-zA-Z_:][a-zA-Z0-9_:]*"
    text = expr.strip()
    m = re.fullmatch(rf"({name})\s*({_OPS})\s*({_NUMBER})", text)
    if m:
        metric_name, op, num = m.group(1), m.group(2), m.group(3)
    else:
        m = re.fullmatch(rf"({_NUMBER})\s*({_OPS})\s*({name})", text)
        if not m:
            return None
        num, op, metric_name = m.group(1), _FLIP[m.group(2)], m.group(3)
    value = float(num)
    if not math.isfinite(value):
        return None
    return metric_name, op, value


def rule_of(config: Any, origin: str) -> Any:
    """The running config's rule for an alert ``origin`` ``rule:GROUP/ALERT``, else None (never raises)."""
    if config is None or not isinstance(origin, str) or not origin.startswith("rule:"):
        return None
    group, _, alert = origin[len("rule:") :].partition("/")
    for g in config.groups:
        if g.name == group:
            for r in g.rules:
                if r.alert == alert:
                    return r
    return None


def series_matchers(alert_labels: Mapping[str, str], rule: Any) -> list[Matcher]:
    """Equality matchers for the alert's labels that came from the series (not the rule's own labels)."""
    skip = {"alertname", "severity", *getattr(rule, "labels", {}).keys()}
    out = []
    for k, v in sorted(alert_labels.items()):
        if k in skip or k.startswith("__"):
            continue
        try:
            out.append(Matcher.make(k, "=", v))
        except MatcherError:
            continue
    return out


# ---------------------------------------------------------------------------------------------- markdown text

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")  # what can start emphasis, code, links, tables, headings
# a list item or a setext underline at the start of a line
_MD_LEADING = re.compile(r"^(\s*|\s*\d+)((?<=\d)[.)]|(?<!\d)[-+=])")


def md_text(value: Any, *, line_start: bool = False) -> str:
    """``value`` as inert Markdown inline text: HTML characters as entities, Markdown punctuation backslashed,
    line breaks as ``<br>`` (so it stays in its table cell or paragraph), and with ``line_start`` a leading list or
    underline marker escaped too (for text that starts a line); never raises."""
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    text = "<br>".join(line.strip() for line in text.split("\n"))
    return _MD_LEADING.sub(r"\1\\\2", text, count=1) if line_start else text


def code_block(text: str, lang: str = "") -> str:
    """``text`` as a fenced code block whose fence is longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (cells must be escaped already)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(c if c else " " for c in r) + " |" for r in rows]
    return "\n".join(out)


def _labels_text(labels: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{md_text(k)}={md_text(v)}" for k, v in sorted((labels or {}).items())) or "–"


# ---------------------------------------------------------------------------------------------- times


def _at(value: Any) -> datetime | None:
    """An ISO 8601 string or datetime as aware UTC, else None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return ensure_utc(value)
    try:
        return ensure_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


def duration_text(seconds: float | None) -> str:
    """``1d 2h``, ``3h 4m``, ``5m 6s``, ``7s`` (two units at most), ``–`` for None."""
    if seconds is None:
        return "–"
    s = round(abs(seconds))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        text = f"{d}d {h}h"
    elif h:
        text = f"{h}h {m}m"
    elif m:
        text = f"{m}m {sec}s"
    else:
        text = f"{sec}s"
    return ("-" if seconds < 0 else "") + text


@dataclass(frozen=True)
class Times:
    """The incident's key instants and durations (seconds), as the analytics define them."""

    created: datetime
    first_alert: datetime | None
    acknowledged: datetime | None
    resolved: datetime | None
    ttd: float | None
    tta: float | None
    ttr: float | None
    tta_is_resolve: bool
    impact_start: datetime
    impact_end: datetime | None


def incident_times(inc: Mapping[str, Any]) -> Times:
    """TTD/TTA/TTR of an incident dict (``created_at`` etc. and its ``alerts``); raises ValueError without a
    ``created_at``.

    TTD = ``created_at - min(alert.starts_at)`` when positive; TTA = ``acknowledged_at - created_at``, or TTR when
    it was resolved unacknowledged; TTR = ``resolved_at - created_at``. The impact window runs from the earlier of
    the first alert's start and the opening to the resolution (None while open).
    """
    created = _at(inc.get("created_at"))
    if created is None:
        raise ValueError("the incident has no created_at")
    starts = [t for t in (_at(a.get("starts_at")) for a in inc.get("alerts") or ()) if t is not None]
    first = min(starts) if starts else None
    acked = _at(inc.get("acknowledged_at"))
    resolved = _at(inc.get("resolved_at"))
    ttd = (created - first).total_seconds() if first is not None and first < created else None
    ttr = (resolved - created).total_seconds() if resolved is not None else None
    if acked is not None:
        tta, via_resolve = (acked - created).total_seconds(), False
    elif ttr is not None:
        tta, via_resolve = ttr, True
    else:
        tta, via_resolve = None, False
    impact_start = min(created, first) if first is not None else created
    return Times(created, first, acked, resolved, ttd, tta, ttr, via_resolve, impact_start, resolved)


# ---------------------------------------------------------------------------------------------- related


@dataclass
class Related:
    id: int
    title: str
    severity: str
    state: str
    created_at: datetime
    resolved_at: datetime | None
    same_group: bool = False
    overlapping: bool = False
    shared: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "state": self.state,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "resolved_at": self.resolved_at.isoformat().replace("+00:00", "Z") if self.resolved_at else None,
            "same_group": self.same_group,
            "overlapping": self.overlapping,
            "shared_labels": dict(self.shared),
        }


_COLS = (
    Incident.id,
    Incident.title,
    Incident.severity,
    Incident.state,
    Incident.created_at,
    Incident.resolved_at,
    Incident.labels,
    Incident.group_key,
)


async def related_incidents(
    store: Store, incident_id: int, labels: Mapping[str, str], start: datetime, end: datetime, *, limit: int = 15
) -> list[Related]:
    """Incidents related to incident ``incident_id`` open over ``[start, end)``: the same group (earlier or later
    occurrences), overlapping in time, or sharing at least two label pairs (severity aside) within a day; most
    related first. Raises the store's error when the database cannot be read."""
    async with store.read() as s:
        gk = (await s.exec(select(Incident.group_key).where(col(Incident.id) == incident_id))).first()
        same: list[Any] = []
        if gk is not None:
            q = (
                select(*_COLS)  # type: ignore[call-overload]
                .where(col(Incident.group_key) == gk, col(Incident.id) != incident_id)
                .order_by(col(Incident.created_at).desc())
                .limit(limit)
            )
            same = list((await s.exec(q)).all())
        other = col(Incident.id) != incident_id
        opened = col(Incident.created_at)
        # Overlapping in time (opened within the window before, and not resolved before ``start``).
        q = (
            select(*_COLS)  # type: ignore[call-overload]
            .where(
                other,
                opened >= start - RELATED_WINDOW,
                opened < end,
                sa.or_(col(Incident.resolved_at).is_(None), col(Incident.resolved_at) > start),
            )
            .order_by(opened.desc())
            .limit(RELATED_SCAN)
        )
        near = list((await s.exec(q)).all())
        # The nearest neighbours on both sides, for shared labels.
        half = RELATED_SCAN // 2
        q = select(*_COLS).where(other, opened >= start - RELATED_WINDOW, opened < start)  # type: ignore[call-overload]
        near += list((await s.exec(q.order_by(opened.desc()).limit(half))).all())
        q = select(*_COLS).where(other, opened >= start, opened < end + RELATED_WINDOW)  # type: ignore[call-overload]
        near += list((await s.exec(q.order_by(opened).limit(half))).all())
        # Incidents opened long before and still open (or resolved after ``start``) overlap too.
        q = (
            select(*_COLS)  # type: ignore[call-overload]
            .where(
                col(Incident.id) != incident_id,
                col(Incident.created_at) < start - RELATED_WINDOW,
                sa.or_(col(Incident.resolved_at).is_(None), col(Incident.resolved_at) > start),
            )
            .order_by(col(Incident.created_at).desc())
            .limit(limit)
        )
        long_open = list((await s.exec(q)).all())
    mine = {(k, str(v)) for k, v in labels.items() if k != "severity"}
    found: dict[int, Related] = {}
    for r in [*same, *near, *long_open]:
        if r.id in found:
            continue
        created = ensure_utc(r.created_at)
        resolved = ensure_utc(r.resolved_at)
        assert created is not None
        rel = Related(r.id, r.title, r.severity, r.state, created, resolved)
        rel.same_group = gk is not None and r.group_key == gk
        rel.overlapping = created < end and (resolved is None or resolved > start)
        rel.shared = sorted(mine & {(k, str(v)) for k, v in (r.labels or {}).items()})
        if rel.same_group or rel.overlapping or len(rel.shared) >= SHARED_MIN:
            found[r.id] = rel
    mid = start + (end - start) / 2

    def rank(x: Related) -> tuple[int, int, int, float]:
        return (
            0 if x.same_group else 1,
            0 if x.overlapping else 1,
            -len(x.shared),
            abs((x.created_at - mid).total_seconds()),
        )

    return sorted(found.values(), key=rank)[:limit]


# ---------------------------------------------------------------------------------------------- chart


@dataclass
class Chart:
    """A PNG chart of the draft; ``filename`` is what the CLI writes it as (next to the Markdown)."""

    name: str
    title: str
    png: bytes
    filename: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "filename": self.filename,
            "png_base64": base64.b64encode(self.png).decode(),
        }


@dataclass
class ChartPlan:
    """What to draw (the series read from history), or why there is nothing (``note``)."""

    title: str = ""
    lines: list[tuple[str, list[tuple[datetime, float]]]] = field(default_factory=list)
    spans: list[tuple[datetime, datetime]] = field(default_factory=list)
    marks: list[tuple[datetime, str]] = field(default_factory=list)
    threshold: float | None = None
    threshold_text: str | None = None
    note: str | None = None


async def series_plan(config: Any, history: Any, inc: Mapping[str, Any], now: datetime) -> ChartPlan:
    """The series of the rule that triggered the incident, around it (firing span, ack mark, threshold), read with
    ``history.range``; a plan with a ``note`` (and no lines) when there is nothing to chart. Never raises."""
    alerts = [a for a in inc.get("alerts") or () if str(a.get("origin") or "").startswith("rule:")]
    if not alerts:
        return ChartPlan(note="No alert of this incident comes from a rule, so there is no series to chart.")
    origin = alerts[0]["origin"]
    key = origin[len("rule:") :]
    rule = rule_of(config, origin)
    if rule is None:
        return ChartPlan(note=f"The rule {key} is no longer configured.")
    metric = rule.expr.metrics[0] if getattr(rule.expr, "metrics", None) else None
    if metric is None:
        return ChartPlan(note=f"The rule {key} reads no metric.")
    enabled = getattr(getattr(config, "history", None), "enabled", True)
    kind = getattr(history, "source_kind", lambda _: None)(rule.source) if history is not None else None
    if history is None or (not enabled and kind != "prometheus"):  # a prometheus source answers range queries itself
        return ChartPlan(note="Series history is off (history.enabled), so there is no chart.")
    try:
        times = incident_times(inc)
    except ValueError as e:
        return ChartPlan(note=str(e))
    created, resolved = times.created, times.resolved
    until = resolved or now
    begin = min(times.impact_start, created) - max(timedelta(minutes=30), until - created)
    end = min(now, resolved + timedelta(minutes=10)) if resolved else now
    if end <= begin:
        end = begin + timedelta(minutes=1)
    plan = ChartPlan(title=f"{metric} on {rule.source} around incident #{inc.get('id')}")
    seen: set[tuple[tuple[str, str], ...]] = set()
    everything: list[Any] | None = None
    try:
        for a in [a for a in alerts if a["origin"] == origin][:CHART_LINES]:
            labels = a.get("labels") or {}
            found = await history.range(rule.source, metric, series_matchers(labels, rule), start=begin, end=end)
            if not found:  # an aggregating expression: its alert's labels are not all on the series
                if everything is None:
                    everything = await history.range(rule.source, metric, (), start=begin, end=end)
                found = [sd for sd in everything if all(labels.get(k, v) == v for k, v in sd.labels.items())][:3]
            for sd in found:
                ident = tuple(sorted(sd.labels.items()))
                if ident in seen or len(plan.lines) >= CHART_LINES:
                    continue
                seen.add(ident)
                shown = ", ".join(f"{k}={v}" for k, v in ident)
                pts = [(datetime.fromtimestamp(p[0], UTC), float(p[1])) for p in sd.points]
                plan.lines.append((f"{metric}{{{shown}}}" if shown else metric, pts))
    except Exception as e:  # history is optional: a failed read costs the chart, not the draft
        if hasattr(e, "message"):
            return ChartPlan(note=f"No chart: {e.message}")
        log.warning("postmortem_chart_read_failed", incident_id=inc.get("id"), error=type(e).__name__)
        return ChartPlan(note="The series history could not be read (the error is in the daemon's log).")
    if not any(pts for _, pts in plan.lines):
        return ChartPlan(note=f"No recorded history of {metric} on {rule.source} around the incident.")
    plan.spans.append((created, resolved or end))
    if times.acknowledged is not None:
        plan.marks.append((times.acknowledged, f"ack by {inc.get('acknowledged_by') or '?'}"))
    if resolved is not None:
        plan.marks.append((resolved, "resolved"))
    thr = simple_threshold(rule.expr.text, metric)
    if thr is not None:
        plan.threshold = thr[2]
        plan.threshold_text = f"{thr[0]} {thr[1]} {thr[2]:g}"
    return plan


def draw(plan: ChartPlan, tz: str = "UTC") -> bytes | None:
    """The plan's PNG (``charts.series_chart``), None when it has no lines; call it in a thread."""
    if not plan.lines:
        return None
    from fsincident.analytics import charts  # matplotlib loads on the first chart, not with the API

    return charts.series_chart(
        plan.lines,
        title=plan.title,
        spans=plan.spans,
        marks=plan.marks,
        threshold=plan.threshold,
        tz=tz,
    )


# ---------------------------------------------------------------------------------------------- the draft


@dataclass
class Draft:
    """A postmortem draft: the Markdown (charts embedded as data URIs or linked by file name) and its charts."""

    incident: dict[str, Any]
    markdown: str
    charts: list[Chart]
    related: list[Related] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The ``?format=json`` answer: ``{"incident", "markdown", "charts": [{"name", "png_base64", ...}]}``."""
        return {
            "incident": self.incident,
            "markdown": self.markdown,
            "charts": [c.as_dict() for c in self.charts],
            "related": [r.as_dict() for r in self.related],
        }


def _tzinfo(name: str) -> Any:
    try:
        return ZoneInfo(name) if name and name != "UTC" else UTC
    except (KeyError, ValueError):
        return UTC


def _fmt(t: datetime | None, tz: Any) -> str:
    if t is None:
        return "–"
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _origin_text(origin: str) -> str:
    if origin.startswith("rule:"):
        return f"rule {origin[5:]}"
    if origin == "alertmanager":
        return "the Alertmanager API (POST /api/v2/alerts)"
    if origin.startswith("pagerduty:"):
        return f"the PagerDuty Events API integration {origin[len('pagerduty:') :]}"
    return origin or "unknown"


_EVENT_KEYS = (  # step and loop are in the escalation note already ("step 2 of 3, pass 1 of 2")
    "policy",
    "targets",
    "users",
    "target",
    "channel",
    "reason",
    "via",
    "silence",
    "alerts",
    "fingerprint",
    "state",
)


def _event_details(e: Mapping[str, Any]) -> str:
    parts = []
    if e.get("note"):
        parts.append(md_text(e["note"]))
    data = e.get("data") or {}
    if isinstance(data, Mapping):
        for k in _EVENT_KEYS:
            if k in data and data[k] not in (None, "", [], {}):
                v = data[k]
                v = ", ".join(str(x) for x in v) if isinstance(v, list | tuple) else v
                if isinstance(v, Mapping):
                    v = ", ".join(f"{a}={b}" for a, b in v.items())
                parts.append(f"{md_text(k)}: {md_text(v)}")
        for o in data.get("oncall") or ():
            if isinstance(o, Mapping) and o.get("schedule"):
                parts.append(f"on call for schedule {md_text(o.get('schedule'))}: {md_text(o.get('user'))}")
    return "; ".join(parts)


def _schedules_by_user(timeline: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in timeline:
        data = e.get("data") or {}
        if not isinstance(data, Mapping):
            continue
        for o in data.get("oncall") or ():
            if isinstance(o, Mapping) and o.get("user") and o.get("schedule"):
                out.setdefault(str(o["user"]), [])
                if o["schedule"] not in out[str(o["user"])]:
                    out[str(o["user"])].append(str(o["schedule"]))
    return out


def _rule_section(config: Any, alerts: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    origins = list(dict.fromkeys(str(a.get("origin") or "") for a in alerts))
    if not origins:
        return ["No alert is recorded for this incident."]
    for origin in origins:
        rule = rule_of(config, origin)
        if origin.startswith("rule:") and rule is not None:
            out += [f"### Rule {md_text(rule.key)}", ""]
            rows = [
                ["Group", md_text(rule.group)],
                ["Alert", md_text(rule.alert)],
                ["Source", md_text(rule.source)],
                ["For", md_text(_td(rule.for_))],
                ["Keep firing for", md_text(_td(rule.keep_firing_for))],
                ["Severity", md_text(getattr(rule.severity, "value", rule.severity))],
                ["Labels", _labels_text(rule.labels)],
                ["Defined in", md_text(f"{rule.file}:{rule.line}")],
            ]
            if rule.slo:
                rows.append(["SLO", md_text(rule.slo)])
            out.append(_table(["Field", "Value"], rows))
            if rule.query:
                out += ["", "Query:", "", code_block(rule.query)]
            out += ["", "Expression:", "", code_block(rule.expr.text, "python")]
            if rule.resolve_expr is not None:
                out += ["", "Resolves when:", "", code_block(rule.resolve_expr.text, "python")]
        elif origin.startswith("rule:"):
            out.append(f"### Rule {md_text(origin[5:])}")
            out.append("This rule is no longer in the running configuration.")
        else:
            out.append(f"### Ingested alert: {md_text(origin or 'unknown origin')}")
            out.append(f"The alert came from {md_text(_origin_text(origin))}, not from a rule of this daemon.")
        out.append("")
    return out


def _td(td: Any) -> str:
    if isinstance(td, timedelta):
        return duration_text(td.total_seconds()) if td else "0s"
    return str(td)


def render_markdown(
    inc: Mapping[str, Any],
    *,
    notifications: Sequence[Mapping[str, Any]] | None,
    related: Sequence[Related],
    config: Any,
    plan: ChartPlan | None,
    chart_ref: str | None,
    now: datetime,
    tz: str = "UTC",
    ack_within: timedelta | None = None,
    external_url: str = "",
) -> str:
    """The draft's Markdown for an incident dict (with ``alerts`` and ``timeline``); ``chart_ref`` is the image
    address (a data URI or a file name) or None. Raises ValueError for an incident without ``created_at``."""
    zone = _tzinfo(tz)
    t = incident_times(inc)
    iid = inc.get("id")
    alerts = list(inc.get("alerts") or ())
    timeline = list(inc.get("timeline") or ())
    notes = list(notifications or ())
    sev = str(inc.get("severity") or "")
    state = str(inc.get("state") or "")
    L: list[str] = []
    L.append(f"# Postmortem: incident #{iid} — {md_text(inc.get('title'))}")
    L.append("")
    L.append(
        f"*Draft generated {md_text(_fmt(now, zone))} by fsincident. Times are in "
        f"{md_text(getattr(zone, 'key', 'UTC'))}. Fill in the sections marked TODO.*"
    )
    if external_url:
        url = f"{external_url.rstrip('/')}/ui/incidents/{iid}"
        L.append("")
        L.append(f"Incident page: <{url}>" if re.fullmatch(r"https?://[^\s<>]+", url) else "")
    # -- summary
    L += ["", "## Summary", ""]
    sentence = f"Incident \\#{iid} ({md_text(sev)}) opened {md_text(_fmt(t.created, zone))}"
    if t.acknowledged is not None:
        sentence += f", was acknowledged by {md_text(inc.get('acknowledged_by') or '?')} after {duration_text(t.tta)}"
    if t.resolved is not None:
        by = inc.get("resolved_by")
        who = "automatically (all its alerts resolved)" if by in (None, SYSTEM_ACTOR) else f"by {md_text(by)}"
        sentence += f" and was resolved {who} after {duration_text(t.ttr)}"
    else:
        sentence += f" and is still {md_text(state)} ({duration_text((now - t.created).total_seconds())} so far)"
    L.append(sentence + ".")
    L.append("")
    summaries = [a.get("annotations", {}).get("summary") for a in alerts if (a.get("annotations") or {}).get("summary")]
    descs = [
        a.get("annotations", {}).get("description") for a in alerts if (a.get("annotations") or {}).get("description")
    ]
    rows = [
        ["Title", md_text(inc.get("title"))],
        ["Severity", md_text(sev)],
        ["State", md_text(state)],
        ["Labels", _labels_text(inc.get("labels"))],
        ["Alerts", str(len(alerts))],
    ]
    if inc.get("escalation_policy"):
        rows.append(["Escalation policy", md_text(inc["escalation_policy"])])
    if inc.get("targets"):
        rows.append(["Targets", md_text(", ".join(map(str, inc["targets"])))])
    for s in list(dict.fromkeys(summaries))[:3]:
        rows.append(["Alert summary", md_text(s)])
    for d in list(dict.fromkeys(descs))[:3]:
        rows.append(["Alert description", md_text(d)])
    L.append(_table(["Field", "Value"], rows))
    L.append("")
    L.append("**What happened:** TODO — one paragraph for readers who were not there.")
    # -- impact
    L += ["", "## Impact", ""]
    end_text = _fmt(t.impact_end, zone) if t.impact_end else f"ongoing at {_fmt(now, zone)}"
    span = ((t.impact_end or now) - t.impact_start).total_seconds()
    L.append(
        f"Impact window: **{md_text(_fmt(t.impact_start, zone))}** to **{md_text(end_text)}** ({duration_text(span)})"
        + (", from the first alert's start to the resolution." if t.impact_end else ", from the first alert's start.")
    )
    L.append("")
    L.append("**Who and what was affected:** TODO.")
    # -- key times
    L += ["", "## Detection, response and resolution", ""]
    first = _fmt(t.first_alert, zone) if t.first_alert else "–"
    tta_note = "resolved without an acknowledgement: the resolution counts as the response" if t.tta_is_resolve else ""
    if ack_within is not None and t.tta is not None:
        within = t.tta <= ack_within.total_seconds()
        tta_note = "; ".join(
            x for x in (tta_note, f"{'within' if within else 'over'} the {_td(ack_within)} target") if x
        )
    rows = [
        ["Series went bad (first alert start)", md_text(first), "–", ""],
        [
            "Incident opened (detected)",
            md_text(_fmt(t.created, zone)),
            f"TTD {duration_text(t.ttd)}" if t.ttd is not None else "TTD –",
            "after the first alert started (for:, group wait)" if t.ttd else "",
        ],
        [
            "Acknowledged",
            md_text(_fmt(t.acknowledged, zone))
            + (f" by {md_text(inc.get('acknowledged_by'))}" if t.acknowledged else ""),
            f"TTA {duration_text(t.tta)}",
            md_text(tta_note),
        ],
        [
            "Resolved",
            md_text(_fmt(t.resolved, zone)) + (f" by {md_text(inc.get('resolved_by'))}" if t.resolved else ""),
            f"TTR {duration_text(t.ttr)}",
            "" if t.resolved else "still open",
        ],
    ]
    L.append(_table(["Milestone", "Time", "Since", "Note"], rows))
    # -- chart
    L += ["", "## The series", ""]
    if plan is not None and plan.lines and chart_ref:
        L.append(f"![{md_text(plan.title)}]({chart_ref})")
        L.append("")
        extra = [f"threshold `{plan.threshold_text}` (dotted line)"] if plan.threshold_text else []
        L.append(
            "The shaded span is the incident (opened to resolved); dashed lines mark the acknowledgement and the "
            "resolution" + ("; " + extra[0] if extra else "") + "."
        )
    else:
        L.append(md_text(plan.note if plan is not None and plan.note else "No chart.", line_start=True))
    # -- rule
    L += ["", "## What fired", ""]
    L += _rule_section(config, alerts)
    if alerts:
        rows = [
            [
                md_text(a.get("alertname")),
                _labels_text(a.get("labels")),
                md_text(a.get("state")),
                md_text(_fmt(_at(a.get("starts_at")), zone)),
                md_text(_fmt(_at(a.get("ends_at")), zone)),
                md_text(
                    "" if a.get("value") is None else f"{a['value']:g}" if isinstance(a["value"], float) else a["value"]
                ),
            ]
            for a in alerts[:MAX_TIMELINE]
        ]
        L.append("Alerts of the incident:")
        L.append("")
        L.append(_table(["Alert", "Labels", "State", "Started", "Ended", "Value"], rows))
    # -- timeline
    L += ["", "## Timeline", ""]
    if timeline:
        rows = [
            [
                md_text(_fmt(_at(e.get("at")), zone)),
                md_text(e.get("kind")),
                md_text(e.get("actor") or ""),
                _event_details(e),
            ]
            for e in timeline[:MAX_TIMELINE]
        ]
        L.append(_table(["Time", "Event", "By", "Details"], rows))
        if len(timeline) > MAX_TIMELINE:
            L.append("")
            L.append(f"… and {len(timeline) - MAX_TIMELINE} more events (see the incident page).")
    else:
        L.append("No timeline events.")
    # -- paging
    L += ["", "## Who was paged and when", ""]
    if notifications is None:
        L.append("The notification log was not available.")
    elif not notes:
        L.append("Nobody was notified.")
    else:
        via = _schedules_by_user(timeline)
        people: dict[str, datetime] = {}
        rows = []
        for n in notes[:MAX_TIMELINE]:
            target = str(n.get("target") or "")
            who = target
            if target.startswith("user:") and via.get(target[5:]):
                who += " (on call: " + ", ".join(f"schedule:{s}" for s in via[target[5:]]) + ")"
            created = _at(n.get("created_at"))
            if n.get("kind") == "trigger" and target.startswith("user:") and created is not None:
                people.setdefault(target[5:], created)
            log_rows = n.get("log") or []
            err = n.get("last_error") or next((x.get("error") for x in reversed(log_rows) if x.get("error")), None)
            rows.append(
                [
                    md_text(_fmt(created, zone)),
                    md_text(who),
                    md_text(n.get("destination") or ""),
                    md_text(n.get("kind")),
                    md_text(n.get("state")),
                    md_text(_fmt(_at(n.get("sent_at")), zone) if n.get("sent_at") else "–"),
                    str(n.get("attempts") or 0),
                    md_text(str(err)[:300]) if err else "",
                ]
            )
        if people:
            L.append(
                "People paged: "
                + ", ".join(f"{md_text(u)} (first at {md_text(_fmt(at, zone))})" for u, at in people.items())
                + "."
            )
            L.append("")
        L.append(_table(["Queued", "Target", "Destination", "Kind", "State", "Sent", "Attempts", "Error"], rows))
    # -- related
    L += ["", "## Related incidents", ""]
    if related:
        rows = []
        for r in related:
            why = []
            if r.same_group:
                why.append("same alert group")
            if r.overlapping:
                why.append("overlapping in time")
            if r.shared:
                why.append("shares " + ", ".join(f"{md_text(k)}={md_text(v)}" for k, v in r.shared[:6]))
            rows.append(
                [
                    f"\\#{r.id}",
                    md_text(r.title),
                    md_text(r.severity),
                    md_text(r.state),
                    md_text(_fmt(r.created_at, zone)),
                    md_text(_fmt(r.resolved_at, zone)),
                    "; ".join(why),
                ]
            )
        L.append(_table(["Incident", "Title", "Severity", "State", "Opened", "Resolved", "Why related"], rows))
    else:
        L.append("None found (same alert group, overlapping in time, or sharing labels within a day).")
    # -- the human part
    L += ["", "## Causes", "", "TODO: the root cause(s), and how we know.", ""]
    L += ["## Contributing factors", "", "TODO: what made it worse or slower to detect, respond to or fix.", ""]
    L += ["## What went well", "", "TODO.", ""]
    L += ["## Follow-ups", ""]
    L += [f"- [ ] {item}" for item in _suggestions(inc, t, notes, timeline, ack_within)]
    L.append("- [ ] TODO: add the actions that prevent a repeat (owner, due date)")
    return "\n".join(L).rstrip() + "\n"


def _suggestions(
    inc: Mapping[str, Any],
    t: Times,
    notes: Sequence[Mapping[str, Any]],
    timeline: Sequence[Mapping[str, Any]],
    ack_within: timedelta | None,
) -> list[str]:
    """Follow-up prompts the data suggests (plain text, no user content)."""
    out = []
    if ack_within is not None and t.tta is not None and t.tta > ack_within.total_seconds() and not t.tta_is_resolve:
        out.append(f"Find out why the acknowledgement took {duration_text(t.tta)} (target {_td(ack_within)})")
    if t.acknowledged is None and t.resolved is not None:
        out.append("Nobody acknowledged this incident: check that the page reached someone who could act")
    if any(e.get("kind") == "escalated" and _past_first(e) for e in timeline):
        out.append("The incident escalated past the first step: check the first responder was reachable")
    failed = sum(1 for n in notes if n.get("state") == "failed")
    if failed:
        out.append(f"{failed} notification(s) failed: check those destinations")
    retrig = sum(1 for e in timeline if e.get("kind") == "retriggered")
    if retrig:
        out.append(f"The incident re-triggered {retrig} time(s): check the rule's thresholds, for: and resolve_expr")
    if t.ttd is not None and t.ttd > 600:
        out.append(f"Detection took {duration_text(t.ttd)} after the series went bad: review the rule's for:")
    return out


def _past_first(e: Mapping[str, Any]) -> bool:
    data = e.get("data") or {}
    if not isinstance(data, Mapping):
        return False
    return bool(data.get("manual")) or int(data.get("step") or 0) > 0 or int(data.get("loop") or 0) > 0


def chart_filename(incident_id: Any) -> str:
    """The file name the CLI writes the chart as (``incident-ID-chart.png``)."""
    return f"incident-{incident_id}-chart.png"


async def chart_png(config: Any, history: Any, inc: Mapping[str, Any], now: datetime) -> bytes | None:
    """The PNG of the incident's series (drawn in a thread), None when there is no series to chart; never raises
    for missing history or rule (those give None)."""
    plan = await series_plan(config, history, inc, now)
    tz = config.analytics.timezone if config is not None else "UTC"
    return await asyncio.to_thread(draw, plan, tz)


async def draft(
    store: Store,
    config: Any,
    history: Any,
    inc: dict[str, Any],
    notifications: Sequence[Mapping[str, Any]] | None,
    now: datetime,
    *,
    embed: bool = True,
) -> Draft:
    """The postmortem draft of ``inc`` (an incident dict with ``alerts`` and ``timeline``): charts embedded as
    ``data:image/png;base64`` when ``embed``, else linked as ``incident-ID-chart.png``. Raises the store's error
    when related incidents cannot be read, ValueError for an incident without ``created_at``."""
    times = incident_times(inc)
    tz = config.analytics.timezone if config is not None else "UTC"
    ack_within = config.analytics.ack_within if config is not None else None
    related = await related_incidents(
        store, int(inc["id"]), inc.get("labels") or {}, times.impact_start, times.resolved or now, limit=RELATED_LIMIT
    )
    plan = await series_plan(config, history, inc, now)
    png = await asyncio.to_thread(draw, plan, tz)
    out_charts = []
    ref = None
    if png is not None:
        name = chart_filename(inc["id"])
        out_charts.append(Chart("series", plan.title, png, name))
        ref = "data:image/png;base64," + base64.b64encode(png).decode() if embed else name
    md = render_markdown(
        inc,
        notifications=notifications,
        related=related,
        config=config,
        plan=plan,
        chart_ref=ref,
        now=now,
        tz=tz,
        ack_within=ack_within,
        external_url=getattr(config, "external_url", "") or "",
    )
    log.info("postmortem_drafted", incident_id=inc["id"], charts=len(out_charts), related=len(related))
    return Draft(dict(inc), md, out_charts, related)
