"""Signed acknowledge/resolve links (pure signing, plus the database-kept key).

A token is ``base64url(payload || tag)`` without padding, where ``payload`` is
``version(1) | incident id(4) | action(1) | expiry, unix seconds(4) | nonce(12) | recipient (UTF-8, the rest)``
and ``tag`` is the HMAC-SHA256 of a domain-separated payload under the link key. A token is bound to the
incident, the action and the recipient it was sent to; it expires, and its random nonce lets the API act on it
at most once (the ``used_link`` table). The encoding is canonical: changing any character of a token makes it
fail to verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import select

from fsincident.store import Store
from fsincident.store.tables import DaemonSecret

VERSION = 1
ACTIONS = ("ack", "resolve")
NONCE_BYTES = 12
TAG_BYTES = 32
MAX_RECIPIENT = 255  # bytes of UTF-8
MAX_TOKEN = 1000  # characters; longer is malformed without decoding
MAX_INCIDENT = 2**31 - 1
KEY_NAME = "link_key"
_HEAD = struct.Struct(">BIBI")  # version, incident id, action, expiry
_DOMAIN = b"fsincident-link\x00"
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


class LinkError(Exception):
    """A token that must not act: ``reason`` is ``malformed``, ``signature`` or ``expired``."""

    MESSAGES = {
        "malformed": "the link is not a valid fsincident link",
        "signature": "the link's signature does not match",
        "expired": "the link has expired",
    }

    def __init__(self, reason: str):
        super().__init__(self.MESSAGES.get(reason, reason))
        self.reason = reason


@dataclass(frozen=True)
class LinkClaim:
    """What a verified token says: act ``action`` on ``incident_id``, sent to ``recipient``, until ``expires_at``."""

    incident_id: int
    action: str
    recipient: str
    expires_at: datetime
    nonce: str  # base64url of the random bytes: the ``used_link`` primary key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict, canonical base64url without padding; raises LinkError("malformed")."""
    if not text or len(text) > MAX_TOKEN or not _B64URL.match(text) or len(text) % 4 == 1:
        raise LinkError("malformed")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise LinkError("malformed") from None
    if _b64(raw) != text:  # unused low bits set in the last character: not how we encode
        raise LinkError("malformed")
    return raw


class LinkSigner:
    """Signs and verifies link tokens with ``key``; links stay valid for ``ttl``."""

    def __init__(self, key: bytes, ttl: timedelta):
        if len(key) < 16:
            raise ValueError("the link key must be at least 16 bytes")
        if ttl <= timedelta(0):
            raise ValueError("the link ttl must be positive")
        self._key = key
        self.ttl = ttl

    def __repr__(self) -> str:  # never the key
        return f"LinkSigner(ttl={self.ttl})"

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _DOMAIN + payload, hashlib.sha256).digest()

    def sign(self, incident_id: int, action: str, recipient: str, now: datetime) -> str:
        """A token for ``action`` on ``incident_id`` sent to ``recipient``, expiring ``ttl`` after ``now``; raises
        ValueError for an unknown action, an id out of range or a recipient longer than 255 bytes."""
        if action not in ACTIONS:
            raise ValueError(f"unknown link action {action!r}: one of {', '.join(ACTIONS)}")
        if not 1 <= incident_id <= MAX_INCIDENT:
            raise ValueError(f"incident id {incident_id} out of range")
        rcpt = recipient.encode("utf-8")
        if len(rcpt) > MAX_RECIPIENT:
            raise ValueError(f"recipient is longer than {MAX_RECIPIENT} bytes")
        expires = int((now + self.ttl).timestamp())
        if not 0 < expires < 2**32:
            raise ValueError("link expiry out of range")
        payload = (
            _HEAD.pack(VERSION, incident_id, ACTIONS.index(action), expires) + secrets.token_bytes(NONCE_BYTES) + rcpt
        )
        return _b64(payload + self._tag(payload))

    def verify(self, token: str, now: datetime) -> LinkClaim:
        """The claim of a token signed with this key that has not expired at ``now``; raises LinkError
        (``malformed``, ``signature``, ``expired``; the signature is checked first, in constant time)."""
        raw = _unb64(token)
        if len(raw) < _HEAD.size + NONCE_BYTES + TAG_BYTES:
            raise LinkError("malformed")
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(payload)):
            raise LinkError("signature")
        version, incident_id, action, expires = _HEAD.unpack_from(payload)
        if version != VERSION or action >= len(ACTIONS) or not 1 <= incident_id <= MAX_INCIDENT:
            raise LinkError("malformed")
        nonce = payload[_HEAD.size : _HEAD.size + NONCE_BYTES]
        try:
            recipient = payload[_HEAD.size + NONCE_BYTES :].decode("utf-8")
        except UnicodeDecodeError:
            raise LinkError("malformed") from None
        expires_at = datetime.fromtimestamp(expires, UTC)
        if now >= expires_at:
            raise LinkError("expired")
        return LinkClaim(incident_id, ACTIONS[action], recipient, expires_at, _b64(nonce))

    def links(self, base: str, incident_id: int, recipient: str, now: datetime) -> dict[str, str]:
        """``{"ack": url, "resolve": url}`` for ``recipient``; raises ValueError like :meth:`sign`."""
        return {a: url(base, self.sign(incident_id, a, recipient, now)) for a in ACTIONS}


def url(base: str, token: str) -> str:
    """The link of ``token`` under ``base`` (the external URL): ``{base}/l/{token}``."""
    return f"{base.rstrip('/')}/l/{token}"


async def link_key(store: Store, configured: str | None) -> bytes:
    """The link signing key: ``configured`` when set, else the ``daemon_secret`` row ``link_key``, generated once
    (concurrent first starts of several replicas agree on one key); raises the store's error when the database
    is unreachable."""
    if configured:
        return configured.encode("utf-8")
    async with store.read() as s:
        row = (await s.exec(select(DaemonSecret.value).where(DaemonSecret.name == KEY_NAME))).first()
    if row:
        return str(row).encode("utf-8")
    values = {"name": KEY_NAME, "value": _b64(secrets.token_bytes(32)), "created_at": datetime.now(UTC)}
    dialect = sqlite if store.is_sqlite else postgresql
    async with store.session() as s:
        # The first writer wins; a loser's insert does nothing (on PostgreSQL it waits for the winner to commit)
        # and the select then reads the winner's key.
        await s.exec(dialect.insert(DaemonSecret).values(**values).on_conflict_do_nothing())  # type: ignore[call-overload]
        value = (await s.exec(select(DaemonSecret.value).where(DaemonSecret.name == KEY_NAME))).one()
    return str(value).encode("utf-8")


__all__ = ["ACTIONS", "LinkClaim", "LinkError", "LinkSigner", "link_key", "url"]
