"""Which replica leads: a PostgreSQL session advisory lock, or on SQLite a file lock that keeps it single-node.

On PostgreSQL every replica holds one dedicated connection (not from the store's pool). A follower asks for
the session-level advisory lock ``LOCK_KEY`` every ``retry`` seconds with ``pg_try_advisory_lock``; the
replica that gets it leads until its session ends. The leader pings its connection every ``ping`` seconds and
steps down at once when a ping fails or takes longer than ``timeout`` (the server releases a dead session's
lock, so another replica takes over within about ``retry`` seconds of a ``kill -9``; after a network
partition, when the server notices the session is gone). Advisory locks belong to one database, so
deployments on different databases of one server never compete.

On SQLite there is only one node: ``start`` takes an exclusive non-blocking ``flock`` on ``<database>.lock``
and a second daemon on the same file fails to start with an error saying so. An in-memory database always
leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import inspect
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa

from fsincident.core import FsIncidentError
from fsincident.obs import get_logger
from fsincident.store import async_url, sqlite_path

log = get_logger("fsincident.leader")

LOCK_KEY = int.from_bytes(hashlib.sha256(b"fsincident").digest()[:8], "big", signed=True)
"""The advisory lock whose holder leads (a fixed signed 64-bit key derived from ``fsincident``)."""
MIGRATE_KEY = int.from_bytes(hashlib.sha256(b"fsincident:migrate").digest()[:8], "big", signed=True)
"""The advisory lock held while a replica migrates the schema (replicas starting together migrate in turn)."""

Callback = Callable[[bool], Awaitable[None] | None]


class LeadershipError(FsIncidentError):
    """Leadership cannot work here: the SQLite database is in use by another daemon, or the lock file is unusable."""


def replica_name() -> str:
    """This process's replica name, ``hostname:pid`` (never fails)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pg_connect_args(url: str) -> dict[str, Any]:
    """asyncpg.connect keyword arguments for a store URL, translated the way SQLAlchemy's dialect does it."""
    u = sa.engine.make_url(async_url(url))
    _, kwargs = u.get_dialect()().create_connect_args(u)
    accepted = inspect.signature(asyncpg.connect).parameters
    return {k: v for k, v in kwargs.items() if k in accepted}


class Leadership:
    """Decides whether this replica leads; ``on_change`` callbacks hear every change (``True`` = now leader)."""

    def __init__(
        self,
        url: str,
        replica: str | None = None,
        *,
        retry: float = 1.0,
        ping: float = 1.0,
        timeout: float = 2.0,
    ):
        self.url = url
        self.replica = replica or replica_name()
        self.retry, self.ping, self.timeout = retry, ping, timeout
        self.is_sqlite = url.startswith("sqlite")
        self.term = 0  # bumped at every promotion
        self._leader = False
        self._callbacks: list[Callback] = []
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._lock_fd: int | None = None
        self._down_logged = False

    @property
    def is_leader(self) -> bool:
        """True while this replica holds the lock."""
        return self._leader

    @property
    def role(self) -> str:
        """``leader`` or ``follower``."""
        return "leader" if self._leader else "follower"

    def on_change(self, callback: Callback) -> None:
        """Call ``callback(leader)`` (a function or coroutine function) after each promotion and step-down;
        a callback that raises on promotion makes this replica step down again and retry later."""
        self._callbacks.append(callback)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """SQLite: take the file lock (LeadershipError when another daemon holds it) and lead. PostgreSQL: try
        for the lock once now and keep trying in the background; an unreachable server is retried, never raised."""
        self._closed = False
        if self.is_sqlite:
            path = sqlite_path(self.url)
            if path is not None:
                self._lock_file(path)
            await self._promote()
            return
        await self._attempt()
        self._task = asyncio.create_task(self._run(), name="leadership")

    async def close(self) -> None:
        """Stop campaigning and release the lock (closing the session releases it too); never fails."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        was = self._leader
        self._leader = False
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                if was:
                    await conn.fetchval("SELECT pg_advisory_unlock($1)", LOCK_KEY, timeout=self.timeout)
                await asyncio.wait_for(conn.close(), self.timeout)
            except Exception:
                conn.terminate()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None
        if was:
            log.info("leader_lost", replica=self.replica, reason="stopping")

    @contextlib.asynccontextmanager
    async def exclusive(self, key: int = MIGRATE_KEY) -> AsyncIterator[None]:
        """Hold a second advisory lock (PostgreSQL) around work only one replica may do at a time, such as
        migrating the schema; waits for it. A no-op on SQLite. Raises LeadershipError when the server is down."""
        if self.is_sqlite:
            yield
            return
        try:
            conn = await asyncpg.connect(**_pg_connect_args(self.url), timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as e:
            raise LeadershipError(f"cannot reach PostgreSQL for the migration lock: {type(e).__name__}") from e
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            yield
        finally:
            try:
                await asyncio.wait_for(conn.close(), self.timeout)  # ends the session: releases the lock
            except Exception:
                conn.terminate()

    # ------------------------------------------------------------------ SQLite

    def _lock_file(self, db: Path) -> None:
        lock = Path(f"{db}.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise LeadershipError(f"cannot open the lock file {lock}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            try:
                holder = os.read(fd, 200).decode(errors="replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            who = f" ({holder})" if holder else ""
            raise LeadershipError(
                f"the SQLite database {db} is in use by another fsincident daemon{who}; SQLite is single-node: "
                "run one daemon per database file, or use PostgreSQL to run replicas"
            ) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.replica}\n".encode(), 0)
        self._lock_fd = fd

    # ------------------------------------------------------------------ PostgreSQL

    async def _run(self) -> None:
        while not self._closed:
            if self._leader:
                await asyncio.sleep(self.ping)
                if not await self._alive():
                    await self._step_down("lock connection failed")
            else:
                await asyncio.sleep(self.retry)
                await self._attempt()

    async def _alive(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=self.timeout)
            return True
        except Exception:
            return False

    async def _attempt(self) -> None:
        """One try for the lock (connecting first when needed); failures are logged once and retried."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(**_pg_connect_args(self.url), timeout=self.timeout * 2)
            got = await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY, timeout=self.timeout)
        except Exception as e:
            self._drop_conn()
            if not self._down_logged:
                self._down_logged = True
                log.warning("leader_election_failed", replica=self.replica, error=type(e).__name__)
            return
        self._down_logged = False
        if got:
            await self._promote()

    async def _promote(self) -> None:
        self._leader = True
        self.term += 1
        log.info("leader_acquired", replica=self.replica, database="sqlite" if self.is_sqlite else "postgresql")
        try:
            await self._notify(True)
        except Exception:
            log.exception("leader_promotion_failed", replica=self.replica)
            if self.is_sqlite:
                return  # single node: nobody else could lead; keep leading
            await self._step_down("promotion failed")  # ends the session, which releases the lock

    async def _step_down(self, reason: str) -> None:
        self._leader = False
        self._drop_conn()  # a session that failed a ping may still hold the lock: end it
        log.warning("leader_lost", replica=self.replica, reason=reason)
        try:
            await self._notify(False)
        except Exception:
            log.exception("leader_step_down_failed", replica=self.replica)

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _notify(self, leader: bool) -> None:
        for cb in list(self._callbacks):
            res = cb(leader)
            if inspect.isawaitable(res):
                await res
