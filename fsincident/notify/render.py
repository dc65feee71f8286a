"""Render notifications from the shipped templates, or the config dir's overrides of the same names.

A style picks the templates of one kind of destination (see :data:`STYLES`): ``chat`` (short markdown),
``email`` (subject + HTML), ``email-text`` (subject + plain text), ``text`` and ``raw`` (title + plain
text). A failing override falls back to the shipped template; a failing shipped template falls back to a
plain page built here: a page is never lost to a template.

The context holds the page (incident, alerts, actor, note, links, recipient) and never a secret: no channel
URL, no token, no signing key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fsincident.config import TEMPLATE_NAMES
from fsincident.obs import get_logger
from fsincident.sandbox import CompiledTemplate, TemplateProblem, no_mentions

log = get_logger("fsincident.notify")

SHIPPED = Path(__file__).resolve().parent.parent / "templates"
KIND_LABELS = {"trigger": "TRIGGERED", "acknowledge": "ACKNOWLEDGED", "resolve": "RESOLVED", "info": "INFO"}
HTML_TEMPLATES = frozenset(n for n in TEMPLATE_NAMES if n.endswith(".html"))
"""Templates compiled with HTML autoescaping (overrides too)."""


@dataclass(frozen=True)
class Style:
    """The title and body templates of one style, the body's format and the length caps."""

    title: str
    body: str
    format: str  # text | markdown | html
    title_max: int = 1000
    body_max: int | None = None


STYLES: dict[str, Style] = {
    "chat": Style("title", "chat", "markdown", title_max=250, body_max=2000),
    "email": Style("email_subject", "email.html", "html", title_max=250),
    "email-text": Style("email_subject", "email.txt", "text", title_max=250),
    "text": Style("title", "message", "text"),
    "raw": Style("title", "message", "text"),
}
DIGEST_SHOWN = 50
REPORT_TEMPLATES = {"report": ("report.html", "report.txt"), "handoff_summary": ("shift.html", "shift.txt")}
"""The (HTML, text) body templates of the outbox kinds rendered from ``data`` (scheduled reports, shift summaries);
both use ``report_subject`` for the title."""
REPORT_CHAT_MAX = 4000


@dataclass(frozen=True)
class RenderedPage:
    """A rendered notification; ``problems`` says which templates failed and what was used instead."""

    title: str
    body: str
    format: str  # text | markdown | html
    problems: tuple[str, ...] = ()


def shipped_templates() -> dict[str, CompiledTemplate]:
    """The templates under fsincident/templates by name (file stem); raises TemplateProblem for a broken one."""
    return {
        name: CompiledTemplate(p.read_text(encoding="utf-8"), autoescape=name in HTML_TEMPLATES)
        for p in sorted(SHIPPED.glob("*.j2"))
        for name in [p.name.removesuffix(".j2")]
    }


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


