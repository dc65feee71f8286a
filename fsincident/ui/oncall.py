"""The on-call pages of the web UI: every schedule's coming two weeks as an SVG timeline, a schedule's details
with overrides (create, delete), and a user's shifts and contacts.

Who is on call comes from the same :class:`~fsincident.escalation.schedules.ScheduleService` as the JSON API; the
per-layer rows are the pure :func:`~fsincident.escalation.oncall.layer_shifts`. Overrides are written through the
service (audited, the actor is the signed-in token's name).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from aiohttp import web
from markupsafe import Markup, escape
from sqlmodel import col, select

from fsincident.appriseurl import redact
from fsincident.core import isoformat
from fsincident.escalation.oncall import (
    Override,
    Schedule,
    Shift,
    final_shifts,
    layer_shifts,
    local_to_utc,
    oncall,
)
from fsincident.escalation.schedules import (
    CONTEXT,
    ScheduleError,
    ScheduleService,
    UnknownSchedule,
    UserShift,
    layer_dict,
    load_overrides,
    override_dict,
)
from fsincident.store.tables import ScheduleOverride
from fsincident.ui import UiError, config_of, ctx_of, form, page, redirect, render, session_of
from fsincident.ui.silences import FormError, local_input, parse_local_time

DAYS = 14
"""The timeline shows today and the coming DAYS days (in the schedule's time zone)."""
DONE = {"override": "Override created.", "deleted": "Override deleted."}


def _service(request: web.Request) -> ScheduleService:
    svc = ctx_of(request).schedules
    if svc is None:
        raise UiError(404, "Schedules are not available", "This daemon runs without on-call schedules.")
    return svc


def _schedule(svc: ScheduleService, name: str) -> Schedule:
    try:
        return svc.schedule(name)
    except UnknownSchedule:
        raise UiError(404, "Not found", f"There is no schedule {name!r}.") from None


# ---------------------------------------------------------------------- the timeline


@dataclass
class Bar:
    """One bar of a timeline row."""

    user: str
    start: datetime
    end: datetime
    note: str = ""
    css: str = ""
    override: int | None = None


@dataclass
class Row:
    """One row of a timeline: a layer, the overrides or the final schedule."""

    key: str
    label: str
    bars: list[Bar] = field(default_factory=list)
    css: str = ""


def user_colour(user: str) -> str:
    """A stable fill colour for ``user`` (the same on every page)."""
    hue = zlib.crc32(user.encode("utf-8", "surrogatepass")) % 360
    return f"hsl({hue}, 55%, 55%)"


def _when(dt: datetime, tz: ZoneInfo) -> str:
    return dt.astimezone(tz).strftime("%a %Y-%m-%d %H:%M")


def timeline(
    rows: Sequence[Row],
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    tz: ZoneInfo,
    width: int = 1000,
    row_height: int = 24,
    label_width: int = 96,
) -> Markup:
    """An SVG timeline of ``rows`` over ``[start, end)`` with day ticks at local midnight in ``tz`` and a line at
    ``now``: ``svg.oncall-timeline`` with one ``g.row[data-row]`` per row and ``rect.shift[data-user][data-from]
    [data-to]`` bars, each with a ``<title>`` tooltip; never fails for aware datetimes with ``start < end``."""
    axis, gap, pad = 22, 6, 4
    plot = width - label_width - pad
    height = axis + len(rows) * (row_height + gap) + 4
    span = (end - start).total_seconds() or 1.0

    def x(t: datetime) -> float:
        frac = (min(max(t, start), end) - start).total_seconds() / span
        return round(label_width + frac * plot, 1)

    zone = escape(str(tz))
    users: dict[str, tuple[Markup, str]] = {}
    seen: dict[datetime, tuple[str, Markup]] = {}

    def instant(t: datetime) -> tuple[str, Markup]:
        """(ISO 8601 UTC, escaped local wall-clock time) of ``t``, computed once per instant."""
        got = seen.get(t)
        if got is None:
            got = seen[t] = (escape(isoformat(t.astimezone(UTC))), escape(_when(t, tz)))
        return got

    out: list[str] = [
        f'<svg class="oncall-timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" role="img" data-from="{escape(isoformat(start))}" '
        f'data-to="{escape(isoformat(end))}" data-tz="{zone}">',
        f"<title>On call from {escape(_when(start, tz))} to {escape(_when(end, tz))} ({zone})</title>",
    ]
    # Day ticks at local midnight (DST-aware: a day may be 23 or 25 hours long).
    out.append('<g class="days">')
    day = start.astimezone(tz).date()
    while True:
        t = local_to_utc(datetime.combine(day, time()), tz)
        if t > end:
            break
        if t >= start:
            xx = x(t)
            weekend = " weekend" if day.weekday() >= 5 else ""
            out.append(
                f'<line class="tick{weekend}" x1="{xx}" x2="{xx}" y1="{axis - 4}" y2="{height}" '
                f'data-day="{day.isoformat()}"/>'
            )
            if t < end:
                out.append(
                    f'<text class="day{weekend}" x="{xx + 3}" y="{axis - 8}">'
                    f"{escape(day.strftime('%a %d'))}<title>{escape(day.strftime('%A %Y-%m-%d'))} ({zone})</title>"
                    "</text>"
                )
        day += timedelta(days=1)
    out.append("</g>")
    for i, row in enumerate(rows):
        y = axis + i * (row_height + gap)
        css = f"row {row.css}".strip()
        out.append(f'<g class="{escape(css)}" data-row="{escape(row.key)}">')
        out.append(
            f'<text class="row-label" x="4" y="{y + row_height / 2 + 4}">{escape(row.label)}</text>'
            f'<rect class="lane" x="{label_width}" y="{y}" width="{plot}" height="{row_height}"/>'
        )
        for bar in row.bars:
            if bar.end <= start or bar.start >= end:
                continue
            x0, x1 = x(bar.start), x(bar.end)
            w = max(round(x1 - x0, 1), 1.0)
            who, fill = users.get(bar.user) or users.setdefault(bar.user, (escape(bar.user), user_colour(bar.user)))
            (a_iso, a_when), (b_iso, b_when) = instant(bar.start), instant(bar.end)
            tip = f"{who}: {a_when} → {b_when} ({zone})"
            if bar.note:
                tip += f" · {escape(bar.note)}"
            classes = escape(f"shift {bar.css}".strip())
            ov = f' data-override="{bar.override}"' if bar.override is not None else ""
            out.append(
                f'<g class="bar"><rect class="{classes}" x="{x0}" y="{y + 1}" width="{w}" height="{row_height - 2}" '
                f'rx="3" fill="{fill}" data-user="{who}" data-from="{a_iso}" data-to="{b_iso}"{ov}>'
                f"<title>{tip}</title></rect>"
            )
            if w >= 7 * len(bar.user) + 8:
                out.append(f'<text class="bar-label" x="{x0 + 4}" y="{y + row_height / 2 + 4}">{who}</text>')
            out.append("</g>")
        out.append("</g>")
    if start <= now <= end:
        xn = x(now)
        out.append(
            f'<line class="now" x1="{xn}" x2="{xn}" y1="{axis - 6}" y2="{height}" '
            f'data-at="{escape(isoformat(now.astimezone(UTC)))}"><title>now: {escape(_when(now, tz))}</title></line>'
        )
    out.append("</svg>")
    return Markup("".join(out))


def window(sch: Schedule, now: datetime) -> tuple[datetime, datetime]:
    """Local midnight today to local midnight DAYS + 1 days later, in the schedule's zone (as UTC)."""
    tz = ZoneInfo(sch.timezone)
    today = now.astimezone(tz).date()
    return (
        local_to_utc(datetime.combine(today, time()), tz),
        local_to_utc(datetime.combine(today + timedelta(days=DAYS + 1), time()), tz),
    )


def _bar(sh: Shift, css: str = "") -> Bar:
    note = f"override #{sh.override}" if sh.override is not None else f"layer {sh.layer}"
    return Bar(sh.user, sh.start, sh.end, note, css, sh.override)


async def load_facts(request: web.Request, schedules: Sequence[Schedule], now: datetime) -> dict[str, list[Override]]:
    """The overrides of each schedule that can matter around ``now`` (the service's CONTEXT either way), read in
    one read-only transaction; raises only on a database error."""
    async with ctx_of(request).store.read() as s:
        return {sch.name: await load_overrides(s, sch.name, now - CONTEXT, now + CONTEXT) for sch in schedules}


def schedule_view(sch: Schedule, overrides: Sequence[Override], now: datetime) -> dict[str, Any]:
    """What the pages show of one schedule: who is on call now, the timeline's rows and the final shifts.

    The same pure functions on the same facts as the service's ``oncall`` and ``shifts`` (so the API agrees)."""
    start, end = window(sch, now)
    rows = [
        Row(
            f"layer-{layer.number}",
            f"Layer {layer.number}",
            [_bar(sh, "layer") for sh in layer_shifts(sch, layer, start, end)],
            "layer",
        )
        for layer in sch.layers
    ]
    shown = [o for o in overrides if o.end > start and o.start < end]
    rows.append(
        Row(
            "overrides",
            "Overrides",
            [
                Bar(
                    o.who,
                    o.start,
                    o.end,
                    f"override #{o.id}" + (f", replaces {o.replaces}" if o.replaces else ""),
                    "override",
                    o.id,
                )
                for o in shown
            ],
            "overrides",
        )
    )
    final = final_shifts(sch, overrides, start, end)
    rows.append(Row("final", "Final", [_bar(sh, "final") for sh in final], "final"))
    tz = ZoneInfo(sch.timezone)
    current = oncall(sch, overrides, now)
    upcoming = [sh for sh in final if sh.end > now]
    if current and upcoming and upcoming[0].start <= now and upcoming[0].user == current[0].user:
        upcoming[0] = dataclasses.replace(upcoming[0], start=min(upcoming[0].start, current[0].start))
    return {
        "name": sch.name,
        "timezone": sch.timezone,
        "now": current[0] if current else None,
        "next": next((sh for sh in upcoming if sh.start > now), None),
        "svg": timeline(rows, start, end, now=now, tz=tz),
        "final": upcoming,
        "layers": [layer_dict(layer) for layer in sch.layers],
        "start": start,
        "end": end,
    }


def local_ts(dt: datetime | None, zone: str, fmt: str = "%a %Y-%m-%d %H:%M") -> str:
    """``dt`` as a wall-clock time in ``zone`` ("–" for None)."""
    return "–" if dt is None else dt.astimezone(ZoneInfo(zone)).strftime(fmt)


# ---------------------------------------------------------------------- pages


def _flash(request: web.Request) -> str | None:
    return DONE.get(request.query.get("done", ""))


@page("read")
async def oncall_page(request: web.Request) -> web.Response:
    svc = _service(request)
    now = svc.clock.now()
    facts = await load_facts(request, svc.schedules, now)
    views = [schedule_view(sch, facts[sch.name], now) for sch in svc.schedules]
    return render(
        request,
        "oncall.html.j2",
        active="oncall",
        title="On-call",
        extra_css=["oncall.css"],
        live=True,
        schedules=views,
        days=DAYS,
        local_ts=local_ts,
    )


def _users(request: web.Request) -> list[str]:
    cfg = config_of(request)
    return [u.name for u in cfg.users] if cfg is not None else []


async def _schedule_page(
    request: web.Request,
    name: str,
    *,
    values: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    svc = _service(request)
    sch = _schedule(svc, name)
    now = svc.clock.now()
    async with ctx_of(request).store.read() as s:  # one read: the facts and the listing (as list_overrides)
        facts = await load_overrides(s, name, now - CONTEXT, now + CONTEXT)
        rows = (
            await s.exec(
                select(ScheduleOverride)
                .where(col(ScheduleOverride.schedule) == name, col(ScheduleOverride.ends_at) > now)
                .order_by(col(ScheduleOverride.starts_at), col(ScheduleOverride.id))
            )
        ).all()
    view = schedule_view(sch, facts, now)
    tz = ZoneInfo(sch.timezone)
    if values is None:
        start = now.replace(second=0, microsecond=0)
        values = {
            "who": "",
            "replaces": "",
            "from": local_input(start, tz),
            "to": local_input(start + timedelta(hours=8), tz),
            "note": "",
        }
    overrides = [
        {**o, "start": datetime.fromisoformat(o["from"]), "end": datetime.fromisoformat(o["to"])}
        for o in map(override_dict, rows)
    ]
    return render(
        request,
        "schedule.html.j2",
        status=status,
        active="oncall",
        title=f"On-call: {name}",
        extra_css=["oncall.css"],
        schedule=view,
        overrides=overrides,
        users=_users(request),
        values=values,
        error=error,
        flash=_flash(request),
        days=DAYS,
        local_ts=local_ts,
        colour=user_colour,
    )


@page("read")
async def schedule_page(request: web.Request) -> web.Response:
    return await _schedule_page(request, request.match_info["schedule"])


@page("ack")
async def create_override(request: web.Request) -> web.Response:
    svc = _service(request)
    name = request.match_info["schedule"]
    sch = _schedule(svc, name)
    data = await form(request)
    values = {k: data.get(k, "") for k in ("who", "replaces", "from", "to", "note")}
    tz = ZoneInfo(sch.timezone)
    now = svc.clock.now()
    try:
        if not values["who"]:
            raise FormError("Who: pick the person who takes over.")
        if not values["from"].strip() or not values["to"].strip():
            raise FormError("From and to are both needed.")
        try:
            start = parse_local_time(values["from"], tz, now)
        except FormError as e:
            raise FormError(f"From: {e}") from None
        try:
            end = parse_local_time(values["to"], tz, now)
        except FormError as e:
            raise FormError(f"To: {e}") from None
        await svc.create_override(
            name,
            who=values["who"],
            start=start,
            end=end,
            replaces=values["replaces"] or None,
            note=values["note"].strip() or None,
            by=session_of(request).name,
        )
    except (FormError, ScheduleError) as e:
        msg = e.message if isinstance(e, ScheduleError) else str(e)
        return await _schedule_page(request, name, values=values, error=msg[:1].upper() + msg[1:], status=400)
    raise redirect(f"/ui/oncall/{_q(name)}?done=override")


@page("ack")
async def delete_override(request: web.Request) -> web.Response:
    svc = _service(request)
    name = request.match_info["schedule"]
    _schedule(svc, name)
    try:
        oid = int(request.match_info["id"])
    except ValueError:
        raise UiError(404, "Not found", "There is no such override.") from None
    try:
        await svc.delete_override(name, oid, session_of(request).name)
    except ScheduleError as e:
        raise UiError(e.status, "Cannot delete the override", e.message) from None
    raise redirect(f"/ui/oncall/{_q(name)}?done=deleted")


def _q(text: str) -> str:
    return quote(text, safe="")


@page("read")
async def user_page(request: web.Request) -> web.Response:
    svc = _service(request)
    name = request.match_info["name"]
    cfg = config_of(request)
    user = cfg.user(name) if cfg is not None else None
    if user is None:
        raise UiError(404, "Not found", f"There is no user {name!r}.")
    now = svc.clock.now()
    facts = await load_facts(request, svc.schedules, now)
    items: list[UserShift] = []
    current: list[str] = []
    for sch in svc.schedules:  # what the service's user_shifts and oncall_all answer, from one read
        ovs = facts[sch.name]
        items.extend(UserShift(sch.name, sh) for sh in final_shifts(sch, ovs, now, now + timedelta(days=DAYS)))
        if any(sh.user == name for sh in oncall(sch, ovs, now)):
            current.append(sch.name)
    items = sorted((it for it in items if it.shift.user == name), key=lambda u: (u.shift.start, u.schedule))
    contacts = [
        {"url": redact(c.url), "after": c.after, "urgency": c.urgency}
        for c in user.contacts  # never the URL itself: it holds tokens and passwords
    ]
    member = [
        {"schedule": sch.name, "layers": [layer.number for layer in sch.layers if name in layer.users]}
        for sch in svc.schedules
        if any(name in layer.users for layer in sch.layers)
    ]
    return render(
        request,
        "user.html.j2",
        active="oncall",
        title=f"User {name}",
        extra_css=["oncall.css"],
        user=user,
        contacts=contacts,
        shifts=items,
        oncall_now=current,
        member=member,
        days=DAYS,
        local_ts=local_ts,
        isoformat=isoformat,
    )


def add_routes(app: web.Application) -> None:
    """Register the on-call pages."""
    r = app.router
    r.add_get("/ui/oncall", oncall_page)
    r.add_get("/ui/oncall/{schedule}", schedule_page)
    r.add_post("/ui/oncall/{schedule}/overrides", create_override)
    r.add_post("/ui/oncall/{schedule}/overrides/{id}/delete", delete_override)
    r.add_get("/ui/users/{name}", user_page)
