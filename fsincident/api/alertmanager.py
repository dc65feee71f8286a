"""Alertmanager API v2 (the wire format of Alertmanager 0.25): ``POST/GET /api/v2/alerts``,
``GET /api/v2/alerts/groups``, ``GET /api/v2/status``, ``GET /api/v2/receivers``.

Prometheus (``alerting: alertmanagers:`` with ``api_version: v2`` and an ``authorization:`` bearer token) and
``amtool`` talk to these as to an Alertmanager. Silences (``/api/v2/silences``) live in ``api/silences.py``.

Posting follows Alertmanager: a body that does not decode (bad JSON, wrong types, bad timestamps) is refused
whole; alerts that decode but are invalid (no labels, bad label names, ``endsAt`` before ``startsAt``) are
refused one by one while the valid ones of the same request are stored, and the answer is a 400 naming them.
A 400 of these endpoints is the OpenAPI spec's ``BadRequest``: the message as a JSON string (``amtool`` prints
it); authentication errors (401/403) and a database that cannot take the alerts (503) are fsincident's
``{"error", "detail"}``.
"""

from __future__ import annotations

import json
import platform
import re
import time
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any

import sqlalchemy as sa
import yaml
from aiohttp import web
from sqlmodel import col

from fsincident.api import CTX, TOKEN_NAME, ApiContext, ApiError, Handler, authorize, scope
from fsincident.core import MuteStatus, ensure_utc
from fsincident.ingest.service import IncomingAlert, IngestError
from fsincident.matchers import Matcher, MatcherError, parse_matcher_list
from fsincident.obs import get_logger
from fsincident.routing import tree
from fsincident.store.tables import Alert, Incident

log = get_logger("fsincident.api")