class Renderer:
    """Renders pages and digests; :meth:`page` and :meth:`digest` never raise for a template's fault."""

    def __init__(self, overrides: Mapping[str, CompiledTemplate] | None = None, external_url: str = ""):
        self.shipped = shipped_templates()
        self.overrides: dict[str, CompiledTemplate] = {}
        for name, tpl in (overrides or {}).items():
            if name in HTML_TEMPLATES and not tpl.autoescape:
                tpl = CompiledTemplate(tpl.source, autoescape=True)  # the loader compiled it without escaping
            self.overrides[name] = tpl
        self.external_url = external_url
        self._logged: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ rendering

    def _render(self, name: str, ctx: Mapping[str, Any], problems: list[str] | None = None) -> str:
        """``name`` rendered from its override, else the shipped template; raises TemplateProblem when both fail."""
        tpl = self.overrides.get(name)
        if tpl is not None:
            try:
                return tpl.render(**ctx)
            except TemplateProblem as e:
                self._problem(problems, f"templates/{name}.j2 failed ({e}); used the shipped one")
        try:
            return self.shipped[name].render(**ctx)
        except (TemplateProblem, KeyError) as e:
            self._problem(problems, f"shipped template {name}.j2 failed ({e})")
            raise TemplateProblem(f"template {name} failed: {e}") from None

    def _problem(self, problems: list[str] | None, msg: str) -> None:
        if problems is not None:
            problems.append(msg)
        key = ("render", msg)
        if key not in self._logged:  # once per distinct failure, not once per page of a storm
            if len(self._logged) > 1000:
                self._logged.clear()
            self._logged.add(key)
            log.warning("template_failed", problem=msg[:500])

    def context(
        self, kind: str, data: Mapping[str, Any], links: Mapping[str, str] | None = None, recipient: str = ""
    ) -> dict[str, Any]:
        """The template context of a page: only the listed keys of ``data`` (``Outbox.data``), never secrets."""
        incident = dict(data.get("incident") or {})
        incident.setdefault("url", f"{self.external_url}/api/v1/incidents/{incident.get('id')}")
        alerts = [dict(a) for a in data.get("alerts") or []]
        links = dict(links or {})
        shown_links = {
            "ack": str(links.get("ack") or ""),
            "resolve": str(links.get("resolve") or ""),
            "incident": str(links.get("incident") or incident["url"]),
        }
        return {
            "kind": kind,
            "kind_label": KIND_LABELS.get(kind, kind.upper()),
            "incident": incident,
            "alerts": alerts,
            "firing": [a for a in alerts if a.get("state") == "firing"],
            "resolved": [a for a in alerts if a.get("state") == "resolved"],
            "reason": data.get("reason") or incident.get("notify_reason") or kind,
            "actor": data.get("actor"),
            "note": data.get("note"),
            "links": shown_links,
            "recipient": recipient,
            "external_url": self.external_url,
        }

    def page(
        self, style: str, kind: str, data: Mapping[str, Any] | None, links: Mapping[str, str], recipient: str
    ) -> RenderedPage:
        """The page for a destination of ``style`` (chat | email | email-text | text | raw; others are text);
        never raises: failing templates fall back to shipped ones, then to a plain text page."""
        problems: list[str] = []
        data = data or {}
        if not data.get("incident"):  # not about an incident (handoff notices): what the row says
            return RenderedPage(" ".join(str(data.get("title", "")).split())[:1000], str(data.get("body", "")), "text")
        spec = STYLES.get(style)
        if spec is None:
            problems.append(f"unknown style {style!r}; used text")
            spec = STYLES["text"]
        ctx = self.context(kind, data, links, recipient)
        try:
            title = self._render(spec.title, ctx, problems)
            body = self._render(spec.body, ctx, problems)
        except TemplateProblem:
            title, body = _plain(ctx)
            return RenderedPage(_one_line(title, spec.title_max), body, "text", tuple(problems))
        body = body.strip() if spec.format == "html" else _tidy(body)
        if spec.body_max is not None:
            body = _cap(body, spec.body_max)
        if spec.format == "markdown":  # chat services show the title in the message (Mattermost) or scan it for pings
            title = no_mentions(title)
        return RenderedPage(_one_line(title, spec.title_max), body, spec.format, tuple(problems))

    def digest(self, style: str, items: list[Mapping[str, Any]], recipient: str) -> RenderedPage:
        """One message for ``items`` held by a rate limit (each: title, body, kind, severity, incident_id,
        created_at): markdown for ``chat``, text otherwise; never raises (a plain list when digest.j2 fails)."""
        problems: list[str] = []
        listed = [{k: _iso(v) for k, v in dict(i).items()} for i in items]
        n = len(listed)
        incidents = len({i.get("incident_id") for i in listed if i.get("incident_id") is not None})
        title = f"[DIGEST] {n} notification{'s' if n != 1 else ''}"
        if incidents:
            title += f" about {incidents} incident{'s' if incidents != 1 else ''}"
        markdown = style == "chat"
        ctx = {
            "style": style,
            "markdown": markdown,
            "items": listed,
            "shown": DIGEST_SHOWN,
            "count": n,
            "incidents": incidents,
            "recipient": recipient,
            "external_url": self.external_url,
        }
        try:
            body = _tidy(self._render("digest", ctx, problems))
        except TemplateProblem:
            lines = [f"{n} notifications held by the rate limit:"]
            lines += [f"- {i.get('title', '')}" for i in listed[:DIGEST_SHOWN]]
            if n > DIGEST_SHOWN:
                lines.append(f"… and {n - DIGEST_SHOWN} more")
            return RenderedPage(title, "\n".join(lines), "text", tuple(problems))
        if markdown:
            body = _cap(body, 4000)
        return RenderedPage(title, body, "markdown" if markdown else "text", tuple(problems))

    def report_context(self, kind: str, data: Mapping[str, Any], recipient: str = "") -> dict[str, Any]:
        """The template context of a scheduled report or shift summary (``Outbox.data``), with helpers
        ``duration(seconds)``, ``localtime(iso)`` and ``number(value, digits)``; never a secret."""
        tz = str(data.get("timezone") or (data.get("report") or {}).get("timezone") or "UTC")
        charts = [
            {"name": str(c.get("name", "")), "title": str(c.get("title", "")), "file": f"{c.get('name', 'chart')}.png"}
            for c in data.get("charts") or []
            if isinstance(c, Mapping)
        ]
        return {
            "kind": kind,
            "title": str(data.get("title") or ""),
            "name": data.get("name"),
            "report": dict(data.get("report") or {}),
            "summary": dict(data.get("summary") or {}),
            "sections": list(data.get("sections") or []),
            "timezone": tz,
            "charts": charts,
            "recipient": recipient,
            "external_url": self.external_url,
            "duration": human_duration,
            "localtime": lambda v, fmt="%Y-%m-%d %H:%M": local_time(v, tz, fmt),
            "number": _number,
        }

    def report(self, style: str, kind: str, data: Mapping[str, Any] | None, recipient: str) -> RenderedPage:
        """A scheduled report or shift summary for a destination of ``style``: HTML for ``email``, text otherwise
        (cut for ``chat``); a failing override falls back to the shipped template; raises TemplateProblem when that
        fails too (the caller then sends the plain text stored with the row)."""
        problems: list[str] = []
        data = data or {}
        html_name, text_name = REPORT_TEMPLATES.get(kind, REPORT_TEMPLATES["report"])
        html = style == "email"
        ctx = self.report_context(kind, data, recipient)
        try:
            title = self._render("report_subject", ctx, problems)
        except TemplateProblem:
            title = ctx["title"] or kind
        try:
            body = self._render(html_name if html else text_name, ctx, problems)
        except TemplateProblem:
            raise TemplateProblem("; ".join(problems)) from None
        body = body.strip() if html else _tidy(body)
        if style == "chat":  # incident titles and labels come from alerts: they must not ping a whole channel
            body = no_mentions(_cap(body, REPORT_CHAT_MAX))
            title = no_mentions(title)
        return RenderedPage(_one_line(title, 250), body, "html" if html else "text", tuple(problems))

    def check(self) -> list[str]:
        """Problems of the overrides when rendering a sample page of every kind and a sample digest (each as
        ``templates/NAME.j2: message``); empty when all render. A template that relies on labels or annotations
        the sample lacks is reported too: these are warnings, the shipped template stands in at run time."""
        out: dict[str, str] = {}
        data = sample_page()
        for name, tpl in self.overrides.items():
            try:
                if name in REPORT_NAMES:
                    for kind, pair in REPORT_TEMPLATES.items():
                        if name == "report_subject" or name in pair:
                            sample = sample_report() if kind == "report" else sample_shift()
                            tpl.render(**self.report_context(kind, sample, "user:alice"))
                    continue
                if name == "digest":
                    for markdown in (True, False):
                        ctx = {"style": "chat" if markdown else "text", "markdown": markdown, "shown": DIGEST_SHOWN}
                        items = [{**i, "created_at": _iso(i["created_at"])} for i in sample_digest()]
                        tpl.render(**ctx, items=items, count=2, incidents=2, recipient="channel:ops", external_url="")
                    continue
                for kind in KIND_LABELS:
                    if kind == "info":
                        continue
                    d = {**data, "actor": None if kind == "trigger" else "alice"}
                    tpl.render(**self.context(kind, d, _SAMPLE_LINKS, "channel:ops"))
            except TemplateProblem as e:
                out[name] = f"templates/{name}.j2: {e} (rendering a sample page)"
        return [out[k] for k in sorted(out)]

    def render(
        self, kind: str, incident: dict[str, Any], alerts: list[dict[str, Any]], actor: str | None, note: str | None
    ) -> tuple[str, str]:
        """(title, body) in the ``text`` style, as stored in the outbox; raises TemplateProblem when the shipped
        template fails too (the caller falls back to a plain page)."""
        data = {"incident": incident, "alerts": alerts, "actor": actor, "note": note}
        ctx = self.context(kind, data, None, "")
        title = _one_line(self._render("title", ctx), 1000)
        body = self._render("message", ctx).strip()
        return title, body


