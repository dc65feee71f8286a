"""Chat-ops: Slack and Mattermost slash commands (``/fsincident ack 42``) answered in the channel.

``POST /api/v1/chatops/slack`` and ``POST /api/v1/chatops/mattermost`` take the platform's form-encoded slash
command request. They need no bearer token: the platform authenticates the request. Slack signs it
(``X-Slack-Signature: v0=`` + hex HMAC-SHA256 of ``v0:{X-Slack-Request-Timestamp}:{raw body}`` keyed with the app's
signing secret; the timestamp must be within five minutes of the daemon's clock, and a signature is accepted once);
Mattermost sends the command's token (form field ``token``, or ``Authorization: Token ...``), compared in constant
time. A platform that is not configured answers 404, a request that does not authenticate 401 (JSON errors, like
the rest of the API). Authenticated commands are always answered 200 with ``{"response_type", "text"}``:
``in_channel`` for what was done and who is on call, ``ephemeral`` (seen only by the caller) for help and errors.

The actor recorded in the timeline and the silence audit is ``chatops.users[user_id]``, else
``chatops.users[user_name]``, else the chat user name; the timeline event's data says
``{"via": "slack"|"mattermost", "chat_user": ..., "chat_user_id": ..., "channel": ...}``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from aiohttp import web

from fsincident.api import CTX, ApiContext, ApiError, chatcmd
from fsincident.core import TransitionError, format_duration, storable_text
from fsincident.escalation.schedules import UnknownSchedule
from fsincident.incidents.service import NotFound
from fsincident.matchers import Matcher, MatcherError
from fsincident.obs import get_logger
from fsincident.silences.service import SilenceError

log = get_logger("fsincident.chatops")

SLACK_SKEW = 300
"""Seconds a Slack request's timestamp may be away from the daemon's clock (Slack's recommendation)."""
MAX_BODY = 64 * 1024
MAX_FIELDS = 100
MAX_ACTOR = 200
SEEN_MAX = 10_000
PLATFORM_NAMES = {"slack": "Slack", "mattermost": "Mattermost"}

SEEN = web.AppKey("chatops_seen", dict)
"""Slack signatures accepted in the last SLACK_SKEW*2 seconds (signature -> unix time it may be forgotten)."""


@dataclass(frozen=True)
class ChatRequest:
    """One authenticated slash command: who sent it from where, and its text."""

    via: str
    user_id: str
    user_name: str
    channel: str
    command: str
    text: str


# ---------------------------------------------------------------------- answers and formatting


def in_channel(text: str) -> dict[str, str]:
    """An answer everyone in the channel sees."""
    return {"response_type": "in_channel", "text": text}


def ephemeral(text: str) -> dict[str, str]:
    """An answer only the caller sees."""
    return {"response_type": "ephemeral", "text": text}


_MD_LINKY = re.compile(r"([\\\[\]<>])")
"""Markdown characters that make links, images and autolinks (escaped with a backslash on Mattermost)."""


class Fmt:
    """Markup for one platform: Slack's mrkdwn (``*bold*``, ``&<>`` escaped) or Mattermost's Markdown."""

    def __init__(self, via: str):
        self.via = via

    def _inert(self, text: Any) -> str:
        """No control characters, no Slack control sequences (``<!channel>``), no Mattermost @-mentions."""
        s = "".join(c for c in str(text) if c in "\n\t" or unicodedata.category(c) != "Cc")
        if self.via == "slack":
            return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return s.replace("@", "@\u200b")

    def esc(self, text: Any) -> str:
        """``text`` made inert: no Slack control sequences, no @-mentions, and on Mattermost no Markdown link,
        image or autolink (an alert's title must not put a link or a tracking image in the bot's answer)."""
        s = self._inert(text)
        return s if self.via == "slack" else _MD_LINKY.sub(r"\\\1", s)

    def bold(self, text: Any) -> str:
        """``text`` escaped and in bold."""
        inner = self.esc(text).replace("*", "\u2217")
        return f"*{inner}*" if self.via == "slack" else f"**{inner}**"

    def code(self, text: Any) -> str:
        """``text`` escaped, as inline code (where Markdown is not interpreted)."""
        return "`" + self._inert(text).replace("`", "'") + "`"


def _local(dt: datetime, tz: str, now: datetime) -> str:
    """``Mon 09:00 Europe/Berlin`` within the coming six days, else ``Mon 16 Mar 09:00 Europe/Berlin``."""
    try:
        zone = ZoneInfo(tz)
    except Exception:  # a zone the loader accepted but this system lacks: UTC beats failing the answer
        zone, tz = ZoneInfo("UTC"), "UTC"
    local = dt.astimezone(zone)
    fmt = "%a %H:%M" if timedelta(0) <= dt - now < timedelta(days=6) else "%a %d %b %Y %H:%M"
    return f"{local.strftime(fmt)} {tz}"


# ---------------------------------------------------------------------- request handling


def _config(ctx: ApiContext) -> Any:
    if ctx.config is None:
        raise ApiError(404, "chat-ops is not available")
    return ctx.config()


def _form(raw: bytes) -> dict[str, str] | None:
    """The first value of each form field, or None for a body that is no form; never raises."""
    try:
        text = raw.decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in fields.items() if v}


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, f"a slash command request is at most {MAX_BODY} bytes")
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"a slash command request is at most {MAX_BODY} bytes")
    return raw


