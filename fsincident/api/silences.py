"""Silence endpoints: our ``/api/v1/silences`` and Alertmanager's API v2 ``/api/v2/silences``, ``/api/v2/silence/{id}``.

The v2 endpoints speak Alertmanager 0.25's wire format exactly, errors included (so ``amtool`` prints them): a
refused silence is a 400 whose body is a JSON string such as ``"silence invalid: at least one matcher must not
match the empty string"``, a missing field a 422 ``{"code": 602, "message": "createdBy in body is required"}``, an
unknown id a 404. Reading needs scope ``read``, writing scope ``ack``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from fsincident.api import CTX, TOKEN_NAME, ApiError, json_body, scope
from fsincident.core import parse_duration
from fsincident.escalation.schedules import parse_instant
from fsincident.matchers import Matcher, MatcherError
from fsincident.silences import match
from fsincident.silences.service import SilenceError, SilenceService, silence_dict, silence_state
from fsincident.store.tables import Silence

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
MAX_FILTERS = 100


def _service(request: web.Request) -> SilenceService:
    svc = request.app[CTX].silences
    if svc is None:
        raise ApiError(404, "silences are not available")
    return svc  # type: ignore[no-any-return]


def _am(status: int, payload: Any) -> web.Response:
    """An Alertmanager-style response: ``payload`` as JSON (a string for most errors)."""
    return web.json_response(payload, status=status)


def _am_time(dt: datetime | None) -> str | None:
    """Alertmanager's time format: UTC with milliseconds, ``2026-01-05T09:00:00.000Z``."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def gettable_silence(row: Silence, now: datetime) -> dict[str, Any]:
    """Alertmanager's ``gettableSilence``, keys in the order Alertmanager 0.25 writes them."""
    return {
        "id": row.id,
        "status": {"state": silence_state(row, now)},
        "updatedAt": _am_time(row.updated_at),
        "comment": row.comment,
        "createdBy": row.created_by,
        "endsAt": _am_time(row.ends_at),
        "matchers": [
            {
                "isEqual": bool(m.get("isEqual", True)),
                "isRegex": bool(m.get("isRegex")),
                "name": m.get("name"),
                "value": m.get("value"),
            }
            for m in row.matchers
        ],
        "startsAt": _am_time(row.starts_at),
    }


# ---------------------------------------------------------------------- Alertmanager API v2


class _Unprocessable(Exception):
    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _parse_failed(reason: str) -> _Unprocessable:
    return _Unprocessable(400, 400, f'parsing silence body from "" failed, because {reason}')


def _rfc3339(value: Any, key: str) -> datetime:
    if not isinstance(value, str):
        raise _parse_failed(f"{key}: a time must be an RFC 3339 string")
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("z", "Z")) else text)
    except ValueError:
        raise _parse_failed(f"parsing time {json.dumps(value[:64])}: not RFC 3339") from None
    if dt.tzinfo is None:
        raise _parse_failed(f"parsing time {json.dumps(value[:64])}: RFC 3339 needs a UTC offset or Z")
    try:
        return dt.astimezone(UTC)
    except (OverflowError, ValueError):
        raise _parse_failed(f"parsing time {json.dumps(value[:64])}: out of range") from None


async def _v2_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise _parse_failed(str(e)) from None
    except RecursionError:
        raise _parse_failed("nested too deeply") from None
    if not isinstance(data, dict):
        raise _parse_failed(f"a silence must be a JSON object, not {type(data).__name__}")
    return data