_BLANKS = re.compile(r"\n[ \t]*(?:\n[ \t]*)+\n")


def _tidy(body: str) -> str:
    """Trailing spaces dropped and runs of blank lines made one (template whitespace control is fiddly)."""
    body = "\n".join(line.rstrip() for line in body.strip().splitlines())
    return _BLANKS.sub("\n\n", body)


_SAMPLE_LINKS = {"ack": "https://fsincident.example/l/ack", "resolve": "https://fsincident.example/l/resolve"}


def sample_page() -> dict[str, Any]:
    """A page as ``Outbox.data`` holds it, for checking templates: one firing and one resolved alert."""
    labels = {"alertname": "DiskFull", "severity": "critical", "instance": "db-1:9100", "job": "node"}
    alert = {
        "fingerprint": "0123456789abcdef",
        "alertname": "DiskFull",
        "origin": "rule:disk/DiskFull",
        "labels": labels,
        "annotations": {"summary": "db-1 disk is 97% full", "description": "/var has 2 GiB left"},
        "value": 97.2,
        "state": "firing",
        "starts_at": "2026-03-01T12:00:00+00:00",
        "ends_at": None,
        "generator_url": "",
    }
    resolved = {**alert, "fingerprint": "fedcba9876543210", "state": "resolved", "value": None}
    resolved["labels"] = {**labels, "instance": "db-2:9100"}
    resolved["ends_at"] = "2026-03-01T12:05:00+00:00"
    incident = {
        "id": 1,
        "title": "DiskFull: db-1 disk is 97% full",
        "state": "triggered",
        "severity": "critical",
        "labels": {"alertname": "DiskFull", "severity": "critical"},
        "created_at": "2026-03-01T12:00:00+00:00",
        "updated_at": "2026-03-01T12:05:00+00:00",
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "targets": ["channel:ops"],
        "auto_resolve": True,
        "escalation_policy": None,
        "escalation": None,
        "auto_resolve_at": None,
    }
    return {"incident": incident, "alerts": [alert, resolved], "reason": "trigger", "actor": None, "note": "on it"}


