"""The HTTP API (aiohttp): bearer-token auth with scopes, JSON errors, v1 incidents/rules, ops endpoints."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fsincident.core import IncidentState, TransitionError, storable_text
from fsincident.evaluation.evaluator import Evaluator
from fsincident.incidents.service import IncidentService, NotFound
from fsincident.obs import Metrics, get_logger
from fsincident.sources.runner import SourceRunner
from fsincident.store import Store

if TYPE_CHECKING:
    from fsincident.escalation.schedules import ScheduleService
from fsincident.escalation.service import BadTarget, EscalationService
from fsincident.escalation.service import NotFound as EscalationNotFound

log = get_logger("fsincident.api")

# What each scope grants: read < ack < admin; ingest stands apart (admin has it too).
GRANTS = {
    "read": {"read"},
    "ack": {"read", "ack"},
    "admin": {"read", "ack", "admin", "ingest"},
    "ingest": {"ingest"},
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ApiContext:
    """What the API reads and acts on; built by ``app.Daemon``."""

    store: Store
    incidents: IncidentService
    evaluator: Evaluator
    metrics: Metrics
    ready: Callable[[], bool]
    sources: SourceRunner | None = None
    schedules: ScheduleService | None = None
    escalation: EscalationService | None = None
    ingest: Any = None  # ingest.service.IngestService (Alertmanager API v2 / PagerDuty Events v2)
    silences: Any = None  # silences.service.SilenceService (also the Muter)
    config: Callable[[], Any] | None = None  # the running Config (changes on reload)
    routes: Callable[[], Any] | None = None  # the running route tree (routing.tree.Route)
    started_at: float = 0.0  # time.time() at start, for /api/v2/status uptime
    links: Callable[[], Any] | None = None  # the running notify.links.LinkSigner (changes on reload)
    role: Callable[[], str] | None = None  # "leader" or "follower" (store.leader.Leadership.role)
    history: Any = None  # history.HistoryService: downsampled series history and range queries (web UI)
    analytics: Any = None  # analytics.service.AnalyticsService: reports, postmortems, capacity (issue #9)
    reports: Any = None  # analytics.reports.ReportScheduler: scheduled reports (issue #9)
    extra: dict[str, Any] = field(default_factory=dict)


CTX = web.AppKey("ctx", ApiContext)
TOKEN_NAME = web.RequestKey("token_name", str)


def error(status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error response ``{"error": ..., "detail": ...}``."""
    return web.json_response({"error": message, "detail": detail}, status=status, headers=headers)


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None):
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


def scope(required: str) -> Callable[[Handler], Handler]:
    """Mark a handler as needing a token that grants ``required``."""

    def deco(fn: Handler) -> Handler:
        fn.required_scope = required  # type: ignore[attr-defined]
        return fn

    return deco


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = request.app[CTX]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        resp = await handler(request)
    except ApiError as e:
        resp = error(e.status, e.message, e.detail)
    except web.HTTPException as e:
        if e.status >= 400:
            resp = error(e.status, e.reason, None, headers={k: v for k, v in e.headers.items() if k == "Allow"})
        else:
            raise
    except Exception:
        log.exception("api_internal_error", path=request.path, method=request.method)
        resp = error(500, "internal error", "see the daemon's log")
    ctx.metrics.http_requests.labels(route, str(resp.status)).inc()
    return resp


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    required = getattr(handler, "required_scope", None)
    if required is None:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "missing bearer token", "send Authorization: Bearer TOKEN")
    await authorize(request, secret, required)
    return await handler(request)


async def authorize(request: web.Request, secret: str, required: str) -> None:
    """Check a token secret for scope ``required`` and remember its name; raises ApiError 401/403."""
    tok = await request.app[CTX].store.find_token(secret.strip())
    if tok is None:
        raise ApiError(401, "invalid token")
    granted: set[str] = set()
    for s in tok.scopes.split(","):
        granted |= GRANTS.get(s.strip(), set())
    if required not in granted:
        raise ApiError(403, f"token {tok.name!r} lacks scope {required!r}", {"scopes": tok.scopes.split(",")})
    request[TOKEN_NAME] = tok.name