def _postable(data: dict[str, Any]) -> tuple[str | None, list[Matcher], datetime, datetime, str, str]:
    """Validate a ``postableSilence`` as go-swagger does; raises _Unprocessable, or SilenceError for a matcher."""
    sid = data.get("id")
    if sid is not None and not isinstance(sid, str):
        raise _parse_failed("id must be a string")
    if sid and not _UUID.match(sid):
        raise SilenceError("silence not found", 404)  # no silence has such an id
    for key in ("comment", "createdBy", "endsAt", "matchers", "startsAt"):
        if data.get(key) is None:
            raise _Unprocessable(422, 602, f"{key} in body is required")
    for key in ("comment", "createdBy"):
        if not isinstance(data[key], str):
            raise _parse_failed(f"{key} must be a string")
    raw = data["matchers"]
    if not isinstance(raw, list):
        raise _parse_failed("matchers must be an array")
    if not raw:
        raise _Unprocessable(422, 612, "matchers in body should have at least 1 items")
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise _parse_failed(f"matchers.{i} must be an object")
        for key in ("isRegex", "name", "value"):
            if m.get(key) is None:
                raise _Unprocessable(422, 602, f"matchers.{i}.{key} in body is required")
    starts, ends = _rfc3339(data["startsAt"], "startsAt"), _rfc3339(data["endsAt"], "endsAt")
    matchers = []
    for i, m in enumerate(raw):
        try:
            matchers.append(match.matcher_from_am(m))
        except MatcherError as e:
            raise SilenceError(f"silence invalid: invalid label matcher {i}: {e}") from None
        except ValueError as e:
            raise _parse_failed(f"matchers.{i}: {e}") from None
    return sid or None, matchers, starts, ends, data["createdBy"], data["comment"]


@scope("read")
async def v2_list(request: web.Request) -> web.Response:
    svc = _service(request)
    filters: list[Matcher] = []
    texts = request.query.getall("filter", [])
    if len(texts) > MAX_FILTERS:
        return _am(400, f"at most {MAX_FILTERS} filter matchers")
    for text in texts:
        if not text.strip():
            continue
        try:
            filters.extend(match.parse_matcher_text(text))
        except MatcherError:
            return _am(400, f"bad matcher format: {text}")
    rows = await svc.list(filters=filters)
    now = svc.clock.now()
    return web.json_response([gettable_silence(r, now) for r in rows])


@scope("ack")
async def v2_post(request: web.Request) -> web.Response:
    svc = _service(request)
    try:
        sid, matchers, starts, ends, created_by, comment = _postable(await _v2_body(request))
    except _Unprocessable as e:
        return _am(e.status, {"code": e.code, "message": e.message})
    except SilenceError as e:
        return _am(e.status, e.message)
    if starts >= ends:
        return _am(400, "Failed to create silence: start time must be before end time")
    if ends < svc.clock.now():
        return _am(400, "Failed to create silence: end time can't be in the past")
    try:
        row = await svc.put(
            matchers=matchers,
            starts_at=starts,
            ends_at=ends,
            created_by=created_by or request[TOKEN_NAME],
            comment=comment,
            silence_id=sid,
        )
    except SilenceError as e:
        return _am(e.status, e.message)
    return web.json_response({"silenceID": row.id})


def _path_id(request: web.Request) -> str | web.Response:
    raw = request.match_info["id"]
    if not _UUID.match(raw):
        return _am(422, {"code": 601, "message": f"silenceID in path must be of type uuid: {json.dumps(raw)}"})
    return _dashed(raw)


def _dashed(raw: str) -> str:
    """The canonical form of a UUID accepted with or without dashes."""
    h = raw.lower().replace("-", "")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@scope("read")
async def v2_get(request: web.Request) -> web.Response:
    svc = _service(request)
    sid = _path_id(request)
    if isinstance(sid, web.Response):
        return sid
    try:
        row = await svc.get(sid)
    except SilenceError as e:
        return _am(e.status, e.message)
    return web.json_response(gettable_silence(row, svc.clock.now()))


@scope("ack")
async def v2_delete(request: web.Request) -> web.Response:
    svc = _service(request)
    sid = _path_id(request)
    if isinstance(sid, web.Response):
        return sid
    try:
        await svc.expire(sid, request[TOKEN_NAME])
    except SilenceError as e:
        return _am(e.status, e.message)
    return web.Response(status=200)


# ---------------------------------------------------------------------- our v1


def _v1_matchers(raw: Any) -> list[Matcher]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(
            400, "field 'matchers' is required", 'a list such as ["alertname=\\"DiskFull\\"", "instance=~\\"db.*\\""]'
        )
    out: list[Matcher] = []
    for i, item in enumerate(raw):
        try:
            if isinstance(item, str):
                out.extend(match.parse_matcher_text(item))
            elif isinstance(item, dict):
                out.append(match.matcher_from_am(item))
            else:
                raise ValueError("a matcher is a string such as 'alertname=\"DiskFull\"' or {name, value, isRegex}")
        except (MatcherError, ValueError) as e:
            raise ApiError(400, f"matchers[{i}]: {e}", {"matcher": item if isinstance(item, str) else None}) from None
    return out