ORIGIN = "alertmanager"
AM_VERSION = "0.25.0"
"""The Alertmanager release whose API v2 this module speaks (``versionInfo.version`` of ``/api/v2/status``)."""
MAX_REFUSED_SHOWN = 20
TOKEN_TTL = 2.0
"""Seconds a token check of ``POST /api/v2/alerts`` is remembered (a revoked token is refused after at most this)."""
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The time forms Alertmanager's API accepts (go-openapi strfmt.DateTime): RFC 3339 with an optional fraction,
# the offset also as +hhmm; without an offset (UTC); to the minute with Z or nothing; "YYYY-MM-DD hh:mm:ss".
_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d)(?:T(\d\d:\d\d)(?::(\d\d)(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?|( \d\d:\d\d:\d\d)(\.\d+)?)"
)
GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
_BOOLS |= {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


class _Refused(Exception):
    """The whole body is refused (it does not decode as Alertmanager's postable alerts)."""


class BadRequest(Exception):
    """Alertmanager's ``BadRequest`` answer: a 400 whose body is the message as a JSON string (the OpenAPI spec's
    ``schema: {type: string}``; ``amtool`` prints it)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _am_errors(handler: Handler) -> Handler:
    """Turn a BadRequest raised by ``handler`` into Alertmanager's 400."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as e:
            return web.json_response(e.message, status=400)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


# ---------------------------------------------------------------------------------------------- decoding

_names: set[str] = set()
_times: dict[str, datetime] = {}


def _valid_name(name: str) -> bool:
    """Whether ``name`` is a valid label or annotation name (remembered: senders repeat the same few)."""
    if name in _names:
        return True
    if _NAME.fullmatch(name) is None:
        return False
    if len(_names) < 10_000:
        _names.add(name)
    return True


def parse_time(text: str) -> datetime:
    """An Alertmanager API timestamp as aware UTC; raises ValueError for a form Alertmanager refuses."""
    got = _times.get(text)
    if got is not None:
        return got
    m = _TIME.fullmatch(text)
    if m is None:
        raise ValueError(f"{text[:64]!r} is not an RFC 3339 date-time (e.g. 2026-01-02T15:04:05Z)")
    day, hm, sec, frac, zone, spaced, sfrac = m.groups()
    if spaced is not None:
        iso = day + "T" + spaced[1:] + (sfrac or "")[:7]
    elif hm is None:
        raise ValueError(f"{text[:64]!r} has no time of day")
    elif sec is None:
        if zone not in (None, "Z"):
            raise ValueError(f"{text[:64]!r} is not an RFC 3339 date-time")
        iso = f"{day}T{hm}" + (zone or "")
    else:
        iso = f"{day}T{hm}:{sec}" + (frac or "")[:7] + (zone or "")
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"{text[:64]!r} is out of range") from None
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    if len(_times) > 4096:
        _times.clear()
    _times[text] = dt
    return dt


def _bad_text(text: str) -> str:
    """Why Alertmanager or our databases cannot take ``text`` ('' when fine)."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return ""


def _strings(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Refused(f"{where}: must be an object of strings")
    for k, v in value.items():
        if type(v) is not str:
            raise _Refused(f"{where}.{k}: must be a string")
    return value


def _when(value: Any, where: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Refused(f"{where}: must be an RFC 3339 date-time string")
    try:
        dt = parse_time(value)
    except ValueError as e:
        raise _Refused(f"{where}: {e}") from None
    return None if dt == GO_ZERO_TIME else dt  # Go's zero time (amtool sends it) means "not given"


def _check(labels: dict[str, str], annotations: dict[str, str], starts: datetime, ends: datetime, careful: bool) -> str:
    """Alertmanager's ``Alert.Validate`` message for an alert with its effective times ('' when valid)."""
    if ends < starts:
        return "start time must be before end time"
    for k, v in labels.items():
        if not _valid_name(k):
            return f"invalid label set: invalid name {json.dumps(k)}"
        if careful and _bad_text(v):
            return f"invalid label set: invalid value {json.dumps(v, ensure_ascii=True)}"
    if not labels:
        return "at least one label pair required"
    for k, v in annotations.items():
        if not _valid_name(k):
            return f"invalid annotations: invalid name {json.dumps(k)}"
        if careful and _bad_text(v):
            return f"invalid annotations: invalid value {json.dumps(v, ensure_ascii=True)}"
    return ""


def parse_alerts(
    raw: bytes, now: datetime, resolve_timeout: timedelta
) -> tuple[list[IncomingAlert], list[tuple[int, str]]]:
    """The alerts of a ``POST /api/v2/alerts`` body and the (index, message) of each invalid one; raises
    BadRequest when the body does not decode as a whole."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"parsing alerts body failed: invalid UTF-8 at byte {e.start}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BadRequest(f"parsing alerts body failed: {e}") from None
    except RecursionError:
        raise BadRequest("parsing alerts body failed: nested too deeply") from None
    if not isinstance(data, list):
        raise BadRequest('parsing alerts body failed: the body must be a JSON array of alerts ([{"labels": {...}}])')
    careful = "\\u" in text  # escapes are the only way to a NUL or a lone surrogate in decoded JSON text
    default_end = now + resolve_timeout
    alerts: list[IncomingAlert] = []
    refused: list[tuple[int, str]] = []
    try:
        for i, item in enumerate(data):
            if type(item) is not dict:
                raise _Refused(f"[{i}]: must be an object")
            labels = item.get("labels")
            if labels is None:
                raise _Refused(f"[{i}].labels: is required")
            labels = _strings(labels, f"[{i}].labels")
            annotations = item.get("annotations")
            annotations = {} if annotations is None else _strings(annotations, f"[{i}].annotations")
            starts = _when(item.get("startsAt"), f"[{i}].startsAt")
            ends = _when(item.get("endsAt"), f"[{i}].endsAt")
            url = item.get("generatorURL")
            if url is None:
                url = ""
            elif not isinstance(url, str):
                raise _Refused(f"[{i}].generatorURL: must be a string")
            elif url and (_CONTROL.search(url) or _bad_text(url) or not (url[0] == "/" or _SCHEME.match(url))):
                raise _Refused(f"[{i}].generatorURL: must be a URI (absolute, or a path starting with /)")
            if "" in labels.values():  # Alertmanager drops labels with empty values
                labels = {k: v for k, v in labels.items() if v}
            eff_start = starts if starts is not None else (ends if ends is not None and ends < now else now)
            problem = _check(labels, annotations, eff_start, ends if ends is not None else default_end, careful)
            if problem:
                refused.append((i, problem))
                continue
            alerts.append(IncomingAlert(labels, annotations, starts, ends, url))
    except _Refused as e:
        raise BadRequest(f"parsing alerts body failed: {e}") from None
    return alerts, refused


# ---------------------------------------------------------------------------------------------- posting


def _ingest(ctx: ApiContext) -> Any:
    if ctx.ingest is None:
        raise ApiError(404, "the Alertmanager API is not available")
    return ctx.ingest


async def _authorize_ingest(request: web.Request, ctx: ApiContext) -> None:
    """The ``ingest`` scope check of every scoped endpoint, its answer kept for TOKEN_TTL seconds: senders post
    many small requests with the same token. Raises ApiError 401/403."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "missing bearer token", "send Authorization: Bearer TOKEN")
    cache: dict[str, tuple[float, str]] = ctx.extra.setdefault("ingest_tokens", {})
    now = time.monotonic()
    hit = cache.get(secret)
    if hit is not None and hit[0] > now:
        request[TOKEN_NAME] = hit[1]
        return
    await authorize(request, secret, "ingest")
    if len(cache) >= 256:
        cache.clear()
    cache[secret] = (now + TOKEN_TTL, request[TOKEN_NAME])


@_am_errors
async def post_alerts(request: web.Request) -> web.Response:
    """Store posted alerts (Alertmanager's ``postAlerts``, scope ingest): 200 with an empty body, 400 naming
    refused alerts (the valid ones are stored), 503 when the database cannot take them (retry)."""
    ctx = request.app[CTX]
    await _authorize_ingest(request, ctx)
    ingest = _ingest(ctx)
    raw = await request.read()
    now = ingest.clock.now()
    alerts, refused = parse_alerts(raw, now, ingest.resolve_timeout)
    if alerts:
        try:
            await ingest.post(alerts, ORIGIN, now)
        except IngestError as e:
            log.warning("alerts_not_stored", error=str(e), alerts=len(alerts))
            raise ApiError(503, "the alerts could not be stored; retry", str(e)) from None
    if refused:
        ingest.count(ORIGIN, "invalid", len(refused))
        log.info("alerts_refused", refused=len(refused), accepted=len(alerts), first=refused[0][1])
        raise BadRequest("; ".join(msg for _, msg in refused[:MAX_REFUSED_SHOWN]))
    return web.Response(status=200)


# ---------------------------------------------------------------------------------------------- reading


def am_time(dt: datetime) -> str:
    """Alertmanager's JSON form of a time: UTC, milliseconds, ``Z``."""
    if dt.tzinfo is not UTC:
        dt = ensure_utc(dt)  # type: ignore[assignment]
    return dt.isoformat(timespec="milliseconds")[:-6] + "Z"


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return True
    got = _BOOLS.get(raw)
    if got is None:
        raise BadRequest(f"{name} in query must be of type bool: {json.dumps(raw[:40])}")
    return got


def _filters(request: web.Request) -> tuple[tuple[Matcher, ...], Matcher | None]:
    """The ``filter`` matchers and the ``receiver`` regex of a request; raises BadRequest for bad ones."""
    matchers: list[Matcher] = []
    for text in request.query.getall("filter", []):
        try:
            matchers.extend(parse_matcher_list(text))
        except MatcherError as e:
            raise BadRequest(f"bad matcher format: {text[:200]}: {e}") from None
    receiver = request.query.get("receiver")
    rx = None
    if receiver:
        try:
            rx = Matcher.make("receiver", "=~", receiver)
        except MatcherError as e:
            raise BadRequest(f"failed to parse receiver param: {e}") from None
    return tuple(matchers), rx


class _Listed:
    """One alert on its way to the API: its data, where it routes, and whether it is muted."""

    __slots__ = ("alert", "labels", "processed", "routes", "status")

    def __init__(self, alert: dict[str, Any], labels: dict[str, str], processed: bool, routes: list[tree.Route]):
        self.alert, self.labels, self.processed, self.routes = alert, labels, processed, routes
        self.status: MuteStatus = MuteStatus()


async def _collect(request: web.Request, with_unprocessed: bool) -> list[_Listed]:
    """Every firing alert (ingested and rule alerts) passing the request's filters, sorted by fingerprint."""
    ctx = request.app[CTX]
    ingest = _ingest(ctx)
    active, silenced, inhibited = _flag(request, "active"), _flag(request, "silenced"), _flag(request, "inhibited")
    unprocessed = _flag(request, "unprocessed") if with_unprocessed else True
    matchers, receiver_rx = _filters(request)
    now = ingest.clock.now()
    root = ctx.routes() if ctx.routes is not None else tree.ROOT
    resolve_timeout = ingest.resolve_timeout
    try:
        ingested = await ingest.snapshot(now)
    except IngestError as e:
        raise ApiError(503, "cannot read alerts right now; retry", str(e)) from None
    async with ctx.store.read() as s:
        opened = (
            sa.select(Alert.fingerprint)
            .join(Incident, col(Incident.id) == col(Alert.incident_id))
            .where(Alert.state == "firing", col(Incident.open_key).is_not(None))
        )
        processed = {row[0] for row in (await s.exec(opened.distinct())).all()}  # type: ignore[call-overload]
        rule_rows = (
            await s.exec(
                sa.select(Alert.fingerprint, Alert.labels, Alert.annotations, Alert.starts_at, Alert.updated_at)  # type: ignore[call-overload]
                .join(Incident, col(Incident.id) == col(Alert.incident_id))
                .where(
                    Alert.state == "firing", col(Incident.open_key).is_not(None), col(Alert.origin).startswith("rule:")
                )
            )
        ).all()
    listed: dict[str, _Listed] = {}
    default_end = am_time(now + resolve_timeout)
    for fp, labels, notes, starts, updated in rule_rows:
        if fp in listed:
            continue
        listed[fp] = _Listed(
            {
                "annotations": notes,
                "endsAt": default_end,  # a rule alert ends when its rule says so: shown as one refreshed now
                "fingerprint": fp,
                "receivers": [],
                "startsAt": am_time(starts),
                "status": None,
                "updatedAt": am_time(updated),
                "labels": labels,
            },
            labels,
            True,
            [],
        )
    for a in ingested:
        d: dict[str, Any] = {
            "annotations": a.annotations,
            "endsAt": am_time(a.ends_at),
            "fingerprint": a.fingerprint,
            "receivers": [],
            "startsAt": am_time(a.starts_at),
            "status": None,
            "updatedAt": am_time(a.updated_at),
        }
        if a.generator_url:
            d["generatorURL"] = a.generator_url
        d["labels"] = a.labels
        listed[a.fingerprint] = _Listed(d, a.labels, a.fingerprint in processed, [])
    out = []
    for item in listed.values():
        labels = item.labels
        if matchers and not all(m.matches(labels.get(m.name, "")) for m in matchers):
            continue
        item.routes = tree.select(root, labels)
        if receiver_rx is not None and not any(receiver_rx.matches(r.receiver) for r in item.routes):
            continue
        out.append(item)
    muter = ctx.silences
    if muter is not None and out:
        statuses = await muter.status([i.labels for i in out], now)
        for item, st in zip(out, statuses, strict=True):
            item.status = st
    kept = []
    for item in out:
        st = item.status
        muted = bool(st.silenced_by or st.inhibited_by)
        state = "suppressed" if muted else ("active" if item.processed else "unprocessed")
        if (
            (not active and state == "active")
            or (not unprocessed and state == "unprocessed")
            or (not silenced and st.silenced_by)
            or (not inhibited and st.inhibited_by)
        ):
            continue
        item.alert["receivers"] = [{"name": r.receiver} for r in item.routes]
        item.alert["status"] = {
            "inhibitedBy": list(st.inhibited_by),
            "silencedBy": list(st.silenced_by),
            "state": state,
        }
        kept.append(item)
    kept.sort(key=lambda i: i.alert["fingerprint"])
    return kept


def _json(data: Any) -> web.Response:
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), content_type="application/json")


