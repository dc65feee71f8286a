"""Scheduled reports: ``GET /api/v1/reports`` (scope read) lists the configured ones with their next and last fire
times; ``POST /api/v1/reports/{name}/send`` (scope admin) queues one now, for its period ending now (202)."""

from __future__ import annotations

from aiohttp import web

from fsincident.analytics.reports import ReportScheduler, UnknownReport
from fsincident.analytics.service import AnalyticsError
from fsincident.api import CTX, ApiError, scope
from fsincident.obs import get_logger

log = get_logger("fsincident.api")


def _scheduler(request: web.Request) -> ReportScheduler:
    reports = request.app[CTX].reports
    if reports is None:
        raise ApiError(404, "scheduled reports are not available")
    return reports  # type: ignore[no-any-return]


@scope("read")
async def list_reports(request: web.Request) -> web.Response:
    """``{"reports": [{"name", "schedule", "timezone", "period", "to", "sections", "next_at", "last_fire_at"}]}``."""
    return web.json_response({"reports": await _scheduler(request).listing()})


@scope("admin")
async def send_report(request: web.Request) -> web.Response:
    """Queue the report now: 202 ``{"report", "period": {"from", "to"}, "queued"}``; 404 for an unknown report, 409
    when its configuration asks for a report the analytics refuse (``detail.parameter`` names what)."""
    name = request.match_info["name"]
    try:
        out = await _scheduler(request).send_now(name)
    except UnknownReport as e:
        raise ApiError(404, str(e)) from None
    except AnalyticsError as e:  # the configured report asks for what the analytics refuse (e.g. its group_by)
        raise ApiError(409, f"report {name!r} cannot be built: {e.message}", {"parameter": e.param}) from None
    log.info("report_send_requested", report=name, queued=out["queued"])
    return web.json_response(out, status=202)


def add_routes(app: web.Application) -> None:
    """Register ``GET /api/v1/reports`` and ``POST /api/v1/reports/{name}/send``."""
    app.router.add_get("/api/v1/reports", list_reports)
    app.router.add_post("/api/v1/reports/{name}/send", send_report)
