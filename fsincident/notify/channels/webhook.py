"""``type: webhook`` — POST each notification as JSON: Alertmanager's webhook payload (version 4) or our own.

``format: alertmanager`` sends exactly what Alertmanager 0.25 sends to a ``webhook_configs`` receiver, so
receivers written for Alertmanager keep working: one POST per notification of an alert group, its alerts
sorted as Alertmanager sorts them (``job``, then ``instance``, then the label set), firing alerts with the
zero ``endsAt``, ``truncatedAlerts`` when ``max_alerts`` cuts the list. ``format: json`` sends the incident
as the API shows it, with its alerts and the rendered title and body.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
from pydantic import AnyHttpUrl, Field, field_validator

from fsincident.core import NotifyError
from fsincident.obs import get_logger
from fsincident.plugins import ChannelOptions, Duration, Message

log = get_logger("fsincident.notify.webhook")

ZERO_TIME = "0001-01-01T00:00:00Z"
"""Go's zero ``time.Time``: Alertmanager's ``endsAt`` of a firing alert in a webhook payload."""
# A refusal a retry cannot fix; 408, 425 and 429 are worth another try.
_RETRYABLE_4XX = {408, 425, 429}
# Header names whose values are credentials (redacted in logs and errors), as for the HTTP source kinds.
_SENSITIVE_HEADER_PARTS = ("auth", "token", "key", "secret", "cookie", "session", "password")
_RESERVED_HEADERS = {"content-type", "content-length", "host", "transfer-encoding"}
_ERROR_BODY = 200  # characters of a refusing peer's body quoted in the error


def _user_agent() -> str:
    try:
        return f"fsincident/{version('fsincident')}"
    except PackageNotFoundError:
        return "fsincident"


USER_AGENT = _user_agent()


class WebhookOptions(ChannelOptions):
    """A channel that POSTs JSON to ``url``: Alertmanager's webhook payload or fsincident's incident JSON."""

    url: AnyHttpUrl
    format: Literal["alertmanager", "json"] = "alertmanager"
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers; values of credential-like names (``Authorization``, ``X-Api-Key``...) are secrets."""
    timeout: Duration | None = None
    """Per request; default (and upper bound) the ``delivery.timeout``."""
    max_alerts: int = Field(0, ge=0)
    """Alerts per payload, 0 = all; the rest are counted in ``truncatedAlerts`` (Alertmanager's ``max_alerts``)."""
    send_resolved: bool = True
    """Also notify about resolved alerts (Alertmanager's ``send_resolved``)."""

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not name or any(c in name for c in " :\r\n\t") or not name.isascii():
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by fsincident")
            if any(c in value for c in "\r\n\x00"):
                raise ValueError(f"header {name!r}: the value contains a line break or NUL")
        return v


# ---------------------------------------------------------------------- payloads (pure)


def go_time(value: str | datetime | None) -> str:
    """An ISO 8601 time as Go's RFC 3339 (nano) text — UTC ``Z``, fraction without trailing zeros — or the zero
    time for None; raises ValueError for text that is not ISO 8601."""
    if value is None or value == "":
        return ZERO_TIME
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    return text + "Z"


