"""``type: apprise`` (the default channel kind) — one destination per apprise URL."""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import apprise
from pydantic import Field

from fsincident.appriseurl import check_apprise_url, instantiate, redact, scheme_of, secret_parts
from fsincident.core import NotifyError
from fsincident.plugins import ChannelOptions, Message

_HTTP_ERROR = re.compile(r"error=(\d{3})")
_NOTIFY_TYPE = {
    "trigger": apprise.NotifyType.FAILURE,
    "acknowledge": apprise.NotifyType.WARNING,
    "resolve": apprise.NotifyType.SUCCESS,
}
# A refusal a retry cannot fix; 408, 425 and 429 are worth another try.
_RETRYABLE_4XX = {408, 425, 429}
# Services that show short markdown well get the ``chat`` templates; mail gets ``email``; the rest ``text``.
CHAT_SCHEMES = frozenset(
    {"slack", "mmost", "mmosts", "discord", "tgram", "matrix", "matrixs", "rocket", "rockets", "zulip"}
    | {"workflow", "workflows", "msteams", "gchat", "ntfy", "ntfys"}
)
EMAIL_SCHEMES = frozenset({"mailto", "mailtos"})
_FORMATS = {
    "text": apprise.NotifyFormat.TEXT,
    "markdown": apprise.NotifyFormat.MARKDOWN,
    "html": apprise.NotifyFormat.HTML,
}


def url_style(url: str) -> str:
    """The template style for an apprise URL: ``chat``, ``email``, ``email-text`` (``mailto`` with
    ``?format=text``) or ``text``; by the scheme apprise resolves (``https://hooks.slack.com/...`` is slack)."""
    schemes = {scheme_of(url)}
    try:
        plugin = instantiate(url)  # without apprise's log line, which would show the URL's path and query
    except Exception:
        plugin = None
    for attr in ("protocol", "secure_protocol"):
        value = getattr(plugin, attr, None) if plugin is not None else None
        schemes.update([value] if isinstance(value, str) else value or ())
    if schemes & EMAIL_SCHEMES:
        return "email-text" if _query(url).get("format", "").lower() == "text" else "email"
    return "chat" if schemes & CHAT_SCHEMES else "text"


UNDECLARED_THROTTLE = 1.0
"""Seconds between two sends to one destination whose apprise service declares no rate of its own (apprise's
default is 5.5 s, e.g. for SMTP): pacing is the channel's ``rate_limit:``, and a page must not wait on a guess."""


def _shorten_default_throttle(a: apprise.Apprise) -> None:
    """Cap the throttle of services that inherit apprise's default; a rate a service declares (Slack's) stays."""
    from apprise.plugins.base import NotifyBase

    for plugin in a:
        mro = type(plugin).__mro__
        own = mro[: mro.index(NotifyBase)] if NotifyBase in mro else mro
        if not any("request_rate_per_sec" in vars(c) for c in own):
            plugin.request_rate_per_sec = min(plugin.request_rate_per_sec, UNDECLARED_THROTTLE)


APPRISE_WORKERS = 64
"""Threads of apprise's process-wide pools. Its default (CPU count + 4: 6 on two cores) is smaller than
``delivery.concurrency``, so one hanging destination held every thread and the healthy ones timed out behind it."""
_pools_widened = False


def _widen_apprise_pools() -> None:
    """Give apprise's shared service and coordinator pools APPRISE_WORKERS threads (created lazily by the pool,
    so idle ones cost nothing); a no-op when this apprise release names them differently."""
    global _pools_widened
    if _pools_widened:
        return
    _pools_widened = True
    import concurrent.futures as cf

    from apprise import apprise as core

    for name, lock in (
        ("_shared_executor", "_shared_executor_lock"),
        ("_coordinator_executor", "_coordinator_executor_lock"),
    ):
        if hasattr(core, name) and hasattr(core, lock):
            with getattr(core, lock):
                if getattr(core, name) is None:
                    setattr(
                        core, name, cf.ThreadPoolExecutor(max_workers=APPRISE_WORKERS, thread_name_prefix="apprise")
                    )


def _cap_socket_timeouts(a: apprise.Apprise, url: str, timeout: float) -> None:
    """An attempt gives up after ``delivery.timeout``; apprise's own socket timeouts (4 s) would keep its thread
    busy past that. Cap them to the timeout unless the URL sets ``rto``/``cto`` itself."""
    q = _query(url)
    for plugin in a:
        if "rto" not in q and hasattr(plugin, "socket_read_timeout"):
            plugin.socket_read_timeout = min(float(plugin.socket_read_timeout), timeout)
        if "cto" not in q and hasattr(plugin, "socket_connect_timeout"):
            plugin.socket_connect_timeout = min(float(plugin.socket_connect_timeout), timeout)


