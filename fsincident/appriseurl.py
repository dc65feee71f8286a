"""Apprise URL checks and redaction, shared by config loading, notifiers and logging."""

from __future__ import annotations

import base64
import logging
import re
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import apprise

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_SENSITIVE_KEYS = ("auth", "token", "key", "secret", "pass", "pwd", "cookie", "session", "sig", "credential", "bearer")
"""Query parameters whose value is a credential whatever it looks like (``?token=``, ``+X-Api-Key=``, ``pass=``)."""


def _tokenish(s: str) -> bool:
    """True for a string that looks like a generated key rather than a name: at least 12 characters, no dot, at
    sign or space, and digits or mixed case (or 20+ letters)."""
    if len(s) < 12 or any(c in s for c in ".@ /"):
        return False
    if any(c.isdigit() for c in s) and any(c.isalpha() for c in s):
        return True
    return (any(c.isupper() for c in s) and any(c.islower() for c in s)) or len(s) >= 20


class _OwnParsing(logging.Filter):
    """Drops apprise's records (``Loaded JSON URL: json://host/KEY?-token=...``) made while this module parses a
    URL: those come before the daemon's redactor has learnt the URL's secrets from :func:`secret_parts`."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "parsing", False)


_QUIET = _OwnParsing()


def instantiate(url: str) -> Any:
    """apprise's plugin for ``url`` (None when apprise rejects it), parsed without a log line; may raise what
    apprise raises for a malformed URL."""
    logger = logging.getLogger("apprise")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)
    _QUIET.local.parsing = True
    try:
        return apprise.Apprise.instantiate(url)
    finally:
        _QUIET.local.parsing = False


def scheme_of(url: str) -> str:
    m = _SCHEME.match(url or "")
    return m.group(1).lower() if m else ""


def check_apprise_url(url: str) -> str | None:
    """None when apprise accepts ``url``, else a message that names the scheme and never the secret."""
    if not isinstance(url, str) or not url.strip():
        return "empty notification URL"
    scheme = scheme_of(url)
    if not scheme:
        return "not an apprise URL (expected SCHEME://...)"
    if instantiate(url) is None:
        return f"not a valid apprise URL for scheme {scheme!r}"
    return None


def redact(url: str) -> str:
    """A display form of ``url`` with credentials and tokens hidden (apprise's privacy form, no query)."""
    scheme = scheme_of(url) or "?"
    try:
        plugin = instantiate(url)
    except Exception:
        plugin = None
    if plugin is None:
        return f"{scheme}://***"
    shown = plugin.url(privacy=True).split("?", 1)[0]
    # apprise hides what it knows to be a token; a generic URL (json://, xml://, form://) keeps its path, where a
    # webhook key often lives: path segments that look like keys are hidden too.
    start = shown.find("/", shown.find("://") + 3)
    if start < 0:
        return shown
    segments = shown[start:].split("/")
    return shown[:start] + "/".join("***" if _tokenish(unquote(seg)) else seg for seg in segments)


def secret_parts(url: str) -> list[str]:
    """Substrings of ``url`` that must never be logged: the URL itself, its password (also as the basic
    ``Authorization`` value it becomes), every token that apprise's privacy form hides (bot tokens, webhook keys),
    path segments that look like keys, and query values that are credentials (``?token=``, ``+X-Api-Key=``)."""
    out = {url}
    try:
        parts = urlsplit(url)
        if parts.password:
            password = unquote(parts.password)
            out.update({parts.password, password})
            basic = f"{unquote(parts.username or '')}:{password}".encode()
            out.add(base64.b64encode(basic).decode())
        for seg in parts.path.split("/"):
            if _tokenish(unquote(seg)):
                out.update({seg, unquote(seg)})
        for pair in parts.query.split("&"):
            key, _, raw = pair.partition("=")  # not parse_qsl: it reads '+' (apprise's header prefix) as a space
            value, name = unquote(raw), unquote(key).lstrip("+-:").lower()
            if _tokenish(value) or (len(value) >= 4 and any(k in name for k in _SENSITIVE_KEYS)):
                out.update({raw, value})
    except ValueError:
        return [url]
    try:
        plugin = instantiate(url)
        shown = plugin.url(privacy=True) if plugin is not None else ""
    except Exception:
        shown = ""
    for token in re.split(r"[/:@?&=#,]+", url.split("://", 1)[-1]):
        token = unquote(token)
        # Host names, addresses and mail addresses are not secrets; masking them would garble every log line.
        if len(token) >= 6 and token not in shown and "." not in token:
            out.add(token)
    return sorted(out, key=len, reverse=True)