def _sort_key(labels: Mapping[str, str]) -> tuple[Any, ...]:
    # Alertmanager's AlertSlice order: alerts with a job label first, by job; then by instance likewise;
    # then by the sorted label set.
    key: list[Any] = []
    for name in ("job", "instance"):
        key.append((0, labels[name]) if name in labels else (1, ""))
    key.append(sorted(labels.items()))
    return tuple(key)


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The pairs every mapping of ``maps`` shares ({} for none)."""
    if not maps:
        return {}
    out = dict(maps[0])
    for m in maps[1:]:
        out = {k: v for k, v in out.items() if m.get(k) == v}
    return out


def alertmanager_payload(
    data: Mapping[str, Any],
    *,
    max_alerts: int = 0,
    send_resolved: bool = True,
    external_url: str = "",
    resolved: bool = False,
) -> dict[str, Any] | None:
    """The Alertmanager version-4 webhook body for a page's structured ``data`` (``Message.data``), or None when
    nothing is left to send (only resolved alerts and ``send_resolved`` off); ``resolved`` (the incident was
    resolved, maybe by hand while alerts still fired) reports every alert resolved. Raises ValueError for bad
    times."""
    alerts = [dict(a) for a in data.get("alerts") or ()]
    if resolved:
        incident = data.get("incident") or {}
        end = incident.get("resolved_at") or datetime.now(UTC).isoformat()
        alerts = [a if a.get("state") == "resolved" else {**a, "state": "resolved", "ends_at": end} for a in alerts]
    if not send_resolved:
        alerts = [a for a in alerts if a.get("state") != "resolved"]
        if not alerts:
            return None
    alerts.sort(key=lambda a: _sort_key(a.get("labels") or {}))
    truncated = 0
    if max_alerts and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    listed = []
    for a in alerts:
        resolved = a.get("state") == "resolved"
        listed.append(
            {
                "status": "resolved" if resolved else "firing",
                "labels": dict(a.get("labels") or {}),
                "annotations": dict(a.get("annotations") or {}),
                "startsAt": go_time(a.get("starts_at")),
                "endsAt": go_time(a.get("ends_at")) if resolved else ZERO_TIME,
                "generatorURL": a.get("generator_url") or "",
                "fingerprint": str(a.get("fingerprint") or ""),
            }
        )
    firing = any(a["status"] == "firing" for a in listed)
    url = str(data.get("external_url") or external_url or "").rstrip("/")
    # Key order as Alertmanager 0.25 writes it (receivers comparing raw bodies see the same text shape).
    return {
        "receiver": str(data.get("receiver") or ""),
        "status": "firing" if firing or not listed else "resolved",
        "alerts": listed,
        "groupLabels": dict(data.get("group_labels") or {}),
        "commonLabels": _common([a["labels"] for a in listed]),
        "commonAnnotations": _common([a["annotations"] for a in listed]),
        "externalURL": url,
        "version": "4",
        "groupKey": str(data.get("group_key") or ""),
        "truncatedAlerts": truncated,
    }


def json_payload(message: Message, *, max_alerts: int = 0, send_resolved: bool = True) -> dict[str, Any] | None:
    """fsincident's own webhook body (``format: json``): the notification kind, rendered title and body, and the
    incident with its alerts; None when ``send_resolved`` is off and this is a resolve notice."""
    if not send_resolved and message.kind == "resolve":
        return None
    data = dict(message.data or {})
    if message.kind in ("report", "handoff_summary"):  # a scheduled report or shift summary, charts included
        return {
            "version": "1",
            "kind": message.kind,
            "title": message.title,
            "body": message.body,
            "severity": message.severity,
            "report": data.get("report"),
            "summary": data.get("summary"),
            "name": data.get("name"),
            "attachments": [
                {"name": f.name, "mimetype": f.mimetype, "content_base64": base64.b64encode(f.content).decode("ascii")}
                for f in message.attachments
            ],
        }
    alerts = [dict(a) for a in data.get("alerts") or ()]
    if not send_resolved:
        alerts = [a for a in alerts if a.get("state") != "resolved"]
    truncated = 0
    if max_alerts and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    return {
        "version": "1",
        "kind": message.kind,
        "title": message.title,
        "body": message.body,
        "severity": message.severity,
        "reason": data.get("reason") or message.kind,
        "receiver": data.get("receiver"),
        "group_key": data.get("group_key"),
        "group_labels": data.get("group_labels") or {},
        "incident": data.get("incident"),
        "alerts": alerts,
        "truncated_alerts": truncated,
        "external_url": data.get("external_url"),
    }


# ---------------------------------------------------------------------- the channel kind


def _display(url: str) -> str:
    """``url`` shown without credentials, path or query (a webhook's path is often its secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    hidden = "/***" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{netloc}{hidden}"


class WebhookNotifier:
    """POSTs JSON to one URL: 2xx is success; 5xx, 408/425/429 and network errors are retried; the rest permanent."""

    Options: ClassVar[type[ChannelOptions]] = WebhookOptions

    def __init__(self, options: WebhookOptions, **_: Any):
        self.options = options
        url = str(options.url)
        parts = urlsplit(url)
        self._auth: str | None = None
        if parts.username is not None or parts.password is not None:
            creds = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(creds.encode()).decode()
            host = parts.hostname or ""
            netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port is not None else "")
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        self._url = url

    @staticmethod
    def validate_options(options: WebhookOptions) -> list[tuple[tuple[Any, ...], str]]:
        out: list[tuple[tuple[Any, ...], str]] = []
        if options.timeout is not None and options.timeout <= timedelta(0):
            out.append((("timeout",), "timeout must be positive"))
        return out

    def destinations(self) -> list[str]:
        return [_display(str(self.options.url))]

    def secrets(self) -> list[str]:
        """The URL (its path and query are often the credential), its password, and credential header values."""
        url = str(self.options.url)
        out = {url, self._url}
        parts = urlsplit(url)
        if parts.password:
            out.update({parts.password, unquote(parts.password)})
        if self._auth:
            out.update({self._auth, self._auth.partition(" ")[2]})
        for seg in parts.path.split("/") + [v for q in parts.query.split("&") for v in q.split("=")[1:]]:
            seg = unquote(seg)
            if len(seg) >= 12 and "." not in seg:
                out.add(seg)  # long path or query tokens (e.g. /hooks/T000/B000/XXXXXXXX): keys, not names
        for name, value in self.options.headers.items():
            if any(p in name.lower() for p in _SENSITIVE_HEADER_PARTS):
                out.add(value)
                scheme, _, rest = value.partition(" ")
                if rest and scheme.isalpha():
                    out.add(rest.strip())
        return sorted((s for s in out if s), key=len, reverse=True)

    def payload(self, message: Message) -> dict[str, Any] | None:
        """The JSON body for ``message``, or None when there is nothing to send; raises NotifyError(permanent) when
        the message cannot be expressed in the channel's format."""
        o = self.options
        if o.format == "json":
            return json_payload(message, max_alerts=o.max_alerts, send_resolved=o.send_resolved)
        if message.kind in ("acknowledge", "report", "handoff_summary"):
            return None  # Alertmanager has no acknowledgement nor report: its receivers never get one
        if not message.data or not message.data.get("alerts"):
            raise NotifyError(
                "format alertmanager carries only incident pages with their alerts; "
                f"this {message.kind} message has none",
                permanent=True,
            )
        try:
            return alertmanager_payload(
                message.data,
                max_alerts=o.max_alerts,
                send_resolved=o.send_resolved,
                resolved=message.kind == "resolve",
            )
        except (TypeError, ValueError) as e:
            raise NotifyError(f"cannot build the alertmanager payload: {e}", permanent=True) from None

    async def send(self, index: int, message: Message, timeout: float) -> None:
        if index != 0:
            raise NotifyError(f"channel {self.options.name!r} has no destination #{index}", permanent=True)
        body = self.payload(message)
        if body is None:
            log.debug("webhook_skipped", channel=self.options.name, kind=message.kind, format=self.options.format)
            return
        if self.options.timeout is not None:
            timeout = min(timeout, self.options.timeout.total_seconds())
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **self.options.headers}
        if self._auth and not any(k.lower() == "authorization" for k in self.options.headers):
            headers["Authorization"] = self._auth
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
                session.post(self._url, data=data, headers=headers) as resp,
            ):
                status = resp.status
                raw = b"" if 200 <= status < 300 else await resp.content.read(_ERROR_BODY * 4)
                text = raw.decode(errors="replace")
        except TimeoutError:
            raise NotifyError(f"timed out after {timeout:g}s", permanent=False) from None
        except aiohttp.ClientError as e:
            raise NotifyError(f"{type(e).__name__}: {e}", permanent=False) from None
        except (OSError, asyncio.IncompleteReadError) as e:
            raise NotifyError(f"connection error: {e}", permanent=False) from None
        if 200 <= status < 300:
            return
        # Like Alertmanager: 5xx (and 408/425/429) may pass, any other answer will not.
        permanent = not (status >= 500 or status in _RETRYABLE_4XX)
        excerpt = " ".join(text.split())[:_ERROR_BODY]
        raise NotifyError(f"HTTP {status}" + (f": {excerpt}" if excerpt else ""), permanent=permanent)
