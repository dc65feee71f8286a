"""Schedule endpoints: who is on call, schedules and their shifts, overrides (audited), iCalendar feeds, the audit log.

The ``.ics`` feeds also accept the token as ``?token=`` (read scope), because calendar apps cannot
send an ``Authorization`` header; no other endpoint does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar
from aiohttp import web

from fsincident.api import CTX, MAX_ID, TOKEN_NAME, ApiError, authorize, json_body, scope
from fsincident.core import isoformat
from fsincident.escalation.schedules import (
    ScheduleError,
    ScheduleService,
    UnknownSchedule,
    UserShift,
    layer_dict,
    parse_instant,
    shift_dict,
)

DEFAULT_SHIFTS = timedelta(days=14)
ICS_PAST = timedelta(days=30)
ICS_FUTURE = timedelta(days=90)
PRODID = "-//fsincident//on-call schedules//EN"


def _service(request: web.Request) -> ScheduleService:
    svc = request.app[CTX].schedules
    if svc is None:
        raise ApiError(404, "schedules are not available")
    return svc


def _time(request: web.Request, key: str, default: datetime, now: datetime) -> datetime:
    """The query parameter ``key`` as an instant (ISO 8601, ``now``, ``now+2h``); raises ApiError 400."""
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        return parse_instant(raw, now)
    except ValueError as e:
        raise ApiError(400, f"invalid {key!r}: {e}") from None


def _schedule_name(request: web.Request, svc: ScheduleService) -> str:
    name = request.match_info["name"]
    try:
        svc.schedule(name)
    except UnknownSchedule as e:
        raise ApiError(404, str(e), {"schedules": [s.name for s in svc.schedules]}) from None
    return name


def _err(e: ScheduleError) -> ApiError:
    return ApiError(e.status, e.message, e.detail)


# ---------------------------------------------------------------------- who is on call, schedules, shifts


@scope("read")
async def get_oncall(request: web.Request) -> web.Response:
    svc = _service(request)
    now = svc.clock.now()
    at = _time(request, "at", now, now)
    name = request.query.get("schedule")
    if name is not None:
        try:
            shifts = await svc.oncall(name, at)
        except UnknownSchedule as e:
            raise ApiError(404, str(e), {"schedules": [s.name for s in svc.schedules]}) from None
        return web.json_response({"schedule": name, "at": isoformat(at), "oncall": [shift_dict(s) for s in shifts]})
    items = [
        {"schedule": n, "at": isoformat(at), "oncall": [shift_dict(s) for s in shifts]}
        for n, shifts in await svc.oncall_all(at)
    ]
    return web.json_response({"at": isoformat(at), "schedules": items})


def _schedule_dict(sch: Any) -> dict[str, Any]:
    return {"name": sch.name, "timezone": sch.timezone, "layers": [layer_dict(layer) for layer in sch.layers]}


@scope("read")
async def list_schedules(request: web.Request) -> web.Response:
    svc = _service(request)
    return web.json_response({"schedules": [_schedule_dict(s) for s in svc.schedules]})


@scope("read")
async def get_schedule(request: web.Request) -> web.Response:
    svc = _service(request)
    return web.json_response(_schedule_dict(svc.schedule(_schedule_name(request, svc))))


@scope("read")
async def list_shifts(request: web.Request) -> web.Response:
    svc = _service(request)
    name = _schedule_name(request, svc)
    now = svc.clock.now()
    start = _time(request, "from", now, now)
    end = _time(request, "to", start + DEFAULT_SHIFTS, now)
    try:
        shifts = await svc.shifts(name, start, end)
    except ScheduleError as e:
        raise _err(e) from None
    return web.json_response(
        {
            "schedule": name,
            "from": isoformat(start),
            "to": isoformat(end),
            "shifts": [shift_dict(s) for s in shifts],
        }
    )


# ---------------------------------------------------------------------- overrides


def _actor(request: web.Request, body: dict[str, Any]) -> str:
    by = (body.get("by") or "").strip()[:200]
    return by or request[TOKEN_NAME]


def _instant(body: dict[str, Any], key: str, now: datetime) -> datetime:
    raw = body.get(key)
    if raw is None:
        raise ApiError(400, f"field {key!r} is required")
    try:
        return parse_instant(raw, now)
    except ValueError as e:
        raise ApiError(400, f"field {key!r}: {e}") from None


@scope("ack")
async def create_override(request: web.Request) -> web.Response:
    svc = _service(request)
    name = _schedule_name(request, svc)
    body = await json_body(request, {"who": str, "from": str, "to": str, "replaces": str, "note": str, "by": str})
    if not body.get("who"):
        raise ApiError(400, "field 'who' is required", {"users": [u.name for u in svc.config.users]})
    now = svc.clock.now()
    start, end = _instant(body, "from", now), _instant(body, "to", now)
    try:
        out = await svc.create_override(
            name,
            who=body["who"],
            start=start,
            end=end,
            replaces=body.get("replaces") or None,
            note=body.get("note") or None,
            by=_actor(request, body),
        )
    except ScheduleError as e:
        raise _err(e) from None
    return web.json_response(out, status=201)


@scope("read")
async def list_overrides(request: web.Request) -> web.Response:
    svc = _service(request)
    name = _schedule_name(request, svc)
    now = svc.clock.now()
    start = _time(request, "from", now, now)
    end = _time(request, "to", now, now) if request.query.get("to") else None
    if end is not None and end <= start:
        raise ApiError(400, "'from' must be before 'to'")
    items = await svc.list_overrides(name, start, end)
    return web.json_response({"schedule": name, "overrides": items})


@scope("ack")
async def delete_override(request: web.Request) -> web.Response:
    svc = _service(request)
    name = _schedule_name(request, svc)
    raw = request.match_info["id"]
    try:
        oid = int(raw)
    except ValueError:
        raise ApiError(404, f"override {raw!r} not found", "override ids are integers") from None
    if not 1 <= oid <= MAX_ID:
        raise ApiError(404, f"override {raw!r} not found")
    body = await json_body(request, {"by": str})
    try:
        out = await svc.delete_override(name, oid, _actor(request, body))
    except ScheduleError as e:
        raise _err(e) from None
    return web.json_response(out)


# ---------------------------------------------------------------------- audit log


@scope("admin")
async def audit(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "limit must be an integer") from None
    if not 1 <= limit <= 10000:
        raise ApiError(400, "limit must be between 1 and 10000")
    obj = request.query.get("object") or None
    return web.json_response({"audit": await _service(request).audit(limit, obj)})


# ---------------------------------------------------------------------- iCalendar


async def _feed_auth(request: web.Request) -> None:
    """Authorize a feed request by its bearer header or its ``?token=``; raises ApiError 401/403."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "missing bearer token", "send Authorization: Bearer TOKEN or ?token=TOKEN")
    else:
        secret = request.query.get("token", "")
        if not secret.strip():
            raise ApiError(401, "missing token", "calendar feeds take ?token=TOKEN (a read-scope token)")
    await authorize(request, secret, "read")