def _query(url: str) -> dict[str, str]:
    try:
        return {k.lower(): v for k, v in parse_qsl(urlsplit(url).query)}
    except ValueError:
        return {}


def attachments(message: Message) -> apprise.AppriseAttachment | None:
    """The message's files (a report's PNG charts) as in-memory apprise attachments, None when it has none;
    services that cannot take files send the text alone."""
    files = getattr(message, "attachments", ())
    if not files:
        return None
    from apprise.attachment.memory import AttachMemory

    out = apprise.AppriseAttachment()
    for f in files:
        out.add(AttachMemory(content=f.content, name=f.name, mimetype=f.mimetype))
    return out


class AppriseOptions(ChannelOptions):
    urls: list[str] = Field(min_length=1)


class AppriseNotifier:
    """Sends through apprise; FAILURE/PARTIAL/TIMEOUT are retryable unless the peer refused with a 4xx."""

    Options: ClassVar[type[ChannelOptions]] = AppriseOptions

    def __init__(self, options: AppriseOptions, **_: Any):
        self.options = options
        self._apprise: dict[int, apprise.Apprise] = {}
        self._styles: dict[int, str] = {}
        _widen_apprise_pools()

    @staticmethod
    def validate_options(options: AppriseOptions) -> list[tuple[tuple[Any, ...], str]]:
        out = []
        for i, url in enumerate(options.urls):
            msg = check_apprise_url(url)
            if msg:
                out.append((("urls", i), msg))
        return out

    def destinations(self) -> list[str]:
        return [redact(u) for u in self.options.urls]

    def style(self, index: int) -> str:
        """The template style of destination ``index``: the channel's ``template:`` unless ``auto``, else by the
        URL (see :func:`url_style`); ``text`` for an index out of range."""
        if not 0 <= index < len(self.options.urls):
            return "text"
        auto = self._styles.get(index)
        if auto is None:
            auto = self._styles[index] = url_style(self.options.urls[index])
        chosen = getattr(self.options, "template", "auto")
        if chosen == "auto":
            return auto
        if chosen == "email" and auto == "email-text":
            return auto  # the URL asks for a plain-text mail: the e-mail templates, in text
        return chosen

    def secrets(self) -> list[str]:
        return [p for u in self.options.urls for p in secret_parts(u)]

    async def send(self, index: int, message: Message, timeout: float) -> None:
        if not 0 <= index < len(self.options.urls):
            raise NotifyError(f"channel {self.options.name!r} has no destination #{index}", permanent=True)
        a = self._apprise.get(index)
        if a is None:
            a = apprise.Apprise()
            if not a.add(self.options.urls[index]):
                raise NotifyError(f"invalid apprise URL {redact(self.options.urls[index])}", permanent=True)
            _shorten_default_throttle(a)
            _cap_socket_timeouts(a, self.options.urls[index], timeout)
            self._apprise[index] = a
        started = time.monotonic()
        res = await a.async_notify(
            title=message.title,
            body=message.body,
            notify_type=_NOTIFY_TYPE.get(message.kind, apprise.NotifyType.INFO),
            body_format=_FORMATS.get(getattr(message, "format", "text"), apprise.NotifyFormat.TEXT),
            timeout=timeout,
            attach=attachments(message),
        )
        status = res.status
        if status == apprise.AppriseResultStatus.SUCCESS:
            return
        logs = " ".join(str(entry) for r in res.results for entry in r.logs())
        if status == apprise.AppriseResultStatus.NOMATCH:
            raise NotifyError("no apprise service matched the URL", permanent=True)
        if status == apprise.AppriseResultStatus.TIMEOUT:
            raise NotifyError(f"timed out after {timeout:g}s", permanent=False)
        codes = [int(c) for c in _HTTP_ERROR.findall(logs)]
        permanent = bool(codes) and all(400 <= c < 500 and c not in _RETRYABLE_4XX for c in codes)
        detail = f"HTTP {codes[-1]}" if codes else "delivery failed"
        if "timed out" in logs.lower() or (
            "Connection error" in logs and time.monotonic() - started >= 0.9 * timeout
        ):  # apprise's socket timeouts are capped to the attempt's (see _cap_socket_timeouts): it timed out
            raise NotifyError(f"timed out after {timeout:g}s", permanent=False)
        if "Connection error" in logs:
            detail = "connection error"
        raise NotifyError(f"{status.name.lower()}: {detail}", permanent=permanent)
