"""``GET /api/v1/incidents/{id}/notifications``: every outbox row of an incident with its notification log.

Destinations are shown redacted (as the notification log stores them); no channel URL or token is ever part of
the answer. Reading needs scope ``read``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from sqlmodel import col, select

from fsincident.api import CTX, ApiError, incident_id, scope
from fsincident.core import ensure_utc
from fsincident.notify.outbox import Notifiers
from fsincident.store.tables import Incident, NotificationAttempt, Outbox


def _ts(v: datetime | None) -> str | None:
    v = ensure_utc(v)
    return v.isoformat() if v is not None else None


def attempt_dict(a: NotificationAttempt) -> dict[str, Any]:
    """One notification log row as the API shows it."""
    return {
        "id": a.id,
        "attempt": a.attempt,
        "result": a.result,
        "replica": a.replica,
        "destination": a.destination,
        "started_at": _ts(a.started_at),
        "finished_at": _ts(a.finished_at),
        "duration_ms": a.duration_ms,
        "error": a.error,
    }


def notification_dict(row: Outbox, destination: str, log: list[dict[str, Any]]) -> dict[str, Any]:
    """One outbox row as the API shows it (its rendered text and page data are left out)."""
    return {
        "id": row.id,
        "target": row.target,
        "dest_index": row.dest_index,
        "destination": destination,
        "kind": row.kind,
        "severity": row.severity,
        "state": row.state,
        "attempts": row.attempts,
        "created_at": _ts(row.created_at),
        "next_attempt_at": _ts(row.next_attempt_at),
        "sent_at": _ts(row.sent_at),
        "last_error": row.last_error,
        "fallback_for": row.fallback_for,
        "digest_id": row.digest_id,
        "claimed_by": row.claimed_by,
        "log": log,
    }


def _describer(request: web.Request) -> Any:
    """The running config's notifiers (built once per config), to describe destinations not yet attempted."""
    ctx = request.app[CTX]
    config = ctx.config() if ctx.config is not None else None
    if config is None:
        return None
    cached = ctx.extra.get("notifiers")
    if cached is None or cached[0] is not config:
        try:
            cached = (config, Notifiers(config))
        except Exception:
            return None
        ctx.extra["notifiers"] = cached
    return cached[1]


@scope("read")
async def incident_notifications(request: web.Request) -> web.Response:
    """Every notification of the incident, oldest first, with its attempts; 404 for an unknown incident."""
    iid = incident_id(request)
    out = await notifications_of(request, iid)
    if out is None:
        raise ApiError(404, f"incident {iid} not found")
    return web.json_response({"notifications": out})


async def notifications_of(request: web.Request, iid: int) -> list[dict[str, Any]] | None:
    """Every notification of incident ``iid`` as the API shows it (oldest first, with its log); None when there
    is no such incident. Never raises for a missing config."""
    ctx = request.app[CTX]
    async with ctx.store.read() as s:
        if await s.get(Incident, iid) is None:
            return None
        rows = (await s.exec(select(Outbox).where(col(Outbox.incident_id) == iid).order_by(col(Outbox.id)))).all()
        attempts = (
            await s.exec(
                select(NotificationAttempt)
                .where(col(NotificationAttempt.incident_id) == iid)
                .order_by(col(NotificationAttempt.id))
            )
        ).all()
    by_row: dict[int, list[NotificationAttempt]] = {}
    for a in attempts:
        by_row.setdefault(a.outbox_id, []).append(a)
    out = []
    notifiers = _describer(request) if any(not by_row.get(r.id or 0) for r in rows) else None
    for row in rows:
        log = by_row.get(row.id or 0, [])
        # The redacted destination as the log recorded it (a removed channel still shows), else as configured.
        if log:
            destination = log[-1].destination
        elif notifiers is not None:
            destination = notifiers.describe(row.target, row.dest_index)
        else:
            destination = row.target
        out.append(notification_dict(row, destination, [attempt_dict(a) for a in log]))
    return out


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/incidents/{id}/notifications", incident_notifications)
