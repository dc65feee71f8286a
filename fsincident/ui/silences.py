"""The silences pages of the web UI: list, create (with a live preview of the alerts it would mute), expire.

Creating and expiring go through the same :class:`~fsincident.silences.service.SilenceService` as the JSON API
(its validation, its audit log); the actor is the signed-in token's name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from aiohttp import web
from sqlmodel import col, select

from fsincident.core import parse_duration
from fsincident.escalation.oncall import local_to_utc
from fsincident.escalation.schedules import EARLIEST, LATEST, parse_instant
from fsincident.matchers import Matcher, MatcherError
from fsincident.silences import match
from fsincident.silences.service import SilenceError, SilenceService, silence_dict
from fsincident.store.tables import Alert, Incident
from fsincident.ui import UiError, ctx_of, display_tz, form, page, redirect, render, session_of

PREVIEW_LIMIT = 50
"""At most this many matching alerts are listed by the preview (the total is counted)."""
PREVIEW_SCAN = 1_000
"""At most this many of the newest current alerts are examined for matchers SQL cannot answer (regular
expressions, negations, empty values)."""
MAX_MATCHERS_TEXT = 20_000
DEFAULT_DURATION = "2h"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DONE = {"created": "Silence created.", "expired": "Silence expired."}


class FormError(ValueError):
    """A field of the silence form that cannot be used; the message is fit for the user."""


def _service(request: web.Request) -> SilenceService:
    svc = ctx_of(request).silences
    if svc is None:
        raise UiError(404, "Silences are not available", "This daemon runs without the silences service.")
    return svc  # type: ignore[no-any-return]


def parse_matchers(text: str) -> list[Matcher]:
    """Matchers written one per line and/or comma-separated (``alertname="X"``, ``team=~"a|b"``, ``{a="b"}``);
    raises FormError naming the line that is wrong."""
    if len(text) > MAX_MATCHERS_TEXT:
        raise FormError(f"Matchers: at most {MAX_MATCHERS_TEXT} characters.")
    out: list[Matcher] = []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for n, line in enumerate(lines, 1):
        try:
            out.extend(match.parse_matcher_text(line))
        except MatcherError as e:
            where = f"line {n}: " if len(lines) > 1 else ""
            raise FormError(f"Matchers: {where}{e}") from None
    if not out:
        raise FormError('Matchers: write at least one, e.g. alertname="DiskFull".')
    return out


def parse_local_time(text: str, tz: ZoneInfo, now: datetime) -> datetime:
    """A form's time: ``2026-01-05T09:00`` (a wall-clock time in ``tz``), ISO 8601 with an offset, ``now+2h``;
    raises FormError."""
    s = text.strip()
    try:
        naive = datetime.fromisoformat(s)
    except ValueError:
        naive = None
    try:
        if naive is not None and naive.tzinfo is None:
            out = local_to_utc(naive, tz)
        else:
            return parse_instant(s, now)
    except (ValueError, OverflowError) as e:
        raise FormError(str(e)) from None
    if not EARLIEST <= out < LATEST:
        raise FormError(f"{s[:64]!r} is out of range (years 1970 to 8999)")
    return out


def local_input(dt: datetime | None, tz: ZoneInfo) -> str:
    """The value of a ``datetime-local`` input showing ``dt`` in ``tz`` (minutes)."""
    if dt is None:
        return ""
    return dt.astimezone(tz).strftime("%Y-%m-%dT%H:%M")


@dataclass
class Preview:
    """The current alerts a set of matchers would mute (the first PREVIEW_LIMIT) and how many there are."""

    alerts: list[dict[str, Any]]
    total: int
    error: str | None = None
    matchers: tuple[str, ...] = ()
    empty: bool = False
    truncated_scan: bool = False


async def preview(request: web.Request, text: str) -> Preview:
    """The firing/pending alerts of open incidents that ``text``'s matchers select; never fails for bad input.

    Equality matchers are answered in SQL (an exact count, 50 rows read); other matchers are checked here on at
    most PREVIEW_SCAN of the newest current alerts (then the count is a lower bound)."""
    if not text.strip():
        return Preview([], 0, empty=True)
    try:
        matchers = parse_matchers(text)
    except FormError as e:
        return Preview([], 0, error=str(e))
    why = match.problems(matchers)
    where: list[Any] = [col(Alert.state).in_(("firing", "pending")), col(Incident.state) != "resolved"]
    rest: list[Matcher] = []
    for m in matchers:
        if m.op == "=" and m.value and m.name == "alertname":
            where.append(col(Alert.alertname) == m.value)
        elif m.op == "=" and m.value:  # an empty value also matches a missing label: left to the matcher
            where.append(Alert.labels[m.name].as_string() == m.value)  # type: ignore[index]
        else:
            rest.append(m)
    cols = (Alert.incident_id, Alert.alertname, Alert.labels, Alert.state, Incident.title)
    current = select(*cols).join(Incident, col(Incident.id) == col(Alert.incident_id)).where(*where)
    truncated = False
    async with ctx_of(request).store.read() as s:
        if not rest:
            counted = select(Alert.id).join(Incident, col(Incident.id) == col(Alert.incident_id)).where(*where)
            total = int((await s.exec(select(sa.func.count()).select_from(counted.subquery()))).one())
            rows = list((await s.exec(current.order_by(col(Alert.id).desc()).limit(PREVIEW_LIMIT))).all())
        else:
            scanned = (await s.exec(current.order_by(col(Alert.id).desc()).limit(PREVIEW_SCAN + 1))).all()
            truncated = len(scanned) > PREVIEW_SCAN
            rows = [r for r in scanned[:PREVIEW_SCAN] if match.matches(rest, r[2])]
            total = len(rows)
    alerts = [
        {
            "incident_id": iid,
            "incident_title": title,
            "alertname": alertname,
            "labels": sorted((k, v) for k, v in labels.items() if k != "alertname"),
            "state": state,
        }
        for iid, alertname, labels, state, title in rows[:PREVIEW_LIMIT]
        if match.matches(matchers, labels)  # the matchers decide (SQL only narrowed)
    ]
    return Preview(
        alerts,
        total,
        error=f"This silence would be refused: {why}." if why else None,
        matchers=tuple(str(m) for m in matchers),
        truncated_scan=truncated,
    )


def _flash(request: web.Request) -> str | None:
    return DONE.get(request.query.get("done", ""))


# ---------------------------------------------------------------------- list


@page("read")
async def list_page(request: web.Request) -> web.Response:
    svc = _service(request)
    state = request.query.get("state") or None
    if state is not None and state not in match.STATES:
        raise UiError(400, "Unknown state", f"Pick one of: {', '.join(match.STATES)}.")
    rows = await svc.list(state=state)
    now = svc.clock.now()
    silences = [silence_dict(r, now) for r in rows]
    counts: dict[str, int] = {}
    if state is None:
        for s in silences:
            counts[s["state"]] = counts.get(s["state"], 0) + 1
    return render(
        request,
        "silences.html.j2",
        active="silences",
        title="Silences",
        extra_css=["oncall.css"],
        silences=silences,
        state=state,
        states=match.STATES,
        counts=counts,
        flash=_flash(request),
        highlight=request.query.get("id", ""),
    )


@page("ack")
async def expire(request: web.Request) -> web.Response:
    svc = _service(request)
    sid = request.match_info["id"]
    if not _UUID.match(sid):
        raise UiError(404, "Not found", "There is no such silence.")
    try:
        await svc.expire(sid.lower(), session_of(request).name)
    except SilenceError as e:
        raise UiError(e.status, "Cannot expire the silence", e.message) from None
    back = (await form(request)).get("state", "")
    q = f"&state={back}" if back in match.STATES else ""
    raise redirect(f"/ui/silences?done=expired{q}")


# ---------------------------------------------------------------------- new / create / preview


def _form_page(
    request: web.Request, values: Mapping[str, str], pv: Preview, *, error: str | None = None, status: int = 200
) -> web.Response:
    return render(
        request,
        "silence_new.html.j2",
        status=status,
        active="silences",
        title="New silence",
        extra_css=["oncall.css"],
        extra_js=["silences.js"],
        values=values,
        preview=pv,
        error=error,
        can_create=session_of(request).can("ack"),
    )


FIELDS = ("matchers", "duration", "starts_at", "ends_at", "comment")


@page("read")
async def new_page(request: web.Request) -> web.Response:
    q = request.query
    values = {k: q.get(k, "") for k in FIELDS}
    # A link from an incident may carry several ?matchers= (one per label): one per line.
    values["matchers"] = "\n".join(v for v in q.getall("matchers", []) if v.strip())
    if not values["duration"] and not values["ends_at"]:
        values["duration"] = DEFAULT_DURATION
    return _form_page(request, values, await preview(request, values["matchers"]))


def _times(values: Mapping[str, str], tz: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    starts = now
    if values.get("starts_at", "").strip():
        try:
            starts = parse_local_time(values["starts_at"], tz, now)
        except FormError as e:
            raise FormError(f"Start: {e}") from None
    if values.get("ends_at", "").strip():  # an end wins over a duration
        try:
            return starts, parse_local_time(values["ends_at"], tz, now)
        except FormError as e:
            raise FormError(f"End: {e}") from None
    raw = values.get("duration", "").strip()
    if not raw:
        raise FormError("Give a duration (e.g. 2h) or an end time.")
    try:
        d = parse_duration(raw)
    except ValueError as e:
        raise FormError(f"Duration: {e}") from None
    if d <= timedelta(0):
        raise FormError("Duration: must be positive.")
    try:
        return starts, starts + d
    except OverflowError:
        raise FormError("Duration: too long.") from None


@page("ack")
async def create(request: web.Request) -> web.Response:
    svc = _service(request)
    data = await form(request)
    values = {k: data.get(k, "") for k in FIELDS}
    pv = await preview(request, values["matchers"])
    if data.get("action") == "preview":
        return _form_page(request, values, pv)
    now = svc.clock.now()
    try:
        matchers = parse_matchers(values["matchers"])
        starts, ends = _times(values, display_tz(request), now)
        comment = values["comment"].strip()
        if not comment:
            raise FormError("Comment: say why these alerts are silenced.")
        row = await svc.put(
            matchers=matchers,
            starts_at=starts.astimezone(UTC),
            ends_at=ends.astimezone(UTC),
            created_by=session_of(request).name,
            comment=comment,
        )
    except (FormError, SilenceError) as e:
        msg = e.message if isinstance(e, SilenceError) else str(e)
        return _form_page(request, values, pv, error=msg[:1].upper() + msg[1:], status=400)
    raise redirect(f"/ui/silences?done=created&id={row.id}")


@page("read")
async def preview_fragment(request: web.Request) -> web.Response:
    text = "\n".join(request.query.getall("matchers", []))
    return render(request, "silence_preview.html.j2", preview=await preview(request, text))


def matchers_link(labels: Mapping[str, str], names: Sequence[str] = ()) -> str:
    """The ``/ui/silences/new`` URL prefilled with equality matchers on ``labels`` (only ``names`` when given)."""
    keep = [(k, v) for k, v in labels.items() if not names or k in names]
    text = ", ".join(str(Matcher.make(k, "=", v)) for k, v in keep)
    return "/ui/silences/new?" + urlencode({"matchers": text})


def add_routes(app: web.Application) -> None:
    """Register the silences pages."""
    r = app.router
    r.add_get("/ui/silences", list_page)
    r.add_get("/ui/silences/new", new_page)
    r.add_get("/ui/silences/preview", preview_fragment)
    r.add_post("/ui/silences", create)
    r.add_post("/ui/silences/{id}/expire", expire)
