"""PagerDuty Events API v2: ``POST /v2/enqueue`` — anything that can page PagerDuty can page fsincident.

The wire format is PagerDuty's: the ``routing_key`` in the body is the credential (no bearer token), a valid
event is answered ``202 {"status": "success", "message": "Event processed", "dedup_key": ...}`` and an invalid one
``400 {"status": "invalid event", "message": "Event object is invalid", "errors": [...]}`` listing every problem.
A routing key is one of the configured ``integrations`` (``type: pagerduty``); an unknown key is refused with
PagerDuty's ``Invalid routing key``.

Each ``dedup_key`` of an integration is one alert while it is open (origin ``pagerduty:NAME``):

* ``trigger`` opens it (labels from the event and the integration, see ``event_labels``) or, when it is open
  already, refreshes its annotations — like PagerDuty, a repeated trigger adds to the open alert instead of
  opening another one, even when its severity or source differ. PagerDuty alerts do not expire by themselves.
* ``acknowledge`` acknowledges every triggered incident in which the open alert fires.
* ``resolve`` resolves the alert (its incident resolves when all its alerts have).

``acknowledge`` and ``resolve`` for a key with no open alert are accepted and dropped, as PagerDuty does.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlmodel import col, select

from fsincident.api import CTX
from fsincident.core import storable_text, valid_label_name
from fsincident.ingest.service import NEVER, IncomingAlert, IngestError
from fsincident.obs import get_logger
from fsincident.store.tables import AlertTransition, IngestedAlert

log = get_logger("fsincident.api.pagerduty")

MAX_BODY = 512 * 1024
"""PagerDuty's documented size limit of an event."""
MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
MAX_FIELD = 4096  # source, component, group, class, client, client_url: label values stay readable
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = {"critical": "critical", "error": "critical", "warning": "warning", "info": "info"}
"""PagerDuty's severities and the fsincident severity label each becomes."""
ACK_WAIT = 5.0
"""Seconds an ``acknowledge`` waits for the incidents stage to take in a trigger it follows closely."""


class KeyLocks:
    """One asyncio lock per (integration, dedup_key) while in use: a trigger and its follow-ups for the same key
    run one after the other, events for different keys run side by side."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


PD_LOCKS = web.AppKey("pagerduty_locks", KeyLocks)

_INVALID = {"status": "invalid event", "message": "Event object is invalid"}
_UNRECOGNIZED = {"status": "Unrecognized object", "message": "Event object format is unrecognized"}


class Invalid(ValueError):
    """An event PagerDuty would refuse; ``errors`` are its messages, ``body`` the 400 answer's shape."""

    def __init__(self, errors: list[str], shape: dict[str, str] | None = None):
        super().__init__("; ".join(errors))
        self.errors = errors
        self.shape = shape or _INVALID