def _clean(text: str | None, limit: int) -> str:
    """Chat-supplied metadata without control characters, cut to ``limit``; never raises."""
    s = "".join(c for c in (text or "") if unicodedata.category(c) not in ("Cc", "Cs", "Cf")).strip()
    return s[:limit] if storable_text(s[:limit]) else ""


def _chat_request(via: str, form: dict[str, str]) -> ChatRequest:
    command = _clean(form.get("command"), 40)
    if not command.startswith("/") or any(c.isspace() for c in command):
        command = "/fsincident"
    text = form.get("text") or ""
    if via == "slack":  # Slack escapes these three in the text it sends
        text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return ChatRequest(
        via=via,
        user_id=_clean(form.get("user_id"), MAX_ACTOR),
        user_name=_clean(form.get("user_name"), MAX_ACTOR),
        channel=_clean(form.get("channel_name"), MAX_ACTOR),
        command=command,
        text=text,
    )


def actor_of(users: dict[str, str], chat: ChatRequest) -> str:
    """The fsincident user acting: ``users`` by chat user id, then by name, else the chat name; never raises."""
    for key in (chat.user_id, chat.user_name):
        if key and key in users:
            return users[key]
    return chat.user_name or chat.user_id or f"{chat.via}-user"


def _unauthorized(via: str, reason: str, detail: str | None = None) -> ApiError:
    log.warning("chatops_rejected", via=via, reason=reason)
    return ApiError(401, reason, detail)


def _verify_slack(request: web.Request, raw: bytes, secret: str, now: float) -> str:
    """Check Slack's signature and timestamp; returns the signature. Raises ApiError 401 saying what is wrong."""
    ts = request.headers.get("X-Slack-Request-Timestamp", "").strip()
    sig = request.headers.get("X-Slack-Signature", "").strip()
    if not ts or not sig:
        raise _unauthorized("slack", "missing Slack signature", "X-Slack-Signature and X-Slack-Request-Timestamp")
    if not (ts.isascii() and ts.isdigit() and len(ts) <= 12):
        raise _unauthorized("slack", "invalid Slack request timestamp")
    if abs(now - int(ts)) > SLACK_SKEW:
        raise _unauthorized("slack", "stale Slack request", "its timestamp is more than 5 minutes from the clock")
    mac = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(("v0=" + mac).encode(), sig.encode("utf-8", "replace")):
        raise _unauthorized("slack", "invalid Slack signature")
    return sig


def _once(app: web.Application, sig: str, now: float) -> None:
    """Accept each Slack signature once while its timestamp is fresh; raises ApiError 401 for a replay."""
    seen: dict[str, float] = app[SEEN]
    if sig in seen:
        raise _unauthorized("slack", "replayed Slack request")
    if len(seen) >= SEEN_MAX // 2:
        for k in [k for k, until in seen.items() if until < now]:
            del seen[k]
        while len(seen) >= SEEN_MAX:
            del seen[next(iter(seen))]
    seen[sig] = now + 2 * SLACK_SKEW


async def slack(request: web.Request) -> web.Response:
    """``POST /api/v1/chatops/slack``: a Slack slash command, verified by the app's signing secret; raises
    ApiError 404 (not configured), 413, 401 (signature, timestamp, replay) or 400 (no form)."""
    ctx = request.app[CTX]
    opts = _config(ctx).chatops.slack
    if opts is None:
        raise ApiError(404, "Slack chat-ops is not configured", "set chatops.slack.signing_secret")
    raw = await _body(request)
    form = _form(raw)
    if form is not None and form.get("ssl_check") == "1" and "command" not in form:
        return web.json_response({})  # Slack checking the certificate: nothing to do, nothing to tell
    now = ctx.incidents.clock.now().timestamp()
    sig = _verify_slack(request, raw, opts.signing_secret, now)
    if form is None:
        raise ApiError(400, "the body is not a form (application/x-www-form-urlencoded)")
    _once(request.app, sig, now)
    return web.json_response(await _answer(ctx, _chat_request("slack", form)))


