"""API tokens: the secret is shown once and only its SHA-256 is stored."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from fsincident.store import StoreError
from fsincident.store.tables import ApiToken

from .conftest import T0


async def test_create_returns_secret_and_stores_only_its_hash(store):
    secret = await store.create_token("ci", ["read", "ack"], T0)
    assert isinstance(secret, str) and len(secret) >= 32
    async with store.engine.connect() as c:
        rows = (await c.execute(sa.select(ApiToken.__table__))).mappings().all()
    assert len(rows) == 1
    row = rows[0]
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert row["name"] == "ci" and row["scopes"] == "read,ack"
    for value in row.values():
        assert secret not in str(value)
        assert secret[4:] not in str(value)  # not even without its prefix

    tok = await store.find_token(secret)
    assert tok is not None and tok.name == "ci"
    assert tok.scopes.split(",") == ["read", "ack"]


async def test_secrets_are_unique(store):
    a = await store.create_token("a", ["read"], T0)
    b = await store.create_token("b", ["read"], T0)
    assert a != b
    assert (await store.find_token(a)).name == "a"
    assert (await store.find_token(b)).name == "b"


async def test_duplicate_name_raises_store_error(store):
    await store.create_token("ops", ["admin"], T0)
    with pytest.raises(StoreError, match="ops"):
        await store.create_token("ops", ["read"], T0)
    async with store.engine.connect() as c:
        assert (await c.execute(sa.select(sa.func.count()).select_from(ApiToken.__table__))).scalar_one() == 1


async def test_wrong_secret_finds_nothing(store):
    secret = await store.create_token("ops", ["admin"], T0)
    assert await store.find_token(secret + "x") is None
    assert await store.find_token(secret[:-1]) is None
    assert await store.find_token("") is None
    assert await store.find_token(hashlib.sha256(secret.encode()).hexdigest()) is None  # the hash is no secret
    assert await store.find_token("fsi_\udcff\udcfe") is None  # undecodable header bytes
    assert await store.find_token("a\x00b") is None


async def test_revoked_token_finds_nothing(store):
    secret = await store.create_token("old", ["read"], T0)
    async with store.session() as s:
        await s.exec(sa.update(ApiToken).where(ApiToken.name == "old").values(revoked_at=T0))
    assert await store.find_token(secret) is None
