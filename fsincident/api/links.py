"""Signed acknowledge/resolve links: ``GET /l/{token}`` shows a confirmation page, only ``POST /l/{token}`` acts.

Chat unfurlers and mail scanners fetch every GET link in a message, so GET never changes anything. The POST
acts at most once: inserting the token's nonce into ``used_link`` happens in the same transaction as the
acknowledgement (the primary key is the compare-and-set). Every refusal is a small HTML page with a 4xx status
(403 bad signature, 404 unknown incident, 409 wrong state, 410 expired or used); the token never reaches a log
line (the route's metric label is the pattern ``/l/{token}``).
"""

from __future__ import annotations

import html
import re
import unicodedata
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlmodel.ext.asyncio.session import AsyncSession

from fsincident.api import CTX
from fsincident.core import IncidentState, TransitionError, ensure_utc
from fsincident.incidents.service import NotFound
from fsincident.notify.links import LinkClaim, LinkError, LinkSigner
from fsincident.obs import get_logger
from fsincident.store.tables import Incident, UsedLink

log = get_logger("fsincident.api.links")

MAX_NAME = 100
MAX_ACTOR = 200
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
VERB = {"ack": "Acknowledge", "resolve": "Resolve"}
DONE = {"ack": "acknowledged", "resolve": "resolved"}
# The states an action may start from: an ack link of an acknowledged incident would change nothing.
FROM = {
    "ack": {IncidentState.TRIGGERED.value},
    "resolve": {IncidentState.TRIGGERED.value, IncidentState.ACKNOWLEDGED.value},
}
_SPACE = re.compile(r"\s+")

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;
color:#1f2328;background:#fff;line-height:1.45}
h1{font-size:1.35rem;margin:0 0 .75rem}p{margin:.5rem 0}.muted{color:#59636e;font-size:.9rem}
.box{border:1px solid #d1d9e0;border-radius:8px;padding:1rem 1.25rem}
.sev-critical{color:#cf222e}.sev-warning{color:#9a6700}
label{display:block;margin:1rem 0 .25rem}input[type=text]{width:100%;box-sizing:border-box;padding:.5rem;
font-size:1rem;border:1px solid #d1d9e0;border-radius:6px}
button{margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem;border:0;border-radius:6px;background:#1f883d;color:#fff;
cursor:pointer}button.resolve{background:#0969da}
"""


class _Refused(Exception):
    """A request the link must not act on: answered with an HTML page and ``status``."""

    def __init__(self, status: int, title: str, text: str):
        super().__init__(title)
        self.status, self.title, self.text = status, title, text


def page(status: int, title: str, body_html: str) -> web.Response:
    """A small self-contained HTML page (no script, no external asset) with the hardening headers."""
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex,nofollow">'
        f"<title>{html.escape(title)} · fsincident</title><style>{_STYLE}</style></head>"
        f'<body><div class="box"><h1>{html.escape(title)}</h1>{body_html}</div>'
        '<p class="muted">fsincident</p></body></html>'
    )
    return web.Response(status=status, text=doc, content_type="text/html", charset="utf-8", headers=HEADERS)


def _refusal(e: _Refused) -> web.Response:
    return page(e.status, e.title, f"<p>{html.escape(e.text)}</p>")


def _signer(request: web.Request) -> LinkSigner:
    get = request.app[CTX].links
    signer = get() if get is not None else None
    if signer is None:
        raise _Refused(404, "Links are not enabled", "This fsincident does not accept action links.")
    return signer  # type: ignore[no-any-return]


def _claim(request: web.Request) -> LinkClaim:
    """The verified claim of the path's token; raises _Refused (403 invalid or forged, 410 expired)."""
    signer = _signer(request)
    try:
        return signer.verify(request.match_info["token"], request.app[CTX].incidents.clock.now())
    except LinkError as e:
        if e.reason == "expired":
            raise _Refused(
                410, "This link has expired", "Open the incident in fsincident or use a link from a newer page."
            ) from None
        raise _Refused(
            403, "This link is not valid", "It may have been cut short or changed, or signed with an older key."
        ) from None


def _at(dt: datetime | None) -> str:
    dt = ensure_utc(dt)
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt else "?"


def _check_state(claim: LinkClaim, inc: Incident) -> None:
    """Raise _Refused 409 when ``claim.action`` cannot start from the incident's state."""
    if inc.state in FROM[claim.action]:
        return
    if inc.state == IncidentState.RESOLVED.value:
        who = f" by {inc.resolved_by} at {_at(inc.resolved_at)}" if inc.resolved_by else ""
    else:
        who = f" by {inc.acknowledged_by} at {_at(inc.acknowledged_at)}" if inc.acknowledged_by else ""
    raise _Refused(409, f"Incident #{inc.id} is already {inc.state}", f"It was {inc.state}{who}; nothing was changed.")


def _used(row: UsedLink) -> _Refused:
    return _Refused(
        410,
        "This link was already used",
        f"It {DONE.get(row.action, row.action)} incident #{row.incident_id} as {row.actor} at {_at(row.used_at)}; "
        "a link acts only once.",
    )


def _unknown(claim: LinkClaim) -> _Refused:
    return _Refused(404, f"Incident #{claim.incident_id} not found", "It may have been deleted.")


def clean_name(raw: Any) -> str:
    """A name typed into the form as an actor: no control characters, whitespace collapsed, at most 100
    characters; "" when nothing usable is left."""
    if not isinstance(raw, str):
        return ""
    kept = "".join(" " if ch.isspace() else ch for ch in raw if unicodedata.category(ch)[0] != "C" or ch.isspace())
    return _SPACE.sub(" ", kept).strip()[:MAX_NAME].strip()


def recipient_actor(recipient: str) -> str:
    """The actor a link stands for when no name is given: ``user:alice`` → ``alice``, ``channel:ops`` →
    ``ops (link)`` (anyone in a channel may have clicked it)."""
    kind, sep, name = recipient.partition(":")
    if not (sep and name):
        name = recipient
    if kind == "user" and sep:
        return name[:MAX_ACTOR]
    return f"{name[: MAX_ACTOR - 7]} (link)".strip()


def _incident_html(inc: Incident) -> str:
    sev = html.escape(inc.severity)
    return (
        f"<p><strong>#{inc.id} {html.escape(inc.title)}</strong></p>"
        f'<p>State: {html.escape(inc.state)} · severity: <span class="sev-{sev}">{sev}</span></p>'
    )


async def confirm(request: web.Request) -> web.Response:
    """``GET /l/{token}``: what the link would do, and a button that POSTs it; never acts."""
    try:
        claim = _claim(request)
        async with request.app[CTX].store.read() as s:
            inc = await s.get(Incident, claim.incident_id)
            used = await s.get(UsedLink, claim.nonce)
        if inc is None:
            raise _unknown(claim)
        if used is not None:
            raise _used(used)
        _check_state(claim, inc)
    except _Refused as e:
        return _refusal(e)
    except Exception:
        return _failed(claim=None)
    verb = VERB[claim.action]
    body = (
        _incident_html(inc) + f'<form method="post" action="{html.escape(request.match_info["token"])}">'
        '<label for="name">Your name (optional)</label>'
        f'<input type="text" id="name" name="name" maxlength="{MAX_NAME}" autocomplete="name" '
        f'placeholder="{html.escape(recipient_actor(claim.recipient))}">'
        f'<button type="submit" class="{claim.action}">{verb} incident #{inc.id}</button></form>'
        f'<p class="muted">Sent to {html.escape(claim.recipient)}. This link works once and expires '
        f"{_at(claim.expires_at)}.</p>"
    )
    return page(200, f"{verb} incident #{inc.id}?", body)


async def act(request: web.Request) -> web.Response:
    """``POST /l/{token}``: acknowledge or resolve once, as the name given or the link's recipient."""
    claim: LinkClaim | None = None
    try:
        claim = _claim(request)
        try:
            form = await request.post()
        except Exception:
            raise _Refused(400, "Unreadable form", "Send the form from the link's page.") from None
        actor = clean_name(form.get("name")) or recipient_actor(claim.recipient)
        ctx = request.app[CTX]
        now = ctx.incidents.clock.now()
        c = claim

        async def guard(s: AsyncSession, inc: Incident) -> None:
            used = await s.get(UsedLink, c.nonce)
            if used is not None:
                raise _used(used)
            _check_state(c, inc)
            s.add(
                UsedLink(
                    nonce=c.nonce,
                    incident_id=c.incident_id,
                    action=c.action,
                    recipient=c.recipient,
                    actor=actor,
                    used_at=now,
                )
            )
            await s.flush()  # a concurrent use of the same link fails here (primary key): nothing is changed

        fn = ctx.incidents.ack if claim.action == "ack" else ctx.incidents.resolve
        try:
            inc = await fn(claim.incident_id, actor, None, {"via": "link", "recipient": claim.recipient}, guard)
        except NotFound:
            raise _unknown(claim) from None
        except TransitionError as e:
            raise _Refused(409, f"Cannot {claim.action} incident #{claim.incident_id}", str(e)) from None
        except sa.exc.IntegrityError:
            async with ctx.store.read() as s:
                row = await s.get(UsedLink, claim.nonce)
            if row is None:
                raise
            raise _used(row) from None
    except _Refused as e:
        if claim is not None and e.status in (409, 410):
            log.info("link_refused", incident_id=claim.incident_id, action=claim.action, status=e.status)
        return _refusal(e)
    except Exception:
        return _failed(claim)
    log.info("link_used", incident_id=claim.incident_id, action=claim.action, recipient=claim.recipient, actor=actor)
    done = DONE[claim.action]
    body = (
        f"<p><strong>#{inc['id']} {html.escape(inc['title'])}</strong></p>"
        f"<p>{done.capitalize()} by {html.escape(actor)}. The timeline records that it was done through a link "
        f"sent to {html.escape(claim.recipient)}.</p>"
    )
    return page(200, f"Incident #{inc['id']} {done}", body)


def _failed(claim: LinkClaim | None) -> web.Response:
    """An unexpected failure (e.g. the database is down): logged without the token, answered 503."""
    log.exception("link_failed", incident_id=claim.incident_id if claim else None)
    return page(
        503,
        "Try again",
        "<p>fsincident could not handle this link just now. Try again in a moment: a link acts only once, "
        "so trying again is safe.</p>",
    )


def add_routes(app: web.Application) -> None:
    """Register ``GET/POST /l/{token}``."""
    app.router.add_get("/l/{token}", confirm)
    app.router.add_post("/l/{token}", act)
