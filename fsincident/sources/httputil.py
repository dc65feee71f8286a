"""HTTP helpers shared by the HTTP-speaking source kinds: credentials kept out of logs, bounded reads."""

from __future__ import annotations

import base64
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

# Header names whose values are credentials (redacted in logs and errors).
_SENSITIVE_HEADER_PARTS = ("auth", "token", "key", "secret", "cookie", "session", "password")


def display_url(url: str) -> str:
    """``url`` without user info, safe to show in errors and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def basic_auth_header(username: str, password: str) -> str:
    """The ``Authorization`` value for HTTP basic authentication."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def split_userinfo(url: str) -> tuple[str, str | None]:
    """``url`` without user info, and the basic ``Authorization`` value that user info stood for (or None)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    return display_url(url), basic_auth_header(unquote(parts.username), unquote(parts.password or ""))


def url_secrets(url: str) -> list[str]:
    """The password of ``url`` as written and decoded (empty when it has none)."""
    try:
        raw = urlsplit(url).password
    except ValueError:
        return []
    if not raw:
        return []
    header = split_userinfo(url)[1] or ""
    return [raw, unquote(raw), header, header.partition(" ")[2]]


def header_secrets(headers: dict[str, str]) -> list[str]:
    """Values of headers that carry credentials (``Authorization``, ``X-Api-Key``, cookies...)."""
    out = []
    for name, value in headers.items():
        if any(p in name.lower() for p in _SENSITIVE_HEADER_PARTS):
            out.append(value)
            scheme, _, rest = value.partition(" ")
            if rest and scheme.isalpha():
                out.append(rest.strip())  # "Bearer XYZ": XYZ alone must not leak either
    return out


async def read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of ``resp`` up to ``limit`` bytes plus at most one chunk (the caller checks the length)."""
    # StreamReader.read(n) returns what has arrived so far, not n bytes: read to EOF in chunks.
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)