@scope("read")
@_am_errors
async def get_alerts(request: web.Request) -> web.Response:
    """Alertmanager's ``getAlerts``: firing alerts with receivers and status; 400 for bad parameters."""
    return _json([i.alert for i in await _collect(request, with_unprocessed=True)])


@scope("read")
@_am_errors
async def get_alert_groups(request: web.Request) -> web.Response:
    """Alertmanager's ``getAlertGroups``: the firing alerts by route and group labels; 400 for bad parameters."""
    _, receiver_rx = _filters(request)
    groups: dict[str, dict[str, Any]] = {}
    for item in await _collect(request, with_unprocessed=False):
        for r in item.routes:
            if receiver_rx is not None and not receiver_rx.matches(r.receiver):
                continue
            key = tree.group_key(r, item.labels)
            g = groups.get(key)
            if g is None:
                g = groups[key] = {
                    "alerts": [],
                    "labels": tree.group_labels(r, item.labels),
                    "receiver": {"name": r.receiver},
                }
            g["alerts"].append(item.alert)
    out = sorted(groups.values(), key=lambda g: (g["receiver"]["name"], sorted(g["labels"].items())))
    return _json(out)


@scope("read")
async def get_receivers(request: web.Request) -> web.Response:
    """Alertmanager's ``getReceivers``: the receiver names of the route tree; never fails."""
    ctx = request.app[CTX]
    root = ctx.routes() if ctx.routes is not None else tree.ROOT
    return _json([{"name": n} for n in tree.receivers(root)])


