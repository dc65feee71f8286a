"""The SQL store: async engine (aiosqlite or asyncpg), sessions, migrations and shared queries."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from fsincident.core import FsIncidentError
from fsincident.store import tables
from fsincident.store.tables import ApiToken

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
SCOPES = ("read", "ack", "admin", "ingest")

__all__ = ["SCOPES", "Store", "StoreError", "async_url", "tables"]


class StoreError(FsIncidentError):
    """The database is unreachable or a migration failed."""


def async_url(url: str) -> str:
    """Map ``sqlite:///p`` / ``postgresql://…`` to the async driver URL SQLAlchemy needs."""
    if url.startswith("sqlite://") and "+" not in url.split("://")[0]:
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def sqlite_path(url: str) -> Path | None:
    u = sa.engine.make_url(async_url(url))
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


class Store:
    """Owns the async engine; ``session()`` yields a session inside one transaction."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        self.engine: AsyncEngine = create_async_engine(async_url(url), **kwargs)
        self.read_engine: AsyncEngine = self.engine
        if self.is_sqlite:
            _sqlite_pragmas(self.engine, "BEGIN IMMEDIATE")
            if path is not None:  # readers on their own connections: in WAL mode they never wait for a writer
                self.read_engine = create_async_engine(async_url(url), **kwargs)
                _sqlite_pragmas(self.read_engine, "BEGIN DEFERRED")
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.read_engine, class_=AsyncSession, expire_on_commit=False)
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def write_lock(self) -> asyncio.Lock | _NoLock:
        """SQLite has one writer at a time: this process's writers queue on one first-come-first-served lock
        instead of polling SQLite's busy handler (which lets a steady writer starve the others). A no-op lock
        on PostgreSQL. Hold it around any write transaction that bypasses :meth:`session`."""
        if not self.is_sqlite:
            return _NO_LOCK
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a write transaction: committed on exit, rolled back on error; raises RuntimeError when
        opened inside another write session of the same task (on SQLite that would wait for itself)."""
        if _IN_WRITE.get():
            raise RuntimeError("a write session was opened inside another one")
        token = _IN_WRITE.set(True)
        try:
            async with self.write_lock(), self._sessions() as s, s.begin():
                yield s
        finally:
            _IN_WRITE.reset(token)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading only (one consistent snapshot); on SQLite it neither takes nor waits for the
        write lock. Writing through it is a bug (SQLite may refuse it with "database is locked")."""
        async with self._read_sessions() as s, s.begin():
            yield s

    async def close(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as c:
                await c.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def upgrade(self) -> None:
        """Apply alembic migrations up to head; raises StoreError with the reason."""
        try:
            await asyncio.to_thread(run_migrations, self.url, "upgrade", "head")
        except Exception as e:
            raise StoreError(f"database migration failed: {type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------ tokens

    async def create_token(self, name: str, scopes: list[str], now: datetime) -> str:
        """Store a new token's hash and return its secret (shown once); raises StoreError for a duplicate name."""
        secret = "fsi_" + secrets.token_urlsafe(32)
        async with self.session() as s:
            existing = (await s.exec(select(ApiToken).where(ApiToken.name == name))).first()
            if existing is not None:
                raise StoreError(f"a token named {name!r} exists already")
            s.add(ApiToken(name=name, secret_hash=hash_secret(secret), scopes=",".join(scopes), created_at=now))
        return secret

    async def find_token(self, secret: str) -> ApiToken | None:
        try:
            digest = hash_secret(secret)
        except UnicodeEncodeError:  # undecodable header bytes (surrogate escapes): no secret we issued
            return None
        async with self.read() as s:
            tok = (await s.exec(select(ApiToken).where(ApiToken.secret_hash == digest))).first()
        if tok is None or tok.revoked_at is not None:
            return None
        return tok


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()
_IN_WRITE: contextvars.ContextVar[bool] = contextvars.ContextVar("fsincident_in_write_session", default=False)


def _sqlite_pragmas(engine: AsyncEngine, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Transactions are begun explicitly below, as BEGIN IMMEDIATE: a writer takes the lock up front
        # instead of failing with SQLITE_BUSY when it upgrades a read lock.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # The busy timeout first: switching to WAL needs a lock another connection may hold for a moment, and
        # a database that is in WAL mode already (every one after the first start) is not switched again.
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_mode")
        mode = cur.fetchone()
        if not mode or str(mode[0]).lower() != "wal":
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


def run_migrations(url: str, command_name: str, revision: str = "head", **kw: Any) -> Any:
    """Run an alembic command (upgrade, downgrade, check, revision) against ``url`` (blocking)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["database_url"] = async_url(url)
    fn = getattr(command, command_name)
    if command_name in ("upgrade", "downgrade"):
        return fn(cfg, revision)
    return fn(cfg, **kw)


class SqlStateStore:
    """A source's durable key/value state in the ``source_state`` table (JSON values)."""

    def __init__(self, store: Store, source: str, clock: Any):
        self.store, self.source, self.clock = store, source, clock

    async def get(self, key: str) -> Any:
        from fsincident.store.tables import SourceState

        async with self.store.session() as s:
            row = await s.get(SourceState, (self.source, key))
        return None if row is None else row.value

    async def set(self, key: str, value: Any) -> None:
        """Insert or replace ``key``; raises StoreError when the database refuses."""
        from fsincident.store.tables import SourceState

        async with self.store.session() as s:
            row = await s.get(SourceState, (self.source, key))
            if row is None:
                row = SourceState(source=self.source, key=key)
            row.value, row.updated_at = value, self.clock.now()
            s.add(row)

    async def items(self) -> dict[str, Any]:
        from fsincident.store.tables import SourceState

        async with self.store.session() as s:
            rows = (await s.exec(select(SourceState).where(SourceState.source == self.source))).all()
        return {r.key: r.value for r in rows}
