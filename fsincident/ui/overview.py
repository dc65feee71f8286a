"""The overview page of the web UI: source and rule health, the outbox, incident counts, who is on call now and
the configured metric cards (latest value and a sparkline of the last hour from the series history).

Everything is counted in SQL (a handful of ``GROUP BY`` queries) or read from memory (source snapshots, rule
states), so the page stays fast however many incidents the database holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlmodel import col, select

from fsincident.core import ensure_utc
from fsincident.matchers import MatcherError, parse_selector
from fsincident.obs import get_logger
from fsincident.store.tables import Incident, NotificationAttempt, Outbox
from fsincident.ui import config_of, ctx_of, page, render

log = get_logger("fsincident.ui.overview")

STATES = ("triggered", "acknowledged", "resolved")
SEVERITIES = ("critical", "warning", "info")
OUTBOX_STATES = ("pending", "sending", "bundled", "muted", "sent", "failed", "cancelled")
CARD_WINDOW = timedelta(hours=1)
CARD_POINTS = 120


@dataclass
class SourceRow:
    name: str
    up: bool | None  # None: not collected yet
    last_success: datetime | None
    error: str | None
    failures: int
    down_after: int


@dataclass
class Card:
    title: str
    unit: str
    value: float | None = None
    level: str = "ok"  # ok | warning | critical | none
    spark: Any = None
    series: int = 0
    error: str | None = None
    warn: float | None = None
    crit: float | None = None
    points: list[tuple[float, float]] = field(default_factory=list)


def sources_health(request: web.Request) -> list[SourceRow]:
    """Every configured source with its latest collection (up/down, last success, redacted error, failures)."""
    ctx = ctx_of(request)
    snaps = ctx.sources.all_snapshots() if ctx.sources is not None else {}
    cfg = config_of(request)
    names = [s.name for s in cfg.sources] if cfg is not None else []
    names += [n for n in snaps if n not in names]
    out = []
    for name in names:
        got = snaps.get(name)
        if got is None:
            out.append(SourceRow(name, None, None, None, 0, 0))
            continue
        snap, down_after = got
        out.append(SourceRow(name, snap.ok, snap.last_success, snap.error, snap.failures, down_after))
    return out


def rules_health(request: web.Request) -> dict[str, Any]:
    """Counts of rules by health and state, of firing/pending series, and the rules whose evaluation fails."""
    view = ctx_of(request).evaluator.rules_view()
    out: dict[str, Any] = {"rules": 0, "ok": 0, "error": 0, "firing": 0, "pending": 0, "inactive": 0}
    out.update({"series_firing": 0, "series_pending": 0, "errors": []})
    for g in view:
        for r in g["rules"]:
            out["rules"] += 1
            out["ok" if r["health"] == "ok" else "error"] += 1
            out[r["state"]] = out.get(r["state"], 0) + 1
            for a in r["alerts"]:
                if a["state"] in ("firing", "pending"):
                    out["series_" + a["state"]] += 1
            if r["health"] != "ok":
                out["errors"].append(
                    {"key": f"{g['name']}/{r['name']}", "error": r["last_error"], "at": r["last_evaluation"]}
                )
    return out


async def store_counts(request: web.Request, now: datetime) -> dict[str, Any]:
    """Outbox rows by state, dead letters and failed attempts of the last 24 h, incidents by state × severity."""
    ctx = ctx_of(request)
    day = now - timedelta(hours=24)
    async with ctx.store.read() as s:
        outbox = dict((await s.exec(select(Outbox.state, sa.func.count()).group_by(Outbox.state))).all())
        results = dict(
            (
                await s.exec(
                    select(NotificationAttempt.result, sa.func.count())
                    .where(col(NotificationAttempt.finished_at) >= day)
                    .where(col(NotificationAttempt.result).in_(("failed", "retry")))
                    .group_by(NotificationAttempt.result)
                )
            ).all()
        )
        grid = (
            await s.exec(
                select(Incident.state, Incident.severity, sa.func.count()).group_by(Incident.state, Incident.severity)
            )
        ).all()
    counts: dict[str, dict[str, int]] = {st: dict.fromkeys(SEVERITIES, 0) for st in STATES}
    for st, sev, n in grid:
        counts.setdefault(st, dict.fromkeys(SEVERITIES, 0))
        counts[st][sev] = counts[st].get(sev, 0) + int(n)
    sev_cols = list(SEVERITIES) + sorted({sev for row in counts.values() for sev in row} - set(SEVERITIES))
    return {
        "outbox": {st: int(outbox.get(st, 0)) for st in (*OUTBOX_STATES, *sorted(set(outbox) - set(OUTBOX_STATES)))},
        "dead_24h": int(results.get("failed", 0)),
        "failed_attempts_24h": int(results.get("failed", 0)) + int(results.get("retry", 0)),
        "counts": counts,
        "severities": sev_cols,
    }


async def oncall_now(request: web.Request, now: datetime) -> list[dict[str, Any]]:
    """Per schedule (config order): who is on call now and until when; never raises."""
    ctx = ctx_of(request)
    if ctx.schedules is None:
        return []
    try:
        rows = await ctx.schedules.oncall_all(now)
    except Exception:
        log.exception("ui_oncall_failed")
        return []
    return [
        {
            "schedule": name,
            "shifts": [{"user": sh.user, "until": sh.end, "override": sh.override is not None} for sh in shifts],
        }
        for name, shifts in rows
    ]


def combine(series: Sequence[Sequence[tuple[float, float]]], reduce: str) -> list[tuple[float, float]]:
    """Points of several series combined per timestamp by ``reduce`` (avg, max, min, sum); NaN values are skipped
    and a timestamp without any value stays NaN (a gap)."""
    by_t: dict[float, list[float]] = {}
    for pts in series:
        for t, v in pts:
            vals = by_t.setdefault(t, [])
            if v is not None and math.isfinite(v):
                vals.append(v)
    out = []
    for t in sorted(by_t):
        vals = by_t[t]
        if not vals:
            out.append((t, math.nan))
        elif reduce == "sum":
            out.append((t, sum(vals)))
        elif reduce == "max":
            out.append((t, max(vals)))
        elif reduce == "min":
            out.append((t, min(vals)))
        else:
            out.append((t, sum(vals) / len(vals)))
    return out


def level_of(value: float | None, warn: float | None, crit: float | None) -> str:
    """``critical``/``warning``/``ok`` for a value against its thresholds (higher is worse, unless crit < warn);
    ``none`` without a value."""
    if value is None or not math.isfinite(value):
        return "none"
    lower_is_worse = warn is not None and crit is not None and crit < warn
    if crit is not None and (value <= crit if lower_is_worse else value >= crit):
        return "critical"
    if warn is not None and (value <= warn if lower_is_worse else value >= warn):
        return "warning"
    return "ok"


async def metric_cards(request: web.Request, now: datetime) -> list[Card]:
    """The configured cards with the last hour of their series from the history; never raises."""
    ctx = ctx_of(request)
    cfg = config_of(request)
    if cfg is None or not cfg.ui.cards:
        return []
    from fsincident.ui import charts  # written alongside this page

    history = ctx.history
    out = []
    for opt in cfg.ui.cards:
        card = Card(opt.title, opt.unit, warn=opt.warn, crit=opt.crit)
        out.append(card)
        if history is None:
            card.error = "series history is off"
            card.spark = charts.sparkline([], warn=opt.warn, crit=opt.crit)
            card.level = "none"
            continue
        try:
            sel = parse_selector(opt.series)
        except MatcherError as e:
            card.error = str(e)
            continue
        metric = sel.metric or ""
        if opt.source is not None:
            sources = [opt.source]
        else:  # every local source; a prometheus source needs the card to name it (each would be a range query)
            sources = [s.name for s in cfg.sources if history.source_kind(s.name) != "prometheus"]
        found: list[list[tuple[float, float]]] = []
        for src in sources:
            try:
                data = await history.range(
                    src, metric, sel.matchers, start=now - CARD_WINDOW, end=now, max_points=CARD_POINTS
                )
            except Exception as e:
                if type(e).__name__ != "HistoryError":
                    log.exception("ui_card_failed", card=opt.title, source=src)
                    card.error = "could not read the history (see the daemon's log)"
                elif opt.source is not None:
                    card.error = str(e)
                continue
            found.extend([(p[0], p[1]) for p in sd.points] for sd in data)
        card.series = len(found)
        card.points = combine(found, opt.reduce)
        latest = next((v for _, v in reversed(card.points) if math.isfinite(v)), None)
        card.value = latest
        card.level = level_of(latest, opt.warn, opt.crit)
        card.spark = charts.sparkline(card.points, warn=opt.warn, crit=opt.crit)
    return out


@page("read")
async def overview(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    now = ctx.incidents.clock.now()
    sources = sources_health(request)
    counts = await store_counts(request, now)
    return render(
        request,
        "overview.html.j2",
        active="overview",
        title="Overview",
        live=True,
        extra_css=["charts.css", "incidents.css"],
        sources=sources,
        rules=rules_health(request),
        store=counts,
        states=STATES,
        oncall=await oncall_now(request, now),
        cards=await metric_cards(request, now),
        utc=ensure_utc,
    )


def add_routes(app: web.Application) -> None:
    """Register this module's pages."""
    app.router.add_get("/ui/", overview)