async def json_body(request: web.Request, allowed: dict[str, type]) -> dict[str, Any]:
    """The request's JSON object (empty body = {}); raises ApiError 400 naming what is wrong."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "malformed JSON body", str(e)) from None
    except RecursionError:
        raise ApiError(400, "malformed JSON body", "nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}", {"allowed": sorted(allowed)})
    for k, typ in allowed.items():
        if k in data and data[k] is not None and not isinstance(data[k], typ):
            raise ApiError(400, f"field {k!r} must be a {typ.__name__}")
        if isinstance(data.get(k), str) and not storable_text(data[k]):
            raise ApiError(400, f"field {k!r} contains a NUL character or an unpaired surrogate")
    return data


MAX_ID = 2**31 - 1  # incident.id is a 32-bit INTEGER on PostgreSQL; larger values fail there at bind time


def incident_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(404, f"incident {raw!r} not found", "incident ids are integers") from None
    if v < 1 or v > MAX_ID:
        raise ApiError(404, f"incident {raw!r} not found")
    return v


# ---------------------------------------------------------------------- ops


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    role = ctx.role() if ctx.role is not None else "leader"
    if ctx.ready():
        return web.json_response({"status": "ready", "role": role})
    return web.json_response({"status": "starting", "role": role}, status=503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[CTX].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ---------------------------------------------------------------------- v1

STATES = {s.value for s in IncidentState}


@scope("read")
async def list_incidents(request: web.Request) -> web.Response:
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise ApiError(400, f"invalid state {state!r}", {"allowed": sorted(STATES)})
    try:
        limit = int(request.query.get("limit", "500"))
    except ValueError:
        raise ApiError(400, "limit must be an integer") from None
    if not 1 <= limit <= 10000:
        raise ApiError(400, "limit must be between 1 and 10000")
    items = await request.app[CTX].incidents.list(state=state, limit=limit)
    return web.json_response({"incidents": items})


@scope("read")
async def get_incident(request: web.Request) -> web.Response:
    try:
        inc = await request.app[CTX].incidents.get(incident_id(request))
    except NotFound as e:
        raise ApiError(404, str(e)) from None
    return web.json_response(inc)


async def _act(request: web.Request, action: str) -> web.Response:
    iid = incident_id(request)
    body = await json_body(request, {"by": str, "note": str})
    by = (body.get("by") or request[TOKEN_NAME]).strip()[:200] or request[TOKEN_NAME]
    note = body.get("note")
    if note is not None and len(note) > 4000:
        raise ApiError(400, "note is longer than 4000 characters")
    svc = request.app[CTX].incidents
    try:
        inc = await (svc.ack if action == "ack" else svc.resolve)(iid, by, note)
    except NotFound as e:
        raise ApiError(404, str(e)) from None
    except TransitionError as e:
        raise ApiError(409, f"cannot {action}: {e}") from None
    return web.json_response(inc)


@scope("ack")
async def ack_incident(request: web.Request) -> web.Response:
    return await _act(request, "ack")


@scope("ack")
async def resolve_incident(request: web.Request) -> web.Response:
    return await _act(request, "resolve")


async def _escalation_act(request: web.Request, action: str) -> web.Response:
    """``escalate`` / ``reassign``: page now, then answer with the incident (and its timeline) as it is now."""
    iid = incident_id(request)
    fields: dict[str, type] = {"by": str, "note": str}
    if action == "reassign":
        fields["to"] = str
    body = await json_body(request, fields)
    by = (body.get("by") or request[TOKEN_NAME]).strip()[:200] or request[TOKEN_NAME]
    note = body.get("note")
    if note is not None and len(note) > 4000:
        raise ApiError(400, "note is longer than 4000 characters")
    ctx = request.app[CTX]
    if ctx.escalation is None:
        raise ApiError(404, "escalation is not available")
    try:
        if action == "reassign":
            to = (body.get("to") or "").strip()
            if not to:
                raise ApiError(400, "field 'to' is required", "user:NAME, schedule:NAME or channel:NAME")
            done = await ctx.escalation.reassign(iid, to, by, note)
        else:
            done = await ctx.escalation.escalate(iid, by, note)
        inc = await ctx.incidents.get(iid)
    except (NotFound, EscalationNotFound) as e:
        raise ApiError(404, str(e)) from None
    except BadTarget as e:
        raise ApiError(400, str(e)) from None
    except TransitionError as e:
        raise ApiError(409, f"cannot {action}: {e}") from None
    inc["reassigned" if action == "reassign" else "escalated"] = done
    return web.json_response(inc)


@scope("ack")
async def escalate_incident(request: web.Request) -> web.Response:
    return await _escalation_act(request, "escalate")


@scope("ack")
async def reassign_incident(request: web.Request) -> web.Response:
    return await _escalation_act(request, "reassign")


@scope("ack")
async def note_incident(request: web.Request) -> web.Response:
    """``{"note": "...", "by"?: "..."}``: add a note to the incident's timeline; 201 with the incident."""
    iid = incident_id(request)
    body = await json_body(request, {"by": str, "note": str})
    by = (body.get("by") or request[TOKEN_NAME]).strip()[:200] or request[TOKEN_NAME]
    note = (body.get("note") or "").strip()
    if not note:
        raise ApiError(400, "field 'note' is required")
    if len(note) > 4000:
        raise ApiError(400, "note is longer than 4000 characters")
    try:
        inc = await request.app[CTX].incidents.add_note(iid, by, note)
    except NotFound as e:
        raise ApiError(404, str(e)) from None
    return web.json_response(inc, status=201)