# ---------------------------------------------------------------------------------------------- status


def am_duration(td: timedelta) -> str:
    """A duration as Alertmanager writes one (``1h30m``, ``10s``, ``0s``, ``1500ms`` → ``1s500ms``)."""
    ms = td // timedelta(milliseconds=1)
    if ms <= 0:
        return "0s"
    out = []
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    if ms:
        out.append(f"{ms}ms")
    return "".join(out)


def _route_yaml(opts: Any, node: tree.Route, root: bool = False) -> dict[str, Any]:
    """One route of the tree in Alertmanager's YAML keys (what fsincident adds, such as ``notify``, is left out:
    its ``receiver`` names where the route sends)."""
    out: dict[str, Any] = {"receiver": node.receiver}
    if not root:
        if opts.match:
            out["match"] = dict(opts.match)
        if opts.match_re:
            out["match_re"] = dict(opts.match_re)
        ms = [str(m) for text in opts.matchers for m in parse_matcher_list(text)]
        if ms:
            out["matchers"] = ms
    if root or opts.group_by is not None:
        out["group_by"] = list(node.group_by) if node.group_by is not None else ["..."]
    for key in ("group_wait", "group_interval", "repeat_interval"):
        value = getattr(node, key)
        if value is not None and (root or getattr(opts, key) is not None):
            out[key] = am_duration(value)
    if not root:
        if opts.continue_:
            out["continue"] = True
        if opts.mute_time_intervals:
            out["mute_time_intervals"] = list(opts.mute_time_intervals)
        if opts.active_time_intervals:
            out["active_time_intervals"] = list(opts.active_time_intervals)
    if not root and opts.routes:
        out["routes"] = [_route_yaml(o, n) for o, n in zip(opts.routes, node.children, strict=True)]
    return out