def calendar(title: str, items: list[UserShift], now: datetime) -> bytes:
    """An iCalendar (RFC 5545) document with one VEVENT per shift, times in UTC; never fails."""
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", title)
    cal.add("x-published-ttl", "PT1H")
    for item in items:
        sh = item.shift
        start, end = sh.start.astimezone(UTC), sh.end.astimezone(UTC)
        ev = icalendar.Event()
        ev.add("uid", f"{start:%Y%m%dT%H%M%SZ}-{item.schedule}-{sh.user}@fsincident")
        ev.add("dtstamp", now.astimezone(UTC))
        ev.add("dtstart", start)
        ev.add("dtend", end)
        ev.add("summary", f"On call: {sh.user} ({item.schedule})")
        what = f"override #{sh.override}" if sh.override is not None else f"layer {sh.layer}"
        ev.add("description", f"{sh.user} is on call for {item.schedule} ({what}).")
        ev.add("transp", "TRANSPARENT")
        cal.add_component(ev)
    return cal.to_ical()


def _ics(body: bytes, filename: str) -> web.Response:
    return web.Response(
        body=body,
        content_type="text/calendar",
        charset="utf-8",
        headers={"Content-Disposition": f'inline; filename="{filename}"', "Cache-Control": "no-store"},
    )


async def schedule_ics(request: web.Request) -> web.Response:
    await _feed_auth(request)
    svc = _service(request)
    name = _schedule_name(request, svc)
    now = svc.clock.now()
    shifts = await svc.shifts(name, now - ICS_PAST, now + ICS_FUTURE, whole=True)
    items = [UserShift(name, s) for s in shifts]
    return _ics(calendar(f"On call: {name}", items, now), f"{name}.ics")


async def user_ics(request: web.Request) -> web.Response:
    await _feed_auth(request)
    svc = _service(request)
    user = request.match_info["name"]
    now = svc.clock.now()
    try:
        items = await svc.user_shifts(user, now - ICS_PAST, now + ICS_FUTURE, whole=True)
    except ScheduleError as e:
        raise _err(e) from None
    return _ics(calendar(f"On call: {user}", items, now), f"{user}.ics")


def add_routes(app: web.Application) -> None:
    """Register the schedule, override, on-call, calendar and audit endpoints."""
    r = app.router
    r.add_get("/api/v1/oncall", get_oncall)
    r.add_get("/api/v1/schedules", list_schedules)
    r.add_get("/api/v1/schedules/{name}.ics", schedule_ics)  # before {name}, which would match "x.ics" too
    r.add_get("/api/v1/schedules/{name}", get_schedule)
    r.add_get("/api/v1/schedules/{name}/shifts", list_shifts)
    r.add_get("/api/v1/schedules/{name}/overrides", list_overrides)
    r.add_post("/api/v1/schedules/{name}/overrides", create_override)
    r.add_delete("/api/v1/schedules/{name}/overrides/{id}", delete_override)
    r.add_get("/api/v1/users/{name}.ics", user_ics)
    r.add_get("/api/v1/audit", audit)