def _v1_time(body: dict[str, Any], key: str, now: datetime) -> datetime | None:
    raw = body.get(key)
    if raw is None:
        return None
    try:
        return parse_instant(raw, now)
    except ValueError as e:
        raise ApiError(400, f"field {key!r}: {e}") from None


def _silence_id(request: web.Request) -> str:
    raw = request.match_info["id"]
    if not _UUID.match(raw):
        raise ApiError(404, f"silence {raw[:64]!r} not found", "silence ids are UUIDs")
    return _dashed(raw)


def _err(e: SilenceError) -> ApiError:
    return ApiError(e.status, e.message, e.detail)


@scope("ack")
async def v1_create(request: web.Request) -> web.Response:
    svc = _service(request)
    body = await json_body(
        request,
        {
            "matchers": list,
            "starts_at": str,
            "ends_at": str,
            "duration": str,
            "created_by": str,
            "comment": str,
        },
    )
    matchers = _v1_matchers(body.get("matchers"))
    now = svc.clock.now()
    starts = _v1_time(body, "starts_at", now) or now
    ends = _v1_time(body, "ends_at", now)
    duration: timedelta | None = None
    if body.get("duration") is not None:
        if ends is not None:
            raise ApiError(400, "give 'ends_at' or 'duration', not both")
        try:
            duration = parse_duration(body["duration"])
        except ValueError as e:
            raise ApiError(400, f"field 'duration': {e}") from None
        if duration <= timedelta(0):
            raise ApiError(400, "field 'duration' must be positive")
        try:
            ends = starts + duration
        except OverflowError:
            raise ApiError(400, "field 'duration' is too long") from None
    if ends is None:
        raise ApiError(400, "field 'ends_at' or 'duration' is required", 'e.g. "duration": "2h"')
    comment = (body.get("comment") or "").strip()
    if not comment:
        raise ApiError(400, "field 'comment' is required", "say why the alerts are silenced")
    created_by = (body.get("created_by") or "").strip() or request[TOKEN_NAME]
    try:
        row = await svc.put(
            matchers=matchers, starts_at=starts, ends_at=ends, created_by=created_by, comment=comment, duration=duration
        )
    except SilenceError as e:
        raise _err(e) from None
    return web.json_response(silence_dict(row, svc.clock.now()), status=201)


@scope("read")
async def v1_list(request: web.Request) -> web.Response:
    svc = _service(request)
    state = request.query.get("state") or None
    if state is not None and state not in match.STATES:
        raise ApiError(400, f"invalid state {state[:64]!r}", {"allowed": list(match.STATES)})
    rows = await svc.list(state=state)
    now = svc.clock.now()
    return web.json_response({"silences": [silence_dict(r, now) for r in rows]})


@scope("read")
async def v1_get(request: web.Request) -> web.Response:
    svc = _service(request)
    try:
        row = await svc.get(_silence_id(request))
    except SilenceError as e:
        raise _err(e) from None
    return web.json_response(silence_dict(row, svc.clock.now()))


@scope("ack")
async def v1_expire(request: web.Request) -> web.Response:
    svc = _service(request)
    sid = _silence_id(request)
    body = await json_body(request, {"by": str})
    by = (body.get("by") or "").strip() or request[TOKEN_NAME]
    try:
        row = await svc.expire(sid, by)
    except SilenceError as e:
        raise _err(e) from None
    return web.json_response(silence_dict(row, svc.clock.now()))


def add_routes(app: web.Application) -> None:
    """Register ``/api/v1/silences`` and Alertmanager's ``/api/v2/silences`` and ``/api/v2/silence/{id}``."""
    r = app.router
    r.add_post("/api/v1/silences", v1_create)
    r.add_get("/api/v1/silences", v1_list)
    r.add_get("/api/v1/silences/{id}", v1_get)
    r.add_delete("/api/v1/silences/{id}", v1_expire)
    r.add_get("/api/v2/silences", v2_list)
    r.add_post("/api/v2/silences", v2_post)
    r.add_get("/api/v2/silence/{id}", v2_get)
    r.add_delete("/api/v2/silence/{id}", v2_delete)
