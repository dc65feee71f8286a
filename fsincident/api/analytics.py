"""Analytics endpoints (issue #9): the report of a period and each of its sections, as JSON or CSV (scope read).

``GET /api/v1/analytics/report`` and ``GET /api/v1/analytics/{section}`` take ``from``/``to`` (ISO 8601, ``now``,
``now-1d``) or ``period`` (a duration ending at ``to`` or now; default 7d), ``group_by``, ``ack_within``,
``limit`` (incidents listed), ``timezone`` (of the per-day counts), ``sections=a,b`` (report only) and
``format=json|csv``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from fsincident.analytics.records import section_rows, to_csv
from fsincident.analytics.service import DEFAULT_LIMIT, DEFAULT_PERIOD, MAX_PERIOD, SECTIONS, AnalyticsError
from fsincident.api import CTX, ApiError, scope
from fsincident.core import parse_duration
from fsincident.escalation.schedules import parse_instant

PARAMS = {"from", "to", "period", "group_by", "ack_within", "limit", "format", "sections", "timezone"}
FORMATS = ("json", "csv")


def _service(request: web.Request) -> Any:
    svc = request.app[CTX].analytics
    if svc is None:
        raise ApiError(404, "analytics are not available")
    return svc


def _duration(raw: str, key: str, low: timedelta, high: timedelta) -> timedelta:
    try:
        d = parse_duration(raw.strip())
    except ValueError as e:
        raise ApiError(400, f"invalid {key!r}: {e}", {"parameter": key}) from None
    if not low <= d <= high:
        raise ApiError(400, f"invalid {key!r}: must be between {low} and {high}", {"parameter": key})
    return d


def _instant(raw: str, key: str, now: datetime) -> datetime:
    try:
        return parse_instant(raw, now)
    except ValueError as e:
        raise ApiError(400, f"invalid {key!r}: {e}", {"parameter": key}) from None


def period_of(query: Any, now: datetime) -> tuple[datetime, datetime]:
    """``[from, to)`` of a request: any two of ``from``, ``to``, ``period`` (``to`` defaults to now, ``period`` to
    7 days); raises ApiError 400 naming the parameter."""
    given = [k for k in ("from", "to", "period") if query.get(k, "").strip()]
    if len(given) == 3:
        raise ApiError(400, "give at most two of 'from', 'to' and 'period'", {"parameter": "period"})
    period = _duration(query["period"], "period", timedelta(minutes=1), MAX_PERIOD) if "period" in given else None
    start = _instant(query["from"], "from", now) if "from" in given else None
    end = _instant(query["to"], "to", now) if "to" in given else None
    if start is not None and end is None:
        end = start + period if period is not None else now
    if end is None:
        end = now
    if start is None:
        start = end - (period or DEFAULT_PERIOD)
    if end <= start:
        raise ApiError(400, "'from' must be before 'to'", {"parameter": "from"})
    if end - start > MAX_PERIOD:
        raise ApiError(400, f"a report covers at most {MAX_PERIOD.days} days", {"parameter": "period"})
    return start, end


async def _answer(request: web.Request, section: str | None) -> web.StreamResponse:
    q = request.query
    unknown = sorted(set(q) - PARAMS - ({"sections"} if section is not None else set()))
    if section is not None and "sections" in q:
        unknown = ["sections", *unknown]
    if unknown:
        allowed = sorted(PARAMS - ({"sections"} if section is not None else set()))
        raise ApiError(
            400, f"unknown parameter {unknown[0][:64]!r}", {"parameter": unknown[0][:64], "allowed": allowed}
        )
    fmt = q.get("format", "json").strip().lower() or "json"
    if fmt not in FORMATS:
        raise ApiError(400, f"invalid 'format' {fmt[:32]!r}: json or csv", {"parameter": "format"})
    svc = _service(request)
    start, end = period_of(q, svc.clock.now())
    ack_within = None
    if q.get("ack_within", "").strip():
        ack_within = _duration(q["ack_within"], "ack_within", timedelta(0), timedelta(days=30))
    limit = DEFAULT_LIMIT
    if q.get("limit", "").strip():
        try:
            limit = int(q["limit"])
        except ValueError:
            raise ApiError(400, "invalid 'limit': not an integer", {"parameter": "limit"}) from None
    sections: list[str] | None = [section] if section is not None else None
    if section is None and q.get("sections", "").strip():
        sections = [s.strip() for s in q["sections"].split(",") if s.strip()]
    try:
        rep = await svc.report(
            start,
            end,
            group_by=(q.get("group_by") or "").strip() or None,
            sections=sections,
            ack_within=ack_within,
            limit=limit,
            timezone=(q.get("timezone") or "").strip() or None,
        )
    except AnalyticsError as e:
        raise ApiError(400, e.message, {"parameter": e.param}) from None
    if section is not None:
        rep = {k: v for k, v in rep.items() if k in ("period", "group_by", "generated_at", "timezone", section)}
    if fmt == "json":
        return web.json_response(rep, dumps=_dumps)
    if section is not None:
        rows = section_rows(rep, section)
    else:
        rows = [{"section": name, **row} for name in SECTIONS if name in rep for row in section_rows(rep, name)]
    stamp = f"{rep['period']['from']}_{rep['period']['to']}".replace(":", "").replace("-", "")
    return web.Response(
        body=to_csv(rows).encode(),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="analytics-{section or "report"}-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@scope("read")
async def get_report(request: web.Request) -> web.StreamResponse:
    return await _answer(request, None)


@scope("read")
async def get_section(request: web.Request) -> web.StreamResponse:
    name = request.match_info["section"]
    if name not in SECTIONS:
        raise ApiError(404, f"no analytics section {name[:64]!r}", {"sections": ["report", *SECTIONS]})
    return await _answer(request, name)


def add_routes(app: web.Application) -> None:
    """Register this module's routes on ``app``."""
    app.router.add_get("/api/v1/analytics/report", get_report)
    app.router.add_get("/api/v1/analytics/{section}", get_section)
