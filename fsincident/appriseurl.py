"""Apprise URL checks and redaction, shared by config loading, notifiers and logging."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import apprise

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


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
    if apprise.Apprise.instantiate(url) is None:
        return f"not a valid apprise URL for scheme {scheme!r}"
    return None


def redact(url: str) -> str:
    """A display form of ``url`` with credentials and tokens hidden (apprise's privacy form, no query)."""
    scheme = scheme_of(url) or "?"
    try:
        plugin = apprise.Apprise.instantiate(url)
    except Exception:
        plugin = None
    if plugin is None:
        return f"{scheme}://***"
    return plugin.url(privacy=True).split("?", 1)[0]


def secret_parts(url: str) -> list[str]:
    """Substrings of ``url`` that must never be logged: the URL itself, its password, and every token
    that apprise's privacy form hides (bot tokens, webhook keys)."""
    out = {url}
    try:
        parts = urlsplit(url)
        if parts.password:
            out.update({parts.password, unquote(parts.password)})
    except ValueError:
        return [url]
    try:
        plugin = apprise.Apprise.instantiate(url)
        shown = plugin.url(privacy=True) if plugin is not None else ""
    except Exception:
        shown = ""
    for token in re.split(r"[/:@?&=#,]+", url.split("://", 1)[-1]):
        token = unquote(token)
        # Host names, addresses and mail addresses are not secrets; masking them would garble every log line.
        if len(token) >= 6 and token not in shown and "." not in token:
            out.add(token)
    return sorted(out, key=len, reverse=True)
