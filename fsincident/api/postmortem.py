"""Postmortem drafts over the API (issue #9), scope ``read``.

``GET /api/v1/incidents/{id}/postmortem``: the draft as ``text/markdown; charset=utf-8``, its chart embedded as a
``data:image/png;base64`` URI (self-contained); ``?format=json``: ``{"incident", "markdown", "charts": [{"name",
"title", "filename", "png_base64"}], "related"}``; ``?images=files`` links the charts by file name
(``incident-ID-chart.png``) instead of embedding them (what ``fsincident postmortem --output`` writes).
``GET /api/v1/incidents/{id}/postmortem/chart.png``: the chart alone (404 when the incident has no series to chart).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from fsincident.analytics import postmortem as pm
from fsincident.api import CTX, ApiError, incident_id, scope
from fsincident.api.notifications import notifications_of
from fsincident.incidents.service import NotFound
from fsincident.obs import get_logger

log = get_logger("fsincident.api.postmortem")

FORMATS = ("markdown", "json")
IMAGES = ("inline", "files")


async def _incident(request: web.Request) -> dict[str, Any]:
    """The incident with its alerts and timeline; raises ApiError 404."""
    iid = incident_id(request)
    try:
        return await request.app[CTX].incidents.get(iid)
    except NotFound as e:
        raise ApiError(404, str(e)) from None


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str:
    value = request.query.get(name, allowed[0]).strip() or allowed[0]
    if value == "md":
        value = "markdown"
    if value not in allowed:
        raise ApiError(400, f"invalid {name} {value!r}", {"allowed": list(allowed)})
    return value


@scope("read")
async def get_postmortem(request: web.Request) -> web.StreamResponse:
    """The incident's postmortem draft (Markdown, or JSON with ``format=json``); 404 for an unknown incident, 400
    for a bad ``format`` or ``images``."""
    fmt = _choice(request, "format", FORMATS)
    images = _choice(request, "images", IMAGES)
    inc = await _incident(request)
    ctx = request.app[CTX]
    notes = await notifications_of(request, inc["id"])
    config = ctx.config() if ctx.config is not None else None
    draft = await pm.draft(
        ctx.store, config, ctx.history, inc, notes, ctx.incidents.clock.now(), embed=images == "inline"
    )
    if fmt == "json":
        return web.json_response(draft.as_json())
    return web.Response(
        text=draft.markdown,
        content_type="text/markdown",
        charset="utf-8",
        headers={"Content-Disposition": f'inline; filename="incident-{inc["id"]}-postmortem.md"'},
    )


@scope("read")
async def get_postmortem_chart(request: web.Request) -> web.StreamResponse:
    """The PNG chart of the incident's series; 404 for an unknown incident or when there is no series to chart."""
    inc = await _incident(request)
    ctx = request.app[CTX]
    config = ctx.config() if ctx.config is not None else None
    plan = await pm.series_plan(config, ctx.history, inc, ctx.incidents.clock.now())
    if not plan.lines:
        raise ApiError(404, f"incident {inc['id']} has no series to chart", plan.note)
    tz = config.analytics.timezone if config is not None else "UTC"
    png = await asyncio.to_thread(pm.draw, plan, tz)
    return web.Response(
        body=png,
        content_type="image/png",
        headers={"Content-Disposition": f'inline; filename="{pm.chart_filename(inc["id"])}"'},
    )


def add_routes(app: web.Application) -> None:
    """Register the postmortem routes on ``app``."""
    app.router.add_get("/api/v1/incidents/{id}/postmortem", get_postmortem)
    app.router.add_get("/api/v1/incidents/{id}/postmortem/chart.png", get_postmortem_chart)
