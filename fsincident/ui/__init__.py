"""The web UI under ``/ui/``: server-rendered pages (jinja2, autoescaped) with progressive enhancement.

Sign-in: a user pastes an API token once (``/ui/login``); the daemon stores a session (only the SHA-256 of the
cookie's secret) and sets a ``Secure`` (when served over https), ``HttpOnly``, ``SameSite=Lax`` cookie (Lax, so a
link pasted in chat opens signed in; no GET acts, and POSTs need the CSRF token). A session
acts with its token's scopes: every page declares the scope it needs (:func:`page`), every POST carries the
session's CSRF token (``_csrf``) and, when the browser sends one, an ``Origin`` of this host. Errors are readable
HTML pages, never a stack trace; every response says how long the server took (``Server-Timing: app;dur=MS``).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web
from markupsafe import Markup
from sqlmodel import delete, select

from fsincident.api import CTX, GRANTS, ApiContext
from fsincident.obs import get_logger
from fsincident.store import hash_secret
from fsincident.store.tables import ApiToken, UiSession

log = get_logger("fsincident.ui")

COOKIE = "fsincident_session"
PREFIX = "/ui"
STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent.parent / "templates" / "ui"
SEEN_EVERY = timedelta(minutes=1)  # how often a session's last_seen_at is written
MAX_FORM = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Session:
    """The signed-in user of a request: the token's name (the actor in timelines), its scopes and CSRF token."""

    name: str
    scopes: frozenset[str]
    csrf: str
    expires_at: datetime

    def can(self, scope: str) -> bool:
        return scope in self.scopes


SESSION = web.RequestKey("ui_session", Session)
STARTED = web.RequestKey("ui_started", float)


class UiError(Exception):
    """A readable error page: ``status``, a one-line ``title`` and an optional ``detail`` sentence."""

    def __init__(self, status: int, title: str, detail: str | None = None):
        super().__init__(title)
        self.status, self.title, self.detail = status, title, detail


def page(scope: str = "read") -> Callable[[Handler], Handler]:
    """Mark a UI handler as needing a signed-in session whose token grants ``scope`` (POSTs also need CSRF)."""

    def deco(fn: Handler) -> Handler:
        fn.ui_scope = scope  # type: ignore[attr-defined]
        return fn

    return deco


def ctx_of(request: web.Request) -> ApiContext:
    return request.app[CTX]


def session_of(request: web.Request) -> Session:
    return request[SESSION]


def config_of(request: web.Request) -> Any:
    ctx = ctx_of(request)
    return ctx.config() if ctx.config is not None else None


def display_tz(request: web.Request) -> ZoneInfo:
    cfg = config_of(request)
    return ZoneInfo(cfg.ui.timezone if cfg is not None else "UTC")


# ---------------------------------------------------------------------------------------------- templates