@scope("read")
async def rules(request: web.Request) -> web.Response:
    evaluator = request.app[CTX].evaluator
    return web.json_response({"groups": evaluator.rules_view(), "slos": evaluator.slos_view()})


def build_app(ctx: ApiContext, extra_routes: Callable[[web.Application], None] | None = None) -> web.Application:
    """The aiohttp application serving the API with ``ctx``."""
    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=4 * 1024 * 1024)
    app[CTX] = ctx
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    r.add_get("/api/v1/incidents", list_incidents)
    r.add_get("/api/v1/incidents/{id}", get_incident)
    r.add_post("/api/v1/incidents/{id}/ack", ack_incident)
    r.add_post("/api/v1/incidents/{id}/resolve", resolve_incident)
    r.add_post("/api/v1/incidents/{id}/escalate", escalate_incident)
    r.add_post("/api/v1/incidents/{id}/reassign", reassign_incident)
    r.add_post("/api/v1/incidents/{id}/notes", note_incident)
    r.add_get("/api/v1/rules", rules)
    from fsincident.api import ingest  # here, not at the top: ingest imports this module

    ingest.add_routes(app)
    from fsincident.api import schedules  # here, not at the top: it imports this module

    schedules.add_routes(app)
    from fsincident.api import silences  # here, not at the top: it imports this module

    silences.add_routes(app)
    from fsincident.api import alertmanager  # here, not at the top: it imports this module

    alertmanager.add_routes(app)
    from fsincident.api import pagerduty  # here, not at the top: it imports this module

    pagerduty.add_routes(app)
    from fsincident.api import notifications  # here, not at the top: it imports this module

    notifications.add_routes(app)
    from fsincident.api import chatops  # here, not at the top: it imports this module

    chatops.add_routes(app)
    from fsincident.api import links  # here, not at the top: it imports this module

    links.add_routes(app)
    from fsincident.api import analytics, postmortem, reports  # here, not at the top: they import this module

    analytics.add_routes(app)
    postmortem.add_routes(app)
    reports.add_routes(app)
    if extra_routes:
        extra_routes(app)
    return app