REPORT_NAMES = frozenset({"report_subject", *(n for pair in REPORT_TEMPLATES.values() for n in pair)})


def sample_report() -> dict[str, Any]:
    """A queued report's ``data`` (every section, one group, one service), for checking the report templates."""
    stats = {"median": 300.0, "p90": 900.0, "n": 4}
    summary = {
        "incidents": 4,
        "acknowledged": 3,
        "resolved": 3,
        "open": 1,
        "pages": 6,
        "escalations": 1,
        "retriggers": 0,
        "reopens": 1,
        "mtta_seconds": stats,
        "mttr_seconds": {"median": 1800.0, "p90": 3600.0, "n": 3},
        "ttd_seconds": {"median": 60.0, "p90": 120.0, "n": 2},
        "acked_within": {"seconds": 900, "count": 3, "percent": 75.0},
    }
    report = {
        "period": {"from": "2026-03-01T00:00:00Z", "to": "2026-03-08T00:00:00Z", "seconds": 604800},
        "group_by": "service",
        "generated_at": "2026-03-08T08:00:00Z",
        "timezone": "UTC",
        "summary": summary,
        "response": [{"group": "api", **summary}],
        "daily": [{"date": "2026-03-01", "incidents": 4, "by_severity": {"critical": 1, "warning": 3}}],
        "fatigue": {
            "rules": [
                {
                    "rule": "DiskFull",
                    "incidents": 4,
                    "pages": 6,
                    "acted": 3,
                    "acted_percent": 75.0,
                    "rarely_acted": False,
                    "reopens": 1,
                    "retriggers": 0,
                    "flapping": False,
                }
            ],
            "people": [{"user": "alice", "pages": 6, "night": 1, "weekend": 0, "out_of_hours": 2}],
        },
        "oncall": [
            {
                "user": "alice",
                "hours_on_call": 168.0,
                "shifts": 1,
                "pages": 6,
                "out_of_hours_pages": 2,
                "night_pages": 1,
                "weekend_pages": 0,
            }
        ],
        "sla": [
            {
                "service": "api",
                "source": "incidents",
                "target_percent": 99.9,
                "uptime_percent": 99.95,
                "downtime_seconds": 302.4,
                "budget_seconds": 604.8,
                "budget_left_seconds": 302.4,
                "budget_left_percent": 50.0,
                "incidents": 1,
                "coverage_percent": None,
            }
        ],
        "capacity": [
            {
                "rule": "disk/DiskWillFill",
                "source": "node",
                "metric": "disk_free_bytes",
                "labels": {"instance": "db-1"},
                "function": "predict_linear",
                "expr": 'predict_linear(disk_free_bytes, "6h", 4 * 3600) < 0',
                "threshold": 0.0,
                "current": 1.0e9,
                "trend_per_hour": -1.0e8,
                "seconds_to_exhaustion": 36000.0,
                "exhausted_at": "2026-03-08T18:00:00Z",
                "severity": "warning",
            }
        ],
        "incidents": [
            {
                "id": 1,
                "title": "DiskFull: db-1 disk is 97% full",
                "severity": "critical",
                "state": "resolved",
                "group": "api",
                "created_at": "2026-03-01T12:00:00Z",
                "acknowledged_at": "2026-03-01T12:05:00Z",
                "resolved_at": "2026-03-01T12:30:00Z",
                "tta_seconds": 300.0,
                "ttr_seconds": 1800.0,
                "labels": {"alertname": "DiskFull", "service": "api"},
            }
        ],
    }
    charts = [{"name": "incidents-per-day", "title": "Incidents per day", "png_base64": ""}]
    return {
        "report": report,
        "name": "weekly",
        "title": "Weekly report: 2026-03-01 to 2026-03-07",
        "timezone": "UTC",
        "sections": list(report)[4:],
        "fire_at": "2026-03-08T08:00:00Z",
        "charts": charts,
    }