def _instant(value: Any) -> datetime | str | None:
    """An aware datetime from a datetime, an ISO 8601 string or unix seconds; None for nothing; a string that is
    not a time is returned as it is (shown verbatim)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _ts(value: Any, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    at = _instant(value)
    if at is None:
        return "–"
    return at if isinstance(at, str) else at.astimezone(tz).strftime(fmt)


def duration_text(seconds: float | None) -> str:
    """``1d 2h``, ``3h 4m``, ``5m 6s``, ``7s`` (two units at most)."""
    if seconds is None:
        return "–"
    s = int(abs(seconds))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m {sec}s"
    return f"{sec}s"


def _ago(value: Any, now: datetime) -> str:
    at = _instant(value)
    if at is None:
        return "never"
    if isinstance(at, str):
        return at
    delta = (now - at).total_seconds()
    return f"{duration_text(delta)} ago" if delta >= 0 else f"in {duration_text(-delta)}"


def _number(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f != f:
        return "NaN"
    if f == int(f) and abs(f) < 1e15:
        return str(int(f))
    if abs(f) >= 1e6 or abs(f) < 1e-3:
        return f"{f:.{digits}g}"
    # About four significant digits: 474.8, 12.35, 0.1235 (a value, not a measurement of its precision).
    places = 1 if abs(f) >= 100 else 2 if abs(f) >= 1 else digits + 1
    return f"{round(f, places):g}"


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["dur"] = duration_text
ENV.filters["num"] = _number
ENV.filters["urlq"] = lambda v: quote(str(v), safe="")

NAV = [
    ("overview", "Overview", f"{PREFIX}/"),
    ("incidents", "Incidents", f"{PREFIX}/incidents"),
    ("rules", "Rules", f"{PREFIX}/rules"),
    ("silences", "Silences", f"{PREFIX}/silences"),
    ("oncall", "On-call", f"{PREFIX}/oncall"),
    ("explore", "Explore", f"{PREFIX}/explore"),
]


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """Render ``templates/ui/TEMPLATE`` with the page's context plus ``session``, ``csrf``, ``nav``, ``now``,
    ``tz``, ``refresh`` (seconds, 0 = off), and the filters ``ts``, ``ago``, ``dur``, ``num``, ``urlq``."""
    tz = display_tz(request)
    now = ctx_of(request).incidents.clock.now()
    cfg = config_of(request)
    sess = request.get(SESSION)
    base = {
        "session": sess,
        "csrf": sess.csrf if sess is not None else "",
        "nav": NAV,
        "now": now,
        "tz": tz,
        "tzname": str(tz),
        "refresh": int(cfg.ui.refresh.total_seconds()) if cfg is not None else 0,
        "path": request.path_qs,
        "ts": lambda v, fmt="%Y-%m-%d %H:%M:%S": _ts(v, tz, fmt),
        "ago": lambda v: _ago(v, now),
        "csrf_field": Markup('<input type="hidden" name="_csrf" value="{}">').format(sess.csrf if sess else ""),
    }
    base.update(context)
    body = ENV.get_template(template).render(**base)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def redirect(location: str) -> web.HTTPSeeOther:
    """A 303 redirect (after a POST, the browser GETs ``location``)."""
    return web.HTTPSeeOther(location)


async def form(request: web.Request) -> Mapping[str, str]:
    """The POSTed form (checked for CSRF by the middleware already); only the first value of each field."""
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


# ---------------------------------------------------------------------------------------------- sessions


async def _load_session(request: web.Request) -> Session | None:
    raw = request.cookies.get(COOKIE)
    if not raw or len(raw) > 200:
        return None
    ctx = ctx_of(request)
    now = ctx.incidents.clock.now()
    try:
        digest = hash_secret(raw)
    except UnicodeEncodeError:
        return None
    async with ctx.store.read() as s:
        row = (
            await s.exec(
                select(UiSession, ApiToken)
                .join(ApiToken, ApiToken.id == UiSession.token_id)
                .where(  # type: ignore[arg-type]
                    UiSession.id_hash == digest
                )
            )
        ).first()
    if row is None:
        return None
    sess, tok = row
    expires = sess.expires_at if sess.expires_at.tzinfo else sess.expires_at.replace(tzinfo=UTC)
    seen = sess.last_seen_at if sess.last_seen_at.tzinfo else sess.last_seen_at.replace(tzinfo=UTC)
    if tok.revoked_at is not None or expires <= now:
        return None
    if now - seen >= SEEN_EVERY:
        async with ctx.store.session() as s:
            row2 = await s.get(UiSession, digest)
            if row2 is not None:
                row2.last_seen_at = now
    return Session(tok.name, _granted(tok.scopes), sess.csrf, expires)


def _granted(scopes: str) -> frozenset[str]:
    granted: set[str] = set()
    for sc in scopes.split(","):
        granted |= GRANTS.get(sc.strip(), set())
    return frozenset(granted)


def _secure(request: web.Request) -> bool:
    cfg = config_of(request)
    return request.secure or (cfg is not None and cfg.external_url.startswith("https://"))


def _same_origin(request: web.Request) -> bool:
    """A POST's ``Origin`` (or ``Referer``) names this host, or the browser sent neither."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin is None
    host = urlsplit(origin).netloc
    allowed = {request.host}
    cfg = config_of(request)
    if cfg is not None:
        allowed.add(urlsplit(cfg.external_url).netloc)
    return host in allowed


def _safe_next(target: str | None) -> str:
    if not target or not target.startswith(f"{PREFIX}/") or target.startswith("//") or "\\" in target:
        return f"{PREFIX}/"
    return target


async def login_page(request: web.Request) -> web.Response:
    sess = await _load_session(request)
    nxt = _safe_next(request.query.get("next"))
    if sess is not None:
        raise redirect(nxt)
    return render(request, "login.html.j2", next=nxt, error=None)


async def login(request: web.Request) -> web.Response:
    if not _same_origin(request):
        raise UiError(403, "Cross-site sign-in refused", "The form was posted from another site.")
    data = await form(request)
    nxt = _safe_next(data.get("next"))
    secret = (data.get("token") or "").strip()
    ctx = ctx_of(request)
    tok = await ctx.store.find_token(secret) if secret and len(secret) <= 500 else None
    if tok is None or tok.id is None:
        log.info("ui_login_refused", remote=request.remote)
        return render(request, "login.html.j2", status=401, next=nxt, error="That token is not valid (or was revoked).")
    if "read" not in _granted(tok.scopes):  # an ingest-only session could open no page, not even sign out
        log.info("ui_login_refused", remote=request.remote, token=tok.name)
        return render(
            request, "login.html.j2", status=403, next=nxt, error="That token cannot read, so it cannot use the UI."
        )
    now = ctx.incidents.clock.now()
    cfg = config_of(request)
    ttl = cfg.ui.session_ttl if cfg is not None else timedelta(hours=12)
    cookie = secrets.token_urlsafe(32)
    async with ctx.store.session() as s:
        await s.exec(delete(UiSession).where(UiSession.expires_at < now))  # type: ignore[arg-type]
        s.add(
            UiSession(
                id_hash=hash_secret(cookie),
                token_id=tok.id,
                csrf=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + ttl,
                last_seen_at=now,
            )
        )
    log.info("ui_login", token=tok.name)
    resp = web.HTTPSeeOther(nxt)
    resp.set_cookie(
        COOKIE,
        cookie,
        max_age=int(ttl.total_seconds()),
        path=f"{PREFIX}/",
        httponly=True,
        secure=_secure(request),
        samesite="Lax",
    )
    raise resp


