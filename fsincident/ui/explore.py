"""The explore page of the web UI: pick a metric of a source and label matchers, see the matching series over a
time range, their distribution, and a heatmap of incidents by weekday × hour (``/ui/explore``)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from aiohttp import web

from fsincident.history import HistoryError
from fsincident.matchers import Matcher, MatcherError, parse_matcher_list
from fsincident.obs import get_logger
from fsincident.store.tables import Incident
from fsincident.ui import ctx_of, display_tz, page, render
from fsincident.ui.charts import Line, heatmap, histogram, legend, line_chart

log = get_logger("fsincident.ui.explore")

RANGES: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
DEFAULT_RANGE = "1h"
MAX_SERIES = 20
"""Series drawn on the line chart (the distribution uses every matching series)."""
MAX_WEEKS = 52
WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
HOURS = [f"{h:02d}" for h in range(24)]
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,199}")
"""A metric name (Prometheus' syntax): the name goes into a range query on a ``prometheus`` source, so anything
else (``up) or vector(1``) is refused rather than run there."""


def parse_matchers(text: str) -> tuple[Matcher, ...]:
    """Label matchers from the form (``team="app", queue=~"o.*"``; empty = none); raises MatcherError."""
    text = text.strip()
    if not text or text in ("{}",):
        return ()
    return parse_matcher_list(text)


QUARTER = 900


def _whole_hours(tz: ZoneInfo, start: datetime, end: datetime) -> bool:
    """Whether ``tz``'s UTC offset is a whole number of hours at both ends of the range (nearly every zone)."""
    return all((t.astimezone(tz).utcoffset() or timedelta(0)).total_seconds() % 3600 == 0 for t in (start, end))


async def incident_heatmap(ctx: Any, tz: ZoneInfo, start: datetime, end: datetime) -> list[list[int]]:
    """Incidents created in [start, end) counted by weekday (rows, Monday first) × hour (columns) in ``tz``;
    raises what the database raises.

    Only ``created_at`` is read, counted per UTC hour in SQL (per quarter hour for a zone with a half-hour offset),
    and each of those few hundred buckets is placed in its local weekday and hour here."""
    col = Incident.created_at
    width = 3600 if _whole_hours(tz, start, end) else QUARTER
    if ctx.store.is_sqlite:
        # stored as "YYYY-MM-DD HH:MM:SS.ffffff" (UTC): cutting the text is much cheaper than strftime('%s')
        if width == 3600:
            keys: list[Any] = [sa.func.substr(col, 1, 13)]
        else:
            keys = [sa.func.substr(col, 1, 13), sa.cast(sa.func.substr(col, 15, 2), sa.Integer) / 15]
    else:
        keys = [sa.func.floor(sa.extract("epoch", col) / width)]
    labelled = [k.label(f"k{i}") for i, k in enumerate(keys)]
    q = (
        sa.select(*labelled, sa.func.count())
        .where(col >= start, col < end)
        .group_by(*(sa.literal_column(f"k{i}") for i in range(len(keys))))
    )
    async with ctx.store.read() as s:
        conn = await s.connection()  # a Core statement: the Connection runs it (Session.execute is deprecated)
        rows = (await conn.execute(q)).all()
    cells = [[0] * 24 for _ in range(7)]
    for *key, n in rows:
        if key[0] is None:
            continue
        if ctx.store.is_sqlite:
            at = datetime.fromisoformat(f"{key[0]}:00:00").replace(tzinfo=UTC)
            if len(key) > 1:
                at += timedelta(minutes=15 * int(key[1] or 0))
        else:
            at = datetime.fromtimestamp(int(key[0]) * width, UTC)
        local = at.astimezone(tz)
        cells[local.weekday()][local.hour] += int(n)
    return cells


_CATALOG: dict[int, tuple[float, dict[str, list[str]]]] = {}
CATALOG_TTL = 10.0
"""Seconds the metric names of the form are reused (they change when a series first gets history)."""


async def _catalog(history: Any) -> dict[str, list[str]]:
    """``history.catalog()``, reused for ``CATALOG_TTL`` seconds when it names any metric; raises HistoryError."""
    hit = _CATALOG.get(id(history))
    now = time.monotonic()
    if hit is not None and now < hit[0]:
        return hit[1]
    catalog = await history.catalog()
    if any(catalog.values()):
        _CATALOG.clear()
        _CATALOG[id(history)] = (now + CATALOG_TTL, catalog)
    return catalog


@page("read")
async def explore_page(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    tz = display_tz(request)
    q = request.query
    rng = q.get("range", DEFAULT_RANGE)
    if rng not in RANGES:
        rng = DEFAULT_RANGE
    try:
        weeks = min(MAX_WEEKS, max(1, int(q.get("weeks", "4"))))
    except ValueError:
        weeks = 4
    history = ctx.history
    errors: list[str] = []
    notes: list[str] = []
    catalog: dict[str, list[str]] = {}
    if history is not None:
        try:
            catalog = await _catalog(history)
        except HistoryError as e:
            errors.append(e.message)
    else:
        notes.append("The daemon keeps no series history (history is disabled).")
    sources = sorted(catalog)
    source = q.get("source", "").strip()
    if not source and sources:
        source = next((s for s in sources if catalog[s]), sources[0])
    metric = q.get("metric", "").strip()
    if not metric and catalog.get(source):
        metric = catalog[source][0]
    match = q.get("match", "")
    now = ctx.incidents.clock.now()
    end = now
    start = end - RANGES[rng]
    matchers: tuple[Matcher, ...] = ()
    matcher_error: str | None = None
    try:
        matchers = parse_matchers(match)
    except MatcherError as e:
        matcher_error = f'Those label matchers cannot be read: {e}. Write them like team="app", queue=~"o.*".'
    lines: list[Line] = []
    values: list[float] = []
    shown_series = total_series = 0

    async def read_series() -> list[Any]:
        if history is None or not source or not metric or matcher_error is not None:
            return []
        if not METRIC_NAME.fullmatch(metric):
            errors.append(f"{metric[:200]!r} is not a metric name: letters, digits, _ and : only.")
            return []
        if history.source_kind(source) is None:
            errors.append(f"There is no source named {source!r}.")
            return []
        try:
            return await history.range(source, metric, matchers, start=start, end=end, max_points=400)
        except HistoryError as e:
            errors.append(e.message)
            return []

    async def count_incidents() -> list[list[int]]:
        try:
            return await incident_heatmap(ctx, tz, now - timedelta(weeks=weeks), now)
        except Exception:
            log.exception("ui_explore_heatmap_failed")
            errors.append("The incidents could not be counted (the error is in the daemon's log).")
            return [[0] * 24 for _ in range(7)]

    # independent reads (each on its own read connection): run them side by side
    series, cells = await asyncio.gather(read_series(), count_incidents())
    total_series = len(series)
    for sd in series:
        values.extend(avg for _t, avg, _mn, _mx in sd.points if avg == avg)
    for sd in series[:MAX_SERIES]:
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(sd.labels.items()))
        lines.append(Line(f"{metric}{{{inner}}}", [(t, avg) for t, avg, _mn, _mx in sd.points]))
    shown_series = len(lines)
    if total_series > shown_series:
        notes.append(f"Showing {shown_series} of {total_series} series; narrow them down with matchers.")
    inner = match.strip().strip("{}").strip()
    title = f"{metric}{{{inner}}}" if inner else metric
    chart = line_chart(lines, start.timestamp(), end.timestamp(), tz=tz, title=title)
    dist = histogram(values, bins=20, title=f"Distribution of {metric}" if metric else "")
    hm = heatmap(cells, rows=WEEKDAYS, cols=HOURS, title=f"Incidents created, last {weeks} weeks ({tz})")
    return render(
        request,
        "explore.html.j2",
        title="Explore",
        extra_js=["charts.js"],
        active="explore",
        catalog=catalog,
        sources=sources,
        source=source,
        metric=metric,
        metrics=catalog.get(source, []),
        match=match,
        matcher_error=matcher_error,
        ranges=list(RANGES),
        range=rng,
        weeks=weeks,
        chart=chart,
        dist=dist,
        heatmap=hm,
        heatmap_total=sum(map(sum, cells)),
        values=len(values),
        errors=errors,
        notes=notes,
        legend=legend(lines),
        shown_series=shown_series,
        total_series=total_series,
    )


def add_routes(app: web.Application) -> None:
    """Register this module's pages."""
    app.router.add_get("/ui/explore", explore_page)