def sample_shift() -> dict[str, Any]:
    """A queued shift summary's ``data``, for checking the shift templates."""
    row = {
        "id": 1,
        "title": "DiskFull: db-1 disk is 97% full",
        "severity": "critical",
        "state": "triggered",
        "created_at": "2026-03-01T12:00:00Z",
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
    }
    counts = {"opened": 1, "acknowledged": 0, "resolved": 0, "still_open": 1}
    summary = {
        "from": "2026-03-01T09:00:00Z",
        "to": "2026-03-08T09:00:00Z",
        "user": "alice",
        "counts": {**counts, "pages": 2},
        "all_incidents": counts,
        "opened": [row],
        "acknowledged": [],
        "resolved": [],
        "still_open": [row],
        "schedule": "infra-primary",
        "outgoing": "alice",
        "incoming": "bob",
        "timezone": "UTC",
    }
    return {"summary": summary, "title": "Shift summary for infra-primary: alice handed over to bob", "charts": []}


def human_duration(seconds: Any) -> str:
    """``seconds`` as ``45s``, ``12m``, ``3.5h`` or ``2.1d``; ``-`` for None or a non-number (never fails)."""
    try:
        v = float(seconds)
    except (TypeError, ValueError):
        return "-"
    if v != v or v in (float("inf"), float("-inf")):
        return "-"
    sign, v = ("-" if v < 0 else ""), abs(v)
    if v < 90:
        return f"{sign}{v:.0f}s"
    if v < 5400:
        return f"{sign}{v / 60:.0f}m"
    if v < 172800:
        return f"{sign}{v / 3600:.1f}h"
    return f"{sign}{v / 86400:.1f}d"