def _answer(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


def _invalid(e: Invalid) -> web.Response:
    return _answer(400, {**e.shape, "errors": e.errors})


# ---------------------------------------------------------------------- validation (pure)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_event(raw: bytes) -> dict[str, Any]:
    """The event object of a request body; raises Invalid (PagerDuty's "Unrecognized object") when the body is
    not a JSON object."""
    if len(raw) > MAX_BODY:
        raise Invalid([f"Event object is larger than {MAX_BODY // 1024} KB"])
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Invalid(["JSON parse error"], _UNRECOGNIZED) from None
    if not isinstance(data, dict):
        raise Invalid(["Event object must be a JSON object"], _UNRECOGNIZED)
    return data


def _dumps(v: Any) -> str:
    """Compact JSON text of event data, keys sorted (annotations compare equal for equal events)."""
    return json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _text(errors: list[str], where: str, v: Any, limit: int = MAX_FIELD, required: bool = False) -> str | None:
    """A string field: None when absent; appends PagerDuty-style messages to ``errors`` when it is wrong."""
    if _blank(v):
        if required:
            errors.append(f"'{where}' is missing or blank")
        return None
    if not isinstance(v, str):
        errors.append(f"'{where}' must be a string")
        return None
    if not storable_text(v):
        errors.append(f"'{where}' contains a NUL character or an unpaired surrogate")
        return None
    if len(v) > limit:
        errors.append(f"'{where}' is too long (maximum is {limit} characters)")
        return None
    return v


def _timestamp(errors: list[str], v: Any) -> datetime | None:
    if _blank(v):
        return None
    if not isinstance(v, str):
        errors.append("'payload.timestamp' is invalid (must be an ISO 8601 timestamp)")
        return None
    try:
        dt = datetime.fromisoformat(v.strip())
    except ValueError:
        errors.append("'payload.timestamp' is invalid (must be an ISO 8601 timestamp)")
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:
        errors.append("'payload.timestamp' is out of range")
        return None


def _contexts(errors: list[str], name: str, v: Any, required: str) -> list[dict[str, Any]]:
    """``links`` / ``images``: a list of objects, each with its ``required`` URL field."""
    if v is None:
        return []
    if not isinstance(v, list):
        errors.append(f"'{name}' must be an array")
        return []
    out = []
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            errors.append(f"'{name}[{i}]' must be an object")
            continue
        _text(errors, f"{name}[{i}].{required}", item.get(required), required=True)
        for k, x in item.items():
            if k != required and x is not None:
                _text(errors, f"{name}[{i}].{k}", x)
        out.append(item)
    return out


class Event:
    """A validated Events v2 event: ``action``, ``routing_key``, ``dedup_key`` (None: a trigger that wants one
    generated) and, for a trigger, the payload fields."""

    __slots__ = (
        "action",
        "client",
        "client_url",
        "custom_details",
        "dedup_key",
        "fields",
        "images",
        "links",
        "routing_key",
        "severity",
        "summary",
        "timestamp",
    )

    def __init__(self, data: dict[str, Any]):
        """Check ``data`` as PagerDuty does; raises Invalid listing every problem found."""
        errors: list[str] = []
        key = data.get("routing_key")
        if _blank(key):
            errors.append("'routing_key' cannot be blank")
        elif not isinstance(key, str):
            errors.append("'routing_key' must be a string")
        elif not storable_text(key):
            errors.append("'routing_key' is invalid")
            key = ""
        self.routing_key: str = key if isinstance(key, str) else ""
        action = data.get("event_action")
        if _blank(action):
            errors.append("'event_action' is missing or blank")
        elif action not in ACTIONS:
            errors.append(
                "'event_action' is invalid (must be one of the following: 'trigger', 'acknowledge' or 'resolve')"
            )
        self.action: str = action if action in ACTIONS else ""
        self.dedup_key = _text(
            errors, "dedup_key", data.get("dedup_key"), MAX_DEDUP_KEY, required=action in ("acknowledge", "resolve")
        )
        self.fields: dict[str, str] = {}
        self.summary = self.severity = self.client = self.client_url = None
        self.timestamp: datetime | None = None
        self.custom_details: str | None = None
        self.links: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        if action == "trigger":
            payload = data.get("payload")
            if payload is None:
                errors.append("'payload' is missing or blank")
            elif not isinstance(payload, dict):
                errors.append("'payload' must be an object")
            else:
                self.summary = _text(errors, "payload.summary", payload.get("summary"), MAX_SUMMARY, required=True)
                severity = payload.get("severity")
                if _blank(severity):
                    errors.append("'payload.severity' is missing or blank")
                elif not isinstance(severity, str) or severity not in SEVERITIES:
                    errors.append(
                        "'payload.severity' is invalid (must be one of the following: "
                        "'critical', 'warning', 'error' or 'info')"
                    )
                else:
                    self.severity = severity
                for name in ("source", "component", "group", "class"):
                    v = _text(errors, f"payload.{name}", payload.get(name), required=name == "source")
                    if v is not None:
                        self.fields[name] = v.strip()
                self.timestamp = _timestamp(errors, payload.get("timestamp"))
                cd = payload.get("custom_details")
                if cd is not None:
                    self.custom_details = cd if isinstance(cd, str) else _dumps(cd)
                    if not storable_text(self.custom_details):
                        errors.append("'payload.custom_details' contains a NUL character or an unpaired surrogate")
            self.links = _contexts(errors, "links", data.get("links"), "href")
            self.images = _contexts(errors, "images", data.get("images"), "src")
            for name, items in (("links", self.links), ("images", self.images)):
                if items and not storable_text(_dumps(items)):
                    errors.append(f"'{name}' contains a NUL character or an unpaired surrogate")
            self.client = _text(errors, "client", data.get("client"))
            self.client_url = _text(errors, "client_url", data.get("client_url"))
        if errors:
            raise Invalid(errors)


def event_labels(event: Event, integration: str, extra: dict[str, str], dedup_key: str) -> dict[str, str]:
    """The labels of a triggered alert: ``alertname`` (the payload's ``class``, else the integration's name),
    ``severity`` (critical/error -> critical, warning, info), ``source``, ``component``, ``group``, ``class``
    (when given), ``dedup_key`` and ``integration``; the integration's configured ``labels`` win on conflicts."""
    labels = {
        "alertname": event.fields.get("class") or integration,
        "severity": SEVERITIES[event.severity or "critical"],
        **event.fields,
        "dedup_key": dedup_key,
        "integration": integration,
    }
    labels.update(extra)
    return {k: v for k, v in labels.items() if v != "" and valid_label_name(k)}


def event_annotations(event: Event) -> dict[str, str]:
    """The annotations of a triggered alert: ``summary``, ``pagerduty_severity``, ``custom_details`` (JSON text unless
    a string), ``links`` and ``images`` (JSON), ``client`` and ``client_url`` — each when given."""
    out: dict[str, str] = {"summary": event.summary or ""}
    if event.severity:
        out["pagerduty_severity"] = event.severity
    if event.custom_details is not None:
        out["custom_details"] = event.custom_details
    if event.links:
        out["links"] = _dumps(event.links)
    if event.images:
        out["images"] = _dumps(event.images)
    if event.client:
        out["client"] = event.client
    if event.client_url:
        out["client_url"] = event.client_url
    return {k: v for k, v in out.items() if v}


# ---------------------------------------------------------------------- the endpoint


async def _read(request: web.Request) -> bytes:
    """The body, at most MAX_BODY + 1 bytes of it (more is refused without reading it all)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Invalid([f"Event object is larger than {MAX_BODY // 1024} KB"])
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY:
        chunk = await request.content.read(MAX_BODY + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def _open_alerts(request: web.Request, origin: str, dedup_key: str) -> list[tuple[str, dict[str, str]]]:
    """(fingerprint, labels) of the firing alerts of ``origin`` with ``dedup_key`` (one, unless labels were
    changed by a config reload); reads the shared database, so any replica sees the same."""
    store = request.app[CTX].store
    q = select(IngestedAlert.fingerprint, IngestedAlert.labels).where(
        col(IngestedAlert.origin) == origin,
        col(IngestedAlert.state) == "firing",
        col(IngestedAlert.labels)["dedup_key"].as_string() == dedup_key,
    )
    async with store.session() as s:
        return [(fp, dict(labels)) for fp, labels in (await s.exec(q)).all()]


async def _ack(request: web.Request, fps: list[str], by: str, note: str) -> list[int]:
    """Acknowledge the incidents of ``fps``; when the incidents stage has not yet taken in their trigger (an
    acknowledge right after it), wait for it up to ACK_WAIT seconds."""
    ctx = request.app[CTX]
    done = await ctx.incidents.ack_alerts(fps, by=by, note=note)
    deadline = time.monotonic() + ACK_WAIT
    while not done and time.monotonic() < deadline:
        async with ctx.store.read() as s:
            pending = (
                await s.exec(
                    select(sa.func.count())
                    .select_from(AlertTransition)
                    .where(col(AlertTransition.fingerprint).in_(fps), col(AlertTransition.processed_at).is_(None))
                )
            ).one()
        if not pending:
            break
        await asyncio.sleep(0.02)
        done = await ctx.incidents.ack_alerts(fps, by=by, note=note)
    return done


async def enqueue(request: web.Request) -> web.Response:
    """``POST /v2/enqueue``: accept one Events v2 event (202) or refuse it as PagerDuty does (400)."""
    ctx = request.app[CTX]
    try:
        event = Event(parse_event(await _read(request)))
    except Invalid as e:
        if ctx.ingest is not None:
            ctx.ingest.count("pagerduty", "invalid")
        return _invalid(e)
    config = ctx.config() if ctx.config is not None else None
    integration = next(
        (
            i
            for i in (getattr(config, "integrations", None) or ())
            if i.type == "pagerduty" and hmac.compare_digest(i.routing_key.encode(), event.routing_key.encode())
        ),
        None,
    )
    if integration is None:
        if ctx.ingest is not None:
            ctx.ingest.count("pagerduty", "invalid")
        log.info("pagerduty_invalid_routing_key", action=event.action)
        return _invalid(Invalid(["Invalid routing key"]))
    if ctx.ingest is None:
        return _answer(503, {"status": "unavailable", "message": "Alert ingestion is not running", "errors": []})
    origin = f"pagerduty:{integration.name}"
    now = ctx.ingest.clock.now()
    dedup_key = event.dedup_key or uuid.uuid4().hex
    try:
        async with request.app[PD_LOCKS].hold((origin, dedup_key)):
            open_alerts = await _open_alerts(request, origin, dedup_key)
            if event.action == "trigger":
                labels = (
                    open_alerts[0][1]
                    if open_alerts
                    else event_labels(event, integration.name, dict(integration.labels), dedup_key)
                )
                starts = min(event.timestamp, now) if event.timestamp is not None else None
                alert = IncomingAlert(labels, event_annotations(event), starts, NEVER, event.client_url or "")
                await ctx.ingest.post([alert], origin, now)
            elif event.action == "resolve":
                if open_alerts:
                    await ctx.ingest.resolve([fp for fp, _ in open_alerts], origin, now)
        if event.action == "acknowledge" and open_alerts:
            await _ack(
                request,
                [fp for fp, _ in open_alerts],
                origin,
                f"acknowledged through the PagerDuty Events API (dedup_key {dedup_key})",
            )
    except (IngestError, sa.exc.SQLAlchemyError) as e:
        log.warning(
            "pagerduty_event_not_stored",
            integration=integration.name,
            error=str(e) if isinstance(e, IngestError) else type(e).__name__,
        )
        return _answer(503, {"status": "unavailable", "message": "Event not stored, retry later", "errors": []})
    log.info(
        "pagerduty_event",
        integration=integration.name,
        action=event.action,
        dedup_key=dedup_key,
        known=bool(open_alerts),
    )
    return _answer(202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key})


def add_routes(app: web.Application) -> None:
    """Register ``POST /v2/enqueue`` (and ``/v2/enqueue/``) on ``app``."""
    app[PD_LOCKS] = KeyLocks()
    app.router.add_post("/v2/enqueue", enqueue)
    app.router.add_post("/v2/enqueue/", enqueue)