async def mattermost(request: web.Request) -> web.Response:
    """``POST /api/v1/chatops/mattermost``: a Mattermost slash command, verified by the command's token; raises
    ApiError 404 (not configured), 413, 401 (token) or 400 (no form)."""
    ctx = request.app[CTX]
    opts = _config(ctx).chatops.mattermost
    if opts is None:
        raise ApiError(404, "Mattermost chat-ops is not configured", "set chatops.mattermost.token")
    raw = await _body(request)
    form = _form(raw)
    scheme, _, header = request.headers.get("Authorization", "").partition(" ")
    given = header.strip() if scheme.lower() == "token" else (form or {}).get("token", "")
    if not given:
        raise _unauthorized("mattermost", "missing Mattermost token", "the form field 'token'")
    if not hmac.compare_digest(opts.token.encode(), given.encode("utf-8", "replace")):
        raise _unauthorized("mattermost", "invalid Mattermost token")
    if form is None:
        raise ApiError(400, "the body is not a form (application/x-www-form-urlencoded)")
    return web.json_response(await _answer(ctx, _chat_request("mattermost", form)))


async def _answer(ctx: ApiContext, chat: ChatRequest) -> dict[str, str]:
    """:func:`answer`, with a failure (the database is down) told to the caller instead of a 5xx, which the chat
    platform would show only as a generic error; never raises."""
    try:
        return await answer(ctx, chat)
    except Exception:
        log.exception("chatops_failed", via=chat.via)
        return ephemeral("fsincident could not run that command just now (see its log); try again shortly.")


# ---------------------------------------------------------------------- commands


async def answer(ctx: ApiContext, chat: ChatRequest) -> dict[str, str]:
    """Run the command in ``chat`` and phrase the answer; raises only on a database error."""
    cfg = _config(ctx)
    fmt = Fmt(chat.via)
    cmd = chatcmd.parse(chat.text)
    actor = actor_of(dict(cfg.chatops.users), chat)
    log.info("chatops_command", via=chat.via, command=type(cmd).__name__.lower(), actor=actor, channel=chat.channel)
    if isinstance(cmd, chatcmd.Help):
        head = f"Unknown command {fmt.code(cmd.unknown)}.\n" if cmd.unknown else ""
        return ephemeral(head + chatcmd.help_text(chat.command, cmd.topic))
    if isinstance(cmd, chatcmd.Invalid):
        usage = chatcmd.USAGE.get(cmd.command, "help")
        return ephemeral(f"{fmt.esc(cmd.message)}.\nUsage: `{chat.command} {usage}`")
    data = {"via": chat.via, "chat_user": chat.user_name or chat.user_id, "chat_user_id": chat.user_id}
    if chat.channel:
        data["channel"] = chat.channel
    if isinstance(cmd, chatcmd.Ack | chatcmd.Resolve):
        return await _act(ctx, fmt, cmd, actor, data)
    if isinstance(cmd, chatcmd.OnCall):
        return await _oncall(ctx, fmt, cmd)
    return await _silence(ctx, cfg, fmt, cmd, actor, chat)


async def _act(
    ctx: ApiContext, fmt: Fmt, cmd: chatcmd.Ack | chatcmd.Resolve, actor: str, data: dict[str, Any]
) -> dict[str, str]:
    ack = isinstance(cmd, chatcmd.Ack)
    before: dict[str, Any] = {}

    async def remember(_s: Any, inc: Any) -> None:  # the state under the row lock, before the transition
        before.update(state=inc.state, ack_by=inc.acknowledged_by, resolved_by=inc.resolved_by)

    svc = ctx.incidents
    try:
        inc = await (svc.ack if ack else svc.resolve)(cmd.incident, actor, cmd.note, data, remember)
    except NotFound:
        return ephemeral(f"There is no incident #{cmd.incident}.")
    except TransitionError:
        return ephemeral(f"Incident #{cmd.incident} is resolved: it cannot be acknowledged.")
    title = fmt.bold(inc["title"])
    if ack and before.get("state") == "acknowledged":
        return ephemeral(f"Incident #{cmd.incident} {title} was already acknowledged by {fmt.esc(before['ack_by'])}.")
    if not ack and before.get("state") == "resolved":
        return ephemeral(f"Incident #{cmd.incident} {title} was already resolved by {fmt.esc(before['resolved_by'])}.")
    done = "acknowledged" if ack else "resolved"
    text = f"Incident #{cmd.incident} {title} {done} by {fmt.esc(actor)}"
    return in_channel(text + (f": {fmt.esc(cmd.note)}" if cmd.note else "."))