def local_time(value: Any, tz: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An ISO 8601 time shown in time zone ``tz`` (with its abbreviation); ``-`` for None, the text itself when it
    does not parse (never fails)."""
    if value is None or value == "":
        return "-"
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        local = dt.astimezone(ZoneInfo(tz))
    except (ValueError, KeyError, ZoneInfoNotFoundError):
        return str(value)
    return local.strftime(fmt[:40] + " %Z")


def _number(value: Any, digits: int = 1) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    if v != v:
        return "-"
    d = max(0, min(int(digits), 6))
    return f"{v:,.{d}f}"


def sample_digest() -> list[dict[str, Any]]:
    """Two digest items, for checking digest.j2."""
    return [
        {
            "title": f"[TRIGGERED] #{i} DiskFull: db-{i} disk is full (warning)",
            "body": "1 alert firing",
            "kind": "trigger",
            "severity": "warning",
            "incident_id": i,
            "created_at": "2026-03-01T12:00:00+00:00",
        }
        for i in (1, 2)
    ]


def _one_line(text: str, limit: int) -> str:
    out = " ".join(text.split())
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _cap(body: str, limit: int) -> str:
    """``body`` cut to ``limit`` characters, keeping its last line (the links) and marking the cut."""
    if len(body) <= limit:
        return body
    head, _, last = body.rpartition("\n")
    if not head or len(last) > limit // 2:
        return body[: limit - 1] + "…"
    keep = limit - len(last) - 3
    return head[:keep].rstrip() + "\n…\n" + last


def _plain(ctx: Mapping[str, Any]) -> tuple[str, str]:
    """A title and text body built without templates: the last resort, so no page is lost."""
    inc = ctx["incident"]
    title = f"[{ctx['kind_label']}] #{inc.get('id')} {inc.get('title', '')}"
    lines = [f"{ctx['kind']} ({ctx['reason']}), severity {inc.get('severity', '')}"]
    if ctx.get("actor"):
        lines.append(f"by {ctx['actor']}" + (f": {ctx['note']}" if ctx.get("note") else ""))
    for a in ctx["alerts"][:20]:
        lines.append(f"- {a.get('alertname') or 'alert'} {a.get('state', '')}: {a.get('labels', {})}")
    labels = inc.get("labels") or {}
    if labels:
        lines.append("Labels: " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    links = ctx["links"]
    for key, label in (("ack", "Acknowledge"), ("resolve", "Resolve"), ("incident", "Incident")):
        if links.get(key):
            lines.append(f"{label}: {links[key]}")
    return title, "\n".join(lines)