def config_yaml(config: Any, root: tree.Route) -> str:
    """The running routing config as an Alertmanager configuration file (``amtool config routes`` reads it)."""
    top = _route_yaml(None, root, root=True)
    if config is not None and config.routes:
        top["routes"] = [_route_yaml(o, n) for o, n in zip(config.routes, root.children, strict=True)]
    doc: dict[str, Any] = {}
    if config is not None:
        doc["global"] = {"resolve_timeout": am_duration(config.alertmanager.resolve_timeout)}
    doc["route"] = top
    doc["receivers"] = [{"name": n} for n in tree.receivers(root)]
    if config is not None and config.inhibit_rules:
        rules = []
        for r in config.inhibit_rules:
            rule: dict[str, Any] = {}
            for key in ("source_match", "target_match"):
                if getattr(r, key):
                    rule[key] = dict(getattr(r, key))
            for key in ("source_matchers", "target_matchers", "equal"):
                if getattr(r, key):
                    rule[key] = list(getattr(r, key))
            rules.append(rule)
        doc["inhibit_rules"] = rules
    if config is not None and config.time_intervals:
        doc["time_intervals"] = [
            {
                "name": ti.name,
                "time_intervals": [spec.model_dump(mode="json", exclude_none=True) for spec in ti.time_intervals],
            }
            for ti in config.time_intervals
        ]
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _version() -> str:
    try:
        return metadata.version("fsincident")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree without install
        return "unknown"


@scope("read")
async def get_status(request: web.Request) -> web.Response:
    """Alertmanager's ``getStatus``: cluster (disabled), version, the routing config as YAML, start time."""
    ctx = request.app[CTX]
    config = ctx.config() if ctx.config is not None else None
    # The tree of exactly this config (the running tree may already belong to a reload in progress).
    root = tree.build(config.routes) if config is not None else tree.ROOT
    started = datetime.fromtimestamp(ctx.started_at, UTC) if ctx.started_at else datetime.now(UTC)
    return _json(
        {
            "cluster": {"peers": [], "status": "disabled"},
            "config": {"original": config_yaml(config, root)},
            "uptime": am_time(started),
            # ``version`` is the Alertmanager API this implements (amtool warns when it differs from its own);
            # fsincident's own version is the ``revision``.
            "versionInfo": {
                "branch": "fsincident",
                "buildDate": "",
                "buildUser": "fsincident",
                "goVersion": f"python{platform.python_version()}",
                "revision": f"fsincident-{_version()}",
                "version": AM_VERSION,
            },
        }
    )


def add_routes(app: web.Application) -> None:
    """Register the Alertmanager API v2 endpoints (silences excepted) on ``app``."""
    r = app.router
    r.add_post("/api/v2/alerts", post_alerts)
    r.add_get("/api/v2/alerts", get_alerts)
    r.add_get("/api/v2/alerts/groups", get_alert_groups)
    r.add_get("/api/v2/status", get_status)
    r.add_get("/api/v2/receivers", get_receivers)