@page("read")
async def logout(request: web.Request) -> web.Response:
    raw = request.cookies.get(COOKIE, "")
    async with ctx_of(request).store.session() as s:
        await s.exec(delete(UiSession).where(UiSession.id_hash == hash_secret(raw)))  # type: ignore[arg-type]
    resp = web.HTTPSeeOther(f"{PREFIX}/login")
    resp.del_cookie(COOKIE, path=f"{PREFIX}/")
    raise resp


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise UiError(404, "Not found", f"There is no file {name!r}.")
    resp = web.FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})
    return resp


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound(f"{PREFIX}/")


# ---------------------------------------------------------------------------------------------- middleware

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _error_page(request: web.Request, status: int, title: str, detail: str | None) -> web.Response:
    try:
        return render(request, "error.html.j2", status=status, code=status, title=title, detail=detail)
    except Exception:  # a broken template must not hide the error itself
        log.exception("ui_error_page_failed")
        return web.Response(text=f"{status} {title}\n", status=status, content_type="text/plain")


@web.middleware
async def ui_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sessions, scopes, CSRF and readable error pages for ``/ui/``; other paths pass through untouched."""
    if not request.path.startswith(f"{PREFIX}/") and request.path != PREFIX:
        return await handler(request)
    started = time.perf_counter()
    request[STARTED] = started
    try:
        scope = getattr(handler, "ui_scope", None)
        if scope is None and COOKIE in request.cookies:  # public pages (errors, sign-in) still show who is signed in
            sess0 = await _load_session(request)
            if sess0 is not None:
                request[SESSION] = sess0
        if scope is not None:
            sess = await _load_session(request)
            if sess is None:
                if request.method == "GET":
                    raise web.HTTPSeeOther(f"{PREFIX}/login?next={quote(request.path_qs, safe='')}")
                raise UiError(401, "Not signed in", "Your session ended. Sign in again and repeat the action.")
            request[SESSION] = sess
            if request.method not in ("GET", "HEAD"):
                if not _same_origin(request):
                    raise UiError(403, "Cross-site request refused", "The form was posted from another site.")
                if request.content_length is not None and request.content_length > MAX_FORM:
                    raise UiError(413, "Form too large")
                data = await request.post()
                sent = data.get("_csrf")
                if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), sess.csrf.encode()):
                    raise UiError(
                        403, "Form expired", "The form's security token did not match. Reload the page and try again."
                    )
            if not sess.can(scope):
                raise UiError(
                    403,
                    "Not allowed",
                    f"Your token {sess.name!r} lacks the {scope!r} scope this needs. Ask an admin for a token with it.",
                )
        resp = await handler(request)
    except UiError as e:
        resp = _error_page(request, e.status, e.title, e.detail)
    except web.HTTPException as e:
        if e.status < 400:
            e.headers.update(SECURITY_HEADERS)
            raise
        titles = {404: "Not found", 405: "Method not allowed"}
        resp = _error_page(request, e.status, titles.get(e.status, e.reason), None)
    except Exception:
        log.exception("ui_internal_error", path=request.path, method=request.method)
        resp = _error_page(request, 500, "Something went wrong", "The error is in the daemon's log.")
    resp.headers.update(SECURITY_HEADERS)
    resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    if scope_is_private(request):
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def scope_is_private(request: web.Request) -> bool:
    return not request.path.startswith(f"{PREFIX}/static/")


def add_routes(app: web.Application) -> None:
    """Mount the UI under ``/ui/`` (and redirect ``/`` to it)."""
    from fsincident.ui import explore, incidents, oncall, overview, rules, silences

    app.middlewares.append(ui_middleware)
    r = app.router
    r.add_get("/", root)
    r.add_get(f"{PREFIX}", root)
    r.add_get(f"{PREFIX}/login", login_page)
    r.add_post(f"{PREFIX}/login", login)
    r.add_post(f"{PREFIX}/logout", logout)
    r.add_get(f"{PREFIX}/static/{{name}}", static)
    for mod in (overview, incidents, rules, silences, oncall, explore):
        mod.add_routes(app)
    r.add_route("*", f"{PREFIX}/{{tail:.*}}", not_found)


async def not_found(request: web.Request) -> web.Response:
    raise UiError(404, "Not found", f"There is no page at {request.path}.")
