"""Signed ack/resolve links: round trip, tamper evidence, expiry, binding, and the database-kept key."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.notify.links import ACTIONS, LinkError, LinkSigner, link_key, url
from fsincident.store import Store

KEY = b"k" * 32
TTL = timedelta(hours=24)
NOW = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)

ids = st.integers(min_value=1, max_value=2**31 - 1)
actions = st.sampled_from(ACTIONS)
recipients = st.text(min_size=0, max_size=60).filter(lambda r: len(r.encode("utf-8", "surrogatepass")) <= 255)
recipients = recipients.filter(lambda r: not any(0xD800 <= ord(c) <= 0xDFFF for c in r))
instants = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))  # type: ignore[arg-type]


def signer(ttl: timedelta = TTL, key: bytes = KEY) -> LinkSigner:
    return LinkSigner(key, ttl)


@given(ids, actions, recipients, instants)
def test_round_trip(iid, action, recipient, now):
    s = signer()
    token = s.sign(iid, action, recipient, now)
    claim = s.verify(token, now)
    assert (claim.incident_id, claim.action, claim.recipient) == (iid, action, recipient)
    assert now < claim.expires_at <= now + TTL
    assert claim.expires_at > now + TTL - timedelta(seconds=1)
    assert len(claim.nonce) == 16
    assert token.isascii() and all(c.isalnum() or c in "-_" for c in token)


@settings(max_examples=300)
@given(ids, actions, recipients, st.data())
def test_any_single_character_change_fails(iid, action, recipient, data):
    s = signer()
    token = s.sign(iid, action, recipient, NOW)
    i = data.draw(st.integers(min_value=0, max_value=len(token) - 1), label="position")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.+/ %"
    c = data.draw(st.sampled_from([a for a in alphabet if a != token[i]]), label="replacement")
    with pytest.raises(LinkError):
        s.verify(token[:i] + c + token[i + 1 :], NOW)


@settings(max_examples=300)
@given(ids, actions, recipients, st.data())
def test_any_single_byte_change_fails(iid, action, recipient, data):
    """Flipping bits of any decoded byte (payload or tag), then re-encoding, fails the signature."""
    s = signer()
    token = s.sign(iid, action, recipient, NOW)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    i = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[i] ^= data.draw(st.integers(min_value=1, max_value=255))
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(LinkError) as e:
        s.verify(forged, NOW)
    assert e.value.reason == "signature"


def test_truncated_extended_and_garbage_tokens_are_malformed():
    s = signer()
    token = s.sign(7, "ack", "user:alice", NOW)
    for bad in [token[:-1], token + "A", token[:10], "", "!" * 40, "a" * 5000, token + "=", " " + token, "é" * 30]:
        with pytest.raises(LinkError) as e:
            s.verify(bad, NOW)
        assert e.value.reason in ("malformed", "signature"), bad


def test_other_key_is_a_bad_signature():
    token = signer().sign(7, "ack", "user:alice", NOW)
    with pytest.raises(LinkError) as e:
        signer(key=b"another key of 32 bytes........").verify(token, NOW)
    assert e.value.reason == "signature"


@given(instants, st.integers(min_value=1, max_value=90 * 86400))
def test_expiry_boundary(now, ttl_seconds):
    s = signer(timedelta(seconds=ttl_seconds))
    token = s.sign(3, "resolve", "channel:ops", now)
    expires_at = s.verify(token, now).expires_at
    assert s.verify(token, expires_at - timedelta(microseconds=1)).incident_id == 3
    for later in (expires_at, expires_at + timedelta(days=400)):
        with pytest.raises(LinkError) as e:
            s.verify(token, later)
        assert e.value.reason == "expired"


def test_expired_token_with_bad_signature_says_signature():
    token = signer(timedelta(seconds=1)).sign(3, "ack", "user:a", NOW)
    with pytest.raises(LinkError) as e:
        signer(timedelta(seconds=1), key=b"x" * 32).verify(token, NOW + timedelta(hours=1))
    assert e.value.reason == "signature"


@given(ids, actions, recipients, ids, actions, recipients)
def test_binding(iid, action, recipient, iid2, action2, recipient2):
    """A token says exactly what it was signed for; two signings never share a nonce."""
    s = signer()
    a, b = s.sign(iid, action, recipient, NOW), s.sign(iid2, action2, recipient2, NOW)
    ca, cb = s.verify(a, NOW), s.verify(b, NOW)
    assert (ca.incident_id, ca.action, ca.recipient) == (iid, action, recipient)
    assert (cb.incident_id, cb.action, cb.recipient) == (iid2, action2, recipient2)
    assert ca.nonce != cb.nonce and a != b


def test_sign_refuses_bad_input():
    s = signer()
    for args in [(0, "ack", "u"), (2**31, "ack", "u"), (1, "delete", "u"), (1, "ack", "x" * 256)]:
        with pytest.raises(ValueError):
            s.sign(*args, NOW)
    with pytest.raises(ValueError):
        LinkSigner(b"short", TTL)
    with pytest.raises(ValueError):
        LinkSigner(KEY, timedelta(0))
    assert "k" * 16 not in repr(s)


def test_url_and_links():
    s = signer()
    assert url("https://oncall.example.com/", "TOK") == "https://oncall.example.com/l/TOK"
    links = s.links("http://127.0.0.1:9095", 5, "user:bob", NOW)
    assert set(links) == {"ack", "resolve"}
    for action, link in links.items():
        prefix = "http://127.0.0.1:9095/l/"
        assert link.startswith(prefix)
        claim = s.verify(link.removeprefix(prefix), NOW)
        assert (claim.incident_id, claim.action, claim.recipient) == (5, action, "user:bob")


# ---------------------------------------------------------------------- the key


async def test_configured_key_is_used_as_is():
    assert await link_key(None, "a-configured-secret-value") == b"a-configured-secret-value"  # type: ignore[arg-type]


async def test_generated_key_is_kept_and_shared_by_replicas(db_url):
    """Concurrent first calls on an empty database agree on one key, which survives restarts. On PostgreSQL the
    calls come from two stores (two replicas); SQLite is single-node, so there they share one store."""
    first = Store(db_url)
    await first.upgrade()
    second = first if first.is_sqlite else Store(db_url)
    try:
        keys = await asyncio.gather(*(link_key(st_, None) for st_ in (first, second, first, second)))
        assert len(set(keys)) == 1 and len(keys[0]) >= 32
    finally:
        await first.close()
        if second is not first:
            await second.close()
    third = Store(db_url)
    try:
        assert await link_key(third, None) == keys[0]
        assert await link_key(third, "configured-secret-wins") == b"configured-secret-wins"
    finally:
        await third.close()