async def _oncall(ctx: ApiContext, fmt: Fmt, cmd: chatcmd.OnCall) -> dict[str, str]:
    svc = ctx.schedules
    if svc is None:
        return ephemeral("Schedules are not available.")
    now = svc.clock.now()
    names = [s.name for s in svc.schedules]
    if cmd.schedule is None:
        if not names:
            return ephemeral("No schedules are configured.")
        lines = ["On call now:"]
        for name, shifts in await svc.oncall_all(now):
            lines.append(f"• {fmt.bold(name)}: {_who(fmt, svc, name, shifts, now)}")
        return in_channel("\n".join(lines))
    try:
        shifts = await svc.oncall(cmd.schedule, now)
    except UnknownSchedule:
        known = ", ".join(fmt.code(n) for n in names) or "none"
        return ephemeral(f"There is no schedule {fmt.code(cmd.schedule)}. Schedules: {known}.")
    return in_channel(f"On call for {fmt.bold(cmd.schedule)}: {_who(fmt, svc, cmd.schedule, shifts, now)}")


def _who(fmt: Fmt, svc: Any, name: str, shifts: list[Any], now: datetime) -> str:
    if not shifts:
        return "nobody"
    sh = shifts[0]
    tz = svc.schedule(name).timezone
    return f"{fmt.bold(sh.user)} until {_local(sh.end, tz, now)}"


async def _silence(
    ctx: ApiContext, cfg: Any, fmt: Fmt, cmd: chatcmd.Silence, actor: str, chat: ChatRequest
) -> dict[str, str]:
    svc = ctx.silences
    if svc is None:
        return ephemeral("Silences are not available.")
    matchers: tuple[Matcher, ...] = cmd.matchers
    if cmd.incident is not None:
        try:
            inc = await ctx.incidents.get(cmd.incident)
        except NotFound:
            return ephemeral(f"There is no incident #{cmd.incident}.")
        try:
            matchers = incident_matchers(inc)
        except MatcherError:
            matchers = ()
        if not matchers:
            return ephemeral(
                f"Incident #{cmd.incident} has no labels to silence by: give matchers such as "
                f"{fmt.code('alertname=' + str(inc['alerts'][0]['alertname'] if inc['alerts'] else 'DiskFull'))}."
            )
    now = svc.clock.now()
    try:
        ends = now + cmd.duration
    except OverflowError:
        return ephemeral("That silence would last too long.")
    platform = PLATFORM_NAMES[chat.via]
    about = f" for incident #{cmd.incident}" if cmd.incident is not None else ""
    comment = cmd.comment or f"silenced from {platform} by {actor}{about}"
    try:
        row = await svc.put(
            matchers=matchers, starts_at=now, ends_at=ends, created_by=actor, comment=comment, duration=cmd.duration
        )
    except SilenceError as e:
        return ephemeral(f"Cannot silence: {fmt.esc(e.message)}.")
    user = cfg.user(actor)
    tz = user.timezone if user is not None else "UTC"
    shown = ", ".join(fmt.code(m) for m in matchers)
    text = (
        f"Silenced {shown} for {format_duration(cmd.duration)} (until {_local(ends, tz, now)}) by "
        f"{fmt.esc(actor)}{about}. Silence {fmt.code(row.id)}"
    )
    return in_channel(text + (f": {fmt.esc(cmd.comment)}" if cmd.comment else "."))


def incident_matchers(inc: dict[str, Any]) -> tuple[Matcher, ...]:
    """Equality matchers for an incident (as ``IncidentService.get`` returns it): its group labels, or when the
    group has none (``group_by: []``) the labels all its alerts share; raises MatcherError for a bad label."""
    labels: dict[str, str] = dict(inc.get("labels") or {})
    if not labels and inc.get("alerts"):
        sets = [dict(a.get("labels") or {}) for a in inc["alerts"]]
        labels = {k: v for k, v in sets[0].items() if all(s.get(k) == v for s in sets[1:])}
    return tuple(Matcher.make(k, "=", v) for k, v in sorted(labels.items()) if isinstance(v, str) and v != "")


def add_routes(app: web.Application) -> None:
    """Register ``POST /api/v1/chatops/slack`` and ``POST /api/v1/chatops/mattermost``."""
    app[SEEN] = {}
    app.router.add_post("/api/v1/chatops/slack", slack)
    app.router.add_post("/api/v1/chatops/mattermost", mattermost)
